/* Latency histogram: slot layout and error bound, merge, percentiles against
 * a sorted reference, statistics, clamping, the HdrHistogram text format
 * (golden output and round trip), the summary line and Prometheus text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hist.h"

/* ---- helpers ------------------------------------------------------------------ */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void) /* xorshift64* */
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static double rnd01(void)
{
	return (double)(rnd() >> 11) / 9007199254740992.0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static ms_hist *hist_new(void)
{
	ms_hist *h = malloc(sizeof(*h));
	assert_non_null(h);
	ms_hist_init(h);
	return h;
}

/* Samples from one of several shapes, all within the tracked range. */
enum dist { D_UNIFORM, D_LOGUNIFORM, D_EXP, D_BIMODAL, D_CONST, D_SMALL, D_COUNT };

static uint64_t sample(enum dist d)
{
	switch (d) {
	case D_UNIFORM: return 1 + rnd() % 1000000;                      /* 1 ns .. 1 ms */
	case D_LOGUNIFORM: return (uint64_t)exp(log(1e3) + rnd01() * (log(6e10) - log(1e3)));
	case D_EXP: return (uint64_t)(-log(1.0 - rnd01()) * 50000.0);     /* mean 50 µs */
	case D_BIMODAL: return rnd() % 100 < 95 ? 20000 + rnd() % 2000 : 5000000 + rnd() % 500000;
	case D_CONST: return 123456;
	case D_SMALL: return rnd() % 300;                                  /* exact region and above */
	default: return 0;
	}
}

/* ---- layout -------------------------------------------------------------------- */

static void check_slot(uint64_t v)
{
	uint64_t lo = ms_hist_lowest_equiv(v), hi = ms_hist_highest_equiv(v);
	assert_true(lo <= v && v <= hi);
	assert_int_equal(ms_hist_index(lo), ms_hist_index(v));
	assert_int_equal(ms_hist_index(hi), ms_hist_index(v));
	assert_true(ms_hist_index(v) < MS_HIST_LEN);
	/* Bucket error: the slot is at most 1/128 of its lowest value (exact below 256). */
	if (v < 256)
		assert_true(lo == v && hi == v);
	else
		assert_true((hi - lo + 1) * 128 <= lo);
	/* Neighbouring slots touch: no value falls between slots. */
	if (lo > 0)
		assert_int_equal(ms_hist_index(lo - 1), ms_hist_index(v) - 1);
	if (hi < MS_HIST_MAX_NS)
		assert_int_equal(ms_hist_index(hi + 1), ms_hist_index(v) + 1);
}

static void test_layout(void **state)
{
	(void)state;
	assert_int_equal(MS_HIST_LEN, 3968);
	assert_true(MS_HIST_MAX_NS >= (1ull << 36)); /* at least 68.7 s */
	assert_int_equal(MS_HIST_MAX_NS, (1ull << 37) - 1);
	assert_int_equal(ms_hist_index(0), 0);
	assert_int_equal(ms_hist_index(255), 255);
	assert_int_equal(ms_hist_index(256), 256);
	assert_int_equal(ms_hist_index(MS_HIST_MAX_NS), MS_HIST_LEN - 1);
	/* Every value below 2^20, then around every power of two and at random. */
	for (uint64_t v = 0; v < (1u << 20); v++)
		check_slot(v);
	for (int e = 8; e < 37; e++) {
		uint64_t p = 1ull << e;
		for (uint64_t d = 0; d < 300 && d < p; d++) {
			check_slot(p + d);
			check_slot(p - 1 - d);
		}
		for (int k = 0; k < 2000; k++)
			check_slot(p + rnd() % p);
	}
	/* Slots are visited in order: the index is monotonic in the value. */
	size_t prev = 0;
	for (uint64_t v = 1; v < MS_HIST_MAX_NS; v += v / 97 + 1) {
		size_t i = ms_hist_index(v);
		assert_true(i >= prev);
		prev = i;
	}
}

/* ---- recording, stats, merge, clamp -------------------------------------------- */

static void test_record(void **state)
{
	(void)state;
	ms_hist *h = hist_new();
	assert_int_equal(ms_hist_count(h), 0);
	assert_int_equal(ms_hist_min(h), 0);
	assert_int_equal(ms_hist_max(h), 0);
	assert_true(ms_hist_mean(h) == 0.0);
	assert_int_equal(ms_hist_value_at(h, 50), 0);

	ms_hist_record(h, 1000);
	ms_hist_record(h, 1000);
	ms_hist_record(h, 7);
	ms_hist_record(h, 1500000);
	assert_int_equal(ms_hist_count(h), 4);
	assert_int_equal(ms_hist_min(h), 7);
	assert_int_equal(ms_hist_max(h), 1500000);
	assert_true(fabs(ms_hist_mean(h) - (2000.0 + 7 + 1500000) / 4) < 1e-9);
	assert_int_equal(h->_counts[ms_hist_index(1000)], 2);
	assert_int_equal(h->_counts[7], 1);
	assert_int_equal(h->_counts[ms_hist_index(1500000)], 1);
	uint64_t sum = 0;
	for (size_t i = 0; i < MS_HIST_LEN; i++)
		sum += h->_counts[i];
	assert_int_equal(sum, 4);
	assert_int_equal(ms_hist_clamped(h), 0);

	ms_hist_reset(h);
	assert_int_equal(ms_hist_count(h), 0);
	assert_int_equal(h->_counts[ms_hist_index(1000)], 0);
	assert_int_equal(ms_hist_max(h), 0);
	free(h);
}

static void test_stats(void **state)
{
	(void)state;
	enum { N = 50000 };
	uint64_t *s = malloc(N * sizeof(*s));
	for (int d = 0; d < D_COUNT; d++) {
		ms_hist *h = hist_new();
		uint64_t mn = UINT64_MAX, mx = 0;
		long double sum = 0;
		for (int i = 0; i < N; i++) {
			s[i] = sample((enum dist)d);
			ms_hist_record(h, s[i]);
			mn = s[i] < mn ? s[i] : mn;
			mx = s[i] > mx ? s[i] : mx;
			sum += s[i];
		}
		double mean = (double)(sum / N), var = 0;
		for (int i = 0; i < N; i++)
			var += ((double)s[i] - mean) * ((double)s[i] - mean);
		double sd = sqrt(var / N);
		assert_int_equal(ms_hist_count(h), N);
		assert_int_equal(ms_hist_min(h), mn);
		assert_int_equal(ms_hist_max(h), mx);
		assert_true(fabs(ms_hist_mean(h) - mean) <= mean * 1e-12);
		/* Stddev from slot midpoints: each value moves by < 1/256 of itself. */
		assert_true(fabs(ms_hist_stddev(h) - sd) <= 0.01 * sd + mean / 256.0 + 1.0);
		free(h);
	}
	free(s);
}

static void test_merge(void **state)
{
	(void)state;
	ms_hist *a = hist_new(), *b = hist_new(), *all = hist_new(), *empty = hist_new();
	for (int i = 0; i < 20000; i++) {
		uint64_t v = sample((enum dist)(i % D_COUNT));
		ms_hist_record(i % 3 ? a : b, v);
		ms_hist_record(all, v);
	}
	ms_hist_record(b, UINT64_MAX); /* the clamp count merges too */
	ms_hist_record(all, UINT64_MAX);
	ms_hist_merge(a, b);
	assert_memory_equal(a, all, sizeof(*a));

	/* Empty into empty stays empty; empty into full changes nothing. */
	ms_hist *e2 = hist_new();
	ms_hist_merge(e2, empty);
	assert_memory_equal(e2, empty, sizeof(*e2));
	ms_hist_merge(a, empty);
	assert_memory_equal(a, all, sizeof(*a));
	/* Full into empty: a copy (a snapshot merged into a zeroed aggregate). */
	ms_hist_merge(e2, all);
	assert_memory_equal(e2, all, sizeof(*e2));
	free(a), free(b), free(all), free(empty), free(e2);
}

static void test_clamp(void **state)
{
	(void)state;
	ms_hist *h = hist_new();
	ms_hist_record(h, MS_HIST_MAX_NS); /* the top value itself is in range */
	assert_int_equal(ms_hist_clamped(h), 0);
	ms_hist_record(h, 1ull << 36);    /* 68.7 s tracked, not clamped */
	assert_int_equal(ms_hist_clamped(h), 0);
	assert_true(ms_hist_highest_equiv(1ull << 36) - (1ull << 36) < (1ull << 36) / 128);
	ms_hist_record(h, MS_HIST_MAX_NS + 1);
	ms_hist_record(h, 1ull << 50);
	ms_hist_record(h, UINT64_MAX);
	assert_int_equal(ms_hist_count(h), 5);
	assert_int_equal(ms_hist_clamped(h), 3);
	assert_int_equal(ms_hist_max(h), MS_HIST_MAX_NS);
	assert_int_equal(h->_counts[MS_HIST_LEN - 1], 4);
	assert_int_equal(ms_hist_value_at(h, 100.0), MS_HIST_MAX_NS);
	assert_int_equal(ms_hist_value_at(h, 0.0), ms_hist_lowest_equiv(1ull << 36));
	/* The sum holds many clamped values without wrapping. */
	for (int i = 0; i < 1000; i++)
		ms_hist_record(h, UINT64_MAX);
	assert_true(fabs(ms_hist_mean(h) - (double)MS_HIST_MAX_NS) < (double)MS_HIST_MAX_NS * 0.01);
	free(h);
}

/* ---- percentiles against a sorted reference ------------------------------------- */

/* Exact percentile of sorted samples, nearest rank: the smallest sample with
 * at least p% of the samples at or below it. */
static uint64_t exact_at(const uint64_t *sorted, size_t n, double p)
{
	double r = ceil(p * (double)n / 100.0 - 1e-9);
	size_t rank = r < 1 ? 1 : (size_t)r;
	return sorted[(rank > n ? n : rank) - 1];
}

static void check_percentiles(const uint64_t *s, size_t n)
{
	static const double ps[] = {0.0, 0.001, 0.1, 1, 2.2, 5, 10, 25, 33.3, 50, 66.7, 75, 90,
				     95, 99, 99.5, 99.9, 99.99, 99.999, 100};
	ms_hist *h = hist_new();
	uint64_t *sorted = malloc(n * sizeof(*sorted));
	for (size_t i = 0; i < n; i++) {
		ms_hist_record(h, s[i]);
		sorted[i] = s[i];
	}
	qsort(sorted, n, sizeof(*sorted), cmp_u64);
	for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]) + 200; k++) {
		double p = k < sizeof(ps) / sizeof(ps[0]) ? ps[k] : rnd01() * 100.0;
		uint64_t exact = exact_at(sorted, n, p), got = ms_hist_value_at(h, p);
		if (p == 0.0) {
			assert_int_equal(got, ms_hist_lowest_equiv(sorted[0]));
			continue;
		}
		/* HdrHistogram semantics: the top of the exact sample's slot ... */
		if (got != ms_hist_highest_equiv(exact))
			fail_msg("n=%zu p=%.6f exact=%llu got=%llu", n, p, (unsigned long long)exact,
				 (unsigned long long)got);
		/* ... hence never below it and within the bucket error above it. */
		assert_true(got >= exact);
		assert_true((got - exact) * 128 <= exact || got < 256);
	}
	free(sorted);
	free(h);
}

