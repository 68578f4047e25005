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
 * Routes: /healthz, /ws (chat: identity is checked at the upgrade, requests
 * are parsed here and handed to the chat core), and with --diag the
 * diagnostics /echo (conformance) and /room (fan-out benchmark), either of
 * them also at / with --diag-root.
 */
#include "net/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"
#include "net/http.h"
#include "net/internal.h"
#include "net/jwt.h"
#include "net/limits.h"
#include "net/proxy.h"
#include "net/ws.h"

enum { ST_HTTP = 0, ST_OPEN, ST_CLOSING };
enum { ROUTE_NONE = 0, ROUTE_CHAT, ROUTE_ECHO, ROUTE_ROOM };
/* net_conn.lim: what the connection holds in the limit tables, and
 * whether its PROXY header is still awaited. */
enum { L_IP_HELD = 1, L_USER_HELD = 2, L_PROXY_WAIT = 4, L_HS_HELD = 8 };

#define CLOSE_WAIT_SECONDS 5 /* for the peer's close frame after ours */
/* Work one connection may make its worker do per input delivery (core
 * hands a connection at most 64 KiB of new input per loop iteration): the
 * rest waits for the next iteration, so a client pipelining pings, empty
 * frames or large publishes delays the others on its worker by a bounded
 * slice. 64 frames cover any real client's burst; past 16 KiB of payload
 * the next frame waits, so a delivery parses at most one large message
 * (a 62 KB publish of \u escapes costs ~200 us to validate and parse). */
#define WORK_FRAMES 64
#define WORK_BYTES 16384
/* Rate-limit refusals within MS_BUCKET_STRIKE_WINDOW_MS after which the
 * connection is closed 1008 "rate limit". */
#define STRIKES_MAX 256
/* The per-user buckets in the --max-conns-per-user table. */
enum { USER_BYTES = 0, USER_JOINS = 1 };
/* Fragments of one message: a stream of empty continuation frames costs
 * a parse each and is never a real message. */
#define MAX_FRAGMENTS 1024

typedef struct net_conn {
	ms_ws_rx rx;
	uint8_t route;
	uint8_t pinged;  /* idle ping sent, no input since */
	uint8_t opened;  /* the chat core was told (open/room_open) */
	uint8_t lim;     /* L_* */
	uint16_t inflight; /* requests awaiting another worker's answer */
	uint16_t frags;  /* fragments of the message being gathered */
	uint32_t exp;    /* token expiry (unix seconds), 0 = none (dev) */
	uint32_t frag_len, frag_cap;
	uint8_t *frag;   /* fragmented message being gathered */
	uint64_t uid;
	void *chat;      /* chat routes: the chat core's per-connection state */
	struct net_claims *claims; /* token's streams and dm claims, NULL = neither */
	struct tls_conn *tls; /* wss connections only */
	/* What the connection may cost (/ws only): --rate-limit, --rate-bytes,
	 * --join-rate, --create-rate, and the refusals counted against it. */
	ms_bucket rl_msgs, rl_bytes, rl_join, rl_create;
	ms_strikes strikes;
} net_conn;

/* 112: 24 more than before the per-connection limits (four 8-byte token
 * buckets and the strike count). */
_Static_assert(sizeof(net_conn) == 112, "per-connection protocol state stays small");

/* The claims a connection checks requests against: both JSON texts back to
 * back in one allocation, made only for a token that has either, so a slot
 * keeps one pointer whatever the token carries. A claim's text is never
 * empty ("[]" or "false" at least), so length 0 means no such claim. */
typedef struct net_claims {
	uint32_t streams_len;
	uint32_t dm_len;
	char text[]; /* streams, then dm */
} net_claims;

/* TLS state, allocated only for wss connections: the engine, and decrypted
 * input that did not yet form a whole frame or request (usually none). */
typedef struct tls_conn {
	ms_tls *t;
	ms_spill spill;
	uint64_t t_open; /* worker clock (ns) at accept: handshake latency */
} tls_conn;

typedef struct sink_arg {
	ms_worker *w;
	ms_conn *c;
} sink_arg;

static void sink_write(void *arg, const uint8_t *p, size_t n)
{
	sink_arg *a = arg;
	ms_conn_write_raw(a->w, a->c, p, n);
}

/* Close; a wss connection whose handshake is done says close_notify first. */
static void net_close(ms_worker *w, ms_conn *c, enum ms_close_mode mode)
{
	tls_conn *t = ((net_conn *)ms_conn_ext(c))->tls;
	if (t && mode == MS_CLOSE_FLUSH && !ms_conn_closing(c) && ms_tls_handshake_done(t->t)) {
		sink_arg a = { w, c };
		ms_tls_sink sink = { sink_write, &a };
		ms_conn_transform_now(w, c); /* queued frames go before close_notify */
		ms_tls_shutdown(t->t, &sink);
	}
	ms_conn_close(w, c, mode);
}

static inline net_conn *X(ms_conn *c)
{
	return ms_conn_ext(c);
}

/* c's listener's configuration (its context's arg). */
static inline const ms_net_opts *O(ms_worker *w, ms_conn *c)
{
	return ms_conn_ctx_arg(w, c);
}

/* ---- output helpers ------------------------------------------------------ */

static void respond(ms_worker *w, ms_conn *c, int status, const char *extra,
		    const char *body)
{
	char buf[512];
	int n = ms_http_response(buf, sizeof(buf), status, true, extra, body);
	if (status >= 400 && status < 500)
		ms_worker_stats_of(w)->http_4xx++;
	if (n > 0)
		ms_conn_write(w, c, buf, (size_t)n);
	net_close(w, c, MS_CLOSE_FLUSH);
}

