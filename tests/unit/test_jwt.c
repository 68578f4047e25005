/*
 * Unit tests for net/jwt.h: a known-answer token (computed offline with
 * Python's hmac and base64 modules), expiry, bad signatures, alg none and
 * HS512 rejected, malformed compact forms and base64url, exp and sub
 * claims, secret rotation, the streams claim and stream authorisation, the
 * dm claim and DM authorisation.
 * Tokens with unusual headers are minted here with BoringSSL's HMAC.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/digest.h>
#include <openssl/hmac.h>

#include "net/jwt.h"

#define S(lit) ((ms_str){ lit, sizeof(lit) - 1 })
#define NOW 1700000000
#define SECRET "test-secret"

/* python3: b64(h)+'.'+b64(p) signed with HMAC-SHA256("test-secret"),
 * h = {"alg":"HS256","typ":"JWT"},
 * p = {"sub":"42","exp":2000000000,"streams":["clan:*","room.1"]} */
static const char kat[] =
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
	"eyJzdWIiOiI0MiIsImV4cCI6MjAwMDAwMDAwMCwic3RyZWFtcyI6WyJjbGFuOioiLCJyb29tLjEiXX0."
	"0N_iXTyFYG41dv0prrnSUkx3SS0VwYXtrSeFRuK-mRI";
static const char kat_payload[] = "{\"sub\":\"42\",\"exp\":2000000000,\"streams\":[\"clan:*\",\"room.1\"]}";

/* python3: h = {"alg":"HS512","typ":"JWT"}, p = {"sub":"42","exp":2000000000},
 * really signed with HMAC-SHA512("test-secret") */
static const char hs512[] =
	"eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiIsImV4cCI6MjAwMDAwMDAwMH0."
	"OXboY1J37K4MRvHQEB3IXeiIHe2-IbeqEOy-DNfna7UD1u9c6DQeahYzi7-dGq8efdyT_1AfjANWSYmCwjjp2A";

/* python3: h = {"alg":"none","typ":"JWT"}, same payload, empty signature */
static const char none[] = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiI0MiIsImV4cCI6MjAwMDAwMDAwMH0.";

