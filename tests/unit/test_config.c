/* Flag parsing: defaults, every kind of value, every kind of bad value. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "core/config.h"

static int parse(ms_config *c, const char *const *args)
{
	char *argv[32];
	int argc = 0;
	argv[argc++] = "mezon-sock";
	for (; *args; args++)
		argv[argc++] = (char *)*args;
	/* Errors print to stderr; keep the test output readable. */
	FILE *saved = stderr;
	stderr = fopen("/dev/null", "w");
	int ret = ms_config_parse(c, argc, argv);
	fclose(stderr);
	stderr = saved;
	return ret;
}

static void defaults(void **state)
{
	static ms_config c;
	const char *args[] = { NULL };
	assert_int_equal(parse(&c, args), 0);
	assert_int_equal(c.max_conns, 100000);
	assert_int_equal(c.sndbuf, 262144);
	assert_int_equal(c.max_message, 65536);
	assert_int_equal(c.handshake_timeout, 10);
	assert_int_equal(c.idle_timeout, 60);
	assert_int_equal(c.taskrun, MS_TASKRUN_COOP); /* measured faster: docs/BENCHMARKS.md */
	assert_false(c.dev);
	assert_false(c.diag);
	const struct sockaddr_in *in = (const struct sockaddr_in *)&c.listen.ss;
	assert_int_equal(in->sin_family, AF_INET);
	assert_int_equal(ntohs(in->sin_port), 8080);
	assert_int_equal(ntohl(in->sin_addr.s_addr), INADDR_LOOPBACK);
}

static void values(void **state)
{
	static ms_config c;
	const char *args[] = { "--cores", "4", "--max-conns=5000", "--dev", "--diag",
			       "--diag-root", "echo", "--taskrun", "defer", "--listen",
			       "[::1]:0", "--cpus", "0-1,3", "--secret-file", "a",
			       "--secret-file", "b", NULL };
	assert_int_equal(parse(&c, args), 0);
	assert_int_equal(c.cores, 4);
	assert_int_equal(c.max_conns, 5000);
	assert_true(c.dev);
	assert_true(c.diag);
	assert_int_equal(c.diag_root, MS_DIAG_ROOT_ECHO);
	assert_int_equal(c.taskrun, MS_TASKRUN_DEFER);
	assert_int_equal(c.listen.ss.ss_family, AF_INET6);
	assert_string_equal(c.secret_file[0], "a");
	assert_string_equal(c.secret_file[1], "b");
}

static void bad_values(void **state)
{
	static ms_config c;
	const char *const cases[][4] = {
		{ "--cores", "65", NULL },        /* above range */
		{ "--cores", "-1", NULL },
		{ "--cores", "two", NULL },
		{ "--max-conns", "0", NULL },
		{ "--taskrun", "sqpoll", NULL },
		{ "--listen", "127.0.0.1", NULL }, /* no port */
		{ "--listen", "127.0.0.1:70000", NULL },
		{ "--listen", "nohost:80", NULL },
		{ "--recv-bufs", "1000", NULL },   /* not a power of two */
		{ "--diag-root", "echo", NULL },   /* needs --diag */
		{ "--cpus", "3-1", NULL },
		{ "--nope", NULL },
		{ "--cores", NULL },               /* missing value */
		{ "--dev=1", NULL },               /* bool takes no value */
		{ "--secret-file", "a", "--secret-file", NULL },
		{ "stray", NULL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *args[8] = { 0 };
		for (int k = 0; k < 4 && cases[i][k]; k++)
			args[k] = cases[i][k];
		if (i == 14) { /* three secret files */
			const char *three[] = { "--secret-file", "a", "--secret-file", "b",
						"--secret-file", "c", NULL };
			assert_int_equal(parse(&c, three), -22);
			continue;
		}
		int r = parse(&c, args);
		if (r != -22)
			fail_msg("case %zu (%s) parsed as %d", i, cases[i][0], r);
	}
}

static void help_and_version(void **state)
{
	static ms_config c;
	FILE *saved = stdout;
	stdout = fopen("/dev/null", "w");
	const char *h[] = { "--help", NULL }, *v[] = { "--version", NULL };
	int rh = parse(&c, h), rv = parse(&c, v);
	fclose(stdout);
	stdout = saved;
	assert_int_equal(rh, 1);
	assert_int_equal(rv, 1);
}

static void cpulist(void **state)
{
	uint64_t m[16];
	assert_int_equal(ms_cpulist_parse("0-3,6", m), 5);
	assert_int_equal(m[0], 0x4f);
	assert_int_equal(ms_cpulist_parse("64", m), 1);
	assert_int_equal(m[1], 1);
	assert_int_equal(ms_cpulist_parse("", m), -22);
	assert_int_equal(ms_cpulist_parse("1,,2", m), -22);
	assert_int_equal(ms_cpulist_parse("1024", m), -22);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(defaults),
		cmocka_unit_test(values),
		cmocka_unit_test(bad_values),
		cmocka_unit_test(help_and_version),
		cmocka_unit_test(cpulist),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
