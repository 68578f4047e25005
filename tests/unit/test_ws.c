/*
 * Unit tests for net/ws.h: every framing rule ms_ws_next enforces and the
 * close code it reports, 7/16/64-bit lengths, fragmentation with control
 * frames in between, UTF-8 across fragments, the message size limit found
 * from the header alone, split-independence (the same stream cut at every
 * byte gives the same events), unmasking at every offset and alignment, the
 * header builder against ms_ws_client_peek, close payloads and the RFC 6455
 * accept key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/ws.h"

#define MAXMSG (1u << 20)

static const uint8_t key[4] = { 0x37, 0xfa, 0x21, 0x3d };

/* A client frame: header from ms_ws_header, payload masked with a plain
 * byte loop so the test does not trust ms_ws_unmask. b0 is FIN|RSV|opcode
 * verbatim so tests can set any bit. */
static size_t frame(uint8_t *out, uint8_t b0, const void *pl, size_t n)
{
	size_t h = ms_ws_header(out, false, 0, n, key);

	out[0] = b0;
	for (size_t i = 0; i < n; i++)
		out[h + i] = ((const uint8_t *)pl)[i] ^ key[i & 3];
	return h + n;
}

#define FIN 0x80
#define TEXT (FIN | MS_WS_OP_TEXT)
#define BIN (FIN | MS_WS_OP_BINARY)

static size_t next1(uint8_t *buf, size_t len, ms_ws_event *ev)
{
	ms_ws_rx rx = { 0 };

	return ms_ws_next(&rx, buf, len, MAXMSG, ev);
}

static void expect_error(uint8_t *buf, size_t len, ms_ws_rx *rx, size_t max,
			 uint16_t code)
{
	ms_ws_event ev;
	ms_ws_rx zero = { 0 };

	assert_int_equal(ms_ws_next(rx ? rx : &zero, buf, len, max, &ev), 0);
	assert_int_equal(ev.kind, MS_WS_EV_ERROR);
	assert_int_equal(ev.close_code, code);
}

static void test_rfc_example(void **state)
{
	/* RFC 6455 §5.7: a single-frame masked text message "Hello" */
	uint8_t b[] = { 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58 };
	ms_ws_event ev;

	assert_int_equal(next1(b, sizeof(b), &ev), sizeof(b));
	assert_int_equal(ev.kind, MS_WS_EV_MESSAGE);
	assert_int_equal(ev.opcode, MS_WS_OP_TEXT);
	assert_int_equal(ev.len, 5);
	assert_ptr_equal(ev.data, b + 6);
	assert_memory_equal(ev.data, "Hello", 5);

	uint8_t c[64];
	size_t n = frame(c, TEXT, "Hello", 5);
	assert_int_equal(n, sizeof(b));
	assert_memory_equal(c, b, 6);
}

static void test_need_more(void **state)
{
	uint8_t b[300];
	uint8_t pl[200];
	ms_ws_event ev;
	size_t n;

	memset(pl, 'a', sizeof(pl));
	n = frame(b, TEXT, pl, 5);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(next1(b, i, &ev), 0);
		assert_int_equal(ev.kind, MS_WS_EV_NEED_MORE);
		assert_int_equal(ev.need, i < 6 ? 0 : n);
	}
	n = frame(b, BIN, pl, 200); /* 16-bit length: header is 8 bytes */
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(next1(b, i, &ev), 0);
		assert_int_equal(ev.kind, MS_WS_EV_NEED_MORE);
		assert_int_equal(ev.need, i < 8 ? 0 : n);
	}
	assert_int_equal(next1(b, n, &ev), n);
	assert_int_equal(ev.kind, MS_WS_EV_MESSAGE);
}

static void check_len(size_t n, size_t hl)
{
	uint8_t *b = malloc(n + 14), *pl = calloc(1, n + 1);
	ms_ws_event ev;

	for (size_t i = 0; i < n; i++)
		pl[i] = (uint8_t)(i * 7);
	assert_int_equal(frame(b, BIN, pl, n), hl + n);
	assert_int_equal(ms_ws_header_len(n) + 4, hl);
	assert_int_equal(next1(b, hl + n, &ev), hl + n);
	assert_int_equal(ev.kind, MS_WS_EV_MESSAGE);
	assert_int_equal(ev.opcode, MS_WS_OP_BINARY);
	assert_int_equal(ev.len, n);
	assert_ptr_equal(ev.data, b + hl);
	assert_memory_equal(ev.data, pl, n);
	free(b);
	free(pl);
}

static void test_lengths(void **state)
{
	check_len(0, 6);
	check_len(1, 6);
	check_len(125, 6);
	check_len(126, 8);
	check_len(127, 8);
	check_len(65535, 8);
	check_len(65536, 14);
	check_len(70001, 14);
}

