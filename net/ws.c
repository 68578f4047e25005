/*
 * RFC 6455 frame codec: the server-side frame parser (ms_ws_next), in-place
 * unmasking, frame header and close payload builders, the client-side frame
 * peek used by tools/ and tests, and the handshake accept key.
 *
 * ms_ws_next() is stateless about the bytes: it re-reads the header from the
 * start of the caller's buffer on every call and consumes nothing until a
 * whole frame is present, so the caller keeps one flat buffer per connection
 * and never has to remember a half-parsed header. The only state carried
 * between frames is the fragmented-message bookkeeping in ms_ws_rx.
 *
 * Checks run in a fixed order, each as soon as the bytes it needs are
 * present: first-two-byte rules, then the extended length and the message
 * size limit (before the mask key has arrived), then, once the frame is
 * whole, payload rules. Because a check
 * never depends on bytes after the ones it reads, the verdict for a given
 * byte stream does not depend on how it was split across reads.
 */
#include "net/ws.h"

#include <limits.h>
#include <string.h>

#include <openssl/base64.h>
#include <openssl/sha.h>

#include "net/utf8.h"

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static inline uint16_t load_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint64_t load_be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static inline bool is_control(uint8_t op)
{
	return op & 0x8;
}

static inline bool opcode_known(uint8_t op)
{
	return op <= MS_WS_OP_BINARY || (op >= MS_WS_OP_CLOSE && op <= MS_WS_OP_PONG);
}

static size_t fail(ms_ws_event *ev, uint16_t code)
{
	ev->kind = MS_WS_EV_ERROR;
	ev->close_code = code;
	return 0;
}

bool ms_ws_close_code_valid(uint16_t code)
{
	return (code >= 1000 && code <= 1003) ||
	       (code >= 1007 && code <= 1011) ||
	       (code >= 3000 && code <= 4999);
}

/* Payload rules for a close frame: empty, or a valid code plus UTF-8. */
static size_t close_frame(ms_ws_event *ev, uint8_t *pl, size_t n, size_t total)
{
	ev->kind = MS_WS_EV_CLOSE;
	if (n == 0) {
		ev->close_code = MS_WS_CLOSE_NO_STATUS;
		ev->data = pl;
		ev->len = 0;
		return total;
	}
	if (n == 1)
		return fail(ev, MS_WS_CLOSE_PROTOCOL);
	uint16_t code = load_be16(pl);
	if (!ms_ws_close_code_valid(code))
		return fail(ev, MS_WS_CLOSE_PROTOCOL);
	if (ms_utf8_validate(MS_UTF8_ACCEPT, pl + 2, n - 2) != MS_UTF8_ACCEPT)
		return fail(ev, MS_WS_CLOSE_INVALID_DATA);
	ev->close_code = code;
	ev->data = pl + 2;
	ev->len = n - 2;
	return total;
}

