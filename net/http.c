/*
 * HTTP/1.1 request-head parser for the WebSocket opening handshake, the
 * RFC 6455 §4.2.1 upgrade check, and the few responses the server writes.
 *
 * The parser is strict RFC 7230 and stateless: each call scans the buffer
 * from the start, so the caller just re-calls it after every read. That costs
 * a rescan per read, bounded by MS_HTTP_MAX_HEAD (8 KiB), and buys a parser
 * with no per-connection state. Every byte is checked as it is reached, so
 * garbage (a TLS ClientHello on the plain port, a scanner) is refused on the
 * first read instead of after 8 KiB; and since a verdict only depends on the
 * bytes before the point that decides it, a valid head split anywhere parses
 * as 0, 0, ..., then its length.
 *
 * Deliberately unsupported (all -400): leading empty lines, absolute-form and
 * asterisk-form targets, obs-fold, LF-only line endings.
 */
#include "net/http.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "net/ws.h"

/* RFC 7230 §3.2.6 tchar: ALPHA / DIGIT / "!#$%&'*+-.^_`|~". */
static const uint8_t tchar[256] = {
	['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1,
	['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1,
	['`'] = 1, ['|'] = 1, ['~'] = 1,
	['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
	['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
	['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
	['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
	['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
	['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
	['Y'] = 1, ['Z'] = 1,
	['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
	['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
	['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
	['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
	['y'] = 1, ['z'] = 1,
};

static inline bool is_ows(uint8_t c)
{
	return c == ' ' || c == '\t';
}

static inline uint8_t lower(uint8_t c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static bool ieq(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (lower((uint8_t)a[i]) != lower((uint8_t)b[i]))
			return false;
	return true;
}

static inline ms_str mkstr(const uint8_t *p, const uint8_t *end)
{
	return (ms_str){ (const char *)p, (size_t)(end - p) };
}

/* Expect CRLF at *pp. 1 and advances past it, 0 if the buffer ends first,
 * -1 if anything else is there (bare CR or LF, stray bytes). */
static int crlf(const uint8_t **pp, const uint8_t *e)
{
	const uint8_t *p = *pp;

	if (p == e)
		return 0;
	if (*p != '\r')
		return -1;
	if (p + 1 == e)
		return 0;
	if (p[1] != '\n')
		return -1;
	*pp = p + 2;
	return 1;
}

int ms_http_parse(const char *buf, size_t len, ms_http_request *req)
{
	const uint8_t *b = (const uint8_t *)buf;
	/* Bytes past MS_HTTP_MAX_HEAD are never looked at: a head that has
	 * not ended by then is -431 whatever follows. */
	const uint8_t *e = b + (len < MS_HTTP_MAX_HEAD ? len : MS_HTTP_MAX_HEAD);
	const uint8_t *p = b, *s;
	int major, r;

	req->nheaders = 0;

	/* method SP */
	for (s = p; p < e && tchar[*p]; p++)
		;
	if (p == e)
		goto more;
	if (p == s || *p != ' ')
		return -400;
	req->method = mkstr(s, p++);

	/* origin-form target SP: '/' then visible ASCII */
	if (p == e)
		goto more;
	if (*p != '/')
		return -400;
	for (s = p; p < e && *p > 0x20 && *p < 0x7f; p++)
		;
	if (p == e)
		goto more;
	if (*p != ' ')
		return -400;
	req->target = mkstr(s, p++);
	{
		const uint8_t *q = memchr(s, '?', (size_t)(req->target.n));

		if (q) {
			req->path = mkstr(s, q);
			req->query = mkstr(q + 1, s + req->target.n);
		} else {
			req->path = req->target;
			req->query = (ms_str){ NULL, 0 };
		}
	}

	/* "HTTP/" DIGIT "." DIGIT CRLF; the version is judged only once the
	 * line is well formed, so "HTTP/2.0" is -505 and "HTTP/2" junk -400. */
	for (const char *v = "HTTP/"; *v; v++, p++) {
		if (p == e)
			goto more;
		if (*p != (uint8_t)*v)
			return -400;
	}
	if (p == e)
		goto more;
	if (*p < '0' || *p > '9')
		return -400;
	major = *p++ - '0';
	if (p == e)
		goto more;
	if (*p++ != '.')
		return -400;
	if (p == e)
		goto more;
	if (*p < '0' || *p > '9')
		return -400;
	req->minor = *p++ - '0';
	r = crlf(&p, e);
	if (r == 0)
		goto more;
	if (r < 0)
		return -400;
	if (major != 1)
		return -505;

	for (;;) {
		const uint8_t *vs, *ve;

		if (p == e)
			goto more;
		if (*p == '\r') {
			r = crlf(&p, e);
			if (r == 0)
				goto more;
			if (r < 0)
				return -400;
			return (int)(p - b);
		}
		/* A line starting with whitespace is obs-fold (RFC 7230 §3.2.4)
		 * or whitespace before the first name: both rejected. */
		for (s = p; p < e && tchar[*p]; p++)
			;
		if (p == e)
			goto more;
		if (p == s || *p != ':')
			return -400; /* no name, no colon, or space before it */
		ms_str name = mkstr(s, p++);

		while (p < e && is_ows(*p))
			p++;
		for (vs = ve = p; p < e && *p != '\r'; p++) {
			if (is_ows(*p))
				continue;
			/* field-vchar is VCHAR / obs-text: no CTL but HTAB */
			if (*p < 0x20 || *p == 0x7f)
				return -400;
			ve = p + 1;
		}
		r = crlf(&p, e);
		if (r == 0)
			goto more;
		if (r < 0)
			return -400;
		if (req->nheaders == MS_HTTP_MAX_HEADERS)
			return -431;
		req->headers[req->nheaders].name = name;
		req->headers[req->nheaders].value = mkstr(vs, ve);
		req->nheaders++;
	}

more:
	return len >= MS_HTTP_MAX_HEAD ? -431 : 0;
}

const ms_http_header *ms_http_header_get(const ms_http_request *req,
					 const char *name)
{
	size_t n = strlen(name);

	for (size_t i = 0; i < req->nheaders; i++) {
		const ms_http_header *h = &req->headers[i];

		if (h->name.n == n && ieq(h->name.p, name, n))
			return h;
	}
	return NULL;
}

static size_t header_count(const ms_http_request *req, const char *name)
{
	size_t n = strlen(name), c = 0;

	for (size_t i = 0; i < req->nheaders; i++)
		if (req->headers[i].name.n == n && ieq(req->headers[i].name.p, name, n))
			c++;
	return c;
}

static bool list_has(ms_str v, const char *token, size_t tn)
{
	const char *p = v.p, *e = v.p + v.n;

	while (p < e) {
		const char *s, *t;

		while (p < e && (is_ows((uint8_t)*p) || *p == ','))
			p++;
		for (s = p; p < e && *p != ','; p++)
			;
		for (t = p; t > s && is_ows((uint8_t)t[-1]); t--)
			;
		if ((size_t)(t - s) == tn && tn && ieq(s, token, tn))
			return true;
	}
	return false;
}

bool ms_http_header_has_token(const ms_http_request *req, const char *name,
			      const char *token)
{
	size_t n = strlen(name), tn = strlen(token);

	for (size_t i = 0; i < req->nheaders; i++) {
		const ms_http_header *h = &req->headers[i];

		if (h->name.n == n && ieq(h->name.p, name, n) &&
		    list_has(h->value, token, tn))
			return true;
	}
	return false;
}

static inline bool is_b64(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* 16 bytes in base64 is 22 characters and "==". The unused low bits of the
 * last character are not checked: the key is only ever hashed, and RFC 4648
 * §3.5 leaves rejecting them to the decoder. */
static bool ws_key_ok(ms_str k)
{
	if (k.n != 24 || k.p[22] != '=' || k.p[23] != '=')
		return false;
	for (size_t i = 0; i < 22; i++)
		if (!is_b64((uint8_t)k.p[i]))
			return false;
	return true;
}

/* An upgrade carries no body: what follows its head is frames. A body
 * announced anyway (any Transfer-Encoding, a Content-Length other than 0)
 * is what a proxy in front would read as the body and we as frames, so
 * the two would disagree on where the next request starts (request
 * smuggling); refuse rather than pick one reading. */
static bool no_body(const ms_http_request *req)
{
	if (header_count(req, "Transfer-Encoding"))
		return false;
	for (size_t i = 0; i < req->nheaders; i++) {
		const ms_http_header *h = &req->headers[i];

		if (h->name.n != 14 || !ieq(h->name.p, "Content-Length", 14))
			continue;
		if (h->value.n == 0)
			return false;
		for (size_t k = 0; k < h->value.n; k++)
			if (h->value.p[k] != '0')
				return false;
	}
	return true;
}

int ms_http_ws_check(const ms_http_request *req, ms_str *key)
{
	const ms_http_header *h;

	if (req->method.n != 3 || memcmp(req->method.p, "GET", 3) != 0)
		return 405;
	if (req->minor < 1)
		return 400;
	/* RFC 7230 §5.4: exactly one Host. */
	if (header_count(req, "Host") != 1)
		return 400;
	if (!ms_http_header_has_token(req, "Upgrade", "websocket") ||
	    !ms_http_header_has_token(req, "Connection", "upgrade"))
		return 400;
	/* The version and key may each appear once (RFC 6455 §11.3.1, 11.3.5). */
	if (header_count(req, "Sec-WebSocket-Version") > 1 ||
	    header_count(req, "Sec-WebSocket-Key") != 1)
		return 400;
	if (!no_body(req))
		return 400;
	h = ms_http_header_get(req, "Sec-WebSocket-Version");
	if (!h)
		return 400;
	if (h->value.n != 2 || memcmp(h->value.p, "13", 2) != 0)
		return 426;
	h = ms_http_header_get(req, "Sec-WebSocket-Key");
	if (!ws_key_ok(h->value))
		return 400;
	*key = h->value;
	return 0;
}

ms_str ms_http_query_param(ms_str query, const char *name)
{
	size_t nn = strlen(name);

	if (!query.p)
		return (ms_str){ NULL, 0 };

	const char *p = query.p, *e = query.p + query.n;

	while (p < e) {
		const char *s = p, *amp = memchr(p, '&', (size_t)(e - p));
		const char *pe = amp ? amp : e;
		const char *eq = memchr(s, '=', (size_t)(pe - s));
		const char *ke = eq ? eq : pe;

		if ((size_t)(ke - s) == nn && memcmp(s, name, nn) == 0)
			return eq ? (ms_str){ eq + 1, (size_t)(pe - eq - 1) }
				  : (ms_str){ pe, 0 };
		p = amp ? amp + 1 : e;
	}
	return (ms_str){ NULL, 0 };
}

const char *ms_http_reason(int status)
{
	switch (status) {
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 426: return "Upgrade Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

/* Appends that stop counting room once out is full; the total length is
 * still tracked so the caller learns whether it fit. */
struct wbuf {
	char *p;
	size_t cap, n;
};

static void put(struct wbuf *w, const char *s, size_t n)
{
	if (n && w->n <= w->cap && n <= w->cap - w->n)
		memcpy(w->p + w->n, s, n);
	w->n += n;
}

static void puts_(struct wbuf *w, const char *s)
{
	put(w, s, strlen(s));
}

/* Terminate and return the length, or -1: the NUL must fit too. */
static int finish(struct wbuf *w)
{
	if (w->n >= w->cap || w->n > INT_MAX)
		return -1;
	w->p[w->n] = '\0';
	return (int)w->n;
}

int ms_http_response(char *out, size_t cap, int status, bool close,
		     const char *extra_headers, const char *body)
{
	struct wbuf w = { out, cap, 0 };
	size_t blen = body ? strlen(body) : 0;
	char line[64];

	if (status < 100 || status > 999)
		return -1;
	snprintf(line, sizeof(line), "HTTP/1.1 %d ", status);
	puts_(&w, line);
	puts_(&w, ms_http_reason(status));
	puts_(&w, "\r\n");
	/* RFC 7230 §3.3.2: no Content-Length (and no body) on 1xx and 204. */
	if (status < 200 || status == 204) {
		if (blen)
			return -1;
	} else {
		snprintf(line, sizeof(line), "Content-Length: %zu\r\n", blen);
		puts_(&w, line);
	}
	if (close)
		puts_(&w, "Connection: close\r\n");
	if (extra_headers)
		puts_(&w, extra_headers);
	puts_(&w, "\r\n");
	put(&w, body, blen);
	return finish(&w);
}

int ms_http_upgrade_response(char *out, size_t cap, ms_str key,
			     const char *subprotocol)
{
	struct wbuf w = { out, cap, 0 };
	char accept[29];

	ms_ws_accept_key(key.p, key.n, accept);
	puts_(&w, "HTTP/1.1 101 Switching Protocols\r\n"
		  "Upgrade: websocket\r\n"
		  "Connection: Upgrade\r\n"
		  "Sec-WebSocket-Accept: ");
	puts_(&w, accept);
	puts_(&w, "\r\n");
	if (subprotocol) {
		puts_(&w, "Sec-WebSocket-Protocol: ");
		puts_(&w, subprotocol);
		puts_(&w, "\r\n");
	}
	puts_(&w, "\r\n");
	return finish(&w);
}