static void test_nonminimal_length(void **state)
{
	uint8_t b[32] = { BIN, 0x80 | 126, 0, 125 }; /* 125 in 16 bits */

	expect_error(b, 8, NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL);
	expect_error(b, 4, NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL); /* no mask yet */
	b[3] = 0;
	expect_error(b, 8, NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL); /* 0 in 16 bits */

	/* 65535 in 64 bits */
	uint8_t c[32] = { BIN, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	expect_error(c, 14, NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL);
	c[8] = 0;
	c[9] = 5;
	expect_error(c, 14, NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL);

	/* 64-bit length with the top bit set: 1002 even with no limit */
	uint8_t d[32] = { BIN, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1 };
	expect_error(d, 14, NULL, SIZE_MAX, MS_WS_CLOSE_PROTOCOL);
	d[2] = 0xff;
	expect_error(d, 14, NULL, SIZE_MAX, MS_WS_CLOSE_PROTOCOL);
	d[2] = 0x7f; /* legal but huge: too big */
	expect_error(d, 14, NULL, MAXMSG, MS_WS_CLOSE_TOO_BIG);
	expect_error(d, 14, NULL, SIZE_MAX, MS_WS_CLOSE_TOO_BIG);
}

static void test_unmasked(void **state)
{
	uint8_t b[] = { 0x81, 0x05, 'H', 'e', 'l', 'l', 'o' };
	ms_ws_event ev;

	expect_error(b, sizeof(b), NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL);
	expect_error(b, 2, NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL); /* found at once */
	assert_int_equal(next1(b, 1, &ev), 0);
	assert_int_equal(ev.kind, MS_WS_EV_NEED_MORE);
	uint8_t p[] = { 0x89, 0x00 };
	expect_error(p, sizeof(p), NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL);
}

static void test_rsv_and_opcodes(void **state)
{
	uint8_t b[32];

	for (int bit = 0x10; bit <= 0x40; bit <<= 1) {
		frame(b, (uint8_t)(TEXT | bit), "x", 1);
		expect_error(b, 7, NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL);
		expect_error(b, 2, NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL);
		frame(b, (uint8_t)(FIN | MS_WS_OP_PING | bit), "", 0);
		expect_error(b, 6, NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL);
	}
	for (int op = 0; op < 16; op++) {
		bool reserved = (op >= 3 && op <= 7) || op >= 0xb;

		frame(b, (uint8_t)(FIN | op), "", 0);
		if (reserved) {
			expect_error(b, 6, NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL);
			frame(b, (uint8_t)op, "", 0); /* non-FIN too */
			expect_error(b, 6, NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL);
		}
	}
}

static void test_control_rules(void **state)
{
	uint8_t b[300], pl[126];
	ms_ws_event ev;
	const uint8_t ops[] = { MS_WS_OP_PING, MS_WS_OP_PONG, MS_WS_OP_CLOSE };

	memset(pl, 'c', sizeof(pl));
	pl[0] = 0x03; /* close code 1000 for the close case */
	pl[1] = 0xe8;
	for (size_t i = 0; i < sizeof(ops); i++) {
		size_t n = frame(b, FIN | ops[i], pl, 125);

		assert_int_equal(next1(b, n, &ev), n);
		assert_int_not_equal(ev.kind, MS_WS_EV_ERROR);
		n = frame(b, FIN | ops[i], pl, 126); /* 16-bit length */
		expect_error(b, n, NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL);
		expect_error(b, 2, NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL);
		n = frame(b, ops[i], pl, 2); /* not FIN */
		expect_error(b, n, NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL);
	}
	/* control frames do not count against max_message */
	size_t n = frame(b, FIN | MS_WS_OP_PING, pl, 100);
	ms_ws_rx rx = { 0 };
	assert_int_equal(ms_ws_next(&rx, b, n, 10, &ev), n);
	assert_int_equal(ev.kind, MS_WS_EV_PING);
	assert_int_equal(ev.len, 100);
}

static void test_continuation_rules(void **state)
{
	uint8_t b[64];
	ms_ws_rx rx = { 0 };
	ms_ws_event ev;
	size_t n;

	/* continuation with nothing open, FIN or not */
	n = frame(b, FIN | MS_WS_OP_CONT, "x", 1);
	expect_error(b, n, NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL);
	n = frame(b, MS_WS_OP_CONT, "x", 1);
	expect_error(b, n, NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL);

	/* a new data frame while a message is open */
	n = frame(b, MS_WS_OP_TEXT, "ab", 2);
	assert_int_equal(ms_ws_next(&rx, b, n, MAXMSG, &ev), n);
	assert_int_equal(ev.kind, MS_WS_EV_FRAGMENT);
	assert_false(ev.fin);
	ms_ws_rx saved = rx;
	n = frame(b, TEXT, "x", 1);
	expect_error(b, n, &rx, MAXMSG, MS_WS_CLOSE_PROTOCOL);
	rx = saved;
	n = frame(b, BIN, "x", 1);
	expect_error(b, n, &rx, MAXMSG, MS_WS_CLOSE_PROTOCOL);
	rx = saved;
	n = frame(b, MS_WS_OP_BINARY, "x", 1);
	expect_error(b, n, &rx, MAXMSG, MS_WS_CLOSE_PROTOCOL);

	/* and after the message ends, continuation is an error again */
	rx = saved;
	n = frame(b, FIN | MS_WS_OP_CONT, "c", 1);
	assert_int_equal(ms_ws_next(&rx, b, n, MAXMSG, &ev), n);
	assert_int_equal(ev.kind, MS_WS_EV_FRAGMENT);
	assert_true(ev.fin);
	assert_int_equal(rx.msg_op, 0);
	assert_int_equal(rx.msg_len, 0);
	n = frame(b, FIN | MS_WS_OP_CONT, "c", 1);
	expect_error(b, n, &rx, MAXMSG, MS_WS_CLOSE_PROTOCOL);
}

struct step {
	ms_ws_ev_kind kind;
	uint8_t op;
	bool fin;
	const char *data;
};

static void test_fragmentation_with_ping(void **state)
{
	uint8_t b[256];
	size_t n = 0;

	n += frame(b + n, MS_WS_OP_TEXT, "Hel", 3);
	n += frame(b + n, FIN | MS_WS_OP_PING, "p1", 2);
	n += frame(b + n, MS_WS_OP_CONT, "lo ", 3);
	n += frame(b + n, FIN | MS_WS_OP_PONG, "", 0);
	n += frame(b + n, MS_WS_OP_CONT, "", 0); /* empty fragment is fine */
	n += frame(b + n, FIN | MS_WS_OP_CONT, "world", 5);
	n += frame(b + n, MS_WS_OP_BINARY, "\xff", 1);
	n += frame(b + n, FIN | MS_WS_OP_CONT, "\xfe", 1);

	const struct step want[] = {
		{ MS_WS_EV_FRAGMENT, MS_WS_OP_TEXT, false, "Hel" },
		{ MS_WS_EV_PING, 0, false, "p1" },
		{ MS_WS_EV_FRAGMENT, MS_WS_OP_TEXT, false, "lo " },
		{ MS_WS_EV_PONG, 0, false, "" },
		{ MS_WS_EV_FRAGMENT, MS_WS_OP_TEXT, false, "" },
		{ MS_WS_EV_FRAGMENT, MS_WS_OP_TEXT, true, "world" },
		{ MS_WS_EV_FRAGMENT, MS_WS_OP_BINARY, false, "\xff" },
		{ MS_WS_EV_FRAGMENT, MS_WS_OP_BINARY, true, "\xfe" },
	};
	ms_ws_rx rx = { 0 };
	size_t off = 0;

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		ms_ws_event ev;
		size_t c = ms_ws_next(&rx, b + off, n - off, MAXMSG, &ev);

		assert_true(c > 0);
		assert_int_equal(ev.kind, want[i].kind);
		if (ev.kind == MS_WS_EV_FRAGMENT) {
			assert_int_equal(ev.opcode, want[i].op);
			assert_int_equal(ev.fin, want[i].fin);
		}
		assert_int_equal(ev.len, strlen(want[i].data));
		assert_memory_equal(ev.data, want[i].data, ev.len);
		off += c;
	}
	assert_int_equal(off, n);
	assert_int_equal(rx.msg_op, 0);
}

