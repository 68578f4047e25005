/*
 * UTF-8 validation (RFC 3629) as a resumable DFA, for RFC 6455 text frames.
 *
 * The state carries across calls, so a code point split over two frames or
 * two TCP reads validates exactly as if the bytes had been contiguous.
 * Pure: no I/O, no globals beyond a constant table, any thread.
 */
#ifndef MS_NET_UTF8_H
#define MS_NET_UTF8_H

#include <stddef.h>
#include <stdint.h>

#define MS_UTF8_ACCEPT 0u  /* at a code point boundary: text so far is valid */
#define MS_UTF8_REJECT 12u /* invalid; sticky */

/* Feed n bytes starting in `state` (MS_UTF8_ACCEPT for a new text).
 * Returns the new state: MS_UTF8_ACCEPT (complete and valid so far),
 * MS_UTF8_REJECT (invalid: overlong, surrogate, > U+10FFFF, bad byte),
 * or another value (valid prefix, inside a code point). Runs of ASCII are
 * checked a word at a time. */
uint32_t ms_utf8_validate(uint32_t state, const uint8_t *p, size_t n);

#endif
