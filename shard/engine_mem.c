/*
 * The memory engine (shard/engine.h): the owner side of the streams one
 * worker owns, kept in that worker's memory and answered at once.
 *
 * A stream is found by name (a hash map of chains) or by id (a second map)
 * and holds its seq and epoch, its members (uid -> connections joined), a
 * count of subscribers per worker with the mask of workers that have any,
 * and the presence changes noted since the last flush.
 *
 * Every stream costs memory until it has been unused for idle_seconds, so
 * creating one is bounded: a request may be refused creation (429, the
 * sender's --create-rate budget) and the engine holds at most max_streams
 * (503). An unused stream is forgotten after idle_seconds (its seq with
 * it: the next use recreates it under a new epoch, as PROTOCOL.md allows);
 * until then a brief gap, everyone reconnecting, keeps seq continuity.
 * Without this every name ever used would stay forever.
 */
#include <string.h>
#include <sys/random.h>

#include "net/proto.h"
#include "shard/engine.h"
#include "shard/internal.h"
#include "shard/map.h"

typedef struct pres {
	uint64_t uid;
	bool leave;
} pres;

typedef struct stream {
	struct stream *hnext;   /* same name hash */
	struct stream *dnext;   /* presence-dirty list */
	uint64_t id, hash, seq, epoch;
	ms_map members;         /* uid -> connections joined */
	uint32_t *wcount;       /* per worker: subscriber connections */
	uint64_t wmask;         /* workers with subscribers */
	pres *pres;             /* presence changes since the last flush */
	uint32_t npres, cpres;
	bool dirty, quiet;
	uint16_t name_len;
	uint32_t idle_since;    /* engine second it became unused, 0 = in use */
	char name[];
} stream;

typedef struct mem {
	ms_engine base;
	ms_engine_mem_opts o;
	uint64_t next_stream;
	ms_map by_hash;         /* name hash -> stream chain */
	ms_map by_id;           /* stream id -> stream */
	stream *dirty;
	uint32_t now;           /* worker seconds, from the last flush */
	uint32_t last_sweep;
	uint64_t *users;        /* listings and presence events */
	size_t users_cap;
} mem;

static mem *M(ms_engine *e)
{
	return (mem *)e;
}

static void emit(mem *m, const ms_engine_ev *ev)
{
	m->base.sink(m->base.arg, ev);
}

static uint64_t *users_room(mem *m, size_t n)
{
	if (m->users_cap < n) {
		free(m->users);
		m->users = ms_shard__alloc(n * sizeof(uint64_t));
		m->users_cap = n;
	}
	return m->users;
}

/* ---- streams ------------------------------------------------------------ */

static stream *stream_find(mem *m, ms_str name, uint64_t hash)
{
	uint64_t *v = ms_map_get(&m->by_hash, hash);
	for (stream *s = v ? (stream *)(uintptr_t)*v : NULL; s; s = s->hnext)
		if (s->name_len == name.n && memcmp(s->name, name.p, name.n) == 0)
			return s;
	return NULL;
}

static stream *stream_by_id(mem *m, uint64_t id)
{
	uint64_t *v = ms_map_get(&m->by_id, id);
	return v ? (stream *)(uintptr_t)*v : NULL;
}

static stream *stream_new(mem *m, ms_str name, uint64_t hash)
{
	stream *s = ms_shard__calloc(1, sizeof(*s) + name.n);
	s->hash = hash;
	s->id = (uint64_t)m->o.worker << 56 | ++m->next_stream;
	if (getrandom(&s->epoch, sizeof(s->epoch), 0) != sizeof(s->epoch))
		s->epoch = ms_map_mix(s->id ^ (uint64_t)(uintptr_t)s);
	s->wcount = ms_shard__calloc(m->o.nworkers, sizeof(uint32_t));
	s->name_len = (uint16_t)name.n;
	memcpy(s->name, name.p, name.n);
	ms_map_init(&s->members);
	uint64_t *head = ms_map_get(&m->by_hash, hash);
	s->hnext = head ? (stream *)(uintptr_t)*head : NULL;
	ms_map_put(&m->by_hash, hash, (uint64_t)(uintptr_t)s);
	ms_map_put(&m->by_id, s->id, (uint64_t)(uintptr_t)s);
	return s;
}

/* The stream a request names, created if it may be (*created); NULL with
 * *err = 429 or 503 when it may not. */
static stream *stream_open(mem *m, ms_str name, uint16_t flags, uint16_t *err, bool *created)
{
	uint64_t hash = ms_hash_bytes(name.p, name.n);
	stream *s = stream_find(m, name, hash);
	*created = false;
	if (s)
		return s;
	if (flags & MS_ENGINE_NOCREATE) {
		*err = 429;
		return NULL;
	}
	if (!(flags & MS_ENGINE_RAW) && m->by_id.len >= m->o.max_streams) {
		*err = 503;
		return NULL;
	}
	*created = true;
	return stream_new(m, name, hash);
}

