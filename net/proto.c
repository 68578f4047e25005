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
