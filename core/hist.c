/*
 * Latency histogram: everything but the recording (which is inline in
 * hist.h). The percentile table follows HdrHistogram's PercentileIterator
 * step for step, so a file written here reads like one written by any
 * HdrHistogram tool and feeds the same plotters.
 */
#include "core/hist.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- slot arithmetic ------------------------------------------------------ */

static unsigned bucket_of(uint64_t v)
{
	return 56u - (unsigned)__builtin_clzll(v | (MS_HIST_SUB_COUNT - 1));
}

size_t ms_hist_index(uint64_t ns)
{
	uint64_t v = ns > MS_HIST_MAX_NS ? MS_HIST_MAX_NS : ns;
	unsigned b = bucket_of(v);
	return ((size_t)b << (MS_HIST_SUB_BITS - 1)) + (size_t)(v >> b);
}

/* Inverse of the index: bucket i >> 7 (less one past the first), the top
 * half of its sub-buckets (bucket 0 uses both halves). */
static uint64_t value_of(size_t i)
{
	size_t b = i >> (MS_HIST_SUB_BITS - 1);
	size_t sub = i & (MS_HIST_SUB_HALF - 1);
	if (b == 0)
		return sub;
	return (uint64_t)(sub + MS_HIST_SUB_HALF) << (b - 1);
}

static uint64_t slot_width(size_t i)
{
	size_t b = i >> (MS_HIST_SUB_BITS - 1);
	return b <= 1 ? 1 : 1ull << (b - 1);
}

uint64_t ms_hist_lowest_equiv(uint64_t ns)
{
	return value_of(ms_hist_index(ns));
}

uint64_t ms_hist_highest_equiv(uint64_t ns)
{
	size_t i = ms_hist_index(ns);
	return value_of(i) + slot_width(i) - 1;
}

static uint64_t highest_of(size_t i)
{
	return value_of(i) + slot_width(i) - 1;
}

/* ---- state ------------------------------------------------------------------- */

void ms_hist_init(ms_hist *h)
{
	memset(h, 0, sizeof(*h));
	h->_min = UINT64_MAX;
}

void ms_hist_reset(ms_hist *h)
{
	ms_hist_init(h);
}

void ms_hist_merge(ms_hist *dst, const ms_hist *src)
{
	if (src->_count == 0)
		return;
	for (size_t i = 0; i < MS_HIST_LEN; i++)
		dst->_counts[i] += src->_counts[i];
	dst->_count += src->_count;
	dst->_clamped += src->_clamped;
	dst->_sum += src->_sum;
	if (src->_min < dst->_min)
		dst->_min = src->_min;
	if (src->_max > dst->_max)
		dst->_max = src->_max;
}

double ms_hist_mean(const ms_hist *h)
{
	return h->_count ? (double)h->_sum / (double)h->_count : 0.0;
}

double ms_hist_stddev(const ms_hist *h)
{
	if (h->_count == 0)
		return 0.0;
	double mean = ms_hist_mean(h), acc = 0.0;
	for (size_t i = 0; i < MS_HIST_LEN; i++) {
		if (!h->_counts[i])
			continue;
		double d = (double)(value_of(i) + (slot_width(i) >> 1)) - mean;
		acc += d * d * (double)h->_counts[i];
	}
	return sqrt(acc / (double)h->_count);
}

uint64_t ms_hist_value_at(const ms_hist *h, double percentile)
{
	if (h->_count == 0)
		return 0;
	/* One ulp down first: 99.9% of 1000 must be rank 999, not 1000 because
	 * 99.9 * 1000 / 100 rounded up to 999.0000000001. */
	double p = nextafter(percentile, -INFINITY);
	p = p < 0.0 ? 0.0 : p > 100.0 ? 100.0 : p;
	uint64_t rank = (uint64_t)ceil(p * (double)h->_count / 100.0);
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (size_t i = 0; i < MS_HIST_LEN; i++) {
		seen += h->_counts[i];
		if (seen >= rank)
			return percentile == 0.0 ? value_of(i) : highest_of(i);
	}
	return highest_of(MS_HIST_LEN - 1); /* counts short of _count: cannot happen */
}

/* ---- HdrHistogram text ---------------------------------------------------------- */

/* The next tick after `level` (percent): 5 ticks per half of the remaining
 * distance to 100%, i.e. steps of 100 / (5 * 2^(floor(log2(100/(100-level))) + 1)).
 * The exponent is capped so a level that rounds to 100 cannot overflow it. */
static double next_tick(double level)
{
	const int ticks_per_half = 5;
	double halvings = floor(log(100.0 / (100.0 - level)) / log(2.0));
	if (!(halvings < 60.0)) /* also catches NaN and inf */
		halvings = 60.0;
	double ticks = (double)ticks_per_half * ldexp(1.0, (int)halvings + 1);
	return level + 100.0 / ticks;
}

