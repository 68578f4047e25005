/*
 * Workers: one pinned thread per core, each with its own ring, listeners,
 * connection pool and timer wheel; nothing shared but the read-only config
 * and the stop flag. The layers above plug in through socket contexts
 * (ms_ctx: a handler table and per-connection state size per listener or
 * outbound protocol) and worker hooks (ms_worker_hooks), and drive
 * connections with the ms_conn_* calls below, on the worker thread.
 *
 * Loop (DESIGN §3): one enter (submit + wait) → every CQE → flush dirty
 * connections (one send each) → re-arm stopped multishot requests → timers →
 * free the connections closed this iteration.
 */
#ifndef MS_CORE_WORKER_H
#define MS_CORE_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/config.h"
#include "core/conn.h"
#include "core/hist.h"
#include "core/mailbox.h"
#include "core/pkt.h"

typedef struct ms_worker ms_worker;

/* Why an authentication failed: ms_worker_stats.auth_fail's index and the
 * reason label of mezon_auth_failures_total (ms_auth_reason_names). */
enum ms_auth_reason {
	MS_AUTH_MISSING,       /* no token where one is required */
	MS_AUTH_MALFORMED,     /* not a well-formed JWT */
	MS_AUTH_BAD_ALG,       /* alg other than HS256 */
	MS_AUTH_BAD_SIGNATURE, /* no configured secret signed it */
	MS_AUTH_EXPIRED,       /* exp passed (or missing) */
	MS_AUTH_BAD_SUB,       /* sub missing or not a user id */
	MS_AUTH_BAD_CLAIM,     /* another claim malformed */
	MS_AUTH_WRONG_USER,    /* auth op with another user's token */
	MS_AUTH_API_KEY,       /* server API: bearer key missing or wrong */
	MS_AUTH_OTHER,
	MS_AUTH_REASONS
};
extern const char *const ms_auth_reason_names[MS_AUTH_REASONS];

/* Per-worker counters, written by the worker only; read at exit. */
typedef struct ms_worker_stats {
	uint64_t enters;        /* io_uring_enter calls, loop + SQ-full */
	uint64_t iterations;
	uint64_t cqes;
	uint64_t accepts;
	uint64_t rejects;       /* accepted over capacity (503) or dropped */
	uint64_t closes;
	uint64_t recvs;
	uint64_t bytes_in;
	uint64_t sends;
	uint64_t bytes_out;
	uint64_t partial_sends;
	uint64_t recv_stops;    /* multishot recv ended without error */
	uint64_t recv_nobufs;   /* ... because the buffer ring ran dry */
	uint64_t accept_stops;
	uint64_t cq_overflows;  /* iterations that saw IORING_SQ_CQ_OVERFLOW */
	uint64_t stale;         /* completions of a freed slot */
	uint64_t msgs_in;       /* counted by the protocol layer */
	uint64_t msgs_out;
	uint64_t deliveries;    /* packets queued to subscribers (fan-out, DMs) */
	uint64_t records;       /* output transforms (TLS records written) */
	uint64_t slow_closes;   /* connections closed as slow consumers */
	uint64_t upgrades;      /* WebSocket upgrades (101) */
	uint64_t tls_handshakes, tls_resumed, tls_failures;
	uint64_t http_4xx;      /* HTTP requests answered 4xx */
	uint64_t auth_failures; /* 401s at the upgrade, failed auth ops, bad API keys */
	uint64_t auth_fail[MS_AUTH_REASONS]; /* the same by enum ms_auth_reason */
	uint64_t ws_protocol_errors, ws_utf8_errors, ws_too_big; /* closes 1002/1007/1009 */
	uint64_t req_errors;    /* error replies to chat requests */
	uint64_t max_conns;     /* high-water mark */
	/* limits and overload: one counter per limit, so the one that
	 * bites can be told from the others */
	uint64_t ip_rejects;    /* over --max-conns-per-ip (503 / TLS: closed) */
	uint64_t user_rejects;  /* over --max-conns-per-user (503 at the upgrade) */
	uint64_t origin_rejects; /* Origin not in --allowed-origins (403) */
	uint64_t rate_limited;  /* requests answered 429 (--rate-limit) */
	uint64_t rate_closes;   /* connections closed 1008 "rate limit" */
	uint64_t http_timeouts; /* handshake deadline passed: 408, or closed (TLS, PROXY) */
	uint64_t proxy_rejects; /* missing or malformed PROXY header: closed */
	uint64_t overload_503;  /* new connections refused while overloaded */
	uint64_t pending_cap_closes; /* closed 1008 by the --max-pending-total share */
	uint64_t input_pauses;  /* times input was paused at the mailbox high-water */
	uint64_t pending_bytes; /* gauge: output queued on this worker now */
	uint64_t input_bytes;   /* gauge: unparsed input kept on this worker now */
	uint64_t conn_pauses;   /* times one connection's input was paused */
	/* admission */
	uint64_t handshake_ip_rejects; /* over --max-handshakes-per-ip (503 / TLS: closed) */
	uint64_t admin_evictions; /* connections of a reserved context (admin) evicted for a new one */
	/* outbound connections (ms_worker_connect) */
	uint64_t connects;         /* attempted */
	uint64_t connect_failures; /* ended in on_connect_error (refused, timed out, ...) */
} ms_worker_stats;

