/*
 * Admin listener: health, metrics and the server API (see admin.h).
 *
 * A request is answered either at once (health, errors, /api/dm, which
 * reads the registry under its shard's read lock) or after a cross-core
 * step: /metrics gathers every worker's snapshot through the mailboxes,
 * /api/publish waits for the stream owner's seq, /api/disconnect for
 * nothing (the kicks are posted; the answer says how many). While it waits
 * the connection is in ST_WAIT and further input is ignored (one request
 * per connection); the answer finds it again by handle, so a client that
 * went away meanwhile costs nothing.
 */
#include "net/admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "core/log.h"
#include "core/metrics.h"
#include "net/http.h"
#include "net/internal.h"
#include "net/json.h"
#include "net/proto.h"

/* c->state of admin connections. */
enum {
	ST_READ = 0,   /* reading the request */
	ST_WAIT,       /* waiting on a cross-core answer; further input ignored */
	ST_CONTINUED,  /* sent 100 Continue, reading the body */
};

/* Per-connection state (ms_conn_ext). */
typedef struct admin_conn {
	uint64_t t0; /* when the pending API request arrived (worker clock ns), 0 = none */
} admin_conn;

#define SCRAPES_MAX 64 /* /metrics requests waiting on one snapshot round */
#define CLOSE_AFTER_DRAIN 1 /* seconds a connection still gets for its request */

static inline admin_conn *X(ms_conn *c)
{
	return ms_conn_ext(c);
}

static inline const ms_admin_opts *opts_of(ms_worker *w, ms_conn *c)
{
	return ms_conn_ctx_arg(w, c);
}

static bool waiting(const ms_conn *c)
{
	return c->state == ST_WAIT;
}

static void answer(ms_worker *w, ms_conn *c, int status, const char *type,
		   const char *extra, const char *body, size_t n)
{
	if (ms_conn_closing(c))
		return; /* answered already, or aborted */
	c->state = ST_READ;
	admin_conn *x = X(c);
	if (x->t0) {
		uint64_t now = ms_clock_ns();
		ms_worker_record(w, MS_HIST_API, now > x->t0 ? now - x->t0 : 0);
		x->t0 = 0;
	}
	char head[256];
	int h = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			 "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
			 status, ms_http_reason(status), type, n, extra ? extra : "");
	ms_conn_write(w, c, head, (size_t)h);
	if (n)
		ms_conn_write(w, c, body, n);
	if (status >= 400 && status < 500)
		ms_worker_stats_of(w)->http_4xx++;
	ms_conn_close(w, c, MS_CLOSE_FLUSH);
}

void ms_admin_reply(ms_worker *w, ms_conn *c, int status, const char *json, size_t n)
{
	answer(w, c, status, "application/json", NULL, json, n);
}

void ms_admin_error(ms_worker *w, ms_conn *c, int status, const char *msg)
{
	char body[256];
	int n = snprintf(body, sizeof(body), "{\"error\":{\"code\":%d,\"message\":\"%s\"}}",
			 status, msg);
	answer(w, c, status, "application/json",
	       status == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL, body, (size_t)n);
}

static bool str_is(ms_str s, const char *lit)
{
	size_t n = strlen(lit);
	return s.n == n && memcmp(s.p, lit, n) == 0;
}

/* ---- /metrics ------------------------------------------------------------- */

/* Scrapes arriving while a snapshot round is under way wait for it: one
 * round (and one n-worker snapshot array) serves them all, so concurrent
 * scrapers cannot multiply the memory or the mailbox traffic. */
static __thread struct scrapes {
	bool busy;
	uint32_t n;
	ms_conn_ref refs[SCRAPES_MAX];
} scrapes;

