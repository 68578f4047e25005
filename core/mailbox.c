/*
 * Mailbox implementation. Batches are heap blocks of up to BATCH_MSGS
 * messages, chained when a target gets more in one iteration; the chain's
 * head is what travels through the ring, so a whole iteration's traffic
 * for one target costs one enqueue. The receiver frees batches after
 * handling them (mimalloc's cross-thread frees are cheap).
 */
#include "core/mailbox.h"

#include <ck_pr.h>
#include <ck_ring.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH_MSGS 128

/* ThreadSanitizer cannot see the ordering ck_ring gets from inline-asm
 * fences, so the hand-off of a batch is annotated: the producer releases the
 * batch before pushing its pointer, the consumer acquires it after popping.
 * (The ring's own slot accesses are suppressed in tests/tsan.supp.) */
#if defined(__SANITIZE_THREAD__)
#define MS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MS_TSAN 1
#endif
#endif
#ifdef MS_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define tsan_acquire(p) __tsan_acquire(p)
#define tsan_release(p) __tsan_release(p)
#else
#define tsan_acquire(p) ((void)(p))
#define tsan_release(p) ((void)(p))
#endif

/* The doorbell flag is a Dekker-style handshake: sequentially consistent
 * atomics (which TSan also understands) rather than ck_pr plus fences. */
static inline void sleeping_set(int *f, int v)
{
	__atomic_store_n(f, v, __ATOMIC_SEQ_CST);
}

static inline int sleeping_get(int *f)
{
	return __atomic_load_n(f, __ATOMIC_SEQ_CST);
}

typedef struct batch {
	struct batch *next;   /* next batch of the same iteration (chain) */
	struct batch *qnext;  /* overflow FIFO link */
	uint32_t n;
	uint32_t chain_msgs;  /* first batch of a chain: messages in the whole chain */
	ms_msg m[BATCH_MSGS];
} batch;

typedef struct pair {
	ck_ring_t ring;
	ck_ring_buffer_t *buf;
} pair;

struct ms_mbox_hub {
	uint32_t n;
	uint32_t slots;
	pair *pairs;          /* [from * n + to] */
	int *sleeping;        /* per receiver */
	int *bell;            /* per receiver: ring fd for MSG_RING */
	ms_mbox **boxes;
	uint32_t arrived[MS_MBOX_ROUNDS]; /* drain barrier: arrivals per round */
	uint32_t rounds_done;             /* rounds every worker has reached */
	uint32_t running;                 /* workers that have not finished draining */
	uint32_t members;                 /* workers the barrier waits for */
};

typedef struct outq {
	batch *head, *tail;   /* this iteration's chain */
	batch *ov_head, *ov_tail; /* overflow FIFO of chains */
	size_t ov_len;
	uint32_t head_msgs;   /* messages in this iteration's chain */
	size_t ov_msgs;       /* messages in the overflow FIFO */
} outq;

struct ms_mbox {
	ms_mbox_hub *hub;
	uint32_t self;
	outq *out;            /* [to] */
	batch *local_head, *local_tail; /* to oneself */
	ms_mbox_stats st;
};

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);
	if (!p) {
		fprintf(stderr, "mezon-sock: out of memory (mailbox)\n");
		abort();
	}
	return p;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

ms_mbox_hub *ms_mbox_hub_create(uint32_t n, uint32_t ring_slots)
{
	ms_mbox_hub *hub = xcalloc(1, sizeof(*hub));
	hub->n = n;
	hub->running = n;
	hub->members = n;
	hub->slots = ring_slots;
	hub->pairs = xcalloc((size_t)n * n, sizeof(pair));
	for (size_t i = 0; i < (size_t)n * n; i++) {
		hub->pairs[i].buf = xcalloc(ring_slots, sizeof(ck_ring_buffer_t));
		ck_ring_init(&hub->pairs[i].ring, ring_slots);
	}
	hub->sleeping = xcalloc(n, sizeof(int));
	hub->bell = xcalloc(n, sizeof(int));
	for (uint32_t i = 0; i < n; i++)
		hub->bell[i] = -1;
	hub->boxes = xcalloc(n, sizeof(ms_mbox *));
	return hub;
}

static void free_chain(batch *b, void (*release)(ms_msg *m))
{
	while (b) {
		batch *next = b->next;
		if (release)
			for (uint32_t i = 0; i < b->n; i++)
				release(&b->m[i]);
		free(b);
		b = next;
	}
}

/* Outbound chains (this iteration's and the overflow FIFO) and the chain
 * to oneself: their messages were never delivered, so release them too. */