static void test_percentiles(void **state)
{
	(void)state;
	static const size_t sizes[] = {1, 2, 3, 10, 999, 1000, 100000};
	uint64_t *s = malloc(100000 * sizeof(*s));
	for (int d = 0; d < D_COUNT; d++) {
		for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
			for (size_t i = 0; i < sizes[k]; i++)
				s[i] = sample((enum dist)d);
			check_percentiles(s, sizes[k]);
		}
	}
	/* The ulp guard: 2.2 * 1500 / 100 computes as 33.00000000000001, yet
	 * 2.2% of 1500 is rank 33 (33 µs), not 34 (34 µs, another slot). */
	for (size_t i = 0; i < 1500; i++)
		s[i] = 1000 + i * 1000;
	check_percentiles(s, 1500);
	free(s);
}

/* ---- HdrHistogram text ----------------------------------------------------------- */

static char *write_to_string(const ms_hist *h, double div)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	assert_int_equal(ms_hist_write_hdr(f, h, div), 0);
	fclose(f);
	return buf;
}

static void test_hdr_golden(void **state)
{
	(void)state;
	ms_hist *h = hist_new();
	char *out = write_to_string(h, 1.0);
	assert_string_equal(out,
		"       Value     Percentile TotalCount 1/(1-Percentile)\n"
		"\n"
		"#[Mean    =         0.00, StdDeviation   =         0.00]\n"
		"#[Max     =         0.00, Total count    =            0]\n"
		"#[Buckets =           30, SubBuckets     =          256]\n");
	free(out);

	/* 1000 ns sits in [1000, 1003], 2000 ns in [2000, 2007]. Ticks: 0, 10, ..
	 * 50% at the first slot, then 55% (halved step) at the second, then 100%.
	 * Stddev of midpoints 1002 and 2004 around 1500: sqrt((498²+504²)/2). */
	ms_hist_record(h, 1000);
	ms_hist_record(h, 2000);
	out = write_to_string(h, 1.0);
	assert_string_equal(out,
		"       Value     Percentile TotalCount 1/(1-Percentile)\n"
		"\n"
		"     1003.00 0.000000000000          1           1.00\n"
		"     1003.00 0.100000000000          1           1.11\n"
		"     1003.00 0.200000000000          1           1.25\n"
		"     1003.00 0.300000000000          1           1.43\n"
		"     1003.00 0.400000000000          1           1.67\n"
		"     1003.00 0.500000000000          1           2.00\n"
		"     2007.00 0.550000000000          2           2.22\n"
		"     2007.00 1.000000000000          2\n"
		"#[Mean    =      1500.00, StdDeviation   =       501.01]\n"
		"#[Max     =      2000.00, Total count    =            2]\n"
		"#[Buckets =           30, SubBuckets     =          256]\n");
	free(out);

	/* Microseconds: the server's unit. */
	ms_hist_reset(h);
	ms_hist_record(h, 1000);
	out = write_to_string(h, 1000.0);
	assert_string_equal(out,
		"       Value     Percentile TotalCount 1/(1-Percentile)\n"
		"\n"
		"        1.00 0.000000000000          1           1.00\n"
		"        1.00 1.000000000000          1\n"
		"#[Mean    =         1.00, StdDeviation   =         0.00]\n"
		"#[Max     =         1.00, Total count    =            1]\n"
		"#[Buckets =           30, SubBuckets     =          256]\n");
	free(out);

	/* Ties round half-up on the shortest decimal, as Java's Formatter does
	 * (C's printf would print 98.81, 20.09 and 9.99): 98815 is its slot's
	 * top; 19990 sits in [19968, 20095]; mean (0 + 19990) / 2 = 9.995. */
	ms_hist_reset(h);
	ms_hist_record(h, 98815);
	out = write_to_string(h, 1000.0);
	assert_non_null(strstr(out, "\n       98.82 0.000000000000          1           1.00\n"));
	assert_non_null(strstr(out, "#[Mean    =        98.82, StdDeviation   =         0.26]\n"));
	free(out);
	ms_hist_reset(h);
	ms_hist_record(h, 0);
	ms_hist_record(h, 19990);
	out = write_to_string(h, 1000.0);
	assert_non_null(strstr(out, "\n        0.00 0.000000000000          1           1.00\n"));
	assert_non_null(strstr(out, "\n       20.10 1.000000000000          2\n"));
	assert_non_null(strstr(out, "#[Mean    =        10.00, "));
	free(out);
	free(h);
}

