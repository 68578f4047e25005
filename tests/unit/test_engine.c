/*
 * The chat logic's owner side through the engine interface (shard/engine.h)
 * with the memory engine and a fake event sink: no sockets, no workers, no
 * mailboxes. What chat.c does on a join (subscribe, then presence_add once
 * SUBSCRIBED arrives), a leave (presence_remove, unsubscribe), a publish and
 * a presence listing is done here by hand, and the events are checked:
 * seq per stream, the seq slot filled in place, a stable epoch, members
 * counted per user, the per-worker subscriber mask, coalesced presence,
 * listings paged with a cursor, stream creation refused (the create flag
 * and the --max-streams share), idle streams forgotten after their idle
 * time, and history answered with none.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/json.h"
#include "net/proto.h"
#include "shard/engine.h"

#define S(lit) ((ms_str){ lit, sizeof(lit) - 1 })
#define MAX_EVS 64
#define MAX_USERS 64

/* An event as the sink saw it, with what it pointed to copied. */
typedef struct rec {
	ms_engine_ev ev;
	ms_engine_tag tag;
	bool has_tag;
	char name[130];
	uint64_t users[MAX_USERS];
	uint32_t nusers;
	bool pkt_seen; /* DELIVER: the packet it carried */
	ms_pkt *pkt;
} rec;

typedef struct sink {
	rec evs[MAX_EVS];
	int n;
	ms_engine *eng;
	bool join_on_subscribe; /* do what chat.c's sink does: presence_add */
	uint64_t uid;           /* ... for this user */
} sink;

static void on_event(void *arg, const ms_engine_ev *ev)
{
	sink *k = arg;
	assert_true(k->n < MAX_EVS);
	rec *r = &k->evs[k->n++];
	memset(r, 0, sizeof(*r));
	r->ev = *ev;
	if (ev->tag) {
		r->tag = *ev->tag;
		r->has_tag = true;
	}
	r->ev.tag = NULL;
	memcpy(r->name, ev->name.p ? ev->name.p : "", ev->name.n);
	r->nusers = ev->type == MS_ENGINE_PRESENCE ? ev->njoin + ev->nleave :
		    ev->type == MS_ENGINE_PRESENCE_LIST ? ev->n : 0;
	assert_true(r->nusers <= MAX_USERS);
	if (r->nusers)
		memcpy(r->users, ev->users, r->nusers * sizeof(uint64_t));
	r->ev.users = NULL;
	if (ev->type == MS_ENGINE_DELIVER) {
		/* The sink borrows it: a worker keeps it by taking a reference. */
		ms_pkt_ref(ev->pkt);
		r->pkt = ev->pkt;
	}
	if (ev->type == MS_ENGINE_SUBSCRIBED && !ev->err && k->join_on_subscribe)
		ms_engine_presence_add(k->eng, ev->stream, k->uid);
}

static void drop_pkts(sink *k)
{
	for (int i = 0; i < k->n; i++)
		if (k->evs[i].pkt)
			ms_pkt_unref(k->evs[i].pkt);
	k->n = 0;
}

static ms_engine *engine(sink *k, uint32_t max_streams, uint32_t page, uint32_t max_members)
{
	ms_engine_mem_opts o = {
		.worker = 3,
		.nworkers = 8,
		.max_streams = max_streams,
		.presence_page = page,
		.presence_max_members = max_members,
		.idle_seconds = 300,
		.sweep_seconds = 10,
	};
	memset(k, 0, sizeof(*k));
	k->eng = ms_engine_mem_create(&o, on_event, k);
	assert_non_null(k->eng);
	return k->eng;
}

static void done(sink *k)
{
	drop_pkts(k);
	ms_engine_destroy(k->eng);
}

/* A join as chat.c makes it: subscribe from `worker`, then presence_add for
 * uid when it is answered. Returns the answer. */
