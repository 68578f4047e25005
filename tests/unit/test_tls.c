/*
 * Unit tests for tls/tls.h: the engine against an in-process BoringSSL
 * client. The client talks through a BIO pair whose network end the test
 * shuttles by hand: client ciphertext goes into ms_tls_read (whole, split at
 * a chosen byte, or byte by byte), the engine's sink output goes back into
 * the pair. Covers TLS 1.3 and 1.2 handshakes, the cipher and group policy,
 * echo both ways, every split point of a handshake plus a message, large
 * messages and the *more path, ticket resumption (same context, two
 * contexts sharing a key file, across rotations), refused renegotiation,
 * garbage ClientHellos, close_notify, ALPN, the self-signed certificate and
 * PEM loading, several threads sharing one context while its keys rotate,
 * and the memory an idle connection holds (skipped under sanitizers, whose
 * allocator mallinfo2 cannot see).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <openssl/aead.h>
#include <openssl/bio.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tls/tls.h"

#define TH_CHECK(c) assert_true(c)
#include "../tls_harness.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif

/* ---- harness (the pair, pump, client contexts: tests/tls_harness.h) ---------- */

static ms_tls_ctx *g_srv; /* shared self-signed server context */

/* Full handshake + ticket with cctx against sctx; returns the session. */
static SSL_SESSION *get_session(ms_tls_ctx *sctx, SSL_CTX *cctx)
{
	pair pp;

	SSL_SESSION_free(g_sess);
	g_sess = NULL;
	pair_init(&pp, sctx, cctx, NULL);
	handshake_ok(&pp);
	assert_false(ms_tls_session_reused(pp.s));
	pair_fini(&pp);
	return take_session();
}

/* Connect with sess; report whether both sides resumed (they must agree). */
static bool resumes(ms_tls_ctx *sctx, SSL_CTX *cctx, SSL_SESSION *sess)
{
	pair pp;
	bool r;

	pair_init(&pp, sctx, cctx, sess);
	handshake_ok(&pp);
	r = ms_tls_session_reused(pp.s);
	assert_int_equal(r, SSL_session_reused(pp.c));
	pair_fini(&pp);
	return r;
}

static void rewrite(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, n, f), n);
	fclose(f);
}

/* ---- tests ----------------------------------------------------------------- */

static void echo_check(pair *pp)
{
	static const char ping[] = "hello from the client";
	static const char pong[] = "and hello from the server";

	cli_write(pp, ping, sizeof(ping));
	pump(pp);
	assert_int_equal(pp->sp.n, sizeof(ping));
	assert_memory_equal(pp->sp.p, ping, sizeof(ping));
	srv_write(pp, pong, sizeof(pong));
	pump(pp);
	assert_int_equal(pp->cp.n, sizeof(pong));
	assert_memory_equal(pp->cp.p, pong, sizeof(pong));
}

static void test_tls13(void **state)
{
	SSL_CTX *cc = cli_ctx(TLS1_3_VERSION);
	pair pp;
	const uint8_t *alpn;
	unsigned alen;

	pair_init(&pp, g_srv, cc, NULL);
	assert_false(ms_tls_handshake_done(pp.s));
	handshake_ok(&pp);
	assert_int_equal(SSL_version(pp.c), TLS1_3_VERSION);
	assert_int_equal(SSL_get_curve_id(pp.c), SSL_CURVE_X25519);
	assert_false(ms_tls_session_reused(pp.s));
	SSL_get0_alpn_selected(pp.c, &alpn, &alen);
	assert_int_equal(alen, 8);
	assert_memory_equal(alpn, "http/1.1", 8);
	echo_check(&pp);
	pair_fini(&pp);
	SSL_CTX_free(cc);
}

static void test_tls12(void **state)
{
	SSL_CTX *cc = cli_ctx(TLS1_2_VERSION);
	const SSL_CIPHER *ci;
	pair pp;

	pair_init(&pp, g_srv, cc, NULL);
	handshake_ok(&pp);
	assert_int_equal(SSL_version(pp.c), TLS1_2_VERSION);
	assert_int_equal(SSL_get_curve_id(pp.c), SSL_CURVE_X25519);
	ci = SSL_get_current_cipher(pp.c);
	assert_true(SSL_CIPHER_is_aead(ci));
	assert_int_equal(SSL_CIPHER_get_kx_nid(ci), NID_kx_ecdhe);
	echo_check(&pp);
	pair_fini(&pp);
	SSL_CTX_free(cc);
}

