/*
 * The admin listener (--admin-listen, default 127.0.0.1:9090), apart from
 * the public ones: GET /healthz, GET /metrics (Prometheus text), and the
 * server API for the application's backend (PROTOCOL.md "Admin listener"):
 * POST /api/publish, /api/dm, /api/disconnect, authorised by
 * `Authorization: Bearer <key>` from --api-key-file.
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

/* Whether c's request waits on a cross-core answer (server.c keeps a
 * half-closed connection open for it). */
bool ms_admin_waiting(const ms_conn *c);

/* Input of an admin connection (the on_data contract of ms_handlers). */
size_t ms_admin_data(ms_worker *w, ms_conn *c, uint8_t *buf, size_t len);

/* Answer the request c is waiting on (the chat core, after a cross-core
 * step): status, and a JSON body of n bytes; then the connection closes.
 * Ignored if c is already closing. */
void ms_admin_reply(ms_worker *w, ms_conn *c, int status, const char *json, size_t n);

/* Same, with the body {"error":{"code":status,"message":msg}}. */
void ms_admin_error(ms_worker *w, ms_conn *c, int status, const char *msg);

#endif
