/*
 * msock-bench: the load generator behind every performance figure of
 * mezon-sock. This file is the coordinator: it parses options,
 * forks --procs worker processes over one shared statistics block, drives
 * the phases (connect -> [settle] -> run: warmup + measured window -> stop),
 * samples the server's RSS, CPU and the kernel's slab, then merges the
 * histograms and prints the human summary, the RESULT line the benchmark
 * scripts parse, and the optional --json / --hist files.
 *
 * Every run ends by itself: connects have a timeout, the measured window has
 * a length, the close handshake has a deadline, and a watchdog kills worker
 * processes that outlive it.
 */
#include "bench.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	g_interrupted = 1;
}

static const char *scenario_name(int s)
{
	static const char *names[] = {"idle", "echo", "fanout", "dm", "storm"};
	return names[s];
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: msock-bench --url ws[s]://HOST:PORT/PATH [options]\n"
		"  --scenario S        idle | echo | fanout | dm | storm (default echo)\n"
		"                      storm: connect, upgrade, close, repeat at --rate per\n"
		"                      second with at most --conns connections at once\n"
		"  --conns N           connections, all processes (default 1)\n"
		"  --threads T         worker threads (one io_uring each) per process (default 1)\n"
		"  --procs P           worker processes (default 1)\n"
		"  --rate R            new connections per second, total (default 0 = unpaced)\n"
		"  --max-pending K     connects+handshakes in flight per thread (default 512)\n"
		"  --duration S        measured seconds (default 10)\n"
		"  --warmup S          seconds of traffic before measuring (default 0)\n"
		"  --settle S          wait after all connections are open, before the run\n"
		"                      (default 0; 2 for idle with --server-pid)\n"
		"  --src A-B           source addresses, e.g. 127.0.0.2-127.0.0.30 (bind before connect)\n"
		"  --secret K          mint ?token= HS256 JWTs (sub = user id, exp = now+1h);\n"
		"                      without it ?user=ID (server in --dev mode)\n"
		"  --user-base N       first user id (default 1)\n"
		"  --inflight K        echo: messages outstanding per connection; fanout/dm with\n"
		"                      --pub-rate 0: publishes outstanding per publisher (default 1)\n"
		"  --size B            echo payload bytes (default 20)\n"
		"  --exchange B        idle: each connection first sends one B-byte binary\n"
		"                      message to the echo route and waits for it to come back\n"
		"                      (server memory after traffic, then idle; default 0)\n"
		"  --pad B             fanout/dm: B bytes of padding in each message's data (default 0)\n"
		"  --binary            echo binary frames instead of text\n"
		"  --streams S         fanout: streams (default 1)\n"
		"  --joins J           fanout: streams joined per connection (default 1, <= S)\n"
		"  --publishers P      fanout/dm: the first P connections publish (default 1)\n"
		"  --pub-rate R        messages/s per publisher (default 0 = as fast as acknowledged)\n"
		"  --stream-prefix X   stream names X0, X1, ... (default bench.)\n"
		"  --connect-timeout S per connection, TCP connect and TLS+upgrade each (default 10)\n"
		"  --close-timeout S   close handshake deadline at the end (default 5)\n"
		"  --max-failures N    connection failures tolerated before the run fails (default 0)\n"
		"  --server-pid PID    sample the server's RSS and CPU, and /proc/meminfo slab\n"
		"wss:// (BoringSSL client; HOST may be an IPv4 address or localhost):\n"
		"  --ca FILE           verify the server's chain against FILE (PEM) and its name\n"
		"                      against HOST (default: no verification, for self-signed certs)\n"
		"  --tls12             TLS 1.2 only (default TLS 1.3 only)\n"
		"  --resume[=slot|thread]  offer the session ticket of the slot's previous\n"
		"                      connection (storm reconnects), or the thread's newest one;\n"
		"                      reports the resumed fraction and full/resumed latencies\n"
		"  --json FILE         write every figure as JSON\n"
		"  --hist FILE         latency histogram, HdrHistogram percentile format (us)\n"
		"  --quiet             no progress lines\n"
		"Exit status: 0 ok, 1 the run failed (connection failures over the limit,\n"
		"protocol errors, unexpected closes, seq gaps/reorders), 2 usage.\n");
}

static int parse_url(ms_bench_cfg *cfg, const char *url)
{
	const char *p;
	if (strncmp(url, "ws://", 5) == 0) {
		p = url + 5;
	} else if (strncmp(url, "wss://", 6) == 0) {
		p = url + 6;
		cfg->tls = true;
	} else {
		return -1;
	}
	const char *slash = strchr(p, '/');
	size_t hl = slash ? (size_t)(slash - p) : strlen(p);
	if (hl == 0 || hl >= sizeof(cfg->host))
		return -1;
	memcpy(cfg->host, p, hl);
	cfg->host[hl] = 0;
	char hostonly[64];
	snprintf(hostonly, sizeof(hostonly), "%s", cfg->host);
	int port = cfg->tls ? 443 : 80;
	char *colon = strrchr(hostonly, ':');
	if (colon) {
		*colon = 0;
		port = atoi(colon + 1);
	}
	snprintf(cfg->tls_host, sizeof(cfg->tls_host), "%s", hostonly);
	if (strcmp(hostonly, "localhost") == 0)
		snprintf(hostonly, sizeof(hostonly), "127.0.0.1");
	cfg->dst.sin_family = AF_INET;
	cfg->dst.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, hostonly, &cfg->dst.sin_addr) != 1 || port <= 0 || port > 65535)
		return -1;
	const char *path = slash ? slash : "/";
	const char *q = strchr(path, '?');
	size_t pl = q ? (size_t)(q - path) : strlen(path);
	if (pl >= sizeof(cfg->path))
		return -1;
	memcpy(cfg->path, path, pl);
	cfg->path[pl] = 0;
	if (q)
		snprintf(cfg->query, sizeof(cfg->query), "%s", q + 1);
	return 0;
}

