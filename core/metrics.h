/*
 * Prometheus text exposition (version 0.0.4) of the workers' snapshots:
 * what /metrics on the admin listener serves. Pure formatting, so it is
 * tested without a server.
 */
#ifndef MS_CORE_METRICS_H
#define MS_CORE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/worker.h"

/* Format snaps[0..n) (snaps[i] is worker i). kinds[k] names context k's
 * transport ("plain", "tls", "admin"; NULL: not counted). Returns a
 * malloc'd NUL-terminated text (caller frees) and its length in *len. */
char *ms_metrics_text(const ms_worker_snap *snaps, uint32_t n,
		      const char *const kinds[MS_MAX_CTX], size_t *len);

/* Merge snaps[0..n)'s histograms over the workers; log one summary line
 * per histogram ("why": dump, exit) and, with dir, write each in
 * HdrHistogram's percentile-distribution format (µs) to
 * DIR/hist-<UTC time>-<pid>-<dump number><why>-<name>.hgrm (e.g.
 * hist-20261123T184500Z-4242-3dump-hop.hgrm). Returns 0 or the first -errno of
 * a file that could not be written (the rest are still tried). */
int ms_hist_dump(const ms_worker_snap *snaps, uint32_t n, const char *dir, const char *why);

#endif
