/*
 * The per-core proactor.
 *
 * Everything a worker owns is touched by its thread only; other threads
 * reach it through the stop flag and a MSG_RING doorbell. Completions are
 * dispatched by op kind from user_data (core/udata.h), then by the
 * connection's context (its handler table). Connection lifetime:
 *
 *   accept (+ peer address) ──┐
 *                             ├──► open ──(on_data...)──► close(FLUSH): drain output queue
 *   connect: socket, connect ─┘                             │ then shutdown(SHUT_WR), read
 *     │ refused / timed out: on_connect_error               ▼ to EOF (or 2 s): "linger"
 *     └──────────────────────────────► close(ABORT) ──► DEAD: cancel ops in flight
 *                                                           │ inflight == 0
 *                                                           ▼
 *                                      close_direct, on_free, slot freed at iteration end
 *
 * Output: a connection's queue is a list of (packet, range) nodes. Small
 * writes append to a private tail buffer, so everything a connection got in
 * one iteration usually leaves as one contiguous send; queued shared packets
 * go out as one sendmsg iovec list. At most one send is in flight; a partial
 * send advances the head offset and the rest goes next iteration.
 */
#include "core/worker.h"

#include "core/hist.h"
#include "core/metrics.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/numa.h"
#include "core/ring.h"
#include "core/timer.h"
#include "core/udata.h"

#define WRITE_BUF_MIN 4000u   /* private tail buffer: ~one page with header */
#define SEND_IOV_MAX 64
#define PKT_COPY_MAX 512      /* shared packets up to this size are copied */
#define LINGER_SECONDS 2
#define FLUSH_SECONDS 10      /* a closing peer that will not read */
#define ACCEPT_SLACK 128      /* slots above the cap: to answer 503, and closing ones */
/* Overload: a worker that cannot keep up refuses new work rather than
 * grow without bound. Outbound mailbox backlog, in overflowed batches (one
 * per target per iteration that found the ring full): at
 * --mailbox-high-water the worker stops parsing client input, at an eighth
 * of it it resumes. Queued output: at 7/8 of
 * the --max-pending-total share new connections get 503; past the share the
 * largest queues are closed, at most SHED_MAX per iteration, and the scan
 * for them runs at most every SHED_SCAN_MS while the bytes of connections
 * already closing keep the total up. */
#define SHED_MAX 64
#define SHED_SCAN_MS 10

struct ms_outq_node {
	ms_outq_node *next;
	ms_pkt *pkt;
	uint32_t off, end;
	bool writable; /* private tail buffer: appendable */
	bool plain;    /* awaits on_transform (MS_CONN_F_XFORM connections) */
	uint32_t stamp; /* oldest publish in it not yet timed (ms_pkt_stamp), 0 = none */
};

/* A context on this worker: its definition and what core keeps for it. */
typedef struct wctx {
	const ms_conn_handlers *h; /* first: what dispatch reads per event */
	ms_ctx def;
	int listen_fd;             /* -1: none, or closed by the drain */
	bool armed;                /* its accept is in flight */
	bool v4;                   /* its listener is AF_INET (peer address size) */
	uint32_t live;             /* its slots in use */
	uint32_t *rsv, nrsv;       /* reserve > 0: its slots in accept/connect order
	                            * (at most 2 * reserve) */
} wctx;

typedef struct sendctx {
	struct sendctx *next;
	struct msghdr msg;
	struct iovec iov[SEND_IOV_MAX];
} sendctx;

struct ms_worker {
	const ms_config *cfg;
	wctx ctx[MS_MAX_CTX]; /* by c->kind */
	int nctx;
	const ms_worker_hooks *hooks;
	void *app;
	uint32_t id;
	int cpu;
	pthread_t thread;

	ms_ring ring;
	ms_mbox_hub *hub;
	ms_mbox *mbox;
	ms_pool pool;
	ms_wheel wheel;
	uint32_t cap;       /* connections served; above it: 503 */
	uint32_t live;      /* allocated slots */
	uint32_t nclosing;  /* public connections closing, not yet freed */
	uint32_t nreserved; /* slots held by contexts with a reserve (not public) */

	uint32_t *dirty, ndirty;
	uint32_t *rearm, nrearm;
	uint32_t *freeq, nfreeq;
	uint32_t *overq, nover;    /* connections whose output is over --max-backpressure */
	uint32_t *resumeq, nresume; /* paused input to parse again next iteration */
	uint32_t *fed;             /* per slot: iteration (low 16 bits) << 16 | KiB handed
	                            * to on_data in it (FEED_KIB per iteration) */
	ms_outq_node *free_nodes;
	sendctx *free_ctx;

	bool accept_parked; /* no slot or table entry: re-arm when one frees */
	uint32_t accept_retry_at; /* after an unexpected accept error: back off */
	uint8_t *xform_buf;  /* MS_XFORM_CHUNK bytes: gathered plaintext */
	bool draining;
	uint32_t drain_deadline;
	int stop;           /* set by ms_worker_stop (any thread) */
	uint32_t dump_req, dump_seen; /* ms_worker_dump requests (any thread) */
	uint32_t next_dump;  /* worker second of the next --hist-interval dump */
	/* Drain barrier (DESIGN §3, graceful shutdown): the round this worker
	 * is in, whether it arrived, the rounds done when this iteration
	 * began, and whether on_drain (close 1001) ran. */
	uint32_t drain_round, drain_seen;
	bool drain_arrived, drain_closed, drain_left, kick;
	uint32_t next_trim;         /* idle: second of the next trim (0: at once) */
	struct collect *collects;   /* snapshot rounds this worker started, unanswered */

	uint64_t start_ns;
	uint64_t now_ns;
	uint64_t flush_ns;  /* clock at this iteration's flush (publish-to-flush) */
	uint64_t mail_ns;   /* clock at the current mailbox drain, 0 = not read yet */
	uint32_t now_s;

	ms_hist hist[MS_HIST_COUNT]; /* latency histograms, this worker's samples */
	/* admission limits and overload */
	struct sockaddr_in6 *peer; /* per slot; sin6_family 0 = unknown */
	bool no_peer;              /* this kernel cannot read peer addresses (MS_CTX_PEER) */
	bool input_paused;         /* mailbox high-water: input is held */
	uint64_t out_total;        /* queued output bytes, all connections */
	uint64_t in_total;         /* kept unparsed input bytes (core's and the protocol's) */
	size_t need_hint;          /* ms_conn_input_need() during the current on_data */
	ms_conn *delivering;       /* the connection whose on_data runs (its input is in use) */
	uint32_t slow_at, hard_cap; /* --max-backpressure and the immediate cap */
	uint32_t slow_window_ms;
	uint32_t over_checked_s;   /* worker second of the last slow-consumer check */
	bool over_hard;            /* a listed connection passed the hard cap */
	uint64_t pending_share;    /* this worker's --max-pending-total */
	uint64_t shed_scan_ns;     /* no shed scan before this */
	uint32_t table_max;        /* descriptor table entries allowed (RLIMIT_NOFILE) */

	pthread_mutex_t lock; /* start handshake only */
	pthread_cond_t cond;
	int start_state;      /* 0 starting, 1 running, <0 -errno */

	ms_worker_stats st;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n);
	if (!p) {
		fprintf(stderr, "mezon-sock: out of memory (%zu bytes)\n", n);
		abort();
	}
	return p;
}

/* One element per pool slot, in its own mapping: like the pool, pages are
 * touched only as slots are used and are given back when the pool is. */
static void *slot_array(ms_worker *w, size_t elem)
{
	void *p = ms_pool_array(&w->pool, elem);
	if (!p) {
		fprintf(stderr, "mezon-sock: out of memory (%zu-byte slot array)\n", elem);
		abort();
	}
	return p;
}

/* c's handler table: one array index on the per-event path. */
static inline const ms_conn_handlers *H(const ms_worker *w, const ms_conn *c)
{
	return w->ctx[c->kind].h;
}

/* Whether c's context has a reserve (admin, outbound): outside the
 * --max-conns share, its admission and its closing count. */
static inline bool reserved(const ms_worker *w, const ms_conn *c)
{
	return w->ctx[c->kind].def.reserve != 0;
}

/* A slot holding a connection not yet freed (an outbound one has no
 * descriptor until its socket is made). */
static inline bool slot_live(const ms_conn *c)
{
	return !(c->flags & MS_CONN_F_FREED) && (c->fidx >= 0 || (c->flags & MS_CONN_F_OPENING));
}

static struct io_uring_sqe *sqe_get(ms_worker *w)
{
	struct io_uring_sqe *sqe = ms_ring_sqe(&w->ring, &w->st.enters);
	if (!sqe) {
		/* The ring is broken beyond a full SQ: nothing can recover it. */
		ms_err("io_uring submission failed irrecoverably");
		abort();
	}
	return sqe;
}

/* ---- accessors ---------------------------------------------------------- */

uint32_t ms_worker_id(const ms_worker *w) { return w->id; }
void *ms_worker_app(const ms_worker *w) { return w->app; }
const ms_config *ms_worker_config(const ms_worker *w) { return w->cfg; }
ms_worker_stats *ms_worker_stats_of(ms_worker *w) { return &w->st; }
bool ms_worker_draining(const ms_worker *w) { return w->draining; }
uint32_t ms_worker_now(const ms_worker *w) { return w->now_s; }
const char *ms_worker_ctx_name(const ms_worker *w, int ctx)
{
	return ctx >= 0 && ctx < w->nctx ? w->ctx[ctx].def.name : NULL;
}
void *ms_conn_ctx_arg(const ms_worker *w, const ms_conn *c)
{
	return w->ctx[c->kind].def.arg;
}
uint32_t ms_worker_now_ms(const ms_worker *w)
{
	return (uint32_t)((w->now_ns - w->start_ns) / 1000000u);
}
uint32_t ms_worker_conns(const ms_worker *w) { return w->live; }
uint64_t ms_worker_now_ns(const ms_worker *w) { return w->now_ns; }
uint64_t ms_clock_ns(void) { return mono_ns(); }

const char *const ms_hist_names[MS_HIST_COUNT] = {
	"iteration", "hop", "publish_to_flush", "tls_handshake", "op_join", "op_leave",
	"op_publish", "op_dm", "op_presence", "op_ping", "api",
};

void ms_worker_record(ms_worker *w, enum ms_hist_id which, uint64_t ns)
{
	ms_hist_record(&w->hist[which], ns);
}
uint32_t ms_worker_count(const ms_worker *w) { return w->hub ? ms_mbox_hub_size(w->hub) : 1; }
ms_mbox *ms_worker_mbox(ms_worker *w) { return w->mbox; }

ms_msg *ms_worker_post(ms_worker *w, uint32_t to)
{
	return ms_mbox_put(w->mbox, to);
}

ms_conn *ms_worker_conn_any(ms_worker *w, ms_conn_ref ref)
{
	uint32_t idx = (uint32_t)(ref >> 32) & MS_UDATA_IDX_MAX;
	if (ms_conn_ref_worker(ref) != w->id || idx >= w->pool.fresh)
		return NULL;
	ms_conn *c = ms_pool_at(&w->pool, idx);
	return c->gen == (uint32_t)ref ? c : NULL;
}

ms_conn *ms_worker_conn(ms_worker *w, ms_conn_ref ref)
{
	ms_conn *c = ms_worker_conn_any(w, ref);
	return c && !(c->flags & MS_CONN_F_FREED) ? c : NULL;
}

ms_conn_ref ms_conn_ref_of(const ms_worker *w, const ms_conn *c)
{
	return (uint64_t)w->id << 56 | (uint64_t)c->idx << 32 | c->gen;
}

