/*
 * Unit tests for net/json.h: RFC 8259 values accepted, every malformed
 * class rejected (literals, numbers, strings, escapes, surrogates, UTF-8,
 * structure, depth), every prefix of a container rejected, the word-at-a-
 * time string scan at every alignment, member/element iteration spans and
 * sticky end/error states, string decoding and integer reading, keys
 * compared decoded for duplicates.
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

#define S(lit) ((ms_str){ lit, sizeof(lit) - 1 })
#define VALID(lit) ms_json_valid(lit, sizeof(lit) - 1)

static bool span_is(ms_str s, const char *want)
{
	return s.n == strlen(want) && memcmp(s.p, want, s.n) == 0;
}

static void test_valid_values(void **state)
{
	(void)state;
	static const char *ok[] = {
		"0", "-0", "1", "-1", "123", "1.5", "-0.0", "1e5", "1E5", "1e+5",
		"1e-5", "1.25E-007", "0e0", "-0.0e-0", "9999999999999999999999999",
		"true", "false", "null", "\"\"", "\"abc\"", "[]", "{}", "[[]]",
		"{\"a\":{}}", " \t\r\n1 \t\r\n", "[1,2,3]", "[ 1 , 2 ]",
		"{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\"}}",
		"{ \"a\" : 1 , \"b\" : 2 }", "[\"\",{},[],0,\"x\"]",
		"\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"", "\"\\u0000\"", "\"\\u00e9\"",
		"\"\\uD83D\\uDE00\"", "\"\\ud83d\\ude00\"", "\"\\uFFFF\"",
		"\"\xc3\xa9\"", "\"\xe2\x82\xac\"", "\"\xf0\x9f\x98\x80\"",
		"\"\xef\xbb\xbf\"", "\"a\x7f\"", "{\"\":0}", "{\"a\":1,\"a\":2}",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (!ms_json_valid(ok[i], strlen(ok[i])))
			fail_msg("rejected valid: %s", ok[i]);
}

static void test_invalid_values(void **state)
{
	(void)state;
	static const char *bad[] = {
		/* empty and structure */
		"", " ", "\n", "1 2", "[1 2]", "{\"a\" 1}", "{\"a\":}", "{:1}",
		"{\"a\"}", "{1:2}", "{a:1}", "[", "]", "{", "}", "[}", "{]", "[1,]",
		"[,1]", "[,]", "{\"a\":1,}", "{,}", "{\"a\":1 \"b\":2}", "[1]]",
		"{}}", "[][]", "\"a\" \"b\"", "{\"a\":1}x",
		/* literals */
		"tru", "truee", "True", "nul", "NULL", "fals", "nan", "NaN",
		"Infinity", "-Infinity", "undefined",
		/* numbers */
		"01", "-01", "00", "-", "+1", ".5", "1.", "1.e5", "1e", "1e+", "1E-",
		"0x10", "1_000", "--1", "-.5", "1.5.5", "1e5e5", "- 1", "0.0.",
		/* strings */
		"'a'", "\"abc", "\"", "\"\t\"", "\"\n\"", "\"\x01\"", "\"\x1f\"",
		"\"\\a\"", "\"\\x41\"", "\"\\'\"", "\"\\0\"", "\"\\u12\"",
		"\"\\u12G4\"", "\"\\uXYZW\"", "\"\\U0041\"", "\"\\\"",
		"\"\\uD800\"", "\"\\uDBFF\"", "\"\\uDC00\"", "\"\\uDFFF\"",
		"\"\\uD800\\u0041\"", "\"\\uD800\\uD800\"", "\"\\uD800x\"",
		"\"\\uD800\\n\"", "\"\\uDE00\\uD83D\"",
		/* UTF-8 inside strings */
		"\"\xc3\"", "\"\xc3x\"", "\"\xc0\x80\"", "\"\xe0\x80\x80\"",
		"\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"", "\"\xff\"", "\"\x80\"",
		"\"\xe2\x82\"", "\"\xf0\x9f\x98\"", "\"\xe2\x82x\xac\"",
		/* bytes outside strings */
		"\xef\xbb\xbf{}", "[1]\xc3\xa9", "\x00", "[\x00]", "/* c */1",
		"// c\n1", "[1]//", "\v1", "\f1", ("\xa0" "1"),
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (ms_json_valid(bad[i], strlen(bad[i])))
			fail_msg("accepted invalid: %s", bad[i]);
	/* embedded NUL bytes, which strlen would hide */
	assert_false(VALID("\"a\0b\""));
	assert_false(VALID("[1,\0 2]"));
	assert_false(VALID("1\0"));
}

