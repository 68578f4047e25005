/*
 * Chat operations, message handlers and the three tables they use:
 *   - stream tracker (owner side): name → stream {members uid → conns,
 *     per-worker subscriber counts, seq, epoch, pending presence};
 *   - topic table (every worker): stream id → local subscriber handles;
 *   - per-connection subscriptions (the chat slot of each /ws connection):
 *     which streams it joined or is joining, and where it sits in each
 *     topic's array (O(1) removal).
 *
 * Packets: a message event is built once, by the publisher's worker, as a
 * complete unmasked frame with a fixed 20-byte seq slot ("seq":42 and spaces:
 * still valid JSON) that the owner patches. Each worker with subscribers gets
 * one reference; each local subscriber's queue takes one more, released when
 * its send completes.
 */
#include "shard/chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/log.h"
#include "core/pkt.h"
#include "net/admin.h"
#include "net/ws.h"
#include "shard/map.h"
#include "shard/registry.h"

#define SEQ_SLOT 20
#define DM_FANOUT_MAX 64 /* devices of one user reached by one DM */
#define ROOM_NAME "#room" /* not a valid client stream name: /room only */
#define STREAM_IDLE_SECONDS 300 /* an empty stream is forgotten after this */
#define SWEEP_SECONDS 10

enum {
	M_REGISTER = 1, /* a = uid */
	M_UNREGISTER,   /* a = uid */
	M_JOIN,         /* ptr = jreq (to the owner) */
	M_JOIN_ACK,     /* ptr = jreq (back to the joiner's worker) */
	M_LEAVE,        /* a = stream id, b = uid */
	M_PUBLISH,      /* ptr = pkt, a = request id, u32 = name offset, b = name len << 32 | seq offset */
	M_PUB_ACK,      /* a = request id, b = seq */
	M_DELIVER,      /* ptr = pkt, a = stream id */
	M_DM,           /* ptr = pkt, ref = recipient */
	M_PRESENCE,     /* ptr = jreq (name, cursor in seq) */
	M_REPLY,        /* ptr = pkt, ref = recipient */
	M_KICK,         /* ref = connection to close (server API) */
};

enum {
	F_HAS_ID = 1,
	F_ROOM = 2,
	F_QUIET = 4, /* join without reply or presence */
	F_API = 8,   /* publish from the server API: ref is the admin connection */
	F_NOCREATE = 16, /* the sender's --create-rate bucket was empty: took no token */
	F_CREATED = 32,  /* ack: this request created the stream */
	F_REFUSED = 64,  /* ack: refused, the error code in the ack (see refusal_text) */
};

typedef struct jreq {
	uint64_t ref, uid;
	int64_t id;
	uint64_t t_req;   /* joiner's worker clock at the request (op latency) */
	uint64_t stream_id, seq, epoch;
	uint16_t flags;
	uint16_t name_len;
	uint16_t err;     /* with F_REFUSED: 429 or 503 */
	char name[];
} jreq;

typedef struct stream {
	struct stream *hnext;   /* same name hash */
	struct stream *dnext;   /* presence-dirty list */
	uint64_t id, hash, seq, epoch;
	ms_map members;         /* uid → connections joined */
	uint32_t *wcount;       /* per worker: subscriber connections */
	uint64_t wmask;         /* workers with subscribers */
	struct pres { uint64_t uid; bool leave; } *pres; /* pending presence changes */
	uint32_t npres, cpres;
	bool dirty, quiet;
	uint16_t name_len;
	uint32_t idle_since;    /* worker second it became idle, 0 = in use */
	char name[];
} stream;

typedef struct topic {
	uint64_t id;
	uint32_t n, cap;
	uint64_t *subs;         /* gen << 32 | index */
	uint16_t name_len;
	char name[];
} topic;

enum { SUB_PENDING = 1, SUB_JOINED, SUB_LEAVING };

typedef struct csub {
	uint64_t hash;
	uint64_t stream_id;
	uint32_t pos;
	uint8_t state;
	uint8_t recheck; /* the token changed while the join was in flight */
} csub;

typedef struct cconn {
	uint32_t n, cap;
	csub s[];
} cconn;

struct ms_chat {
	const ms_config *cfg;
	uint32_t nworkers;
	ms_registry *reg;
};

struct ms_chat_worker {
	ms_chat *chat;
	uint32_t id;
	uint64_t next_stream;
	ms_map by_hash;   /* owner: name hash → stream chain */
	ms_map by_id;     /* owner: stream id → stream */
	ms_map topics;    /* local: stream id → topic */
	uint32_t max_streams; /* owner: this worker's share of --max-streams */
	stream *dirty;
	uint32_t now;        /* worker seconds, refreshed every flush */
	uint32_t last_sweep;
	char *scratch;    /* reply building */
	size_t scratch_cap;
};

static void *xmalloc(size_t n)
{
	void *p = malloc(n);
	if (!p) {
		fprintf(stderr, "mezon-sock: out of memory (chat, %zu bytes)\n", n);
		abort();
	}
	return p;
}

static ms_chat_worker *CW(ms_worker *w)
{
	return ms_worker_app(w);
}

uint32_t ms_chat_stream_owner(const char *name, size_t len, uint32_t nworkers)
{
	uint32_t shard = (uint32_t)(ms_hash_bytes(name, len) % MS_STREAM_SHARDS);
	return shard % nworkers;
}

uint32_t ms_chat_user_owner(uint64_t uid, uint32_t nworkers)
{
	return ms_reg_shard(uid) % nworkers;
}

/* ---- lifecycle -------------------------------------------------------------- */

ms_chat *ms_chat_create(const ms_config *cfg, uint32_t nworkers)
{
	ms_chat *chat = calloc(1, sizeof(*chat));
	if (!chat)
		abort();
	chat->cfg = cfg;
	chat->nworkers = nworkers;
	chat->reg = ms_reg_create();
	return chat;
}

void ms_chat_destroy(ms_chat *chat)
{
	if (!chat)
		return;
	ms_reg_destroy(chat->reg);
	free(chat);
}

