/*
 * Unit tests for net/proto.h: every op with its fields, ids (echoed only
 * from valid JSON, only when unambiguous), data spans byte for byte, every
 * malformed class with its message, duplicate keys including escaped
 * spellings, stream names and canonical user ids. Then the encoders: every
 * reply and event byte for byte, the sizing contract (nothing written past
 * cap), escaping of free text, and what they write read back by our own
 * JSON reader with data unchanged.
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

#include "net/json.h"
#include "net/proto.h"

#define S(lit) ((ms_str){ lit, sizeof(lit) - 1 })

static int parse(const char *s, ms_req *r, const char **err)
{
	*err = NULL;
	return ms_proto_parse(s, strlen(s), r, err);
}

static bool span_is(ms_str s, const char *want)
{
	return s.n == strlen(want) && memcmp(s.p, want, s.n) == 0;
}

/* Span lies inside [p, p+n). */
static bool inside(ms_str s, const char *p, size_t n)
{
	return s.n == 0 || (s.p >= p && s.p + s.n <= p + n);
}

static void expect_err(const char *s, const char *msg)
{
	ms_req r;
	const char *err;
	int rc = parse(s, &r, &err);

	if (rc != 400 || !err || strcmp(err, msg) != 0)
		fail_msg("%s: got %d \"%s\", want 400 \"%s\"", s, rc, err ? err : "", msg);
}

static void test_ops(void **state)
{
	ms_req r;
	const char *err;

	(void)state;
	assert_int_equal(parse("{\"op\":\"join\",\"stream\":\"clan:123\",\"id\":1}", &r, &err), 0);
	assert_int_equal(r.op, MS_REQ_JOIN);
	assert_true(span_is(r.stream, "clan:123"));
	assert_true(r.has_id);
	assert_int_equal(r.id, 1);
	assert_int_equal(r.data.n, 0);

	assert_int_equal(parse("{\"op\":\"leave\",\"stream\":\"clan:123\",\"id\":2}", &r, &err), 0);
	assert_int_equal(r.op, MS_REQ_LEAVE);
	assert_true(span_is(r.stream, "clan:123"));
	assert_int_equal(r.id, 2);

	assert_int_equal(parse("{\"op\":\"publish\",\"stream\":\"clan:123\",\"data\":{\"t\":\"hi\"},\"id\":3}",
			       &r, &err), 0);
	assert_int_equal(r.op, MS_REQ_PUBLISH);
	assert_true(span_is(r.stream, "clan:123"));
	assert_true(span_is(r.data, "{\"t\":\"hi\"}"));
	assert_int_equal(r.id, 3);

	assert_int_equal(parse("{\"op\":\"dm\",\"to\":\"456\",\"data\":[1,2],\"id\":4}", &r, &err), 0);
	assert_int_equal(r.op, MS_REQ_DM);
	assert_true(span_is(r.to, "456"));
	assert_true(span_is(r.data, "[1,2]"));
	assert_int_equal(r.id, 4);

	assert_int_equal(parse("{\"op\":\"presence\",\"stream\":\"clan:123\",\"id\":5}", &r, &err), 0);
	assert_int_equal(r.op, MS_REQ_PRESENCE);
	assert_true(span_is(r.stream, "clan:123"));
	assert_int_equal(r.cursor.n, 0);
	assert_int_equal(parse("{\"op\":\"presence\",\"stream\":\"s\",\"cursor\":\"abc:12\"}", &r, &err), 0);
	assert_true(span_is(r.cursor, "abc:12"));
	assert_false(r.has_id);

	assert_int_equal(parse("{\"op\":\"ping\",\"id\":6}", &r, &err), 0);
	assert_int_equal(r.op, MS_REQ_PING);
	assert_int_equal(r.id, 6);
	assert_int_equal(parse("{\"op\":\"ping\"}", &r, &err), 0);
	assert_false(r.has_id);

	assert_int_equal(parse("{\"op\":\"auth\",\"token\":\"aaa.bbb.ccc\",\"id\":7}", &r, &err), 0);
	assert_int_equal(r.op, MS_REQ_AUTH);
	assert_true(span_is(r.token, "aaa.bbb.ccc"));
	assert_int_equal(r.id, 7);
}

