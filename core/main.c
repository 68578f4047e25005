/*
 * mezon-sock entry point: parse flags, refuse insecure configurations, bind
 * one SO_REUSEPORT listener per worker, start the pinned workers, and turn
 * SIGTERM/SIGINT into a graceful drain (a second signal exits at once).
 * This file is the one place in core/ that includes net/, shard/ and tls/:
 * it wires them to the workers. main() only names the steps, in order.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "core/mailbox.h"
#include "core/numa.h"
#include "core/worker.h"
#include "core/metrics.h"
#include "net/admin.h"
#include "net/limits.h"
#include "net/server.h"
#include "shard/chat.h"
#include "tls/tls.h"


static int make_listener(const ms_config *cfg, ms_addr *a)
{
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1, sndbuf = (int)cfg->sndbuf;
	/* Accepted direct descriptors take no setsockopt(): everything they
	 * need is inherited from the listener. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)))
		goto fail;
	if (bind(fd, (struct sockaddr *)&a->ss, a->len) || listen(fd, (int)cfg->backlog))
		goto fail;
	/* Port 0: the first listener picks the port; the others join it. */
	struct sockaddr_storage got;
	socklen_t len = sizeof(got);
	if (getsockname(fd, (struct sockaddr *)&got, &len) == 0) {
		if (got.ss_family == AF_INET)
			((struct sockaddr_in *)&a->ss)->sin_port = ((struct sockaddr_in *)&got)->sin_port;
		else
			((struct sockaddr_in6 *)&a->ss)->sin6_port = ((struct sockaddr_in6 *)&got)->sin6_port;
	}
	return fd;
fail:;
	int err = -errno;
	close(fd);
	return err;
}

/* A secret file's bytes, one trailing newline stripped. */
static int read_secret(const char *path, ms_str *out)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -errno;
	char *buf = malloc(4097);
	size_t n = buf ? fread(buf, 1, 4097, f) : 0;
	fclose(f);
	if (!buf || n == 0 || n > 4096) {
		free(buf);
		return -EINVAL;
	}
	if (buf[n - 1] == '\n')
		n--;
	if (n && buf[n - 1] == '\r')
		n--;
	out->p = buf;
	out->n = n;
	return n ? 0 : -EINVAL;
}

/* The HS256 secrets into o and the API key into *api_key, then
 * ms_config_check on them. Returns 0, or -EINVAL after one line on stderr. */
static int load_secrets(const ms_config *cfg, ms_net_opts *o, ms_str *api_key)
{
	ms_config_secret jwt[2], api;
	char from[3][280];
	int ret;
	for (int k = 0; k < 2 && cfg->secret_file[k][0]; k++) {
		if ((ret = read_secret(cfg->secret_file[k], &o->secrets[o->nsecrets])) != 0) {
			fprintf(stderr, "mezon-sock: --secret-file %s: %s\n", cfg->secret_file[k],
				ret == -EINVAL ? "empty or larger than 4096 bytes" : strerror(-ret));
			return -EINVAL;
		}
		snprintf(from[o->nsecrets], sizeof(from[0]), "--secret-file %s", cfg->secret_file[k]);
		o->nsecrets++;
	}
	if (cfg->secret[0] && o->nsecrets < 2) {
		o->secrets[o->nsecrets].p = cfg->secret;
		o->secrets[o->nsecrets].n = strlen(cfg->secret);
		snprintf(from[o->nsecrets], sizeof(from[0]), "--secret");
		o->nsecrets++;
	}
	for (int k = 0; k < o->nsecrets; k++)
		jwt[k] = (ms_config_secret){ o->secrets[k].p, o->secrets[k].n, from[k] };
	if (cfg->api_key_file[0]) {
		if ((ret = read_secret(cfg->api_key_file, api_key)) != 0) {
			fprintf(stderr, "mezon-sock: --api-key-file %s: %s\n", cfg->api_key_file,
				ret == -EINVAL ? "empty or larger than 4096 bytes" : strerror(-ret));
			return -EINVAL;
		}
		snprintf(from[2], sizeof(from[2]), "--api-key-file %s", cfg->api_key_file);
		api = (ms_config_secret){ api_key->p, api_key->n, from[2] };
	}
	return ms_config_check(cfg, jwt, o->nsecrets, cfg->api_key_file[0] ? &api : NULL);
}