const struct sockaddr *ms_conn_peer(ms_worker *w, ms_conn *c)
{
	const struct sockaddr_in6 *a = &w->peer[c->idx];
	return a->sin6_family ? (const struct sockaddr *)a : NULL;
}

void ms_conn_set_peer(ms_worker *w, ms_conn *c, const struct sockaddr *sa, socklen_t len)
{
	memset(&w->peer[c->idx], 0, sizeof(w->peer[0]));
	if (len <= sizeof(w->peer[0]))
		memcpy(&w->peer[c->idx], sa, len);
}

bool ms_worker_overloaded(const ms_worker *w)
{
	return w->input_paused || w->out_total > w->pending_share / 8 * 7;
}

void ms_worker_foreach(ms_worker *w, void (*fn)(ms_worker *, ms_conn *, void *),
		       void *arg)
{
	for (uint32_t i = 0; i < w->pool.fresh; i++) {
		ms_conn *c = ms_pool_at(&w->pool, i);
		if (slot_live(c))
			fn(w, c, arg);
	}
}

/* ---- output queue ------------------------------------------------------- */

static ms_outq_node *node_get(ms_worker *w)
{
	ms_outq_node *n = w->free_nodes;
	if (n)
		w->free_nodes = n->next;
	else
		n = xmalloc(sizeof(*n));
	n->next = NULL;
	n->stamp = 0;
	return n;
}

static void node_put(ms_worker *w, ms_outq_node *n)
{
	ms_pkt_unref(n->pkt);
	n->next = w->free_nodes;
	w->free_nodes = n;
}

static void free_caches(ms_worker *w)
{
	while (w->free_nodes) {
		ms_outq_node *n = w->free_nodes;
		w->free_nodes = n->next;
		free(n);
	}
	while (w->free_ctx) {
		sendctx *x = w->free_ctx;
		w->free_ctx = x->next;
		free(x);
	}
}

/* Output went over --max-backpressure: note when (the slow-consumer
 * window starts) and list the connection for check_over, which closes it
 * at a safe point of the loop, never inside the enqueue that got here (a
 * close queues frames and may drop output while a caller, e.g. the TLS
 * transform, is in the middle of the queue). */
static __attribute__((noinline, cold)) void over_bound(ms_worker *w, ms_conn *c)
{
	if (c->flags & (MS_CONN_F_DEAD | MS_CONN_F_SHED))
		return;
	if (!c->over_ms) {
		c->over_ms = ms_worker_now_ms(w) | 1;
		c->drained = 0;
	}
	if (c->out_bytes > w->hard_cap)
		w->over_hard = true;
	if (!(c->flags & MS_CONN_F_OVER)) {
		c->flags |= MS_CONN_F_OVER;
		w->overq[w->nover++] = c->idx;
	}
}

static inline void check_bound(ms_worker *w, ms_conn *c)
{
	if (__builtin_expect(c->out_bytes > w->slow_at, 0))
		over_bound(w, c);
}

static void mark_dirty(ms_worker *w, ms_conn *c)
{
	if (!(c->flags & MS_CONN_F_DIRTY)) {
		c->flags |= MS_CONN_F_DIRTY;
		w->dirty[w->ndirty++] = c->idx;
	}
}

static void enqueue(ms_worker *w, ms_conn *c, ms_outq_node *n)
{
	if (c->out_tail)
		c->out_tail->next = n;
	else
		c->out_head = n;
	c->out_tail = n;
}

static uint8_t *reserve(ms_worker *w, ms_conn *c, size_t n, bool plain)
{
	ms_outq_node *t = c->out_tail;
	if (t && t->writable && t->plain == plain && t->pkt->cap - t->end >= n)
		return t->pkt->data + t->end;
	ms_outq_node *node = node_get(w);
	node->pkt = ms_pkt_new(n > WRITE_BUF_MIN ? (uint32_t)n : WRITE_BUF_MIN);
	node->off = node->end = 0;
	node->writable = true;
	node->plain = plain;
	enqueue(w, c, node);
	return node->pkt->data;
}

uint8_t *ms_conn_reserve(ms_worker *w, ms_conn *c, size_t n)
{
	return reserve(w, c, n, (c->flags & MS_CONN_F_XFORM) != 0);
}

void ms_conn_set_transform(ms_conn *c)
{
	c->flags |= MS_CONN_F_XFORM;
}

void ms_conn_commit(ms_worker *w, ms_conn *c, size_t n)
{
	ms_outq_node *t = c->out_tail;
	t->end += (uint32_t)n;
	t->pkt->len = t->end;
	c->out_bytes += (uint32_t)n;
	w->out_total += n;
	if (!(c->flags & MS_CONN_F_DEAD))
		mark_dirty(w, c);
	check_bound(w, c);
}

void ms_conn_write(ms_worker *w, ms_conn *c, const void *p, size_t n)
{
	memcpy(ms_conn_reserve(w, c, n), p, n);
	ms_conn_commit(w, c, n);
}

void ms_conn_send_pkt(ms_worker *w, ms_conn *c, ms_pkt *pkt, uint32_t off,
		      uint32_t len)
{
	if (c->flags & MS_CONN_F_CLOSING)
		return; /* deliveries stop once a close began */
	if (len <= PKT_COPY_MAX) {
		/* A small frame is cheaper copied into the connection's tail
		 * buffer than referenced: no shared refcount, no queue node, and
		 * the flush sends one contiguous buffer instead of an iovec per
		 * message (the kernel's per-segment cost dominates at chat sizes). */
		ms_conn_write(w, c, pkt->data + off, len);
		if (pkt->stamp && !c->out_tail->stamp)
			c->out_tail->stamp = pkt->stamp;
		return;
	}
	ms_pkt_ref(pkt);
	ms_outq_node *n = node_get(w);
	n->pkt = pkt;
	n->off = off;
	n->end = off + len;
	n->writable = false;
	n->plain = (c->flags & MS_CONN_F_XFORM) != 0;
	n->stamp = pkt->stamp;
	enqueue(w, c, n);
	c->out_bytes += len;
	w->out_total += len;
	mark_dirty(w, c);
	check_bound(w, c);
}

static void outq_release(ms_worker *w, ms_conn *c)
{
	ms_outq_node *n = c->out_head;
	while (n) {
		ms_outq_node *next = n->next;
		node_put(w, n);
		n = next;
	}
	c->out_head = c->out_tail = NULL;
	w->out_total -= c->out_bytes;
	c->out_bytes = 0;
}

/* A send of `sent` bytes completed: drop what is fully sent. */
static void outq_advance(ms_worker *w, ms_conn *c, uint32_t sent)
{
	c->out_bytes -= sent;
	w->out_total -= sent;
	while (sent) {
		ms_outq_node *n = c->out_head;
		uint32_t avail = n->end - n->off;
		if (sent < avail) {
			n->off += sent;
			return;
		}
		sent -= avail;
		c->out_head = n->next;
		if (!c->out_head)
			c->out_tail = NULL;
		node_put(w, n);
	}
}

/* Transform the queued plaintext (always a suffix of the queue: the
 * protocol layer transforms before anything writes raw bytes) into wire
 * bytes, in chunks of up to
 * MS_XFORM_CHUNK gathered bytes: with TLS, one record per chunk, so all a
 * connection got in one iteration usually leaves as one record. */
static void transform_pending(ms_worker *w, ms_conn *c)
{
	ms_outq_node *prev = NULL, *n = c->out_head;
	while (n && !n->plain) {
		prev = n;
		n = n->next;
	}
	if (!n)
		return;
	/* Detach the plaintext suffix; on_transform appends raw nodes. */
	if (prev)
		prev->next = NULL;
	else
		c->out_head = NULL;
	c->out_tail = prev;
	c->flags &= (uint16_t)~MS_CONN_F_XFORM; /* raw writes append plainly */
	while (n) {
		size_t len = 0;
		while (n && len < MS_XFORM_CHUNK) {
			uint32_t take = n->end - n->off;
			if (take > MS_XFORM_CHUNK - len)
				take = (uint32_t)(MS_XFORM_CHUNK - len);
			if (n->stamp) {
				ms_hist_record(&w->hist[MS_HIST_PUBLISH_FLUSH],
					       ms_pkt_stamp_age(n->stamp, w->flush_ns));
				n->stamp = 0;
			}
			memcpy(w->xform_buf + len, n->pkt->data + n->off, take);
			len += take;
			n->off += take;
			c->out_bytes -= take;
			w->out_total -= take;
			if (n->off == n->end) {
				ms_outq_node *next = n->next;
				node_put(w, n);
				n = next;
			}
		}
		H(w, c)->on_transform(w, c, w->xform_buf, len);
	}
	c->flags |= MS_CONN_F_XFORM;
}

void ms_conn_write_raw(ms_worker *w, ms_conn *c, const void *p, size_t n)
{
	memcpy(reserve(w, c, n, false), p, n);
	ms_conn_commit(w, c, n);
}

void ms_conn_discard_output(ms_worker *w, ms_conn *c)
{
	/* Keep what the send in flight points into (the kernel reads it) and,
	 * on a transformed connection, every raw node: records already made
	 * carry sequence numbers the peer expects in order. */
	ms_outq_node *keep = NULL, **link = &c->out_head;
	uint32_t skip = (c->flags & MS_CONN_F_SEND) ? c->send_nodes : 0;
	uint64_t bytes = 0;
	for (ms_outq_node *n = c->out_head; n;) {
		ms_outq_node *next = n->next;
		bool in_flight = skip > 0;
		if (skip)
			skip--;
		if (in_flight || ((c->flags & MS_CONN_F_XFORM) && !n->plain)) {
			*link = n;
			link = &n->next;
			keep = n;
			bytes += n->end - n->off;
		} else {
			node_put(w, n);
		}
		n = next;
	}
	*link = NULL;
	c->out_tail = keep;
	w->out_total -= c->out_bytes - bytes;
	c->out_bytes = (uint32_t)bytes;
}

void ms_conn_transform_now(ms_worker *w, ms_conn *c)
{
	if (c->flags & MS_CONN_F_XFORM)
		transform_pending(w, c);
}

/* ---- submissions -------------------------------------------------------- */

static void arm_recv(ms_worker *w, ms_conn *c)
{
	struct io_uring_sqe *sqe = sqe_get(w);
	io_uring_prep_recv_multishot(sqe, c->fidx, NULL, 0, 0);
	sqe->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
	sqe->buf_group = MS_RING_BGID;
	io_uring_sqe_set_data64(sqe, ms_udata(MS_OP_RECV, c->idx, c->gen));
	c->flags |= MS_CONN_F_RECV;
	c->inflight++;
}

/* A listening context with a reserve (admin) accepts one connection per
 * arming: a multishot accept would post its whole backlog at once (330
 * idle connections in one batch), more than its budget can take before the
 * connections it evicts are freed. One at a time, the rest wait in the
 * kernel's backlog until a slot is free, and none is dropped; an SQE per
 * admin connection costs nothing at its rates. */
static void arm_accept(ms_worker *w, int l)
{
	wctx *x = &w->ctx[l];
	struct io_uring_sqe *sqe = sqe_get(w);
	if (x->def.reserve)
		io_uring_prep_accept_direct(sqe, x->listen_fd, NULL, NULL, 0,
					    IORING_FILE_INDEX_ALLOC - 1);
	else
		io_uring_prep_multishot_accept_direct(sqe, x->listen_fd, NULL, NULL, 0);
	io_uring_sqe_set_data64(sqe, ms_udata(MS_OP_ACCEPT, (uint32_t)l, 0));
	x->armed = true;
	w->accept_parked = false;
}