/* Tick levels (percent) as HdrHistogram's PercentileIterator takes them
 * (its very arithmetic: log ratio, truncated). */
static double tick_after(double level)
{
	double k = floor(log(100.0 / (100.0 - level)) / log(2.0));
	return level + 100.0 / (5.0 * pow(2.0, k + 1));
}

/* Equal as printed with 2 decimals (plus the double's own rounding). */
static int near2(double printed, double exact)
{
	return fabs(printed - exact) <= 0.005 + 1e-14 * fabs(exact);
}

static size_t count_le(const uint64_t *sorted, size_t n, uint64_t v)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (sorted[mid] <= v)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void test_hdr_roundtrip(void **state)
{
	(void)state;
	enum { N = 100000, CAP = 1024 };
	uint64_t *s = malloc(N * sizeof(*s));
	ms_hist_row *rows = malloc(CAP * sizeof(*rows));
	for (int d = 0; d < D_COUNT; d++) {
		ms_hist *h = hist_new();
		for (int i = 0; i < N; i++) {
			s[i] = sample((enum dist)d);
			ms_hist_record(h, s[i]);
		}
		qsort(s, N, sizeof(*s), cmp_u64);

		FILE *f = tmpfile();
		assert_non_null(f);
		assert_int_equal(ms_hist_write_hdr(f, h, 1000.0), 0);
		rewind(f);
		ms_hist_footer foot;
		int n = ms_hist_parse_hdr(f, rows, CAP, &foot);
		fclose(f);
		/* One slot (D_CONST): the 0% row and the 100% row; else many ticks. */
		if (!(n >= (d == D_CONST ? 2 : 20) && n < CAP))
			fail_msg("dist %d: %d rows", d, n);

		double level = 0.0;
		for (int r = 0; r < n - 1; r++) {
			/* The tick schedule, row after row. */
			assert_true(fabs(rows[r].percentile - level / 100.0) < 1e-12);
			uint64_t c = rows[r].total_count;
			assert_true(c >= 1 && c <= N);
			/* The row's value is the top of the slot holding rank c ... */
			uint64_t top = ms_hist_highest_equiv(s[c - 1]);
			if (!near2(rows[r].value, (double)top / 1000.0))
				fail_msg("dist %d row %d: %.3f %.12f %llu, top %llu", d, r, rows[r].value,
					 rows[r].percentile, (unsigned long long)c, (unsigned long long)top);
			/* ... its count is everything up to that slot ... */
			assert_int_equal(c, count_le(s, N, top));
			/* ... and that slot is the first to reach the tick. */
			uint64_t before = count_le(s, N, ms_hist_lowest_equiv(s[c - 1]) - 1);
			if (ms_hist_lowest_equiv(s[c - 1]) == 0)
				before = 0;
			assert_true(100.0 * (double)c / N >= level);
			assert_true(100.0 * (double)before / N < level || level == 0.0);
			level = tick_after(level);
		}
		assert_true(rows[n - 1].percentile == 1.0);
		assert_int_equal(rows[n - 1].total_count, N);
		assert_true(near2(rows[n - 1].value, (double)ms_hist_highest_equiv(s[N - 1]) / 1000.0));
		assert_int_equal(foot.total_count, N);
		assert_true(near2(foot.max, (double)s[N - 1] / 1000.0));
		assert_true(near2(foot.mean, ms_hist_mean(h) / 1000.0));
		assert_true(near2(foot.stddev, ms_hist_stddev(h) / 1000.0));
		assert_int_equal(foot.buckets, MS_HIST_BUCKETS);
		assert_int_equal(foot.sub_buckets, MS_HIST_SUB_COUNT);
		free(h);
	}
	free(rows);
	free(s);
}