static void test_ids(void **state)
{
	ms_req r;
	const char *err;

	(void)state;
	assert_int_equal(parse("{\"id\":-5,\"op\":\"ping\"}", &r, &err), 0);
	assert_int_equal(r.id, -5);
	assert_int_equal(parse("{\"op\":\"ping\",\"id\":0}", &r, &err), 0);
	assert_true(r.has_id);
	assert_int_equal(r.id, 0);
	assert_int_equal(parse("{\"op\":\"ping\",\"id\":9223372036854775807}", &r, &err), 0);
	assert_true(r.id == INT64_MAX);

	expect_err("{\"op\":\"ping\",\"id\":1.5}", "bad id");
	expect_err("{\"op\":\"ping\",\"id\":1e3}", "bad id");
	expect_err("{\"op\":\"ping\",\"id\":\"1\"}", "bad id");
	expect_err("{\"op\":\"ping\",\"id\":null}", "bad id");
	expect_err("{\"op\":\"ping\",\"id\":9223372036854775808}", "bad id");

	/* a 400 for valid JSON still echoes a good id ... */
	assert_int_equal(parse("{\"op\":\"nope\",\"id\":9}", &r, &err), 400);
	assert_string_equal(err, "unknown op");
	assert_true(r.has_id);
	assert_int_equal(r.id, 9);
	assert_int_equal(parse("{\"id\":10,\"op\":\"join\",\"stream\":\"a b\"}", &r, &err), 400);
	assert_true(r.has_id);
	assert_int_equal(r.id, 10);
	assert_int_equal(parse("{\"id\":11,\"op\":\"ping\",\"x\":1,\"x\":2}", &r, &err), 400);
	assert_string_equal(err, "duplicate key");
	assert_true(r.has_id);
	/* ... but not an ambiguous one ... */
	assert_int_equal(parse("{\"id\":1,\"op\":\"ping\",\"id\":2}", &r, &err), 400);
	assert_string_equal(err, "duplicate key");
	assert_false(r.has_id);
	/* ... and never from a frame that is not valid JSON */
	assert_int_equal(parse("{\"id\":12,\"op\":\"ping\",}", &r, &err), 400);
	assert_string_equal(err, "invalid json");
	assert_false(r.has_id);
	assert_int_equal(parse("{\"id\":13,\"op\":\"ping\"", &r, &err), 400);
	assert_false(r.has_id);
	assert_int_equal(parse("{\"id\":14,\"op\":\"ping\",\"id\":15,]", &r, &err), 400);
	assert_string_equal(err, "invalid json"); /* invalid wins over duplicate */
	assert_false(r.has_id);
}

static void test_data_spans(void **state)
{
	const char *datas[] = {
		"0", "-1.5e-3", "true", "false", "null", "\"\"", "\"h\\u00e9 \\\"x\\\"\"",
		"\"\xe2\x82\xac\"", "{}", "[]", "{ \"a\" : [ 1 , { } ] }",
		"{\"a\":1,\"a\":2}", /* nested duplicates are the client's business */
		NULL, /* 63 levels, built below */
	};
	char buf[512], deep[2 * 63 + 1];
	ms_req r;
	const char *err;

	(void)state;
	memset(deep, '[', 63);
	memset(deep + 63, ']', 63);
	deep[126] = '\0';
	datas[sizeof(datas) / sizeof(datas[0]) - 1] = deep;
	for (size_t i = 0; i < sizeof(datas) / sizeof(datas[0]); i++) {
		/* data first, last, with whitespace around it */
		static const char *fmt[] = {
			"{\"op\":\"publish\",\"stream\":\"s\",\"data\":%s}",
			"{\"data\":%s,\"op\":\"publish\",\"stream\":\"s\"}",
			"{ \"op\" : \"publish\" , \"stream\" : \"s\" , \"data\" : \t%s\n , \"id\" : 1 }",
			"{\"op\":\"dm\",\"to\":\"1\",\"data\":%s}",
		};
		for (size_t f = 0; f < sizeof(fmt) / sizeof(fmt[0]); f++) {
			int n = snprintf(buf, sizeof(buf), fmt[f], datas[i]);

			assert_int_equal(ms_proto_parse(buf, (size_t)n, &r, &err), 0);
			assert_true(span_is(r.data, datas[i]));
			assert_true(inside(r.data, buf, (size_t)n));
		}
	}
	/* 64 levels in total is the limit: the request object is one */
	memset(buf, 0, sizeof(buf));
	strcpy(buf, "{\"op\":\"publish\",\"stream\":\"s\",\"data\":[");
	strcat(buf, deep);
	strcat(buf, "]}");
	expect_err(buf, "invalid json");
}

