/*
 * libFuzzer target for net/ws.h: a client byte stream fed through
 * ms_ws_next the way a connection does (append what arrived, parse frames
 * until it wants more, shift out what was consumed).
 *
 * Input: byte 0 picks max_message (low 3 bits) and the largest read size
 * (high bits), bytes 1-2 seed the read-size generator, the rest is the
 * stream. The stream runs twice, in one read and in generated reads, and
 * the two event sequences must match. Per event: consumed <= buffered,
 * data inside the consumed frame, the header re-encodes to the same bytes
 * (lengths are minimal by then), the payload unmasks like a byte-wise XOR,
 * limits hold, text and close reasons are valid UTF-8, close codes valid.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/utf8.h"
#include "net/ws.h"

#define CHECK(c)                 \
	do {                     \
		if (!(c))        \
			abort(); \
	} while (0)

#define MAX_EVENTS 4096

struct rec {
	ms_ws_ev_kind kind;
	uint8_t opcode;
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

/* Checks on one consumed frame: buf holds it from offset 0, orig is the
 * same frame as it arrived (still masked). */
static void check_frame(const ms_ws_event *ev, const uint8_t *buf, size_t used,
			const uint8_t *orig, size_t max)
{
	size_t plen = ev->len, hl;

	CHECK(used > 0);
	CHECK(ev->data >= buf && ev->data + ev->len <= buf + used);
	if (ev->kind == MS_WS_EV_CLOSE && ev->close_code != MS_WS_CLOSE_NO_STATUS)
		plen += 2;
	hl = used - plen;
	CHECK(hl == 6 || hl == 8 || hl == 14);

	/* canonical header: re-encoding gives the bytes that arrived */
	uint8_t h[MS_WS_MAX_HEADER];
	CHECK(ms_ws_header(h, buf[0] & 0x80, buf[0] & 0x0f, plen, buf + hl - 4) == hl);
	CHECK(memcmp(h, buf, hl) == 0);
	CHECK(memcmp(h, orig, hl) == 0);
	for (size_t i = 0; i < plen; i++)
		CHECK((uint8_t)(orig[hl + i] ^ buf[hl - 4 + (i & 3)]) == buf[hl + i]);

	/* the same frame as a server would send it, through the client peek */
	size_t phl;
	uint8_t op;
	bool fin;
	uint64_t pl;
	size_t shl = ms_ws_header(h, buf[0] & 0x80, buf[0] & 0x0f, plen, NULL);
	CHECK(ms_ws_client_peek(h, shl, &phl, &op, &fin, &pl) == (long)(shl + plen));
	CHECK(phl == shl && op == (buf[0] & 0x0f) && pl == plen && fin == !!(buf[0] & 0x80));

	switch (ev->kind) {
	case MS_WS_EV_MESSAGE:
		CHECK(ev->len <= max);
		if (ev->opcode == MS_WS_OP_TEXT)
			CHECK(ms_utf8_validate(MS_UTF8_ACCEPT, ev->data, ev->len) == MS_UTF8_ACCEPT);
		else
			CHECK(ev->opcode == MS_WS_OP_BINARY);
		break;
	case MS_WS_EV_FRAGMENT:
		CHECK(ev->len <= max);
		CHECK(ev->opcode == MS_WS_OP_TEXT || ev->opcode == MS_WS_OP_BINARY);
		break;
	case MS_WS_EV_PING:
	case MS_WS_EV_PONG:
		CHECK(ev->len <= MS_WS_MAX_CONTROL);
		break;
	case MS_WS_EV_CLOSE:
		CHECK(ev->len <= MS_WS_MAX_CONTROL - 2);
		CHECK(ev->close_code == MS_WS_CLOSE_NO_STATUS ||
		      ms_ws_close_code_valid(ev->close_code));
		CHECK(ms_utf8_validate(MS_UTF8_ACCEPT, ev->data, ev->len) == MS_UTF8_ACCEPT);
		if (ev->close_code != MS_WS_CLOSE_NO_STATUS &&
		    !memchr(ev->data, 0, ev->len)) {
			/* rebuilding the payload gives it back unchanged */
			char reason[MS_WS_MAX_CONTROL + 1];
			uint8_t out[MS_WS_MAX_CONTROL];

			memcpy(reason, ev->data, ev->len);
			reason[ev->len] = 0;
			CHECK(ms_ws_close_payload(out, ev->close_code, reason) == ev->len + 2);
			CHECK(memcmp(out + 2, ev->data, ev->len) == 0);
		}
		break;
	default:
		CHECK(0);
	}
}

