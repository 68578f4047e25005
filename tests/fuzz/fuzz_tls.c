/*
 * libFuzzer target for tls/tls.h: the server engine fed client bytes the
 * way net/server.c feeds it (one ms_tls_read per received slice, then
 * n = 0 calls while *more), every byte the engine writes drained into a
 * sink.
 *
 * One ms_tls_ctx for the whole run, made at init: self-signed ECDSA P-256
 * certificate (a few ms) and a fixed ticket key (written to a temporary
 * file and loaded like --ticket-key-file) so that tickets in the seed
 * corpus stay openable across runs. At init an in-process BoringSSL client
 * also records real ClientHellos (TLS 1.3, TLS 1.2 only, and both again
 * resuming a ticket sealed with the fixed key) to use as prefixes.
 *
 * Input: byte 0: mode (bits 0-2), plaintext buffer size (bits 3-5: 1 byte
 * to 64 KiB), data-mode TLS 1.2 client (bit 6), data-mode close_notify
 * (bit 7); byte 1: k, the number of chunk sizes (bits 0-3), data-mode
 * write size (bits 4-7); the next k bytes: chunk sizes 1..256, used in
 * turn to split the stream into slices (k = 0: one slice); the rest: the
 * payload.
 *   mode 0, 6, 7: the payload is the client's byte stream;
 *   mode 1: a real TLS 1.3 ClientHello, then the payload;
 *   mode 2: a real TLS 1.2-only ClientHello, then the payload;
 *   mode 3: a TLS 1.3 ClientHello resuming a ticket, then the payload;
 *   mode 4: a TLS 1.2 ClientHello resuming a ticket, then the payload;
 *   mode 5: a real handshake with the in-process client, which then sends
 *           the payload as application data (in writes of the data-mode
 *           size), optionally followed by close_notify; the ciphertext is
 *           sliced as above. The engine must return exactly the payload
 *           (then MS_TLS_CLOSED when close_notify followed), echo it back
 *           through ms_tls_write to the client intact, and end with a
 *           close_notify the client sees.
 * Invariants on every call: out_len <= cap, *more only with MS_TLS_OK, no
 * plaintext before the handshake is done, ms_tls_write refused before it,
 * and nothing leaks per input (LSan).
 *
 * BoringSSL itself is the system library, not instrumented: coverage
 * feedback comes from the tls/ sources only, so the fuzzer is steered by the
 * engine's own branches and the seeds carry it into the handshake.
 *
 * Regenerating the seed corpus: MS_FUZZ_TLS_SEEDS=DIR ./fuzz_tls writes
 * the seeds into DIR and exits.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls/tls.h"
#include "../tls_harness.h"

#define CHECK(c)                 \
	do {                     \
		if (!(c))        \
			abort(); \
	} while (0)

#define PAIR_BUF (1u << 20) /* client BIO pair, each direction */
#define MAX_DATA (1u << 18) /* data-mode payload cap (fits the pair) */

static ms_tls_ctx *g_ctx;
static SSL_CTX *g_cli13, *g_cli12; /* data-mode clients, no session cache */
static tls_buf g_hello[5];		   /* index = mode 1..4 */
static uint8_t g_out[(1u << 16) + 1];

/* ---- feeding the engine ----------------------------------------------------- */

typedef struct feeder {
	ms_tls *t;
	ms_tls_sink sink; /* appends to s2c */
	tls_buf s2c;	  /* everything the engine wrote */
	tls_buf plain;	  /* everything it decrypted */
	size_t cap;
	int rc; /* first non-OK status, else MS_TLS_OK */
} feeder;

/* One received slice: ms_tls_read on it, then n = 0 calls while *more. */
static void feed(feeder *f, const uint8_t *p, size_t n)
{
	bool more;
	int guard = 0;

	if (f->rc != MS_TLS_OK)
		return; /* the server closes the connection here */
	do {
		size_t got = 7777;
		int rc = ms_tls_read(f->t, p, n, g_out, f->cap, &got, &more, &f->sink);

		CHECK(rc == MS_TLS_OK || rc == MS_TLS_CLOSED || rc == MS_TLS_ERROR);
		CHECK(got <= f->cap);
		CHECK(!more || rc == MS_TLS_OK);
		CHECK(!got || ms_tls_handshake_done(f->t));
		tls_buf_put(&f->plain, g_out, got);
		f->rc = rc;
		p = NULL;
		n = 0;
		CHECK(++guard < (1 << 20));
	} while (more);
}