static void test_prefixes(void **state)
{
	(void)state;
	static const char doc[] =
		"{\"op\":\"publish\",\"stream\":\"clan:1\",\"data\":{\"t\":\"h\\u00e9llo"
		" \xe2\x82\xac \\uD83D\\uDE00\",\"n\":[1,-2.5e3,true,false,null,{}]},\"id\":7}";
	size_t n = sizeof(doc) - 1;

	assert_true(ms_json_valid(doc, n));
	for (size_t i = 0; i < n; i++)
		if (ms_json_valid(doc, i))
			fail_msg("prefix of %zu bytes accepted", i);
}

static void test_depth(void **state)
{
	char buf[2 * (MS_JSON_MAX_DEPTH + 1) + 8];
	size_t d, n;

	(void)state;
	for (d = MS_JSON_MAX_DEPTH; d <= MS_JSON_MAX_DEPTH + 1; d++) {
		n = 0;
		for (size_t i = 0; i < d; i++)
			buf[n++] = '[';
		for (size_t i = 0; i < d; i++)
			buf[n++] = ']';
		assert_int_equal(ms_json_valid(buf, n), d <= MS_JSON_MAX_DEPTH);
		n = 0;
		for (size_t i = 0; i + 1 < d; i++)
			buf[n++] = '[';
		buf[n++] = '{';
		buf[n++] = '}';
		for (size_t i = 0; i + 1 < d; i++)
			buf[n++] = ']';
		assert_int_equal(ms_json_valid(buf, n), d <= MS_JSON_MAX_DEPTH);
	}
	/* mixed objects and arrays, closing in the right order */
	assert_true(VALID("{\"a\":[{\"b\":[{}]}]}"));
	assert_false(VALID("{\"a\":[{\"b\":[{}]]}}"));
	assert_false(VALID("{\"a\":[{\"b\":[{]}]}}"));
}

/* Every alignment of the word-at-a-time scan: a run of plain bytes with the
 * interesting byte at each offset, and string lengths around 8 and 16. */
static void test_string_alignment(void **state)
{
	char buf[64];
	static const struct {
		const char *ins;
		size_t n;
		bool ok;
	} cases[] = {
		{ "\x01", 1, false }, { "\x1f", 1, false }, { "\t", 1, false },
		{ "\x7f", 1, true },  { " ", 1, true },     { "!", 1, true },
		{ "#", 1, true },     { "[", 1, true },     { "]", 1, true },
		{ "\\n", 2, true },   { "\\q", 2, false },  { "\xc3\xa9", 2, true },
		{ "\xc3", 1, false }, { "\\\"", 2, true },  { "\x80", 1, false },
	};

	(void)state;
	for (size_t off = 0; off < 8; off++) {
		for (size_t len = 0; len < 24; len++) {
			for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
				for (size_t at = 0; at <= len; at++) {
					size_t n = 0;

					memset(buf, 'a', sizeof(buf));
					n = off;
					buf[n++] = '"';
					for (size_t i = 0; i < len; i++) {
						if (i == at) {
							memcpy(buf + n, cases[c].ins, cases[c].n);
							n += cases[c].n;
						}
						buf[n++] = 'a' + (char)(i % 26);
					}
					if (at == len) {
						memcpy(buf + n, cases[c].ins, cases[c].n);
						n += cases[c].n;
					}
					buf[n++] = '"';
					if (ms_json_valid(buf + off, n - off) != cases[c].ok)
						fail_msg("case %zu off %zu len %zu at %zu", c, off,
							 len, at);
				}
			}
			/* a quote ends the string early: trailing bytes */
			memset(buf, 'a', sizeof(buf));
			buf[off] = '"';
			buf[off + 1 + len] = '"';
			assert_true(ms_json_valid(buf + off, len + 2));
			assert_ptr_equal(ms_json_skip(buf + off, buf + sizeof(buf)),
					 buf + off + len + 2);
		}
	}
}

