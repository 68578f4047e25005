/*
 * Chat protocol v1 request parsing (net/proto.h, PROTOCOL.md "Messages").
 *
 * One pass over the frame with the JSON member iterator: every member is
 * validated as it is walked (so `data` is checked exactly once, however big),
 * known keys are remembered as spans, and only after the whole object has
 * proved valid do we judge it. That order matters for the reply: a frame that
 * is not valid JSON must get an error without an id even when an "id" member
 * came before the damage.
 *
 * Duplicate keys at the top level are rejected, compared as decoded text, so
 * "op" and "o\u0070" are the same key: two readers of the same frame must
 * never disagree on what it asks. Known keys are counted directly; other keys
 * go through a small open-addressing set. Duplicates nested inside `data` are
 * the client's business: we forward data byte for byte and never read it.
 */
#include "net/proto.h"

#include <string.h>

#include "net/json.h"

enum { K_OP, K_ID, K_STREAM, K_TO, K_DATA, K_TOKEN, K_CURSOR, K_COUNT };

static const struct {
	const char *s;
	size_t n;
} known[K_COUNT] = {
	[K_OP] = { "op", 2 },         [K_ID] = { "id", 2 },
	[K_STREAM] = { "stream", 6 }, [K_TO] = { "to", 2 },
	[K_DATA] = { "data", 4 },     [K_TOKEN] = { "token", 5 },
	[K_CURSOR] = { "cursor", 6 },
};

/* Longest known key; a key whose decoded form is longer is not known. */
#define KEY_MAX 6