static void test_hdr_parse_other(void **state)
{
	(void)state;
	/* msock-bench --hist writes 3 decimals; rows beyond cap are counted. */
	static const char text[] =
		"       Value     Percentile TotalCount 1/(1-Percentile)\n\n"
		"      12.345 0.000000000000          1           1.00\n"
		"      20.001 0.500000000000          5           2.00\n"
		"      99.999 1.000000000000         10\n"
		"#[Mean    =       30.000, StdDeviation   =        5.500]\n"
		"#[Max     =       99.999, Total count    =           10]\n"
		"#[Buckets =           26, SubBuckets     =         2048]\n";
	ms_hist_row rows[2];
	ms_hist_footer foot;
	FILE *f = fmemopen((void *)text, sizeof(text) - 1, "r");
	assert_int_equal(ms_hist_parse_hdr(f, rows, 2, &foot), 3);
	fclose(f);
	assert_true(rows[0].value == 12.345 && rows[0].percentile == 0.0 && rows[0].total_count == 1);
	assert_true(rows[1].value == 20.001 && rows[1].percentile == 0.5 && rows[1].total_count == 5);
	assert_true(foot.mean == 30.0 && foot.stddev == 5.5 && foot.max == 99.999);
	assert_int_equal(foot.total_count, 10);
	assert_int_equal(foot.buckets, 26);
	assert_int_equal(foot.sub_buckets, 2048);

	static const char bad1[] = "hello\n";
	f = fmemopen((void *)bad1, sizeof(bad1) - 1, "r");
	assert_int_equal(ms_hist_parse_hdr(f, rows, 2, NULL), -EINVAL);
	fclose(f);
	static const char bad2[] = "   Value Percentile TotalCount 1/(1-Percentile)\n\n   1.0 oops\n";
	f = fmemopen((void *)bad2, sizeof(bad2) - 1, "r");
	assert_int_equal(ms_hist_parse_hdr(f, rows, 2, NULL), -EINVAL);
	fclose(f);
}