/* getsockopt(SO_PEERNAME) on the direct descriptor: multishot accept
 * cannot return addresses, and a direct descriptor has no fd for
 * getpeername(2). SOCKET_URING_OP_GETSOCKOPT (6.7) takes SOL_SOCKET options
 * only, which SO_PEERNAME is; the kernel wants optlen no larger than the
 * address, hence the listener's family decides it. */
static void submit_peer(ms_worker *w, ms_conn *c)
{
	struct io_uring_sqe *sqe = sqe_get(w);
	unsigned len = w->ctx[c->kind].v4 ? sizeof(struct sockaddr_in)
					  : sizeof(struct sockaddr_in6);
	memset(&w->peer[c->idx], 0, sizeof(w->peer[0]));
	ms_ring_prep_sockopt(sqe, SOCKET_URING_OP_GETSOCKOPT, c->fidx, SOL_SOCKET, SO_PEERNAME,
			     &w->peer[c->idx], len);
	io_uring_sqe_set_data64(sqe, ms_udata(MS_OP_PEER, c->idx, c->gen));
	c->flags |= MS_CONN_F_OPENING;
	c->inflight++;
}

static void submit_cancel(ms_worker *w, uint64_t udata)
{
	struct io_uring_sqe *sqe = sqe_get(w);
	io_uring_prep_cancel64(sqe, udata, 0);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	io_uring_sqe_set_data64(sqe, ms_udata(MS_OP_CANCEL, 0, 0));
}

static void close_fidx(ms_worker *w, int fidx)
{
	struct io_uring_sqe *sqe = sqe_get(w);
	io_uring_prep_close_direct(sqe, (unsigned)fidx);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	io_uring_sqe_set_data64(sqe, ms_udata(MS_OP_CLOSE, 0, 0));
}

/* Publish-to-flush: the node's bytes are being handed to the kernel. One
 * sample per queue node: a shared packet, or the connection's buffer of
 * copied small frames (its oldest publish). */
static void time_node(ms_worker *w, ms_outq_node *n)
{
	ms_hist_record(&w->hist[MS_HIST_PUBLISH_FLUSH], ms_pkt_stamp_age(n->stamp, w->flush_ns));
	n->stamp = 0;
}

static void submit_send(ms_worker *w, ms_conn *c)
{
	struct io_uring_sqe *sqe = sqe_get(w);
	ms_outq_node *n = c->out_head;
	if (!n->next) {
		if (n->stamp)
			time_node(w, n);
		io_uring_prep_send(sqe, c->fidx, n->pkt->data + n->off,
				   n->end - n->off, MSG_NOSIGNAL);
		c->send_nodes = 1;
	} else {
		sendctx *x = w->free_ctx;
		if (x)
			w->free_ctx = x->next;
		else
			x = xmalloc(sizeof(*x));
		int k = 0;
		for (; n && k < SEND_IOV_MAX; n = n->next, k++) {
			if (n->stamp)
				time_node(w, n);
			x->iov[k].iov_base = n->pkt->data + n->off;
			x->iov[k].iov_len = n->end - n->off;
		}
		memset(&x->msg, 0, sizeof(x->msg));
		x->msg.msg_iov = x->iov;
		x->msg.msg_iovlen = (size_t)k;
		c->send_nodes = (uint8_t)k;
		c->sendctx = x;
		io_uring_prep_sendmsg(sqe, c->fidx, &x->msg, MSG_NOSIGNAL);
	}
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(sqe, ms_udata(MS_OP_SEND, c->idx, c->gen));
	c->flags |= MS_CONN_F_SEND;
	c->inflight++;
	w->st.sends++;
}

/* ---- close -------------------------------------------------------------- */

/* Nothing in flight any more: queue the slot for the end of the iteration.
 * The release itself (on_free included) never runs inside a handler, so a
 * handler that closed a connection may go on using its state. */
static void maybe_finish(ms_worker *w, ms_conn *c)
{
	if (!(c->flags & MS_CONN_F_DEAD) || c->inflight || (c->flags & MS_CONN_F_FREED))
		return;
	c->flags |= MS_CONN_F_FREED;
	w->freeq[w->nfreeq++] = c->idx;
}

/* A public connection that began closing no longer counts against the
 * --max-conns share (open_conn) but holds a slot of the slack until freed:
 * connections refused with a 503, lingering for their client's EOF for up
 * to LINGER_SECONDS, must not make the server refuse the next ones. */
static void mark_closing(ms_worker *w, ms_conn *c)
{
	if (!(c->flags & MS_CONN_F_CLOSING) && !reserved(w, c))
		w->nclosing++;
	c->flags |= MS_CONN_F_CLOSING;
}

static void teardown(ms_worker *w, ms_conn *c)
{
	if (c->flags & MS_CONN_F_DEAD)
		return;
	mark_closing(w, c);
	c->flags |= MS_CONN_F_DEAD;
	ms_wheel_set(&w->wheel, &w->pool, c, 0);
	if (c->flags & MS_CONN_F_RECV)
		submit_cancel(w, ms_udata(MS_OP_RECV, c->idx, c->gen));
	if (c->flags & MS_CONN_F_SEND)
		submit_cancel(w, ms_udata(MS_OP_SEND, c->idx, c->gen));
	if ((c->flags & MS_CONN_F_OPENING) && c->fidx >= 0 &&
	    (w->ctx[c->kind].def.flags & MS_CTX_OUTBOUND))
		submit_cancel(w, ms_udata(MS_OP_CONNECT, c->idx, c->gen));
	maybe_finish(w, c);
}

/* Output drained after close(FLUSH): send FIN, then read until the peer's
 * EOF so unread input never turns our close into a reset that could destroy
 * the close frame we just sent. */
static void start_linger(ms_worker *w, ms_conn *c)
{
	if (!(c->flags & (MS_CONN_F_RECV | MS_CONN_F_REARM | MS_CONN_F_MUTE)) ||
	    (c->flags & MS_CONN_F_LINGER)) {
		teardown(w, c);
		return;
	}
	/* Counted in flight like a send: a fixed file is resolved when the op
	 * runs, which (punted to io-wq) can be after a close_direct we issued
	 * later; with the slot reused by a new accept, the FIN would hit the
	 * new connection. The close waits for this completion instead. */
	struct io_uring_sqe *sqe = sqe_get(w);
	io_uring_prep_shutdown(sqe, c->fidx, SHUT_WR);
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(sqe, ms_udata(MS_OP_SHUTDOWN, c->idx, c->gen));
	c->inflight++;
	c->flags |= MS_CONN_F_LINGER;
	ms_wheel_set(&w->wheel, &w->pool, c, w->now_s + LINGER_SECONDS + 1);
}

void ms_conn_close(ms_worker *w, ms_conn *c, enum ms_close_mode mode)
{
	if (c->flags & MS_CONN_F_DEAD)
		return;
	mark_closing(w, c);
	/* No input is parsed after a close: what was kept goes now, not when
	 * the slot is freed after the flush and linger (a paused flooder can
	 * hold megabytes). Not while on_data runs on it: deliver frees it
	 * once the handler returns. */
	if (c->spill.cap && w->delivering != c) {
		w->in_total -= c->spill.cap;
		ms_spill_free(&c->spill);
	}
	/* Not open yet (an outbound connect in progress): nothing can be
	 * flushed, and nothing waits for our FIN. */
	if (mode == MS_CLOSE_ABORT || (c->flags & MS_CONN_F_OPENING)) {
		teardown(w, c);
		return;
	}
	if (c->flags & MS_CONN_F_FLUSH)
		return;
	c->flags |= MS_CONN_F_FLUSH;
	ms_wheel_set(&w->wheel, &w->pool, c, w->now_s + FLUSH_SECONDS + 1);
	if (!c->out_head && !(c->flags & MS_CONN_F_SEND))
		start_linger(w, c);
}

bool ms_conn_closing(const ms_conn *c)
{
	return (c->flags & MS_CONN_F_CLOSING) != 0;
}

void ms_conn_timeout(ms_worker *w, ms_conn *c, uint32_t seconds)
{
	if (c->flags & MS_CONN_F_CLOSING)
		return; /* closing connections run the linger timer only */
	/* +1: the wheel ticks on whole seconds, so this never fires early. */
	ms_wheel_set(&w->wheel, &w->pool, c, seconds ? w->now_s + seconds + 1 : 0);
}

/* ---- completions -------------------------------------------------------- */

/* Kept input counts in the worker's budget by its allocation. */
static void spill_account(ms_worker *w, ms_conn *c, uint32_t cap_before)
{
	w->in_total += c->spill.cap;
	w->in_total -= cap_before;
}

static void hold_conn(ms_worker *w, ms_conn *c, uint8_t *p, size_t n);
static void queue_resume(ms_worker *w, ms_conn *c);

/* Input one connection may hand the protocol layer per loop iteration. A
 * multishot recv posts a completion per 4 KiB buffer, and a client that
 * floods its socket can have hundreds in one iteration: past this much,
 * its input is kept and parsed from the next iteration on, so one
 * connection costs its worker a bounded slice of each iteration (the
 * protocol layer bounds frames and requests per call on top). */
#define FEED_KIB 64

/* Count n more bytes handed to c (or, for a closing one, read from it) in
 * this iteration; returns the KiB counted so far (n = 0: just read). */
static uint32_t feed(ms_worker *w, ms_conn *c, size_t n)
{
	uint32_t it = (uint32_t)w->st.iterations & 0xffff, fed = w->fed[c->idx];
	uint32_t kib = (fed >> 16 == it ? fed & 0xffff : 0) + (uint32_t)((n + 1023) / 1024);
	if (n)
		w->fed[c->idx] = it << 16 | (kib < 0xffff ? kib : 0xffff);
	return kib;
}

static void deliver(ms_worker *w, ms_conn *c, uint8_t *p, size_t n)
{
	/* A peer that sends without reading what we answer: stop taking its
	 * input until its output drains (a pipeline of pings, requests whose
	 * replies pile up), so it cannot make us queue without bound. */
	if (c->out_bytes > w->slow_at / 2 && !(c->paused & MS_PAUSE_OUTPUT)) {
		c->paused |= MS_PAUSE_OUTPUT;
		w->st.conn_pauses++;
	}
	if (!c->paused && feed(w, c, 0) >= FEED_KIB) {
		c->paused |= MS_PAUSE_PROTO; /* yield: resumed next iteration */
		queue_resume(w, c);
		w->st.conn_pauses++;
	}
	if (c->paused) {
		hold_conn(w, c, p, n);
		return;
	}
	uint32_t cap = c->spill.cap;
	size_t len;
	uint8_t *buf = ms_spill_join(&c->spill, p, n, &len);
	feed(w, c, len);
	w->need_hint = 0;
	w->delivering = c;
	size_t used = H(w, c)->on_data(w, c, buf, len);
	w->delivering = NULL;
	if (c->flags & MS_CONN_F_CLOSING) {
		ms_spill_free(&c->spill); /* no more input is parsed */
	} else {
		ms_spill_keep(&c->spill, buf, len, used);
		if (w->need_hint > c->spill.cap && c->spill.len)
			ms_spill_reserve(&c->spill, w->need_hint);
	}
	spill_account(w, c, cap);
}

/* Input paused (mailbox high-water): keep the bytes unparsed and stop the
 * connection's recv, so what it sends next waits in the kernel (TCP flow
 * control pushes back on the sender) instead of in our memory. What the
 * recv had already posted lands here too: a few buffers per connection. */
