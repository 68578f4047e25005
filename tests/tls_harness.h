/*
 * The in-process TLS harness shared by tests/unit/test_tls.c and
 * tests/fuzz/fuzz_tls.c: a server engine (tls/tls.h) and a BoringSSL client
 * whose BIO pair's network end is shuttled by hand, the way net/server.c
 * feeds the engine (one ms_tls_read per received slice, then n = 0 calls
 * while *more) and drains its sink.
 *
 *   client SSL <-> BIO pair <-> net --deliver_c2s--> ms_tls_read (srv_feed)
 *                                   <---- s2c <----- sink (sink_fn)
 *
 * Header-only (static inline), so each target compiles it with its own
 * flags (the fuzz target's coverage instrumentation included). The includer
 * defines TH_CHECK(cond) first: cmocka's assert_true in the unit test,
 * abort() in the fuzz target. Not thread-safe except as test_tls uses it:
 * one pair per thread, with the client contexts' new-session callback (and
 * g_sess) on one thread only.
 */
#ifndef MS_TESTS_TLS_HARNESS_H
#define MS_TESTS_TLS_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/ssl.h>

#include "tls/tls.h"

#ifndef TH_CHECK
#error "define TH_CHECK(cond) before including tls_harness.h"
#endif

/* ---- growable buffer, sink ------------------------------------------------- */

typedef struct buf {
	uint8_t *p;
	size_t n, cap;
	size_t total; /* bytes ever appended */
} buf;

