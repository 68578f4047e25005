/*
 * Flag table and parser. Each entry names the flag, where its value lives in
 * ms_config, its kind and range, its default (as text, parsed the same way
 * as a user value, so --help shows exactly what applies) and its help.
 */
#include "core/config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

#ifndef MS_VERSION
#error "MS_VERSION comes from CMake's project(VERSION)"
#endif

enum kind {
	K_U32, K_I32, K_BOOL, K_ADDR, K_STR, K_ENUM, K_SECRET_FILE,
	K_CONFIG, /* --config FILE: read before the other flags */
	K_ACTION, /* --print-config: acts after every flag is applied */
};

enum {
	F_POW2 = 1,    /* K_U32: a power of two */
	F_CPULIST = 2, /* K_STR: "" or a CPU list */
	F_HIDE = 4,    /* never echo the value (a secret) */
	F_PATH = 8,    /* K_STR: a file name (for --help) */
};

struct opt {
	const char *name;
	enum kind kind;
	size_t off;
	long long min, max; /* K_STR: length min..max-1 bytes */
	const char *def;
	const char *help;
	const char *const *names; /* K_ENUM */
	unsigned flags;
};

static const char *const taskrun_names[] = { "defer", "coop", NULL };
static const char *const diag_root_names[] = { "none", "echo", "room", NULL };
static const char *const level_names[] = { "error", "warn", "info", "debug", NULL };

