/*
 * /metrics text. Every counter is per worker (label worker="N"), so a
 * dashboard can spot one hot or stuck core; sums are the scraper's job.
 * Names follow Prometheus conventions: counters end in _total, bytes in
 * _bytes_total, gauges are plain nouns.
 */
#include "core/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

typedef struct buf {
	char *p;
	size_t n, cap;
} buf;

static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(buf *b, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int k = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
		va_end(ap);
		if (k >= 0 && (size_t)k < b->cap - b->n) {
			b->n += (size_t)k;
			return;
		}
		b->cap = b->cap * 2 + (k > 0 ? (size_t)k : 0);
		b->p = realloc(b->p, b->cap);
		if (!b->p)
			abort();
	}
}

/* One metric family: a value per worker taken at byte offset `off` of the
 * snapshot (a uint64_t or, with is32, a uint32_t). */
typedef struct family {
	const char *name, *type, *help;
	size_t off;
	int is32;
} family;

#define ST(f) offsetof(ms_worker_snap, st) + offsetof(ms_worker_stats, f)
#define MB(f) offsetof(ms_worker_snap, mb) + offsetof(ms_mbox_stats, f)
static const family families[] = {
	{ "mezon_connection_capacity", "gauge", "connections the worker serves (--max-conns share)",
	  offsetof(ms_worker_snap, cap), 1 },
	{ "mezon_pool_slots_used", "gauge", "connection slots in use (open or closing)",
	  offsetof(ms_worker_snap, live), 1 },
	{ "mezon_accepts_total", "counter", "connections accepted", ST(accepts), 0 },
	{ "mezon_rejects_total", "counter", "connections refused over capacity (503)", ST(rejects), 0 },
	{ "mezon_closes_total", "counter", "connections closed and freed", ST(closes), 0 },
	{ "mezon_upgrades_total", "counter", "WebSocket upgrades (101)", ST(upgrades), 0 },
	{ "mezon_tls_handshakes_total", "counter", "TLS handshakes completed", ST(tls_handshakes), 0 },
	{ "mezon_tls_resumed_total", "counter", "TLS handshakes that resumed a session", ST(tls_resumed), 0 },
	{ "mezon_tls_failures_total", "counter", "TLS handshakes that failed", ST(tls_failures), 0 },
	{ "mezon_messages_in_total", "counter", "WebSocket messages received", ST(msgs_in), 0 },
	{ "mezon_messages_out_total", "counter", "replies and events sent (not counting deliveries)", ST(msgs_out), 0 },
	{ "mezon_deliveries_total", "counter", "stream messages and DMs queued to subscribers", ST(deliveries), 0 },
	{ "mezon_bytes_in_total", "counter", "bytes received from sockets", ST(bytes_in), 0 },
	{ "mezon_bytes_out_total", "counter", "bytes sent to sockets", ST(bytes_out), 0 },
	{ "mezon_enters_total", "counter", "io_uring_enter calls", ST(enters), 0 },
	{ "mezon_iterations_total", "counter", "event loop iterations", ST(iterations), 0 },
	{ "mezon_cqes_total", "counter", "completions handled", ST(cqes), 0 },
	{ "mezon_sends_total", "counter", "send operations submitted", ST(sends), 0 },
	{ "mezon_partial_sends_total", "counter", "sends the kernel took only partly", ST(partial_sends), 0 },
	{ "mezon_records_total", "counter", "TLS records written", ST(records), 0 },
	{ "mezon_recv_buffer_exhausted_total", "counter", "receives stopped for lack of provided buffers", ST(recv_nobufs), 0 },
	{ "mezon_cq_overflows_total", "counter", "iterations that found the completion queue overflowed", ST(cq_overflows), 0 },
	{ "mezon_slow_consumer_closes_total", "counter", "clients closed 1008 for not draining --max-backpressure within --slow-window, or passing the hard cap", ST(slow_closes), 0 },
	{ "mezon_mailbox_pushes_total", "counter", "messages put for other workers", MB(msgs_out), 0 },
	{ "mezon_mailbox_batches_total", "counter", "mailbox ring pushes (one batch per target per iteration)", MB(batches), 0 },
	{ "mezon_mailbox_overflows_total", "counter", "batches that waited on the overflow list (ring full)", MB(overflows), 0 },
	{ "mezon_mailbox_doorbells_total", "counter", "MSG_RING wake-ups sent", MB(doorbells), 0 },
	{ "mezon_mailbox_received_total", "counter", "messages drained from the inbound mailboxes", MB(msgs_in), 0 },
	{ "mezon_mailbox_backlog", "gauge", "batches waiting on the overflow lists (their messages pause input at --mailbox-high-water)",
	  offsetof(ms_worker_snap, pending_out), 0 },
	{ "mezon_pending_output_bytes", "gauge", "output queued on the worker's connections",
	  ST(pending_bytes), 0 },
	{ "mezon_overload_rejects_total", "counter",
	  "new connections refused (503) while the worker was overloaded", ST(overload_503), 0 },
	{ "mezon_input_pauses_total", "counter",
	  "times input was paused at the mailbox high-water mark", ST(input_pauses), 0 },
	{ "mezon_connection_pauses_total", "counter",
	  "times one connection's input was paused (requests in flight, its own output, work budget)",
	  ST(conn_pauses), 0 },
	{ "mezon_pending_input_bytes", "gauge", "unparsed input kept for the worker's connections",
	  ST(input_bytes), 0 },
	{ "mezon_pending_cap_closes_total", "counter",
	  "connections closed 1008 to keep under --max-pending-total", ST(pending_cap_closes), 0 },
	{ "mezon_rate_limited_total", "counter", "requests answered 429 (--rate-limit)",
	  ST(rate_limited), 0 },
	{ "mezon_rate_limit_closes_total", "counter", "connections closed 1008 for rate-limit abuse",
	  ST(rate_closes), 0 },
	{ "mezon_admin_evictions_total", "counter",
	  "idle admin connections closed to make room for a new one (--admin-max-conns)",
	  ST(admin_evictions), 0 },
	{ "mezon_connects_total", "counter", "outbound connections attempted", ST(connects), 0 },
	{ "mezon_connect_failures_total", "counter",
	  "outbound connects that failed (refused, timed out, unreachable)", ST(connect_failures), 0 },
};

