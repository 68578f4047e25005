/*
 * Strict RFC 8259 JSON scanning without allocation (net/json.h).
 *
 * The server never builds a tree: it validates a value, remembers where it
 * starts and ends, and forwards those bytes. So the whole module is one
 * scanner (skip_value) plus thin wrappers. Every chat message goes through
 * it once, and a publish may carry 64 KiB of data, so the hot loops are:
 *
 *   - strings: eight bytes at a time with a SWAR test for the four byte
 *     kinds that need attention ('"', '\\', < 0x20, >= 0x80); a run of
 *     non-ASCII bytes is handed whole to the UTF-8 DFA of net/utf8.h, which
 *     also rejects a code point cut short by the following ASCII byte;
 *   - nesting: iterative, one bit per level in a 64-bit word (object or
 *     array), so depth costs no stack and MS_JSON_MAX_DEPTH is exact.
 *
 * Strictness, on purpose: no trailing commas, no leading zeros, no
 * NaN/Infinity, no comments, no single quotes, no raw control characters,
 * only the eight short escapes plus \uXXXX, and a \u surrogate must be a
 * high one followed by a low one. Anything a lenient parser would accept and
 * a strict one reject is a parser-differential hazard for the clients we
 * forward to, so we reject it here.
 */
#include "net/json.h"

#include <string.h>

#include "net/utf8.h"

_Static_assert(MS_JSON_MAX_DEPTH <= 64, "nesting is tracked in a uint64_t");

enum { IT_FIRST, IT_NEXT, IT_DONE, IT_ERR };

static inline const char *ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
		p++;
	return p;
}

static inline bool is_digit(char c)
{
	return (unsigned char)(c - '0') < 10;
}

/* Byte kinds inside a string. */
enum { S_PLAIN = 0, S_QUOTE, S_ESC, S_CTL, S_HIGH };

static const uint8_t str_kind[256] = {
	[0x00 ... 0x1f] = S_CTL,
	['"'] = S_QUOTE,
	['\\'] = S_ESC,
	[0x80 ... 0xff] = S_HIGH,
};

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static int hex4(const char *p)
{
	int a = hexval(p[0]), b = hexval(p[1]), c = hexval(p[2]), d = hexval(p[3]);

	if ((a | b | c | d) < 0)
		return -1;
	return a << 12 | b << 8 | c << 4 | d;
}

/* One escape at p ('\\'). Returns the pointer past it and the code point
 * (for the short escapes, the byte it stands for), or NULL. A high
 * surrogate consumes the low one that must follow. */
