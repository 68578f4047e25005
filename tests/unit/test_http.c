/*
 * Unit tests for net/http.h: valid request heads, every class of malformed
 * head and the status it maps to, limits, every split of a valid head,
 * header lookup and token lists, the RFC 6455 upgrade check, query
 * parameters and the response writers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/http.h"

#define UPGRADE_REQ                                                        \
	"GET /chat?room=lobby&token=abc.def HTTP/1.1\r\n"                  \
	"Host: server.example.com\r\n"                                     \
	"Upgrade: websocket\r\n"                                           \
	"Connection: Upgrade\r\n"                                          \
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"                  \
	"Origin: http://example.com\r\n"                                   \
	"Sec-WebSocket-Protocol: chat, superchat\r\n"                      \
	"Sec-WebSocket-Version: 13\r\n"                                    \
	"\r\n"

/* Parse from an exactly-sized heap copy so ASan sees any overread, then
 * point the result back into s so callers may inspect it. */
static void rebase(const char **p, const char *from, const char *to)
{
	if (*p)
		*p = to + (*p - from);
}

static int parse(const char *s, size_t n, ms_http_request *req)
{
	char *b = malloc(n ? n : 1);
	int r;

	memcpy(b, s, n);
	r = ms_http_parse(b, n, req);
	if (r > 0) {
		rebase(&req->method.p, b, s);
		rebase(&req->target.p, b, s);
		rebase(&req->path.p, b, s);
		rebase(&req->query.p, b, s);
		for (size_t i = 0; i < req->nheaders; i++) {
			rebase(&req->headers[i].name.p, b, s);
			rebase(&req->headers[i].value.p, b, s);
		}
	}
	free(b);
	return r;
}

static int P(const char *s)
{
	ms_http_request req;

	return parse(s, strlen(s), &req);
}

