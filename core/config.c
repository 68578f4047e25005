/*
 * Flag table and parser. Each entry names the flag, where its value lives in
 * ms_config, its kind and range, its default (as text, parsed the same way
 * as a user value, so --help shows exactly what applies) and its help.
 */
#include "core/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#ifndef MS_VERSION
#define MS_VERSION "0.1.0"
#endif

enum kind { K_U32, K_BOOL, K_ADDR, K_STR, K_ENUM, K_SECRET_FILE };

struct opt {
	const char *name;
	enum kind kind;
	size_t off;
	uint64_t min, max;
	const char *def;
	const char *help;
	const char *const *names; /* K_ENUM */
};

static const char *const taskrun_names[] = { "defer", "coop", NULL };
static const char *const diag_root_names[] = { "none", "echo", "room", NULL };
static const char *const level_names[] = { "error", "warn", "info", "debug", NULL };

#define O(f) offsetof(ms_config, f)
static const struct opt opts[] = {
	{ "cores", K_U32, O(cores), 0, MS_MAX_WORKERS, "0",
	  "worker threads, one ring each (0 = one per CPU in --cpus)", NULL },
	{ "cpus", K_STR, O(cpus), 0, sizeof(((ms_config *)0)->cpus), "",
	  "CPU list workers are pinned to, e.g. 0-3,6 (default: all allowed)", NULL },
	{ "listen", K_ADDR, O(listen), 0, 0, "127.0.0.1:8080",
	  "plain ws:// listener HOST:PORT (port 0 = pick a free one), or off", NULL },
	{ "tls-listen", K_ADDR, O(tls_listen), 0, 0, "127.0.0.1:8443",
	  "TLS wss:// listener HOST:PORT, or off", NULL },
	{ "cert", K_STR, O(cert), 1, sizeof(((ms_config *)0)->cert), NULL,
	  "PEM certificate chain (default: a self-signed localhost certificate made at start)", NULL },
	{ "key", K_STR, O(key), 1, sizeof(((ms_config *)0)->key), NULL,
	  "PEM private key of --cert (RSA or ECDSA)", NULL },
	{ "ticket-key-file", K_STR, O(ticket_key_file), 1, sizeof(((ms_config *)0)->ticket_key_file), NULL,
	  "session ticket keys, 80 bytes each, newest first (shared by processes that resume each other's sessions)", NULL },
	{ "ticket-rotate", K_U32, O(ticket_rotate), 0, 30u * 86400, "43200",
	  "seconds between session ticket key rotations (0 = never)", NULL },
	{ "max-conns", K_U32, O(max_conns), 1, 1u << 22, "100000",
	  "connections per process, split over the workers (each worker <= 19900)", NULL },
	{ "sndbuf", K_U32, O(sndbuf), 4096, 64u << 20, "262144",
	  "SO_SNDBUF bytes of accepted sockets (bounds kernel memory per slow client)", NULL },
	{ "backlog", K_U32, O(backlog), 16, 65535, "4096", "listen(2) backlog per worker", NULL },
	{ "taskrun", K_ENUM, O(taskrun), 0, 1, "coop",
	  "io_uring task running: defer (DEFER_TASKRUN) or coop (COOP_TASKRUN)", taskrun_names },
	{ "min-wait-us", K_U32, O(min_wait_us), 0, 100000, "10",
	  "batching wait bound in microseconds (IORING_FEAT_MIN_TIMEOUT); 0 = wait for one", NULL },
	{ "wait-batch", K_U32, O(wait_batch), 1, 4096, "16",
	  "completions to wait for per enter, bounded by --min-wait-us", NULL },
	{ "recv-bufs", K_U32, O(recv_bufs), 16, 32768, "2048",
	  "provided receive buffers per worker (power of two)", NULL },
	{ "recv-buf-size", K_U32, O(recv_buf_size), 512, 1u << 20, "4096",
	  "bytes per provided receive buffer", NULL },
	{ "max-message", K_U32, O(max_message), 125, 64u << 20, "65536",
	  "largest WebSocket message in bytes (larger: close 1009)", NULL },
	{ "max-backpressure", K_U32, O(max_backpressure), 4096, 1u << 30, "1048576",
	  "queued output bytes per connection before close 1008 slow consumer", NULL },
	{ "handshake-timeout", K_U32, O(handshake_timeout), 1, 3600, "10",
	  "seconds to complete the TLS and HTTP upgrade handshake", NULL },
	{ "idle-timeout", K_U32, O(idle_timeout), 2, 86400, "60",
	  "seconds without traffic before close; a ping is sent after half", NULL },
	{ "drain-timeout", K_U32, O(drain_timeout), 1, 3600, "10",
	  "seconds a graceful shutdown waits for clients before exiting", NULL },
	{ "max-streams-per-conn", K_U32, O(max_streams_per_conn), 1, 65536, "256",
	  "streams one connection may join (more: error 403)", NULL },
	{ "presence-max-members", K_U32, O(presence_max_members), 0, 1u << 30, "1000",
	  "streams with more members send no presence events (listings still work)", NULL },
	{ "presence-page", K_U32, O(presence_page), 1, 100000, "1000",
	  "users per presence listing page", NULL },
	{ "dev", K_BOOL, O(dev), 0, 1, NULL,
	  "development mode: /ws?user=ID without a token, every stream allowed", NULL },
	{ "diag", K_BOOL, O(diag), 0, 1, NULL,
	  "serve the diagnostic routes /echo and /room", NULL },
	{ "diag-root", K_ENUM, O(diag_root), 0, 2, "none",
	  "also serve a diagnostic route at / (echo or room; needs --diag)", diag_root_names },
	{ "secret-file", K_SECRET_FILE, O(secret_file), 0, 0, NULL,
	  "file holding the HS256 JWT secret (give twice during key rotation)", NULL },
	{ "secret", K_STR, O(secret), 1, sizeof(((ms_config *)0)->secret), NULL,
	  "HS256 JWT secret as text (tests only: visible in the process list)", NULL },
	/* limits (issue 7) */
	{ "max-conns-per-ip", K_U32, O(max_conns_per_ip), 0, 1u << 22, "0",
	  "connections per source address, all workers together (more: 503); 0 = off, since users behind one NAT share an address", NULL },
	{ "max-conns-per-user", K_U32, O(max_conns_per_user), 0, 1u << 22, "64",
	  "/ws connections per user id, all workers together (more: 503 at the upgrade); 0 = off", NULL },
	{ "proxy-protocol", K_BOOL, O(proxy_protocol), 0, 1, NULL,
	  "every connection starts with a PROXY protocol v2 (or v1) header from the load balancer; its source address counts for --max-conns-per-ip; no header: close", NULL },
	{ "allowed-origins", K_STR, O(allowed_origins), 0, sizeof(((ms_config *)0)->allowed_origins), "",
	  "comma-separated origins (https://chat.example.com) a browser upgrade may come from (others: 403; no Origin header: allowed)", NULL },
	{ "rate-limit", K_STR, O(rate_limit), 1, sizeof(((ms_config *)0)->rate_limit), "off",
	  "MSGS,BURST: publish+dm requests per second per connection, burst banked (over: error 429; more than BURST rejected in 10 s: close 1008)", NULL },
	{ "max-pending-total", K_U32, O(max_pending_total), 0, 1u << 22, "0",
	  "MiB of queued output per process, split over the workers (over: largest queues closed 1008; 7/8 of it: new connections 503); 0 = a quarter of RAM", NULL },
	{ "log-level", K_ENUM, O(log_level), 0, 3, "info",
	  "error, warn, info or debug", level_names },
};
#undef O
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

