/*
 * Topic tables and per-connection subscriptions (shard/topics.h).
 *
 * The delivery loop is the fan-out's per-subscriber cost: one handle load,
 * one generation check in core, one queue append. A subscription list is
 * scanned linearly: a connection joins at most --max-streams-per-conn
 * streams, and only requests and closes scan it, never a delivery.
 */
#include "shard/topics.h"

#include <string.h>

#include "net/server.h"
#include "shard/internal.h"

typedef struct topic {
	uint64_t id;
	uint32_t n, cap;
	ms_conn_ref *subs;
	uint16_t name_len;
	char name[];
} topic;

/* ---- per-connection subscriptions --------------------------------------- */

ms_subs *ms_subs_of(ms_conn *c)
{
	return *ms_net_chat_slot(c);
}

ms_sub *ms_subs_find(ms_subs *cs, uint64_t hash)
{
	for (uint32_t i = 0; cs && i < cs->n; i++)
		if (cs->s[i].hash == hash && cs->s[i].state != MS_SUB_LEAVING)
			return &cs->s[i];
	return NULL;
}

ms_sub *ms_subs_pending(ms_subs *cs, uint64_t hash)
{
	for (uint32_t i = 0; cs && i < cs->n; i++)
		if (cs->s[i].hash == hash && cs->s[i].state != MS_SUB_JOINED)
			return &cs->s[i];
	return NULL;
}

ms_sub *ms_subs_joined(ms_subs *cs, uint64_t stream)
{
	for (uint32_t i = 0; cs && i < cs->n; i++)
		if (cs->s[i].stream == stream && cs->s[i].state == MS_SUB_JOINED)
			return &cs->s[i];
	return NULL;
}

uint32_t ms_subs_live(const ms_subs *cs)
{
	uint32_t n = 0;
	for (uint32_t i = 0; cs && i < cs->n; i++)
		n += cs->s[i].state != MS_SUB_LEAVING;
	return n;
}

ms_sub *ms_subs_add(ms_conn *c, uint64_t hash)
{
	ms_subs **slot = (ms_subs **)ms_net_chat_slot(c);
	ms_subs *cs = *slot;
	if (!cs || cs->n == cs->cap) {
		uint32_t cap = cs ? cs->cap * 2 : 4;
		ms_subs *n = ms_shard__realloc(cs, sizeof(ms_subs) + cap * sizeof(ms_sub));
		if (!cs)
			n->n = 0;
		n->cap = cap;
		*slot = cs = n;
	}
	ms_sub *s = &cs->s[cs->n++];
	memset(s, 0, sizeof(*s));
	s->hash = hash;
	return s;
}

void ms_subs_del(ms_conn *c, ms_sub *s)
{
	ms_subs *cs = ms_subs_of(c);
	size_t i = (size_t)(s - cs->s);
	memmove(&cs->s[i], &cs->s[i + 1], (cs->n - i - 1) * sizeof(ms_sub));
	cs->n--;
}

void ms_subs_free(ms_conn *c)
{
	void **slot = ms_net_chat_slot(c);
	free(*slot);
	*slot = NULL;
}

/* ---- the topic table ----------------------------------------------------- */

static topic *topic_get(const ms_topics *t, uint64_t id)
{
	uint64_t *v = ms_map_get(&t->by_id, id);
	return v ? (topic *)(uintptr_t)*v : NULL;
}

void ms_topics_init(ms_topics *t)
{
	ms_map_init(&t->by_id);
}

void ms_topics_fini(ms_topics *t)
{
	const ms_map_slot *sl;
	for (uint32_t p = 0; (p = ms_map_next(&t->by_id, p, &sl)) != 0;) {
		topic *tp = (topic *)(uintptr_t)sl->val;
		free(tp->subs);
		free(tp);
	}
	ms_map_fini(&t->by_id);
}

bool ms_topics_name(const ms_topics *t, uint64_t stream, ms_str *name)
{
	topic *tp = topic_get(t, stream);
	if (!tp)
		return false;
	*name = (ms_str){ tp->name, tp->name_len };
	return true;
}

uint32_t ms_topics_add(ms_worker *w, ms_topics *t, uint64_t stream, ms_str name, ms_conn *c)
{
	topic *tp = topic_get(t, stream);
	if (!tp) {
		tp = ms_shard__alloc(sizeof(*tp) + name.n);
		tp->id = stream;
		tp->n = tp->cap = 0;
		tp->subs = NULL;
		tp->name_len = (uint16_t)name.n;
		memcpy(tp->name, name.p, name.n);
		ms_map_put(&t->by_id, stream, (uint64_t)(uintptr_t)tp);
	}
	if (tp->n == tp->cap) {
		tp->cap = tp->cap ? tp->cap * 2 : 4;
		tp->subs = ms_shard__realloc(tp->subs, tp->cap * sizeof(*tp->subs));
	}
	tp->subs[tp->n] = ms_conn_ref_of(w, c);
	return tp->n++;
}

void ms_topics_del(ms_worker *w, ms_topics *t, uint64_t stream, uint32_t pos)
{
	topic *tp = topic_get(t, stream);
	if (!tp || pos >= tp->n)
		return;
	ms_conn_ref moved = tp->subs[--tp->n];
	if (pos < tp->n) {
		tp->subs[pos] = moved;
		/* _any: the moved subscriber may be freed in this same
		 * iteration, its on_free still to come; its position must be
		 * right when that on_free removes it (else a stale entry stays
		 * in the topic for good). */
		ms_conn *mc = ms_worker_conn_any(w, moved);
		ms_sub *ms = mc ? ms_subs_joined(ms_subs_of(mc), stream) : NULL;
		if (ms)
			ms->pos = pos;
	}
	if (tp->n == 0) {
		ms_map_del(&t->by_id, stream, NULL);
		free(tp->subs);
		free(tp);
	}
}

void ms_topics_deliver(ms_worker *w, ms_topics *t, uint64_t stream, ms_pkt *pkt)
{
	topic *tp = topic_get(t, stream);
	if (!tp)
		return;
	ms_worker_stats *st = ms_worker_stats_of(w);
	for (uint32_t i = 0; i < tp->n; i++) {
		ms_conn *c = ms_worker_conn(w, tp->subs[i]);
		if (c && ms_net_deliverable(c)) {
			ms_conn_send_pkt(w, c, pkt, 0, pkt->len);
			st->deliveries++;
		}
	}
}
