/*
 * Cross-worker mailboxes: one lock-free SPSC queue (Concurrency Kit
 * ck_ring) per ordered pair of workers, carrying per-iteration batches of
 * small fixed-size messages; a sleeping receiver is woken by a doorbell.
 *
 *   worker A iteration:  put(B) put(B) put(C) ... flush()
 *                          └──── batch for B ────┘   ├─ push batch → ring A→B (+ doorbell if B sleeps)
 *                                                     └─ push batch → ring A→C
 *   worker B iteration:  drain(): every inbound ring, FIFO per sender
 *
 * One ring slot and one fence per target per iteration, however many
 * messages. A full ring never drops: the batch waits on a FIFO overflow list
 * and every later batch for that target queues behind it (order is the
 * guarantee chat ordering rests on). Messages to oneself skip the rings and
 * are handled within the same drain.
 *
 * Doorbell protocol (no lost wake-ups): the receiver sets sleeping = 1, full
 * fence, checks every inbound queue once more, and only then blocks. A sender
 * pushes, full fence, and rings only if sleeping && xchg(sleeping, 0).
 *
 * A hub is created before the workers; each worker owns one ms_mbox endpoint
 * and calls every function on it from its own thread only.
 */
#ifndef MS_CORE_MAILBOX_H
#define MS_CORE_MAILBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A message: 48 bytes; the meaning of the fields belongs to `type`. */
typedef struct ms_msg {
	uint16_t type;
	uint16_t flags;
	uint32_t u32;
	uint64_t ref;     /* usually a connection handle */
	uint64_t a, b;
	void *ptr;        /* ownership (e.g. one packet reference) passes with the message */
	uint64_t t_push;  /* CLOCK_MONOTONIC ns at put, for hop latency */
} ms_msg;

typedef struct ms_mbox_hub ms_mbox_hub;
typedef struct ms_mbox ms_mbox;

typedef struct ms_mbox_stats {
	uint64_t msgs_out;   /* messages put for other workers */
	uint64_t msgs_self;  /* messages put for this worker */
	uint64_t batches;    /* ring pushes */
	uint64_t overflows;  /* batches that waited on the overflow list */
	uint64_t doorbells;  /* wake-ups requested */
	uint64_t msgs_in;    /* messages drained */
} ms_mbox_stats;

/* n workers, ring_slots per ordered pair (power of two >= 4). */
ms_mbox_hub *ms_mbox_hub_create(uint32_t n, uint32_t ring_slots);
/* After every worker has stopped: frees queued batches too (calling
 * release(m) for each undelivered message so references are dropped). */
void ms_mbox_hub_destroy(ms_mbox_hub *hub, void (*release)(ms_msg *m));

/* Doorbell target of worker idx (its ring fd), set once it exists; -1
 * until then (a message still waits in the queue and is drained on the
 * receiver's first iteration). Any thread. */
void ms_mbox_set_bell(ms_mbox_hub *hub, uint32_t idx, int fd);
int ms_mbox_bell(const ms_mbox_hub *hub, uint32_t idx);
uint32_t ms_mbox_hub_size(const ms_mbox_hub *hub);

/* Worker `self`'s endpoint. */
ms_mbox *ms_mbox_create(ms_mbox_hub *hub, uint32_t self);
/* Frees the endpoint and its unsent messages without releasing them;
 * ms_mbox_hub_destroy frees the endpoints still registered and releases. */
void ms_mbox_destroy(ms_mbox *mb);

/* A message slot for worker `to` in this iteration's batch; fill it before
 * the next call. */
ms_msg *ms_mbox_put(ms_mbox *mb, uint32_t to);

/* End of iteration: push every batch (overflow first, FIFO), then call
 * wake(arg, to) for each target that was asleep. */
void ms_mbox_flush(ms_mbox *mb, void (*wake)(void *arg, uint32_t to), void *arg);

/* Handle every queued message for this worker: each sender's in FIFO order,
 * then messages to oneself (including those put by fn while draining).
 * Returns the number handled. */
size_t ms_mbox_drain(ms_mbox *mb, void (*fn)(void *arg, uint32_t from, ms_msg *m),
		     void *arg);

/* Before blocking: announce sleep; returns false (and stays awake) if
 * anything is already queued for us. */
bool ms_mbox_sleep_begin(ms_mbox *mb);
void ms_mbox_sleep_end(ms_mbox *mb);

/* Outgoing batches still waiting (overflow), for backpressure decisions. */
size_t ms_mbox_backlog(const ms_mbox *mb);
/* Messages in those batches: what the receivers still owe us work for (a
 * chain may hold one message or thousands, so this, not the batch count,
 * measures the backlog). */
size_t ms_mbox_backlog_msgs(const ms_mbox *mb);

/* Drain barrier (graceful shutdown). Every worker arrives at rounds 0, 1, …
 * in order, each time right after flushing its outbound messages; round r
 * is done when all hub members arrived. Messages pushed before a worker's
 * arrival at r are visible to any worker that saw round r done (acquire).
 * ms_mbox_round_arrive returns true for the arrival that completed the
 * round (that worker then wakes the others). */
#define MS_MBOX_ROUNDS 8
bool ms_mbox_round_arrive(ms_mbox_hub *hub, uint32_t round);
uint32_t ms_mbox_rounds_done(const ms_mbox_hub *hub);
/* Workers still draining: each leaves once its connections are gone
 * (returns how many remain) but keeps running until none remain, so
 * mailbox round trips (metrics) and the admin listener work to the end. */
uint32_t ms_mbox_hub_leave(ms_mbox_hub *hub);
uint32_t ms_mbox_hub_running(const ms_mbox_hub *hub);
/* A member that will never arrive or leave (it failed to start, or its
 * loop died): the barrier and the running count stop waiting for it. */
void ms_mbox_hub_absent(ms_mbox_hub *hub);
const ms_mbox_stats *ms_mbox_stats_of(const ms_mbox *mb);

#endif
