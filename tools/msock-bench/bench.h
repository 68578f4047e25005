/*
 * msock-bench internals shared by its files: the run configuration, the
 * statistics block every worker thread fills in memory shared across the
 * forked processes, and the entry points between the coordinator (main.c)
 * and the io_uring workers (worker.c).
 *
 *   main (coordinator)                    children (--procs P)
 *   ------------------                    ---------------------
 *   mmap shared block, fork P  --------->  T worker threads, one ring each
 *   poll opened/failed counters <-------  relaxed atomic counters per thread
 *   set phase RUN / STOP        -------->  workers poll the phase each loop
 *   waitpid, merge histograms   <-------  histograms final once a worker is done
 */
#ifndef MS_BENCH_H
#define MS_BENCH_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "hist.h"

enum ms_bench_scenario {
	SC_IDLE,
	SC_ECHO,
	SC_FANOUT,
	SC_DM,
	SC_STORM,
};

enum ms_bench_phase {
	PH_CONNECT = 0, /* opening connections */
	PH_RUN,         /* scenario traffic; measured after measure_start_ns */
	PH_STOP,        /* stop sending, close handshakes */
	PH_ABORT,       /* exit now */
};

enum ms_bench_resume {
	RESUME_OFF = 0,
	RESUME_SLOT,    /* offer the session of this slot's previous connection */
	RESUME_THREAD,  /* offer the newest session any connection of the thread got */
};

#define MS_BENCH_MAX_SRC 256
#define MS_BENCH_MAX_THREADS 256
#define MS_BENCH_ERRLEN 160

typedef struct ms_bench_cfg {
	int scenario;
	/* target */
	char host[64];
	struct sockaddr_in dst;
	char path[256];      /* path without query, e.g. "/echo" */
	char query[256];     /* extra query from the URL, may be empty */
	bool tls;
	char tls_host[64];   /* URL host without port: SNI and --ca name check */
	char ca_file[256];   /* --ca: verify the server against this CA; empty: no verification */
	bool tls12;          /* --tls12: TLS 1.2 only (default TLS 1.3 only) */
	char secret[256];    /* HS256 key; empty: dev mode ?user= */
	uint64_t user_base;  /* first user id */
	/* load */
	unsigned threads, procs;
	uint64_t conns;      /* total, all processes */
	double rate;         /* new connections per second, total; 0 = no pacing */
	unsigned max_pending;/* per thread: connects+handshakes in flight */
	double duration, warmup, settle;
	double connect_timeout, close_timeout;
	uint64_t max_failures;
	/* source addresses */
	struct in_addr src[MS_BENCH_MAX_SRC];
	unsigned nsrc;
	/* echo */
	unsigned inflight;
	unsigned size;
	unsigned pad;        /* fanout/dm: padding bytes in data */
	unsigned exchange;   /* idle: bytes each way once per connection before idling */
	bool binary;
	/* fanout / dm */
	unsigned streams, joins, publishers;
	double pub_rate;
	char stream_prefix[64];
	/* storm (and any wss:// run) */
	int resume;          /* RESUME_OFF, RESUME_SLOT, RESUME_THREAD */
	/* output */
	int server_pid;
	const char *json_path, *hist_path;
	bool quiet;
} ms_bench_cfg;

/* One worker thread's figures. Counters are written by the worker only
 * (relaxed atomics so the coordinator can watch progress); histograms are
 * read after the worker has finished. */
typedef struct ms_bench_tstats {
	_Atomic uint64_t opened, failed, settled, open_now;
	_Atomic uint64_t done;
	uint64_t fail_connect, fail_timeout, fail_http, fail_tls, fail_other;
	uint64_t closed_by_peer, protocol_errors;
	uint64_t sent_msgs, recv_msgs;  /* whole run */
	uint64_t meas_msgs;             /* received inside the measured window */
	uint64_t meas_bytes;
	uint64_t pub_sent, pub_acked, pub_errors;
	uint64_t seq_gaps, seq_missing, seq_dups, seq_reorders;
	uint64_t join_errors;
	uint64_t closes_clean;
	uint64_t handshakes;            /* storm: completed handshakes in window */
	/* TLS: handshakes completed (whole run, and inside the window), how many
	 * offered a session, how many the server resumed, session tickets got */
	uint64_t tls_full, tls_resumed, tls_offered, tls_tickets;
	uint64_t win_tls_full, win_tls_resumed;
	char first_error[MS_BENCH_ERRLEN];
	ms_hist h_tcp;                  /* SOCKET submit -> connect done */
	ms_hist h_conn;                 /* SOCKET submit -> 101 validated */
	ms_hist h_lat;                  /* echo RTT / fan-out end-to-end / dm */
	ms_hist h_tls_full, h_tls_res;  /* connect done -> TLS handshake done, by
	                                 * kind (storm: inside the window only) */
} ms_bench_tstats;

typedef struct ms_bench_shared {
	_Atomic int phase;
	_Atomic uint64_t start_ns;          /* run start (connect phase) */
	_Atomic uint64_t run_start_ns;      /* PH_RUN began */
	_Atomic uint64_t measure_start_ns;  /* after warmup */
	_Atomic uint64_t measure_end_ns;
	ms_bench_tstats t[];                /* procs * threads */
} ms_bench_shared;

/* Monotonic clock in ns (CLOCK_MONOTONIC: one clock for every process on
 * the machine, so publish timestamps compare across --procs). */
uint64_t ms_bench_now(void);

/* Run the worker threads of process `proc` (0-based) until the coordinator
 * stops them. Returns 0; failures are counted in the shared block. */
int ms_bench_proc_run(const ms_bench_cfg *cfg, ms_bench_shared *sh, unsigned proc);

/* Mint an HS256 JWT {"sub":"<sub>","exp":<exp>} with key `secret` into out
 * (cap bytes). Returns its length, or -1 if it does not fit. */
int ms_bench_jwt(const char *secret, uint64_t sub, uint64_t exp, char *out, size_t cap);

/* Base64url without padding of n bytes into out (>= 4*n/3+4). Returns length. */
size_t ms_bench_b64url(const uint8_t *in, size_t n, char *out);

/* Minimal JSON lookups over one object in text (not validating): find the
 * value of top-level key `key`. Returns 0 and sets *v and *vn to the raw value
 * (strings without their quotes), -1 if absent. */
int ms_bench_json_get(const char *s, size_t n, const char *key, const char **v, size_t *vn);
/* Same, parsed as an unsigned integer. */
int ms_bench_json_u64(const char *s, size_t n, const char *key, uint64_t *out);

#endif