/* TLS 1.2 policy: ChaCha20 and P-256 accepted; CBC, RSA kx, P-384 not. */
static void test_policy(void **state)
{
	/* (TLS 1.2 also needs the certificate's curve, P-256, offered.) */
	static const struct {
		const char *ciphers, *curves;
		bool ok;
	} cases[] = {
		{"ECDHE-ECDSA-CHACHA20-POLY1305", "X25519:P-256", true},
		{"ECDHE-ECDSA-AES256-GCM-SHA384", "X25519:P-256", true},
		{"ECDHE-ECDSA-AES128-GCM-SHA256", "P-256", true},
		{"ECDHE-ECDSA-AES128-SHA", "X25519:P-256", false},
		{"AES128-GCM-SHA256", "X25519:P-256", false},
		{"ECDHE-ECDSA-AES128-GCM-SHA256", "P-384", false},
	};
	SSL_CTX *cc = cli_ctx(TLS1_2_VERSION);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		pair pp;

		pair_init(&pp, g_srv, cc, NULL);
		assert_true(SSL_set_strict_cipher_list(pp.c, cases[i].ciphers));
		assert_true(SSL_set1_curves_list(pp.c, cases[i].curves));
		pump(&pp);
		if (cases[i].ok) {
			assert_int_equal(pp.srv_rc, MS_TLS_OK);
			assert_true(ms_tls_handshake_done(pp.s));
			assert_int_equal(SSL_get_curve_id(pp.c), i == 2 ? SSL_CURVE_SECP256R1
									: SSL_CURVE_X25519);
			echo_check(&pp);
		} else {
			assert_int_equal(pp.srv_rc, MS_TLS_ERROR);
			assert_int_not_equal(pp.cli_err, 0); /* got the alert */
		}
		pair_fini(&pp);
	}
	SSL_CTX_free(cc);
}

/* Handshake plus a message, every client flight fed in two pieces split at
 * byte i, for every i; then the whole exchange fed one byte at a time. */
static void split_run(SSL_CTX *cc, size_t split, size_t step, size_t *max_flight)
{
	static uint8_t msg[300];
	static const char reply[] = "reply";
	pair pp;

	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)(i * 7 + 1);
	pair_init(&pp, g_srv, cc, NULL);
	pp.split = split;
	pp.step = step;
	pp.early = msg;
	pp.early_n = sizeof(msg);
	handshake_ok(&pp);
	assert_int_equal(pp.sp.n, sizeof(msg));
	assert_memory_equal(pp.sp.p, msg, sizeof(msg));
	srv_write(&pp, reply, sizeof(reply));
	pump(&pp);
	assert_int_equal(pp.cp.n, sizeof(reply));
	if (max_flight)
		*max_flight = pp.max_flight;
	pair_fini(&pp);
}

static void test_split_every_byte(void **state)
{
	uint16_t vers[] = {TLS1_3_VERSION, TLS1_2_VERSION};

	for (size_t v = 0; v < 2; v++) {
		SSL_CTX *cc = cli_ctx(vers[v]);
		size_t maxf = 0;

		split_run(cc, 0, 0, &maxf);
		assert_true(maxf > 100);
		for (size_t i = 1; i < maxf; i++)
			split_run(cc, i, 0, NULL);
		split_run(cc, 0, 1, NULL);
		SSL_CTX_free(cc);
	}
}

/* Count TLS records in a ciphertext stream; check each plaintext <= 16 KiB. */
static size_t count_records(const uint8_t *p, size_t n)
{
	size_t recs = 0;

	while (n) {
		size_t len;

		assert_true(n >= 5);
		len = (size_t)p[3] << 8 | p[4];
		assert_true(len <= 16384 + 256);
		assert_true(n >= 5 + len);
		p += 5 + len;
		n -= 5 + len;
		recs++;
	}
	return recs;
}

static void test_large(void **state)
{
	enum { BIG = 100 * 1024 + 17 };
	uint16_t vers[] = {TLS1_3_VERSION, TLS1_2_VERSION};
	uint8_t *big = malloc(BIG);

	assert_non_null(big);
	RAND_bytes(big, BIG);
	for (size_t v = 0; v < 2; v++) {
		SSL_CTX *cc = cli_ctx(vers[v]);
		pair pp;

		pair_init(&pp, g_srv, cc, NULL);
		handshake_ok(&pp);
		/* client -> server in one slice, out smaller than one record */
		pp.cap = 1000;
		pp.mores = 0;
		cli_write(&pp, big, BIG);
		pump(&pp);
		assert_int_equal(pp.srv_rc, MS_TLS_OK);
		assert_int_equal(pp.sp.n, BIG);
		assert_memory_equal(pp.sp.p, big, BIG);
		assert_true(pp.mores >= BIG / 1000 - 1);
		/* server -> client: one record per 16 KiB */
		srv_write(&pp, big, BIG);
		assert_int_equal(count_records(pp.s2c.p, pp.s2c.n), (BIG + 16383) / 16384);
		pump(&pp);
		assert_int_equal(pp.cp.n, BIG);
		assert_memory_equal(pp.cp.p, big, BIG);
		pair_fini(&pp);
		SSL_CTX_free(cc);
	}
	free(big);
}