static void hold(ms_worker *w, ms_conn *c, uint8_t *p, size_t n)
{
	uint32_t cap = c->spill.cap;
	size_t len;
	uint8_t *buf = ms_spill_join(&c->spill, p, n, &len);
	ms_spill_keep(&c->spill, buf, len, 0);
	spill_account(w, c, cap);
	if (!(c->flags & MS_CONN_F_HELD)) {
		c->flags |= MS_CONN_F_HELD;
		if (c->flags & MS_CONN_F_RECV)
			submit_cancel(w, ms_udata(MS_OP_RECV, c->idx, c->gen));
	}
}

/* One connection paused: keep what comes, and past MS_PAUSE_KEEP bytes
 * stop its recv (it is re-armed on resume). Below that the recv stays
 * armed, so a pause of one iteration (a yield) costs no cancel. */
static void hold_conn(ms_worker *w, ms_conn *c, uint8_t *p, size_t n)
{
	if (n) {
		uint32_t cap = c->spill.cap;
		size_t len;
		uint8_t *buf = ms_spill_join(&c->spill, p, n, &len);
		ms_spill_keep(&c->spill, buf, len, 0);
		spill_account(w, c, cap);
	}
	if (c->spill.len > MS_PAUSE_KEEP && (c->flags & MS_CONN_F_RECV))
		submit_cancel(w, ms_udata(MS_OP_RECV, c->idx, c->gen));
}

void ms_conn_input_need(ms_worker *w, ms_conn *c, size_t total)
{
	w->need_hint = total;
}

void ms_worker_input_bytes(ms_worker *w, int64_t n)
{
	w->in_total += (uint64_t)n;
}

void ms_conn_pause(ms_worker *w, ms_conn *c)
{
	if (!c->paused)
		w->st.conn_pauses++;
	c->paused |= MS_PAUSE_PROTO;
}

static void queue_resume(ms_worker *w, ms_conn *c)
{
	if (!(c->flags & (MS_CONN_F_RESUME | MS_CONN_F_DEAD))) {
		c->flags |= MS_CONN_F_RESUME;
		w->resumeq[w->nresume++] = c->idx;
	}
}

/* The pause holds until the resume list is processed (the next
 * iteration): input that arrives later in this iteration is kept too, so a
 * connection that yields cannot take another budget's worth now. */
void ms_conn_resume(ms_worker *w, ms_conn *c)
{
	if (c->paused & MS_PAUSE_PROTO)
		queue_resume(w, c);
}

static void park_rearm(ms_worker *w, ms_conn *c);

/* Below the low-water mark: parse what was held and read again. One scan
 * of the pool per pause (rare), instead of a list to keep across churn. */
static void resume_input(ms_worker *w)
{
	w->input_paused = false;
	for (uint32_t i = 0; i < w->pool.fresh; i++) {
		ms_conn *c = ms_pool_at(&w->pool, i);
		if (!(c->flags & MS_CONN_F_HELD) || (c->flags & MS_CONN_F_FREED))
			continue;
		c->flags &= (uint16_t)~MS_CONN_F_HELD;
		if (c->flags & (MS_CONN_F_CLOSING | MS_CONN_F_DEAD))
			continue;
		if (c->paused)
			continue; /* its own pause ends with its own resume */
		if (c->spill.len) {
			uint8_t none;
			deliver(w, c, &none, 0);
		}
		if (!(c->flags & (MS_CONN_F_RECV | MS_CONN_F_CLOSING)))
			park_rearm(w, c);
	}
}

/* Input after a close began is read only to see the peer's EOF (so our
 * close frame is not lost under a reset). A peer that goes on sending in
 * bulk (a flood that got itself closed) would keep its worker reading at
 * full speed: past FEED_KIB in one iteration we stop reading it. Resetting
 * it instead would destroy the close frame we owe it (an oversized message
 * is still arriving when we answer 1009); muted, it gets our FIN after the
 * output and the linger timer closes it. */
static void discard(ms_worker *w, ms_conn *c, size_t n)
{
	if (feed(w, c, n) >= FEED_KIB && !(c->flags & MS_CONN_F_MUTE)) {
		c->flags |= MS_CONN_F_MUTE;
		if (c->flags & MS_CONN_F_RECV)
			submit_cancel(w, ms_udata(MS_OP_RECV, c->idx, c->gen));
	}
}

/* Connections whose pause ended: parse what they kept, read again. Only
 * the entries there at the start: one that pauses and resumes itself while
 * being parsed (its work budget is spent) waits for the next iteration. */
static void resume_paused(ms_worker *w)
{
	uint32_t n = w->nresume;
	for (uint32_t i = 0; i < n; i++) {
		ms_conn *c = ms_pool_at(&w->pool, w->resumeq[i]);
		c->flags &= (uint16_t)~MS_CONN_F_RESUME;
		c->paused &= (uint8_t)~MS_PAUSE_PROTO;
		if (c->paused || (c->flags & (MS_CONN_F_CLOSING | MS_CONN_F_FREED | MS_CONN_F_HELD |
					      MS_CONN_F_OPENING)))
			continue; /* one still connecting reads once it is open */
		/* Even with nothing kept here: the protocol layer may keep
		 * decrypted input of its own. */
		uint8_t none;
		deliver(w, c, &none, 0);
		if (!c->paused && !(c->flags & (MS_CONN_F_RECV | MS_CONN_F_CLOSING)))
			park_rearm(w, c);
	}
	memmove(w->resumeq, w->resumeq + n, (w->nresume - n) * sizeof(uint32_t));
	w->nresume -= n;
}

static void park_rearm(ms_worker *w, ms_conn *c)
{
	if (!(c->flags & (MS_CONN_F_REARM | MS_CONN_F_DEAD))) {
		c->flags |= MS_CONN_F_REARM;
		w->rearm[w->nrearm++] = c->idx;
	}
}

static void on_recv(ms_worker *w, struct io_uring_cqe *cqe, ms_conn *c)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	int res = cqe->res;
	if (!more) {
		c->flags &= (uint16_t)~MS_CONN_F_RECV;
		c->inflight--;
	}
	if (res > 0) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		w->st.recvs++;
		w->st.bytes_in += (uint64_t)res;
		c->last_active = w->now_s;
		if (c->flags & MS_CONN_F_CLOSING)
			discard(w, c, (size_t)res);
		else if (w->input_paused && !c->paused)
			hold(w, c, ms_ring_buf(&w->ring, bid), (size_t)res);
		else
			deliver(w, c, ms_ring_buf(&w->ring, bid), (size_t)res);
		ms_ring_buf_put(&w->ring, bid);
		if (!more) {
			w->st.recv_stops++;
			park_rearm(w, c);
		}
	} else if (res == -ENOBUFS) {
		w->st.recv_nobufs++;
		park_rearm(w, c);
	} else if (res == -ECANCELED) {
		/* A pause cancelled it; if the pause ended before this arrived
		 * (resume_paused saw the recv still armed), read again now. */
		if (!more && !c->paused && !(c->flags & (MS_CONN_F_HELD | MS_CONN_F_CLOSING)))
			park_rearm(w, c);
	} else {
		/* EOF (0) or a socket error. */
		if (c->flags & MS_CONN_F_CLOSING) {
			/* A peer that half-closed right after its last request (or
			 * close frame) still gets what we queued for it: the flush
			 * goes on (bounded by its timer), then the slot closes. */
			if (res != 0 || !(c->flags & MS_CONN_F_FLUSH) || (c->flags & MS_CONN_F_LINGER) ||
			    !(c->out_head || (c->flags & MS_CONN_F_SEND)))
				teardown(w, c);
		} else if (res == 0 && H(w, c)->on_eof(w, c, res)) {
			/* Kept: the handler answers, then closes. */
		} else {
			if (res != 0)
				H(w, c)->on_eof(w, c, res);
			if (!(c->flags & MS_CONN_F_CLOSING))
				ms_conn_close(w, c, res == 0 ? MS_CLOSE_FLUSH : MS_CLOSE_ABORT);
			if ((c->flags & MS_CONN_F_FLUSH) && !(c->flags & MS_CONN_F_RECV) &&
			    !c->out_head && !(c->flags & MS_CONN_F_SEND))
				teardown(w, c);
		}
	}
	maybe_finish(w, c);
}

static void on_send(ms_worker *w, struct io_uring_cqe *cqe, ms_conn *c)
{
	c->flags &= (uint16_t)~MS_CONN_F_SEND;
	c->send_nodes = 0;
	c->inflight--;
	if (c->sendctx) {
		sendctx *x = c->sendctx;
		x->next = w->free_ctx;
		w->free_ctx = x;
		c->sendctx = NULL;
	}
	if (cqe->res < 0) {
		if (cqe->res != -ECANCELED)
			ms_debug("conn %u: send failed: %s", c->idx, strerror(-cqe->res));
		teardown(w, c);
	} else if (!(c->flags & MS_CONN_F_DEAD)) {
		uint32_t sent = (uint32_t)cqe->res;
		w->st.bytes_out += sent;
		uint32_t asked = 0;
		for (ms_outq_node *n = c->out_head; n && asked <= sent; n = n->next)
			asked += n->end - n->off;
		outq_advance(w, c, sent);
		if (c->over_ms) {
			c->drained += sent;
			if (c->out_bytes <= w->slow_at)
				c->over_ms = 0; /* check_over drops it from its list */
		}
		if ((c->paused & MS_PAUSE_OUTPUT) && c->out_bytes <= w->slow_at / 4) {
			c->paused &= (uint8_t)~MS_PAUSE_OUTPUT;
			if (!c->paused)
				queue_resume(w, c);
		}
		if (c->out_head) {
			if (sent < asked)
				w->st.partial_sends++;
			mark_dirty(w, c);
		} else if (c->flags & MS_CONN_F_FLUSH) {
			start_linger(w, c);
		}
	}
	maybe_finish(w, c);
}

/* Slots the public contexts hold (those of contexts with a reserve apart). */
static uint32_t public_live(const ms_worker *w)
{
	return w->live - w->nreserved;
}

/* Over the --max-conns share (connections open or handshaking; closing
 * ones sit in the slack), or overloaded (mailbox backlog, queued output):
 * the protocol layer answers 503 and closes. A context with a reserve is
 * never over: it has its own budget (rsv_admit, ms_worker_connect). */
static void open_conn(ms_worker *w, ms_conn *c)
{
	bool over = false;
	if (!reserved(w, c)) {
		over = public_live(w) - w->nclosing > w->cap;
		if (!over && ms_worker_overloaded(w)) {
			over = true;
			w->st.overload_503++;
		}
		if (over)
			w->st.rejects++;
	}
	arm_recv(w, c);
	H(w, c)->on_open(w, c, over);
}

static void on_peer(ms_worker *w, struct io_uring_cqe *cqe, ms_conn *c)
{
	c->flags &= (uint16_t)~MS_CONN_F_OPENING;
	c->inflight--;
	if (c->flags & MS_CONN_F_CLOSING) {
		teardown(w, c);
	} else if (cqe->res < 0 && (cqe->res == -ENOTCONN || w->cfg->max_conns_per_ip)) {
		/* ENOTCONN: reset before we looked. Anything else means this
		 * kernel cannot do it; --max-conns-per-ip then cannot be kept. */
		if (cqe->res != -ENOTCONN)
			ms_warn("peer address: %s", strerror(-cqe->res));
		memset(&w->peer[c->idx], 0, sizeof(w->peer[0]));
		w->st.rejects++;
		teardown(w, c);
	} else {
		if (cqe->res < 0) {
			/* A kernel without it (before 6.7): the handshake limit,
			 * which is on by default, goes unkept rather than every
			 * client being refused. */
			ms_warn("peer address: %s; --max-handshakes-per-ip not applied",
				strerror(-cqe->res));
			memset(&w->peer[c->idx], 0, sizeof(w->peer[0]));
			w->no_peer = true;
		}
		open_conn(w, c);
	}
	maybe_finish(w, c);
}

