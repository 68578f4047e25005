/*
 * Unit tests for net/proxy.h: PROXY protocol v2 (TCP4, TCP6, LOCAL,
 * UNSPEC, AF_UNIX, TLVs skipped) and v1 (TCP4, TCP6, UNKNOWN), the header
 * split at every byte, the bytes after the header left alone, and every
 * malformed case the parser must refuse.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <errno.h>

#include <cmocka.h>

#include "net/proxy.h"

static const uint8_t sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

/* A v2 header: ver_cmd, fam, address block (alen bytes), then TLVs. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *addr,
		 size_t alen, const uint8_t *tlv, size_t tlen)
{
	memcpy(out, sig, 12);
	out[12] = ver_cmd;
	out[13] = fam;
	size_t len = alen + tlen;
	out[14] = (uint8_t)(len >> 8);
	out[15] = (uint8_t)len;
	if (alen)
		memcpy(out + 16, addr, alen);
	if (tlen)
		memcpy(out + 16 + alen, tlv, tlen);
	return 16 + len;
}

static const uint8_t addr4[12] = { 203, 0, 113, 7, 10, 0, 0, 1, 0x30, 0x39, 0x01, 0xbb };

static size_t tcp4(uint8_t *out)
{
	return v2(out, 0x21, 0x11, addr4, sizeof(addr4), NULL, 0);
}

static void test_v2_tcp4(void **st)
{
	uint8_t b[64];
	size_t n = tcp4(b);
	memcpy(b + n, "GET /", 5); /* what follows is not the parser's */
	ms_proxy_info pi;
	assert_int_equal(ms_proxy_parse(b, n + 5, &pi), (int)n);
	assert_int_equal(pi.version, 2);
	assert_false(pi.local);
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)&pi.src;
	assert_int_equal(s4->sin_family, AF_INET);
	assert_int_equal(ntohl(s4->sin_addr.s_addr), 0xcb007107u);
	assert_int_equal(ntohs(s4->sin_port), 12345);
	assert_int_equal(pi.src_len, sizeof(struct sockaddr_in));
}

static void test_v2_tcp6_and_tlvs(void **st)
{
	uint8_t addr[36] = { 0x20, 0x01, 0x0d, 0xb8 };
	addr[15] = 0x42;
	addr[32] = 0x1f;
	addr[33] = 0x90;
	/* ALPN, AUTHORITY, a NOOP of length 0, an unknown type: all skipped. */
	uint8_t tlv[] = { 0x01, 0x00, 0x02, 'h', '2', 0x02, 0x00, 0x03, 'a', '.', 'b',
			  0x04, 0x00, 0x00, 0xee, 0x00, 0x01, 0x99 };
	uint8_t b[128];
	size_t n = v2(b, 0x21, 0x21, addr, sizeof(addr), tlv, sizeof(tlv));
	ms_proxy_info pi;
	assert_int_equal(ms_proxy_parse(b, n, &pi), (int)n);
	assert_false(pi.local);
	assert_int_equal(pi.src.sin6_family, AF_INET6);
	assert_memory_equal(&pi.src.sin6_addr, addr, 16);
	assert_int_equal(ntohs(pi.src.sin6_port), 8080);
	assert_int_equal(pi.src_len, sizeof(struct sockaddr_in6));
}

static void test_v2_local_unspec_unix(void **st)
{
	uint8_t b[512], zero[216] = { 0 };
	ms_proxy_info pi;
	/* LOCAL with no address block. */
	size_t n = v2(b, 0x20, 0x00, NULL, 0, NULL, 0);
	assert_int_equal(ms_proxy_parse(b, n, &pi), 16);
	assert_true(pi.local);
	/* LOCAL with an address block: ignored. */
	n = v2(b, 0x20, 0x11, addr4, sizeof(addr4), NULL, 0);
	assert_int_equal(ms_proxy_parse(b, n, &pi), (int)n);
	assert_true(pi.local);
	/* PROXY over UNSPEC, and over AF_UNIX: no IP address. */
	n = v2(b, 0x21, 0x00, NULL, 0, NULL, 0);
	assert_int_equal(ms_proxy_parse(b, n, &pi), 16);
	assert_true(pi.local);
	n = v2(b, 0x21, 0x31, zero, sizeof(zero), NULL, 0);
	assert_int_equal(ms_proxy_parse(b, n, &pi), (int)n);
	assert_true(pi.local);
	/* UDP over IPv4: still a source address. */
	n = v2(b, 0x21, 0x12, addr4, sizeof(addr4), NULL, 0);
	assert_int_equal(ms_proxy_parse(b, n, &pi), (int)n);
	assert_false(pi.local);
}