int ms_addr_parse(ms_addr *a, const char *text)
{
	char host[64];
	const char *colon;
	memset(a, 0, sizeof(*a));
	if (strlen(text) >= sizeof(a->text))
		return -EINVAL;
	snprintf(a->text, sizeof(a->text), "%s", text);
	if (text[0] == '[') {
		const char *end = strchr(text, ']');
		if (!end || end[1] != ':' || (size_t)(end - text - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, text + 1, (size_t)(end - text - 1));
		host[end - text - 1] = 0;
		colon = end + 1;
	} else {
		colon = strrchr(text, ':');
		if (!colon || (size_t)(colon - text) >= sizeof(host))
			return -EINVAL;
		memcpy(host, text, (size_t)(colon - text));
		host[colon - text] = 0;
	}
	char *endp;
	errno = 0;
	unsigned long port = strtoul(colon + 1, &endp, 10);
	if (errno || *endp || colon[1] == 0 || port > 65535)
		return -EINVAL;
	struct sockaddr_in *in4 = (struct sockaddr_in *)&a->ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->ss;
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		a->len = sizeof(*in4);
	} else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		a->len = sizeof(*in6);
	} else if (strcmp(host, "localhost") == 0) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		in4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a->len = sizeof(*in4);
	} else {
		return -EINVAL;
	}
	return 0;
}

