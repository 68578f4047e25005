/*
 * Session registry: user id → the handles of that user's connections
 * (several devices), in 128 shards by hash of the id. Shard s is owned by
 * worker s % W: only the owner writes it (it receives REGISTER/UNREGISTER
 * messages), under the shard's write lock; any worker reads through
 * ms_reg_lookup() under the read lock (DM routing). Reads are off the hot
 * path of fan-out.
 */
#ifndef MS_SHARD_REGISTRY_H
#define MS_SHARD_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#define MS_REGISTRY_SHARDS 128

typedef struct ms_registry ms_registry;

ms_registry *ms_reg_create(void);
void ms_reg_destroy(ms_registry *r);

/* Shard of a user id. */
uint32_t ms_reg_shard(uint64_t uid);

/* Owner only: add / remove one connection handle of uid. */
void ms_reg_add(ms_registry *r, uint64_t uid, uint64_t ref);
void ms_reg_del(ms_registry *r, uint64_t uid, uint64_t ref);

/* Any thread: copy up to max handles of uid into refs; returns how many the
 * user has (may exceed max). */
size_t ms_reg_lookup(ms_registry *r, uint64_t uid, uint64_t *refs, size_t max);

/* Users with at least one connection (sum over shards; approximate while
 * writers run). */
size_t ms_reg_users(ms_registry *r);

#endif
