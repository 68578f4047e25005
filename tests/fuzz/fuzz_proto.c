/*
 * libFuzzer target for net/proto.h and net/json.h on arbitrary bytes.
 *
 * ms_json_valid is compared with a small recursive reference validator
 * written straight from the RFC 8259 grammar (its own UTF-8 decoder, no
 * shared code), so a disagreement is a bug in one of them. Then:
 * ms_proto_parse returns 0 only for valid JSON and 400 with "invalid json"
 * exactly for invalid JSON (and then no id); every span lies inside the
 * input; a parsed request's fields obey their rules (stream names, user
 * ids, data is exactly one valid value with no surrounding whitespace);
 * iterating an object or array ends in 0 exactly when the text is valid;
 * every member's key decodes to valid UTF-8 no longer than its raw form.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/json.h"
#include "net/proto.h"
#include "net/utf8.h"

#define CHECK(c)                 \
	do {                     \
		if (!(c))        \
			abort(); \
	} while (0)

/* ---- reference validator -------------------------------------------- */

static const uint8_t *rp, *re;

static void rws(void)
{
	while (rp < re && (*rp == ' ' || *rp == '\t' || *rp == '\n' || *rp == '\r'))
		rp++;
}

static bool rhex(unsigned *u)
{
	*u = 0;
	for (int i = 0; i < 4; i++, rp++) {
		if (rp >= re)
			return false;
		uint8_t c = *rp;
		unsigned d = c >= '0' && c <= '9' ? c - '0' :
			     c >= 'a' && c <= 'f' ? c - 'a' + 10u :
			     c >= 'A' && c <= 'F' ? c - 'A' + 10u : 99u;
		if (d > 15)
			return false;
		*u = *u * 16 + d;
	}
	return true;
}

