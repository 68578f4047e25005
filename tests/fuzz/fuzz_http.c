/*
 * libFuzzer target for net/http.h: ms_http_parse on arbitrary bytes, then
 * everything a connection would do with a parsed head (upgrade check, header
 * and query lookups, response writers).
 *
 * Invariants checked beyond "no crash": the result is 0, a known negative
 * status or a length within the input; every parsed string lies inside the
 * head; the head's every proper prefix parses as "need more" (the property
 * the connection's incremental re-parse relies on); a -400/-505 found in a
 * prefix is the same verdict for the whole input.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/http.h"

#define CHECK(c)                 \
	do {                     \
		if (!(c))        \
			abort(); \
	} while (0)

static void in_head(ms_str s, const char *b, int n)
{
	CHECK(s.p != NULL || s.n == 0);
	if (s.p)
		CHECK(s.p >= b && s.p + s.n <= b + n);
}

static void use_request(const ms_http_request *req, const char *b, int n)
{
	char out[1024];
	ms_str key;

	in_head(req->method, b, n);
	in_head(req->target, b, n);
	in_head(req->path, b, n);
	in_head(req->query, b, n);
	CHECK(req->method.n > 0 && req->target.n > 0 && req->target.p[0] == '/');
	CHECK(req->path.p == req->target.p && req->path.n <= req->target.n);
	CHECK(req->minor >= 0 && req->minor <= 9);
	CHECK(req->nheaders <= MS_HTTP_MAX_HEADERS);
	for (size_t i = 0; i < req->nheaders; i++) {
		const ms_http_header *h = &req->headers[i];

		in_head(h->name, b, n);
		in_head(h->value, b, n);
		CHECK(h->name.n > 0);
		/* trimmed values start and end with a non-blank */
		if (h->value.n) {
			CHECK(h->value.p[0] != ' ' && h->value.p[0] != '\t');
			CHECK(h->value.p[h->value.n - 1] != ' ' &&
			      h->value.p[h->value.n - 1] != '\t');
		}
	}

	int st = ms_http_ws_check(req, &key);
	CHECK(st == 0 || st == 400 || st == 405 || st == 426);
	if (st == 0) {
		in_head(key, b, n);
		CHECK(key.n == 24);
		CHECK(!ms_http_header_get(req, "Transfer-Encoding")); /* no body */
		CHECK(ms_http_upgrade_response(out, sizeof(out), key, NULL) > 0);
		CHECK(ms_http_upgrade_response(out, sizeof(out), key, "chat") > 0);
	}
	CHECK(ms_http_response(out, sizeof(out), st ? st : 101, true, NULL, NULL) > 0);

	(void)ms_http_header_get(req, "Host");
	(void)ms_http_header_has_token(req, "Connection", "upgrade");
	ms_str v = ms_http_query_param(req->query, "token");
	if (v.p)
		CHECK(v.p >= req->query.p && v.p + v.n <= req->query.p + req->query.n);
	if (req->nheaders) {
		/* look up names taken from the input itself */
		char name[64];
		size_t nn = req->headers[0].name.n < 63 ? req->headers[0].name.n : 63;

		memcpy(name, req->headers[0].name.p, nn);
		name[nn] = 0;
		CHECK(ms_http_header_get(req, name) != NULL || nn == 63);
		(void)ms_http_header_has_token(req, name, "a");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size heap copy: any read past the end is an ASan report. */
	char *b = malloc(size ? size : 1);
	ms_http_request req, req2;

	memcpy(b, data, size);
	int r = ms_http_parse(b, size, &req);

	CHECK(r == 0 || r == -400 || r == -431 || r == -505 ||
	      (r > 0 && (size_t)r <= size && r <= MS_HTTP_MAX_HEAD));
	if (r > 0) {
		CHECK(r >= 4 && memcmp(b + r - 4, "\r\n\r\n", 4) == 0);
		use_request(&req, b, r);
		/* every proper prefix needs more */
		CHECK(ms_http_parse(b, (size_t)r - 1, &req2) == 0);
		CHECK(ms_http_parse(b, (size_t)r / 2, &req2) == 0);
		/* bytes after the head change nothing */
		CHECK(ms_http_parse(b, (size_t)r, &req2) == r);
	} else if (r == 0) {
		CHECK(size < MS_HTTP_MAX_HEAD);
		CHECK(ms_http_parse(b, size / 2, &req2) == 0);
	} else if (r != -431) {
		/* a verdict found in a prefix holds for the whole input */
		size_t half = size / 2;
		int r2 = ms_http_parse(b, half, &req2);

		CHECK(r2 == 0 || r2 == r);
	}
	free(b);
	return 0;
}