/* Slice s[0..n) with the chunk sizes sz[0..k) in turn. */
static void feed_sliced(feeder *f, const uint8_t *s, size_t n, const uint8_t *sz, size_t k)
{
	size_t off = 0, i = 0;

	while (off < n && f->rc == MS_TLS_OK) {
		size_t c = k ? (size_t)sz[i++ % k] + 1 : n;

		if (c > n - off)
			c = n - off;
		feed(f, s + off, c);
		off += c;
	}
}

static void feeder_init(feeder *f, size_t cap)
{
	memset(f, 0, sizeof(*f));
	f->t = ms_tls_new(g_ctx);
	CHECK(f->t);
	f->sink.write = tls_buf_sink;
	f->sink.arg = &f->s2c;
	f->cap = cap;
}

static void feeder_fini(feeder *f)
{
	ms_tls_free(f->t);
	tls_buf_fini(&f->s2c);
	tls_buf_fini(&f->plain);
}

/* ---- in-process client ------------------------------------------------------ */

typedef struct client {
	SSL *c;
	BIO *net; /* network end of the client's pair */
} client;

static void client_init(client *cl, SSL_CTX *cc, SSL_SESSION *sess)
{
	BIO *b;

	cl->c = SSL_new(cc);
	CHECK(cl->c);
	CHECK(BIO_new_bio_pair(&b, PAIR_BUF, &cl->net, PAIR_BUF));
	SSL_set_bio(cl->c, b, b);
	SSL_set_connect_state(cl->c);
	CHECK(SSL_set_tlsext_host_name(cl->c, "localhost"));
	CHECK(SSL_set_alpn_protos(cl->c, (const uint8_t *)"\x08http/1.1", 9) == 0);
	if (sess)
		CHECK(SSL_set_session(cl->c, sess));
}

static void client_fini(client *cl)
{
	SSL_free(cl->c);
	BIO_free(cl->net);
	ERR_clear_error();
}

/* What the client has written so far, appended to out. */
static void client_take(client *cl, tls_buf *out)
{
	static uint8_t tmp[1 << 16];
	int r;

	while ((r = BIO_read(cl->net, tmp, sizeof(tmp))) > 0)
		tls_buf_put(out, tmp, (size_t)r);
}

/* The engine's output so far, handed to the client. */
static void client_give(client *cl, feeder *f)
{
	if (!f->s2c.n)
		return;
	CHECK(BIO_write(cl->net, f->s2c.p, (int)f->s2c.n) == (int)f->s2c.n);
	f->s2c.n = 0;
}

/* Let the client read (tickets, data); returns what it decrypted. */
static int client_read(client *cl, tls_buf *plain)
{
	static uint8_t tmp[1 << 16];
	int r;

	while ((r = SSL_read(cl->c, tmp, sizeof(tmp))) > 0)
		if (plain)
			tls_buf_put(plain, tmp, (size_t)r);
	return SSL_get_error(cl->c, r);
}

/* Full handshake; every client flight is recorded in flights when given. */
static void handshake(client *cl, feeder *f, tls_buf *flights)
{
	tls_buf fl = { 0 };

	for (int i = 0; i < 16 && !(SSL_is_init_finished(cl->c) &&
				      ms_tls_handshake_done(f->t)); i++) {
		int r = SSL_do_handshake(cl->c);

		CHECK(r == 1 || SSL_get_error(cl->c, r) == SSL_ERROR_WANT_READ);
		client_take(cl, &fl);
		if (fl.n) {
			if (flights)
				tls_buf_put(&flights[i < 3 ? i : 3], fl.p, fl.n);
			feed(f, fl.p, fl.n);
			fl.n = 0;
		}
		CHECK(f->rc == MS_TLS_OK);
		client_give(cl, f);
	}
	tls_buf_fini(&fl);
	CHECK(SSL_is_init_finished(cl->c) && ms_tls_handshake_done(f->t));
	CHECK(client_read(cl, NULL) == SSL_ERROR_WANT_READ); /* TLS 1.3 tickets */
}