#define O(f) offsetof(ms_config, f)
static const struct opt opts[] = {
	{ "config", K_CONFIG, 0, 1, 256, NULL,
	  "read flags from FILE: one 'key = value' per line, keys as the long flags, "
	  "# comments; flags on the command line win over the file", NULL, 0 },
	{ "cores", K_U32, O(cores), 0, MS_MAX_WORKERS, "0",
	  "worker threads, one ring each (0 = one per usable CPU: of --numa-node, "
	  "--cpus and the allowed set)", NULL, 0 },
	{ "cpus", K_STR, O(cpus), 0, sizeof(((ms_config *)0)->cpus), "",
	  "CPU list workers are pinned to, e.g. 0-3,6 (default: all allowed; with "
	  "--numa-node: those of the node)", NULL, F_CPULIST },
	{ "numa-node", K_I32, O(numa_node), -1, 1023, "-1",
	  "NUMA node: pin every worker to its CPUs and bind memory to it (-1 = "
	  "spread workers round-robin over the nodes, node-local memory)", NULL, 0 },
	{ "listen", K_ADDR, O(listen), 0, 0, "127.0.0.1:8080",
	  "plain ws:// listener HOST:PORT (port 0 = pick a free one), or off", NULL, 0 },
	{ "tls-listen", K_ADDR, O(tls_listen), 0, 0, "127.0.0.1:8443",
	  "TLS wss:// listener HOST:PORT, or off (outside --dev it needs --cert and --key)", NULL, 0 },
	{ "cert", K_STR, O(cert), 1, sizeof(((ms_config *)0)->cert), NULL,
	  "PEM certificate chain (needed by --tls-listen outside --dev; with --dev the default is "
	  "a self-signed localhost certificate made at start)", NULL, F_PATH },
	{ "key", K_STR, O(key), 1, sizeof(((ms_config *)0)->key), NULL,
	  "PEM private key of --cert (RSA or ECDSA)", NULL, F_PATH },
	{ "ticket-key-file", K_STR, O(ticket_key_file), 1, sizeof(((ms_config *)0)->ticket_key_file), NULL,
	  "session ticket keys, 80 bytes each, newest first (shared by processes that resume each other's sessions)", NULL, F_PATH },
	{ "ticket-rotate", K_U32, O(ticket_rotate), 0, 30u * 86400, "43200",
	  "seconds between session ticket key rotations (0 = never)", NULL, 0 },
	{ "max-conns", K_U32, O(max_conns), 1, 1u << 22, "100000",
	  "connections per process, split over the workers (each worker <= 19872 here: RLIMIT_NOFILE 20000 less 128 kept to answer 503)", NULL, 0 },
	{ "sndbuf", K_U32, O(sndbuf), 4096, 64u << 20, "262144",
	  "SO_SNDBUF bytes of accepted sockets (bounds kernel memory per slow client)", NULL, 0 },
	{ "backlog", K_U32, O(backlog), 16, 65535, "4096", "listen(2) backlog per worker", NULL, 0 },
	{ "taskrun", K_ENUM, O(taskrun), 0, 1, "coop",
	  "io_uring task running: defer (DEFER_TASKRUN) or coop (COOP_TASKRUN)", taskrun_names, 0 },
	{ "min-wait-us", K_U32, O(min_wait_us), 0, 100000, "10",
	  "batching wait bound in microseconds (IORING_FEAT_MIN_TIMEOUT); 0 = wait for one", NULL, 0 },
	{ "wait-batch", K_U32, O(wait_batch), 1, 4096, "16",
	  "completions to wait for per enter, bounded by --min-wait-us", NULL, 0 },
	{ "recv-bufs", K_U32, O(recv_bufs), 16, 32768, "2048",
	  "provided receive buffers per worker (power of two)", NULL, F_POW2 },
	{ "recv-buf-size", K_U32, O(recv_buf_size), 512, 1u << 20, "4096",
	  "bytes per provided receive buffer", NULL, 0 },
	{ "max-message", K_U32, O(max_message), 125, 64u << 20, "65536",
	  "largest WebSocket message in bytes (larger: close 1009)", NULL, 0 },
	{ "max-backpressure", K_U32, O(max_backpressure), 4096, 1u << 30, "1048576",
	  "queued output bytes per connection a client must drain within --slow-window (else close 1008 slow consumer); at max(2x this, this + --max-message): close at once", NULL, 0 },
	{ "handshake-timeout", K_U32, O(handshake_timeout), 1, 3600, "10",
	  "seconds to complete the TLS and HTTP upgrade handshake", NULL, 0 },
	{ "idle-timeout", K_U32, O(idle_timeout), 2, 86400, "60",
	  "seconds without traffic before close; a ping is sent after half", NULL, 0 },
	{ "drain-timeout", K_U32, O(drain_timeout), 1, 3600, "10",
	  "seconds a graceful shutdown waits for clients before exiting", NULL, 0 },
	{ "max-streams-per-conn", K_U32, O(max_streams_per_conn), 1, 65536, "256",
	  "streams one connection may join (more: error 403)", NULL, 0 },
	{ "presence-max-members", K_U32, O(presence_max_members), 0, 1u << 30, "1000",
	  "streams with more members send no presence events (listings still work)", NULL, 0 },
	{ "presence-page", K_U32, O(presence_page), 1, 100000, "1000",
	  "users per presence listing page", NULL, 0 },
	{ "dev", K_BOOL, O(dev), 0, 1, NULL,
	  "development mode: /ws?user=ID without a token, every stream allowed", NULL, 0 },
	{ "diag", K_BOOL, O(diag), 0, 1, NULL,
	  "serve the diagnostic routes /echo and /room (outside --dev they need a token like /ws)", NULL, 0 },
	{ "diag-root", K_ENUM, O(diag_root), 0, 2, "none",
	  "also serve a diagnostic route at / (echo or room; needs --diag)", diag_root_names, 0 },
	{ "secret-file", K_SECRET_FILE, O(secret_file), 0, 0, NULL,
	  "file holding the HS256 JWT secret, at least 32 bytes outside --dev (give twice during key rotation)", NULL, 0 },
	{ "secret", K_STR, O(secret), 1, sizeof(((ms_config *)0)->secret), NULL,
	  "HS256 JWT secret as text, at least 32 bytes outside --dev (tests only: visible in the process list)", NULL, F_HIDE },
	/* admission and rate limits (net/limits.h) */
	{ "max-conns-per-ip", K_U32, O(max_conns_per_ip), 0, 1u << 22, "0",
	  "connections per source address, all workers together (more: 503); 0 = off, since users behind one NAT share an address", NULL, 0 },
	{ "max-conns-per-user", K_U32, O(max_conns_per_user), 0, 1u << 22, "64",
	  "/ws connections per user id, all workers together (more: 503 at the upgrade); 0 = off", NULL, 0 },
	{ "proxy-protocol", K_BOOL, O(proxy_protocol), 0, 1, NULL,
	  "every connection starts with a PROXY protocol v2 (or v1) header from the load balancer; its source address counts for --max-conns-per-ip; no header: close", NULL, 0 },
	{ "allowed-origins", K_STR, O(allowed_origins), 0, sizeof(((ms_config *)0)->allowed_origins), "",
	  "comma-separated origins (https://chat.example.com) a browser upgrade may come from (others: 403; no Origin header: allowed)", NULL, 0 },
	{ "rate-limit", K_STR, O(rate_limit), 1, sizeof(((ms_config *)0)->rate_limit), "5000,10000",
	  "MSGS,BURST: publish+dm requests per second per connection, burst banked (over: error 429; more than BURST, at most 256, refused in 10 s: close 1008), or off", NULL, 0 },
	{ "rate-bytes", K_STR, O(rate_bytes), 1, sizeof(((ms_config *)0)->rate_bytes), "1048576,1048576",
	  "BYTES,BURST: publish+dm payload bytes per second per user, all its connections together (per connection with --max-conns-per-user 0; burst at least --max-message; over: error 429, counted like --rate-limit), or off", NULL, 0 },
	{ "join-rate", K_STR, O(join_rate), 1, sizeof(((ms_config *)0)->join_rate), "50,512",
	  "RATE,BURST: join+leave+presence requests per second per user, all its connections together (per connection with --max-conns-per-user 0; over: error 429), or off", NULL, 0 },
	{ "create-rate", K_STR, O(create_rate), 1, sizeof(((ms_config *)0)->create_rate), "10,256",
	  "RATE,BURST: new streams per second one connection's joins and publishes may create (over: error 429), or off", NULL, 0 },
	{ "max-streams", K_U32, O(max_streams), 1, 1u << 30, "1000000",
	  "streams per process, split over the workers that own them (a join or publish that would create one more: error 503)", NULL, 0 },
	{ "max-inflight", K_U32, O(max_inflight), 1, 65535, "64",
	  "requests per connection awaiting another worker's answer (join, publish, presence); at the cap, reading from that connection pauses until answers are back", NULL, 0 },
	{ "slow-window", K_U32, O(slow_window), 1, 3600, "5",
	  "seconds a connection's queued output may stay over --max-backpressure while the kernel takes less than that much of it, before close 1008 slow consumer", NULL, 0 },
	{ "max-pending-total", K_U32, O(max_pending_total), 0, 1u << 22, "0",
	  "MiB of queued output and unparsed input per process, split over the workers (over: largest holders closed 1008; 7/8 of it: new connections 503); 0 = a quarter of RAM", NULL, 0 },
	{ "log-level", K_ENUM, O(log_level), 0, 3, "info",
	  "error, warn, info or debug", level_names, 0 },
	{ "print-config", K_ACTION, 0, 0, 0, NULL,
	  "print the configuration (defaults, --config file, flags) as a config file and exit",
	  NULL, 0 },
	{ "mailbox-slots", K_U32, O(mailbox_slots), 2, 65536, "4096",
	  "mailbox ring slots (message batches in flight) per ordered worker pair; a full ring overflows into a list and, past a high-water mark, pauses the sender's input", NULL, F_POW2 },
	{ "mailbox-high-water", K_U32, O(mailbox_high_water), 1, 1u << 30, "65536",
	  "mailbox messages waiting behind a full ring at which a worker pauses reading client input (and answers new connections 503) until they drain to an eighth of it", NULL, 0 },
	/* operating: the private admin listener, the server API, histogram dumps */
	{ "admin-listen", K_ADDR, O(admin_listen), 0, 0, "127.0.0.1:9090",
	  "admin listener HOST:PORT (/metrics, /healthz, server API), or off; keep it private", NULL, 0 },
	{ "api-key-file", K_STR, O(api_key_file), 1, sizeof(((ms_config *)0)->api_key_file), NULL,
	  "file holding the server API bearer key, at least 16 bytes outside --dev and not a JWT "
	  "secret (default: server API disabled)", NULL, 0 },
	{ "hist-dir", K_STR, O(hist_dir), 1, sizeof(((ms_config *)0)->hist_dir), NULL,
	  "directory for latency histogram dumps (HdrHistogram text, on SIGUSR1, every "
	  "--hist-interval and at exit); without it only summary lines are logged", NULL, 0 },
	{ "hist-interval", K_U32, O(hist_interval), 0, 86400, "0",
	  "seconds between periodic histogram dumps (0 = only on SIGUSR1 and at exit)", NULL, 0 },
	/* admission */
	{ "max-handshakes-per-ip", K_U32, O(max_handshakes_per_ip), 0, 1u << 22, "0",
	  "public connections per source address still handshaking (accepted, no 101 yet), all workers together (more: 503); 0 = auto: --max-conns/16 within 64..8192", NULL, 0 },
	{ "admin-max-conns", K_U32, O(admin_max_conns), 1, 1024, "32",
	  "admin listener connections, outside --max-conns (full: a new one closes the oldest idle one)", NULL, 0 },
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

static uint16_t addr_port(const ms_addr *a)
{
	return ntohs(a->ss.ss_family == AF_INET ? ((const struct sockaddr_in *)&a->ss)->sin_port
						: ((const struct sockaddr_in6 *)&a->ss)->sin6_port);
}

const char *ms_addr_format(const ms_addr *a, char out[MS_ADDR_TEXT])
{
	char host[INET6_ADDRSTRLEN] = "?";
	if (!a->len) {
		snprintf(out, MS_ADDR_TEXT, "off");
		return out;
	}
	if (a->ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)&a->ss)->sin_addr, host, sizeof(host));
	else
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&a->ss)->sin6_addr, host,
			  sizeof(host));
	bool v6 = a->ss.ss_family == AF_INET6;
	snprintf(out, MS_ADDR_TEXT, "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", addr_port(a));
	return out;
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