/* Every proper prefix needs more; the whole parses the same. */
static void splits(const uint8_t *b, size_t n)
{
	ms_proxy_info pi;
	for (size_t k = 0; k < n; k++)
		assert_int_equal(ms_proxy_parse(b, k, &pi), 0);
	assert_int_equal(ms_proxy_parse(b, n, &pi), (int)n);
}

static void test_split_at_every_byte(void **st)
{
	uint8_t b[64];
	splits(b, tcp4(b));
	const char *v1 = "PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\n";
	splits((const uint8_t *)v1, strlen(v1));
	const char *v16 = "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
	splits((const uint8_t *)v16, strlen(v16));
}

static void test_v1(void **st)
{
	ms_proxy_info pi;
	const char *s = "PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\nGET";
	assert_int_equal(ms_proxy_parse((const uint8_t *)s, strlen(s), &pi), (int)strlen(s) - 3);
	assert_int_equal(pi.version, 1);
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)&pi.src;
	assert_int_equal(s4->sin_family, AF_INET);
	assert_int_equal(ntohl(s4->sin_addr.s_addr), 0xc0000201u);
	assert_int_equal(ntohs(s4->sin_port), 56324);
	s = "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
	assert_int_equal(ms_proxy_parse((const uint8_t *)s, strlen(s), &pi), (int)strlen(s));
	assert_int_equal(pi.src.sin6_family, AF_INET6);
	assert_int_equal(pi.src.sin6_addr.s6_addr[15], 1);
	s = "PROXY UNKNOWN\r\n";
	assert_int_equal(ms_proxy_parse((const uint8_t *)s, strlen(s), &pi), (int)strlen(s));
	assert_true(pi.local);
	s = "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
	assert_int_equal(ms_proxy_parse((const uint8_t *)s, strlen(s), &pi), (int)strlen(s));
	assert_true(pi.local);
}

static void bad(const void *p, size_t n)
{
	ms_proxy_info pi;
	assert_int_equal(ms_proxy_parse(p, n, &pi), -EINVAL);
}

#define BAD1(lit) bad(lit, sizeof(lit) - 1)

static void test_v1_malformed(void **st)
{
	BAD1("GET / HTTP/1.1\r\n\r\n");         /* no header at all */
	BAD1("PROXZ");
	BAD1("proxy TCP4 1.2.3.4 1.2.3.5 1 2\r\n");
	BAD1("PROXY TCP5 1.2.3.4 1.2.3.5 1 2\r\n");
	BAD1("PROXY TCP4 1.2.3.4 1.2.3.5 1 2\n"); /* LF without CR */
	BAD1("PROXY TCP4 1.2.3.4 1.2.3.5 1 2\rX");
	BAD1("PROXY TCP4 1.2.3.4 1.2.3.5 1\r\n"); /* a field missing */
	BAD1("PROXY TCP4 1.2.3.4 1.2.3.5 1 2 3\r\n");
	BAD1("PROXY TCP4  1.2.3.4 1.2.3.5 1 2\r\n"); /* two spaces */
	BAD1("PROXY TCP4 1.2.3.4 1.2.3.5 1 2 \r\n");
	BAD1("PROXY TCP4 1.2.3.400 1.2.3.5 1 2\r\n");
	BAD1("PROXY TCP4 2001:db8::1 1.2.3.5 1 2\r\n"); /* family mismatch */
	BAD1("PROXY TCP6 1.2.3.4 2001:db8::2 1 2\r\n");
	BAD1("PROXY TCP4 1.2.3.4 1.2.3.5 65536 2\r\n");
	BAD1("PROXY TCP4 1.2.3.4 1.2.3.5 01 2\r\n");   /* leading zero */
	BAD1("PROXY TCP4 1.2.3.4 1.2.3.5 -1 2\r\n");
	BAD1("PROXY TCP4 1.2.3.4 1.2.3.5 1 x\r\n");
	BAD1("PROXY \r\n");
	BAD1("PROXY TCP4 1.2.3.4\0 1.2.3.5 1 2\r\n");
	/* No CR within the spec's 107 bytes. */
	char longline[200];
	memcpy(longline, "PROXY TCP4 ", 11);
	memset(longline + 11, '1', sizeof(longline) - 11);
	bad(longline, sizeof(longline));
	ms_proxy_info pi;
	assert_int_equal(ms_proxy_parse((const uint8_t *)longline, 106, &pi), 0);
	assert_int_equal(ms_proxy_parse((const uint8_t *)longline, 107, &pi), -EINVAL);
	/* The CR as the 107th byte leaves no room for the LF within the
	 * spec's 107 (found by fuzz_proxy): refused, whole or cut short. */
	char crlast[108];
	memcpy(crlast, "PROXY UNKNOWN", 13);
	memset(crlast + 13, ' ', sizeof(crlast) - 13);
	crlast[106] = '\r';
	crlast[107] = '\n';
	bad(crlast, 108);
	bad(crlast, 107);
	crlast[105] = '\r';
	crlast[106] = '\n';
	assert_int_equal(ms_proxy_parse((const uint8_t *)crlast, 107, &pi), 107); /* the longest valid */
}

