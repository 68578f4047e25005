/*
 * Unit tests for net/utf8.h: every invalid class (overlong, surrogate,
 * > U+10FFFF, bad lead, stray continuation, truncation), the Markus Kuhn
 * boundary cases, resumability at every split point, the ASCII word path at
 * every alignment, and an exhaustive comparison against a naive decoder for
 * all 1-3 byte strings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/utf8.h"

#define ACC MS_UTF8_ACCEPT
#define REJ MS_UTF8_REJECT

static uint32_t v(const char *s, size_t n)
{
	return ms_utf8_validate(ACC, (const uint8_t *)s, n);
}

#define V(lit) v(lit, sizeof(lit) - 1)

/* Classify a state: 0 complete, 1 inside a code point, 2 rejected. */
static int cls(uint32_t st)
{
	return st == ACC ? 0 : st == REJ ? 2 : 1;
}

/* Feed s split at every position (two calls) and byte by byte; every way
 * must agree with the one-shot result. */
static void check_splits(const uint8_t *s, size_t n, uint32_t want)
{
	uint32_t st;

	for (size_t i = 0; i <= n; i++) {
		st = ms_utf8_validate(ACC, s, i);
		st = ms_utf8_validate(st, s + i, n - i);
		assert_int_equal(cls(st), cls(want));
		if (cls(want) != 1)
			assert_int_equal(st, want);
	}
	st = ACC;
	for (size_t i = 0; i < n; i++)
		st = ms_utf8_validate(st, s + i, 1);
	assert_int_equal(cls(st), cls(want));
}

static void test_valid(void **state)
{
	assert_int_equal(V(""), ACC);
	assert_int_equal(V("hello, world"), ACC);
	assert_int_equal(v("\0", 1), ACC);
	assert_int_equal(V("\x7f"), ACC);
	/* Kuhn 2.1 first code point of each length */
	assert_int_equal(V("\xc2\x80"), ACC);         /* U+0080 */
	assert_int_equal(V("\xe0\xa0\x80"), ACC);     /* U+0800 */
	assert_int_equal(V("\xf0\x90\x80\x80"), ACC); /* U+10000 */
	/* Kuhn 2.2 last code point of each length */
	assert_int_equal(V("\xdf\xbf"), ACC);         /* U+07FF */
	assert_int_equal(V("\xef\xbf\xbf"), ACC);     /* U+FFFF */
	assert_int_equal(V("\xf4\x8f\xbf\xbf"), ACC); /* U+10FFFF */
	/* Kuhn 2.3 other boundaries */
	assert_int_equal(V("\xed\x9f\xbf"), ACC); /* U+D7FF */
	assert_int_equal(V("\xee\x80\x80"), ACC); /* U+E000 */
	assert_int_equal(V("\xef\xbf\xbd"), ACC); /* U+FFFD */
	assert_int_equal(V("\xef\xbf\xbe"), ACC); /* U+FFFE: noncharacter, valid */
	assert_int_equal(V("\xf1\x80\x80\x80"), ACC);
	assert_int_equal(V("\xf3\xbf\xbf\xbf"), ACC);
	assert_int_equal(V("\xec\xbf\xbf"), ACC);
	/* Kuhn 1: "κόσμε" */
	assert_int_equal(V("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"), ACC);
	assert_int_equal(V("Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!"), ACC);
}

static void test_overlong(void **state)
{
	/* Kuhn 4.1: "/" overlong in 2, 3, 4 bytes */
	assert_int_equal(V("\xc0\xaf"), REJ);
	assert_int_equal(V("\xe0\x80\xaf"), REJ);
	assert_int_equal(V("\xf0\x80\x80\xaf"), REJ);
	/* Kuhn 4.2: largest overlongs */
	assert_int_equal(V("\xc1\xbf"), REJ);
	assert_int_equal(V("\xe0\x9f\xbf"), REJ);
	assert_int_equal(V("\xf0\x8f\xbf\xbf"), REJ);
	/* Kuhn 4.3: overlong NUL */
	assert_int_equal(V("\xc0\x80"), REJ);
	assert_int_equal(V("\xe0\x80\x80"), REJ);
	assert_int_equal(V("\xf0\x80\x80\x80"), REJ);
	/* 5- and 6-byte forms are not UTF-8 at all */
	assert_int_equal(V("\xf8\x80\x80\x80\xaf"), REJ);
	assert_int_equal(V("\xfc\x80\x80\x80\x80\xaf"), REJ);
	/* rejected at the first byte that rules out every completion */
	assert_int_equal(V("\xe0\x80"), REJ);
	assert_int_equal(V("\xf0\x80"), REJ);
	assert_int_equal(V("\xc0"), REJ);
}

