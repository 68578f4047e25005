/*
 * msock-bench worker: one thread, one io_uring, a fixed table of client
 * connections addressed by slot index.
 *
 * Sockets are io_uring direct descriptors (slot i of the ring's file table
 * is connection i), so a process is not bound by RLIMIT_NOFILE: each ring's
 * table holds up to ~20k sockets and a process runs several rings. A
 * connection opens with one linked chain, submitted at once:
 *
 *   SOCKET(slot i) -> SETSOCKOPT TCP_NODELAY -> [SETSOCKOPT
 *   IP_BIND_ADDRESS_NO_PORT -> BIND src] -> CONNECT -> LINK_TIMEOUT
 *
 * (setsockopt through IORING_OP_URING_CMD, bind through IORING_OP_BIND, raw
 * opcodes since liburing 2.3 predates both). The upgrade request follows the
 * connect completion; replies arrive through one multishot recv per
 * connection over a provided-buffer ring, so an idle connection holds no
 * receive buffer. At most one send is in flight per connection; frames
 * queued meanwhile go to a second buffer, and every dirty connection is
 * flushed once per loop iteration.
 *
 * Every SQE that may post a CQE counts in the connection's inflight_ops; a
 * slot is finished (or reused by `storm`) only when that count is zero, so
 * no late completion can touch a reused slot.
 *
 * wss:// (BoringSSL): each connection's SSL sits on two memory BIOs. The
 * recv completion writes ciphertext into the read BIO, drives the handshake
 * (non-blocking: SSL_do_handshake until done), then SSL_read()s plaintext
 * into the same parser plain ws:// uses. Outgoing frames are queued as
 * plaintext in `pend`; flush() hands them to one SSL_write (only once the
 * handshake is done) and sends whatever SSL put in the write BIO (handshake
 * flights, records, alerts) as one send. The upgrade request is queued at
 * connect time and leaves with the client's Finished flight. --resume keeps
 * the session ticket the server sent (new-session callback) and offers it on
 * the slot's next connection (`storm`), or thread-wide with --resume=thread.
 */
#include "tls.h"
#include "seqchk.h"

#include "net/ws.h"

#include <errno.h>
#include <liburing.h>
#include <openssl/err.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <time.h>

/* Opcodes and fields newer than liburing 2.3's headers (kernel >= 6.11). */
#define OPC_URING_CMD 46
#define OPC_BIND 56
#define SOCK_CMD_SETSOCKOPT 3

enum op {
	OP_SOCKET = 1,
	OP_SOCKOPT,
	OP_BIND,
	OP_CONNECT,
	OP_LINKTO,
	OP_SEND,
	OP_RECV,
	OP_CANCEL,
	OP_CLOSE,
};

enum cstate {
	CS_IDLE = 0,   /* never opened, or finished and reusable */
	CS_CONNECTING, /* chain submitted */
	CS_UPGRADING,  /* HTTP request sent, waiting for 101 */
	CS_JOINING,    /* fanout: waiting for join replies */
	CS_OPEN,
	CS_CLOSING,    /* close frame sent */
	CS_DONE,       /* fixed file closed or closing; waiting for inflight_ops == 0 */
};

#define RECV_BUFS 1024
#define RECV_BUFSZ 16384
#define PUB_ID_BASE 1000000u

typedef struct buf {
	uint8_t *p;
	uint32_t len, cap;
} buf;

typedef struct conn {
	uint32_t gen;
	uint8_t state;
	uint8_t sending, recv_armed, dirty, close_sent, counted, is_pub, failed;
	uint16_t inflight_ops;
	uint16_t joins_left;
	uint64_t t0;       /* SOCKET submitted */
	uint64_t id;       /* global connection index */
	buf in;            /* bytes not yet parsed (upgrade head / partial frame) */
	buf out;           /* being sent */
	uint32_t out_off;
	buf pend;          /* queued behind the send in flight */
	buf msg;           /* fragmented message reassembly */
	uint8_t msg_op;
	char accept[29];   /* expected Sec-WebSocket-Accept */
	uint64_t *ts;      /* echo: send times, FIFO of cfg->inflight */
	uint32_t ts_head, ts_n;
	uint64_t echo_tx, echo_rx; /* echo: per-connection message numbers */
	ms_seqchk *chk;    /* fanout: one per joined stream */
	uint32_t *chk_stream;
	uint64_t pub_k, pub_outstanding;
	SSL *ssl;          /* wss: this connection's TLS state (memory BIOs) */
	SSL_SESSION *sess; /* --resume: newest session of this slot; survives reuse */
	uint8_t tls_done, tls_offered;
	uint64_t t_tls;    /* TLS handshake started (TCP connect done) */
} conn;

typedef struct thr {
	const ms_bench_cfg *cfg;
	ms_bench_shared *sh;
	ms_bench_tstats *st;
	unsigned widx;            /* global worker index */
	struct io_uring ring;
	conn *c;
	uint32_t n;
	uint64_t id_base;
	uint32_t next_open, pending, nbusy;
	double rate;              /* connections/s for this thread */
	uint64_t t_start, now, last_sweep;
	int phase;
	uint64_t stop_ns, drain_until;
	uint64_t measure_start, measure_end;
	struct io_uring_buf_ring *br;
	uint8_t *bufs;
	uint64_t rng;
	uint32_t *dirty;
	uint32_t ndirty;
	uint32_t *free_slots;     /* storm: finished slots ready for reuse */
	uint32_t nfree;
	uint64_t storm_started;   /* storm: connections started in PH_RUN */
	uint32_t *pubs;           /* slots of publishing connections */
	uint32_t npubs;
	double pub_interval_ns;
	uint64_t pub_base_ns;
	uint8_t *payload;
	struct __kernel_timespec link_ts;
	struct sockaddr_in src[MS_BENCH_MAX_SRC]; /* stable: read by linked BINDs */
	int setsockopt_ok;
	SSL_CTX *ssl_ctx;         /* wss: one per thread */
	SSL_SESSION *sess;        /* --resume=thread: newest session of the thread */
	uint8_t *plain;           /* wss: SSL_read scratch, PLAIN_SZ */
} thr;

#define PLAIN_SZ 16384

static const int one = 1;

static int tls_start(thr *t, uint32_t i);

uint64_t ms_bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(thr *t)
{
	uint64_t x = t->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return t->rng = x;
}

static inline uint64_t ud_make(int op, uint32_t idx, uint32_t gen)
{
	return (uint64_t)op << 56 | (uint64_t)(idx & 0xffffff) << 32 | gen;
}

static void buf_reserve(buf *b, size_t extra)
{
	if (b->len + extra <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + extra)
		cap *= 2;
	b->p = realloc(b->p, cap);
	if (!b->p)
		abort();
	b->cap = (uint32_t)cap;
}

static void buf_free(buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

static struct io_uring_sqe *get_sqe(thr *t)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&t->ring);
	while (!sqe) {
		io_uring_submit(&t->ring);
		sqe = io_uring_get_sqe(&t->ring);
	}
	return sqe;
}