static void stream_free(mem *m, stream *s)
{
	uint64_t *head = ms_map_get(&m->by_hash, s->hash);
	if (head) {
		/* the map value is the chain's first stream pointer */
		stream **pp = (stream **)head;
		while (*pp && *pp != s)
			pp = &(*pp)->hnext;
		if (*pp)
			*pp = s->hnext;
		if (!*head)
			ms_map_del(&m->by_hash, s->hash, NULL);
	}
	ms_map_del(&m->by_id, s->id, NULL);
	ms_map_fini(&s->members);
	free(s->wcount);
	free(s->pres);
	free(s);
}

static bool stream_unused(const stream *s)
{
	return !s->members.len && !s->wmask && !s->dirty;
}

/* Note when a stream becomes unused; the sweep frees it later. */
static void note_unused(mem *m, stream *s)
{
	if (stream_unused(s) && !s->idle_since)
		s->idle_since = m->now;
}

static void sweep(mem *m)
{
	stream **victims = NULL;
	size_t n = 0, cap = 0;
	const ms_map_slot *sl;
	for (uint32_t p = 0; (p = ms_map_next(&m->by_id, p, &sl)) != 0;) {
		stream *s = (stream *)(uintptr_t)sl->val;
		if (!stream_unused(s)) {
			s->idle_since = 0;
		} else if (!s->idle_since) {
			s->idle_since = m->now;
		} else if (m->now - s->idle_since >= m->o.idle_seconds) {
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				victims = ms_shard__realloc(victims, cap * sizeof(*victims));
			}
			victims[n++] = s; /* not freed while iterating the map */
		}
	}
	for (size_t i = 0; i < n; i++)
		stream_free(m, victims[i]);
	free(victims);
}

/* ---- presence ----------------------------------------------------------- */

static void presence_note(mem *m, stream *s, uint64_t uid, bool leave)
{
	if (s->quiet)
		return;
	/* A join and a leave of the same user within one flush cancel out. */
	for (uint32_t i = 0; i < s->npres; i++)
		if (s->pres[i].uid == uid && s->pres[i].leave != leave) {
			s->pres[i] = s->pres[--s->npres];
			return;
		}
	if (s->npres == s->cpres) {
		s->cpres = s->cpres ? s->cpres * 2 : 8;
		s->pres = ms_shard__realloc(s->pres, s->cpres * sizeof(*s->pres));
	}
	s->pres[s->npres].uid = uid;
	s->pres[s->npres++].leave = leave;
	if (!s->dirty) {
		s->dirty = true;
		s->dnext = m->dirty;
		m->dirty = s;
	}
}

static void mem_presence_add(ms_engine *e, uint64_t id, uint64_t uid)
{
	mem *m = M(e);
	stream *s = stream_by_id(m, id);
	if (!s)
		return;
	uint64_t *cnt = ms_map_get(&s->members, uid);
	if (cnt) {
		(*cnt)++;
	} else {
		ms_map_put(&s->members, uid, 1);
		presence_note(m, s, uid, false);
	}
}

static void mem_presence_remove(ms_engine *e, uint64_t id, uint64_t uid)
{
	mem *m = M(e);
	stream *s = stream_by_id(m, id);
	if (!s)
		return;
	uint64_t *cnt = ms_map_get(&s->members, uid);
	if (cnt && --*cnt == 0) {
		ms_map_del(&s->members, uid, NULL);
		presence_note(m, s, uid, true);
	}
	note_unused(m, s);
}

static void mem_presence_list(ms_engine *e, ms_str name, uint64_t cursor,
			      const ms_engine_tag *tag)
{
	mem *m = M(e);
	stream *s = stream_find(m, name, ms_hash_bytes(name.p, name.n));
	uint32_t page = m->o.presence_page;
	uint64_t *users = users_room(m, page);
	/* The cursor is a position in the member map: stable while the map
	 * does not change, and a page may repeat or skip a user when it does
	 * (listings are advisory; events carry the changes). */
	uint32_t pos = (uint32_t)cursor, count = 0;
	const ms_map_slot *sl;
	bool more = false;
	if (s) {
		for (uint32_t p = pos; (p = ms_map_next(&s->members, p, &sl)) != 0;) {
			if (count == page) {
				more = true;
				break;
			}
			users[count++] = sl->key;
			pos = p;
		}
	}
	ms_engine_ev ev = {
		.type = MS_ENGINE_PRESENCE_LIST,
		.tag = tag,
		.stream = s ? s->id : 0,
		.users = users,
		.n = count,
		.more = more,
		.next = pos,
	};
	emit(m, &ev);
}

/* ---- subscribers and messages --------------------------------------------- */

static void mem_subscribe(ms_engine *e, ms_str name, uint32_t worker, uint16_t flags,
			  const ms_engine_tag *tag)
{
	mem *m = M(e);
	ms_engine_ev ev = { .type = MS_ENGINE_SUBSCRIBED, .tag = tag };
	stream *s = stream_open(m, name, flags & ~MS_ENGINE_RAW, &ev.err, &ev.created);
	if (s) {
		s->idle_since = 0;
		if (flags & MS_ENGINE_QUIET)
			s->quiet = true;
		s->wcount[worker]++;
		s->wmask |= 1ull << worker;
		ev.stream = s->id;
		ev.seq = s->seq;
		ev.epoch = s->epoch;
	}
	emit(m, &ev);
}

