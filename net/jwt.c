/*
 * HS256 JSON Web Tokens (net/jwt.h, PROTOCOL.md "Identity").
 *
 * Order of checks in ms_jwt_verify, and why:
 *   1. shape: exactly three base64url parts (RFC 7515 compact form, no
 *      padding, no stray bits in the last character, so every token has
 *      exactly one spelling and a signature cannot be re-encoded);
 *   2. header: a JSON object whose "alg" is "HS256" — checked before any
 *      signature work, because "none" and other algorithms must never reach
 *      the MAC path;
 *   3. signature: HMAC-SHA256 of "header.payload" under each configured
 *      secret (two during rotation), compared with CRYPTO_memcmp;
 *   4. only then the payload: its JSON is attacker-controlled until the MAC
 *      has matched, so nothing reads it earlier.
 * A second alg, typ, exp, sub, streams or dm member (compared decoded, so
 * "\u0061lg" counts) makes the token malformed: a token that two JSON
 * readers would read differently must not verify. Other members, claims
 * like iat and nbf included, are ignored.
 */
#include "net/jwt.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/digest.h>
#include <openssl/hmac.h>

#include "net/json.h"
#include "net/proto.h"

#define SIG_LEN 32    /* SHA-256 */
#define SIG_B64 43    /* its base64url length without padding */