static const char *escape(const char *p, const char *end, uint32_t *cp)
{
	int u, lo;

	if (end - p < 2)
		return NULL;
	switch (p[1]) {
	case '"': *cp = '"'; return p + 2;
	case '\\': *cp = '\\'; return p + 2;
	case '/': *cp = '/'; return p + 2;
	case 'b': *cp = '\b'; return p + 2;
	case 'f': *cp = '\f'; return p + 2;
	case 'n': *cp = '\n'; return p + 2;
	case 'r': *cp = '\r'; return p + 2;
	case 't': *cp = '\t'; return p + 2;
	case 'u':
		break;
	default:
		return NULL;
	}
	if (end - p < 6 || (u = hex4(p + 2)) < 0)
		return NULL;
	p += 6;
	if (u >= 0xdc00 && u <= 0xdfff)
		return NULL; /* lone low surrogate */
	if (u >= 0xd800 && u <= 0xdbff) {
		if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
			return NULL;
		lo = hex4(p + 2);
		if (lo < 0xdc00 || lo > 0xdfff)
			return NULL;
		p += 6;
		u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
	}
	*cp = (uint32_t)u;
	return p;
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SWAR 1
/* Nonzero iff one of the 8 bytes is '"', '\\', < 0x20 or >= 0x80. The
 * subtractions can set false bits only above a byte that really matched
 * (they borrow from it), so the lowest set bit always marks the first byte
 * needing attention. Bytes >= 0x80 are caught by x itself. */
static inline uint64_t attention(uint64_t x)
{
	const uint64_t ones = 0x0101010101010101ull, high = ones * 0x80;
	uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');

	return (x | (x - ones * 0x20) | (q - ones) | (b - ones)) & high;
}
#endif

/* p at the opening quote. Returns the pointer past the closing quote. */
static const char *scan_string(const char *p, const char *end)
{
	const char *q;
	uint32_t cp;

	p++;
	for (;;) {
#ifdef SWAR
		while (end - p >= 8) {
			uint64_t x, r;

			memcpy(&x, p, 8);
			r = attention(x);
			if (r) {
				p += __builtin_ctzll(r) >> 3;
				goto special;
			}
			p += 8;
		}
#endif
		while (p < end && str_kind[(uint8_t)*p] == S_PLAIN)
			p++;
		if (p >= end)
			return NULL;
#ifdef SWAR
special:
#endif
		switch (str_kind[(uint8_t)*p]) {
		case S_QUOTE:
			return p + 1;
		case S_ESC:
			p = escape(p, end, &cp);
			if (!p)
				return NULL;
			break;
		case S_HIGH:
			/* A run of bytes >= 0x80 holds whole code points in
			 * valid UTF-8 (ASCII never sits inside one), so the DFA
			 * must end the run in its accepting state. */
			q = p + 1;
			while (q < end && (uint8_t)*q >= 0x80)
				q++;
			if (ms_utf8_validate(MS_UTF8_ACCEPT, (const uint8_t *)p,
					     (size_t)(q - p)) != MS_UTF8_ACCEPT)
				return NULL;
			p = q;
			break;
		default: /* S_CTL */
			return NULL;
		}
	}
}

static const char *scan_number(const char *p, const char *end)
{
	if (p < end && *p == '-')
		p++;
	if (p >= end)
		return NULL;
	if (*p == '0') {
		p++;
	} else if (*p >= '1' && *p <= '9') {
		do
			p++;
		while (p < end && is_digit(*p));
	} else {
		return NULL;
	}
	if (p < end && *p == '.') {
		p++;
		if (p >= end || !is_digit(*p))
			return NULL;
		do
			p++;
		while (p < end && is_digit(*p));
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (p >= end || !is_digit(*p))
			return NULL;
		do
			p++;
		while (p < end && is_digit(*p));
	}
	return p;
}

static const char *literal(const char *p, const char *end, const char *lit, size_t n)
{
	if ((size_t)(end - p) < n || memcmp(p, lit, n) != 0)
		return NULL;
	return p + n;
}

/* One value with at most maxdepth levels of nesting. `stack` holds one bit
 * per open level: 1 object, 0 array. */
static const char *skip_value(const char *p, const char *end, int maxdepth)
{
	uint64_t stack = 0;
	int depth = 0;

value:
	p = ws(p, end);
	if (p >= end)
		return NULL;
	switch (*p) {
	case '{':
		if (depth >= maxdepth)
			return NULL;
		stack |= 1ull << depth++;
		p = ws(p + 1, end);
		if (p < end && *p == '}') {
			p++;
			depth--;
			goto after;
		}
		goto key;
	case '[':
		if (depth >= maxdepth)
			return NULL;
		stack &= ~(1ull << depth++);
		p = ws(p + 1, end);
		if (p < end && *p == ']') {
			p++;
			depth--;
			goto after;
		}
		goto value;
	case '"':
		p = scan_string(p, end);
		break;
	case 't':
		p = literal(p, end, "true", 4);
		break;
	case 'f':
		p = literal(p, end, "false", 5);
		break;
	case 'n':
		p = literal(p, end, "null", 4);
		break;
	default:
		p = scan_number(p, end);
		break;
	}
	if (!p)
		return NULL;

after: /* a value (scalar or closed container) just ended */
	if (depth == 0)
		return p;
	p = ws(p, end);
	if (p >= end)
		return NULL;
	if (stack >> (depth - 1) & 1) {
		if (*p == ',') {
			p++;
			goto key;
		}
		if (*p != '}')
			return NULL;
	} else {
		if (*p == ',') {
			p++;
			goto value;
		}
		if (*p != ']')
			return NULL;
	}
	p++;
	depth--;
	goto after;

key:
	p = ws(p, end);
	if (p >= end || *p != '"')
		return NULL;
	p = scan_string(p, end);
	if (!p)
		return NULL;
	p = ws(p, end);
	if (p >= end || *p != ':')
		return NULL;
	p++;
	goto value;
}

const char *ms_json_skip(const char *p, const char *end)
{
	return skip_value(p, end, MS_JSON_MAX_DEPTH);
}

bool ms_json_valid(const char *p, size_t n)
{
	const char *end, *q;

	if (n == 0)
		return false;
	end = p + n;
	q = ms_json_skip(p, end);
	return q && ws(q, end) == end;
}

/* Iterators: the container itself is one level, so members get one less
 * and a fully iterated text is valid exactly when ms_json_valid says so. */
static bool iter_begin(ms_json_iter *it, const char *p, size_t n, char open)
{
	const char *end = n ? p + n : p; /* p may be NULL when n is 0 */

	p = ws(p, end);
	it->end = end;
	if (p >= end || *p != open) {
		it->p = p;
		it->state = IT_ERR;
		return false;
	}
	it->p = p + 1;
	it->state = IT_FIRST;
	return true;
}

/* Before a member or element: consume ',' or the closing byte. Returns the
 * position of the member, or NULL at the end (state set) or on error. */
static const char *iter_sep(ms_json_iter *it, char close)
{
	const char *end = it->end, *p = ws(it->p, end);

	if (p >= end)
		goto bad;
	if (*p == close) {
		p = ws(p + 1, end);
		if (p != end)
			goto bad;
		it->p = p;
		it->state = IT_DONE;
		return NULL;
	}
	if (it->state == IT_NEXT) {
		if (*p != ',')
			goto bad;
		p = ws(p + 1, end);
	}
	return p;
bad:
	it->state = IT_ERR;
	return NULL;
}

bool ms_json_object_begin(ms_json_iter *it, const char *p, size_t n)
{
	return iter_begin(it, p, n, '{');
}

int ms_json_object_next(ms_json_iter *it, ms_str *key, ms_str *val)
{
	const char *end = it->end, *p, *q;

	if (it->state == IT_DONE)
		return 0;
	if (it->state == IT_ERR)
		return -1;
	p = iter_sep(it, '}');
	if (!p)
		return it->state == IT_DONE ? 0 : -1;
	if (p >= end || *p != '"' || !(q = scan_string(p, end)))
		goto bad;
	key->p = p + 1;
	key->n = (size_t)(q - p - 2);
	p = ws(q, end);
	if (p >= end || *p != ':')
		goto bad;
	p = ws(p + 1, end);
	q = skip_value(p, end, MS_JSON_MAX_DEPTH - 1);
	if (!q)
		goto bad;
	val->p = p;
	val->n = (size_t)(q - p);
	it->p = q;
	it->state = IT_NEXT;
	return 1;
bad:
	it->state = IT_ERR;
	return -1;
}

bool ms_json_array_begin(ms_json_iter *it, const char *p, size_t n)
{
	return iter_begin(it, p, n, '[');
}

int ms_json_array_next(ms_json_iter *it, ms_str *val)
{
	const char *p, *q;

	if (it->state == IT_DONE)
		return 0;
	if (it->state == IT_ERR)
		return -1;
	p = iter_sep(it, ']');
	if (!p)
		return it->state == IT_DONE ? 0 : -1;
	q = skip_value(p, it->end, MS_JSON_MAX_DEPTH - 1);
	if (!q) {
		it->state = IT_ERR;
		return -1;
	}
	val->p = p;
	val->n = (size_t)(q - p);
	it->p = q;
	it->state = IT_NEXT;
	return 1;
}

static size_t put_utf8(char *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | cp >> 18);
	o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

long ms_json_string(ms_str val, char *out, size_t cap)
{
	const char *p = val.p, *end, *bs;
	size_t len = 0, k;
	uint32_t cp = 0; /* set by escape(); gcc -O3 cannot see it through the validation */
	char u[4];

	/* Validate first, so decoding below can trust every escape. */
	if (val.n < 2 || *p != '"')
		return -1;
	end = p + val.n;
	if (scan_string(p, end) != end)
		return -1;
	p++;
	end--; /* the closing quote */
	while (p < end) {
		bs = memchr(p, '\\', (size_t)(end - p));
		k = (size_t)((bs ? bs : end) - p);
		if (k > cap - len)
			return -1;
		memcpy(out + len, p, k);
		len += k;
		if (!bs)
			break;
		p = escape(bs, end, &cp);
		k = put_utf8(u, cp);
		if (k > cap - len)
			return -1;
		memcpy(out + len, u, k);
		len += k;
	}
	return (long)len;
}

long ms_json_key(ms_str key, char *out, size_t cap)
{
	return ms_json_string((ms_str){ key.p - 1, key.n + 2 }, out, cap);
}

/* The next code point of a raw key (the contents between its quotes), as
 * UTF-8 in u; advances *pp. Returns its length. The iterator has validated
 * the key, so escapes are well formed and UTF-8 sequences complete. */
static size_t key_unit(const char **pp, const char *end, char u[4])
{
	const char *p = *pp;
	char quoted[16];
	long n;
	size_t k;

	if (*p != '\\') {
		/* A whole code point, so it compares equal to its \u form. */
		uint8_t b = (uint8_t)*p;

		k = b < 0xc0 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
		memcpy(u, p, k);
		*pp = p + k;
		return k;
	}
	/* An escape is 2 bytes, or 6, or 12 for a surrogate pair. Decode it
	 * by wrapping it in quotes for ms_json_string. */
	k = p[1] != 'u' ? 2 : (end - p >= 12 && p[6] == '\\' && p[7] == 'u' &&
			       (p[2] | 0x20) == 'd' && (p[3] | 0x20) >= '8' &&
			       (p[3] | 0x20) <= 'b') ? 12 : 6;
	quoted[0] = '"';
	memcpy(quoted + 1, p, k);
	quoted[k + 1] = '"';
	n = ms_json_string((ms_str){ quoted, k + 2 }, u, 4);
	*pp = p + k;
	return n > 0 ? (size_t)n : 0;
}

static bool key_eq(ms_str a, ms_str b)
{
	const char *pa = a.p, *ea = a.p + a.n, *pb = b.p, *eb = b.p + b.n;
	char ua[4], ub[4];
	size_t na, nb;

	if (!memchr(a.p, '\\', a.n) && !memchr(b.p, '\\', b.n))
		return a.n == b.n && memcmp(a.p, b.p, a.n) == 0;
	while (pa < ea && pb < eb) {
		na = key_unit(&pa, ea, ua);
		nb = key_unit(&pb, eb, ub);
		if (na != nb || memcmp(ua, ub, na) != 0)
			return false;
	}
	return pa == ea && pb == eb;
}

static uint32_t key_hash(ms_str k)
{
	const char *p = k.p, *end = k.p + k.n;
	uint32_t h = 2166136261u;
	char u[4];
	size_t n;

	while (p < end) {
		n = key_unit(&p, end, u);
		for (size_t i = 0; i < n; i++)
			h = (h ^ (uint8_t)u[i]) * 16777619u;
	}
	return h;
}

_Static_assert((sizeof(((ms_json_keys *)0)->slot) & (sizeof(((ms_json_keys *)0)->slot) - 1)) == 0,
	       "the key set's probe mask needs a power of two");

void ms_json_keys_init(ms_json_keys *ks)
{
	ks->n = 0;
	memset(ks->slot, 0, sizeof(ks->slot));
}

int ms_json_keys_add(ms_json_keys *ks, ms_str key)
{
	uint32_t h;

	if (ks->n == MS_JSON_KEYS_MAX)
		return -1;
	/* Open addressing at most half full: a probe ends at an empty slot. */
	for (h = key_hash(key);; h++) {
		h &= sizeof(ks->slot) - 1;
		if (!ks->slot[h]) {
			ks->key[ks->n] = key;
			ks->slot[h] = (uint8_t)++ks->n;
			return 1;
		}
		if (key_eq(ks->key[ks->slot[h] - 1], key))
			return 0;
	}
}

bool ms_json_int(ms_str val, int64_t *out)
{
	const char *p = val.p, *end;
	bool neg = false;
	uint64_t v = 0, lim;

	if (val.n == 0)
		return false;
	end = p + val.n;
	if (*p == '-') {
		neg = true;
		p++;
	}
	if (p >= end || !is_digit(*p) || (*p == '0' && end - p > 1))
		return false;
	lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (; p < end; p++) {
		unsigned d = (unsigned)(*p - '0');

		if (d > 9 || v > (lim - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return true;
}
