/*
 * PROXY protocol v1/v2 parser. Strict: anything not exactly as the spec
 * draws it is -EINVAL, since a connection whose header we cannot trust is
 * closed (a lenient parser would let a client pick its own address).
 */
#include "net/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

static const uint8_t v2_sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				    0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };
static const char v1_sig[] = "PROXY ";

enum { V2_LOCAL = 0x0, V2_PROXY = 0x1 };

/* v2 address families (high nibble of byte 13) and transports (low). */
enum { AF2_UNSPEC = 0x0, AF2_INET = 0x1, AF2_INET6 = 0x2, AF2_UNIX = 0x3 };
enum { TP2_UNSPEC = 0x0, TP2_STREAM = 0x1, TP2_DGRAM = 0x2 };

static int parse_v2(const uint8_t *b, size_t len, ms_proxy_info *out)
{
	if (len < 16)
		return 0;
	uint8_t ver = b[12] >> 4, cmd = b[12] & 0x0f;
	uint8_t fam = b[13] >> 4, tp = b[13] & 0x0f;
	size_t alen = (size_t)b[14] << 8 | b[15];
	if (ver != 2 || (cmd != V2_LOCAL && cmd != V2_PROXY) || fam > AF2_UNIX ||
	    tp > TP2_DGRAM || 16 + alen > MS_PROXY_V2_MAX)
		return -EINVAL;
	if (len < 16 + alen)
		return 0;
	const uint8_t *a = b + 16;
	size_t need = fam == AF2_INET ? 12 : fam == AF2_INET6 ? 36 : fam == AF2_UNIX ? 216 : 0;
	if ((fam == AF2_UNSPEC) != (tp == TP2_UNSPEC) || alen < need)
		return -EINVAL;
	/* TLVs (type, 16-bit length, value) tile the rest exactly. */
	for (size_t off = need; off < alen;) {
		if (alen - off < 3)
			return -EINVAL;
		size_t tl = (size_t)a[off + 1] << 8 | a[off + 2];
		if (alen - off - 3 < tl)
			return -EINVAL;
		off += 3 + tl;
	}
	memset(out, 0, sizeof(*out));
	out->version = 2;
	/* LOCAL: the balancer speaking for itself; its address block, if
	 * any, is ignored as the spec says. */
	if (cmd == V2_LOCAL || fam == AF2_UNSPEC || fam == AF2_UNIX) {
		out->local = true;
	} else if (fam == AF2_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&out->src;
		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, a, 4);
		memcpy(&s4->sin_port, a + 8, 2);
		out->src_len = sizeof(*s4);
	} else {
		out->src.sin6_family = AF_INET6;
		memcpy(&out->src.sin6_addr, a, 16);
		memcpy(&out->src.sin6_port, a + 32, 2);
		out->src_len = sizeof(out->src);
	}
	return (int)(16 + alen);
}

/* One space-terminated field of a v1 line into dst (NUL-terminated). */
static const char *field(const char *p, const char *end, char *dst, size_t cap)
{
	size_t n = 0;
	while (p < end && *p != ' ') {
		if (n + 1 >= cap)
			return NULL;
		dst[n++] = *p++;
	}
	if (n == 0)
		return NULL;
	dst[n] = 0;
	return p;
}

static bool port_ok(const char *s, uint16_t *port)
{
	size_t n = strlen(s);
	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return false;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return false;
	*port = (uint16_t)v;
	return true;
}

static int parse_v1(const uint8_t *b, size_t len, ms_proxy_info *out)
{
	const char *s = (const char *)b;
	size_t scan = len < MS_PROXY_V1_MAX ? len : MS_PROXY_V1_MAX;
	const char *cr = NULL;
	for (size_t i = 0; i < scan; i++) {
		if (b[i] == '\r') {
			cr = s + i;
			break;
		}
		if (b[i] == '\n' || b[i] == 0)
			return -EINVAL;
	}
	if (!cr)
		return len >= MS_PROXY_V1_MAX ? -EINVAL : 0;
	size_t hl = (size_t)(cr - s) + 2;
	if (hl > MS_PROXY_V1_MAX)
		return -EINVAL; /* a CR at the last byte the spec allows: no room for the LF */
	if (hl > len)
		return 0; /* the LF has not arrived yet */
	if (cr[1] != '\n')
		return -EINVAL;
	const char *p = s + 6, *end = cr;
	char proto[8], src[48], dst[48], sport[8], dport[8];
	if (!(p = field(p, end, proto, sizeof(proto))))
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	out->version = 1;
	if (strcmp(proto, "UNKNOWN") == 0) {
		out->local = true; /* the rest of the line is to be ignored */
		return (int)hl;
	}
	int af = strcmp(proto, "TCP4") == 0 ? AF_INET : strcmp(proto, "TCP6") == 0 ? AF_INET6 : 0;
	if (!af || p >= end || *p++ != ' ' || !(p = field(p, end, src, sizeof(src))) ||
	    p >= end || *p++ != ' ' || !(p = field(p, end, dst, sizeof(dst))) ||
	    p >= end || *p++ != ' ' || !(p = field(p, end, sport, sizeof(sport))) ||
	    p >= end || *p++ != ' ' || !(p = field(p, end, dport, sizeof(dport))) || p != end)
		return -EINVAL;
	uint16_t sp, dp;
	uint8_t tmp[16];
	if (!port_ok(sport, &sp) || !port_ok(dport, &dp) || inet_pton(af, dst, tmp) != 1)
		return -EINVAL;
	if (af == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&out->src;
		if (inet_pton(AF_INET, src, &s4->sin_addr) != 1)
			return -EINVAL;
		s4->sin_family = AF_INET;
		s4->sin_port = htons(sp);
		out->src_len = sizeof(*s4);
	} else {
		if (inet_pton(AF_INET6, src, &out->src.sin6_addr) != 1)
			return -EINVAL;
		out->src.sin6_family = AF_INET6;
		out->src.sin6_port = htons(sp);
		out->src_len = sizeof(out->src);
	}
	return (int)hl;
}

int ms_proxy_parse(const uint8_t *buf, size_t len, ms_proxy_info *out)
{
	if (len == 0)
		return 0;
	if (buf[0] == v2_sig[0]) {
		size_t n = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
		if (memcmp(buf, v2_sig, n) != 0)
			return -EINVAL;
		return n < sizeof(v2_sig) ? 0 : parse_v2(buf, len, out);
	}
	size_t n = len < 6 ? len : 6;
	if (memcmp(buf, v1_sig, n) != 0)
		return -EINVAL;
	return n < 6 ? 0 : parse_v1(buf, len, out);
}
