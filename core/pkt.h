/*
 * Refcounted packets: one allocation holding a reference count, a length and
 * the bytes (a complete server frame, or a connection's gathered output).
 *
 *   ms_pkt  [refs | len | cap | data ......... ]
 *              ^ atomic: holders live on several cores (a broadcast
 *                takes one reference per queued send; the send's
 *                completion drops it; the last holder frees it)
 *
 * Thread-safe refcounting with the compiler's __atomic builtins rather than
 * ck_pr: the same instructions on x86 (lock xadd), but visible to
 * ThreadSanitizer, which cannot see ck_pr's inline assembly. The bytes are
 * immutable once a second holder exists.
 */
#ifndef MS_CORE_PKT_H
#define MS_CORE_PKT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct ms_pkt {
	uint32_t refs;
	uint32_t len; /* bytes used */
	uint32_t cap; /* bytes allocated after the header */
	uint32_t stamp; /* ms_pkt_stamp() of the publish it carries, 0 = none */
	uint8_t data[];
} ms_pkt;

/* Coarse timestamp for the publish-to-flush histogram: CLOCK_MONOTONIC ns
 * >> 10 (1.024 µs units), never 0 (0 means none). 32 bits wrap every 73
 * minutes; ms_pkt_stamp_age is exact for stamps up to 36 minutes old. */
static inline uint32_t ms_pkt_stamp(uint64_t ns)
{
	uint32_t s = (uint32_t)(ns >> 10);
	return s ? s : 1;
}

static inline uint64_t ms_pkt_stamp_age(uint32_t stamp, uint64_t now_ns)
{
	/* A stamp taken after now_ns (another worker's later clock read):
	 * age 0, not 73 minutes. */
	int32_t d = (int32_t)((uint32_t)(now_ns >> 10) - stamp);
	return d > 0 ? (uint64_t)d << 10 : 0;
}

/* New packet with room for cap bytes, len 0, one reference (returned). */
ms_pkt *ms_pkt_new(uint32_t cap);

/* Take one more reference. */
static inline void ms_pkt_ref(ms_pkt *p)
{
	__atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
}

/* Drop one reference; the last one frees the packet. */
static inline void ms_pkt_unref(ms_pkt *p)
{
	/* acq_rel: every holder's reads happen before the free. */
	if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(p);
}

#endif