/* Where a value came from, for error messages: a --config file line or
 * (file NULL) the command line. */
struct src {
	const char *file;
	int line;
};

static const struct opt *find(const char *name, size_t len)
{
	for (size_t k = 0; k < NOPTS; k++)
		if (strlen(opts[k].name) == len && !strncmp(opts[k].name, name, len))
			return &opts[k];
	return NULL;
}

/* The argument placeholder and the "[default] (range)" tail of --help. */
static void describe(const struct opt *o, char *arg, size_t an, char *tail, size_t tn)
{
	arg[0] = tail[0] = 0;
	switch (o->kind) {
	case K_U32:
	case K_I32:
		snprintf(arg, an, " N");
		snprintf(tail, tn, " [%s] (%lld..%lld%s)", o->def, o->min, o->max,
			 (o->flags & F_POW2) ? ", power of two" : "");
		return;
	case K_ADDR:
		snprintf(arg, an, " HOST:PORT");
		snprintf(tail, tn, " [%s]", o->def);
		return;
	case K_STR:
		snprintf(arg, an, " %s", (o->flags & F_PATH) ? "FILE" : (o->flags & F_CPULIST) ? "LIST" : "TEXT");
		snprintf(tail, tn, " [%s]", !o->def ? "none" : o->def[0] ? o->def : "all");
		return;
	case K_SECRET_FILE:
	case K_CONFIG:
		snprintf(arg, an, " FILE");
		snprintf(tail, tn, " [none]");
		return;
	case K_ENUM:
		snprintf(arg, an, " ");
		for (int k = 0; o->names[k]; k++)
			snprintf(arg + strlen(arg), an - strlen(arg), "%s%s", k ? "|" : "",
				 o->names[k]);
		snprintf(tail, tn, " [%s]", o->def);
		return;
	case K_BOOL:
		snprintf(tail, tn, " [off]");
		return;
	case K_ACTION:
		return;
	}
}

