/* Session registry: several devices per user (inline and spilled), lookup
 * copies, ms_reg_users, shard function, and concurrent readers against one
 * writer (run under TSan too: readers must only ever see consistent
 * entries). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "shard/registry.h"

static void test_shard_range(void **state)
{
	(void)state;
	uint32_t hits[MS_REGISTRY_SHARDS] = { 0 };
	for (uint64_t u = 0; u < 128 * 200; u++) {
		uint32_t s = ms_reg_shard(u);
		assert_true(s < MS_REGISTRY_SHARDS);
		assert_int_equal(s, ms_reg_shard(u)); /* stable */
		hits[s]++;
	}
	assert_true(ms_reg_shard(UINT64_MAX) < MS_REGISTRY_SHARDS);
	for (int i = 0; i < MS_REGISTRY_SHARDS; i++)
		assert_true(hits[i] > 100);
}

static bool has(const uint64_t *refs, size_t n, uint64_t ref)
{
	for (size_t i = 0; i < n; i++)
		if (refs[i] == ref)
			return true;
	return false;
}

static void test_add_del_devices(void **state)
{
	(void)state;
	ms_registry *r = ms_reg_create();
	uint64_t refs[16];
	assert_int_equal(ms_reg_users(r), 0);
	assert_int_equal(ms_reg_lookup(r, 42, refs, 16), 0);

	/* One device. */
	ms_reg_add(r, 42, 0x100);
	assert_int_equal(ms_reg_users(r), 1);
	assert_int_equal(ms_reg_lookup(r, 42, refs, 16), 1);
	assert_int_equal(refs[0], 0x100);

	/* Up to 5 devices: inline (2) then spilled to the heap. */
	for (uint64_t d = 1; d < 5; d++)
		ms_reg_add(r, 42, 0x100 + d);
	assert_int_equal(ms_reg_users(r), 1);
	memset(refs, 0, sizeof(refs));
	assert_int_equal(ms_reg_lookup(r, 42, refs, 16), 5);
	for (uint64_t d = 0; d < 5; d++)
		assert_true(has(refs, 5, 0x100 + d));

	/* The copy is bounded by max; the return value is the full count. */
	uint64_t small[2] = { 0, 0 };
	uint64_t guard[2] = { 0xabcd, 0xabcd };
	struct {
		uint64_t a[2];
		uint64_t g[2];
	} buf = { { 0, 0 }, { 0xabcd, 0xabcd } };
	assert_int_equal(ms_reg_lookup(r, 42, buf.a, 2), 5);
	assert_true(has(refs, 5, buf.a[0]) && has(refs, 5, buf.a[1]));
	assert_memory_equal(buf.g, guard, sizeof(guard));
	assert_int_equal(ms_reg_lookup(r, 42, small, 0), 5);
	assert_int_equal(small[0], 0);

	/* The lookup is a copy: changing the registry later does not touch it. */
	uint64_t snap[16];
	size_t sn = ms_reg_lookup(r, 42, snap, 16);
	ms_reg_del(r, 42, 0x102);
	assert_int_equal(sn, 5);
	assert_true(has(snap, 5, 0x102));
	assert_int_equal(ms_reg_lookup(r, 42, refs, 16), 4);
	assert_false(has(refs, 4, 0x102));

	/* Removing a handle the user does not have changes nothing. */
	ms_reg_del(r, 42, 0x999);
	ms_reg_del(r, 43, 0x100);
	assert_int_equal(ms_reg_lookup(r, 42, refs, 16), 4);
	assert_int_equal(ms_reg_users(r), 1);

	/* Other users are independent. */
	ms_reg_add(r, 7, 0x700);
	ms_reg_add(r, 0, 0x1);  /* uid 0 is a valid id */
	assert_int_equal(ms_reg_users(r), 3);
	assert_int_equal(ms_reg_lookup(r, 0, refs, 16), 1);
	assert_int_equal(refs[0], 0x1);
	assert_int_equal(ms_reg_lookup(r, 7, refs, 16), 1);
	assert_int_equal(refs[0], 0x700);

	/* Remove the rest of 42's devices in another order: the user goes away
	 * with the last. */
	uint64_t order[4] = { 0x104, 0x100, 0x103, 0x101 };
	for (int i = 0; i < 4; i++) {
		ms_reg_del(r, 42, order[i]);
		assert_int_equal(ms_reg_lookup(r, 42, refs, 16), (size_t)(3 - i));
		for (int j = i + 1; j < 4; j++)
			assert_true(has(refs, (size_t)(3 - i), order[j]));
	}
	assert_int_equal(ms_reg_users(r), 2);

	/* Same user again after being gone. */
	ms_reg_add(r, 42, 0x200);
	assert_int_equal(ms_reg_lookup(r, 42, refs, 16), 1);
	assert_int_equal(refs[0], 0x200);
	assert_int_equal(ms_reg_users(r), 3);
	/* Destroy with users still present frees them (ASan/LSan checks). */
	ms_reg_destroy(r);
	ms_reg_destroy(NULL);
}