static void mem_unsubscribe(ms_engine *e, uint64_t id, uint32_t worker)
{
	mem *m = M(e);
	stream *s = stream_by_id(m, id);
	if (!s)
		return;
	if (s->wcount[worker] && --s->wcount[worker] == 0)
		s->wmask &= ~(1ull << worker);
	note_unused(m, s);
}

static void mem_publish(ms_engine *e, ms_str name, ms_pkt *pkt, uint32_t seq_off,
			uint16_t flags, const ms_engine_tag *tag)
{
	mem *m = M(e);
	ms_engine_ev ev = { .type = MS_ENGINE_PUBLISHED, .tag = tag };
	stream *s = stream_open(m, name, flags, &ev.err, &ev.created);
	if (!s) {
		emit(m, &ev);
		ms_pkt_unref(pkt);
		return;
	}
	if (!(flags & MS_ENGINE_RAW)) {
		/* The packet has one holder (the engine): its bytes may still
		 * change. They are immutable once DELIVER shares it. */
		ev.seq = ++s->seq;
		ev.stream = s->id;
		ev.epoch = s->epoch;
		ms_proto_seq_fill((char *)pkt->data + seq_off, ev.seq);
		emit(m, &ev);
	}
	if (s->wmask) {
		ms_engine_ev d = {
			.type = MS_ENGINE_DELIVER,
			.stream = s->id,
			.workers = s->wmask,
			.pkt = pkt,
		};
		emit(m, &d);
	}
	ms_pkt_unref(pkt);
	note_unused(m, s);
}

static void mem_history(ms_engine *e, ms_str name, const ms_engine_history_req *q,
			const ms_engine_tag *tag)
{
	mem *m = M(e);
	stream *s = stream_find(m, name, ms_hash_bytes(name.p, name.n));
	/* No history kept yet: the position only. */
	ms_engine_ev ev = {
		.type = MS_ENGINE_HISTORY,
		.tag = tag,
		.stream = s ? s->id : 0,
		.seq = s ? s->seq : 0,
		.epoch = s ? s->epoch : 0,
	};
	emit(m, &ev);
}

/* ---- once per iteration --------------------------------------------------- */

static void mem_flush(ms_engine *e, uint32_t now)
{
	mem *m = M(e);
	m->now = now;
	if (now - m->last_sweep >= m->o.sweep_seconds) {
		m->last_sweep = now;
		sweep(m);
	}
	while (m->dirty) {
		stream *s = m->dirty;
		m->dirty = s->dnext;
		s->dirty = false;
		if (s->npres == 0 || s->members.len > m->o.presence_max_members || !s->wmask) {
			s->npres = 0;
			note_unused(m, s);
			continue;
		}
		/* Joins then leaves, each in the order of the pending list. */
		uint64_t *u = users_room(m, s->npres);
		uint32_t nj = 0, nl = 0;
		for (uint32_t i = 0; i < s->npres; i++)
			if (!s->pres[i].leave)
				u[nj++] = s->pres[i].uid;
		for (uint32_t i = 0; i < s->npres; i++)
			if (s->pres[i].leave)
				u[nj + nl++] = s->pres[i].uid;
		s->npres = 0;
		ms_engine_ev ev = {
			.type = MS_ENGINE_PRESENCE,
			.stream = s->id,
			.name = { s->name, s->name_len },
			.workers = s->wmask,
			.users = u,
			.njoin = nj,
			.nleave = nl,
		};
		emit(m, &ev);
		note_unused(m, s);
	}
}

/* ---- lifecycle ------------------------------------------------------------ */

static void mem_destroy(ms_engine *e)
{
	mem *m = M(e);
	const ms_map_slot *sl;
	for (uint32_t p = 0; (p = ms_map_next(&m->by_id, p, &sl)) != 0;) {
		stream *s = (stream *)(uintptr_t)sl->val;
		ms_map_fini(&s->members);
		free(s->wcount);
		free(s->pres);
		free(s);
	}
	ms_map_fini(&m->by_hash);
	ms_map_fini(&m->by_id);
	free(m->users);
	free(m);
}

static const ms_engine_ops mem_ops = {
	.name = "memory",
	.destroy = mem_destroy,
	.subscribe = mem_subscribe,
	.unsubscribe = mem_unsubscribe,
	.publish = mem_publish,
	.presence_add = mem_presence_add,
	.presence_remove = mem_presence_remove,
	.presence_list = mem_presence_list,
	.history = mem_history,
	.flush = mem_flush,
};

ms_engine *ms_engine_mem_create(const ms_engine_mem_opts *o, ms_engine_sink sink, void *arg)
{
	mem *m = ms_shard__calloc(1, sizeof(*m));
	m->base.ops = &mem_ops;
	m->base.sink = sink;
	m->base.arg = arg;
	m->o = *o;
	ms_map_init(&m->by_hash);
	ms_map_init(&m->by_id);
	return &m->base;
}