static void test_too_big(void **state)
{
	uint8_t b[256], pl[100];
	ms_ws_rx rx = { 0 };
	ms_ws_event ev;
	size_t n;

	memset(pl, 'z', sizeof(pl));
	/* exactly at the limit is fine, one more is not */
	n = frame(b, TEXT, pl, 10);
	assert_int_equal(ms_ws_next(&rx, b, n, 10, &ev), n);
	n = frame(b, TEXT, pl, 11);
	expect_error(b, n, NULL, 10, MS_WS_CLOSE_TOO_BIG);
	expect_error(b, 6, NULL, 10, MS_WS_CLOSE_TOO_BIG); /* header alone */
	expect_error(b, n, NULL, 0, MS_WS_CLOSE_TOO_BIG);

	/* a 16-bit length header, payload never sent */
	n = frame(b, BIN, pl, 100);
	expect_error(b, 8, NULL, 99, MS_WS_CLOSE_TOO_BIG);
	/* a 64-bit one announcing 1 TiB */
	uint8_t g[14] = { BIN, 0x80 | 127, 0, 0, 1, 0, 0, 0, 0, 0 };
	expect_error(g, 14, NULL, MAXMSG, MS_WS_CLOSE_TOO_BIG);
	/* 2^32 does not fit msg_len even when max_message allows it */
	g[0] = MS_WS_OP_BINARY;
	expect_error(g, 14, NULL, SIZE_MAX, MS_WS_CLOSE_TOO_BIG);

	/* fragments add up: 4 + 4 + 2 = 10 passes, a further byte fails at
	 * its header */
	memset(&rx, 0, sizeof(rx));
	n = frame(b, MS_WS_OP_BINARY, pl, 4);
	assert_int_equal(ms_ws_next(&rx, b, n, 10, &ev), n);
	n = frame(b, MS_WS_OP_CONT, pl, 4);
	assert_int_equal(ms_ws_next(&rx, b, n, 10, &ev), n);
	assert_int_equal(rx.msg_len, 8);
	n = frame(b, FIN | MS_WS_OP_PING, pl, 50); /* control: not counted */
	assert_int_equal(ms_ws_next(&rx, b, n, 10, &ev), n);
	ms_ws_rx saved = rx;
	n = frame(b, MS_WS_OP_CONT, pl, 2);
	assert_int_equal(ms_ws_next(&rx, b, n, 10, &ev), n);
	n = frame(b, FIN | MS_WS_OP_CONT, pl, 1);
	expect_error(b, 6, &rx, 10, MS_WS_CLOSE_TOO_BIG);
	rx = saved;
	n = frame(b, FIN | MS_WS_OP_CONT, pl, 3);
	expect_error(b, 6, &rx, 10, MS_WS_CLOSE_TOO_BIG);
	rx = saved;
	n = frame(b, FIN | MS_WS_OP_CONT, pl, 2);
	assert_int_equal(ms_ws_next(&rx, b, n, 10, &ev), n);
	assert_true(ev.fin);
	/* the count restarts with the next message */
	n = frame(b, TEXT, pl, 10);
	assert_int_equal(ms_ws_next(&rx, b, n, 10, &ev), n);
}

