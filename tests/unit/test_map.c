/* ms_map (u64 → u64, linear probing, backward-shift deletion) against a
 * reference model under randomized put/get/del with many deletes, the
 * probe-run invariant after every operation, iteration positions, and
 * ms_hash_bytes (never 0). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "shard/map.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	/* xorshift64*: deterministic, so a failure reproduces. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static uint32_t home_of(const ms_map *m, uint64_t key)
{
	return (uint32_t)ms_map_mix(key) & (m->cap - 1);
}

/* Structural invariants: len == occupied slots; load <= 3/4; every key is
 * reachable, i.e. no empty slot between its home and its slot (cyclically). */
static void check_invariants(const ms_map *m)
{
	uint32_t n = m->len - m->has_zero; /* entries in the table */
	/* No table without entries, none kept for a crowd that has gone:
	 * 1/8 load at least above the smallest table. */
	assert_true((n == 0) == (m->cap == 0));
	if (m->cap == 0) {
		assert_null(m->slots);
		return;
	}
	assert_true(m->cap <= 8 || (uint64_t)n * 8 >= m->cap);
	assert_true((m->cap & (m->cap - 1)) == 0);
	uint32_t occupied = 0;
	for (uint32_t i = 0; i < m->cap; i++) {
		if (!m->slots[i].key)
			continue;
		occupied++;
		uint32_t mask = m->cap - 1;
		for (uint32_t j = home_of(m, m->slots[i].key); j != i; j = (j + 1) & mask)
			assert_true(m->slots[j].key != 0);
	}
	assert_int_equal(occupied, n);
	assert_true((uint64_t)m->len * 4 <= (uint64_t)m->cap * 3);
}

/* ---- reference model: a plain array of (key, val, present) ---------------- */

typedef struct model {
	uint64_t *keys;
	uint64_t *vals;
	bool *present;
	size_t n;
	size_t len;
} model;

static void model_init(model *md, const uint64_t *universe, size_t n)
{
	md->keys = malloc(n * sizeof(uint64_t));
	md->vals = calloc(n, sizeof(uint64_t));
	md->present = calloc(n, sizeof(bool));
	assert_non_null(md->keys);
	assert_non_null(md->vals);
	assert_non_null(md->present);
	memcpy(md->keys, universe, n * sizeof(uint64_t));
	md->n = n;
	md->len = 0;
}

static void model_fini(model *md)
{
	free(md->keys);
	free(md->vals);
	free(md->present);
}

static void compare_all(const ms_map *m, const model *md)
{
	assert_int_equal(m->len, md->len);
	for (size_t i = 0; i < md->n; i++) {
		uint64_t *v = ms_map_get(m, md->keys[i]);
		if (md->present[i]) {
			assert_non_null(v);
			assert_int_equal(*v, md->vals[i]);
		} else {
			assert_null(v);
		}
	}
}

/* One randomized run over a key universe; del_pct = share of deletes. */
static void random_run(const uint64_t *universe, size_t n, int ops, int del_pct, int check_every)
{
	ms_map m;
	ms_map_init(&m);
	model md;
	model_init(&md, universe, n);
	for (int op = 0; op < ops; op++) {
		size_t i = (size_t)(rnd() % n);
		uint64_t k = md.keys[i];
		int dice = (int)(rnd() % 100);
		if (dice < del_pct) {
			uint64_t got = 0xdead;
			bool was = ms_map_del(&m, k, &got);
			assert_int_equal(was, md.present[i]);
			if (was) {
				assert_int_equal(got, md.vals[i]);
				md.present[i] = false;
				md.len--;
			} else {
				assert_int_equal(got, 0xdead); /* untouched on a miss */
			}
			/* Deleting twice is a miss. */
			assert_false(ms_map_del(&m, k, NULL));
		} else if (dice < del_pct + 15) {
			uint64_t *v = ms_map_get(&m, k);
			if (md.present[i]) {
				assert_non_null(v);
				assert_int_equal(*v, md.vals[i]);
			} else {
				assert_null(v);
			}
		} else {
			uint64_t v = rnd();
			ms_map_put(&m, k, v);
			if (!md.present[i]) {
				md.present[i] = true;
				md.len++;
			}
			md.vals[i] = v;
		}
		if (check_every && op % check_every == 0) {
			check_invariants(&m);
			compare_all(&m, &md);
		}
	}
	check_invariants(&m);
	compare_all(&m, &md);
	/* Drain completely: every remaining key deletes once, map ends empty. */
	for (size_t i = 0; i < n; i++) {
		uint64_t got = 0;
		assert_int_equal(ms_map_del(&m, md.keys[i], &got), md.present[i]);
		if (md.present[i])
			assert_int_equal(got, md.vals[i]);
		md.present[i] = false;
	}
	assert_int_equal(m.len, 0);
	check_invariants(&m);
	const ms_map_slot *sl;
	assert_int_equal(ms_map_next(&m, 0, &sl), 0);
	ms_map_fini(&m);
	model_fini(&md);
}

