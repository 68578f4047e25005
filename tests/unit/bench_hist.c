/*
 * Cost of ms_hist_record: records N values (default 10^8) cycling through a
 * precomputed array of 2^20 pseudo-random latencies (log-uniform, 1 µs ..
 * 16 ms, so each record hits a different slot), RUNS times, and prints ns per
 * record for each run and their median. A baseline loop reads the same
 * values and only sums them, so the difference is the recording itself.
 * Built, not run by ctest (it takes seconds and measures the machine).
 *
 *   build/tests/bench_hist [N [RUNS]]
 *   valgrind --tool=callgrind build/tests/bench_hist 1000000 1
 *     then instructions per record = Ir(record_loop) / N  (callgrind_annotate)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/hist.h"

#define VALS (1u << 20)

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* noinline: callgrind attributes the loop's instructions to these two. */
__attribute__((noinline)) static void record_loop(ms_hist *h, const uint64_t *v, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		ms_hist_record(h, v[i & (VALS - 1)]);
}

__attribute__((noinline)) static uint64_t baseline_loop(const uint64_t *v, uint64_t n)
{
	uint64_t s = 0;
	for (uint64_t i = 0; i < n; i++) {
		s += v[i & (VALS - 1)];
		__asm__ volatile("" : "+r"(s)); /* one add per value, not vectorised away */
	}
	return s;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 100000000ull;
	int runs = argc > 2 ? atoi(argv[2]) : 5;
	if (n == 0 || runs < 1 || runs > 99) {
		fprintf(stderr, "usage: bench_hist [N [RUNS<100]]\n");
		return 2;
	}
	uint64_t *v = malloc(VALS * sizeof(*v));
	ms_hist *h = malloc(sizeof(*h));
	if (!v || !h)
		return 1;
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (uint32_t i = 0; i < VALS; i++) {
		x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
		uint64_t r = x * 0x2545f4914f6cdd1dull;
		unsigned e = 10 + (unsigned)(r % 14); /* 2^10 .. 2^24 ns */
		v[i] = (1ull << e) + ((r >> 8) & ((1ull << e) - 1));
	}

	double rec[100], base[100];
	uint64_t sink = 0;
	for (int k = 0; k < runs; k++) {
		ms_hist_init(h);
		uint64_t t0 = now_ns();
		record_loop(h, v, n);
		uint64_t t1 = now_ns();
		sink += baseline_loop(v, n);
		uint64_t t2 = now_ns();
		rec[k] = (double)(t1 - t0) / (double)n;
		base[k] = (double)(t2 - t1) / (double)n;
		if (ms_hist_count(h) != n)
			return 1;
		printf("run %d: record %.3f ns/value, baseline loop %.3f ns/value\n", k + 1, rec[k],
		       base[k]);
	}
	qsort(rec, (size_t)runs, sizeof(double), cmp_d);
	qsort(base, (size_t)runs, sizeof(double), cmp_d);
	printf("median of %d runs, N=%llu: record %.3f ns/value (baseline %.3f, difference %.3f)\n",
	       runs, (unsigned long long)n, rec[runs / 2], base[runs / 2],
	       rec[runs / 2] - base[runs / 2]);
	printf("(p50 of the last run: %llu ns; sink %llu)\n",
	       (unsigned long long)ms_hist_value_at(h, 50), (unsigned long long)(sink & 1));
	free(h);
	free(v);
	return 0;
}