static void set_error(thr *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(thr *t, const char *fmt, ...)
{
	if (t->st->first_error[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(t->st->first_error, sizeof(t->st->first_error), fmt, ap);
	va_end(ap);
}

static void relaxed_inc(_Atomic uint64_t *p, int64_t d)
{
	atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + (uint64_t)d,
			      memory_order_relaxed);
}

static bool in_window(thr *t)
{
	return t->measure_start && t->now >= t->measure_start && t->now < t->measure_end;
}

/* ---- closing ------------------------------------------------------------ */

/* Drop the connection: cancel its recv (by user_data: a hash lookup in the
 * kernel, where cancelling by descriptor walks every pending request of the
 * ring), then close the direct descriptor (hard link: the close runs even
 * when the recv already ended). */
static void conn_close(thr *t, uint32_t i)
{
	conn *c = &t->c[i];
	if (c->state == CS_DONE || c->state == CS_IDLE)
		return;
	c->state = CS_DONE;
	struct io_uring_sqe *sqe;
	if (c->recv_armed) {
		sqe = get_sqe(t);
		io_uring_prep_cancel64(sqe, ud_make(OP_RECV, i, c->gen), 0);
		sqe->flags |= IOSQE_IO_HARDLINK;
		io_uring_sqe_set_data64(sqe, ud_make(OP_CANCEL, i, c->gen));
		c->inflight_ops++;
	}
	sqe = get_sqe(t);
	io_uring_prep_close_direct(sqe, i);
	io_uring_sqe_set_data64(sqe, ud_make(OP_CLOSE, i, c->gen));
	c->inflight_ops++;
}

/* A connection failed before it was open (counts toward failures) or while
 * open (a protocol error or an unexpected close). */
static void conn_fail(thr *t, uint32_t i, uint64_t *counter, const char *what, int err)
{
	conn *c = &t->c[i];
	if (c->state == CS_DONE || c->state == CS_IDLE || c->failed)
		return;
	c->failed = 1;
	if (counter)
		(*counter)++;
	if (err)
		set_error(t, "conn %llu: %s: %s", (unsigned long long)c->id, what, strerror(err));
	else
		set_error(t, "conn %llu: %s", (unsigned long long)c->id, what);
	if (c->state == CS_CONNECTING || c->state == CS_UPGRADING || c->state == CS_JOINING) {
		t->pending--;
		relaxed_inc(&t->st->failed, 1);
		relaxed_inc(&t->st->settled, 1);
	} else if (c->state == CS_OPEN) {
		relaxed_inc(&t->st->open_now, -1);
	}
	conn_close(t, i);
}

/* The slot is finished when closed and nothing is in flight. */
static void conn_maybe_finish(thr *t, uint32_t i)
{
	conn *c = &t->c[i];
	if (c->state != CS_DONE || c->inflight_ops || c->counted)
		return;
	c->counted = 1;
	t->nbusy--;
	if (c->ssl) {
		SSL_free(c->ssl); /* frees both memory BIOs */
		c->ssl = NULL;
	}
	buf_free(&c->in);
	buf_free(&c->out);
	buf_free(&c->pend);
	buf_free(&c->msg);
	if (t->cfg->scenario == SC_STORM)
		t->free_slots[t->nfree++] = i;
}

/* ---- sending ------------------------------------------------------------ */

static void mark_dirty(thr *t, uint32_t i)
{
	conn *c = &t->c[i];
	if (!c->dirty) {
		c->dirty = 1;
		t->dirty[t->ndirty++] = i;
	}
}

static void send_out(thr *t, uint32_t i)
{
	conn *c = &t->c[i];
	struct io_uring_sqe *sqe = get_sqe(t);
	io_uring_prep_send(sqe, (int)i, c->out.p + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(sqe, ud_make(OP_SEND, i, c->gen));
	c->inflight_ops++;
	c->sending = 1;
}

static bool has_output(const conn *c)
{
	if (c->ssl)
		return (c->tls_done && c->pend.len) || BIO_pending(SSL_get_wbio(c->ssl)) > 0;
	return c->pend.len > 0;
}

/* wss: encrypt the queued plaintext (once the handshake is done) and send
 * everything SSL has written. */
static void flush_tls(thr *t, uint32_t i)
{
	conn *c = &t->c[i];
	if (c->tls_done && c->pend.len) {
		int r = SSL_write(c->ssl, c->pend.p, (int)c->pend.len);
		if (r <= 0) {
			char e[120];
			ms_bench_tls_errstr(e, sizeof(e));
			char what[160];
			snprintf(what, sizeof(what), "SSL_write: %s", e);
			conn_fail(t, i, NULL, what, 0);
			return;
		}
		c->pend.len = 0;
	}
	BIO *wb = SSL_get_wbio(c->ssl);
	size_t n = BIO_pending(wb);
	if (n == 0)
		return;
	c->out.len = 0;
	buf_reserve(&c->out, n);
	int got = BIO_read(wb, c->out.p, (int)n);
	if (got <= 0)
		return;
	c->out.len = (uint32_t)got;
	c->out_off = 0;
	send_out(t, i);
}

static void flush(thr *t, uint32_t i)
{
	conn *c = &t->c[i];
	c->dirty = 0;
	if (c->sending || c->state == CS_DONE)
		return;
	if (c->ssl) {
		flush_tls(t, i);
		return;
	}
	if (c->pend.len == 0)
		return;
	buf tmp = c->out;
	c->out = c->pend;
	c->pend = tmp;
	c->pend.len = 0;
	c->out_off = 0;
	send_out(t, i);
}

static void flush_dirty(thr *t)
{
	for (uint32_t k = 0; k < t->ndirty; k++)
		flush(t, t->dirty[k]);
	t->ndirty = 0;
}

/* Queue one masked client frame. */
static void queue_frame(thr *t, uint32_t i, uint8_t opcode, const void *data, size_t len)
{
	conn *c = &t->c[i];
	buf_reserve(&c->pend, len + MS_WS_MAX_HEADER);
	uint32_t m = (uint32_t)rnd(t);
	uint8_t mask[4];
	memcpy(mask, &m, 4);
	size_t h = ms_ws_header(c->pend.p + c->pend.len, true, opcode, len, mask);
	uint8_t *dst = c->pend.p + c->pend.len + h;
	const uint8_t *src = data;
	for (size_t k = 0; k < len; k++)
		dst[k] = src[k] ^ mask[k & 3];
	c->pend.len += (uint32_t)(h + len);
	mark_dirty(t, i);
}

static void queue_raw(thr *t, uint32_t i, const void *data, size_t len)
{
	conn *c = &t->c[i];
	buf_reserve(&c->pend, len);
	memcpy(c->pend.p + c->pend.len, data, len);
	c->pend.len += (uint32_t)len;
	mark_dirty(t, i);
}

static void start_close_handshake(thr *t, uint32_t i)
{
	conn *c = &t->c[i];
	if (c->state != CS_OPEN && c->state != CS_JOINING)
		return;
	uint8_t pl[2] = {MS_WS_CLOSE_NORMAL >> 8, MS_WS_CLOSE_NORMAL & 0xff};
	queue_frame(t, i, MS_WS_OP_CLOSE, pl, 2);
	c->close_sent = 1;
	if (c->state == CS_JOINING) {
		t->pending--;
		relaxed_inc(&t->st->failed, 1);
		relaxed_inc(&t->st->settled, 1);
		t->st->fail_other++;
	} else {
		relaxed_inc(&t->st->open_now, -1);
	}
	c->state = CS_CLOSING;
}

/* ---- opening ------------------------------------------------------------ */

static void prep_setsockopt(struct io_uring_sqe *sqe, uint32_t slot, int level, int name,
			    const int *val)
{
	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = OPC_URING_CMD;
	sqe->fd = (int)slot;
	sqe->flags = IOSQE_FIXED_FILE;
	sqe->cmd_op = SOCK_CMD_SETSOCKOPT;
	sqe->addr = (uint64_t)(uint32_t)level | (uint64_t)(uint32_t)name << 32; /* level, optname */
	sqe->addr3 = (uint64_t)(uintptr_t)val;                                 /* optval */
	sqe->splice_fd_in = sizeof(int);                                        /* optlen */
}

static void conn_start(thr *t, uint32_t i)
{
	const ms_bench_cfg *cfg = t->cfg;
	conn *c = &t->c[i];
	c->gen++;
	c->state = CS_CONNECTING;
	c->failed = c->counted = c->close_sent = c->sending = c->recv_armed = 0;
	c->in.len = c->pend.len = c->out.len = c->msg.len = 0;
	c->out_off = 0;
	c->ts_head = c->ts_n = 0;
	c->echo_tx = c->echo_rx = 0;
	c->t0 = t->now;
	t->pending++;
	t->nbusy++;

	struct io_uring_sqe *sqe = get_sqe(t);
	io_uring_prep_socket_direct(sqe, AF_INET, SOCK_STREAM, 0, i, 0);
	sqe->flags |= IOSQE_IO_LINK;
	io_uring_sqe_set_data64(sqe, ud_make(OP_SOCKET, i, c->gen));
	c->inflight_ops++;

	if (t->setsockopt_ok) {
		sqe = get_sqe(t);
		prep_setsockopt(sqe, i, IPPROTO_TCP, TCP_NODELAY, &one);
		sqe->flags |= IOSQE_IO_LINK;
		io_uring_sqe_set_data64(sqe, ud_make(OP_SOCKOPT, i, c->gen));
		c->inflight_ops++;
	}
	if (cfg->nsrc) {
		sqe = get_sqe(t);
		prep_setsockopt(sqe, i, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one);
		sqe->flags |= IOSQE_IO_LINK;
		io_uring_sqe_set_data64(sqe, ud_make(OP_SOCKOPT, i, c->gen));
		c->inflight_ops++;

		sqe = get_sqe(t);
		memset(sqe, 0, sizeof(*sqe));
		sqe->opcode = OPC_BIND;
		sqe->fd = (int)i;
		sqe->flags = IOSQE_FIXED_FILE | IOSQE_IO_LINK;
		sqe->addr = (uint64_t)(uintptr_t)&t->src[c->id % cfg->nsrc];
		sqe->addr2 = sizeof(struct sockaddr_in);
		io_uring_sqe_set_data64(sqe, ud_make(OP_BIND, i, c->gen));
		c->inflight_ops++;
	}

	sqe = get_sqe(t);
	io_uring_prep_connect(sqe, (int)i, (const struct sockaddr *)&cfg->dst, sizeof(cfg->dst));
	sqe->flags |= IOSQE_FIXED_FILE | IOSQE_IO_LINK;
	io_uring_sqe_set_data64(sqe, ud_make(OP_CONNECT, i, c->gen));
	c->inflight_ops++;

	sqe = get_sqe(t);
	io_uring_prep_link_timeout(sqe, &t->link_ts, 0);
	io_uring_sqe_set_data64(sqe, ud_make(OP_LINKTO, i, c->gen));
	c->inflight_ops++;
}

static void b64_std16(const uint8_t in[16], char out[25])
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0, i = 0;
	for (; i + 3 <= 16; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = tab[(v >> 6) & 63];
		out[o++] = tab[v & 63];
	}
	uint32_t v = (uint32_t)in[15] << 16;
	out[o++] = tab[v >> 18];
	out[o++] = tab[(v >> 12) & 63];
	out[o++] = '=';
	out[o++] = '=';
	out[o] = 0;
}

static void arm_recv(thr *t, uint32_t i)
{
	conn *c = &t->c[i];
	struct io_uring_sqe *sqe = get_sqe(t);
	io_uring_prep_recv_multishot(sqe, (int)i, NULL, 0, 0);
	sqe->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
	sqe->buf_group = 0;
	io_uring_sqe_set_data64(sqe, ud_make(OP_RECV, i, c->gen));
	c->inflight_ops++;
	c->recv_armed = 1;
}

static void on_connected(thr *t, uint32_t i)
{
	const ms_bench_cfg *cfg = t->cfg;
	conn *c = &t->c[i];
	ms_hist_record(&t->st->h_tcp, t->now - c->t0);
	c->state = CS_UPGRADING;
	arm_recv(t, i);
	if (cfg->tls && tls_start(t, i) < 0)
		return;

	uint8_t raw[16];
	uint64_t a = rnd(t), b = rnd(t);
	memcpy(raw, &a, 8);
	memcpy(raw + 8, &b, 8);
	char key[25];
	b64_std16(raw, key);
	ms_ws_accept_key(key, 24, c->accept);

	char ident[600];
	uint64_t uid = cfg->user_base + c->id;
	if (cfg->secret[0]) {
		char tok[512];
		uint64_t exp = (uint64_t)time(NULL) + 3600;
		if (ms_bench_jwt(cfg->secret, uid, exp, tok, sizeof(tok)) < 0) {
			conn_fail(t, i, &t->st->fail_other, "jwt", 0);
			return;
		}
		snprintf(ident, sizeof(ident), "token=%s", tok);
	} else {
		snprintf(ident, sizeof(ident), "user=%llu", (unsigned long long)uid);
	}
	char req[1400];
	int n = snprintf(req, sizeof(req),
			 "GET %s?%s%s%s HTTP/1.1\r\n"
			 "Host: %s\r\n"
			 "Upgrade: websocket\r\n"
			 "Connection: Upgrade\r\n"
			 "Sec-WebSocket-Key: %s\r\n"
			 "Sec-WebSocket-Version: 13\r\n"
			 "\r\n",
			 cfg->path, ident, cfg->query[0] ? "&" : "", cfg->query, cfg->host, key);
	queue_raw(t, i, req, (size_t)n);
}

/* ---- scenarios ---------------------------------------------------------- */

static uint32_t stream_of(const ms_bench_cfg *cfg, uint64_t id, unsigned j)
{
	return (uint32_t)((id * cfg->joins + j) % cfg->streams);
}

static void echo_send(thr *t, uint32_t i)
{
	conn *c = &t->c[i];
	c->ts[(c->ts_head + c->ts_n) % t->cfg->inflight] = t->now;
	c->ts_n++;
	t->st->sent_msgs++;
	/* The first 16 bytes carry the message number in hex, so a lost,
	 * duplicated or reordered echo is caught, not just miscounted. */
	if (t->cfg->size >= 16) {
		static const char hex[] = "0123456789abcdef";
		uint64_t v = c->echo_tx;
		for (int k = 15; k >= 0; k--, v >>= 4)
			t->payload[k] = (uint8_t)hex[v & 15];
	}
	c->echo_tx++;
	queue_frame(t, i, t->cfg->binary ? MS_WS_OP_BINARY : MS_WS_OP_TEXT, t->payload, t->cfg->size);
}

static void chat_publish(thr *t, uint32_t i)
{
	const ms_bench_cfg *cfg = t->cfg;
	conn *c = &t->c[i];
	static __thread char *m;
	static __thread size_t mcap;
	size_t need = 512 + cfg->pad;
	if (mcap < need) {
		free(m);
		m = malloc(need);
		if (!m)
			abort();
		mcap = need;
	}
	/* --pad: "x":"aaa…" last inside data, so messages have a chosen size. */
	int n;
	uint64_t k = c->pub_k++;
	if (cfg->scenario == SC_DM) {
		uint64_t to = cfg->user_base + rnd(t) % cfg->conns;
		n = snprintf(m, mcap,
			     "{\"op\":\"dm\",\"to\":\"%llu\",\"data\":{\"t\":%llu,\"p\":%llu",
			     (unsigned long long)to, (unsigned long long)t->now,
			     (unsigned long long)c->id);
	} else {
		/* each publisher cycles through every stream, starting at its own */
		uint32_t s = (uint32_t)((c->id + k) % cfg->streams);
		n = snprintf(m, mcap,
			     "{\"op\":\"publish\",\"stream\":\"%s%u\",\"data\":{\"t\":%llu,\"p\":%llu,\"k\":%llu",
			     cfg->stream_prefix, s, (unsigned long long)t->now,
			     (unsigned long long)c->id, (unsigned long long)k);
	}
	if (cfg->pad) {
		memcpy(m + n, ",\"x\":\"", 6);
		memset(m + n + 6, 'a', cfg->pad);
		m[n + 6 + cfg->pad] = '"';
		n += 7 + (int)cfg->pad;
	}
	n += snprintf(m + n, mcap - (size_t)n, "},\"id\":%llu}", (unsigned long long)(PUB_ID_BASE + k));
	c->pub_outstanding++;
	t->st->pub_sent++;
	queue_frame(t, i, MS_WS_OP_TEXT, m, (size_t)n);
}

static void chat_join_all(thr *t, uint32_t i)
{
	const ms_bench_cfg *cfg = t->cfg;
	conn *c = &t->c[i];
	c->joins_left = (uint16_t)cfg->joins;
	for (unsigned j = 0; j < cfg->joins; j++) {
		char m[256];
		int n = snprintf(m, sizeof(m), "{\"op\":\"join\",\"stream\":\"%s%u\",\"id\":%u}",
				 cfg->stream_prefix, stream_of(cfg, c->id, j), j + 1);
		queue_frame(t, i, MS_WS_OP_TEXT, m, (size_t)n);
	}
}

/* The connection is fully open (upgraded, and joined for fanout). */
static void conn_ready(thr *t, uint32_t i)
{
	conn *c = &t->c[i];
	c->state = CS_OPEN;
	t->pending--;
	relaxed_inc(&t->st->opened, 1);
	relaxed_inc(&t->st->settled, 1);
	relaxed_inc(&t->st->open_now, 1);
	if (t->phase == PH_RUN && t->cfg->scenario == SC_ECHO)
		for (unsigned k = 0; k < t->cfg->inflight; k++)
			echo_send(t, i);
}

static void on_upgraded(thr *t, uint32_t i)
{
	conn *c = &t->c[i];
	ms_hist_record(&t->st->h_conn, t->now - c->t0);
	if (t->cfg->scenario == SC_STORM) {
		if (in_window(t)) {
			t->st->meas_msgs++;
			ms_hist_record(&t->st->h_lat, t->now - c->t0);
		}
		conn_ready(t, i);
		start_close_handshake(t, i);
		return;
	}
	if (t->cfg->scenario == SC_FANOUT && t->cfg->joins) {
		c->state = CS_JOINING;
		chat_join_all(t, i);
		return;
	}
	if (t->cfg->scenario == SC_IDLE && t->cfg->exchange) {
		/* Traffic first, then idle: the server's memory must return to
		 * its idle figure once the message is through. */
		uint8_t *m = malloc(t->cfg->exchange);
		if (!m) {
			conn_fail(t, i, &t->st->fail_other, "out of memory", 0);
			return;
		}
		memset(m, 'x', t->cfg->exchange);
		c->state = CS_JOINING;
		queue_frame(t, i, MS_WS_OP_BINARY, m, t->cfg->exchange);
		free(m);
		return;
	}
	conn_ready(t, i);
}

static void on_chat(thr *t, uint32_t i, const char *s, size_t n)
{
	const ms_bench_cfg *cfg = t->cfg;
	conn *c = &t->c[i];
	ms_bench_tstats *st = t->st;
	const char *v;
	size_t vn;
	uint64_t id;

	if (ms_bench_json_get(s, n, "event", &v, &vn) == 0) {
		bool is_msg = vn == 7 && memcmp(v, "message", 7) == 0;
		bool is_dm = vn == 2 && memcmp(v, "dm", 2) == 0;
		if (!is_msg && !is_dm)
			return; /* presence and the like */
		st->recv_msgs++;
		const char *d;
		size_t dn;
		uint64_t ts = 0;
		if (ms_bench_json_get(s, n, "data", &d, &dn) == 0)
			(void)ms_bench_json_u64(d, dn, "t", &ts);
		if (in_window(t)) {
			st->meas_msgs++;
			st->meas_bytes += n;
			if (ts && ts <= t->now)
				ms_hist_record(&st->h_lat, t->now - ts);
		}
		if (!is_msg)
			return;
		uint64_t seq;
		if (ms_bench_json_get(s, n, "stream", &v, &vn) < 0 ||
		    ms_bench_json_u64(s, n, "seq", &seq) < 0) {
			st->protocol_errors++;
			set_error(t, "conn %llu: message event without stream/seq", (unsigned long long)c->id);
			return;
		}
		size_t pl = strlen(cfg->stream_prefix);
		uint32_t sidx = UINT32_MAX;
		if (vn > pl && memcmp(v, cfg->stream_prefix, pl) == 0)
			sidx = (uint32_t)strtoul(v + pl, NULL, 10);
		for (unsigned j = 0; c->chk && j < cfg->joins; j++) {
			if (c->chk_stream[j] != sidx)
				continue;
			uint64_t prev = c->chk[j].last;
			ms_seq_verdict r = ms_seqchk_msg(&c->chk[j], seq);
			if (r != MS_SEQ_OK) {
				set_error(t, "conn %llu stream %s%u: %s: seq %llu after %llu",
					  (unsigned long long)c->id, cfg->stream_prefix, sidx,
					  ms_seq_verdict_name(r), (unsigned long long)seq,
					  (unsigned long long)prev);
			}
			return;
		}
		return; /* a stream we did not join: the server's business, not ours */
	}
	if (ms_bench_json_u64(s, n, "id", &id) < 0)
		return;
	bool ok = ms_bench_json_get(s, n, "ok", &v, &vn) == 0 && vn == 4 && memcmp(v, "true", 4) == 0;
	if (id >= PUB_ID_BASE) {
		if (c->pub_outstanding)
			c->pub_outstanding--;
		if (ok) {
			st->pub_acked++;
		} else {
			st->pub_errors++;
			set_error(t, "conn %llu: publish/dm refused: %.*s", (unsigned long long)c->id,
				  (int)(n > 120 ? 120 : n), s);
		}
		if (cfg->pub_rate <= 0 && t->phase == PH_RUN && c->state == CS_OPEN)
			chat_publish(t, i);
		return;
	}
	if (id >= 1 && id <= cfg->joins && c->state == CS_JOINING) {
		if (!ok) {
			st->join_errors++;
			char what[200];
			snprintf(what, sizeof(what), "join refused: %.*s", (int)(n > 120 ? 120 : n), s);
			conn_fail(t, i, &st->fail_other, what, 0);
			return;
		}
		uint64_t seq = 0;
		(void)ms_bench_json_u64(s, n, "seq", &seq);
		uint64_t ep = 1;
		if (ms_bench_json_get(s, n, "epoch", &v, &vn) == 0)
			ep = ms_seqchk_epoch_hash(v, vn);
		ms_seqchk_join(&c->chk[id - 1], ep, seq);
		if (--c->joins_left == 0)
			conn_ready(t, i);
	}
}

static void on_message(thr *t, uint32_t i, uint8_t op, uint8_t *p, size_t n)
{
	const ms_bench_cfg *cfg = t->cfg;
	conn *c = &t->c[i];
	ms_bench_tstats *st = t->st;
	switch (cfg->scenario) {
	case SC_ECHO:
		if (c->ts_n == 0 || n != cfg->size) {
			st->protocol_errors++;
			conn_fail(t, i, NULL, c->ts_n ? "echo reply of the wrong size" : "unexpected echo reply", 0);
			return;
		}
		if (cfg->size >= 16) {
			uint64_t v = 0;
			for (int k = 0; k < 16; k++)
				v = v << 4 | (uint64_t)(p[k] <= '9' ? p[k] - '0' : p[k] - 'a' + 10);
			if (v != c->echo_rx) {
				char what[120];
				snprintf(what, sizeof(what), "echo #%llu arrived when #%llu was due",
					 (unsigned long long)v, (unsigned long long)c->echo_rx);
				st->protocol_errors++;
				conn_fail(t, i, NULL, what, 0);
				return;
			}
		}
		c->echo_rx++;
		uint64_t ts = c->ts[c->ts_head];
		c->ts_head = (c->ts_head + 1) % cfg->inflight;
		c->ts_n--;
		st->recv_msgs++;
		if (in_window(t)) {
			st->meas_msgs++;
			st->meas_bytes += n;
			ms_hist_record(&st->h_lat, t->now - ts);
		}
		if (t->phase == PH_RUN && c->state == CS_OPEN)
			echo_send(t, i);
		return;
	case SC_FANOUT:
	case SC_DM:
		on_chat(t, i, (const char *)p, n);
		return;
	case SC_IDLE:
		st->recv_msgs++;
		if (cfg->exchange && c->state == CS_JOINING) {
			if (n != cfg->exchange) {
				st->protocol_errors++;
				conn_fail(t, i, NULL, "exchange reply of the wrong size", 0);
				return;
			}
			if (!c->pend.len)
				buf_free(&c->pend); /* the spare send buffer; the client idles too */
			conn_ready(t, i);
		}
		return;
	default:
		st->recv_msgs++;
		return;
	}
}

/* ---- receiving ---------------------------------------------------------- */

static int handle_frame(thr *t, uint32_t i, uint8_t op, bool fin, uint8_t *p, size_t n)
{
	conn *c = &t->c[i];
	switch (op) {
	case MS_WS_OP_TEXT:
	case MS_WS_OP_BINARY:
		if (c->msg_op) {
			t->st->protocol_errors++;
			conn_fail(t, i, NULL, "data frame inside a fragmented message", 0);
			return -1;
		}
		if (fin) {
			on_message(t, i, op, p, n);
			return 0;
		}
		c->msg_op = op;
		c->msg.len = 0;
		/* fallthrough */
	case MS_WS_OP_CONT:
		if (!c->msg_op) {
			t->st->protocol_errors++;
			conn_fail(t, i, NULL, "continuation without a message", 0);
			return -1;
		}
		buf_reserve(&c->msg, n);
		memcpy(c->msg.p + c->msg.len, p, n);
		c->msg.len += (uint32_t)n;
		if (fin) {
			uint8_t mop = c->msg_op;
			c->msg_op = 0;
			on_message(t, i, mop, c->msg.p, c->msg.len);
		}
		return 0;
	case MS_WS_OP_PING:
		queue_frame(t, i, MS_WS_OP_PONG, p, n);
		return 0;
	case MS_WS_OP_PONG:
		return 0;
	case MS_WS_OP_CLOSE:
		if (c->close_sent) {
			t->st->closes_clean++;
		} else if (t->phase < PH_STOP) {
			uint16_t code = n >= 2 ? (uint16_t)(p[0] << 8 | p[1]) : 1005;
			t->st->closed_by_peer++;
			char what[200];
			snprintf(what, sizeof(what), "server closed with %u %.*s", code,
				 (int)(n > 2 ? (n - 2 > 100 ? 100 : n - 2) : 0), (const char *)p + 2);
			conn_fail(t, i, NULL, what, 0);
			return -1;
		} else {
			relaxed_inc(&t->st->open_now, c->state == CS_OPEN ? -1 : 0);
		}
		conn_close(t, i);
		return -1;
	default:
		t->st->protocol_errors++;
		conn_fail(t, i, NULL, "unknown opcode from server", 0);
		return -1;
	}
}

/* Parse every whole frame in p[0..n); returns bytes consumed, or -1 if the
 * connection was closed. */
static long parse_frames(thr *t, uint32_t i, uint8_t *p, size_t n)
{
	size_t off = 0;
	while (off < n) {
		size_t hl;
		uint8_t op;
		bool fin;
		uint64_t pl;
		long total = ms_ws_client_peek(p + off, n - off, &hl, &op, &fin, &pl);
		if (total == 0 || (total > 0 && (size_t)total > n - off))
			break;
		if (total < 0) {
			t->st->protocol_errors++;
			conn_fail(t, i, NULL, "malformed frame from server", 0);
			return -1;
		}
		if (handle_frame(t, i, op, fin, p + off + hl, (size_t)pl) < 0)
			return -1;
		off += (size_t)total;
	}
	return (long)off;
}

static bool header_is(const char *line, size_t len, const char *name, const char **val, size_t *vlen)
{
	size_t nl = strlen(name);
	if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
		return false;
	const char *v = line + nl + 1, *e = line + len;
	while (v < e && (*v == ' ' || *v == '\t'))
		v++;
	while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	*val = v;
	*vlen = (size_t)(e - v);
	return true;
}

/* Validate the upgrade answer in c->in. Returns head length, 0 for more, -1
 * failed (already counted). */
static long check_upgrade(thr *t, uint32_t i)
{
	conn *c = &t->c[i];
	const char *s = (const char *)c->in.p;
	size_t n = c->in.len;
	const char *end = memmem(s, n, "\r\n\r\n", 4);
	if (!end) {
		if (n > 8192) {
			conn_fail(t, i, &t->st->fail_http, "upgrade answer head too large", 0);
			return -1;
		}
		return 0;
	}
	size_t head = (size_t)(end - s) + 4;
	if (head < 12 || memcmp(s, "HTTP/1.1 101", 12) != 0) {
		char what[120];
		const char *eol = memchr(s, '\r', head);
		snprintf(what, sizeof(what), "upgrade refused: %.*s", (int)(eol ? eol - s : 12), s);
		conn_fail(t, i, &t->st->fail_http, what, 0);
		return -1;
	}
	bool accept_ok = false;
	for (const char *l = memchr(s, '\n', head) + 1; l < s + head - 2;) {
		const char *e = memmem(l, (size_t)(s + head - l), "\r\n", 2);
		const char *v;
		size_t vn;
		if (header_is(l, (size_t)(e - l), "sec-websocket-accept", &v, &vn))
			accept_ok = vn == 28 && memcmp(v, c->accept, 28) == 0;
		l = e + 2;
	}
	if (!accept_ok) {
		conn_fail(t, i, &t->st->fail_http, "bad or missing Sec-WebSocket-Accept", 0);
		return -1;
	}
	return (long)head;
}

/* Plaintext from the server: the upgrade answer, then frames. */
static void on_plain(thr *t, uint32_t i, uint8_t *p, size_t n)
{
	conn *c = &t->c[i];
	if (c->state == CS_DONE)
		return;
	if (c->state == CS_UPGRADING) {
		buf_reserve(&c->in, n);
		memcpy(c->in.p + c->in.len, p, n);
		c->in.len += (uint32_t)n;
		long head = check_upgrade(t, i);
		if (head <= 0)
			return;
		c->in.len -= (uint32_t)head;
		memmove(c->in.p, c->in.p + head, c->in.len);
		on_upgraded(t, i);
		if (c->in.len == 0)
			return;
		p = NULL;
		n = 0;
	}
	if (c->in.len == 0) {
		long used = parse_frames(t, i, p, n);
		if (used < 0)
			return;
		if ((size_t)used < n) {
			buf_reserve(&c->in, n - (size_t)used);
			memcpy(c->in.p, p + used, n - (size_t)used);
			c->in.len = (uint32_t)(n - (size_t)used);
		}
		return;
	}
	if (n) {
		buf_reserve(&c->in, n);
		memcpy(c->in.p + c->in.len, p, n);
		c->in.len += (uint32_t)n;
	}
	long used = parse_frames(t, i, c->in.p, c->in.len);
	if (used < 0)
		return;
	c->in.len -= (uint32_t)used;
	memmove(c->in.p, c->in.p + used, c->in.len);
}

/* ---- TLS ---------------------------------------------------------------- */

static void tls_fail(thr *t, uint32_t i, const char *what, int r)
{
	conn *c = &t->c[i];
	int e = SSL_get_error(c->ssl, r);
	char es[120], msg[200];
	if (e == SSL_ERROR_SSL)
		ms_bench_tls_errstr(es, sizeof(es));
	else
		snprintf(es, sizeof(es), "SSL error %d", e);
	if (c->tls_done) {
		snprintf(msg, sizeof(msg), "%s: %s", what, es);
		t->st->protocol_errors++;
		conn_fail(t, i, NULL, msg, 0);
	} else {
		long v = SSL_get_verify_result(c->ssl);
		if (v != X509_V_OK)
			snprintf(msg, sizeof(msg), "%s: %s (certificate: %s)", what, es,
				 X509_verify_cert_error_string(v));
		else
			snprintf(msg, sizeof(msg), "%s: %s", what, es);
		conn_fail(t, i, &t->st->fail_tls, msg, 0);
	}
	ERR_clear_error();
}

/* Drive the handshake; 0 (done or waiting for more), -1 failed. */
static int tls_handshake(thr *t, uint32_t i)
{
	conn *c = &t->c[i];
	int r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		ms_bench_tstats *st = t->st;
		bool reused = SSL_session_reused(c->ssl);
		uint64_t d = t->now - c->t_tls;
		c->tls_done = 1;
		if (reused)
			st->tls_resumed++;
		else
			st->tls_full++;
		if (t->cfg->scenario != SC_STORM || in_window(t)) {
			if (reused) {
				st->win_tls_resumed++;
				ms_hist_record(&st->h_tls_res, d);
			} else {
				st->win_tls_full++;
				ms_hist_record(&st->h_tls_full, d);
			}
		}
		mark_dirty(t, i); /* the upgrade request, queued at connect */
		return 0;
	}
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		if (BIO_pending(SSL_get_wbio(c->ssl)))
			mark_dirty(t, i);
		return 0;
	}
	tls_fail(t, i, "TLS handshake", r);
	return -1;
}

