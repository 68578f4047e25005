/*
 * Connection limit tables, token bucket, origin list.
 *
 * ms_climit: 64 shards, each a mutex over a small chained hash table of
 * (key, count). The lock is taken once per accepted connection (and per
 * /ws upgrade for users) and once when it is freed, never per message, and
 * with 64 shards two workers rarely meet on one: cheaper and simpler than
 * a lock-free table whose entries must also be removed. An entry lives only
 * while its count is non-zero and the bucket arrays shrink as entries go, so
 * memory follows the live connections.
 */
#include "net/limits.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHARDS 64
#define MIN_SLOTS 64 /* buckets per shard; a shard doubles past one entry per
		      * bucket and halves under one per eight */

typedef struct entry {
	struct entry *next;
	ms_lkey key;
	uint32_t count;
	uint8_t has_bucket;             /* bit i: b[i] initialised */
	ms_bucket b[MS_CLIMIT_BUCKETS]; /* ms_climit_take: shared by the key's holders */
} entry;

typedef struct shard {
	pthread_mutex_t lock;
	entry **slots;
	uint32_t nslots; /* power of two */
	uint32_t n;
} __attribute__((aligned(64))) shard; /* one cache line apart: no false sharing */

struct ms_climit {
	uint32_t limit;
	shard s[SHARDS];
};

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);
	if (!p) {
		fprintf(stderr, "mezon-sock: out of memory\n");
		abort();
	}
	return p;
}

