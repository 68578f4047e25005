/*
 * Unit tests for net/limits.h: address keys (IPv4 and its IPv4-mapped IPv6
 * form are one key), the connection-limit table (limit, release, empty
 * keys removed, growth, and exactness under a multi-threaded burst: run in
 * the TSan build too), the automatic --max-handshakes-per-ip, the token
 * bucket (burst, refill, cap, clock wrap, giving back, abuse window), the
 * buckets shared by a key's holders and the origin list.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>

#include <cmocka.h>

#include "net/limits.h"

static ms_lkey key4(const char *a)
{
	struct sockaddr_in s = { .sin_family = AF_INET, .sin_port = htons(1234) };
	assert_int_equal(inet_pton(AF_INET, a, &s.sin_addr), 1);
	ms_lkey k;
	assert_true(ms_lkey_addr(&k, (struct sockaddr *)&s));
	return k;
}

static ms_lkey key6(const char *a)
{
	struct sockaddr_in6 s = { .sin6_family = AF_INET6, .sin6_port = htons(99) };
	assert_int_equal(inet_pton(AF_INET6, a, &s.sin6_addr), 1);
	ms_lkey k;
	assert_true(ms_lkey_addr(&k, (struct sockaddr *)&s));
	return k;
}

static void test_keys(void **st)
{
	ms_lkey a = key4("192.0.2.7"), b = key6("::ffff:192.0.2.7"), c = key4("192.0.2.8");
	assert_memory_equal(&a, &b, sizeof(a));
	assert_memory_not_equal(&a, &c, sizeof(a));
	char t[64];
	assert_string_equal(ms_lkey_addr_text(&a, t, sizeof(t)), "192.0.2.7");
	ms_lkey d = key6("2001:db8::1");
	assert_string_equal(ms_lkey_addr_text(&d, t, sizeof(t)), "2001:db8::1");
	struct sockaddr un = { .sa_family = AF_UNIX };
	assert_false(ms_lkey_addr(&d, &un));
}

static void test_climit(void **st)
{
	ms_climit *t = ms_climit_create(2);
	ms_lkey a = key4("10.0.0.1"), a6 = key6("::ffff:10.0.0.1"), b = key4("10.0.0.2");
	assert_int_equal(ms_climit_acquire(t, &a), 0);
	assert_int_equal(ms_climit_acquire(t, &a6), 0); /* same address */
	assert_int_equal(ms_climit_acquire(t, &a), -EBUSY);
	assert_int_equal(ms_climit_count(t, &a), 2);   /* a refusal counts nothing */
	assert_int_equal(ms_climit_acquire(t, &b), 0); /* others unaffected */
	assert_int_equal(ms_climit_keys(t), 2);
	ms_climit_release(t, &a);
	assert_int_equal(ms_climit_acquire(t, &a), 0);
	ms_climit_release(t, &a);
	ms_climit_release(t, &a);
	ms_climit_release(t, &b);
	assert_int_equal(ms_climit_count(t, &a), 0);
	assert_int_equal(ms_climit_keys(t), 0); /* empty entries are freed */
	size_t empty = ms_climit_bytes(t);
	/* Users: many keys (the shards' tables grow with them), then all
	 * released: the memory must come back to the empty figure, which a
	 * table that never shrinks, or an entry never freed, would miss. */
	for (uint64_t u = 1; u <= 20000; u++) {
		ms_lkey k = ms_lkey_uid(u);
		assert_int_equal(ms_climit_acquire(t, &k), 0);
	}
	assert_int_equal(ms_climit_keys(t), 20000);
	assert_true(ms_climit_bytes(t) > empty + 20000 * 2 * sizeof(void *));
	for (uint64_t u = 1; u <= 20000; u++) {
		ms_lkey k = ms_lkey_uid(u);
		assert_int_equal(ms_climit_count(t, &k), 1);
		ms_climit_release(t, &k);
	}
	assert_int_equal(ms_climit_keys(t), 0);
	assert_int_equal(ms_climit_bytes(t), empty); /* and shrink back when they go */
	ms_climit_destroy(t);
}

/* Four threads race to take one key 1000 times each, giving back what
 * they got on even turns and keeping it on odd ones: exactly `limit` end
 * up kept (one more would mean the check and the increment raced). */
#define THREADS 4
#define LIMIT 7

typedef struct race {
	ms_climit *t;
	int got;
} race;

static void *racer(void *arg)
{
	race *r = arg;
	ms_lkey k = ms_lkey_uid(42);
	for (int i = 0; i < 1000; i++) {
		if (ms_climit_acquire(r->t, &k) != 0)
			continue;
		if (i % 2 == 0)
			ms_climit_release(r->t, &k);
		else
			r->got++; /* kept */
	}
	return NULL;
}