static void metrics_done(ms_worker *w, const ms_worker_snap *snaps, uint32_t n, void *arg)
{
	/* Every worker has the same contexts in the same order: this one's
	 * names label every worker's counts. */
	const char *kinds[MS_MAX_CTX];
	for (int k = 0; k < MS_MAX_CTX; k++)
		kinds[k] = ms_worker_ctx_name(w, k);
	size_t len;
	char *text = ms_metrics_text(snaps, n, kinds, &len);
	for (uint32_t i = 0; i < scrapes.n; i++) {
		ms_conn *c = ms_worker_conn(w, scrapes.refs[i]);
		if (c)
			answer(w, c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len);
	}
	free(text);
	scrapes.n = 0;
	scrapes.busy = false;
}

static void metrics(ms_worker *w, ms_conn *c)
{
	if (scrapes.n == SCRAPES_MAX) {
		ms_admin_error(w, c, 503, "too many concurrent scrapes");
		return;
	}
	c->state = ST_WAIT;
	scrapes.refs[scrapes.n++] = ms_conn_ref_of(w, c);
	if (!scrapes.busy) {
		scrapes.busy = true;
		ms_worker_collect(w, metrics_done, NULL);
	}
}

/* ---- server API ------------------------------------------------------------ */

/* Bearer key check in constant time (for keys of the right length). */
static bool authorised(ms_str key, const ms_http_request *req)
{
	const ms_http_header *h = ms_http_header_get(req, "authorization");
	if (!h || h->value.n != 7 + key.n || strncasecmp(h->value.p, "Bearer ", 7) != 0)
		return false;
	return CRYPTO_memcmp(h->value.p + 7, key.p, key.n) == 0;
}

/* The body's members: stream, to, user (strings, decoded into the
 * buffers), data (raw value). */
typedef struct api_req {
	ms_str stream, to, user, data;
	char stream_buf[129], to_buf[21], user_buf[21]; /* one byte over the longest valid */
} api_req;

/* Read as the /ws parser reads a request, so the body means here what it
 * means to any JSON reader that checked it on the way: keys and strings
 * decoded, a key given twice (compared decoded) refused, at most
 * MS_JSON_KEYS_MAX members. Unknown members are ignored (forward
 * compatible). A string too long for its buffer is left empty here, which
 * the caller's name and id checks refuse. */
static const char *parse_body(const char *p, size_t n, api_req *r)
{
	memset(r, 0, sizeof(*r));
	ms_json_iter it;
	if (!ms_json_object_begin(&it, p, n))
		return "body must be a JSON object";
	ms_json_keys keys;
	ms_json_keys_init(&keys);
	const char *err = NULL;
	ms_str key, val;
	int k;
	while ((k = ms_json_object_next(&it, &key, &val)) > 0) {
		if (err)
			continue; /* invalid JSON further on still says so */
		int added = ms_json_keys_add(&keys, key);
		if (added <= 0) {
			err = added ? "too many keys" : "duplicate key";
			continue;
		}
		char name[8];
		long kn = ms_json_key(key, name, sizeof(name));
		ms_str nm = { name, kn > 0 ? (size_t)kn : 0 };
		if (str_is(nm, "data")) {
			r->data = val;
			continue;
		}
		ms_str *dst = str_is(nm, "stream") ? &r->stream :
			      str_is(nm, "to") ? &r->to :
			      str_is(nm, "user") ? &r->user : NULL;
		if (!dst)
			continue;
		char *buf = dst == &r->stream ? r->stream_buf : dst == &r->to ? r->to_buf : r->user_buf;
		size_t cap = dst == &r->stream ? sizeof(r->stream_buf) : sizeof(r->to_buf);
		if (val.n < 2 || val.p[0] != '"') {
			err = "stream, to and user are strings";
			continue;
		}
		long vn = ms_json_string(val, buf, cap);
		*dst = (ms_str){ buf, vn > 0 ? (size_t)vn : 0 };
	}
	return k < 0 ? "invalid JSON" : err;
}

