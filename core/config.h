/*
 * Server configuration: every command-line flag, its default, range and
 * help text come from one table in config.c, so --help, validation and the
 * parsed struct cannot drift apart.
 *
 * Parsed once by main before any worker starts; read-only afterwards, so any
 * thread may read it without locks.
 */
#ifndef MS_CORE_CONFIG_H
#define MS_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#define MS_MAX_WORKERS 64

enum ms_taskrun { MS_TASKRUN_DEFER = 0, MS_TASKRUN_COOP = 1 };
enum ms_diag_root { MS_DIAG_ROOT_NONE = 0, MS_DIAG_ROOT_ECHO, MS_DIAG_ROOT_ROOM };

typedef struct ms_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[64]; /* as given, for logs */
} ms_addr;

typedef struct ms_config {
	/* workers */
	uint32_t cores;          /* 0 = one per CPU of the chosen node / allowed set */
	char cpus[256];          /* "0-3,6" or "" = every allowed CPU */
	int32_t numa_node;       /* -1: spread over every node; else pin + bind here */
	uint32_t max_conns;      /* per process, split over workers */
	uint32_t taskrun;        /* enum ms_taskrun */
	uint32_t min_wait_us;    /* IORING_FEAT_MIN_TIMEOUT bound on batching waits */
	uint32_t wait_batch;     /* max wait_nr */
	uint32_t recv_bufs;      /* provided buffers per worker (power of 2) */
	uint32_t recv_buf_size;  /* bytes per provided buffer */
	/* sockets */
	ms_addr listen;
	ms_addr tls_listen;      /* len 0: no TLS listener ("off") */
	char cert[256], key[256];
	char ticket_key_file[256];
	uint32_t ticket_rotate;
	uint32_t sndbuf;         /* SO_SNDBUF for accepted sockets */
	uint32_t backlog;
	/* protocol limits and timers (seconds unless noted) */
	uint32_t max_message;
	uint32_t max_backpressure;
	uint32_t handshake_timeout;
	uint32_t idle_timeout;
	uint32_t drain_timeout;
	uint32_t max_streams_per_conn;
	uint32_t presence_max_members;
	uint32_t presence_page;
	/* admission and rate limits (net/limits.h) */
	uint32_t max_conns_per_ip;   /* 0 = off */
	uint32_t max_conns_per_user; /* 0 = off */
	bool proxy_protocol;         /* a PROXY v1/v2 header opens each connection */
	char allowed_origins[1024];  /* comma-separated exact origins; "" = any */
	char rate_limit[32];         /* "MSGS,BURST" or "off" (parsed below) */
	uint32_t rate_msgs, rate_burst; /* from rate_limit; 0 = off */
	uint32_t max_pending_total;  /* MiB of queued output and input per process; 0 = RAM / 4 */
	/* what one connection may cost (each parsed from "RATE,BURST" text) */
	char rate_bytes[32];         /* publish+dm payload bytes */
	uint32_t rate_bytes_s, rate_bytes_burst; /* 0 = off */
	char join_rate[32];          /* join+leave+presence requests */
	uint32_t join_rate_s, join_burst;
	char create_rate[32];        /* streams created by one connection's requests */
	uint32_t create_rate_s, create_burst;
	uint32_t max_streams;        /* per process, split over the stream owners */
	uint32_t max_inflight;       /* requests awaiting another worker's answer */
	uint32_t slow_window;        /* seconds over --max-backpressure without draining */
	/* modes */
	bool dev;
	bool diag;
	uint32_t diag_root;      /* enum ms_diag_root */
	char secret_file[2][256];
	char secret[256];
	uint32_t log_level;
	uint32_t mailbox_slots;  /* ring slots per ordered worker pair (power of 2) */
	uint32_t mailbox_high_water; /* messages waiting on overflow that pause input */
	/* operating: the private admin listener, the server API, histogram dumps */
	ms_addr admin_listen;    /* len 0: no admin listener ("off") */
	char api_key_file[256];
	char hist_dir[256];      /* "" = summaries in the log only */
	uint32_t hist_interval;  /* seconds between dumps, 0 = only SIGUSR1 and exit */
	/* admission */
	uint32_t max_handshakes_per_ip; /* 0 = auto (ms_handshake_limit) */
	uint32_t admin_max_conns;       /* admin listener's own budget */
} ms_config;

/* Fill *cfg with defaults, then the file of --config FILE (if given), then
 * the other flags of argv, so a command-line flag wins over the file whatever
 * the order. On a bad flag, value or file line prints one line naming the
 * flag (or FILE:LINE and key) and the accepted range to stderr and returns
 * -EINVAL; on --help / --version / --print-config prints to stdout and
 * returns 1. Returns 0 otherwise. Sets ms_log_level. Main thread, once. */
int ms_config_parse(ms_config *cfg, int argc, char **argv);

/* What the server refuses to start with, judged from the flags alone
 * (before any secret file is read): no authentication outside --dev (no
 * --secret nor --secret-file), a --hist-dir it cannot write into, an admin
 * listener on a public listener's port (SO_REUSEPORT would let them share
 * it), and both public listeners off. Returns 0, or -EINVAL after one line
 * on stderr. Main thread, after ms_config_parse and before ms_config_check. */
int ms_config_check_flags(const ms_config *cfg);

/* Bytes that act as a credential, as main read them (a file's contents
 * without its trailing newline, or --secret's text), and where they came
 * from for messages: "--secret-file PATH", "--secret", "--api-key-file PATH". */
typedef struct ms_config_secret {
	const void *p;
	size_t n;
	const char *from;
} ms_config_secret;

#define MS_SECRET_MIN 32  /* bytes of an HS256 secret outside --dev */
#define MS_API_KEY_MIN 16 /* bytes of the server API key outside --dev */

/* What the server refuses to start with, once the secrets are read.
 * Outside --dev: a TLS listener without --cert/--key, an HS256 secret
 * (jwt[0..njwt)) under MS_SECRET_MIN bytes, an API key (api, NULL: none)
 * under MS_API_KEY_MIN. In any mode: an API key equal to an HS256 secret.
 * Returns 0, or -EINVAL after one line on stderr that never shows a
 * secret. Main thread. */
int ms_config_check(const ms_config *cfg, const ms_config_secret *jwt, int njwt,
		    const ms_config_secret *api);

/* Write *cfg as a config file that ms_config_parse reads back to the same
 * struct: every key with its help as a comment; a value equal to its
 * default is commented out. --secret is never written (only noted). */
void ms_config_print(FILE *f, const ms_config *cfg);

/* Parse "HOST:PORT" / "[V6]:PORT" into *a. Returns 0 or -EINVAL. */
int ms_addr_parse(ms_addr *a, const char *text);

/* The address a holds now (a port 0 listener learns its port once bound)
 * as "HOST:PORT" or "[V6]:PORT", numeric, into out; "off" when a is unset.
 * Returns out. */
#define MS_ADDR_TEXT 64
const char *ms_addr_format(const ms_addr *a, char out[MS_ADDR_TEXT]);

/* Parse a CPU list ("0-3,6") into a bitmask of up to 1024 CPUs; returns the
 * number of CPUs set, or -EINVAL. */
int ms_cpulist_parse(const char *text, uint64_t mask[16]);

#endif