static rec join(sink *k, ms_str name, uint32_t worker, uint64_t uid, uint16_t flags)
{
	ms_engine_tag tag = { .from = worker, .a = uid };
	k->join_on_subscribe = true;
	k->uid = uid;
	int before = k->n;
	ms_engine_subscribe(k->eng, name, worker, flags, &tag);
	k->join_on_subscribe = false;
	assert_int_equal(k->n, before + 1); /* answered at once */
	rec r = k->evs[before];
	assert_int_equal(r.ev.type, MS_ENGINE_SUBSCRIBED);
	assert_true(r.has_tag && r.tag.from == worker && r.tag.a == uid);
	k->n = before;
	return r;
}

static void leave(sink *k, uint64_t stream, uint32_t worker, uint64_t uid)
{
	ms_engine_presence_remove(k->eng, stream, uid);
	ms_engine_unsubscribe(k->eng, stream, worker);
}

/* A message packet as the publisher's worker builds it (no frame header:
 * the engine only needs the seq slot's offset). */
static ms_pkt *message(ms_str name, uint32_t *seq_off)
{
	size_t n = ms_proto_enc_message(NULL, 0, name, S("42"), S("{\"t\":1}"), NULL, NULL);
	ms_pkt *p = ms_pkt_new((uint32_t)n);
	size_t so, qo;
	ms_proto_enc_message((char *)p->data, n, name, S("42"), S("{\"t\":1}"), &so, &qo);
	p->len = (uint32_t)n;
	*seq_off = (uint32_t)qo;
	return p;
}

/* Publish with tag a = id; the events it caused are left in k. */
static void publish(sink *k, ms_str name, uint16_t flags, uint64_t id, ms_pkt **out)
{
	uint32_t off;
	ms_pkt *p = message(name, &off);
	ms_engine_tag tag = { .from = 1, .a = id, .ref = 77 };
	ms_pkt_ref(p); /* ours, to look at it afterwards */
	ms_engine_publish(k->eng, name, p, off, flags, &tag);
	*out = p;
}

static const rec *find(const sink *k, enum ms_engine_ev_type t)
{
	for (int i = 0; i < k->n; i++)
		if (k->evs[i].ev.type == t)
			return &k->evs[i];
	return NULL;
}

static int count(const sink *k, enum ms_engine_ev_type t)
{
	int n = 0;
	for (int i = 0; i < k->n; i++)
		n += k->evs[i].ev.type == t;
	return n;
}

/* ---- tests --------------------------------------------------------------- */

static void test_seq_per_stream(void **state)
{
	sink k;
	ms_pkt *p;
	(void)state;
	engine(&k, 100, 10, 1000);
	rec a = join(&k, S("a"), 2, 10, 0);
	assert_int_equal(a.ev.err, 0);
	assert_true(a.ev.created);
	assert_int_equal(a.ev.seq, 0);
	assert_int_equal(ms_engine_stream_worker(a.ev.stream), 3); /* the owner's id */

	for (uint64_t i = 1; i <= 3; i++) {
		publish(&k, S("a"), 0, 100 + i, &p);
		/* the answer first, then one delivery */
		assert_int_equal(k.n, 2);
		assert_int_equal(k.evs[0].ev.type, MS_ENGINE_PUBLISHED);
		assert_int_equal(k.evs[1].ev.type, MS_ENGINE_DELIVER);
		assert_int_equal(k.evs[0].ev.err, 0);
		assert_false(k.evs[0].ev.created);
		assert_int_equal(k.evs[0].ev.seq, i);
		assert_true(k.evs[0].has_tag && k.evs[0].tag.a == 100 + i && k.evs[0].tag.ref == 77);
		assert_true(k.evs[1].pkt == p);
		assert_int_equal(k.evs[1].ev.stream, a.ev.stream);
		/* the slot was filled in place: the frame is JSON with seq i */
		assert_true(ms_json_valid((const char *)p->data, p->len));
		char want[32];
		int n = snprintf(want, sizeof(want), "\"seq\":%llu ", (unsigned long long)i);
		assert_non_null(memmem(p->data, p->len, want, (size_t)n));
		drop_pkts(&k);
		ms_pkt_unref(p);
	}
	/* another stream counts on its own; nobody subscribed: no delivery */
	publish(&k, S("b"), 0, 1, &p);
	assert_int_equal(k.n, 1);
	assert_int_equal(k.evs[0].ev.seq, 1);
	assert_true(k.evs[0].ev.created);
	assert_int_equal(p->refs, 1); /* the engine let its reference go */
	ms_pkt_unref(p);
	k.n = 0;
	publish(&k, S("a"), 0, 9, &p);
	assert_int_equal(k.evs[0].ev.seq, 4);
	drop_pkts(&k);
	assert_int_equal(p->refs, 1);
	ms_pkt_unref(p);
	done(&k);
}

