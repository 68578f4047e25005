/*
 * Input that did not yet form a whole unit (frame, request, record): kept
 * between reads and presented again in front of the next bytes. Used for a
 * connection's raw input (core) and for decrypted TLS input (net). Exists
 * only while something is pending, so an idle connection holds nothing.
 * Owner's thread only.
 */
#ifndef MS_CORE_SPILL_H
#define MS_CORE_SPILL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ms_spill {
	uint8_t *p;
	uint32_t len, cap;
} ms_spill;

static inline void ms_spill_free(ms_spill *s)
{
	free(s->p);
	s->p = NULL;
	s->len = s->cap = 0;
}

/* The bytes to parse: p[0..n) alone when nothing is pending (no copy),
 * else the pending bytes followed by p. Sets *len. */
static inline uint8_t *ms_spill_join(ms_spill *s, uint8_t *p, size_t n, size_t *len)
{
	if (!s->len) {
		*len = n;
		return p;
	}
	size_t need = (size_t)s->len + n;
	if (need > s->cap) {
		size_t cap = (size_t)s->cap * 2 > need ? (size_t)s->cap * 2 : need;
		uint8_t *np = realloc(s->p, cap);
		if (!np) {
			fprintf(stderr, "mezon-sock: out of memory (input of %zu bytes)\n", cap);
			abort();
		}
		s->p = np;
		s->cap = (uint32_t)cap;
	}
	memcpy(s->p + s->len, p, n);
	*len = need;
	return s->p;
}

/* Room for exactly n bytes (n > s->cap), keeping what is pending. */
static inline void ms_spill_reserve(ms_spill *s, size_t n)
{
	uint8_t *np = realloc(s->p, n);
	if (!np) {
		fprintf(stderr, "mezon-sock: out of memory (input of %zu bytes)\n", n);
		abort();
	}
	s->p = np;
	s->cap = (uint32_t)n;
}

/* After parsing buf[0..len) (from ms_spill_join) of which `used` bytes
 * were consumed: keep the rest for next time, or release everything. */
static inline void ms_spill_keep(ms_spill *s, const uint8_t *buf, size_t len, size_t used)
{
	size_t rest = len - used;
	if (rest == 0) {
		ms_spill_free(s);
		return;
	}
	if (buf == s->p) {
		memmove(s->p, s->p + used, rest);
	} else {
		s->p = malloc(rest);
		if (!s->p) {
			fprintf(stderr, "mezon-sock: out of memory (input of %zu bytes)\n", rest);
			abort();
		}
		s->cap = (uint32_t)rest;
		memcpy(s->p, buf + used, rest);
	}
	s->len = (uint32_t)rest;
}

#endif