static void api(ms_worker *w, ms_conn *c, const ms_http_request *req, const char *body,
		size_t n)
{
	X(c)->t0 = ms_worker_now_ns(w);
	const ms_admin_opts *o = opts_of(w, c);
	if (!o->api_key.n) {
		ms_admin_error(w, c, 403, "server API disabled: start with --api-key-file");
		return;
	}
	if (!authorised(o->api_key, req)) {
		ms_net__auth_failed(w, c, MS_AUTH_API_KEY, "server API");
		ms_admin_error(w, c, 401, "bearer key required");
		return;
	}
	if (!str_is(req->method, "POST")) {
		ms_admin_error(w, c, 405, "POST only");
		return;
	}
	if (ms_worker_draining(w)) {
		ms_admin_error(w, c, 503, "server shutting down");
		return;
	}
	if (!o->api) {
		ms_admin_error(w, c, 503, "chat core not available");
		return;
	}
	api_req r;
	const char *err = parse_body(body, n, &r);
	if (err) {
		ms_admin_error(w, c, 400, err);
		return;
	}
	uint64_t uid;
	if (str_is(req->path, "/api/publish")) {
		if (!r.stream.p || !r.data.p) {
			ms_admin_error(w, c, 400, "stream and data required");
		} else if (!ms_proto_stream_valid(r.stream)) {
			ms_admin_error(w, c, 400, "bad stream name");
		} else {
			c->state = ST_WAIT;
			o->api->publish(w, c, r.stream, r.data);
		}
	} else if (str_is(req->path, "/api/dm")) {
		if (!r.to.p || !r.data.p)
			ms_admin_error(w, c, 400, "to and data required");
		else if (!ms_proto_uid(r.to, &uid))
			ms_admin_error(w, c, 400, "bad user id");
		else
			o->api->dm(w, c, uid, r.data);
	} else if (str_is(req->path, "/api/disconnect")) {
		if (!r.user.p)
			ms_admin_error(w, c, 400, "user required");
		else if (!ms_proto_uid(r.user, &uid))
			ms_admin_error(w, c, 400, "bad user id");
		else
			o->api->disconnect(w, c, uid);
	} else {
		ms_admin_error(w, c, 404, "no such API call");
	}
}

/* ---- input ------------------------------------------------------------------ */

/* Content-Length as a plain decimal (every occurrence must agree, RFC 9112
 * §6.3); 0 when absent, -1 if malformed. */
static long content_length(const ms_http_request *req)
{
	long got = -2;
	for (size_t k = 0; k < req->nheaders; k++) {
		const ms_http_header *h = &req->headers[k];
		if (h->name.n != 14 || strncasecmp(h->name.p, "content-length", 14) != 0)
			continue;
		if (h->value.n == 0 || h->value.n > 9)
			return -1;
		long v = 0;
		for (size_t i = 0; i < h->value.n; i++) {
			char d = h->value.p[i];
			if (d < '0' || d > '9')
				return -1;
			v = v * 10 + (d - '0');
		}
		if (got != -2 && got != v)
			return -1;
		got = v;
	}
	return got == -2 ? 0 : got;
}

static size_t on_data(ms_worker *w, ms_conn *c, uint8_t *buf, size_t len)
{
	if (c->state != ST_READ && c->state != ST_CONTINUED)
		return len; /* one request per connection */
	ms_http_request req;
	int r = ms_http_parse((const char *)buf, len, &req);
	if (r == 0)
		return 0;
	if (r < 0) {
		ms_admin_error(w, c, -r, "malformed request");
		return len;
	}
	if (ms_http_header_get(&req, "transfer-encoding")) {
		ms_admin_error(w, c, 411, "Content-Length required (no chunked bodies)");
		return len;
	}
	long cl = content_length(&req);
	if (cl < 0) {
		ms_admin_error(w, c, 400, "bad Content-Length");
		return len;
	}
	if ((unsigned long)cl > ms_worker_config(w)->max_message + 4096u) {
		ms_admin_error(w, c, 413, "body larger than --max-message");
		return len;
	}
	if (len - (size_t)r < (size_t)cl) {
		/* curl and others wait (a second) for a 100 before a large body. */
		if (c->state == ST_READ && ms_http_header_has_token(&req, "expect", "100-continue")) {
			static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
			ms_conn_write(w, c, cont, sizeof(cont) - 1);
			c->state = ST_CONTINUED;
		}
		return 0; /* the body is still coming */
	}
	const char *body = (const char *)buf + r;
	bool get = str_is(req.method, "GET");
	if (str_is(req.path, "/healthz")) {
		if (!get)
			ms_admin_error(w, c, 405, "GET only");
		else if (ms_worker_draining(w))
			answer(w, c, 503, "text/plain", NULL, "draining\n", 9);
		else
			answer(w, c, 200, "text/plain", NULL, "ok\n", 3);
	} else if (str_is(req.path, "/metrics")) {
		if (!get)
			ms_admin_error(w, c, 405, "GET only");
		else
			metrics(w, c);
	} else if (req.path.n > 5 && memcmp(req.path.p, "/api/", 5) == 0) {
		api(w, c, &req, body, (size_t)cl);
	} else {
		ms_admin_error(w, c, 404, "not found");
	}
	return len;
}