static void test_skip(void **state)
{
	static const char t[] = "  {\"a\":[1,2]}  ,x";
	static const char n[] = "123abc";
	static const char s[] = "\"x\"\"y\"";

	(void)state;
	assert_ptr_equal(ms_json_skip(t, t + sizeof(t) - 1), t + 13);
	assert_ptr_equal(ms_json_skip(n, n + sizeof(n) - 1), n + 3);
	assert_ptr_equal(ms_json_skip(s, s + sizeof(s) - 1), s + 3);
	assert_null(ms_json_skip(t, t + 12));
	assert_null(ms_json_skip(t, t));
	assert_null(ms_json_skip(t, t + 2));
	/* a number cut by the end of the span stops there */
	assert_ptr_equal(ms_json_skip(n, n + 2), n + 2);
}

static void test_object_iter(void **state)
{
	static const char doc[] =
		" { \"op\" : \"join\" , \"a\\\"b\":{\"x\":[1,2]},\"n\":-1.5e3,\"e\":\"\"} \n";
	ms_json_iter it;
	ms_str k, v;

	(void)state;
	assert_true(ms_json_object_begin(&it, doc, sizeof(doc) - 1));
	assert_int_equal(ms_json_object_next(&it, &k, &v), 1);
	assert_true(span_is(k, "op"));
	assert_true(span_is(v, "\"join\""));
	assert_int_equal(ms_json_object_next(&it, &k, &v), 1);
	assert_true(span_is(k, "a\\\"b"));
	assert_true(span_is(v, "{\"x\":[1,2]}"));
	assert_int_equal(ms_json_object_next(&it, &k, &v), 1);
	assert_true(span_is(k, "n"));
	assert_true(span_is(v, "-1.5e3"));
	assert_int_equal(ms_json_object_next(&it, &k, &v), 1);
	assert_true(span_is(k, "e"));
	assert_true(span_is(v, "\"\""));
	assert_int_equal(ms_json_object_next(&it, &k, &v), 0);
	assert_int_equal(ms_json_object_next(&it, &k, &v), 0); /* sticky */

	assert_true(ms_json_object_begin(&it, "{}", 2));
	assert_int_equal(ms_json_object_next(&it, &k, &v), 0);
	assert_true(ms_json_object_begin(&it, " { } ", 5));
	assert_int_equal(ms_json_object_next(&it, &k, &v), 0);

	assert_false(ms_json_object_begin(&it, "[]", 2));
	assert_false(ms_json_object_begin(&it, "", 0));
	assert_false(ms_json_object_begin(&it, "  ", 2));
	assert_int_equal(ms_json_object_next(&it, &k, &v), -1);

	static const char *bad[] = {
		"{", "{,}", "{\"a\":1,}", "{\"a\":1}x", "{\"a\":1} }", "{\"a\" 1}",
		"{\"a\":01}", "{\"a\":1 \"b\":2}", "{1:2}", "{\"a\":[}",
		"{\"a\":1,\"b\"}", "{\"a\":1", "{\"a\":1,",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r;

		assert_true(ms_json_object_begin(&it, bad[i], strlen(bad[i])));
		while ((r = ms_json_object_next(&it, &k, &v)) > 0)
			;
		if (r != -1)
			fail_msg("iterated invalid: %s", bad[i]);
		assert_int_equal(ms_json_object_next(&it, &k, &v), -1); /* sticky */
	}
}

/* Nesting counts the iterated container: a fully iterated text is valid
 * exactly when ms_json_valid says so, at the depth limit too. */
static void test_iter_depth(void **state)
{
	char buf[8 + 2 * MS_JSON_MAX_DEPTH + 8];
	ms_json_iter it;
	ms_str k, v;

	(void)state;
	for (size_t d = MS_JSON_MAX_DEPTH - 2; d <= MS_JSON_MAX_DEPTH + 1; d++) {
		size_t n = 0;
		int r;

		/* {"a": + (d-1) arrays + } is d levels */
		memcpy(buf, "{\"a\":", 5);
		n = 5;
		for (size_t i = 0; i + 1 < d; i++)
			buf[n++] = '[';
		for (size_t i = 0; i + 1 < d; i++)
			buf[n++] = ']';
		buf[n++] = '}';
		assert_true(ms_json_object_begin(&it, buf, n));
		while ((r = ms_json_object_next(&it, &k, &v)) > 0)
			;
		assert_int_equal(r == 0, d <= MS_JSON_MAX_DEPTH);
		assert_int_equal(ms_json_valid(buf, n), d <= MS_JSON_MAX_DEPTH);
	}
}

