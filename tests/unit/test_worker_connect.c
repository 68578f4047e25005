/*
 * Outbound connections on a real worker (ms_worker_connect): a worker with
 * one outbound test context and no hub, against TCP peers this test makes
 * on 127.0.0.1.
 *
 * The worker runs a script from its own callbacks (it has no mailbox to be
 * told anything): connect to an echo peer, send 200 kB and read their echo,
 * echo back the 150 kB the peer sends of its own, and see the peer close
 * (on_eof); connect twice to a port nobody listens on (-ECONNREFUSED) while
 * a third connect finds the context's reserve in use (-EAGAIN), and close
 * one connection while its socket is being made; then connect twice to a
 * listener whose accept queue is full, so its SYNs go unanswered: one with
 * a 1 s connect timeout (-ETIMEDOUT), the other closed by the test while
 * its connect is pending. The main thread waits for the script, stops the
 * worker and checks what every callback and counter saw. A second test
 * stops a worker holding an open and a connecting outbound connection:
 * the drain closes both and the worker exits. Run under the Asan build, a
 * leaked slot, queue node or buffer fails it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/worker.h"

#define A_LEN 200000 /* the worker's bytes, echoed by the peer */
#define B_LEN 150000 /* the peer's bytes, echoed by the worker */

static uint8_t a_byte(size_t i) { return (uint8_t)(i * 7 + 3); }
static uint8_t b_byte(size_t i) { return (uint8_t)(i * 13 + 5); }

/* Per-connection state in the slot: which step of the script it is. */
typedef struct tconn {
	int role;
	size_t got;
} tconn;

enum { R_ECHO = 1, R_REFUSED, R_CLOSED_EARLY, R_TIMEOUT, R_PENDING };

/* What the worker saw; written by the worker thread, read by the main
 * thread after the join (or `done`, with acquire/release). */
static struct {
	int ctx;
	struct sockaddr_in echo, refused, full;
	int opened, eofs, eof_err, frees, timeouts;
	int errors[8], nerr;
	int role_errors[8];
	int again_rc, einval_rc;
	bool echo_ok, peer_addr_ok, ref_ok, stale_ok;
	ms_conn_ref echo_ref;
	ms_conn *pending;
	int phase_frees;
	int done;
} T;

static ms_worker *W;

static ms_conn *connect_to(ms_worker *w, const struct sockaddr_in *sa, uint32_t timeout,
			   int role)
{
	ms_conn *c = NULL;
	int rc = ms_worker_connect(w, T.ctx, (const struct sockaddr *)sa, sizeof(*sa), timeout, &c);
	if (rc != 0) {
		fprintf(stderr, "connect (role %d): %s\n", role, strerror(-rc));
		return NULL;
	}
	((tconn *)ms_conn_ext(c))->role = role;
	return c;
}

/* Phase 2 (from the echo connection's on_free): one closed by its owner
 * before its socket exists (on_free only; closing, it no longer counts as
 * open), refused twice, and the reserve (2 open) then in use. */
static void start_refused(ms_worker *w)
{
	ms_conn *early = connect_to(w, &T.refused, 5, R_CLOSED_EARLY);
	if (early)
		ms_conn_close(w, early, MS_CLOSE_ABORT);
	connect_to(w, &T.refused, 5, R_REFUSED);
	connect_to(w, &T.refused, 5, R_REFUSED);
	ms_conn *c = NULL;
	T.again_rc = ms_worker_connect(w, T.ctx, (const struct sockaddr *)&T.refused,
				       sizeof(T.refused), 5, &c);
}

/* Phase 3: the full listener; the timeout fires first. */
static void start_full(ms_worker *w)
{
	/* The echo connection's slot was freed: its handle is stale. */
	T.stale_ok = ms_worker_conn(w, T.echo_ref) == NULL;
	T.pending = connect_to(w, &T.full, 0, R_PENDING);
	connect_to(w, &T.full, 1, R_TIMEOUT);
}

static int t_start(ms_worker *w)
{
	ms_conn *c = NULL;
	T.einval_rc = ms_worker_connect(w, T.ctx + 1, (const struct sockaddr *)&T.echo,
					sizeof(T.echo), 5, &c);
	connect_to(w, &T.echo, 5, R_ECHO);
	return 0;
}

