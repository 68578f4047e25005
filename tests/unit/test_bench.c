/*
 * Unit tests of msock-bench's pure parts: the fan-out sequence checker
 * (every fan-out figure rests on it, so it must catch an injected gap, a duplicate and a
 * reorder, and accept a new epoch that restarts at 1), the HDR-style
 * histogram, and the small JSON finder and JWT minting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bench.h"
#include "hist.h"
#include "seqchk.h"

static void feed(ms_seqchk *c, const uint64_t *seqs, size_t n, ms_seq_verdict *out)
{
	for (size_t i = 0; i < n; i++)
		out[i] = ms_seqchk_msg(c, seqs[i]);
}

static void test_seq_in_order(void **state)
{
	(void)state;
	ms_seqchk c;
	ms_seqchk_init(&c);
	uint64_t ep = ms_seqchk_epoch_hash("9f3c", 4);
	assert_int_equal(ms_seqchk_join(&c, ep, 41), MS_SEQ_OK);
	for (uint64_t s = 42; s < 1042; s++)
		assert_int_equal(ms_seqchk_msg(&c, s), MS_SEQ_OK);
	assert_false(ms_seqchk_failed(&c));
	assert_int_equal(c.received, 1000);
	assert_int_equal(c.last, 1041);
}

static void test_seq_gap(void **state)
{
	(void)state;
	ms_seqchk c;
	ms_seqchk_init(&c);
	ms_seqchk_join(&c, ms_seqchk_epoch_hash("e", 1), 0);
	uint64_t seqs[] = {1, 2, 3, 5, 6, 7, 10, 11};
	ms_seq_verdict v[8];
	feed(&c, seqs, 8, v);
	assert_int_equal(v[3], MS_SEQ_GAP);
	assert_int_equal(v[4], MS_SEQ_OK); /* one loss counts once */
	assert_int_equal(v[6], MS_SEQ_GAP);
	assert_int_equal(c.gaps, 2);
	assert_int_equal(c.missing, 3); /* 4, 8, 9 */
	assert_true(ms_seqchk_failed(&c));
}

static void test_seq_gap_right_after_join(void **state)
{
	(void)state;
	ms_seqchk c;
	ms_seqchk_init(&c);
	ms_seqchk_join(&c, 7, 41);
	assert_int_equal(ms_seqchk_msg(&c, 43), MS_SEQ_GAP); /* 42 lost */
	assert_int_equal(c.missing, 1);
}

static void test_seq_duplicate(void **state)
{
	(void)state;
	ms_seqchk c;
	ms_seqchk_init(&c);
	ms_seqchk_join(&c, 7, 0);
	uint64_t seqs[] = {1, 2, 2, 3};
	ms_seq_verdict v[4];
	feed(&c, seqs, 4, v);
	assert_int_equal(v[2], MS_SEQ_DUP);
	assert_int_equal(v[3], MS_SEQ_OK);
	assert_int_equal(c.dups, 1);
	assert_true(ms_seqchk_failed(&c));
}

static void test_seq_reorder(void **state)
{
	(void)state;
	ms_seqchk c;
	ms_seqchk_init(&c);
	ms_seqchk_join(&c, 7, 0);
	uint64_t seqs[] = {1, 3, 2, 4};
	ms_seq_verdict v[4];
	feed(&c, seqs, 4, v);
	assert_int_equal(v[1], MS_SEQ_GAP);     /* 2 not there yet */
	assert_int_equal(v[2], MS_SEQ_REORDER); /* 2 arrives late */
	assert_int_equal(v[3], MS_SEQ_OK);
	assert_int_equal(c.reorders, 1);
	assert_true(ms_seqchk_failed(&c));
}

static void test_seq_new_epoch_restarts(void **state)
{
	(void)state;
	ms_seqchk c;
	ms_seqchk_init(&c);
	uint64_t a = ms_seqchk_epoch_hash("aaaa", 4), b = ms_seqchk_epoch_hash("bbbb", 4);
	assert_int_not_equal(a, b);
	ms_seqchk_join(&c, a, 0);
	for (uint64_t s = 1; s <= 50; s++)
		assert_int_equal(ms_seqchk_msg(&c, s), MS_SEQ_OK);
	/* The stream was recreated: the rejoin reply has a new epoch. */
	assert_int_equal(ms_seqchk_join(&c, b, 0), MS_SEQ_OK);
	assert_int_equal(ms_seqchk_msg(&c, 1), MS_SEQ_OK);
	assert_int_equal(ms_seqchk_msg(&c, 2), MS_SEQ_OK);
	assert_false(ms_seqchk_failed(&c));
	/* Same epoch again does not move the baseline back. */
	ms_seqchk_join(&c, b, 0);
	assert_int_equal(ms_seqchk_msg(&c, 1), MS_SEQ_REORDER);
}

static void test_seq_message_before_reply(void **state)
{
	(void)state;
	/* Replies and stream messages are not ordered with each other. */
	ms_seqchk c;
	ms_seqchk_init(&c);
	assert_int_equal(ms_seqchk_msg(&c, 42), MS_SEQ_OK);
	assert_int_equal(ms_seqchk_join(&c, ms_seqchk_epoch_hash("e1", 2), 41), MS_SEQ_OK);
	assert_int_equal(ms_seqchk_msg(&c, 43), MS_SEQ_OK);
	assert_false(ms_seqchk_failed(&c));
}