/* ---- init: context, recorded ClientHellos ----------------------------------- */

static SSL_SESSION *g_sess;

static int new_sess(SSL *ssl, SSL_SESSION *sess)
{
	if (!SSL_SESSION_is_resumable(sess))
		return 0;
	SSL_SESSION_free(g_sess);
	g_sess = sess;
	return 1;
}

static SSL_CTX *cli_ctx(uint16_t max, bool cache)
{
	SSL_CTX *c = SSL_CTX_new(TLS_method());

	CHECK(c);
	CHECK(SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION));
	CHECK(SSL_CTX_set_max_proto_version(c, max));
	if (cache) {
		SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT |
							  SSL_SESS_CACHE_NO_INTERNAL);
		SSL_CTX_sess_set_new_cb(c, new_sess);
	}
	return c;
}

/* A full handshake with cc: its client flights go to flights (4 slots),
 * and the session it ends with is returned. */
static SSL_SESSION *full_handshake(SSL_CTX *cc, tls_buf *flights)
{
	client cl;
	feeder f;
	SSL_SESSION *s;

	client_init(&cl, cc, NULL);
	feeder_init(&f, sizeof(g_out) - 1);
	handshake(&cl, &f, flights);
	client_fini(&cl);
	feeder_fini(&f);
	s = g_sess;
	g_sess = NULL;
	CHECK(s);
	return s;
}

/* The first flight of a client (a ClientHello), resuming sess if given. */
static void record_hello(SSL_CTX *cc, SSL_SESSION *sess, tls_buf *out)
{
	client cl;

	client_init(&cl, cc, sess);
	CHECK(SSL_do_handshake(cl.c) == -1);
	client_take(&cl, out);
	CHECK(out->n > 5 && out->p[0] == 22);
	client_fini(&cl);
}

static void write_seed(const char *dir, const char *name, uint8_t b0, const uint8_t *sz,
		       size_t k, const uint8_t *p, size_t n)
{
	char path[4096];
	FILE *fp;
	uint8_t hdr[2] = { b0, (uint8_t)(k & 15) };

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fp = fopen(path, "wb");
	CHECK(fp);
	CHECK(fwrite(hdr, 1, 2, fp) == 2);
	CHECK(fwrite(sz, 1, k, fp) == k);
	CHECK(fwrite(p, 1, n, fp) == n);
	fclose(fp);
}