static void test_malformed(void **state)
{
	(void)state;
	/* not JSON, or not exactly one value */
	expect_err("", "invalid json");
	expect_err("   ", "invalid json");
	expect_err("{", "invalid json");
	expect_err("{\"op\":\"ping\"", "invalid json");
	expect_err("{\"op\":\"ping\",}", "invalid json");
	expect_err("{\"op\":\"ping\"}}", "invalid json");
	expect_err("{\"op\":\"ping\"} {}", "invalid json");
	expect_err("{'op':'ping'}", "invalid json");
	expect_err("{op:\"ping\"}", "invalid json");
	expect_err("{\"op\":\"ping\",\"x\":NaN}", "invalid json");
	expect_err("{\"op\":\"ping\",\"x\":01}", "invalid json");
	expect_err("{\"op\":\"ping\",\"x\":\"\\uD800\"}", "invalid json");
	expect_err("{\"op\":\"ping\",\"x\":\"\xc3\"}", "invalid json");
	expect_err("{\"op\":\"ping\",\"x\":\"a\tb\"}", "invalid json");
	expect_err("{\"op\":\"publish\",\"stream\":\"s\",\"data\":}", "invalid json");
	expect_err("{\"op\":\"publish\",\"stream\":\"s\",\"data\":1 2}", "invalid json");
	expect_err("{\"op\":\"publish\",\"stream\":\"s\",\"data\":{\"a\":1,}}", "invalid json");
	/* valid JSON but not an object */
	expect_err("[]", "not an object");
	expect_err("\"op\"", "not an object");
	expect_err(" 1 ", "not an object");
	expect_err("null", "not an object");
	/* op */
	expect_err("{}", "missing op");
	expect_err("{\"id\":1}", "missing op");
	expect_err("{\"op\":1}", "bad op");
	expect_err("{\"op\":null}", "bad op");
	expect_err("{\"op\":[\"ping\"]}", "bad op");
	expect_err("{\"op\":\"\"}", "unknown op");
	expect_err("{\"op\":\"PING\"}", "unknown op");
	expect_err("{\"op\":\"ping \"}", "unknown op");
	expect_err("{\"op\":\"subscribe\"}", "unknown op");
	expect_err("{\"op\":\"a-very-long-unknown-operation-name\"}", "unknown op");
	/* stream */
	expect_err("{\"op\":\"join\"}", "missing stream");
	expect_err("{\"op\":\"leave\"}", "missing stream");
	expect_err("{\"op\":\"presence\"}", "missing stream");
	expect_err("{\"op\":\"publish\",\"data\":1}", "missing stream");
	expect_err("{\"op\":\"join\",\"stream\":\"\"}", "bad stream name");
	expect_err("{\"op\":\"join\",\"stream\":\"a b\"}", "bad stream name");
	expect_err("{\"op\":\"join\",\"stream\":\"a/b\"}", "bad stream name");
	expect_err("{\"op\":\"join\",\"stream\":\"caf\xc3\xa9\"}", "bad stream name");
	expect_err("{\"op\":\"join\",\"stream\":\"\\u0061\"}", "bad stream name");
	expect_err("{\"op\":\"join\",\"stream\":\"a\\/b\"}", "bad stream name");
	expect_err("{\"op\":\"join\",\"stream\":1}", "bad stream name");
	expect_err("{\"op\":\"join\",\"stream\":[\"a\"]}", "bad stream name");
	/* data */
	expect_err("{\"op\":\"publish\",\"stream\":\"s\"}", "missing data");
	expect_err("{\"op\":\"dm\",\"to\":\"1\"}", "missing data");
	/* to */
	expect_err("{\"op\":\"dm\",\"data\":1}", "missing to");
	expect_err("{\"op\":\"dm\",\"to\":456,\"data\":1}", "bad user id");
	expect_err("{\"op\":\"dm\",\"to\":\"\",\"data\":1}", "bad user id");
	expect_err("{\"op\":\"dm\",\"to\":\"042\",\"data\":1}", "bad user id");
	expect_err("{\"op\":\"dm\",\"to\":\"-1\",\"data\":1}", "bad user id");
	expect_err("{\"op\":\"dm\",\"to\":\"+1\",\"data\":1}", "bad user id");
	expect_err("{\"op\":\"dm\",\"to\":\"1 \",\"data\":1}", "bad user id");
	expect_err("{\"op\":\"dm\",\"to\":\"18446744073709551616\",\"data\":1}", "bad user id");
	expect_err("{\"op\":\"dm\",\"to\":\"\\u0031\",\"data\":1}", "bad user id");
	/* token, cursor */
	expect_err("{\"op\":\"auth\"}", "missing token");
	expect_err("{\"op\":\"auth\",\"token\":1}", "bad token");
	expect_err("{\"op\":\"auth\",\"token\":\"\"}", "bad token");
	expect_err("{\"op\":\"presence\",\"stream\":\"s\",\"cursor\":1}", "bad cursor");
}