static size_t b64(const void *in, size_t n, char *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const uint8_t *p = in;
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

/* header.payload.HMAC-SHA256(secret), NUL-terminated in a static buffer. */
static const char *mint(const char *hdr, const char *payload, const char *secret)
{
	static char out[4096];
	uint8_t mac[32];
	unsigned len;
	size_t o;

	o = b64(hdr, strlen(hdr), out);
	out[o++] = '.';
	o += b64(payload, strlen(payload), out + o);
	HMAC(EVP_sha256(), secret, strlen(secret), (uint8_t *)out, o, mac, &len);
	out[o++] = '.';
	o += b64(mac, 32, out + o);
	out[o] = '\0';
	return out;
}

#define HDR "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

static int verify_with(const char *tok, const ms_str *secrets, int n, int64_t now,
		       ms_jwt_claims *c)
{
	static char scratch[4096];

	return ms_jwt_verify(tok, strlen(tok), secrets, n, now, scratch, sizeof(scratch), c);
}

static int verify(const char *tok, ms_jwt_claims *c)
{
	static const ms_str secrets[] = { S(SECRET) };

	return verify_with(tok, secrets, 1, NOW, c);
}

static int claims_rc(const char *payload)
{
	ms_jwt_claims c;

	return verify(mint(HDR, payload, SECRET), &c);
}

static void test_known_answer(void **state)
{
	char out[512];
	long n;
	ms_jwt_claims c;

	(void)state;
	n = ms_jwt_sign(kat_payload, sizeof(kat_payload) - 1, S(SECRET), out, sizeof(out));
	assert_int_equal(n, sizeof(kat) - 1);
	assert_string_equal(out, kat);
	assert_string_equal(mint(HDR, kat_payload, SECRET), kat);

	assert_int_equal(verify(kat, &c), MS_JWT_OK);
	assert_true(c.sub == 42);
	assert_int_equal(c.exp, 2000000000);
	assert_true(c.has_streams);
	assert_int_equal(c.streams.n, strlen("[\"clan:*\",\"room.1\"]"));
	assert_memory_equal(c.streams.p, "[\"clan:*\",\"room.1\"]", c.streams.n);

	/* capacity: exact fits (no room for the NUL), one less fails */
	assert_int_equal(ms_jwt_sign(kat_payload, sizeof(kat_payload) - 1, S(SECRET), out,
				     sizeof(kat) - 1), n);
	assert_int_equal(ms_jwt_sign(kat_payload, sizeof(kat_payload) - 1, S(SECRET), out,
				     sizeof(kat) - 2), -1);
	/* scratch must hold the decoded parts */
	{
		static const ms_str secrets[] = { S(SECRET) };
		char small[16];

		assert_int_equal(ms_jwt_verify(kat, sizeof(kat) - 1, secrets, 1, NOW, small,
					       sizeof(small), &c), MS_JWT_MALFORMED);
	}
}

static void test_expiry(void **state)
{
	static const ms_str secrets[] = { S(SECRET) };
	ms_jwt_claims c;

	(void)state;
	assert_int_equal(verify_with(kat, secrets, 1, 1999999999, &c), MS_JWT_OK);
	assert_int_equal(verify_with(kat, secrets, 1, 2000000000, &c), MS_JWT_EXPIRED);
	assert_int_equal(verify_with(kat, secrets, 1, 2000000001, &c), MS_JWT_EXPIRED);
	assert_true(c.sub == 0 && !c.has_streams); /* cleared on failure */

	assert_int_equal(claims_rc("{\"sub\":\"1\"}"), MS_JWT_EXPIRED);
	assert_int_equal(claims_rc("{\"sub\":\"1\",\"exp\":\"2000000000\"}"), MS_JWT_EXPIRED);
	assert_int_equal(claims_rc("{\"sub\":\"1\",\"exp\":2e9}"), MS_JWT_EXPIRED);
	assert_int_equal(claims_rc("{\"sub\":\"1\",\"exp\":2000000000.5}"), MS_JWT_EXPIRED);
	assert_int_equal(claims_rc("{\"sub\":\"1\",\"exp\":null}"), MS_JWT_EXPIRED);
	assert_int_equal(claims_rc("{\"sub\":\"1\",\"exp\":99999999999999999999}"), MS_JWT_EXPIRED);
	assert_int_equal(claims_rc("{\"sub\":\"1\",\"exp\":-1}"), MS_JWT_EXPIRED);
	assert_int_equal(claims_rc("{\"sub\":\"1\",\"exp\":9223372036854775807}"), MS_JWT_OK);
}

static void test_bad_signature(void **state)
{
	char tok[512];
	ms_jwt_claims c;
	size_t n = sizeof(kat) - 1;
	const char *t;

	(void)state;
	/* every signature character changed to another valid one */
	for (size_t i = n - 43; i < n - 1; i++) {
		memcpy(tok, kat, n + 1);
		tok[i] = tok[i] == 'A' ? 'B' : 'A';
		assert_int_equal(verify(tok, &c), MS_JWT_BAD_SIG);
	}
	/* signed with another secret */
	assert_int_equal(verify(mint(HDR, kat_payload, "other"), &c), MS_JWT_BAD_SIG);
	/* payload swapped under the original signature */
	t = mint(HDR, "{\"sub\":\"1\",\"exp\":2000000000}", SECRET);
	snprintf(tok, sizeof(tok), "%.*s%s", (int)(strrchr(t, '.') - t), t, strrchr(kat, '.'));
	assert_int_equal(verify(tok, &c), MS_JWT_BAD_SIG);
	/* a well-formed signature of the wrong size, or none */
	snprintf(tok, sizeof(tok), "%.*s.", (int)(strrchr(kat, '.') - kat), kat);
	assert_int_equal(verify(tok, &c), MS_JWT_BAD_SIG);
	snprintf(tok, sizeof(tok), "%.*s", (int)(n - 3), kat); /* 40 chars: 30 bytes */
	assert_int_equal(verify(tok, &c), MS_JWT_BAD_SIG);
	snprintf(tok, sizeof(tok), "%sAAAA", kat);
	assert_int_equal(verify(tok, &c), MS_JWT_BAD_SIG);
	/* no secrets at all */
	assert_int_equal(verify_with(kat, NULL, 0, NOW, &c), MS_JWT_BAD_SIG);
}

static void test_algorithms(void **state)
{
	static const char *pl = "{\"sub\":\"42\",\"exp\":2000000000}";
	ms_jwt_claims c;

	(void)state;
	assert_int_equal(verify(none, &c), MS_JWT_BAD_ALG);
	assert_int_equal(verify(hs512, &c), MS_JWT_BAD_ALG);
	/* alg none with a real HS256 signature is still none */
	assert_int_equal(verify(mint("{\"alg\":\"none\"}", pl, SECRET), &c), MS_JWT_BAD_ALG);
	assert_int_equal(verify(mint("{\"alg\":\"HS512\"}", pl, SECRET), &c), MS_JWT_BAD_ALG);
	assert_int_equal(verify(mint("{\"alg\":\"RS256\"}", pl, SECRET), &c), MS_JWT_BAD_ALG);
	assert_int_equal(verify(mint("{\"alg\":\"hs256\"}", pl, SECRET), &c), MS_JWT_BAD_ALG);
	assert_int_equal(verify(mint("{\"alg\":\"HS256 \"}", pl, SECRET), &c), MS_JWT_BAD_ALG);
	assert_int_equal(verify(mint("{\"alg\":\"HS\\u0032\\u00356\"}", pl, SECRET), &c), MS_JWT_BAD_ALG);
	assert_int_equal(verify(mint("{\"alg\":null}", pl, SECRET), &c), MS_JWT_BAD_ALG);
	assert_int_equal(verify(mint("{\"alg\":[\"HS256\"]}", pl, SECRET), &c), MS_JWT_BAD_ALG);
	assert_int_equal(verify(mint("{\"typ\":\"JWT\"}", pl, SECRET), &c), MS_JWT_BAD_ALG);
	assert_int_equal(verify(mint("{}", pl, SECRET), &c), MS_JWT_BAD_ALG);
	/* typ optional, JWT if present; other header members ignored */
	assert_int_equal(verify(mint("{\"alg\":\"HS256\"}", pl, SECRET), &c), MS_JWT_OK);
	assert_int_equal(verify(mint("{\"typ\":\"JWT\",\"alg\":\"HS256\",\"kid\":\"k1\"}", pl, SECRET), &c),
			 MS_JWT_OK);
	assert_int_equal(verify(mint(" {\n\"alg\" : \"HS256\" } ", pl, SECRET), &c), MS_JWT_OK);
	assert_int_equal(verify(mint("{\"alg\":\"HS256\",\"typ\":\"JWS\"}", pl, SECRET), &c), MS_JWT_MALFORMED);
	assert_int_equal(verify(mint("{\"alg\":\"HS256\",\"typ\":1}", pl, SECRET), &c), MS_JWT_MALFORMED);
	/* ambiguous or not understood headers */
	assert_int_equal(verify(mint("{\"alg\":\"HS256\",\"alg\":\"none\"}", pl, SECRET), &c), MS_JWT_MALFORMED);
	assert_int_equal(verify(mint("{\"alg\":\"HS256\",\"\\u0061lg\":\"none\"}", pl, SECRET), &c),
			 MS_JWT_MALFORMED);
	assert_int_equal(verify(mint("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", pl, SECRET), &c),
			 MS_JWT_MALFORMED);
	assert_int_equal(verify(mint("{\"\\u0061lg\":\"HS256\",\"k\\u0069d\":1}", pl, SECRET), &c),
			 MS_JWT_OK);
	assert_int_equal(verify(mint("{\"\\u0061lg\":\"none\"}", pl, SECRET), &c), MS_JWT_BAD_ALG);
	assert_int_equal(verify(mint("{\"alg\":\"HS256\",}", pl, SECRET), &c), MS_JWT_MALFORMED);
	assert_int_equal(verify(mint("[\"HS256\"]", pl, SECRET), &c), MS_JWT_MALFORMED);
	assert_int_equal(verify(mint("HS256", pl, SECRET), &c), MS_JWT_MALFORMED);
}

static void test_malformed(void **state)
{
	char tok[512];
	ms_jwt_claims c;
	size_t n = sizeof(kat) - 1;
	const char *d1 = strchr(kat, '.'), *d2 = strrchr(kat, '.');

	(void)state;
	static const char *bad[] = {
		"", ".", "..", "...", "a", "a.b", "a.b.c.d", "abcd", "e30.e30",
		".e30.AAAA", "e30..AAAA", "e30.e30.AAAA.AAAA",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (verify(bad[i], &c) != MS_JWT_MALFORMED)
			fail_msg("not malformed: \"%s\"", bad[i]);
	assert_int_equal(ms_jwt_verify(NULL, 0, NULL, 0, NOW, NULL, 0, &c), MS_JWT_MALFORMED);

	/* padding, standard-alphabet characters, stray bytes in each part */
	static const char *ins[] = { "=", "==", "+", "/", " ", "\n", "%", "\x80", "\0" };
	size_t at[] = { (size_t)(d1 - kat), (size_t)(d2 - kat), n, 5 };
	for (size_t i = 0; i < sizeof(ins) / sizeof(ins[0]); i++) {
		for (size_t j = 0; j < sizeof(at) / sizeof(at[0]); j++) {
			size_t k = strlen(ins[i]) ? strlen(ins[i]) : 1;

			memcpy(tok, kat, at[j]);
			memcpy(tok + at[j], ins[i], k);
			memcpy(tok + at[j] + k, kat + at[j], n - at[j]);
			if (ms_jwt_verify(tok, n + k, (ms_str[]){ S(SECRET) }, 1, NOW,
					  (char[512]){ 0 }, 512, &c) != MS_JWT_MALFORMED)
				fail_msg("insert %zu at %zu accepted", i, j);
		}
	}
	/* a signature with nonzero unused bits: the same bytes, another
	 * spelling ('I' = 8 ends in 00, 'J' = 9 does not) */
	memcpy(tok, kat, n + 1);
	assert_int_equal(tok[n - 1], 'I');
	tok[n - 1] = 'J';
	assert_int_equal(verify(tok, &c), MS_JWT_MALFORMED);
	/* a part whose length is 1 mod 4 */
	snprintf(tok, sizeof(tok), "%.*sA%s", (int)(d1 - kat), kat, d1);
	assert_int_equal(verify(tok, &c), MS_JWT_MALFORMED);

	/* validly signed payloads that are not a JSON object */
	assert_int_equal(claims_rc(""), MS_JWT_MALFORMED);
	assert_int_equal(claims_rc("[]"), MS_JWT_MALFORMED);
	assert_int_equal(claims_rc("\"sub\""), MS_JWT_MALFORMED);
	assert_int_equal(claims_rc("{\"sub\":\"1\",\"exp\":2000000000,}"), MS_JWT_MALFORMED);
	assert_int_equal(claims_rc("{\"sub\":\"1\",\"exp\":2000000000}x"), MS_JWT_MALFORMED);
	assert_int_equal(claims_rc("{\"sub\":\"1\",\"exp\":2000000000,\"n\":\"\xc3\"}"), MS_JWT_MALFORMED);
	/* ambiguous claims */
	assert_int_equal(claims_rc("{\"sub\":\"1\",\"sub\":\"2\",\"exp\":2000000000}"), MS_JWT_MALFORMED);
	assert_int_equal(claims_rc("{\"sub\":\"1\",\"exp\":2000000000,\"exp\":1}"), MS_JWT_MALFORMED);
	assert_int_equal(claims_rc("{\"sub\":\"1\",\"exp\":2000000000,\"streams\":[],\"streams\":[]}"),
			 MS_JWT_MALFORMED);
	assert_int_equal(claims_rc("{\"sub\":\"1\",\"exp\":2000000000,\"dm\":false,\"d\\u006d\":[\"2\"]}"),
			 MS_JWT_MALFORMED);
	assert_int_equal(claims_rc("{\"sub\":\"1\",\"exp\":2000000000,\"s\\u0075b\":\"2\"}"),
			 MS_JWT_MALFORMED);
	/* escaped keys are read decoded: a lone one counts, other ones are ignored */
	assert_int_equal(claims_rc("{\"s\\u0075b\":\"2\",\"exp\":2000000000,\"\\u540d\":1}"), MS_JWT_OK);
	assert_int_equal(claims_rc("{\"sub\":\"2\",\"\\u0065xp\":1}"), MS_JWT_EXPIRED);
	/* unknown claims are ignored */
	assert_int_equal(claims_rc("{\"iat\":1,\"sub\":\"1\",\"exp\":2000000000,\"x\":{\"y\":[]}}"),
			 MS_JWT_OK);
}

static void test_sub(void **state)
{
	static const struct {
		const char *sub;
		int rc;
		uint64_t v;
	} cases[] = {
		{ "\"42\"", MS_JWT_OK, 42 },
		{ "42", MS_JWT_OK, 42 },
		{ "\"0\"", MS_JWT_OK, 0 },
		{ "0", MS_JWT_OK, 0 },
		{ "\"18446744073709551615\"", MS_JWT_OK, UINT64_MAX },
		{ "18446744073709551615", MS_JWT_OK, UINT64_MAX },
		{ "\"042\"", MS_JWT_BAD_SUB, 0 },
		{ "\"-1\"", MS_JWT_BAD_SUB, 0 },
		{ "-1", MS_JWT_BAD_SUB, 0 },
		{ "-0", MS_JWT_BAD_SUB, 0 },
		{ "\"18446744073709551616\"", MS_JWT_BAD_SUB, 0 },
		{ "18446744073709551616", MS_JWT_BAD_SUB, 0 },
		{ "\"\"", MS_JWT_BAD_SUB, 0 },
		{ "\" 1\"", MS_JWT_BAD_SUB, 0 },
		{ "\"4\\u0032\"", MS_JWT_BAD_SUB, 0 },
		{ "1.0", MS_JWT_BAD_SUB, 0 },
		{ "1e2", MS_JWT_BAD_SUB, 0 },
		{ "null", MS_JWT_BAD_SUB, 0 },
		{ "[42]", MS_JWT_BAD_SUB, 0 },
		{ "{}", MS_JWT_BAD_SUB, 0 },
		{ "true", MS_JWT_BAD_SUB, 0 },
	};
	char pl[256];
	ms_jwt_claims c;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(pl, sizeof(pl), "{\"exp\":2000000000,\"sub\":%s}", cases[i].sub);
		int rc = verify(mint(HDR, pl, SECRET), &c);

		if (rc != cases[i].rc)
			fail_msg("sub %s: %d, want %d", cases[i].sub, rc, cases[i].rc);
		if (rc == MS_JWT_OK)
			assert_true(c.sub == cases[i].v);
	}
	assert_int_equal(claims_rc("{\"exp\":2000000000}"), MS_JWT_BAD_SUB);
}

static void test_rotation(void **state)
{
	static const char *pl = "{\"sub\":\"7\",\"exp\":2000000000}";
	const ms_str both[] = { S("new-secret"), S("old-secret") };
	const ms_str with_empty[] = { S(""), S("new-secret") };
	char tok[512];
	ms_jwt_claims c;

	(void)state;
	strcpy(tok, mint(HDR, pl, "old-secret"));
	assert_int_equal(verify_with(tok, both, 2, NOW, &c), MS_JWT_OK);
	assert_true(c.sub == 7);
	assert_int_equal(verify_with(tok, both, 1, NOW, &c), MS_JWT_BAD_SIG);
	strcpy(tok, mint(HDR, pl, "new-secret"));
	assert_int_equal(verify_with(tok, both, 2, NOW, &c), MS_JWT_OK);
	assert_int_equal(verify_with(tok, both + 1, 1, NOW, &c), MS_JWT_BAD_SIG);
	assert_int_equal(verify_with(mint(HDR, pl, "third"), both, 2, NOW, &c), MS_JWT_BAD_SIG);
	/* an empty secret never verifies anything */
	strcpy(tok, mint(HDR, pl, ""));
	assert_int_equal(verify_with(tok, with_empty, 2, NOW, &c), MS_JWT_BAD_SIG);
	/* ms_jwt_sign with the second secret verifies too */
	assert_true(ms_jwt_sign(pl, strlen(pl), S("old-secret"), tok, sizeof(tok)) > 0);
	assert_int_equal(verify_with(tok, both, 2, NOW, &c), MS_JWT_OK);
}

static void test_streams_claim(void **state)
{
	ms_jwt_claims c;

	(void)state;
	assert_int_equal(verify(mint(HDR, "{\"sub\":\"1\",\"exp\":2000000000}", SECRET), &c), MS_JWT_OK);
	assert_false(c.has_streams);
	assert_int_equal(c.streams.n, 0);
	assert_int_equal(verify(mint(HDR, "{\"sub\":\"1\",\"exp\":2000000000,\"streams\":[]}", SECRET), &c),
			 MS_JWT_OK);
	assert_true(c.has_streams);
	assert_int_equal(c.streams.n, 2);

	static const char *ok[] = {
		"[\"a\"]", "[\"clan:*\"]", "[\"a*\"]", "[ \"x.y-z_1:2\" , \"p:*\" ]",
	};
	static const char *bad[] = {
		"\"clan:1\"", "{}", "null", "1", "[1]", "[null]", "[[\"a\"]]", "[\"\"]",
		"[\"*\"]", "[\"a b\"]", "[\"a*b\"]", "[\"clan:**\"]", "[\"*a\"]",
		"[\"\\u0061\"]", "[\"a\",1]", "[\"caf\xc3\xa9\"]",
	};
	char pl[512];

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		snprintf(pl, sizeof(pl), "{\"sub\":\"1\",\"exp\":2000000000,\"streams\":%s}", ok[i]);
		if (claims_rc(pl) != MS_JWT_OK)
			fail_msg("streams rejected: %s", ok[i]);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(pl, sizeof(pl), "{\"sub\":\"1\",\"exp\":2000000000,\"streams\":%s}", bad[i]);
		if (claims_rc(pl) != MS_JWT_BAD_CLAIM)
			fail_msg("streams accepted: %s", bad[i]);
	}
	/* 128-character names, and a 128-character prefix */
	char name[130];
	memset(name, 'n', 128);
	name[128] = '\0';
	snprintf(pl, sizeof(pl), "{\"sub\":\"1\",\"exp\":2000000000,\"streams\":[\"%s\",\"%s*\"]}", name, name);
	assert_int_equal(claims_rc(pl), MS_JWT_OK);
	snprintf(pl, sizeof(pl), "{\"sub\":\"1\",\"exp\":2000000000,\"streams\":[\"%sn\"]}", name);
	assert_int_equal(claims_rc(pl), MS_JWT_BAD_CLAIM);
}