static void test_empty(void **state)
{
	(void)state;
	ms_map m;
	ms_map_init(&m);
	assert_null(ms_map_get(&m, 1));
	assert_false(ms_map_del(&m, 1, NULL));
	const ms_map_slot *sl = NULL;
	assert_int_equal(ms_map_next(&m, 0, &sl), 0);
	ms_map_fini(&m);
	ms_map_fini(&m); /* idempotent after fini (zeroed) */
}

/* A map that held a crowd gives its table back as the crowd leaves. */
static void test_shrinks_and_frees(void **state)
{
	(void)state;
	ms_map m;
	ms_map_init(&m);
	for (uint64_t k = 1; k <= 1000; k++)
		ms_map_put(&m, k, k * 3);
	assert_int_equal(m.cap, 2048);
	ms_map_put(&m, 0, 7); /* key 0 lives beside the table */
	for (uint64_t k = 1000; k > 10; k--) {
		assert_true(ms_map_del(&m, k, NULL));
		check_invariants(&m);
	}
	assert_int_equal(m.cap, 64); /* 10 entries: under 1/8 of 128 */
	for (uint64_t k = 1; k <= 10; k++)
		assert_int_equal(*ms_map_get(&m, k), k * 3);
	for (uint64_t k = 1; k <= 10; k++)
		assert_true(ms_map_del(&m, k, NULL));
	assert_int_equal(m.cap, 0);
	assert_null(m.slots);
	assert_int_equal(*ms_map_get(&m, 0), 7);
	ms_map_put(&m, 5, 1); /* and grows again from nothing */
	assert_int_equal(*ms_map_get(&m, 5), 1);
	check_invariants(&m);
	ms_map_fini(&m);
}

static void test_put_get_replace_del(void **state)
{
	(void)state;
	ms_map m;
	ms_map_init(&m);
	for (uint64_t k = 1; k <= 1000; k++)
		ms_map_put(&m, k, k * 10);
	assert_int_equal(m.len, 1000);
	for (uint64_t k = 1; k <= 1000; k++) {
		uint64_t *v = ms_map_get(&m, k);
		assert_non_null(v);
		assert_int_equal(*v, k * 10);
	}
	/* Replace keeps len. */
	ms_map_put(&m, 500, 7);
	assert_int_equal(m.len, 1000);
	assert_int_equal(*ms_map_get(&m, 500), 7);
	/* The value pointer is writable in place. */
	*ms_map_get(&m, 501) = 99;
	assert_int_equal(*ms_map_get(&m, 501), 99);
	/* Extreme keys. */
	ms_map_put(&m, UINT64_MAX, 1);
	ms_map_put(&m, 1ull << 63, 2);
	assert_int_equal(*ms_map_get(&m, UINT64_MAX), 1);
	assert_int_equal(*ms_map_get(&m, 1ull << 63), 2);
	check_invariants(&m);
	for (uint64_t k = 1; k <= 1000; k += 2)
		assert_true(ms_map_del(&m, k, NULL));
	check_invariants(&m);
	for (uint64_t k = 1; k <= 1000; k++)
		assert_int_equal(ms_map_get(&m, k) != NULL, k % 2 == 0);
	assert_int_equal(m.len, 502);
	ms_map_fini(&m);
}

/* Keys with a chosen home slot in a map of capacity 8 (the first growth). */
static size_t keys_with_home(uint32_t home, uint64_t *out, size_t want, uint64_t start)
{
	size_t n = 0;
	for (uint64_t k = start; n < want; k++)
		if (((uint32_t)ms_map_mix(k) & 7) == home)
			out[n++] = k;
	return n;
}

/* A run that wraps from the last slot to the first: deleting its head
 * shifts every member back across the wrap (the cyclic "between" case). */
