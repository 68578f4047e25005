/*
 * Latency histogram: HdrHistogram's log-linear layout, values in nanoseconds.
 *
 * Layout (HdrHistogram with 2 significant digits, lowest discernible value 1):
 * 256 sub-buckets per power of two. Bucket 0 holds 0..255 ns exactly; bucket
 * b >= 1 holds [128 << b, 256 << b) in 128 slots of width 1 << b. The widest
 * slot is 1/128 of its lowest value, so any recorded value is known to within
 * 0.79% (relative). 30 buckets cover 0 .. 2^37 - 1 ns (137 s); larger values
 * clamp to 2^37 - 1 and are counted (in the total and in ms_hist_clamped).
 *
 *   counts index = (b << 7) + (v >> b),  b = max(0, bit_length(v) - 8)
 *   31 * 128 = 3968 counters of 8 bytes: sizeof(ms_hist) = 31792 bytes.
 *
 * An ms_hist is one flat struct without pointers: a worker records into its
 * own, and a reader may memcpy a snapshot and merge snapshots by adding
 * counts. Not thread-safe: one writer; readers take copies. Members starting
 * with `_` are private; read them through the functions below.
 */
#ifndef MS_CORE_HIST_H
#define MS_CORE_HIST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MS_HIST_SIG_DIGITS 2                        /* HdrHistogram precision */
#define MS_HIST_SUB_BITS 8
#define MS_HIST_SUB_COUNT (1u << MS_HIST_SUB_BITS)  /* 256 */
#define MS_HIST_SUB_HALF (MS_HIST_SUB_COUNT / 2)    /* 128 */
#define MS_HIST_BUCKETS 30
#define MS_HIST_LEN ((MS_HIST_BUCKETS + 1) * MS_HIST_SUB_HALF) /* 3968 */
#define MS_HIST_MAX_NS ((1ull << (MS_HIST_BUCKETS + MS_HIST_SUB_BITS - 1)) - 1)

typedef struct ms_hist {
	uint64_t _count;   /* values recorded, clamped ones included */
	uint64_t _min;     /* UINT64_MAX while empty */
	uint64_t _max;     /* 0 while empty */
	uint64_t _clamped; /* values above MS_HIST_MAX_NS (recorded as it) */
	unsigned __int128 _sum; /* exact, of the (clamped) values: cannot wrap */
	uint64_t _counts[MS_HIST_LEN];
} ms_hist;

/* One row of an HdrHistogram percentile-distribution table, as parsed back:
 * value (in the file's unit), percentile (0..1), cumulative count. */
typedef struct ms_hist_row {
	double value;
	double percentile;
	uint64_t total_count;
} ms_hist_row;

/* The table's footer, as parsed back (fields stay 0 when absent). */
typedef struct ms_hist_footer {
	double mean, stddev, max;
	uint64_t total_count;
	int buckets, sub_buckets;
} ms_hist_footer;

/* Empty a histogram (init and reset are the same operation). */
void ms_hist_init(ms_hist *h);
void ms_hist_reset(ms_hist *h);

/* Record one value in ns. Branch-free (cmov): one clz, one shift, one
 * counter increment, no division or floating point. */
static inline void ms_hist_record(ms_hist *h, uint64_t ns)
{
	uint64_t over = ns > MS_HIST_MAX_NS;
	uint64_t v = over ? MS_HIST_MAX_NS : ns;
	/* Bucket: bits above the top 8 (0 for v < 256; `| 255` keeps clz defined). */
	unsigned b = 56u - (unsigned)__builtin_clzll(v | (MS_HIST_SUB_COUNT - 1));
	h->_counts[((size_t)b << (MS_HIST_SUB_BITS - 1)) + (size_t)(v >> b)]++;
	h->_count++;
	h->_clamped += over;
	h->_sum += v;
	h->_min = v < h->_min ? v : h->_min;
	h->_max = v > h->_max ? v : h->_max;
}

/* Add src's counts and statistics into dst (src unchanged). */
void ms_hist_merge(ms_hist *dst, const ms_hist *src);