static void test_utf8_text(void **state)
{
	uint8_t b[128];
	ms_ws_rx rx = { 0 };
	ms_ws_event ev;
	size_t n;

	n = frame(b, TEXT, "ok \xe2\x82\xac", 6);
	assert_int_equal(next1(b, n, &ev), n);
	n = frame(b, TEXT, "bad \xc0\xaf", 6);
	expect_error(b, n, NULL, MAXMSG, MS_WS_CLOSE_INVALID_DATA);
	n = frame(b, TEXT, "\xed\xa0\x80", 3);
	expect_error(b, n, NULL, MAXMSG, MS_WS_CLOSE_INVALID_DATA);
	n = frame(b, TEXT, "trunc \xe2\x82", 8); /* unfinished at FIN */
	expect_error(b, n, NULL, MAXMSG, MS_WS_CLOSE_INVALID_DATA);
	n = frame(b, BIN, "\xc0\xaf\xff", 3); /* binary is not checked */
	assert_int_equal(next1(b, n, &ev), n);
	assert_int_equal(ev.kind, MS_WS_EV_MESSAGE);

	/* a code point split across fragments, at each of its bytes */
	static const char euro[] = "\xf0\x9f\x98\x80";
	for (size_t cut = 0; cut <= 4; cut++) {
		memset(&rx, 0, sizeof(rx));
		n = frame(b, MS_WS_OP_TEXT, euro, cut);
		assert_int_equal(ms_ws_next(&rx, b, n, MAXMSG, &ev), n);
		assert_int_equal(ev.kind, MS_WS_EV_FRAGMENT);
		n = frame(b, FIN | MS_WS_OP_CONT, euro + cut, 4 - cut);
		assert_int_equal(ms_ws_next(&rx, b, n, MAXMSG, &ev), n);
		assert_int_equal(ev.kind, MS_WS_EV_FRAGMENT);
		assert_true(ev.fin);
		assert_int_equal(rx.utf8, 0);
	}

	/* invalid in the first fragment: reported there, not at FIN */
	memset(&rx, 0, sizeof(rx));
	n = frame(b, MS_WS_OP_TEXT, "ab\xff", 3);
	expect_error(b, n, &rx, MAXMSG, MS_WS_CLOSE_INVALID_DATA);
	/* invalid only across the boundary */
	memset(&rx, 0, sizeof(rx));
	n = frame(b, MS_WS_OP_TEXT, "ab\xe2", 3);
	assert_int_equal(ms_ws_next(&rx, b, n, MAXMSG, &ev), n);
	n = frame(b, MS_WS_OP_CONT, "x", 1);
	expect_error(b, n, &rx, MAXMSG, MS_WS_CLOSE_INVALID_DATA);
	/* truncated at the final, empty fragment */
	memset(&rx, 0, sizeof(rx));
	n = frame(b, MS_WS_OP_TEXT, "ab\xe2\x82", 4);
	assert_int_equal(ms_ws_next(&rx, b, n, MAXMSG, &ev), n);
	n = frame(b, FIN | MS_WS_OP_CONT, "", 0);
	expect_error(b, n, &rx, MAXMSG, MS_WS_CLOSE_INVALID_DATA);
	/* a binary message's fragments are never checked */
	memset(&rx, 0, sizeof(rx));
	n = frame(b, MS_WS_OP_BINARY, "ab\xe2", 3);
	assert_int_equal(ms_ws_next(&rx, b, n, MAXMSG, &ev), n);
	n = frame(b, FIN | MS_WS_OP_CONT, "\xff", 1);
	assert_int_equal(ms_ws_next(&rx, b, n, MAXMSG, &ev), n);
}