/* Latency histograms kept per worker (merged on dump, DESIGN §9). */
enum ms_hist_id {
	MS_HIST_ITERATION,     /* loop iteration: work between two waits */
	MS_HIST_HOP,           /* mailbox push -> pop on the receiving worker */
	MS_HIST_PUBLISH_FLUSH, /* publish received -> bytes handed to the kernel, per recipient */
	MS_HIST_TLS_HANDSHAKE, /* accept -> handshake done */
	MS_HIST_OP_JOIN,       /* request received -> reply queued, per op */
	MS_HIST_OP_LEAVE,
	MS_HIST_OP_PUBLISH,
	MS_HIST_OP_DM,
	MS_HIST_OP_PRESENCE,
	MS_HIST_OP_PING,
	MS_HIST_API,           /* server API request -> answer */
	MS_HIST_COUNT
};
extern const char *const ms_hist_names[MS_HIST_COUNT];

/* What the worker itself calls into the layers above (none per
 * connection: those are a context's, ms_conn_handlers). Every member may be
 * NULL. All run on the worker thread. */
typedef struct ms_worker_hooks {
	/* Before the loop (the pool and ring are ready: ms_worker_connect
	 * works) / after it. A non-zero return fails ms_worker_start. */
	int (*on_start)(ms_worker *w);
	void (*on_stop)(ms_worker *w);
	/* A mailbox message from worker `from` (possibly this one). */
	void (*on_msg)(ms_worker *w, uint32_t from, ms_msg *m);
	/* Once per iteration after input, before output is flushed (batched
	 * work such as coalesced presence events). */
	void (*on_flush)(ms_worker *w);
} ms_worker_hooks;

/* One kind of socket's callbacks (a listener's, or an outbound protocol's):
 * the handler table of a context (ms_ctx). A connection's context is fixed
 * when it is accepted or connected, and core dispatches its events through
 * that context's table (one array index). Every callback runs on the
 * worker thread that owns the connection. */