static int tls_start(thr *t, uint32_t i)
{
	const ms_bench_cfg *cfg = t->cfg;
	conn *c = &t->c[i];
	SSL *s = SSL_new(t->ssl_ctx);
	BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
	if (!s || !rb || !wb) {
		SSL_free(s);
		BIO_free(rb);
		BIO_free(wb);
		conn_fail(t, i, &t->st->fail_tls, "SSL_new: out of memory", 0);
		return -1;
	}
	SSL_set_bio(s, rb, wb);
	SSL_set_connect_state(s);
	SSL_set_ex_data(s, ms_bench_tls_ssl_index(), c);
	c->ssl = s;
	c->tls_done = 0;
	c->t_tls = t->now;
	bool ip = ms_bench_tls_host_is_ip(cfg->tls_host);
	if (!ip)
		SSL_set_tlsext_host_name(s, cfg->tls_host);
	if (cfg->ca_file[0]) {
		int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s), cfg->tls_host)
			    : SSL_set1_host(s, cfg->tls_host);
		if (!ok) {
			conn_fail(t, i, &t->st->fail_tls, "cannot set the name to verify", 0);
			return -1;
		}
	}
	SSL_SESSION *sess = cfg->resume == RESUME_SLOT ? c->sess : cfg->resume == RESUME_THREAD ? t->sess : NULL;
	c->tls_offered = 0;
	if (sess && SSL_set_session(s, sess)) {
		c->tls_offered = 1;
		t->st->tls_offered++;
	}
	return tls_handshake(t, i);
}

