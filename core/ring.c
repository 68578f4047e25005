/*
 * Ring setup and the enter path.
 *
 * Setup tries SINGLE_ISSUER | DEFER_TASKRUN (or COOP_TASKRUN | TASKRUN_FLAG
 * with --taskrun coop) and falls back step by step on older kernels, so the
 * server still runs, only slower.
 *
 * Enter is done by hand rather than through liburing 2.3, which has no way
 * to pass min_wait_usec (IORING_FEAT_MIN_TIMEOUT, kernel 6.12+): the kernel
 * reuses the `pad` word of io_uring_getevents_arg for it. Why it matters:
 * with DEFER_TASKRUN a waiter is woken lazily, only once wait_nr completions
 * are ready, so a wait_nr > 1 without a min_wait bound could stall a lone
 * event until the timeout. With the bound, the kernel returns after
 * min_wait_us whenever anything at all is ready.
 */
#include "core/ring.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int setup(ms_ring *r, const ms_ring_opts *o)
{
	unsigned base = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
	unsigned tries[4];
	int n = 0;
	if (!o->coop)
		tries[n++] = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	tries[n++] = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN |
		     IORING_SETUP_TASKRUN_FLAG;
	tries[n++] = IORING_SETUP_COOP_TASKRUN;
	tries[n++] = 0;
	int ret = -EINVAL;
	for (int i = 0; i < n; i++) {
		struct io_uring_params p;
		memset(&p, 0, sizeof(p));
		p.flags = base | tries[i];
		p.cq_entries = o->cq_entries;
		ret = io_uring_queue_init_params(o->sq_entries, &r->ring, &p);
		if (ret == 0) {
			r->setup_flags = p.flags;
			r->min_timeout = (p.features & IORING_FEAT_MIN_TIMEOUT) != 0;
			return 0;
		}
		if (ret != -EINVAL)
			return ret;
	}
	return ret;
}

static int setup_bufs(ms_ring *r, const ms_ring_opts *o)
{
	r->nbufs = o->nbufs;
	r->buf_size = o->buf_size;
	r->mask = o->nbufs - 1;
	r->br_size = sizeof(struct io_uring_buf) * o->nbufs;
	r->br = mmap(NULL, r->br_size, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r->br == MAP_FAILED) {
		r->br = NULL;
		return -errno;
	}
	/* Buffers: one mapping; pages become resident as the kernel fills them. */
	r->bufs_size = (size_t)o->nbufs * o->buf_size;
	r->bufs = mmap(NULL, r->bufs_size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r->bufs == MAP_FAILED) {
		r->bufs = NULL;
		return -errno;
	}
	struct io_uring_buf_reg reg;
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (unsigned long)r->br;
	reg.ring_entries = o->nbufs;
	reg.bgid = MS_RING_BGID;
	int ret = io_uring_register_buf_ring(&r->ring, &reg, 0);
	if (ret)
		return ret;
	io_uring_buf_ring_init(r->br);
	for (unsigned i = 0; i < o->nbufs; i++)
		ms_ring_buf_put(r, i);
	ms_ring_buf_publish(r);
	return 0;
}

int ms_ring_init(ms_ring *r, const ms_ring_opts *o)
{
	memset(r, 0, sizeof(*r));
	int ret = setup(r, o);
	if (ret)
		return ret;
	ret = io_uring_register_files_sparse(&r->ring, o->files);
	if (ret)
		goto fail;
	ret = setup_bufs(r, o);
	if (ret)
		goto fail;
	r->reg_fd = io_uring_register_ring_fd(&r->ring) == 1;
	return 0;
fail:
	ms_ring_fini(r);
	return ret;
}

void ms_ring_fini(ms_ring *r)
{
	if (r->ring.ring_fd > 0)
		io_uring_queue_exit(&r->ring);
	if (r->br)
		munmap(r->br, r->br_size);
	if (r->bufs)
		munmap(r->bufs, r->bufs_size);
	memset(r, 0, sizeof(*r));
}

/* Make SQEs prepared since the last call visible to the kernel; returns how
 * many the kernel has not consumed yet. */
static unsigned flush_sq(ms_ring *r)
{
	struct io_uring_sq *sq = &r->ring.sq;
	unsigned tail = sq->sqe_tail;
	if (sq->sqe_head != tail) {
		sq->sqe_head = tail;
		io_uring_smp_store_release(sq->ktail, tail);
	}
	return tail - io_uring_smp_load_acquire(sq->khead);
}

static int enter(ms_ring *r, unsigned submit, unsigned wait_nr, unsigned flags,
		 void *arg, size_t argsz)
{
	unsigned fd = (unsigned)r->ring.ring_fd;
	if (r->reg_fd) {
		fd = (unsigned)r->ring.enter_ring_fd;
		flags |= IORING_ENTER_REGISTERED_RING;
	}
	return io_uring_enter2(fd, submit, wait_nr, flags, arg, argsz);
}

struct io_uring_sqe *ms_ring_sqe(ms_ring *r, uint64_t *extra_enters)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
	while (!sqe) {
		unsigned n = flush_sq(r);
		int ret = enter(r, n, 0, IORING_ENTER_GETEVENTS, NULL, _NSIG / 8);
		(*extra_enters)++;
		if (ret < 0 && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN)
			return NULL;
		sqe = io_uring_get_sqe(&r->ring);
	}
	return sqe;
}

int ms_ring_enter(ms_ring *r, unsigned wait_nr, unsigned min_wait_us,
		  uint64_t timeout_ns)
{
	ms_ring_buf_publish(r);
	unsigned submit = flush_sq(r);
	struct __kernel_timespec ts = {
		.tv_sec = (long long)(timeout_ns / 1000000000u),
		.tv_nsec = (long long)(timeout_ns % 1000000000u),
	};
	struct io_uring_getevents_arg arg;
	memset(&arg, 0, sizeof(arg));
	arg.sigmask_sz = _NSIG / 8;
	arg.ts = (uint64_t)(uintptr_t)&ts;
	if (wait_nr > 1 && r->min_timeout && min_wait_us)
		arg.pad = min_wait_us; /* min_wait_usec on 6.12+ */
	else if (wait_nr > 1)
		wait_nr = 1; /* no bound on the wait: never wait for more than one */
	unsigned flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
	return enter(r, submit, wait_nr, flags, &arg, sizeof(arg)); /* -errno on failure */
}