static const char b64url[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Value + 1, so bytes outside the base64url alphabet read as 0. */
static const uint8_t b64dec[256] = {
	['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,
	['G'] = 7,  ['H'] = 8,  ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12,
	['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16, ['Q'] = 17, ['R'] = 18,
	['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
	['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30,
	['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36,
	['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42,
	['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
	['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54,
	['2'] = 55, ['3'] = 56, ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60,
	['8'] = 61, ['9'] = 62, ['-'] = 63, ['_'] = 64,
};

static size_t b64_len(size_t n)
{
	return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

static size_t b64_encode(const uint8_t *in, size_t n, char *out)
{
	char *o = out;
	size_t i = 0;

	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		*o++ = b64url[v >> 18];
		*o++ = b64url[v >> 12 & 63];
		*o++ = b64url[v >> 6 & 63];
		*o++ = b64url[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;

		*o++ = b64url[v >> 18];
		*o++ = b64url[v >> 12 & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;

		*o++ = b64url[v >> 18];
		*o++ = b64url[v >> 12 & 63];
		*o++ = b64url[v >> 6 & 63];
	}
	return (size_t)(o - out);
}

/* Decode s into out (cap bytes). Returns the length, or -1 on a byte
 * outside the alphabet (including '='), an impossible length (n % 4 == 1),
 * nonzero unused bits in the last character, or too little room. */
static long b64_decode(ms_str s, uint8_t *out, size_t cap)
{
	const uint8_t *p = (const uint8_t *)s.p;
	size_t n = s.n, i = 0, o = 0, rem = n % 4;
	uint32_t v;

	if (rem == 1 || n / 4 * 3 + (rem ? rem - 1 : 0) > cap)
		return -1;
	for (; i + 4 <= n; i += 4) {
		uint8_t a = b64dec[p[i]], b = b64dec[p[i + 1]], c = b64dec[p[i + 2]],
			d = b64dec[p[i + 3]];

		if (!a || !b || !c || !d)
			return -1;
		a--, b--, c--, d--;
		v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | d;
		out[o++] = (uint8_t)(v >> 16);
		out[o++] = (uint8_t)(v >> 8);
		out[o++] = (uint8_t)v;
	}
	if (rem) {
		uint8_t a = b64dec[p[i]], b = b64dec[p[i + 1]],
			c = rem == 3 ? b64dec[p[i + 2]] : 1;

		if (!a || !b || !c)
			return -1;
		a--, b--, c--;
		v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6;
		if (rem == 2 && (b & 0x0f))
			return -1;
		if (rem == 3 && (c & 0x03))
			return -1;
		out[o++] = (uint8_t)(v >> 16);
		if (rem == 3)
			out[o++] = (uint8_t)(v >> 8);
	}
	return (long)o;
}

/* The checks of b64_decode without the output. */
static bool b64_valid(ms_str s)
{
	size_t rem = s.n % 4;
	uint8_t last;

	if (rem == 1)
		return false;
	for (size_t i = 0; i < s.n; i++)
		if (!b64dec[(uint8_t)s.p[i]])
			return false;
	if (!rem)
		return true;
	last = b64dec[(uint8_t)s.p[s.n - 1]] - 1;
	return rem == 2 ? !(last & 0x0f) : !(last & 0x03);
}

static bool str_is(ms_str v, const char *lit)
{
	size_t n = strlen(lit);

	/* Compared raw: the accepted values contain nothing to escape, and a
	 * spelling with escapes is no alg of ours. */
	return v.n == n + 2 && v.p[0] == '"' && memcmp(v.p + 1, lit, n) == 0;
}

/* Whether member key k (raw contents, from the iterator, so quoted in the
 * text) is lit, compared decoded: "\u0061lg" is "alg", so it counts as a
 * second alg rather than slipping past as an unknown member. */
static bool key_is(ms_str k, const char *lit)
{
	size_t n = strlen(lit);
	char buf[16];
	long len;

	if (!memchr(k.p, '\\', k.n))
		return k.n == n && memcmp(k.p, lit, n) == 0;
	len = ms_json_string((ms_str){ k.p - 1, k.n + 2 }, buf, sizeof(buf));
	return len == (long)n && memcmp(buf, lit, n) == 0;
}

static int check_header(const char *h, size_t n)
{
	ms_json_iter it;
	ms_str k, v, alg = { 0 }, typ = { 0 };
	int r, nalg = 0, ntyp = 0;

	if (!ms_json_object_begin(&it, h, n))
		return MS_JWT_MALFORMED;
	while ((r = ms_json_object_next(&it, &k, &v)) > 0) {
		if (key_is(k, "crit"))
			return MS_JWT_MALFORMED; /* extensions we do not know */
		if (key_is(k, "alg")) {
			alg = v;
			nalg++;
		} else if (key_is(k, "typ")) {
			typ = v;
			ntyp++;
		}
	}
	if (r < 0 || nalg > 1 || ntyp > 1)
		return MS_JWT_MALFORMED;
	if (!nalg || !str_is(alg, "HS256"))
		return MS_JWT_BAD_ALG;
	if (ntyp && !str_is(typ, "JWT"))
		return MS_JWT_MALFORMED;
	return MS_JWT_OK;
}

/* A streams or dm entry's raw contents, or n == 0 if it is not a string. */
static ms_str entry(ms_str v)
{
	if (v.n < 2 || v.p[0] != '"')
		return (ms_str){ 0 };
	return (ms_str){ v.p + 1, v.n - 2 };
}

static bool entry_valid(ms_str e)
{
	if (e.n > 1 && e.p[e.n - 1] == '*')
		e.n--;
	return ms_proto_stream_valid(e);
}

/* A dm entry: a canonical user id, or a prefix of one followed by '*' ("*"
 * alone: every id). A prefix no canonical id starts with ("01*", 21 digits)
 * is refused like a malformed id: it can only be a mistake. Raw contents, so
 * an escaped digit is refused too (one spelling per id, as for sub). */
static bool dm_entry_valid(ms_str e)
{
	uint64_t id;

	if (e.n && e.p[e.n - 1] == '*') {
		e.n--;
		if (!e.n)
			return true;
	}
	return ms_proto_uid(e, &id);
}

/* dm: false, or an array whose every entry is valid. */
static bool dm_claim_valid(ms_str dm)
{
	ms_json_iter it;
	ms_str v;
	int r;

	if (dm.n == 5 && memcmp(dm.p, "false", 5) == 0)
		return true;
	if (!ms_json_array_begin(&it, dm.p, dm.n))
		return false;
	while ((r = ms_json_array_next(&it, &v)) > 0)
		if (!dm_entry_valid(entry(v)))
			return false;
	return r == 0;
}

static int check_claims(const char *p, size_t n, int64_t now, ms_jwt_claims *c)
{
	ms_json_iter it, ai;
	ms_str k, v, e, exp = { 0 }, sub = { 0 }, streams = { 0 }, dm = { 0 };
	int r, nexp = 0, nsub = 0, nstreams = 0, ndm = 0;

	if (!ms_json_object_begin(&it, p, n))
		return MS_JWT_MALFORMED;
	while ((r = ms_json_object_next(&it, &k, &v)) > 0) {
		if (key_is(k, "exp")) {
			exp = v;
			nexp++;
		} else if (key_is(k, "sub")) {
			sub = v;
			nsub++;
		} else if (key_is(k, "streams")) {
			streams = v;
			nstreams++;
		} else if (key_is(k, "dm")) {
			dm = v;
			ndm++;
		}
	}
	if (r < 0 || nexp > 1 || nsub > 1 || nstreams > 1 || ndm > 1)
		return MS_JWT_MALFORMED;

	if (!nexp || !ms_json_int(exp, &c->exp) || c->exp <= now)
		return MS_JWT_EXPIRED;
	/* sub: "123" or 123 — a JSON integer is already canonical unless
	 * negative, which ms_proto_uid refuses along with fractions. */
	if (!nsub)
		return MS_JWT_BAD_SUB;
	if (sub.p[0] == '"')
		sub = entry(sub);
	if (!ms_proto_uid(sub, &c->sub))
		return MS_JWT_BAD_SUB;
	if (nstreams) {
		if (!ms_json_array_begin(&ai, streams.p, streams.n))
			return MS_JWT_BAD_CLAIM;
		while ((r = ms_json_array_next(&ai, &v)) > 0) {
			e = entry(v);
			if (!entry_valid(e))
				return MS_JWT_BAD_CLAIM;
		}
		if (r < 0)
			return MS_JWT_BAD_CLAIM;
		c->has_streams = true;
		c->streams = streams;
	}
	if (ndm) {
		if (!dm_claim_valid(dm))
			return MS_JWT_BAD_CLAIM;
		c->has_dm = true;
		c->dm = dm;
	}
	return MS_JWT_OK;
}

static bool mac(ms_str key, const char *msg, size_t n, uint8_t out[SIG_LEN])
{
	unsigned len = 0;

	return HMAC(EVP_sha256(), key.n ? key.p : "", key.n, (const uint8_t *)msg, n, out, &len) &&
	       len == SIG_LEN;
}

int ms_jwt_verify(const char *tok, size_t n, const ms_str *secrets, int nsecrets,
		  int64_t now, char *scratch, size_t scratch_len, ms_jwt_claims *claims)
{
	const char *d1, *d2, *end;
	uint8_t sig[SIG_LEN], want[SIG_LEN];
	ms_str hs, ps, ss;
	long len;
	int rc;
	bool ok = false;

	memset(claims, 0, sizeof(*claims));
	if (n == 0 || !(d1 = memchr(tok, '.', n)))
		return MS_JWT_MALFORMED;
	end = tok + n;
	d2 = memchr(d1 + 1, '.', (size_t)(end - d1 - 1));
	if (!d2 || memchr(d2 + 1, '.', (size_t)(end - d2 - 1)))
		return MS_JWT_MALFORMED;
	hs = (ms_str){ tok, (size_t)(d1 - tok) };
	ps = (ms_str){ d1 + 1, (size_t)(d2 - d1 - 1) };
	ss = (ms_str){ d2 + 1, (size_t)(end - d2 - 1) };
	if (hs.n == 0 || ps.n == 0 || !b64_valid(ps) || !b64_valid(ss))
		return MS_JWT_MALFORMED;

	len = b64_decode(hs, (uint8_t *)scratch, scratch_len);
	if (len < 0)
		return MS_JWT_MALFORMED;
	rc = check_header(scratch, (size_t)len);
	if (rc != MS_JWT_OK)
		return rc;

	/* Well-formed but not 32 bytes (empty, truncated, another
	 * algorithm's size): a bad signature. */
	if (ss.n != SIG_B64 || b64_decode(ss, sig, sizeof(sig)) != SIG_LEN)
		return MS_JWT_BAD_SIG;
	/* Every secret is tried, match or not, so the time taken does not
	 * say which one signed the token. An empty secret would let anyone
	 * mint tokens, so it never matches. */
	for (int i = 0; i < nsecrets; i++)
		if (secrets[i].n && mac(secrets[i], tok, (size_t)(d2 - tok), want))
			ok |= CRYPTO_memcmp(sig, want, SIG_LEN) == 0;
	if (!ok)
		return MS_JWT_BAD_SIG;

	len = b64_decode(ps, (uint8_t *)scratch, scratch_len);
	if (len < 0)
		return MS_JWT_MALFORMED;
	rc = check_claims(scratch, (size_t)len, now, claims);
	if (rc != MS_JWT_OK) {
		memset(claims, 0, sizeof(*claims));
		return rc;
	}
	return MS_JWT_OK;
}

bool ms_jwt_stream_allowed(ms_str streams, uint64_t sub, ms_str stream)
{
	char own[32];
	int k = snprintf(own, sizeof(own), "user:%llu", (unsigned long long)sub);
	ms_json_iter it;
	ms_str v, e;

	if ((size_t)k == stream.n && memcmp(own, stream.p, stream.n) == 0)
		return true;
	if (streams.n == 0 || !ms_json_array_begin(&it, streams.p, streams.n))
		return false;
	while (ms_json_array_next(&it, &v) > 0) {
		e = entry(v);
		if (!entry_valid(e))
			continue;
		if (e.p[e.n - 1] == '*') {
			e.n--;
			if (stream.n >= e.n && memcmp(stream.p, e.p, e.n) == 0)
				return true;
		} else if (e.n == stream.n && memcmp(e.p, stream.p, e.n) == 0) {
			return true;
		}
	}
	return false;
}

bool ms_jwt_dm_allowed(ms_str dm, uint64_t to)
{
	char id[24];
	size_t k;
	ms_json_iter it;
	ms_str v, e;

	if (dm.n == 0)
		return true;
	/* false, and anything that is not an array, allows no one */
	if (!ms_json_array_begin(&it, dm.p, dm.n))
		return false;
	k = (size_t)snprintf(id, sizeof(id), "%llu", (unsigned long long)to);
	while (ms_json_array_next(&it, &v) > 0) {
		e = entry(v);
		if (!dm_entry_valid(e))
			continue;
		if (e.p[e.n - 1] == '*') {
			e.n--;
			if (e.n <= k && memcmp(id, e.p, e.n) == 0)
				return true;
		} else if (e.n == k && memcmp(id, e.p, k) == 0) {
			return true;
		}
	}
	return false;
}

long ms_jwt_sign(const char *payload_json, size_t payload_len, ms_str secret,
		 char *out, size_t cap)
{
	static const char header[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"; /* {"alg":"HS256","typ":"JWT"} */
	size_t hn = sizeof(header) - 1, pn = b64_len(payload_len), o;
	uint8_t sig[SIG_LEN];

	if (payload_len > (SIZE_MAX - 64) / 2 || hn + 1 + pn + 1 + SIG_B64 > cap)
		return -1;
	memcpy(out, header, hn);
	o = hn;
	out[o++] = '.';
	o += b64_encode((const uint8_t *)payload_json, payload_len, out + o);
	if (!mac(secret, out, o, sig))
		return -1;
	out[o++] = '.';
	o += b64_encode(sig, SIG_LEN, out + o);
	if (o < cap)
		out[o] = '\0';
	return (long)o;
}