/* printf("%*.*f", width, decimals, x) as Java's Formatter prints it, which
 * HdrHistogram's text goes through: Java rounds the shortest decimal that
 * reads back as x (Double.toString's digits) half-up, where C rounds the
 * exact binary value. They differ on ties: 98815 ns / 1000 is stored as
 * 98.81499999..., C prints 98.81, Java 98.82. x must be finite and >= 0. */
static void fprint_fixed(FILE *f, int width, int decimals, double x)
{
	char e[32];
	for (int p = 1; p <= 17; p++) { /* shortest round-tripping digits */
		snprintf(e, sizeof(e), "%.*e", p - 1, x);
		if (strtod(e, NULL) == x)
			break;
	}
	char digits[64];
	int n = 0;
	char *c = e;
	for (; *c && *c != 'e'; c++)
		if (*c >= '0' && *c <= '9')
			digits[n++] = *c;
	int point = atoi(c + 1) + 1; /* digits before the decimal point */
	int keep = point + decimals; /* digits left after rounding */
	if (keep < 0) {
		n = 0;
	} else if (keep < n) {
		int up = digits[keep] >= '5';
		n = keep;
		for (int i = n - 1; up && i >= 0; i--) {
			up = digits[i] == '9';
			digits[i] = up ? '0' : (char)(digits[i] + 1);
		}
		if (up) { /* 9.99 -> 10.0: one more digit in front */
			memmove(digits + 1, digits, (size_t)n);
			digits[0] = '1';
			n++;
			point++;
		}
	}
	char out[96];
	int o = 0;
	if (point <= 0)
		out[o++] = '0';
	for (int i = 0; i < point; i++)
		out[o++] = i < n ? digits[i] : '0';
	if (decimals > 0)
		out[o++] = '.';
	for (int i = 0; i < decimals; i++) {
		int at = point + i;
		out[o++] = at >= 0 && at < n ? digits[at] : '0';
	}
	out[o] = '\0';
	fprintf(f, "%*s", width, out);
}

int ms_hist_write_hdr(FILE *f, const ms_hist *h, double unit_divisor)
{
	const int d = MS_HIST_SIG_DIGITS;
	fprintf(f, "%12s %14s %10s %14s\n\n", "Value", "Percentile", "TotalCount",
		"1/(1-Percentile)");
	/* PercentileIterator: walk the slots; at a slot whose cumulative
	 * percentile has reached the current tick, print a row and move to the
	 * next tick (staying on the slot, which may answer several ticks). Once
	 * every count is seen, one last row at 100%. */
	if (h->_count) {
		uint64_t cum = 0;
		double level = 0.0;
		size_t i = 0;
		for (; i < MS_HIST_LEN; i++) {
			if (!h->_counts[i])
				continue;
			cum += h->_counts[i];
			double pct = 100.0 * (double)cum / (double)h->_count;
			while (pct >= level) {
				double q = level / 100.0;
				fprint_fixed(f, 12, d, (double)highest_of(i) / unit_divisor);
				fputc(' ', f);
				fprint_fixed(f, 2, 12, q);
				fprintf(f, " %10llu ", (unsigned long long)cum);
				fprint_fixed(f, 14, 2, 1.0 / (1.0 - q));
				fputc('\n', f);
				level = next_tick(level);
				if (cum >= h->_count)
					break; /* all seen: only the 100% row is left */
			}
			if (cum >= h->_count)
				break;
		}
		if (i == MS_HIST_LEN)
			i--;
		fprint_fixed(f, 12, d, (double)highest_of(i) / unit_divisor);
		fprintf(f, " %2.12f %10llu\n", 1.0, (unsigned long long)cum);
	}
	fputs("#[Mean    = ", f);
	fprint_fixed(f, 12, d, ms_hist_mean(h) / unit_divisor);
	fputs(", StdDeviation   = ", f);
	fprint_fixed(f, 12, d, ms_hist_stddev(h) / unit_divisor);
	fputs("]\n#[Max     = ", f);
	fprint_fixed(f, 12, d, (double)h->_max / unit_divisor);
	fprintf(f, ", Total count    = %12llu]\n", (unsigned long long)h->_count);
	fprintf(f, "#[Buckets = %12d, SubBuckets     = %12d]\n", MS_HIST_BUCKETS,
		MS_HIST_SUB_COUNT);
	return ferror(f) ? -EIO : 0;
}