/* New-session callback: the server sent a session ticket (TLS 1.3: after
 * the handshake, possibly several; TLS 1.2: during it). Keep the newest for
 * --resume; returning 1 takes the reference. */
static int on_new_session(SSL *s, SSL_SESSION *sess)
{
	conn *c = SSL_get_ex_data(s, ms_bench_tls_ssl_index());
	thr *t = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), ms_bench_tls_ctx_index());
	if (!c || !t)
		return 0;
	t->st->tls_tickets++;
	SSL_SESSION **slot = t->cfg->resume == RESUME_SLOT ? &c->sess
			   : t->cfg->resume == RESUME_THREAD ? &t->sess : NULL;
	if (!slot)
		return 0;
	SSL_SESSION_free(*slot);
	*slot = sess;
	return 1;
}

/* Received bytes: plaintext for ws://, ciphertext for wss://. */
static void on_data(thr *t, uint32_t i, uint8_t *p, size_t n)
{
	conn *c = &t->c[i];
	if (!c->ssl) {
		on_plain(t, i, p, n);
		return;
	}
	if (c->state == CS_DONE)
		return;
	if (BIO_write(SSL_get_rbio(c->ssl), p, (int)n) != (int)n) {
		conn_fail(t, i, &t->st->fail_other, "BIO_write: out of memory", 0);
		return;
	}
	if (!c->tls_done && (tls_handshake(t, i) < 0 || !c->tls_done))
		return;
	for (;;) {
		int r = SSL_read(c->ssl, t->plain, PLAIN_SZ);
		if (r > 0) {
			on_plain(t, i, t->plain, (size_t)r);
			if (c->state == CS_DONE)
				return;
			continue;
		}
		int e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_ZERO_RETURN)
			break; /* close_notify: the TCP close follows */
		tls_fail(t, i, "TLS read", r);
		return;
	}
	if (BIO_pending(SSL_get_wbio(c->ssl)))
		mark_dirty(t, i);
}

