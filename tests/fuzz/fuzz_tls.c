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
 * The engine-and-client pair, its pump and the client contexts are
 * tests/tls_harness.h, shared with tests/unit/test_tls.c.
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

#define CHECK(c)                 \
	do {                     \
		if (!(c))        \
			abort(); \
	} while (0)
#define TH_CHECK(c) CHECK(c)
#include "../tls_harness.h"

#define PAIR_BUF (1u << 20) /* client BIO pair, each direction */
#define MAX_DATA (1u << 18) /* data-mode payload cap (fits the pair) */

static ms_tls_ctx *g_ctx;
static SSL_CTX *g_cli13, *g_cli12; /* data-mode clients, no session cache */
static buf g_hello[5];		   /* index = mode 1..4 */

/* ---- the engine and its client (tests/tls_harness.h) ------------------------ */

/* Every engine call: a known status, no plaintext before the handshake is
 * done, and an end to the *more calls of one slice. */
static void check_read(pair *pp, int rc, size_t got, bool more)
{
	static int calls; /* of the current slice */

	CHECK(rc == MS_TLS_OK || rc == MS_TLS_CLOSED || rc == MS_TLS_ERROR);
	CHECK(!got || ms_tls_handshake_done(pp->s));
	CHECK(++calls < (1 << 20));
	if (!more)
		calls = 0;
}

/* An engine of g_ctx with a cap-byte out buffer and, when cc is given, a
 * client of cc (resuming sess if given) offering ALPN http/1.1 only. */
static void fuzz_pair(pair *pp, SSL_CTX *cc, SSL_SESSION *sess, size_t cap)
{
	pair_init_buf(pp, g_ctx, cc, sess, PAIR_BUF);
	pp->cap = cap;
	pp->on_read = check_read;
	if (cc)
		CHECK(SSL_set_alpn_protos(pp->c, (const uint8_t *)"\x08http/1.1", 9) == 0);
}

static void fuzz_pair_fini(pair *pp)
{
	pair_fini(pp);
	ERR_clear_error();
}

/* Slice s[0..n) with the chunk sizes sz[0..k) in turn. */
static void feed_sliced(pair *pp, const uint8_t *s, size_t n, const uint8_t *sz, size_t k)
{
	size_t off = 0, i = 0;

	while (off < n && pp->srv_rc == MS_TLS_OK) {
		size_t c = k ? (size_t)sz[i++ % k] + 1 : n;

		if (c > n - off)
			c = n - off;
		srv_feed(pp, s + off, c);
		off += c;
	}
}

/* What the client has written so far, appended to out. */
static void cli_take(pair *pp, buf *out)
{
	static uint8_t tmp[1 << 16];
	int r;

	while ((r = BIO_read(pp->net, tmp, sizeof(tmp))) > 0)
		buf_put(out, tmp, (size_t)r);
}

/* Full handshake; every client flight is recorded in flights (4 slots)
 * when given. The client has read the TLS 1.3 tickets and is still open. */
static void handshake(pair *pp, buf *flights)
{
	pp->flights = flights;
	handshake_ok(pp);
	pp->flights = NULL;
	CHECK(!pp->cli_closed);
}

/* ---- init: context, recorded ClientHellos ----------------------------------- */

/* A full handshake with cc: its client flights go to flights (4 slots),
 * and the session it ends with is returned. */
static SSL_SESSION *full_handshake(SSL_CTX *cc, buf *flights)
{
	pair pp;

	fuzz_pair(&pp, cc, NULL, 1 << 16);
	handshake(&pp, flights);
	fuzz_pair_fini(&pp);
	return take_session();
}