/* Errors by kind: one family with a kind label. */
typedef struct errkind {
	const char *kind;
	size_t off;
} errkind;
static const errkind errkinds[] = {
	{ "http_4xx", ST(http_4xx) },
	{ "auth", ST(auth_failures) },
	{ "ws_protocol", ST(ws_protocol_errors) },
	{ "ws_utf8", ST(ws_utf8_errors) },
	{ "ws_too_big", ST(ws_too_big) },
	{ "request", ST(req_errors) },
	{ "tls", ST(tls_failures) },
	{ "ip_limit", ST(ip_rejects) },
	{ "user_limit", ST(user_rejects) },
	{ "origin", ST(origin_rejects) },
	{ "http_timeout", ST(http_timeouts) },
	{ "proxy_header", ST(proxy_rejects) },
	{ "handshake_ip_limit", ST(handshake_ip_rejects) },
};

const char *const ms_auth_reason_names[MS_AUTH_REASONS] = {
	[MS_AUTH_MISSING] = "missing",
	[MS_AUTH_MALFORMED] = "malformed",
	[MS_AUTH_BAD_ALG] = "bad_alg",
	[MS_AUTH_BAD_SIGNATURE] = "bad_signature",
	[MS_AUTH_EXPIRED] = "expired",
	[MS_AUTH_BAD_SUB] = "bad_sub",
	[MS_AUTH_BAD_CLAIM] = "bad_claim",
	[MS_AUTH_WRONG_USER] = "wrong_user",
	[MS_AUTH_API_KEY] = "api_key",
	[MS_AUTH_OTHER] = "other",
};

