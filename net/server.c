/*
 * Protocol layer of the public listeners: the per-connection state machine
 * HTTP_UPGRADE → OPEN → CLOSING over core's connections.
 *
 * Input arrives as whole recv buffers (plus whatever an earlier call left
 * unconsumed). The HTTP head is parsed in place; after the 101 the same call
 * goes on with the frames that followed it. Frames are parsed and unmasked in
 * place by the codec; a message is handled straight from the receive buffer
 * unless it was fragmented, in which case its pieces are gathered in a buffer
 * that exists only while the message is incomplete. An idle connection holds
 * nothing but its slot.
 *
 * Routes: /healthz, /ws (chat; the chat protocol arrives with the chat core),
 * and with --diag the diagnostics /echo (conformance) and --diag-root echo
 * for clients that ask for /.
 */
#include "net/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "net/http.h"
#include "net/ws.h"

enum { ST_HTTP = 0, ST_OPEN, ST_CLOSING };
enum { ROUTE_NONE = 0, ROUTE_CHAT, ROUTE_ECHO };

#define CLOSE_WAIT_SECONDS 5 /* for the peer's close frame after ours */

typedef struct net_conn {
	ms_ws_rx rx;
	uint8_t route;
	uint8_t pinged;  /* idle ping sent, no input since */
	uint8_t _pad[2];
	uint32_t frag_len, frag_cap;
	uint8_t *frag;   /* fragmented message being gathered */
} net_conn;

_Static_assert(sizeof(net_conn) == 32, "per-connection protocol state stays small");

size_t ms_net_ext_size(void)
{
	return sizeof(net_conn);
}

static inline net_conn *X(ms_conn *c)
{
	return ms_conn_ext(c);
}

/* ---- output helpers ------------------------------------------------------ */

static void respond(ms_worker *w, ms_conn *c, int status, const char *extra,
		    const char *body)
{
	char buf[512];
	int n = ms_http_response(buf, sizeof(buf), status, true, extra, body);
	if (n > 0)
		ms_conn_write(w, c, buf, (size_t)n);
	ms_conn_close(w, c, MS_CLOSE_FLUSH);
}

static void respond_503(ms_worker *w, ms_conn *c)
{
	/* Jittered Retry-After spreads a reconnect storm over a few seconds. */
	static __thread unsigned seed;
	if (!seed)
		seed = (unsigned)(uintptr_t)&seed ^ ms_worker_id(w) * 2654435761u;
	char extra[48];
	snprintf(extra, sizeof(extra), "Retry-After: %d\r\n", 1 + rand_r(&seed) % 5);
	respond(w, c, 503, extra, "over capacity\n");
}

static void ws_send(ms_worker *w, ms_conn *c, uint8_t opcode, const void *p,
		    size_t len)
{
	size_t h = ms_ws_header_len(len);
	uint8_t *out = ms_conn_reserve(w, c, h + len);
	ms_ws_header(out, true, opcode, len, NULL);
	if (len)
		memcpy(out + h, p, len);
	ms_conn_commit(w, c, h + len);
	const ms_config *cfg = ms_worker_config(w);
	if (ms_conn_pending(c) > cfg->max_backpressure) {
		/* The close frame could never get past what is queued: abort. */
		ms_debug("conn %u: slow consumer (%u bytes queued)", c->idx,
			 ms_conn_pending(c));
		ms_conn_close(w, c, MS_CLOSE_ABORT);
	}
}

/* Start the closing handshake: our close frame, then wait for the peer's. */
static void ws_close(ms_worker *w, ms_conn *c, uint16_t code, const char *reason)
{
	uint8_t payload[MS_WS_MAX_CONTROL];
	size_t n = ms_ws_close_payload(payload, code, reason);
	ws_send(w, c, MS_WS_OP_CLOSE, payload, n);
	if (ms_conn_closing(c))
		return;
	c->state = ST_CLOSING;
	ms_conn_timeout(w, c, CLOSE_WAIT_SECONDS);
}

/* Fail the connection (RFC 6455 §7.1.7): close frame, then close TCP. */
static void ws_fail(ms_worker *w, ms_conn *c, uint16_t code, const char *reason)
{
	uint8_t payload[MS_WS_MAX_CONTROL];
	size_t n = ms_ws_close_payload(payload, code, reason);
	ws_send(w, c, MS_WS_OP_CLOSE, payload, n);
	ms_conn_close(w, c, MS_CLOSE_FLUSH);
}

/* ---- messages -------------------------------------------------------------- */

