/*
 * HTTP/1.1 request-head parser for the opening handshake (RFC 7230 §3,
 * RFC 6455 §4.2) and small response writers.
 *
 * Zero-copy: the parsed request points into the caller's buffer. Pure: no
 * I/O, no allocation, no globals; any thread.
 */
#ifndef MS_NET_HTTP_H
#define MS_NET_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS_HTTP_MAX_HEADERS 32
#define MS_HTTP_MAX_HEAD 8192 /* request line + headers + CRLFCRLF */

typedef struct ms_str {
	const char *p;
	size_t n;
} ms_str;

typedef struct ms_http_header {
	ms_str name;
	ms_str value; /* leading/trailing OWS trimmed */
} ms_http_header;

typedef struct ms_http_request {
	ms_str method;
	ms_str target; /* whole request-target */
	ms_str path;   /* target up to '?' */
	ms_str query;  /* after '?', without it; n == 0 if none */
	int minor;     /* HTTP/1.<minor> */
	size_t nheaders;
	ms_http_header headers[MS_HTTP_MAX_HEADERS];
} ms_http_request;

/* Parse a request head from buf[0..len). Returns the head length (through
 * the blank line) when complete, 0 when more bytes are needed, or a negative
 * HTTP status when it can never be valid: -400 malformed (bad method token,
 * bad target, bad version, bare LF or CR, control bytes, header without
 * colon, whitespace before colon, obs-fold), -431 too many headers or head
 * larger than MS_HTTP_MAX_HEAD, -505 HTTP version other than 1.x. A head of
 * MS_HTTP_MAX_HEAD bytes without its end returns -431 (so a caller never
 * needs to buffer more). */
int ms_http_parse(const char *buf, size_t len, ms_http_request *req);

/* First header named `name` (case-insensitive), or NULL. */
const ms_http_header *ms_http_header_get(const ms_http_request *req,
					 const char *name);

/* Whether header `name` (every occurrence) contains `token` as one element
 * of its comma-separated list, case-insensitive ("keep-alive, Upgrade"). */
bool ms_http_header_has_token(const ms_http_request *req, const char *name,
			      const char *token);

/* Checks a request against RFC 6455 §4.2.1: GET, HTTP/1.1 or later, Host,
 * Upgrade: websocket, Connection: upgrade, Sec-WebSocket-Key of 16 bytes
 * base64 (24 chars), Sec-WebSocket-Version 13. Returns 0 if it is a valid
 * upgrade and sets *key (borrowed from the request's buffer); otherwise the
 * HTTP status to answer: 400 (missing, repeated or bad header; HTTP/1.0;
 * a body announced by Transfer-Encoding or a Content-Length other than 0),
 * 426 (version present but not 13: answer with Sec-WebSocket-Version: 13),
 * 405 (method not GET). */
int ms_http_ws_check(const ms_http_request *req, ms_str *key);

/* Value of query parameter `name` (raw, not percent-decoded, first match,
 * case-sensitive), or n == 0 and p == NULL if absent. A parameter without
 * '=' ("?flag") is present with an empty value (p != NULL, n == 0). */
ms_str ms_http_query_param(ms_str query, const char *name);

/* The reason phrase of a status code ("Unknown" for codes we never send). */
const char *ms_http_reason(int status);

/* Write a complete response into out (cap bytes): status line with the
 * standard reason phrase, "Content-Length", "Connection: close" when
 * close is set, extra_headers verbatim (each line ending in CRLF, may be
 * NULL), then body (may be NULL). 1xx and 204 get no Content-Length and
 * must have no body (RFC 7230 §3.3.2). out is NUL-terminated; returns the
 * length without the NUL, or -1 if it does not fit (NUL included) or the
 * status is not three digits. */
int ms_http_response(char *out, size_t cap, int status, bool close,
		     const char *extra_headers, const char *body);

/* Write the 101 Switching Protocols response for `key` (subprotocol may be
 * NULL). NUL-terminated; returns the length without the NUL, or -1 if it
 * does not fit. */
int ms_http_upgrade_response(char *out, size_t cap, ms_str key,
			     const char *subprotocol);

#endif
