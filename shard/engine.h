/*
 * The engine: where streams live (DESIGN.md §10). The chat core reaches a
 * stream's sequence, subscribers, presence and history only through this
 * interface, and only on the stream's owner worker (ms_chat_stream_owner),
 * so DESIGN §5's ordering holds whatever the engine: the owner makes its
 * calls in the order its inbound queues deliver the requests.
 *
 * Results come back as events to the sink given at creation, on the same
 * worker: the memory engine calls the sink before the call returns; an
 * engine with a remote store (Redis) calls it from the worker's loop when
 * the answer arrives. Either way an event is emitted once the engine's state
 * already reflects it, so the sink may call the engine again.
 *
 *   owner worker (shard/chat.c)            engine                    events to the sink
 *   subscribe(name, worker) ────────────►  find or create, count ──► SUBSCRIBED {stream, seq, epoch}
 *   presence_add/remove(stream, uid) ───►  members, coalesced
 *   publish(name, pkt, seq slot) ───────►  seq + 1, fill the slot ─► PUBLISHED {seq}, then
 *                                                                    DELIVER {pkt, workers}
 *   unsubscribe(stream, worker)
 *   presence_list(name, cursor) ────────►  ──────────────────────► PRESENCE_LIST {users, next}
 *   history(name, since/before) ────────►  ──────────────────────► HISTORY {seq, epoch, messages}
 *   flush(now), once per loop iteration ►  idle sweep ────────────► PRESENCE {joins, leaves, workers}
 *
 * The engine knows no mailboxes, connections or wire format beyond the
 * message packet's seq slot: the sink turns events into mailbox messages
 * and frames (net/proto encodes them).
 */
#ifndef MS_SHARD_ENGINE_H
#define MS_SHARD_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/pkt.h"
#include "net/http.h" /* ms_str */

typedef struct ms_engine ms_engine;

/* The caller's note on a request, handed back with its answer and never
 * read by the engine (one that answers later keeps a copy). */
typedef struct ms_engine_tag {
	uint64_t ref;   /* e.g. the requesting connection's handle */
	uint64_t a;     /* e.g. the request id */
	void *ptr;      /* e.g. a request record the caller owns */
	uint32_t from;  /* e.g. the worker that asked */
	uint32_t u32;   /* e.g. when it was asked */
	uint16_t flags;
} ms_engine_tag;

/* Request flags. */
enum {
	/* subscribe, publish: a stream that does not exist yet is not created;
	 * the answer is refused with 429 (the sender's creation budget). */
	MS_ENGINE_NOCREATE = 1,
	/* subscribe: the stream emits no presence events from now on. */
	MS_ENGINE_QUIET = 2,
	/* publish: diagnostics (/room): the packet has no seq slot, no answer
	 * is wanted, and the stream is created whatever the limits. */
	MS_ENGINE_RAW = 4,
};

enum ms_engine_ev_type {
	MS_ENGINE_SUBSCRIBED,    /* subscribe answered */
	MS_ENGINE_PUBLISHED,     /* publish answered (before its DELIVER) */
	MS_ENGINE_DELIVER,       /* a message for the stream's subscribers */
	MS_ENGINE_PRESENCE,      /* coalesced presence changes for the subscribers */
	MS_ENGINE_PRESENCE_LIST, /* presence_list answered */
	MS_ENGINE_HISTORY,       /* history answered */
};

/* One event. Pointers are borrowed for the sink call. */
typedef struct ms_engine_ev {
	enum ms_engine_ev_type type;
	/* Answers: 0, or why the stream could not be had: 429 (not created:
	 * MS_ENGINE_NOCREATE) or 503 (the engine holds all the streams it
	 * may). Nothing else of a refused answer is meaningful. */
	uint16_t err;
	bool created;              /* SUBSCRIBED, PUBLISHED: this request created the stream */
	bool more;                 /* PRESENCE_LIST: a page follows at `next`;
	                            * HISTORY: older messages were left out */
	const ms_engine_tag *tag;  /* answers: the request's tag; NULL otherwise */
	uint64_t stream;           /* the stream's id (0: PRESENCE_LIST/HISTORY of none) */
	ms_str name;               /* PRESENCE: the stream's name */
	uint64_t seq, epoch;       /* SUBSCRIBED: current; PUBLISHED: assigned;
	                            * HISTORY: current (0, 0 for an unknown stream) */
	uint64_t workers;          /* DELIVER, PRESENCE: bit w set = worker w has
	                            * subscribers (never 0) */
	ms_pkt *pkt;               /* DELIVER: the frame; take a reference to keep it */
	const uint64_t *users;     /* PRESENCE: njoin joins then nleave leaves;
	                            * PRESENCE_LIST: n user ids */
	uint32_t njoin, nleave, n; /* HISTORY: n messages in msgs */
	uint64_t next;             /* PRESENCE_LIST: the next page's cursor */
	ms_pkt *const *msgs;       /* HISTORY: the message frames, oldest first */
} ms_engine_ev;

typedef void (*ms_engine_sink)(void *arg, const ms_engine_ev *ev);

/* history: what is asked for (PROTOCOL 1.1: join with since, history). */
typedef struct ms_engine_history_req {
	uint64_t since;  /* messages after this seq; 0: not a recovery */
	uint64_t before; /* messages before this seq; 0: up to the newest */
	uint32_t limit;  /* at most this many */
} ms_engine_history_req;