/* ---- completions -------------------------------------------------------- */

static void recycle_buf(thr *t, unsigned bid)
{
	io_uring_buf_ring_add(t->br, t->bufs + (size_t)bid * RECV_BUFSZ, RECV_BUFSZ, (unsigned short)bid,
			      io_uring_buf_ring_mask(RECV_BUFS), 0);
	io_uring_buf_ring_advance(t->br, 1);
}

static void on_cqe(thr *t, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	int op = (int)(ud >> 56);
	uint32_t i = (uint32_t)(ud >> 32) & 0xffffff;
	int res = cqe->res;
	conn *c = &t->c[i];
	ms_bench_tstats *st = t->st;

	if (op == OP_RECV) {
		if (cqe->flags & IORING_CQE_F_BUFFER) {
			unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
			if (res > 0)
				on_data(t, i, t->bufs + (size_t)bid * RECV_BUFSZ, (size_t)res);
			recycle_buf(t, bid);
		}
		if (cqe->flags & IORING_CQE_F_MORE)
			return;
		c->inflight_ops--;
		c->recv_armed = 0;
		if (c->state == CS_DONE) {
			conn_maybe_finish(t, i);
			return;
		}
		if (res == -ENOBUFS || (res > 0)) {
			arm_recv(t, i); /* buffers were returned above */
			return;
		}
		if (res == 0) {
			if (c->close_sent || t->phase >= PH_STOP) {
				if (c->state != CS_CLOSING && c->state != CS_DONE)
					relaxed_inc(&st->open_now, -1);
				conn_close(t, i);
			} else {
				st->closed_by_peer++;
				conn_fail(t, i, c->state == CS_OPEN ? NULL : &st->fail_http,
					  "connection closed by server", 0);
			}
		} else {
			conn_fail(t, i, c->state == CS_OPEN ? NULL : &st->fail_other, "recv", -res);
		}
		conn_maybe_finish(t, i);
		return;
	}

	c->inflight_ops--;
	switch (op) {
	case OP_SOCKET:
	case OP_SOCKOPT:
	case OP_BIND:
		if (res < 0 && res != -ECANCELED) {
			if (op == OP_SOCKOPT && res == -EOPNOTSUPP)
				t->setsockopt_ok = 0;
			conn_fail(t, i, &st->fail_connect,
				  op == OP_SOCKET ? "socket" : op == OP_BIND ? "bind" : "setsockopt", -res);
		}
		break;
	case OP_CONNECT:
		if (res == -ECANCELED && c->state == CS_CONNECTING && !c->failed) {
			/* Cancelled by the link timeout, or by an earlier failed
			 * link (which already counted). */
			conn_fail(t, i, &st->fail_timeout, "connect timed out", 0);
		} else if (res < 0) {
			conn_fail(t, i, &st->fail_connect, "connect", -res);
		} else if (c->state == CS_CONNECTING) {
			on_connected(t, i);
		}
		break;
	case OP_LINKTO:
		break;
	case OP_SEND:
		c->sending = 0;
		if (res < 0) {
			if (c->state != CS_DONE)
				conn_fail(t, i, c->state == CS_OPEN || c->state == CS_CLOSING ? NULL : &st->fail_other,
					  "send", -res);
			break;
		}
		c->out_off += (uint32_t)res;
		if (c->out_off < c->out.len) {
			if (c->state != CS_DONE)
				send_out(t, i);
			break;
		}
		c->out.len = 0;
		c->out_off = 0;
		if (has_output(c))
			mark_dirty(t, i);
		break;
	case OP_CANCEL:
	case OP_CLOSE:
		break;
	}
	conn_maybe_finish(t, i);
}