static void usage(FILE *f)
{
	fprintf(f, "usage: mezon-sock [flags]\n\nflags (default in brackets):\n");
	for (size_t i = 0; i < NOPTS; i++) {
		const struct opt *o = &opts[i];
		char arg[48], tail[96], full[80];
		describe(o, arg, sizeof(arg), tail, sizeof(tail));
		snprintf(full, sizeof(full), "--%s%s", o->name, arg);
		fprintf(f, "  %-32s %s%s\n", full, o->help, tail);
	}
	fprintf(f, "  %-32s %s\n  %-32s %s\n", "--help", "print this text and exit", "--version",
		"print the version and exit");
}

/* One line: where the value came from, the flag, the value (unless secret),
 * what would have been accepted. Always returns -EINVAL. */
static int bad(const struct src *s, const struct opt *o, const char *val, const char *why)
{
	char head[320];
	const char *shown = !val[0] ? "" : (o->flags & F_HIDE) ? "(hidden)" : val;
	int vlen = (int)strlen(shown) > 64 ? 64 : (int)strlen(shown);
	const char *ell = strlen(shown) > 64 ? "..." : "";
	const char *sp = shown[0] ? " " : "";
	if (s && s->file)
		snprintf(head, sizeof(head), "%s:%d: %s%s%.*s%s", s->file, s->line, o->name, sp,
			 vlen, shown, ell);
	else
		snprintf(head, sizeof(head), "--%s%s%.*s%s", o->name, sp, vlen, shown, ell);
	if (why) {
		fprintf(stderr, "mezon-sock: %s: %s\n", head, why);
		return -EINVAL;
	}
	switch (o->kind) {
	case K_U32:
	case K_I32:
		fprintf(stderr, "mezon-sock: %s: expected an integer in %lld..%lld%s\n", head,
			o->min, o->max, (o->flags & F_POW2) ? " that is a power of two" : "");
		break;
	case K_ENUM:
		fprintf(stderr, "mezon-sock: %s: expected one of", head);
		for (int k = 0; o->names[k]; k++)
			fprintf(stderr, "%s %s", k ? "," : "", o->names[k]);
		fputc('\n', stderr);
		break;
	case K_ADDR:
		fprintf(stderr, "mezon-sock: %s: expected HOST:PORT, [V6]:PORT (port 0..65535) "
				"or off\n", head);
		break;
	case K_STR:
		fprintf(stderr, "mezon-sock: %s: expected %s of %lld..%lld bytes\n", head,
			(o->flags & F_CPULIST) ? "a CPU list like 0-3,6 (CPUs 0..1023)"
			: (o->flags & F_PATH) ? "a path" : "text",
			o->min, o->max - 1);
		break;
	case K_SECRET_FILE:
		fprintf(stderr, "mezon-sock: %s: expected a path of 1..255 bytes, given at most "
				"twice\n", head);
		break;
	case K_BOOL:
		fprintf(stderr, "mezon-sock: %s: expected true or false (or the bare key)\n", head);
		break;
	case K_CONFIG:
		fprintf(stderr, "mezon-sock: %s: expected a path of 1..255 bytes, given once\n",
			head);
		break;
	case K_ACTION:
		fprintf(stderr, "mezon-sock: %s: takes no value\n", head);
		break;
	}
	return -EINVAL;
}