/* Connections of x not closing (x's list holds at most 2 * reserve). */
static uint32_t rsv_open(const ms_worker *w, const wctx *x)
{
	uint32_t open = 0;
	for (uint32_t i = 0; i < x->nrsv; i++)
		open += !(ms_pool_at(&w->pool, x->rsv[i])->flags & MS_CONN_F_CLOSING);
	return open;
}

/* An accept on a listening context with a reserve: whether its budget has
 * room. With `reserve` of its connections open (not closing), the oldest
 * that the protocol layer lets go (on_evict: not waiting on an answer) is
 * closed first, so a new one (a health check) is answered at once. The
 * scan walks the context's own list of at most 2 * reserve slots, only on
 * that listener's accepts: a few dozen entries, never the pool. With every
 * slot held (reserve closing), there is no room: false. */
static bool rsv_admit(ms_worker *w, wctx *x)
{
	if (x->nrsv >= 2 * x->def.reserve)
		return false;
	if (rsv_open(w, x) < x->def.reserve)
		return true;
	for (uint32_t i = 0; i < x->nrsv; i++) {
		ms_conn *c = ms_pool_at(&w->pool, x->rsv[i]);
		if (c->flags & MS_CONN_F_CLOSING)
			continue;
		bool gone = true;
		if (x->h->on_evict)
			gone = x->h->on_evict(w, c);
		else
			ms_conn_close(w, c, MS_CLOSE_ABORT);
		if (gone) {
			w->st.admin_evictions++;
			break;
		}
	}
	return true; /* none let go (all busy): this one is served over the budget */
}

static void rsv_remove(ms_worker *w, wctx *x, uint32_t idx)
{
	for (uint32_t i = 0; i < x->nrsv; i++)
		if (x->rsv[i] == idx) {
			memmove(&x->rsv[i], &x->rsv[i + 1], (x->nrsv - i - 1) * sizeof(x->rsv[0]));
			x->nrsv--;
			w->nreserved--;
			return;
		}
}

/* A slot for a new connection of context l. NULL when the pool is full. */
static ms_conn *conn_new(ms_worker *w, int l, int fidx)
{
	wctx *x = &w->ctx[l];
	ms_conn *c = ms_pool_alloc(&w->pool);
	if (!c)
		return NULL;
	c->fidx = fidx;
	c->kind = (uint8_t)l;
	c->last_active = w->now_s;
	w->live++;
	x->live++;
	if (w->live > w->st.max_conns)
		w->st.max_conns = w->live;
	if (x->def.reserve) {
		x->rsv[x->nrsv++] = c->idx;
		w->nreserved++;
	}
	return c;
}

static void on_accept(ms_worker *w, struct io_uring_cqe *cqe, uint32_t l)
{
	wctx *x = &w->ctx[l];
	if (!(cqe->flags & IORING_CQE_F_MORE)) {
		x->armed = false;
		if (!x->def.reserve)
			w->st.accept_stops++; /* its accept is one-shot by design */
	}
	if (cqe->res < 0) {
		if (cqe->res == -ENFILE || cqe->res == -EMFILE || cqe->res == -ENOMEM)
			w->accept_parked = true; /* until a slot frees */
		else if (cqe->res != -ECANCELED) {
			ms_warn("accept: %s", strerror(-cqe->res));
			w->accept_retry_at = w->now_s + 1; /* no busy loop on a broken listener */
		}
		return;
	}
	int fidx = cqe->res;
	bool rsv = x->def.reserve != 0;
	if (rsv && !rsv_admit(w, x)) {
		close_fidx(w, fidx);
		return;
	}
	/* Accepted while draining (raced the listener's close, or a kept
	 * admin listener): served, so it gets an answer (503 / health). The
	 * public contexts share the pool up to the cap and its slack only, so
	 * the reserves' slots stay free for their contexts. */
	bool room = rsv || public_live(w) < w->cap + ACCEPT_SLACK;
	ms_conn *c = room ? conn_new(w, (int)l, fidx) : NULL;
	if (!c) {
		close_fidx(w, fidx);
		w->st.rejects++;
		w->accept_parked = true;
		return;
	}
	w->st.accepts++;
	if ((x->def.flags & MS_CTX_PEER) && !w->no_peer)
		submit_peer(w, c); /* opened when the address is in */
	else
		open_conn(w, c);
}

/* ---- outbound connections ------------------------------------------------ */

/* Outbound sockets get what accepted ones inherit from their listener:
 * small requests and replies must not wait for Nagle. */
static const int one = 1;

/* The connect failed (or timed out) before on_open: tell the protocol
 * layer, then close; on_free follows at the end of the iteration. */
static void connect_failed(ms_worker *w, ms_conn *c, int err)
{
	w->st.connect_failures++;
	ms_debug("conn %u: connect failed: %s", c->idx, strerror(-err));
	if (H(w, c)->on_connect_error)
		H(w, c)->on_connect_error(w, c, err);
	teardown(w, c);
}

int ms_worker_connect(ms_worker *w, int ctx, const struct sockaddr *addr, socklen_t len,
		      uint32_t timeout_s, ms_conn **out)
{
	if (ctx < 0 || ctx >= w->nctx || !(w->ctx[ctx].def.flags & MS_CTX_OUTBOUND) || !addr ||
	    len > sizeof(w->peer[0]) ||
	    !((addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) ||
	      (addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6))))
		return -EINVAL;
	if (w->drain_closed)
		return -ESHUTDOWN; /* the loop ends once the connections are gone */
	wctx *x = &w->ctx[ctx];
	if (x->nrsv >= 2 * x->def.reserve || rsv_open(w, x) >= x->def.reserve)
		return -EAGAIN;
	ms_conn *c = conn_new(w, ctx, -1);
	if (!c)
		return -EAGAIN; /* the pool holds every reserve: not reached */
	/* The address lives in the peer slot: ms_conn_peer() names it, and
	 * the connect reads it when it is issued, after the socket is made. */
	memset(&w->peer[c->idx], 0, sizeof(w->peer[0]));
	memcpy(&w->peer[c->idx], addr, len);
	c->flags |= MS_CONN_F_OPENING;
	struct io_uring_sqe *sqe = sqe_get(w);
	io_uring_prep_socket_direct_alloc(sqe, addr->sa_family, SOCK_STREAM, 0, 0);
	io_uring_sqe_set_data64(sqe, ms_udata(MS_OP_SOCKET, c->idx, c->gen));
	c->inflight++;
	if (timeout_s)
		ms_wheel_set(&w->wheel, &w->pool, c, w->now_s + timeout_s + 1);
	w->st.connects++;
	*out = c;
	return 0;
}

/* The socket is made: TCP_NODELAY, then the connect. The index is known
 * only now (allocated in the table like an accept's), so the two follow
 * the socket's completion rather than being linked to it. The setsockopt
 * is hard-linked: its failure (a kernel without socket commands) must not
 * cancel the connect, and its success posts nothing. */
static void on_socket(ms_worker *w, struct io_uring_cqe *cqe, ms_conn *c)
{
	c->inflight--;
	if (cqe->res >= 0)
		c->fidx = cqe->res;
	if (c->flags & MS_CONN_F_DEAD) {
		maybe_finish(w, c); /* closed meanwhile: the slot's close frees the socket */
		return;
	}
	if (cqe->res < 0) {
		connect_failed(w, c, cqe->res);
		return;
	}
	struct io_uring_sqe *sqe = sqe_get(w);
	ms_ring_prep_sockopt(sqe, SOCKET_URING_OP_SETSOCKOPT, c->fidx, IPPROTO_TCP, TCP_NODELAY,
			     (void *)&one, sizeof(one));
	sqe->flags |= IOSQE_IO_HARDLINK | IOSQE_CQE_SKIP_SUCCESS;
	io_uring_sqe_set_data64(sqe, ms_udata(MS_OP_SETOPT, c->idx, c->gen));
	const struct sockaddr *sa = (const struct sockaddr *)&w->peer[c->idx];
	sqe = sqe_get(w);
	io_uring_prep_connect(sqe, c->fidx, sa, sa->sa_family == AF_INET
						 ? sizeof(struct sockaddr_in)
						 : sizeof(struct sockaddr_in6));
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(sqe, ms_udata(MS_OP_CONNECT, c->idx, c->gen));
	c->inflight++;
}

static void on_connect(ms_worker *w, struct io_uring_cqe *cqe, ms_conn *c)
{
	c->inflight--;
	if (c->flags & MS_CONN_F_DEAD) {
		maybe_finish(w, c); /* closed, or timed out (reported then) */
		return;
	}
	if (cqe->res < 0) {
		c->flags &= (uint16_t)~MS_CONN_F_OPENING; /* nothing left to cancel */
		connect_failed(w, c, cqe->res);
		return;
	}
	c->flags &= (uint16_t)~MS_CONN_F_OPENING;
	c->last_active = w->now_s;
	ms_wheel_set(&w->wheel, &w->pool, c, 0); /* the connect timeout is over */
	open_conn(w, c);
	if (c->out_head && !(c->flags & MS_CONN_F_DEAD))
		mark_dirty(w, c); /* queued while connecting */
	maybe_finish(w, c);
}

/* Completions about one connection (the rest: accepts, cancels, closes,
 * doorbells, failed setsockopts). */
#define CONN_OPS                                                                            \
	(1u << MS_OP_RECV | 1u << MS_OP_SEND | 1u << MS_OP_SHUTDOWN | 1u << MS_OP_PEER |    \
	 1u << MS_OP_SOCKET | 1u << MS_OP_CONNECT)

