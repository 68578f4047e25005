/*
 * msock-bench TLS client helpers (tls.c): BoringSSL only, never the system
 * OpenSSL (the ms_boringssl target points at /usr/include/android).
 */
#ifndef MS_BENCH_TLS_H
#define MS_BENCH_TLS_H

#include <openssl/ssl.h>

#include <stdbool.h>
#include <stddef.h>

#include "bench.h"

/* A client SSL_CTX for cfg (version, verification, ALPN, client session
 * cache mode with new_session as the new-session callback; app is stored
 * at ms_bench_tls_ctx_index()). NULL with a message in err on failure. */
SSL_CTX *ms_bench_tls_ctx(const ms_bench_cfg *cfg, int (*new_session)(SSL *, SSL_SESSION *), void *app,
			  char *err, size_t errlen);
/* ex_data indices: the connection pointer on an SSL, the app pointer on an
 * SSL_CTX. */
int ms_bench_tls_ssl_index(void);
int ms_bench_tls_ctx_index(void);
/* The oldest queued BoringSSL error as text (and clear the queue). */
void ms_bench_tls_errstr(char *out, size_t cap);
bool ms_bench_tls_host_is_ip(const char *host);
const char *ms_bench_tls_version_name(const ms_bench_cfg *cfg);

#endif