static void respond_503(ms_worker *w, ms_conn *c, const char *body)
{
	/* Jittered Retry-After spreads a reconnect storm over a few seconds. */
	static __thread unsigned seed;
	if (!seed)
		seed = (unsigned)(uintptr_t)&seed ^ ms_worker_id(w) * 2654435761u;
	char extra[48];
	snprintf(extra, sizeof(extra), "Retry-After: %d\r\n", 1 + rand_r(&seed) % 5);
	respond(w, c, 503, extra, body);
}

static void ws_close(ms_worker *w, ms_conn *c, uint16_t code, const char *reason);

/* PROTOCOL.md: a client that does not drain its output (core's rule: over
 * --max-backpressure for --slow-window, or past the hard cap), or the
 * largest holder when the worker's budget is spent, is closed with 1008
 * "slow consumer". What it had not yet been handed is dropped (memory stays
 * bounded), then the close frame is queued behind the send in flight; a
 * client that never reads is cut off by the close timeout. */
static void slow_close(ms_worker *w, ms_conn *c)
{
	ms_conn_discard_output(w, c);
	if (c->state == ST_OPEN)
		ws_close(w, c, MS_WS_CLOSE_POLICY, "slow consumer");
	else
		ms_conn_close(w, c, MS_CLOSE_ABORT);
}

static void ws_send(ms_worker *w, ms_conn *c, uint8_t opcode, const void *p,
		    size_t len)
{
	/* RFC 6455 §5.5.1: after our close frame, nothing else. */
	if (c->state == ST_CLOSING && opcode != MS_WS_OP_CLOSE)
		return;
	size_t h = ms_ws_header_len(len);
	uint8_t *out = ms_conn_reserve(w, c, h + len);
	ms_ws_header(out, true, opcode, len, NULL);
	if (len)
		memcpy(out + h, p, len);
	ms_conn_commit(w, c, h + len);
}

bool ms_net_deliverable(ms_conn *c)
{
	return c->state == ST_OPEN && !ms_conn_closing(c);
}

void ms_net_request_sent(ms_worker *w, ms_conn *c)
{
	net_conn *x = X(c);
	if (++x->inflight >= ms_worker_config(w)->max_inflight)
		ms_conn_pause(w, c);
}

void ms_net_request_done(ms_worker *w, ms_conn *c)
{
	net_conn *x = X(c);
	if (x->inflight)
		x->inflight--;
	/* Half way back, not at the first answer: a client at the cap would
	 * otherwise pause and resume on every answer. */
	if (x->inflight <= ms_worker_config(w)->max_inflight / 2)
		ms_conn_resume(w, c);
}

static ms_rate create_rate(const ms_config *cfg)
{
	return ms_rate_msgs(cfg->create_rate_s, cfg->create_burst);
}

bool ms_net_may_create(ms_worker *w, ms_conn *c)
{
	const ms_config *cfg = ms_worker_config(w);
	if (!cfg->create_rate_s || X(c)->route != ROUTE_CHAT)
		return true;
	ms_rate r = create_rate(cfg);
	return ms_bucket_take(&X(c)->rl_create, &r, 1, ms_worker_now_ms(w));
}

void ms_net_not_created(ms_worker *w, ms_conn *c)
{
	const ms_config *cfg = ms_worker_config(w);
	if (!cfg->create_rate_s || X(c)->route != ROUTE_CHAT)
		return;
	ms_rate r = create_rate(cfg);
	ms_bucket_give(&X(c)->rl_create, &r, 1, ms_worker_now_ms(w));
}

uint64_t ms_net_uid(ms_conn *c)
{
	return X(c)->uid;
}

void **ms_net_chat_slot(ms_conn *c)
{
	return &X(c)->chat;
}

bool ms_net_stream_allowed(ms_conn *c, ms_str stream)
{
	net_conn *x = X(c);
	if (!x->exp)
		return true; /* dev mode: every stream */
	ms_str claims = { 0 };
	if (x->claims)
		claims = (ms_str){ x->claims->text, x->claims->streams_len };
	return ms_jwt_stream_allowed(claims, x->uid, stream);
}

bool ms_net_dm_allowed(ms_conn *c, uint64_t to)
{
	net_conn *x = X(c);
	ms_str dm = { 0 };
	if (x->claims)
		dm = (ms_str){ x->claims->text + x->claims->streams_len, x->claims->dm_len };
	return ms_jwt_dm_allowed(dm, to);
}

void ms_net_send_text(ms_worker *w, ms_conn *c, const void *p, size_t n)
{
	ws_send(w, c, MS_WS_OP_TEXT, p, n);
}

void ms_net_reply(ms_worker *w, ms_conn *c, const void *json, size_t n)
{
	ws_send(w, c, MS_WS_OP_TEXT, json, n);
	ms_worker_stats_of(w)->msgs_out++;
}

void ms_net_send_ok(ms_worker *w, ms_conn *c, bool has_id, int64_t id)
{
	char b[48]; /* {"id":-9223372036854775808,"ok":true} */
	ms_net_reply(w, c, b, ms_proto_enc_ok(b, sizeof(b), has_id, id));
}

void ms_net_send_error(ms_worker *w, ms_conn *c, bool has_id, int64_t id,
		       int code, const char *msg)
{
	ms_worker_stats_of(w)->req_errors++;
	char b[256];
	size_t n = ms_proto_enc_error(b, sizeof(b), has_id, id, code, msg);
	if (n <= sizeof(b)) {
		ms_net_reply(w, c, b, n);
		return;
	}
	char *h = malloc(n); /* messages are short constants: never in practice */
	if (!h)
		abort();
	ms_net_reply(w, c, h, ms_proto_enc_error(h, n, has_id, id, code, msg));
	free(h);
}

