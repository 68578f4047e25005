/*
 * The checker keeps only the last seq: a gap moves the baseline forward so
 * a single loss is one GAP, not a cascade, and anything at or behind the
 * baseline is a duplicate or a reorder. Epochs are compared by hash; a
 * 64-bit FNV-1a of a server-chosen id is plenty for a benchmark.
 */
#include "seqchk.h"

#include <string.h>

void ms_seqchk_init(ms_seqchk *c)
{
	memset(c, 0, sizeof(*c));
}

uint64_t ms_seqchk_epoch_hash(const char *epoch, size_t len)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < len; i++) {
		h ^= (uint8_t)epoch[i];
		h *= 1099511628211ull;
	}
	return h ? h : 1;
}

ms_seq_verdict ms_seqchk_join(ms_seqchk *c, uint64_t epoch, uint64_t seq)
{
	/* Replies and stream messages are not ordered with each other
	 * (PROTOCOL.md), so messages may precede the reply: within one epoch
	 * the first baseline wins and the reply's seq is not checked. */
	if (!c->based || (c->epoch && c->epoch != epoch)) {
		c->epoch = epoch;
		c->last = seq;
		c->based = 1;
	} else if (!c->epoch) {
		c->epoch = epoch; /* baseline already set by a message */
	}
	return MS_SEQ_OK;
}

ms_seq_verdict ms_seqchk_msg(ms_seqchk *c, uint64_t seq)
{
	c->received++;
	if (!c->based) {
		c->last = seq;
		c->based = 1;
		return MS_SEQ_OK;
	}
	if (seq == c->last + 1) {
		c->last = seq;
		return MS_SEQ_OK;
	}
	if (seq > c->last + 1) {
		c->gaps++;
		c->missing += seq - c->last - 1;
		c->last = seq;
		return MS_SEQ_GAP;
	}
	if (seq == c->last) {
		c->dups++;
		return MS_SEQ_DUP;
	}
	c->reorders++;
	return MS_SEQ_REORDER;
}

const char *ms_seq_verdict_name(ms_seq_verdict v)
{
	switch (v) {
	case MS_SEQ_OK:
		return "ok";
	case MS_SEQ_GAP:
		return "gap";
	case MS_SEQ_DUP:
		return "duplicate";
	case MS_SEQ_REORDER:
		return "reorder";
	}
	return "?";
}