static void test_epoch_stable(void **state)
{
	sink k;
	ms_pkt *p;
	(void)state;
	engine(&k, 100, 10, 1000);
	rec a = join(&k, S("s"), 0, 1, 0);
	publish(&k, S("s"), 0, 1, &p);
	assert_int_equal(find(&k, MS_ENGINE_PUBLISHED)->ev.epoch, a.ev.epoch);
	drop_pkts(&k);
	ms_pkt_unref(p);
	rec b = join(&k, S("s"), 5, 2, 0);
	assert_false(b.ev.created);
	assert_int_equal(b.ev.stream, a.ev.stream);
	assert_true(b.ev.epoch == a.ev.epoch);
	assert_int_equal(b.ev.seq, 1); /* the current seq */
	rec c = join(&k, S("t"), 0, 1, 0);
	assert_true(c.ev.stream != a.ev.stream);
	done(&k);
}

static void test_members_per_user(void **state)
{
	sink k;
	(void)state;
	engine(&k, 100, 10, 1000);
	rec w = join(&k, S("s"), 0, 99, 0); /* a watcher, announced first */
	ms_engine_flush(k.eng, 1);
	drop_pkts(&k);

	/* user 7 on two devices (two workers): one join */
	rec a = join(&k, S("s"), 1, 7, 0);
	join(&k, S("s"), 2, 7, 0);
	ms_engine_flush(k.eng, 1);
	assert_int_equal(count(&k, MS_ENGINE_PRESENCE), 1);
	const rec *e = find(&k, MS_ENGINE_PRESENCE);
	assert_int_equal(e->ev.njoin, 1);
	assert_int_equal(e->ev.nleave, 0);
	assert_true(e->users[0] == 7);
	assert_string_equal(e->name, "s");
	assert_int_equal(e->ev.stream, a.ev.stream);
	k.n = 0;

	/* one device leaves: still present, nothing to say */
	leave(&k, a.ev.stream, 1, 7);
	ms_engine_flush(k.eng, 2);
	assert_int_equal(k.n, 0);
	/* the last one leaves: one leave */
	leave(&k, a.ev.stream, 2, 7);
	ms_engine_flush(k.eng, 3);
	assert_int_equal(count(&k, MS_ENGINE_PRESENCE), 1);
	e = find(&k, MS_ENGINE_PRESENCE);
	assert_int_equal(e->ev.njoin, 0);
	assert_int_equal(e->ev.nleave, 1);
	assert_true(e->users[0] == 7);
	assert_true(e->ev.workers == 1); /* only the watcher's worker is left */
	k.n = 0;
	/* a remove of a user who is not there changes nothing */
	ms_engine_presence_remove(k.eng, w.ev.stream, 12345);
	ms_engine_flush(k.eng, 4);
	assert_int_equal(k.n, 0);
	done(&k);
}