/* ---- summary line and Prometheus --------------------------------------------------- */

/* 980 × 10 µs, 10 × 50 µs, 9 × 200 µs, 1 × 3 ms. Slot tops: 10047, 50175,
 * 200703, 3014655 (capped at the max, 3000000). */
static ms_hist *sample_hist(void)
{
	ms_hist *h = hist_new();
	for (int i = 0; i < 980; i++)
		ms_hist_record(h, 10000);
	for (int i = 0; i < 10; i++)
		ms_hist_record(h, 50000);
	for (int i = 0; i < 9; i++)
		ms_hist_record(h, 200000);
	ms_hist_record(h, 3000000);
	return h;
}

static void test_summary(void **state)
{
	(void)state;
	char buf[256];
	ms_hist *h = hist_new();
	size_t n = ms_hist_summary(buf, sizeof(buf), "lat", h);
	assert_string_equal(buf, "lat: n=0");
	assert_int_equal(n, strlen(buf));
	free(h);

	h = sample_hist();
	const char *want = "lat: n=1000 p50=10.0us p90=10.0us p99=50.2us p99.9=201us max=3000us";
	n = ms_hist_summary(buf, sizeof(buf), "lat", h);
	assert_string_equal(buf, want);
	assert_int_equal(n, strlen(want));
	/* Too small: snprintf semantics (full length back, truncated and terminated). */
	n = ms_hist_summary(buf, 10, "lat", h);
	assert_int_equal(n, strlen(want));
	assert_string_equal(buf, "lat: n=10");
	assert_int_equal(ms_hist_summary(NULL, 0, "lat", h), strlen(want));
	ms_hist_record(h, UINT64_MAX);
	ms_hist_summary(buf, sizeof(buf), "lat", h);
	/* Rank 991 is now a 200 µs value, rank 1000 the 3 ms one, no longer the max. */
	assert_string_equal(buf, "lat: n=1001 p50=10.0us p90=10.0us p99=201us p99.9=3015us "
				 "max=137438953us clamped=1");
	free(h);

	/* Below a microsecond: three decimals; 9.996 µs rounds into the next decade. */
	h = hist_new();
	ms_hist_record(h, 500);
	ms_hist_summary(buf, sizeof(buf), "x", h);
	assert_string_equal(buf, "x: n=1 p50=0.500us p90=0.500us p99=0.500us p99.9=0.500us max=0.500us");
	ms_hist_reset(h);
	ms_hist_record(h, 9996);
	ms_hist_summary(buf, sizeof(buf), "x", h);
	assert_string_equal(buf, "x: n=1 p50=10.0us p90=10.0us p99=10.0us p99.9=10.0us max=10.0us");
	free(h);
}