static int parse_src(ms_bench_cfg *cfg, const char *arg)
{
	char a[64], b[64];
	const char *dash = strchr(arg, '-');
	if (dash) {
		snprintf(a, sizeof(a), "%.*s", (int)(dash - arg), arg);
		snprintf(b, sizeof(b), "%s", dash + 1);
	} else {
		snprintf(a, sizeof(a), "%s", arg);
		snprintf(b, sizeof(b), "%s", arg);
	}
	struct in_addr x, y;
	if (inet_pton(AF_INET, a, &x) != 1 || inet_pton(AF_INET, b, &y) != 1)
		return -1;
	uint32_t lo = ntohl(x.s_addr), hi = ntohl(y.s_addr);
	if (hi < lo || hi - lo >= MS_BENCH_MAX_SRC)
		return -1;
	cfg->nsrc = 0;
	for (uint32_t v = lo; v <= hi; v++)
		cfg->src[cfg->nsrc++].s_addr = htonl(v);
	return 0;
}

/* ---- /proc sampling ------------------------------------------------------ */

static long long proc_status_kb(int pid, const char *field)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	long long v = -1;
	size_t fl = strlen(field);
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
			v = atoll(line + fl + 1);
			break;
		}
	fclose(f);
	return v;
}

static long long meminfo_get(const char *field)
{
	char line[256];
	FILE *f = fopen("/proc/meminfo", "r");
	if (!f)
		return -1;
	long long v = -1;
	size_t fl = strlen(field);
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
			v = atoll(line + fl + 1);
			break;
		}
	fclose(f);
	return v;
}

/* utime + stime of a process, in seconds; -1 if gone. */
static double proc_cpu_s(int pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	unsigned long long ut = 0, stt = 0;
	/* fields after ")": state(3) ... utime(14) stime(15) */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &stt) != 2)
		return -1;
	return (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
}

typedef struct mem_sample {
	long long rss_kb, slab_kb, sunreclaim_kb;
} mem_sample;

static mem_sample sample_mem(int pid)
{
	mem_sample m = {-1, -1, -1};
	if (pid > 0)
		m.rss_kb = proc_status_kb(pid, "VmRSS");
	m.slab_kb = meminfo_get("Slab");
	m.sunreclaim_kb = meminfo_get("SUnreclaim");
	return m;
}

static void sleep_s(double s)
{
	struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
	nanosleep(&ts, NULL);
}

/* ---- reporting ---------------------------------------------------------- */

typedef struct totals {
	uint64_t opened, failed, fail_connect, fail_timeout, fail_http, fail_tls, fail_other;
	uint64_t tls_full, tls_resumed, tls_offered, tls_tickets, win_tls_full, win_tls_resumed;
	uint64_t closed_by_peer, protocol_errors, sent, recv, meas_msgs, meas_bytes;
	uint64_t pub_sent, pub_acked, pub_errors, join_errors;
	uint64_t seq_gaps, seq_missing, seq_dups, seq_reorders, closes_clean;
	uint64_t peak_open;
	ms_hist *tcp, *conn, *lat, *tls_full_h, *tls_res_h;
	char first_error[MS_BENCH_ERRLEN];
} totals;

static void sum_stats(const ms_bench_cfg *cfg, ms_bench_shared *sh, totals *T)
{
	unsigned W = cfg->procs * cfg->threads;
	T->tcp = malloc(sizeof(ms_hist));
	T->conn = malloc(sizeof(ms_hist));
	T->lat = malloc(sizeof(ms_hist));
	T->tls_full_h = malloc(sizeof(ms_hist));
	T->tls_res_h = malloc(sizeof(ms_hist));
	ms_hist_init(T->tls_full_h);
	ms_hist_init(T->tls_res_h);
	ms_hist_init(T->tcp);
	ms_hist_init(T->conn);
	ms_hist_init(T->lat);
	for (unsigned w = 0; w < W; w++) {
		ms_bench_tstats *s = &sh->t[w];
		T->opened += atomic_load(&s->opened);
		T->failed += atomic_load(&s->failed);
		T->fail_connect += s->fail_connect;
		T->fail_timeout += s->fail_timeout;
		T->fail_http += s->fail_http;
		T->fail_tls += s->fail_tls;
		T->tls_full += s->tls_full;
		T->tls_resumed += s->tls_resumed;
		T->tls_offered += s->tls_offered;
		T->tls_tickets += s->tls_tickets;
		T->win_tls_full += s->win_tls_full;
		T->win_tls_resumed += s->win_tls_resumed;
		T->fail_other += s->fail_other;
		T->closed_by_peer += s->closed_by_peer;
		T->protocol_errors += s->protocol_errors;
		T->sent += s->sent_msgs + s->pub_sent;
		T->recv += s->recv_msgs;
		T->meas_msgs += s->meas_msgs;
		T->meas_bytes += s->meas_bytes;
		T->pub_sent += s->pub_sent;
		T->pub_acked += s->pub_acked;
		T->pub_errors += s->pub_errors;
		T->join_errors += s->join_errors;
		T->seq_gaps += s->seq_gaps;
		T->seq_missing += s->seq_missing;
		T->seq_dups += s->seq_dups;
		T->seq_reorders += s->seq_reorders;
		T->closes_clean += s->closes_clean;
		if (s->done) {
			ms_hist_merge(T->tcp, &s->h_tcp);
			ms_hist_merge(T->conn, &s->h_conn);
			ms_hist_merge(T->lat, &s->h_lat);
			ms_hist_merge(T->tls_full_h, &s->h_tls_full);
			ms_hist_merge(T->tls_res_h, &s->h_tls_res);
		}
		if (!T->first_error[0] && s->first_error[0])
			memcpy(T->first_error, s->first_error, sizeof(T->first_error));
	}
}

