/*
 * libFuzzer target for net/proto.h's encoders: a round trip through our own
 * JSON reader and an independent one.
 *
 * The input is cut into field values: an id, seq, epoch, cursor and error
 * code, up to 32 user ids, a stream name (bytes mapped onto the name
 * alphabet), a free text (error message, reason: any UTF-8, control
 * characters included) and `data` (the rest, used when it is one valid JSON
 * value, as the parser would hand it over). Every reply and event is encoded
 * into a buffer of exactly the size the sizing call asked for (ASan catches
 * a byte past it). Then each text must be valid for the reference validator
 * (ref_json.h, no code shared with net/json.c) and for ms_json_valid, and
 * read back with net/json's iterator, every member must be what went in:
 * ids, numbers and hex epochs, user id strings, escaped text decoded to the
 * original, and data byte for byte.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/json.h"
#include "net/proto.h"
#include "net/utf8.h"
#include "ref_json.h"

#define CHECK(c)                 \
	do {                     \
		if (!(c))        \
			abort(); \
	} while (0)

#define MAX_USERS 32

typedef struct fields {
	bool has_id, more;
	int64_t id;
	uint64_t seq, epoch, next;
	int code;
	uint64_t users[MAX_USERS];
	size_t nusers;
	char name[128];
	size_t name_len;
	char text[256]; /* NUL-terminated */
	ms_str data;
} fields;

static const uint8_t *ip, *ie;

static uint64_t take(size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n && ip < ie; i++)
		v = v << 8 | *ip++;
	return v;
}

/* data sits one level down in a request and in the events, so a value at
 * the depth limit by itself is not data a request could carry. */
static bool nests(const char *p, size_t n)
{
	char *b = malloc(n + 2);
	bool ok;

	if (!b)
		abort();
	b[0] = '[';
	memcpy(b + 1, p, n);
	b[n + 1] = ']';
	ok = ms_json_valid(b, n + 2);
	free(b);
	return ok;
}

static void cut(const uint8_t *data, size_t size, fields *f)
{
	static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_:.-";
	uint64_t b;
	size_t n;

	ip = data;
	ie = data + size;
	b = take(1);
	f->has_id = b & 1;
	f->more = b & 2;
	f->id = (int64_t)take(8);
	f->seq = take(8);
	f->epoch = take(8);
	f->next = take(8);
	f->code = (int)take(2);
	f->nusers = (size_t)(take(1) % (MAX_USERS + 1));
	for (size_t i = 0; i < f->nusers; i++)
		f->users[i] = take(8);
	f->name_len = 1 + (size_t)(take(1) % sizeof(f->name));
	for (size_t i = 0; i < f->name_len; i++)
		f->name[i] = alpha[take(1) % (sizeof(alpha) - 1)];
	n = (size_t)(take(1) % sizeof(f->text));
	if (n > (size_t)(ie - ip))
		n = (size_t)(ie - ip);
	memcpy(f->text, ip, n);
	ip += n;
	f->text[n] = '\0';
	/* Free text is UTF-8 by contract: make it so, keeping controls. */
	if (ms_utf8_validate(MS_UTF8_ACCEPT, (const uint8_t *)f->text, n) != MS_UTF8_ACCEPT)
		for (size_t i = 0; i < n; i++)
			if ((uint8_t)f->text[i] >= 0x80)
				f->text[i] = '?';
	for (size_t i = 0; i < n; i++)
		if (f->text[i] == '\0')
			f->text[i] = ' ';
	/* data: the rest without the whitespace around it, when it is one
	 * valid value (what ms_proto_parse hands over); else a fixed one. */
	const char *p = (const char *)ip, *e = (const char *)ie, *end;
	while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	end = p < e ? ms_json_skip(p, e) : NULL;
	if (end && ms_json_valid(p, (size_t)(e - p)) && nests(p, (size_t)(end - p)))
		f->data = (ms_str){ p, (size_t)(end - p) };
	else
		f->data = (ms_str){ "{\"k\":[1,\"x\"]}", 13 };
}

/* ---- reading back ------------------------------------------------------ */

