/*
 * RFC 6455 frame codec, server side (and the client-side encoder the load
 * generator and tests use).
 *
 * Receiving works on whole frames: ms_ws_next() looks at the bytes a
 * connection has buffered and either reports that it needs more (and how
 * many, so the caller can cap its buffer) or consumes exactly one frame,
 * unmasking its payload in place and returning it as an event. Every
 * protocol rule is checked here, so the caller only acts on events:
 *   - client frames must be masked; RSV bits and unknown opcodes rejected;
 *   - 64-bit lengths with the top bit set, and non-minimal lengths, rejected;
 *   - control frames <= 125 bytes and never fragmented, allowed between the
 *     fragments of a data message;
 *   - continuation without a message in progress, or a new data frame while
 *     one is in progress, rejected;
 *   - a message (all its fragments) larger than max_message -> 1009, found as
 *     soon as a frame header announces it (nothing is buffered first);
 *   - text validated as UTF-8 across fragments (ms_utf8_validate state kept
 *     in ms_ws_rx); invalid -> 1007, found at the first bad frame;
 *   - close payload: 0 bytes, or >= 2 with a valid code and UTF-8 reason.
 * Pure: no I/O, no allocation, no globals. Any thread; one ms_ws_rx per
 * connection.
 */
#ifndef MS_NET_WS_H
#define MS_NET_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
	MS_WS_OP_CONT = 0x0,
	MS_WS_OP_TEXT = 0x1,
	MS_WS_OP_BINARY = 0x2,
	MS_WS_OP_CLOSE = 0x8,
	MS_WS_OP_PING = 0x9,
	MS_WS_OP_PONG = 0xA,
};

/* Close codes used by the server. */
enum {
	MS_WS_CLOSE_NORMAL = 1000,
	MS_WS_CLOSE_GOING_AWAY = 1001,
	MS_WS_CLOSE_PROTOCOL = 1002,
	MS_WS_CLOSE_NO_STATUS = 1005, /* never sent: "peer sent no code" */
	MS_WS_CLOSE_INVALID_DATA = 1007,
	MS_WS_CLOSE_POLICY = 1008,
	MS_WS_CLOSE_TOO_BIG = 1009,
	MS_WS_CLOSE_INTERNAL = 1011,
};

#define MS_WS_MAX_HEADER 14 /* 2 + 8 (length) + 4 (mask) */
#define MS_WS_MAX_CONTROL 125

/* Per-connection receive state: 12 bytes, lives in the connection slot. */
typedef struct ms_ws_rx {
	uint32_t msg_len;  /* payload bytes of the fragmented message so far */
	uint32_t utf8;     /* ms_utf8_validate state of that message */
	uint8_t msg_op;    /* TEXT/BINARY while a fragmented message is open, else 0 */
	uint8_t _pad[3];
} ms_ws_rx;

typedef enum ms_ws_ev_kind {
	MS_WS_EV_NEED_MORE = 0, /* no complete frame yet; see ev.need */
	MS_WS_EV_MESSAGE,       /* a whole unfragmented message, data in place */
	MS_WS_EV_FRAGMENT,      /* one frame of a fragmented message; ev.fin on the last */
	MS_WS_EV_PING,
	MS_WS_EV_PONG,
	MS_WS_EV_CLOSE,         /* ev.close_code = peer's code (1005 if none); data = reason */
	MS_WS_EV_ERROR,         /* ev.close_code = the code to close with (1002/1007/1009) */
} ms_ws_ev_kind;

typedef struct ms_ws_event {
	ms_ws_ev_kind kind;
	uint8_t opcode;      /* TEXT or BINARY for MESSAGE/FRAGMENT (the message's type) */
	bool fin;            /* FRAGMENT: this frame ends the message */
	uint16_t close_code;
	uint8_t *data;       /* unmasked payload, inside the caller's buffer */
	size_t len;
	size_t need;         /* NEED_MORE: total bytes the pending frame needs (0 = header incomplete) */
} ms_ws_event;

/* Parse one frame from buf[0..len). Returns the number of bytes consumed
 * (one whole frame) and fills *ev; returns 0 with ev->kind NEED_MORE when the
 * buffer holds no complete frame, or 0 with ev->kind ERROR on a violation
 * (the connection must then be closed with ev->close_code; rx is undefined).
 * The payload is unmasked in place. max_message bounds a message's payload
 * (all fragments together). */
size_t ms_ws_next(ms_ws_rx *rx, uint8_t *buf, size_t len, size_t max_message,
		  ms_ws_event *ev);

/* XOR-unmask n bytes in place; `offset` is the payload position of p[0]
 * (mask index = offset & 3). Word at a time. */
void ms_ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], size_t offset);

/* Write a frame header for a payload of `len` bytes into out (room for
 * MS_WS_MAX_HEADER). mask == NULL: server frame (unmasked); otherwise a
 * client frame with that key (the caller masks the payload). Returns the
 * header length. */
size_t ms_ws_header(uint8_t *out, bool fin, uint8_t opcode, uint64_t len,
		    const uint8_t *mask);

/* Header length ms_ws_header() writes for an unmasked frame of len bytes. */
static inline size_t ms_ws_header_len(uint64_t len)
{
	return len < 126 ? 2 : len < 65536 ? 4 : 10;
}

/* Build a close payload (code, reason truncated to fit 125 bytes, on a
 * UTF-8 code point boundary) into out (>= 125 bytes). code 0 or 1005 means
 * "no status": the payload is empty. Returns its length. */
size_t ms_ws_close_payload(uint8_t *out, uint16_t code, const char *reason);

/* A close code a peer may send (RFC 6455 §7.4): 1000-1003, 1007-1011,
 * 3000-4999. */
bool ms_ws_close_code_valid(uint16_t code);

/* Client side: parse one server (unmasked) frame header from buf. Returns
 * total frame length (header + payload) when the header is complete and
 * sets *hdr_len, *opcode, *fin, *payload_len; 0 when more bytes are needed;
 * -1 when the frame is masked or malformed. Pure, used by tools/ and tests. */
long ms_ws_client_peek(const uint8_t *buf, size_t len, size_t *hdr_len,
		       uint8_t *opcode, bool *fin, uint64_t *payload_len);

/* Sec-WebSocket-Accept for a client key: base64(SHA-1(key + GUID)),
 * 28 characters + NUL into out. Uses BoringSSL's SHA-1 and base64. */
void ms_ws_accept_key(const char *key, size_t key_len, char out[29]);

#endif