static void mbox_free(ms_mbox *mb, void (*release)(ms_msg *m))
{
	for (uint32_t t = 0; t < mb->hub->n; t++) {
		free_chain(mb->out[t].head, release);
		for (batch *c = mb->out[t].ov_head; c;) {
			batch *next = c->qnext;
			free_chain(c, release);
			c = next;
		}
	}
	free_chain(mb->local_head, release);
	mb->hub->boxes[mb->self] = NULL;
	free(mb->out);
	free(mb);
}

void ms_mbox_hub_destroy(ms_mbox_hub *hub, void (*release)(ms_msg *m))
{
	if (!hub)
		return;
	for (size_t i = 0; i < (size_t)hub->n * hub->n; i++) {
		void *p;
		while (ck_ring_dequeue_spsc(&hub->pairs[i].ring, hub->pairs[i].buf, &p))
			free_chain(p, release);
		free(hub->pairs[i].buf);
	}
	for (uint32_t i = 0; i < hub->n; i++)
		if (hub->boxes[i])
			mbox_free(hub->boxes[i], release);
	free(hub->pairs);
	free(hub->sleeping);
	free(hub->bell);
	free(hub->boxes);
	free(hub);
}

void ms_mbox_set_bell(ms_mbox_hub *hub, uint32_t idx, int fd)
{
	__atomic_store_n(&hub->bell[idx], fd, __ATOMIC_RELEASE);
}

int ms_mbox_bell(const ms_mbox_hub *hub, uint32_t idx)
{
	return __atomic_load_n(&hub->bell[idx], __ATOMIC_ACQUIRE);
}

uint32_t ms_mbox_hub_size(const ms_mbox_hub *hub)
{
	return hub->n;
}

ms_mbox *ms_mbox_create(ms_mbox_hub *hub, uint32_t self)
{
	ms_mbox *mb = xcalloc(1, sizeof(*mb));
	mb->hub = hub;
	mb->self = self;
	mb->out = xcalloc(hub->n, sizeof(outq));
	hub->boxes[self] = mb;
	return mb;
}

void ms_mbox_destroy(ms_mbox *mb)
{
	if (mb)
		mbox_free(mb, NULL);
}

static ms_msg *append(batch **head, batch **tail)
{
	batch *t = *tail;
	if (!t || t->n == BATCH_MSGS) {
		batch *b = malloc(sizeof(*b));
		if (!b)
			abort();
		b->next = b->qnext = NULL;
		b->n = 0;
		if (t)
			t->next = b;
		else
			*head = b;
		*tail = t = b;
	}
	ms_msg *m = &t->m[t->n++];
	memset(m, 0, sizeof(*m));
	m->t_push = now_ns();
	return m;
}

ms_msg *ms_mbox_put(ms_mbox *mb, uint32_t to)
{
	if (to == mb->self) {
		mb->st.msgs_self++;
		return append(&mb->local_head, &mb->local_tail);
	}
	outq *q = &mb->out[to];
	mb->st.msgs_out++;
	q->head_msgs++;
	return append(&q->head, &q->tail);
}

void ms_mbox_flush(ms_mbox *mb, void (*wake)(void *arg, uint32_t to), void *arg)
{
	ms_mbox_hub *hub = mb->hub;
	/* Targets with overflow go first even when nothing new was put. */
	for (uint32_t to = 0; to < hub->n; to++) {
		outq *q = &mb->out[to];
		if (!q->head && !q->ov_head)
			continue;
		pair *p = &hub->pairs[(size_t)mb->self * hub->n + to];
		bool pushed = false;
		if (q->head) {
			/* Behind an overflow backlog, a new chain must wait its turn. */
			if (q->ov_tail)
				q->ov_tail->qnext = q->head;
			else
				q->ov_head = q->head;
			q->ov_tail = q->head;
			q->ov_len++;
			q->head->chain_msgs = q->head_msgs;
			q->ov_msgs += q->head_msgs;
			q->head_msgs = 0;
			q->head = q->tail = NULL;
		}
		while (q->ov_head) {
			/* Unlink before the push: once pushed, the batch is the
			 * receiver's (it may already be freed). */
			batch *c = q->ov_head, *next = c->qnext;
			uint32_t msgs = c->chain_msgs; /* read before the push, like next */
			c->qnext = NULL;
			tsan_release(c);
			if (!ck_ring_enqueue_spsc(&p->ring, p->buf, c)) {
				c->qnext = next;
				break;
			}
			q->ov_head = next;
			if (!q->ov_head)
				q->ov_tail = NULL;
			q->ov_len--;
			q->ov_msgs -= msgs;
			mb->st.batches++;
			pushed = true;
		}
		if (q->ov_head)
			mb->st.overflows++;
		if (pushed) {
			ck_pr_fence_memory(); /* push before reading the flag */
			if (sleeping_get(&hub->sleeping[to]) &&
			    __atomic_exchange_n(&hub->sleeping[to], 0, __ATOMIC_SEQ_CST) == 1) {
				mb->st.doorbells++;
				wake(arg, to);
			}
		}
	}
}