static void test_worker_mask(void **state)
{
	sink k;
	ms_pkt *p;
	(void)state;
	engine(&k, 100, 10, 1000);
	rec a = join(&k, S("s"), 0, 1, 0);
	join(&k, S("s"), 2, 2, 0);
	join(&k, S("s"), 2, 3, 0);
	join(&k, S("s"), 7, 4, 0);
	publish(&k, S("s"), 0, 1, &p);
	assert_true(find(&k, MS_ENGINE_DELIVER)->ev.workers == (1u << 0 | 1u << 2 | 1u << 7));
	drop_pkts(&k);
	ms_pkt_unref(p);

	leave(&k, a.ev.stream, 2, 2); /* worker 2 still has one */
	leave(&k, a.ev.stream, 7, 4);
	publish(&k, S("s"), 0, 2, &p);
	assert_true(find(&k, MS_ENGINE_DELIVER)->ev.workers == (1u << 0 | 1u << 2));
	drop_pkts(&k);
	ms_pkt_unref(p);

	leave(&k, a.ev.stream, 2, 3);
	leave(&k, a.ev.stream, 0, 1);
	/* an unsubscribe beyond zero does not wrap */
	ms_engine_unsubscribe(k.eng, a.ev.stream, 0);
	publish(&k, S("s"), 0, 3, &p);
	assert_int_equal(count(&k, MS_ENGINE_DELIVER), 0);
	assert_int_equal(find(&k, MS_ENGINE_PUBLISHED)->ev.seq, 3);
	k.n = 0;
	ms_pkt_unref(p);
	join(&k, S("s"), 5, 1, 0);
	publish(&k, S("s"), 0, 4, &p);
	assert_true(find(&k, MS_ENGINE_DELIVER)->ev.workers == 1u << 5);
	drop_pkts(&k);
	ms_pkt_unref(p);
	done(&k);
}

static void test_presence_paging(void **state)
{
	sink k;
	(void)state;
	engine(&k, 100, 2, 1000);
	for (uint64_t u = 1; u <= 5; u++)
		join(&k, S("s"), 0, u * 1000, 0);
	join(&k, S("s"), 1, 3000, 0); /* a second device is listed once */

	uint64_t seen[8] = { 0 }, cursor = 0;
	int total = 0, pages = 0;
	for (;;) {
		ms_engine_tag tag = { .from = 4, .ptr = &cursor };
		ms_engine_presence_list(k.eng, S("s"), cursor, &tag);
		assert_int_equal(k.n, 1);
		const rec *r = &k.evs[0];
		assert_int_equal(r->ev.type, MS_ENGINE_PRESENCE_LIST);
		assert_true(r->has_tag && r->tag.from == 4 && r->tag.ptr == &cursor);
		assert_true(r->nusers <= 2);
		for (uint32_t i = 0; i < r->nusers; i++) {
			assert_true(total < 8);
			seen[total++] = r->users[i];
		}
		pages++;
		bool more = r->ev.more;
		cursor = r->ev.next;
		k.n = 0;
		if (!more)
			break;
		assert_int_equal(r->nusers, 2); /* only the last page is short */
	}
	assert_int_equal(total, 5);
	assert_int_equal(pages, 3);
	for (uint64_t u = 1; u <= 5; u++) {
		int hits = 0;
		for (int i = 0; i < total; i++)
			hits += seen[i] == u * 1000;
		assert_int_equal(hits, 1);
	}
	/* a stream nobody is in: an empty page, no cursor */
	ms_engine_tag tag = { 0 };
	ms_engine_presence_list(k.eng, S("none"), 0, &tag);
	assert_int_equal(k.evs[0].nusers, 0);
	assert_false(k.evs[0].ev.more);
	assert_int_equal(k.evs[0].ev.stream, 0);
	k.n = 0;
	done(&k);
}