static void dispatch(ms_worker *w, struct io_uring_cqe *cqe)
{
	uint64_t u = io_uring_cqe_get_data64(cqe);
	enum ms_op op = ms_udata_op(u);
	if (op == MS_OP_ACCEPT) {
		if (ms_udata_idx(u) < (uint32_t)w->nctx)
			on_accept(w, cqe, ms_udata_idx(u));
		return;
	}
	if (!(op < 32 && (CONN_OPS >> op) & 1)) {
		if (op == MS_OP_SETOPT)
			ms_debug("conn %u: setsockopt: %s", ms_udata_idx(u), strerror(-cqe->res));
		return; /* cancel/close failures and doorbells: nothing to do */
	}
	uint32_t idx = ms_udata_idx(u);
	ms_conn *c = idx < w->pool.fresh ? ms_pool_at(&w->pool, idx) : NULL;
	if (!c || c->gen != ms_udata_gen(u) || (c->flags & MS_CONN_F_FREED)) {
		w->st.stale++;
		if (cqe->flags & IORING_CQE_F_BUFFER)
			ms_ring_buf_put(&w->ring, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		return;
	}
	switch (op) {
	case MS_OP_RECV:
		on_recv(w, cqe, c);
		break;
	case MS_OP_SEND:
		on_send(w, cqe, c);
		break;
	case MS_OP_PEER:
		on_peer(w, cqe, c);
		break;
	case MS_OP_SOCKET:
		on_socket(w, cqe, c);
		break;
	case MS_OP_CONNECT:
		on_connect(w, cqe, c);
		break;
	default:
		c->inflight--;
		maybe_finish(w, c);
		break;
	}
}

/* ---- loop ---------------------------------------------------------------- */

static void flush_dirty(ms_worker *w)
{
	if (w->ndirty)
		w->flush_ns = mono_ns();
	for (uint32_t i = 0; i < w->ndirty; i++) {
		ms_conn *c = ms_pool_at(&w->pool, w->dirty[i]);
		c->flags &= (uint16_t)~MS_CONN_F_DIRTY;
		/* Output queued while connecting waits for the connect (on_connect
		 * lists it again). */
		if ((c->flags & (MS_CONN_F_DEAD | MS_CONN_F_SEND | MS_CONN_F_OPENING)) || !c->out_head)
			continue;
		if (c->flags & MS_CONN_F_XFORM)
			transform_pending(w, c);
		if (c->out_head && !(c->flags & MS_CONN_F_DEAD))
			submit_send(w, c);
	}
	w->ndirty = 0;
}

static void rearm_stopped(ms_worker *w)
{
	if (w->nrearm)
		ms_ring_buf_publish(&w->ring); /* never re-arm onto an empty ring */
	for (uint32_t i = 0; i < w->nrearm; i++) {
		ms_conn *c = ms_pool_at(&w->pool, w->rearm[i]);
		c->flags &= (uint16_t)~MS_CONN_F_REARM;
		if (!(c->flags & (MS_CONN_F_DEAD | MS_CONN_F_RECV | MS_CONN_F_HELD | MS_CONN_F_MUTE |
				  MS_CONN_F_OPENING)) &&
		    !c->paused)
			arm_recv(w, c);
	}
	w->nrearm = 0;
	if ((!w->accept_parked || w->pool.used < w->pool.cap) &&
	    w->now_s >= w->accept_retry_at)
		for (int l = 0; l < w->nctx; l++) {
			const wctx *x = &w->ctx[l];
			if (!x->armed && x->listen_fd >= 0 &&
			    (!x->def.reserve || x->nrsv < 2 * x->def.reserve))
				arm_accept(w, l);
		}
}

/* Drop idx from a short list (connections over their output bound, or
 * waiting to resume: few at any time). */
static void unlist(uint32_t *list, uint32_t *n, uint32_t idx)
{
	for (uint32_t i = 0; i < *n; i++) {
		if (list[i] == idx) {
			list[i] = list[--*n];
			return;
		}
	}
}

static void shed_one(ms_worker *w, ms_conn *c)
{
	c->flags |= MS_CONN_F_SHED; /* its closing handshake may take a while */
	if (H(w, c)->on_shed)
		H(w, c)->on_shed(w, c);
	else
		ms_conn_close(w, c, MS_CLOSE_ABORT);
}

/* The slow-consumer rule (PROTOCOL.md): a connection whose queued output
 * stays over --max-backpressure for --slow-window while the kernel takes
 * less than --max-backpressure of it is not draining: close it 1008. One
 * that keeps reading is judged on what it drains, not on the size of a
 * burst. Past the hard cap it is closed at once: that bounds what a burst
 * can make us hold before the window has run. Runs once a second, and in
 * the iteration a listed connection passes the hard cap. */
static void check_over(ms_worker *w)
{
	uint32_t now = ms_worker_now_ms(w), k = 0;
	w->over_hard = false;
	w->over_checked_s = w->now_s;
	for (uint32_t i = 0; i < w->nover; i++) {
		ms_conn *c = ms_pool_at(&w->pool, w->overq[i]);
		bool slow = false;
		if (c->over_ms && !(c->flags & (MS_CONN_F_DEAD | MS_CONN_F_SHED | MS_CONN_F_FREED))) {
			/* over_ms is the ms it went over | 1 (0 = under): in the
			 * iteration that set it, it may be one ahead of now. */
			if (c->out_bytes > w->hard_cap) {
				slow = true;
			} else if ((int32_t)(now - c->over_ms) >= (int32_t)w->slow_window_ms) {
				/* Signed: over_ms is now | 1 (0 means "under"), up to 1 ms
				 * after the clock. */
				slow = c->drained < w->slow_at;
				c->over_ms = now | 1; /* draining: judge the next window */
				c->drained = 0;
			}
			if (!slow) {
				w->overq[k++] = w->overq[i];
				continue;
			}
		}
		c->flags &= (uint16_t)~MS_CONN_F_OVER;
		if (slow) {
			ms_debug("conn %u: slow consumer (%u bytes queued, %u drained)", c->idx,
				 c->out_bytes, c->drained);
			c->over_ms = 0;
			w->st.slow_closes++;
			shed_one(w, c);
		}
	}
	w->nover = k;
}

static void free_closed(ms_worker *w)
{
	for (uint32_t i = 0; i < w->nfreeq; i++) {
		ms_conn *c = ms_pool_at(&w->pool, w->freeq[i]);
		wctx *x = &w->ctx[c->kind];
		if (c->fidx >= 0)
			close_fidx(w, c->fidx); /* an outbound one may have none */
		outq_release(w, c);
		w->in_total -= c->spill.cap;
		ms_spill_free(&c->spill);
		if (c->flags & MS_CONN_F_OVER)
			unlist(w->overq, &w->nover, c->idx);
		if (c->flags & MS_CONN_F_RESUME)
			unlist(w->resumeq, &w->nresume, c->idx);
		if (c->sendctx) {
			sendctx *sc = c->sendctx;
			sc->next = w->free_ctx;
			w->free_ctx = sc;
			c->sendctx = NULL;
		}
		if (x->h->on_free)
			x->h->on_free(w, c);
		memset(&w->peer[c->idx], 0, sizeof(w->peer[0]));
		if (x->def.reserve)
			rsv_remove(w, x, c->idx);
		else {
			assert(w->nclosing > 0); /* every freed slot went through teardown */
			w->nclosing--;
		}
		c->fidx = -1;
		ms_pool_free(&w->pool, c);
		w->live--;
		x->live--;
		w->st.closes++;
	}
	w->nfreeq = 0;
}

/* Queued output and kept input passed this worker's --max-pending-total
 * share: close the largest holders first until what the open connections
 * hold fits. The
 * bytes of connections already closing (a send in flight, TLS records)
 * still count in out_total until they go, so the scan, not out_total,
 * decides, and it is rate-limited while nothing is left to shed. A shed
 * connection is marked: the protocol layer's closing handshake (close frame,
 * then the peer's) leaves it open for a while, and it must not be picked
 * twice. */
/* What a connection makes this worker hold: queued output and kept input
 * (the protocol layer's own input buffers are in the total but not here:
 * the largest holders by core's count go first). */
static inline uint32_t held(const ms_conn *c)
{
	return c->out_bytes + c->spill.cap;
}

static void shed_pending(ms_worker *w)
{
	if (w->now_ns < w->shed_scan_ns)
		return;
	/* One pass: what the open connections hold, and the SHED_MAX largest
	 * queues, largest first (insertion into a short sorted array). */
	ms_conn *top[SHED_MAX];
	int ntop = 0;
	uint64_t open_total = 0;
	for (uint32_t i = 0; i < w->pool.fresh; i++) {
		ms_conn *c = ms_pool_at(&w->pool, i);
		if (c->fidx < 0 ||
		    (c->flags & (MS_CONN_F_FREED | MS_CONN_F_CLOSING | MS_CONN_F_SHED)))
			continue;
		uint32_t h = held(c);
		open_total += h;
		if (!h || (ntop == SHED_MAX && h <= held(top[SHED_MAX - 1])))
			continue;
		int j = ntop < SHED_MAX ? ntop++ : SHED_MAX - 1;
		for (; j > 0 && held(top[j - 1]) < h; j--)
			top[j] = top[j - 1];
		top[j] = c;
	}
	int k = 0;
	for (; k < ntop && open_total > w->pending_share; k++) {
		ms_conn *big = top[k];
		ms_debug("conn %u: shed at the pending-bytes cap (%u of %llu bytes held)",
			 big->idx, held(big), (unsigned long long)(w->out_total + w->in_total));
		open_total -= held(big);
		w->st.pending_cap_closes++;
		shed_one(w, big);
	}
	/* Fits now, or nothing left to shed: rescan only after a pause. Still
	 * over with SHED_MAX shed: the next iteration goes on. */
	if (open_total <= w->pending_share || k < SHED_MAX)
		w->shed_scan_ns = w->now_ns + SHED_SCAN_MS * 1000000ull;
}

/* Mailbox high-water: pause input until the backlog is back to LOW. */
static void check_backlog(ms_worker *w)
{
	size_t backlog = ms_mbox_backlog_msgs(w->mbox);
	uint32_t high = w->cfg->mailbox_high_water, low = high / 8;
	if (!w->input_paused && backlog >= high) {
		w->input_paused = true;
		w->st.input_pauses++;
		ms_debug("mailbox backlog %zu messages: input paused", backlog);
	} else if (w->input_paused && backlog <= low) {
		resume_input(w);
	}
}

/* An idle worker trims at once, then every this many seconds: what other
 * workers still free into its allocator pages, and shard state swept later
 * (streams forgotten after their idle time), is given back too. */
#define TRIM_IDLE_SECONDS 10

/* mimalloc's, when the server links it (not in sanitizer builds or tests). */
extern void mi_collect(bool force) __attribute__((weak));

/* A worker left without connections gives back what its busy spell made
 * resident: the provided receive buffers (no recv is armed, and the kernel
 * faults pages back in as it fills them), the connection pool and the
 * per-slot arrays (ms_pool_trim keeps generations moving), the node and
 * send-context caches, and the allocator's free memory. Those caches are
 * what would otherwise stay behind: blocks allocated at the peak, scattered
 * over allocator pages that nothing else keeps. */
static void trim_idle(ms_worker *w)
{
	if (w->ring.bufs)
		madvise(w->ring.bufs, w->ring.bufs_size, MADV_DONTNEED);
	/* No timer names a slot; the run loop calls this after the dirty,
	 * free and re-arm lists are emptied. */
	if (w->wheel.count == 0 && ms_pool_trim(&w->pool)) {
		ms_pool_array_trim(&w->pool, w->peer, sizeof(w->peer[0]));
		ms_pool_array_trim(&w->pool, w->dirty, sizeof(uint32_t));
		ms_pool_array_trim(&w->pool, w->rearm, sizeof(uint32_t));
		ms_pool_array_trim(&w->pool, w->freeq, sizeof(uint32_t));
		ms_pool_array_trim(&w->pool, w->overq, sizeof(uint32_t));
		ms_pool_array_trim(&w->pool, w->resumeq, sizeof(uint32_t));
		ms_pool_array_trim(&w->pool, w->fed, sizeof(uint32_t));
	}
	free_caches(w);
	if (mi_collect)
		mi_collect(true);
}

static void fire_timer(void *arg, ms_conn *c)
{
	ms_worker *w = arg;
	if (c->flags & MS_CONN_F_DEAD)
		return;
	if (c->flags & MS_CONN_F_CLOSING) {
		teardown(w, c); /* linger or flush took too long */
		return;
	}
	if ((c->flags & MS_CONN_F_OPENING) && (w->ctx[c->kind].def.flags & MS_CTX_OUTBOUND)) {
		connect_failed(w, c, -ETIMEDOUT); /* teardown cancels the connect */
		return;
	}
	H(w, c)->on_timeout(w, c);
}

static void abort_conn(ms_worker *w, ms_conn *c, void *arg)
{
	teardown(w, c);
}

/* Stop listening on l: cancel the multishot accept and close the socket,
 * so the kernel stops queueing connections to it (with
 * net.ipv4.tcp_migrate_req=1 the ones already queued move to another
 * listener of the port, e.g. the next process's). */
static void stop_listener(ms_worker *w, int l)
{
	wctx *x = &w->ctx[l];
	if (x->listen_fd < 0)
		return;
	if (x->armed)
		submit_cancel(w, ms_udata(MS_OP_ACCEPT, (uint32_t)l, 0));
	close(x->listen_fd); /* the accept in flight holds the file until cancelled */
	x->listen_fd = -1;
}

/* Graceful shutdown, step 1: stop accepting (health checks now answer 503,
 * chat requests are refused) and enter the drain barrier. The protocol
 * layer's on_drain (close 1001 to every client) runs only once every
 * worker has stopped taking input and the messages already in flight
 * between workers have been delivered: rounds of the barrier, one hop of a
 * message chain each (publish -> owner -> subscribers, join -> ack ->
 * leave -> presence). */
#define DRAIN_ROUNDS 5
static void begin_drain(ms_worker *w)
{
	w->draining = true;
	w->drain_deadline = w->now_s + w->cfg->drain_timeout;
	for (int l = 0; l < w->nctx; l++)
		if (!(w->ctx[l].def.flags & MS_CTX_KEEP_LISTENING))
			stop_listener(w, l);
	if (!w->hub)
		w->drain_round = DRAIN_ROUNDS;
}

static void ring_bell(void *arg, uint32_t to);

/* After this iteration's mailbox flush: arrive at the current round, or
 * move on to the next once the round was seen done at the start of the
 * iteration (so everything pushed before it was drained this iteration). */
static void drain_step(ms_worker *w)
{
	if (w->drain_arrived && w->drain_seen > w->drain_round) {
		w->drain_round++;
		w->drain_arrived = false;
	}
	if (w->drain_arrived || w->drain_round >= DRAIN_ROUNDS)
		return;
	/* Batches still on the overflow list (ring full) are not yet visible
	 * to their receivers: arrive only once they are in (the loop retries
	 * the overflow every 50 µs meanwhile). */
	if (ms_mbox_backlog(w->mbox))
		return;
	w->drain_arrived = true;
	if (ms_mbox_round_arrive(w->hub, w->drain_round)) {
		uint32_t n = ms_mbox_hub_size(w->hub);
		for (uint32_t to = 0; to < n; to++)
			if (to != w->id)
				ring_bell(w, to);
		w->kick = true; /* do not sleep: the next round starts now */
	}
}

static void drain_conn(ms_worker *w, ms_conn *c, void *arg)
{
	if (c->flags & MS_CONN_F_CLOSING)
		return;
	if (H(w, c)->on_drain)
		H(w, c)->on_drain(w, c);
	else
		ms_conn_close(w, c, MS_CLOSE_FLUSH);
}

/* Graceful shutdown, step 2 (barrier passed): close every connection,
 * each as its context says. A kept (admin) listener goes on answering
 * until the worker exits. */
static void finish_drain(ms_worker *w)
{
	w->drain_closed = true;
	ms_worker_foreach(w, drain_conn, NULL);
}

/* ---- snapshots ------------------------------------------------------------ */

enum { MSG_SNAP = 0xff01, MSG_SNAP_DONE }; /* core's own mailbox messages */

typedef struct collect {
	struct collect *next, *prev; /* the initiator's list of rounds under way */
	ms_collect_fn fn;
	void *arg;
	uint32_t n, left;
	ms_worker_snap snaps[];
} collect;

void ms_worker_snapshot(ms_worker *w, ms_worker_snap *out)
{
	memset(out, 0, sizeof(*out));
	out->id = w->id;
	out->live = w->live;
	out->cap = w->cap;
	for (int l = 0; l < w->nctx; l++)
		out->live_kind[l] = w->ctx[l].live;
	out->draining = w->draining;
	out->st = w->st;
	memcpy(out->hist, w->hist, sizeof(out->hist));
	if (w->mbox) {
		out->mb = *ms_mbox_stats_of(w->mbox);
		out->pending_out = ms_mbox_backlog(w->mbox);
	}
}

static void collect_done(ms_worker *w, collect *k)
{
	if (k->prev)
		k->prev->next = k->next;
	else
		w->collects = k->next;
	if (k->next)
		k->next->prev = k->prev;
	k->fn(w, k->snaps, k->n, k->arg);
	free(k);
}

void ms_worker_collect(ms_worker *w, ms_collect_fn fn, void *arg)
{
	uint32_t n = ms_worker_count(w);
	collect *k = xmalloc(sizeof(*k) + n * sizeof(ms_worker_snap));
	/* Listed until answered: a round still under way at exit (a worker
	 * stopped draining its mailbox) is freed by ms_worker_destroy. */
	k->prev = NULL;
	k->next = w->collects;
	if (k->next)
		k->next->prev = k;
	w->collects = k;
	k->fn = fn;
	k->arg = arg;
	k->n = n;
	k->left = n;
	if (!w->mbox) {
		ms_worker_snapshot(w, &k->snaps[0]);
		collect_done(w, k);
		return;
	}
	for (uint32_t to = 0; to < n; to++) {
		ms_msg *m = ms_worker_post(w, to);
		m->type = MSG_SNAP;
		m->ptr = k;
	}
}

static void dump_collected(ms_worker *w, const ms_worker_snap *snaps, uint32_t n, void *arg)
{
	ms_hist_dump(snaps, n, w->cfg->hist_dir[0] ? w->cfg->hist_dir : NULL, "dump");
}

static void core_msg(ms_worker *w, uint32_t from, ms_msg *m)
{
	collect *k = m->ptr;
	if (m->type == MSG_SNAP) {
		/* Each worker writes only its own element; the reply's hand-off
		 * through the mailbox orders it before the initiator's read. */
		ms_worker_snapshot(w, &k->snaps[w->id]);
		ms_msg *r = ms_worker_post(w, from);
		r->type = MSG_SNAP_DONE;
		r->ptr = k;
	} else if (m->type == MSG_SNAP_DONE && --k->left == 0) {
		collect_done(w, k);
	}
}

static void on_mail(void *arg, uint32_t from, ms_msg *m)
{
	ms_worker *w = arg;
	if (from != w->id) { /* a cross-core hop (messages to oneself never wait) */
		if (!w->mail_ns)
			w->mail_ns = mono_ns();
		ms_hist_record(&w->hist[MS_HIST_HOP],
			       w->mail_ns > m->t_push ? w->mail_ns - m->t_push : 0);
	}
	if (m->type >= 0xff00)
		core_msg(w, from, m);
	else if (w->hooks && w->hooks->on_msg)
		w->hooks->on_msg(w, from, m);
}

/* Doorbell: a MSG_RING completion on the target's ring wakes its wait. The
 * completion on our side is skipped. */
static void ring_bell(void *arg, uint32_t to)
{
	ms_worker *w = arg;
	int fd = ms_mbox_bell(w->hub, to);
	if (fd < 0)
		return;
	struct io_uring_sqe *sqe = sqe_get(w);
	io_uring_prep_msg_ring(sqe, fd, 0, ms_udata(MS_OP_WAKE, 0, 0), 0);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	io_uring_sqe_set_data64(sqe, ms_udata(MS_OP_WAKE, 0, 0));
}

static void update_clock(ms_worker *w)
{
	w->now_ns = w->flush_ns = mono_ns();
	w->now_s = (uint32_t)((w->now_ns - w->start_ns) / 1000000000u) + 1;
}

static void run(ms_worker *w)
{
	const ms_config *cfg = w->cfg;
	struct io_uring *ring = &w->ring.ring;
	rearm_stopped(w); /* arms every listener */
	for (;;) {
		/* Wait for a batch: the completions we can expect are bounded by
		 * the live connections (one multishot recv each) plus accept. */
		unsigned expect = w->live + 1;
		unsigned wait_nr = expect < cfg->wait_batch ? expect : cfg->wait_batch;
		uint64_t next_tick = (uint64_t)w->now_s * 1000000000u + w->start_ns;
		uint64_t timeout = next_tick > w->now_ns ? next_tick - w->now_ns : 1000000;
		if (w->draining && timeout > 100000000u)
			timeout = 100000000u;
		if (w->mbox && !ms_mbox_sleep_begin(w->mbox))
			wait_nr = 0; /* mail is waiting: do not block */
		if (w->mbox && ms_mbox_backlog(w->mbox) && timeout > 50000)
			timeout = 50000; /* a full ring: retry the overflow soon */
		if (w->kick || w->nresume) {
			w->kick = false; /* resumed input is parsed next iteration: do not sleep */
			wait_nr = 0;
		}
		int ret = ms_ring_enter(&w->ring, wait_nr, cfg->min_wait_us, timeout);
		if (w->mbox)
			ms_mbox_sleep_end(w->mbox);
		w->st.enters++;
		w->st.iterations++;
		if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN) {
			ms_err("io_uring_enter: %s", strerror(-ret));
			if (w->hub && !w->drain_left)
				ms_mbox_hub_absent(w->hub); /* nobody waits for a dead loop */
			break;
		}
		if (IO_URING_READ_ONCE(*ring->sq.kflags) & IORING_SQ_CQ_OVERFLOW)
			w->st.cq_overflows++;
		update_clock(w);
		if (w->draining && w->hub)
			w->drain_seen = ms_mbox_rounds_done(w->hub); /* before the drain below */

		/* Input paused until this iteration (a yield, answers back, output
		 * drained) goes first: it arrived before this iteration's. */
		if (w->nresume)
			resume_paused(w);
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		io_uring_for_each_cqe(ring, head, cqe) {
			dispatch(w, cqe);
			n++;
		}
		io_uring_cq_advance(ring, n);
		w->st.cqes += n;

		if (w->mbox) {
			ms_mbox_drain(w->mbox, on_mail, w);
			w->mail_ns = 0;
		}
		if (!w->draining && __atomic_load_n(&w->stop, __ATOMIC_ACQUIRE))
			begin_drain(w);
		if (w->draining && !w->drain_closed && w->drain_round >= DRAIN_ROUNDS)
			finish_drain(w);
		ms_wheel_advance(&w->wheel, &w->pool, w->now_s, fire_timer, w);
		if (w->draining && w->now_s >= w->drain_deadline) {
			if (!w->drain_closed)
				finish_drain(w); /* a worker never reached the barrier */
			ms_worker_foreach(w, abort_conn, NULL);
		}
		if (__atomic_load_n(&w->dump_req, __ATOMIC_RELAXED) != w->dump_seen ||
		    (w->cfg->hist_interval && w->id == 0 && w->now_s >= w->next_dump)) {
			w->dump_seen = __atomic_load_n(&w->dump_req, __ATOMIC_ACQUIRE);
			w->next_dump = w->now_s + w->cfg->hist_interval;
			ms_worker_collect(w, dump_collected, NULL);
		}
		if (w->hooks && w->hooks->on_flush)
			w->hooks->on_flush(w);
		if (w->mbox) {
			ms_mbox_drain(w->mbox, on_mail, w); /* what on_flush sent to us */
			w->mail_ns = 0;
		}
		if (w->nover && (w->over_hard || w->now_s != w->over_checked_s))
			check_over(w);
		if (w->out_total + w->in_total > w->pending_share)
			shed_pending(w);
		w->st.pending_bytes = w->out_total;
		w->st.input_bytes = w->in_total;
		flush_dirty(w);
		free_closed(w); /* before the mailbox flush: on_free posts messages */
		if (w->mbox) {
			ms_mbox_flush(w->mbox, ring_bell, w);
			check_backlog(w);
		}
		if (w->draining && w->hub)
			drain_step(w);
		rearm_stopped(w);
		/* After rearm_stopped: its list may name slots freed above, which
		 * it skips by their DEAD flag, and the trim zeroes that flag. */
		if (w->live) {
			w->next_trim = 0;
		} else if (w->now_s >= w->next_trim) {
			trim_idle(w);
			w->next_trim = w->now_s + TRIM_IDLE_SECONDS;
		}
		ms_hist_record(&w->hist[MS_HIST_ITERATION], mono_ns() - w->now_ns);
		if (w->drain_closed && w->live == 0 && !w->drain_left) {
			if (!w->hub)
				break;
			w->drain_left = true;
			ms_mbox_hub_leave(w->hub);
		}
		/* Every worker goes on draining its mailbox (metrics snapshots)
		 * and the admin listener goes on answering until all are done. */
		if (w->drain_left && ms_mbox_hub_running(w->hub) == 0)
			break;
	}
}