static void test_resume(void **state)
{
	uint16_t vers[] = {TLS1_3_VERSION, TLS1_2_VERSION};

	for (size_t v = 0; v < 2; v++) {
		SSL_CTX *cc = cli_ctx(vers[v]);
		SSL_SESSION *s = get_session(g_srv, cc);
		size_t full;
		pair pp;

		g_nsess = 0;
		pair_init(&pp, g_srv, cc, NULL);
		handshake_ok(&pp);
		full = pp.s2c.total;
		echo_check(&pp); /* the client reads: TLS 1.3 tickets arrive */
		/* One ticket per handshake (SSL_CTX_set_num_tickets(1)), not
		 * BoringSSL's default two. */
		assert_int_equal(g_nsess, 1);
		pair_fini(&pp);
		SSL_SESSION_free(g_sess);
		g_sess = NULL;

		pair_init(&pp, g_srv, cc, s);
		handshake_ok(&pp);
		assert_true(ms_tls_session_reused(pp.s));
		assert_true(SSL_session_reused(pp.c));
		/* no Certificate / CertificateVerify: a much shorter flight */
		assert_true(pp.s2c.total + 300 < full);
		echo_check(&pp);
		pair_fini(&pp);
		SSL_SESSION_free(s);
		SSL_CTX_free(cc);
	}
}

static void test_resume_key_file(void **state)
{
	uint8_t keys[160];
	char *path;
	ms_tls_ctx *a, *b, *other;
	ms_tls_opts o = {.ticket_rotate_s = 3600};
	char err[256];
	SSL_CTX *cc = cli_ctx(TLS1_3_VERSION);
	SSL_CTX *cc12 = cli_ctx(TLS1_2_VERSION);
	SSL_SESSION *s, *s12;

	RAND_bytes(keys, sizeof(keys));
	path = tmpfile_with(keys, sizeof(keys));
	o.ticket_key_file = path;
	assert_int_equal(ms_tls_ctx_create(&a, &o, NULL, err, sizeof(err)), 0);
	assert_int_equal(ms_tls_ctx_create(&b, &o, NULL, err, sizeof(err)), 0);
	assert_int_equal(ms_tls_ctx_create(&other, NULL, NULL, err, sizeof(err)), 0);

	s = get_session(a, cc);
	s12 = get_session(a, cc12);
	assert_true(resumes(b, cc, s));
	assert_true(resumes(b, cc12, s12));
	assert_false(resumes(other, cc, s));
	assert_false(resumes(other, cc12, s12));
	SSL_SESSION_free(s);
	SSL_SESSION_free(s12);

	/* A ticket sealed with the second (older) key still opens. */
	{
		uint8_t swapped[160];
		ms_tls_ctx *old;

		memcpy(swapped, keys + 80, 80);
		memcpy(swapped + 80, keys, 80);
		rewrite(path, swapped, sizeof(swapped));
		assert_int_equal(ms_tls_ctx_create(&old, &o, NULL, err, sizeof(err)), 0);
		s = get_session(old, cc12);
		assert_true(resumes(a, cc12, s));
		SSL_SESSION_free(s);
		ms_tls_ctx_destroy(old);
	}

	/* Bad files. */
	ms_tls_ctx_destroy(other);
	rewrite(path, keys, 79);
	assert_int_equal(ms_tls_ctx_create(&other, &o, NULL, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "80"));
	ms_tls_ctx_destroy(NULL);
	o.ticket_key_file = "/nonexistent/ms_tls_keys";
	assert_int_equal(ms_tls_ctx_create(&other, &o, NULL, err, sizeof(err)), -ENOENT);

	ms_tls_ctx_destroy(a);
	ms_tls_ctx_destroy(b);
	unlink(path);
	free(path);
	SSL_CTX_free(cc);
	SSL_CTX_free(cc12);
}

static void test_rotation(void **state)
{
	ms_tls_opts o = {.ticket_rotate_s = 100};
	uint64_t now = (uint64_t)time(NULL);
	char err[256];
	ms_tls_ctx *ctx;
	uint16_t vers[] = {TLS1_3_VERSION, TLS1_2_VERSION};

	for (size_t v = 0; v < 2; v++) {
		SSL_CTX *cc = cli_ctx(vers[v]);
		SSL_SESSION *s0, *s1;

		assert_int_equal(ms_tls_ctx_create(&ctx, &o, NULL, err, sizeof(err)), 0);
		s0 = get_session(ctx, cc);
		ms_tls_ctx_tick(ctx, now + 50); /* not due */
		assert_true(resumes(ctx, cc, s0));
		ms_tls_ctx_tick(ctx, now + 101); /* rotate: s0's key is now the previous */
		assert_true(resumes(ctx, cc, s0));
		s1 = get_session(ctx, cc);
		ms_tls_ctx_tick(ctx, now + 150); /* not due again yet */
		ms_tls_ctx_tick(ctx, now + 202); /* rotate: s0's key is gone */
		assert_false(resumes(ctx, cc, s0));
		assert_true(resumes(ctx, cc, s1));
		ms_tls_ctx_tick(ctx, now + 303);
		assert_false(resumes(ctx, cc, s1));
		SSL_SESSION_free(s0);
		SSL_SESSION_free(s1);
		ms_tls_ctx_destroy(ctx);
		SSL_CTX_free(cc);
	}

	/* With a key file, a tick re-reads it; the outgoing sealing key stays. */
	{
		uint8_t k1[80], k2[80], k3[80];
		char *path;
		SSL_CTX *cc = cli_ctx(TLS1_3_VERSION);
		SSL_SESSION *s1, *s2;

		RAND_bytes(k1, 80);
		RAND_bytes(k2, 80);
		RAND_bytes(k3, 80);
		path = tmpfile_with(k1, 80);
		o.ticket_key_file = path;
		assert_int_equal(ms_tls_ctx_create(&ctx, &o, NULL, err, sizeof(err)), 0);
		s1 = get_session(ctx, cc);
		rewrite(path, k2, 80);
		ms_tls_ctx_tick(ctx, now + 101);
		assert_true(resumes(ctx, cc, s1)); /* k1 kept as previous */
		s2 = get_session(ctx, cc);
		rewrite(path, k3, 80);
		ms_tls_ctx_tick(ctx, now + 202);
		assert_false(resumes(ctx, cc, s1));
		assert_true(resumes(ctx, cc, s2));
		/* an unreadable file keeps the current keys */
		unlink(path);
		ms_tls_ctx_tick(ctx, now + 303);
		assert_true(resumes(ctx, cc, s2));
		SSL_SESSION_free(s1);
		SSL_SESSION_free(s2);
		ms_tls_ctx_destroy(ctx);
		free(path);
		SSL_CTX_free(cc);
	}
}