typedef struct ms_conn_handlers {
	/* The connection is ready. Accepted: over_cap says the worker is at
	 * its --max-conns share or overloaded (contexts without a reserve
	 * only); answer (503) and close. Outbound: the connect succeeded
	 * (over_cap is false); output queued before it goes out now. */
	void (*on_open)(ms_worker *w, ms_conn *c, bool over_cap);
	/* Input buf[0..len) (earlier unconsumed input first). Returns the
	 * bytes consumed; the rest is kept and offered again with the next
	 * input. buf is borrowed for the call; it may be modified in place. */
	size_t (*on_data)(ms_worker *w, ms_conn *c, uint8_t *buf, size_t len);
	/* The peer closed (err 0) or the socket failed (-errno). Core closes
	 * the connection after the call unless the handler already did, or
	 * (err 0 only) returns true: the peer half-closed after a request the
	 * handler is still answering; it closes the connection itself (its
	 * deadline still runs). */
	bool (*on_eof)(ms_worker *w, ms_conn *c, int err);
	/* The deadline set with ms_conn_timeout() passed (never before
	 * on_open: an outbound connect's deadline is its connect timeout). */
	void (*on_timeout)(ms_worker *w, ms_conn *c);
	/* The slot is being freed: release what the protocol layer holds.
	 * Follows every connection that was accepted or connected, opened or
	 * not. May be NULL. */
	void (*on_free)(ms_worker *w, ms_conn *c);
	/* Outbound only: the connect failed before on_open: -ECONNREFUSED,
	 * -ETIMEDOUT (its connect timeout passed), -ENETUNREACH, ... (a socket
	 * that could not be made: that -errno). c is closing; on_free follows.
	 * Not called for a connection the protocol layer closed itself while
	 * it was connecting. May be NULL. */
	void (*on_connect_error)(ms_worker *w, ms_conn *c, int err);
	/* Graceful shutdown reached the point where connections close: called
	 * once for each of the context's connections not already closing
	 * (connecting ones included). NULL: core closes each (MS_CLOSE_FLUSH). */
	void (*on_drain)(ms_worker *w, ms_conn *c);
	/* For connections marked with ms_conn_set_transform(): turn plaintext
	 * p[0..n) (at most MS_XFORM_CHUNK bytes, everything queued since the
	 * last send, gathered) into wire bytes written with ms_conn_write_raw().
	 * Called when the connection's output is about to be sent. May be NULL
	 * in a context that never marks its connections. */
	void (*on_transform)(ms_worker *w, ms_conn *c, const uint8_t *p, size_t n);
	/* Close c as a slow consumer; it is not offered again. Core calls it
	 * when c's queued output stayed over --max-backpressure for
	 * --slow-window while the kernel took less than that much of it, or
	 * passed the hard cap (max(2 x max-backpressure, max-message +
	 * max-backpressure)), or when the worker's queued bytes passed its
	 * --max-pending-total share and c holds the most. Called at a safe
	 * point of the loop, never from inside an ms_conn_* call. May be NULL
	 * (core aborts c). */
	void (*on_shed)(ms_worker *w, ms_conn *c);
	/* The reserve of a listening context (ms_ctx.reserve) is full and c
	 * is the oldest of its open connections: close c and return true, or
	 * return false to keep it (busy: an answer is on its way), and the
	 * next oldest is offered. May be NULL (core aborts c). */
	bool (*on_evict)(ms_worker *w, ms_conn *c);
} ms_conn_handlers;

#define MS_XFORM_CHUNK 16384 /* one TLS record of plaintext */
#define MS_MAX_CTX 8         /* contexts per worker (c->kind is the index) */

enum {
	/* Its listener stays open while the worker drains, until it exits
	 * (the admin listener: health checks see 503 and metrics stay
	 * readable for the whole drain). */
	MS_CTX_KEEP_LISTENING = 1 << 0,
	/* Read each accepted connection's peer address before on_open (one
	 * IORING_OP_URING_CMD getsockopt(SO_PEERNAME)): for per-address
	 * limits; ms_conn_peer() is NULL otherwise. */
	MS_CTX_PEER = 1 << 1,
	/* Its connections are made with ms_worker_connect(); it has no
	 * listener. Its reserve is held on every worker. */
	MS_CTX_OUTBOUND = 1 << 2,
};

/* A socket context (uSockets' term): a handler table, the bytes of
 * protocol state each of its connections keeps inline (ms_conn_ext()), and
 * how core admits them. The plain and the TLS public listener are two
 * contexts with the same handlers and different args; the admin listener
 * and each outbound protocol are contexts of their own. */
typedef struct ms_ctx {
	const ms_conn_handlers *h; /* borrowed; outlives the worker */
	size_t ext_size;           /* inline state per connection (zeroed at accept/connect) */
	void *arg;                 /* the handlers' configuration (ms_conn_ctx_arg); borrowed */
	const char *name;          /* its connections' transport label in metrics; NULL: none */
	uint32_t flags;            /* MS_CTX_* */
	/* 0: accepted connections share the worker's --max-conns share and
	 * its admission (over_cap). n > 0: a budget of its own, outside that
	 * share and never refused by it: n open connections (1..1024), with
	 * room in the pool and the descriptor table for as many again while
	 * they close. A listening context's accepts then go one at a time;
	 * with n open, a new one makes the oldest that on_evict lets go close,
	 * and with all 2n held, new connections wait in the listen backlog.
	 * An outbound context must have one: ms_worker_connect() refuses past
	 * n open or 2n held. */
	uint32_t reserve;
} ms_ctx;