static void test_surrogates(void **state)
{
	/* Kuhn 5.1 single surrogates */
	assert_int_equal(V("\xed\xa0\x80"), REJ); /* U+D800 */
	assert_int_equal(V("\xed\xad\xbf"), REJ); /* U+DB7F */
	assert_int_equal(V("\xed\xae\x80"), REJ); /* U+DB80 */
	assert_int_equal(V("\xed\xaf\xbf"), REJ); /* U+DBFF */
	assert_int_equal(V("\xed\xb0\x80"), REJ); /* U+DC00 */
	assert_int_equal(V("\xed\xbe\x80"), REJ); /* U+DF80 */
	assert_int_equal(V("\xed\xbf\xbf"), REJ); /* U+DFFF */
	/* Kuhn 5.2 paired surrogates (CESU-8) */
	assert_int_equal(V("\xed\xa0\x80\xed\xb0\x80"), REJ);
	assert_int_equal(V("\xed\xaf\xbf\xed\xbf\xbf"), REJ);
	assert_int_equal(V("\xed\xa0"), REJ);
}

static void test_too_large(void **state)
{
	assert_int_equal(V("\xf4\x90\x80\x80"), REJ); /* U+110000 */
	assert_int_equal(V("\xf4\xbf\xbf\xbf"), REJ);
	assert_int_equal(V("\xf7\xbf\xbf\xbf"), REJ); /* U+1FFFFF */
	assert_int_equal(V("\xf4\x90"), REJ);
	for (int b = 0xf5; b <= 0xff; b++) {
		uint8_t s[4] = { (uint8_t)b, 0x80, 0x80, 0x80 };

		assert_int_equal(ms_utf8_validate(ACC, s, 1), REJ);
		assert_int_equal(ms_utf8_validate(ACC, s, 4), REJ);
	}
}

static void test_bad_bytes(void **state)
{
	/* Kuhn 3.1: unexpected continuation bytes */
	for (int b = 0x80; b <= 0xbf; b++) {
		uint8_t s[1] = { (uint8_t)b };

		assert_int_equal(ms_utf8_validate(ACC, s, 1), REJ);
	}
	assert_int_equal(V("a\x80"), REJ);
	assert_int_equal(V("\xc2\x80\x80"), REJ);
	assert_int_equal(V("\x80\xbf\x80\xbf"), REJ);
	/* Kuhn 3.2: lead bytes followed by a space */
	assert_int_equal(V("\xc2 "), REJ);
	assert_int_equal(V("\xe1 "), REJ);
	assert_int_equal(V("\xf1 "), REJ);
	assert_int_equal(V("\xc0"), REJ);
	assert_int_equal(V("\xc1"), REJ);
	assert_int_equal(V("\xfe"), REJ);
	assert_int_equal(V("\xff"), REJ);
	assert_int_equal(V("\xfe\xfe\xff\xff"), REJ);
	/* a lead byte interrupting a sequence */
	assert_int_equal(V("\xe1\x80\xc2\x80"), REJ);
}