static void t_open(ms_worker *w, ms_conn *c, bool over_cap)
{
	T.opened++;
	assert_false(over_cap);
	tconn *x = ms_conn_ext(c);
	if (x->role != R_ECHO) {
		ms_conn_close(w, c, MS_CLOSE_ABORT);
		return;
	}
	ms_conn_ref ref = ms_conn_ref_of(w, c);
	T.echo_ref = ref;
	T.ref_ok = ms_worker_conn(w, ref) == c && ms_conn_ref_worker(ref) == ms_worker_id(w);
	const struct sockaddr_in *p = (const struct sockaddr_in *)ms_conn_peer(w, c);
	T.peer_addr_ok = p && p->sin_family == AF_INET && p->sin_port == T.echo.sin_port;
	uint8_t *out = ms_conn_reserve(w, c, A_LEN);
	for (size_t i = 0; i < A_LEN; i++)
		out[i] = a_byte(i);
	ms_conn_commit(w, c, A_LEN);
	T.echo_ok = true;
}

static size_t t_data(ms_worker *w, ms_conn *c, uint8_t *buf, size_t len)
{
	tconn *x = ms_conn_ext(c);
	for (size_t i = 0; i < len; i++, x->got++) {
		bool ok = x->got < A_LEN ? buf[i] == a_byte(x->got)
					 : x->got < A_LEN + B_LEN && buf[i] == b_byte(x->got - A_LEN);
		if (!ok)
			T.echo_ok = false;
	}
	/* What follows the echo is the peer's own: send it back. */
	size_t start = x->got - len;
	if (x->got > A_LEN) {
		size_t from = start > A_LEN ? 0 : A_LEN - start;
		ms_conn_write(w, c, buf + from, len - from);
	}
	return len;
}

static bool t_eof(ms_worker *w, ms_conn *c, int err)
{
	T.eofs++;
	T.eof_err = err;
	if (((tconn *)ms_conn_ext(c))->got != A_LEN + B_LEN)
		T.echo_ok = false;
	return false;
}

static void t_timeout(ms_worker *w, ms_conn *c)
{
	T.timeouts++;
	ms_conn_close(w, c, MS_CLOSE_ABORT);
}

static void t_connect_error(ms_worker *w, ms_conn *c, int err)
{
	tconn *x = ms_conn_ext(c);
	if (T.nerr < 8) {
		T.errors[T.nerr] = err;
		T.role_errors[T.nerr++] = x->role;
	}
	if (x->role == R_TIMEOUT && T.pending)
		ms_conn_close(w, T.pending, MS_CLOSE_FLUSH); /* its connect is in flight */
	T.pending = NULL;
}

static void t_free(ms_worker *w, ms_conn *c)
{
	tconn *x = ms_conn_ext(c);
	T.frees++;
	switch (x->role) {
	case R_ECHO:
		start_refused(w);
		break;
	case R_REFUSED:
	case R_CLOSED_EARLY:
		if (++T.phase_frees == 3)
			start_full(w);
		break;
	case R_TIMEOUT:
	case R_PENDING:
		if (++T.phase_frees == 5)
			__atomic_store_n(&T.done, 1, __ATOMIC_RELEASE);
		break;
	}
}

static const ms_conn_handlers test_handlers = {
	.on_open = t_open,
	.on_data = t_data,
	.on_eof = t_eof,
	.on_timeout = t_timeout,
	.on_free = t_free,
	.on_connect_error = t_connect_error,
};

static const ms_worker_hooks test_hooks = { .on_start = t_start };

/* ---- peers ------------------------------------------------------------------ */

static int tcp_listener(struct sockaddr_in *sa, int backlog)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)sa, sizeof(*sa)), 0);
	socklen_t len = sizeof(*sa);
	assert_int_equal(getsockname(fd, (struct sockaddr *)sa, &len), 0);
	if (backlog >= 0)
		assert_int_equal(listen(fd, backlog), 0);
	return fd;
}

typedef struct echo_peer {
	int lfd;
	bool ok;
	size_t echoed, got_back;
} echo_peer;

/* The worker's peer: echo A_LEN bytes, send B_LEN of its own, read them
 * back, then close. */
static void *echo_main(void *arg)
{
	echo_peer *p = arg;
	int fd = accept(p->lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	struct timeval tv = { 10, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	static uint8_t buf[65536];
	bool ok = true;
	while (p->echoed < A_LEN) {
		size_t want = A_LEN - p->echoed;
		ssize_t n = recv(fd, buf, want < sizeof(buf) ? want : sizeof(buf), 0);
		if (n <= 0) {
			ok = false;
			break;
		}
		for (ssize_t i = 0; i < n; i++)
			ok &= buf[i] == a_byte(p->echoed + (size_t)i);
		if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n) {
			ok = false;
			break;
		}
		p->echoed += (size_t)n;
	}
	static uint8_t b[B_LEN];
	for (size_t i = 0; i < B_LEN; i++)
		b[i] = b_byte(i);
	/* The worker echoes while we send: read and write together, or
	 * both sides' buffers fill. */
	size_t sent = 0;
	while (ok && (sent < B_LEN || p->got_back < B_LEN)) {
		struct pollfd pf = { fd, POLLIN | (sent < B_LEN ? POLLOUT : 0), 0 };
		if (poll(&pf, 1, 10000) <= 0) {
			ok = false;
			break;
		}
		if ((pf.revents & POLLOUT) && sent < B_LEN) {
			ssize_t n = send(fd, b + sent, B_LEN - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n > 0)
				sent += (size_t)n;
		}
		if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (n <= 0) {
				ok = false;
				break;
			}
			for (ssize_t i = 0; i < n; i++)
				ok &= buf[i] == b_byte(p->got_back + (size_t)i);
			p->got_back += (size_t)n;
		}
	}
	p->ok = ok;
	close(fd); /* the worker sees EOF */
	return NULL;
}