static void test_array_iter(void **state)
{
	static const char doc[] = "[ \"a\" , {\"b\":[]} ,[ ],-0,null ]";
	ms_json_iter it;
	ms_str v;

	(void)state;
	assert_true(ms_json_array_begin(&it, doc, sizeof(doc) - 1));
	assert_int_equal(ms_json_array_next(&it, &v), 1);
	assert_true(span_is(v, "\"a\""));
	assert_int_equal(ms_json_array_next(&it, &v), 1);
	assert_true(span_is(v, "{\"b\":[]}"));
	assert_int_equal(ms_json_array_next(&it, &v), 1);
	assert_true(span_is(v, "[ ]"));
	assert_int_equal(ms_json_array_next(&it, &v), 1);
	assert_true(span_is(v, "-0"));
	assert_int_equal(ms_json_array_next(&it, &v), 1);
	assert_true(span_is(v, "null"));
	assert_int_equal(ms_json_array_next(&it, &v), 0);
	assert_int_equal(ms_json_array_next(&it, &v), 0);

	assert_true(ms_json_array_begin(&it, "[]", 2));
	assert_int_equal(ms_json_array_next(&it, &v), 0);
	assert_false(ms_json_array_begin(&it, "{}", 2));
	static const char *bad[] = { "[", "[1,]", "[,1]", "[1 2]", "[1]]", "[1],", "[01]" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r;

		assert_true(ms_json_array_begin(&it, bad[i], strlen(bad[i])));
		while ((r = ms_json_array_next(&it, &v)) > 0)
			;
		if (r != -1)
			fail_msg("iterated invalid: %s", bad[i]);
		assert_int_equal(ms_json_array_next(&it, &v), -1);
	}
}

static void test_string_decode(void **state)
{
	char out[64];

	(void)state;
	assert_int_equal(ms_json_string(S("\"\""), out, sizeof(out)), 0);
	assert_int_equal(ms_json_string(S("\"abc\""), out, sizeof(out)), 3);
	assert_memory_equal(out, "abc", 3);
	assert_int_equal(ms_json_string(S("\"a\\\"\\\\\\/\\b\\f\\n\\r\\tz\""), out, sizeof(out)), 10);
	assert_memory_equal(out, "a\"\\/\b\f\n\r\tz", 10);
	assert_int_equal(ms_json_string(S("\"\\u0041\\u00e9\\u20AC\""), out, sizeof(out)), 6);
	assert_memory_equal(out, "A\xc3\xa9\xe2\x82\xac", 6);
	assert_int_equal(ms_json_string(S("\"\\uD83D\\uDE00!\""), out, sizeof(out)), 5);
	assert_memory_equal(out, "\xf0\x9f\x98\x80!", 5);
	assert_int_equal(ms_json_string(S("\"\\u0000\""), out, sizeof(out)), 1);
	assert_int_equal(out[0], 0);
	assert_int_equal(ms_json_string(S("\"\\uDBFF\\uDFFF\""), out, sizeof(out)), 4);
	assert_memory_equal(out, "\xf4\x8f\xbf\xbf", 4);
	assert_int_equal(ms_json_string(S("\"\xc3\xa9\""), out, sizeof(out)), 2);

	/* capacity: exact fits, one less fails (plain and escaped tails) */
	assert_int_equal(ms_json_string(S("\"abcd\""), out, 4), 4);
	assert_int_equal(ms_json_string(S("\"abcd\""), out, 3), -1);
	assert_int_equal(ms_json_string(S("\"ab\\u20ac\""), out, 5), 5);
	assert_int_equal(ms_json_string(S("\"ab\\u20ac\""), out, 4), -1);
	assert_int_equal(ms_json_string(S("\"\""), out, 0), 0);

	/* not exactly one string */
	assert_int_equal(ms_json_string(S("1"), out, sizeof(out)), -1);
	assert_int_equal(ms_json_string(S("\"a\" "), out, sizeof(out)), -1);
	assert_int_equal(ms_json_string(S(" \"a\""), out, sizeof(out)), -1);
	assert_int_equal(ms_json_string(S("\"a\"\"b\""), out, sizeof(out)), -1);
	assert_int_equal(ms_json_string(S("\"a"), out, sizeof(out)), -1);
	assert_int_equal(ms_json_string(S("\""), out, sizeof(out)), -1);
	assert_int_equal(ms_json_string(S("\"\\uD800\""), out, sizeof(out)), -1);
	assert_int_equal(ms_json_string(S("\"\xc3\""), out, sizeof(out)), -1);
	assert_int_equal(ms_json_string(S("\"\x01\""), out, sizeof(out)), -1);
	assert_int_equal(ms_json_string((ms_str){ NULL, 0 }, out, sizeof(out)), -1);
}