static int set(ms_config *cfg, const struct opt *o, const char *val, const struct src *s)
{
	void *dst = (char *)cfg + o->off;
	switch (o->kind) {
	case K_U32:
	case K_I32: {
		char *end;
		if (!val[0] || isspace((unsigned char)val[0]) || (o->kind == K_U32 && val[0] == '-'))
			return bad(s, o, val, NULL);
		errno = 0;
		long long v = strtoll(val, &end, 10);
		if (errno || *end || v < o->min || v > o->max)
			return bad(s, o, val, NULL);
		if ((o->flags & F_POW2) && (v & (v - 1)))
			return bad(s, o, val, NULL);
		if (o->kind == K_U32)
			*(uint32_t *)dst = (uint32_t)v;
		else
			*(int32_t *)dst = (int32_t)v;
		return 0;
	}
	case K_BOOL:
		if (!val[0] || !strcmp(val, "true") || !strcmp(val, "yes") || !strcmp(val, "on") ||
		    !strcmp(val, "1"))
			*(bool *)dst = true;
		else if (!strcmp(val, "false") || !strcmp(val, "no") || !strcmp(val, "off") ||
			 !strcmp(val, "0"))
			*(bool *)dst = false;
		else
			return bad(s, o, val, NULL);
		return 0;
	case K_ADDR:
		if (strcmp(val, "off") == 0) {
			memset(dst, 0, sizeof(ms_addr));
			strcpy(((ms_addr *)dst)->text, "off");
			return 0;
		}
		return ms_addr_parse(dst, val) ? bad(s, o, val, NULL) : 0;
	case K_STR:
		if ((long long)strlen(val) >= o->max || (long long)strlen(val) < o->min)
			return bad(s, o, val, NULL);
		if ((o->flags & F_CPULIST) && val[0]) {
			uint64_t m[16];
			if (ms_cpulist_parse(val, m) < 0)
				return bad(s, o, val, NULL);
		}
		strcpy(dst, val);
		return 0;
	case K_SECRET_FILE: {
		char (*slots)[256] = dst;
		int k = slots[0][0] ? 1 : 0;
		if ((k == 1 && slots[1][0]) || strlen(val) >= 256 || !val[0])
			return bad(s, o, val, NULL);
		strcpy(slots[k], val);
		return 0;
	}
	case K_ENUM:
		for (uint32_t k = 0; o->names[k]; k++)
			if (strcmp(o->names[k], val) == 0) {
				*(uint32_t *)dst = k;
				return 0;
			}
		return bad(s, o, val, NULL);
	case K_CONFIG:
	case K_ACTION:
		break;
	}
	return -EINVAL;
}

static void set_defaults(ms_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < NOPTS; i++)
		if (opts[i].def && opts[i].kind != K_CONFIG && opts[i].kind != K_ACTION) {
			int ret = set(cfg, &opts[i], opts[i].def, NULL);
			assert(ret == 0); /* a default must pass its own check */
			(void)ret;
		}
}

/* Apply argv. Records --config's path and --print-config instead of acting.
 * The first --secret-file of the command line replaces those of the file.
 * Returns 0, 1 (--help / --version printed) or -EINVAL. */
