/*
 * HdrHistogram's indexing, reimplemented over a fixed array: bucket b holds
 * values [1024 << b, 2048 << b) at a resolution of 1 << b (bucket 0 also
 * holds 0..1023 exactly), so every value keeps 3 significant digits. The
 * percentile iteration mirrors hdr_percentiles_print() so the --hist file can
 * be fed to HdrHistogram's plotter and compared line by line.
 */
#include "hist.h"

#include <math.h>
#include <string.h>

static int bucket_of(uint64_t v)
{
	return 64 - __builtin_clzll(v | (MS_HIST_SUB_COUNT - 1)) - MS_HIST_SUB_BITS;
}

static size_t index_of(uint64_t v)
{
	int b = bucket_of(v);
	uint64_t sub = v >> b;
	return ((size_t)(b + 1) << (MS_HIST_SUB_BITS - 1)) + (sub - MS_HIST_SUB_HALF);
}

static uint64_t value_of(size_t i)
{
	int b = (int)(i >> (MS_HIST_SUB_BITS - 1)) - 1;
	uint64_t sub = (i & (MS_HIST_SUB_HALF - 1)) + MS_HIST_SUB_HALF;
	if (b < 0) {
		b = 0;
		sub -= MS_HIST_SUB_HALF;
	}
	return sub << b;
}

static uint64_t bucket_size(uint64_t v)
{
	return 1ull << bucket_of(v);
}

static uint64_t highest_equivalent(uint64_t v)
{
	return value_of(index_of(v)) + bucket_size(v) - 1;
}

void ms_hist_init(ms_hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

void ms_hist_record(ms_hist *h, uint64_t ns)
{
	if (ns == 0)
		ns = 1;
	if (ns > MS_HIST_MAX_NS)
		ns = MS_HIST_MAX_NS;
	h->counts[index_of(ns)]++;
	h->total++;
	h->sum += (double)ns;
	if (ns < h->min)
		h->min = ns;
	if (ns > h->max)
		h->max = ns;
}

void ms_hist_merge(ms_hist *dst, const ms_hist *src)
{
	if (src->total == 0)
		return;
	for (size_t i = 0; i < MS_HIST_LEN; i++)
		dst->counts[i] += src->counts[i];
	dst->total += src->total;
	dst->sum += src->sum;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
}

uint64_t ms_hist_percentile(const ms_hist *h, double p)
{
	if (h->total == 0)
		return 0;
	if (p > 100.0)
		p = 100.0;
	uint64_t rank = (uint64_t)((p / 100.0) * (double)h->total + 0.5);
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (size_t i = 0; i < MS_HIST_LEN; i++) {
		seen += h->counts[i];
		if (seen >= rank) {
			uint64_t v = highest_equivalent(value_of(i));
			return v > h->max ? h->max : v; /* never above what was seen */
		}
	}
	return h->max;
}

double ms_hist_mean(const ms_hist *h)
{
	return h->total ? h->sum / (double)h->total : 0.0;
}

double ms_hist_stddev(const ms_hist *h)
{
	if (h->total == 0)
		return 0.0;
	double mean = ms_hist_mean(h), acc = 0.0;
	for (size_t i = 0; i < MS_HIST_LEN; i++) {
		if (!h->counts[i])
			continue;
		uint64_t lo = value_of(i);
		double mid = (double)lo + (double)(bucket_size(lo) >> 1);
		double d = mid - mean;
		acc += d * d * (double)h->counts[i];
	}
	return sqrt(acc / (double)h->total);
}

void ms_hist_print_hdr(const ms_hist *h, FILE *out, double scale)
{
	const int ticks_per_half = 5;
	fprintf(out, "%12s %14s %10s %14s\n\n", "Value", "Percentile", "TotalCount",
		"1/(1-Percentile)");
	if (h->total) {
		double next_pct = 0.0;
		uint64_t cum = 0;
		for (size_t i = 0; i < MS_HIST_LEN; i++) {
			if (!h->counts[i])
				continue;
			cum += h->counts[i];
			double pct = 100.0 * (double)cum / (double)h->total;
			uint64_t v = highest_equivalent(value_of(i));
			if (v > h->max)
				v = h->max;
			while (next_pct <= pct && cum < h->total) {
				double f = next_pct / 100.0;
				fprintf(out, "%12.3f %2.12f %10llu %14.2f\n", (double)v / scale, f,
					(unsigned long long)cum, 1.0 / (1.0 - f));
				int64_t half = (int64_t)pow(2.0, (double)((int64_t)(log(100.0 / (100.0 - next_pct)) / log(2.0)) + 1));
				next_pct += 100.0 / (double)(ticks_per_half * half);
			}
			if (cum == h->total)
				fprintf(out, "%12.3f %2.12f %10llu\n", (double)v / scale, 1.0,
					(unsigned long long)cum);
		}
	}
	fprintf(out, "#[Mean    = %12.3f, StdDeviation   = %12.3f]\n",
		ms_hist_mean(h) / scale, ms_hist_stddev(h) / scale);
	fprintf(out, "#[Max     = %12.3f, Total count    = %12llu]\n",
		(double)h->max / scale, (unsigned long long)h->total);
	fprintf(out, "#[Buckets = %12d, SubBuckets     = %12d]\n", MS_HIST_BUCKETS,
		MS_HIST_SUB_COUNT);
}