/* MS_FUZZ_TLS_SEEDS=DIR: the seed corpus (see the file comment). */
static void write_seeds(const char *dir, tls_buf fl13[4], tls_buf fl12[4])
{
	static const uint8_t small[] = { 0, 4, 40, 2 };
	static const uint8_t one[] = { 0 };
	static const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
	static const uint8_t sslv2[] = { 0x80, 0x2e, 1, 0, 2, 0, 0x15, 0, 0, 0, 0x10 };
	static const uint8_t alert[] = { 21, 3, 3, 0, 2, 2, 40 };
	static const uint8_t huge[] = { 22, 3, 1, 0xff, 0xff, 1, 0, 0xff, 0xfb };
	static const uint8_t appdata[] = { 23, 3, 3, 0, 4, 1, 2, 3, 4 };
	static const char hello[] = "{\"op\":\"ping\"}";
	tls_buf big = { 0 };
	tls_buf *h13 = &g_hello[1], *h12 = &g_hello[2];

	write_seed(dir, "ch13", 0, NULL, 0, h13->p, h13->n);
	write_seed(dir, "ch12", 0, NULL, 0, h12->p, h12->n);
	write_seed(dir, "ch13_resume", 0, NULL, 0, g_hello[3].p, g_hello[3].n);
	write_seed(dir, "ch12_resume", 0, NULL, 0, g_hello[4].p, g_hello[4].n);
	write_seed(dir, "ch13_sliced", 0, small, sizeof(small), h13->p, h13->n);
	write_seed(dir, "ch13_bytewise", 0, one, 1, h13->p, h13->n);
	write_seed(dir, "ch13_truncated", 0, NULL, 0, h13->p, h13->n / 2);
	write_seed(dir, "ch12_header_only", 0, NULL, 0, h12->p, 5);
	/* a complete first flight and the client's second flight after it */
	tls_buf_put(&big, h13->p, h13->n);
	tls_buf_put(&big, fl13[1].p, fl13[1].n);
	write_seed(dir, "flights13", 0, NULL, 0, big.p, big.n);
	big.n = 0;
	tls_buf_put(&big, h12->p, h12->n);
	tls_buf_put(&big, fl12[1].p, fl12[1].n);
	write_seed(dir, "flights12", 0, NULL, 0, big.p, big.n);
	/* after a recorded ClientHello: the client's second flight */
	write_seed(dir, "after13_flight2", 1, NULL, 0, fl13[1].p, fl13[1].n);
	write_seed(dir, "after12_flight2", 2, small, sizeof(small), fl12[1].p, fl12[1].n);
	write_seed(dir, "after13_resume_flight2", 3, NULL, 0, fl13[1].p, fl13[1].n);
	write_seed(dir, "after12_resume_ccs", 4, NULL, 0, (const uint8_t *)"\x14\x03\x03\x00\x01\x01", 6);
	write_seed(dir, "after13_garbage", 1, NULL, 0, (const uint8_t *)http, sizeof(http) - 1);
	write_seed(dir, "after12_alert", 2, NULL, 0, alert, sizeof(alert));
	/* garbage */
	write_seed(dir, "http", 0, NULL, 0, (const uint8_t *)http, sizeof(http) - 1);
	write_seed(dir, "sslv2", 0, NULL, 0, sslv2, sizeof(sslv2));
	write_seed(dir, "alert", 0, NULL, 0, alert, sizeof(alert));
	write_seed(dir, "huge_record", 0, NULL, 0, huge, sizeof(huge));
	write_seed(dir, "appdata_first", 0, NULL, 0, appdata, sizeof(appdata));
	/* data mode: TLS 1.3 / 1.2, small caps, sliced, close_notify */
	write_seed(dir, "data13", 5 | 4 << 3, NULL, 0, (const uint8_t *)hello, sizeof(hello) - 1);
	write_seed(dir, "data12_close", 5 | 4 << 3 | 1 << 6 | 1 << 7, small, sizeof(small),
		   (const uint8_t *)hello, sizeof(hello) - 1);
	big.n = 0;
	for (int i = 0; i < 20000; i++)
		tls_buf_put(&big, (const uint8_t *)&"abcdefghijklmnopqrstuvwxyz"[i % 26], 1);
	write_seed(dir, "data13_big_cap1k", 5 | 3 << 3, NULL, 0, big.p, big.n);
	write_seed(dir, "data12_big_cap1_close", 5 | 0 << 3 | 1 << 6 | 1 << 7, NULL, 0, big.p,
		   2000);
	tls_buf_fini(&big);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char tmpl[] = "/tmp/fuzz_tls_keys_XXXXXX";
	char path[sizeof(tmpl)], err[256];
	uint8_t key[80];
	ms_tls_opts o = { 0 };
	tls_buf fl13[4] = { 0 }, fl12[4] = { 0 };
	SSL_CTX *c13, *c12;
	SSL_SESSION *s13, *s12;
	const char *seeds = getenv("MS_FUZZ_TLS_SEEDS");
	int fd;

	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)(i * 7 + 1);
	memcpy(path, tmpl, sizeof(tmpl));
	fd = mkstemp(path);
	CHECK(fd >= 0);
	CHECK(write(fd, key, sizeof(key)) == (ssize_t)sizeof(key));
	close(fd);
	o.ticket_key_file = path;
	if (ms_tls_ctx_create(&g_ctx, &o, NULL, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_tls: %s\n", err);
		abort();
	}
	unlink(path);

	g_cli13 = cli_ctx(TLS1_3_VERSION, false);
	g_cli12 = cli_ctx(TLS1_2_VERSION, false);
	c13 = cli_ctx(TLS1_3_VERSION, true);
	c12 = cli_ctx(TLS1_2_VERSION, true);
	s13 = full_handshake(c13, fl13);
	s12 = full_handshake(c12, fl12);
	record_hello(c13, NULL, &g_hello[1]);
	record_hello(c12, NULL, &g_hello[2]);
	record_hello(c13, s13, &g_hello[3]);
	record_hello(c12, s12, &g_hello[4]);
	if (seeds) {
		write_seeds(seeds, fl13, fl12);
		exit(0);
	}
	SSL_SESSION_free(s13);
	SSL_SESSION_free(s12);
	SSL_CTX_free(c13);
	SSL_CTX_free(c12);
	for (int i = 0; i < 4; i++) {
		tls_buf_fini(&fl13[i]);
		tls_buf_fini(&fl12[i]);
	}
	return 0;
}

