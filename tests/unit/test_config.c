/* Flag parsing: every flag's default, a good value and its bad values (each
 * one -EINVAL with one stderr line naming the flag), the --config file
 * parser (good file, each kind of error with its line number, flags win over
 * the file), --print-config round trip, --help, --version, the start-up
 * refusals judged from the flags alone, the start-up policy on certificates
 * and secret lengths, and addresses printed back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"

static char out_buf[65536], err_buf[4096];

/* ms_config_parse on "mezon-sock ARGS...", stdout and stderr captured. */
static int parse(ms_config *c, const char *const *args)
{
	char *argv[64];
	int argc = 0;
	argv[argc++] = "mezon-sock";
	for (; *args; args++)
		argv[argc++] = (char *)*args;
	FILE *so = stdout, *se = stderr;
	FILE *o = tmpfile(), *e = tmpfile();
	assert_non_null(o);
	assert_non_null(e);
	stdout = o;
	stderr = e;
	int ret = ms_config_parse(c, argc, argv);
	fflush(o);
	fflush(e);
	stdout = so;
	stderr = se;
	rewind(o);
	rewind(e);
	out_buf[fread(out_buf, 1, sizeof(out_buf) - 1, o)] = 0;
	err_buf[fread(err_buf, 1, sizeof(err_buf) - 1, e)] = 0;
	fclose(o);
	fclose(e);
	return ret;
}