/* Keys decoded and compared decoded: the same key spelled two ways is one
 * key, whether the spellings differ in escapes, surrogate pairs or case of
 * the hex digits. */
static void test_keys(void **state)
{
	static const char obj[] =
		"{\"stream\":1,\"str\\u0065am\":2,\"\\u00e9\":3,\"\xc3\xa9\":4,"
		"\"\\uD83D\\uDE00\":5,\"\\ud83d\\ude00\":6,\"a\\\"b\":7,\"a\\u0022b\":8,"
		"\"\":9,\"x\":10}";
	/* each member: 1 new, 0 a repeat of an earlier one */
	static const int want[] = { 1, 0, 1, 0, 1, 0, 1, 0, 1, 1 };
	ms_json_iter it;
	ms_json_keys ks;
	ms_str key, val;
	char out[16];
	size_t k = 0;

	(void)state;
	ms_json_keys_init(&ks);
	assert_true(ms_json_object_begin(&it, obj, sizeof(obj) - 1));
	while (ms_json_object_next(&it, &key, &val) > 0) {
		assert_true(k < sizeof(want) / sizeof(want[0]));
		assert_int_equal(ms_json_keys_add(&ks, key), want[k]);
		if (k == 1) {
			assert_int_equal(ms_json_key(key, out, sizeof(out)), 6);
			assert_memory_equal(out, "stream", 6);
			assert_int_equal(ms_json_key(key, out, 5), -1);
		}
		k++;
	}
	assert_int_equal(k, sizeof(want) / sizeof(want[0]));

	/* Full: the 65th key and any after it are not taken. */
	char many[64 * 8 + 16], *p = many;
	*p++ = '{';
	for (int i = 0; i < 65; i++)
		p += sprintf(p, "%s\"k%d\":0", i ? "," : "", i);
	p += sprintf(p, ",\"k\\u0031\":0}");
	ms_json_keys_init(&ks);
	assert_true(ms_json_object_begin(&it, many, (size_t)(p - many)));
	for (int i = 0; ms_json_object_next(&it, &key, &val) > 0; i++)
		assert_int_equal(ms_json_keys_add(&ks, key), i < 64 ? 1 : -1);
}

static void test_int(void **state)
{
	int64_t v = 42;

	(void)state;
	assert_true(ms_json_int(S("0"), &v));
	assert_int_equal(v, 0);
	assert_true(ms_json_int(S("-0"), &v));
	assert_int_equal(v, 0);
	assert_true(ms_json_int(S("7"), &v));
	assert_int_equal(v, 7);
	assert_true(ms_json_int(S("-123"), &v));
	assert_int_equal(v, -123);
	assert_true(ms_json_int(S("9223372036854775807"), &v));
	assert_true(v == INT64_MAX);
	assert_true(ms_json_int(S("-9223372036854775808"), &v));
	assert_true(v == INT64_MIN);

	v = 42;
	static const char *bad[] = {
		"", "-", "9223372036854775808", "-9223372036854775809",
		"99999999999999999999", "01", "-01", "1.0", "1e2", "1E2", "+1",
		" 1", "1 ", "\"1\"", "true", "0x1", "1-",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (ms_json_int((ms_str){ bad[i], strlen(bad[i]) }, &v))
			fail_msg("accepted int: %s", bad[i]);
	assert_false(ms_json_int((ms_str){ NULL, 0 }, &v));
	assert_int_equal(v, 42); /* untouched on failure */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_values),
		cmocka_unit_test(test_invalid_values),
		cmocka_unit_test(test_prefixes),
		cmocka_unit_test(test_depth),
		cmocka_unit_test(test_string_alignment),
		cmocka_unit_test(test_skip),
		cmocka_unit_test(test_object_iter),
		cmocka_unit_test(test_iter_depth),
		cmocka_unit_test(test_array_iter),
		cmocka_unit_test(test_string_decode),
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_int),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