static double us(uint64_t ns)
{
	return (double)ns / 1000.0;
}

static void print_hist_line(FILE *o, const char *name, const ms_hist *h)
{
	if (h->total == 0) {
		fprintf(o, "  %-16s (none)\n", name);
		return;
	}
	fprintf(o, "  %-16s n=%llu p50=%.1fus p90=%.1fus p99=%.1fus p99.9=%.1fus max=%.1fus mean=%.1fus\n",
		name, (unsigned long long)h->total, us(ms_hist_percentile(h, 50)),
		us(ms_hist_percentile(h, 90)), us(ms_hist_percentile(h, 99)),
		us(ms_hist_percentile(h, 99.9)), us(h->max), ms_hist_mean(h) / 1000.0);
}

static void json_hist(FILE *o, const char *name, const ms_hist *h, bool last)
{
	fprintf(o,
		"  \"%s\": {\"count\": %llu, \"min_us\": %.3f, \"mean_us\": %.3f, \"stddev_us\": %.3f, "
		"\"p50_us\": %.3f, \"p90_us\": %.3f, \"p99_us\": %.3f, \"p999_us\": %.3f, "
		"\"p9999_us\": %.3f, \"max_us\": %.3f}%s\n",
		name, (unsigned long long)h->total, h->total ? us(h->min) : 0.0, ms_hist_mean(h) / 1000.0,
		ms_hist_stddev(h) / 1000.0, us(ms_hist_percentile(h, 50)), us(ms_hist_percentile(h, 90)),
		us(ms_hist_percentile(h, 99)), us(ms_hist_percentile(h, 99.9)),
		us(ms_hist_percentile(h, 99.99)), us(h->max), last ? "" : ",");
}

static double per_conn_bytes(long long a_kb, long long b_kb, uint64_t n)
{
	if (a_kb < 0 || b_kb < 0 || n == 0)
		return -1;
	return (double)(b_kb - a_kb) * 1024.0 / (double)n;
}

