/*
 * Shared by the TLS engine's unit test and its fuzz target: a growable
 * byte buffer and an ms_tls sink that appends to one (what the engine
 * writes: handshake flights, records, alerts).
 */
#ifndef MS_TESTS_TLS_HARNESS_H
#define MS_TESTS_TLS_HARNESS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct tls_buf {
	uint8_t *p;
	size_t n, cap;
	size_t total; /* bytes ever appended */
} tls_buf;

static inline void tls_buf_put(tls_buf *b, const uint8_t *p, size_t n)
{
	if (!n)
		return;
	if (b->n + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;

		while (cap < b->n + n)
			cap *= 2;
		b->p = realloc(b->p, cap);
		if (!b->p)
			abort();
		b->cap = cap;
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
	b->total += n;
}

static inline void tls_buf_fini(tls_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* An ms_tls_sink write function; arg is the tls_buf. */
static inline void tls_buf_sink(void *arg, const uint8_t *p, size_t n)
{
	tls_buf_put(arg, p, n);
}

#endif