ms_chat_worker *ms_chat_worker_create(ms_chat *chat, uint32_t id)
{
	ms_chat_worker *cw = calloc(1, sizeof(*cw));
	if (!cw)
		abort();
	cw->chat = chat;
	cw->id = id;
	cw->max_streams = (chat->cfg->max_streams + chat->nworkers - 1) / chat->nworkers;
	ms_map_init(&cw->by_hash);
	ms_map_init(&cw->by_id);
	ms_map_init(&cw->topics);
	return cw;
}

void ms_chat_worker_destroy(ms_chat_worker *cw)
{
	if (!cw)
		return;
	const ms_map_slot *sl;
	for (uint32_t p = 0; (p = ms_map_next(&cw->by_id, p, &sl)) != 0;) {
		stream *st = (stream *)(uintptr_t)sl->val;
		ms_map_fini(&st->members);
		free(st->wcount);
		free(st->pres);
		free(st);
	}
	for (uint32_t p = 0; (p = ms_map_next(&cw->topics, p, &sl)) != 0;) {
		topic *t = (topic *)(uintptr_t)sl->val;
		free(t->subs);
		free(t);
	}
	ms_map_fini(&cw->by_hash);
	ms_map_fini(&cw->by_id);
	ms_map_fini(&cw->topics);
	free(cw->scratch);
	free(cw);
}

void ms_chat_msg_release(ms_msg *m)
{
	switch (m->type) {
	case M_PUBLISH:
	case M_DELIVER:
	case M_DM:
	case M_REPLY:
		ms_pkt_unref(m->ptr);
		break;
	case M_JOIN:
	case M_JOIN_ACK:
	case M_PRESENCE:
		free(m->ptr);
		break;
	default:
		break;
	}
}

/* ---- small helpers ------------------------------------------------------------ */

/* Request-to-reply latency of one op, from the worker clock of the
 * iteration that received the request to now (reply queued). */
static void op_done(ms_worker *w, enum ms_hist_id which, uint64_t t_req)
{
	uint64_t now = ms_clock_ns();
	ms_worker_record(w, which, now > t_req ? now - t_req : 0);
}

static ms_conn_ref ref_of(ms_worker *w, ms_conn *c)
{
	return ms_conn_ref_of(w, c);
}

/* A frame holding text[0..n): header + payload in one packet. */
static ms_pkt *frame_pkt(uint8_t opcode, const void *text, size_t n)
{
	size_t h = ms_ws_header_len(n);
	ms_pkt *p = ms_pkt_new((uint32_t)(h + n));
	ms_ws_header(p->data, true, opcode, n, NULL);
	if (n)
		memcpy(p->data + h, text, n);
	p->len = (uint32_t)(h + n);
	return p;
}

static cconn *conn_state(ms_conn *c)
{
	return *ms_net_chat_slot(c);
}

/* The live subscription (joined, or join in flight) to the stream `hash`. */
static csub *find_sub(cconn *cs, uint64_t hash)
{
	if (!cs)
		return NULL;
	for (uint32_t i = 0; i < cs->n; i++)
		if (cs->s[i].hash == hash && cs->s[i].state != SUB_LEAVING)
			return &cs->s[i];
	return NULL;
}

/* The entry a JOIN_ACK answers: the oldest join in flight for `hash`
 * (entries keep request order; acks come back in the same order). */
static csub *find_pending(cconn *cs, uint64_t hash)
{
	if (!cs)
		return NULL;
	for (uint32_t i = 0; i < cs->n; i++)
		if (cs->s[i].hash == hash && cs->s[i].state != SUB_JOINED)
			return &cs->s[i];
	return NULL;
}

static uint32_t live_subs(cconn *cs)
{
	uint32_t n = 0;
	for (uint32_t i = 0; cs && i < cs->n; i++)
		n += cs->s[i].state != SUB_LEAVING;
	return n;
}

static csub *find_sub_id(cconn *cs, uint64_t id)
{
	if (!cs)
		return NULL;
	for (uint32_t i = 0; i < cs->n; i++)
		if (cs->s[i].stream_id == id && cs->s[i].state == SUB_JOINED)
			return &cs->s[i];
	return NULL;
}

static csub *add_sub(ms_conn *c, uint64_t hash)
{
	cconn **slot = (cconn **)ms_net_chat_slot(c);
	cconn *cs = *slot;
	if (!cs || cs->n == cs->cap) {
		uint32_t cap = cs ? cs->cap * 2 : 4;
		cconn *n = realloc(cs, sizeof(cconn) + cap * sizeof(csub));
		if (!n)
			abort();
		if (!cs)
			n->n = 0;
		n->cap = cap;
		*slot = cs = n;
	}
	csub *s = &cs->s[cs->n++];
	memset(s, 0, sizeof(*s));
	s->hash = hash;
	return s;
}

/* Remove keeping the order (find_pending relies on it). */
static void del_sub(ms_conn *c, csub *s)
{
	cconn *cs = conn_state(c);
	size_t i = (size_t)(s - cs->s);
	memmove(&cs->s[i], &cs->s[i + 1], (cs->n - i - 1) * sizeof(csub));
	cs->n--;
}

/* ---- topic table (local subscribers) --------------------------------------------- */

static topic *topic_get(ms_chat_worker *cw, uint64_t id)
{
	uint64_t *v = ms_map_get(&cw->topics, id);
	return v ? (topic *)(uintptr_t)*v : NULL;
}

static uint32_t topic_add(ms_chat_worker *cw, const jreq *j, ms_conn *c)
{
	topic *t = topic_get(cw, j->stream_id);
	if (!t) {
		t = xmalloc(sizeof(*t) + j->name_len);
		t->id = j->stream_id;
		t->n = t->cap = 0;
		t->subs = NULL;
		t->name_len = j->name_len;
		memcpy(t->name, j->name, j->name_len);
		ms_map_put(&cw->topics, t->id, (uint64_t)(uintptr_t)t);
	}
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 4;
		t->subs = realloc(t->subs, t->cap * sizeof(uint64_t));
		if (!t->subs)
			abort();
	}
	t->subs[t->n] = (uint64_t)c->gen << 32 | c->idx;
	return t->n++;
}