static void test_close_frames(void **state)
{
	uint8_t b[256], pl[130];
	ms_ws_event ev;
	size_t n;

	n = frame(b, FIN | MS_WS_OP_CLOSE, "", 0);
	assert_int_equal(next1(b, n, &ev), n);
	assert_int_equal(ev.kind, MS_WS_EV_CLOSE);
	assert_int_equal(ev.close_code, MS_WS_CLOSE_NO_STATUS);
	assert_int_equal(ev.len, 0);

	n = frame(b, FIN | MS_WS_OP_CLOSE, "\x03", 1);
	expect_error(b, n, NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL);

	n = frame(b, FIN | MS_WS_OP_CLOSE, "\x03\xe8", 2);
	assert_int_equal(next1(b, n, &ev), n);
	assert_int_equal(ev.kind, MS_WS_EV_CLOSE);
	assert_int_equal(ev.close_code, 1000);
	assert_int_equal(ev.len, 0);

	n = frame(b, FIN | MS_WS_OP_CLOSE, "\x0f\xa0" "bye \xe2\x82\xac", 9);
	assert_int_equal(next1(b, n, &ev), n);
	assert_int_equal(ev.kind, MS_WS_EV_CLOSE);
	assert_int_equal(ev.close_code, 4000);
	assert_int_equal(ev.len, 7);
	assert_memory_equal(ev.data, "bye \xe2\x82\xac", 7);

	n = frame(b, FIN | MS_WS_OP_CLOSE, "\x03\xe8" "\xc0\xaf", 4);
	expect_error(b, n, NULL, MAXMSG, MS_WS_CLOSE_INVALID_DATA);
	n = frame(b, FIN | MS_WS_OP_CLOSE, "\x03\xe8" "\xe2\x82", 4);
	expect_error(b, n, NULL, MAXMSG, MS_WS_CLOSE_INVALID_DATA);

	/* every code from 0 to 5999 */
	for (unsigned c = 0; c < 6000; c++) {
		uint8_t p2[2] = { (uint8_t)(c >> 8), (uint8_t)c };

		n = frame(b, FIN | MS_WS_OP_CLOSE, p2, 2);
		if (ms_ws_close_code_valid((uint16_t)c)) {
			assert_int_equal(next1(b, n, &ev), n);
			assert_int_equal(ev.close_code, c);
		} else {
			expect_error(b, n, NULL, MAXMSG, MS_WS_CLOSE_PROTOCOL);
		}
	}
	/* 125 bytes: the largest close */
	memset(pl, 'r', sizeof(pl));
	pl[0] = 0x03;
	pl[1] = 0xe9;
	n = frame(b, FIN | MS_WS_OP_CLOSE, pl, 125);
	assert_int_equal(next1(b, n, &ev), n);
	assert_int_equal(ev.close_code, 1001);
	assert_int_equal(ev.len, 123);

	/* a close in the middle of a fragmented message is allowed */
	ms_ws_rx rx = { 0 };
	n = frame(b, MS_WS_OP_TEXT, "a", 1);
	assert_int_equal(ms_ws_next(&rx, b, n, MAXMSG, &ev), n);
	n = frame(b, FIN | MS_WS_OP_CLOSE, "", 0);
	assert_int_equal(ms_ws_next(&rx, b, n, MAXMSG, &ev), n);
	assert_int_equal(ev.kind, MS_WS_EV_CLOSE);
}

static void test_close_code_valid(void **state)
{
	const unsigned ok[] = { 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
				1011, 3000, 3999, 4000, 4999 };
	const unsigned bad[] = { 0, 1, 999, 1004, 1005, 1006, 1012, 1013, 1014,
				 1015, 1016, 1100, 2000, 2999, 5000, 65535 };

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		assert_true(ms_ws_close_code_valid((uint16_t)ok[i]));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(ms_ws_close_code_valid((uint16_t)bad[i]));
}

static void test_close_payload(void **state)
{
	uint8_t out[128];
	char reason[300];
	size_t n;

	n = ms_ws_close_payload(out, 1000, NULL);
	assert_int_equal(n, 2);
	assert_memory_equal(out, "\x03\xe8", 2);
	n = ms_ws_close_payload(out, 4001, "kicked");
	assert_int_equal(n, 8);
	assert_memory_equal(out, "\x0f\xa1kicked", 8);
	assert_int_equal(ms_ws_close_payload(out, 0, "x"), 0);
	assert_int_equal(ms_ws_close_payload(out, MS_WS_CLOSE_NO_STATUS, NULL), 0);

	memset(reason, 'a', 200);
	reason[200] = 0;
	assert_int_equal(ms_ws_close_payload(out, 1001, reason), 125);

	/* 2-byte characters: 123 would cut one, so 122 */
	for (int i = 0; i < 100; i++)
		memcpy(reason + 2 * i, "\xc3\xa9", 2);
	reason[200] = 0;
	n = ms_ws_close_payload(out, 1001, reason);
	assert_int_equal(n, 2 + 122);

	/* the result parses back as a valid close */
	uint8_t b[200];
	ms_ws_event ev;
	size_t f = frame(b, FIN | MS_WS_OP_CLOSE, out, n);
	assert_int_equal(next1(b, f, &ev), f);
	assert_int_equal(ev.kind, MS_WS_EV_CLOSE);
	assert_int_equal(ev.close_code, 1001);
	/* 4-byte characters, each cut position */
	for (int shift = 0; shift < 4; shift++) {
		memset(reason, 'a', (size_t)shift);
		for (int i = 0; i < 40; i++)
			memcpy(reason + shift + 4 * i, "\xf0\x9f\x98\x80", 4);
		reason[shift + 160] = 0;
		n = ms_ws_close_payload(out, 1000, reason);
		assert_true(n <= 125 && n >= 122);
		f = frame(b, FIN | MS_WS_OP_CLOSE, out, n);
		assert_int_equal(next1(b, f, &ev), f);
		assert_int_equal(ev.kind, MS_WS_EV_CLOSE);
	}
}