static int lines(const char *s)
{
	int n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* A temporary file holding TEXT; returns its path (static buffer per slot). */
static const char *write_file(int slot, const char *text)
{
	static char paths[4][64];
	snprintf(paths[slot], sizeof(paths[slot]), "/tmp/ms-test-config-XXXXXX");
	int fd = mkstemp(paths[slot]);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return paths[slot];
}

static char long_text[400];

/* Every flag of the table: its default as --print-config shows it, a good
 * value (with the flags it needs), and bad values. */
struct flag_case {
	const char *name;
	const char *def;      /* NULL: printed with no value */
	const char *good;     /* NULL: boolean */
	const char *printed;  /* how the good value prints (NULL: as given) */
	const char *need[3];  /* other flags the good value needs */
	const char *badv[4];
};

static const struct flag_case cases[] = {
	{ "cores", "0", "4", NULL, { 0 }, { "65", "-1", "two", "" } },
	{ "cpus", "", "0-1,3", NULL, { 0 }, { "3-1", "x", "1024", "1,,2" } },
	{ "numa-node", "-1", "1", NULL, { 0 }, { "-2", "1024", "n", "0x1" } },
	{ "listen", "127.0.0.1:8080", "[::1]:0", NULL, { 0 },
	  { "127.0.0.1", "127.0.0.1:70000", "nohost:80", "1.2.3.4:" } },
	{ "tls-listen", "127.0.0.1:8443", "off", NULL, { 0 }, { "1.2.3.4:x", "[::1]0" } },
	{ "cert", NULL, "/c.pem", NULL, { "--key", "/k.pem" }, { "", long_text } },
	{ "key", NULL, "/k.pem", NULL, { "--cert", "/c.pem" }, { "", long_text } },
	{ "ticket-key-file", NULL, "/t.keys", NULL, { 0 }, { "", long_text } },
	{ "ticket-rotate", "43200", "0", NULL, { 0 }, { "2592001", "1.5" } },
	{ "max-conns", "100000", "5000", NULL, { 0 }, { "0", "4194305" } },
	{ "sndbuf", "262144", "8192", NULL, { 0 }, { "4095", "67108865" } },
	{ "backlog", "4096", "16", NULL, { 0 }, { "15", "65536" } },
	{ "taskrun", "coop", "defer", NULL, { 0 }, { "sqpoll", "" } },
	{ "min-wait-us", "10", "0", NULL, { 0 }, { "100001", " 5" } },
	{ "wait-batch", "16", "1", NULL, { 0 }, { "0", "4097" } },
	{ "recv-bufs", "2048", "16", NULL, { 0 }, { "1000", "8", "65536" } },
	{ "recv-buf-size", "4096", "512", NULL, { 0 }, { "511", "1048577" } },
	{ "max-message", "65536", "125", NULL, { 0 }, { "124", "67108865" } },
	{ "max-backpressure", "1048576", "4096", NULL, { 0 }, { "4095" } },
	{ "handshake-timeout", "10", "1", NULL, { 0 }, { "0", "3601" } },
	{ "idle-timeout", "60", "2", NULL, { 0 }, { "1", "86401" } },
	{ "drain-timeout", "10", "30", NULL, { 0 }, { "0", "3601" } },
	{ "max-streams-per-conn", "256", "1", NULL, { 0 }, { "0", "65537" } },
	{ "presence-max-members", "1000", "0", NULL, { 0 }, { "1073741825" } },
	{ "presence-page", "1000", "1", NULL, { 0 }, { "0", "100001" } },
	{ "dev", "false", NULL, "true", { 0 }, { 0 } },
	{ "diag", "false", NULL, "true", { 0 }, { 0 } },
	{ "diag-root", "none", "echo", NULL, { "--diag" }, { "x", "ECHO" } },
	{ "secret-file", NULL, "/s.key", NULL, { 0 }, { "", long_text } },
	{ "secret", NULL, "s3cret-value", "(set, not printed)", { 0 }, { "", long_text } },
	{ "log-level", "info", "debug", NULL, { 0 }, { "trace", "3" } },
	{ "admin-listen", "127.0.0.1:9090", "off", NULL, { 0 }, { "9090", "127.0.0.1:65536" } },
	{ "api-key-file", NULL, "/api.key", NULL, { 0 }, { "", long_text } },
	{ "mailbox-slots", "4096", "2", NULL, { 0 }, { "1", "100", "131072" } },
	{ "mailbox-high-water", "65536", "4", NULL, { 0 }, { "0", "1073741825" } },
	{ "hist-dir", NULL, "/var/tmp/h", NULL, { 0 }, { "", long_text } },
	{ "hist-interval", "0", "60", NULL, { 0 }, { "86401", "-1" } },
	{ "max-conns-per-ip", "0", "10", NULL, { 0 }, { "4194305", "x" } },
	{ "max-conns-per-user", "64", "0", NULL, { 0 }, { "4194305", "-3" } },
	{ "proxy-protocol", "false", NULL, "true", { 0 }, { 0 } },
	{ "allowed-origins", "", "https://a.example,https://b.example", NULL, { 0 }, { 0 } },
	{ "rate-limit", "5000,10000", "off", NULL, { 0 }, { "100", "0,5", "5,0", "1,2,3" } },
	{ "rate-bytes", "1048576,1048576", "1000,70000", NULL, { 0 }, { "1", "0,5", "1073741825,1" } },
	{ "join-rate", "50,512", "off", NULL, { 0 }, { "5", "5,0", "x,y" } },
	{ "create-rate", "10,256", "1,1", NULL, { 0 }, { "1,0", "1000001,1" } },
	{ "max-streams", "1000000", "1", NULL, { 0 }, { "0", "1073741825" } },
	{ "max-inflight", "64", "1", NULL, { 0 }, { "0", "65536" } },
	{ "slow-window", "5", "1", NULL, { 0 }, { "0", "3601" } },
	{ "max-pending-total", "0", "512", NULL, { 0 }, { "4194305", "many" } },
	{ "max-handshakes-per-ip", "0", "100", NULL, { 0 }, { "4194305", "-1", "x" } },
	{ "admin-max-conns", "32", "1", NULL, { 0 }, { "0", "1025", "x" } },
};
#define NCASES (sizeof(cases) / sizeof(cases[0]))

static void every_flag_default(void **state)
{
	static ms_config c;
	const char *args[] = { "--print-config", NULL };
	assert_int_equal(parse(&c, args), 1);
	for (size_t i = 0; i < NCASES; i++) {
		char want[128];
		snprintf(want, sizeof(want), "\n#%s =%s%s\n", cases[i].name,
			 cases[i].def && cases[i].def[0] ? " " : "",
			 cases[i].def ? cases[i].def : "");
		if (!strstr(out_buf, want))
			fail_msg("default of --%s: no line '%s'", cases[i].name, want + 1);
	}
}

static void every_flag_good_value(void **state)
{
	static ms_config c;
	for (size_t i = 0; i < NCASES; i++) {
		const struct flag_case *k = &cases[i];
		const char *args[12] = { 0 };
		char flag[64];
		int n = 0;
		snprintf(flag, sizeof(flag), "--%s", k->name);
		args[n++] = flag;
		if (k->good)
			args[n++] = k->good;
		for (int j = 0; j < 3 && k->need[j]; j++)
			args[n++] = k->need[j];
		args[n++] = "--print-config";
		int r = parse(&c, args);
		if (r != 1)
			fail_msg("--%s %s: returned %d: %s", k->name, k->good ? k->good : "", r, err_buf);
		char want[128];
		const char *v = k->printed ? k->printed : k->good;
		snprintf(want, sizeof(want), "\n%s%s = %s\n", strcmp(k->name, "secret") ? "" : "#",
			 k->name, v);
		if (!strstr(out_buf, want))
			fail_msg("--%s %s: no line '%s' in --print-config", k->name, k->good, want + 1);
		assert_string_equal(err_buf, "");
	}
	/* A few fields read directly. */
	const char *args[] = { "--cores", "4", "--max-conns=5000", "--dev", "--numa-node", "1",
			       "--taskrun", "defer", "--listen", "[::1]:0", "--log-level", "debug",
			       "--secret-file", "a", "--secret-file", "b", NULL };
	assert_int_equal(parse(&c, args), 0);
	assert_int_equal(c.cores, 4);
	assert_int_equal(c.max_conns, 5000);
	assert_int_equal(c.numa_node, 1);
	assert_true(c.dev);
	assert_int_equal(c.taskrun, MS_TASKRUN_DEFER);
	assert_int_equal(c.listen.ss.ss_family, AF_INET6);
	assert_string_equal(c.secret_file[0], "a");
	assert_string_equal(c.secret_file[1], "b");
	assert_int_equal(ms_log_level, MS_LOG_DEBUG); /* --log-level is applied */
	const char *quiet[] = { "--log-level", "error", NULL };
	assert_int_equal(parse(&c, quiet), 0);
	assert_int_equal(ms_log_level, MS_LOG_ERROR);
	const char *none[] = { NULL };
	assert_int_equal(parse(&c, none), 0);
	assert_int_equal(ms_log_level, MS_LOG_INFO);
	assert_int_equal(c.numa_node, -1);
	const struct sockaddr_in *in = (const struct sockaddr_in *)&c.listen.ss;
	assert_int_equal(ntohs(in->sin_port), 8080);
	assert_int_equal(ntohl(in->sin_addr.s_addr), INADDR_LOOPBACK);
}

/* -EINVAL, exactly one line on stderr, naming the flag. */
static void expect_bad(const char *const *args, const char *flag)
{
	static ms_config c;
	int r = parse(&c, args);
	if (r != -22 || lines(err_buf) != 1 || !strstr(err_buf, flag) ||
	    strncmp(err_buf, "mezon-sock: ", 12))
		fail_msg("%s %s: returned %d, stderr '%s'", args[0], args[1] ? args[1] : "", r,
			 err_buf);
	assert_string_equal(out_buf, "");
}

static void every_flag_bad_values(void **state)
{
	memset(long_text, 'a', sizeof(long_text) - 1);
	for (size_t i = 0; i < NCASES; i++) {
		const struct flag_case *k = &cases[i];
		char flag[64], eq[512];
		snprintf(flag, sizeof(flag), "--%s", k->name);
		for (int j = 0; j < 4 && k->badv[j]; j++) {
			const char *args[] = { flag, k->badv[j], NULL };
			expect_bad(args, flag);
			if (!strcmp(k->name, "secret") && k->badv[j][0])
				assert_null(strstr(err_buf, k->badv[j])); /* never echoed */
			snprintf(eq, sizeof(eq), "--%s=%s", k->name, k->badv[j]);
			const char *args2[] = { eq, NULL };
			expect_bad(args2, flag);
		}
		/* Missing value, or a value given to a boolean. */
		if (k->good) {
			const char *args[] = { flag, NULL };
			expect_bad(args, flag);
		} else {
			snprintf(eq, sizeof(eq), "--%s=1", k->name);
			const char *args[] = { eq, NULL };
			expect_bad(args, flag);
		}
	}
	const char *three[] = { "--secret-file", "a", "--secret-file", "b", "--secret-file", "c", NULL };
	expect_bad(three, "--secret-file");
	const char *unknown[] = { "--nope", "1", NULL };
	expect_bad(unknown, "--nope");
	const char *stray[] = { "stray", NULL };
	expect_bad(stray, "stray");
	const char *cert_only[] = { "--cert", "/c.pem", NULL };
	expect_bad(cert_only, "--key");
	const char *root[] = { "--diag-root", "echo", NULL };
	expect_bad(root, "--diag");
	const char *twice[] = { "--config", "/a", "--config", "/b", NULL };
	expect_bad(twice, "--config");
	const char *cfg_missing[] = { "--config", NULL };
	expect_bad(cfg_missing, "--config");
	const char *cfg_nofile[] = { "--config", "/nonexistent/ms.conf", NULL };
	expect_bad(cfg_nofile, "/nonexistent/ms.conf");
	const char *pc[] = { "--print-config=yes", NULL };
	expect_bad(pc, "--print-config");
}

static void help_lists_every_flag(void **state)
{
	static ms_config c;
	const char *h[] = { "--dev", "--help", NULL };
	assert_int_equal(parse(&c, h), 1);
	int flags = 0;
	for (const char *p = out_buf; (p = strstr(p, "\n  --")) != NULL; p++)
		flags++;
	/* Every flag has a case above (plus --config, --print-config, --help,
	 * --version): a new flag without a test fails here. */
	assert_int_equal(flags, (int)NCASES + 4);
	for (size_t i = 0; i < NCASES; i++) {
		char want[64];
		snprintf(want, sizeof(want), "\n  --%s ", cases[i].name);
		if (!strstr(out_buf, want))
			fail_msg("--help lacks --%s", cases[i].name);
	}
	assert_non_null(strstr(out_buf, "--numa-node N "));
	assert_non_null(strstr(out_buf, "[-1] (-1..1023)"));
	assert_non_null(strstr(out_buf, "--config FILE "));
	assert_non_null(strstr(out_buf, "--print-config "));

	const char *v[] = { "--version", NULL };
	assert_int_equal(parse(&c, v), 1);
	assert_string_equal(out_buf, "mezon-sock " MS_TEST_VERSION "\n");
	/* --help wins even when the file is broken. */
	const char *hb[] = { "--config", "/nonexistent", "--help", NULL };
	assert_int_equal(parse(&c, hb), 1);
}

static void config_file_good(void **state)
{
	static ms_config c;
	const char *path = write_file(0,
		"# a comment\n"
		"\n"
		"   cores = 3\n"
		"listen=127.0.0.1:0\n"
		"tls-listen off\n"
		"dev\n"
		"diag = true\n"
		"diag = false\n"
		"taskrun   =   defer   \r\n"
		"secret-file = /one\n"
		"secret-file /two\n"
		"secret = a#b c\n"
		"cpus =\n"
		"  # indented comment\n"
		"numa-node = 0\n");
	const char *args[] = { "--config", path, NULL };
	assert_int_equal(parse(&c, args), 0);
	assert_string_equal(err_buf, "");
	assert_int_equal(c.cores, 3);
	assert_string_equal(c.listen.text, "127.0.0.1:0");
	assert_int_equal(c.tls_listen.len, 0);
	assert_true(c.dev);
	assert_false(c.diag);
	assert_int_equal(c.taskrun, MS_TASKRUN_DEFER);
	assert_string_equal(c.secret_file[0], "/one");
	assert_string_equal(c.secret_file[1], "/two");
	assert_string_equal(c.secret, "a#b c");
	assert_string_equal(c.cpus, "");
	assert_int_equal(c.numa_node, 0);
	unlink(path);
}

static void config_flags_win(void **state)
{
	static ms_config c;
	const char *path = write_file(0, "cores = 3\nmax-conns = 7000\nsecret-file = /one\n"
					 "secret-file = /two\ndev = true\n");
	/* Flags before and after --config both win. */
	const char *args[] = { "--cores", "5", "--config", path, "--secret-file", "/three",
			       "--max-conns", "9000", NULL };
	assert_int_equal(parse(&c, args), 0);
	assert_int_equal(c.cores, 5);
	assert_int_equal(c.max_conns, 9000);
	assert_true(c.dev); /* from the file */
	assert_string_equal(c.secret_file[0], "/three");
	assert_string_equal(c.secret_file[1], "");
	/* Without secret-file flags, the file's two stay. */
	const char *args2[] = { "--config", path, NULL };
	assert_int_equal(parse(&c, args2), 0);
	assert_string_equal(c.secret_file[1], "/two");
	assert_int_equal(c.cores, 3);
	/* A bad flag is reported even when the file is fine. */
	const char *args3[] = { "--config", path, "--cores", "99", NULL };
	expect_bad(args3, "--cores");
	unlink(path);
}

/* Each kind of error in a file: one line "FILE:LINE: ..." naming the key and
 * what is accepted. */
static void config_file_errors(void **state)
{
	static const struct {
		const char *text;
		int line;
		const char *want;
	} errs[] = {
		{ "cores = 2\ncores = 99\n", 2, "cores 99: expected an integer in 0..64" },
		{ "# c\n\nnope = 1\n", 3, "unknown key 'nope'" },
		{ "taskrun = sqpoll\n", 1, "taskrun sqpoll: expected one of defer, coop" },
		{ "dev = maybe\n", 1, "dev maybe: expected true or false" },
		{ "listen = x\n", 1, "listen x: expected HOST:PORT" },
		{ "cores: 4\n", 1, "expected 'key = value'" },
		{ "config = /other\n", 1, "unknown key 'config'" },
		{ "print-config\n", 1, "unknown key 'print-config'" },
		{ "secret-file = a\nsecret-file = b\nsecret-file = c\n", 3,
		  "secret-file c: expected a path of 1..255 bytes, given at most twice" },
		{ "recv-bufs = 1000\n", 1, "recv-bufs 1000: expected an integer in 16..32768 that is a power of two" },
		{ "cert =\n", 1, "cert: expected a path of 1..255 bytes" },
		{ "cores\n", 1, "cores: expected an integer in 0..64" },
		{ "secret = \n", 1, "secret: expected text of 1..255 bytes" },
	};
	static ms_config c;
	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		const char *path = write_file(1, errs[i].text);
		char want[512];
		snprintf(want, sizeof(want), "mezon-sock: %s:%d: %s", path, errs[i].line, errs[i].want);
		const char *args[] = { "--config", path, NULL };
		int r = parse(&c, args);
		if (r != -22 || lines(err_buf) != 1 || strncmp(err_buf, want, strlen(want)))
			fail_msg("case %zu: returned %d, stderr '%s', want '%s'", i, r, err_buf, want);
		unlink(path);
	}
}

