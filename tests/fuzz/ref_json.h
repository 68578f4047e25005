/*
 * A reference JSON validator for the fuzz targets, written straight from
 * the RFC 8259 grammar (its own UTF-8 decoder, no code shared with
 * net/json.c), so a disagreement with ms_json_valid is a bug in one of
 * them. Depth is capped like MS_JSON_MAX_DEPTH. Not thread-safe (libFuzzer
 * runs one input at a time).
 */
#ifndef MS_FUZZ_REF_JSON_H
#define MS_FUZZ_REF_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "net/json.h" /* MS_JSON_MAX_DEPTH */

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

#endif
