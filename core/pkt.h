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
	uint32_t _pad;
	uint8_t data[];
} ms_pkt;

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