static bool str_is(ms_str s, const char *lit)
{
	return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

static void test_valid_request(void **state)
{
	static const char r[] = UPGRADE_REQ "trailing frame bytes";
	ms_http_request req;
	size_t head = sizeof(UPGRADE_REQ) - 1;

	assert_int_equal(parse(r, sizeof(r) - 1, &req), head);
	assert_true(str_is(req.method, "GET"));
	assert_true(str_is(req.target, "/chat?room=lobby&token=abc.def"));
	assert_true(str_is(req.path, "/chat"));
	assert_true(str_is(req.query, "room=lobby&token=abc.def"));
	assert_int_equal(req.minor, 1);
	assert_int_equal(req.nheaders, 7);
	assert_true(str_is(req.headers[0].name, "Host"));
	assert_true(str_is(req.headers[0].value, "server.example.com"));
	assert_true(str_is(req.headers[5].name, "Sec-WebSocket-Protocol"));
	assert_true(str_is(req.headers[5].value, "chat, superchat"));

	assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n", 18, &req), 18);
	assert_int_equal(req.minor, 0);
	assert_int_equal(req.nheaders, 0);
	assert_true(str_is(req.path, "/"));
	assert_int_equal(req.query.n, 0);
	assert_null(req.query.p);

	/* '?' with nothing after it, and a second '?' inside the query */
	assert_true(P("GET /a? HTTP/1.1\r\n\r\n") > 0);
	static const char q[] = "GET /a?b?c HTTP/1.1\r\n\r\n";
	assert_int_equal(parse(q, sizeof(q) - 1, &req), sizeof(q) - 1);
	assert_true(str_is(req.path, "/a"));
	assert_true(str_is(req.query, "b?c"));

	/* any token is a method; the upgrade check decides which it wants */
	assert_true(P("get / HTTP/1.1\r\n\r\n") > 0);
	assert_true(P("M-SEARCH /x HTTP/1.1\r\n\r\n") > 0);
	assert_true(P("X!#$%&'*+-.^_`|~9 / HTTP/1.1\r\n\r\n") > 0);
	assert_true(P("GET /%20a~b!$&'()*+,;=:@ HTTP/1.9\r\n\r\n") > 0);
}

static void test_values(void **state)
{
	static const char r[] =
		"GET / HTTP/1.1\r\n"
		"A:   spaced  \t \r\n"
		"B:\r\n"
		"C: \t \r\n"
		"D:inner  space\tand tab\r\n"
		"E: obs-text \x80\xff ok\r\n"
		"F:\t\ttabbed\r\n"
		"\r\n";
	ms_http_request req;

	assert_int_equal(parse(r, sizeof(r) - 1, &req), sizeof(r) - 1);
	assert_int_equal(req.nheaders, 6);
	assert_true(str_is(req.headers[0].value, "spaced"));
	assert_int_equal(req.headers[1].value.n, 0);
	assert_int_equal(req.headers[2].value.n, 0);
	assert_true(str_is(req.headers[3].value, "inner  space\tand tab"));
	assert_true(str_is(req.headers[4].value, "obs-text \x80\xff ok"));
	assert_true(str_is(req.headers[5].value, "tabbed"));
}

static void test_malformed(void **state)
{
	static const char *bad[] = {
		" / HTTP/1.1\r\n\r\n",             /* empty method */
		"GE(T / HTTP/1.1\r\n\r\n",         /* non-token method */
		"GET  / HTTP/1.1\r\n\r\n",         /* two spaces */
		"GET\t/ HTTP/1.1\r\n\r\n",         /* tab separator */
		"GET http://h/ HTTP/1.1\r\n\r\n",  /* absolute-form */
		"GET * HTTP/1.1\r\n\r\n",          /* asterisk-form */
		"GET x HTTP/1.1\r\n\r\n",
		"GET /a\x7f HTTP/1.1\r\n\r\n",     /* DEL in target */
		"GET /a\x80 HTTP/1.1\r\n\r\n",     /* non-ASCII target */
		"GET /a\tb HTTP/1.1\r\n\r\n",
		"GET /\r\n\r\n",                   /* HTTP/0.9 style */
		"GET / \r\n\r\n",
		"GET / HTTP/1.1 \r\n\r\n",
		"GET / HTTP/1.1x\r\n\r\n",
		"GET / HTTP/11\r\n\r\n",
		"GET / HTTP/1.\r\n\r\n",
		"GET / HTTP/1.10\r\n\r\n",
		"GET / HTTP/2\r\n\r\n",
		"GET / http/1.1\r\n\r\n",
		"GET / HTTX/1.1\r\n\r\n",
		"GET / HTTP/a.1\r\n\r\n",
		"GET / HTTP/1.1\n\r\n",            /* bare LF */
		"GET / HTTP/1.1\r\n\n",
		"GET / HTTP/1.1\r\r\n\r\n",        /* bare CR */
		"GET / HTTP/1.1\r\nHost: a\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n\rx",
		"GET / HTTP/1.1\r\nHost\r\n\r\n",  /* no colon */
		"GET / HTTP/1.1\r\nHost : a\r\n\r\n", /* space before colon */
		"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
		"GET / HTTP/1.1\r\n: a\r\n\r\n",   /* empty name */
		"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n",
		"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",  /* obs-fold */
		"GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n",
		"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
		"GET / HTTP/1.1\r\nA: \x01\r\n\r\n",
		"GET / HTTP/1.1\r\nA: b\x1f\r\n\r\n",
		"GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n",
		"\r\nGET / HTTP/1.1\r\n\r\n",      /* leading empty line */
		"\x16\x03\x01\x02\x00",            /* a TLS ClientHello */
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (P(bad[i]) != -400)
			fail_msg("case %zu: %d", i, P(bad[i]));
	}
	/* NUL in a value, in the target and in a name */
	static const char nul[] = "GET / HTTP/1.1\r\nA: b\0c\r\n\r\n";
	ms_http_request req;
	assert_int_equal(parse(nul, sizeof(nul) - 1, &req), -400);
	static const char nul2[] = "GET /\0 HTTP/1.1\r\n\r\n";
	assert_int_equal(parse(nul2, sizeof(nul2) - 1, &req), -400);
	static const char nul3[] = "GET / HTTP/1.1\r\nA\0: b\r\n\r\n";
	assert_int_equal(parse(nul3, sizeof(nul3) - 1, &req), -400);

	/* errors are found on the first bytes that show them */
	assert_int_equal(P("GE("), -400);
	assert_int_equal(P("GET  "), -400);
	assert_int_equal(P("GET / HTTP/1.1\r\nHost :"), -400);
	assert_int_equal(P("GET / HTTP/1.1\n"), -400);
	assert_int_equal(P("\x16"), -400);
}

static void test_version(void **state)
{
	assert_int_equal(P("GET / HTTP/2.0\r\n\r\n"), -505);
	assert_int_equal(P("GET / HTTP/0.9\r\n\r\n"), -505);
	assert_int_equal(P("GET / HTTP/3.1\r\n\r\n"), -505);
	/* judged once the line is complete */
	assert_int_equal(P("GET / HTTP/2.0"), 0);
	assert_int_equal(P("GET / HTTP/2.0\r"), 0);
	assert_int_equal(P("GET / HTTP/2.0\r\n"), -505);
	assert_int_equal(P("GET / HTTP/2.0x\r\n"), -400);
	assert_true(P("GET / HTTP/1.9\r\n\r\n") > 0);
}

static void test_limits(void **state)
{
	char *b = malloc(MS_HTTP_MAX_HEAD * 2);
	size_t n;

	/* 32 headers fit, 33 do not */
	n = (size_t)sprintf(b, "GET / HTTP/1.1\r\n");
	for (int i = 0; i < MS_HTTP_MAX_HEADERS; i++)
		n += (size_t)sprintf(b + n, "X-%d: %d\r\n", i, i);
	strcpy(b + n, "\r\n");
	assert_int_equal(P(b), (int)n + 2);
	n += (size_t)sprintf(b + n, "X-last: 1\r\n\r\n");
	assert_int_equal(P(b), -431);

	/* a head of exactly MS_HTTP_MAX_HEAD bytes is fine */
	const char *pre = "GET / HTTP/1.1\r\nX: ";
	n = strlen(pre);
	memcpy(b, pre, n);
	memset(b + n, 'v', MS_HTTP_MAX_HEAD - n - 4);
	memcpy(b + MS_HTTP_MAX_HEAD - 4, "\r\n\r\n", 4);
	ms_http_request req;
	assert_int_equal(parse(b, MS_HTTP_MAX_HEAD, &req), MS_HTTP_MAX_HEAD);
	assert_int_equal(req.headers[0].value.n, MS_HTTP_MAX_HEAD - n - 4);
	/* bytes after it do not matter */
	memset(b + MS_HTTP_MAX_HEAD, 'z', 100);
	assert_int_equal(parse(b, MS_HTTP_MAX_HEAD + 100, &req), MS_HTTP_MAX_HEAD);
	/* one byte more is too large, complete or not */
	memset(b + n, 'v', MS_HTTP_MAX_HEAD - n - 3);
	memcpy(b + MS_HTTP_MAX_HEAD - 3, "\r\n\r\n", 4);
	assert_int_equal(parse(b, MS_HTTP_MAX_HEAD + 1, &req), -431);
	assert_int_equal(parse(b, MS_HTTP_MAX_HEAD, &req), -431);
	assert_int_equal(parse(b, MS_HTTP_MAX_HEAD - 1, &req), 0);
	/* an unterminated line filling the limit */
	memset(b + n, 'v', MS_HTTP_MAX_HEAD * 2 - n);
	assert_int_equal(parse(b, MS_HTTP_MAX_HEAD - 1, &req), 0);
	assert_int_equal(parse(b, MS_HTTP_MAX_HEAD, &req), -431);
	assert_int_equal(parse(b, MS_HTTP_MAX_HEAD * 2, &req), -431);
	/* garbage is reported as garbage even past the limit */
	b[10] = '\x01';
	assert_int_equal(parse(b, MS_HTTP_MAX_HEAD * 2, &req), -400);
	free(b);
}

static void test_every_split(void **state)
{
	static const char *reqs[] = {
		UPGRADE_REQ,
		"GET / HTTP/1.0\r\n\r\n",
		"GET /x?y HTTP/1.1\r\nA:\r\nB: \t c \t\r\n\r\n",
	};
	for (size_t k = 0; k < sizeof(reqs) / sizeof(reqs[0]); k++) {
		size_t n = strlen(reqs[k]);
		ms_http_request req;

		for (size_t i = 0; i < n; i++)
			if (parse(reqs[k], i, &req) != 0)
				fail_msg("req %zu prefix %zu", k, i);
		assert_int_equal(parse(reqs[k], n, &req), n);
	}
}

static void test_header_get(void **state)
{
	static const char r[] = UPGRADE_REQ;
	ms_http_request req;
	const ms_http_header *h;

	assert_true(parse(r, sizeof(r) - 1, &req) > 0);
	h = ms_http_header_get(&req, "host");
	assert_non_null(h);
	assert_true(str_is(h->value, "server.example.com"));
	assert_ptr_equal(ms_http_header_get(&req, "HOST"), h);
	assert_ptr_equal(ms_http_header_get(&req, "HoSt"), h);
	assert_null(ms_http_header_get(&req, "Hos"));
	assert_null(ms_http_header_get(&req, "Hosts"));
	assert_null(ms_http_header_get(&req, "Cookie"));
	h = ms_http_header_get(&req, "sec-websocket-key");
	assert_non_null(h);
	assert_true(str_is(h->value, "dGhlIHNhbXBsZSBub25jZQ=="));
}

static void test_tokens(void **state)
{
	static const char r[] =
		"GET / HTTP/1.1\r\n"
		"Connection: keep-alive, Upgrade\r\n"
		"X-A: one,two ,  three\t, ,,\r\n"
		"X-B: notupgrade, upgrades\r\n"
		"X-B: later\r\n"
		"X-C: \r\n"
		"\r\n";
	ms_http_request req;

	assert_true(parse(r, sizeof(r) - 1, &req) > 0);
	assert_true(ms_http_header_has_token(&req, "connection", "upgrade"));
	assert_true(ms_http_header_has_token(&req, "Connection", "keep-alive"));
	assert_true(ms_http_header_has_token(&req, "CONNECTION", "KEEP-ALIVE"));
	assert_false(ms_http_header_has_token(&req, "Connection", "close"));
	assert_false(ms_http_header_has_token(&req, "Connection", "keep"));
	assert_true(ms_http_header_has_token(&req, "X-A", "one"));
	assert_true(ms_http_header_has_token(&req, "X-A", "two"));
	assert_true(ms_http_header_has_token(&req, "X-A", "three"));
	assert_false(ms_http_header_has_token(&req, "X-A", ""));
	assert_false(ms_http_header_has_token(&req, "X-B", "upgrade"));
	assert_true(ms_http_header_has_token(&req, "X-B", "later")); /* 2nd occurrence */
	assert_false(ms_http_header_has_token(&req, "X-C", ""));
	assert_false(ms_http_header_has_token(&req, "X-Missing", "a"));
}

/* Upgrade request with one header line replaced (or dropped if repl is
 * ""), then ws_check. */
static int check_with(const char *find, const char *repl, ms_str *key)
{
	char b[1024];
	const char *base = UPGRADE_REQ;
	const char *at = strstr(base, find);
	ms_http_request req;
	int r;

	assert_non_null(at);
	const char *eol = strstr(at, "\r\n") + 2;
	size_t n = (size_t)snprintf(b, sizeof(b), "%.*s%s%s",
				    (int)(at - base), base, repl, eol);
	r = parse(b, n, &req);
	assert_int_equal(r, n);
	/* key points into b: check it before b goes away */
	r = ms_http_ws_check(&req, key);
	if (r == 0)
		assert_int_equal(key->n, 24);
	return r;
}

static void test_ws_check(void **state)
{
	static const char r[] = UPGRADE_REQ;
	ms_http_request req;
	ms_str key = { 0 };

	assert_true(parse(r, sizeof(r) - 1, &req) > 0);
	assert_int_equal(ms_http_ws_check(&req, &key), 0);
	assert_true(str_is(key, "dGhlIHNhbXBsZSBub25jZQ=="));

	/* 405 */
	assert_int_equal(check_with("GET ", "POST /chat HTTP/1.1\r\n", &key), 405);
	assert_int_equal(check_with("GET ", "get /chat HTTP/1.1\r\n", &key), 405);
	assert_int_equal(check_with("GET ", "GETS /chat HTTP/1.1\r\n", &key), 405);
	/* 426: a version we do not speak */
	assert_int_equal(check_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8\r\n", &key), 426);
	assert_int_equal(check_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 130\r\n", &key), 426);
	assert_int_equal(check_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 13, 8\r\n", &key), 426);
	/* 400: missing or bad */
	assert_int_equal(check_with("GET ", "GET /chat HTTP/1.0\r\n", &key), 400);
	assert_int_equal(check_with("Host", "", &key), 400);
	assert_int_equal(check_with("Host", "Host: a\r\nHost: b\r\n", &key), 400);
	assert_int_equal(check_with("Upgrade:", "", &key), 400);
	assert_int_equal(check_with("Upgrade:", "Upgrade: h2c\r\n", &key), 400);
	assert_int_equal(check_with("Upgrade:", "Upgrade: websockets\r\n", &key), 400);
	assert_int_equal(check_with("Connection", "", &key), 400);
	assert_int_equal(check_with("Connection", "Connection: keep-alive\r\n", &key), 400);
	assert_int_equal(check_with("Connection", "Connection: upgrade-ish\r\n", &key), 400);
	assert_int_equal(check_with("Sec-WebSocket-Version", "", &key), 400);
	assert_int_equal(check_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n", &key), 400);
	assert_int_equal(check_with("Sec-WebSocket-Key", "", &key), 400);
	assert_int_equal(check_with("Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=\r\n", &key), 400);
	assert_int_equal(check_with("Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ===\r\n", &key), 400);
	assert_int_equal(check_with("Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n", &key), 400);
	assert_int_equal(check_with("Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQab\r\n", &key), 400);
	assert_int_equal(check_with("Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j*Q==\r\n", &key), 400);
	assert_int_equal(check_with("Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", &key), 400);
	/* 20 bytes of base64 is 28 characters: wrong size */
	assert_int_equal(check_with("Sec-WebSocket-Key", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n", &key), 400);
	/* 400: a body on the upgrade. Its bytes would follow the head and be
	 * read as frames, while a proxy in front reads them as a body
	 * (request smuggling). */
	assert_int_equal(check_with("Host", "Host: server.example.com\r\nTransfer-Encoding: chunked\r\n", &key), 400);
	assert_int_equal(check_with("Host", "Host: server.example.com\r\nTransfer-Encoding: identity\r\n", &key), 400);
	assert_int_equal(check_with("Host", "Host: server.example.com\r\ntransfer-encoding:\r\n", &key), 400);
	assert_int_equal(check_with("Host", "Host: server.example.com\r\nContent-Length: 5\r\n", &key), 400);
	assert_int_equal(check_with("Host", "Host: server.example.com\r\nContent-Length: 0, 0\r\n", &key), 400);
	assert_int_equal(check_with("Host", "Host: server.example.com\r\nContent-Length:\r\n", &key), 400);
	assert_int_equal(check_with("Host", "Host: server.example.com\r\nContent-Length: -0\r\n", &key), 400);
	assert_int_equal(check_with("Host", "Host: server.example.com\r\nContent-Length: 0\r\nContent-Length: 1\r\n", &key), 400);
	/* accepted variants */
	assert_int_equal(check_with("Host", "Host: server.example.com\r\nContent-Length: 0\r\n", &key), 0);
	assert_int_equal(check_with("Host", "Host: server.example.com\r\ncontent-length: 00\r\n", &key), 0);
	assert_int_equal(check_with("Connection", "Connection: keep-alive, Upgrade\r\n", &key), 0);
	assert_int_equal(check_with("Connection", "connection:UPGRADE\r\n", &key), 0);
	assert_int_equal(check_with("Connection", "Connection: keep-alive\r\nConnection: upgrade\r\n", &key), 0);
	assert_int_equal(check_with("Upgrade:", "upgrade: WebSocket\r\n", &key), 0);
	assert_int_equal(check_with("Sec-WebSocket-Key", "sec-websocket-key:  +/+/AAAAAAAAAAAAAAAAAA==  \r\n", &key), 0);
	assert_int_equal(check_with("GET ", "GET /chat HTTP/1.2\r\n", &key), 0);
}

static void test_query_param(void **state)
{
	const char *q = "room=lobby&token=abc.def&flag&empty=&a=1&a=2&x=%20y";
	ms_str qs = { q, strlen(q) };
	ms_str v;

	assert_true(str_is(ms_http_query_param(qs, "room"), "lobby"));
	assert_true(str_is(ms_http_query_param(qs, "token"), "abc.def"));
	assert_true(str_is(ms_http_query_param(qs, "a"), "1"));
	assert_true(str_is(ms_http_query_param(qs, "x"), "%20y"));
	v = ms_http_query_param(qs, "flag");
	assert_non_null(v.p);
	assert_int_equal(v.n, 0);
	v = ms_http_query_param(qs, "empty");
	assert_non_null(v.p);
	assert_int_equal(v.n, 0);
	v = ms_http_query_param(qs, "tok");
	assert_null(v.p);
	assert_int_equal(v.n, 0);
	assert_null(ms_http_query_param(qs, "Room").p);
	assert_null(ms_http_query_param(qs, "lobby").p);
	assert_null(ms_http_query_param((ms_str){ NULL, 0 }, "a").p);
	assert_null(ms_http_query_param((ms_str){ "", 0 }, "a").p);

	/* straight from a parsed request */
	static const char r[] = UPGRADE_REQ;
	ms_http_request req;
	assert_true(parse(r, sizeof(r) - 1, &req) > 0);
	assert_true(str_is(ms_http_query_param(req.query, "token"), "abc.def"));
	/* the query ends at the target's end, not at the buffer's */
	assert_true(parse("GET /?a=b HTTP/1.1\r\n\r\n", 22, &req) > 0);
	assert_true(str_is(ms_http_query_param(req.query, "a"), "b"));
}

static void test_response(void **state)
{
	char out[512];
	int n;

	n = ms_http_response(out, sizeof(out), 400, true, NULL, NULL);
	assert_string_equal(out, "HTTP/1.1 400 Bad Request\r\n"
				 "Content-Length: 0\r\n"
				 "Connection: close\r\n\r\n");
	assert_int_equal(n, strlen(out));

	n = ms_http_response(out, sizeof(out), 200, false,
			     "Content-Type: application/json\r\n", "{\"ok\":true}");
	assert_string_equal(out, "HTTP/1.1 200 OK\r\n"
				 "Content-Length: 11\r\n"
				 "Content-Type: application/json\r\n\r\n"
				 "{\"ok\":true}");
	assert_int_equal(n, strlen(out));

	n = ms_http_response(out, sizeof(out), 426, true,
			     "Sec-WebSocket-Version: 13\r\n", NULL);
	assert_string_equal(out, "HTTP/1.1 426 Upgrade Required\r\n"
				 "Content-Length: 0\r\n"
				 "Connection: close\r\n"
				 "Sec-WebSocket-Version: 13\r\n\r\n");

	/* every status the server sends has its phrase */
	static const struct { int s; const char *r; } ph[] = {
		{ 101, "Switching Protocols" }, { 200, "OK" },
		{ 400, "Bad Request" }, { 401, "Unauthorized" },
		{ 403, "Forbidden" }, { 404, "Not Found" },
		{ 405, "Method Not Allowed" }, { 408, "Request Timeout" },
		{ 426, "Upgrade Required" },
		{ 431, "Request Header Fields Too Large" },
		{ 500, "Internal Server Error" }, { 503, "Service Unavailable" },
		{ 505, "HTTP Version Not Supported" },
	};
	for (size_t i = 0; i < sizeof(ph) / sizeof(ph[0]); i++) {
		char want[128];

		n = ms_http_response(out, sizeof(out), ph[i].s, false, NULL, NULL);
		assert_true(n > 0);
		snprintf(want, sizeof(want), "HTTP/1.1 %d %s\r\n", ph[i].s, ph[i].r);
		assert_memory_equal(out, want, strlen(want));
		/* 1xx: RFC 7230 §3.3.2 forbids Content-Length */
		assert_int_equal(strstr(out, "Content-Length: 0\r\n") != NULL, ph[i].s >= 200);
	}
	assert_int_equal(ms_http_response(out, sizeof(out), 101, false, NULL, "x"), -1);
	assert_true(ms_http_response(out, sizeof(out), 299, false, NULL, NULL) > 0);
	assert_int_equal(ms_http_response(out, sizeof(out), 99, false, NULL, NULL), -1);
	assert_int_equal(ms_http_response(out, sizeof(out), 1000, false, NULL, NULL), -1);

	/* capacity: the NUL must fit too, nothing is written past cap */
	n = ms_http_response(out, sizeof(out), 404, false, NULL, "nope");
	assert_true(n > 0);
	for (size_t cap = 0; cap <= (size_t)n + 1; cap++) {
		char small[512];

		memset(small, '#', sizeof(small));
		int m = ms_http_response(small, cap, 404, false, NULL, "nope");
		assert_int_equal(m, cap > (size_t)n ? n : -1);
		for (size_t i = cap; i < sizeof(small); i++)
			assert_int_equal(small[i], '#');
	}
}

static void test_upgrade_response(void **state)
{
	char out[512];
	ms_str key = { "dGhlIHNhbXBsZSBub25jZQ==", 24 };
	int n;

	n = ms_http_upgrade_response(out, sizeof(out), key, NULL);
	assert_string_equal(out, "HTTP/1.1 101 Switching Protocols\r\n"
				 "Upgrade: websocket\r\n"
				 "Connection: Upgrade\r\n"
				 "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
				 "\r\n");
	assert_int_equal(n, strlen(out));
	n = ms_http_upgrade_response(out, sizeof(out), key, "chat");
	assert_string_equal(out, "HTTP/1.1 101 Switching Protocols\r\n"
				 "Upgrade: websocket\r\n"
				 "Connection: Upgrade\r\n"
				 "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
				 "Sec-WebSocket-Protocol: chat\r\n"
				 "\r\n");
	assert_int_equal(ms_http_upgrade_response(out, (size_t)n, key, "chat"), -1);
	assert_int_equal(ms_http_upgrade_response(out, (size_t)n + 1, key, "chat"), n);
	assert_int_equal(ms_http_upgrade_response(out, 10, key, NULL), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_request),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_version),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_every_split),
		cmocka_unit_test(test_header_get),
		cmocka_unit_test(test_tokens),
		cmocka_unit_test(test_ws_check),
		cmocka_unit_test(test_query_param),
		cmocka_unit_test(test_response),
		cmocka_unit_test(test_upgrade_response),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