/* The lifetime hint a ticket carries is no longer than the ticket stays
 * openable: a key seals for one rotation period and opens for one more, so
 * a ticket sealed at the end of its key's period has one period left. */
static void test_ticket_lifetime_hint(void **state)
{
	uint32_t periods[] = {43200, 100};
	uint16_t vers[] = {TLS1_3_VERSION, TLS1_2_VERSION};
	char err[256];

	for (size_t p = 0; p < 2; p++) {
		ms_tls_opts o = {.ticket_rotate_s = periods[p]};
		ms_tls_ctx *ctx;

		assert_int_equal(ms_tls_ctx_create(&ctx, &o, NULL, err, sizeof(err)), 0);
		for (size_t v = 0; v < 2; v++) {
			SSL_CTX *cc = cli_ctx(vers[v]);
			SSL_SESSION *s = get_session(ctx, cc);
			/* TLS 1.3's ticket_lifetime caps the client's session
			 * timeout (BoringSSL keeps no separate hint there); TLS
			 * 1.2's ticket_lifetime_hint is kept as the hint. */
			uint32_t life = vers[v] == TLS1_3_VERSION
						? (uint32_t)SSL_SESSION_get_timeout(s)
						: SSL_SESSION_get_ticket_lifetime_hint(s);

			assert_true(life > 0);
			assert_true(life <= periods[p]);
			SSL_SESSION_free(s);
			SSL_CTX_free(cc);
		}
		ms_tls_ctx_destroy(ctx);
	}
}

/* Encrypt a handshake record as the client would (TLS 1.2, AES-128-GCM):
 * BoringSSL has no API to start a renegotiation from the client side, so
 * the test forges the renegotiating ClientHello with the client's keys. */
static size_t forge_handshake_record(SSL *c, const uint8_t *msg, size_t n, uint8_t *out)
{
	uint8_t kb[64], nonce[12], ad[13];
	uint64_t seq = SSL_get_write_sequence(c);
	EVP_AEAD_CTX a;
	size_t olen;

	assert_int_equal(SSL_get_key_block_len(c), 40); /* 2 x (16 key + 4 iv) */
	assert_true(SSL_generate_key_block(c, kb, 40));
	memcpy(nonce, kb + 32, 4); /* client write IV (salt) */
	for (int i = 0; i < 8; i++)
		nonce[4 + i] = ad[i] = (uint8_t)(seq >> (56 - 8 * i));
	ad[8] = 22;
	ad[9] = 3;
	ad[10] = 3;
	ad[11] = (uint8_t)(n >> 8);
	ad[12] = (uint8_t)n;
	assert_true(EVP_AEAD_CTX_init(&a, EVP_aead_aes_128_gcm(), kb, 16, 16, NULL));
	assert_true(EVP_AEAD_CTX_seal(&a, out + 13, &olen, n + 16, nonce, 12, msg, n, ad, 13));
	EVP_AEAD_CTX_cleanup(&a);
	out[0] = 22;
	out[1] = 3;
	out[2] = 3;
	out[3] = (uint8_t)((8 + olen) >> 8);
	out[4] = (uint8_t)(8 + olen);
	memcpy(out + 5, nonce + 4, 8);
	return 13 + olen;
}