/* Remove the subscriber at pos: the last one moves into its place, and its
 * own subscription entry learns the new position. */
static void topic_del(ms_worker *w, ms_chat_worker *cw, uint64_t id, uint32_t pos)
{
	topic *t = topic_get(cw, id);
	if (!t || pos >= t->n)
		return;
	uint64_t moved = t->subs[--t->n];
	if (pos < t->n) {
		t->subs[pos] = moved;
		/* _any: the moved subscriber may be freed in this same
		 * iteration, its on_free still to come; its position must be
		 * right when that on_free removes it (else a stale entry stays
		 * in the topic for good). */
		ms_conn *mc = ms_worker_conn_any(w, (uint64_t)cw->id << 56 |
						     (uint64_t)(uint32_t)moved << 32 | (moved >> 32));
		csub *ms = mc ? find_sub_id(conn_state(mc), id) : NULL;
		if (ms)
			ms->pos = pos;
	}
	if (t->n == 0) {
		ms_map_del(&cw->topics, id, NULL);
		free(t->subs);
		free(t);
	}
}

static void topic_deliver(ms_worker *w, ms_chat_worker *cw, uint64_t id, ms_pkt *pkt)
{
	topic *t = topic_get(cw, id);
	if (!t)
		return;
	ms_worker_stats *st = ms_worker_stats_of(w);
	uint64_t base = (uint64_t)cw->id << 56;
	for (uint32_t i = 0; i < t->n; i++) {
		uint64_t s = t->subs[i];
		ms_conn *c = ms_worker_conn(w, base | (uint64_t)(uint32_t)s << 32 | (s >> 32));
		if (c && ms_net_deliverable(c)) {
			ms_conn_send_pkt(w, c, pkt, 0, pkt->len);
			st->deliveries++;
		}
	}
}

/* ---- stream tracker (owner) ----------------------------------------------------------- */

static stream *stream_find(ms_chat_worker *cw, const char *name, size_t len, uint64_t hash)
{
	uint64_t *v = ms_map_get(&cw->by_hash, hash);
	for (stream *s = v ? (stream *)(uintptr_t)*v : NULL; s; s = s->hnext)
		if (s->name_len == len && memcmp(s->name, name, len) == 0)
			return s;
	return NULL;
}

static stream *stream_get(ms_chat_worker *cw, const char *name, size_t len)
{
	uint64_t hash = ms_hash_bytes(name, len);
	stream *s = stream_find(cw, name, len, hash);
	if (s)
		return s;
	s = calloc(1, sizeof(*s) + len);
	if (!s)
		abort();
	s->hash = hash;
	s->id = (uint64_t)cw->id << 56 | ++cw->next_stream;
	if (getrandom(&s->epoch, sizeof(s->epoch), 0) != sizeof(s->epoch))
		s->epoch = ms_map_mix(s->id ^ (uint64_t)(uintptr_t)s);
	s->wcount = calloc(cw->chat->nworkers, sizeof(uint32_t));
	if (!s->wcount)
		abort();
	s->name_len = (uint16_t)len;
	memcpy(s->name, name, len);
	ms_map_init(&s->members);
	uint64_t *head = ms_map_get(&cw->by_hash, hash);
	s->hnext = head ? (stream *)(uintptr_t)*head : NULL;
	ms_map_put(&cw->by_hash, hash, (uint64_t)(uintptr_t)s);
	ms_map_put(&cw->by_id, s->id, (uint64_t)(uintptr_t)s);
	return s;
}

/* The stream a client request names, created if it may be: a request
 * whose sender's --create-rate bucket is empty gets 429, one over this
 * worker's share of --max-streams 503 (*err; NULL returned). Every stream
 * costs memory until it has been idle STREAM_IDLE_SECONDS, so creating them
 * is what these bound. *created: the sender's worker keeps the token its
 * request took (else gives it back). */
static stream *stream_open(ms_chat_worker *cw, const char *name, size_t len, uint16_t flags,
			   uint16_t *err, bool *created)
{
	*created = false;
	stream *s = stream_find(cw, name, len, ms_hash_bytes(name, len));
	if (s)
		return s;
	if (flags & F_NOCREATE) {
		*err = 429;
		return NULL;
	}
	if (cw->by_id.len >= cw->max_streams) {
		*err = 503;
		return NULL;
	}
	*created = true;
	return stream_get(cw, name, len);
}

static const char *refusal_text(uint16_t err)
{
	return err == 429 ? "stream creation rate limited" : "too many streams";
}

/* A stream nobody has been in for STREAM_IDLE_SECONDS is forgotten (its seq
 * with it): the next join or publish recreates it under a new epoch, as
 * PROTOCOL.md allows. Until then a brief gap (everyone reconnecting) keeps
 * seq continuity. Without this, every name ever used would stay forever. */
static bool stream_idle(const stream *s)
{
	return !s->members.len && !s->wmask && !s->dirty;
}

static void stream_free(ms_chat_worker *cw, stream *s)
{
	uint64_t *head = ms_map_get(&cw->by_hash, s->hash);
	if (head) {
		/* the map value is the chain's first stream pointer */
		stream **pp = (stream **)head;
		while (*pp && *pp != s)
			pp = &(*pp)->hnext;
		if (*pp)
			*pp = s->hnext;
		if (!*head)
			ms_map_del(&cw->by_hash, s->hash, NULL);
	}
	ms_map_del(&cw->by_id, s->id, NULL);
	ms_map_fini(&s->members);
	free(s->wcount);
	free(s->pres);
	free(s);
}

/* Note when a stream becomes idle; the sweep frees it later. */
static void stream_maybe_free(ms_chat_worker *cw, stream *s)
{
	if (stream_idle(s) && !s->idle_since)
		s->idle_since = cw->now;
}