/* An engine implementation. Every call runs on the owner worker of the
 * stream it names, the worker the engine was created for. */
typedef struct ms_engine_ops {
	const char *name;
	void (*destroy)(ms_engine *e);
	/* One more subscriber of stream `name` on `worker` (the stream is
	 * created unless flags refuse it); SUBSCRIBED answers with the stream
	 * id the other calls use and the current seq and epoch. */
	void (*subscribe)(ms_engine *e, ms_str name, uint32_t worker, uint16_t flags,
			  const ms_engine_tag *tag);
	/* One subscriber fewer on `worker`. */
	void (*unsubscribe)(ms_engine *e, uint64_t stream, uint32_t worker);
	/* Publish the message frame pkt (the caller's reference passes to the
	 * engine): assign the next seq, write it into the blank seq slot at
	 * pkt->data[seq_off] (net/proto's ms_proto_seq_fill), answer with
	 * PUBLISHED, then DELIVER it once to the workers with subscribers.
	 * name may point into pkt. Refused: PUBLISHED with err, pkt dropped. */
	void (*publish)(ms_engine *e, ms_str name, ms_pkt *pkt, uint32_t seq_off,
			uint16_t flags, const ms_engine_tag *tag);
	/* User uid is in the stream once more / once less (one count per
	 * connection); the first add and the last remove are presence changes,
	 * reported coalesced by flush. Unknown streams are ignored. */
	void (*presence_add)(ms_engine *e, uint64_t stream, uint64_t uid);
	void (*presence_remove)(ms_engine *e, uint64_t stream, uint64_t uid);
	/* A page of the stream's members from cursor (0: the first page). */
	void (*presence_list)(ms_engine *e, ms_str name, uint64_t cursor,
			      const ms_engine_tag *tag);
	/* Messages kept for the stream (an engine without history answers with
	 * none: n = 0). */
	void (*history)(ms_engine *e, ms_str name, const ms_engine_history_req *q,
			const ms_engine_tag *tag);
	/* Once per loop iteration, `now` in worker seconds: emit the presence
	 * changes gathered since the last flush, forget idle streams. */
	void (*flush)(ms_engine *e, uint32_t now);
} ms_engine_ops;

/* The part every engine starts with. */
struct ms_engine {
	const ms_engine_ops *ops;
	ms_engine_sink sink;
	void *arg;
};

/* The calls, as ms_engine_ops describes them. */
static inline void ms_engine_destroy(ms_engine *e)
{
	if (e)
		e->ops->destroy(e);
}

static inline void ms_engine_subscribe(ms_engine *e, ms_str name, uint32_t worker,
				       uint16_t flags, const ms_engine_tag *tag)
{
	e->ops->subscribe(e, name, worker, flags, tag);
}

static inline void ms_engine_unsubscribe(ms_engine *e, uint64_t stream, uint32_t worker)
{
	e->ops->unsubscribe(e, stream, worker);
}

static inline void ms_engine_publish(ms_engine *e, ms_str name, ms_pkt *pkt, uint32_t seq_off,
				     uint16_t flags, const ms_engine_tag *tag)
{
	e->ops->publish(e, name, pkt, seq_off, flags, tag);
}

static inline void ms_engine_presence_add(ms_engine *e, uint64_t stream, uint64_t uid)
{
	e->ops->presence_add(e, stream, uid);
}

static inline void ms_engine_presence_remove(ms_engine *e, uint64_t stream, uint64_t uid)
{
	e->ops->presence_remove(e, stream, uid);
}

static inline void ms_engine_presence_list(ms_engine *e, ms_str name, uint64_t cursor,
					   const ms_engine_tag *tag)
{
	e->ops->presence_list(e, name, cursor, tag);
}

static inline void ms_engine_history(ms_engine *e, ms_str name, const ms_engine_history_req *q,
				     const ms_engine_tag *tag)
{
	e->ops->history(e, name, q, tag);
}

static inline void ms_engine_flush(ms_engine *e, uint32_t now)
{
	e->ops->flush(e, now);
}

/* Stream ids are nonzero, unique in the process, and name their owner
 * worker in the top 8 bits. */
static inline uint32_t ms_engine_stream_worker(uint64_t stream)
{
	return (uint32_t)(stream >> 56);
}

/* ---- the memory engine -------------------------------------------------
 *
 * One process is one chat world: each owner worker keeps its streams in
 * memory, a restart starts new epochs. No history yet. */
typedef struct ms_engine_mem_opts {
	uint32_t worker;               /* the owner worker it runs on (< 256) */
	uint32_t nworkers;             /* workers in the process (<= 64) */
	uint32_t max_streams;          /* streams it may hold: its share of --max-streams */
	uint32_t presence_page;        /* users per listing page (>= 1) */
	uint32_t presence_max_members; /* above this many members, no presence events */
	uint32_t idle_seconds;         /* an unused stream is forgotten after this */
	uint32_t sweep_seconds;        /* how often unused streams are looked for */
} ms_engine_mem_opts;

/* A memory engine whose events go to sink(arg, ev). Destroy with
 * ms_engine_destroy. */
ms_engine *ms_engine_mem_create(const ms_engine_mem_opts *o, ms_engine_sink sink, void *arg);

#endif
