/*
 * TLS engine: BoringSSL behind a custom BIO that retains nothing.
 *
 * The engine transforms bytes only; it never touches a socket. Ciphertext
 * read from the network is handed in slice by slice (the BIO's read side
 * points at the current slice and returns WANT_READ at its end); ciphertext
 * the engine produces (handshake flights, records, alerts) goes straight to
 * the caller's sink (the connection's output queue), so no per-connection
 * buffer exists between calls. BoringSSL itself keeps only a partial record
 * while one is split across reads, and frees it once the record completes.
 *
 * One ms_tls_ctx per process (shared SSL_CTX, read-only after start, any
 * thread); one ms_tls per connection, used only by its worker thread.
 */
#ifndef MS_TLS_TLS_H
#define MS_TLS_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ms_tls_ctx ms_tls_ctx;
typedef struct ms_tls ms_tls;

typedef struct ms_tls_opts {
	const char *cert_file;       /* PEM chain; NULL with key_file NULL: self-signed */
	const char *key_file;        /* PEM RSA or ECDSA key */
	const char *ticket_key_file; /* 80-byte-per-key file, or NULL: random keys */
	uint32_t ticket_rotate_s;    /* rotate the session ticket key this often; 0: never */
} ms_tls_opts;

/* Ticket key file: 1 to 8 binary keys of 80 bytes each, concatenated, newest
 * first; each key is a 16-byte name, a 32-byte HMAC-SHA256 key and a 32-byte
 * AES-256-CBC key (nginx's ssl_session_ticket_key layout, so
 * `openssl rand 80 > file` makes one). The first key seals new tickets, all
 * of them open tickets (a ticket opened with an older key is renewed).
 * Processes loading the same file resume each other's sessions. With a file,
 * rotation re-reads it every ticket_rotate_s (an external rotator publishes
 * new keys; the previous sealing key stays valid for opening). Without one,
 * a random key is made at start and replaced every ticket_rotate_s, the
 * previous key staying valid for opening for one more period. Either way a
 * ticket announces a lifetime of at most ticket_rotate_s (when non-zero):
 * how long any ticket is sure to stay openable. */

/* Where ciphertext goes: called zero or more times per engine call. */
typedef struct ms_tls_sink {
	void (*write)(void *arg, const uint8_t *p, size_t n);
	void *arg;
} ms_tls_sink;

/* Create the shared context: TLS 1.2 + 1.3, X25519 first, AES-GCM and
 * ChaCha20-Poly1305, ALPN http/1.1, tickets on, session cache off,
 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER. Without cert/key, generates an ECDSA
 * P-256 self-signed certificate for localhost/127.0.0.1/::1. When
 * fingerprint is non-NULL, writes the SHA-256 fingerprint of the leaf
 * certificate (generated or loaded) into it (upper-case hex with colons,
 * >= 96 bytes). o may be NULL (all defaults). Returns 0 or -errno / -EINVAL
 * with a message in err (>= 256). The context must outlive its engines. */
int ms_tls_ctx_create(ms_tls_ctx **out, const ms_tls_opts *o, char *fingerprint,
		      char *err, size_t errlen);
void ms_tls_ctx_destroy(ms_tls_ctx *ctx);
/* Rotate the ticket keys if due (call from any one thread periodically;
 * thread-safe). now_s: CLOCK_REALTIME seconds. */
void ms_tls_ctx_tick(ms_tls_ctx *ctx, uint64_t now_s);

/* Per-connection engine (server side). NULL on allocation failure. */
ms_tls *ms_tls_new(ms_tls_ctx *ctx);
void ms_tls_free(ms_tls *t);

enum {
	MS_TLS_OK = 0,       /* progress made; call again with more input later */
	MS_TLS_CLOSED = 1,   /* peer sent close_notify */
	MS_TLS_ERROR = -1,   /* fatal: an alert may have been written to the sink */
};

/* Feed ciphertext in[0..n) (all of it is consumed: what does not complete a
 * record is kept by BoringSSL until the next call) and decrypt greedily:
 * SSL_read until WANT_READ, writing plaintext into out (cap bytes) and
 * setting *out_len. Drives the handshake first when it is not done;
 * handshake flights, alerts and post-handshake replies go to sink. If out
 * fills before the input is drained, returns MS_TLS_OK with *more = true:
 * call again with n = 0 to get the rest. in is borrowed: the engine keeps
 * pointing into it until a call returns *more = false, so it must stay
 * valid and unchanged until then (a call with n > 0 while *more is pending
 * returns MS_TLS_ERROR). Returns MS_TLS_OK, MS_TLS_CLOSED (plaintext that
 * preceded the close_notify is still in out) or MS_TLS_ERROR (the engine is
 * dead; an alert may have gone to sink). */
int ms_tls_read(ms_tls *t, const uint8_t *in, size_t n, uint8_t *out, size_t cap,
		size_t *out_len, bool *more, const ms_tls_sink *sink);

/* Encrypt plaintext p[0..n) as few records as possible (one per 16 KiB)
 * into sink. Only after the handshake. Returns MS_TLS_OK or MS_TLS_ERROR. */
int ms_tls_write(ms_tls *t, const uint8_t *p, size_t n, const ms_tls_sink *sink);

/* Send close_notify into sink. */
void ms_tls_shutdown(ms_tls *t, const ms_tls_sink *sink);

bool ms_tls_handshake_done(const ms_tls *t);
bool ms_tls_session_reused(const ms_tls *t);

#endif