static void sweep_idle_streams(ms_chat_worker *cw)
{
	stream **victims = NULL;
	size_t n = 0, cap = 0;
	const ms_map_slot *sl;
	for (uint32_t p = 0; (p = ms_map_next(&cw->by_id, p, &sl)) != 0;) {
		stream *s = (stream *)(uintptr_t)sl->val;
		if (!stream_idle(s)) {
			s->idle_since = 0;
		} else if (!s->idle_since) {
			s->idle_since = cw->now;
		} else if (cw->now - s->idle_since >= STREAM_IDLE_SECONDS) {
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				victims = realloc(victims, cap * sizeof(*victims));
				if (!victims)
					abort();
			}
			victims[n++] = s; /* not freed while iterating the map */
		}
	}
	for (size_t i = 0; i < n; i++)
		stream_free(cw, victims[i]);
	free(victims);
}

static void presence_note(ms_chat_worker *cw, stream *s, uint64_t uid, bool leave)
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
		s->pres = realloc(s->pres, s->cpres * sizeof(*s->pres));
		if (!s->pres)
			abort();
	}
	s->pres[s->npres].uid = uid;
	s->pres[s->npres++].leave = leave;
	if (!s->dirty) {
		s->dirty = true;
		s->dnext = cw->dirty;
		cw->dirty = s;
	}
}

static void send_to_subscribers(ms_worker *w, stream *s, ms_pkt *pkt)
{
	for (uint64_t m = s->wmask; m; m &= m - 1) {
		uint32_t to = (uint32_t)__builtin_ctzll(m);
		ms_pkt_ref(pkt);
		ms_msg *d = ms_worker_post(w, to);
		d->type = M_DELIVER;
		d->ptr = pkt;
		d->a = s->id;
	}
}

static void owner_join(ms_worker *w, ms_chat_worker *cw, uint32_t from, jreq *j)
{
	bool created;
	stream *s = stream_open(cw, j->name, j->name_len, j->flags, &j->err, &created);
	if (!s) {
		j->flags |= F_REFUSED;
		ms_msg *m = ms_worker_post(w, from);
		m->type = M_JOIN_ACK;
		m->ptr = j;
		return;
	}
	if (created)
		j->flags |= F_CREATED;
	s->idle_since = 0;
	if (j->flags & F_QUIET)
		s->quiet = true;
	uint64_t *cnt = ms_map_get(&s->members, j->uid);
	if (cnt) {
		(*cnt)++;
	} else {
		ms_map_put(&s->members, j->uid, 1);
		presence_note(cw, s, j->uid, false);
	}
	s->wcount[from]++;
	s->wmask |= 1ull << from;
	j->stream_id = s->id;
	j->seq = s->seq;
	j->epoch = s->epoch;
	ms_msg *m = ms_worker_post(w, from);
	m->type = M_JOIN_ACK;
	m->ptr = j;
}

static void owner_leave(ms_chat_worker *cw, uint32_t from, uint64_t id, uint64_t uid)
{
	uint64_t *v = ms_map_get(&cw->by_id, id);
	if (!v)
		return;
	stream *s = (stream *)(uintptr_t)*v;
	uint64_t *cnt = ms_map_get(&s->members, uid);
	if (cnt && --*cnt == 0) {
		ms_map_del(&s->members, uid, NULL);
		presence_note(cw, s, uid, true);
	}
	if (s->wcount[from] && --s->wcount[from] == 0)
		s->wmask &= ~(1ull << from);
	stream_maybe_free(cw, s);
}

static void owner_publish(ms_worker *w, ms_chat_worker *cw, uint32_t from, ms_msg *m)
{
	ms_pkt *pkt = m->ptr;
	stream *s;
	if (m->flags & F_ROOM) {
		s = stream_get(cw, ROOM_NAME, sizeof(ROOM_NAME) - 1);
	} else {
		uint16_t err = 0;
		bool created;
		s = stream_open(cw, (const char *)pkt->data + m->u32, (size_t)(m->b >> 32), m->flags,
				&err, &created);
		if (!s) {
			ms_msg *ack = ms_worker_post(w, from);
			ack->type = M_PUB_ACK;
			ack->flags = m->flags | F_REFUSED;
			ack->ref = m->ref;
			ack->a = m->a;
			ack->b = err;
			ms_pkt_unref(pkt);
			return;
		}
		uint64_t seq = ++s->seq;
		char digits[24];
		int n = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)seq);
		memcpy(pkt->data + (uint32_t)m->b, digits, (size_t)n);
		ms_msg *ack = ms_worker_post(w, from);
		ack->type = M_PUB_ACK;
		ack->flags = m->flags | (created ? F_CREATED : 0);
		ack->ref = m->ref;
		ack->a = m->a;
		ack->b = seq;
		ack->u32 = pkt->stamp; /* request time, for the publisher's op latency */
	}
	send_to_subscribers(w, s, pkt);
	ms_pkt_unref(pkt);
	stream_maybe_free(cw, s);
}

static int presence_listing(ms_chat_worker *cw, jreq *j, char **out)
{
	stream *s = stream_find(cw, j->name, j->name_len, ms_hash_bytes(j->name, j->name_len));
	uint32_t page = cw->chat->cfg->presence_page;
	size_t need = 96 + (size_t)page * 24;
	if (cw->scratch_cap < need) {
		free(cw->scratch);
		cw->scratch = xmalloc(need);
		cw->scratch_cap = need;
	}
	char *b = cw->scratch;
	size_t n = 0;
	if (j->flags & F_HAS_ID)
		n += (size_t)sprintf(b + n, "{\"id\":%lld,\"ok\":true,\"users\":[", (long long)j->id);
	else
		n += (size_t)sprintf(b + n, "{\"ok\":true,\"users\":[");
	uint32_t pos = (uint32_t)j->seq, count = 0;
	const ms_map_slot *sl;
	bool more = false;
	if (s) {
		for (uint32_t p = pos; (p = ms_map_next(&s->members, p, &sl)) != 0;) {
			if (count == page) {
				more = true;
				break;
			}
			n += (size_t)sprintf(b + n, "%s\"%llu\"", count ? "," : "",
					     (unsigned long long)sl->key);
			count++;
			pos = p;
		}
	}
	if (more)
		n += (size_t)sprintf(b + n, "],\"next\":\"%u\"}", pos);
	else
		n += (size_t)sprintf(b + n, "]}");
	*out = b;
	return (int)n;
}

