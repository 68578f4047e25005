/*
 * PROXY protocol header parser (HAProxy's proxy-protocol.txt, versions 1
 * and 2), for --proxy-protocol: behind a load balancer every TCP peer is
 * the balancer, and the client's address comes in a header sent before
 * anything else on the connection.
 *
 * Version 2 is the binary form (12-byte signature); version 1 is the text
 * line "PROXY TCP4|TCP6|UNKNOWN ...\r\n", accepted too since it costs little.
 * Pure: no I/O, no allocation, no globals; any thread.
 */
#ifndef MS_NET_PROXY_H
#define MS_NET_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define MS_PROXY_V1_MAX 107   /* the spec's longest v1 line, CRLF included */
#define MS_PROXY_V2_MAX 4096  /* our cap on a v2 header (16 + addresses + TLVs) */

typedef struct ms_proxy_info {
	int version;             /* 1 or 2 */
	bool local;              /* no client address: v2 LOCAL (the balancer's own
	                          * health check), UNSPEC/AF_UNIX, or v1 UNKNOWN; use
	                          * the real peer */
	struct sockaddr_in6 src; /* client address (family AF_INET or AF_INET6;
	                          * an AF_INET address sits in a sockaddr_in at
	                          * the start), valid unless local */
	socklen_t src_len;
} ms_proxy_info;

/* Parse a PROXY header at the start of buf[0..len). Returns its length
 * (the bytes to skip) and fills *out when complete, 0 while every byte so
 * far can still begin a valid header (call again with more), or -EINVAL
 * when it can never be one: missing signature, bad version or command,
 * unknown address family, lengths that do not fit, a header longer than
 * MS_PROXY_V2_MAX / MS_PROXY_V1_MAX, a TLV overrunning the header, or a
 * v1 line with bad addresses or ports. */
int ms_proxy_parse(const uint8_t *buf, size_t len, ms_proxy_info *out);

#endif