/* Each worker's CPU and node (core/numa.h): --numa-node, --cpus and the
 * process's allowed set, read here, chosen by a pure function. Sets
 * cfg->cores if it was 0 (one worker per usable CPU). Returns 0, or
 * -EINVAL after one line on stderr (no such node, no usable CPU). */
static int cpu_plan(ms_config *cfg, ms_numa_plan *plan)
{
	uint64_t allowed[16], want[16];
	cpu_set_t set;
	memset(allowed, 0, sizeof(allowed));
	if (sched_getaffinity(0, sizeof(set), &set) == 0) {
		for (int c = 0; c < CPU_SETSIZE && c < 1024; c++)
			if (CPU_ISSET(c, &set))
				allowed[c / 64] |= 1ull << (c % 64);
	} else {
		memset(allowed, 0xff, sizeof(allowed));
	}
	if (cfg->cpus[0])
		ms_cpulist_parse(cfg->cpus, want); /* checked by ms_config_parse */
	ms_numa_topo topo;
	int ret = ms_numa_topo_read(&topo, "/sys", allowed);
	if (ret < 0) {
		fprintf(stderr, "mezon-sock: NUMA: cannot read /sys/devices/system/node: %s\n",
			strerror(-ret));
		return -EINVAL;
	}
	char err[512];
	ret = ms_numa_plan_make(plan, &topo, cfg->numa_node, allowed, cfg->cpus[0] ? want : NULL,
				cfg->cores, err, sizeof(err));
	if (ret < 0) {
		fprintf(stderr, "mezon-sock: %s\n", err);
		return -EINVAL;
	}
	cfg->cores = plan->workers;
	char list[256];
	ms_cpulist_format(plan->usable, list, sizeof(list));
	if (cfg->numa_node >= 0)
		ms_info("NUMA: %d node%s; %u workers on node %d's CPUs %s, memory bound to node %d",
			topo.n, topo.n == 1 ? "" : "s", plan->workers, cfg->numa_node, list,
			cfg->numa_node);
	else
		ms_info("NUMA: %d node%s; %u workers on CPUs %s over %d node%s, node-local memory",
			topo.n, topo.n == 1 ? "" : "s", plan->workers, list, plan->nodes_used,
			plan->nodes_used == 1 ? "" : "s");
	return 0;
}

static void print_stats(ms_worker **w, uint32_t n)
{
	ms_worker_stats sum;
	memset(&sum, 0, sizeof(sum));
	for (uint32_t i = 0; i <= n; i++) {
		const ms_worker_stats *s = i < n ? ms_worker_stats_of(w[i]) : &sum;
		uint64_t work = s->msgs_in + s->deliveries;
		double per = work ? (double)s->enters / (double)work : 0;
		char label[24];
		if (i < n)
			snprintf(label, sizeof(label), "worker=%u", i);
		else
			snprintf(label, sizeof(label), "total");
		ms_info("stats %s: accepts=%llu max_conns=%llu rejects=%llu closes=%llu "
			"enters=%llu iterations=%llu cqes=%llu recvs=%llu sends=%llu "
			"partial_sends=%llu bytes_in=%llu bytes_out=%llu msgs_in=%llu "
			"msgs_out=%llu deliveries=%llu records=%llu slow_closes=%llu recv_stops=%llu recv_nobufs=%llu accept_stops=%llu "
			"cq_overflows=%llu stale=%llu ip_rejects=%llu user_rejects=%llu "
			"origin_rejects=%llu rate_limited=%llu rate_closes=%llu http_timeouts=%llu "
			"proxy_rejects=%llu overload_503=%llu pending_cap_closes=%llu "
			"input_pauses=%llu conn_pauses=%llu enters_per_msg=%.4f handshake_ip_rejects=%llu "
			"admin_evictions=%llu",
			label,
			(unsigned long long)s->accepts, (unsigned long long)s->max_conns,
			(unsigned long long)s->rejects, (unsigned long long)s->closes,
			(unsigned long long)s->enters, (unsigned long long)s->iterations,
			(unsigned long long)s->cqes, (unsigned long long)s->recvs,
			(unsigned long long)s->sends, (unsigned long long)s->partial_sends,
			(unsigned long long)s->bytes_in, (unsigned long long)s->bytes_out,
			(unsigned long long)s->msgs_in, (unsigned long long)s->msgs_out,
			(unsigned long long)s->deliveries, (unsigned long long)s->records,
			(unsigned long long)s->slow_closes,
			(unsigned long long)s->recv_stops, (unsigned long long)s->recv_nobufs,
			(unsigned long long)s->accept_stops, (unsigned long long)s->cq_overflows,
			(unsigned long long)s->stale, (unsigned long long)s->ip_rejects,
			(unsigned long long)s->user_rejects, (unsigned long long)s->origin_rejects,
			(unsigned long long)s->rate_limited, (unsigned long long)s->rate_closes,
			(unsigned long long)s->http_timeouts, (unsigned long long)s->proxy_rejects,
			(unsigned long long)s->overload_503, (unsigned long long)s->pending_cap_closes,
			(unsigned long long)s->input_pauses, (unsigned long long)s->conn_pauses, per,
			(unsigned long long)s->handshake_ip_rejects,
			(unsigned long long)s->admin_evictions);
		if (i < n) {
			const uint64_t *src = (const uint64_t *)s;
			uint64_t *dst = (uint64_t *)&sum;
			for (size_t k = 0; k < sizeof(sum) / sizeof(uint64_t); k++)
				dst[k] += src[k];
		}
	}
}