/* ---- thread ---------------------------------------------------------------- */

static void set_start_state(ms_worker *w, int state)
{
	pthread_mutex_lock(&w->lock);
	w->start_state = state;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

/* Whether context x holds its reserve on this worker: an outbound one
 * always, a listening one where it listens. */
static bool holds_reserve(const wctx *x)
{
	return x->def.reserve && (x->listen_fd >= 0 || (x->def.flags & MS_CTX_OUTBOUND));
}

static void *thread_main(void *arg)
{
	ms_worker *w = arg;
	char name[16];
	snprintf(name, sizeof(name), "w%u", w->id);
	ms_log_set_thread(name);
	pthread_setname_np(pthread_self(), name);
	if (w->cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(w->cpu, &set);
		int err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
		if (err)
			ms_warn("cannot pin to CPU %d: %s", w->cpu, strerror(err));
	}
	/* Memory from this CPU's node, or bound to --numa-node (core/numa.h). */
	ms_numa_thread_policy(w->cfg->numa_node, w->cpu);
	/* Everything below is allocated after pinning: first touch puts it on
	 * this CPU's NUMA node. The pool and the descriptor table (one per
	 * ring, capped at RLIMIT_NOFILE) hold the public share and its slack,
	 * and each reserve twice over; slots are sized for the largest
	 * context's state. */
	uint32_t rsv = 0;
	size_t ext_size = 0;
	for (int l = 0; l < w->nctx; l++) {
		const wctx *x = &w->ctx[l];
		if (holds_reserve(x))
			rsv += 2 * x->def.reserve;
		if (x->def.ext_size > ext_size)
			ext_size = x->def.ext_size;
	}
	uint32_t keep = ACCEPT_SLACK + rsv;
	uint32_t room = w->table_max > keep ? w->table_max - keep : 1;
	if (w->cap > room)
		w->cap = room;
	uint32_t slots = w->cap + keep;
	uint32_t cq = 2 * slots;
	if (cq < 4096)
		cq = 4096;
	if (cq > 65536)
		cq = 65536;
	ms_ring_opts ro = {
		.sq_entries = 4096,
		.cq_entries = cq,
		.files = slots,
		.nbufs = w->cfg->recv_bufs,
		.buf_size = w->cfg->recv_buf_size,
		.coop = w->cfg->taskrun == MS_TASKRUN_COOP,
	};
	int ret = ms_ring_init(&w->ring, &ro);
	if (ret) {
		ms_err("io_uring setup failed: %s", strerror(-ret));
		set_start_state(w, ret);
		return NULL;
	}
	if (w->hub) {
		w->mbox = ms_mbox_create(w->hub, w->id);
		ms_mbox_set_bell(w->hub, w->id, w->ring.ring.ring_fd);
	}
	ret = ms_pool_init(&w->pool, slots, ext_size);
	if (!ret) {
		w->dirty = slot_array(w, sizeof(uint32_t));
		w->rearm = slot_array(w, sizeof(uint32_t));
		w->freeq = slot_array(w, sizeof(uint32_t));
		w->overq = slot_array(w, sizeof(uint32_t));
		w->resumeq = slot_array(w, sizeof(uint32_t));
		w->fed = slot_array(w, sizeof(uint32_t));
		w->peer = slot_array(w, sizeof(w->peer[0]));
		for (int l = 0; l < w->nctx; l++)
			if (holds_reserve(&w->ctx[l]))
				w->ctx[l].rsv = xmalloc(2 * w->ctx[l].def.reserve * sizeof(uint32_t));
		w->xform_buf = xmalloc(MS_XFORM_CHUNK);
		for (int i = 0; i < MS_HIST_COUNT; i++)
			ms_hist_init(&w->hist[i]);
		w->start_ns = mono_ns();
		update_clock(w);
		ms_wheel_init(&w->wheel, w->now_s);
		w->next_dump = w->now_s + w->cfg->hist_interval;
		ret = w->hooks && w->hooks->on_start ? w->hooks->on_start(w) : 0;
	}
	if (ret) {
		set_start_state(w, ret);
		return NULL;
	}
	ms_info("worker %u: cpu %d, ring %s%s, %u connections (+%u to answer 503, +%u reserved), "
		"%u x %u B recv buffers", w->id, w->cpu,
		(w->ring.setup_flags & IORING_SETUP_DEFER_TASKRUN) ? "defer_taskrun" :
		(w->ring.setup_flags & IORING_SETUP_COOP_TASKRUN) ? "coop_taskrun" : "plain",
		w->ring.min_timeout ? "+min_wait" : "", w->cap, ACCEPT_SLACK, rsv / 2,
		w->cfg->recv_bufs, w->cfg->recv_buf_size);
	set_start_state(w, 1);
	run(w);
	if (w->hooks && w->hooks->on_stop)
		w->hooks->on_stop(w);
	return NULL;
}

int ms_worker_ctx_add(ms_worker *w, const ms_ctx *ctx)
{
	if (!ctx->h || !ctx->h->on_open || !ctx->h->on_data || !ctx->h->on_eof ||
	    !ctx->h->on_timeout || ctx->reserve > 1024 ||
	    ((ctx->flags & MS_CTX_OUTBOUND) && !ctx->reserve))
		return -EINVAL;
	if (w->nctx == MS_MAX_CTX)
		return -ENOSPC;
	wctx *x = &w->ctx[w->nctx];
	memset(x, 0, sizeof(*x));
	x->h = ctx->h;
	x->def = *ctx;
	x->listen_fd = -1;
	return w->nctx++;
}

int ms_worker_listen(ms_worker *w, int ctx, int fd)
{
	if (ctx < 0 || ctx >= w->nctx || fd < 0)
		return -EINVAL;
	wctx *x = &w->ctx[ctx];
	if (x->listen_fd >= 0 || (x->def.flags & MS_CTX_OUTBOUND))
		return -EINVAL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	x->v4 = getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET;
	x->listen_fd = fd;
	return 0;
}

ms_worker *ms_worker_create(const ms_config *cfg, uint32_t id, int cpu,
			    const ms_worker_hooks *hooks, void *app, ms_mbox_hub *hub)
{
	ms_worker *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->cfg = cfg;
	w->hooks = hooks;
	w->app = app;
	w->id = id;
	w->cpu = cpu;
	w->hub = hub;
	uint32_t share = (cfg->max_conns + cfg->cores - 1) / cfg->cores;
	struct rlimit rl;
	uint32_t table_max = 20000;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY)
		table_max = (uint32_t)rl.rlim_max;
	if (share + ACCEPT_SLACK > table_max)
		share = table_max - ACCEPT_SLACK;
	w->cap = share;
	w->table_max = table_max;
	uint64_t total = (uint64_t)cfg->max_pending_total << 20;
	if (!total) {
		long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
		total = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize / 4 : 2ull << 30;
	}
	w->pending_share = total / cfg->cores;
	w->slow_at = cfg->max_backpressure;
	uint64_t hard = (uint64_t)cfg->max_backpressure * 2;
	if ((uint64_t)cfg->max_message + cfg->max_backpressure > hard)
		hard = (uint64_t)cfg->max_message + cfg->max_backpressure;
	w->hard_cap = hard > UINT32_MAX - (1u << 20) ? UINT32_MAX - (1u << 20) : (uint32_t)hard;
	w->slow_window_ms = (cfg->slow_window ? cfg->slow_window : 5) * 1000u;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	return w;
}