static void test_unmask(void **state)
{
	uint8_t buf[128], ref[128];
	const uint8_t m[4] = { 0xa1, 0xb2, 0xc3, 0xd4 };

	for (size_t align = 0; align < 8; align++)
		for (size_t off = 0; off < 8; off++)
			for (size_t n = 0; n <= 64; n++) {
				for (size_t i = 0; i < sizeof(buf); i++)
					buf[i] = ref[i] = (uint8_t)(i * 31 + 7);
				for (size_t i = 0; i < n; i++)
					ref[align + i] ^= m[(off + i) & 3];
				ms_ws_unmask(buf + align, n, m, off);
				assert_memory_equal(buf, ref, sizeof(buf));
			}
	/* masking twice restores the data; split at any point is the same
	 * as one call */
	uint8_t one[100], two[100];
	for (size_t i = 0; i < 100; i++)
		one[i] = two[i] = (uint8_t)i;
	ms_ws_unmask(one, 100, m, 0);
	for (size_t cut = 0; cut <= 100; cut++) {
		uint8_t t[100];

		memcpy(t, two, 100);
		ms_ws_unmask(t, cut, m, 0);
		ms_ws_unmask(t + cut, 100 - cut, m, cut);
		assert_memory_equal(t, one, 100);
	}
	ms_ws_unmask(one, 100, m, 0);
	assert_memory_equal(one, two, 100);
}