/* Create worker `id` (not started). cpu: CPU to pin to, -1 for none.
 * hooks: borrowed, may be NULL. hub: the mailboxes shared by all workers
 * (NULL: no cross-worker work). Add its contexts and listeners next. */
ms_worker *ms_worker_create(const ms_config *cfg, uint32_t id, int cpu,
			    const ms_worker_hooks *hooks, void *app, ms_mbox_hub *hub);
/* Add a context (copied; what it points to is borrowed). Returns its
 * index, the `kind` of its connections (0, 1, ... in the order added), or
 * -EINVAL (no handlers, a reserve over 1024, an outbound context without
 * one) or -ENOSPC (MS_MAX_CTX reached). Every worker of a process should
 * get the same contexts in the same order, so an index means the same
 * context everywhere (metrics). Before ms_worker_start. */
int ms_worker_ctx_add(ms_worker *w, const ms_ctx *ctx);
/* Accept the connections of SO_REUSEPORT listener fd into context ctx
 * (one listener per context; fd passes to the worker, which closes it).
 * Returns 0 or -EINVAL (no such context, outbound, already listening).
 * Before ms_worker_start. */
int ms_worker_listen(ms_worker *w, int ctx, int fd);

/* Start the thread; returns once its ring is set up (0) or failed (-errno). */
int ms_worker_start(ms_worker *w);
/* Ask for a graceful stop (any thread, async-signal-unsafe). */
void ms_worker_stop(ms_worker *w);
/* Ask the worker (any thread) to gather every worker's histograms and
 * dump them (log summary lines; files in --hist-dir if set). */
void ms_worker_dump(ms_worker *w);
/* Join the thread (ms_worker_tryjoin: only if it has ended; 0 joined,
 * -EBUSY still running). */
void ms_worker_join(ms_worker *w);
int ms_worker_tryjoin(ms_worker *w);
void ms_worker_destroy(ms_worker *w);

uint32_t ms_worker_id(const ms_worker *w);
void *ms_worker_app(const ms_worker *w);
const ms_config *ms_worker_config(const ms_worker *w);
ms_worker_stats *ms_worker_stats_of(ms_worker *w);
bool ms_worker_draining(const ms_worker *w);
/* Worker clock: whole seconds since the worker started (coarse). */
uint32_t ms_worker_now(const ms_worker *w);
/* Context ctx's name (ms_ctx.name), or NULL for none or no such context. */
const char *ms_worker_ctx_name(const ms_worker *w, int ctx);
/* The arg of c's context (ms_ctx.arg): its handlers' configuration. */
void *ms_conn_ctx_arg(const ms_worker *w, const ms_conn *c);

/* Open an outbound connection of context ctx (MS_CTX_OUTBOUND) to addr
 * (AF_INET or AF_INET6), on this worker's ring: a socket made as a direct
 * descriptor in the same table as accepted ones (IORING_OP_SOCKET), with
 * TCP_NODELAY, then IORING_OP_CONNECT; the connection gets a slot and a
 * handle like an accepted one, and the same receive, send, close and
 * timer paths. On success *out is the connection, not yet open: its ext
 * is zeroed for the caller to fill, output may be queued (it is sent once
 * connected), and exactly one of on_open (connected) or on_connect_error
 * (-errno; -ETIMEDOUT once timeout_s seconds passed, at the timer wheel's
 * whole-second ticks, so up to one second later; 0: no timeout) follows, unless
 * the caller closes it first; on_free follows in every case. Outbound
 * connections never count against --max-conns or its admission, nor are
 * they refused while overloaded. Returns 0, or -EINVAL (not an outbound
 * context, a bad address), -EAGAIN (the context's reserve is in use),
 * -ESHUTDOWN (the worker is closing its connections). Worker thread only
 * (e.g. from on_start or any handler). */