static void test_connect(void **state)
{
	char *argv[] = { "test", "--cores", "1", "--max-conns", "64", "--log-level",
			 getenv("MS_TEST_DEBUG") ? "debug" : "warn", NULL };
	static ms_config cfg;
	assert_int_equal(ms_config_parse(&cfg, 7, argv), 0);

	echo_peer ep = { 0 };
	ep.lfd = tcp_listener(&T.echo, 8);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, echo_main, &ep), 0);
	/* Nobody listens on a bound port: a SYN there is answered by a reset. */
	int rfd = tcp_listener(&T.refused, -1);
	/* A listener whose accept queue is full drops new SYNs: with a
	 * backlog of 0 one connection fills it. */
	int ffd = tcp_listener(&T.full, 0);
	int fill[2];
	for (int i = 0; i < 2; i++) {
		fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		assert_true(fill[i] >= 0);
		int r = connect(fill[i], (struct sockaddr *)&T.full, sizeof(T.full));
		assert_true(r == 0 || errno == EINPROGRESS);
	}
	struct pollfd pf = { fill[0], POLLOUT, 0 };
	assert_int_equal(poll(&pf, 1, 5000), 1);

	W = ms_worker_create(&cfg, 0, -1, &test_hooks, NULL, NULL);
	assert_non_null(W);
	ms_ctx ctx = {
		.h = &test_handlers,
		.ext_size = sizeof(tconn),
		.name = "test",
		.flags = MS_CTX_OUTBOUND,
		.reserve = 2,
	};
	T.ctx = ms_worker_ctx_add(W, &ctx);
	assert_int_equal(T.ctx, 0);
	ms_ctx bad = ctx;
	bad.reserve = 0;
	assert_int_equal(ms_worker_ctx_add(W, &bad), -EINVAL); /* outbound needs a reserve */
	assert_int_equal(ms_worker_listen(W, T.ctx, rfd), -EINVAL); /* outbound: no listener */
	int ret = ms_worker_start(W);
	if (ret == -ENOSYS || ret == -EPERM) {
		fprintf(stderr, "io_uring unavailable: %s\n", strerror(-ret));
		exit(77);
	}
	assert_int_equal(ret, 0);

	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if (__atomic_load_n(&T.done, __ATOMIC_ACQUIRE))
			break;
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - t0.tv_sec > 20)
			break;
		usleep(10000);
	}
	ms_worker_stop(W);
	ms_worker_join(W);
	pthread_join(th, NULL);
	const ms_worker_stats *st = ms_worker_stats_of(W);

	assert_true(T.done);
	/* The echo connection, both ways, and the peer's close. */
	assert_int_equal(T.einval_rc, -EINVAL);
	assert_true(ep.ok);
	assert_int_equal(ep.echoed, A_LEN);
	assert_int_equal(ep.got_back, B_LEN);
	assert_true(T.echo_ok);
	assert_true(T.ref_ok);
	assert_true(T.peer_addr_ok);
	assert_int_equal(T.opened, 1);
	assert_int_equal(T.eofs, 1);
	assert_int_equal(T.eof_err, 0);
	assert_int_equal(T.timeouts, 0);
	assert_true(T.stale_ok);
	/* Refused twice, the reserve in use for the third, then a timeout; the
	 * two closed by the test got on_free only. */
	assert_int_equal(T.again_rc, -EAGAIN);
	assert_int_equal(T.nerr, 3);
	assert_int_equal(T.errors[0], -ECONNREFUSED);
	assert_int_equal(T.role_errors[0], R_REFUSED);
	assert_int_equal(T.errors[1], -ECONNREFUSED);
	assert_int_equal(T.role_errors[1], R_REFUSED);
	assert_int_equal(T.errors[2], -ETIMEDOUT);
	assert_int_equal(T.role_errors[2], R_TIMEOUT);
	assert_int_equal(T.frees, 6);
	assert_int_equal(st->connects, 6);
	assert_int_equal(st->connect_failures, 3);
	assert_int_equal(st->closes, 6);
	assert_int_equal(st->accepts, 0);
	assert_int_equal(st->bytes_out, A_LEN + B_LEN);
	assert_int_equal(st->bytes_in, A_LEN + B_LEN);
	assert_int_equal(ms_worker_conns(W), 0);

	ms_worker_destroy(W);
	close(ep.lfd);
	close(rfd);
	close(ffd);
	close(fill[0]);
	close(fill[1]);
}

