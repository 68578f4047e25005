/*
 * Packet allocation. Allocation failure aborts (STYLE §3): the server stays
 * away from it by refusing new work at its high-water marks.
 */
#include "core/pkt.h"

#include <stdio.h>

ms_pkt *ms_pkt_new(uint32_t cap)
{
	ms_pkt *p = malloc(sizeof(*p) + cap);
	if (!p) {
		fprintf(stderr, "mezon-sock: out of memory (packet of %u bytes)\n", cap);
		abort();
	}
	p->refs = 1;
	p->len = 0;
	p->cap = cap;
	p->stamp = 0;
	return p;
}
