/*
 * Admission and rate limits of the public listeners, so that no one source
 * address, user or connection can take more than its share of a worker:
 *   - ms_climit: a process-wide table of live connections per key (source
 *     address for --max-conns-per-ip and --max-handshakes-per-ip, user id
 *     for --max-conns-per-user), exact across workers: a check and its
 *     increment are one step under the key's shard lock, so a burst of
 *     parallel connects cannot race past the limit. Any thread.
 *   - ms_bucket: a per-connection token bucket (--rate-limit), owner's
 *     thread only, on the worker's coarse clock.
 *   - ms_origin_allowed: the --allowed-origins check.
 */
#ifndef MS_NET_LIMITS_H
#define MS_NET_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* A table key: an IPv6 address (IPv4 as ::ffff:a.b.c.d, so a v4 client
 * counts the same whether it reached a v4 or a dual-stack listener) or a
 * user id. */
typedef struct ms_lkey {
	uint64_t hi, lo;
} ms_lkey;

/* The key of a peer address (AF_INET or AF_INET6; port ignored). Returns
 * false for any other family. */
bool ms_lkey_addr(ms_lkey *k, const struct sockaddr *sa);
static inline ms_lkey ms_lkey_uid(uint64_t uid)
{
	return (ms_lkey){ 0, uid };
}
/* Text form of an address key, for logs (buf >= 46 bytes). */
const char *ms_lkey_addr_text(const ms_lkey *k, char *buf, size_t cap);

typedef struct ms_climit ms_climit;

/* A table allowing `limit` (>= 1) live holders per key. */
ms_climit *ms_climit_create(uint32_t limit);
void ms_climit_destroy(ms_climit *t);
/* Count one more holder of k: 0, or -EBUSY (nothing counted) when k has
 * `limit` already. Any thread. */
int ms_climit_acquire(ms_climit *t, const ms_lkey *k);
/* Drop one holder counted by a successful acquire. Any thread. */
void ms_climit_release(ms_climit *t, const ms_lkey *k);
/* Holders of k now (tests, logs). */
uint32_t ms_climit_count(ms_climit *t, const ms_lkey *k);
/* Keys with at least one holder (tests: empties are removed). */
size_t ms_climit_keys(ms_climit *t);
/* Bytes the table holds: buckets and entries (tests: it shrinks back). */
size_t ms_climit_bytes(ms_climit *t);

/* --max-handshakes-per-ip as applied: `flag`, or for 0 (auto) max_conns/16
 * within [MS_HANDSHAKES_AUTO_MIN, MS_HANDSHAKES_AUTO_MAX]. */
#define MS_HANDSHAKES_AUTO_MIN 64u
#define MS_HANDSHAKES_AUTO_MAX 8192u
uint32_t ms_handshake_limit(uint32_t flag, uint32_t max_conns);

/* Token bucket in units of the caller's choosing: refilled by `per_ms`
 * units per millisecond up to `cap`, a request taking `cost`. Messages use
 * millitokens (ms_rate_msgs), bytes use bytes (ms_rate_bytes), so both stay
 * integer; 8 bytes per bucket, on the worker's coarse clock. */
typedef struct ms_bucket {
	uint32_t level;
	uint32_t at_ms; /* clock of the last refill */
} ms_bucket;

typedef struct ms_rate {
	uint32_t per_ms, cap, cost; /* cost: per request (messages) or per byte */
} ms_rate;

/* RATE messages per second, BURST banked. */
static inline ms_rate ms_rate_msgs(uint32_t rate, uint32_t burst)
{
	return (ms_rate){ rate, burst * 1000u, 1000u };
}
/* RATE bytes per second, BURST banked (rate >= 1000 keeps per_ms >= 1). */
static inline ms_rate ms_rate_bytes(uint32_t rate, uint32_t burst)
{
	return (ms_rate){ rate >= 1000 ? rate / 1000 : 1, burst, 1 };
}

/* A full bucket at now_ms. */
void ms_bucket_init(ms_bucket *b, const ms_rate *r, uint32_t now_ms);
/* Take n x r->cost units: true if there were enough (else nothing is
 * taken). now_ms: a millisecond clock that may wrap (only differences are
 * used). */
bool ms_bucket_take(ms_bucket *b, const ms_rate *r, uint32_t n, uint32_t now_ms);
/* Whether n x r->cost units are there, taking none. */
bool ms_bucket_has(ms_bucket *b, const ms_rate *r, uint32_t n, uint32_t now_ms);
/* Give back n x r->cost units taken for something that did not happen
 * (never above the cap). */
void ms_bucket_give(ms_bucket *b, const ms_rate *r, uint32_t n, uint32_t now_ms);

/* Token buckets shared by k's holders (e.g. every connection of one user,
 * on every worker), `which` of MS_CLIMIT_BUCKETS: take n x r->cost units
 * from it, made full at the first take. True if there were enough, or if k
 * has no holder. now_ms: a clock common to all threads (CLOCK_MONOTONIC
 * ms). One lock, like acquire. */
#define MS_CLIMIT_BUCKETS 2
bool ms_climit_take(ms_climit *t, const ms_lkey *k, unsigned which, const ms_rate *r,
		    uint32_t n, uint32_t now_ms);

/* Rejected requests of one connection within a window: persistent abuse
 * is closed rather than answered forever. */
typedef struct ms_strikes {
	uint32_t at_ms; /* clock (ms) the current window began */
	uint32_t n;     /* rejected requests in that window */
} ms_strikes;

#define MS_BUCKET_STRIKE_WINDOW_MS 10000u

/* Note a rejected request; returns the rejections within the current
 * MS_BUCKET_STRIKE_WINDOW_MS window, this one included. */
uint32_t ms_strike(ms_strikes *s, uint32_t now_ms);

/* Whether origin[0..n) is one of the comma-separated exact origins in list
 * (spaces around entries ignored; comparison is exact, case-sensitive, as
 * browsers serialise origins in lowercase). An empty list allows all. */
bool ms_origin_allowed(const char *list, const char *origin, size_t n);

#endif