static void test_duplicates(void **state)
{
	char buf[2048];
	size_t n;
	ms_req r;
	const char *err;

	(void)state;
	expect_err("{\"op\":\"ping\",\"op\":\"ping\"}", "duplicate key");
	expect_err("{\"op\":\"join\",\"stream\":\"a\",\"stream\":\"b\"}", "duplicate key");
	expect_err("{\"op\":\"publish\",\"stream\":\"a\",\"data\":1,\"data\":2}", "duplicate key");
	expect_err("{\"op\":\"dm\",\"to\":\"1\",\"to\":\"2\",\"data\":1}", "duplicate key");
	/* any top-level key, known to this op or not */
	expect_err("{\"op\":\"ping\",\"token\":\"a\",\"token\":\"a\"}", "duplicate key");
	expect_err("{\"op\":\"ping\",\"x\":1,\"y\":2,\"x\":3}", "duplicate key");
	expect_err("{\"\":1,\"op\":\"ping\",\"\":1}", "duplicate key");
	/* compared decoded: escaped spellings are the same key */
	expect_err("{\"op\":\"ping\",\"o\\u0070\":\"join\"}", "duplicate key");
	expect_err("{\"\\u006fp\":\"ping\",\"op\":\"join\"}", "duplicate key");
	expect_err("{\"op\":\"ping\",\"x\\/y\":1,\"x/y\":2}", "duplicate key");
	expect_err("{\"op\":\"ping\",\"\\u00e9\":1,\"\xc3\xa9\":2}", "duplicate key");
	expect_err("{\"op\":\"ping\",\"\\uD83D\\uDE00\":1,\"\xf0\x9f\x98\x80\":2}", "duplicate key");
	expect_err("{\"op\":\"ping\",\"a\\nb\":1,\"a\\u000ab\":2}", "duplicate key");
	/* an escaped known key still counts as that key */
	assert_int_equal(parse("{\"\\u006fp\":\"\\u0070ing\",\"\\u0069d\":3}", &r, &err), 0);
	assert_int_equal(r.op, MS_REQ_PING);
	assert_true(r.has_id);
	assert_int_equal(r.id, 3);
	/* similar but different keys */
	assert_int_equal(parse("{\"op\":\"ping\",\"x\":1,\"X\":1,\"x \":1,\"\\u0078y\":1,\"x\\u0000\":1}",
			       &r, &err), 0);
	/* nested duplicates are not ours to judge */
	assert_int_equal(parse("{\"op\":\"publish\",\"stream\":\"s\",\"data\":{\"op\":1,\"op\":2}}",
			       &r, &err), 0);

	/* many distinct extra keys: accepted up to the cap, then refused */
	n = (size_t)snprintf(buf, sizeof(buf), "{\"op\":\"ping\"");
	for (int i = 0; i < 64; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, ",\"k%d\":%d", i, i);
	memcpy(buf + n, "}", 2);
	assert_int_equal(parse(buf, &r, &err), 0);
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, ",\"k64\":0}");
	assert_int_equal(parse(buf, &r, &err), 400);
	assert_string_equal(err, "too many keys");
	/* a duplicate among many keys is found wherever it is */
	n = (size_t)snprintf(buf, sizeof(buf), "{\"op\":\"ping\"");
	for (int i = 0; i < 63; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, ",\"k%d\":%d", i, i);
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, ",\"k31\":0}");
	assert_int_equal(parse(buf, &r, &err), 400);
	assert_string_equal(err, "duplicate key");
}

