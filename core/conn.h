/*
 * Connections and their per-worker pool.
 *
 * A connection lives on the worker that accepted or connected it, in a slot
 * of that worker's preallocated pool, addressed by (index, generation).
 * Reusing a slot bumps the generation, so a late completion or a stale
 * handle is recognised and dropped. The slot is the hot part: what the loop
 * touches per event (88 bytes) followed by the protocol state of its
 * context (ms_conn_ext(); slots are sized for the largest context's
 * ext_size); everything larger hangs off pointers allocated only while
 * used (spilled input, queued output), so an idle connection costs one slot.
 *
 * Only the owning worker's thread touches a connection. Fields marked
 * "core" are private to core/; `state` belongs to the protocol layer.
 */
#ifndef MS_CORE_CONN_H
#define MS_CORE_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "core/spill.h"

typedef struct ms_outq_node ms_outq_node;

enum {
	MS_CONN_F_RECV = 1 << 0,     /* multishot recv armed */
	MS_CONN_F_SEND = 1 << 1,     /* a send is in flight */
	MS_CONN_F_DIRTY = 1 << 2,    /* on the flush list */
	MS_CONN_F_CLOSING = 1 << 3,  /* no more input to the protocol layer (set by
	                              * worker.c's mark_closing only: it counts them) */
	MS_CONN_F_FLUSH = 1 << 4,    /* close once the output queue drains */
	MS_CONN_F_LINGER = 1 << 5,   /* FIN sent, reading to EOF before close */
	MS_CONN_F_DEAD = 1 << 6,     /* teardown started: cancels in flight */
	MS_CONN_F_REARM = 1 << 7,    /* recv stopped, on the re-arm list */
	MS_CONN_F_FREED = 1 << 8,    /* on the free-at-end-of-iteration list */
	MS_CONN_F_XFORM = 1 << 9,    /* output is transformed (encrypted) before sending */
	MS_CONN_F_HELD = 1 << 10,    /* input paused (worker overloaded): recv cancelled,
	                              * what came is kept unparsed in spill */
	MS_CONN_F_OPENING = 1 << 11, /* not yet opened: its peer address being read
	                              * (accepted) or its connect in progress (outbound) */
	MS_CONN_F_SHED = 1 << 12,    /* closed at the pending-output cap or as slow (on_shed) */
	MS_CONN_F_OVER = 1 << 13,    /* on the over-backpressure list */
	MS_CONN_F_RESUME = 1 << 14,  /* on the resume list (paused input to parse again) */
	MS_CONN_F_MUTE = 1 << 15,    /* closing, and no longer read: the peer went on
	                              * sending in bulk; the linger timer ends it */
};

/* Why a connection's input is paused (ms_conn.paused bits): input is
 * handed to the protocol layer only when none is set. */
enum {
	MS_PAUSE_PROTO = 1, /* ms_conn_pause(): e.g. its requests in flight */
	MS_PAUSE_OUTPUT = 2, /* its own queued output is high: read again once it drains */
};

typedef struct ms_conn {
	uint32_t gen;          /* core: bumped when the slot is freed */
	int32_t fidx;          /* core: direct descriptor, -1 when none */
	uint32_t idx;          /* core: slot index */
	uint16_t flags;        /* core: MS_CONN_F_* */
	uint8_t inflight;      /* core: ops in flight (recv, send, shutdown) */
	uint8_t state;         /* protocol layer's state */
	uint32_t t_prev;       /* core: timer wheel links, index + 1 */
	uint32_t t_next;
	uint32_t deadline;     /* core: worker second of the timeout, 0 = none */
	uint32_t last_active;  /* core: worker second of the last input */
	uint32_t out_bytes;    /* core: queued output not yet sent */
	uint8_t kind;          /* core: index of its context (ms_ctx): its handlers */
	uint8_t send_nodes;    /* core: queue nodes the send in flight covers */
	uint8_t paused;        /* core: MS_PAUSE_* reasons input waits */
	uint8_t _pad;
	ms_outq_node *out_head; /* core: output queue */
	ms_outq_node *out_tail;
	ms_spill spill;         /* core: unconsumed input kept for next time */
	void *sendctx;          /* core: msghdr of a gathered send in flight */
	uint32_t over_ms;       /* core: worker ms its output went over --max-backpressure, 0 = under */
	uint32_t drained;       /* core: bytes the kernel took since then */
} ms_conn;

_Static_assert(sizeof(ms_conn) == 88, "ms_conn is the hot slot: keep it small");

/* The protocol layer's inline area after the slot. */
static inline void *ms_conn_ext(ms_conn *c)
{
	return c + 1;
}

/* Handle valid on every worker: worker (8) | index (24) | generation (32). */
typedef uint64_t ms_conn_ref;

typedef struct ms_pool {
	uint8_t *slots;
	size_t slot_size;
	size_t map_size;
	uint32_t cap;      /* slots */
	uint32_t used;     /* allocated now */
	uint32_t fresh;    /* slots below this were handed out at least once */
	uint32_t nfree;
	uint32_t *free;    /* LIFO: reused slots are warm in cache */
	uint32_t gen_floor; /* first generation of a slot whose page was given back */
} ms_pool;

/* Reserve cap slots of sizeof(ms_conn) + ext_size bytes. Pages are touched
 * only as slots are first used, so an empty pool costs no resident memory.
 * Returns 0 or -errno. */
int ms_pool_init(ms_pool *p, uint32_t cap, size_t ext_size);
void ms_pool_fini(ms_pool *p);

static inline ms_conn *ms_pool_at(const ms_pool *p, uint32_t idx)
{
	return (ms_conn *)(p->slots + (size_t)idx * p->slot_size);
}

/* A free slot with a fresh generation and zeroed fields (ext zeroed too),
 * or NULL when all cap slots are in use. */
ms_conn *ms_pool_alloc(ms_pool *p);

/* With no slot in use, give every touched page back to the kernel (an empty
 * pool then costs no resident memory, as at start). Generations carry on
 * above the highest one handed out, so no old handle (a CQE in flight, a
 * reference in a mailbox or another worker's table) matches a slot again.
 * Returns the bytes given back (0 when a slot is in use or none was used). */
size_t ms_pool_trim(ms_pool *p);

/* Return a slot; its generation moves on so old handles go stale. */
void ms_pool_free(ms_pool *p, ms_conn *c);

/* An array of one elem-byte entry per slot, reserved like the slots: pages
 * are touched only as entries are used, and ms_pool_array_trim gives them
 * back (call it when the pool is trimmed). NULL when out of address space. */
void *ms_pool_array(const ms_pool *p, size_t elem);
void ms_pool_array_trim(const ms_pool *p, void *a, size_t elem);
void ms_pool_array_free(const ms_pool *p, void *a, size_t elem);

#endif
