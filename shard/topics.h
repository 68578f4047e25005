/*
 * What one worker knows of its own connections' streams, with no locks
 * (DESIGN.md §6):
 *
 *   - the topic table: stream id -> the handles of this worker's
 *     connections subscribed to it (deliveries walk this array);
 *   - each /ws connection's subscriptions (its chat slot, net/server.h's
 *     ms_net_chat_slot): the streams it joined or is joining, in request
 *     order, each with its position in the topic's array, so a leave or a
 *     close removes it in O(1).
 *
 *   topic "clan:1" (id 7)   subs: [ ref A | ref B | ref C ]
 *                                    ^pos 0  ^pos 1  ^pos 2
 *   connection B's slot: [ {hash("clan:1"), stream 7, pos 1, JOINED}, ... ]
 *
 * Handles are core's (ms_conn_ref_of), never rebuilt here. Everything runs
 * on the worker that owns the connections.
 */
#ifndef MS_SHARD_TOPICS_H
#define MS_SHARD_TOPICS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/worker.h"
#include "net/http.h" /* ms_str */
#include "shard/map.h"

/* ---- per-connection subscriptions --------------------------------------- */

enum {
	MS_SUB_PENDING = 1, /* join sent, its JOIN_ACK not back yet */
	MS_SUB_JOINED,      /* in the topic table at pos */
	MS_SUB_LEAVING,     /* left while pending: the JOIN_ACK undoes it */
};

typedef struct ms_sub {
	uint64_t hash;    /* of the stream name */
	uint64_t stream;  /* stream id, once joined */
	uint32_t pos;     /* index in the topic's subscriber array, once joined */
	uint8_t state;    /* MS_SUB_* */
	uint8_t recheck;  /* the token changed while the join was in flight */
} ms_sub;

typedef struct ms_subs {
	uint32_t n, cap;
	ms_sub s[];
} ms_subs;

/* c's subscriptions, NULL when it never joined anything. */
ms_subs *ms_subs_of(ms_conn *c);
/* The live subscription (joined, or join in flight) to the stream `hash`. */
ms_sub *ms_subs_find(ms_subs *cs, uint64_t hash);
/* The entry a JOIN_ACK answers: the oldest join in flight for `hash`
 * (entries keep request order; acks come back in the same order). */
ms_sub *ms_subs_pending(ms_subs *cs, uint64_t hash);
/* The joined subscription to stream id `stream`. */
ms_sub *ms_subs_joined(ms_subs *cs, uint64_t stream);
/* Live subscriptions (not leaving). */
uint32_t ms_subs_live(const ms_subs *cs);
/* Append a zeroed entry for `hash` to c's list (valid until the next
 * add or del on c). */
ms_sub *ms_subs_add(ms_conn *c, uint64_t hash);
/* Remove an entry of c's list, keeping the order of the rest. */
void ms_subs_del(ms_conn *c, ms_sub *s);
/* Free c's list (its slot becomes NULL). */
void ms_subs_free(ms_conn *c);

/* ---- the topic table ----------------------------------------------------- */

typedef struct ms_topics {
	ms_map by_id; /* stream id -> topic */
} ms_topics;

void ms_topics_init(ms_topics *t);
void ms_topics_fini(ms_topics *t);
/* The name of stream `stream` if this worker has subscribers of it. The
 * name is valid until the topic's last subscriber goes. */
bool ms_topics_name(const ms_topics *t, uint64_t stream, ms_str *name);
/* Add connection c as a subscriber of `stream` (named `name`, copied when
 * the topic is created); returns its position for ms_topics_del. */
uint32_t ms_topics_add(ms_worker *w, ms_topics *t, uint64_t stream, ms_str name, ms_conn *c);
/* Remove the subscriber at pos: the last one moves into its place and its
 * subscription learns the new position. The last subscriber frees the
 * topic. */
void ms_topics_del(ms_worker *w, ms_topics *t, uint64_t stream, uint32_t pos);
/* Queue pkt (a reference each) on every subscriber of `stream` that can
 * still be sent to; the caller keeps its own reference. */
void ms_topics_deliver(ms_worker *w, ms_topics *t, uint64_t stream, ms_pkt *pkt);

#endif