static void test_many_users(void **state)
{
	(void)state;
	ms_registry *r = ms_reg_create();
	enum { U = 5000 };
	for (uint64_t u = 1; u <= U; u++) {
		ms_reg_add(r, u * 1000003, u);
		if (u % 3 == 0)
			ms_reg_add(r, u * 1000003, u + (1ull << 40));
	}
	assert_int_equal(ms_reg_users(r), U);
	uint64_t refs[4];
	for (uint64_t u = 1; u <= U; u++) {
		size_t n = ms_reg_lookup(r, u * 1000003, refs, 4);
		assert_int_equal(n, u % 3 == 0 ? 2 : 1);
		assert_true(has(refs, n, u));
	}
	for (uint64_t u = 1; u <= U; u += 2)
		ms_reg_del(r, u * 1000003, u);
	/* Odd users that were multiples of 3 keep their second device. */
	size_t expect = 0;
	for (uint64_t u = 1; u <= U; u++)
		if (u % 2 == 0 || u % 3 == 0)
			expect++;
	assert_int_equal(ms_reg_users(r), expect);
	ms_reg_destroy(r);
}

/* The full id range is valid (PROTOCOL.md: sub up to 2^64-1). */
static int reg_setup(void **state)
{
	*state = ms_reg_create();
	return *state ? 0 : -1;
}

static int reg_teardown(void **state)
{
	ms_reg_destroy(*state);
	return 0;
}

static void test_uid_max(void **state)
{
	ms_registry *r = *state;
	uint64_t refs[4];
	ms_reg_add(r, UINT64_MAX, 0x11);
	assert_int_equal(ms_reg_users(r), 1);
	assert_int_equal(ms_reg_lookup(r, UINT64_MAX, refs, 4), 1);
	assert_int_equal(refs[0], 0x11);
	/* Other users of the same shard must not disturb it. */
	uint32_t s = ms_reg_shard(UINT64_MAX);
	int added = 0;
	for (uint64_t u = 1; added < 20; u++)
		if (ms_reg_shard(u) == s) {
			ms_reg_add(r, u, u);
			added++;
		}
	assert_int_equal(ms_reg_users(r), 21);
	assert_int_equal(ms_reg_lookup(r, UINT64_MAX, refs, 4), 1);
	assert_int_equal(refs[0], 0x11);
	ms_reg_del(r, UINT64_MAX, 0x11);
	assert_int_equal(ms_reg_lookup(r, UINT64_MAX, refs, 4), 0);
	assert_int_equal(ms_reg_users(r), 20);
}

/* ---- concurrent readers ------------------------------------------------------- */

/* The writer gives user u only handles (u << 16 | k), k < MAXDEV, each at
 * most once. A reader must never see a foreign handle, a duplicate, or more
 * devices than the writer ever gives one user. */
enum { NUSERS = 64, MAXDEV = 6, READERS = 3 };

static ms_registry *creg;
static atomic_int stop_flag;
static atomic_long reader_bad;
static atomic_long reader_hits;

static uint64_t uids[NUSERS];

/* Half the users share one shard (lock and map contention, backward shifts
 * under readers); the rest spread over the others. */
static void init_uids(void)
{
	int n = 0;
	uint32_t s = ms_reg_shard(1);
	for (uint64_t u = 1; n < NUSERS / 2; u++)
		if (ms_reg_shard(u) == s)
			uids[n++] = u;
	for (uint64_t u = 1000000; n < NUSERS; u += 7919)
		uids[n++] = u;
}

