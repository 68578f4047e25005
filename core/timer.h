/*
 * Per-worker timer wheel for connection timeouts (handshake, idle, close
 * linger): 1-second resolution, 512 slots, O(1) set and cancel through links
 * kept in the connection slot. A deadline farther than 512 s ahead waits in
 * its slot and is re-filed when passed over. Owning worker's thread only.
 */
#ifndef MS_CORE_TIMER_H
#define MS_CORE_TIMER_H

#include <stdint.h>

#include "core/conn.h"

#define MS_WHEEL_SLOTS 512u

typedef struct ms_wheel {
	uint32_t head[MS_WHEEL_SLOTS]; /* connection index + 1, 0 = empty */
	uint32_t now;                   /* last second processed */
	uint32_t count;
	uint32_t ndue, due_cap;
	uint64_t *due;                  /* (gen << 32 | index) fired this tick */
} ms_wheel;

void ms_wheel_init(ms_wheel *w, uint32_t now);
void ms_wheel_fini(ms_wheel *w);

/* Arm c at absolute second `deadline` (> 0), replacing any earlier one;
 * deadline 0 cancels. */
void ms_wheel_set(ms_wheel *w, ms_pool *p, ms_conn *c, uint32_t deadline);

/* Advance to second `now`, calling fire(arg, c) for each connection whose
 * deadline passed (its timer is disarmed first, so fire may re-arm). */
void ms_wheel_advance(ms_wheel *w, ms_pool *p, uint32_t now,
		      void (*fire)(void *arg, ms_conn *c), void *arg);

#endif
