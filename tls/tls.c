/*
 * TLS engine: one shared SSL_CTX, one SSL per connection, and a BIO that
 * retains nothing. During an engine call the BIO's data points at the
 * connection's ms_tls, whose in/in_n name the unread part of the caller's
 * ciphertext slice and whose sink receives whatever BoringSSL writes:
 *
 *   caller slice ──BIO read──▶ SSL ──plaintext──▶ out
 *                               │
 *                               └──BIO write──▶ sink (connection's output)
 *
 * Between calls in/sink are cleared (in stays set only while ms_tls_read
 * reported *more), so the only per-connection memory is BoringSSL's own
 * state plus this small struct. BoringSSL reads exactly the bytes it needs
 * (record header, then body), so a record split across slices is the only
 * thing it buffers, and it frees that buffer once the record is consumed;
 * its write buffer is likewise freed once flushed into the sink.
 */
#include "tls/tls.h"
#include "tls/internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

struct ms_tls_ctx {
	SSL_CTX *sc;
	BIO_METHOD *bm;
	ms_tls__tickets *tk;
};

struct ms_tls {
	SSL *ssl;
	const uint8_t *in; /* unread ciphertext of the current slice */
	size_t in_n;
	const ms_tls_sink *sink; /* non-NULL only during an engine call */
	bool done;		 /* handshake complete */
	bool more;		 /* last ms_tls_read returned *more */
};

/* TLS 1.2 suites: ECDHE, AEAD only; AES-GCM and ChaCha20 of equal
 * preference so a client without AES hardware can pick ChaCha20. TLS 1.3
 * suites are fixed by BoringSSL (AES-128/256-GCM, ChaCha20-Poly1305). */
static const char ciphers[] =
	"[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]:"
	"[ECDHE-RSA-AES128-GCM-SHA256|ECDHE-RSA-CHACHA20-POLY1305]:"
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";

static const uint8_t alpn_http11[] = "\x08http/1.1";

/* ---- BIO ------------------------------------------------------------------ */

static int bio_read(BIO *b, char *out, int len)
{
	ms_tls *t = BIO_get_data(b);
	size_t k;

	BIO_clear_retry_flags(b);
	if (!t->in_n) {
		BIO_set_retry_read(b);
		return -1;
	}
	k = len < 0 ? 0 : (size_t)len;
	if (k > t->in_n)
		k = t->in_n;
	memcpy(out, t->in, k);
	t->in += k;
	t->in_n -= k;
	return (int)k;
}

static int bio_write(BIO *b, const char *p, int len)
{
	ms_tls *t = BIO_get_data(b);

	BIO_clear_retry_flags(b);
	/* No sink: the caller broke the contract; failing the SSL call beats
	 * silently dropping bytes from the TLS stream. */
	if (!t->sink || len < 0)
		return -1;
	t->sink->write(t->sink->arg, (const uint8_t *)p, (size_t)len);
	return len;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	return cmd == BIO_CTRL_FLUSH; /* writes are never buffered here */
}

static int bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

/* ---- context -------------------------------------------------------------- */

/* Pick http/1.1 when offered. A client offering only other protocols gets
 * no ALPN rather than a fatal alert; one offering none is fine too. */