static void test_stream_allowed(void **state)
{
	ms_str claim = S("[\"clan:*\",\"room.1\",\"x*\"]");
	ms_str none_claim = { NULL, 0 };

	(void)state;
	/* own stream always, whatever the claim */
	assert_true(ms_jwt_stream_allowed(none_claim, 42, S("user:42")));
	assert_true(ms_jwt_stream_allowed(claim, 42, S("user:42")));
	assert_true(ms_jwt_stream_allowed(S("[]"), 42, S("user:42")));
	assert_true(ms_jwt_stream_allowed(none_claim, 0, S("user:0")));
	assert_true(ms_jwt_stream_allowed(none_claim, UINT64_MAX, S("user:18446744073709551615")));
	assert_false(ms_jwt_stream_allowed(none_claim, 42, S("user:43")));
	assert_false(ms_jwt_stream_allowed(none_claim, 42, S("user:042")));
	assert_false(ms_jwt_stream_allowed(none_claim, 42, S("user:4")));
	assert_false(ms_jwt_stream_allowed(none_claim, 4, S("user:42")));
	assert_false(ms_jwt_stream_allowed(none_claim, 42, S("user:")));
	assert_false(ms_jwt_stream_allowed(claim, 42, S("user:43")));
	/* without a claim, nothing else */
	assert_false(ms_jwt_stream_allowed(none_claim, 42, S("clan:1")));
	assert_false(ms_jwt_stream_allowed(S("[]"), 42, S("clan:1")));
	/* exact entries */
	assert_true(ms_jwt_stream_allowed(claim, 42, S("room.1")));
	assert_false(ms_jwt_stream_allowed(claim, 42, S("room.10")));
	assert_false(ms_jwt_stream_allowed(claim, 42, S("room.")));
	assert_false(ms_jwt_stream_allowed(claim, 42, S("Room.1")));
	/* prefix entries */
	assert_true(ms_jwt_stream_allowed(claim, 42, S("clan:1")));
	assert_true(ms_jwt_stream_allowed(claim, 42, S("clan:abc:def")));
	assert_true(ms_jwt_stream_allowed(claim, 42, S("clan:")));
	assert_false(ms_jwt_stream_allowed(claim, 42, S("clan")));
	assert_false(ms_jwt_stream_allowed(claim, 42, S("cla")));
	assert_false(ms_jwt_stream_allowed(claim, 42, S("clan*")));
	assert_true(ms_jwt_stream_allowed(claim, 42, S("x")));
	assert_true(ms_jwt_stream_allowed(claim, 42, S("xyz")));
	assert_false(ms_jwt_stream_allowed(claim, 42, S("y")));
	/* straight from a verified token */
	{
		ms_jwt_claims c;

		assert_int_equal(verify(kat, &c), MS_JWT_OK);
		assert_true(ms_jwt_stream_allowed(c.streams, c.sub, S("clan:9")));
		assert_true(ms_jwt_stream_allowed(c.streams, c.sub, S("user:42")));
		assert_false(ms_jwt_stream_allowed(c.streams, c.sub, S("user:1")));
		assert_false(ms_jwt_stream_allowed(c.streams, c.sub, S("room.2")));
	}
}