int ms_worker_start(ms_worker *w)
{
	int err = pthread_create(&w->thread, NULL, thread_main, w);
	if (err)
		return -err;
	pthread_mutex_lock(&w->lock);
	while (w->start_state == 0)
		pthread_cond_wait(&w->cond, &w->lock);
	int st = w->start_state;
	pthread_mutex_unlock(&w->lock);
	if (st < 0) {
		pthread_join(w->thread, NULL);
		w->thread = 0;
		return st;
	}
	return 0;
}

/* Wake w's wait from another thread (a MSG_RING from a small ring of the
 * caller's own). */
static void wake(ms_worker *w)
{
	static __thread struct io_uring waker;
	static __thread bool have_waker;
	if (!have_waker)
		have_waker = io_uring_queue_init(8, &waker, 0) == 0;
	if (have_waker) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&waker);
		if (sqe) {
			io_uring_prep_msg_ring(sqe, w->ring.ring.ring_fd, 0,
					       ms_udata(MS_OP_WAKE, 0, 0), 0);
			sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
			io_uring_submit(&waker);
		}
	}
}

void ms_worker_stop(ms_worker *w)
{
	__atomic_store_n(&w->stop, 1, __ATOMIC_SEQ_CST);
	wake(w);
}

void ms_worker_dump(ms_worker *w)
{
	__atomic_add_fetch(&w->dump_req, 1, __ATOMIC_SEQ_CST);
	wake(w);
}

void ms_worker_join(ms_worker *w)
{
	if (w->thread)
		pthread_join(w->thread, NULL);
	w->thread = 0;
}

int ms_worker_tryjoin(ms_worker *w)
{
	if (w->thread && pthread_tryjoin_np(w->thread, NULL) == EBUSY)
		return -EBUSY;
	w->thread = 0;
	return 0;
}

void ms_worker_destroy(ms_worker *w)
{
	if (!w)
		return;
	ms_worker_join(w);
	for (uint32_t i = 0; i < w->pool.fresh; i++) {
		ms_conn *c = ms_pool_at(&w->pool, i);
		if (c->fidx >= 0 || slot_live(c)) {
			outq_release(w, c);
			ms_spill_free(&c->spill);
			if (c->sendctx)
				free(c->sendctx);
			if (H(w, c)->on_free)
				H(w, c)->on_free(w, c);
		}
	}
	free_caches(w);
	ms_wheel_fini(&w->wheel);
	ms_pool_array_free(&w->pool, w->peer, sizeof(w->peer[0]));
	ms_pool_array_free(&w->pool, w->dirty, sizeof(uint32_t));
	ms_pool_array_free(&w->pool, w->rearm, sizeof(uint32_t));
	ms_pool_array_free(&w->pool, w->freeq, sizeof(uint32_t));
	ms_pool_array_free(&w->pool, w->overq, sizeof(uint32_t));
	ms_pool_array_free(&w->pool, w->resumeq, sizeof(uint32_t));
	ms_pool_array_free(&w->pool, w->fed, sizeof(uint32_t));
	ms_pool_fini(&w->pool);
	ms_ring_fini(&w->ring);
	for (int l = 0; l < w->nctx; l++) {
		if (w->ctx[l].listen_fd >= 0)
			close(w->ctx[l].listen_fd);
		free(w->ctx[l].rsv);
	}
	while (w->collects) {
		struct collect *k = w->collects;
		w->collects = k->next;
		free(k);
	}
	free(w->xform_buf);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w);
}