size_t ms_ws_next(ms_ws_rx *rx, uint8_t *buf, size_t len, size_t max_message,
		  ms_ws_event *ev)
{
	memset(ev, 0, sizeof(*ev));
	ev->kind = MS_WS_EV_NEED_MORE;
	if (len < 2)
		return 0;

	bool fin = buf[0] & 0x80;
	uint8_t op = buf[0] & 0x0f;
	uint8_t len7 = buf[1] & 0x7f;

	/* Everything decidable from the first two bytes, before waiting for
	 * the rest: a garbage stream is dropped at once. */
	if (buf[0] & 0x70)
		return fail(ev, MS_WS_CLOSE_PROTOCOL); /* RSV1-3: no extensions */
	if (!opcode_known(op))
		return fail(ev, MS_WS_CLOSE_PROTOCOL);
	if (!(buf[1] & 0x80))
		return fail(ev, MS_WS_CLOSE_PROTOCOL); /* clients must mask */
	if (is_control(op)) {
		if (!fin || len7 > MS_WS_MAX_CONTROL)
			return fail(ev, MS_WS_CLOSE_PROTOCOL);
	} else if (op == MS_WS_OP_CONT) {
		if (!rx->msg_op)
			return fail(ev, MS_WS_CLOSE_PROTOCOL);
	} else if (rx->msg_op) {
		return fail(ev, MS_WS_CLOSE_PROTOCOL);
	}

	/* The length is judged as soon as its bytes are in, before the mask
	 * key arrives. */
	size_t hl = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
	if (len < hl)
		return 0;

	uint64_t plen = len7;
	if (len7 == 126) {
		plen = load_be16(buf + 2);
		if (plen < 126)
			return fail(ev, MS_WS_CLOSE_PROTOCOL);
	} else if (len7 == 127) {
		plen = load_be64(buf + 2);
		if (plen >> 63 || plen < 65536)
			return fail(ev, MS_WS_CLOSE_PROTOCOL);
	}

	/* The limit applies to the whole message, so a continuation adds to
	 * what its predecessors delivered. msg_len is 32 bits: a message that
	 * could not be counted is too big whatever max_message says. Control
	 * frames are <= 125 bytes by now and not subject to it. */
	if (!is_control(op)) {
		uint64_t sofar = op == MS_WS_OP_CONT ? rx->msg_len : 0;

		if (sofar > max_message || plen > max_message - sofar ||
		    sofar + plen > UINT32_MAX)
			return fail(ev, MS_WS_CLOSE_TOO_BIG);
	}
	hl += 4; /* mask key */
	if (plen > SIZE_MAX - hl)
		return fail(ev, MS_WS_CLOSE_TOO_BIG);
	if (len < hl)
		return 0;

	size_t total = hl + (size_t)plen;
	if (len < total) {
		ev->need = total;
		return 0;
	}

	uint8_t *pl = buf + hl;
	size_t n = (size_t)plen;
	ms_ws_unmask(pl, n, buf + hl - 4, 0);

	switch (op) {
	case MS_WS_OP_PING:
	case MS_WS_OP_PONG:
		ev->kind = op == MS_WS_OP_PING ? MS_WS_EV_PING : MS_WS_EV_PONG;
		ev->data = pl;
		ev->len = n;
		return total;
	case MS_WS_OP_CLOSE:
		return close_frame(ev, pl, n, total);
	case MS_WS_OP_CONT:
		if (rx->msg_op == MS_WS_OP_TEXT) {
			rx->utf8 = ms_utf8_validate(rx->utf8, pl, n);
			if (rx->utf8 == MS_UTF8_REJECT ||
			    (fin && rx->utf8 != MS_UTF8_ACCEPT))
				return fail(ev, MS_WS_CLOSE_INVALID_DATA);
		}
		ev->kind = MS_WS_EV_FRAGMENT;
		ev->opcode = rx->msg_op;
		ev->fin = fin;
		ev->data = pl;
		ev->len = n;
		if (fin) {
			memset(rx, 0, sizeof(*rx));
		} else {
			rx->msg_len += (uint32_t)n;
		}
		return total;
	default: /* TEXT or BINARY opening a message */
		break;
	}

	uint32_t st = MS_UTF8_ACCEPT;
	if (op == MS_WS_OP_TEXT) {
		st = ms_utf8_validate(st, pl, n);
		if (st == MS_UTF8_REJECT || (fin && st != MS_UTF8_ACCEPT))
			return fail(ev, MS_WS_CLOSE_INVALID_DATA);
	}
	ev->opcode = op;
	ev->data = pl;
	ev->len = n;
	if (fin) {
		ev->kind = MS_WS_EV_MESSAGE;
	} else {
		ev->kind = MS_WS_EV_FRAGMENT;
		rx->msg_op = op;
		rx->msg_len = (uint32_t)n;
		rx->utf8 = st;
	}
	return total;
}

