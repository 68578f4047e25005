/*
 * Open addressing keeps a lookup to one or two cache lines; the load factor
 * stays under 3/4. Deletion shifts the following run back so probes never
 * cross holes (Knuth's algorithm R). The table grows at 3/4 load and shrinks
 * at 1/8, down to none at all when the map is empty.
 */
#include "shard/map.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN_CAP 8

void ms_map_init(ms_map *m)
{
	memset(m, 0, sizeof(*m));
}

void ms_map_fini(ms_map *m)
{
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

uint64_t *ms_map_get(const ms_map *m, uint64_t key)
{
	if (key == 0)
		return m->has_zero ? (uint64_t *)&m->zero.val : NULL;
	if (!m->cap)
		return NULL;
	uint32_t mask = m->cap - 1;
	for (uint32_t i = (uint32_t)ms_map_mix(key) & mask;; i = (i + 1) & mask) {
		if (m->slots[i].key == key)
			return &m->slots[i].val;
		if (!m->slots[i].key)
			return NULL;
	}
}

/* ncap: 0 (no table) or a power of two that holds every entry under 3/4. */
static void resize(ms_map *m, uint32_t ncap)
{
	ms_map_slot *old = m->slots;
	uint32_t ocap = m->cap;
	m->slots = NULL;
	if (ncap) {
		m->slots = calloc(ncap, sizeof(*m->slots));
		if (!m->slots) {
			fprintf(stderr, "mezon-sock: out of memory (map)\n");
			abort();
		}
	}
	m->cap = ncap;
	m->len = m->has_zero;
	for (uint32_t i = 0; i < ocap; i++)
		if (old[i].key)
			ms_map_put(m, old[i].key, old[i].val);
	free(old);
}

void ms_map_put(ms_map *m, uint64_t key, uint64_t val)
{
	if (key == 0) {
		m->len += !m->has_zero;
		m->has_zero = true;
		m->zero.val = val;
		return;
	}
	if ((m->len + 1) * 4 > m->cap * 3)
		resize(m, m->cap ? m->cap * 2 : MIN_CAP);
	uint32_t mask = m->cap - 1;
	for (uint32_t i = (uint32_t)ms_map_mix(key) & mask;; i = (i + 1) & mask) {
		if (m->slots[i].key == key) {
			m->slots[i].val = val;
			return;
		}
		if (!m->slots[i].key) {
			m->slots[i].key = key;
			m->slots[i].val = val;
			m->len++;
			return;
		}
	}
}

bool ms_map_del(ms_map *m, uint64_t key, uint64_t *val)
{
	if (key == 0) {
		if (!m->has_zero)
			return false;
		if (val)
			*val = m->zero.val;
		m->has_zero = false;
		m->zero.val = 0;
		m->len--;
		return true;
	}
	if (!m->cap)
		return false;
	uint32_t mask = m->cap - 1;
	uint32_t i = (uint32_t)ms_map_mix(key) & mask;
	for (;; i = (i + 1) & mask) {
		if (!m->slots[i].key)
			return false;
		if (m->slots[i].key == key)
			break;
	}
	if (val)
		*val = m->slots[i].val;
	/* Backward shift: pull later members of the run into the hole when
	 * their home slot does not lie (cyclically) between hole and them. */
	uint32_t hole = i;
	for (uint32_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
		uint32_t home = (uint32_t)ms_map_mix(m->slots[j].key) & mask;
		bool between = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
		if (!between) {
			m->slots[hole] = m->slots[j];
			hole = j;
		}
	}
	m->slots[hole].key = 0;
	m->slots[hole].val = 0;
	m->len--;
	/* Shrink at 1/8 load (the half-size table is then under 1/4 full, far
	 * from the 3/4 that grows it again) and drop an empty table: a map
	 * that once held a crowd keeps no memory for it. */
	uint32_t n = m->len - m->has_zero;
	if (n == 0)
		resize(m, 0);
	else if (m->cap > MIN_CAP && n * 8 < m->cap)
		resize(m, m->cap / 2);
	return true;
}

uint32_t ms_map_next(const ms_map *m, uint32_t pos, const ms_map_slot **slot)
{
	for (uint32_t i = pos; i < m->cap; i++)
		if (m->slots[i].key) {
			*slot = &m->slots[i];
			return i + 1;
		}
	if (m->has_zero && pos <= m->cap) {
		*slot = &m->zero;
		return m->cap + 1;
	}
	return 0;
}

uint64_t ms_hash_bytes(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	h = ms_map_mix(h);
	return h ? h : 1;
}