/* The first flight of a client (a ClientHello), resuming sess if given. */
static void record_hello(SSL_CTX *cc, SSL_SESSION *sess, buf *out)
{
	pair pp;

	fuzz_pair(&pp, cc, sess, 1 << 16);
	CHECK(SSL_do_handshake(pp.c) == -1);
	cli_take(&pp, out);
	CHECK(out->n > 5 && out->p[0] == 22);
	fuzz_pair_fini(&pp);
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
static void write_seeds(const char *dir, buf fl13[4], buf fl12[4])
{
	static const uint8_t small[] = { 0, 4, 40, 2 };
	static const uint8_t one[] = { 0 };
	static const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
	static const uint8_t sslv2[] = { 0x80, 0x2e, 1, 0, 2, 0, 0x15, 0, 0, 0, 0x10 };
	static const uint8_t alert[] = { 21, 3, 3, 0, 2, 2, 40 };
	static const uint8_t huge[] = { 22, 3, 1, 0xff, 0xff, 1, 0, 0xff, 0xfb };
	static const uint8_t appdata[] = { 23, 3, 3, 0, 4, 1, 2, 3, 4 };
	static const char hello[] = "{\"op\":\"ping\"}";
	buf big = { 0 };
	buf *h13 = &g_hello[1], *h12 = &g_hello[2];

	write_seed(dir, "ch13", 0, NULL, 0, h13->p, h13->n);
	write_seed(dir, "ch12", 0, NULL, 0, h12->p, h12->n);
	write_seed(dir, "ch13_resume", 0, NULL, 0, g_hello[3].p, g_hello[3].n);
	write_seed(dir, "ch12_resume", 0, NULL, 0, g_hello[4].p, g_hello[4].n);
	write_seed(dir, "ch13_sliced", 0, small, sizeof(small), h13->p, h13->n);
	write_seed(dir, "ch13_bytewise", 0, one, 1, h13->p, h13->n);
	write_seed(dir, "ch13_truncated", 0, NULL, 0, h13->p, h13->n / 2);
	write_seed(dir, "ch12_header_only", 0, NULL, 0, h12->p, 5);
	/* a complete first flight and the client's second flight after it */
	buf_put(&big, h13->p, h13->n);
	buf_put(&big, fl13[1].p, fl13[1].n);
	write_seed(dir, "flights13", 0, NULL, 0, big.p, big.n);
	big.n = 0;
	buf_put(&big, h12->p, h12->n);
	buf_put(&big, fl12[1].p, fl12[1].n);
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
		buf_put(&big, (const uint8_t *)&"abcdefghijklmnopqrstuvwxyz"[i % 26], 1);
	write_seed(dir, "data13_big_cap1k", 5 | 3 << 3, NULL, 0, big.p, big.n);
	write_seed(dir, "data12_big_cap1_close", 5 | 0 << 3 | 1 << 6 | 1 << 7, NULL, 0, big.p,
		   2000);
	buf_fini(&big);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char *path, err[256];
	uint8_t key[80];
	ms_tls_opts o = { 0 };
	buf fl13[4] = { 0 }, fl12[4] = { 0 };
	SSL_CTX *c13, *c12;
	SSL_SESSION *s13, *s12;
	const char *seeds = getenv("MS_FUZZ_TLS_SEEDS");

	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)(i * 7 + 1);
	path = tmpfile_with(key, sizeof(key));
	o.ticket_key_file = path;
	if (ms_tls_ctx_create(&g_ctx, &o, NULL, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_tls: %s\n", err);
		abort();
	}
	unlink(path);
	free(path);

	g_cli13 = cli_ctx_nocache(TLS1_3_VERSION);
	g_cli12 = cli_ctx_nocache(TLS1_2_VERSION);
	c13 = cli_ctx(TLS1_3_VERSION);
	c12 = cli_ctx(TLS1_2_VERSION);
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
		buf_fini(&fl13[i]);
		buf_fini(&fl12[i]);
	}
	return 0;
}

/* ---- one input -------------------------------------------------------------- */

/* Mode 5: handshake, then the client sends s[0..n) as application data. */
static void data_mode(pair *pp, bool close, size_t wsz, const uint8_t *sz, size_t k,
		      const uint8_t *s, size_t n)
{
	buf ct = { 0 };

	if (n > MAX_DATA)
		n = MAX_DATA;
	handshake(pp, NULL);
	CHECK(pp->sp.n == 0);
	for (size_t off = 0; off < n;) {
		size_t w = wsz && wsz < n - off ? wsz : n - off;

		cli_write(pp, s + off, w);
		off += w;
	}
	if (close)
		CHECK(SSL_shutdown(pp->c) == 0);
	cli_take(pp, &ct);
	feed_sliced(pp, ct.p, ct.n, sz, k);
	buf_fini(&ct);
	CHECK(pp->srv_rc == (close ? MS_TLS_CLOSED : MS_TLS_OK));
	CHECK(pp->sp.n == n && (!n || !memcmp(pp->sp.p, s, n)));
	if (close)
		return;
	if (n) {
		/* and back: the client decrypts exactly what the engine sealed */
		srv_write(pp, s, n);
		pump(pp);
		CHECK(!pp->cli_err && !pp->cli_closed);
		CHECK(pp->cp.n == n && !memcmp(pp->cp.p, s, n));
	}
	ms_tls_shutdown(pp->s, &pp->sink);
	CHECK(pp->s2c.n > 0);
	pump(pp);
	CHECK(!pp->cli_err && pp->cli_closed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t caps[8] = { 1, 5, 64, 1000, 4096, 16383, 16384 + 1024, 1 << 16 };
	pair pp;
	size_t k, mode, cap;
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
	cap = caps[data[0] >> 3 & 7];

	if (mode == 5) {
		static const size_t wsizes[16] = { 0,	 1,	 7,	 100,  1000,  4096,
						   16383, 16384, 16385, 20000, 32768, 1,
						   2,	 3,	 5,	 13 };

		fuzz_pair(&pp, data[0] & 0x40 ? g_cli12 : g_cli13, NULL, cap);
		data_mode(&pp, data[0] & 0x80, wsizes[data[1] >> 4], sz, k, s, n);
	} else {
		fuzz_pair(&pp, NULL, NULL, cap);
		if (mode >= 1 && mode <= 4)
			srv_feed(&pp, g_hello[mode].p, g_hello[mode].n);
		/* a real ClientHello alone is answered, never refused */
		CHECK(pp.srv_rc == MS_TLS_OK);
		CHECK(mode == 0 || mode > 4 || pp.s2c.n > 0);
		feed_sliced(&pp, s, n, sz, k);
		if (!ms_tls_handshake_done(pp.s)) {
			CHECK(pp.sp.n == 0);
			CHECK(ms_tls_write(pp.s, (const uint8_t *)"x", 1, &pp.sink) == MS_TLS_ERROR);
		} else if (pp.srv_rc == MS_TLS_OK) {
			ms_tls_shutdown(pp.s, &pp.sink);
		}
	}
	fuzz_pair_fini(&pp);
	return 0;
}