void ms_ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], size_t offset)
{
	/* Bytes until p is 8-aligned, so the word loop's loads and stores
	 * never straddle a cache line. */
	while (n && ((uintptr_t)p & 7)) {
		*p++ ^= mask[offset++ & 3];
		n--;
	}
	if (n >= 8) {
		/* The key as it lines up with the next 8 payload bytes: byte
		 * order is irrelevant because the word is built and applied
		 * through memory, never through arithmetic. */
		uint8_t kb[8];
		uint64_t k;

		for (int i = 0; i < 8; i++)
			kb[i] = mask[(offset + i) & 3];
		memcpy(&k, kb, 8);
		while (n >= 8) {
			uint64_t w;

			memcpy(&w, p, 8);
			w ^= k;
			memcpy(p, &w, 8);
			p += 8;
			n -= 8;
		}
		/* Words advance the offset by 8, a multiple of 4: it is
		 * unchanged mod 4 for the tail. */
	}
	while (n--)
		*p++ ^= mask[offset++ & 3];
}

size_t ms_ws_header(uint8_t *out, bool fin, uint8_t opcode, uint64_t len,
		    const uint8_t *mask)
{
	size_t h = 2;

	out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
	out[1] = mask ? 0x80 : 0;
	if (len < 126) {
		out[1] |= (uint8_t)len;
	} else if (len < 65536) {
		out[1] |= 126;
		out[2] = (uint8_t)(len >> 8);
		out[3] = (uint8_t)len;
		h = 4;
	} else {
		out[1] |= 127;
		for (int i = 0; i < 8; i++)
			out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
		h = 10;
	}
	if (mask) {
		memcpy(out + h, mask, 4);
		h += 4;
	}
	return h;
}

size_t ms_ws_close_payload(uint8_t *out, uint16_t code, const char *reason)
{
	/* 0 and 1005 mean "no status": RFC 6455 §7.4.1 forbids sending 1005,
	 * the empty payload says it instead. */
	if (code == 0 || code == MS_WS_CLOSE_NO_STATUS)
		return 0;
	out[0] = (uint8_t)(code >> 8);
	out[1] = (uint8_t)code;
	if (!reason)
		return 2;

	size_t n = strlen(reason);
	if (n > MS_WS_MAX_CONTROL - 2) {
		/* Cut on a code point boundary: a reason cut mid-sequence
		 * would make the peer fail our close with 1007. */
		n = MS_WS_MAX_CONTROL - 2;
		while (n && ((uint8_t)reason[n] & 0xc0) == 0x80)
			n--;
	}
	memcpy(out + 2, reason, n);
	return 2 + n;
}

long ms_ws_client_peek(const uint8_t *buf, size_t len, size_t *hdr_len,
		       uint8_t *opcode, bool *fin, uint64_t *payload_len)
{
	if (len < 2)
		return 0;

	uint8_t op = buf[0] & 0x0f;
	uint8_t len7 = buf[1] & 0x7f;
	bool f = buf[0] & 0x80;

	if ((buf[0] & 0x70) || !opcode_known(op) || (buf[1] & 0x80))
		return -1;
	if (is_control(op) && (!f || len7 > MS_WS_MAX_CONTROL))
		return -1;

	size_t hl = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
	if (len < hl)
		return 0;

	uint64_t plen = len7;
	if (len7 == 126) {
		plen = load_be16(buf + 2);
		if (plen < 126)
			return -1;
	} else if (len7 == 127) {
		plen = load_be64(buf + 2);
		if (plen >> 63 || plen < 65536)
			return -1;
	}
	if (plen > (uint64_t)LONG_MAX - hl)
		return -1;

	*hdr_len = hl;
	*opcode = op;
	*fin = f;
	*payload_len = plen;
	return (long)(hl + plen);
}

void ms_ws_accept_key(const char *key, size_t key_len, char out[29])
{
	uint8_t digest[SHA_DIGEST_LENGTH];
	SHA_CTX sha;

	/* Incremental so a key of any length needs no concatenation buffer. */
	SHA1_Init(&sha);
	SHA1_Update(&sha, key, key_len);
	SHA1_Update(&sha, ws_guid, sizeof(ws_guid) - 1);
	SHA1_Final(digest, &sha);
	/* 20 bytes -> 28 characters plus the NUL EVP_EncodeBlock writes. */
	EVP_EncodeBlock((uint8_t *)out, digest, sizeof(digest));
}