/* Start the closing handshake: our close frame, then wait for the peer's. */
static void ws_close(ms_worker *w, ms_conn *c, uint16_t code, const char *reason)
{
	uint8_t payload[MS_WS_MAX_CONTROL];
	size_t n = ms_ws_close_payload(payload, code, reason);
	/* The state first: the send below may find the connection over its
	 * backpressure limit, and that path must then abort, not close again. */
	c->state = ST_CLOSING;
	ms_conn_timeout(w, c, CLOSE_WAIT_SECONDS);
	ws_send(w, c, MS_WS_OP_CLOSE, payload, n);
}

/* Fail the connection (RFC 6455 §7.1.7): close frame, then close TCP. */
static void ws_fail(ms_worker *w, ms_conn *c, uint16_t code, const char *reason)
{
	uint8_t payload[MS_WS_MAX_CONTROL];
	size_t n = ms_ws_close_payload(payload, code, reason);
	ms_worker_stats *st = ms_worker_stats_of(w);
	if (code == MS_WS_CLOSE_TOO_BIG)
		st->ws_too_big++;
	else if (code == MS_WS_CLOSE_INVALID_DATA)
		st->ws_utf8_errors++;
	else
		st->ws_protocol_errors++;
	c->state = ST_CLOSING;
	ws_send(w, c, MS_WS_OP_CLOSE, payload, n);
	net_close(w, c, MS_CLOSE_FLUSH);
}

void ms_net_kick(ms_worker *w, ms_conn *c, const char *reason)
{
	if (c->state == ST_OPEN && !ms_conn_closing(c))
		ws_close(w, c, MS_WS_CLOSE_POLICY, reason);
}

/* ---- messages -------------------------------------------------------------- */

/* adopt_token's result beside the MS_JWT_* codes: a valid token for
 * another user than the connection's. */
#define JWT_OTHER_USER (-1000)

static int auth_reason(int jwt)
{
	switch (jwt) {
	case MS_JWT_MALFORMED:
		return MS_AUTH_MALFORMED;
	case MS_JWT_BAD_ALG:
		return MS_AUTH_BAD_ALG;
	case MS_JWT_BAD_SIG:
		return MS_AUTH_BAD_SIGNATURE;
	case MS_JWT_EXPIRED:
		return MS_AUTH_EXPIRED;
	case MS_JWT_BAD_SUB:
		return MS_AUTH_BAD_SUB;
	case MS_JWT_BAD_CLAIM:
		return MS_AUTH_BAD_CLAIM;
	case JWT_OTHER_USER:
		return MS_AUTH_WRONG_USER;
	default:
		return MS_AUTH_OTHER;
	}
}

/* Verify a token against the configured secrets. On success stores the
 * identity and claims in x (replacing earlier ones) and returns MS_JWT_OK;
 * else an MS_JWT_* code, or JWT_OTHER_USER when same_sub and the token is
 * another user's. */
static int adopt_token(const ms_net_opts *o, net_conn *x, const char *tok, size_t n,
		       bool same_sub)
{
	if (o->nsecrets == 0)
		return MS_JWT_BAD_SIG;
	char *scratch = malloc(n + 1);
	if (!scratch)
		abort();
	ms_jwt_claims cl;
	int r = ms_jwt_verify(tok, n, o->secrets, o->nsecrets, (int64_t)time(NULL),
			      scratch, n + 1, &cl);
	if (r == MS_JWT_OK && same_sub && cl.sub != x->uid)
		r = JWT_OTHER_USER;
	if (r == MS_JWT_OK) {
		free(x->claims);
		x->claims = NULL;
		if (cl.has_streams || cl.has_dm) {
			/* Both spans lie in the token, itself under --max-message
			 * or the 8 KiB HTTP head: the lengths fit 32 bits. */
			net_claims *k = malloc(sizeof(*k) + cl.streams.n + cl.dm.n);
			if (!k)
				abort();
			k->streams_len = (uint32_t)cl.streams.n;
			k->dm_len = (uint32_t)cl.dm.n;
			/* An absent claim's span is { NULL, 0 }: no memcpy of it. */
			if (cl.streams.n)
				memcpy(k->text, cl.streams.p, cl.streams.n);
			if (cl.dm.n)
				memcpy(k->text + cl.streams.n, cl.dm.p, cl.dm.n);
			x->claims = k;
		}
		x->uid = cl.sub;
		x->exp = cl.exp > UINT32_MAX ? UINT32_MAX : (uint32_t)cl.exp;
	}
	free(scratch);
	return r;
}

static bool token_expired(const net_conn *x)
{
	return x->exp && (uint64_t)time(NULL) >= x->exp;
}

/* Next timer: half the idle timeout, or the token's expiry if sooner. */
static void arm_timer(ms_worker *w, ms_conn *c, uint32_t secs)
{
	net_conn *x = X(c);
	if (x->exp) {
		int64_t left = (int64_t)x->exp - (int64_t)time(NULL);
		if (left < (int64_t)secs)
			secs = left > 1 ? (uint32_t)left : 1;
	}
	ms_conn_timeout(w, c, secs);
}

/* The buckets of a new /ws connection, full. */
static void rates_init(ms_worker *w, net_conn *x)
{
	const ms_config *cfg = ms_worker_config(w);
	uint32_t now = ms_worker_now_ms(w);
	ms_rate r = ms_rate_msgs(cfg->rate_msgs, cfg->rate_burst);
	ms_bucket_init(&x->rl_msgs, &r, now);
	r = ms_rate_bytes(cfg->rate_bytes_s, cfg->rate_bytes_burst);
	ms_bucket_init(&x->rl_bytes, &r, now);
	r = ms_rate_msgs(cfg->join_rate_s, cfg->join_burst);
	ms_bucket_init(&x->rl_join, &r, now);
	r = create_rate(cfg);
	ms_bucket_init(&x->rl_create, &r, now);
	x->strikes = (ms_strikes){ 0, 0 };
}