/* ---- one input -------------------------------------------------------------- */

/* Mode 5: handshake, then the client sends s[0..n) as application data. */
static void data_mode(feeder *f, bool tls12, bool close, size_t wsz, const uint8_t *sz,
		      size_t k, const uint8_t *s, size_t n)
{
	client cl;
	tls_buf ct = { 0 }, back = { 0 };

	if (n > MAX_DATA)
		n = MAX_DATA;
	client_init(&cl, tls12 ? g_cli12 : g_cli13, NULL);
	handshake(&cl, f, NULL);
	CHECK(f->plain.n == 0);
	for (size_t off = 0; off < n;) {
		size_t w = wsz && wsz < n - off ? wsz : n - off;

		CHECK(SSL_write(cl.c, s + off, (int)w) == (int)w);
		off += w;
	}
	if (close)
		CHECK(SSL_shutdown(cl.c) == 0);
	client_take(&cl, &ct);
	feed_sliced(f, ct.p, ct.n, sz, k);
	CHECK(f->rc == (close ? MS_TLS_CLOSED : MS_TLS_OK));
	CHECK(f->plain.n == n && (!n || !memcmp(f->plain.p, s, n)));
	client_give(&cl, f);
	if (!close && n) {
		/* and back: the client decrypts exactly what the engine sealed */
		CHECK(ms_tls_write(f->t, s, n, &f->sink) == MS_TLS_OK);
		client_give(&cl, f);
		CHECK(client_read(&cl, &back) == SSL_ERROR_WANT_READ);
		CHECK(back.n == n && !memcmp(back.p, s, n));
	}
	if (!close) {
		ms_tls_shutdown(f->t, &f->sink);
		CHECK(f->s2c.n > 0);
		client_give(&cl, f);
		CHECK(client_read(&cl, NULL) == SSL_ERROR_ZERO_RETURN);
	}
	tls_buf_fini(&ct);
	tls_buf_fini(&back);
	client_fini(&cl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t caps[8] = { 1, 5, 64, 1000, 4096, 16383, 16384 + 1024, 1 << 16 };
	feeder f;
	size_t k, mode;
	const uint8_t *sz, *s;
	size_t n;

	if (size < 2)
		return 0;
	mode = data[0] & 7;
	k = data[1] & 15;
	if (size < 2 + k)
		return 0;
	sz = data + 2;
	s = data + 2 + k;
	n = size - 2 - k;

	feeder_init(&f, caps[data[0] >> 3 & 7]);
	if (mode == 5) {
		static const size_t wsizes[16] = { 0,	 1,	 7,	 100,  1000,  4096,
						   16383, 16384, 16385, 20000, 32768, 1,
						   2,	 3,	 5,	 13 };

		data_mode(&f, data[0] & 0x40, data[0] & 0x80, wsizes[data[1] >> 4], sz, k, s,
			  n);
	} else {
		if (mode >= 1 && mode <= 4)
			feed(&f, g_hello[mode].p, g_hello[mode].n);
		/* a real ClientHello alone is answered, never refused */
		CHECK(f.rc == MS_TLS_OK);
		CHECK(mode == 0 || mode > 4 || f.s2c.n > 0);
		feed_sliced(&f, s, n, sz, k);
		if (!ms_tls_handshake_done(f.t)) {
			CHECK(f.plain.n == 0);
			CHECK(ms_tls_write(f.t, (const uint8_t *)"x", 1, &f.sink) == MS_TLS_ERROR);
		} else if (f.rc == MS_TLS_OK) {
			ms_tls_shutdown(f.t, &f.sink);
		}
	}
	feeder_fini(&f);
	return 0;
}