int ms_worker_connect(ms_worker *w, int ctx, const struct sockaddr *addr, socklen_t len,
		      uint32_t timeout_s, ms_conn **out);


/* A worker's figures at one moment (metrics, histogram dumps). */
typedef struct ms_worker_snap {
	uint32_t id;
	uint32_t live, cap;
	uint32_t live_kind[MS_MAX_CTX]; /* by context index */
	bool draining;
	uint64_t pending_out;  /* batch chains waiting on the mailbox overflow lists */
	ms_worker_stats st;
	ms_mbox_stats mb;
	ms_hist hist[MS_HIST_COUNT];
} ms_worker_snap;

/* Snapshot of this worker (its own thread; or any thread once it ended). */
void ms_worker_snapshot(ms_worker *w, ms_worker_snap *out);
/* Ask every worker for its snapshot through the mailboxes (no worker is
 * stopped or locked); fn(w, snaps, n, arg) runs on this worker's thread
 * once all have answered, snaps[i] being worker i's. */
typedef void (*ms_collect_fn)(ms_worker *w, const ms_worker_snap *snaps, uint32_t n,
			      void *arg);
void ms_worker_collect(ms_worker *w, ms_collect_fn fn, void *arg);

/* Worker clock: CLOCK_MONOTONIC ns read once per loop iteration. */
uint64_t ms_worker_now_ns(const ms_worker *w);
/* CLOCK_MONOTONIC ns now (a vDSO call, ~20 ns). */
uint64_t ms_clock_ns(void);

/* Record one sample (ns) in this worker's histogram `which`. */
void ms_worker_record(ms_worker *w, enum ms_hist_id which, uint64_t ns);

/* The same clock in milliseconds (read once per loop iteration; wraps
 * after 49 days: compare differences only). */
uint32_t ms_worker_now_ms(const ms_worker *w);
/* Whether the worker is refusing new connections: its outbound mailbox
 * backlog passed the high-water mark (input is paused meanwhile) or its
 * queued output passed 7/8 of its --max-pending-total share. */
bool ms_worker_overloaded(const ms_worker *w);
/* Call fn for every live connection (e.g. to drain). */
void ms_worker_foreach(ms_worker *w, void (*fn)(ms_worker *, ms_conn *, void *),
		       void *arg);
/* Live connections on this worker. */
uint32_t ms_worker_conns(const ms_worker *w);
/* Workers in the process (1 without a hub). */
uint32_t ms_worker_count(const ms_worker *w);
/* A message slot for worker `to` (this iteration's batch; see mailbox.h). */
ms_msg *ms_worker_post(ms_worker *w, uint32_t to);
/* This worker's mailbox endpoint (stats), or NULL. */
ms_mbox *ms_worker_mbox(ms_worker *w);
/* The connection a handle names, if it is on this worker and still the
 * same connection (generation) and not yet freed (it may be closing:
 * ms_conn_closing()); else NULL. */
ms_conn *ms_worker_conn(ms_worker *w, ms_conn_ref ref);
/* The same, including a connection being freed at the end of this
 * iteration (its on_free may not have run yet): for bookkeeping that must
 * stay exact while several connections are released together. */
ms_conn *ms_worker_conn_any(ms_worker *w, ms_conn_ref ref);

/* ---- connection operations (owning worker thread only) ---------------- */

/* Room for n more output bytes at the tail of c's queue; write them, then
 * ms_conn_commit(). The pointer is valid until the next ms_conn_* call. */
uint8_t *ms_conn_reserve(ms_worker *w, ms_conn *c, size_t n);
void ms_conn_commit(ms_worker *w, ms_conn *c, size_t n);
/* Copy n bytes to the output queue. */
void ms_conn_write(ms_worker *w, ms_conn *c, const void *p, size_t n);
/* Queue pkt->data[off..off+len); takes one reference of its own. */
void ms_conn_send_pkt(ms_worker *w, ms_conn *c, ms_pkt *pkt, uint32_t off,
		      uint32_t len);
/* Mark c's output for on_transform (e.g. TLS): from now on the calls above
 * queue plaintext, and ms_conn_write_raw() queues wire bytes. */
