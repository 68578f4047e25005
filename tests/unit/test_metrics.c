/*
 * /metrics text (core/metrics.h): every line is valid Prometheus text
 * exposition, each family has one HELP and one TYPE before its samples,
 * per-worker values land on the right worker and transport labels, and
 * the latency summaries are merged over the workers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/metrics.h"

static const char *const kinds[MS_MAX_CTX] = { "plain", "tls", "admin", NULL };

static ms_worker_snap *make(uint32_t n)
{
	ms_worker_snap *s = calloc(n, sizeof(*s));
	assert_non_null(s);
	for (uint32_t i = 0; i < n; i++) {
		s[i].id = i;
		s[i].cap = 1000;
		s[i].live = 10 + i;
		s[i].live_kind[0] = 7 + i;
		s[i].live_kind[1] = 3;
		s[i].st.accepts = 100 * (i + 1);
		s[i].st.deliveries = 123456789012ull + i;
		s[i].st.ws_utf8_errors = 5 + i;
		s[i].st.auth_fail[MS_AUTH_EXPIRED] = 7 + i;
		s[i].mb.overflows = 2 * i;
		for (int k = 0; k < MS_HIST_COUNT; k++)
			ms_hist_init(&s[i].hist[k]);
	}
	return s;
}

/* The value of the sample whose name and labels are exactly `key`
 * ("name{labels}" as printed); fails if absent or repeated. */
static double sample(const char *text, const char *key)
{
	double v = 0;
	int found = 0;
	size_t kl = strlen(key);
	for (const char *p = text; *p;) {
		const char *e = strchr(p, '\n');
		assert_non_null(e);
		if ((size_t)(e - p) > kl && strncmp(p, key, kl) == 0 && p[kl] == ' ') {
			v = strtod(p + kl + 1, NULL);
			found++;
		}
		p = e + 1;
	}
	if (found != 1)
		fail_msg("%s: %d samples", key, found);
	return v;
}

static void lines_are_valid_exposition(void **state)
{
	ms_worker_snap *s = make(3);
	size_t len;
	char *t = ms_metrics_text(s, 3, kinds, &len);
	assert_int_equal(strlen(t), len);
	assert_true(len > 0 && t[len - 1] == '\n');
	char help[64][64], type[64][64];
	int nhelp = 0, ntype = 0;
	for (char *p = t; *p;) {
		char *e = strchr(p, '\n');
		*e = 0;
		if (strncmp(p, "# HELP ", 7) == 0) {
			assert_true(nhelp < 64);
			sscanf(p + 7, "%63s", help[nhelp]);
			for (int i = 0; i < nhelp; i++)
				assert_string_not_equal(help[i], help[nhelp]);
			nhelp++;
		} else if (strncmp(p, "# TYPE ", 7) == 0) {
			char kind[32];
			assert_true(ntype < 64);
			assert_int_equal(sscanf(p + 7, "%63s %31s", type[ntype], kind), 2);
			assert_true(strcmp(kind, "counter") == 0 || strcmp(kind, "gauge") == 0 ||
				    strcmp(kind, "summary") == 0);
			/* HELP comes first, for the same family. */
			assert_string_equal(type[ntype], help[nhelp - 1]);
			ntype++;
		} else {
			/* name{labels} value, the family declared just before. */
			assert_true(ntype > 0);
			const char *fam = type[ntype - 1];
			size_t fl = strlen(fam);
			assert_memory_equal(p, fam, fl);
			const char *q = p + fl;
			if (strncmp(q, "_sum", 4) == 0 || strncmp(q, "_count", 6) == 0)
				q += q[1] == 's' ? 4 : 6;
			if (*q == '{') {
				q = strchr(q, '}');
				assert_non_null(q);
				q++;
			}
			assert_int_equal(*q, ' ');
			char *end;
			const char *num = q + 1;
			if (strcmp(num, "NaN") != 0) {
				strtod(num, &end);
				assert_true(end != num && *end == 0);
			}
		}
		p = e + 1;
	}
	assert_int_equal(nhelp, ntype);
	free(t);
	free(s);
}