bool ms_lkey_addr(ms_lkey *k, const struct sockaddr *sa)
{
	uint8_t a[16];
	if (sa->sa_family == AF_INET) {
		memset(a, 0, 10);
		a[10] = a[11] = 0xff;
		memcpy(a + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		memcpy(a, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	} else {
		return false;
	}
	memcpy(&k->hi, a, 8);
	memcpy(&k->lo, a + 8, 8);
	return true;
}

const char *ms_lkey_addr_text(const ms_lkey *k, char *buf, size_t cap)
{
	uint8_t a[16];
	memcpy(a, &k->hi, 8);
	memcpy(a + 8, &k->lo, 8);
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	if (memcmp(a, mapped, 12) == 0)
		inet_ntop(AF_INET, a + 12, buf, (socklen_t)cap);
	else
		inet_ntop(AF_INET6, a, buf, (socklen_t)cap);
	return buf;
}

static uint64_t hash(const ms_lkey *k)
{
	uint64_t h = (k->hi ^ (k->lo * 0x9e3779b97f4a7c15ull)) * 0xff51afd7ed558ccdull;
	return h ^ (h >> 29);
}

ms_climit *ms_climit_create(uint32_t limit)
{
	ms_climit *t = xcalloc(1, sizeof(*t));
	t->limit = limit ? limit : 1;
	for (int i = 0; i < SHARDS; i++) {
		pthread_mutex_init(&t->s[i].lock, NULL);
		t->s[i].nslots = MIN_SLOTS;
		t->s[i].slots = xcalloc(MIN_SLOTS, sizeof(entry *));
	}
	return t;
}

void ms_climit_destroy(ms_climit *t)
{
	if (!t)
		return;
	for (int i = 0; i < SHARDS; i++) {
		shard *s = &t->s[i];
		for (uint32_t j = 0; j < s->nslots; j++)
			for (entry *e = s->slots[j], *next; e; e = next) {
				next = e->next;
				free(e);
			}
		free(s->slots);
		pthread_mutex_destroy(&s->lock);
	}
	free(t);
}

/* The shard from the hash's top bits, the bucket from its low bits. */
static shard *shard_of(ms_climit *t, uint64_t h)
{
	return &t->s[h >> 58];
}

static entry **find(shard *s, const ms_lkey *k, uint64_t h)
{
	entry **pp = &s->slots[h & (s->nslots - 1)];
	while (*pp && ((*pp)->key.hi != k->hi || (*pp)->key.lo != k->lo))
		pp = &(*pp)->next;
	return pp;
}

/* Rehash into n buckets (a power of two, at least MIN_SLOTS). */
static void resize(shard *s, uint32_t n)
{
	entry **slots = xcalloc(n, sizeof(entry *));
	for (uint32_t j = 0; j < s->nslots; j++)
		for (entry *e = s->slots[j], *next; e; e = next) {
			next = e->next;
			entry **head = &slots[hash(&e->key) & (n - 1)];
			e->next = *head;
			*head = e;
		}
	free(s->slots);
	s->slots = slots;
	s->nslots = n;
}

int ms_climit_acquire(ms_climit *t, const ms_lkey *k)
{
	uint64_t h = hash(k);
	shard *s = shard_of(t, h);
	int ret = 0;
	pthread_mutex_lock(&s->lock);
	entry **pp = find(s, k, h);
	if (*pp) {
		if ((*pp)->count >= t->limit)
			ret = -EBUSY;
		else
			(*pp)->count++;
	} else {
		entry *e = xcalloc(1, sizeof(*e));
		e->key = *k;
		e->count = 1;
		*pp = e;
		if (++s->n > s->nslots)
			resize(s, s->nslots * 2);
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

void ms_climit_release(ms_climit *t, const ms_lkey *k)
{
	uint64_t h = hash(k);
	shard *s = shard_of(t, h);
	pthread_mutex_lock(&s->lock);
	entry **pp = find(s, k, h);
	if (*pp && --(*pp)->count == 0) {
		entry *e = *pp;
		*pp = e->next;
		free(e);
		if (--s->n * 8 < s->nslots && s->nslots > MIN_SLOTS)
			resize(s, s->nslots / 2);
	}
	pthread_mutex_unlock(&s->lock);
}

bool ms_climit_take(ms_climit *t, const ms_lkey *k, unsigned which, const ms_rate *r,
		    uint32_t n, uint32_t now_ms)
{
	uint64_t h = hash(k);
	shard *s = shard_of(t, h);
	bool ok = true;
	pthread_mutex_lock(&s->lock);
	entry *e = *find(s, k, h);
	if (e && which < MS_CLIMIT_BUCKETS) {
		if (!(e->has_bucket & (1u << which))) {
			ms_bucket_init(&e->b[which], r, now_ms);
			e->has_bucket |= (uint8_t)(1u << which);
		}
		ok = ms_bucket_take(&e->b[which], r, n, now_ms);
	}
	pthread_mutex_unlock(&s->lock);
	return ok;
}

uint32_t ms_climit_count(ms_climit *t, const ms_lkey *k)
{
	uint64_t h = hash(k);
	shard *s = shard_of(t, h);
	pthread_mutex_lock(&s->lock);
	entry **pp = find(s, k, h);
	uint32_t n = *pp ? (*pp)->count : 0;
	pthread_mutex_unlock(&s->lock);
	return n;
}

size_t ms_climit_bytes(ms_climit *t)
{
	size_t n = sizeof(*t);
	for (int i = 0; i < SHARDS; i++) {
		pthread_mutex_lock(&t->s[i].lock);
		n += t->s[i].nslots * sizeof(entry *) + t->s[i].n * sizeof(entry);
		pthread_mutex_unlock(&t->s[i].lock);
	}
	return n;
}

size_t ms_climit_keys(ms_climit *t)
{
	size_t n = 0;
	for (int i = 0; i < SHARDS; i++) {
		pthread_mutex_lock(&t->s[i].lock);
		n += t->s[i].n;
		pthread_mutex_unlock(&t->s[i].lock);
	}
	return n;
}

uint32_t ms_handshake_limit(uint32_t flag, uint32_t max_conns)
{
	if (flag)
		return flag;
	uint32_t n = max_conns / 16;
	return n < MS_HANDSHAKES_AUTO_MIN ? MS_HANDSHAKES_AUTO_MIN :
	       n > MS_HANDSHAKES_AUTO_MAX ? MS_HANDSHAKES_AUTO_MAX : n;
}

/* ---- token bucket ---------------------------------------------------------- */

void ms_bucket_init(ms_bucket *b, const ms_rate *r, uint32_t now_ms)
{
	b->level = r->cap;
	b->at_ms = now_ms;
}

static uint64_t refill(ms_bucket *b, const ms_rate *r, uint32_t now_ms)
{
	/* Signed: a bucket shared by workers sees their clocks, each read once
	 * per iteration, slightly out of order; an earlier one refills nothing
	 * rather than wrapping into a full bucket. */
	int32_t dt = (int32_t)(now_ms - b->at_ms);
	if (dt <= 0)
		return b->level;
	uint64_t level = b->level + (uint64_t)dt * r->per_ms;
	b->at_ms = now_ms;
	if (level > r->cap)
		level = r->cap;
	b->level = (uint32_t)level;
	return level;
}

bool ms_bucket_take(ms_bucket *b, const ms_rate *r, uint32_t n, uint32_t now_ms)
{
	uint64_t want = (uint64_t)n * r->cost;
	uint64_t level = refill(b, r, now_ms);
	if (level < want)
		return false;
	b->level = (uint32_t)(level - want);
	return true;
}

bool ms_bucket_has(ms_bucket *b, const ms_rate *r, uint32_t n, uint32_t now_ms)
{
	return refill(b, r, now_ms) >= (uint64_t)n * r->cost;
}

void ms_bucket_give(ms_bucket *b, const ms_rate *r, uint32_t n, uint32_t now_ms)
{
	uint64_t level = refill(b, r, now_ms) + (uint64_t)n * r->cost;
	b->level = (uint32_t)(level > r->cap ? r->cap : level);
}

uint32_t ms_strike(ms_strikes *s, uint32_t now_ms)
{
	if (now_ms - s->at_ms >= MS_BUCKET_STRIKE_WINDOW_MS || s->n == 0) {
		s->at_ms = now_ms;
		s->n = 0;
	}
	return ++s->n;
}

/* ---- origins ----------------------------------------------------------------- */

bool ms_origin_allowed(const char *list, const char *origin, size_t n)
{
	const char *p = list;
	while (*p == ' ')
		p++;
	if (!*p)
		return true;
	while (*p) {
		while (*p == ' ' || *p == ',')
			p++;
		const char *e = p;
		while (*e && *e != ',')
			e++;
		const char *t = e;
		while (t > p && t[-1] == ' ')
			t--;
		if ((size_t)(t - p) == n && n && memcmp(p, origin, n) == 0)
			return true;
		p = e;
	}
	return false;
}