/* Feed stream[0..n) in reads of 1..maxread bytes drawn from seed (maxread 0:
 * one read). Returns the number of events. */
static size_t run(const uint8_t *stream, size_t n, size_t max, size_t maxread,
		  uint32_t seed, struct rec *out)
{
	uint8_t *buf = malloc(n ? n : 1);
	ms_ws_rx rx = { 0 };
	size_t have = 0, off = 0, base = 0, nrec = 0;
	uint32_t open_len = 0;

	while (off < n || off == 0) {
		size_t chunk = n - off;

		if (maxread) {
			seed = seed * 1103515245u + 12345u;
			size_t want = 1 + (seed >> 16) % maxread;
			if (want < chunk)
				chunk = want;
		}
		memcpy(buf + have, stream + off, chunk);
		have += chunk;
		off += chunk;
		for (;;) {
			ms_ws_event ev;
			size_t used = ms_ws_next(&rx, buf, have, max, &ev);

			CHECK(used <= have);
			if (ev.kind == MS_WS_EV_NEED_MORE) {
				CHECK(used == 0);
				CHECK(ev.need == 0 || ev.need > have);
				CHECK(ev.need <= MS_WS_MAX_HEADER +
						 (max > MS_WS_MAX_CONTROL ? max : MS_WS_MAX_CONTROL));
				break;
			}
			CHECK(nrec < MAX_EVENTS);
			out[nrec] = (struct rec){ ev.kind, ev.opcode, ev.fin,
						  ev.close_code, ev.len, 0 };
			if (ev.kind == MS_WS_EV_ERROR) {
				CHECK(used == 0);
				CHECK(ev.close_code == MS_WS_CLOSE_PROTOCOL ||
				      ev.close_code == MS_WS_CLOSE_INVALID_DATA ||
				      ev.close_code == MS_WS_CLOSE_TOO_BIG);
				free(buf);
				return nrec + 1;
			}
			check_frame(&ev, buf, used, stream + base, max);
			if (ev.kind == MS_WS_EV_FRAGMENT) {
				open_len += (uint32_t)ev.len;
				CHECK(open_len <= max);
				if (ev.fin)
					open_len = 0;
			}
			out[nrec++].hash = fnv(ev.data, ev.len);
			memmove(buf, buf + used, have - used);
			have -= used;
			base += used;
		}
		if (n == 0)
			break;
	}
	free(buf);
	return nrec;
}

static struct rec ev_a[MAX_EVENTS], ev_b[MAX_EVENTS];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t maxes[8] = { 0, 1, 16, 125, 126, 65535, 65536, 1 << 20 };

	if (size < 3)
		return 0;

	size_t max = maxes[data[0] & 7];
	size_t maxread = (size_t)(data[0] >> 3) + 1;
	uint32_t seed = (uint32_t)data[1] << 8 | data[2];
	const uint8_t *s = data + 3;
	size_t n = size - 3;

	size_t na = run(s, n, max, 0, 0, ev_a);
	size_t nb = run(s, n, max, maxread, seed, ev_b);

	CHECK(na == nb);
	for (size_t i = 0; i < na; i++) {
		CHECK(ev_a[i].kind == ev_b[i].kind);
		CHECK(ev_a[i].opcode == ev_b[i].opcode);
		CHECK(ev_a[i].fin == ev_b[i].fin);
		CHECK(ev_a[i].code == ev_b[i].code);
		CHECK(ev_a[i].len == ev_b[i].len);
		CHECK(ev_a[i].hash == ev_b[i].hash);
	}

	/* unmask against a byte loop, at an offset and alignment from input */
	if (n >= 4) {
		uint8_t *a = malloc(n), *b = malloc(n);
		size_t offset = data[1] & 7, start = data[2] & 7;

		if (start > n)
			start = n;
		memcpy(a, s, n);
		memcpy(b, s, n);
		ms_ws_unmask(a + start, n - start, s, offset);
		for (size_t i = start; i < n; i++)
			b[i] ^= s[(offset + i - start) & 3];
		CHECK(memcmp(a, b, n) == 0);
		free(a);
		free(b);
	}
	return 0;
}