/* ---- messages ----------------------------------------------------------------------- */

void ms_chat_on_msg(ms_worker *w, uint32_t from, ms_msg *m)
{
	ms_chat_worker *cw = CW(w);
	switch (m->type) {
	case M_REGISTER:
		ms_reg_add(cw->chat->reg, m->a, m->ref);
		break;
	case M_UNREGISTER:
		ms_reg_del(cw->chat->reg, m->a, m->ref);
		break;
	case M_JOIN:
		owner_join(w, cw, from, m->ptr);
		break;
	case M_JOIN_ACK: {
		jreq *j = m->ptr;
		ms_conn *c = ms_worker_conn(w, j->ref);
		if (c && !(j->flags & F_QUIET)) {
			ms_net_request_done(w, c);
			if (!(j->flags & (F_NOCREATE | F_CREATED)))
				ms_net_not_created(w, c); /* its token back */
		}
		bool live = c && ms_net_deliverable(c);
		csub *s = live ? find_pending(conn_state(c), ms_hash_bytes(j->name, j->name_len)) : NULL;
		if (j->flags & F_REFUSED) {
			/* Nothing was joined: answer, and forget the pending entry. */
			if (s) {
				if (!(j->flags & F_QUIET))
					ms_net_send_error(w, c, j->flags & F_HAS_ID, j->id, j->err,
							  refusal_text(j->err));
				del_sub(c, s);
			}
			free(j);
			break;
		}
		/* The entry keeps only the name's hash, so a join that was in
		 * flight when an auth op replaced the token is judged here, by
		 * the token the connection holds now. */
		bool refused = s && s->recheck &&
			       !ms_net_stream_allowed(c, (ms_str){ j->name, j->name_len });
		if (refused) {
			ms_net_send_error(w, c, j->flags & F_HAS_ID, j->id, 403,
					  "stream not allowed by token");
		} else if (s && !(j->flags & F_QUIET)) {
			/* One reply per request: a join left before its ack still
			 * succeeded (and was then left). */
			ms_net_reply(w, c, j->flags & F_HAS_ID, j->id,
				     "\"ok\":true,\"seq\":%llu,\"epoch\":\"%016llx\"}",
				     (unsigned long long)j->seq, (unsigned long long)j->epoch);
			op_done(w, MS_HIST_OP_JOIN, j->t_req);
		}
		if (!s || s->state == SUB_LEAVING || refused) {
			/* Gone, left meanwhile or refused: undo the membership. */
			ms_msg *l = ms_worker_post(w, from);
			l->type = M_LEAVE;
			l->a = j->stream_id;
			l->b = j->uid;
			if (s)
				del_sub(c, s);
			free(j);
			break;
		}
		s->stream_id = j->stream_id;
		s->pos = topic_add(cw, j, c);
		s->state = SUB_JOINED;
		free(j);
		break;
	}
	case M_LEAVE:
		owner_leave(cw, from, m->a, m->b);
		break;
	case M_PUBLISH:
		owner_publish(w, cw, from, m);
		break;
	case M_PUB_ACK: {
		ms_conn *c = ms_worker_conn(w, m->ref);
		if (c && !(m->flags & F_API)) {
			ms_net_request_done(w, c);
			if (!(m->flags & (F_NOCREATE | F_CREATED)))
				ms_net_not_created(w, c); /* its token back */
		}
		if (m->flags & F_REFUSED) {
			uint16_t err = (uint16_t)m->b;
			if (c && (m->flags & F_API))
				ms_admin_error(w, c, err, refusal_text(err));
			else if (c && ms_net_deliverable(c))
				ms_net_send_error(w, c, m->flags & F_HAS_ID, (int64_t)m->a, err,
						  refusal_text(err));
			break;
		}
		if (m->flags & F_API) {
			if (c) {
				char b[48];
				int n = snprintf(b, sizeof(b), "{\"seq\":%llu}", (unsigned long long)m->b);
				ms_admin_reply(w, c, 200, b, (size_t)n);
			}
		} else if (c && ms_net_deliverable(c)) {
			ms_net_reply(w, c, m->flags & F_HAS_ID, (int64_t)m->a,
				     "\"ok\":true,\"seq\":%llu}", (unsigned long long)m->b);
			ms_worker_record(w, MS_HIST_OP_PUBLISH, ms_pkt_stamp_age(m->u32, ms_clock_ns()));
		}
		break;
	}
	case M_DELIVER:
		topic_deliver(w, cw, m->a, m->ptr);
		ms_pkt_unref(m->ptr);
		break;
	case M_DM:
	case M_REPLY: {
		ms_conn *c = ms_worker_conn(w, m->ref);
		if (c && ms_net_deliverable(c)) {
			ms_conn_send_pkt(w, c, m->ptr, 0, ((ms_pkt *)m->ptr)->len);
			if (m->type == M_DM) {
				ms_worker_stats_of(w)->deliveries++;
			} else {
				ms_worker_stats_of(w)->msgs_out++;
				op_done(w, MS_HIST_OP_PRESENCE, m->a);
			}
		}
		if (c && m->type == M_REPLY)
			ms_net_request_done(w, c);
		ms_pkt_unref(m->ptr);
		break;
	}
	case M_KICK: {
		ms_conn *c = ms_worker_conn(w, m->ref);
		if (c && ms_net_deliverable(c))
			ms_net_kick(w, c, "disconnected by the server");
		break;
	}
	case M_PRESENCE: {
		jreq *j = m->ptr;
		char *text;
		int n = presence_listing(cw, j, &text);
		ms_msg *r = ms_worker_post(w, from);
		r->type = M_REPLY;
		r->ref = j->ref;
		r->a = j->t_req;
		r->ptr = frame_pkt(MS_WS_OP_TEXT, text, (size_t)n);
		free(j);
		break;
	}
	default:
		ms_warn("chat: unknown message type %u from worker %u", m->type, from);
		break;
	}
}