static void on_message(ms_worker *w, ms_conn *c, uint8_t opcode, uint8_t *p,
		       size_t len)
{
	ms_worker_stats *st = ms_worker_stats_of(w);
	st->msgs_in++;
	switch (X(c)->route) {
	case ROUTE_ECHO:
		ws_send(w, c, opcode, p, len);
		st->msgs_out++;
		break;
	case ROUTE_CHAT: {
		/* Protocol v1 ops are served by the chat core (shard/); until it
		 * is linked in, every request gets a clear error. */
		static const char err[] =
			"{\"ok\":false,\"error\":{\"code\":503,\"message\":"
			"\"chat operations are not available in this build\"}}";
		ws_send(w, c, MS_WS_OP_TEXT, err, sizeof(err) - 1);
		st->msgs_out++;
		break;
	}
	default:
		break;
	}
}

static void gather(net_conn *x, const uint8_t *p, size_t len)
{
	if (len == 0)
		return;
	if (x->frag_len + len > x->frag_cap) {
		size_t cap = x->frag_cap ? x->frag_cap : 1024;
		while (cap < x->frag_len + len)
			cap *= 2;
		x->frag = realloc(x->frag, cap);
		if (!x->frag)
			abort();
		x->frag_cap = (uint32_t)cap;
	}
	memcpy(x->frag + x->frag_len, p, len);
	x->frag_len += (uint32_t)len;
}

static void frag_free(net_conn *x)
{
	free(x->frag);
	x->frag = NULL;
	x->frag_len = x->frag_cap = 0;
}

static size_t on_frames(ms_worker *w, ms_conn *c, uint8_t *buf, size_t len)
{
	const ms_config *cfg = ms_worker_config(w);
	net_conn *x = X(c);
	size_t off = 0;
	while (off < len && !ms_conn_closing(c)) {
		ms_ws_event ev;
		size_t n = ms_ws_next(&x->rx, buf + off, len - off, cfg->max_message, &ev);
		if (ev.kind == MS_WS_EV_NEED_MORE)
			break;
		if (ev.kind == MS_WS_EV_ERROR) {
			ws_fail(w, c, ev.close_code,
				ev.close_code == MS_WS_CLOSE_TOO_BIG ? "message too big" :
				ev.close_code == MS_WS_CLOSE_INVALID_DATA ? "invalid UTF-8" :
				"protocol error");
			return len;
		}
		off += n;
		if (c->state == ST_CLOSING && ev.kind != MS_WS_EV_CLOSE)
			continue; /* after our close frame, only the peer's close matters */
		switch (ev.kind) {
		case MS_WS_EV_MESSAGE:
			on_message(w, c, ev.opcode, ev.data, ev.len);
			break;
		case MS_WS_EV_FRAGMENT:
			gather(x, ev.data, ev.len);
			if (ev.fin) {
				on_message(w, c, ev.opcode, x->frag, x->frag_len);
				frag_free(x);
			}
			break;
		case MS_WS_EV_PING:
			ws_send(w, c, MS_WS_OP_PONG, ev.data, ev.len);
			break;
		case MS_WS_EV_PONG:
			break;
		case MS_WS_EV_CLOSE:
			if (c->state == ST_OPEN) {
				/* Echo the peer's code (none → empty close). */
				uint8_t payload[2];
				size_t pn = 0;
				if (ev.close_code != MS_WS_CLOSE_NO_STATUS) {
					payload[0] = (uint8_t)(ev.close_code >> 8);
					payload[1] = (uint8_t)ev.close_code;
					pn = 2;
				}
				ws_send(w, c, MS_WS_OP_CLOSE, payload, pn);
			}
			ms_conn_close(w, c, MS_CLOSE_FLUSH);
			return len;
		default:
			break;
		}
	}
	return off;
}

/* ---- HTTP upgrade ---------------------------------------------------------- */

static bool str_eq(ms_str s, const char *lit)
{
	size_t n = strlen(lit);
	return s.n == n && memcmp(s.p, lit, n) == 0;
}