/* Parse one exposition line "name{labels} value" into its parts. */
static void prom_line(const char *line, char *name, char *labels, double *value)
{
	const char *brace = strchr(line, '{'), *space = strrchr(line, ' ');
	assert_non_null(space);
	if (brace && brace < space) {
		const char *end = strchr(brace, '}');
		assert_non_null(end);
		memcpy(name, line, (size_t)(brace - line));
		name[brace - line] = '\0';
		memcpy(labels, brace + 1, (size_t)(end - brace - 1));
		labels[end - brace - 1] = '\0';
		assert_true(end + 1 == space);
	} else {
		memcpy(name, line, (size_t)(space - line));
		name[space - line] = '\0';
		labels[0] = '\0';
	}
	char *endp;
	*value = strtod(space + 1, &endp);
	assert_true(endp != space + 1 && *endp == '\0');
}

static void check_prom(const ms_hist *h, const char *labels)
{
	static const char *qs[] = {"0.5", "0.9", "0.99", "0.999"};
	static const double ps[] = {50, 90, 99, 99.9};
	char buf[1024], name[128], lab[256], want[256];
	size_t n = ms_hist_prometheus(buf, sizeof(buf), "ms_rtt_seconds", labels, h);
	assert_int_equal(n, strlen(buf));
	assert_null(strstr(buf, ",,"));
	assert_null(strstr(buf, "{,"));
	assert_null(strstr(buf, ",}"));
	assert_null(strstr(buf, "{}"));
	const char *sep = labels[0] ? "," : "";

	char *save = NULL, *line = strtok_r(buf, "\n", &save);
	double v;
	for (int i = 0; i < 4; i++, line = strtok_r(NULL, "\n", &save)) {
		assert_non_null(line);
		prom_line(line, name, lab, &v);
		assert_string_equal(name, "ms_rtt_seconds");
		snprintf(want, sizeof(want), "%s%squantile=\"%s\"", labels, sep, qs[i]);
		assert_string_equal(lab, want);
		if (ms_hist_count(h) == 0) {
			assert_true(isnan(v));
			continue;
		}
		uint64_t ns = ms_hist_value_at(h, ps[i]);
		ns = ns > ms_hist_max(h) ? ms_hist_max(h) : ns;
		assert_true(fabs(v - (double)ns / 1e9) <= (double)ns / 1e9 * 1e-8);
	}
	assert_non_null(line);
	prom_line(line, name, lab, &v);
	assert_string_equal(name, "ms_rtt_seconds_sum");
	assert_string_equal(lab, labels);
	double sum = ms_hist_mean(h) * (double)ms_hist_count(h) / 1e9;
	assert_true(fabs(v - sum) <= sum * 1e-8);
	line = strtok_r(NULL, "\n", &save);
	assert_non_null(line);
	prom_line(line, name, lab, &v);
	assert_string_equal(name, "ms_rtt_seconds_count");
	assert_string_equal(lab, labels);
	assert_true(v == (double)ms_hist_count(h));
	assert_null(strtok_r(NULL, "\n", &save));
}