int ms_hist_parse_hdr(FILE *f, ms_hist_row *rows, size_t cap, ms_hist_footer *foot)
{
	char line[256];
	int n = 0;
	int seen_header = 0;
	if (foot)
		memset(foot, 0, sizeof(*foot));
	while (fgets(line, sizeof(line), f)) {
		char *s = line + strspn(line, " \t");
		if (*s == '\n' || *s == '\0')
			continue;
		if (!seen_header) {
			if (strncmp(s, "Value", 5) != 0)
				return -EINVAL;
			seen_header = 1;
			continue;
		}
		if (*s == '#') {
			if (!foot)
				continue;
			double a, b;
			unsigned long long c;
			int x, y;
			if (sscanf(s, "#[Mean = %lf, StdDeviation = %lf]", &a, &b) == 2) {
				foot->mean = a;
				foot->stddev = b;
			} else if (sscanf(s, "#[Max = %lf, Total count = %llu]", &a, &c) == 2) {
				foot->max = a;
				foot->total_count = c;
			} else if (sscanf(s, "#[Buckets = %d, SubBuckets = %d]", &x, &y) == 2) {
				foot->buckets = x;
				foot->sub_buckets = y;
			}
			continue;
		}
		ms_hist_row r;
		unsigned long long c;
		if (sscanf(s, "%lf %lf %llu", &r.value, &r.percentile, &c) != 3)
			return -EINVAL;
		r.total_count = c;
		if ((size_t)n < cap)
			rows[n] = r;
		n++;
	}
	return seen_header ? n : -EINVAL;
}

/* ---- one-line summary and Prometheus ------------------------------------------- */

/* snprintf that appends at *len and keeps counting past cap. */
static void append(char *buf, size_t cap, size_t *len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *at = *len < cap ? buf + *len : NULL;
	int n = vsnprintf(at, at ? cap - *len : 0, fmt, ap);
	va_end(ap);
	if (n > 0)
		*len += (size_t)n;
}

/* Percentile capped at the exact max: the slot's highest value may lie
 * above anything recorded, and a p99 above the max reads as nonsense. */
static uint64_t capped_at(const ms_hist *h, double p)
{
	uint64_t v = ms_hist_value_at(h, p);
	return v > h->_max ? h->_max : v;
}

/* µs with 3 significant digits; integers from 100 µs up (1234 stays 1234).
 * The thresholds sit half a unit of the last place below the next decade, so
 * 9.996 prints as "10.0", not "10.00". */
static void append_us(char *buf, size_t cap, size_t *len, const char *key, uint64_t ns)
{
	double us = (double)ns / 1000.0;
	int decimals = us < 0.9995 ? 3 : us < 9.995 ? 2 : us < 99.95 ? 1 : 0;
	append(buf, cap, len, " %s=%.*fus", key, decimals, us);
}

size_t ms_hist_summary(char *buf, size_t cap, const char *name, const ms_hist *h)
{
	size_t len = 0;
	if (cap)
		buf[0] = '\0';
	append(buf, cap, &len, "%s: n=%llu", name, (unsigned long long)h->_count);
	if (h->_count) {
		append_us(buf, cap, &len, "p50", capped_at(h, 50.0));
		append_us(buf, cap, &len, "p90", capped_at(h, 90.0));
		append_us(buf, cap, &len, "p99", capped_at(h, 99.0));
		append_us(buf, cap, &len, "p99.9", capped_at(h, 99.9));
		append_us(buf, cap, &len, "max", h->_max);
	}
	if (h->_clamped)
		append(buf, cap, &len, " clamped=%llu", (unsigned long long)h->_clamped);
	return len;
}

size_t ms_hist_prometheus(char *buf, size_t cap, const char *metric, const char *labels,
			  const ms_hist *h)
{
	static const struct {
		const char *q;
		double p;
	} quantiles[] = {{"0.5", 50.0}, {"0.9", 90.0}, {"0.99", 99.0}, {"0.999", 99.9}};
	const char *sep = labels[0] ? "," : "";
	size_t len = 0;
	if (cap)
		buf[0] = '\0';
	for (size_t i = 0; i < sizeof(quantiles) / sizeof(quantiles[0]); i++) {
		if (h->_count)
			append(buf, cap, &len, "%s{%s%squantile=\"%s\"} %.9g\n", metric, labels, sep,
			       quantiles[i].q, (double)capped_at(h, quantiles[i].p) / 1e9);
		else
			append(buf, cap, &len, "%s{%s%squantile=\"%s\"} NaN\n", metric, labels, sep,
			       quantiles[i].q);
	}
	const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
	append(buf, cap, &len, "%s_sum%s%s%s %.9g\n", metric, open, labels, close,
	       (double)h->_sum / 1e9);
	append(buf, cap, &len, "%s_count%s%s%s %llu\n", metric, open, labels, close,
	       (unsigned long long)h->_count);
	return len;
}
