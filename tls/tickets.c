/*
 * Session ticket keys. All workers share one SSL_CTX, so the key set sits
 * behind a rwlock: the ticket callback (any worker, once per full handshake
 * and once per resumption attempt) copies one key out under the read lock;
 * rotation (ms_tls_ctx_tick, rare) swaps the set under the write lock.
 *
 * A key is 80 bytes, nginx's layout: 16-byte name, 32-byte HMAC-SHA256 key,
 * 32-byte AES-256-CBC key. keys[0] seals new tickets; every key in the set
 * opens tickets, and a ticket opened with an older key is renewed (callback
 * returns 2) so clients migrate to the current key.
 *
 * Without a key file, a fresh random key is generated every rotate_s and the
 * previous one is kept for opening, so a ticket lives at most two periods.
 * With a key file, the file is the source of truth (newest key first): it is
 * re-read every rotate_s so that an external rotator can publish new keys to
 * every process sharing the file; the previous sealing key is kept for
 * opening when the new file dropped it.
 *
 * The key set belongs to whoever created it (tls.c, one per SSL_CTX). The
 * callback finds it in an ex_data slot of the SSL_CTX that this file
 * registers, since BoringSSL's ticket key callback has no argument of its
 * own; so nothing here needs to know the context's owner.
 */
#include "tls/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/cipher.h>
#include <openssl/digest.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/rand.h>

#define KEY_LEN 80
#define MAX_KEYS 8

typedef struct tkey {
	uint8_t name[16];
	uint8_t hmac[32];
	uint8_t aes[32];
} tkey;

_Static_assert(sizeof(tkey) == KEY_LEN, "ticket key layout");

/* The SSL_CTX ex_data slot holding a context's ms_tls__tickets: one per
 * process, registered by the first ms_tls__tickets_create (any thread). */
static int ctx_slot = -1;
static pthread_once_t ctx_slot_once = PTHREAD_ONCE_INIT;

static void ctx_slot_init(void)
{
	ctx_slot = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

struct ms_tls__tickets {
	pthread_rwlock_t lock; /* guards keys, n */
	tkey keys[MAX_KEYS];
	size_t n;
	pthread_mutex_t tick_lock; /* guards next_s; serialises rotations */
	uint64_t next_s;
	uint32_t rotate_s;
	char *file;
};

/* Read 1..MAX_KEYS keys from path into keys; returns the count or -errno. */
static int read_keys(const char *path, tkey *keys, char *err, size_t errlen)
{
	uint8_t buf[KEY_LEN * MAX_KEYS + 1];
	size_t got = 0;
	ssize_t r;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int rc;

	if (fd < 0) {
		rc = -errno;
		ms_tls__err(err, errlen, "tls: %s: %s", path, strerror(-rc));
		return rc;
	}
	while (got < sizeof(buf)) {
		r = read(fd, buf + got, sizeof(buf) - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			ms_tls__err(err, errlen, "tls: %s: %s", path, strerror(-rc));
			goto out;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	if (got == 0 || got % KEY_LEN || got > KEY_LEN * MAX_KEYS) {
		ms_tls__err(err, errlen,
			    "tls: %s: want 1 to %d ticket keys of %d bytes, file has %zu bytes",
			    path, MAX_KEYS, KEY_LEN, got);
		rc = -EINVAL;
		goto out;
	}
	memcpy(keys, buf, got);
	rc = (int)(got / KEY_LEN);
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	close(fd);
	return rc;
}

static int key_cb(SSL *ssl, uint8_t *name, uint8_t *iv, EVP_CIPHER_CTX *cctx,
		  HMAC_CTX *hctx, int enc)
{
	ms_tls__tickets *tk = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_slot);
	tkey k;
	size_t i = 0;
	bool found;
	int rc;

	if (!tk)
		return -1;
	pthread_rwlock_rdlock(&tk->lock);
	if (!enc)
		for (; i < tk->n; i++)
			if (!CRYPTO_memcmp(tk->keys[i].name, name, sizeof(k.name)))
				break;
	found = i < tk->n;
	if (found)
		k = tk->keys[i];
	pthread_rwlock_unlock(&tk->lock);

	if (enc) {
		memcpy(name, k.name, sizeof(k.name));
		if (!RAND_bytes(iv, 16) ||
		    !EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) ||
		    !HMAC_Init_ex(hctx, k.hmac, sizeof(k.hmac), EVP_sha256(), NULL))
			rc = -1;
		else
			rc = 1;
	} else if (!found) {
		return 0; /* unknown key (rotated out, other server): full handshake */
	} else if (!HMAC_Init_ex(hctx, k.hmac, sizeof(k.hmac), EVP_sha256(), NULL) ||
		   !EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv)) {
		rc = -1;
	} else {
		rc = i == 0 ? 1 : 2;
	}
	OPENSSL_cleanse(&k, sizeof(k));
	return rc;
}