/* The workers have ended: their histograms are read directly. */
static void dump_at_exit(const ms_config *cfg, ms_worker **w, uint32_t n)
{
	if (!n)
		return;
	ms_worker_snap *snaps = malloc(n * sizeof(*snaps));
	if (!snaps)
		return;
	for (uint32_t i = 0; i < n; i++)
		ms_worker_snapshot(w[i], &snaps[i]);
	ms_hist_dump(snaps, n, cfg->hist_dir[0] ? cfg->hist_dir : NULL, "exit");
	free(snaps);
}

/* The process: one of each, built by main's steps in the order they run
 * and released in reverse. Only the main thread writes them, before the
 * workers start and after they end; meanwhile the workers read cfg. */
static ms_config cfg;
static ms_net_opts nopts;    /* the plain listener's options: secrets, hooks, limits */
static ms_net_opts nopts_tls; /* the TLS listener's: the same with TLS on */
static ms_admin_opts aopts;  /* the admin listener's: the API key and the chat's API */
static ms_numa_plan plan;    /* each worker's CPU */
static ms_tls_ctx *tls;      /* with --tls-listen */
static ms_mbox_hub *hub;
static ms_chat *chat;
static const ms_worker_hooks hooks = {
	.on_msg = ms_chat_on_msg,
	.on_flush = ms_chat_on_flush,
};
static ms_ctx ctxs[3];        /* one per listener, in this order: plain, TLS, admin */
static ms_addr *addrs[3];
static int nctx;
static ms_chat_worker *cws[MS_MAX_WORKERS];
static ms_worker *workers[MS_MAX_WORKERS];
static uint32_t started;     /* workers[0..started) are running */
static sigset_t sigs;        /* handled by the main thread, blocked in the workers */

/* What the configuration implies that the operator should read once. */
static void announce_config(void)
{
	if (cfg.dev)
		ms_warn("DEVELOPMENT MODE (--dev): /ws?user=ID is accepted WITHOUT a token "
			"and every stream is open. Never run this in production.");
	if (cfg.diag)
		ms_warn("diagnostic routes on (--diag): /echo answers anything and /room rebroadcasts "
			"every message to every /room client; %s. For conformance tests and "
			"benchmarks, not for production.",
			cfg.dev ? "open to anyone (--dev)" : "each needs a valid token, like /ws");
	if (cfg.secret[0])
		ms_warn("--secret is visible in the process list; use --secret-file outside tests");
	uint32_t share = (cfg.max_conns + cfg.cores - 1) / cfg.cores;
	if (share > 19872)
		ms_warn("--max-conns %u over %u workers is %u per worker, above what one ring's "
			"descriptor table holds here (RLIMIT_NOFILE); each worker serves at most "
			"19872: use --cores %u or more", cfg.max_conns, cfg.cores, share,
			(cfg.max_conns + 19871) / 19872);
	if (!cfg.api_key_file[0] && cfg.admin_listen.len)
		ms_info("server API disabled (no --api-key-file); /metrics and /healthz on the admin listener");
}

/* The shared TLS context, when there is a TLS listener. Returns 0, or -1
 * after one line on stderr. */