void ms_conn_set_transform(ms_conn *c);
/* Queue bytes exactly as they go on the wire (handshake flights, records
 * from on_transform, alerts), after everything queued so far. Plaintext
 * still waiting for its transform would then go out after these bytes, so
 * call ms_conn_transform_now() before anything that may write raw bytes
 * (with TLS: before each engine call). It is not called from here because
 * raw writes come from inside the engine, which must not be re-entered. */
void ms_conn_write_raw(ms_worker *w, ms_conn *c, const void *p, size_t n);
/* Drop queued output that is not yet with the kernel (nor, on a
 * transformed connection, already transformed): what a slow consumer had
 * coming. Whatever is queued afterwards goes out as usual. */
void ms_conn_discard_output(ms_worker *w, ms_conn *c);
/* Transform the plaintext queued so far now (on_transform runs). */
void ms_conn_transform_now(ms_worker *w, ms_conn *c);

/* Input flow control (owning worker thread only).
 *
 * ms_conn_pause: hand c no more input until ms_conn_resume. What on_data
 * did not consume and whatever arrives meanwhile is kept; once more than
 * MS_PAUSE_KEEP bytes wait, c's receive is cancelled so the rest waits in
 * the kernel and TCP flow control pushes back on the peer. Core also
 * pauses a connection by itself while its queued output is above half of
 * --max-backpressure (a peer that sends without reading), until it is back
 * under a quarter.
 * ms_conn_resume: parse what was kept and read again, early in the next
 * loop iteration; until then the pause holds (a connection that pauses and
 * resumes itself in on_data thereby yields to the others). */
#define MS_PAUSE_KEEP 65536u
void ms_conn_pause(ms_worker *w, ms_conn *c);
void ms_conn_resume(ms_worker *w, ms_conn *c);
static inline bool ms_conn_paused(const ms_conn *c)
{
	return c->paused != 0;
}
/* From on_data: the input it left unconsumed begins a unit of `total`
 * bytes (a frame whose header is in), so what is kept is sized for it at
 * once instead of growing by doubling (a 64 KiB frame one byte short would
 * otherwise hold 128 KiB). */
void ms_conn_input_need(ms_worker *w, ms_conn *c, size_t total);
/* Bytes of unparsed input the protocol layer holds in buffers of its own
 * (fragments, decrypted input): +n when it takes them, -n when it lets
 * them go. They count in the --max-pending-total share with queued output
 * and core's kept input. */
void ms_worker_input_bytes(ms_worker *w, int64_t n);

/* Bytes queued and not yet acknowledged by a send completion. */
static inline uint32_t ms_conn_pending(const ms_conn *c)
{
	return c->out_bytes;
}

enum ms_close_mode {
	MS_CLOSE_FLUSH, /* send what is queued, FIN, read to EOF (2 s), close;
	                 * not open yet (connecting): as ABORT */
	MS_CLOSE_ABORT, /* drop queued output and close now */
};
/* Close c. No more on_data after this call; on_free follows once every
 * operation in flight has completed. Idempotent (ABORT overrides FLUSH). */
void ms_conn_close(ms_worker *w, ms_conn *c, enum ms_close_mode mode);
bool ms_conn_closing(const ms_conn *c);

/* Fire on_timeout after `seconds` (0 cancels). One deadline per connection
 * (while an outbound one connects, it is the connect timeout). */
void ms_conn_timeout(ms_worker *w, ms_conn *c, uint32_t seconds);

/* c's peer address (AF_INET or AF_INET6), or NULL when unknown: the worker
 * reads it (one IORING_OP_URING_CMD getsockopt(SO_PEERNAME) before on_open)
 * in contexts with MS_CTX_PEER; an outbound connection's is the address it
 * connects to. */
const struct sockaddr *ms_conn_peer(ms_worker *w, ms_conn *c);
/* Replace it (the source address of a PROXY protocol header). */
void ms_conn_set_peer(ms_worker *w, ms_conn *c, const struct sockaddr *sa, socklen_t len);

/* Handle of c, valid on every worker. */
ms_conn_ref ms_conn_ref_of(const ms_worker *w, const ms_conn *c);
static inline uint32_t ms_conn_ref_worker(ms_conn_ref r)
{
	return (uint32_t)(r >> 56);
}

#endif
