/*
 * libFuzzer target for net/jwt.h.
 *
 * Input: byte 0 picks the mode and the clock, the rest is the body.
 *   mode 0: the body is a token, verified as it came (shape, base64url,
 *           header; signatures will almost never match);
 *   mode 1: the body is "header\npayload", both signed here with HMAC so
 *           header and claim parsing see validly signed input;
 *   mode 2: the body is a payload signed by ms_jwt_sign (the round trip
 *           must never fail the signature, and fails as MALFORMED exactly
 *           when the payload is not a valid JSON object);
 *   mode 3: the body is "claim\nstream" for ms_jwt_stream_allowed, and
 *           the same claim for ms_jwt_dm_allowed to the user id the second
 *           line spells (42 when it spells none).
 * Invariants: a known return code; scratch of exactly n bytes is enough
 * (ASan sees any overrun); on success exp > now, the streams span lies in
 * scratch and is a valid array, and the user's own stream is allowed; the
 * dm span lies in scratch and is false (no one allowed) or a valid array.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/digest.h>
#include <openssl/hmac.h>

#include "net/json.h"
#include "net/jwt.h"
#include "net/proto.h"

#define CHECK(c)                 \
	do {                     \
		if (!(c))        \
			abort(); \
	} while (0)

static const ms_str secrets[] = { { "k1-secret", 9 }, { "k2-secret", 9 } };

static size_t b64(const uint8_t *p, size_t n, char *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0;
	uint32_t v = 0;
	int bits = 0;

	for (size_t i = 0; i < n; i++) {
		v = v << 8 | p[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[o++] = a[v >> bits & 63];
		}
	}
	if (bits)
		out[o++] = a[v << (6 - bits) & 63];
	return o;
}

static int verify(const char *tok, size_t n, int64_t now, ms_jwt_claims *c)
{
	char *scratch = malloc(n ? n : 1);
	int rc = ms_jwt_verify(tok, n, secrets, 2, now, scratch, n, c);
	char own[32];

	CHECK(rc <= MS_JWT_OK && rc >= MS_JWT_BAD_CLAIM);
	if (rc == MS_JWT_OK) {
		CHECK(c->exp > now);
		if (c->has_streams) {
			CHECK(c->streams.p >= scratch && c->streams.p + c->streams.n <= scratch + n);
			CHECK(ms_json_valid(c->streams.p, c->streams.n));
		} else {
			CHECK(c->streams.n == 0);
		}
		if (c->has_dm) {
			CHECK(c->dm.p >= scratch && c->dm.p + c->dm.n <= scratch + n);
			CHECK(ms_json_valid(c->dm.p, c->dm.n));
			if (c->dm.p[0] != '[') {
				CHECK(c->dm.n == 5 && memcmp(c->dm.p, "false", 5) == 0);
				CHECK(!ms_jwt_dm_allowed(c->dm, c->sub));
			}
		} else {
			CHECK(c->dm.n == 0 && ms_jwt_dm_allowed(c->dm, c->sub));
		}
		(void)ms_jwt_dm_allowed(c->dm, 7);
		snprintf(own, sizeof(own), "user:%llu", (unsigned long long)c->sub);
		CHECK(ms_jwt_stream_allowed(c->streams, c->sub, (ms_str){ own, strlen(own) }));
		(void)ms_jwt_stream_allowed(c->streams, c->sub, (ms_str){ "clan:1", 6 });
	}
	free(scratch);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ms_jwt_claims c;
	int64_t now;
	const uint8_t *body, *nl;
	size_t n;

	if (size < 1)
		return 0;
	now = (data[0] >> 2) ? 1700000000 : INT64_MIN;
	body = data + 1;
	n = size - 1;
	nl = memchr(body, '\n', n);

	switch (data[0] & 3) {
	case 0: {
		char *tok = malloc(n ? n : 1);

		memcpy(tok, body, n);
		(void)verify(tok, n, now, &c);
		free(tok);
		break;
	}
	case 1: {
		size_t hn = nl ? (size_t)(nl - body) : n, pn = nl ? n - hn - 1 : 0;
		size_t cap = (hn + pn) * 4 / 3 + 64, o;
		char *tok = malloc(cap);
		uint8_t mac[32];
		unsigned len;

		o = b64(body, hn, tok);
		tok[o++] = '.';
		o += b64(body + hn + 1 - !nl, pn, tok + o);
		HMAC(EVP_sha256(), secrets[1].p, secrets[1].n, (uint8_t *)tok, o, mac, &len);
		tok[o++] = '.';
		o += b64(mac, 32, tok + o);
		CHECK(o <= cap);
		int rc = verify(tok, o, now, &c);
		CHECK(rc != MS_JWT_BAD_SIG || hn == 0 || pn == 0);
		free(tok);
		break;
	}
	case 2: {
		size_t cap = n * 4 / 3 + 128;
		char *tok = malloc(cap);
		long len = ms_jwt_sign((const char *)body, n, secrets[0], tok, cap);
		int rc;
		ms_json_iter it;
		ms_str k, v;
		int r = -1;

		CHECK(len > 0 && (size_t)len <= cap);
		rc = verify(tok, (size_t)len, now, &c);
		CHECK(rc != MS_JWT_BAD_SIG && rc != MS_JWT_BAD_ALG);
		if (ms_json_object_begin(&it, (const char *)body, n))
			while ((r = ms_json_object_next(&it, &k, &v)) > 0)
				;
		if (r != 0)
			CHECK(rc == MS_JWT_MALFORMED);
		/* one byte short of room never overruns */
		CHECK(ms_jwt_sign((const char *)body, n, secrets[0], tok, (size_t)len - 1) == -1);
		free(tok);
		break;
	}
	default: {
		size_t sn = nl ? (size_t)(nl - body) : n;
		char *copy = malloc(n ? n : 1);
		ms_str second;
		uint64_t to;

		memcpy(copy, body, n);
		second = (ms_str){ copy + sn + !!nl, n - sn - !!nl };
		(void)ms_jwt_stream_allowed((ms_str){ copy, sn }, 42, second);
		if (!ms_proto_uid(second, &to))
			to = 42;
		/* no claim allows anyone */
		CHECK(sn || ms_jwt_dm_allowed((ms_str){ copy, sn }, to));
		(void)ms_jwt_dm_allowed((ms_str){ copy, sn }, to);
		free(copy);
		break;
	}
	}
	return 0;
}
