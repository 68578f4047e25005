/*
 * The admin listener (--admin-listen, default 127.0.0.1:9090), apart from
 * the public ones: GET /healthz, GET /metrics (Prometheus text), and the
 * server API for the application's backend (PROTOCOL.md "Admin listener"):
 * POST /api/publish, /api/dm, /api/disconnect, authorised by
 * `Authorization: Bearer <key>` from --api-key-file.
 *
 * A socket context of its own (ms_admin_context): its handlers, its
 * per-connection state and its configuration, nothing shared with the
 * public listeners' protocol layer. No client admission (capacity,
 * overload, per-address limits, PROXY headers): health checks and metrics
 * must answer exactly when the worker is full or overloaded; it has a
 * reserve of its own instead (--admin-max-conns).
 *
 * One request per connection (every answer says Connection: close): a
 * scraper or backend reconnects over loopback, and no request waits behind
 * another one's cross-core answer. Bodies need Content-Length (no chunked
 * encoding) and are capped at --max-message + 4 KiB.
 *
 * Runs on the worker that accepted the connection (worker 0: the admin
 * listener is not replicated per worker).
 */
#ifndef MS_NET_ADMIN_H
#define MS_NET_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/worker.h"
#include "net/http.h"

/* The server API's calls, supplied by the chat core. Each runs on the
 * worker of admin connection c and answers it with ms_admin_reply or
 * ms_admin_error, now or after a cross-core step (c is found again by
 * handle: it may be gone by then). Messages carry "from":"server". */
typedef struct ms_admin_api {
	void (*publish)(ms_worker *w, ms_conn *c, ms_str stream, ms_str data);
	void (*dm)(ms_worker *w, ms_conn *c, uint64_t to, ms_str data);
	void (*disconnect)(ms_worker *w, ms_conn *c, uint64_t uid);
} ms_admin_api;

typedef struct ms_admin_opts {
	const ms_admin_api *api; /* NULL: API calls answer 503 */
	ms_str api_key;          /* bearer key (borrowed); n == 0: API disabled (403) */
} ms_admin_opts;

/* The admin listener's context: its handlers and state, *o as their
 * configuration (borrowed: it must outlive the workers), a reserve of
 * max_conns connections, its listener kept open while draining. Add it to
 * every worker (the same context index everywhere) and listen on one. */
ms_ctx ms_admin_context(const ms_admin_opts *o, uint32_t max_conns);

/* Answer the request c is waiting on (the chat core, after a cross-core
 * step): status, and a JSON body of n bytes; then the connection closes.
 * Ignored if c is already closing. */
void ms_admin_reply(ms_worker *w, ms_conn *c, int status, const char *json, size_t n);

/* Same, with the body {"error":{"code":status,"message":msg}}. */
void ms_admin_error(ms_worker *w, ms_conn *c, int status, const char *msg);

#endif
