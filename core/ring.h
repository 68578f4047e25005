/*
 * One worker's io_uring: setup with the best task-running mode the kernel
 * allows, a sparse table of direct descriptors, a provided-buffer ring for
 * multishot recv, and the single enter per loop iteration (submit + wait
 * with a bounded batching wait).
 *
 * Created, used and destroyed on the owning worker's thread only
 * (SINGLE_ISSUER), except ms_ring_wake(), which any ring may target.
 */
#ifndef MS_CORE_RING_H
#define MS_CORE_RING_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

/* Constants liburing 2.3 lacks; values from the kernel UAPI. */
#ifndef IORING_FEAT_MIN_TIMEOUT
#define IORING_FEAT_MIN_TIMEOUT (1U << 15)
#endif
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif

/* Socket commands of IORING_OP_URING_CMD (linux 6.7). */
#ifndef SOCKET_URING_OP_GETSOCKOPT
#define SOCKET_URING_OP_GETSOCKOPT 2
#endif
#ifndef SOCKET_URING_OP_SETSOCKOPT
#define SOCKET_URING_OP_SETSOCKOPT 3
#endif

#define MS_RING_BGID 1 /* provided-buffer group of recv */

/* getsockopt/setsockopt (op: SOCKET_URING_OP_*) on direct descriptor fidx:
 * a direct descriptor has no fd for the system calls. The sqe fields of
 * these commands (level, optname, optlen, optval) are not in liburing
 * 2.3's struct: they overlay addr, file_index and addr3. optval must stay
 * valid until the completion. getsockopt takes SOL_SOCKET options only. */
static inline void ms_ring_prep_sockopt(struct io_uring_sqe *sqe, unsigned op, int fidx,
					int level, int optname, void *optval,
					unsigned optlen)
{
	io_uring_prep_rw(IORING_OP_URING_CMD, sqe, fidx, NULL, 0, 0);
	sqe->cmd_op = op;
	sqe->addr = (uint64_t)(uint32_t)level | (uint64_t)(uint32_t)optname << 32;
	sqe->file_index = optlen;
	sqe->addr3 = (uint64_t)(uintptr_t)optval;
	sqe->flags |= IOSQE_FIXED_FILE;
}

typedef struct ms_ring_opts {
	unsigned sq_entries;
	unsigned cq_entries;
	unsigned files;      /* sparse direct-descriptor table size */
	unsigned nbufs;      /* provided buffers (power of two) */
	unsigned buf_size;
	bool coop;           /* COOP_TASKRUN instead of DEFER_TASKRUN */
} ms_ring_opts;

typedef struct ms_ring {
	struct io_uring ring;
	unsigned setup_flags;  /* what the kernel accepted */
	bool min_timeout;      /* IORING_FEAT_MIN_TIMEOUT */
	bool reg_fd;           /* ring fd registered: enter by index */
	/* provided buffers */
	struct io_uring_buf_ring *br;
	uint8_t *bufs;
	size_t br_size, bufs_size;
	unsigned nbufs, buf_size, mask;
	unsigned buf_added;   /* returned since the last publish */
} ms_ring;

/* Set up on the calling thread (which becomes the only submitter).
 * Returns 0 or -errno. */
int ms_ring_init(ms_ring *r, const ms_ring_opts *o);
void ms_ring_fini(ms_ring *r);

/* A free SQE. When the SQ is full, submits what is queued (an extra enter,
 * counted by the caller through *extra_enters) and retries. */
struct io_uring_sqe *ms_ring_sqe(ms_ring *r, uint64_t *extra_enters);

/* The loop's one syscall: publish SQEs and returned buffers, submit, run
 * deferred work and wait for wait_nr completions, but no longer than
 * min_wait_us once at least one is there (when the kernel supports it) and no
 * longer than timeout_ns in any case. Returns >= 0 or -errno (-ETIME and
 * -EINTR are normal). */
int ms_ring_enter(ms_ring *r, unsigned wait_nr, unsigned min_wait_us,
		  uint64_t timeout_ns);

/* Address of provided buffer bid. */
static inline uint8_t *ms_ring_buf(ms_ring *r, unsigned bid)
{
	return r->bufs + (size_t)bid * r->buf_size;
}

/* Give buffer bid back to the kernel (visible at the next enter). */
static inline void ms_ring_buf_put(ms_ring *r, unsigned bid)
{
	io_uring_buf_ring_add(r->br, ms_ring_buf(r, bid), r->buf_size,
			      (unsigned short)bid, r->mask, (int)r->buf_added);
	r->buf_added++;
}

/* Publish returned buffers now (before re-arming a recv that stopped for
 * lack of them). */
static inline void ms_ring_buf_publish(ms_ring *r)
{
	if (r->buf_added) {
		io_uring_buf_ring_advance(r->br, (int)r->buf_added);
		r->buf_added = 0;
	}
}

#endif