static void test_presence_coalescing(void **state)
{
	sink k;
	(void)state;
	engine(&k, 100, 10, 3);
	rec w = join(&k, S("s"), 0, 1, 0);
	ms_engine_flush(k.eng, 1);
	k.n = 0;

	/* a join and a leave within one flush cancel out */
	rec a = join(&k, S("s"), 1, 2, 0);
	leave(&k, a.ev.stream, 1, 2);
	ms_engine_flush(k.eng, 1);
	assert_int_equal(k.n, 0);

	/* several changes: one event, joins then leaves */
	join(&k, S("s"), 1, 3, 0);
	join(&k, S("s"), 1, 4, 0);
	leave(&k, w.ev.stream, 0, 1);
	ms_engine_flush(k.eng, 2);
	assert_int_equal(k.n, 1);
	const rec *e = &k.evs[0];
	assert_int_equal(e->ev.type, MS_ENGINE_PRESENCE);
	assert_int_equal(e->ev.njoin, 2);
	assert_int_equal(e->ev.nleave, 1);
	assert_true(e->users[0] == 3 && e->users[1] == 4 && e->users[2] == 1);
	assert_true(e->ev.workers == 1u << 1);
	k.n = 0;
	/* nothing new: nothing to flush */
	ms_engine_flush(k.eng, 3);
	assert_int_equal(k.n, 0);

	/* above presence_max_members (3) the stream goes quiet */
	join(&k, S("s"), 1, 5, 0);
	ms_engine_flush(k.eng, 4);
	assert_int_equal(count(&k, MS_ENGINE_PRESENCE), 1); /* 3 members: still told */
	k.n = 0;
	join(&k, S("s"), 1, 6, 0);
	ms_engine_flush(k.eng, 5);
	assert_int_equal(k.n, 0);

	/* a quiet subscription (/room) silences the stream for good */
	join(&k, S("q"), 0, 0, MS_ENGINE_QUIET);
	join(&k, S("q"), 0, 8, 0);
	ms_engine_flush(k.eng, 6);
	assert_int_equal(k.n, 0);
	done(&k);
}

static void test_creation_refused(void **state)
{
	sink k;
	ms_pkt *p;
	(void)state;
	engine(&k, 2, 10, 1000);
	/* the create flag: an existing stream is fine, a new one 429 */
	rec a = join(&k, S("a"), 0, 1, 0);
	assert_true(a.ev.created);
	rec r = join(&k, S("a"), 0, 2, MS_ENGINE_NOCREATE);
	assert_int_equal(r.ev.err, 0);
	assert_false(r.ev.created);
	r = join(&k, S("b"), 0, 1, MS_ENGINE_NOCREATE);
	assert_int_equal(r.ev.err, 429);
	publish(&k, S("b"), MS_ENGINE_NOCREATE, 1, &p);
	assert_int_equal(k.n, 1);
	assert_int_equal(k.evs[0].ev.type, MS_ENGINE_PUBLISHED);
	assert_int_equal(k.evs[0].ev.err, 429);
	assert_int_equal(p->refs, 1); /* refused: the engine dropped its reference */
	ms_pkt_unref(p);
	k.n = 0;

	/* --max-streams share: the third stream is 503, for joins and
	 * publishes alike; the create flag is judged first */
	publish(&k, S("b"), 0, 2, &p);
	assert_true(find(&k, MS_ENGINE_PUBLISHED)->ev.created);
	ms_pkt_unref(p);
	k.n = 0;
	r = join(&k, S("c"), 0, 1, 0);
	assert_int_equal(r.ev.err, 503);
	publish(&k, S("c"), 0, 3, &p);
	assert_int_equal(find(&k, MS_ENGINE_PUBLISHED)->ev.err, 503);
	ms_pkt_unref(p);
	k.n = 0;
	r = join(&k, S("c"), 0, 1, MS_ENGINE_NOCREATE);
	assert_int_equal(r.ev.err, 429);
	/* a refused join counted nobody: no presence, no subscriber */
	ms_engine_flush(k.eng, 1);
	assert_int_equal(count(&k, MS_ENGINE_PRESENCE), 1); /* stream a's join only */
	assert_string_equal(find(&k, MS_ENGINE_PRESENCE)->name, "a");
	k.n = 0;
	/* diagnostics (/room) publish whatever the limits, with no answer */
	publish(&k, S("#room"), MS_ENGINE_RAW, 4, &p);
	assert_int_equal(k.n, 0);
	ms_pkt_unref(p);
	done(&k);
}

