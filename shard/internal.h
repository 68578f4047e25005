/*
 * Helpers shared by the files of shard/ (not API).
 *
 * Allocation failure aborts here, so callers skip NULL checks (STYLE §3):
 * the server refuses new work at its high-water marks long before memory
 * runs out.
 */
#ifndef MS_SHARD_INTERNAL_H
#define MS_SHARD_INTERNAL_H

#include <stdio.h>
#include <stdlib.h>

static inline void *ms_shard__oom(size_t n)
{
	fprintf(stderr, "mezon-sock: out of memory (shard, %zu bytes)\n", n);
	abort();
}

static inline void *ms_shard__alloc(size_t n)
{
	void *p = malloc(n);
	return p ? p : ms_shard__oom(n);
}

static inline void *ms_shard__calloc(size_t n, size_t size)
{
	void *p = calloc(n, size);
	return p ? p : ms_shard__oom(n * size);
}

static inline void *ms_shard__realloc(void *old, size_t n)
{
	void *p = realloc(old, n);
	return p ? p : ms_shard__oom(n);
}

#endif