static void test_renegotiation(void **state)
{
	/* ClientHello header + a minimal body prefix: the server must refuse
	 * on the message type alone. */
	static const uint8_t hello[] = {1, 0, 0, 6, 3, 3, 0, 0, 0, 0};
	SSL_CTX *cc = cli_ctx(TLS1_2_VERSION);
	uint8_t rec[128];
	size_t n;
	pair pp;

	pair_init(&pp, g_srv, cc, NULL);
	assert_true(SSL_set_strict_cipher_list(pp.c, "ECDHE-ECDSA-AES128-GCM-SHA256"));
	handshake_ok(&pp);
	echo_check(&pp);
	/* The client cannot renegotiate unprompted. */
	assert_int_equal(SSL_renegotiate(pp.c), 0);
	ERR_clear_error();

	/* The forged record itself is valid: a control message goes through. */
	n = forge_handshake_record(pp.c, hello, sizeof(hello), rec);
	srv_feed(&pp, rec, n);
	assert_int_equal(pp.srv_rc, MS_TLS_ERROR);
	/* an encrypted fatal alert (record type 21) went to the sink */
	assert_true(pp.s2c.n >= 5);
	assert_int_equal(pp.s2c.p[0], 21);
	pump(&pp);
	assert_int_not_equal(pp.cli_err, 0);
	assert_int_equal(ERR_GET_REASON(ERR_peek_error()), SSL_R_TLSV1_ALERT_NO_RENEGOTIATION);
	ERR_clear_error();
	pair_fini(&pp);

	/* TLS 1.3 has no renegotiation at all. */
	SSL_CTX_free(cc);
	cc = cli_ctx(TLS1_3_VERSION);
	pair_init(&pp, g_srv, cc, NULL);
	handshake_ok(&pp);
	assert_int_equal(SSL_renegotiate(pp.c), 0);
	ERR_clear_error();
	echo_check(&pp);
	pair_fini(&pp);
	SSL_CTX_free(cc);
}

static int feed_raw(const uint8_t *p, size_t n, buf *out)
{
	ms_tls_sink sk = {sink_fn, out};
	ms_tls *t = ms_tls_new(g_srv);
	uint8_t o[256];
	size_t got;
	bool more;
	int rc;

	assert_non_null(t);
	rc = ms_tls_read(t, p, n, o, sizeof(o), &got, &more, &sk);
	assert_int_equal(got, 0);
	assert_false(more);
	if (rc == MS_TLS_ERROR) /* dead for good */
		assert_int_equal(ms_tls_read(t, p, n, o, sizeof(o), &got, &more, &sk),
				 MS_TLS_ERROR);
	assert_false(ms_tls_handshake_done(t));
	ms_tls_free(t);
	return rc;
}

static void test_garbage(void **state)
{
	static const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
	static const uint8_t badhello[] = {22, 3, 1, 0, 8, 1, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef};
	static const uint8_t badtype[] = {23, 3, 1, 0, 4, 1, 2, 3, 4};
	static const uint8_t sslv2[] = {0x80, 0x2e, 1, 0, 2, 0, 0x15, 0, 0, 0, 0x10};
	buf out = {0};

	assert_int_equal(feed_raw((const uint8_t *)http, sizeof(http) - 1, &out), MS_TLS_ERROR);
	buf_fini(&out);

	/* A malformed ClientHello inside a valid record: fatal alert. */
	assert_int_equal(feed_raw(badhello, sizeof(badhello), &out), MS_TLS_ERROR);
	assert_int_equal(out.n, 7);
	assert_int_equal(out.p[0], 21); /* alert record */
	assert_int_equal(out.p[5], 2);	/* fatal */
	buf_fini(&out);

	assert_int_equal(feed_raw(badtype, sizeof(badtype), &out), MS_TLS_ERROR);
	assert_true(out.n == 0 || out.p[0] == 21);
	buf_fini(&out);
	assert_int_equal(feed_raw(sslv2, sizeof(sslv2), &out), MS_TLS_ERROR);
	buf_fini(&out);

	/* Random junk never crashes; it either waits for more or fails. */
	for (int i = 0; i < 2000; i++) {
		uint8_t junk[64];
		int rc;

		RAND_bytes(junk, sizeof(junk));
		if (i & 1) { /* plausible record header */
			junk[0] = 22;
			junk[1] = 3;
			junk[2] = 1;
		}
		rc = feed_raw(junk, 1 + i % sizeof(junk), &out);
		assert_true(rc == MS_TLS_OK || rc == MS_TLS_ERROR);
		buf_fini(&out);
	}
}

static void test_close_notify(void **state)
{
	SSL_CTX *cc = cli_ctx(TLS1_3_VERSION);
	pair pp;

	/* client: data, then close_notify, in one slice */
	pair_init(&pp, g_srv, cc, NULL);
	handshake_ok(&pp);
	cli_write(&pp, "bye", 3);
	assert_true(SSL_shutdown(pp.c) >= 0);
	pump(&pp);
	assert_int_equal(pp.srv_rc, MS_TLS_CLOSED);
	assert_int_equal(pp.sp.n, 3);
	assert_memory_equal(pp.sp.p, "bye", 3);
	pair_fini(&pp);

	/* server: close_notify reaches the client */
	pair_init(&pp, g_srv, cc, NULL);
	handshake_ok(&pp);
	srv_write(&pp, "last", 4);
	ms_tls_shutdown(pp.s, &pp.sink);
	pump(&pp);
	assert_int_equal(pp.cp.n, 4);
	assert_true(pp.cli_closed);
	assert_int_equal(pp.cli_err, 0);
	pair_fini(&pp);
	SSL_CTX_free(cc);
}