static inline uint64_t ms_hist_count(const ms_hist *h) { return h->_count; }
static inline uint64_t ms_hist_clamped(const ms_hist *h) { return h->_clamped; }
/* Exact extremes in ns (of clamped values); both 0 while empty. */
static inline uint64_t ms_hist_min(const ms_hist *h) { return h->_count ? h->_min : 0; }
static inline uint64_t ms_hist_max(const ms_hist *h) { return h->_max; }

/* Exact mean (ns) from the recorded sum; 0 if empty. */
double ms_hist_mean(const ms_hist *h);
/* Standard deviation (ns) of the bucket midpoints around the exact mean, as
 * HdrHistogram computes it; 0 if empty. */
double ms_hist_stddev(const ms_hist *h);

/* Value (ns) at `percentile` in [0, 100], HdrHistogram's getValueAtPercentile:
 * the rank is ceil(p/100 * count) (at least 1); the answer is the highest
 * value equivalent to the slot holding that rank (the lowest for p = 0), so it
 * is >= the exact percentile and within one slot width (< 0.79%) of it. It
 * may exceed ms_hist_max by less than one slot. 0 if empty. */
uint64_t ms_hist_value_at(const ms_hist *h, double percentile);

/* Slot arithmetic, exposed for tests and tools. */
size_t ms_hist_index(uint64_t ns);              /* slot of a value (clamped) */
uint64_t ms_hist_lowest_equiv(uint64_t ns);      /* first value of its slot */
uint64_t ms_hist_highest_equiv(uint64_t ns);     /* last value of its slot */

/* Write HdrHistogram's percentile distribution (outputPercentileDistribution
 * with 5 ticks per half distance): the header, one row per percentile tick
 * ("%12.2f %2.12f %10d %14.2f", the 100% row without the last column), then
 * the #[Mean/StdDeviation], #[Max/Total count], #[Buckets/SubBuckets]
 * footer. Values are divided by unit_divisor (1000.0: microseconds) and
 * rounded as Java rounds them, so every line but Mean and Max is the one the
 * Java HdrHistogram prints for the same values; Mean is exact and Max is the
 * exact maximum (Java prints bucket-based ones). Returns 0, or -EIO if the
 * stream reports an error. */
int ms_hist_write_hdr(FILE *f, const ms_hist *h, double unit_divisor);

/* Read a percentile-distribution table back (ours or any HdrHistogram tool's,
 * e.g. msock-bench --hist): up to `cap` rows into `rows` and the footer into
 * `foot` (may be NULL). Returns the number of rows in the table (may exceed
 * cap; extra rows are skipped), or -EINVAL if the header is missing or a row
 * is malformed. */
int ms_hist_parse_hdr(FILE *f, ms_hist_row *rows, size_t cap, ms_hist_footer *foot);

/* One log line, values in µs with 3 significant digits (more above 1000):
 *   "name: n=1234 p50=12.3us p90=45.6us p99=101us p99.9=230us max=1520us"
 * plus " clamped=N" when values were clamped; "name: n=0" when empty.
 * Percentiles are capped at the exact max. Returns what snprintf would:
 * the length of the whole line, even if it did not fit in cap. */
size_t ms_hist_summary(char *buf, size_t cap, const char *name, const ms_hist *h);

/* Prometheus text exposition as a summary, values in seconds:
 *   metric{labels,quantile="0.5"} 1.23e-05     (0.5 0.9 0.99 0.999)
 *   metric_sum{labels} 12.5
 *   metric_count{labels} 1000000
 * `labels` is the inside of the braces ("" or e.g. `core="0"`); with "" the
 * lines read metric{quantile="0.5"}, metric_sum, metric_count. Quantiles are
 * NaN when empty (the client libraries' convention) and capped at the exact
 * max. The caller writes "# TYPE metric summary" once per metric family.
 * Returns what snprintf would (bytes needed, excluding the NUL). */
size_t ms_hist_prometheus(char *buf, size_t cap, const char *metric, const char *labels,
			  const ms_hist *h);

#endif