void ms_chat_on_flush(ms_worker *w)
{
	ms_chat_worker *cw = CW(w);
	cw->now = ms_worker_now(w);
	if (cw->now - cw->last_sweep >= SWEEP_SECONDS) {
		cw->last_sweep = cw->now;
		sweep_idle_streams(cw);
	}
	uint32_t max = cw->chat->cfg->presence_max_members;
	while (cw->dirty) {
		stream *s = cw->dirty;
		cw->dirty = s->dnext;
		s->dirty = false;
		if (s->npres == 0 || s->members.len > max) {
			s->npres = 0;
			stream_maybe_free(cw, s);
			continue;
		}
		/* {"event":"presence","stream":S,"join":[..],"leave":[..]} */
		size_t cap = 64 + s->name_len + (size_t)s->npres * 24;
		char *b = xmalloc(cap);
		size_t n = (size_t)sprintf(b, "{\"event\":\"presence\",\"stream\":\"%.*s\"",
					   (int)s->name_len, s->name);
		for (int leave = 0; leave < 2; leave++) {
			bool first = true;
			for (uint32_t i = 0; i < s->npres; i++) {
				if ((int)s->pres[i].leave != leave)
					continue;
				n += (size_t)sprintf(b + n, "%s\"%llu\"",
						     first ? (leave ? ",\"leave\":[" : ",\"join\":[") : ",",
						     (unsigned long long)s->pres[i].uid);
				first = false;
			}
			if (!first)
				b[n++] = ']';
		}
		b[n++] = '}';
		s->npres = 0;
		ms_pkt *pkt = frame_pkt(MS_WS_OP_TEXT, b, n);
		free(b);
		send_to_subscribers(w, s, pkt);
		ms_pkt_unref(pkt);
		stream_maybe_free(cw, s);
	}
}

/* ---- requests (the connection's worker) ------------------------------------------------ */

static void post_join(ms_worker *w, ms_conn *c, const char *name, size_t len,
		      const ms_req *req, uint16_t flags)
{
	jreq *j = xmalloc(sizeof(*j) + len);
	memset(j, 0, sizeof(*j));
	j->ref = ref_of(w, c);
	j->uid = ms_net_uid(c);
	j->t_req = ms_worker_now_ns(w);
	j->id = req ? req->id : 0;
	j->flags = flags | (req && req->has_id ? F_HAS_ID : 0);
	j->name_len = (uint16_t)len;
	memcpy(j->name, name, len);
	ms_msg *m = ms_worker_post(w, ms_chat_stream_owner(name, len, ms_worker_count(w)));
	m->type = M_JOIN;
	m->ptr = j;
}

static void do_join(ms_worker *w, ms_conn *c, const ms_req *req)
{
	const ms_config *cfg = ms_worker_config(w);
	cconn *cs = conn_state(c);
	uint64_t hash = ms_hash_bytes(req->stream.p, req->stream.n);
	if (!ms_net_stream_allowed(c, req->stream)) {
		ms_net_send_error(w, c, req->has_id, req->id, 403, "stream not allowed by token");
		return;
	}
	if (find_sub(cs, hash)) {
		ms_net_send_error(w, c, req->has_id, req->id, 409, "already joined");
		return;
	}
	if (live_subs(cs) >= cfg->max_streams_per_conn) {
		ms_net_send_error(w, c, req->has_id, req->id, 403, "too many streams");
		return;
	}
	add_sub(c, hash)->state = SUB_PENDING;
	post_join(w, c, req->stream.p, req->stream.n, req,
		  ms_net_may_create(w, c) ? 0 : F_NOCREATE);
	ms_net_request_sent(w, c);
}

static void post_leave(ms_worker *w, ms_chat_worker *cw, ms_conn *c, csub *s)
{
	topic *t = topic_get(cw, s->stream_id);
	uint32_t owner = t ? ms_chat_stream_owner(t->name, t->name_len, ms_worker_count(w))
			   : (uint32_t)(s->stream_id >> 56);
	topic_del(w, cw, s->stream_id, s->pos);
	ms_msg *m = ms_worker_post(w, owner);
	m->type = M_LEAVE;
	m->a = s->stream_id;
	m->b = ms_net_uid(c);
}

static void do_leave(ms_worker *w, ms_conn *c, const ms_req *req)
{
	csub *s = find_sub(conn_state(c), ms_hash_bytes(req->stream.p, req->stream.n));
	if (!s) {
		ms_net_send_error(w, c, req->has_id, req->id, 409, "not joined");
		return;
	}
	if (s->state == SUB_PENDING) {
		s->state = SUB_LEAVING; /* the JOIN_ACK undoes it */
	} else {
		post_leave(w, CW(w), c, s);
		del_sub(c, s);
	}
	ms_net_send_ok(w, c, req->has_id, req->id);
	op_done(w, MS_HIST_OP_LEAVE, ms_worker_now_ns(w));
}

/* {"event":"message","stream":S,"seq":<slot>,"from":F,"data":D}: the
 * packet, and the offsets of the stream name and of the blank seq slot the
 * owner fills in. from is the JSON value (a quoted user id, or "server"). */
static ms_pkt *message_pkt(ms_str name, const char *from, size_t fl, ms_str data,
			   uint32_t *name_off, uint32_t *seq_off)
{
	static const char p1[] = "{\"event\":\"message\",\"stream\":\"";
	static const char p2[] = "\",\"seq\":";
	static const char p3[] = ",\"from\":";
	static const char p4[] = ",\"data\":";
	size_t len = (sizeof(p1) - 1) + name.n + (sizeof(p2) - 1) + SEQ_SLOT +
		     (sizeof(p3) - 1) + fl + (sizeof(p4) - 1) + data.n + 1;
	size_t h = ms_ws_header_len(len);
	ms_pkt *pkt = ms_pkt_new((uint32_t)(h + len));
	uint8_t *o = pkt->data;
	ms_ws_header(o, true, MS_WS_OP_TEXT, len, NULL);
	size_t k = h;
#define PUT(ptr, n) (memcpy(o + k, (ptr), (n)), k += (n))
	PUT(p1, sizeof(p1) - 1);
	*name_off = (uint32_t)k;
	PUT(name.p, name.n);
	PUT(p2, sizeof(p2) - 1);
	*seq_off = (uint32_t)k;
	memset(o + k, ' ', SEQ_SLOT);
	k += SEQ_SLOT;
	PUT(p3, sizeof(p3) - 1);
	PUT(from, fl);
	PUT(p4, sizeof(p4) - 1);
	PUT(data.p, data.n);
	o[k++] = '}';
#undef PUT
	pkt->len = (uint32_t)k;
	return pkt;
}