static void test_dm_claim(void **state)
{
	ms_jwt_claims c;

	(void)state;
	assert_int_equal(verify(mint(HDR, "{\"sub\":\"1\",\"exp\":2000000000}", SECRET), &c), MS_JWT_OK);
	assert_false(c.has_dm);
	assert_int_equal(c.dm.n, 0);
	assert_int_equal(verify(mint(HDR, "{\"sub\":\"1\",\"exp\":2000000000,\"dm\": false }", SECRET),
				&c),
			 MS_JWT_OK);
	assert_true(c.has_dm);
	assert_int_equal(c.dm.n, 5);
	assert_memory_equal(c.dm.p, "false", 5);
	assert_int_equal(verify(mint(HDR, "{\"dm\":[\"7\",\"8*\"],\"sub\":\"1\",\"exp\":2000000000,"
					  "\"streams\":[\"a\"]}",
				     SECRET),
				&c),
			 MS_JWT_OK);
	assert_true(c.has_dm && c.has_streams);
	assert_int_equal(c.dm.n, strlen("[\"7\",\"8*\"]"));
	assert_memory_equal(c.dm.p, "[\"7\",\"8*\"]", c.dm.n);

	static const char *ok[] = {
		"false", "[]", "[\"0\"]", "[\"42\"]", "[\"*\"]", "[\"0*\"]", "[\"4*\"]",
		"[ \"7\" , \"8*\" ]", "[\"18446744073709551615\"]", "[\"18446744073709551615*\"]",
		"[\"1844674407370955161*\"]", "[\"9999999999999999999*\"]",
	};
	static const char *bad[] = {
		"true", "null", "0", "7", "\"7\"", "\"false\"", "{}", "[7]", "[null]", "[false]",
		"[[\"7\"]]", "[\"\"]", "[\"07\"]", "[\"01*\"]", "[\"-1\"]", "[\"+1\"]", "[\" 1\"]",
		"[\"1 \"]", "[\"1.0\"]", "[\"1e3\"]", "[\"**\"]", "[\"7**\"]", "[\"*7\"]", "[\"7*8\"]",
		"[\"\\u0037\"]", "[\"user:7\"]", "[\"18446744073709551616\"]",
		"[\"18446744073709551616*\"]", "[\"184467440737095516150*\"]", "[\"7\",1]",
		"[\"7\",\"x\"]", "[\"\xd9\xa7\"]",
	};
	char pl[512];

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		snprintf(pl, sizeof(pl), "{\"sub\":\"1\",\"exp\":2000000000,\"dm\":%s}", ok[i]);
		if (claims_rc(pl) != MS_JWT_OK)
			fail_msg("dm rejected: %s", ok[i]);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(pl, sizeof(pl), "{\"sub\":\"1\",\"exp\":2000000000,\"dm\":%s}", bad[i]);
		if (verify(mint(HDR, pl, SECRET), &c) != MS_JWT_BAD_CLAIM)
			fail_msg("dm accepted: %s", bad[i]);
		assert_false(c.has_dm); /* cleared on failure */
	}
	/* a repeated dm is ambiguous, not a bad claim */
	assert_int_equal(claims_rc("{\"sub\":\"1\",\"exp\":2000000000,\"dm\":false,\"dm\":[]}"),
			 MS_JWT_MALFORMED);
	/* checked after the signature and the other claims */
	assert_int_equal(claims_rc("{\"sub\":\"1\",\"exp\":1,\"dm\":true}"), MS_JWT_EXPIRED);
	assert_int_equal(claims_rc("{\"sub\":\"01\",\"exp\":2000000000,\"dm\":true}"), MS_JWT_BAD_SUB);
}

