/* Mailboxes: SPSC order under two threads, overflow FIFO, doorbell
 * coalescing and the no-lost-wake-up protocol, messages to oneself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ck_pr.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

#include "core/mailbox.h"

struct sink {
	uint64_t next[4]; /* expected next sequence per sender */
	uint64_t got;
	int bad;
	ms_mbox *self_box; /* for put-while-draining */
	int self_puts;
	uint64_t self_seq;
};

static void check(void *arg, uint32_t from, ms_msg *m)
{
	struct sink *s = arg;
	if (m->a != s->next[from])
		s->bad++;
	s->next[from] = m->a + 1;
	s->got++;
	if (s->self_box && s->self_puts > 0 && from != 1) {
		s->self_puts--;
		ms_msg *r = ms_mbox_put(s->self_box, 1);
		r->a = s->self_seq++;
	}
}

static int wakes;
static void count_wake(void *arg, uint32_t to)
{
	wakes++;
}

static void overflow_keeps_fifo(void **state)
{
	ms_mbox_hub *hub = ms_mbox_hub_create(2, 4);
	ms_mbox *a = ms_mbox_create(hub, 0), *b = ms_mbox_create(hub, 1);
	uint64_t seq = 0;
	/* 10 iterations, 3 messages each, a ring of 4 slots (it holds 3),
	 * nobody draining: 3 batches fit, 7 wait on the overflow list. */
	for (int it = 0; it < 10; it++) {
		for (int k = 0; k < 3; k++)
			ms_mbox_put(a, 1)->a = seq++;
		ms_mbox_flush(a, count_wake, NULL);
	}
	assert_int_equal(ms_mbox_stats_of(a)->batches, 3);
	assert_int_equal(ms_mbox_backlog(a), 7);
	assert_int_equal(ms_mbox_backlog_msgs(a), 21);
	assert_true(ms_mbox_stats_of(a)->overflows > 0);
	struct sink s = { 0 };
	while (s.got < seq) {
		ms_mbox_drain(b, check, &s);
		ms_mbox_flush(a, count_wake, NULL); /* retries the overflow */
	}
	assert_int_equal(s.bad, 0);
	assert_int_equal(s.got, 30);
	assert_int_equal(ms_mbox_backlog(a), 0);
	assert_int_equal(ms_mbox_backlog_msgs(a), 0);
	ms_mbox_hub_destroy(hub, NULL);
}

static void big_batches_chain(void **state)
{
	ms_mbox_hub *hub = ms_mbox_hub_create(2, 4);
	ms_mbox *a = ms_mbox_create(hub, 0), *b = ms_mbox_create(hub, 1);
	for (uint64_t i = 0; i < 1000; i++)
		ms_mbox_put(a, 1)->a = i;
	ms_mbox_flush(a, count_wake, NULL);
	assert_int_equal(ms_mbox_stats_of(a)->batches, 1); /* one slot per target per iteration */
	struct sink s = { 0 };
	assert_int_equal(ms_mbox_drain(b, check, &s), 1000);
	assert_int_equal(s.bad, 0);
	ms_mbox_hub_destroy(hub, NULL);
}

static void doorbell_only_when_sleeping(void **state)
{
	ms_mbox_hub *hub = ms_mbox_hub_create(3, 16);
	ms_mbox *a = ms_mbox_create(hub, 0), *b = ms_mbox_create(hub, 1), *c = ms_mbox_create(hub, 2);
	wakes = 0;
	ms_mbox_put(a, 1)->a = 0;
	ms_mbox_flush(a, count_wake, NULL);
	assert_int_equal(wakes, 0); /* b awake: no doorbell */
	/* b has input pending: it must refuse to sleep. */
	assert_false(ms_mbox_sleep_begin(b));
	struct sink s = { 0 };
	ms_mbox_drain(b, check, &s);
	assert_true(ms_mbox_sleep_begin(b));
	assert_true(ms_mbox_sleep_begin(c));
	/* Two senders, several messages: one doorbell per sleeper, total. */
	ms_mbox_put(a, 1)->a = 1;
	ms_mbox_put(a, 1)->a = 2;
	ms_mbox_put(a, 2)->a = 0;
	ms_mbox_flush(a, count_wake, NULL);
	assert_int_equal(wakes, 2);
	ms_mbox_put(c, 1)->a = 0;
	ms_mbox_flush(c, count_wake, NULL);
	assert_int_equal(wakes, 2); /* b was already woken (flag consumed) */
	ms_mbox_sleep_end(b);
	ms_mbox_sleep_end(c);
	ms_mbox_drain(b, check, &s);
	assert_int_equal(s.got, 4);
	assert_int_equal(s.bad, 0);
	ms_mbox_hub_destroy(hub, NULL);
}