static void post_publish(ms_worker *w, ms_str name, ms_pkt *pkt, uint32_t name_off,
			 uint32_t seq_off, uint16_t flags, ms_conn_ref ref, uint64_t id)
{
	ms_msg *m = ms_worker_post(w, ms_chat_stream_owner(name.p, name.n,
							   ms_worker_count(w)));
	m->type = M_PUBLISH;
	m->flags = flags;
	m->ref = ref;
	m->ptr = pkt;
	m->a = id;
	m->u32 = name_off;
	m->b = (uint64_t)name.n << 32 | seq_off;
}

static void do_publish(ms_worker *w, ms_conn *c, const ms_req *req)
{
	if (!ms_net_stream_allowed(c, req->stream)) {
		ms_net_send_error(w, c, req->has_id, req->id, 403, "stream not allowed by token");
		return;
	}
	char from[24];
	int fl = snprintf(from, sizeof(from), "\"%llu\"", (unsigned long long)ms_net_uid(c));
	uint32_t name_off, seq_off;
	ms_pkt *pkt = message_pkt(req->stream, from, (size_t)fl, req->data, &name_off, &seq_off);
	pkt->stamp = ms_pkt_stamp(ms_worker_now_ns(w));
	post_publish(w, req->stream, pkt, name_off, seq_off,
		     (req->has_id ? F_HAS_ID : 0) | (ms_net_may_create(w, c) ? 0 : F_NOCREATE),
		     ref_of(w, c), (uint64_t)req->id);
	ms_net_request_sent(w, c);
}

/* {"event":"dm","from":F,"data":D} to every device of `to` that is online
 * (at most DM_FANOUT_MAX); returns how many were reached. */
static size_t post_dm(ms_worker *w, uint64_t to, const char *from, ms_str data)
{
	uint64_t refs[DM_FANOUT_MAX];
	size_t n = ms_reg_lookup(CW(w)->chat->reg, to, refs, DM_FANOUT_MAX);
	if (n == 0)
		return 0;
	if (n > DM_FANOUT_MAX)
		n = DM_FANOUT_MAX;
	char head[64];
	int hl = snprintf(head, sizeof(head), "{\"event\":\"dm\",\"from\":%s,\"data\":", from);
	size_t len = (size_t)hl + data.n + 1;
	size_t h = ms_ws_header_len(len);
	ms_pkt *pkt = ms_pkt_new((uint32_t)(h + len));
	ms_ws_header(pkt->data, true, MS_WS_OP_TEXT, len, NULL);
	memcpy(pkt->data + h, head, (size_t)hl);
	memcpy(pkt->data + h + hl, data.p, data.n);
	pkt->data[h + len - 1] = '}';
	pkt->len = (uint32_t)(h + len);
	for (size_t i = 0; i < n; i++) {
		ms_pkt_ref(pkt);
		ms_msg *m = ms_worker_post(w, ms_conn_ref_worker(refs[i]));
		m->type = M_DM;
		m->ref = refs[i];
		m->ptr = pkt;
	}
	ms_pkt_unref(pkt);
	return n;
}

static void do_dm(ms_worker *w, ms_conn *c, const ms_req *req)
{
	uint64_t to;
	if (!ms_proto_uid(req->to, &to)) {
		ms_net_send_error(w, c, req->has_id, req->id, 400, "bad user id");
		return;
	}
	if (!ms_net_dm_allowed(c, to)) {
		ms_net_send_error(w, c, req->has_id, req->id, 403, "dm not allowed by token");
		return;
	}
	char from[24];
	snprintf(from, sizeof(from), "\"%llu\"", (unsigned long long)ms_net_uid(c));
	if (post_dm(w, to, from, req->data) == 0)
		ms_net_send_error(w, c, req->has_id, req->id, 404, "user not online");
	else
		ms_net_send_ok(w, c, req->has_id, req->id);
	op_done(w, MS_HIST_OP_DM, ms_worker_now_ns(w));
}

static void do_presence(ms_worker *w, ms_conn *c, const ms_req *req)
{
	uint64_t cursor = 0;
	if (req->cursor.n) {
		for (size_t i = 0; i < req->cursor.n; i++) {
			char d = req->cursor.p[i];
			if (d < '0' || d > '9' || i > 9) {
				ms_net_send_error(w, c, req->has_id, req->id, 400, "bad cursor");
				return;
			}
			cursor = cursor * 10 + (uint64_t)(d - '0');
		}
	}
	if (!ms_net_stream_allowed(c, req->stream)) {
		ms_net_send_error(w, c, req->has_id, req->id, 403, "stream not allowed by token");
		return;
	}
	size_t len = req->stream.n;
	jreq *j = xmalloc(sizeof(*j) + len);
	memset(j, 0, sizeof(*j));
	j->ref = ref_of(w, c);
	j->t_req = ms_worker_now_ns(w);
	j->id = req->id;
	j->flags = req->has_id ? F_HAS_ID : 0;
	j->seq = cursor;
	j->name_len = (uint16_t)len;
	memcpy(j->name, req->stream.p, len);
	ms_msg *m = ms_worker_post(w, ms_chat_stream_owner(req->stream.p, len, ms_worker_count(w)));
	m->type = M_PRESENCE;
	m->ptr = j;
	ms_net_request_sent(w, c);
}