/* Rate limits (docs/limits.md): publish and dm take one from --rate-limit
 * and their data's size from --rate-bytes (so a burst of large DMs cannot
 * fill someone else's queue); join, leave and presence take one from
 * --join-rate. A refused request gets error 429 and is dropped; more than
 * the --rate-limit burst of refusals within MS_BUCKET_STRIKE_WINDOW_MS is
 * persistent abuse: close 1008 "rate limit". */
static bool rate_ok(ms_worker *w, ms_conn *c, const ms_req *req)
{
	const ms_config *cfg = ms_worker_config(w);
	net_conn *x = X(c);
	uint32_t now = ms_worker_now_ms(w);
	bool ok;
	if (req->op == MS_REQ_PUBLISH || req->op == MS_REQ_DM) {
		ms_rate rm = ms_rate_msgs(cfg->rate_msgs, cfg->rate_burst);
		ms_rate rb = ms_rate_bytes(cfg->rate_bytes_s, cfg->rate_bytes_burst);
		uint32_t n = req->data.n > UINT32_MAX ? UINT32_MAX : (uint32_t)req->data.n;
		ok = !cfg->rate_msgs || ms_bucket_has(&x->rl_msgs, &rm, 1, now);
		if (ok && cfg->rate_bytes_s) {
			/* Bytes are what fill a recipient's queue, so they are
			 * counted per user: one user's connections together cannot
			 * push a reader past its hard cap in a burst. Without the
			 * per-user table (--max-conns-per-user 0), per connection. */
			if (x->lim & L_USER_HELD) {
				ms_lkey k = ms_lkey_uid(x->uid);
				ok = ms_climit_take(O(w, c)->per_user, &k, USER_BYTES, &rb, n,
						    (uint32_t)(ms_worker_now_ns(w) / 1000000));
			} else {
				ok = ms_bucket_take(&x->rl_bytes, &rb, n, now);
			}
		}
		if (ok && cfg->rate_msgs)
			ms_bucket_take(&x->rl_msgs, &rm, 1, now);
	} else if (req->op == MS_REQ_JOIN || req->op == MS_REQ_LEAVE ||
		   req->op == MS_REQ_PRESENCE) {
		ms_rate rj = ms_rate_msgs(cfg->join_rate_s, cfg->join_burst);
		if (!cfg->join_rate_s) {
			ok = true;
		} else if (x->lim & L_USER_HELD) {
			/* Per user too: a join or leave is a presence event to every
			 * member, and reconnecting must not buy a fresh burst. */
			ms_lkey k = ms_lkey_uid(x->uid);
			ok = ms_climit_take(O(w, c)->per_user, &k, USER_JOINS, &rj, 1,
					    (uint32_t)(ms_worker_now_ns(w) / 1000000));
		} else {
			ok = ms_bucket_take(&x->rl_join, &rj, 1, now);
		}
	} else {
		return true;
	}
	if (ok)
		return true;
	ms_worker_stats *st = ms_worker_stats_of(w);
	st->rate_limited++;
	/* A client that goes on after this many refusals ignores 429 (each
	 * still costs a parse): the --rate-limit burst, at most STRIKES_MAX. */
	uint32_t allowed = cfg->rate_burst ? cfg->rate_burst : cfg->join_burst;
	if (allowed > STRIKES_MAX)
		allowed = STRIKES_MAX;
	if (ms_strike(&x->strikes, now) > allowed) {
		st->rate_closes++;
		/* Persistent abuse: no close handshake (its close frame would be
		 * behind whatever it keeps sending); the close frame, then FIN. */
		ws_close(w, c, MS_WS_CLOSE_POLICY, "rate limit");
		net_close(w, c, MS_CLOSE_FLUSH);
		return false;
	}
	ms_net_send_error(w, c, req->has_id, req->id, 429, "rate limited");
	return false;
}

static void chat_request(ms_worker *w, ms_conn *c, uint8_t opcode, const uint8_t *p,
			 size_t len)
{
	net_conn *x = X(c);
	if (token_expired(x)) {
		ws_close(w, c, MS_WS_CLOSE_POLICY, "token expired");
		return;
	}
	if (opcode != MS_WS_OP_TEXT) {
		ms_net_send_error(w, c, false, 0, 400, "messages are JSON text frames");
		return;
	}
	ms_req req;
	const char *err = NULL;
	if (ms_proto_parse((const char *)p, len, &req, &err) != 0) {
		ms_net_send_error(w, c, req.has_id, req.id, 400, err ? err : "bad request");
		return;
	}
	if (req.op == MS_REQ_PING) {
		ms_net_send_ok(w, c, req.has_id, req.id);
		uint64_t now = ms_clock_ns(), t = ms_worker_now_ns(w);
		ms_worker_record(w, MS_HIST_OP_PING, now > t ? now - t : 0);
		return;
	}
	if (!rate_ok(w, c, &req))
		return;
	if (req.op == MS_REQ_AUTH) {
		if (!x->exp) {
			ms_net_send_error(w, c, req.has_id, req.id, 400,
					  "dev mode connection: nothing to refresh");
			return;
		}
		int r = adopt_token(O(w, c), x, req.token.p, req.token.n, true);
		if (r != MS_JWT_OK) {
			char where[48];
			snprintf(where, sizeof(where), "auth op of user %llu", (unsigned long long)x->uid);
			ms_net__auth_failed(w, c, auth_reason(r), where);
			ms_net_send_error(w, c, req.has_id, req.id,
					  r == JWT_OTHER_USER ? 403 : 401,
					  r == JWT_OTHER_USER ? "token is for another user"
							      : "invalid token");
			return;
		}
		ms_net_send_ok(w, c, req.has_id, req.id);
		arm_timer(w, c, ms_worker_config(w)->idle_timeout / 2);
		/* After the reply: the client learns the token was taken before
		 * it learns which streams the token no longer allows. */
		const ms_chat_hooks *chat = O(w, c)->chat;
		if (chat && chat->reauth)
			chat->reauth(w, c);
		return;
	}
	const ms_chat_hooks *chat = O(w, c)->chat;
	if (!chat) {
		ms_net_send_error(w, c, req.has_id, req.id, 503, "chat core not available");
		return;
	}
	if (ms_worker_draining(w)) {
		/* Graceful shutdown: what was accepted before is delivered; new
		 * work is refused with an answer rather than lost silently. */
		ms_net_send_error(w, c, req.has_id, req.id, 503, "server shutting down");
		return;
	}
	chat->request(w, c, &req);
}

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
	case ROUTE_CHAT:
		chat_request(w, c, opcode, p, len);
		break;
	case ROUTE_ROOM: {
		const ms_chat_hooks *chat = O(w, c)->chat;
		if (chat && !ms_worker_draining(w))
			chat->room_message(w, c, opcode, p, len);
		break;
	}
	default:
		break;
	}
}