static void test_accept_key(void **state)
{
	char out[29];
	const char *k = "dGhlIHNhbXBsZSBub25jZQ==";

	memset(out, 'X', sizeof(out));
	ms_ws_accept_key(k, strlen(k), out);
	assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	/* only key_len bytes are used */
	ms_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==trailing", 24, out);
	assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_header_roundtrip(void **state)
{
	const uint64_t lens[] = { 0, 1, 125, 126, 127, 65535, 65536, 1u << 20,
				  UINT32_MAX, 1ull << 40, (1ull << 62) };
	const uint8_t ops[] = { MS_WS_OP_TEXT, MS_WS_OP_BINARY, MS_WS_OP_CONT };
	uint8_t b[MS_WS_MAX_HEADER];

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		for (size_t o = 0; o < sizeof(ops); o++) {
			for (int fin = 0; fin < 2; fin++) {
				size_t hl, got_hl;
				uint8_t op;
				bool f;
				uint64_t pl;

				hl = ms_ws_header(b, fin, ops[o], lens[i], NULL);
				assert_int_equal(hl, ms_ws_header_len(lens[i]));
				long t = ms_ws_client_peek(b, hl, &got_hl, &op, &f, &pl);
				assert_int_equal(t, (long)(hl + lens[i]));
				assert_int_equal(got_hl, hl);
				assert_int_equal(op, ops[o]);
				assert_int_equal(f, fin);
				assert_int_equal(pl, lens[i]);
				for (size_t k = 0; k < hl; k++)
					assert_int_equal(ms_ws_client_peek(b, k, &got_hl, &op, &f, &pl), 0);
				/* masked: a server never sends that */
				hl = ms_ws_header(b, fin, ops[o], lens[i], key);
				assert_int_equal(hl, ms_ws_header_len(lens[i]) + 4);
				assert_memory_equal(b + hl - 4, key, 4);
				assert_int_equal(ms_ws_client_peek(b, hl, &got_hl, &op, &f, &pl), -1);
			}
		}
	}
	/* control frames */
	size_t hl, got_hl;
	uint8_t op;
	bool f;
	uint64_t pl;
	hl = ms_ws_header(b, true, MS_WS_OP_CLOSE, 2, NULL);
	assert_int_equal(ms_ws_client_peek(b, hl, &got_hl, &op, &f, &pl), 4);
	assert_int_equal(op, MS_WS_OP_CLOSE);
	hl = ms_ws_header(b, true, MS_WS_OP_PING, 126, NULL);
	assert_int_equal(ms_ws_client_peek(b, hl, &got_hl, &op, &f, &pl), -1);
	hl = ms_ws_header(b, false, MS_WS_OP_PONG, 0, NULL);
	assert_int_equal(ms_ws_client_peek(b, hl, &got_hl, &op, &f, &pl), -1);
	/* malformed server frames */
	const uint8_t rsv[] = { 0xc1, 0x00 };
	assert_int_equal(ms_ws_client_peek(rsv, 2, &got_hl, &op, &f, &pl), -1);
	const uint8_t resop[] = { 0x83, 0x00 };
	assert_int_equal(ms_ws_client_peek(resop, 2, &got_hl, &op, &f, &pl), -1);
	const uint8_t nonmin[] = { 0x82, 126, 0, 5 };
	assert_int_equal(ms_ws_client_peek(nonmin, 4, &got_hl, &op, &f, &pl), -1);
	const uint8_t nonmin64[] = { 0x82, 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	assert_int_equal(ms_ws_client_peek(nonmin64, 10, &got_hl, &op, &f, &pl), -1);
	const uint8_t msb[] = { 0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0 };
	assert_int_equal(ms_ws_client_peek(msb, 10, &got_hl, &op, &f, &pl), -1);
	const uint8_t top[] = { 0x82, 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	assert_int_equal(ms_ws_client_peek(top, 10, &got_hl, &op, &f, &pl), -1);
}

/* ---- split independence ------------------------------------------------ */

struct rec {
	ms_ws_ev_kind kind;
	uint8_t op;
	bool fin;
	uint16_t code;
	size_t len;
	uint64_t hash;
};

static uint64_t fnv(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

/* Feed stream[0..n) like a connection: bytes arrive in chunks cut at
 * cuts[] (ascending), are appended to a flat buffer, and ms_ws_next runs
 * until it wants more; consumed frames are shifted out. Returns the number
 * of events recorded (NEED_MORE is not an event). */
static size_t feed(const uint8_t *stream, size_t n, const size_t *cuts,
		   size_t ncuts, size_t max, struct rec *out, size_t maxrec)
{
	uint8_t *buf = malloc(n ? n : 1);
	ms_ws_rx rx = { 0 };
	size_t have = 0, off = 0, nrec = 0;

	for (size_t c = 0; c <= ncuts; c++) {
		size_t end = c < ncuts ? cuts[c] : n;

		memcpy(buf + have, stream + off, end - off);
		have += end - off;
		off = end;
		for (;;) {
			ms_ws_event ev;
			size_t used = ms_ws_next(&rx, buf, have, max, &ev);

			assert_true(used <= have);
			if (ev.kind == MS_WS_EV_NEED_MORE) {
				assert_int_equal(used, 0);
				assert_true(ev.need == 0 || ev.need > have);
				break;
			}
			assert_true(nrec < maxrec);
			out[nrec] = (struct rec){ ev.kind, ev.opcode, ev.fin,
						  ev.close_code, ev.len, 0 };
			if (ev.kind == MS_WS_EV_ERROR) {
				nrec++;
				free(buf);
				return nrec;
			}
			assert_true(used > 0);
			assert_true(ev.data >= buf && ev.data + ev.len <= buf + used);
			out[nrec++].hash = fnv(ev.data, ev.len);
			memmove(buf, buf + used, have - used);
			have -= used;
		}
	}
	free(buf);
	return nrec;
}

static void assert_same(const struct rec *a, size_t na, const struct rec *b, size_t nb)
{
	assert_int_equal(na, nb);
	for (size_t i = 0; i < na; i++) {
		assert_int_equal(a[i].kind, b[i].kind);
		assert_int_equal(a[i].op, b[i].op);
		assert_int_equal(a[i].fin, b[i].fin);
		assert_int_equal(a[i].code, b[i].code);
		assert_int_equal(a[i].len, b[i].len);
		assert_true(a[i].hash == b[i].hash);
	}
}

static void check_all_splits(const uint8_t *s, size_t n, size_t max,
			     const struct rec *want, size_t nwant)
{
	struct rec got[64];
	size_t ng, cuts[2];

	ng = feed(s, n, NULL, 0, max, got, 64);
	assert_same(got, ng, want, nwant);
	for (size_t i = 0; i <= n; i++) {
		cuts[0] = i;
		ng = feed(s, n, cuts, 1, max, got, 64);
		assert_same(got, ng, want, nwant);
	}
	/* two cuts, on a coarser grid to keep it quick */
	for (size_t i = 0; i <= n; i += 3)
		for (size_t j = i; j <= n; j += 5) {
			cuts[0] = i;
			cuts[1] = j;
			ng = feed(s, n, cuts, 2, max, got, 64);
			assert_same(got, ng, want, nwant);
		}
	/* byte by byte */
	size_t *all = malloc(n * sizeof(*all) + 1);
	for (size_t i = 0; i < n; i++)
		all[i] = i;
	ng = feed(s, n, all, n, max, got, 64);
	assert_same(got, ng, want, nwant);
	free(all);
}

#define H(s) fnv((const uint8_t *)(s), sizeof(s) - 1)

static void test_split_stream(void **state)
{
	uint8_t s[1024], big[300];
	size_t n = 0;

	memset(big, 'B', sizeof(big));
	n += frame(s + n, TEXT, "hello", 5);
	n += frame(s + n, MS_WS_OP_TEXT, "frag\xe2", 5);
	n += frame(s + n, FIN | MS_WS_OP_PING, "ping", 4);
	n += frame(s + n, MS_WS_OP_CONT, "\x82", 1);
	n += frame(s + n, FIN | MS_WS_OP_CONT, "\xac" "end", 4);
	n += frame(s + n, BIN, big, 300);
	n += frame(s + n, FIN | MS_WS_OP_PONG, "", 0);
	n += frame(s + n, FIN | MS_WS_OP_CLOSE, "\x03\xe8" "bye", 5);

	const struct rec want[] = {
		{ MS_WS_EV_MESSAGE, MS_WS_OP_TEXT, false, 0, 5, H("hello") },
		{ MS_WS_EV_FRAGMENT, MS_WS_OP_TEXT, false, 0, 5, H("frag\xe2") },
		{ MS_WS_EV_PING, 0, false, 0, 4, H("ping") },
		{ MS_WS_EV_FRAGMENT, MS_WS_OP_TEXT, false, 0, 1, H("\x82") },
		{ MS_WS_EV_FRAGMENT, MS_WS_OP_TEXT, true, 0, 4, H("\xac" "end") },
		{ MS_WS_EV_MESSAGE, MS_WS_OP_BINARY, false, 0, 300, fnv(big, 300) },
		{ MS_WS_EV_PONG, 0, false, 0, 0, H("") },
		{ MS_WS_EV_CLOSE, 0, false, 1000, 3, H("bye") },
	};
	check_all_splits(s, n, MAXMSG, want, 8);
}

static void test_split_stream_errors(void **state)
{
	uint8_t s[512], pl[200];
	size_t n;

	memset(pl, 'p', sizeof(pl));
	/* invalid UTF-8 in the second fragment, after a ping */
	n = 0;
	n += frame(s + n, MS_WS_OP_TEXT, "ab", 2);
	n += frame(s + n, FIN | MS_WS_OP_PING, "", 0);
	n += frame(s + n, MS_WS_OP_CONT, "\xc0\xaf", 2);
	n += frame(s + n, TEXT, "never", 5);
	const struct rec w1[] = {
		{ MS_WS_EV_FRAGMENT, MS_WS_OP_TEXT, false, 0, 2, H("ab") },
		{ MS_WS_EV_PING, 0, false, 0, 0, H("") },
		{ MS_WS_EV_ERROR, 0, false, 1007, 0, 0 },
	};
	check_all_splits(s, n, MAXMSG, w1, 3);

	/* too big, found at the header of the third frame */
	n = 0;
	n += frame(s + n, MS_WS_OP_BINARY, pl, 100);
	n += frame(s + n, MS_WS_OP_CONT, pl, 50);
	n += frame(s + n, FIN | MS_WS_OP_CONT, pl, 51);
	const struct rec w2[] = {
		{ MS_WS_EV_FRAGMENT, MS_WS_OP_BINARY, false, 0, 100, fnv(pl, 100) },
		{ MS_WS_EV_FRAGMENT, MS_WS_OP_BINARY, false, 0, 50, fnv(pl, 50) },
		{ MS_WS_EV_ERROR, 0, false, 1009, 0, 0 },
	};
	check_all_splits(s, n, 200, w2, 3);

	/* an unmasked frame after a good one */
	n = 0;
	n += frame(s + n, TEXT, "ok", 2);
	memcpy(s + n, "\x81\x02hi", 4);
	n += 4;
	const struct rec w3[] = {
		{ MS_WS_EV_MESSAGE, MS_WS_OP_TEXT, false, 0, 2, H("ok") },
		{ MS_WS_EV_ERROR, 0, false, 1002, 0, 0 },
	};
	check_all_splits(s, n, MAXMSG, w3, 2);

	/* a bad close code */
	n = 0;
	n += frame(s + n, FIN | MS_WS_OP_CLOSE, "\x03\xed", 2); /* 1005 */
	const struct rec w4[] = { { MS_WS_EV_ERROR, 0, false, 1002, 0, 0 } };
	check_all_splits(s, n, MAXMSG, w4, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc_example),
		cmocka_unit_test(test_need_more),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_nonminimal_length),
		cmocka_unit_test(test_unmasked),
		cmocka_unit_test(test_rsv_and_opcodes),
		cmocka_unit_test(test_control_rules),
		cmocka_unit_test(test_continuation_rules),
		cmocka_unit_test(test_fragmentation_with_ping),
		cmocka_unit_test(test_too_big),
		cmocka_unit_test(test_utf8_text),
		cmocka_unit_test(test_close_frames),
		cmocka_unit_test(test_close_code_valid),
		cmocka_unit_test(test_close_payload),
		cmocka_unit_test(test_unmask),
		cmocka_unit_test(test_accept_key),
		cmocka_unit_test(test_header_roundtrip),
		cmocka_unit_test(test_split_stream),
		cmocka_unit_test(test_split_stream_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