static void test_dm_allowed(void **state)
{
	ms_str none_claim = { NULL, 0 };
	ms_str list = S("[\"7\",\"8*\",\"18446744073709551615\"]");

	(void)state;
	/* no claim: anyone, oneself included */
	assert_true(ms_jwt_dm_allowed(none_claim, 0));
	assert_true(ms_jwt_dm_allowed(none_claim, 7));
	assert_true(ms_jwt_dm_allowed(none_claim, UINT64_MAX));
	/* false, and an empty list: no one */
	assert_false(ms_jwt_dm_allowed(S("false"), 7));
	assert_false(ms_jwt_dm_allowed(S("false"), 0));
	assert_false(ms_jwt_dm_allowed(S("[]"), 7));
	/* exact ids */
	assert_true(ms_jwt_dm_allowed(list, 7));
	assert_true(ms_jwt_dm_allowed(list, UINT64_MAX));
	assert_false(ms_jwt_dm_allowed(list, 70));
	assert_false(ms_jwt_dm_allowed(list, 17));
	assert_false(ms_jwt_dm_allowed(list, 0));
	assert_false(ms_jwt_dm_allowed(list, 9));
	assert_false(ms_jwt_dm_allowed(list, UINT64_MAX - 1));
	/* prefixes: the id itself and every longer id starting with it */
	assert_true(ms_jwt_dm_allowed(list, 8));
	assert_true(ms_jwt_dm_allowed(list, 81));
	assert_true(ms_jwt_dm_allowed(list, 8000000000000000000ull));
	assert_false(ms_jwt_dm_allowed(list, 18));
	assert_false(ms_jwt_dm_allowed(list, 98));
	assert_true(ms_jwt_dm_allowed(S("[\"*\"]"), 0));
	assert_true(ms_jwt_dm_allowed(S("[\"*\"]"), UINT64_MAX));
	assert_true(ms_jwt_dm_allowed(S("[\"0*\"]"), 0));
	assert_false(ms_jwt_dm_allowed(S("[\"0*\"]"), 10));
	assert_true(ms_jwt_dm_allowed(S("[\"1844674407370955161*\"]"), UINT64_MAX));
	assert_true(ms_jwt_dm_allowed(S("[\"1844674407370955161*\"]"), 1844674407370955161ull));
	/* invalid entries never match, even when they look like they would */
	assert_false(ms_jwt_dm_allowed(S("[\"07\",7,\"7 \",\"\\u0037\"]"), 7));
	assert_true(ms_jwt_dm_allowed(S("[\"07\",\"7\"]"), 7));
	/* garbage allows no one */
	assert_false(ms_jwt_dm_allowed(S("true"), 7));
	assert_false(ms_jwt_dm_allowed(S("[\"7\""), 8));
	/* straight from a verified token */
	{
		ms_jwt_claims c;

		assert_int_equal(verify(mint(HDR, "{\"sub\":\"5\",\"exp\":2000000000,\"dm\":[\"6\",\"12*\"]}",
					     SECRET),
					&c),
				 MS_JWT_OK);
		assert_true(ms_jwt_dm_allowed(c.dm, 6));
		assert_true(ms_jwt_dm_allowed(c.dm, 123));
		assert_false(ms_jwt_dm_allowed(c.dm, 5));
		assert_false(ms_jwt_dm_allowed(c.dm, 13));
		assert_int_equal(verify(kat, &c), MS_JWT_OK);
		assert_false(c.has_dm);
		assert_true(ms_jwt_dm_allowed(c.dm, 13));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_known_answer),
		cmocka_unit_test(test_expiry),
		cmocka_unit_test(test_bad_signature),
		cmocka_unit_test(test_algorithms),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_sub),
		cmocka_unit_test(test_rotation),
		cmocka_unit_test(test_streams_claim),
		cmocka_unit_test(test_stream_allowed),
		cmocka_unit_test(test_dm_claim),
		cmocka_unit_test(test_dm_allowed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