int main(int argc, char **argv)
{
	static ms_bench_cfg cfg;
	cfg.scenario = SC_ECHO;
	cfg.threads = 1;
	cfg.procs = 1;
	cfg.conns = 1;
	cfg.max_pending = 512;
	cfg.duration = 10;
	cfg.settle = -1;
	cfg.user_base = 1;
	cfg.inflight = 1;
	cfg.size = 20;
	cfg.streams = 1;
	cfg.joins = 1;
	cfg.publishers = 1;
	cfg.connect_timeout = 10;
	cfg.close_timeout = 5;
	snprintf(cfg.stream_prefix, sizeof(cfg.stream_prefix), "bench.");
	const char *url = NULL;

	enum {
		O_URL = 256, O_SCEN, O_CONNS, O_THREADS, O_PROCS, O_RATE, O_MAXPEND, O_DUR, O_WARM,
		O_SETTLE, O_SRC, O_SECRET, O_UBASE, O_INFL, O_SIZE, O_EXCH, O_PAD, O_BIN, O_STREAMS, O_JOINS, O_PUBS,
		O_PUBRATE, O_PREFIX, O_CTO, O_CLTO, O_MAXFAIL, O_PID, O_JSON, O_HIST, O_QUIET,
		O_RESUME, O_HELP, O_CA, O_TLS12,
	};
	static const struct option opts[] = {
		{"url", 1, 0, O_URL}, {"scenario", 1, 0, O_SCEN}, {"conns", 1, 0, O_CONNS},
		{"threads", 1, 0, O_THREADS}, {"procs", 1, 0, O_PROCS}, {"rate", 1, 0, O_RATE},
		{"max-pending", 1, 0, O_MAXPEND}, {"duration", 1, 0, O_DUR}, {"warmup", 1, 0, O_WARM},
		{"settle", 1, 0, O_SETTLE}, {"src", 1, 0, O_SRC}, {"secret", 1, 0, O_SECRET},
		{"user-base", 1, 0, O_UBASE}, {"inflight", 1, 0, O_INFL}, {"size", 1, 0, O_SIZE}, {"exchange", 1, 0, O_EXCH}, {"pad", 1, 0, O_PAD},
		{"binary", 0, 0, O_BIN}, {"streams", 1, 0, O_STREAMS}, {"joins", 1, 0, O_JOINS},
		{"publishers", 1, 0, O_PUBS}, {"pub-rate", 1, 0, O_PUBRATE},
		{"stream-prefix", 1, 0, O_PREFIX}, {"connect-timeout", 1, 0, O_CTO},
		{"close-timeout", 1, 0, O_CLTO}, {"max-failures", 1, 0, O_MAXFAIL},
		{"server-pid", 1, 0, O_PID}, {"json", 1, 0, O_JSON}, {"hist", 1, 0, O_HIST},
		{"quiet", 0, 0, O_QUIET}, {"resume", 2, 0, O_RESUME},
		{"ca", 1, 0, O_CA}, {"tls12", 0, 0, O_TLS12}, {"help", 0, 0, O_HELP},
		{0, 0, 0, 0},
	};
	int opt;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case O_URL: url = optarg; break;
		case O_SCEN:
			if (!strcmp(optarg, "idle")) cfg.scenario = SC_IDLE;
			else if (!strcmp(optarg, "echo")) cfg.scenario = SC_ECHO;
			else if (!strcmp(optarg, "fanout")) cfg.scenario = SC_FANOUT;
			else if (!strcmp(optarg, "dm")) cfg.scenario = SC_DM;
			else if (!strcmp(optarg, "storm")) cfg.scenario = SC_STORM;
			else {
				fprintf(stderr, "msock-bench: unknown scenario %s\n", optarg);
				return 2;
			}
			break;
		case O_CONNS: cfg.conns = strtoull(optarg, NULL, 10); break;
		case O_THREADS: cfg.threads = (unsigned)atoi(optarg); break;
		case O_PROCS: cfg.procs = (unsigned)atoi(optarg); break;
		case O_RATE: cfg.rate = atof(optarg); break;
		case O_MAXPEND: cfg.max_pending = (unsigned)atoi(optarg); break;
		case O_DUR: cfg.duration = atof(optarg); break;
		case O_WARM: cfg.warmup = atof(optarg); break;
		case O_SETTLE: cfg.settle = atof(optarg); break;
		case O_SRC:
			if (parse_src(&cfg, optarg) < 0) {
				fprintf(stderr, "msock-bench: bad --src %s (A or A-B, at most %d addresses)\n",
					optarg, MS_BENCH_MAX_SRC);
				return 2;
			}
			break;
		case O_SECRET: snprintf(cfg.secret, sizeof(cfg.secret), "%s", optarg); break;
		case O_UBASE: cfg.user_base = strtoull(optarg, NULL, 10); break;
		case O_INFL: cfg.inflight = (unsigned)atoi(optarg); break;
		case O_SIZE: cfg.size = (unsigned)atoi(optarg); break;
		case O_EXCH: cfg.exchange = (unsigned)atoi(optarg); break;
		case O_PAD: cfg.pad = (unsigned)atoi(optarg); break;
		case O_BIN: cfg.binary = true; break;
		case O_STREAMS: cfg.streams = (unsigned)atoi(optarg); break;
		case O_JOINS: cfg.joins = (unsigned)atoi(optarg); break;
		case O_PUBS: cfg.publishers = (unsigned)atoi(optarg); break;
		case O_PUBRATE: cfg.pub_rate = atof(optarg); break;
		case O_PREFIX: snprintf(cfg.stream_prefix, sizeof(cfg.stream_prefix), "%s", optarg); break;
		case O_CTO: cfg.connect_timeout = atof(optarg); break;
		case O_CLTO: cfg.close_timeout = atof(optarg); break;
		case O_MAXFAIL: cfg.max_failures = strtoull(optarg, NULL, 10); break;
		case O_PID: cfg.server_pid = atoi(optarg); break;
		case O_JSON: cfg.json_path = optarg; break;
		case O_HIST: cfg.hist_path = optarg; break;
		case O_QUIET: cfg.quiet = true; break;
		case O_RESUME:
			if (!optarg || !strcmp(optarg, "slot")) cfg.resume = RESUME_SLOT;
			else if (!strcmp(optarg, "thread")) cfg.resume = RESUME_THREAD;
			else {
				fprintf(stderr, "msock-bench: --resume=slot or --resume=thread\n");
				return 2;
			}
			break;
		case O_CA:
			if (snprintf(cfg.ca_file, sizeof(cfg.ca_file), "%s", optarg) >= (int)sizeof(cfg.ca_file)) {
				fprintf(stderr, "msock-bench: --ca path too long\n");
				return 2;
			}
			break;
		case O_TLS12: cfg.tls12 = true; break;
		case O_HELP: case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!url || parse_url(&cfg, url) < 0) {
		fprintf(stderr, "msock-bench: need --url ws://IPv4:PORT/PATH or wss://...\n");
		usage(stderr);
		return 2;
	}
	if (!cfg.tls && (cfg.resume || cfg.ca_file[0] || cfg.tls12)) {
		fprintf(stderr, "msock-bench: --resume, --ca and --tls12 need a wss:// URL\n");
		return 2;
	}
	if (cfg.tls) {
		/* Fail early on a bad --ca (every worker builds its own context). */
		char err[160];
		SSL_CTX *ctx = ms_bench_tls_ctx(&cfg, NULL, NULL, err, sizeof(err));
		if (!ctx) {
			fprintf(stderr, "msock-bench: TLS setup%s%s: %s\n", cfg.ca_file[0] ? " with --ca " : "",
				cfg.ca_file, err);
			return 2;
		}
		SSL_CTX_free(ctx);
	}
	if (cfg.threads < 1 || cfg.procs < 1 || cfg.conns < 1 || cfg.inflight < 1 ||
	    cfg.max_pending < 1 || cfg.duration < 0 || cfg.warmup < 0 || cfg.connect_timeout <= 0 ||
	    (cfg.scenario == SC_FANOUT && (cfg.streams < 1 || cfg.joins > cfg.streams)) ||
	    cfg.inflight > 65535) {
		fprintf(stderr, "msock-bench: bad option values\n");
		return 2;
	}
	if (cfg.settle < 0)
		cfg.settle = (cfg.scenario == SC_IDLE && cfg.server_pid) ? 2 : 0;

	/* A ring's direct-descriptor table is bounded by RLIMIT_NOFILE: raise
	 * the soft limit, then use enough threads to stay under it. */
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	uint64_t per_ring_max = rl.rlim_cur > 1000 ? rl.rlim_cur - 256 : rl.rlim_cur;
	while ((cfg.conns + cfg.procs * cfg.threads - 1) / (cfg.procs * cfg.threads) > per_ring_max &&
	       cfg.threads < MS_BENCH_MAX_THREADS)
		cfg.threads++;
	if (cfg.procs * cfg.threads > MS_BENCH_MAX_THREADS) {
		fprintf(stderr, "msock-bench: at most %d threads in all\n", MS_BENCH_MAX_THREADS);
		return 2;
	}
	if (cfg.nsrc == 0 && cfg.conns > 28000)
		fprintf(stderr, "msock-bench: note: %llu connections from one source address may "
				"exhaust ephemeral ports; consider --src 127.0.0.2-127.0.0.30\n",
			(unsigned long long)cfg.conns);

	unsigned W = cfg.procs * cfg.threads;
	size_t shsz = sizeof(ms_bench_shared) + W * sizeof(ms_bench_tstats);
	ms_bench_shared *sh = mmap(NULL, shsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("mmap");
		return 1;
	}

	struct sigaction sa = {.sa_handler = on_sigint};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	mem_sample m_before = sample_mem(cfg.server_pid);
	uint64_t t_start = ms_bench_now();
	atomic_store(&sh->start_ns, t_start);
	fflush(NULL);

	pid_t *kids = calloc(cfg.procs, sizeof(pid_t));
	for (unsigned p = 0; p < cfg.procs; p++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			atomic_store(&sh->phase, PH_ABORT);
			break;
		}
		if (pid == 0) {
			signal(SIGINT, SIG_IGN);
			signal(SIGTERM, SIG_IGN);
			ms_bench_proc_run(&cfg, sh, p);
			_exit(0);
		}
		kids[p] = pid;
	}

	/* ---- coordinate ---- */
	mem_sample m_open = {-1, -1, -1}, m_settled = {-1, -1, -1}, m_end = {-1, -1, -1};
	uint64_t t_open = 0, t_run = 0, t_meas = 0, t_meas_end = 0, t_stop = 0;
	double srv_cpu0 = -1, srv_cpu1 = -1, cli_cpu0 = 0, cli_cpu1 = 0;
	bool cpu0_done = false, interrupted_connect = false;
	uint64_t peak_open = 0, last_progress = t_start;
	double ramp = cfg.rate > 0 ? (double)cfg.conns / cfg.rate : 0;
	uint64_t connect_deadline = t_start + (uint64_t)((ramp + 3 * cfg.connect_timeout + 30) * 1e9);
	unsigned alive = cfg.procs;

	while (alive) {
		sleep_s(0.01);
		int status;
		pid_t r;
		while ((r = waitpid(-1, &status, WNOHANG)) > 0)
			for (unsigned p = 0; p < cfg.procs; p++)
				if (kids[p] == r) {
					kids[p] = 0;
					alive--;
				}
		uint64_t now = ms_bench_now();
		uint64_t settled = 0, opened = 0, failed = 0, open_now = 0;
		for (unsigned w = 0; w < W; w++) {
			settled += atomic_load_explicit(&sh->t[w].settled, memory_order_relaxed);
			opened += atomic_load_explicit(&sh->t[w].opened, memory_order_relaxed);
			failed += atomic_load_explicit(&sh->t[w].failed, memory_order_relaxed);
			open_now += atomic_load_explicit(&sh->t[w].open_now, memory_order_relaxed);
		}
		if (open_now > peak_open)
			peak_open = open_now;
		int phase = atomic_load(&sh->phase);
		if (!cfg.quiet && now - last_progress >= 1000000000ull && phase != PH_ABORT) {
			last_progress = now;
			fprintf(stderr, "[%6.1fs] %s opened %llu failed %llu open %llu / %llu\n",
				(double)(now - t_start) / 1e9,
				phase == PH_CONNECT ? "connect" : phase == PH_RUN ? "run" : "stop",
				(unsigned long long)opened, (unsigned long long)failed,
				(unsigned long long)open_now, (unsigned long long)cfg.conns);
		}
		if (phase == PH_CONNECT && (settled >= (cfg.scenario == SC_STORM ? 0 : cfg.conns) || g_interrupted || now > connect_deadline)) {
			if (cfg.scenario != SC_STORM && settled < cfg.conns)
				interrupted_connect = true;
			t_open = now;
			m_open = sample_mem(cfg.server_pid);
			if (cfg.settle > 0 && !g_interrupted) {
				for (double s = 0; s < cfg.settle && !g_interrupted; s += 0.05)
					sleep_s(0.05);
				m_settled = sample_mem(cfg.server_pid);
			} else {
				m_settled = m_open;
			}
			t_run = ms_bench_now();
			t_meas = t_run + (uint64_t)(cfg.warmup * 1e9);
			t_meas_end = t_meas + (uint64_t)(cfg.duration * 1e9);
			if (opened == 0 && cfg.scenario != SC_STORM)
				t_meas = t_meas_end = t_run; /* nothing to run on */
			atomic_store(&sh->run_start_ns, t_run);
			atomic_store(&sh->measure_start_ns, t_meas);
			atomic_store(&sh->measure_end_ns, t_meas_end);
			atomic_store_explicit(&sh->phase, PH_RUN, memory_order_release);
			continue;
		}
		if (phase == PH_RUN && !cpu0_done && now >= t_meas) {
			cpu0_done = true;
			srv_cpu0 = cfg.server_pid ? proc_cpu_s(cfg.server_pid) : -1;
			for (unsigned p = 0; p < cfg.procs; p++)
				if (kids[p])
					cli_cpu0 += proc_cpu_s(kids[p]);
		}
		if (phase == PH_RUN && (now >= t_meas_end || g_interrupted)) {
			t_stop = now;
			if (cpu0_done) {
				srv_cpu1 = cfg.server_pid ? proc_cpu_s(cfg.server_pid) : -1;
				for (unsigned p = 0; p < cfg.procs; p++)
					if (kids[p])
						cli_cpu1 += proc_cpu_s(kids[p]);
			}
			if (now < t_meas_end)
				t_meas_end = now;
			m_end = sample_mem(cfg.server_pid);
			atomic_store_explicit(&sh->phase, PH_STOP, memory_order_release);
			continue;
		}
		if (phase == PH_STOP && now - t_stop > (uint64_t)((cfg.close_timeout + 5) * 1e9)) {
			atomic_store(&sh->phase, PH_ABORT);
			for (unsigned p = 0; p < cfg.procs; p++)
				if (kids[p])
					kill(kids[p], SIGKILL);
		}
	}
	uint64_t t_end = ms_bench_now();
	free(kids);

	/* ---- report ---- */
	totals T;
	memset(&T, 0, sizeof(T));
	sum_stats(&cfg, sh, &T);
	T.peak_open = peak_open;
	double window = t_meas_end > t_meas ? (double)(t_meas_end - t_meas) / 1e9 : 0;
	double rate = window > 0 ? (double)T.meas_msgs / window : 0;
	double srv_cpu = (srv_cpu0 >= 0 && srv_cpu1 >= 0) ? srv_cpu1 - srv_cpu0 : -1;
	double cli_cpu = cli_cpu1 - cli_cpu0;
	double cli_pct = window > 0 ? 100.0 * cli_cpu / window : 0;
	double rss_pc = per_conn_bytes(m_before.rss_kb, m_settled.rss_kb, T.opened);
	double rss_pc_open = per_conn_bytes(m_before.rss_kb, m_open.rss_kb, T.opened);
	double slab_pc = per_conn_bytes(m_before.slab_kb, m_settled.slab_kb, T.opened);
	double sunr_pc = per_conn_bytes(m_before.sunreclaim_kb, m_settled.sunreclaim_kb, T.opened);

	uint64_t tls_hs = T.win_tls_full + T.win_tls_resumed;
	double resumed_pct = tls_hs ? 100.0 * (double)T.win_tls_resumed / (double)tls_hs : 0.0;
	uint64_t errors = T.protocol_errors + T.closed_by_peer + T.pub_errors + T.join_errors +
			  T.seq_gaps + T.seq_dups + T.seq_reorders;
	bool fail = false;
	const char *why = "";
	if (T.failed > cfg.max_failures) {
		fail = true;
		why = "connection failures over --max-failures";
	} else if (errors) {
		fail = true;
		why = T.seq_gaps + T.seq_dups + T.seq_reorders ? "stream seq violations" : "protocol errors or unexpected closes";
	} else if (interrupted_connect && !g_interrupted) {
		fail = true;
		why = "connect phase did not finish";
	} else if (cfg.scenario != SC_IDLE && cfg.scenario != SC_DM && window > 0 && T.meas_msgs == 0) {
		fail = true;
		why = "no messages in the measured window";
	}

	FILE *o = stdout;
	fprintf(o, "msock-bench %s %s: conns=%llu threads=%u procs=%u%s\n", scenario_name(cfg.scenario), url,
		(unsigned long long)cfg.conns, cfg.threads, cfg.procs, g_interrupted ? " (interrupted)" : "");
	fprintf(o, "connections: opened %llu, failed %llu (connect %llu, timeout %llu, tls %llu, http %llu, "
		   "other %llu), peak open %llu, open phase %.2fs\n",
		(unsigned long long)T.opened, (unsigned long long)T.failed, (unsigned long long)T.fail_connect,
		(unsigned long long)T.fail_timeout, (unsigned long long)T.fail_tls, (unsigned long long)T.fail_http,
		(unsigned long long)T.fail_other, (unsigned long long)T.peak_open,
		t_open ? (double)(t_open - t_start) / 1e9 : 0.0);
	print_hist_line(o, "tcp connect", T.tcp);
	print_hist_line(o, "ws handshake", T.conn);
	if (cfg.tls) {
		fprintf(o, "tls: %s%s, handshakes %llu full + %llu resumed (sessions offered %llu, tickets "
			   "received %llu); %s: %llu full, %llu resumed = %.1f%% resumed\n",
			ms_bench_tls_version_name(&cfg), cfg.ca_file[0] ? " verified" : " unverified",
			(unsigned long long)T.tls_full, (unsigned long long)T.tls_resumed,
			(unsigned long long)T.tls_offered, (unsigned long long)T.tls_tickets,
			cfg.scenario == SC_STORM ? "in window" : "all", (unsigned long long)T.win_tls_full,
			(unsigned long long)T.win_tls_resumed, resumed_pct);
		print_hist_line(o, "tls full", T.tls_full_h);
		print_hist_line(o, "tls resumed", T.tls_res_h);
	}
	if (cfg.scenario != SC_IDLE) {
		fprintf(o, "window: %.2fs after %.2fs warmup; messages sent %llu, received %llu, in window %llu\n",
			window, cfg.warmup, (unsigned long long)T.sent, (unsigned long long)T.recv,
			(unsigned long long)T.meas_msgs);
		if (cfg.scenario == SC_STORM)
			fprintf(o, "throughput: %.0f handshakes/s\n", rate);
		else
			fprintf(o, "throughput: %.0f msg/s, %.2f MB/s payload\n", rate,
				window > 0 ? (double)T.meas_bytes / window / 1e6 : 0.0);
		print_hist_line(o, cfg.scenario == SC_ECHO ? "round trip" :
				   cfg.scenario == SC_STORM ? "handshake (win)" : "end to end", T.lat);
	} else {
		fprintf(o, "held: %.2fs\n", window);
	}
	if (cfg.scenario == SC_FANOUT || cfg.scenario == SC_DM)
		fprintf(o, "chat: published %llu, acked %llu, refused %llu, join errors %llu; seq gaps %llu "
			   "(missing %llu), duplicates %llu, reorders %llu\n",
			(unsigned long long)T.pub_sent, (unsigned long long)T.pub_acked,
			(unsigned long long)T.pub_errors, (unsigned long long)T.join_errors,
			(unsigned long long)T.seq_gaps, (unsigned long long)T.seq_missing,
			(unsigned long long)T.seq_dups, (unsigned long long)T.seq_reorders);
	if (cfg.server_pid)
		fprintf(o, "server rss: before %lld kB, all open %lld kB, settled %lld kB, end %lld kB; "
			   "%.0f B/conn (%.0f B/conn at open)\n",
			m_before.rss_kb, m_open.rss_kb, m_settled.rss_kb, m_end.rss_kb, rss_pc, rss_pc_open);
	if (cfg.scenario == SC_IDLE)
		fprintf(o, "kernel slab: before %lld kB, settled %lld kB: %.0f B/conn (unreclaimable %.0f B/conn)\n",
		m_before.slab_kb, m_settled.slab_kb, slab_pc, sunr_pc);
	if (srv_cpu >= 0)
		fprintf(o, "server cpu: %.2fs in window (%.0f%%)%s", srv_cpu,
			window > 0 ? 100.0 * srv_cpu / window : 0.0, T.meas_msgs ? "" : "\n");
	if (srv_cpu >= 0 && T.meas_msgs && cfg.scenario == SC_STORM)
		fprintf(o, ", %.3f cpu-s per 1000 handshakes\n", srv_cpu * 1e3 / (double)T.meas_msgs);
	else if (srv_cpu >= 0 && T.meas_msgs)
		fprintf(o, ", %.2f cpu-s per million messages\n", srv_cpu * 1e6 / (double)T.meas_msgs);
	fprintf(o, "client cpu: %.2fs in window (%.0f%% of one core%s)\n", cli_cpu, cli_pct,
		cli_pct >= 95.0 ? "; >= 95%: client-bound, figure invalid" : "");
	fprintf(o, "closes: %llu clean, %llu by server; errors %llu%s%s\n", (unsigned long long)T.closes_clean,
		(unsigned long long)T.closed_by_peer, (unsigned long long)errors,
		T.first_error[0] ? "; first: " : "", T.first_error);
	fprintf(o, "RESULT scenario=%s conns=%llu opened=%llu failed=%llu msgs=%llu rate=%.0f "
		   "p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f "
		   "connect_p50_us=%.1f connect_p99_us=%.1f",
		scenario_name(cfg.scenario), (unsigned long long)cfg.conns, (unsigned long long)T.opened,
		(unsigned long long)T.failed, (unsigned long long)T.meas_msgs, rate,
		us(ms_hist_percentile(T.lat, 50)), us(ms_hist_percentile(T.lat, 90)),
		us(ms_hist_percentile(T.lat, 99)), us(ms_hist_percentile(T.lat, 99.9)), us(T.lat->max),
		us(ms_hist_percentile(T.conn, 50)), us(ms_hist_percentile(T.conn, 99)));
	if (cfg.server_pid)
		fprintf(o, " rss_per_conn=%.0f", rss_pc);
	if (cfg.scenario == SC_IDLE)
		fprintf(o, " slab_per_conn=%.0f sunreclaim_per_conn=%.0f", slab_pc, sunr_pc);
	if (srv_cpu >= 0)
		fprintf(o, " server_cpu_s=%.3f", srv_cpu);
	fprintf(o, " client_cpu_pct=%.0f", cli_pct);
	if (cfg.tls)
		fprintf(o, " tls=%s tls_full=%llu tls_resumed=%llu resumed_pct=%.1f fail_tls=%llu "
			   "tls_full_p50_us=%.1f tls_full_p99_us=%.1f tls_res_p50_us=%.1f tls_res_p99_us=%.1f",
			cfg.tls12 ? "1.2" : "1.3", (unsigned long long)T.win_tls_full,
			(unsigned long long)T.win_tls_resumed, resumed_pct, (unsigned long long)T.fail_tls,
			us(ms_hist_percentile(T.tls_full_h, 50)), us(ms_hist_percentile(T.tls_full_h, 99)),
			us(ms_hist_percentile(T.tls_res_h, 50)), us(ms_hist_percentile(T.tls_res_h, 99)));
	if (cfg.scenario == SC_FANOUT)
		fprintf(o, " seq_gaps=%llu seq_dups=%llu seq_reorders=%llu", (unsigned long long)T.seq_gaps,
			(unsigned long long)T.seq_dups, (unsigned long long)T.seq_reorders);
	fprintf(o, " errors=%llu status=%s\n", (unsigned long long)errors, fail ? "FAIL" : "ok");
	if (fail)
		fprintf(o, "FAILED: %s\n", why);

	if (cfg.hist_path) {
		FILE *h = fopen(cfg.hist_path, "w");
		if (h) {
			ms_hist_print_hdr(cfg.scenario == SC_IDLE ? T.conn : T.lat, h, 1000.0);
			fclose(h);
		} else {
			fprintf(stderr, "msock-bench: %s: %s\n", cfg.hist_path, strerror(errno));
		}
	}
	if (cfg.json_path) {
		FILE *j = fopen(cfg.json_path, "w");
		if (j) {
			fprintf(j, "{\n  \"scenario\": \"%s\", \"url\": \"%s\", \"conns\": %llu, \"threads\": %u, "
				   "\"procs\": %u, \"rate\": %.1f, \"inflight\": %u, \"size\": %u,\n",
				scenario_name(cfg.scenario), url, (unsigned long long)cfg.conns, cfg.threads,
				cfg.procs, cfg.rate, cfg.inflight, cfg.size);
			fprintf(j, "  \"streams\": %u, \"joins\": %u, \"publishers\": %u, \"pub_rate\": %.1f, "
				   "\"duration_s\": %.3f, \"warmup_s\": %.3f, \"settle_s\": %.3f, \"nsrc\": %u,\n",
				cfg.streams, cfg.joins, cfg.publishers, cfg.pub_rate, cfg.duration, cfg.warmup,
				cfg.settle, cfg.nsrc);
			fprintf(j, "  \"status\": \"%s\", \"failure\": \"%s\", \"interrupted\": %s,\n",
				fail ? "FAIL" : "ok", why, g_interrupted ? "true" : "false");
			fprintf(j, "  \"opened\": %llu, \"failed\": %llu, \"fail_connect\": %llu, \"fail_timeout\": %llu, "
				   "\"fail_http\": %llu, \"fail_other\": %llu, \"peak_open\": %llu, \"open_phase_s\": %.3f,\n",
				(unsigned long long)T.opened, (unsigned long long)T.failed,
				(unsigned long long)T.fail_connect, (unsigned long long)T.fail_timeout,
				(unsigned long long)T.fail_http, (unsigned long long)T.fail_other,
				(unsigned long long)T.peak_open, t_open ? (double)(t_open - t_start) / 1e9 : 0.0);
			fprintf(j, "  \"window_s\": %.3f, \"total_s\": %.3f, \"sent\": %llu, \"received\": %llu, "
				   "\"msgs\": %llu, \"msg_rate\": %.1f, \"bytes_rate\": %.1f,\n",
				window, (double)(t_end - t_start) / 1e9, (unsigned long long)T.sent,
				(unsigned long long)T.recv, (unsigned long long)T.meas_msgs, rate,
				window > 0 ? (double)T.meas_bytes / window : 0.0);
			fprintf(j, "  \"pub_sent\": %llu, \"pub_acked\": %llu, \"pub_errors\": %llu, \"join_errors\": %llu, "
				   "\"seq_gaps\": %llu, \"seq_missing\": %llu, \"seq_dups\": %llu, \"seq_reorders\": %llu,\n",
				(unsigned long long)T.pub_sent, (unsigned long long)T.pub_acked,
				(unsigned long long)T.pub_errors, (unsigned long long)T.join_errors,
				(unsigned long long)T.seq_gaps, (unsigned long long)T.seq_missing,
				(unsigned long long)T.seq_dups, (unsigned long long)T.seq_reorders);
			fprintf(j, "  \"protocol_errors\": %llu, \"closed_by_server\": %llu, \"closes_clean\": %llu, "
				   "\"errors\": %llu,\n",
				(unsigned long long)T.protocol_errors, (unsigned long long)T.closed_by_peer,
				(unsigned long long)T.closes_clean, (unsigned long long)errors);
			fprintf(j, "  \"server_pid\": %d, \"server_rss_kb\": {\"before\": %lld, \"open\": %lld, "
				   "\"settled\": %lld, \"end\": %lld}, \"rss_per_conn\": %.1f, \"rss_per_conn_open\": %.1f,\n",
				cfg.server_pid, m_before.rss_kb, m_open.rss_kb, m_settled.rss_kb, m_end.rss_kb, rss_pc,
				rss_pc_open);
			fprintf(j, "  \"slab_kb\": {\"before\": %lld, \"open\": %lld, \"settled\": %lld, \"end\": %lld}, "
				   "\"sunreclaim_kb\": {\"before\": %lld, \"open\": %lld, \"settled\": %lld, \"end\": %lld}, "
				   "\"slab_per_conn\": %.1f, \"sunreclaim_per_conn\": %.1f,\n",
				m_before.slab_kb, m_open.slab_kb, m_settled.slab_kb, m_end.slab_kb,
				m_before.sunreclaim_kb, m_open.sunreclaim_kb, m_settled.sunreclaim_kb,
				m_end.sunreclaim_kb, slab_pc, sunr_pc);
			fprintf(j, "  \"server_cpu_s\": %.3f, \"server_cpu_s_per_million\": %.3f, \"client_cpu_s\": %.3f, "
				   "\"client_cpu_pct\": %.1f,\n",
				srv_cpu, (srv_cpu >= 0 && T.meas_msgs) ? srv_cpu * 1e6 / (double)T.meas_msgs : -1.0,
				cli_cpu, cli_pct);
			fprintf(j, "  \"tls\": %s, \"tls_version\": \"%s\", \"tls_verify\": %s, \"resume\": \"%s\", "
				   "\"fail_tls\": %llu, \"tls_full\": %llu, \"tls_resumed\": %llu, \"tls_offered\": %llu, "
				   "\"tls_tickets\": %llu, \"win_tls_full\": %llu, \"win_tls_resumed\": %llu, "
				   "\"resumed_pct\": %.2f,\n",
				cfg.tls ? "true" : "false", cfg.tls ? ms_bench_tls_version_name(&cfg) : "",
				cfg.ca_file[0] ? "true" : "false",
				cfg.resume == RESUME_SLOT ? "slot" : cfg.resume == RESUME_THREAD ? "thread" : "off",
				(unsigned long long)T.fail_tls, (unsigned long long)T.tls_full,
				(unsigned long long)T.tls_resumed, (unsigned long long)T.tls_offered,
				(unsigned long long)T.tls_tickets, (unsigned long long)T.win_tls_full,
				(unsigned long long)T.win_tls_resumed, resumed_pct);
			if (cfg.scenario == SC_STORM)
				fprintf(j, "  \"server_cpu_s_per_1000_handshakes\": %.4f,\n",
					(srv_cpu >= 0 && T.meas_msgs) ? srv_cpu * 1e3 / (double)T.meas_msgs : -1.0);
			fprintf(j, "  \"first_error\": \"");
			for (const char *c = T.first_error; *c; c++)
				fputc(*c == '"' || *c == '\\' ? '\'' : (unsigned char)*c < 0x20 ? ' ' : *c, j);
			fprintf(j, "\",\n");
			json_hist(j, "tcp_connect", T.tcp, false);
			json_hist(j, "handshake", T.conn, false);
			json_hist(j, "latency", T.lat, false);
			json_hist(j, "tls_full_latency", T.tls_full_h, false);
			json_hist(j, "tls_resumed_latency", T.tls_res_h, true);
			fprintf(j, "}\n");
			fclose(j);
		} else {
			fprintf(stderr, "msock-bench: %s: %s\n", cfg.json_path, strerror(errno));
		}
	}
	free(T.tcp);
	free(T.conn);
	free(T.lat);
	free(T.tls_full_h);
	free(T.tls_res_h);
	return fail ? 1 : 0;
}
