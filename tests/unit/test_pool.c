/* Connection pool and handles: generations, LIFO reuse, capacity, user_data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/conn.h"
#include "core/udata.h"

static void alloc_until_full(void **state)
{
	ms_pool p;
	assert_int_equal(ms_pool_init(&p, 3, 16), 0);
	ms_conn *a = ms_pool_alloc(&p), *b = ms_pool_alloc(&p), *c = ms_pool_alloc(&p);
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	assert_null(ms_pool_alloc(&p));
	assert_int_equal(p.used, 3);
	assert_int_not_equal(a->idx, b->idx);
	assert_int_not_equal(b->idx, c->idx);
	assert_int_equal(a->fidx, -1);
	ms_pool_fini(&p);
}

static void generation_moves_on_free(void **state)
{
	ms_pool p;
	assert_int_equal(ms_pool_init(&p, 2, 0), 0);
	ms_conn *a = ms_pool_alloc(&p);
	uint32_t idx = a->idx, gen = a->gen;
	assert_int_not_equal(gen, 0);
	ms_pool_free(&p, a);
	ms_conn *again = ms_pool_alloc(&p);
	assert_ptr_equal(again, a);           /* LIFO: the warm slot comes back */
	assert_int_equal(again->idx, idx);
	assert_int_not_equal(again->gen, gen); /* old handles are stale */
	assert_int_equal(p.used, 1);
	ms_pool_fini(&p);
}

static void generation_skips_zero(void **state)
{
	ms_pool p;
	assert_int_equal(ms_pool_init(&p, 1, 0), 0);
	ms_conn *a = ms_pool_alloc(&p);
	a->gen = UINT32_MAX;
	ms_pool_free(&p, a);
	a = ms_pool_alloc(&p);
	assert_int_equal(a->gen, 1);
	ms_pool_fini(&p);
}

static size_t resident(const void *base, size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), n = (len + page - 1) / page, r = 0;
	unsigned char *v = malloc(n);
	assert_non_null(v);
	assert_int_equal(mincore((void *)base, len, v), 0);
	for (size_t i = 0; i < n; i++)
		r += v[i] & 1;
	free(v);
	return r;
}

/* Pages of the slots and of the free list the kernel holds for the pool. */
static size_t resident_pages(const ms_pool *p)
{
	return resident(p->slots, p->map_size) + resident(p->free, sizeof(uint32_t) * p->cap);
}

/* An emptied pool gives its pages back; no old handle matches a slot after. */
static void trim_gives_pages_back_and_keeps_handles_stale(void **state)
{
	ms_pool p;
	enum { N = 200 };
	assert_int_equal(ms_pool_init(&p, N, 200), 0);
	assert_int_equal(resident_pages(&p), 0);
	ms_conn *c[N];
	uint32_t gen[N], idx[N];
	for (int i = 0; i < N; i++) {
		c[i] = ms_pool_alloc(&p);
		memset(ms_conn_ext(c[i]), 0x5a, 200);
	}
	for (int i = 0; i < N; i += 2) { /* churn: some generations move on */
		ms_pool_free(&p, c[i]);
		c[i] = ms_pool_alloc(&p);
	}
	for (int i = 0; i < N; i++) {
		gen[i] = c[i]->gen;
		idx[i] = c[i]->idx;
	}
	size_t touched = resident_pages(&p);
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	assert_true(touched >= (N * p.slot_size) / page + 1); /* + the free list */
	for (int i = 0; i < N - 1; i++)
		ms_pool_free(&p, c[i]);
	assert_int_equal(ms_pool_trim(&p), 0); /* one slot still in use */
	assert_int_equal(resident_pages(&p), touched);
	ms_pool_free(&p, c[N - 1]);
	assert_true(ms_pool_trim(&p) >= (touched - 1) * page);
	assert_int_equal(resident_pages(&p), 0);
	assert_int_equal(p.fresh, 0);
	assert_int_equal(ms_pool_trim(&p), 0); /* nothing left to give */
	for (int i = 0; i < N; i++) {
		ms_conn *a = ms_pool_alloc(&p);
		assert_int_equal(a->idx, i); /* fresh slots again, in order */
		for (int j = 0; j < N; j++)
			if (idx[j] == a->idx)
				assert_true(a->gen > gen[j]);
		uint8_t *e = ms_conn_ext(a);
		for (int k = 0; k < 200; k++)
			assert_int_equal(e[k], 0);
	}
	ms_pool_fini(&p);
}

/* Several trims, each cycle using fewer slots than the one before: every
 * generation handed out after a trim is above every one handed out before
 * it, on any slot, so a handle kept from any earlier cycle stays stale even
 * for a slot nobody took in between. */
static void generations_rise_across_trims(void **state)
{
	ms_pool p;
	enum { N = 64 };
	assert_int_equal(ms_pool_init(&p, N, 0), 0);
	ms_conn *c[N];
	uint32_t top = 0; /* highest generation handed out so far */
	for (int n = N; n >= 1; n /= 2) {
		uint32_t cycle_top = 0;
		for (int i = 0; i < n; i++) {
			c[i] = ms_pool_alloc(&p);
			assert_true(c[i]->gen > top);
			if (i % 3 == 0) { /* churn inside the cycle too */
				ms_pool_free(&p, c[i]);
				c[i] = ms_pool_alloc(&p);
			}
			if (c[i]->gen > cycle_top)
				cycle_top = c[i]->gen;
		}
		for (int i = 0; i < n; i++)
			ms_pool_free(&p, c[i]);
		assert_true(ms_pool_trim(&p) > 0);
		top = cycle_top + 1; /* ms_pool_free moved each slot's on by one */
	}
	ms_pool_fini(&p);
}

static void ext_is_zeroed_and_private(void **state)
{
	ms_pool p;
	assert_int_equal(ms_pool_init(&p, 2, 40), 0);
	ms_conn *a = ms_pool_alloc(&p);
	ms_conn *b = ms_pool_alloc(&p);
	memset(ms_conn_ext(a), 0xab, 40);
	uint8_t *eb = ms_conn_ext(b);
	for (int i = 0; i < 40; i++)
		assert_int_equal(eb[i], 0);
	ms_pool_free(&p, a);
	a = ms_pool_alloc(&p);
	uint8_t *ea = ms_conn_ext(a);
	for (int i = 0; i < 40; i++)
		assert_int_equal(ea[i], 0);
	assert_true((uint8_t *)ms_conn_ext(a) + 40 <= (uint8_t *)b ||
		    (uint8_t *)a >= (uint8_t *)ms_conn_ext(b) + 40);
	ms_pool_fini(&p);
}

static void udata_round_trip(void **state)
{
	uint64_t u = ms_udata(MS_OP_SEND, 0xabcdef, 0xdeadbeef);
	assert_int_equal(ms_udata_op(u), MS_OP_SEND);
	assert_int_equal(ms_udata_idx(u), 0xabcdef);
	assert_int_equal(ms_udata_gen(u), 0xdeadbeef);
	/* The index is 24 bits: larger values must not leak into the op. */
	u = ms_udata(MS_OP_RECV, 0x1ffffff, 7);
	assert_int_equal(ms_udata_op(u), MS_OP_RECV);
	assert_int_equal(ms_udata_idx(u), 0xffffff);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(alloc_until_full),
		cmocka_unit_test(generation_moves_on_free),
		cmocka_unit_test(generation_skips_zero),
		cmocka_unit_test(ext_is_zeroed_and_private),
		cmocka_unit_test(trim_gives_pages_back_and_keeps_handles_stale),
		cmocka_unit_test(generations_rise_across_trims),
		cmocka_unit_test(udata_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