static void test_alpn(void **state)
{
	static const struct {
		const char *protos;
		unsigned len;
		bool want;
	} cases[] = {
		{"\x08http/1.1", 9, true},
		{"\x02h2\x08http/1.1", 12, true},
		{"\x02h2", 3, false},
		{NULL, 0, false},
	};
	SSL_CTX *cc = cli_ctx(TLS1_3_VERSION);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const uint8_t *sel;
		unsigned slen;
		pair pp;

		pair_init(&pp, g_srv, cc, NULL);
		assert_int_equal(SSL_set_alpn_protos(pp.c, (const uint8_t *)cases[i].protos,
						     cases[i].len),
				 0);
		handshake_ok(&pp);
		SSL_get0_alpn_selected(pp.c, &sel, &slen);
		if (cases[i].want) {
			assert_int_equal(slen, 8);
			assert_memory_equal(sel, "http/1.1", 8);
		} else {
			assert_int_equal(slen, 0);
		}
		pair_fini(&pp);
	}
	SSL_CTX_free(cc);
}

static void fp_of(X509 *x, char *fp)
{
	static const char hex[] = "0123456789ABCDEF";
	uint8_t md[32];
	unsigned len;

	assert_true(X509_digest(x, EVP_sha256(), md, &len));
	assert_int_equal(len, 32);
	for (unsigned i = 0; i < 32; i++) {
		fp[3 * i] = hex[md[i] >> 4];
		fp[3 * i + 1] = hex[md[i] & 15];
		fp[3 * i + 2] = i < 31 ? ':' : '\0';
	}
}

/* Connect verifying against anchor with host; return client's verify result
 * (-1 when the handshake did not complete for another reason). */
static long verify_with(ms_tls_ctx *sctx, X509 *anchor, const char *host)
{
	SSL_CTX *cc = cli_ctx(TLS1_3_VERSION);
	long res;
	pair pp;

	assert_true(X509_STORE_add_cert(SSL_CTX_get_cert_store(cc), anchor));
	SSL_CTX_set_verify(cc, SSL_VERIFY_PEER, NULL);
	pair_init(&pp, sctx, cc, NULL);
	assert_true(SSL_set1_host(pp.c, host));
	pump(&pp);
	res = SSL_get_verify_result(pp.c);
	if (res == X509_V_OK) {
		assert_int_equal(pp.cli_err, 0);
		assert_true(ms_tls_handshake_done(pp.s));
	} else {
		assert_int_not_equal(pp.cli_err, 0);
		assert_int_equal(pp.srv_rc, MS_TLS_ERROR); /* client's alert */
	}
	ERR_clear_error();
	pair_fini(&pp);
	SSL_CTX_free(cc);
	return res;
}

static void test_selfsigned(void **state)
{
	SSL_CTX *cc = cli_ctx(TLS1_3_VERSION);
	char fp[96], fp2[96], want[96], err[256];
	ms_tls_ctx *ctx, *other;
	X509 *x, *x2;
	int days, secs;
	pair pp;

	assert_int_equal(ms_tls_ctx_create(&ctx, NULL, fp, err, sizeof(err)), 0);
	assert_int_equal(strlen(fp), 95);
	for (int i = 0; i < 95; i++)
		assert_true(i % 3 == 2 ? fp[i] == ':' : !!strchr("0123456789ABCDEF", fp[i]));

	pair_init(&pp, ctx, cc, NULL);
	handshake_ok(&pp);
	x = SSL_get_peer_certificate(pp.c);
	assert_non_null(x);
	pair_fini(&pp);
	fp_of(x, want);
	assert_string_equal(fp, want);
	assert_int_equal(X509_check_host(x, "localhost", 9, 0, NULL), 1);
	assert_int_equal(X509_check_host(x, "example.com", 11, 0, NULL), 0);
	assert_int_equal(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
	assert_int_equal(X509_check_ip_asc(x, "::1", 0), 1);
	assert_int_equal(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
	assert_int_equal(X509_get_version(x), X509_VERSION_3);
	assert_true(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)));
	assert_int_equal(days, 365);
	assert_int_equal(secs, 3600);
	assert_true(X509_cmp_current_time(X509_get0_notBefore(x)) < 0);

	assert_int_equal(verify_with(ctx, x, "localhost"), X509_V_OK);
	assert_int_equal(verify_with(ctx, x, "example.com"), X509_V_ERR_HOSTNAME_MISMATCH);
	/* another process's self-signed certificate is a different one */
	assert_int_equal(ms_tls_ctx_create(&other, NULL, fp2, err, sizeof(err)), 0);
	assert_string_not_equal(fp, fp2);
	pair_init(&pp, other, cc, NULL);
	handshake_ok(&pp);
	x2 = SSL_get_peer_certificate(pp.c);
	pair_fini(&pp);
	assert_int_not_equal(X509_cmp(x, x2), 0);
	assert_int_not_equal(verify_with(other, x, "localhost"), X509_V_OK);

	X509_free(x);
	X509_free(x2);
	ms_tls_ctx_destroy(ctx);
	ms_tls_ctx_destroy(other);
	SSL_CTX_free(cc);
}