/* ---- loop --------------------------------------------------------------- */

/* storm: keep starting connections at --rate from PH_RUN on, reusing
 * slots whose previous connection has fully finished. */
static void storm_more(thr *t)
{
	uint64_t run0 = atomic_load(&t->sh->run_start_ns);
	for (;;) {
		if (t->rate > 0) {
			uint64_t due = run0 + (uint64_t)((double)t->storm_started * 1e9 / t->rate);
			if (t->now < due)
				return;
		}
		if (t->pending >= t->cfg->max_pending)
			return;
		uint32_t i;
		if (t->next_open < t->n)
			i = t->next_open++;
		else if (t->nfree)
			i = t->free_slots[--t->nfree];
		else
			return;
		t->storm_started++;
		conn_start(t, i);
	}
}

static void open_more(thr *t)
{
	if (t->cfg->scenario == SC_STORM) {
		if (t->phase == PH_RUN)
			storm_more(t);
		return;
	}
	while (t->next_open < t->n && t->pending < t->cfg->max_pending) {
		if (t->rate > 0) {
			uint64_t due = t->t_start + (uint64_t)((double)t->next_open * 1e9 / t->rate);
			if (t->now < due)
				break;
		}
		conn_start(t, t->next_open++);
	}
}

/* Fail handshakes that take longer than --connect-timeout (the link
 * timeout only covers the TCP connect). */