static uint64_t uid_of(int i)
{
	return uids[i];
}

static void *reader(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;
	uint64_t refs[MAXDEV + 4];
	long bad = 0, hits = 0, iters = 0;
	while (!atomic_load_explicit(&stop_flag, memory_order_relaxed) || iters < 1000) {
		int i = (int)(rand_r(&seed) % NUSERS);
		uint64_t u = uid_of(i);
		for (size_t j = 0; j < MAXDEV + 4; j++)
			refs[j] = 0xfeedull;
		size_t n = ms_reg_lookup(creg, u, refs, MAXDEV + 4);
		if (n > MAXDEV)
			bad++;
		size_t m = n < MAXDEV + 4 ? n : MAXDEV + 4;
		for (size_t a = 0; a < m; a++) {
			if ((refs[a] >> 16) != (u & 0xffffffffffffull) || (refs[a] & 0xffff) >= MAXDEV)
				bad++;
			for (size_t b = a + 1; b < m; b++)
				if (refs[a] == refs[b])
					bad++;
		}
		for (size_t j = m; j < MAXDEV + 4; j++)
			if (refs[j] != 0xfeedull)
				bad++; /* wrote past the count */
		if (n)
			hits++;
		if (ms_reg_users(creg) > NUSERS)
			bad++;
		iters++;
	}
	atomic_fetch_add(&reader_bad, bad);
	atomic_fetch_add(&reader_hits, hits);
	return NULL;
}

static uint64_t handle(int i, int k)
{
	return (uid_of(i) & 0xffffffffffffull) << 16 | (uint64_t)k;
}

static void test_concurrent_readers(void **state)
{
	(void)state;
	init_uids();
	creg = ms_reg_create();
	atomic_store(&stop_flag, 0);
	atomic_store(&reader_bad, 0);
	atomic_store(&reader_hits, 0);
	pthread_t th[READERS];
	for (int t = 0; t < READERS; t++)
		assert_int_equal(pthread_create(&th[t], NULL, reader, (void *)(uintptr_t)(t + 1)), 0);

	/* The writer (this thread): per user a set of present devices; add or
	 * remove at random, crossing the inline/heap boundary often. */
	bool present[NUSERS][MAXDEV];
	memset(present, 0, sizeof(present));
	int count[NUSERS] = { 0 };
	unsigned seed = 2024;
	for (long op = 0; op < 400000; op++) {
		int i = (int)(rand_r(&seed) % NUSERS);
		int k = (int)(rand_r(&seed) % MAXDEV);
		if (present[i][k]) {
			ms_reg_del(creg, uid_of(i), handle(i, k));
			present[i][k] = false;
			count[i]--;
		} else {
			ms_reg_add(creg, uid_of(i), handle(i, k));
			present[i][k] = true;
			count[i]++;
		}
		if (op % 50000 == 0) {
			/* The writer's own view is exact. */
			uint64_t refs[MAXDEV];
			size_t n = ms_reg_lookup(creg, uid_of(i), refs, MAXDEV);
			assert_int_equal(n, (size_t)count[i]);
			for (size_t j = 0; j < n; j++)
				assert_true(present[i][refs[j] & 0xffff]);
		}
	}
	atomic_store(&stop_flag, 1);
	for (int t = 0; t < READERS; t++)
		pthread_join(th[t], NULL);
	assert_int_equal(atomic_load(&reader_bad), 0);
	assert_true(atomic_load(&reader_hits) > 0);

	size_t users = 0;
	for (int i = 0; i < NUSERS; i++) {
		uint64_t refs[MAXDEV];
		size_t n = ms_reg_lookup(creg, uid_of(i), refs, MAXDEV);
		assert_int_equal(n, (size_t)count[i]);
		if (count[i])
			users++;
	}
	assert_int_equal(ms_reg_users(creg), users);
	ms_reg_destroy(creg);
	creg = NULL;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shard_range),
		cmocka_unit_test(test_add_del_devices),
		cmocka_unit_test(test_many_users),
		cmocka_unit_test(test_concurrent_readers),
		cmocka_unit_test_setup_teardown(test_uid_max, reg_setup, reg_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