static void test_climit_race(void **st)
{
	ms_climit *t = ms_climit_create(LIMIT);
	race r[THREADS];
	pthread_t th[THREADS];
	for (int i = 0; i < THREADS; i++) {
		r[i] = (race){ .t = t };
		pthread_create(&th[i], NULL, racer, &r[i]);
	}
	int kept = 0;
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		kept += r[i].got;
	}
	ms_lkey k = ms_lkey_uid(42);
	/* Exactly LIMIT kept: never more, and the slots freed by releases
	 * were taken again until the limit was reached. */
	assert_int_equal(kept, LIMIT);
	assert_int_equal(ms_climit_count(t, &k), LIMIT);
	ms_climit_destroy(t);
}

/* --max-handshakes-per-ip 0: a sixteenth of --max-conns, at least 64 (a
 * small server still takes a burst from one address), at most 8192. */
static void test_handshake_limit(void **st)
{
	assert_int_equal(ms_handshake_limit(0, 100000), 6250);
	assert_int_equal(ms_handshake_limit(0, 20000), 1250);
	assert_int_equal(ms_handshake_limit(0, 200), 64);
	assert_int_equal(ms_handshake_limit(0, 1), 64);
	assert_int_equal(ms_handshake_limit(0, 1u << 22), 8192);
	assert_int_equal(ms_handshake_limit(0, 131088), 8192);
	assert_int_equal(ms_handshake_limit(0, 1040), 65);
	assert_int_equal(ms_handshake_limit(5, 100000), 5); /* given: as given */
	assert_int_equal(ms_handshake_limit(100000, 200), 100000);
}

static void test_bucket(void **st)
{
	ms_bucket b;
	uint32_t now = 1000;
	ms_rate r = ms_rate_msgs(2, 3);
	ms_bucket_init(&b, &r, now);
	/* The burst, then nothing at the same instant. */
	assert_true(ms_bucket_take(&b, &r, 1, now));
	assert_true(ms_bucket_take(&b, &r, 1, now));
	assert_true(ms_bucket_has(&b, &r, 1, now));
	assert_true(ms_bucket_take(&b, &r, 1, now));
	assert_false(ms_bucket_has(&b, &r, 1, now));
	assert_false(ms_bucket_take(&b, &r, 1, now));
	/* 2/s: one token per 500 ms, and not before. */
	assert_false(ms_bucket_take(&b, &r, 1, now + 499));
	assert_true(ms_bucket_take(&b, &r, 1, now + 500));
	assert_false(ms_bucket_take(&b, &r, 1, now + 500));
	/* Partial refills add up. */
	assert_false(ms_bucket_take(&b, &r, 1, now + 750));
	assert_true(ms_bucket_take(&b, &r, 1, now + 1000));
	/* A long pause banks no more than the burst. */
	now += 3600 * 1000;
	int n = 0;
	while (ms_bucket_take(&b, &r, 1, now))
		n++;
	assert_int_equal(n, 3);
	/* The millisecond clock wrapping around is only a difference. */
	r = ms_rate_msgs(1, 1);
	ms_bucket_init(&b, &r, UINT32_MAX - 100);
	assert_true(ms_bucket_take(&b, &r, 1, UINT32_MAX - 100));
	assert_false(ms_bucket_take(&b, &r, 1, UINT32_MAX));
	assert_true(ms_bucket_take(&b, &r, 1, 900)); /* 1001 ms later */
	/* Sustained rate: 10/s over 10 s allows 10 * 10 + burst. */
	r = ms_rate_msgs(10, 5);
	ms_bucket_init(&b, &r, 0);
	n = 0;
	for (uint32_t t = 0; t <= 10000; t += 10)
		n += ms_bucket_take(&b, &r, 1, t);
	assert_int_equal(n, 105);
	/* What is given back can be taken again, but never above the cap. */
	r = ms_rate_msgs(1, 2);
	ms_bucket_init(&b, &r, 0);
	assert_true(ms_bucket_take(&b, &r, 1, 0));
	assert_true(ms_bucket_take(&b, &r, 1, 0));
	ms_bucket_give(&b, &r, 1, 0);
	assert_true(ms_bucket_take(&b, &r, 1, 0));
	assert_false(ms_bucket_has(&b, &r, 1, 0));
	ms_bucket_give(&b, &r, 5, 0);
	assert_true(ms_bucket_take(&b, &r, 2, 0));
	assert_false(ms_bucket_has(&b, &r, 1, 0));
}

/* Bytes: a request takes its size; one larger than what is banked is
 * refused whole and takes nothing. */
