/*
 * Per-stream sequence checker for the fan-out scenario (PROTOCOL.md,
 * "Guarantees"): within one epoch a subscriber sees seq increase by exactly
 * 1 per message. One ms_seqchk per (connection, joined stream).
 *
 * The baseline comes from the join reply (the stream's current seq and
 * epoch) or, if a message arrives first, from that message. A join reply
 * with a different epoch means the stream was recreated: the baseline
 * restarts from the reply's seq (0 for a fresh stream, so the next message
 * is 1). Pure; no allocation; any thread, one writer per checker.
 */
#ifndef MS_BENCH_SEQCHK_H
#define MS_BENCH_SEQCHK_H

#include <stddef.h>
#include <stdint.h>

typedef enum ms_seq_verdict {
	MS_SEQ_OK = 0,
	MS_SEQ_GAP,     /* seq > last + 1: messages lost (ms_seqchk.missing grows) */
	MS_SEQ_DUP,     /* seq == last: delivered twice */
	MS_SEQ_REORDER, /* seq < last: delivered out of order (or an old duplicate) */
} ms_seq_verdict;

typedef struct ms_seqchk {
	uint64_t epoch;   /* hash of the epoch string; 0 = none seen yet */
	uint64_t last;    /* last accepted seq */
	uint8_t based;    /* last is meaningful */
	uint64_t received, gaps, missing, dups, reorders;
} ms_seqchk;

void ms_seqchk_init(ms_seqchk *c);

/* Hash an epoch string as it appears in a join reply (any bytes). */
uint64_t ms_seqchk_epoch_hash(const char *epoch, size_t len);

/* A join reply said the stream's current seq is `seq` in `epoch` (a hash
 * from ms_seqchk_epoch_hash). A new epoch resets the baseline; the same
 * epoch sets it only if no message has set it yet (messages may overtake
 * the reply). Always MS_SEQ_OK. */
ms_seq_verdict ms_seqchk_join(ms_seqchk *c, uint64_t epoch, uint64_t seq);

/* A message with `seq` arrived. Returns the verdict; the baseline moves to
 * seq on OK and GAP (so one loss is counted once), stays on DUP/REORDER. */
ms_seq_verdict ms_seqchk_msg(ms_seqchk *c, uint64_t seq);

/* Whether any violation was seen. */
static inline int ms_seqchk_failed(const ms_seqchk *c)
{
	return c->gaps || c->dups || c->reorders;
}

const char *ms_seq_verdict_name(ms_seq_verdict v);

#endif
