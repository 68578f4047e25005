/*
 * Chat operations (protocol v1) on the sharded, shared-nothing state of
 * DESIGN.md §5-6: the requests of this worker's connections, the mailbox
 * messages between workers, and the routing between them. The state lives
 * elsewhere in shard/:
 *   - engine.h (engine_mem.c): the owner side of each stream (seq, epoch,
 *     members, subscribers per worker, presence), reached only on the
 *     stream's owner worker, its results coming back as events (on_event);
 *   - topics.h: this worker's topic table and each connection's
 *     subscriptions;
 *   - registry.h: user -> connection handles, for DMs and the server API.
 *
 * Packets: a message event is built once, by the publisher's worker, as a
 * complete unmasked frame with a blank seq slot (net/proto) that the owner's
 * engine fills. Each worker with subscribers gets one reference; each local
 * subscriber's queue takes one more, released when its send completes.
 */
#include "shard/chat.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/pkt.h"
#include "net/admin.h"
#include "net/ws.h"
#include "shard/engine.h"
#include "shard/internal.h"
#include "shard/map.h"
#include "shard/registry.h"
#include "shard/topics.h"

#define DM_FANOUT_MAX 64 /* devices of one user reached by one DM */
#define ROOM_NAME ((ms_str){ "#room", 5 }) /* not a valid client stream name: /room only */
#define SERVER_FROM ((ms_str){ "server", 6 }) /* "from" of server API messages */
#define STREAM_IDLE_SECONDS 300 /* an unused stream is forgotten after this */
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

struct ms_chat {
	const ms_config *cfg;
	uint32_t nworkers;
	ms_registry *reg;
};

struct ms_chat_worker {
	ms_chat *chat;
	ms_worker *w;     /* set on each entry from the loop (on_msg, on_flush) */
	ms_engine *eng;   /* owner: the streams this worker owns */
	ms_topics topics; /* local: this worker's subscribers */
};

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

static void on_event(void *arg, const ms_engine_ev *ev);

/* ---- lifecycle -------------------------------------------------------------- */

ms_chat *ms_chat_create(const ms_config *cfg, uint32_t nworkers)
{
	ms_chat *chat = ms_shard__calloc(1, sizeof(*chat));
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
	ms_chat_worker *cw = ms_shard__calloc(1, sizeof(*cw));
	cw->chat = chat;
	ms_engine_mem_opts o = {
		.worker = id,
		.nworkers = chat->nworkers,
		.max_streams = (chat->cfg->max_streams + chat->nworkers - 1) / chat->nworkers,
		.presence_page = chat->cfg->presence_page,
		.presence_max_members = chat->cfg->presence_max_members,
		.idle_seconds = STREAM_IDLE_SECONDS,
		.sweep_seconds = SWEEP_SECONDS,
	};
	cw->eng = ms_engine_mem_create(&o, on_event, cw);
	ms_topics_init(&cw->topics);
	return cw;
}