static void test_extra_keys_ignored(void **state)
{
	ms_req r;
	const char *err;

	(void)state;
	assert_int_equal(parse("{\"op\":\"join\",\"stream\":\"a\",\"v\":2,\"meta\":{\"x\":[]}}", &r, &err), 0);
	assert_int_equal(r.op, MS_REQ_JOIN);
	/* fields of other ops are ignored, not judged */
	assert_int_equal(parse("{\"op\":\"ping\",\"stream\":\"bad name\",\"to\":\"01\",\"data\":1,\"token\":5}",
			       &r, &err), 0);
	assert_int_equal(r.stream.n, 0);
	assert_int_equal(r.to.n, 0);
	assert_int_equal(r.data.n, 0);
	assert_int_equal(r.token.n, 0);
	assert_int_equal(parse("{\"op\":\"join\",\"stream\":\"a\",\"cursor\":5}", &r, &err), 0);
	assert_int_equal(r.cursor.n, 0);
}

static void test_stream_valid(void **state)
{
	char name[130];

	(void)state;
	assert_true(ms_proto_stream_valid(S("a")));
	assert_true(ms_proto_stream_valid(S("clan:123")));
	assert_true(ms_proto_stream_valid(S("A-Z_a-z.0-9:x")));
	assert_true(ms_proto_stream_valid(S("...")));
	assert_false(ms_proto_stream_valid(S("")));
	assert_false(ms_proto_stream_valid((ms_str){ NULL, 0 }));
	assert_false(ms_proto_stream_valid(S("a b")));
	assert_false(ms_proto_stream_valid(S("a*")));
	assert_false(ms_proto_stream_valid(S("a\0b")));
	assert_false(ms_proto_stream_valid(S("\xc3\xa9")));
	for (int c = 0; c < 256; c++) {
		char ch = (char)c;
		bool want = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
			    (c >= 'a' && c <= 'z') || c == '_' || c == ':' || c == '.' ||
			    c == '-';

		assert_int_equal(ms_proto_stream_valid((ms_str){ &ch, 1 }), want);
	}
	memset(name, 'x', sizeof(name));
	assert_true(ms_proto_stream_valid((ms_str){ name, 128 }));
	assert_false(ms_proto_stream_valid((ms_str){ name, 129 }));
}