int ms_tls__tickets_create(ms_tls__tickets **out, SSL_CTX *sc, const char *file,
			   uint32_t rotate_s, uint64_t now_s, char *err, size_t errlen)
{
	ms_tls__tickets *tk = calloc(1, sizeof(*tk));
	int rc;

	if (!tk) {
		ms_tls__err(err, errlen, "tls: out of memory");
		return -ENOMEM;
	}
	pthread_rwlock_init(&tk->lock, NULL);
	pthread_mutex_init(&tk->tick_lock, NULL);
	tk->rotate_s = rotate_s;
	tk->next_s = now_s + rotate_s;
	if (file) {
		tk->file = strdup(file);
		if (!tk->file) {
			ms_tls__err(err, errlen, "tls: out of memory");
			rc = -ENOMEM;
			goto fail;
		}
		rc = read_keys(file, tk->keys, err, errlen);
		if (rc < 0)
			goto fail;
		tk->n = (size_t)rc;
	} else {
		RAND_bytes((uint8_t *)&tk->keys[0], KEY_LEN);
		tk->n = 1;
	}
	pthread_once(&ctx_slot_once, ctx_slot_init);
	if (ctx_slot < 0 || !SSL_CTX_set_ex_data(sc, ctx_slot, tk)) {
		ms_tls__err(err, errlen, "tls: out of memory");
		rc = -ENOMEM;
		goto fail;
	}
	SSL_CTX_set_tlsext_ticket_key_cb(sc, key_cb);
	/* A key seals for one period and opens for one more, so a ticket
	 * sealed late in its key's period stays openable for one period: the
	 * lifetime a ticket announces (TLS 1.3 ticket_lifetime, TLS 1.2
	 * lifetime hint, both from these timeouts) must not pass that, or
	 * clients keep tickets that can no longer resume. BoringSSL's
	 * defaults (48 h for TLS 1.3, 2 h for 1.2) stay where shorter. */
	if (rotate_s) {
		if (rotate_s < SSL_DEFAULT_SESSION_PSK_DHE_TIMEOUT)
			SSL_CTX_set_session_psk_dhe_timeout(sc, rotate_s);
		if (rotate_s < SSL_CTX_get_timeout(sc))
			SSL_CTX_set_timeout(sc, rotate_s);
	}
	*out = tk;
	return 0;
fail:
	ms_tls__tickets_destroy(tk);
	return rc;
}

void ms_tls__tickets_destroy(ms_tls__tickets *tk)
{
	if (!tk)
		return;
	OPENSSL_cleanse(tk->keys, sizeof(tk->keys));
	pthread_rwlock_destroy(&tk->lock);
	pthread_mutex_destroy(&tk->tick_lock);
	free(tk->file);
	free(tk);
}

void ms_tls__tickets_tick(ms_tls__tickets *tk, uint64_t now_s)
{
	tkey fresh[MAX_KEYS];
	size_t n;
	bool kept = false;

	if (!tk->rotate_s)
		return;
	pthread_mutex_lock(&tk->tick_lock);
	if (now_s < tk->next_s) {
		pthread_mutex_unlock(&tk->tick_lock);
		return;
	}
	tk->next_s = now_s + tk->rotate_s;
	if (tk->file) {
		/* Unreadable or malformed now: keep serving the keys we have. */
		int r = read_keys(tk->file, fresh, NULL, 0);

		if (r < 0)
			goto out;
		n = (size_t)r;
	} else {
		RAND_bytes((uint8_t *)&fresh[0], KEY_LEN);
		n = 1;
	}

	pthread_rwlock_wrlock(&tk->lock);
	/* Keep the outgoing sealing key for opening, unless the new set has it. */
	for (size_t i = 0; i < n; i++)
		if (!memcmp(fresh[i].name, tk->keys[0].name, sizeof(fresh[i].name)))
			kept = true;
	if (!kept && n < MAX_KEYS)
		fresh[n++] = tk->keys[0];
	memcpy(tk->keys, fresh, n * sizeof(tkey));
	OPENSSL_cleanse(tk->keys + n, (MAX_KEYS - n) * sizeof(tkey));
	tk->n = n;
	pthread_rwlock_unlock(&tk->lock);
out:
	OPENSSL_cleanse(fresh, sizeof(fresh));
	pthread_mutex_unlock(&tk->tick_lock);
}