static void values_land_on_their_labels(void **state)
{
	ms_worker_snap *s = make(2);
	size_t len;
	char *t = ms_metrics_text(s, 2, kinds, &len);
	assert_true(sample(t, "mezon_workers") == 2);
	assert_true(sample(t, "mezon_connections{worker=\"1\",transport=\"plain\"}") == 8);
	assert_true(sample(t, "mezon_connections{worker=\"0\",transport=\"tls\"}") == 3);
	assert_true(sample(t, "mezon_connections{worker=\"1\",transport=\"admin\"}") == 0);
	assert_null(strstr(t, "transport=\"(null)\""));
	assert_true(sample(t, "mezon_pool_slots_used{worker=\"1\"}") == 11);
	assert_true(sample(t, "mezon_accepts_total{worker=\"1\"}") == 200);
	assert_true(sample(t, "mezon_deliveries_total{worker=\"0\"}") == 123456789012.0);
	assert_true(sample(t, "mezon_mailbox_overflows_total{worker=\"1\"}") == 2);
	assert_true(sample(t, "mezon_errors_total{worker=\"1\",kind=\"ws_utf8\"}") == 6);
	assert_true(sample(t, "mezon_auth_failures_total{worker=\"1\",reason=\"expired\"}") == 8);
	assert_true(sample(t, "mezon_auth_failures_total{worker=\"0\",reason=\"missing\"}") == 0);
	for (int r = 0; r < MS_AUTH_REASONS; r++)
		assert_non_null(ms_auth_reason_names[r]);
	assert_true(sample(t, "mezon_draining") == 0);
	free(t);
	s[1].draining = true;
	t = ms_metrics_text(s, 2, kinds, &len);
	assert_true(sample(t, "mezon_draining") == 1);
	free(t);
	free(s);
}

static void latency_merged_over_workers(void **state)
{
	ms_worker_snap *s = make(2);
	/* Worker 0: 900 samples of 1 ms; worker 1: 100 of 1 s. */
	for (int i = 0; i < 900; i++)
		ms_hist_record(&s[0].hist[MS_HIST_PUBLISH_FLUSH], 1000000);
	for (int i = 0; i < 100; i++)
		ms_hist_record(&s[1].hist[MS_HIST_PUBLISH_FLUSH], 1000000000);
	size_t len;
	char *t = ms_metrics_text(s, 2, kinds, &len);
	assert_true(sample(t, "mezon_latency_seconds_count{hist=\"publish_to_flush\"}") == 1000);
	double p50 = sample(t, "mezon_latency_seconds{hist=\"publish_to_flush\",quantile=\"0.5\"}");
	double p99 = sample(t, "mezon_latency_seconds{hist=\"publish_to_flush\",quantile=\"0.99\"}");
	assert_true(p50 > 0.00099 && p50 < 0.00101);
	assert_true(p99 > 0.99 && p99 < 1.01);
	double sum = sample(t, "mezon_latency_seconds_sum{hist=\"publish_to_flush\"}");
	assert_true(sum > 100.8 && sum < 101.0);
	/* An empty histogram is NaN, not 0 (which would read as "fast"). */
	assert_non_null(strstr(t, "mezon_latency_seconds{hist=\"tls_handshake\",quantile=\"0.5\"} NaN\n"));
	for (int k = 0; k < MS_HIST_COUNT; k++) {
		char key[96];
		snprintf(key, sizeof(key), "mezon_latency_seconds_count{hist=\"%s\"}", ms_hist_names[k]);
		sample(t, key);
	}
	free(t);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(lines_are_valid_exposition),
		cmocka_unit_test(values_land_on_their_labels),
		cmocka_unit_test(latency_merged_over_workers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