/* Stream names: [A-Za-z0-9_:.-]. */
static const uint8_t name_ok[256] = {
	['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
	['_'] = 1,         [':'] = 1,         ['.'] = 1,
	['-'] = 1,
};

bool ms_proto_stream_valid(ms_str s)
{
	if (s.n < 1 || s.n > 128)
		return false;
	for (size_t i = 0; i < s.n; i++)
		if (!name_ok[(uint8_t)s.p[i]])
			return false;
	return true;
}

bool ms_proto_uid(ms_str s, uint64_t *out)
{
	uint64_t v = 0;

	if (s.n < 1 || s.n > 20 || (s.p[0] == '0' && s.n > 1))
		return false;
	for (size_t i = 0; i < s.n; i++) {
		unsigned d = (unsigned)(s.p[i] - '0');

		if (d > 9 || v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

/* Which known key k is (decoded), or K_COUNT. */
static int key_id(ms_str k)
{
	char buf[KEY_MAX];
	long len;

	if (!memchr(k.p, '\\', k.n)) {
		if (k.n > KEY_MAX)
			return K_COUNT;
		memcpy(buf, k.p, k.n);
		len = (long)k.n;
	} else if ((len = ms_json_key(k, buf, sizeof(buf))) < 0) {
		return K_COUNT; /* longer than every known key */
	}
	for (int i = 0; i < K_COUNT; i++)
		if ((long)known[i].n == len && memcmp(known[i].s, buf, (size_t)len) == 0)
			return i;
	return K_COUNT;
}

/* A string value's raw contents, or false if v is not a string. v came from
 * the iterator, so it is one valid value: a leading quote means a string. */
static bool raw_string(ms_str v, ms_str *out)
{
	if (v.n < 2 || v.p[0] != '"')
		return false;
	out->p = v.p + 1;
	out->n = v.n - 2;
	return true;
}

static int fail(const char **err, const char *msg)
{
	*err = msg;
	return 400;
}

int ms_proto_parse(const char *p, size_t n, ms_req *req, const char **err)
{
	ms_str val[K_COUNT], key, v, s;
	int count[K_COUNT] = { 0 };
	/* Top-level members that are not protocol keys. A real request has
	 * none; the set's cap bounds the duplicate check's work and stack. */
	ms_json_keys extra;
	bool dup = false, too_many = false;
	ms_json_iter it;
	char opbuf[16];
	long opn;
	int r, k;

	memset(req, 0, sizeof(*req));
	ms_json_keys_init(&extra);
	if (!ms_json_object_begin(&it, p, n))
		return fail(err, ms_json_valid(p, n) ? "not an object" : "invalid json");
	while ((r = ms_json_object_next(&it, &key, &v)) > 0) {
		k = key_id(key);
		if (k < K_COUNT) {
			if (count[k]++)
				dup = true;
			val[k] = v;
			continue;
		}
		if (dup || too_many)
			continue; /* already a 400; only validity still matters */
		switch (ms_json_keys_add(&extra, key)) {
		case 0:
			dup = true;
			break;
		case -1:
			too_many = true;
			break;
		}
	}
	if (r < 0)
		return fail(err, "invalid json");

	/* Valid JSON from here: echo an unambiguous integer id. */
	if (count[K_ID] == 1 && ms_json_int(val[K_ID], &req->id))
		req->has_id = true;
	if (dup)
		return fail(err, "duplicate key");
	if (too_many)
		return fail(err, "too many keys");
	if (count[K_ID] && !req->has_id)
		return fail(err, "bad id");

	if (!count[K_OP])
		return fail(err, "missing op");
	opn = ms_json_string(val[K_OP], opbuf, sizeof(opbuf));
	if (opn < 0 && !raw_string(val[K_OP], &s))
		return fail(err, "bad op");
#define OP_IS(lit) (opn == sizeof(lit) - 1 && memcmp(opbuf, lit, sizeof(lit) - 1) == 0)
	if (OP_IS("join"))
		req->op = MS_REQ_JOIN;
	else if (OP_IS("leave"))
		req->op = MS_REQ_LEAVE;
	else if (OP_IS("publish"))
		req->op = MS_REQ_PUBLISH;
	else if (OP_IS("dm"))
		req->op = MS_REQ_DM;
	else if (OP_IS("presence"))
		req->op = MS_REQ_PRESENCE;
	else if (OP_IS("ping"))
		req->op = MS_REQ_PING;
	else if (OP_IS("auth"))
		req->op = MS_REQ_AUTH;
	else
		return fail(err, "unknown op");
#undef OP_IS

	switch (req->op) {
	case MS_REQ_JOIN:
	case MS_REQ_LEAVE:
	case MS_REQ_PUBLISH:
	case MS_REQ_PRESENCE:
		if (!count[K_STREAM])
			return fail(err, "missing stream");
		/* Valid names contain no escapes, so the raw contents are
		 * the name; a name spelled with escapes fails here. */
		if (!raw_string(val[K_STREAM], &req->stream) ||
		    !ms_proto_stream_valid(req->stream)) {
			req->stream = (ms_str){ 0 };
			return fail(err, "bad stream name");
		}
		break;
	case MS_REQ_DM: {
		uint64_t uid;

		if (!count[K_TO])
			return fail(err, "missing to");
		if (!raw_string(val[K_TO], &req->to) || !ms_proto_uid(req->to, &uid)) {
			req->to = (ms_str){ 0 };
			return fail(err, "bad user id");
		}
		break;
	}
	case MS_REQ_AUTH:
		if (!count[K_TOKEN])
			return fail(err, "missing token");
		if (!raw_string(val[K_TOKEN], &req->token) || req->token.n == 0) {
			req->token = (ms_str){ 0 };
			return fail(err, "bad token");
		}
		break;
	default:
		break;
	}
	if (req->op == MS_REQ_PRESENCE && count[K_CURSOR] &&
	    !raw_string(val[K_CURSOR], &req->cursor))
		return fail(err, "bad cursor");
	if (req->op == MS_REQ_PUBLISH || req->op == MS_REQ_DM) {
		if (!count[K_DATA])
			return fail(err, "missing data");
		req->data = val[K_DATA]; /* one valid value, without whitespace */
	}
	return 0;
}

/* ---- encoders --------------------------------------------------------------
 *
 * One pass: every piece is counted, and written while it still fits, so a
 * call with NULL, 0 sizes the text and a call with a large enough buffer
 * writes it. The request/reply texts are tens of bytes; the one on the
 * publish path (the message event) is sized in O(1) and written with
 * memcpy alone, as chat.c used to do by hand.
 */

typedef struct wbuf {
	char *p;
	size_t cap, n;
} wbuf;

static void put(wbuf *o, const void *s, size_t k)
{
	if (k && k <= o->cap && o->n <= o->cap - k)
		memcpy(o->p + o->n, s, k);
	o->n += k;
}

#define PUTS(o, lit) put((o), (lit), sizeof(lit) - 1)

size_t ms_proto_uid_format(char out[MS_PROTO_U64_DIGITS], uint64_t uid)
{
	char tmp[MS_PROTO_U64_DIGITS];
	size_t k = sizeof(tmp);

	do {
		tmp[--k] = (char)('0' + uid % 10);
		uid /= 10;
	} while (uid);
	memcpy(out, tmp + k, sizeof(tmp) - k);
	return sizeof(tmp) - k;
}

static void put_u64(wbuf *o, uint64_t v)
{
	char d[MS_PROTO_U64_DIGITS];

	put(o, d, ms_proto_uid_format(d, v));
}

static void put_i64(wbuf *o, int64_t v)
{
	if (v < 0) {
		PUTS(o, "-");
		put_u64(o, -(uint64_t)v); /* INT64_MIN too */
		return;
	}
	put_u64(o, (uint64_t)v);
}

/* {"id":N, or { */
static void put_head(wbuf *o, bool has_id, int64_t id)
{
	if (!has_id) {
		PUTS(o, "{");
		return;
	}
	PUTS(o, "{\"id\":");
	put_i64(o, id);
	PUTS(o, ",");
}

/* "U","U",... */
static void put_users(wbuf *o, const uint64_t *u, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (i)
			PUTS(o, ",");
		PUTS(o, "\"");
		put_u64(o, u[i]);
		PUTS(o, "\"");
	}
}

/* A JSON string's contents: quote, backslash and control characters
 * escaped, everything else (UTF-8 included) as is. */
static void put_text(wbuf *o, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	for (const char *run = s;; s++) {
		uint8_t c = (uint8_t)*s;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		put(o, run, (size_t)(s - run));
		if (c == 0)
			return;
		run = s + 1;
		switch (c) {
		case '"':
			PUTS(o, "\\\"");
			break;
		case '\\':
			PUTS(o, "\\\\");
			break;
		case '\n':
			PUTS(o, "\\n");
			break;
		case '\r':
			PUTS(o, "\\r");
			break;
		case '\t':
			PUTS(o, "\\t");
			break;
		default: {
			char u[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };

			put(o, u, sizeof(u));
			break;
		}
		}
	}
}

size_t ms_proto_enc_ok(char *buf, size_t cap, bool has_id, int64_t id)
{
	wbuf o = { buf, buf ? cap : 0, 0 };

	put_head(&o, has_id, id);
	PUTS(&o, "\"ok\":true}");
	return o.n;
}

size_t ms_proto_enc_error(char *buf, size_t cap, bool has_id, int64_t id, int code,
			  const char *msg)
{
	wbuf o = { buf, buf ? cap : 0, 0 };

	put_head(&o, has_id, id);
	PUTS(&o, "\"ok\":false,\"error\":{\"code\":");
	put_i64(&o, code);
	PUTS(&o, ",\"message\":\"");
	put_text(&o, msg);
	PUTS(&o, "\"}}");
	return o.n;
}

size_t ms_proto_enc_join(char *buf, size_t cap, bool has_id, int64_t id, uint64_t seq,
			 uint64_t epoch)
{
	static const char hex[] = "0123456789abcdef";
	wbuf o = { buf, buf ? cap : 0, 0 };
	char e[16];

	for (int i = 15; i >= 0; i--, epoch >>= 4)
		e[i] = hex[epoch & 15];
	put_head(&o, has_id, id);
	PUTS(&o, "\"ok\":true,\"seq\":");
	put_u64(&o, seq);
	PUTS(&o, ",\"epoch\":\"");
	put(&o, e, sizeof(e));
	PUTS(&o, "\"}");
	return o.n;
}

size_t ms_proto_enc_publish(char *buf, size_t cap, bool has_id, int64_t id, uint64_t seq)
{
	wbuf o = { buf, buf ? cap : 0, 0 };

	put_head(&o, has_id, id);
	PUTS(&o, "\"ok\":true,\"seq\":");
	put_u64(&o, seq);
	PUTS(&o, "}");
	return o.n;
}

size_t ms_proto_enc_presence_list(char *buf, size_t cap, bool has_id, int64_t id,
				  const uint64_t *users, size_t n, bool more, uint64_t next)
{
	wbuf o = { buf, buf ? cap : 0, 0 };

	put_head(&o, has_id, id);
	PUTS(&o, "\"ok\":true,\"users\":[");
	put_users(&o, users, n);
	if (more) {
		PUTS(&o, "],\"next\":\"");
		put_u64(&o, next);
		PUTS(&o, "\"}");
	} else {
		PUTS(&o, "]}");
	}
	return o.n;
}

static const char msg_p1[] = "{\"event\":\"message\",\"stream\":\"";
static const char msg_p2[] = "\",\"seq\":";
static const char msg_p3[] = ",\"from\":\"";
static const char msg_p4[] = "\",\"data\":";

size_t ms_proto_enc_message(char *buf, size_t cap, ms_str stream, ms_str from, ms_str data,
			    size_t *stream_off, size_t *seq_off)
{
	size_t len = (sizeof(msg_p1) - 1) + stream.n + (sizeof(msg_p2) - 1) + MS_PROTO_SEQ_SLOT +
		     (sizeof(msg_p3) - 1) + from.n + (sizeof(msg_p4) - 1) + data.n + 1;
	size_t k = 0;

	if (!buf || len > cap)
		return len;
#define PUT(ptr, n) (memcpy(buf + k, (ptr), (n)), k += (n))
	PUT(msg_p1, sizeof(msg_p1) - 1);
	if (stream_off)
		*stream_off = k;
	PUT(stream.p, stream.n);
	PUT(msg_p2, sizeof(msg_p2) - 1);
	if (seq_off)
		*seq_off = k;
	memset(buf + k, ' ', MS_PROTO_SEQ_SLOT);
	k += MS_PROTO_SEQ_SLOT;
	PUT(msg_p3, sizeof(msg_p3) - 1);
	PUT(from.p, from.n);
	PUT(msg_p4, sizeof(msg_p4) - 1);
	PUT(data.p, data.n);
	buf[k++] = '}';
#undef PUT
	return k;
}

void ms_proto_seq_fill(char *slot, uint64_t seq)
{
	char d[MS_PROTO_U64_DIGITS];

	memcpy(slot, d, ms_proto_uid_format(d, seq));
}

size_t ms_proto_enc_dm(char *buf, size_t cap, ms_str from, ms_str data)
{
	wbuf o = { buf, buf ? cap : 0, 0 };

	PUTS(&o, "{\"event\":\"dm\",\"from\":\"");
	put(&o, from.p, from.n);
	PUTS(&o, "\",\"data\":");
	put(&o, data.p, data.n);
	PUTS(&o, "}");
	return o.n;
}

size_t ms_proto_enc_presence(char *buf, size_t cap, ms_str stream, const uint64_t *join,
			     size_t njoin, const uint64_t *leave, size_t nleave)
{
	wbuf o = { buf, buf ? cap : 0, 0 };

	PUTS(&o, "{\"event\":\"presence\",\"stream\":\"");
	put(&o, stream.p, stream.n);
	PUTS(&o, "\"");
	if (njoin) {
		PUTS(&o, ",\"join\":[");
		put_users(&o, join, njoin);
		PUTS(&o, "]");
	}
	if (nleave) {
		PUTS(&o, ",\"leave\":[");
		put_users(&o, leave, nleave);
		PUTS(&o, "]");
	}
	PUTS(&o, "}");
	return o.n;
}

size_t ms_proto_enc_left(char *buf, size_t cap, ms_str stream, const char *reason)
{
	wbuf o = { buf, buf ? cap : 0, 0 };

	PUTS(&o, "{\"event\":\"left\",\"stream\":\"");
	put(&o, stream.p, stream.n);
	PUTS(&o, "\",\"reason\":\"");
	put_text(&o, reason);
	PUTS(&o, "\"}");
	return o.n;
}

size_t ms_proto_enc_count(char *buf, size_t cap, const char *key, uint64_t n)
{
	wbuf o = { buf, buf ? cap : 0, 0 };

	PUTS(&o, "{\"");
	put_text(&o, key);
	PUTS(&o, "\":");
	put_u64(&o, n);
	PUTS(&o, "}");
	return o.n;
}