static int alpn_cb(SSL *ssl, const uint8_t **out, uint8_t *outlen, const uint8_t *in,
		   unsigned inlen, void *arg)
{
	uint8_t *sel;

	if (SSL_select_next_proto(&sel, outlen, alpn_http11, sizeof(alpn_http11) - 1, in,
				  inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

int ms_tls_ctx_create(ms_tls_ctx **out, const ms_tls_opts *o, char *fingerprint,
		      char *err, size_t errlen)
{
	static const ms_tls_opts none;
	ms_tls_ctx *ctx = calloc(1, sizeof(*ctx));
	int rc = -EINVAL;

	if (!o)
		o = &none;
	if (!ctx) {
		ms_tls__err(err, errlen, "tls: out of memory");
		return -ENOMEM;
	}
	ERR_clear_error();
	ctx->sc = SSL_CTX_new(TLS_server_method());
	ctx->bm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ms_tls");
	if (!ctx->sc || !ctx->bm || !BIO_meth_set_read(ctx->bm, bio_read) ||
	    !BIO_meth_set_write(ctx->bm, bio_write) || !BIO_meth_set_ctrl(ctx->bm, bio_ctrl) ||
	    !BIO_meth_set_create(ctx->bm, bio_create)) {
		ms_tls__err(err, errlen, "tls: out of memory");
		rc = -ENOMEM;
		goto fail;
	}
	if (!SSL_CTX_set_min_proto_version(ctx->sc, TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx->sc, TLS1_3_VERSION) ||
	    !SSL_CTX_set1_curves_list(ctx->sc, "X25519:P-256") ||
	    !SSL_CTX_set_strict_cipher_list(ctx->sc, ciphers)) {
		ms_tls__err(err, errlen, "tls: configuring the context failed");
		goto fail;
	}
	SSL_CTX_set_options(ctx->sc, SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx->sc, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* Tickets only: a server-side cache would be per process and hold
	 * memory per session; tickets resume across workers and processes. */
	SSL_CTX_set_session_cache_mode(ctx->sc, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_alpn_select_cb(ctx->sc, alpn_cb, NULL);
	/* One TLS 1.3 ticket per handshake, not BoringSSL's default two: a
	 * chat client holds one connection and gets a fresh ticket each time it
	 * connects (tickets are single-use, RFC 8446 C.4); the second ticket
	 * cost ~45k instructions and ~250 bytes per handshake (callgrind). */
	SSL_CTX_set_num_tickets(ctx->sc, 1);

	if (o->cert_file || o->key_file)
		rc = ms_tls__cert_load(ctx->sc, o->cert_file, o->key_file, err, errlen);
	else
		rc = ms_tls__cert_selfsigned(ctx->sc, err, errlen);
	if (rc < 0)
		goto fail;
	rc = ms_tls__tickets_create(&ctx->tk, ctx->sc, o->ticket_key_file, o->ticket_rotate_s,
				    (uint64_t)time(NULL), err, errlen);
	if (rc < 0)
		goto fail;
	if (fingerprint)
		ms_tls__cert_fingerprint(ctx->sc, fingerprint);
	*out = ctx;
	return 0;
fail:
	ms_tls_ctx_destroy(ctx);
	return rc;
}

void ms_tls_ctx_destroy(ms_tls_ctx *ctx)
{
	if (!ctx)
		return;
	SSL_CTX_free(ctx->sc);
	ms_tls__tickets_destroy(ctx->tk);
	BIO_meth_free(ctx->bm);
	free(ctx);
}

void ms_tls_ctx_tick(ms_tls_ctx *ctx, uint64_t now_s)
{
	ms_tls__tickets_tick(ctx->tk, now_s);
}

/* ---- connection ----------------------------------------------------------- */

ms_tls *ms_tls_new(ms_tls_ctx *ctx)
{
	ms_tls *t = calloc(1, sizeof(*t));
	BIO *b = NULL;

	if (!t)
		return NULL;
	t->ssl = SSL_new(ctx->sc);
	b = BIO_new(ctx->bm);
	if (!t->ssl || !b)
		goto fail;
	BIO_set_data(b, t);
	SSL_set_bio(t->ssl, b, b); /* one reference, owned by the SSL */
	SSL_set_accept_state(t->ssl);
	/* BoringSSL sheds at the moment the handshake completes when this
	 * flag is set; enabling it only afterwards would shed nothing. */
	SSL_set_shed_handshake_config(t->ssl, 1);
	return t;
fail:
	BIO_free(b);
	SSL_free(t->ssl);
	free(t);
	ERR_clear_error();
	return NULL;
}

void ms_tls_free(ms_tls *t)
{
	if (!t)
		return;
	SSL_free(t->ssl);
	free(t);
}

/* Map a failed SSL call to OK (needs input), CLOSED or ERROR. */
static int status(ms_tls *t, int r)
{
	switch (SSL_get_error(t->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return MS_TLS_OK;
	case SSL_ERROR_ZERO_RETURN:
		return MS_TLS_CLOSED;
	default:
		/* Fatal: BoringSSL already sent its alert through the BIO.
		 * Don't leave the reason in this worker's error queue. */
		ERR_clear_error();
		return MS_TLS_ERROR;
	}
}

int ms_tls_read(ms_tls *t, const uint8_t *in, size_t n, uint8_t *out, size_t cap,
		size_t *out_len, bool *more, const ms_tls_sink *sink)
{
	size_t got = 0;
	int rc = MS_TLS_OK;
	int r;

	*out_len = 0;
	*more = false;
	if (n) {
		if (t->more)
			return MS_TLS_ERROR; /* new slice before the last one drained */
		t->in = in;
		t->in_n = n;
	}
	t->sink = sink;
	if (!t->done) {
		r = SSL_do_handshake(t->ssl);
		if (r != 1) {
			rc = status(t, r);
			goto out;
		}
		t->done = true;
		/* A TLS 1.3 server queues its NewSessionTickets until its first
		 * write (BoringSSL holds them in the pending flight, ~600 bytes).
		 * A zero-byte write, BoringSSL's documented way, flushes them now:
		 * the idle connection holds nothing and a client that only reads
		 * still gets its tickets. */
		SSL_write(t->ssl, "", 0);
		ERR_clear_error();
	}
	/* Until WANT_READ, but without the call that would only say so: the
	 * BIO hands BoringSSL exactly the bytes it asks for (a record header,
	 * then its body), so once the slice is used up and no decrypted bytes
	 * are pending, no whole record is buffered and SSL_read could only
	 * return WANT_READ (saves one SSL_read, ~1,000 instructions, per
	 * inbound record). */
	while (got < cap && (t->in_n || SSL_pending(t->ssl) > 0)) {
		size_t want = cap - got < INT_MAX ? cap - got : INT_MAX;

		r = SSL_read(t->ssl, out + got, (int)want);
		if (r <= 0) {
			rc = status(t, r);
			break;
		}
		got += (size_t)r;
	}
	/* out is full: more to come if input remains or the current record
	 * still holds decrypted bytes. */
	if (rc == MS_TLS_OK && got == cap && (t->in_n || SSL_pending(t->ssl) > 0))
		*more = true;
out:
	*out_len = got;
	t->sink = NULL;
	t->more = *more;
	if (!*more) {
		t->in = NULL;
		t->in_n = 0;
	}
	return rc;
}

int ms_tls_write(ms_tls *t, const uint8_t *p, size_t n, const ms_tls_sink *sink)
{
	int rc = MS_TLS_OK;

	if (!t->done)
		return MS_TLS_ERROR;
	t->sink = sink;
	while (n) {
		/* Chunks that are a multiple of the 16 KiB record size, so
		 * splitting a huge write never adds a short record. */
		int k = n < (1u << 30) ? (int)n : 1 << 30;
		int r = SSL_write(t->ssl, p, k);

		if (r <= 0) {
			rc = MS_TLS_ERROR;
			ERR_clear_error();
			break;
		}
		p += r;
		n -= (size_t)r;
	}
	t->sink = NULL;
	return rc;
}

void ms_tls_shutdown(ms_tls *t, const ms_tls_sink *sink)
{
	t->sink = sink;
	SSL_shutdown(t->ssl);
	t->sink = NULL;
	ERR_clear_error();
}

bool ms_tls_handshake_done(const ms_tls *t)
{
	return t->done;
}

bool ms_tls_session_reused(const ms_tls *t)
{
	return SSL_session_reused(t->ssl);
}