static bool rstr(void)
{
	rp++;
	while (rp < re) {
		uint8_t c = *rp++;
		unsigned u, lo;

		if (c == '"')
			return true;
		if (c < 0x20)
			return false;
		if (c == '\\') {
			if (rp >= re)
				return false;
			c = *rp++;
			if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' ||
			    c == 'n' || c == 'r' || c == 't')
				continue;
			if (c != 'u' || !rhex(&u) || (u >= 0xdc00 && u <= 0xdfff))
				return false;
			if (u >= 0xd800 && u <= 0xdbff) {
				if (re - rp < 2 || rp[0] != '\\' || rp[1] != 'u')
					return false;
				rp += 2;
				if (!rhex(&lo) || lo < 0xdc00 || lo > 0xdfff)
					return false;
			}
			continue;
		}
		if (c < 0x80)
			continue;
		int n;
		uint32_t cp, min;
		if (c >= 0xc0 && c <= 0xdf) {
			n = 1, cp = c & 0x1f, min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2, cp = c & 0x0f, min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf7) {
			n = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		for (int i = 0; i < n; i++, rp++) {
			if (rp >= re || (*rp & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (*rp & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
	}
	return false;
}

static bool rdigits(void)
{
	if (rp >= re || *rp < '0' || *rp > '9')
		return false;
	while (rp < re && *rp >= '0' && *rp <= '9')
		rp++;
	return true;
}

static bool rnum(void)
{
	if (rp < re && *rp == '-')
		rp++;
	if (rp < re && *rp == '0')
		rp++;
	else if (rp >= re || *rp < '1' || !rdigits())
		return false;
	if (rp < re && *rp == '.') {
		rp++;
		if (!rdigits())
			return false;
	}
	if (rp < re && (*rp == 'e' || *rp == 'E')) {
		rp++;
		if (rp < re && (*rp == '+' || *rp == '-'))
			rp++;
		if (!rdigits())
			return false;
	}
	return true;
}

static bool rlit(const char *s)
{
	size_t n = strlen(s);

	if ((size_t)(re - rp) < n || memcmp(rp, s, n) != 0)
		return false;
	rp += n;
	return true;
}

/* depth: containers already open around this value */
static bool rval(int depth)
{
	rws();
	if (rp >= re)
		return false;
	switch (*rp) {
	case '{':
	case '[': {
		bool obj = *rp == '{';

		if (depth >= MS_JSON_MAX_DEPTH)
			return false;
		rp++;
		rws();
		if (rp < re && *rp == (obj ? '}' : ']')) {
			rp++;
			return true;
		}
		for (;;) {
			if (obj) {
				rws();
				if (rp >= re || *rp != '"' || !rstr())
					return false;
				rws();
				if (rp >= re || *rp++ != ':')
					return false;
			}
			if (!rval(depth + 1))
				return false;
			rws();
			if (rp >= re)
				return false;
			if (*rp == ',') {
				rp++;
				continue;
			}
			if (*rp++ != (obj ? '}' : ']'))
				return false;
			return true;
		}
	}
	case '"':
		return rstr();
	case 't':
		return rlit("true");
	case 'f':
		return rlit("false");
	case 'n':
		return rlit("null");
	default:
		return rnum();
	}
}

static bool ref_valid(const uint8_t *p, size_t n)
{
	rp = p;
	re = p + n;
	if (!rval(0))
		return false;
	rws();
	return rp == re;
}

/* ---- checks ------------------------------------------------------------ */

static bool inside(ms_str s, const char *p, size_t n)
{
	return s.n == 0 || (s.p >= p && s.p + s.n <= p + n);
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void check_key(ms_str k, const char *p, size_t n)
{
	char out[512];
	long len;

	CHECK(inside(k, p, n) && k.p > p && k.p + k.n < p + n);
	CHECK(k.p[-1] == '"' && k.p[k.n] == '"');
	if (k.n + 2 > sizeof(out))
		return;
	len = ms_json_string((ms_str){ k.p - 1, k.n + 2 }, out, sizeof(out));
	CHECK(len >= 0 && (size_t)len <= k.n);
	CHECK(ms_utf8_validate(MS_UTF8_ACCEPT, (const uint8_t *)out, (size_t)len) ==
	      MS_UTF8_ACCEPT);
}

static void check_value(ms_str v, const char *p, size_t n)
{
	int64_t i;

	CHECK(v.n > 0 && inside(v, p, n));
	CHECK(!is_ws(v.p[0]) && !is_ws(v.p[v.n - 1]));
	CHECK(ms_json_valid(v.p, v.n));
	CHECK(ms_json_skip(v.p, v.p + v.n) == v.p + v.n);
	if (ms_json_int(v, &i))
		CHECK(v.p[0] == '-' || (v.p[0] >= '0' && v.p[0] <= '9'));
}

static void check_iterators(const char *p, size_t n, bool valid)
{
	ms_json_iter it;
	ms_str k, v;
	int r;

	if (ms_json_object_begin(&it, p, n)) {
		while ((r = ms_json_object_next(&it, &k, &v)) > 0) {
			check_key(k, p, n);
			check_value(v, p, n);
		}
		CHECK((r == 0) == valid);
		CHECK(ms_json_object_next(&it, &k, &v) == r);
	}
	if (ms_json_array_begin(&it, p, n)) {
		while ((r = ms_json_array_next(&it, &v)) > 0)
			check_value(v, p, n);
		CHECK((r == 0) == valid);
		CHECK(ms_json_array_next(&it, &v) == r);
	}
}

static void check_request(const char *p, size_t n, bool valid)
{
	ms_req r;
	const char *err = NULL;
	uint64_t uid;
	int rc = ms_proto_parse(p, n, &r, &err);

	CHECK(rc == 0 || rc == 400);
	CHECK(inside(r.stream, p, n) && inside(r.to, p, n) && inside(r.data, p, n));
	CHECK(inside(r.token, p, n) && inside(r.cursor, p, n));
	if (rc == 400) {
		CHECK(err != NULL);
		CHECK((strcmp(err, "invalid json") == 0) == !valid);
		if (!valid)
			CHECK(!r.has_id);
		return;
	}
	CHECK(valid);
	switch (r.op) {
	case MS_REQ_JOIN:
	case MS_REQ_LEAVE:
	case MS_REQ_PRESENCE:
		CHECK(ms_proto_stream_valid(r.stream));
		CHECK(r.data.n == 0);
		break;
	case MS_REQ_PUBLISH:
		CHECK(ms_proto_stream_valid(r.stream));
		check_value(r.data, p, n);
		break;
	case MS_REQ_DM:
		CHECK(ms_proto_uid(r.to, &uid));
		check_value(r.data, p, n);
		break;
	case MS_REQ_AUTH:
		CHECK(r.token.n > 0);
		break;
	case MS_REQ_PING:
		break;
	default:
		CHECK(0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	bool valid = ms_json_valid(p, size);
	const char *q;

	CHECK(valid == ref_valid(data, size));
	q = ms_json_skip(p, p + size);
	CHECK(!q || (q > p && q <= p + size));
	check_iterators(p, size, valid);
	check_request(p, size, valid);
	if (size < 2 * 1024) {
		/* the same text as a string's contents must survive decoding */
		char buf[4100], out[4100];
		long len;

		buf[0] = '"';
		memcpy(buf + 1, data, size);
		buf[size + 1] = '"';
		len = ms_json_string((ms_str){ buf, size + 2 }, out, sizeof(out));
		CHECK(len <= (long)size);
		if (len >= 0)
			CHECK(ms_utf8_validate(MS_UTF8_ACCEPT, (const uint8_t *)out,
					       (size_t)len) == MS_UTF8_ACCEPT);
	}
	return 0;
}