static void test_uid(void **state)
{
	uint64_t v = 7;

	(void)state;
	assert_true(ms_proto_uid(S("0"), &v));
	assert_true(v == 0);
	assert_true(ms_proto_uid(S("42"), &v));
	assert_true(v == 42);
	assert_true(ms_proto_uid(S("18446744073709551615"), &v));
	assert_true(v == UINT64_MAX);
	v = 7;
	static const char *bad[] = {
		"", "00", "042", "-1", "+1", " 1", "1 ", "1a", "18446744073709551616",
		"99999999999999999999", "100000000000000000000", "1.0", "1e3",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (ms_proto_uid((ms_str){ bad[i], strlen(bad[i]) }, &v))
			fail_msg("accepted uid: %s", bad[i]);
	assert_true(v == 7);
}

/* ---- encoders ---------------------------------------------------------- */

/* Encode with exactly the room it asks for, between guard bytes; check the
 * sizing call agrees, then compare with want. */
#define ENC_IS(want, fn, ...)                                                      \
	do {                                                                       \
		char b_[1024];                                                     \
		size_t n_ = fn(NULL, 0, __VA_ARGS__);                              \
		assert_true(n_ + 2 <= sizeof(b_));                                 \
		memset(b_, '#', sizeof(b_));                                       \
		assert_int_equal(fn(b_ + 1, n_, __VA_ARGS__), n_);                 \
		assert_int_equal(b_[0], '#');                                      \
		assert_int_equal(b_[n_ + 1], '#');                                 \
		if (n_ != strlen(want) || memcmp(b_ + 1, want, n_) != 0)           \
			fail_msg("got %.*s\nwant %s", (int)n_, b_ + 1, want);     \
		assert_true(ms_json_valid(b_ + 1, n_));                            \
	} while (0)

static void test_enc_replies(void **state)
{
	(void)state;
	ENC_IS("{\"id\":7,\"ok\":true}", ms_proto_enc_ok, true, 7);
	ENC_IS("{\"ok\":true}", ms_proto_enc_ok, false, 7);
	ENC_IS("{\"id\":-9223372036854775808,\"ok\":true}", ms_proto_enc_ok, true, INT64_MIN);
	ENC_IS("{\"id\":9223372036854775807,\"ok\":true}", ms_proto_enc_ok, true, INT64_MAX);
	ENC_IS("{\"id\":0,\"ok\":true}", ms_proto_enc_ok, true, 0);
	ENC_IS("{\"id\":4,\"ok\":false,\"error\":{\"code\":404,\"message\":\"user not online\"}}",
	       ms_proto_enc_error, true, 4, 404, "user not online");
	ENC_IS("{\"ok\":false,\"error\":{\"code\":400,\"message\":\"invalid json\"}}",
	       ms_proto_enc_error, false, 3, 400, "invalid json");
	/* free text is escaped; UTF-8 passes as is */
	ENC_IS("{\"ok\":false,\"error\":{\"code\":400,\"message\":\"a\\\"b\\\\c\\n\\r\\t\\u0001\\u001f\x7f\xc3\xa9\"}}",
	       ms_proto_enc_error, false, 0, 400, "a\"b\\c\n\r\t\x01\x1f\x7f\xc3\xa9");
	ENC_IS("{\"ok\":false,\"error\":{\"code\":400,\"message\":\"\"}}",
	       ms_proto_enc_error, false, 0, 400, "");
	ENC_IS("{\"id\":1,\"ok\":true,\"seq\":41,\"epoch\":\"0000000000009f3c\"}",
	       ms_proto_enc_join, true, 1, 41, 0x9f3c);
	ENC_IS("{\"ok\":true,\"seq\":0,\"epoch\":\"ffffffffffffffff\"}",
	       ms_proto_enc_join, false, 1, 0, UINT64_MAX);
	ENC_IS("{\"id\":3,\"ok\":true,\"seq\":42}", ms_proto_enc_publish, true, 3, 42);
	ENC_IS("{\"ok\":true,\"seq\":18446744073709551615}", ms_proto_enc_publish, false, 3,
	       UINT64_MAX);

	uint64_t users[] = { 42, 43, 0, UINT64_MAX };
	ENC_IS("{\"id\":5,\"ok\":true,\"users\":[\"42\",\"43\"]}", ms_proto_enc_presence_list, true,
	       5, users, 2, false, 99);
	ENC_IS("{\"ok\":true,\"users\":[\"42\",\"43\",\"0\",\"18446744073709551615\"],\"next\":\"7\"}",
	       ms_proto_enc_presence_list, false, 0, users, 4, true, 7);
	ENC_IS("{\"id\":5,\"ok\":true,\"users\":[]}", ms_proto_enc_presence_list, true, 5, users, 0,
	       false, 0);
	ENC_IS("{\"seq\":12}", ms_proto_enc_count, "seq", 12);
	ENC_IS("{\"delivered\":0}", ms_proto_enc_count, "delivered", 0);
}

static void test_enc_events(void **state)
{
	(void)state;
	ENC_IS("{\"event\":\"dm\",\"from\":\"42\",\"data\":{\"t\":\"hi\"}}", ms_proto_enc_dm, S("42"),
	       S("{\"t\":\"hi\"}"));
	ENC_IS("{\"event\":\"dm\",\"from\":\"server\",\"data\":null}", ms_proto_enc_dm, S("server"),
	       S("null"));

	uint64_t j[] = { 43, 44 }, l[] = { 45 };
	ENC_IS("{\"event\":\"presence\",\"stream\":\"clan:123\",\"join\":[\"43\"]}",
	       ms_proto_enc_presence, S("clan:123"), j, 1, l, 0);
	ENC_IS("{\"event\":\"presence\",\"stream\":\"clan:123\",\"leave\":[\"45\"]}",
	       ms_proto_enc_presence, S("clan:123"), j, 0, l, 1);
	ENC_IS("{\"event\":\"presence\",\"stream\":\"s\",\"join\":[\"43\",\"44\"],\"leave\":[\"45\"]}",
	       ms_proto_enc_presence, S("s"), j, 2, l, 1);
	ENC_IS("{\"event\":\"left\",\"stream\":\"clan:123\",\"reason\":\"token\"}", ms_proto_enc_left,
	       S("clan:123"), "token");
}

static void test_enc_message(void **state)
{
	static const char want[] = "{\"event\":\"message\",\"stream\":\"clan:123\",\"seq\":"
				   "                    ,\"from\":\"42\",\"data\":{\"a\":[1,2]}}";
	char b[256];
	size_t so = 0, qo = 0;
	size_t n = ms_proto_enc_message(NULL, 0, S("clan:123"), S("42"), S("{\"a\":[1,2]}"), &so, &qo);

	(void)state;
	assert_int_equal(n, sizeof(want) - 1);
	/* too small: nothing written, the length still returned */
	memset(b, '#', sizeof(b));
	assert_int_equal(ms_proto_enc_message(b, n - 1, S("clan:123"), S("42"),
					      S("{\"a\":[1,2]}"), &so, &qo), n);
	assert_int_equal(b[0], '#');
	assert_int_equal(ms_proto_enc_message(b, sizeof(b), S("clan:123"), S("42"),
					      S("{\"a\":[1,2]}"), &so, &qo), n);
	assert_memory_equal(b, want, n);
	assert_false(ms_json_valid(b, n)); /* no value until the owner fills the slot */
	assert_memory_equal(b + so, "clan:123", 8);
	assert_int_equal(qo, so + 8 + strlen("\",\"seq\":"));
	ms_proto_seq_fill(b + qo, 42);
	assert_memory_equal(b + qo, "42                  ,", MS_PROTO_SEQ_SLOT + 1);
	assert_true(ms_json_valid(b, n));
	memset(b + qo, ' ', MS_PROTO_SEQ_SLOT);
	ms_proto_seq_fill(b + qo, UINT64_MAX); /* 20 digits: the whole slot */
	assert_memory_equal(b + qo, "18446744073709551615,", MS_PROTO_SEQ_SLOT + 1);

	/* read back: seq a number, from the user, data byte for byte */
	ms_json_iter it;
	ms_str k, v;
	int r, seen = 0;
	assert_true(ms_json_object_begin(&it, b, n));
	while ((r = ms_json_object_next(&it, &k, &v)) > 0) {
		if (span_is(k, "seq")) {
			assert_true(span_is(v, "18446744073709551615"));
			seen |= 1;
		} else if (span_is(k, "from")) {
			assert_true(span_is(v, "\"42\""));
			seen |= 2;
		} else if (span_is(k, "data")) {
			assert_true(span_is(v, "{\"a\":[1,2]}"));
			seen |= 4;
		}
	}
	assert_int_equal(r, 0);
	assert_int_equal(seen, 7);
}

static void test_enc_sizing(void **state)
{
	char b[128];
	size_t n = ms_proto_enc_error(NULL, 0, true, 12, 503, "too many streams");

	(void)state;
	assert_true(n < sizeof(b));
	/* every shorter buffer gets a prefix at most, never a byte past cap */
	for (size_t cap = 0; cap < n; cap++) {
		memset(b, '#', sizeof(b));
		assert_int_equal(ms_proto_enc_error(b, cap, true, 12, 503, "too many streams"), n);
		for (size_t i = cap; i < sizeof(b); i++)
			assert_int_equal(b[i], '#');
	}
	char d[MS_PROTO_U64_DIGITS];
	assert_int_equal(ms_proto_uid_format(d, 0), 1);
	assert_memory_equal(d, "0", 1);
	assert_int_equal(ms_proto_uid_format(d, UINT64_MAX), 20);
	assert_memory_equal(d, "18446744073709551615", 20);
	/* what the formatter writes the parser reads back */
	uint64_t back = 1;
	assert_true(ms_proto_uid((ms_str){ d, ms_proto_uid_format(d, 1000) }, &back));
	assert_true(back == 1000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ops),
		cmocka_unit_test(test_ids),
		cmocka_unit_test(test_data_spans),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_duplicates),
		cmocka_unit_test(test_extra_keys_ignored),
		cmocka_unit_test(test_stream_valid),
		cmocka_unit_test(test_uid),
		cmocka_unit_test(test_enc_replies),
		cmocka_unit_test(test_enc_events),
		cmocka_unit_test(test_enc_message),
		cmocka_unit_test(test_enc_sizing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