static void test_hist_percentiles(void **state)
{
	(void)state;
	static ms_hist h;
	ms_hist_init(&h);
	for (uint64_t v = 1; v <= 100000; v++)
		ms_hist_record(&h, v * 1000); /* 1 us .. 100 ms, uniform */
	assert_int_equal(h.total, 100000);
	double p50 = (double)ms_hist_percentile(&h, 50), p99 = (double)ms_hist_percentile(&h, 99);
	assert_true(p50 >= 50000000.0 * 0.999 && p50 <= 50000000.0 * 1.001);
	assert_true(p99 >= 99000000.0 * 0.999 && p99 <= 99000000.0 * 1.001);
	assert_int_equal(ms_hist_percentile(&h, 100), 100000000);
	assert_true(ms_hist_mean(&h) > 50000000.0 * 0.999 && ms_hist_mean(&h) < 50001000.0 * 1.001);
}

static void test_hist_small_exact_and_clamp(void **state)
{
	(void)state;
	static ms_hist h;
	ms_hist_init(&h);
	ms_hist_record(&h, 0);
	ms_hist_record(&h, 777);
	ms_hist_record(&h, 120ull * 1000000000ull);
	assert_int_equal(ms_hist_percentile(&h, 0), 1);
	assert_int_equal(ms_hist_percentile(&h, 50), 777);
	assert_int_equal(h.max, MS_HIST_MAX_NS);
}

static void test_hist_merge(void **state)
{
	(void)state;
	static ms_hist a, b, all;
	ms_hist_init(&a);
	ms_hist_init(&b);
	ms_hist_init(&all);
	for (uint64_t v = 1; v < 5000; v++) {
		ms_hist_record(v & 1 ? &a : &b, v * 997);
		ms_hist_record(&all, v * 997);
	}
	ms_hist_merge(&a, &b);
	assert_int_equal(a.total, all.total);
	assert_int_equal(a.min, all.min);
	assert_int_equal(a.max, all.max);
	assert_memory_equal(a.counts, all.counts, sizeof(a.counts));
}

static void test_json_get(void **state)
{
	(void)state;
	const char *m = "{\"event\":\"message\",\"stream\":\"bench.7\",\"seq\":42,\"from\":\"9\","
			"\"data\":{\"t\":123456789,\"s\":\"x,}\\\"y\",\"k\":[1,{\"seq\":5}]}}";
	const char *v;
	size_t vn;
	uint64_t u;
	assert_int_equal(ms_bench_json_get(m, strlen(m), "stream", &v, &vn), 0);
	assert_int_equal(vn, 7);
	assert_memory_equal(v, "bench.7", 7);
	assert_int_equal(ms_bench_json_u64(m, strlen(m), "seq", &u), 0);
	assert_int_equal(u, 42);
	assert_int_equal(ms_bench_json_get(m, strlen(m), "data", &v, &vn), 0);
	assert_int_equal(ms_bench_json_u64(v, vn, "t", &u), 0);
	assert_int_equal(u, 123456789);
	assert_int_equal(ms_bench_json_get(m, strlen(m), "id", &v, &vn), -1);
	const char *r = "{\"id\":1,\"ok\":true,\"seq\":41,\"epoch\":\"9f3c\"}";
	assert_int_equal(ms_bench_json_get(r, strlen(r), "ok", &v, &vn), 0);
	assert_int_equal(vn, 4);
	assert_memory_equal(v, "true", 4);
}

static void test_jwt_shape(void **state)
{
	(void)state;
	char tok[512];
	int n = ms_bench_jwt("secret", 42, 2000000000, tok, sizeof(tok));
	assert_true(n > 0);
	/* header.payload.signature; the header is the fixed HS256 one */
	assert_memory_equal(tok, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.", 37);
	const char *dot2 = strrchr(tok, '.');
	assert_non_null(dot2);
	assert_int_equal(strlen(dot2 + 1), 43); /* 32-byte MAC, base64url, unpadded */
	char tok2[512];
	assert_int_equal(ms_bench_jwt("secret", 42, 2000000000, tok2, sizeof(tok2)), n);
	assert_string_equal(tok, tok2);
	assert_int_equal(ms_bench_jwt("secret", 42, 2000000000, tok2, 10), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seq_in_order),
		cmocka_unit_test(test_seq_gap),
		cmocka_unit_test(test_seq_gap_right_after_join),
		cmocka_unit_test(test_seq_duplicate),
		cmocka_unit_test(test_seq_reorder),
		cmocka_unit_test(test_seq_new_epoch_restarts),
		cmocka_unit_test(test_seq_message_before_reply),
		cmocka_unit_test(test_hist_percentiles),
		cmocka_unit_test(test_hist_small_exact_and_clamp),
		cmocka_unit_test(test_hist_merge),
		cmocka_unit_test(test_json_get),
		cmocka_unit_test(test_jwt_shape),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