/* ---- shutdown with outbound connections ------------------------------------ */

/* The drain closes what is open (FLUSH: FIN, then the peer's EOF) and
 * what is still connecting (its connect cancelled), with no on_drain in
 * the context: core closes them, and the worker exits once they are freed. */
static struct {
	int ctx;
	struct sockaddr_in open_to, full;
	int opened, frees, errors;
} D;

static int d_start(ms_worker *w)
{
	ms_conn *c;
	if (ms_worker_connect(w, D.ctx, (const struct sockaddr *)&D.open_to, sizeof(D.open_to), 5,
			      &c) != 0 ||
	    ms_worker_connect(w, D.ctx, (const struct sockaddr *)&D.full, sizeof(D.full), 0, &c) != 0)
		return -EIO;
	/* Queued before the connect completes: it goes out once connected (or
	 * is dropped with the connection). */
	ms_conn_write(w, c, "never sent", 10);
	return 0;
}

static void d_open(ms_worker *w, ms_conn *c, bool over_cap)
{
	ms_conn_write(w, c, "hello", 5);
	__atomic_add_fetch(&D.opened, 1, __ATOMIC_RELEASE);
}

static size_t d_data(ms_worker *w, ms_conn *c, uint8_t *buf, size_t len)
{
	return len;
}

static bool d_eof(ms_worker *w, ms_conn *c, int err)
{
	return false;
}

static void d_timeout(ms_worker *w, ms_conn *c)
{
	ms_conn_close(w, c, MS_CLOSE_ABORT);
}

static void d_free(ms_worker *w, ms_conn *c)
{
	D.frees++;
}

static void d_error(ms_worker *w, ms_conn *c, int err)
{
	D.errors++;
}

static const ms_conn_handlers drain_handlers = {
	.on_open = d_open,
	.on_data = d_data,
	.on_eof = d_eof,
	.on_timeout = d_timeout,
	.on_free = d_free,
	.on_connect_error = d_error,
};

static const ms_worker_hooks drain_hooks = { .on_start = d_start };

static void test_drain(void **state)
{
	char *argv[] = { "test", "--cores", "1", "--max-conns", "64", "--log-level",
			 getenv("MS_TEST_DEBUG") ? "debug" : "warn", NULL };
	static ms_config cfg;
	assert_int_equal(ms_config_parse(&cfg, 7, argv), 0);
	int lfd = tcp_listener(&D.open_to, 8);
	int ffd = tcp_listener(&D.full, 0);
	int fill = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	int r = connect(fill, (struct sockaddr *)&D.full, sizeof(D.full));
	assert_true(r == 0 || errno == EINPROGRESS);
	struct pollfd pf = { fill, POLLOUT, 0 };
	assert_int_equal(poll(&pf, 1, 5000), 1);

	ms_worker *w = ms_worker_create(&cfg, 0, -1, &drain_hooks, NULL, NULL);
	assert_non_null(w);
	ms_ctx ctx = {
		.h = &drain_handlers,
		.ext_size = 0,
		.name = "test",
		.flags = MS_CTX_OUTBOUND,
		.reserve = 2,
	};
	D.ctx = ms_worker_ctx_add(w, &ctx);
	assert_int_equal(D.ctx, 0);
	assert_int_equal(ms_worker_start(w), 0);

	int fd = accept(lfd, NULL, NULL);
	assert_true(fd >= 0);
	struct timeval tv = { 10, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	char buf[64];
	assert_int_equal(recv(fd, buf, 5, MSG_WAITALL), 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(__atomic_load_n(&D.opened, __ATOMIC_ACQUIRE), 1);

	ms_worker_stop(w);
	assert_int_equal(recv(fd, buf, sizeof(buf), 0), 0); /* the drain's FIN */
	close(fd);
	ms_worker_join(w);
	const ms_worker_stats *st = ms_worker_stats_of(w);
	assert_int_equal(D.frees, 2);
	assert_int_equal(D.errors, 0); /* closed while connecting: on_free only */
	assert_int_equal(st->connects, 2);
	assert_int_equal(st->connect_failures, 0);
	assert_int_equal(st->closes, 2);
	assert_int_equal(st->bytes_out, 5);
	ms_worker_destroy(w);
	close(lfd);
	close(ffd);
	close(fill);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_connect),
		cmocka_unit_test(test_drain),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