static void self_messages_same_drain(void **state)
{
	ms_mbox_hub *hub = ms_mbox_hub_create(2, 16);
	ms_mbox *a = ms_mbox_create(hub, 0), *b = ms_mbox_create(hub, 1);
	for (uint64_t i = 0; i < 5; i++)
		ms_mbox_put(a, 1)->a = i;
	ms_mbox_flush(a, count_wake, NULL);
	/* While handling a's messages, b puts 3 messages to itself: the same
	 * drain call must handle them too. */
	struct sink s = { .self_box = b, .self_puts = 3 };
	assert_int_equal(ms_mbox_drain(b, check, &s), 8);
	assert_int_equal(s.bad, 0);
	assert_int_equal(ms_mbox_stats_of(b)->msgs_self, 3);
	ms_mbox_hub_destroy(hub, NULL);
}

/* Two threads: a producer flushing small batches into a small ring, a
 * consumer that sleeps (spins on a futex-like flag standing in for the
 * ring's wait) only through the doorbell protocol. A lost wake-up would
 * hang the test (ctest timeout); disorder fails it. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define N_MSGS 100000 /* instrumented: fewer, the interleavings still vary */
#else
#define N_MSGS 2000000
#endif
struct twin {
	ms_mbox_hub *hub;
	ms_mbox *p, *c;
	int bell; /* the "MSG_RING" */
	uint64_t sleeps, wakes;
};

static void ring_bell(void *arg, uint32_t to)
{
	struct twin *t = arg;
	__atomic_store_n(&t->bell, 1, __ATOMIC_SEQ_CST);
}

static void *producer(void *arg)
{
	struct twin *t = arg;
	uint64_t i = 0;
	while (i < N_MSGS) {
		int n = 1 + (int)(i % 97);
		for (int k = 0; k < n && i < N_MSGS; k++)
			ms_mbox_put(t->p, 1)->a = i++;
		ms_mbox_flush(t->p, ring_bell, t);
		if ((i & 1023) == 0)
			sched_yield();
	}
	while (ms_mbox_backlog(t->p)) {
		ms_mbox_flush(t->p, ring_bell, t);
		sched_yield();
	}
	return NULL;
}

static void two_threads_order_and_wakeups(void **state)
{
	static struct twin t;
	t.hub = ms_mbox_hub_create(2, 64);
	t.p = ms_mbox_create(t.hub, 0);
	t.c = ms_mbox_create(t.hub, 1);
	pthread_t th;
	pthread_create(&th, NULL, producer, &t);
	struct sink s = { 0 };
	while (s.got < N_MSGS) {
		if (ms_mbox_drain(t.c, check, &s))
			continue;
		if (ms_mbox_sleep_begin(t.c)) {
			t.sleeps++;
			while (!__atomic_load_n(&t.bell, __ATOMIC_SEQ_CST))
				sched_yield(); /* blocked: only a doorbell ends this */
			__atomic_store_n(&t.bell, 0, __ATOMIC_SEQ_CST);
			t.wakes++;
		}
		ms_mbox_sleep_end(t.c);
	}
	pthread_join(th, NULL);
	assert_int_equal(s.bad, 0);
	assert_int_equal(s.got, N_MSGS);
	ms_mbox_hub_destroy(t.hub, NULL);
}

/* At exit every undelivered message is released exactly once, wherever
 * it waits: in a ring, on the sender's overflow FIFO, in the chain of the
 * current iteration (put, never flushed) or in the chain to oneself. */
static int released;
static void release_one(ms_msg *m)
{
	released++;
	free(m->ptr);
}

static void put_owned(ms_mbox *mb, uint32_t to)
{
	ms_msg *m = ms_mbox_put(mb, to);
	m->ptr = malloc(16);
	assert_non_null(m->ptr);
}

static void destroy_releases_everything_queued(void **state)
{
	ms_mbox_hub *hub = ms_mbox_hub_create(2, 4);
	ms_mbox *a = ms_mbox_create(hub, 0);
	ms_mbox_create(hub, 1); /* never drains */
	/* 10 flushed iterations of 3: 3 batches in the ring, 7 overflowing */
	for (int it = 0; it < 10; it++) {
		for (int k = 0; k < 3; k++)
			put_owned(a, 1);
		ms_mbox_flush(a, count_wake, NULL);
	}
	assert_int_equal(ms_mbox_backlog(a), 7);
	put_owned(a, 1); /* this iteration's, not flushed */
	put_owned(a, 1);
	put_owned(a, 0); /* to oneself, not drained */
	released = 0;
	ms_mbox_hub_destroy(hub, release_one);
	assert_int_equal(released, 30 + 2 + 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(overflow_keeps_fifo),
		cmocka_unit_test(big_batches_chain),
		cmocka_unit_test(doorbell_only_when_sleeping),
		cmocka_unit_test(self_messages_same_drain),
		cmocka_unit_test(two_threads_order_and_wakeups),
		cmocka_unit_test(destroy_releases_everything_queued),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