static void sweep(thr *t)
{
	uint64_t limit = (uint64_t)(t->cfg->connect_timeout * 1e9);
	for (uint32_t i = 0; i < t->next_open; i++) {
		conn *c = &t->c[i];
		if ((c->state == CS_UPGRADING || c->state == CS_JOINING) && t->now - c->t0 > limit)
			conn_fail(t, i, &t->st->fail_timeout,
				  c->state == CS_JOINING ? (t->cfg->scenario == SC_IDLE ? "exchange timed out"
											: "join timed out")
				  : c->ssl && !c->tls_done ? "TLS handshake timed out" : "upgrade timed out", 0);
	}
}

static void publish_due(thr *t)
{
	if (t->cfg->pub_rate <= 0)
		return;
	for (uint32_t k = 0; k < t->npubs; k++) {
		uint32_t i = t->pubs[k];
		conn *c = &t->c[i];
		if (c->state != CS_OPEN)
			continue;
		while (t->now >= t->pub_base_ns + (uint64_t)((double)c->pub_k * t->pub_interval_ns))
			chat_publish(t, i);
	}
}

static void on_phase(thr *t, int phase)
{
	const ms_bench_cfg *cfg = t->cfg;
	t->phase = phase;
	if (phase == PH_RUN) {
		t->measure_start = atomic_load(&t->sh->measure_start_ns);
		t->measure_end = atomic_load(&t->sh->measure_end_ns);
		t->pub_base_ns = t->now;
		for (uint32_t i = 0; i < t->next_open; i++) {
			conn *c = &t->c[i];
			if (c->state != CS_OPEN)
				continue;
			if (cfg->scenario == SC_ECHO)
				for (unsigned k = 0; k < cfg->inflight; k++)
					echo_send(t, i);
			if (c->is_pub && cfg->pub_rate <= 0)
				for (unsigned k = 0; k < cfg->inflight; k++)
					chat_publish(t, i);
		}
	} else if (phase == PH_STOP) {
		t->stop_ns = t->now;
		/* fan-out: give deliveries already published time to arrive */
		t->drain_until = t->now + ((cfg->scenario == SC_FANOUT || cfg->scenario == SC_DM)
						   ? (uint64_t)(cfg->close_timeout * 0.5e9) : 0);
	}
}

static void begin_close_all(thr *t)
{
	for (uint32_t i = 0; i < t->next_open; i++) {
		conn *c = &t->c[i];
		if (c->state == CS_OPEN || c->state == CS_JOINING)
			start_close_handshake(t, i);
		else if (t->cfg->scenario == SC_STORM && (c->state == CS_CONNECTING || c->state == CS_UPGRADING))
			conn_close(t, i); /* churn cut short by the end of the run */
		else if (c->state == CS_CONNECTING || c->state == CS_UPGRADING)
			conn_fail(t, i, &t->st->fail_other, "stopped before open", 0);
	}
}

