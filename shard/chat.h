/*
 * The chat core: protocol v1 operations over the sharded, shared-nothing
 * state of DESIGN.md §5–6. The owner side of each stream is the engine's
 * (shard/engine.h), called on the owner worker O only.
 *
 *   publisher's worker A        stream owner O              subscriber worker B
 *   build frame once  ──PUBLISH──► engine: seq + 1, fill slot
 *                     ◄─PUB_ACK──┤
 *                                ├──DELIVER (1 ref)──────────► topic table: queue the
 *                                                              packet on every local
 *                                                              subscriber; the flush
 *                                                              sends each one send
 *
 * A worker adds a connection to its topic table only when the owner's
 * JOIN_ACK arrives, on the same O→B queue that carries the stream's
 * packets, so a subscriber never sees a gap. Registry shards (uid → conns)
 * are written by their owner and read by any worker under a read lock (DMs).
 * Every function runs on a worker thread; nothing here blocks.
 */
#ifndef MS_SHARD_CHAT_H
#define MS_SHARD_CHAT_H

#include <stdint.h>

#include "core/config.h"
#include "core/mailbox.h"
#include "core/worker.h"
#include "net/admin.h"
#include "net/server.h"

#define MS_STREAM_SHARDS 128

typedef struct ms_chat ms_chat;
typedef struct ms_chat_worker ms_chat_worker;

/* Process-wide state (registry); before the workers start. */
ms_chat *ms_chat_create(const ms_config *cfg, uint32_t nworkers);
void ms_chat_destroy(ms_chat *chat);

/* Worker id's state: pass it as the worker's app pointer. */
ms_chat_worker *ms_chat_worker_create(ms_chat *chat, uint32_t id);
void ms_chat_worker_destroy(ms_chat_worker *cw);

/* Hooks for net/: the public listeners' (ms_net_opts.chat) and the server
 * API's (ms_admin_opts.api). */
extern const ms_chat_hooks ms_chat_hooks_impl;
extern const ms_admin_api ms_chat_admin_api;

/* Worker handlers: mailbox messages, and the per-iteration flush
 * (coalesced presence events). */
void ms_chat_on_msg(ms_worker *w, uint32_t from, ms_msg *m);
void ms_chat_on_flush(ms_worker *w);

/* Drop what an undelivered message holds (packet references, requests):
 * for ms_mbox_hub_destroy at exit. */
void ms_chat_msg_release(ms_msg *m);

/* Worker that owns stream `name` / user `uid`. */
uint32_t ms_chat_stream_owner(const char *name, size_t len, uint32_t nworkers);
uint32_t ms_chat_user_owner(uint64_t uid, uint32_t nworkers);

#endif