/* ---- handlers ---------------------------------------------------------------- */

static void on_open(ms_worker *w, ms_conn *c, bool over_cap)
{
	/* Never over: the context has its own reserve. Accepted while draining
	 * (the listener stays open): a short deadline, so it cannot hold the
	 * drain up. The deadline is absolute: input does not move it. */
	c->state = ST_READ;
	ms_conn_timeout(w, c, ms_worker_draining(w) ? CLOSE_AFTER_DRAIN
						    : ms_worker_config(w)->handshake_timeout);
}

/* A request waiting on a cross-core answer (metrics, publish): a client
 * that half-closed after sending it still gets the answer. */
static bool on_eof(ms_worker *w, ms_conn *c, int err)
{
	if (err == 0 && waiting(c))
		return true;
	ms_conn_close(w, c, err == 0 ? MS_CLOSE_FLUSH : MS_CLOSE_ABORT);
	return false;
}

/* No whole request in time: 408; one waiting on its answer past the
 * deadline (a round that never completed): closed. */
static void on_timeout(ms_worker *w, ms_conn *c)
{
	if (c->state != ST_READ) {
		ms_conn_close(w, c, MS_CLOSE_ABORT);
		return;
	}
	ms_worker_stats *st = ms_worker_stats_of(w);
	st->http_timeouts++;
	st->http_4xx++;
	char buf[256];
	int n = ms_http_response(buf, sizeof(buf), 408, true, NULL, NULL);
	if (n > 0)
		ms_conn_write(w, c, buf, (size_t)n);
	ms_conn_close(w, c, MS_CLOSE_FLUSH);
}

/* Shutdown: a request on its way gets its answer (the health check's 503,
 * metrics) rather than a reset; one that does not come within a second
 * gets a 408. One waiting on a cross-core answer keeps its deadline. */
static void on_drain(ms_worker *w, ms_conn *c)
{
	if (c->state == ST_READ)
		ms_conn_timeout(w, c, CLOSE_AFTER_DRAIN);
}

/* The reserve is full: an idle connection (not waiting on a cross-core
 * answer such as a metrics round or a publish's seq) makes room for the
 * new one, which may be the health check that must answer. */
static bool on_evict(ms_worker *w, ms_conn *c)
{
	if (waiting(c))
		return false;
	ms_debug("conn %u: idle admin connection closed for a new one", c->idx);
	ms_conn_close(w, c, MS_CLOSE_ABORT);
	return true;
}

static const ms_conn_handlers admin_handlers = {
	.on_open = on_open,
	.on_data = on_data,
	.on_eof = on_eof,
	.on_timeout = on_timeout,
	.on_drain = on_drain,
	.on_evict = on_evict,
	/* on_free: nothing is held beyond the slot; on_shed: core aborts. */
};

ms_ctx ms_admin_context(const ms_admin_opts *o, uint32_t max_conns)
{
	return (ms_ctx){
		.h = &admin_handlers,
		.ext_size = sizeof(admin_conn),
		.arg = (void *)o,
		.name = "admin",
		.flags = MS_CTX_KEEP_LISTENING,
		.reserve = max_conns,
	};
}