static inline void buf_put(buf *b, const uint8_t *p, size_t n)
{
	if (!n)
		return;
	if (b->n + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;

		while (cap < b->n + n)
			cap *= 2;
		b->p = realloc(b->p, cap);
		TH_CHECK(b->p != NULL);
		b->cap = cap;
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
	b->total += n;
}

static inline void buf_fini(buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* ms_tls_sink.write: appends to the buf in arg. */
static inline void sink_fn(void *arg, const uint8_t *p, size_t n)
{
	buf_put(arg, p, n);
}

/* A temporary file holding p[0..n); returns its path (malloc'd). */
static inline char *tmpfile_with(const void *p, size_t n)
{
	char *path = strdup("/tmp/ms_tls_test_XXXXXX");
	int fd;

	TH_CHECK(path != NULL);
	fd = mkstemp(path);
	TH_CHECK(fd >= 0);
	if (n)
		TH_CHECK(write(fd, p, n) == (ssize_t)n);
	close(fd);
	return path;
}

/* ---- client contexts ----------------------------------------------------------- */

static SSL_SESSION *g_sess; /* latest resumable session seen by a client */
static unsigned g_nsess;    /* resumable sessions (tickets) seen by clients */

static inline int new_sess(SSL *ssl, SSL_SESSION *sess)
{
	if (!SSL_SESSION_is_resumable(sess))
		return 0;
	g_nsess++;
	SSL_SESSION_free(g_sess);
	g_sess = sess;
	return 1;
}

/* The session new_sess kept (there must be one); the caller owns it. */
static inline SSL_SESSION *take_session(void)
{
	SSL_SESSION *s = g_sess;

	TH_CHECK(s != NULL);
	g_sess = NULL;
	return s;
}

/* TLS 1.2 up to max_version; every resumable session lands in g_sess. */
static inline SSL_CTX *cli_ctx(uint16_t max_version)
{
	SSL_CTX *c = SSL_CTX_new(TLS_method());

	TH_CHECK(c != NULL);
	TH_CHECK(SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION));
	TH_CHECK(SSL_CTX_set_max_proto_version(c, max_version));
	SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
	SSL_CTX_sess_set_new_cb(c, new_sess);
	return c;
}

/* The same without a session cache (safe on any thread). */
static inline SSL_CTX *cli_ctx_nocache(uint16_t max_version)
{
	SSL_CTX *c = cli_ctx(max_version);

	SSL_CTX_sess_set_new_cb(c, NULL);
	SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
	return c;
}

/* ---- a client and an engine ------------------------------------------------------ */

typedef struct pair {
	SSL *c;		 /* client (NULL: engine only) */
	BIO *net;	 /* network end of the client's BIO pair */
	ms_tls *s;	 /* server engine */
	ms_tls_sink sink; /* appends to s2c */
	buf s2c;	 /* engine output not yet given to the client */
	buf sp;		 /* plaintext the server received */
	buf cp;		 /* plaintext the client received */
	int srv_rc;	 /* first non-OK engine status, else OK */
	int cli_err;	 /* client SSL_get_error of a failure, else 0 */
	bool cli_closed; /* client saw close_notify */
	size_t cap;	 /* engine out buffer size (<= sizeof obuf) */
	size_t split;	 /* deliver each client flight as [0,split) + rest */
	size_t step;	 /* or in pieces of step bytes */
	size_t max_flight;
	size_t mores;		 /* engine calls that returned *more */
	const uint8_t *early; /* client writes this as soon as it is done */
	size_t early_n;
	bool discard; /* don't keep plaintext (memory test) */
	buf *flights; /* when set: client flight i appended to flights[min(i, 3)] */
	size_t nflights;
	/* when set: called after every ms_tls_read with its results */
	void (*on_read)(struct pair *pp, int rc, size_t got, bool more);
} pair;

/* A client of cctx (resuming sess if given; cctx NULL: no client) with a
 * BIO pair of bufsz bytes each way, offering SNI localhost and ALPN h2,
 * http/1.1; and an engine of sctx with a 4096-byte out buffer. */
static inline void pair_init_buf(pair *pp, ms_tls_ctx *sctx, SSL_CTX *cctx, SSL_SESSION *sess,
				 size_t bufsz)
{
	memset(pp, 0, sizeof(*pp));
	if (cctx) {
		BIO *cb;

		pp->c = SSL_new(cctx);
		TH_CHECK(pp->c != NULL);
		TH_CHECK(BIO_new_bio_pair(&cb, bufsz, &pp->net, bufsz));
		SSL_set_bio(pp->c, cb, cb);
		SSL_set_connect_state(pp->c);
		TH_CHECK(SSL_set_tlsext_host_name(pp->c, "localhost"));
		TH_CHECK(SSL_set_alpn_protos(pp->c, (const uint8_t *)"\x02h2\x08http/1.1", 12) == 0);
		if (sess)
			TH_CHECK(SSL_set_session(pp->c, sess));
	}
	pp->s = ms_tls_new(sctx);
	TH_CHECK(pp->s != NULL);
	pp->sink.write = sink_fn;
	pp->sink.arg = &pp->s2c;
	pp->cap = 4096;
}

static inline void pair_init(pair *pp, ms_tls_ctx *sctx, SSL_CTX *cctx, SSL_SESSION *sess)
{
	pair_init_buf(pp, sctx, cctx, sess, 1 << 18);
}

static inline void pair_fini(pair *pp)
{
	SSL_free(pp->c);
	BIO_free(pp->net);
	ms_tls_free(pp->s);
	buf_fini(&pp->s2c);
	buf_fini(&pp->sp);
	buf_fini(&pp->cp);
}

/* One received slice: an engine call on in[0..n), then n = 0 calls (in =
 * NULL, as net/server.c makes them) while *more. Does nothing once the
 * engine has returned a non-OK status (the server has closed then). */
static inline void srv_feed(pair *pp, const uint8_t *in, size_t n)
{
	static _Thread_local uint8_t obuf[1 << 16];
	size_t got;
	bool more;
	int rc;

	if (pp->srv_rc != MS_TLS_OK)
		return;
	do {
		rc = ms_tls_read(pp->s, in, n, obuf, pp->cap, &got, &more, &pp->sink);
		TH_CHECK(got <= pp->cap);
		TH_CHECK(!(more && rc != MS_TLS_OK));
		if (pp->on_read)
			pp->on_read(pp, rc, got, more);
		if (!pp->discard)
			buf_put(&pp->sp, obuf, got);
		pp->mores += more;
		in = NULL;
		n = 0;
	} while (more);
	pp->srv_rc = rc;
}

/* One client flight to the engine, whole or as split/step say. */
static inline void deliver_c2s(pair *pp, const uint8_t *p, size_t n)
{
	size_t off = 0;

	if (pp->flights)
		buf_put(&pp->flights[pp->nflights < 3 ? pp->nflights : 3], p, n);
	pp->nflights++;
	if (n > pp->max_flight)
		pp->max_flight = n;
	if (pp->step) {
		for (; off < n; off += pp->step)
			srv_feed(pp, p + off, n - off < pp->step ? n - off : pp->step);
		return;
	}
	if (pp->split && pp->split < n) {
		srv_feed(pp, p, pp->split);
		off = pp->split;
	}
	srv_feed(pp, p + off, n - off);
}

static inline void cli_fail(pair *pp, int r)
{
	int e = SSL_get_error(pp->c, r);

	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return;
	if (e == SSL_ERROR_ZERO_RETURN) {
		pp->cli_closed = true;
		return;
	}
	if (!pp->cli_err)
		pp->cli_err = e;
}

/* Shuttle bytes until neither side makes progress: the client handshakes
 * (then writes early) and reads into cp, its output goes to the engine,
 * the engine's s2c to the client. */
static inline void pump(pair *pp)
{
	static _Thread_local uint8_t tmp[1 << 18];

	for (int iter = 0; iter < 100000; iter++) {
		bool prog = false;
		size_t k;
		int r;

		if (!pp->cli_err && !SSL_is_init_finished(pp->c)) {
			r = SSL_do_handshake(pp->c);
			if (r != 1)
				cli_fail(pp, r);
			else if (pp->early_n) {
				TH_CHECK(SSL_write(pp->c, pp->early, (int)pp->early_n) ==
					 (int)pp->early_n);
				pp->early_n = 0;
			}
		}
		if (!pp->cli_err && !pp->cli_closed && SSL_is_init_finished(pp->c)) {
			while ((r = SSL_read(pp->c, tmp, sizeof(tmp))) > 0) {
				if (!pp->discard)
					buf_put(&pp->cp, tmp, (size_t)r);
				prog = true;
			}
			cli_fail(pp, r);
		}
		k = BIO_ctrl_pending(pp->net);
		if (k) {
			TH_CHECK(k <= sizeof(tmp));
			TH_CHECK(BIO_read(pp->net, tmp, (int)k) == (int)k);
			deliver_c2s(pp, tmp, k);
			prog = true;
		}
		if (pp->s2c.n) {
			k = BIO_ctrl_get_write_guarantee(pp->net);
			if (k > pp->s2c.n)
				k = pp->s2c.n;
			if (k) {
				TH_CHECK(BIO_write(pp->net, pp->s2c.p, (int)k) == (int)k);
				memmove(pp->s2c.p, pp->s2c.p + k, pp->s2c.n - k);
				pp->s2c.n -= k;
				prog = true;
			}
		}
		if (!prog)
			return;
	}
	TH_CHECK(!"pump does not settle");
}

/* Pump; both sides must have finished the handshake without an error. */
static inline void handshake_ok(pair *pp)
{
	pump(pp);
	TH_CHECK(pp->cli_err == 0);
	TH_CHECK(pp->srv_rc == MS_TLS_OK);
	TH_CHECK(SSL_is_init_finished(pp->c));
	TH_CHECK(ms_tls_handshake_done(pp->s));
}

static inline void srv_write(pair *pp, const void *p, size_t n)
{
	TH_CHECK(ms_tls_write(pp->s, p, n, &pp->sink) == MS_TLS_OK);
}

static inline void cli_write(pair *pp, const void *p, size_t n)
{
	TH_CHECK(SSL_write(pp->c, p, (int)n) == (int)n);
}

#endif
