/*
 * Chat protocol v1 requests (PROTOCOL.md "Messages"): parse one text frame
 * into a request, without allocation; spans point into the frame.
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

#endif