static void test_idle_sweep(void **state)
{
	sink k;
	ms_pkt *p;
	(void)state;
	engine(&k, 2, 10, 1000);
	rec a = join(&k, S("a"), 0, 1, 0);
	publish(&k, S("a"), 0, 1, &p);
	drop_pkts(&k);
	ms_pkt_unref(p);
	leave(&k, a.ev.stream, 0, 1);
	ms_engine_flush(k.eng, 1);
	k.n = 0;

	/* back within the idle time: the same stream, seq continues */
	ms_engine_flush(k.eng, 100);
	rec b = join(&k, S("a"), 0, 1, 0);
	assert_false(b.ev.created);
	assert_int_equal(b.ev.seq, 1);
	assert_true(b.ev.epoch == a.ev.epoch);
	leave(&k, b.ev.stream, 0, 1);
	ms_engine_flush(k.eng, 101);
	k.n = 0;

	/* a stream in use is never swept */
	rec u = join(&k, S("u"), 0, 1, 0);
	ms_engine_flush(k.eng, 120); /* a sweep: "a" idle since 101 */
	ms_engine_flush(k.eng, 400); /* 299 s idle: kept */
	rec b2 = join(&k, S("a"), 0, 2, 0);
	assert_false(b2.ev.created);
	leave(&k, b2.ev.stream, 0, 2);
	ms_engine_flush(k.eng, 401);
	ms_engine_flush(k.eng, 800); /* 300 s and more idle: forgotten */
	k.n = 0;
	rec c = join(&k, S("u"), 0, 2, 0);
	assert_false(c.ev.created);
	assert_int_equal(c.ev.stream, u.ev.stream);

	/* forgotten: recreated with seq from 0, and its room in the
	 * --max-streams share was given back */
	rec d = join(&k, S("a"), 0, 1, 0);
	assert_int_equal(d.ev.err, 0);
	assert_true(d.ev.created);
	assert_int_equal(d.ev.seq, 0);
	assert_true(d.ev.stream != a.ev.stream);
	done(&k);
}

static void test_history_none(void **state)
{
	sink k;
	ms_pkt *p;
	(void)state;
	engine(&k, 10, 10, 1000);
	rec a = join(&k, S("a"), 0, 1, 0);
	publish(&k, S("a"), 0, 1, &p);
	drop_pkts(&k);
	ms_pkt_unref(p);
	ms_engine_history_req q = { .since = 0, .limit = 50 };
	ms_engine_tag tag = { .a = 5 };
	ms_engine_history(k.eng, S("a"), &q, &tag);
	assert_int_equal(k.n, 1);
	assert_int_equal(k.evs[0].ev.type, MS_ENGINE_HISTORY);
	assert_true(k.evs[0].has_tag && k.evs[0].tag.a == 5);
	assert_int_equal(k.evs[0].ev.n, 0);
	assert_int_equal(k.evs[0].ev.seq, 1);
	assert_true(k.evs[0].ev.epoch == a.ev.epoch);
	k.n = 0;
	ms_engine_history(k.eng, S("none"), &q, &tag);
	assert_int_equal(k.evs[0].ev.n, 0);
	assert_int_equal(k.evs[0].ev.stream, 0);
	k.n = 0;
	done(&k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seq_per_stream),
		cmocka_unit_test(test_epoch_stable),
		cmocka_unit_test(test_members_per_user),
		cmocka_unit_test(test_worker_mask),
		cmocka_unit_test(test_presence_paging),
		cmocka_unit_test(test_presence_coalescing),
		cmocka_unit_test(test_creation_refused),
		cmocka_unit_test(test_idle_sweep),
		cmocka_unit_test(test_history_none),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
