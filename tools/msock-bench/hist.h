/*
 * Latency histogram for msock-bench: HdrHistogram's log-linear layout
 * (3 significant digits, values in nanoseconds from 1 ns to 60 s), so a
 * figure here means what it means in every HdrHistogram tool.
 *
 * A histogram is one flat, fixed-size struct with no pointers: it can live in
 * memory shared between forked processes and be merged by adding counts.
 * Not thread-safe: one writer; merge after the writer is done.
 */
#ifndef MS_BENCH_HIST_H
#define MS_BENCH_HIST_H

#include <stdint.h>
#include <stdio.h>

#define MS_HIST_SUB_BITS 11                        /* 2048 sub-buckets: 3 digits */
#define MS_HIST_SUB_COUNT (1u << MS_HIST_SUB_BITS)
#define MS_HIST_SUB_HALF (MS_HIST_SUB_COUNT / 2)
#define MS_HIST_BUCKETS 26                         /* 2048 << 25 ns > 60 s */
#define MS_HIST_LEN ((MS_HIST_BUCKETS + 1) * MS_HIST_SUB_HALF)
#define MS_HIST_MAX_NS 60000000000ull

typedef struct ms_hist {
	uint64_t total;
	uint64_t min, max; /* exact recorded extremes (ns); min = UINT64_MAX if empty */
	double sum;        /* for the mean */
	uint64_t counts[MS_HIST_LEN];
} ms_hist;

/* Empty a histogram. */
void ms_hist_init(ms_hist *h);

/* Record one value in ns; 0 counts as 1 ns, values above 60 s clamp to it. */
void ms_hist_record(ms_hist *h, uint64_t ns);

/* Add every count of src into dst. */
void ms_hist_merge(ms_hist *dst, const ms_hist *src);

/* Value (ns) at percentile p in [0, 100]: the highest value equivalent to the
 * bucket holding that rank (HdrHistogram's getValueAtPercentile). 0 if empty. */
uint64_t ms_hist_percentile(const ms_hist *h, double p);

double ms_hist_mean(const ms_hist *h);
double ms_hist_stddev(const ms_hist *h);

/* Write HdrHistogram's percentile-distribution table ("Value Percentile
 * TotalCount 1/(1-Percentile)", then the #[Mean ...] footer), values divided
 * by `scale` (1000.0 gives microseconds), 5 ticks per half distance as
 * HdrHistogram's tools default to. */
void ms_hist_print_hdr(const ms_hist *h, FILE *out, double scale);

#endif
