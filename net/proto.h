/*
 * Chat protocol v1 (PROTOCOL.md "Messages"), both directions: parse one
 * client text frame into a request, without allocation (spans point into
 * the frame); and encode every reply and event the server sends, into the
 * caller's buffer. The code that reads a request is the code that writes
 * its answer, so the two cannot drift apart.
 * Pure: no I/O, no allocation, no globals.
 */
#ifndef MS_NET_PROTO_H
#define MS_NET_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/http.h" /* ms_str */

enum ms_req_op {
	MS_REQ_NONE = 0,
	MS_REQ_JOIN,
	MS_REQ_LEAVE,
	MS_REQ_PUBLISH,
	MS_REQ_DM,
	MS_REQ_PRESENCE,
	MS_REQ_PING,
	MS_REQ_AUTH,
};

typedef struct ms_req {
	enum ms_req_op op;
	bool has_id;      /* "id" present and an integer */
	int64_t id;
	ms_str stream;    /* join/leave/publish/presence: validated name */
	ms_str to;        /* dm: canonical decimal user id */
	ms_str data;      /* publish/dm: raw span of exactly one JSON value */
	ms_str token;     /* auth: raw string contents (JWT chars need no escapes) */
	ms_str cursor;    /* presence: raw string contents, n == 0 if absent */
} ms_req;

/* Parse a request. Returns 0, or 400 with *err set to a short static
 * message: invalid JSON (then has_id is false: "an error caused by a frame
 * that is not valid JSON carries no id"), not an object, duplicate key,
 * unknown op, missing or mistyped field, bad stream name, bad user id,
 * data not exactly one JSON value. Unknown extra keys are ignored (at most
 * 64 of them: "too many keys"); duplicates are checked among all top-level
 * keys, compared decoded, but not inside data, which is forwarded as is.
 * Fields another op uses are ignored, not checked. On a 400 for valid JSON,
 * has_id/id are set when the object had exactly one "id", an integer. */
int ms_proto_parse(const char *p, size_t n, ms_req *req, const char **err);

/* Stream names match [A-Za-z0-9_:.-]{1,128}. */
bool ms_proto_stream_valid(ms_str s);

/* Canonical decimal user id: no leading zeros, <= 2^64-1. Sets *out. */
bool ms_proto_uid(ms_str s, uint64_t *out);

/* ---- encoders: server -> client ------------------------------------------
 *
 * Each ms_proto_enc_* returns the length of the JSON text it encodes and
 * writes it into buf[0..cap): the text is complete when that length is
 * <= cap (else buf holds an unspecified prefix of it). NULL, 0 sizes a
 * buffer. Nothing is NUL-terminated.
 * has_id/id: the request's id, echoed as the first member when has_id.
 * Callers guarantee what the parser guarantees on the way in, and it is
 * copied as is: `stream` is a valid stream name (ms_proto_stream_valid),
 * `from` a user id's digits or "server" (written in quotes), `data`
 * exactly one valid JSON value (forwarded byte for byte). Free text
 * (error messages, reasons) is UTF-8 and is escaped. */

/* Bytes of the blank seq slot in a message event, and of a u64 in decimal. */
#define MS_PROTO_SEQ_SLOT 20
#define MS_PROTO_U64_DIGITS 20

/* uid in decimal (canonical, as ms_proto_uid reads it) into out; returns
 * the digits written (no terminator). */
size_t ms_proto_uid_format(char out[MS_PROTO_U64_DIGITS], uint64_t uid);

/* {"id":N,"ok":true} */
size_t ms_proto_enc_ok(char *buf, size_t cap, bool has_id, int64_t id);
/* {"id":N,"ok":false,"error":{"code":C,"message":"M"}} */
size_t ms_proto_enc_error(char *buf, size_t cap, bool has_id, int64_t id, int code,
			  const char *msg);
/* join: {"id":N,"ok":true,"seq":S,"epoch":"<16 hex digits>"} */
size_t ms_proto_enc_join(char *buf, size_t cap, bool has_id, int64_t id, uint64_t seq,
			 uint64_t epoch);
/* publish: {"id":N,"ok":true,"seq":S} */
size_t ms_proto_enc_publish(char *buf, size_t cap, bool has_id, int64_t id, uint64_t seq);
/* presence listing: {"id":N,"ok":true,"users":["U",..]}, with
 * ,"next":"CURSOR" before the brace when more is true. */
size_t ms_proto_enc_presence_list(char *buf, size_t cap, bool has_id, int64_t id,
				  const uint64_t *users, size_t n, bool more, uint64_t next);

/* {"event":"message","stream":S,"seq":<slot>,"from":F,"data":D}: the seq
 * is a slot of MS_PROTO_SEQ_SLOT spaces that the stream's owner fills with
 * ms_proto_seq_fill (digits then spaces: valid JSON from then on), so the
 * packet is built once, by the publisher's worker, before the seq exists. When
 * written, *stream_off and *seq_off (if not NULL) are the offsets in buf of
 * the stream name and of the slot. O(1) to size. */
size_t ms_proto_enc_message(char *buf, size_t cap, ms_str stream, ms_str from, ms_str data,
			    size_t *stream_off, size_t *seq_off);
/* Write seq's digits at the start of a blank slot (the rest stays blank). */
void ms_proto_seq_fill(char *slot, uint64_t seq);
/* {"event":"dm","from":F,"data":D} */
size_t ms_proto_enc_dm(char *buf, size_t cap, ms_str from, ms_str data);
/* {"event":"presence","stream":S,"join":["U",..],"leave":["U",..]}: each
 * array only when it is not empty. */
size_t ms_proto_enc_presence(char *buf, size_t cap, ms_str stream, const uint64_t *join,
			     size_t njoin, const uint64_t *leave, size_t nleave);
/* {"event":"left","stream":S,"reason":"R"} */
size_t ms_proto_enc_left(char *buf, size_t cap, ms_str stream, const char *reason);

/* Server API answers (admin listener): {"<key>":N}, key a plain word. */
size_t ms_proto_enc_count(char *buf, size_t cap, const char *key, uint64_t n);

#endif