/* The codec bounds a message at --max-message, so the buffer doubles up
 * to that and no further. Its size counts in the worker's input budget. */
static void gather(ms_worker *w, net_conn *x, const uint8_t *p, size_t len)
{
	if (len == 0)
		return;
	if (x->frag_len + len > x->frag_cap) {
		size_t max = ms_worker_config(w)->max_message;
		size_t cap = x->frag_cap ? x->frag_cap : 1024;
		while (cap < x->frag_len + len)
			cap *= 2;
		if (cap > max && x->frag_len + len <= max)
			cap = max;
		x->frag = realloc(x->frag, cap);
		if (!x->frag)
			abort();
		ms_worker_input_bytes(w, (int64_t)cap - x->frag_cap);
		x->frag_cap = (uint32_t)cap;
	}
	memcpy(x->frag + x->frag_len, p, len);
	x->frag_len += (uint32_t)len;
}

static void frag_free(ms_worker *w, net_conn *x)
{
	ms_worker_input_bytes(w, -(int64_t)x->frag_cap);
	free(x->frag);
	x->frag = NULL;
	x->frag_len = x->frag_cap = 0;
	x->frags = 0;
}

/* Bytes the frame that on_frames stopped in needs in total (0: none or
 * unknown), for sizing the buffer that keeps it. */
static __thread size_t frame_need;