static int apply_args(ms_config *cfg, int argc, char **argv, const char **config, bool *print)
{
	bool secret_seen = false;
	*config = NULL;
	*print = false;
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
			fprintf(stderr, "mezon-sock: unexpected argument '%.64s' (flags start with "
					"--; see --help)\n", a);
			return -EINVAL;
		}
		const char *name = a + 2, *eq = strchr(name, '=');
		size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
		const struct opt *o = find(name, nlen);
		if (!o) {
			fprintf(stderr, "mezon-sock: unknown flag '--%.*s' (see --help)\n",
				(int)(nlen > 64 ? 64 : nlen), name);
			return -EINVAL;
		}
		const char *val = eq ? eq + 1 : NULL;
		if (o->kind == K_BOOL || o->kind == K_ACTION) {
			if (val) {
				fprintf(stderr, "mezon-sock: --%s takes no value\n", o->name);
				return -EINVAL;
			}
		} else if (!val) {
			if (i + 1 >= argc) {
				char arg[48], tail[96];
				describe(o, arg, sizeof(arg), tail, sizeof(tail));
				fprintf(stderr, "mezon-sock: --%s needs a value:%s\n", o->name, arg);
				return -EINVAL;
			}
			val = argv[++i];
		}
		if (o->kind == K_ACTION) {
			*print = true;
			continue;
		}
		if (o->kind == K_CONFIG) {
			if (*config || !val[0] || strlen(val) >= 256)
				return bad(NULL, o, val, NULL);
			*config = val;
			continue;
		}
		if (o->kind == K_SECRET_FILE && !secret_seen) {
			memset(cfg->secret_file, 0, sizeof(cfg->secret_file));
			secret_seen = true;
		}
		if (set(cfg, o, val ? val : "", NULL))
			return -EINVAL;
	}
	return 0;
}

/* Apply a config file: `key = value` or `key value` per line, `#` starts a
 * comment line, blank lines are skipped, a bare boolean key means true.
 * Values run to the end of the line (surrounding blanks trimmed), so a
 * secret may hold '#'. Returns 0 or -EINVAL after one line on stderr. */
static int apply_file(ms_config *cfg, const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "mezon-sock: --config %s: %s\n", path, strerror(errno));
		return -EINVAL;
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	struct src s = { path, 0 };
	int ret = 0;
	while ((n = getline(&line, &cap, f)) >= 0) {
		s.line++;
		while (n > 0 && isspace((unsigned char)line[n - 1]))
			line[--n] = 0;
		char *p = line;
		while (isspace((unsigned char)*p))
			p++;
		if (!*p || *p == '#')
			continue;
		char *key = p;
		while (isalnum((unsigned char)*p) || *p == '-')
			p++;
		size_t klen = (size_t)(p - key);
		if (*p && *p != '=' && !isspace((unsigned char)*p)) {
			fprintf(stderr, "mezon-sock: %s:%d: expected 'key = value' (keys are the long "
					"flags without --, see --help)\n", path, s.line);
			ret = -EINVAL;
			break;
		}
		while (isspace((unsigned char)*p))
			p++;
		if (*p == '=')
			p++;
		while (isspace((unsigned char)*p))
			p++;
		const struct opt *o = find(key, klen);
		if (!o || o->kind == K_CONFIG || o->kind == K_ACTION) {
			fprintf(stderr, "mezon-sock: %s:%d: unknown key '%.*s' (see --help)\n", path,
				s.line, (int)(klen > 64 ? 64 : klen), key);
			ret = -EINVAL;
			break;
		}
		if ((ret = set(cfg, o, p, &s)) != 0)
			break;
	}
	if (!ret && ferror(f)) {
		fprintf(stderr, "mezon-sock: --config %s: read error\n", path);
		ret = -EINVAL;
	}
	free(line);
	fclose(f);
	return ret;
}

/* "RATE,BURST" (each 1..max) or "off" (both 0). */
static int parse_rate(const char *flag, const char *text, uint32_t max, uint32_t *rate,
		      uint32_t *burst)
{
	*rate = *burst = 0;
	if (strcmp(text, "off") == 0)
		return 0;
	char tail;
	if (sscanf(text, "%u,%u%c", rate, burst, &tail) != 2 || *rate == 0 || *burst == 0 ||
	    *rate > max || *burst > max) {
		fprintf(stderr, "mezon-sock: --%s %s: expected RATE,BURST (1..%u each) or off\n",
			flag, text, max);
		*rate = *burst = 0;
		return -EINVAL;
	}
	return 0;
}