static void print_config_round_trip(void **state)
{
	static ms_config a, b;
	const char *args[] = { "--cores", "3", "--cpus", "0-1", "--numa-node", "0", "--listen",
			       "[::1]:9000", "--tls-listen", "off", "--max-conns", "1234",
			       "--taskrun", "defer", "--recv-bufs", "64", "--dev", "--diag",
			       "--diag-root", "room", "--secret-file", "/s1", "--secret-file", "/s2",
			       "--log-level", "warn", "--ticket-key-file", "/tk", "--cert", "/c",
			       "--key", "/k", "--print-config", NULL };
	assert_int_equal(parse(&a, args), 1);
	const char *path = write_file(2, out_buf);
	const char *back[] = { "--config", path, NULL };
	assert_int_equal(parse(&b, back), 0);
	assert_string_equal(err_buf, "");
	assert_memory_equal(&a, &b, sizeof(a));
	unlink(path);

	/* Defaults round-trip too (every line commented out). */
	const char *plain[] = { "--print-config", NULL };
	assert_int_equal(parse(&a, plain), 1);
	path = write_file(2, out_buf);
	assert_int_equal(parse(&b, back), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	unlink(path);

	/* --secret is never printed; everything else still round-trips. */
	const char *sec[] = { "--secret", "topsecret", "--cores", "2", "--print-config", NULL };
	assert_int_equal(parse(&a, sec), 1);
	assert_null(strstr(out_buf, "topsecret"));
	path = write_file(2, out_buf);
	assert_int_equal(parse(&b, back), 0);
	assert_int_equal(b.cores, 2);
	assert_string_equal(b.secret, "");
	memset(a.secret, 0, sizeof(a.secret));
	assert_memory_equal(&a, &b, sizeof(a));
	unlink(path);
}

/* ms_config_check on c, stderr captured in err_buf. */
static int check(const ms_config *c, const ms_config_secret *jwt, int njwt,
		 const ms_config_secret *api)
{
	FILE *se = stderr, *e = tmpfile();
	assert_non_null(e);
	stderr = e;
	int ret = ms_config_check(c, jwt, njwt, api);
	fflush(e);
	stderr = se;
	rewind(e);
	err_buf[fread(err_buf, 1, sizeof(err_buf) - 1, e)] = 0;
	fclose(e);
	if (ret)
		assert_int_equal(lines(err_buf), 1);
	else
		assert_string_equal(err_buf, "");
	return ret;
}

/* Outside --dev a TLS listener needs a real certificate: the self-signed
 * one is for development only. */
static void tls_needs_certificate(void **state)
{
	static ms_config c;
	static const char key32[] = "0123456789abcdef0123456789abcdef";
	ms_config_secret jwt = { key32, 32, "--secret-file /s" };
	const char *none[] = { NULL };
	assert_int_equal(parse(&c, none), 0);
	assert_int_equal(check(&c, &jwt, 1, NULL), -22);
	assert_non_null(strstr(err_buf, "--tls-listen 127.0.0.1:8443"));
	assert_non_null(strstr(err_buf, "--cert"));
	assert_non_null(strstr(err_buf, "--key"));
	assert_non_null(strstr(err_buf, "--tls-listen off"));
	const char *off[] = { "--tls-listen", "off", NULL };
	assert_int_equal(parse(&c, off), 0);
	assert_int_equal(check(&c, &jwt, 1, NULL), 0);
	const char *cert[] = { "--cert", "/c.pem", "--key", "/k.pem", NULL };
	assert_int_equal(parse(&c, cert), 0);
	assert_int_equal(check(&c, &jwt, 1, NULL), 0);
	const char *dev[] = { "--dev", NULL };
	assert_int_equal(parse(&c, dev), 0);
	assert_int_equal(check(&c, NULL, 0, NULL), 0);
}

/* HS256 secrets of at least 32 bytes and API keys of at least 16 outside
 * --dev; never the same bytes for both. */
static void secret_lengths(void **state)
{
	static ms_config c, d;
	static const char k[] = "0123456789abcdef0123456789abcdefXYZ";
	const char *prod[] = { "--tls-listen", "off", NULL };
	const char *dev[] = { "--dev", NULL };
	assert_int_equal(parse(&c, prod), 0);
	assert_int_equal(parse(&d, dev), 0);

	ms_config_secret j32 = { k, 32, "--secret-file /j32" };
	ms_config_secret j31 = { k, 31, "--secret-file /j31" };
	ms_config_secret txt = { k + 1, 31, "--secret" };
	ms_config_secret a16 = { k + 3, 16, "--api-key-file /a16" };
	ms_config_secret a15 = { k + 3, 15, "--api-key-file /a15" };
	ms_config_secret same = { k, 32, "--api-key-file /same" };
	ms_config_secret two[2] = { j32, same };
	two[1].from = "--secret-file /old";

	assert_int_equal(check(&c, &j32, 1, NULL), 0);
	assert_int_equal(check(&c, &j32, 1, &a16), 0);
	assert_int_equal(check(&c, &j31, 1, &a16), -22);
	assert_non_null(strstr(err_buf, "--secret-file /j31"));
	assert_non_null(strstr(err_buf, "31 bytes"));
	assert_non_null(strstr(err_buf, "32"));
	assert_null(strstr(err_buf, "0123")); /* the secret itself is never shown */
	ms_config_secret pair[2] = { j32, txt };
	assert_int_equal(check(&c, pair, 2, NULL), -22);
	assert_non_null(strstr(err_buf, "--secret:"));
	assert_int_equal(check(&c, &j32, 1, &a15), -22);
	assert_non_null(strstr(err_buf, "--api-key-file /a15"));
	assert_non_null(strstr(err_buf, "16"));
	/* The same bytes for both: refused, also in --dev. */
	assert_int_equal(check(&c, &j32, 1, &same), -22);
	assert_non_null(strstr(err_buf, "--api-key-file /same"));
	assert_non_null(strstr(err_buf, "--secret-file /j32"));
	assert_int_equal(check(&d, &j32, 1, &same), -22);
	assert_int_equal(check(&c, two, 2, &a16), 0);
	two[1] = a16;
	two[1].from = "--secret-file /old";
	assert_int_equal(check(&c, two, 2, &a16), -22);
	assert_non_null(strstr(err_buf, "--secret-file /old"));
	/* --dev: short ones are fine (tests, laptops). */
	ms_config_secret j1 = { "x", 1, "--secret" }, a1 = { "y", 1, "--api-key-file /a1" };
	assert_int_equal(check(&d, &j1, 1, &a1), 0);
	assert_int_equal(check(&d, NULL, 0, &a1), 0);
	ms_config_secret a1x = { "x", 1, "--api-key-file /a1x" };
	assert_int_equal(check(&d, &j1, 1, &a1x), -22);
}

/* ms_config_check_flags on the config ARGS... parse to; stderr in err_buf. */
static int check_flags(const char *const *args)
{
	static ms_config c;
	assert_int_equal(parse(&c, args), 0);
	FILE *se = stderr, *e = tmpfile();
	assert_non_null(e);
	stderr = e;
	int ret = ms_config_check_flags(&c);
	fflush(e);
	stderr = se;
	rewind(e);
	err_buf[fread(err_buf, 1, sizeof(err_buf) - 1, e)] = 0;
	fclose(e);
	if (ret)
		assert_int_equal(lines(err_buf), 1);
	else
		assert_string_equal(err_buf, "");
	return ret;
}

/* What the flags alone refuse: no authentication outside --dev, an
 * unwritable --hist-dir, an admin port shared with a public listener, no
 * public listener at all. Secret files are not read here. */
static void flags_refused(void **state)
{
	const char *bare[] = { NULL };
	assert_int_equal(check_flags(bare), -22);
	assert_non_null(strstr(err_buf, "refusing to start without authentication"));
	const char *file[] = { "--secret-file", "/nonexistent/s", NULL };
	assert_int_equal(check_flags(file), 0);
	const char *text[] = { "--secret", "short", NULL };
	assert_int_equal(check_flags(text), 0);
	const char *dev[] = { "--dev", NULL };
	assert_int_equal(check_flags(dev), 0);

	const char *hist[] = { "--dev", "--hist-dir", "/nonexistent/h", NULL };
	assert_int_equal(check_flags(hist), -22);
	assert_non_null(strstr(err_buf, "--hist-dir /nonexistent/h: No such file or directory "
					"(create it first)"));
	const char *tmp[] = { "--dev", "--hist-dir", "/tmp", NULL };
	assert_int_equal(check_flags(tmp), 0);

	const char *plain[] = { "--dev", "--admin-listen", "127.0.0.1:8080", NULL };
	assert_int_equal(check_flags(plain), -22);
	assert_non_null(strstr(err_buf, "--admin-listen 127.0.0.1:8080: the same port as a public "
					"listener"));
	const char *wild[] = { "--dev", "--admin-listen", "0.0.0.0:8443", NULL };
	assert_int_equal(check_flags(wild), -22);
	const char *v6[] = { "--dev", "--admin-listen", "[::1]:8080", NULL };
	assert_int_equal(check_flags(v6), -22); /* a v6 wildcard may cover v4: strict */
	const char *other[] = { "--dev", "--admin-listen", "127.0.0.2:8080", NULL };
	assert_int_equal(check_flags(other), 0);
	const char *zero[] = { "--dev", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
			       NULL };
	assert_int_equal(check_flags(zero), 0); /* port 0 never collides */
	const char *tls_off[] = { "--dev", "--tls-listen", "off", "--admin-listen", "0.0.0.0:8443",
				  NULL };
	assert_int_equal(check_flags(tls_off), 0);

	const char *none[] = { "--dev", "--listen", "off", "--tls-listen", "off", NULL };
	assert_int_equal(check_flags(none), -22);
	assert_non_null(strstr(err_buf, "--listen and --tls-listen are both off: nothing to serve"));
	const char *tls_only[] = { "--dev", "--listen", "off", NULL };
	assert_int_equal(check_flags(tls_only), 0);
}

static void addr_format(void **state)
{
	ms_addr a;
	char out[MS_ADDR_TEXT];
	assert_int_equal(ms_addr_parse(&a, "127.0.0.1:8080"), 0);
	assert_string_equal(ms_addr_format(&a, out), "127.0.0.1:8080");
	assert_int_equal(ms_addr_parse(&a, "localhost:0"), 0);
	assert_string_equal(ms_addr_format(&a, out), "127.0.0.1:0");
	((struct sockaddr_in *)&a.ss)->sin_port = htons(40123); /* as bound */
	assert_string_equal(ms_addr_format(&a, out), "127.0.0.1:40123");
	assert_int_equal(ms_addr_parse(&a, "[::1]:9"), 0);
	assert_string_equal(ms_addr_format(&a, out), "[::1]:9");
	assert_int_equal(ms_addr_parse(&a, "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535"), 0);
	assert_string_equal(ms_addr_format(&a, out),
			    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
	memset(&a, 0, sizeof(a));
	assert_string_equal(ms_addr_format(&a, out), "off");
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
		cmocka_unit_test(every_flag_default),
		cmocka_unit_test(every_flag_good_value),
		cmocka_unit_test(every_flag_bad_values),
		cmocka_unit_test(help_lists_every_flag),
		cmocka_unit_test(config_file_good),
		cmocka_unit_test(config_flags_win),
		cmocka_unit_test(config_file_errors),
		cmocka_unit_test(print_config_round_trip),
		cmocka_unit_test(tls_needs_certificate),
		cmocka_unit_test(secret_lengths),
		cmocka_unit_test(flags_refused),
		cmocka_unit_test(addr_format),
		cmocka_unit_test(cpulist),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
