/*
 * libFuzzer target for net/proto.h and net/json.h on arbitrary bytes.
 *
 * ms_json_valid is compared with a small recursive reference validator
 * written straight from the RFC 8259 grammar (ref_json.h: its own UTF-8
 * decoder, no shared code), so a disagreement is a bug in one of them. Then:
 * ms_proto_parse returns 0 only for valid JSON and 400 with "invalid json"
 * exactly for invalid JSON (and then no id); every span lies inside the
 * input; a parsed request's fields obey their rules (stream names, user
 * ids, data is exactly one valid value with no surrounding whitespace);
 * iterating an object or array ends in 0 exactly when the text is valid;
 * every member's key decodes to valid UTF-8 no longer than its raw form.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/json.h"
#include "net/proto.h"
#include "net/utf8.h"
#include "ref_json.h"

#define CHECK(c)                 \
	do {                     \
		if (!(c))        \
			abort(); \
	} while (0)

/* ---- checks ------------------------------------------------------------ */

static bool inside(ms_str s, const char *p, size_t n)
{
	return s.n == 0 || (s.p >= p && s.p + s.n <= p + n);
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void check_key(ms_str k, const char *p, size_t n)
{
	char out[512];
	long len;

	CHECK(inside(k, p, n) && k.p > p && k.p + k.n < p + n);
	CHECK(k.p[-1] == '"' && k.p[k.n] == '"');
	if (k.n + 2 > sizeof(out))
		return;
	len = ms_json_string((ms_str){ k.p - 1, k.n + 2 }, out, sizeof(out));
	CHECK(len >= 0 && (size_t)len <= k.n);
	CHECK(ms_utf8_validate(MS_UTF8_ACCEPT, (const uint8_t *)out, (size_t)len) ==
	      MS_UTF8_ACCEPT);
}

static void check_value(ms_str v, const char *p, size_t n)
{
	int64_t i;

	CHECK(v.n > 0 && inside(v, p, n));
	CHECK(!is_ws(v.p[0]) && !is_ws(v.p[v.n - 1]));
	CHECK(ms_json_valid(v.p, v.n));
	CHECK(ms_json_skip(v.p, v.p + v.n) == v.p + v.n);
	if (ms_json_int(v, &i))
		CHECK(v.p[0] == '-' || (v.p[0] >= '0' && v.p[0] <= '9'));
}

static void check_iterators(const char *p, size_t n, bool valid)
{
	ms_json_iter it;
	ms_str k, v;
	int r;

	if (ms_json_object_begin(&it, p, n)) {
		while ((r = ms_json_object_next(&it, &k, &v)) > 0) {
			check_key(k, p, n);
			check_value(v, p, n);
		}
		CHECK((r == 0) == valid);
		CHECK(ms_json_object_next(&it, &k, &v) == r);
	}
	if (ms_json_array_begin(&it, p, n)) {
		while ((r = ms_json_array_next(&it, &v)) > 0)
			check_value(v, p, n);
		CHECK((r == 0) == valid);
		CHECK(ms_json_array_next(&it, &v) == r);
	}
}

static void check_request(const char *p, size_t n, bool valid)
{
	ms_req r;
	const char *err = NULL;
	uint64_t uid;
	int rc = ms_proto_parse(p, n, &r, &err);

	CHECK(rc == 0 || rc == 400);
	CHECK(inside(r.stream, p, n) && inside(r.to, p, n) && inside(r.data, p, n));
	CHECK(inside(r.token, p, n) && inside(r.cursor, p, n));
	if (rc == 400) {
		CHECK(err != NULL);
		CHECK((strcmp(err, "invalid json") == 0) == !valid);
		if (!valid)
			CHECK(!r.has_id);
		return;
	}
	CHECK(valid);
	switch (r.op) {
	case MS_REQ_JOIN:
	case MS_REQ_LEAVE:
	case MS_REQ_PRESENCE:
		CHECK(ms_proto_stream_valid(r.stream));
		CHECK(r.data.n == 0);
		break;
	case MS_REQ_PUBLISH:
		CHECK(ms_proto_stream_valid(r.stream));
		check_value(r.data, p, n);
		break;
	case MS_REQ_DM:
		CHECK(ms_proto_uid(r.to, &uid));
		check_value(r.data, p, n);
		break;
	case MS_REQ_AUTH:
		CHECK(r.token.n > 0);
		break;
	case MS_REQ_PING:
		break;
	default:
		CHECK(0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	bool valid = ms_json_valid(p, size);
	const char *q;

	CHECK(valid == ref_valid(data, size));
	q = ms_json_skip(p, p + size);
	CHECK(!q || (q > p && q <= p + size));
	check_iterators(p, size, valid);
	check_request(p, size, valid);
	if (size < 2 * 1024) {
		/* the same text as a string's contents must survive decoding */
		char buf[4100], out[4100];
		long len;

		buf[0] = '"';
		memcpy(buf + 1, data, size);
		buf[size + 1] = '"';
		len = ms_json_string((ms_str){ buf, size + 2 }, out, sizeof(out));
		CHECK(len <= (long)size);
		if (len >= 0)
			CHECK(ms_utf8_validate(MS_UTF8_ACCEPT, (const uint8_t *)out,
					       (size_t)len) == MS_UTF8_ACCEPT);
	}
	return 0;
}