static uint64_t field(const ms_worker_snap *s, size_t off, int is32)
{
	const char *p = (const char *)s + off;
	if (is32) {
		uint32_t v;
		memcpy(&v, p, sizeof(v));
		return v;
	}
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

char *ms_metrics_text(const ms_worker_snap *snaps, uint32_t n,
		      const char *const kinds[MS_MAX_CTX], size_t *len)
{
	buf b = { malloc(16384), 0, 16384 };
	if (!b.p)
		abort();
	put(&b, "# HELP mezon_workers worker threads\n# TYPE mezon_workers gauge\n"
		"mezon_workers %u\n", n);
	int draining = 0;
	for (uint32_t i = 0; i < n; i++)
		draining |= snaps[i].draining;
	put(&b, "# HELP mezon_draining 1 while a graceful shutdown is in progress\n"
		"# TYPE mezon_draining gauge\nmezon_draining %d\n", draining);
	put(&b, "# HELP mezon_connections open connections by transport\n"
		"# TYPE mezon_connections gauge\n");
	for (uint32_t i = 0; i < n; i++)
		for (int l = 0; l < MS_MAX_CTX; l++)
			if (kinds[l])
				put(&b, "mezon_connections{worker=\"%u\",transport=\"%s\"} %u\n",
				    snaps[i].id, kinds[l], snaps[i].live_kind[l]);
	for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
		const family *fa = &families[f];
		put(&b, "# HELP %s %s\n# TYPE %s %s\n", fa->name, fa->help, fa->name, fa->type);
		for (uint32_t i = 0; i < n; i++)
			put(&b, "%s{worker=\"%u\"} %llu\n", fa->name, snaps[i].id,
			    (unsigned long long)field(&snaps[i], fa->off, fa->is32));
	}
	put(&b, "# HELP mezon_errors_total errors answered or closed, by kind\n"
		"# TYPE mezon_errors_total counter\n");
	for (size_t k = 0; k < sizeof(errkinds) / sizeof(errkinds[0]); k++)
		for (uint32_t i = 0; i < n; i++)
			put(&b, "mezon_errors_total{worker=\"%u\",kind=\"%s\"} %llu\n", snaps[i].id,
			    errkinds[k].kind,
			    (unsigned long long)field(&snaps[i], errkinds[k].off, 0));
	/* Every reason on every worker, zeros too: a series that appears only
	 * at its first failure breaks rate() over the scrape before it. */
	put(&b, "# HELP mezon_auth_failures_total authentication failures (401 at the upgrade, "
		"failed auth op, bad server API key), by reason\n"
		"# TYPE mezon_auth_failures_total counter\n");
	for (int r = 0; r < MS_AUTH_REASONS; r++)
		for (uint32_t i = 0; i < n; i++)
			put(&b, "mezon_auth_failures_total{worker=\"%u\",reason=\"%s\"} %llu\n",
			    snaps[i].id, ms_auth_reason_names[r],
			    (unsigned long long)snaps[i].st.auth_fail[r]);
	/* Latency: each histogram merged over the workers, as a summary. */
	put(&b, "# HELP mezon_latency_seconds latency histograms merged over the workers "
		"(hist: iteration, hop, publish_to_flush, tls_handshake, op_*, api)\n"
		"# TYPE mezon_latency_seconds summary\n");
	ms_hist *m = malloc(sizeof(*m));
	if (!m)
		abort();
	for (int k = 0; k < MS_HIST_COUNT; k++) {
		ms_hist_init(m);
		for (uint32_t i = 0; i < n; i++)
			ms_hist_merge(m, &snaps[i].hist[k]);
		char labels[48];
		snprintf(labels, sizeof(labels), "hist=\"%s\"", ms_hist_names[k]);
		size_t need = ms_hist_prometheus(NULL, 0, "mezon_latency_seconds", labels, m) + 1;
		if (b.cap - b.n < need) {
			b.cap = b.cap * 2 + need;
			b.p = realloc(b.p, b.cap);
			if (!b.p)
				abort();
		}
		b.n += ms_hist_prometheus(b.p + b.n, b.cap - b.n, "mezon_latency_seconds", labels, m);
	}
	free(m);
	*len = b.n;
	return b.p;
}

int ms_hist_dump(const ms_worker_snap *snaps, uint32_t n, const char *dir, const char *why)
{
	char stamp[32];
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct tm tm;
	gmtime_r(&now.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	static unsigned seq; /* dumps of this process, numbered (same-second dumps differ) */
	unsigned no = __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED);
	ms_hist *m = malloc(sizeof(*m));
	if (!m)
		abort();
	int ret = 0;
	for (int k = 0; k < MS_HIST_COUNT; k++) {
		ms_hist_init(m);
		for (uint32_t i = 0; i < n; i++)
			ms_hist_merge(m, &snaps[i].hist[k]);
		char line[256];
		ms_hist_summary(line, sizeof(line), ms_hist_names[k], m);
		ms_info("histogram (%s) %s", why, line);
		if (!dir)
			continue;
		char path[512];
		snprintf(path, sizeof(path), "%s/hist-%s-%d-%u%s-%s.hgrm", dir, stamp, (int)getpid(),
			 no, why, ms_hist_names[k]);
		FILE *f = fopen(path, "w");
		int err = f ? ms_hist_write_hdr(f, m, 1000.0) : -errno;
		if (f && fclose(f) != 0 && !err)
			err = -EIO;
		if (err) {
			ms_warn("histogram dump %s: %s", path, strerror(-err));
			if (!ret)
				ret = err;
		}
	}
	free(m);
	if (dir && !ret)
		ms_info("histograms written to %s/hist-%s-%d-%u%s-*.hgrm (µs)", dir, stamp,
			(int)getpid(), no, why);
	return ret;
}