static void h_request(ms_worker *w, ms_conn *c, const ms_req *req)
{
	switch (req->op) {
	case MS_REQ_JOIN:
		do_join(w, c, req);
		break;
	case MS_REQ_LEAVE:
		do_leave(w, c, req);
		break;
	case MS_REQ_PUBLISH:
		do_publish(w, c, req);
		break;
	case MS_REQ_DM:
		do_dm(w, c, req);
		break;
	case MS_REQ_PRESENCE:
		do_presence(w, c, req);
		break;
	default:
		ms_net_send_error(w, c, req->has_id, req->id, 400, "unknown op");
		break;
	}
}

/* The connection's token was replaced (auth op, already answered): each
 * joined stream the new claims no longer allow is left as a leave would
 * leave it (topic, owner's membership, presence) and announced with a
 * "left" event. A join in flight has only its name's hash here; it is
 * marked, and its JOIN_ACK, which carries the name, decides. */
static void h_reauth(ms_worker *w, ms_conn *c)
{
	ms_chat_worker *cw = CW(w);
	cconn *cs = conn_state(c);
	for (uint32_t i = 0; cs && i < cs->n;) {
		csub *s = &cs->s[i];
		if (s->state != SUB_JOINED) {
			s->recheck = 1;
			i++;
			continue;
		}
		/* A joined entry always has its topic (topic_add at the ack). */
		topic *t = topic_get(cw, s->stream_id);
		if (!t || ms_net_stream_allowed(c, (ms_str){ t->name, t->name_len })) {
			i++;
			continue;
		}
		/* The event first: post_leave may free the topic and its name. */
		ms_net_reply(w, c, false, 0, "\"event\":\"left\",\"stream\":\"%.*s\",\"reason\":\"token\"}",
			     (int)t->name_len, t->name);
		post_leave(w, cw, c, s);
		del_sub(c, s); /* the next entry moves to i */
	}
}

static void h_open(ms_worker *w, ms_conn *c, uint64_t uid)
{
	ms_msg *m = ms_worker_post(w, ms_chat_user_owner(uid, ms_worker_count(w)));
	m->type = M_REGISTER;
	m->a = uid;
	m->ref = ref_of(w, c);
}

static void h_room_open(ms_worker *w, ms_conn *c)
{
	add_sub(c, ms_hash_bytes(ROOM_NAME, sizeof(ROOM_NAME) - 1))->state = SUB_PENDING;
	post_join(w, c, ROOM_NAME, sizeof(ROOM_NAME) - 1, NULL, F_QUIET);
}

static void h_room_message(ms_worker *w, ms_conn *c, uint8_t opcode, const uint8_t *p,
			   size_t n)
{
	ms_msg *m = ms_worker_post(w, ms_chat_stream_owner(ROOM_NAME, sizeof(ROOM_NAME) - 1,
							   ms_worker_count(w)));
	m->type = M_PUBLISH;
	m->flags = F_ROOM;
	m->ptr = frame_pkt(opcode, p, n);
}

static void h_close(ms_worker *w, ms_conn *c)
{
	ms_chat_worker *cw = CW(w);
	cconn **slot = (cconn **)ms_net_chat_slot(c);
	cconn *cs = *slot;
	for (uint32_t i = 0; cs && i < cs->n; i++)
		if (cs->s[i].state == SUB_JOINED)
			post_leave(w, cw, c, &cs->s[i]);
	/* Pending joins are undone when their JOIN_ACK finds the connection
	 * gone. */
	free(cs);
	*slot = NULL;
	/* /room connections never registered; for them this removes nothing. */
	ms_msg *m = ms_worker_post(w, ms_chat_user_owner(ms_net_uid(c), ms_worker_count(w)));
	m->type = M_UNREGISTER;
	m->a = ms_net_uid(c);
	m->ref = ref_of(w, c);
}

/* ---- server API (admin listener) ------------------------------------------------------- */

static void h_api_publish(ms_worker *w, ms_conn *c, ms_str name, ms_str data)
{
	uint32_t name_off, seq_off;
	ms_pkt *pkt = message_pkt(name, "\"server\"", 8, data, &name_off, &seq_off);
	pkt->stamp = ms_pkt_stamp(ms_worker_now_ns(w));
	post_publish(w, name, pkt, name_off, seq_off, F_API, ref_of(w, c), 0);
}

static void h_api_dm(ms_worker *w, ms_conn *c, uint64_t to, ms_str data)
{
	size_t n = post_dm(w, to, "\"server\"", data);
	if (n == 0) {
		ms_admin_error(w, c, 404, "user not online");
		return;
	}
	char b[48];
	int k = snprintf(b, sizeof(b), "{\"delivered\":%zu}", n);
	ms_admin_reply(w, c, 200, b, (size_t)k);
}

/* Every connection of uid is closed 1008 by its own worker. The registry
 * learns of a new connection one mailbox hop after its upgrade, so one
 * opened in the same instant may be missed (the caller can repeat). */
static void h_api_disconnect(ms_worker *w, ms_conn *c, uint64_t uid)
{
	uint64_t refs[DM_FANOUT_MAX];
	size_t n = ms_reg_lookup(CW(w)->chat->reg, uid, refs, DM_FANOUT_MAX);
	if (n > DM_FANOUT_MAX)
		n = DM_FANOUT_MAX;
	if (n == 0) {
		ms_admin_error(w, c, 404, "user not online");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		ms_msg *m = ms_worker_post(w, ms_conn_ref_worker(refs[i]));
		m->type = M_KICK;
		m->ref = refs[i];
	}
	char b[48];
	int k = snprintf(b, sizeof(b), "{\"disconnected\":%zu}", n);
	ms_admin_reply(w, c, 200, b, (size_t)k);
}

const ms_chat_hooks ms_chat_hooks_impl = {
	.open = h_open,
	.request = h_request,
	.reauth = h_reauth,
	.room_open = h_room_open,
	.room_message = h_room_message,
	.close = h_close,
	.api_publish = h_api_publish,
	.api_dm = h_api_dm,
	.api_disconnect = h_api_disconnect,
};