int ms_config_parse(ms_config *cfg, int argc, char **argv)
{
	const char *config;
	bool print;
	set_defaults(cfg);
	/* Flags first, so a bad flag is reported before the file is read and
	 * --help works whatever the file holds; then, with a file, defaults →
	 * file → flags again, so the flags win whatever their position. */
	int ret = apply_args(cfg, argc, argv, &config, &print);
	if (ret)
		return ret;
	if (config) {
		set_defaults(cfg);
		if (apply_file(cfg, config) || apply_args(cfg, argc, argv, &config, &print))
			return -EINVAL;
	}
	if (!cfg->cert[0] != !cfg->key[0]) {
		fprintf(stderr, "mezon-sock: --cert and --key go together: give both or neither\n");
		return -EINVAL;
	}
	if (cfg->diag_root != MS_DIAG_ROOT_NONE && !cfg->diag) {
		fprintf(stderr, "mezon-sock: --diag-root %s needs --diag\n",
			diag_root_names[cfg->diag_root]);
		return -EINVAL;
	}
	if (parse_rate("rate-limit", cfg->rate_limit, 1000000, &cfg->rate_msgs, &cfg->rate_burst) ||
	    parse_rate("rate-bytes", cfg->rate_bytes, 1u << 30, &cfg->rate_bytes_s,
		       &cfg->rate_bytes_burst) ||
	    parse_rate("join-rate", cfg->join_rate, 1000000, &cfg->join_rate_s, &cfg->join_burst) ||
	    parse_rate("create-rate", cfg->create_rate, 1000000, &cfg->create_rate_s,
		       &cfg->create_burst))
		return -EINVAL;
	/* One message of --max-message must always fit the byte bucket. */
	if (cfg->rate_bytes_s && cfg->rate_bytes_burst < cfg->max_message)
		cfg->rate_bytes_burst = cfg->max_message;
	ms_log_level = (int)cfg->log_level;
	if (print) {
		ms_config_print(stdout, cfg);
		return 1;
	}
	return 0;
}

/* Whether two listeners would share a port (SO_REUSEPORT lets them, and
 * connections would be split between them): same port, and the same or a
 * wildcard address. Port 0 never collides. */
