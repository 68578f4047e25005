/*
 * Helpers shared inside tls/: certificate set-up (cert.c), session ticket
 * keys (tickets.c) and the error-message helper used by both and by tls.c.
 * Not part of the module's API.
 */
#ifndef MS_TLS_INTERNAL_H
#define MS_TLS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

/* Format fmt into err and append the oldest queued BoringSSL error, if any;
 * clears this thread's error queue. */
void ms_tls__err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Generate an ECDSA P-256 key and a self-signed certificate for
 * localhost/127.0.0.1/::1 and install both in sc. Returns 0 or -errno. */
int ms_tls__cert_selfsigned(SSL_CTX *sc, char *err, size_t errlen);
/* Load a PEM chain and a PEM key into sc and check that they match. */
int ms_tls__cert_load(SSL_CTX *sc, const char *cert_file, const char *key_file,
		      char *err, size_t errlen);
/* Write the SHA-256 fingerprint of sc's leaf certificate (DER), upper-case
 * hex with colons, into fp (>= 96 bytes). */
void ms_tls__cert_fingerprint(SSL_CTX *sc, char *fp);

/* Session ticket keys, shared by all connections of one SSL_CTX (tickets.c,
 * a component of its own: it calls nothing in tls.c). */
typedef struct ms_tls__tickets ms_tls__tickets;

/* Load keys from file (or generate one when file is NULL), attach them to
 * sc (an ex_data slot of sc, where the ticket key callback finds them) and
 * install that callback. The caller owns the key set: destroy it after
 * SSL_CTX_free(sc). Returns 0 or -errno with a message in err. */
int ms_tls__tickets_create(ms_tls__tickets **out, SSL_CTX *sc, const char *file,
			   uint32_t rotate_s, uint64_t now_s, char *err, size_t errlen);
void ms_tls__tickets_destroy(ms_tls__tickets *tk);
/* Rotate if due (see tls.h's ms_tls_ctx_tick); any thread. */
void ms_tls__tickets_tick(ms_tls__tickets *tk, uint64_t now_s);

#endif
