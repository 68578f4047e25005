/*
 * u64 → u64 hash map, open addressing with linear probing and backward-shift
 * deletion (no tombstones, so long-lived maps with churn stay fast). Keys
 * are spread with a 64-bit mixer. Every u64 is a valid key: the slot array
 * marks empty slots with key 0, and key 0 itself lives beside the array.
 * Not thread-safe: one owner, or the caller's lock.
 */
#ifndef MS_SHARD_MAP_H
#define MS_SHARD_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ms_map_slot {
	uint64_t key; /* 0 = empty */
	uint64_t val;
} ms_map_slot;

typedef struct ms_map {
	ms_map_slot *slots;
	uint32_t cap;   /* power of two, or 0 before the first insert */
	uint32_t len;   /* entries, key 0 included */
	bool has_zero;
	ms_map_slot zero; /* key 0's entry */
} ms_map;

static inline uint64_t ms_map_mix(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ull;
	k ^= k >> 33;
	return k;
}

void ms_map_init(ms_map *m);
void ms_map_fini(ms_map *m);
/* Value of key or NULL. The pointer is valid until the next insert/remove
 * (both may move the table: it grows, shrinks and is freed when empty). */
uint64_t *ms_map_get(const ms_map *m, uint64_t key);
/* Insert or replace. */
void ms_map_put(ms_map *m, uint64_t key, uint64_t val);
/* Remove; returns whether it was there (and its value in *val if non-NULL). */
bool ms_map_del(ms_map *m, uint64_t key, uint64_t *val);

/* Iterate: for (uint32_t i = 0; (i = ms_map_next(m, i, &slot)) != 0;) ...
 * Returns the position after the slot found, 0 at the end (key 0, if
 * present, comes last). Positions are stable while the map is not modified
 * (presence cursors use them; a removal may shrink the table and move them). */
uint32_t ms_map_next(const ms_map *m, uint32_t pos, const ms_map_slot **slot);

/* 64-bit hash of a byte string (FNV-1a folded through the mixer); never 0. */
uint64_t ms_hash_bytes(const void *p, size_t n);

#endif
