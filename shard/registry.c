/*
 * Each shard: a pthread rwlock and a map uid → entry. An entry holds the
 * handles inline up to 2 (the common case: one phone, one browser) and
 * spills to the heap beyond.
 */
#include "shard/registry.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shard/map.h"

typedef struct entry {
	uint32_t n, cap;
	uint64_t *refs;     /* == inl while cap <= 2 */
	uint64_t inl[2];
} entry;

typedef struct shard {
	pthread_rwlock_t lock;
	ms_map users;       /* uid → entry* */
	char pad[64];       /* keep shards' locks on separate cache lines */
} shard;

struct ms_registry {
	shard s[MS_REGISTRY_SHARDS];
};

ms_registry *ms_reg_create(void)
{
	ms_registry *r = calloc(1, sizeof(*r));
	if (!r)
		abort();
	for (int i = 0; i < MS_REGISTRY_SHARDS; i++) {
		pthread_rwlock_init(&r->s[i].lock, NULL);
		ms_map_init(&r->s[i].users);
	}
	return r;
}

void ms_reg_destroy(ms_registry *r)
{
	if (!r)
		return;
	for (int i = 0; i < MS_REGISTRY_SHARDS; i++) {
		const ms_map_slot *sl;
		for (uint32_t p = 0; (p = ms_map_next(&r->s[i].users, p, &sl)) != 0;) {
			entry *e = (entry *)(uintptr_t)sl->val;
			if (e->refs != e->inl)
				free(e->refs);
			free(e);
		}
		ms_map_fini(&r->s[i].users);
		pthread_rwlock_destroy(&r->s[i].lock);
	}
	free(r);
}

uint32_t ms_reg_shard(uint64_t uid)
{
	return (uint32_t)(ms_map_mix(uid) % MS_REGISTRY_SHARDS);
}

void ms_reg_add(ms_registry *r, uint64_t uid, uint64_t ref)
{
	shard *s = &r->s[ms_reg_shard(uid)];
	pthread_rwlock_wrlock(&s->lock);
	uint64_t *v = ms_map_get(&s->users, uid);
	entry *e;
	if (v) {
		e = (entry *)(uintptr_t)*v;
	} else {
		e = calloc(1, sizeof(*e));
		if (!e)
			abort();
		e->refs = e->inl;
		e->cap = 2;
		ms_map_put(&s->users, uid, (uint64_t)(uintptr_t)e);
	}
	if (e->n == e->cap) {
		uint32_t cap = e->cap * 2;
		uint64_t *n = malloc(cap * sizeof(*n));
		if (!n)
			abort();
		memcpy(n, e->refs, e->n * sizeof(*n));
		if (e->refs != e->inl)
			free(e->refs);
		e->refs = n;
		e->cap = cap;
	}
	e->refs[e->n++] = ref;
	pthread_rwlock_unlock(&s->lock);
}

void ms_reg_del(ms_registry *r, uint64_t uid, uint64_t ref)
{
	shard *s = &r->s[ms_reg_shard(uid)];
	pthread_rwlock_wrlock(&s->lock);
	uint64_t *v = ms_map_get(&s->users, uid);
	if (v) {
		entry *e = (entry *)(uintptr_t)*v;
		for (uint32_t i = 0; i < e->n; i++)
			if (e->refs[i] == ref) {
				e->refs[i] = e->refs[--e->n];
				break;
			}
		if (e->n == 0) {
			ms_map_del(&s->users, uid, NULL);
			if (e->refs != e->inl)
				free(e->refs);
			free(e);
		}
	}
	pthread_rwlock_unlock(&s->lock);
}

size_t ms_reg_lookup(ms_registry *r, uint64_t uid, uint64_t *refs, size_t max)
{
	shard *s = &r->s[ms_reg_shard(uid)];
	size_t n = 0;
	pthread_rwlock_rdlock(&s->lock);
	uint64_t *v = ms_map_get(&s->users, uid);
	if (v) {
		entry *e = (entry *)(uintptr_t)*v;
		n = e->n;
		memcpy(refs, e->refs, (n < max ? n : max) * sizeof(*refs));
	}
	pthread_rwlock_unlock(&s->lock);
	return n;
}

size_t ms_reg_users(ms_registry *r)
{
	size_t n = 0;
	for (int i = 0; i < MS_REGISTRY_SHARDS; i++) {
		pthread_rwlock_rdlock(&r->s[i].lock);
		n += r->s[i].users.len;
		pthread_rwlock_unlock(&r->s[i].lock);
	}
	return n;
}