static bool is(ms_str s, const char *lit)
{
	return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

/* Both validators accept it; it is one object. */
static void valid(const char *p, size_t n)
{
	ms_json_iter it;

	CHECK(ref_valid((const uint8_t *)p, n));
	CHECK(ms_json_valid(p, n));
	CHECK(ms_json_object_begin(&it, p, n));
}

/* The value of member `key` (written without escapes); absent: n == 0. */
static ms_str member(ms_str obj, const char *key)
{
	ms_json_iter it;
	ms_str k, v, found = { 0 };
	int r, count = 0;

	CHECK(ms_json_object_begin(&it, obj.p, obj.n));
	while ((r = ms_json_object_next(&it, &k, &v)) > 0)
		if (is(k, key)) {
			found = v;
			count++;
		}
	CHECK(r == 0 && count <= 1);
	return found;
}

static uint64_t as_u64(ms_str v)
{
	uint64_t x;

	CHECK(ms_proto_uid(v, &x));
	return x;
}

/* A string member decoded. */
static size_t as_text(ms_str v, char *out, size_t cap)
{
	long n = ms_json_string(v, out, cap);

	CHECK(n >= 0);
	return (size_t)n;
}

static void check_text(ms_str v, const char *want)
{
	char out[sizeof(((fields *)0)->text)];
	size_t n = as_text(v, out, sizeof(out));

	CHECK(n == strlen(want) && memcmp(out, want, n) == 0);
}

static uint64_t as_uid_string(ms_str v)
{
	char out[32];
	size_t n = as_text(v, out, sizeof(out));

	return as_u64((ms_str){ out, n });
}

static void check_users(ms_str arr, const uint64_t *u, size_t n)
{
	ms_json_iter it;
	ms_str v;
	size_t i = 0;
	int r;

	CHECK(ms_json_array_begin(&it, arr.p, arr.n));
	while ((r = ms_json_array_next(&it, &v)) > 0) {
		CHECK(i < n && as_uid_string(v) == u[i]);
		i++;
	}
	CHECK(r == 0 && i == n);
}

static void check_id(ms_str obj, const fields *f)
{
	ms_str v = member(obj, "id");
	int64_t id;

	if (!f->has_id) {
		CHECK(v.n == 0);
		return;
	}
	CHECK(ms_json_int(v, &id) && id == f->id);
	/* the id comes first, as every reply has it */
	CHECK(v.p == obj.p + 6);
}

static void check_name(ms_str v, const fields *f)
{
	CHECK(v.n == f->name_len + 2 && memcmp(v.p + 1, f->name, f->name_len) == 0);
}

/* Encode with a buffer of exactly the announced size. */
#define ENCODE(text, fn, ...)                                  \
	do {                                                   \
		size_t n_ = fn(NULL, 0, __VA_ARGS__);          \
		char *b_ = malloc(n_ ? n_ : 1);                \
		CHECK(b_ && fn(b_, n_, __VA_ARGS__) == n_);    \
		(text) = (ms_str){ b_, n_ };                   \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fields f;
	ms_str t, v;
	ms_str name;
	char from[MS_PROTO_U64_DIGITS];
	ms_str fr;

	memset(&f, 0, sizeof(f));
	cut(data, size, &f);
	name = (ms_str){ f.name, f.name_len };
	CHECK(ms_proto_stream_valid(name));
	fr = (ms_str){ from, ms_proto_uid_format(from, f.seq ^ f.epoch) };

	ENCODE(t, ms_proto_enc_ok, f.has_id, f.id);
	valid(t.p, t.n);
	check_id(t, &f);
	CHECK(is(member(t, "ok"), "true"));
	free((void *)t.p);

	ENCODE(t, ms_proto_enc_error, f.has_id, f.id, f.code, f.text);
	valid(t.p, t.n);
	check_id(t, &f);
	CHECK(is(member(t, "ok"), "false"));
	v = member(t, "error");
	{
		int64_t code;
		CHECK(ms_json_int(member(v, "code"), &code) && code == f.code);
		check_text(member(v, "message"), f.text);
	}
	free((void *)t.p);

	ENCODE(t, ms_proto_enc_join, f.has_id, f.id, f.seq, f.epoch);
	valid(t.p, t.n);
	check_id(t, &f);
	CHECK(as_u64(member(t, "seq")) == f.seq);
	{
		char hex[32];
		size_t n = as_text(member(t, "epoch"), hex, sizeof(hex));
		uint64_t e = 0;
		CHECK(n == 16);
		for (size_t i = 0; i < n; i++) {
			CHECK((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f'));
			e = e << 4 | (uint64_t)(hex[i] <= '9' ? hex[i] - '0' : hex[i] - 'a' + 10);
		}
		CHECK(e == f.epoch);
	}
	free((void *)t.p);

	ENCODE(t, ms_proto_enc_publish, f.has_id, f.id, f.seq);
	valid(t.p, t.n);
	check_id(t, &f);
	CHECK(as_u64(member(t, "seq")) == f.seq);
	free((void *)t.p);

	ENCODE(t, ms_proto_enc_presence_list, f.has_id, f.id, f.users, f.nusers, f.more, f.next);
	valid(t.p, t.n);
	check_id(t, &f);
	check_users(member(t, "users"), f.users, f.nusers);
	v = member(t, "next");
	CHECK(f.more ? as_uid_string(v) == f.next : v.n == 0);
	free((void *)t.p);

	/* The message event: not JSON until the owner fills the seq slot. */
	{
		size_t so = 0, qo = 0;
		size_t n = ms_proto_enc_message(NULL, 0, name, fr, f.data, NULL, NULL);
		char *b = malloc(n);
		CHECK(b && ms_proto_enc_message(b, n, name, fr, f.data, &so, &qo) == n);
		CHECK(so + f.name_len <= n && memcmp(b + so, f.name, f.name_len) == 0);
		CHECK(qo + MS_PROTO_SEQ_SLOT <= n);
		for (size_t i = 0; i < MS_PROTO_SEQ_SLOT; i++)
			CHECK(b[qo + i] == ' ');
		ms_proto_seq_fill(b + qo, f.seq);
		t = (ms_str){ b, n };
		valid(t.p, t.n);
		CHECK(is(member(t, "event"), "\"message\""));
		check_name(member(t, "stream"), &f);
		CHECK(as_u64(member(t, "seq")) == f.seq);
		CHECK(as_uid_string(member(t, "from")) == (f.seq ^ f.epoch));
		v = member(t, "data");
		CHECK(v.n == f.data.n && memcmp(v.p, f.data.p, v.n) == 0);
		free(b);
	}

	ENCODE(t, ms_proto_enc_dm, fr, f.data);
	valid(t.p, t.n);
	CHECK(is(member(t, "event"), "\"dm\""));
	CHECK(as_uid_string(member(t, "from")) == (f.seq ^ f.epoch));
	v = member(t, "data");
	CHECK(v.n == f.data.n && memcmp(v.p, f.data.p, v.n) == 0);
	free((void *)t.p);

	{
		size_t nj = f.nusers / 2 + (f.more ? 0 : f.nusers % 2);
		size_t nl = f.nusers - nj;
		ENCODE(t, ms_proto_enc_presence, name, f.users, nj, f.users + nj, nl);
		valid(t.p, t.n);
		CHECK(is(member(t, "event"), "\"presence\""));
		check_name(member(t, "stream"), &f);
		v = member(t, "join");
		if (nj)
			check_users(v, f.users, nj);
		else
			CHECK(v.n == 0);
		v = member(t, "leave");
		if (nl)
			check_users(v, f.users + nj, nl);
		else
			CHECK(v.n == 0);
		free((void *)t.p);
	}

	ENCODE(t, ms_proto_enc_left, name, f.text);
	valid(t.p, t.n);
	CHECK(is(member(t, "event"), "\"left\""));
	check_name(member(t, "stream"), &f);
	check_text(member(t, "reason"), f.text);
	free((void *)t.p);

	ENCODE(t, ms_proto_enc_count, "seq", f.seq);
	valid(t.p, t.n);
	CHECK(as_u64(member(t, "seq")) == f.seq);
	free((void *)t.p);
	return 0;
}