int ms_cpulist_parse(const char *text, uint64_t mask[16])
{
	int count = 0;
	const char *p = text;
	memset(mask, 0, 16 * sizeof(uint64_t));
	while (*p) {
		char *end;
		unsigned long lo = strtoul(p, &end, 10), hi = lo;
		if (end == p)
			return -EINVAL;
		p = end;
		if (*p == '-') {
			hi = strtoul(p + 1, &end, 10);
			if (end == p + 1)
				return -EINVAL;
			p = end;
		}
		if (lo > hi || hi >= 1024)
			return -EINVAL;
		for (unsigned long c = lo; c <= hi; c++) {
			if (!(mask[c / 64] & (1ull << (c % 64))))
				count++;
			mask[c / 64] |= 1ull << (c % 64);
		}
		if (*p == ',')
			p++;
		else if (*p)
			return -EINVAL;
	}
	return count > 0 ? count : -EINVAL;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: mezon-sock [flags]\n\nflags (default in brackets):\n");
	for (size_t i = 0; i < NOPTS; i++) {
		const struct opt *o = &opts[i];
		char arg[48] = "";
		if (o->kind == K_U32)
			snprintf(arg, sizeof(arg), " N");
		else if (o->kind == K_ADDR)
			snprintf(arg, sizeof(arg), " HOST:PORT");
		else if (o->kind == K_STR || o->kind == K_SECRET_FILE)
			snprintf(arg, sizeof(arg), " %s", o->kind == K_STR ? "TEXT" : "FILE");
		else if (o->kind == K_ENUM) {
			snprintf(arg, sizeof(arg), " ");
			for (int k = 0; o->names[k]; k++)
				snprintf(arg + strlen(arg), sizeof(arg) - strlen(arg), "%s%s",
					 k ? "|" : "", o->names[k]);
		}
		char full[80];
		snprintf(full, sizeof(full), "--%s%s", o->name, arg);
		fprintf(f, "  %-32s %s", full, o->help);
		if (o->def && o->kind != K_BOOL)
			fprintf(f, " [%s]", o->def[0] ? o->def : "all");
		if (o->kind == K_U32)
			fprintf(f, " (%llu..%llu)", (unsigned long long)o->min,
				(unsigned long long)o->max);
		fputc('\n', f);
	}
	fprintf(f, "  %-32s %s\n  %-32s %s\n", "--help", "this text", "--version",
		"print the version");
}

static int bad(const struct opt *o, const char *val)
{
	if (o->kind == K_U32)
		fprintf(stderr, "mezon-sock: --%s %s: expected an integer in %llu..%llu\n",
			o->name, val, (unsigned long long)o->min, (unsigned long long)o->max);
	else if (o->kind == K_ENUM) {
		fprintf(stderr, "mezon-sock: --%s %s: expected one of", o->name, val);
		for (int k = 0; o->names[k]; k++)
			fprintf(stderr, " %s", o->names[k]);
		fputc('\n', stderr);
	} else if (o->kind == K_ADDR)
		fprintf(stderr, "mezon-sock: --%s %s: expected HOST:PORT or [V6]:PORT\n",
			o->name, val);
	else
		fprintf(stderr, "mezon-sock: --%s: bad value\n", o->name);
	return -EINVAL;
}