static void test_bucket_bytes(void **st)
{
	ms_bucket b;
	ms_rate r = ms_rate_bytes(1000000, 65536); /* 1 MB/s, 64 KiB banked */
	ms_bucket_init(&b, &r, 0);
	assert_true(ms_bucket_take(&b, &r, 65536, 0));
	assert_false(ms_bucket_take(&b, &r, 1, 0));
	/* 10 ms refill 10,000 bytes. */
	assert_false(ms_bucket_take(&b, &r, 10001, 10));
	assert_true(ms_bucket_take(&b, &r, 10000, 10));
	/* A burst larger than the cap never passes. */
	assert_false(ms_bucket_take(&b, &r, 65537, 100000));
	assert_true(ms_bucket_take(&b, &r, 65536, 100000));
	/* The largest byte rate and burst the flags allow stay in range. */
	r = ms_rate_bytes(1u << 30, 1u << 30);
	ms_bucket_init(&b, &r, 0);
	assert_true(ms_bucket_take(&b, &r, 1u << 30, 0));
	assert_true(ms_bucket_take(&b, &r, 1u << 30, 10000));
}

/* A bucket shared by a key's holders: every holder drains the same one,
 * it exists only while the key is held, and a clock read slightly out of
 * order by another thread refills nothing instead of everything. */
static void test_climit_take(void **st)
{
	ms_climit *t = ms_climit_create(8);
	ms_lkey k = ms_lkey_uid(7), other = ms_lkey_uid(8);
	ms_rate r = ms_rate_bytes(1000000, 100000);
	assert_true(ms_climit_take(t, &k, 0, &r, 1u << 30, 0)); /* not held: not limited */
	assert_int_equal(ms_climit_acquire(t, &k), 0);
	assert_int_equal(ms_climit_acquire(t, &k), 0); /* two connections of one user */
	assert_true(ms_climit_take(t, &k, 0, &r, 60000, 1000));
	assert_false(ms_climit_take(t, &k, 0, &r, 60000, 1000)); /* the other holder: same bucket */
	assert_true(ms_climit_take(t, &k, 0, &r, 40000, 1000));
	assert_false(ms_climit_take(t, &k, 0, &r, 1, 999)); /* an earlier clock refills nothing */
	assert_true(ms_climit_take(t, &k, 0, &r, 10000, 1010)); /* 10 ms: 10,000 bytes */
	assert_int_equal(ms_climit_acquire(t, &other), 0);
	assert_true(ms_climit_take(t, &other, 0, &r, 100000, 1010)); /* its own bucket */
	ms_rate one = ms_rate_msgs(1, 1);
	assert_true(ms_climit_take(t, &k, 1, &one, 1, 1010)); /* the key's second bucket */
	assert_false(ms_climit_take(t, &k, 1, &one, 1, 1010));
	assert_true(ms_climit_take(t, &k, 0, &r, 1000, 1011)); /* apart from the first */
	ms_climit_release(t, &k);
	ms_climit_release(t, &k);
	assert_true(ms_climit_take(t, &k, 0, &r, 1u << 30, 2000)); /* gone with its holders */
	ms_climit_release(t, &other);
	ms_climit_destroy(t);
}

static void test_strikes(void **st)
{
	ms_strikes s = { 0, 0 };
	assert_int_equal(ms_strike(&s, 100), 1);
	assert_int_equal(ms_strike(&s, 5000), 2);
	assert_int_equal(ms_strike(&s, 10099), 3);
	/* The window (10 s from its first strike) is over: counting restarts. */
	assert_int_equal(ms_strike(&s, 10100), 1);
	assert_int_equal(ms_strike(&s, 10101), 2);
}

#define ALLOWED(list, o) ms_origin_allowed(list, o, strlen(o))

static void test_origins(void **st)
{
	assert_true(ALLOWED("", "https://evil.example"));
	assert_true(ALLOWED("  ", "https://evil.example"));
	const char *l = "https://chat.example.com, https://app.example.com ,http://localhost:3000";
	assert_true(ALLOWED(l, "https://chat.example.com"));
	assert_true(ALLOWED(l, "https://app.example.com"));
	assert_true(ALLOWED(l, "http://localhost:3000"));
	assert_false(ALLOWED(l, "https://chat.example.co"));
	assert_false(ALLOWED(l, "https://chat.example.com.evil"));
	assert_false(ALLOWED(l, "http://chat.example.com"));
	assert_false(ALLOWED(l, "http://localhost"));
	assert_false(ALLOWED(l, "null"));
	assert_false(ALLOWED(l, ""));
	assert_false(ALLOWED("https://a.example,", "https://b.example"));
	assert_true(ALLOWED("https://a.example,", "https://a.example"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_climit),
		cmocka_unit_test(test_climit_race),
		cmocka_unit_test(test_handshake_limit),
		cmocka_unit_test(test_bucket),
		cmocka_unit_test(test_bucket_bytes),
		cmocka_unit_test(test_climit_take),
		cmocka_unit_test(test_strikes),
		cmocka_unit_test(test_origins),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