static int make_tls(void)
{
	if (!cfg.tls_listen.len)
		return 0;
	ms_tls_opts to = {
		.cert_file = cfg.cert[0] ? cfg.cert : NULL,
		.key_file = cfg.key[0] ? cfg.key : NULL,
		.ticket_key_file = cfg.ticket_key_file[0] ? cfg.ticket_key_file : NULL,
		.ticket_rotate_s = cfg.ticket_rotate,
	};
	char fp[128] = "", err[256] = "";
	int ret = ms_tls_ctx_create(&tls, &to, fp, err, sizeof(err));
	if (ret != 0) {
		const char *e = err[0] ? err : strerror(-ret);
		if (strncmp(e, "tls: ", 5) == 0)
			e += 5;
		fprintf(stderr, "mezon-sock: TLS setup (--cert, --key, --ticket-key-file): %s\n", e);
		return -1;
	}
	ms_info("TLS: %s certificate, SHA-256 fingerprint %s",
		cfg.cert[0] ? cfg.cert : "self-signed localhost", fp);
	return 0;
}

/* The listeners' options (the secrets are in already): the chat hooks,
 * the chat's server API, and the process-wide admission tables. */
static void configure_net(void)
{
	nopts.chat = &ms_chat_hooks_impl;
	aopts.api = &ms_chat_admin_api;
	/* Process-wide tables, not per worker, so a limit is exact however
	 * the kernel spreads one address's connections over the workers. */
	if (cfg.max_conns_per_ip)
		nopts.per_ip = ms_climit_create(cfg.max_conns_per_ip);
	if (cfg.max_conns_per_user)
		nopts.per_user = ms_climit_create(cfg.max_conns_per_user);
	uint32_t handshakes = ms_handshake_limit(cfg.max_handshakes_per_ip, cfg.max_conns);
	nopts.per_handshake = ms_climit_create(handshakes);
	ms_info("at most %u connections per source address may be handshaking at once "
		"(--max-handshakes-per-ip)", handshakes);
	nopts_tls = nopts;
	nopts_tls.tls = tls; /* the TLS listener: the same handlers with TLS on */
}

/* Everything the workers share: TLS, net/'s options, one context per
 * listener (the same on every worker: metrics count by context index:
 * plain, TLS, admin), the mailboxes and the chat state. Returns 0, or -1
 * after one line on stderr. */
static int build_contexts(void)
{
	/* With --numa-node the main thread's allocations (hub, chat tables,
	 * TLS) go to that node too; the workers inherit the policy and set
	 * it again after pinning. */
	if (cfg.numa_node >= 0)
		ms_numa_thread_policy(cfg.numa_node, -1);
	if (make_tls() != 0)
		return -1;
	configure_net();
	if (cfg.listen.len) {
		addrs[nctx] = &cfg.listen;
		ctxs[nctx++] = ms_net_context(&cfg, &nopts);
	}
	if (cfg.tls_listen.len) {
		addrs[nctx] = &cfg.tls_listen;
		ctxs[nctx++] = ms_net_context(&cfg, &nopts_tls);
	}
	if (cfg.admin_listen.len) {
		addrs[nctx] = &cfg.admin_listen;
		ctxs[nctx++] = ms_admin_context(&aopts, cfg.admin_max_conns);
	}
	hub = ms_mbox_hub_create(cfg.cores, cfg.mailbox_slots);
	chat = ms_chat_create(&cfg, cfg.cores);
	return 0;
}

/* Bind each worker's listeners and start it, one after the other. The
 * signals main waits for are blocked first: the workers inherit the mask.
 * Returns 0 when every worker runs, -1 after logging the one that did not
 * (workers[0..started) run). */
static int start_workers(void)
{
	int ret;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGUSR1);
	sigaddset(&sigs, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	for (uint32_t i = 0; i < cfg.cores; i++) {
		int fds[3], nfd = 0;
		for (int k = 0; k < nctx; k++) {
			if (addrs[k] == &cfg.admin_listen && i != 0) {
				fds[nfd++] = -1; /* worker 0 alone serves the admin listener */
				continue;
			}
			int fd = make_listener(&cfg, addrs[k]);
			if (fd < 0) {
				ms_err("listen %s: %s", addrs[k]->text, strerror(-fd));
				while (nfd)
					if (fds[--nfd] >= 0)
						close(fds[nfd]);
				return -1;
			}
			fds[nfd++] = fd;
		}
		int cpu = plan.cpu[i];
		cws[i] = ms_chat_worker_create(chat, i);
		workers[i] = ms_worker_create(&cfg, i, cpu, &hooks, cws[i], hub);
		for (int k = 0; k < nctx; k++) {
			if (workers[i] && ms_worker_ctx_add(workers[i], &ctxs[k]) == k && fds[k] >= 0)
				ms_worker_listen(workers[i], k, fds[k]);
			else if (fds[k] >= 0)
				close(fds[k]);
		}
		if (!workers[i] || (ret = ms_worker_start(workers[i])) != 0) {
			ms_err("worker %u failed to start: %s", i, strerror(workers[i] ? -ret : ENOMEM));
			if (workers[i])
				ms_worker_destroy(workers[i]);
			return -1;
		}
		started++;
	}
	return 0;
}