static void test_backward_shift_wraparound(void **state)
{
	(void)state;
	uint64_t h7[3], h0[1], h6[1];
	keys_with_home(7, h7, 3, 1);
	keys_with_home(0, h0, 1, 1);
	keys_with_home(6, h6, 1, 1);

	for (int victim = 0; victim < 5; victim++) {
		ms_map m;
		ms_map_init(&m);
		/* 5 keys stay under 3/4 of 8: no growth. Layout:
		 * 6:h6  7:h7[0]  0:h7[1]  1:h7[2]  2:h0[0] */
		uint64_t all[5] = { h6[0], h7[0], h7[1], h7[2], h0[0] };
		for (int i = 0; i < 5; i++)
			ms_map_put(&m, all[i], all[i] ^ 0x55);
		assert_int_equal(m.cap, 8);
		assert_int_equal(m.slots[6].key, h6[0]);
		assert_int_equal(m.slots[7].key, h7[0]);
		assert_int_equal(m.slots[0].key, h7[1]);
		assert_int_equal(m.slots[1].key, h7[2]);
		assert_int_equal(m.slots[2].key, h0[0]);
		check_invariants(&m);

		uint64_t got = 0;
		assert_true(ms_map_del(&m, all[victim], &got));
		assert_int_equal(got, all[victim] ^ 0x55);
		check_invariants(&m);
		assert_int_equal(m.len, 4);
		for (int i = 0; i < 5; i++) {
			uint64_t *v = ms_map_get(&m, all[i]);
			if (i == victim) {
				assert_null(v);
			} else {
				assert_non_null(v);
				assert_int_equal(*v, all[i] ^ 0x55);
			}
		}
		/* No slot is left holding a stale copy of a moved key. */
		int copies = 0;
		for (uint32_t s = 0; s < m.cap; s++)
			for (int i = 0; i < 5; i++)
				if (m.slots[s].key == all[i])
					copies++;
		assert_int_equal(copies, 4);
		ms_map_fini(&m);
	}
}

/* Deleting from the middle of a run must not move an entry before its home. */
static void test_backward_shift_keeps_homes(void **state)
{
	(void)state;
	uint64_t h2[2], h3[2];
	keys_with_home(2, h2, 2, 1);
	keys_with_home(3, h3, 2, 1);
	ms_map m;
	ms_map_init(&m);
	/* 2:h2[0] 3:h2[1] 4:h3[0] 5:h3[1] */
	ms_map_put(&m, h2[0], 1);
	ms_map_put(&m, h2[1], 2);
	ms_map_put(&m, h3[0], 3);
	ms_map_put(&m, h3[1], 4);
	assert_int_equal(m.slots[4].key, h3[0]);
	assert_true(ms_map_del(&m, h2[0], NULL));
	/* h2[1] → 2; h3[0] → 3; h3[1] → 4; slot 5 empty. */
	assert_int_equal(m.slots[2].key, h2[1]);
	assert_int_equal(m.slots[3].key, h3[0]);
	assert_int_equal(m.slots[4].key, h3[1]);
	assert_int_equal(m.slots[5].key, 0);
	check_invariants(&m);
	ms_map_fini(&m);
}

static void test_random_small_universe(void **state)
{
	(void)state;
	/* 24 keys in maps of 8..32 slots: long runs, constant churn. */
	uint64_t u[24];
	for (int i = 0; i < 24; i++)
		u[i] = (uint64_t)i + 1;
	rng_state = 12345;
	random_run(u, 24, 200000, 45, 1);
}

static void test_random_colliding_universe(void **state)
{
	(void)state;
	/* Keys sharing few home slots modulo 64, so runs overlap and wrap. */
	uint64_t u[40];
	size_t n = 0;
	for (uint64_t k = 1; n < 40; k++) {
		uint32_t h = (uint32_t)ms_map_mix(k) & 63;
		if (h == 0 || h == 62 || h == 63 || h == 31)
			u[n++] = k;
	}
	rng_state = 777;
	random_run(u, n, 200000, 50, 1);
}

static void test_random_large(void **state)
{
	(void)state;
	enum { N = 20000 };
	uint64_t *u = malloc(N * sizeof(uint64_t));
	assert_non_null(u);
	rng_state = 4242;
	for (int i = 0; i < N; i++) {
		uint64_t k;
		do
			k = rnd();
		while (k == 0);
		u[i] = k;
	}
	random_run(u, N, 400000, 40, 50000);
	/* Delete-heavy: the map shrinks to near empty and refills. */
	random_run(u, 2000, 300000, 70, 25000);
	free(u);
}

/* Iteration visits every key exactly once; positions are strictly
 * increasing, and resuming from a saved position continues where it was
 * (presence cursors). */