void ms_chat_worker_destroy(ms_chat_worker *cw)
{
	if (!cw)
		return;
	ms_engine_destroy(cw->eng);
	ms_topics_fini(&cw->topics);
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

/* A packet holding one unmasked frame with an n-byte payload, the header
 * written; the payload (at *payload) is the caller's to fill. */
static ms_pkt *frame_new(uint8_t opcode, size_t n, char **payload)
{
	size_t h = ms_ws_header_len(n);
	ms_pkt *p = ms_pkt_new((uint32_t)(h + n));
	ms_ws_header(p->data, true, opcode, n, NULL);
	p->len = (uint32_t)(h + n);
	*payload = (char *)p->data + h;
	return p;
}

/* A frame holding text[0..n): header + payload in one packet. */
static ms_pkt *frame_pkt(uint8_t opcode, const void *text, size_t n)
{
	char *b;
	ms_pkt *p = frame_new(opcode, n, &b);
	if (n)
		memcpy(b, text, n);
	return p;
}

static const char *refusal_text(uint16_t err)
{
	return err == 429 ? "stream creation rate limited" : "too many streams";
}

static uint16_t engine_flags(uint16_t f)
{
	return (f & F_NOCREATE ? MS_ENGINE_NOCREATE : 0) | (f & F_QUIET ? MS_ENGINE_QUIET : 0);
}

/* ---- the owner: requests into the engine, its events out to the workers ---- */

/* One reference of pkt for each worker with subscribers of the stream. */
static void post_deliver(ms_worker *w, uint64_t workers, uint64_t stream, ms_pkt *pkt)
{
	for (uint64_t m = workers; m; m &= m - 1) {
		uint32_t to = (uint32_t)__builtin_ctzll(m);
		ms_pkt_ref(pkt);
		ms_msg *d = ms_worker_post(w, to);
		d->type = M_DELIVER;
		d->ptr = pkt;
		d->a = stream;
	}
}

static void owner_join(ms_chat_worker *cw, uint32_t from, jreq *j)
{
	ms_engine_tag tag = { .from = from, .ptr = j };
	ms_engine_subscribe(cw->eng, (ms_str){ j->name, j->name_len }, from,
			    engine_flags(j->flags), &tag);
}

static void owner_leave(ms_chat_worker *cw, uint32_t from, uint64_t stream, uint64_t uid)
{
	ms_engine_presence_remove(cw->eng, stream, uid);
	ms_engine_unsubscribe(cw->eng, stream, from);
}

static void owner_publish(ms_chat_worker *cw, uint32_t from, ms_msg *m)
{
	ms_pkt *pkt = m->ptr;
	if (m->flags & F_ROOM) {
		ms_engine_publish(cw->eng, ROOM_NAME, pkt, 0, MS_ENGINE_RAW, NULL);
		return;
	}
	ms_engine_tag tag = {
		.from = from,
		.ref = m->ref,
		.a = m->a,
		.flags = m->flags,
		.u32 = pkt->stamp, /* request time, for the publisher's op latency */
	};
	ms_str name = { (const char *)pkt->data + m->u32, (size_t)(m->b >> 32) };
	ms_engine_publish(cw->eng, name, pkt, (uint32_t)m->b, engine_flags(m->flags), &tag);
}

static void owner_presence(ms_chat_worker *cw, uint32_t from, jreq *j)
{
	ms_engine_tag tag = { .from = from, .ptr = j };
	ms_engine_presence_list(cw->eng, (ms_str){ j->name, j->name_len }, j->seq, &tag);
}

/* The engine's answers and deliveries, on this (the owner) worker. */
static void on_event(void *arg, const ms_engine_ev *ev)
{
	ms_chat_worker *cw = arg;
	ms_worker *w = cw->w;
	switch (ev->type) {
	case MS_ENGINE_SUBSCRIBED: {
		jreq *j = ev->tag->ptr;
		if (ev->err) {
			j->flags |= F_REFUSED;
			j->err = ev->err;
		} else {
			if (ev->created)
				j->flags |= F_CREATED;
			j->stream_id = ev->stream;
			j->seq = ev->seq;
			j->epoch = ev->epoch;
			/* Subscribed: the user is in the stream (one count per
			 * connection; the first is a presence join). */
			ms_engine_presence_add(cw->eng, ev->stream, j->uid);
		}
		ms_msg *m = ms_worker_post(w, ev->tag->from);
		m->type = M_JOIN_ACK;
		m->ptr = j;
		break;
	}
	case MS_ENGINE_PUBLISHED: {
		const ms_engine_tag *t = ev->tag;
		ms_msg *ack = ms_worker_post(w, t->from);
		ack->type = M_PUB_ACK;
		ack->ref = t->ref;
		ack->a = t->a;
		if (ev->err) {
			ack->flags = t->flags | F_REFUSED;
			ack->b = ev->err;
		} else {
			ack->flags = t->flags | (ev->created ? F_CREATED : 0);
			ack->b = ev->seq;
			ack->u32 = t->u32;
		}
		break;
	}
	case MS_ENGINE_DELIVER:
		post_deliver(w, ev->workers, ev->stream, ev->pkt);
		break;
	case MS_ENGINE_PRESENCE: {
		const uint64_t *join = ev->users, *leave = ev->users + ev->njoin;
		size_t n = ms_proto_enc_presence(NULL, 0, ev->name, join, ev->njoin, leave, ev->nleave);
		char *b;
		ms_pkt *pkt = frame_new(MS_WS_OP_TEXT, n, &b);
		ms_proto_enc_presence(b, n, ev->name, join, ev->njoin, leave, ev->nleave);
		post_deliver(w, ev->workers, ev->stream, pkt);
		ms_pkt_unref(pkt);
		break;
	}
	case MS_ENGINE_PRESENCE_LIST: {
		jreq *j = ev->tag->ptr;
		bool has_id = j->flags & F_HAS_ID;
		size_t n = ms_proto_enc_presence_list(NULL, 0, has_id, j->id, ev->users, ev->n,
						      ev->more, ev->next);
		char *b;
		ms_pkt *pkt = frame_new(MS_WS_OP_TEXT, n, &b);
		ms_proto_enc_presence_list(b, n, has_id, j->id, ev->users, ev->n, ev->more, ev->next);
		ms_msg *r = ms_worker_post(w, ev->tag->from);
		r->type = M_REPLY;
		r->ref = j->ref;
		r->a = j->t_req;
		r->ptr = pkt;
		free(j);
		break;
	}
	case MS_ENGINE_HISTORY:
		break; /* not asked for yet (PROTOCOL 1.1's history and since) */
	}
}

/* ---- messages ----------------------------------------------------------------------- */

/* The owner's answer to a join, on the joiner's worker. */
static void on_join_ack(ms_worker *w, ms_chat_worker *cw, uint32_t from, jreq *j)
{
	ms_conn *c = ms_worker_conn(w, j->ref);
	if (c && !(j->flags & F_QUIET)) {
		ms_net_request_done(w, c);
		if (!(j->flags & (F_NOCREATE | F_CREATED)))
			ms_net_not_created(w, c); /* its creation token back */
	}
	bool live = c && ms_net_deliverable(c);
	ms_str name = { j->name, j->name_len };
	ms_sub *s = live ? ms_subs_pending(ms_subs_of(c), ms_hash_bytes(name.p, name.n)) : NULL;
	if (j->flags & F_REFUSED) {
		/* Nothing was joined: answer, and forget the pending entry. */
		if (s) {
			if (!(j->flags & F_QUIET))
				ms_net_send_error(w, c, j->flags & F_HAS_ID, j->id, j->err,
						  refusal_text(j->err));
			ms_subs_del(c, s);
		}
		free(j);
		return;
	}
	/* The entry keeps only the name's hash, so a join that was in flight
	 * when an auth op replaced the token is judged here, by the token the
	 * connection holds now. */
	bool refused = s && s->recheck && !ms_net_stream_allowed(c, name);
	if (refused) {
		ms_net_send_error(w, c, j->flags & F_HAS_ID, j->id, 403, "stream not allowed by token");
	} else if (s && !(j->flags & F_QUIET)) {
		/* One reply per request: a join left before its ack still
		 * succeeded (and was then left). */
		char b[96];
		ms_net_reply(w, c, b, ms_proto_enc_join(b, sizeof(b), j->flags & F_HAS_ID, j->id,
							  j->seq, j->epoch));
		op_done(w, MS_HIST_OP_JOIN, j->t_req);
	}
	if (!s || s->state == MS_SUB_LEAVING || refused) {
		/* Gone, left meanwhile or refused: undo the membership. */
		ms_msg *l = ms_worker_post(w, from);
		l->type = M_LEAVE;
		l->a = j->stream_id;
		l->b = j->uid;
		if (s)
			ms_subs_del(c, s);
		free(j);
		return;
	}
	s->stream = j->stream_id;
	s->pos = ms_topics_add(w, &cw->topics, j->stream_id, name, c);
	s->state = MS_SUB_JOINED;
	free(j);
}

/* The owner's answer to a publish, on the publisher's worker. */
static void on_pub_ack(ms_worker *w, ms_msg *m)
{
	ms_conn *c = ms_worker_conn(w, m->ref);
	if (c && !(m->flags & F_API)) {
		ms_net_request_done(w, c);
		if (!(m->flags & (F_NOCREATE | F_CREATED)))
			ms_net_not_created(w, c); /* its creation token back */
	}
	if (m->flags & F_REFUSED) {
		uint16_t err = (uint16_t)m->b;
		if (c && (m->flags & F_API))
			ms_admin_error(w, c, err, refusal_text(err));
		else if (c && ms_net_deliverable(c))
			ms_net_send_error(w, c, m->flags & F_HAS_ID, (int64_t)m->a, err,
					  refusal_text(err));
		return;
	}
	char b[64];
	if (m->flags & F_API) {
		if (c)
			ms_admin_reply(w, c, 200, b, ms_proto_enc_count(b, sizeof(b), "seq", m->b));
	} else if (c && ms_net_deliverable(c)) {
		ms_net_reply(w, c, b, ms_proto_enc_publish(b, sizeof(b), m->flags & F_HAS_ID,
							     (int64_t)m->a, m->b));
		ms_worker_record(w, MS_HIST_OP_PUBLISH, ms_pkt_stamp_age(m->u32, ms_clock_ns()));
	}
}

void ms_chat_on_msg(ms_worker *w, uint32_t from, ms_msg *m)
{
	ms_chat_worker *cw = CW(w);
	cw->w = w;
	switch (m->type) {
	case M_REGISTER:
		ms_reg_add(cw->chat->reg, m->a, m->ref);
		break;
	case M_UNREGISTER:
		ms_reg_del(cw->chat->reg, m->a, m->ref);
		break;
	case M_JOIN:
		owner_join(cw, from, m->ptr);
		break;
	case M_JOIN_ACK:
		on_join_ack(w, cw, from, m->ptr);
		break;
	case M_LEAVE:
		owner_leave(cw, from, m->a, m->b);
		break;
	case M_PUBLISH:
		owner_publish(cw, from, m);
		break;
	case M_PUB_ACK:
		on_pub_ack(w, m);
		break;
	case M_DELIVER:
		ms_topics_deliver(w, &cw->topics, m->a, m->ptr);
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
	case M_PRESENCE:
		owner_presence(cw, from, m->ptr);
		break;
	default:
		ms_warn("chat: unknown message type %u from worker %u", m->type, from);
		break;
	}
}

void ms_chat_on_flush(ms_worker *w)
{
	ms_chat_worker *cw = CW(w);
	cw->w = w;
	ms_engine_flush(cw->eng, ms_worker_now(w));
}

/* ---- requests (the connection's worker) ------------------------------------------------ */

static void post_join(ms_worker *w, ms_conn *c, const char *name, size_t len,
		      const ms_req *req, uint16_t flags)
{
	jreq *j = ms_shard__alloc(sizeof(*j) + len);
	memset(j, 0, sizeof(*j));
	j->ref = ms_conn_ref_of(w, c);
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
	ms_subs *cs = ms_subs_of(c);
	uint64_t hash = ms_hash_bytes(req->stream.p, req->stream.n);
	if (!ms_net_stream_allowed(c, req->stream)) {
		ms_net_send_error(w, c, req->has_id, req->id, 403, "stream not allowed by token");
		return;
	}
	if (ms_subs_find(cs, hash)) {
		ms_net_send_error(w, c, req->has_id, req->id, 409, "already joined");
		return;
	}
	if (ms_subs_live(cs) >= cfg->max_streams_per_conn) {
		ms_net_send_error(w, c, req->has_id, req->id, 403, "too many streams");
		return;
	}
	ms_subs_add(c, hash)->state = MS_SUB_PENDING;
	post_join(w, c, req->stream.p, req->stream.n, req,
		  ms_net_may_create(w, c) ? 0 : F_NOCREATE);
	ms_net_request_sent(w, c);
}

static void post_leave(ms_worker *w, ms_chat_worker *cw, ms_conn *c, ms_sub *s)
{
	ms_str name;
	uint32_t owner = ms_topics_name(&cw->topics, s->stream, &name)
				 ? ms_chat_stream_owner(name.p, name.n, ms_worker_count(w))
				 : ms_engine_stream_worker(s->stream);
	ms_topics_del(w, &cw->topics, s->stream, s->pos);
	ms_msg *m = ms_worker_post(w, owner);
	m->type = M_LEAVE;
	m->a = s->stream;
	m->b = ms_net_uid(c);
}

static void do_leave(ms_worker *w, ms_conn *c, const ms_req *req)
{
	ms_sub *s = ms_subs_find(ms_subs_of(c), ms_hash_bytes(req->stream.p, req->stream.n));
	if (!s) {
		ms_net_send_error(w, c, req->has_id, req->id, 409, "not joined");
		return;
	}
	if (s->state == MS_SUB_PENDING) {
		s->state = MS_SUB_LEAVING; /* the JOIN_ACK undoes it */
	} else {
		post_leave(w, CW(w), c, s);
		ms_subs_del(c, s);
	}
	ms_net_send_ok(w, c, req->has_id, req->id);
	op_done(w, MS_HIST_OP_LEAVE, ms_worker_now_ns(w));
}

/* The message event (net/proto's encoder) as a frame, and the offsets
 * in the packet of the stream name and of the blank seq slot the owner
 * fills in. from: a user id's digits, or "server". */
static ms_pkt *message_pkt(ms_str name, ms_str from, ms_str data, uint32_t *name_off,
			   uint32_t *seq_off)
{
	size_t n = ms_proto_enc_message(NULL, 0, name, from, data, NULL, NULL);
	char *b;
	ms_pkt *pkt = frame_new(MS_WS_OP_TEXT, n, &b);
	size_t no, so;
	ms_proto_enc_message(b, n, name, from, data, &no, &so);
	size_t h = (size_t)((uint8_t *)b - pkt->data);
	*name_off = (uint32_t)(h + no);
	*seq_off = (uint32_t)(h + so);
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
	char from[MS_PROTO_U64_DIGITS];
	ms_str fr = { from, ms_proto_uid_format(from, ms_net_uid(c)) };
	uint32_t name_off, seq_off;
	ms_pkt *pkt = message_pkt(req->stream, fr, req->data, &name_off, &seq_off);
	pkt->stamp = ms_pkt_stamp(ms_worker_now_ns(w));
	post_publish(w, req->stream, pkt, name_off, seq_off,
		     (req->has_id ? F_HAS_ID : 0) | (ms_net_may_create(w, c) ? 0 : F_NOCREATE),
		     ms_conn_ref_of(w, c), (uint64_t)req->id);
	ms_net_request_sent(w, c);
}

/* {"event":"dm","from":F,"data":D} to every device of `to` that is online
 * (at most DM_FANOUT_MAX); returns how many were reached. from: a user
 * id's digits, or "server". */
static size_t post_dm(ms_worker *w, uint64_t to, ms_str from, ms_str data)
{
	uint64_t refs[DM_FANOUT_MAX];
	size_t n = ms_reg_lookup(CW(w)->chat->reg, to, refs, DM_FANOUT_MAX);
	if (n == 0)
		return 0;
	if (n > DM_FANOUT_MAX)
		n = DM_FANOUT_MAX;
	size_t len = ms_proto_enc_dm(NULL, 0, from, data);
	char *b;
	ms_pkt *pkt = frame_new(MS_WS_OP_TEXT, len, &b);
	ms_proto_enc_dm(b, len, from, data);
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
	char from[MS_PROTO_U64_DIGITS];
	ms_str fr = { from, ms_proto_uid_format(from, ms_net_uid(c)) };
	if (post_dm(w, to, fr, req->data) == 0)
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
	jreq *j = ms_shard__alloc(sizeof(*j) + len);
	memset(j, 0, sizeof(*j));
	j->ref = ms_conn_ref_of(w, c);
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
	ms_subs *cs = ms_subs_of(c);
	for (uint32_t i = 0; cs && i < cs->n;) {
		ms_sub *s = &cs->s[i];
		if (s->state != MS_SUB_JOINED) {
			s->recheck = 1;
			i++;
			continue;
		}
		/* A joined entry always has its topic (ms_topics_add at the ack). */
		ms_str name;
		if (!ms_topics_name(&cw->topics, s->stream, &name) ||
		    ms_net_stream_allowed(c, name)) {
			i++;
			continue;
		}
		/* The event first: post_leave may free the topic and its name. */
		char b[192]; /* the longest stream name fits */
		ms_net_reply(w, c, b, ms_proto_enc_left(b, sizeof(b), name, "token"));
		post_leave(w, cw, c, s);
		ms_subs_del(c, s); /* the next entry moves to i */
	}
}

static void h_open(ms_worker *w, ms_conn *c, uint64_t uid)
{
	ms_msg *m = ms_worker_post(w, ms_chat_user_owner(uid, ms_worker_count(w)));
	m->type = M_REGISTER;
	m->a = uid;
	m->ref = ms_conn_ref_of(w, c);
}

static void h_room_open(ms_worker *w, ms_conn *c)
{
	ms_subs_add(c, ms_hash_bytes(ROOM_NAME.p, ROOM_NAME.n))->state = MS_SUB_PENDING;
	post_join(w, c, ROOM_NAME.p, ROOM_NAME.n, NULL, F_QUIET);
}

static void h_room_message(ms_worker *w, ms_conn *c, uint8_t opcode, const uint8_t *p,
			   size_t n)
{
	ms_msg *m = ms_worker_post(w, ms_chat_stream_owner(ROOM_NAME.p, ROOM_NAME.n,
							   ms_worker_count(w)));
	m->type = M_PUBLISH;
	m->flags = F_ROOM;
	m->ptr = frame_pkt(opcode, p, n);
}

static void h_close(ms_worker *w, ms_conn *c)
{
	ms_chat_worker *cw = CW(w);
	ms_subs *cs = ms_subs_of(c);
	for (uint32_t i = 0; cs && i < cs->n; i++)
		if (cs->s[i].state == MS_SUB_JOINED)
			post_leave(w, cw, c, &cs->s[i]);
	/* Pending joins are undone when their JOIN_ACK finds the connection
	 * gone. */
	ms_subs_free(c);
	/* /room connections never registered; for them this removes nothing. */
	ms_msg *m = ms_worker_post(w, ms_chat_user_owner(ms_net_uid(c), ms_worker_count(w)));
	m->type = M_UNREGISTER;
	m->a = ms_net_uid(c);
	m->ref = ms_conn_ref_of(w, c);
}

/* ---- server API (admin listener) ------------------------------------------------------- */

static void h_api_publish(ms_worker *w, ms_conn *c, ms_str name, ms_str data)
{
	uint32_t name_off, seq_off;
	ms_pkt *pkt = message_pkt(name, SERVER_FROM, data, &name_off, &seq_off);
	pkt->stamp = ms_pkt_stamp(ms_worker_now_ns(w));
	post_publish(w, name, pkt, name_off, seq_off, F_API, ms_conn_ref_of(w, c), 0);
}

static void h_api_dm(ms_worker *w, ms_conn *c, uint64_t to, ms_str data)
{
	size_t n = post_dm(w, to, SERVER_FROM, data);
	if (n == 0) {
		ms_admin_error(w, c, 404, "user not online");
		return;
	}
	char b[48];
	ms_admin_reply(w, c, 200, b, ms_proto_enc_count(b, sizeof(b), "delivered", n));
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
	ms_admin_reply(w, c, 200, b, ms_proto_enc_count(b, sizeof(b), "disconnected", n));
}

const ms_chat_hooks ms_chat_hooks_impl = {
	.open = h_open,
	.request = h_request,
	.reauth = h_reauth,
	.room_open = h_room_open,
	.room_message = h_room_message,
	.close = h_close,
};

const ms_admin_api ms_chat_admin_api = {
	.publish = h_api_publish,
	.dm = h_api_dm,
	.disconnect = h_api_disconnect,
};
