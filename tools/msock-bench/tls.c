/*
 * msock-bench TLS client setup (BoringSSL): one SSL_CTX per worker thread.
 *
 * The worker drives each connection's SSL over two memory BIOs: ciphertext
 * received by the multishot recv is written into the read BIO, and whatever
 * SSL writes to the write BIO is sent with one io_uring send. No SSL call
 * touches a socket. Memory BIOs keep a buffer per connection; that is the
 * client's memory, not what the benchmarks measure.
 *
 * Defaults: TLS 1.3 only (--tls12: TLS 1.2 only), BoringSSL's default groups
 * (X25519 first) and ciphers, ALPN http/1.1, no certificate verification (the
 * server's self-signed dev certificate); --ca FILE verifies the chain against
 * FILE and the URL's host name (or IP address) against the certificate.
 * Sessions are delivered to the worker's new-session callback (client cache
 * mode, no internal cache): --resume keeps them for the next handshake.
 */
#include "tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static int g_ssl_idx = -1, g_ctx_idx = -1;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init_indices(void)
{
	g_ssl_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	g_ctx_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

int ms_bench_tls_ssl_index(void)
{
	pthread_once(&g_once, init_indices);
	return g_ssl_idx;
}

int ms_bench_tls_ctx_index(void)
{
	pthread_once(&g_once, init_indices);
	return g_ctx_idx;
}

void ms_bench_tls_errstr(char *out, size_t cap)
{
	uint32_t e = ERR_get_error();
	if (!e) {
		snprintf(out, cap, "no error queued");
		return;
	}
	ERR_error_string_n(e, out, cap);
	ERR_clear_error();
}

bool ms_bench_tls_host_is_ip(const char *host)
{
	struct in_addr a;
	struct in6_addr a6;
	return inet_pton(AF_INET, host, &a) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

SSL_CTX *ms_bench_tls_ctx(const ms_bench_cfg *cfg, int (*new_session)(SSL *, SSL_SESSION *),
				    void *app, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());
	if (!ctx) {
		ms_bench_tls_errstr(err, errlen);
		return NULL;
	}
	uint16_t v = cfg->tls12 ? TLS1_2_VERSION : TLS1_3_VERSION;
	if (!SSL_CTX_set_min_proto_version(ctx, v) || !SSL_CTX_set_max_proto_version(ctx, v))
		goto fail;
	static const uint8_t alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
	if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn)) != 0) /* 0 on success */
		goto fail;
	if (cfg->ca_file[0]) {
		if (!SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL))
			goto fail;
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
	if (new_session)
		SSL_CTX_sess_set_new_cb(ctx, new_session);
	SSL_CTX_set_ex_data(ctx, ms_bench_tls_ctx_index(), app);
	return ctx;
fail:
	ms_bench_tls_errstr(err, errlen);
	SSL_CTX_free(ctx);
	return NULL;
}

const char *ms_bench_tls_version_name(const ms_bench_cfg *cfg)
{
	return cfg->tls12 ? "TLSv1.2" : "TLSv1.3";
}