static bool same_port(const ms_addr *a, const ms_addr *b)
{
	if (!a->len || !b->len || addr_port(a) == 0 || addr_port(a) != addr_port(b))
		return false;
	if (a->ss.ss_family != b->ss.ss_family)
		return true; /* a v6 wildcard may cover v4; be strict */
	if (a->ss.ss_family == AF_INET) {
		uint32_t x = ((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr;
		uint32_t y = ((const struct sockaddr_in *)&b->ss)->sin_addr.s_addr;
		return x == y || x == INADDR_ANY || y == INADDR_ANY;
	}
	const struct in6_addr *x = &((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
	const struct in6_addr *y = &((const struct sockaddr_in6 *)&b->ss)->sin6_addr;
	return !memcmp(x, y, sizeof(*x)) || IN6_IS_ADDR_UNSPECIFIED(x) || IN6_IS_ADDR_UNSPECIFIED(y);
}

int ms_config_check_flags(const ms_config *cfg)
{
	if (!cfg->dev && !cfg->secret[0] && !cfg->secret_file[0][0]) {
		fprintf(stderr, "mezon-sock: refusing to start without authentication: give "
				"--secret-file FILE (HS256 JWT key), or --dev for open "
				"development mode\n");
		return -EINVAL;
	}
	/* Checked now rather than at the first dump, which may come hours
	 * later (SIGUSR1, --hist-interval) and could only be logged. */
	if (cfg->hist_dir[0] && access(cfg->hist_dir, W_OK | X_OK) != 0) {
		fprintf(stderr, "mezon-sock: --hist-dir %s: %s (create it first)\n", cfg->hist_dir,
			strerror(errno));
		return -EINVAL;
	}
	if (same_port(&cfg->admin_listen, &cfg->listen) ||
	    same_port(&cfg->admin_listen, &cfg->tls_listen)) {
		fprintf(stderr, "mezon-sock: --admin-listen %s: the same port as a public listener "
				"(the admin listener must stay separate and private)\n",
			cfg->admin_listen.text);
		return -EINVAL;
	}
	if (!cfg->listen.len && !cfg->tls_listen.len) {
		fprintf(stderr, "mezon-sock: --listen and --tls-listen are both off: nothing to serve\n");
		return -EINVAL;
	}
	return 0;
}

int ms_config_check(const ms_config *cfg, const ms_config_secret *jwt, int njwt,
		    const ms_config_secret *api)
{
	if (!cfg->dev && cfg->tls_listen.len && !cfg->cert[0]) {
		/* The self-signed certificate is made at every start: no client
		 * can pin or verify it, so outside --dev it would only teach
		 * users to click through warnings. */
		fprintf(stderr, "mezon-sock: --tls-listen %s without a certificate: give --cert FILE "
				"--key FILE, or --tls-listen off (the self-signed certificate is for "
				"--dev only)\n", cfg->tls_listen.text);
		return -EINVAL;
	}
	for (int k = 0; k < njwt && !cfg->dev; k++) {
		/* RFC 7518 §3.2: an HS256 key of at least the hash's size;
		 * shorter ones fall to an offline search over captured tokens. */
		if (jwt[k].n < MS_SECRET_MIN) {
			fprintf(stderr, "mezon-sock: %s: %zu bytes; an HS256 secret needs at least %d "
					"(e.g. head -c 32 /dev/urandom | base64), or --dev\n",
				jwt[k].from, jwt[k].n, MS_SECRET_MIN);
			return -EINVAL;
		}
	}
	if (!api)
		return 0;
	if (!cfg->dev && api->n < MS_API_KEY_MIN) {
		fprintf(stderr, "mezon-sock: %s: %zu bytes; the server API key needs at least %d "
				"(e.g. head -c 24 /dev/urandom | base64), or --dev\n",
			api->from, api->n, MS_API_KEY_MIN);
		return -EINVAL;
	}
	for (int k = 0; k < njwt; k++) {
		/* Whoever holds one would hold both: the API key could mint
		 * tokens for any user, a token signer could call the API. */
		if (jwt[k].n == api->n && memcmp(jwt[k].p, api->p, api->n) == 0) {
			fprintf(stderr, "mezon-sock: %s holds the same bytes as %s: the server API key "
					"and the JWT secret must differ\n", api->from, jwt[k].from);
			return -EINVAL;
		}
	}
	return 0;
}

/* The value of o in c as config-file text. */
static void value_text(const struct opt *o, const ms_config *c, char *buf, size_t n)
{
	const void *src = (const char *)c + o->off;
	switch (o->kind) {
	case K_U32:
		snprintf(buf, n, "%u", *(const uint32_t *)src);
		return;
	case K_I32:
		snprintf(buf, n, "%d", *(const int32_t *)src);
		return;
	case K_BOOL:
		snprintf(buf, n, "%s", *(const bool *)src ? "true" : "false");
		return;
	case K_ADDR:
		snprintf(buf, n, "%s", ((const ms_addr *)src)->text);
		return;
	case K_STR:
		snprintf(buf, n, "%s", (const char *)src);
		return;
	case K_ENUM:
		snprintf(buf, n, "%s", o->names[*(const uint32_t *)src]);
		return;
	case K_SECRET_FILE:
	case K_CONFIG:
	case K_ACTION:
		buf[0] = 0;
		return;
	}
}

void ms_config_print(FILE *f, const ms_config *cfg)
{
	static ms_config def;
	set_defaults(&def);
	fprintf(f, "# mezon-sock configuration, read with --config FILE.\n"
		   "# One 'key = value' per line; the keys are the long flags (mezon-sock --help).\n"
		   "# Flags given on the command line win over this file. A commented-out\n"
		   "# line shows the default. Regenerate: mezon-sock --print-config.\n");
	for (size_t i = 0; i < NOPTS; i++) {
		const struct opt *o = &opts[i];
		if (o->kind == K_CONFIG || o->kind == K_ACTION)
			continue;
		char arg[48], tail[96];
		describe(o, arg, sizeof(arg), tail, sizeof(tail));
		fprintf(f, "\n# %s%s\n", o->help, tail);
		if (o->kind == K_SECRET_FILE) {
			const char (*slots)[256] = (const void *)((const char *)cfg + o->off);
			if (!slots[0][0])
				fprintf(f, "#%s =\n", o->name);
			for (int k = 0; k < 2 && slots[k][0]; k++)
				fprintf(f, "%s = %s\n", o->name, slots[k]);
			continue;
		}
		if (o->flags & F_HIDE) {
			fprintf(f, "#%s =%s\n", o->name,
				*((const char *)cfg + o->off) ? " (set, not printed)" : "");
			continue;
		}
		char v[320], d[320];
		value_text(o, cfg, v, sizeof(v));
		value_text(o, &def, d, sizeof(d));
		fprintf(f, "%s%s =%s%s\n", strcmp(v, d) ? "" : "#", o->name, v[0] ? " " : "", v);
	}
}