static void test_iteration_positions(void **state)
{
	(void)state;
	ms_map m;
	ms_map_init(&m);
	enum { N = 777 };
	for (uint64_t k = 1; k <= N; k++)
		ms_map_put(&m, k * 0x9e3779b97f4a7c15ull, k);
	for (uint64_t k = 1; k <= N; k += 3)
		assert_true(ms_map_del(&m, k * 0x9e3779b97f4a7c15ull, NULL));
	uint32_t expect = m.len;

	char *seen = calloc(N + 1, 1);
	assert_non_null(seen);
	uint32_t count = 0, last = 0;
	const ms_map_slot *sl;
	for (uint32_t p = 0; (p = ms_map_next(&m, p, &sl)) != 0;) {
		assert_true(p > last);
		assert_true(p <= m.cap);
		assert_ptr_equal(sl, &m.slots[p - 1]);
		last = p;
		assert_true(sl->val >= 1 && sl->val <= N);
		assert_int_equal(seen[sl->val], 0);
		seen[sl->val] = 1;
		count++;
	}
	assert_int_equal(count, expect);

	/* Paged: 10 at a time, saving the position like a cursor. */
	memset(seen, 0, N + 1);
	uint32_t pos = 0, paged = 0;
	for (;;) {
		uint32_t got = 0, p = pos;
		while (got < 10 && (p = ms_map_next(&m, p, &sl)) != 0) {
			assert_int_equal(seen[sl->val], 0);
			seen[sl->val] = 1;
			got++;
			pos = p;
		}
		paged += got;
		if (got < 10 || p == 0)
			break;
	}
	assert_int_equal(paged, expect);
	/* A position past the end yields nothing. */
	assert_int_equal(ms_map_next(&m, m.cap, &sl), 0);
	assert_int_equal(ms_map_next(&m, m.cap + 5, &sl), 0);
	free(seen);
	ms_map_fini(&m);
}

static void test_hash_bytes(void **state)
{
	(void)state;
	/* Deterministic; depends on every byte and the length. */
	assert_int_equal(ms_hash_bytes("clan:1", 6), ms_hash_bytes("clan:1", 6));
	assert_true(ms_hash_bytes("clan:1", 6) != ms_hash_bytes("clan:2", 6));
	assert_true(ms_hash_bytes("a", 1) != ms_hash_bytes("a\0", 2));
	assert_true(ms_hash_bytes("", 0) != 0);
	/* FNV-1a 64 then fmix64: reference values computed independently. */
	assert_int_equal(ms_hash_bytes("", 0), ms_map_mix(0xcbf29ce484222325ull));
	uint64_t h = 0xcbf29ce484222325ull;
	const char *s = "clan:123";
	for (size_t i = 0; s[i]; i++)
		h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
	assert_int_equal(ms_hash_bytes(s, strlen(s)), ms_map_mix(h));
	/* Pinned value: tests/integration/test_chat.py ports this hash to
	 * compute stream owners and asserts the same constant. */
	assert_int_equal(ms_hash_bytes(s, strlen(s)), 0x5ead39ca63b5ece3ull);

	/* An input whose FNV-1a 64 is exactly 0 (so the mixer gives 0 too):
	 * the result must still be non-zero (1 by the documented rule). */
	static const uint8_t zero_fnv[8] = { 0xd5, 0x6b, 0xb9, 0x53, 0x42, 0x87, 0x08, 0x36 };
	uint64_t z = 0xcbf29ce484222325ull;
	for (int i = 0; i < 8; i++)
		z = (z ^ zero_fnv[i]) * 0x100000001b3ull;
	assert_int_equal(z, 0); /* the premise */
	assert_int_equal(ms_hash_bytes(zero_fnv, 8), 1);

	/* Many random inputs: never 0, and spread across the 128 shards. */
	uint32_t shards[128] = { 0 };
	rng_state = 99;
	for (int i = 0; i < 100000; i++) {
		uint8_t buf[32];
		size_t n = 4 + (size_t)(rnd() % (sizeof(buf) - 4)); /* distinct inputs */
		for (size_t j = 0; j < n; j++)
			buf[j] = (uint8_t)rnd();
		uint64_t v = ms_hash_bytes(buf, n);
		assert_true(v != 0);
		shards[v % 128]++;
	}
	for (int i = 0; i < 128; i++)
		assert_true(shards[i] > 500 && shards[i] < 1100);
	/* The mixer is a bijection with mix(0) == 0: 0 only comes from 0. */
	assert_int_equal(ms_map_mix(0), 0);
	for (uint64_t k = 1; k < 100000; k++)
		assert_true(ms_map_mix(k) != 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_put_get_replace_del),
		cmocka_unit_test(test_shrinks_and_frees),
		cmocka_unit_test(test_backward_shift_wraparound),
		cmocka_unit_test(test_backward_shift_keeps_homes),
		cmocka_unit_test(test_random_small_universe),
		cmocka_unit_test(test_random_colliding_universe),
		cmocka_unit_test(test_random_large),
		cmocka_unit_test(test_iteration_positions),
		cmocka_unit_test(test_hash_bytes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