static int thr_setup(thr *t)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	p.cq_entries = 16384;
	int r = io_uring_queue_init_params(4096, &t->ring, &p);
	if (r < 0) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN;
		p.cq_entries = 16384;
		r = io_uring_queue_init_params(4096, &t->ring, &p);
	}
	if (r < 0) {
		set_error(t, "io_uring_queue_init: %s", strerror(-r));
		return r;
	}
	r = io_uring_register_files_sparse(&t->ring, t->n);
	if (r < 0) {
		set_error(t, "register %u direct descriptors: %s (raise RLIMIT_NOFILE or use more --threads)",
			  t->n, strerror(-r));
		return r;
	}
	size_t brsz = RECV_BUFS * sizeof(struct io_uring_buf);
	t->br = mmap(NULL, brsz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	t->bufs = mmap(NULL, (size_t)RECV_BUFS * RECV_BUFSZ, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (t->br == MAP_FAILED || t->bufs == MAP_FAILED)
		return -ENOMEM;
	struct io_uring_buf_reg reg = {.ring_addr = (uint64_t)(uintptr_t)t->br,
				       .ring_entries = RECV_BUFS, .bgid = 0};
	r = io_uring_register_buf_ring(&t->ring, &reg, 0);
	if (r < 0) {
		set_error(t, "register buffer ring: %s", strerror(-r));
		return r;
	}
	io_uring_buf_ring_init(t->br);
	for (unsigned b = 0; b < RECV_BUFS; b++)
		io_uring_buf_ring_add(t->br, t->bufs + (size_t)b * RECV_BUFSZ, RECV_BUFSZ, (unsigned short)b,
				      io_uring_buf_ring_mask(RECV_BUFS), (int)b);
	io_uring_buf_ring_advance(t->br, RECV_BUFS);
	if (t->cfg->tls) {
		char err[160];
		t->ssl_ctx = ms_bench_tls_ctx(t->cfg, on_new_session, t, err, sizeof(err));
		if (!t->ssl_ctx) {
			set_error(t, "TLS context: %s", err);
			return -1;
		}
		t->plain = malloc(PLAIN_SZ);
		if (!t->plain)
			return -ENOMEM;
	}
	return 0;
}

static void *thr_main(void *arg)
{
	thr *t = arg;
	const ms_bench_cfg *cfg = t->cfg;
	ms_bench_tstats *st = t->st;
	ms_hist_init(&st->h_tcp);
	ms_hist_init(&st->h_conn);
	ms_hist_init(&st->h_lat);
	ms_hist_init(&st->h_tls_full);
	ms_hist_init(&st->h_tls_res);
	if (t->n == 0 || thr_setup(t) < 0) {
		if (t->n) {
			relaxed_inc(&st->failed, t->n);
			relaxed_inc(&st->settled, t->n);
			st->fail_other += t->n;
		}
		atomic_store(&st->done, 1);
		return NULL;
	}
	t->setsockopt_ok = 1;
	for (unsigned k = 0; k < cfg->nsrc; k++) {
		t->src[k].sin_family = AF_INET;
		t->src[k].sin_addr = cfg->src[k];
	}
	t->link_ts.tv_sec = (long long)cfg->connect_timeout;
	t->link_ts.tv_nsec = (long long)((cfg->connect_timeout - (double)(long long)cfg->connect_timeout) * 1e9);
	t->c = calloc(t->n, sizeof(conn));
	t->dirty = calloc(t->n, sizeof(uint32_t));
	t->pubs = calloc(t->n, sizeof(uint32_t));
	t->free_slots = calloc(t->n, sizeof(uint32_t));
	t->payload = malloc(cfg->size + 1);
	for (unsigned k = 0; k < cfg->size; k++)
		t->payload[k] = (uint8_t)('a' + k % 26);
	for (uint32_t i = 0; i < t->n; i++) {
		conn *c = &t->c[i];
		c->id = t->id_base + i;
		if (cfg->scenario == SC_ECHO)
			c->ts = calloc(cfg->inflight, sizeof(uint64_t));
		if (cfg->scenario == SC_FANOUT && cfg->joins) {
			c->chk = calloc(cfg->joins, sizeof(ms_seqchk));
			c->chk_stream = calloc(cfg->joins, sizeof(uint32_t));
			for (unsigned j = 0; j < cfg->joins; j++) {
				ms_seqchk_init(&c->chk[j]);
				c->chk_stream[j] = stream_of(cfg, c->id, j);
			}
		}
		if ((cfg->scenario == SC_FANOUT || cfg->scenario == SC_DM) && c->id < cfg->publishers) {
			c->is_pub = 1;
			t->pubs[t->npubs++] = i;
		}
	}
	t->pub_interval_ns = cfg->pub_rate > 0 ? 1e9 / cfg->pub_rate : 0;
	t->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)t->widx << 32) ^ ms_bench_now();
	t->now = ms_bench_now();
	t->t_start = t->now;
	t->phase = PH_CONNECT;

	bool closing = false;
	for (;;) {
		t->now = ms_bench_now();
		int ph = atomic_load_explicit(&t->sh->phase, memory_order_acquire);
		if (ph != t->phase)
			on_phase(t, ph);
		if (ph == PH_ABORT)
			break;
		if (ph < PH_STOP) {
			open_more(t);
			if (ph == PH_RUN)
				publish_due(t);
		} else if (!closing && t->now >= t->drain_until) {
			closing = true;
			begin_close_all(t);
		}
		if (t->now - t->last_sweep > 250000000ull) {
			t->last_sweep = t->now;
			if (ph < PH_STOP)
				sweep(t);
		}
		if (closing && t->nbusy == 0)
			break;
		if (closing && t->now - t->stop_ns > (uint64_t)(cfg->close_timeout * 1e9))
			break;
		flush_dirty(t);

		uint64_t wait_ns = 50000000ull;
		if (ph < PH_STOP && t->rate > 0 && t->pending < cfg->max_pending &&
		    (cfg->scenario == SC_STORM ? ph == PH_RUN : t->next_open < t->n)) {
			uint64_t due = cfg->scenario == SC_STORM
				? atomic_load(&t->sh->run_start_ns) + (uint64_t)((double)t->storm_started * 1e9 / t->rate)
				: t->t_start + (uint64_t)((double)t->next_open * 1e9 / t->rate);
			wait_ns = due > t->now ? due - t->now : 0;
			if (wait_ns > 50000000ull)
				wait_ns = 50000000ull;
		}
		if (ph == PH_RUN && t->npubs && cfg->pub_rate > 0) {
			uint64_t iv = (uint64_t)t->pub_interval_ns / 2;
			if (iv < wait_ns)
				wait_ns = iv;
		}
		struct io_uring_cqe *cqe;
		if (wait_ns < 20000) {
			/* DEFER_TASKRUN: completions are only produced by an
			 * enter with GETEVENTS, so never just submit. */
			io_uring_submit_and_get_events(&t->ring);
		} else {
			struct __kernel_timespec ts = {.tv_sec = (long long)(wait_ns / 1000000000ull),
						       .tv_nsec = (long long)(wait_ns % 1000000000ull)};
			io_uring_submit_and_wait_timeout(&t->ring, &cqe, 1, &ts, NULL);
		}
		t->now = ms_bench_now();
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&t->ring, head, cqe) {
			on_cqe(t, cqe);
			seen++;
		}
		io_uring_cq_advance(&t->ring, seen);
		flush_dirty(t);
	}

	/* Fold the per-connection sequence checks into the thread's figures. */
	for (uint32_t i = 0; i < t->n; i++) {
		conn *c = &t->c[i];
		for (unsigned j = 0; c->chk && j < cfg->joins; j++) {
			st->seq_gaps += c->chk[j].gaps;
			st->seq_missing += c->chk[j].missing;
			st->seq_dups += c->chk[j].dups;
			st->seq_reorders += c->chk[j].reorders;
		}
	}
	io_uring_queue_exit(&t->ring); /* closes every direct descriptor left */
	for (uint32_t i = 0; i < t->n; i++) {
		SSL_free(t->c[i].ssl);
		SSL_SESSION_free(t->c[i].sess);
	}
	SSL_SESSION_free(t->sess);
	SSL_CTX_free(t->ssl_ctx);
	free(t->plain);
	atomic_store(&st->done, 1);
	return NULL;
}

int ms_bench_proc_run(const ms_bench_cfg *cfg, ms_bench_shared *sh, unsigned proc)
{
	unsigned T = cfg->threads, W = cfg->procs * cfg->threads;
	thr *ts = calloc(T, sizeof(thr));
	pthread_t *tids = calloc(T, sizeof(pthread_t));
	for (unsigned k = 0; k < T; k++) {
		thr *t = &ts[k];
		unsigned w = proc * T + k;
		t->cfg = cfg;
		t->sh = sh;
		t->widx = w;
		t->st = &sh->t[w];
		t->n = (uint32_t)(cfg->conns / W + (w < cfg->conns % W));
		t->id_base = (cfg->conns / W) * w + (w < cfg->conns % W ? w : cfg->conns % W);
		t->rate = cfg->rate > 0 ? cfg->rate / W : 0;
		pthread_create(&tids[k], NULL, thr_main, t);
	}
	for (unsigned k = 0; k < T; k++)
		pthread_join(tids[k], NULL);
	free(tids);
	free(ts);
	return 0;
}