static void test_prometheus(void **state)
{
	(void)state;
	ms_hist *h = sample_hist();
	check_prom(h, "");
	check_prom(h, "core=\"3\"");
	check_prom(h, "core=\"3\",kind=\"publish\"");

	char buf[512];
	ms_hist_prometheus(buf, sizeof(buf), "m", "", h);
	assert_string_equal(buf,
		"m{quantile=\"0.5\"} 1.0047e-05\n"
		"m{quantile=\"0.9\"} 1.0047e-05\n"
		"m{quantile=\"0.99\"} 5.0175e-05\n"
		"m{quantile=\"0.999\"} 0.000200703\n"
		"m_sum 0.0151\n"
		"m_count 1000\n");
	/* snprintf semantics. */
	size_t full = strlen(buf);
	assert_int_equal(ms_hist_prometheus(buf, 5, "m", "", h), full);
	assert_string_equal(buf, "m{qu");
	assert_int_equal(ms_hist_prometheus(NULL, 0, "m", "", h), full);

	ms_hist_reset(h);
	check_prom(h, "");
	ms_hist_prometheus(buf, sizeof(buf), "m", "a=\"b\"", h);
	assert_string_equal(buf,
		"m{a=\"b\",quantile=\"0.5\"} NaN\n"
		"m{a=\"b\",quantile=\"0.9\"} NaN\n"
		"m{a=\"b\",quantile=\"0.99\"} NaN\n"
		"m{a=\"b\",quantile=\"0.999\"} NaN\n"
		"m_sum{a=\"b\"} 0\n"
		"m_count{a=\"b\"} 0\n");
	free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_record),
		cmocka_unit_test(test_stats),
		cmocka_unit_test(test_merge),
		cmocka_unit_test(test_clamp),
		cmocka_unit_test(test_percentiles),
		cmocka_unit_test(test_hdr_golden),
		cmocka_unit_test(test_hdr_roundtrip),
		cmocka_unit_test(test_hdr_parse_other),
		cmocka_unit_test(test_summary),
		cmocka_unit_test(test_prometheus),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