static size_t on_frames(ms_worker *w, ms_conn *c, uint8_t *buf, size_t len)
{
	const ms_config *cfg = ms_worker_config(w);
	net_conn *x = X(c);
	size_t off = 0, bytes = 0;
	unsigned frames = 0;
	frame_need = 0;
	while (off < len && !ms_conn_closing(c)) {
		if (ms_conn_paused(c))
			break; /* a TLS connection paused while its records are decrypted */
		if (x->inflight >= cfg->max_inflight) {
			ms_conn_pause(w, c); /* resumed as answers come back */
			break;
		}
		if (frames >= WORK_FRAMES || bytes >= WORK_BYTES) {
			/* Budget spent: yield, parse the rest next iteration. */
			ms_conn_pause(w, c);
			ms_conn_resume(w, c);
			break;
		}
		ms_ws_event ev;
		size_t n = ms_ws_next(&x->rx, buf + off, len - off, cfg->max_message, &ev);
		if (ev.kind == MS_WS_EV_NEED_MORE) {
			frame_need = ev.need;
			break;
		}
		if (ev.kind == MS_WS_EV_ERROR) {
			ws_fail(w, c, ev.close_code,
				ev.close_code == MS_WS_CLOSE_TOO_BIG ? "message too big" :
				ev.close_code == MS_WS_CLOSE_INVALID_DATA ? "invalid UTF-8" :
				"protocol error");
			return len;
		}
		off += n;
		frames++;
		bytes += ev.len;
		if (c->state == ST_CLOSING && ev.kind != MS_WS_EV_CLOSE)
			continue; /* after our close frame, only the peer's close matters */
		switch (ev.kind) {
		case MS_WS_EV_MESSAGE:
			on_message(w, c, ev.opcode, ev.data, ev.len);
			break;
		case MS_WS_EV_FRAGMENT:
			if (++x->frags > MAX_FRAGMENTS) {
				ws_fail(w, c, MS_WS_CLOSE_TOO_BIG, "too many fragments");
				return len;
			}
			gather(w, x, ev.data, ev.len);
			if (ev.fin) {
				on_message(w, c, ev.opcode, x->frag, x->frag_len);
				frag_free(w, x);
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
			net_close(w, c, MS_CLOSE_FLUSH);
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

static int route_of(const ms_config *cfg, ms_str path)
{
	if (str_eq(path, "/ws"))
		return ROUTE_CHAT;
	if (cfg->diag) {
		if (str_eq(path, "/echo"))
			return ROUTE_ECHO;
		if (str_eq(path, "/room"))
			return ROUTE_ROOM;
		if (str_eq(path, "/") && cfg->diag_root == MS_DIAG_ROOT_ECHO)
			return ROUTE_ECHO;
		if (str_eq(path, "/") && cfg->diag_root == MS_DIAG_ROOT_ROOM)
			return ROUTE_ROOM;
	}
	return ROUTE_NONE;
}

/* The 101 is queued, or c is freed without one: it no longer counts as
 * handshaking from its address. */
static void handshake_done(ms_worker *w, ms_conn *c)
{
	net_conn *x = X(c);
	const struct sockaddr *sa = ms_conn_peer(w, c);
	ms_lkey k;
	if (!(x->lim & L_HS_HELD))
		return;
	x->lim &= (uint8_t)~L_HS_HELD;
	if (sa && ms_lkey_addr(&k, sa))
		ms_climit_release(O(w, c)->per_handshake, &k);
}

/* An upgrade's token (PROTOCOL.md "Identity"): ?token=, else
 * Authorization: Bearer, else the subprotocol bearer.JWT that browsers send
 * beside mezon.v1. Sets *mezon when mezon.v1 was offered. n == 0: none. */
static ms_str upgrade_token(const ms_http_request *req, bool *mezon)
{
	ms_str tok = ms_http_query_param(req->query, "token");
	const ms_http_header *auth = ms_http_header_get(req, "authorization");
	if (!tok.n && auth && auth->value.n > 7 && strncasecmp(auth->value.p, "Bearer ", 7) == 0)
		tok = (ms_str){ auth->value.p + 7, auth->value.n - 7 };
	const ms_http_header *sp = ms_http_header_get(req, "sec-websocket-protocol");
	if (sp) {
		/* Comma list: find mezon.v1 and bearer.<token>. */
		const char *p = sp->value.p, *end = p + sp->value.n;
		while (p < end) {
			while (p < end && (*p == ' ' || *p == ','))
				p++;
			const char *e = p;
			while (e < end && *e != ',' && *e != ' ')
				e++;
			if (e - p == 8 && memcmp(p, "mezon.v1", 8) == 0)
				*mezon = true;
			else if (e - p > 7 && memcmp(p, "bearer.", 7) == 0 && !tok.n)
				tok = (ms_str){ p + 7, (size_t)(e - p - 7) };
			p = e;
		}
	}
	return tok;
}

static const char *const route_names[] = {
	[ROUTE_CHAT] = "upgrade /ws", [ROUTE_ECHO] = "upgrade /echo", [ROUTE_ROOM] = "upgrade /room",
};

/* Who c is: the user of a valid token; in --dev also /ws?user=ID, and
 * nobody on the diagnostic routes, which stay open there for benchmarks.
 * Outside --dev the diagnostic routes need a token like /ws: /echo answers
 * anything and /room rebroadcasts to every /room client. Otherwise answers
 * (401, or 400 for a bad dev-mode user) and returns false. */
static bool identify(ms_worker *w, ms_conn *c, const ms_http_request *req, int route, ms_str tok)
{
	const ms_config *cfg = ms_worker_config(w);
	net_conn *x = X(c);
	if (cfg->dev && route != ROUTE_CHAT)
		return true;
	if (tok.n) {
		int r = adopt_token(O(w, c), x, tok.p, tok.n, false);
		if (r == MS_JWT_OK)
			return true;
		ms_net__auth_failed(w, c, auth_reason(r), route_names[route]);
		respond(w, c, 401, NULL, "invalid or expired token\n");
		return false;
	}
	if (cfg->dev) {
		if (ms_proto_uid(ms_http_query_param(req->query, "user"), &x->uid))
			return true;
		respond(w, c, 400, NULL, "dev mode: /ws?user=ID with a decimal id\n");
		return false;
	}
	ms_net__auth_failed(w, c, MS_AUTH_MISSING, route_names[route]);
	respond(w, c, 401, NULL, "token required\n");
	return false;
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
		respond_503(w, c, "draining\n");
		return len;
	}
	if (cfg->allowed_origins[0]) {
		/* Browsers always send Origin on a WebSocket upgrade; other
		 * clients need not, and cannot be told apart by it anyway. */
		const ms_http_header *o = ms_http_header_get(&req, "origin");
		if (o && !ms_origin_allowed(cfg->allowed_origins, o->value.p, o->value.n)) {
			ms_worker_stats_of(w)->origin_rejects++;
			respond(w, c, 403, NULL, "origin not allowed\n");
			return len;
		}
	}
	net_conn *x = X(c);
	bool mezon = false;
	if (!identify(w, c, &req, route, upgrade_token(&req, &mezon)))
		return len;
	const char *subproto = mezon ? "mezon.v1" : NULL;
	const ms_net_opts *o = O(w, c);
	if (route == ROUTE_CHAT) {
		if (o->per_user) {
			ms_lkey k = ms_lkey_uid(x->uid);
			if (ms_climit_acquire(o->per_user, &k) != 0) {
				ms_worker_stats_of(w)->user_rejects++;
				respond_503(w, c, "too many connections for this user\n");
				return len;
			}
			x->lim |= L_USER_HELD;
		}
		rates_init(w, x);
	}
	char out[256];
	int n = ms_http_upgrade_response(out, sizeof(out), key, subproto);
	if (n < 0) {
		respond(w, c, 500, NULL, NULL);
		return len;
	}
	ms_conn_write(w, c, out, (size_t)n);
	ms_worker_stats_of(w)->upgrades++;
	c->state = ST_OPEN;
	handshake_done(w, c);
	x->route = (uint8_t)route;
	if (o->chat && route == ROUTE_CHAT) {
		x->opened = 1;
		o->chat->open(w, c, x->uid);
	} else if (o->chat && route == ROUTE_ROOM) {
		x->opened = 1;
		o->chat->room_open(w, c);
	}
	arm_timer(w, c, cfg->idle_timeout / 2);
	return (size_t)r + on_frames(w, c, buf + r, len - (size_t)r);
}

/* ---- handlers -------------------------------------------------------------- */

/* Count c under its source address (the PROXY header's, else the peer's):
 * for --max-conns-per-ip while it lives, for --max-handshakes-per-ip until
 * its 101. Over either: 503 and close (TLS: close, as a 503 needs a TLS
 * session first). Unknown address (PROXY LOCAL or UNKNOWN): not counted. */
static bool admit_ip(ms_worker *w, ms_conn *c)
{
	const struct sockaddr *sa = ms_conn_peer(w, c);
	ms_lkey k;
	if (!sa || !ms_lkey_addr(&k, sa))
		return true;
	ms_worker_stats *st = ms_worker_stats_of(w);
	const ms_net_opts *o = O(w, c);
	const char *flag = NULL, *body = NULL;
	if (o->per_ip) {
		if (ms_climit_acquire(o->per_ip, &k) == 0) {
			X(c)->lim |= L_IP_HELD;
		} else {
			st->ip_rejects++;
			flag = "--max-conns-per-ip";
			body = "too many connections from this address\n";
		}
	}
	if (!flag && o->per_handshake) {
		if (ms_climit_acquire(o->per_handshake, &k) == 0) {
			X(c)->lim |= L_HS_HELD;
		} else {
			st->handshake_ip_rejects++;
			flag = "--max-handshakes-per-ip";
			body = "too many handshakes from this address\n";
		}
	}
	if (!flag)
		return true; /* h_free gives back what is held */
	char text[64];
	ms_debug("conn %u: over %s for %s", c->idx, flag, ms_lkey_addr_text(&k, text, sizeof(text)));
	if (o->tls)
		ms_conn_close(w, c, MS_CLOSE_ABORT);
	else
		respond_503(w, c, body);
	return false;
}

static void h_open(ms_worker *w, ms_conn *c, bool over_cap)
{
	c->state = ST_HTTP;
	/* Accepted while draining (raced the listener's close): a short
	 * deadline, so it cannot hold the drain up. */
	uint32_t deadline = ms_worker_draining(w) ? 1 : ms_worker_config(w)->handshake_timeout;
	ms_tls_ctx *tls = O(w, c)->tls; /* TLS is a property of the listener's context */
	if (over_cap) {
		/* A 503 needs a TLS session first: over capacity, TLS just closes. */
		if (tls)
			ms_conn_close(w, c, MS_CLOSE_ABORT);
		else
			respond_503(w, c, ms_worker_overloaded(w) ? "overloaded\n" : "over capacity\n");
		return;
	}
	/* The handshake deadline is absolute: input does not move it, so a
	 * client dribbling bytes cannot keep the slot (slowloris). */
	ms_conn_timeout(w, c, deadline);
	if (ms_worker_config(w)->proxy_protocol)
		X(c)->lim |= L_PROXY_WAIT; /* admit_ip once the header is in */
	else if (!admit_ip(w, c))
		return;
	if (tls) {
		tls_conn *t = calloc(1, sizeof(*t));
		if (!t || !(t->t = ms_tls_new(tls))) {
			free(t);
			ms_conn_close(w, c, MS_CLOSE_ABORT);
			return;
		}
		t->t_open = ms_worker_now_ns(w);
		X(c)->tls = t;
		ms_conn_set_transform(c);
	}
}

static size_t plain_data(ms_worker *w, ms_conn *c, uint8_t *buf, size_t len)
{
	if (c->state == ST_HTTP)
		return on_http(w, c, buf, len);
	return on_frames(w, c, buf, len);
}

/* Decrypted bytes: parse them like plain input, keeping an incomplete tail
 * (the core does the same for plain connections). */
static void tls_plain(ms_worker *w, ms_conn *c, tls_conn *t, uint8_t *p, size_t n)
{
	uint32_t cap = t->spill.cap;
	size_t len;
	uint8_t *buf = ms_spill_join(&t->spill, p, n, &len);
	frame_need = 0;
	size_t used = ms_conn_paused(c) ? 0 : plain_data(w, c, buf, len);
	if (ms_conn_closing(c)) {
		ms_spill_free(&t->spill);
	} else {
		ms_spill_keep(&t->spill, buf, len, used);
		if (frame_need > t->spill.cap && t->spill.len)
			ms_spill_reserve(&t->spill, frame_need);
	}
	ms_worker_input_bytes(w, (int64_t)t->spill.cap - cap);
}

/* Greedy read: everything the engine can decrypt from this input, in
 * plaintext chunks of up to one record. */
static size_t tls_data(ms_worker *w, ms_conn *c, tls_conn *t, uint8_t *buf, size_t len)
{
	static __thread uint8_t pt[MS_XFORM_CHUNK + 1024];
	sink_arg a = { w, c };
	ms_tls_sink sink = { sink_write, &a };
	const uint8_t *in = buf;
	size_t n = len;
	bool more;
	bool was_done = ms_tls_handshake_done(t->t);
	/* Decrypted input kept while the connection was paused goes first. */
	if (t->spill.len && was_done) {
		uint8_t none;
		tls_plain(w, c, t, &none, 0);
		if (ms_conn_closing(c))
			return len;
	}
	if (!len)
		return 0;
	do {
		size_t got = 0;
		/* Anything the engine writes now (handshake, alerts, tickets) must
		 * follow the records of what is already queued. */
		ms_conn_transform_now(w, c);
		int r = ms_tls_read(t->t, in, n, pt, sizeof(pt), &got, &more, &sink);
		in = NULL;
		n = 0;
		if (!was_done && ms_tls_handshake_done(t->t)) {
			was_done = true;
			ms_worker_stats *st = ms_worker_stats_of(w);
			st->tls_handshakes++;
			st->tls_resumed += ms_tls_session_reused(t->t);
			ms_worker_record(w, MS_HIST_TLS_HANDSHAKE, ms_worker_now_ns(w) - t->t_open);
		}
		if (got)
			tls_plain(w, c, t, pt, got);
		if (r != MS_TLS_OK) {
			if (!was_done)
				ms_worker_stats_of(w)->tls_failures++;
			/* Fatal (the engine wrote an alert) or close_notify. */
			net_close(w, c, MS_CLOSE_FLUSH);
			return len;
		}
		if (ms_conn_closing(c))
			return len;
	} while (more);
	return len;
}

/* --proxy-protocol: the header comes first, before TLS or HTTP; until it
 * is whole, input is kept (the parser bounds it). Missing or malformed:
 * close without an answer (whoever sent it is not our balancer). */
static size_t proxy_data(ms_worker *w, ms_conn *c, uint8_t *buf, size_t len, size_t *used)
{
	ms_proxy_info pi;
	int r = ms_proxy_parse(buf, len, &pi);
	if (r == 0) {
		*used = 0;
		return 0;
	}
	if (r < 0) {
		ms_debug("conn %u: missing or malformed PROXY header", c->idx);
		ms_worker_stats_of(w)->proxy_rejects++;
		ms_conn_close(w, c, MS_CLOSE_ABORT);
		*used = len;
		return 0;
	}
	X(c)->lim &= (uint8_t)~L_PROXY_WAIT;
	if (!pi.local)
		ms_conn_set_peer(w, c, (const struct sockaddr *)&pi.src, pi.src_len);
	*used = (size_t)r;
	if (!admit_ip(w, c))
		*used = len;
	return (size_t)r;
}

static size_t h_data(ms_worker *w, ms_conn *c, uint8_t *buf, size_t len)
{
	net_conn *x = X(c);
	size_t skip = 0;
	x->pinged = 0;
	frame_need = 0;
	if (x->lim & L_PROXY_WAIT) {
		size_t used;
		skip = proxy_data(w, c, buf, len, &used);
		if (!skip || ms_conn_closing(c) || skip == len)
			return used;
	}
	if (x->tls)
		return skip + tls_data(w, c, x->tls, buf + skip, len - skip);
	size_t used = skip + plain_data(w, c, buf + skip, len - skip);
	if (frame_need > len - used)
		ms_conn_input_need(w, c, frame_need);
	return used;
}

static void h_transform(ms_worker *w, ms_conn *c, const uint8_t *p, size_t n)
{
	sink_arg a = { w, c };
	ms_tls_sink sink = { sink_write, &a };
	ms_worker_stats_of(w)->records++;
	if (!X(c)->tls || ms_tls_write(X(c)->tls->t, p, n, &sink) != MS_TLS_OK)
		ms_conn_close(w, c, MS_CLOSE_ABORT);
}

static bool h_eof(ms_worker *w, ms_conn *c, int err)
{
	/* Peer gone without a close handshake: nothing more to say. */
	net_close(w, c, err == 0 ? MS_CLOSE_FLUSH : MS_CLOSE_ABORT);
	return false;
}

static void h_timeout(ms_worker *w, ms_conn *c)
{
	const ms_config *cfg = ms_worker_config(w);
	switch (c->state) {
	case ST_HTTP:
		ms_worker_stats_of(w)->http_timeouts++;
		if (X(c)->lim & L_PROXY_WAIT)
			ms_conn_close(w, c, MS_CLOSE_ABORT); /* no PROXY header: no answer */
		else if (X(c)->tls && !ms_tls_handshake_done(X(c)->tls->t))
			ms_conn_close(w, c, MS_CLOSE_ABORT); /* TLS handshake timeout */
		else
			respond(w, c, 408, NULL, NULL);
		break;
	case ST_OPEN: {
		uint32_t half = cfg->idle_timeout / 2;
		uint32_t since = ms_worker_now(w) - c->last_active;
		if (token_expired(X(c))) {
			ws_close(w, c, MS_WS_CLOSE_POLICY, "token expired");
		} else if (since < half) {
			arm_timer(w, c, half - since);
		} else if (!X(c)->pinged) {
			X(c)->pinged = 1;
			ws_send(w, c, MS_WS_OP_PING, NULL, 0);
			arm_timer(w, c, half);
		} else {
			ws_close(w, c, MS_WS_CLOSE_GOING_AWAY, "idle timeout");
		}
		break;
	}
	default:
		net_close(w, c, MS_CLOSE_ABORT);
		break;
	}
}

static void h_free(ms_worker *w, ms_conn *c)
{
	net_conn *x = X(c);
	const ms_net_opts *o = O(w, c);
	if (x->opened && o->chat)
		o->chat->close(w, c);
	frag_free(w, x);
	if (x->lim & L_USER_HELD) {
		ms_lkey k = ms_lkey_uid(x->uid);
		ms_climit_release(o->per_user, &k);
	}
	handshake_done(w, c);
	ms_lkey k;
	const struct sockaddr *sa = ms_conn_peer(w, c);
	if ((x->lim & L_IP_HELD) && sa && ms_lkey_addr(&k, sa))
		ms_climit_release(o->per_ip, &k);
	x->lim = 0;
	free(x->claims);
	x->claims = NULL;
	if (x->tls) {
		ms_tls_free(x->tls->t);
		ms_worker_input_bytes(w, -(int64_t)x->tls->spill.cap);
		ms_spill_free(&x->tls->spill);
		free(x->tls);
		x->tls = NULL;
	}
}

/* Shutdown: an open WebSocket gets 1001; a request on its way gets its
 * answer (503 while draining) rather than a reset, and one that does not
 * come within a second gets a 408. Core skips connections already closing. */
static void h_drain(ms_worker *w, ms_conn *c)
{
	if (c->state == ST_OPEN)
		ws_close(w, c, MS_WS_CLOSE_GOING_AWAY, "server shutting down");
	else if (c->state == ST_HTTP)
		ms_conn_timeout(w, c, 1);
}

static void h_shed(ms_worker *w, ms_conn *c)
{
	slow_close(w, c);
}

static const ms_conn_handlers net_handlers = {
	.on_open = h_open,
	.on_data = h_data,
	.on_eof = h_eof,
	.on_timeout = h_timeout,
	.on_free = h_free,
	.on_drain = h_drain,
	.on_transform = h_transform,
	.on_shed = h_shed,
};

ms_ctx ms_net_context(const ms_config *cfg, const ms_net_opts *o)
{
	return (ms_ctx){
		.h = &net_handlers,
		.ext_size = sizeof(net_conn),
		.arg = (void *)o,
		.name = o->tls ? "tls" : "plain",
		/* Both per-address limits key on the peer address, and
		 * --max-handshakes-per-ip is always on; with --proxy-protocol
		 * the header's source counts instead. */
		.flags = cfg->proxy_protocol ? 0 : MS_CTX_PEER,
	};
}
