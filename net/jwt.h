/*
 * HS256 JSON Web Tokens (RFC 7519) as PROTOCOL.md "Identity" specifies:
 * header alg must be "HS256" (alg "none" and every other alg rejected),
 * signature HMAC-SHA256 with any of the configured secrets (rotation),
 * compared in constant time; claims: sub (canonical decimal user id, as a
 * JSON string, or a JSON integer), exp (required, seconds), optional streams
 * (array of stream names; an entry ending in '*' is a prefix), optional dm
 * (false, or an array of user ids and '*'-suffixed id prefixes).
 * Pure: no I/O, no globals; BoringSSL for HMAC.
 */
#ifndef MS_NET_JWT_H
#define MS_NET_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/http.h" /* ms_str */

enum {
	MS_JWT_OK = 0,
	MS_JWT_MALFORMED = -1,  /* not three base64url parts / bad JSON / a repeated
				 * alg, typ, exp, sub, streams or dm / typ not
				 * "JWT" / crit / scratch too small */
	MS_JWT_BAD_ALG = -2,    /* alg other than HS256 (including none) */
	MS_JWT_BAD_SIG = -3,    /* no secret matches, or not 32 bytes */
	MS_JWT_EXPIRED = -4,    /* exp <= now, or exp missing or not an integer */
	MS_JWT_BAD_SUB = -5,    /* sub missing or not a canonical id */
	MS_JWT_BAD_CLAIM = -6,  /* streams not an array of valid names/prefixes,
				 * or dm neither false nor an array of valid user
				 * ids/prefixes */
};

typedef struct ms_jwt_claims {
	uint64_t sub;
	int64_t exp;
	bool has_streams;
	ms_str streams;  /* raw JSON array span inside `scratch` */
	bool has_dm;
	ms_str dm;       /* raw JSON span inside `scratch`: false or an array */
} ms_jwt_claims;

/* Verify token tok[0..n) against secrets[0..nsecrets) at time now (seconds).
 * scratch (>= n bytes) receives the decoded payload; claims spans point into
 * it. Returns MS_JWT_OK or a negative MS_JWT_* code (claims zeroed then).
 * Checks run shape, alg, signature, then claims, so the payload is read only
 * once its MAC has matched. An empty secret never matches. Any thread. */
int ms_jwt_verify(const char *tok, size_t n, const ms_str *secrets, int nsecrets,
		  int64_t now, char *scratch, size_t scratch_len, ms_jwt_claims *claims);

/* Whether a user with `sub` and that streams claim (streams.n == 0: none)
 * may join/publish to `stream`: "user:<sub>" always; otherwise an exact
 * entry or a '*'-suffixed prefix entry. */
bool ms_jwt_stream_allowed(ms_str streams, uint64_t sub, ms_str stream);

/* Whether a user with that dm claim may send a DM to user `to`: dm.n == 0
 * (no claim) allows anyone; false allows no one; an array allows an exact
 * id entry ("42") or a '*'-suffixed prefix entry ("42*" matches 42, 420,
 * 4217..., "*" alone every id). The sender's own id gets no exception. */
bool ms_jwt_dm_allowed(ms_str dm, uint64_t to);

/* Mint a token (for tests and tools): header {"alg":"HS256","typ":"JWT"},
 * payload given as JSON text (not checked). Returns length written to out
 * (NUL-terminated too when room remains), or -1 if cap is too small. */
long ms_jwt_sign(const char *payload_json, size_t payload_len, ms_str secret,
		 char *out, size_t cap);

#endif