/* A CA-less self-signed pair written by the test, for the PEM path. */
static void write_cert_key(const char *cpath, const char *kpath, EVP_PKEY **pk_out)
{
	EVP_PKEY *pk = EVP_PKEY_new();
	EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
	X509 *x = X509_new();
	FILE *f;

	assert_true(EC_KEY_generate_key(ec));
	assert_true(EVP_PKEY_assign_EC_KEY(pk, ec));
	assert_true(X509_set_version(x, X509_VERSION_3));
	assert_true(ASN1_INTEGER_set(X509_get_serialNumber(x), 42));
	assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), -60));
	assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
	assert_true(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
					       (const uint8_t *)"test", -1, -1, 0));
	assert_true(X509_set_issuer_name(x, X509_get_subject_name(x)));
	assert_true(X509_set_pubkey(x, pk));
	assert_true(X509_sign(x, pk, EVP_sha256()));
	f = fopen(cpath, "w");
	assert_non_null(f);
	assert_true(PEM_write_X509(f, x));
	fclose(f);
	f = fopen(kpath, "w");
	assert_non_null(f);
	assert_true(PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL));
	fclose(f);
	X509_free(x);
	if (pk_out)
		*pk_out = pk;
	else
		EVP_PKEY_free(pk);
}

static void test_cert_files(void **state)
{
	char *c1 = tmpfile_with(NULL, 0), *k1 = tmpfile_with(NULL, 0);
	char *c2 = tmpfile_with(NULL, 0), *k2 = tmpfile_with(NULL, 0);
	SSL_CTX *cc = cli_ctx(TLS1_2_VERSION);
	ms_tls_opts o = {0};
	char fp[96], want[96], err[256];
	ms_tls_ctx *ctx;
	X509 *x;
	pair pp;

	write_cert_key(c1, k1, NULL);
	write_cert_key(c2, k2, NULL);
	o.cert_file = c1;
	o.key_file = k1;
	assert_int_equal(ms_tls_ctx_create(&ctx, &o, fp, err, sizeof(err)), 0);
	pair_init(&pp, ctx, cc, NULL);
	handshake_ok(&pp);
	x = SSL_get_peer_certificate(pp.c);
	fp_of(x, want);
	assert_string_equal(fp, want);
	X509_free(x);
	echo_check(&pp);
	pair_fini(&pp);
	ms_tls_ctx_destroy(ctx);

	o.key_file = k2; /* mismatched key */
	assert_int_equal(ms_tls_ctx_create(&ctx, &o, NULL, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "does not match"));
	o.key_file = c1; /* not a key */
	assert_int_equal(ms_tls_ctx_create(&ctx, &o, NULL, err, sizeof(err)), -EINVAL);
	o.key_file = "/nonexistent/key.pem";
	assert_int_equal(ms_tls_ctx_create(&ctx, &o, NULL, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/key.pem"));
	o.key_file = NULL; /* cert without key */
	assert_int_equal(ms_tls_ctx_create(&ctx, &o, NULL, err, sizeof(err)), -EINVAL);

	unlink(c1);
	unlink(k1);
	unlink(c2);
	unlink(k2);
	free(c1);
	free(k1);
	free(c2);
	free(k2);
	SSL_CTX_free(cc);
}

static void test_misuse(void **state)
{
	SSL_CTX *cc = cli_ctx(TLS1_3_VERSION);
	uint8_t o[16], *big = malloc(6000);
	size_t got;
	bool more;
	pair pp;

	pair_init(&pp, g_srv, cc, NULL);
	assert_int_equal(ms_tls_write(pp.s, (const uint8_t *)"x", 1, &pp.sink), MS_TLS_ERROR);
	handshake_ok(&pp);
	assert_int_equal(ms_tls_write(pp.s, NULL, 0, &pp.sink), MS_TLS_OK);
	assert_int_equal(pp.s2c.n, 0);
	memset(big, 'a', 5000);
	cli_write(&pp, big, 5000);
	got = BIO_ctrl_pending(pp.net);
	assert_int_equal(BIO_read(pp.net, big, (int)got), (int)got);
	assert_int_equal(ms_tls_read(pp.s, big, got, o, sizeof(o), &got, &more, &pp.sink),
			 MS_TLS_OK);
	assert_true(more);
	assert_int_equal(got, sizeof(o));
	/* a new slice while the previous one is pending is refused */
	assert_int_equal(ms_tls_read(pp.s, big, 10, o, sizeof(o), &got, &more, &pp.sink),
			 MS_TLS_ERROR);
	pair_fini(&pp);
	free(big);
	SSL_CTX_free(cc);
}

/* Workers share the context: handshakes and resumptions on several threads
 * while another thread keeps rotating the ticket keys. */
enum { THREADS = 4, PER_THREAD = 40 };

typedef struct worker_arg {
	ms_tls_ctx *ctx;
	int resumed;
} worker_arg;

static void *worker(void *arg)
{
	worker_arg *w = arg;
	SSL_CTX *cc = cli_ctx_nocache(TLS1_2_VERSION);
	SSL_SESSION *sess = NULL;

	for (int i = 0; i < PER_THREAD; i++) {
		pair pp;

		pair_init(&pp, w->ctx, cc, sess);
		handshake_ok(&pp);
		w->resumed += ms_tls_session_reused(pp.s);
		echo_check(&pp);
		SSL_SESSION_free(sess);
		sess = SSL_get1_session(pp.c);
		pair_fini(&pp);
	}
	SSL_SESSION_free(sess);
	SSL_CTX_free(cc);
	return NULL;
}

static void test_threads(void **state)
{
	ms_tls_opts o = {.ticket_rotate_s = 1};
	worker_arg w[THREADS];
	pthread_t th[THREADS];
	uint64_t now = (uint64_t)time(NULL);
	char err[256];
	ms_tls_ctx *ctx;
	int resumed = 0;

	assert_int_equal(ms_tls_ctx_create(&ctx, &o, NULL, err, sizeof(err)), 0);
	for (int i = 0; i < THREADS; i++) {
		w[i] = (worker_arg){.ctx = ctx};
		assert_int_equal(pthread_create(&th[i], NULL, worker, &w[i]), 0);
	}
	for (int i = 0; i < 200; i++) {
		ms_tls_ctx_tick(ctx, now + (uint64_t)i);
		usleep(1000);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		resumed += w[i].resumed;
	}
	assert_true(resumed > 0);
	ms_tls_ctx_destroy(ctx);
}

/* ---- memory ------------------------------------------------------------------ */

#ifndef SANITIZED
static size_t heap_used(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

enum { MEM_N = 1000 };

/* Per-connection bytes the engines hold: handshake N pairs (optionally
 * exchange 16 KiB each way), then free only the engines and divide the
 * heap drop by N. The client side and harness are untouched, so the
 * difference is exactly what the server engines held. */
static double engine_bytes(pair *ps, uint16_t ver, bool exchange, double *drift)
{
	enum { MSG = 16384 };
	static uint8_t msg[MSG + 1024]; /* + the pre-grow below */
	SSL_CTX *cc = cli_ctx_nocache(ver);
	size_t before, held, freed;

	for (int i = 0; i < MEM_N; i++) {
		pair_init_buf(&ps[i], g_srv, cc, NULL, 1 << 15);
		ps[i].discard = true;
		ps[i].cap = MSG;
		buf_put(&ps[i].s2c, msg, MSG + 1024); /* pre-grow */
		ps[i].s2c.n = 0;
		handshake_ok(&ps[i]);
	}
	before = heap_used();
	if (exchange) {
		for (int i = 0; i < MEM_N; i++) {
			cli_write(&ps[i], msg, MSG);
			pump(&ps[i]);
			srv_write(&ps[i], msg, MSG);
			pump(&ps[i]);
		}
	}
	held = heap_used();
	*drift = ((double)held - (double)before) / MEM_N;
	for (int i = 0; i < MEM_N; i++) {
		ms_tls_free(ps[i].s);
		ps[i].s = NULL;
	}
	freed = heap_used();
	for (int i = 0; i < MEM_N; i++)
		pair_fini(&ps[i]);
	SSL_CTX_free(cc);
	return ((double)held - (double)freed) / MEM_N;
}

#endif

static void test_memory(void **state)
{
#ifdef SANITIZED
	skip(); /* the sanitizer's allocator hides mallinfo2 */
#else
	pair *ps = calloc(MEM_N, sizeof(*ps));
	uint16_t vers[] = {TLS1_3_VERSION, TLS1_2_VERSION};

	assert_non_null(ps);
	for (size_t v = 0; v < 2; v++) {
		double d0, d1;
		double idle = engine_bytes(ps, vers[v], false, &d0);
		double after = engine_bytes(ps, vers[v], true, &d1);

		print_message("TLS 1.%d: idle engine %.0f B/conn; after 16 KiB each way "
			      "%.0f B/conn (whole heap drift during exchange %+.1f B/conn)\n",
			      v ? 2 : 3, idle, after, d1);
		assert_true(idle < 3.5 * 1024);
		assert_true(after - idle < 64 && idle - after < 64);
	}
	free(ps);
#endif
}

static int setup(void **state)
{
	char err[256];

	return ms_tls_ctx_create(&g_srv, NULL, NULL, err, sizeof(err));
}

static int teardown(void **state)
{
	ms_tls_ctx_destroy(g_srv);
	SSL_SESSION_free(g_sess);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tls13),
		cmocka_unit_test(test_tls12),
		cmocka_unit_test(test_policy),
		cmocka_unit_test(test_split_every_byte),
		cmocka_unit_test(test_large),
		cmocka_unit_test(test_resume),
		cmocka_unit_test(test_resume_key_file),
		cmocka_unit_test(test_rotation),
		cmocka_unit_test(test_ticket_lifetime_hint),
		cmocka_unit_test(test_renegotiation),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_close_notify),
		cmocka_unit_test(test_alpn),
		cmocka_unit_test(test_selfsigned),
		cmocka_unit_test(test_cert_files),
		cmocka_unit_test(test_misuse),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_memory),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
