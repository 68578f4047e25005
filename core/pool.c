/*
 * Connection pool. The slot array is one anonymous mapping made at start
 * (--max-conns is a capacity, not a commitment): the kernel backs a page only
 * when a slot in it is first used, and freed slots are reused LIFO so the
 * working set stays as small as the number of live connections. When the
 * last connection has gone, ms_pool_trim gives the pages back.
 */
#include "core/conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int ms_pool_init(ms_pool *p, uint32_t cap, size_t ext_size)
{
	memset(p, 0, sizeof(*p));
	p->slot_size = (sizeof(ms_conn) + ext_size + 15) & ~(size_t)15;
	p->map_size = p->slot_size * cap;
	p->slots = mmap(NULL, p->map_size, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p->slots == MAP_FAILED)
		return -errno;
	p->cap = cap;
	p->free = ms_pool_array(p, sizeof(uint32_t)); /* touched as slots are freed */
	if (!p->free) {
		munmap(p->slots, p->map_size);
		memset(p, 0, sizeof(*p));
		return -ENOMEM;
	}
	p->gen_floor = 1;
	return 0;
}

void *ms_pool_array(const ms_pool *p, size_t elem)
{
	void *a = mmap(NULL, elem * p->cap, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return a == MAP_FAILED ? NULL : a;
}

void ms_pool_array_trim(const ms_pool *p, void *a, size_t elem)
{
	madvise(a, elem * p->cap, MADV_DONTNEED);
}

void ms_pool_array_free(const ms_pool *p, void *a, size_t elem)
{
	if (a)
		munmap(a, elem * p->cap);
}

void ms_pool_fini(ms_pool *p)
{
	if (p->slots)
		munmap(p->slots, p->map_size);
	ms_pool_array_free(p, p->free, sizeof(uint32_t));
	memset(p, 0, sizeof(*p));
}

ms_conn *ms_pool_alloc(ms_pool *p)
{
	uint32_t idx;
	if (p->nfree)
		idx = p->free[--p->nfree];
	else if (p->fresh < p->cap)
		idx = p->fresh++;
	else
		return NULL;
	ms_conn *c = ms_pool_at(p, idx);
	uint32_t gen = c->gen ? c->gen : p->gen_floor;
	memset(c, 0, p->slot_size);
	c->gen = gen;
	c->idx = idx;
	c->fidx = -1;
	p->used++;
	return c;
}

size_t ms_pool_trim(ms_pool *p)
{
	if (p->used || !p->fresh)
		return 0;
	uint32_t top = p->gen_floor;
	for (uint32_t i = 0; i < p->fresh; i++) {
		uint32_t g = ms_pool_at(p, i)->gen;
		if (g > top)
			top = g;
	}
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t len = ((size_t)p->fresh * p->slot_size + page - 1) & ~(page - 1);
	if (madvise(p->slots, len, MADV_DONTNEED) != 0)
		return 0; /* the pages stay; so do the generations in them */
	ms_pool_array_trim(p, p->free, sizeof(uint32_t));
	p->gen_floor = top + 1 ? top + 1 : 1;
	p->fresh = p->nfree = 0;
	return len;
}

void ms_pool_free(ms_pool *p, ms_conn *c)
{
	c->gen++;
	if (c->gen == 0)
		c->gen = 1;
	p->free[p->nfree++] = c->idx;
	p->used--;
}