static void test_v2_malformed(void **st)
{
	uint8_t b[5000], addr6[36] = { 0 };
	size_t n = tcp4(b);
	ms_proxy_info pi;

	uint8_t c[64];
	memcpy(c, b, n);
	c[3] ^= 1; /* signature */
	bad(c, n);
	bad(c, 5); /* already wrong within the prefix */
	memcpy(c, b, n);
	c[12] = 0x11; /* version 1 in binary form */
	bad(c, n);
	c[12] = 0x31; /* version 3 */
	bad(c, n);
	c[12] = 0x22; /* command 2 */
	bad(c, n);
	c[12] = 0x2f;
	bad(c, n);
	memcpy(c, b, n);
	c[13] = 0x41; /* family 4 */
	bad(c, n);
	c[13] = 0x13; /* transport 3 */
	bad(c, n);
	c[13] = 0x10; /* INET with UNSPEC transport */
	bad(c, n);
	c[13] = 0x01; /* UNSPEC family with STREAM transport */
	bad(c, n);
	/* Address block shorter than the family needs. */
	n = v2(c, 0x21, 0x11, addr4, 11, NULL, 0);
	bad(c, n);
	n = v2(b, 0x21, 0x21, addr6, 35, NULL, 0);
	bad(b, n);
	n = v2(b, 0x21, 0x31, addr6, 36, NULL, 0); /* AF_UNIX needs 216 */
	bad(b, n);
	/* TLV overrunning the header, and a TLV header cut short. */
	uint8_t tlv_over[] = { 0x01, 0x00, 0x05, 'h', '2' };
	n = v2(b, 0x21, 0x11, addr4, sizeof(addr4), tlv_over, sizeof(tlv_over));
	bad(b, n);
	uint8_t tlv_short[] = { 0x01, 0x00 };
	n = v2(b, 0x21, 0x11, addr4, sizeof(addr4), tlv_short, sizeof(tlv_short));
	bad(b, n);
	/* Longer than MS_PROXY_V2_MAX: refused as soon as the length is read,
	 * without waiting for the bytes. */
	n = tcp4(b);
	b[14] = 0x10;
	b[15] = 0x00; /* 4096 + 16 */
	bad(b, 16);
	/* At the cap exactly: fine (TLV NOOP padding). */
	size_t pad = MS_PROXY_V2_MAX - 16 - sizeof(addr4) - 3;
	uint8_t *tlv = calloc(1, pad + 3);
	tlv[0] = 0x04;
	tlv[1] = (uint8_t)(pad >> 8);
	tlv[2] = (uint8_t)pad;
	n = v2(b, 0x21, 0x11, addr4, sizeof(addr4), tlv, pad + 3);
	free(tlv);
	assert_int_equal(n, MS_PROXY_V2_MAX);
	assert_int_equal(ms_proxy_parse(b, n, &pi), MS_PROXY_V2_MAX);
	/* Empty input needs more; one wrong first byte does not. */
	assert_int_equal(ms_proxy_parse(b, 0, &pi), 0);
	bad("\x16\x03\x01", 3); /* a TLS ClientHello without the header */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v2_tcp4),
		cmocka_unit_test(test_v2_tcp6_and_tlvs),
		cmocka_unit_test(test_v2_local_unspec_unix),
		cmocka_unit_test(test_split_at_every_byte),
		cmocka_unit_test(test_v1),
		cmocka_unit_test(test_v1_malformed),
		cmocka_unit_test(test_v2_malformed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
