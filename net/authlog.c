/*
 * Authentication failures, wherever they happen (the /ws upgrade and auth
 * op in server.c, the server API key in admin.c): counted per reason and
 * logged within one budget per worker. Worker thread only.
 */
#include "net/internal.h"

#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "net/limits.h"

/* Failures logged per worker and second, beyond a burst: each is a write(2)
 * on the worker thread, and a client can fail an auth op per frame. */
#define AUTH_LOG_RATE 20
#define AUTH_LOG_BURST 100

void ms_net__auth_failed(ms_worker *w, ms_conn *c, int reason, const char *where)
{
	static __thread struct {
		bool init;
		uint32_t unlogged; /* failures over the budget since the last line */
		ms_bucket b;
	} lg;
	ms_worker_stats *st = ms_worker_stats_of(w);
	uint32_t now = ms_worker_now_ms(w);
	if ((unsigned)reason >= MS_AUTH_REASONS)
		reason = MS_AUTH_OTHER;
	st->auth_failures++;
	st->auth_fail[reason]++;
	ms_rate rate = ms_rate_msgs(AUTH_LOG_RATE, AUTH_LOG_BURST);
	if (!lg.init) {
		ms_bucket_init(&lg.b, &rate, now);
		lg.init = true;
	}
	if (ms_log_level < MS_LOG_INFO)
		return;
	if (!ms_bucket_take(&lg.b, &rate, 1, now)) {
		lg.unlogged++;
		return;
	}
	/* The peer's address is known where the worker reads it (per-IP
	 * limits, PROXY headers). */
	char addr[80] = "";
	ms_lkey k;
	const struct sockaddr *sa = ms_conn_peer(w, c);
	if (sa && ms_lkey_addr(&k, sa)) {
		memcpy(addr, " from ", 6);
		ms_lkey_addr_text(&k, addr + 6, sizeof(addr) - 6);
	}
	char more[64] = "";
	if (lg.unlogged)
		snprintf(more, sizeof(more), " (and %u earlier not logged)", lg.unlogged);
	lg.unlogged = 0;
	ms_info("authentication failed: %s at %s%s, conn %u%s", ms_auth_reason_names[reason],
		where, addr, c->idx, more);
}