static int set(ms_config *cfg, const struct opt *o, const char *val)
{
	void *dst = (char *)cfg + o->off;
	switch (o->kind) {
	case K_U32: {
		char *end;
		if (!val[0] || val[0] == '-')
			return bad(o, val);
		errno = 0;
		unsigned long long v = strtoull(val, &end, 10);
		if (errno || *end || v < o->min || v > o->max)
			return bad(o, val);
		*(uint32_t *)dst = (uint32_t)v;
		return 0;
	}
	case K_BOOL:
		*(bool *)dst = true;
		return 0;
	case K_ADDR:
		if (strcmp(val, "off") == 0) {
			memset(dst, 0, sizeof(ms_addr));
			strcpy(((ms_addr *)dst)->text, "off");
			return 0;
		}
		return ms_addr_parse(dst, val) ? bad(o, val) : 0;
	case K_STR:
		if (strlen(val) >= o->max || strlen(val) < o->min)
			return bad(o, val);
		strcpy(dst, val);
		return 0;
	case K_SECRET_FILE: {
		char (*slots)[256] = dst;
		int k = slots[0][0] ? 1 : 0;
		if ((k == 1 && slots[1][0]) || strlen(val) >= 256 || !val[0]) {
			fprintf(stderr, "mezon-sock: --%s: at most two files, paths < 256 bytes\n",
				o->name);
			return -EINVAL;
		}
		strcpy(slots[k], val);
		return 0;
	}
	case K_ENUM:
		for (uint32_t k = 0; o->names[k]; k++)
			if (strcmp(o->names[k], val) == 0) {
				*(uint32_t *)dst = k;
				return 0;
			}
		return bad(o, val);
	}
	return -EINVAL;
}

int ms_config_parse(ms_config *cfg, int argc, char **argv)
{
	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < NOPTS; i++)
		if (opts[i].def && set(cfg, &opts[i], opts[i].def))
			return -EINVAL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 1;
		}
		if (strcmp(a, "--version") == 0) {
			printf("mezon-sock %s\n", MS_VERSION);
			return 1;
		}
		if (strncmp(a, "--", 2) != 0) {
			fprintf(stderr, "mezon-sock: unexpected argument '%s' (see --help)\n", a);
			return -EINVAL;
		}
		const char *name = a + 2, *eq = strchr(name, '=');
		size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
		const struct opt *o = NULL;
		for (size_t k = 0; k < NOPTS; k++)
			if (strlen(opts[k].name) == nlen && !strncmp(opts[k].name, name, nlen))
				o = &opts[k];
		if (!o) {
			fprintf(stderr, "mezon-sock: unknown flag '--%.*s' (see --help)\n",
				(int)nlen, name);
			return -EINVAL;
		}
		const char *val = eq ? eq + 1 : NULL;
		if (o->kind == K_BOOL) {
			if (val) {
				fprintf(stderr, "mezon-sock: --%s takes no value\n", o->name);
				return -EINVAL;
			}
		} else if (!val) {
			if (i + 1 >= argc) {
				fprintf(stderr, "mezon-sock: --%s needs a value\n", o->name);
				return -EINVAL;
			}
			val = argv[++i];
		}
		if (set(cfg, o, val ? val : ""))
			return -EINVAL;
	}
	if (cfg->recv_bufs & (cfg->recv_bufs - 1)) {
		fprintf(stderr, "mezon-sock: --recv-bufs %u: expected a power of two in 16..32768\n",
			cfg->recv_bufs);
		return -EINVAL;
	}
	if (!cfg->cert[0] != !cfg->key[0]) {
		fprintf(stderr, "mezon-sock: --cert and --key go together\n");
		return -EINVAL;
	}
	if (cfg->diag_root != MS_DIAG_ROOT_NONE && !cfg->diag) {
		fprintf(stderr, "mezon-sock: --diag-root needs --diag\n");
		return -EINVAL;
	}
	if (cfg->cpus[0]) {
		uint64_t m[16];
		if (ms_cpulist_parse(cfg->cpus, m) < 0) {
			fprintf(stderr, "mezon-sock: --cpus %s: expected a CPU list like 0-3,6\n",
				cfg->cpus);
			return -EINVAL;
		}
	}
	cfg->rate_msgs = cfg->rate_burst = 0;
	if (strcmp(cfg->rate_limit, "off") != 0) {
		char tail;
		if (sscanf(cfg->rate_limit, "%u,%u%c", &cfg->rate_msgs, &cfg->rate_burst, &tail) != 2 ||
		    cfg->rate_msgs == 0 || cfg->rate_burst == 0 || cfg->rate_msgs > 1000000 ||
		    cfg->rate_burst > 1000000) {
			fprintf(stderr, "mezon-sock: --rate-limit %s: expected MSGS,BURST (1..1000000 "
					"each) or off\n", cfg->rate_limit);
			return -EINVAL;
		}
	}
	ms_log_level = (int)cfg->log_level;
	return 0;
}
