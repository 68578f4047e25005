/*
 * Strict RFC 8259 JSON scanning without allocation: validate one value and
 * find where it ends, walk an object's members, read strings and integers.
 * Used for the chat protocol (net/proto.h) and JWT claims (net/jwt.h); the
 * server never re-serializes client data, it forwards validated spans.
 * Pure: no I/O, no allocation, no globals.
 */
#ifndef MS_NET_JSON_H
#define MS_NET_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/http.h" /* ms_str */

#define MS_JSON_MAX_DEPTH 64

/* Skip whitespace, then one complete JSON value starting at p (<= end).
 * Returns the pointer just past the value, or NULL if it is not exactly one
 * valid value (bad literal/number/escape, control character or invalid
 * UTF-8 in a string, unbalanced or over MS_JSON_MAX_DEPTH nesting). What
 * follows is the caller's to check: "12ab" skips to "ab". */
const char *ms_json_skip(const char *p, const char *end);

/* Whole text is exactly one JSON value (whitespace allowed around). */
bool ms_json_valid(const char *p, size_t n);

/* Object member iteration:
 *   ms_json_iter it; if (ms_json_object_begin(&it, p, n)) while
 *   ((r = ms_json_object_next(&it, &key, &val)) > 0) ...
 * key: the raw string contents between the quotes (escapes not decoded);
 * val: the raw value span. next returns 1 per member, 0 at the end of a
 * valid object (trailing whitespace only after it), -1 on invalid JSON. */
typedef struct ms_json_iter {
	const char *p, *end;
	int state;
} ms_json_iter;
bool ms_json_object_begin(ms_json_iter *it, const char *p, size_t n);
int ms_json_object_next(ms_json_iter *it, ms_str *key, ms_str *val);

/* Array element iteration, same contract (val = raw element span). */
bool ms_json_array_begin(ms_json_iter *it, const char *p, size_t n);
int ms_json_array_next(ms_json_iter *it, ms_str *val);

/* Decode a string value span (with its quotes) into out (cap bytes),
 * resolving escapes (\uXXXX with surrogate pairs → UTF-8). Returns the
 * length, or -1 if val is not a string or out is too small. */
long ms_json_string(ms_str val, char *out, size_t cap);

/* Decode a key as ms_json_object_next gave it (its quotes around it in the
 * text) into out (cap bytes), like ms_json_string. Returns the length, or
 * -1 if out is too small. */
long ms_json_key(ms_str key, char *out, size_t cap);

/* The keys of one object, compared decoded ("op" and "o\u0070" are one
 * key), to refuse an object that gives a key twice: two readers of it
 * (a proxy, a client library, us) must never disagree on what it says.
 * Holds up to MS_JSON_KEYS_MAX keys as spans into the text, which must
 * outlive it; add costs one hash of the key and, on a collision, one
 * decoded comparison. */
#define MS_JSON_KEYS_MAX 64
typedef struct ms_json_keys {
	size_t n;
	ms_str key[MS_JSON_KEYS_MAX];
	uint8_t slot[2 * MS_JSON_KEYS_MAX]; /* index + 1 into key, 0 empty */
} ms_json_keys;
void ms_json_keys_init(ms_json_keys *ks);
/* Add a key from ms_json_object_next: 1 if new, 0 if the set already has
 * it (a duplicate), -1 if the set is full (key not added). */
int ms_json_keys_add(ms_json_keys *ks, ms_str key);

/* An integer value span (no fraction/exponent) within int64. */
bool ms_json_int(ms_str val, int64_t *out);

#endif