static size_t run_chain(batch *c, uint32_t from,
			void (*fn)(void *arg, uint32_t from, ms_msg *m), void *arg)
{
	size_t n = 0;
	while (c) {
		for (uint32_t i = 0; i < c->n; i++)
			fn(arg, from, &c->m[i]);
		n += c->n;
		batch *next = c->next;
		free(c);
		c = next;
	}
	return n;
}

size_t ms_mbox_drain(ms_mbox *mb, void (*fn)(void *arg, uint32_t from, ms_msg *m),
		     void *arg)
{
	ms_mbox_hub *hub = mb->hub;
	size_t n = 0;
	for (uint32_t from = 0; from < hub->n; from++) {
		if (from == mb->self)
			continue;
		pair *p = &hub->pairs[(size_t)from * hub->n + mb->self];
		void *c;
		while (ck_ring_dequeue_spsc(&p->ring, p->buf, &c)) {
			tsan_acquire(c);
			n += run_chain(c, from, fn, arg);
		}
	}
	while (mb->local_head) {
		batch *c = mb->local_head;
		mb->local_head = mb->local_tail = NULL;
		n += run_chain(c, mb->self, fn, arg);
	}
	mb->st.msgs_in += n;
	return n;
}

bool ms_mbox_sleep_begin(ms_mbox *mb)
{
	ms_mbox_hub *hub = mb->hub;
	sleeping_set(&hub->sleeping[mb->self], 1);
	ck_pr_fence_memory(); /* flag before looking at the queues */
	bool pending = mb->local_head != NULL;
	for (uint32_t from = 0; from < hub->n && !pending; from++) {
		if (from == mb->self)
			continue;
		pair *p = &hub->pairs[(size_t)from * hub->n + mb->self];
		pending = ck_ring_size(&p->ring) > 0;
	}
	if (pending)
		sleeping_set(&hub->sleeping[mb->self], 0);
	return !pending;
}

void ms_mbox_sleep_end(ms_mbox *mb)
{
	sleeping_set(&mb->hub->sleeping[mb->self], 0);
}

size_t ms_mbox_backlog_msgs(const ms_mbox *mb)
{
	size_t n = 0;
	for (uint32_t to = 0; to < mb->hub->n; to++)
		n += mb->out[to].ov_msgs;
	return n;
}

size_t ms_mbox_backlog(const ms_mbox *mb)
{
	size_t n = 0;
	for (uint32_t to = 0; to < mb->hub->n; to++)
		n += mb->out[to].ov_len;
	return n;
}

const ms_mbox_stats *ms_mbox_stats_of(const ms_mbox *mb)
{
	return &mb->st;
}

/* ---- drain barrier -------------------------------------------------------- */

/* Round r is complete once every member arrived; whoever sees it first
 * (an arrival, or a member dropping out) publishes it, exactly once. */
static bool try_complete(ms_mbox_hub *hub, uint32_t round)
{
	if (__atomic_load_n(&hub->arrived[round], __ATOMIC_ACQUIRE) <
	    __atomic_load_n(&hub->members, __ATOMIC_ACQUIRE))
		return false;
	uint32_t expect = round;
	return __atomic_compare_exchange_n(&hub->rounds_done, &expect, round + 1, false,
					   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

bool ms_mbox_round_arrive(ms_mbox_hub *hub, uint32_t round)
{
	if (round >= MS_MBOX_ROUNDS)
		return false;
	/* Rounds complete in order: every worker arrives at round r only
	 * after it has seen r - 1 complete. */
	__atomic_add_fetch(&hub->arrived[round], 1, __ATOMIC_ACQ_REL);
	return try_complete(hub, round);
}

void ms_mbox_hub_absent(ms_mbox_hub *hub)
{
	__atomic_sub_fetch(&hub->members, 1, __ATOMIC_ACQ_REL);
	__atomic_sub_fetch(&hub->running, 1, __ATOMIC_ACQ_REL);
	uint32_t r = __atomic_load_n(&hub->rounds_done, __ATOMIC_ACQUIRE);
	if (r < MS_MBOX_ROUNDS)
		try_complete(hub, r); /* the others poll while draining */
}

uint32_t ms_mbox_rounds_done(const ms_mbox_hub *hub)
{
	return __atomic_load_n(&hub->rounds_done, __ATOMIC_ACQUIRE);
}

uint32_t ms_mbox_hub_leave(ms_mbox_hub *hub)
{
	return __atomic_sub_fetch(&hub->running, 1, __ATOMIC_ACQ_REL);
}

uint32_t ms_mbox_hub_running(const ms_mbox_hub *hub)
{
	return __atomic_load_n(&hub->running, __ATOMIC_ACQUIRE);
}
