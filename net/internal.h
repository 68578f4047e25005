/*
 * Helpers shared inside net/ (not API): what the admin listener and the
 * public listeners' protocol layer both need. Worker thread only.
 */
#ifndef MS_NET_INTERNAL_H
#define MS_NET_INTERNAL_H

#include "core/worker.h"

/* An authentication failure on c (net/authlog.c): counted (auth_failures
 * and auth_fail by reason, enum ms_auth_reason) and logged at info with the
 * reason, where it happened (`where`, e.g. "upgrade /ws") and the peer's
 * address; never the token or the query string. The log lines are
 * budgeted per worker, shared by every listener; the counters see every
 * failure. */
void ms_net__auth_failed(ms_worker *w, ms_conn *c, int reason, const char *where);

#endif