/* PROTOCOL.md: user ids are canonical decimal, no leading zeros, <= 2^64-1. */
static bool canonical_uid(ms_str s)
{
	if (s.n == 0 || s.n > 20 || (s.p[0] == '0' && s.n > 1))
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < s.n; i++) {
		if (s.p[i] < '0' || s.p[i] > '9')
			return false;
		uint64_t d = (uint64_t)(s.p[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	return true;
}

static int route_of(const ms_config *cfg, ms_str path)
{
	if (str_eq(path, "/ws"))
		return ROUTE_CHAT;
	if (cfg->diag) {
		if (str_eq(path, "/echo"))
			return ROUTE_ECHO;
		if (str_eq(path, "/") && cfg->diag_root == MS_DIAG_ROOT_ECHO)
			return ROUTE_ECHO;
	}
	return ROUTE_NONE;
}

static size_t on_http(ms_worker *w, ms_conn *c, uint8_t *buf, size_t len)
{
	const ms_config *cfg = ms_worker_config(w);
	ms_http_request req;
	int r = ms_http_parse((const char *)buf, len, &req);
	if (r == 0)
		return 0; /* incomplete; the parser caps the head at MS_HTTP_MAX_HEAD */
	if (r < 0) {
		respond(w, c, -r, NULL, NULL);
		return len;
	}
	if (str_eq(req.path, "/healthz") && str_eq(req.method, "GET")) {
		if (ms_worker_draining(w))
			respond(w, c, 503, NULL, "draining\n");
		else
			respond(w, c, 200, NULL, "ok\n");
		return len;
	}
	int route = route_of(cfg, req.path);
	if (route == ROUTE_NONE) {
		respond(w, c, 404, NULL, NULL);
		return len;
	}
	ms_str key;
	int status = ms_http_ws_check(&req, &key);
	if (status) {
		respond(w, c, status,
			status == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL, NULL);
		return len;
	}
	if (ms_worker_draining(w)) {
		respond_503(w, c);
		return len;
	}
	if (route == ROUTE_CHAT) {
		if (!cfg->dev) {
			/* HS256 tokens are verified by the chat core's identity
			 * module; without it nothing is authorised. */
			respond(w, c, 401, NULL, "token required\n");
			return len;
		}
		if (!canonical_uid(ms_http_query_param(req.query, "user"))) {
			respond(w, c, 400, NULL, "dev mode: /ws?user=ID with a decimal id\n");
			return len;
		}
	}
	char out[256];
	int n = ms_http_upgrade_response(out, sizeof(out), key, NULL);
	if (n < 0) {
		respond(w, c, 500, NULL, NULL);
		return len;
	}
	ms_conn_write(w, c, out, (size_t)n);
	c->state = ST_OPEN;
	X(c)->route = (uint8_t)route;
	ms_conn_timeout(w, c, cfg->idle_timeout / 2);
	return (size_t)r + on_frames(w, c, buf + r, len - (size_t)r);
}

/* ---- handlers -------------------------------------------------------------- */

static void h_open(ms_worker *w, ms_conn *c, bool over_cap)
{
	c->state = ST_HTTP;
	if (over_cap) {
		respond_503(w, c);
		return;
	}
	ms_conn_timeout(w, c, ms_worker_config(w)->handshake_timeout);
}

static size_t h_data(ms_worker *w, ms_conn *c, uint8_t *buf, size_t len)
{
	X(c)->pinged = 0;
	if (c->state == ST_HTTP)
		return on_http(w, c, buf, len);
	return on_frames(w, c, buf, len);
}

static void h_eof(ms_worker *w, ms_conn *c, int err)
{
	/* Peer gone without a close handshake: nothing more to say. */
	ms_conn_close(w, c, err == 0 ? MS_CLOSE_FLUSH : MS_CLOSE_ABORT);
}

static void h_timeout(ms_worker *w, ms_conn *c)
{
	const ms_config *cfg = ms_worker_config(w);
	switch (c->state) {
	case ST_HTTP:
		respond(w, c, 408, NULL, NULL);
		break;
	case ST_OPEN: {
		uint32_t half = cfg->idle_timeout / 2;
		uint32_t since = ms_worker_now(w) - c->last_active;
		if (since < half) {
			ms_conn_timeout(w, c, half - since);
		} else if (!X(c)->pinged) {
			X(c)->pinged = 1;
			ws_send(w, c, MS_WS_OP_PING, NULL, 0);
			ms_conn_timeout(w, c, half);
		} else {
			ws_close(w, c, MS_WS_CLOSE_GOING_AWAY, "idle timeout");
		}
		break;
	}
	default:
		ms_conn_close(w, c, MS_CLOSE_ABORT);
		break;
	}
}

static void h_free(ms_worker *w, ms_conn *c)
{
	frag_free(X(c));
}

static void drain_one(ms_worker *w, ms_conn *c, void *arg)
{
	if (ms_conn_closing(c))
		return;
	if (c->state == ST_OPEN)
		ws_close(w, c, MS_WS_CLOSE_GOING_AWAY, "server shutting down");
	else if (c->state == ST_HTTP)
		ms_conn_close(w, c, MS_CLOSE_ABORT);
}

static void h_drain(ms_worker *w)
{
	ms_worker_foreach(w, drain_one, NULL);
}

const ms_handlers ms_net_handlers = {
	.on_open = h_open,
	.on_data = h_data,
	.on_eof = h_eof,
	.on_timeout = h_timeout,
	.on_free = h_free,
	.on_drain = h_drain,
};