/* Where the server answers, with the ports the kernel picked for port 0. */
static void announce_listeners(void)
{
	char at[MS_ADDR_TEXT];
	for (int k = 0; k < 2; k++) {
		const ms_addr *a = k ? &cfg.tls_listen : &cfg.listen;
		if (a->len)
			ms_info("listening on %s://%s/ws with %u workers%s", k ? "wss" : "ws",
				ms_addr_format(a, at), cfg.cores,
				cfg.diag ? " (diagnostics on: /echo /room)" : "");
	}
	if (cfg.admin_listen.len)
		ms_info("admin on http://%s/metrics (server API %s)",
			ms_addr_format(&cfg.admin_listen, at), aopts.api_key.n ? "on" : "off");
}

/* Until SIGTERM or SIGINT: SIGUSR1 dumps the histograms, and once a
 * second the ticket keys rotate when due. */
static void serve_until_signal(void)
{
	for (;;) {
		struct timespec tick = { 1, 0 };
		int sig = sigtimedwait(&sigs, NULL, &tick);
		if (sig == SIGTERM || sig == SIGINT)
			break;
		if (sig == SIGUSR1 && started)
			ms_worker_dump(workers[0]); /* it gathers every worker's histograms */
		if (tls)
			ms_tls_ctx_tick(tls, (uint64_t)time(NULL));
	}
	ms_info("shutting down: draining connections (up to %u s; signal again to exit now)",
		cfg.drain_timeout);
}

/* Drain the running workers and join them; a second signal exits at once. */
static void stop_workers(void)
{
	/* Workers that never started are not waited for (the drain barrier,
	 * the exit). */
	for (uint32_t i = started; i < cfg.cores; i++)
		ms_mbox_hub_absent(hub);
	for (uint32_t i = 0; i < started; i++)
		ms_worker_stop(workers[i]);
	for (uint32_t i = 0; i < started; i++) {
		for (;;) {
			struct timespec ts = { 0, 50 * 1000000 };
			sigset_t term;
			sigemptyset(&term);
			sigaddset(&term, SIGTERM);
			sigaddset(&term, SIGINT);
			int sig = sigtimedwait(&term, NULL, &ts);
			if (sig == SIGTERM || sig == SIGINT) {
				/* No stats: the workers are still running. */
				ms_warn("second signal: exiting without waiting");
				_exit(1);
			}
			if (ms_worker_tryjoin(workers[i]) == 0)
				break;
		}
	}
}

/* The ended workers' figures, then everything built above, in reverse. */
static void report_and_release(void)
{
	print_stats(workers, started);
	dump_at_exit(&cfg, workers, started);
	for (uint32_t i = 0; i < started; i++)
		ms_worker_destroy(workers[i]);
	ms_mbox_hub_destroy(hub, ms_chat_msg_release);
	for (uint32_t i = 0; i < started; i++)
		ms_chat_worker_destroy(cws[i]);
	ms_chat_destroy(chat);
	ms_tls_ctx_destroy(tls);
	ms_climit_destroy(nopts.per_ip);
	ms_climit_destroy(nopts.per_user);
	ms_climit_destroy(nopts.per_handshake);
	for (int k = 0; k < nopts.nsecrets; k++)
		if (nopts.secrets[k].p != cfg.secret)
			free((void *)nopts.secrets[k].p);
	free((void *)aopts.api_key.p);
}

int main(int argc, char **argv)
{
	int ret = ms_config_parse(&cfg, argc, argv);
	if (ret)
		return ret > 0 ? 0 : 2;
	/* Flags, secrets and CPUs are judged before anything is logged, so
	 * a refusal is the one line on stderr. */
	if (ms_config_check_flags(&cfg) != 0 || load_secrets(&cfg, &nopts, &aopts.api_key) != 0 ||
	    cpu_plan(&cfg, &plan) != 0)
		return 2;
	announce_config();
	if (build_contexts() != 0)
		return 2;
	if (start_workers() == 0) {
		announce_listeners();
		serve_until_signal();
	}
	stop_workers();
	report_and_release();
	return started == cfg.cores ? 0 : 1;
}