static void test_truncated(void **state)
{
	/* Kuhn 3.3: sequences with the last byte missing are a valid prefix,
	 * not REJECT; the caller rejects them at the end of the text. */
	const char *t[] = {
		"\xc2", "\xdf", "\xe0\xa0", "\xe1", "\xe1\x80", "\xed\x9f",
		"\xef\xbf", "\xf0\x90", "\xf0\x90\x80", "\xf1", "\xf3\xbf\xbf",
		"\xf4\x8f\xbf", "abc\xe2\x82",
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		assert_int_equal(cls(v(t[i], strlen(t[i]))), 1);
	/* ...and anything but a continuation after them is REJECT */
	assert_int_equal(V("\xe2\x82" "a"), REJ);
	assert_int_equal(V("\xf0\x90\x80" "\xf0"), REJ);
	/* Kuhn 3.4: concatenated incomplete sequences */
	assert_int_equal(V("\xc0\xe0\x80\xf0\x80\x80\xf8\x80\x80\x80"), REJ);
	/* truncated then completed by the next call */
	uint32_t st = V("\xf0\x9f\x98");
	assert_int_equal(cls(st), 1);
	assert_int_equal(ms_utf8_validate(st, (const uint8_t *)"\x80", 1), ACC);
}

static void test_reject_sticky(void **state)
{
	assert_int_equal(ms_utf8_validate(REJ, (const uint8_t *)"abc", 3), REJ);
	assert_int_equal(ms_utf8_validate(REJ, NULL, 0), REJ);
	uint32_t st = V("\xff");
	assert_int_equal(ms_utf8_validate(st, (const uint8_t *)"aaaaaaaaaaaaaaaa", 16), REJ);
}

static void test_splits(void **state)
{
	static const char ok[] =
		"a\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80"
		"\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf xyz \xe2\x82\xac"
		"0123456789abcdef\xf0\x9f\x98\x80";
	check_splits((const uint8_t *)ok, sizeof(ok) - 1, ACC);

	static const char *bad[] = {
		"abc\xed\xa0\x80xyz", "0123456789\xc0\xaf", "\xf4\x90\x80\x80",
		"\xe0\x9f\xbfxyzghij", "12345678\x80", "\xf0\x8f\xbf\xbf",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		check_splits((const uint8_t *)bad[i], strlen(bad[i]), REJ);

	static const char part[] = "abcdefgh\xe2\x82\xac\xf0\x9f\x98";
	check_splits((const uint8_t *)part, sizeof(part) - 1, 1); /* any mid-code-point state */
}

/* The word-at-a-time path at every alignment and with the non-ASCII byte
 * at every position of the word. */
static void test_ascii_fast_path(void **state)
{
	uint8_t buf[96];

	for (size_t off = 0; off < 8; off++) {
		for (size_t pos = 0; pos < 64; pos++) {
			uint8_t *p = buf + off;

			memset(buf, 'x', sizeof(buf));
			assert_int_equal(ms_utf8_validate(ACC, p, 64), ACC);
			p[pos] = 0x80;
			assert_int_equal(ms_utf8_validate(ACC, p, 64), REJ);
			/* past the end: not looked at */
			assert_int_equal(ms_utf8_validate(ACC, p, pos), ACC);
			if (pos + 1 < 64) {
				p[pos] = 0xc3;
				p[pos + 1] = 0xa9;
				assert_int_equal(ms_utf8_validate(ACC, p, 64), ACC);
				assert_int_equal(cls(ms_utf8_validate(ACC, p, pos + 1)), 1);
			}
			p[pos] = 0xff;
			assert_int_equal(ms_utf8_validate(ACC, p, 64), REJ);
		}
	}
}

/* Naive reference: decode by arithmetic. 0 valid, 1 valid prefix, 2 bad. */
static bool cp_ok(const uint8_t *s, size_t k)
{
	static const uint32_t min[5] = { 0, 0, 0x80, 0x800, 0x10000 };
	uint32_t cp = s[0] & (0x7f >> k);

	for (size_t j = 1; j < k; j++) {
		if ((s[j] & 0xc0) != 0x80)
			return false;
		cp = cp << 6 | (s[j] & 0x3f);
	}
	return cp >= min[k] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
}

static int ref_check(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = s[i], t[4];
		size_t k, have;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0)
			k = 2;
		else if ((c & 0xf0) == 0xe0)
			k = 3;
		else if ((c & 0xf8) == 0xf0)
			k = 4;
		else
			return 2;
		have = n - i < k ? n - i : k;
		memcpy(t, s + i, have);
		if (have == k) {
			if (!cp_ok(t, k))
				return 2;
			i += k;
			continue;
		}
		/* A prefix is good if some completion is: the completions span
		 * a code point interval, so trying its ends and the edges of
		 * the special second-byte ranges is enough. */
		static const uint8_t tails[] = { 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf };
		for (size_t a = 0; a < sizeof(tails); a++) {
			t[have] = tails[a];
			for (size_t j = have + 1; j < k; j++)
				t[j] = 0x80;
			if (cp_ok(t, k))
				return 1;
			for (size_t j = have + 1; j < k; j++)
				t[j] = 0xbf;
			if (cp_ok(t, k))
				return 1;
		}
		return 2;
	}
	return 0;
}

static void test_exhaustive(void **state)
{
	uint8_t s[4];

	for (uint32_t x = 0; x < 256; x++) {
		s[0] = (uint8_t)x;
		assert_int_equal(cls(ms_utf8_validate(ACC, s, 1)), ref_check(s, 1));
	}
	for (uint32_t x = 0; x < 1u << 16; x++) {
		s[0] = (uint8_t)(x >> 8);
		s[1] = (uint8_t)x;
		assert_int_equal(cls(ms_utf8_validate(ACC, s, 2)), ref_check(s, 2));
	}
	for (uint32_t x = 0; x < 1u << 24; x++) {
		s[0] = (uint8_t)(x >> 16);
		s[1] = (uint8_t)(x >> 8);
		s[2] = (uint8_t)x;
		if (cls(ms_utf8_validate(ACC, s, 3)) != ref_check(s, 3))
			fail_msg("mismatch at %02x %02x %02x", s[0], s[1], s[2]);
	}
	/* 4-byte leads with every second and third byte and a sample of
	 * fourth bytes around the continuation range edges. */
	static const uint8_t last[] = { 0x00, 0x7f, 0x80, 0x8f, 0x90, 0xbf, 0xc0, 0xff };
	for (uint32_t x = 0xf0 << 16; x < 0xf8 << 16; x++) {
		s[0] = (uint8_t)(x >> 16);
		s[1] = (uint8_t)(x >> 8);
		s[2] = (uint8_t)x;
		for (size_t j = 0; j < sizeof(last); j++) {
			s[3] = last[j];
			if (cls(ms_utf8_validate(ACC, s, 4)) != ref_check(s, 4))
				fail_msg("mismatch at %02x %02x %02x %02x",
					 s[0], s[1], s[2], s[3]);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_overlong),
		cmocka_unit_test(test_surrogates),
		cmocka_unit_test(test_too_large),
		cmocka_unit_test(test_bad_bytes),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_reject_sticky),
		cmocka_unit_test(test_splits),
		cmocka_unit_test(test_ascii_fast_path),
		cmocka_unit_test(test_exhaustive),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
