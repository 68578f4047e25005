/*
 * HS256 tokens for ?token= (PROTOCOL.md "Identity") and the small JSON
 * field finder the chat scenarios read replies and events with. The JSON
 * finder trusts the server's framing: it skips strings and nested values
 * at depth > 1 and does not validate.
 */
#include "bench.h"

#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

size_t ms_bench_b64url(const uint8_t *in, size_t n, char *out)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0, i = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = tab[(v >> 6) & 63];
		out[o++] = tab[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = tab[(v >> 6) & 63];
	}
	out[o] = 0;
	return o;
}

int ms_bench_jwt(const char *secret, uint64_t sub, uint64_t exp, char *out, size_t cap)
{
	static const char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	char payload[128];
	int pn = snprintf(payload, sizeof(payload), "{\"sub\":\"%llu\",\"exp\":%llu}",
			  (unsigned long long)sub, (unsigned long long)exp);
	char buf[512];
	size_t n = ms_bench_b64url((const uint8_t *)hdr, sizeof(hdr) - 1, buf);
	buf[n++] = '.';
	n += ms_bench_b64url((const uint8_t *)payload, (size_t)pn, buf + n);
	uint8_t mac[SHA256_DIGEST_LENGTH];
	unsigned maclen = 0;
	if (!HMAC(EVP_sha256(), secret, strlen(secret), (const uint8_t *)buf, n, mac, &maclen))
		return -1;
	buf[n++] = '.';
	n += ms_bench_b64url(mac, maclen, buf + n);
	if (n + 1 > cap)
		return -1;
	memcpy(out, buf, n + 1);
	return (int)n;
}

/* Index just past the JSON value starting at s[i], or n. */
static size_t skip_value(const char *s, size_t n, size_t i)
{
	if (i >= n)
		return n;
	if (s[i] == '"') {
		for (i++; i < n; i++) {
			if (s[i] == '\\')
				i++;
			else if (s[i] == '"')
				return i + 1;
		}
		return n;
	}
	if (s[i] == '{' || s[i] == '[') {
		int depth = 0;
		for (; i < n; i++) {
			char c = s[i];
			if (c == '"') {
				i = skip_value(s, n, i) - 1;
			} else if (c == '{' || c == '[') {
				depth++;
			} else if (c == '}' || c == ']') {
				if (--depth == 0)
					return i + 1;
			}
		}
		return n;
	}
	while (i < n && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ')
		i++;
	return i;
}

static size_t skip_ws(const char *s, size_t n, size_t i)
{
	while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
		i++;
	return i;
}

int ms_bench_json_get(const char *s, size_t n, const char *key, const char **v, size_t *vn)
{
	size_t kl = strlen(key);
	size_t i = skip_ws(s, n, 0);
	if (i >= n || s[i] != '{')
		return -1;
	i++;
	while (i < n) {
		i = skip_ws(s, n, i);
		if (i >= n || s[i] != '"')
			return -1;
		size_t ks = i + 1, ke = skip_value(s, n, i);
		if (ke > n || ke < ks + 1)
			return -1;
		bool match = ke - 1 - ks == kl && memcmp(s + ks, key, kl) == 0;
		i = skip_ws(s, n, ke);
		if (i >= n || s[i] != ':')
			return -1;
		i = skip_ws(s, n, i + 1);
		size_t ve = skip_value(s, n, i);
		if (match) {
			if (s[i] == '"' && ve >= i + 2) {
				*v = s + i + 1;
				*vn = ve - i - 2;
			} else {
				*v = s + i;
				*vn = ve - i;
			}
			return 0;
		}
		i = skip_ws(s, n, ve);
		if (i < n && s[i] == ',')
			i++;
		else
			return -1;
	}
	return -1;
}

int ms_bench_json_u64(const char *s, size_t n, const char *key, uint64_t *out)
{
	const char *v;
	size_t vn;
	if (ms_bench_json_get(s, n, key, &v, &vn) < 0 || vn == 0)
		return -1;
	uint64_t x = 0;
	for (size_t i = 0; i < vn; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	*out = x;
	return 0;
}
