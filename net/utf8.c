/*
 * UTF-8 validation as a resumable DFA (RFC 3629 §4 grammar).
 *
 * Each byte maps to one of 12 classes; the class and the current state index
 * a transition table. States are multiples of 12 so a transition is a single
 * add and load (the layout Bjoern Hoehrmann popularised; this table is our
 * own, derived from the RFC 3629 grammar below). Only the state is kept
 * between calls, so a caller can feed frame payloads or socket reads in any
 * split and get the answer it would get for the concatenation.
 *
 *   UTF8-1 = %x00-7F
 *   UTF8-2 = %xC2-DF tail
 *   UTF8-3 = %xE0 %xA0-BF tail / %xE1-EC 2tail / %xED %x80-9F tail / %xEE-EF 2tail
 *   UTF8-4 = %xF0 %x90-BF 2tail / %xF1-F3 3tail / %xF4 %x80-8F 2tail
 *
 * The special second-byte ranges are what reject overlong forms (E0, F0),
 * surrogates (ED) and code points above U+10FFFF (F4); C0, C1 and F5-FF can
 * never start anything.
 */
#include "net/utf8.h"

#include <string.h>

/* Byte classes. The three continuation classes (1-3) exist only so the
 * states after E0, ED, F0 and F4 can accept part of the 80-BF range. */
enum {
	C_ASCII = 0, /* 00-7F */
	C_80 = 1,    /* 80-8F */
	C_90 = 2,    /* 90-9F */
	C_A0 = 3,    /* A0-BF */
	C_BAD = 4,   /* C0-C1, F5-FF */
	C_L2 = 5,    /* C2-DF */
	C_E0 = 6,
	C_L3 = 7,    /* E1-EC, EE-EF */
	C_ED = 8,
	C_F0 = 9,
	C_L4 = 10,   /* F1-F3 */
	C_F4 = 11,
};

static const uint8_t byte_class[256] = {
	/* 00-7F */
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* 80-8F */
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	/* 90-9F */
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
	/* A0-BF */
	3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
	3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
	/* C0-C1 bad, C2-DF */
	4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
	5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
	/* E0, E1-EC, ED, EE-EF */
	6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 7,
	/* F0, F1-F3, F4, F5-FF bad */
	9, 10, 10, 10, 11, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
};

/* States, pre-multiplied by the number of classes. */
enum {
	S_ACCEPT = MS_UTF8_ACCEPT, /* 0 */
	S_REJECT = MS_UTF8_REJECT, /* 12 */
	S_T1 = 24,                 /* one tail byte (80-BF) left */
	S_T2 = 36,                 /* two tail bytes left */
	S_E0 = 48,                 /* after E0: A0-BF, then one tail */
	S_ED = 60,                 /* after ED: 80-9F, then one tail */
	S_T3 = 72,                 /* three tail bytes left */
	S_F0 = 84,                 /* after F0: 90-BF, then two tails */
	S_F4 = 96,                 /* after F4: 80-8F, then two tails */
};

#define R S_REJECT
static const uint8_t transition[108] = {
	/*          ASCII     80    90    A0    BAD  L2    E0    L3    ED    F0    L4    F4 */
	/* ACCEPT */ S_ACCEPT, R,    R,    R,    R,   S_T1, S_E0, S_T2, S_ED, S_F0, S_T3, S_F4,
	/* REJECT */ R,        R,    R,    R,    R,   R,    R,    R,    R,    R,    R,    R,
	/* T1     */ R, S_ACCEPT, S_ACCEPT, S_ACCEPT, R, R, R, R, R, R, R, R,
	/* T2     */ R,        S_T1, S_T1, S_T1, R,   R,    R,    R,    R,    R,    R,    R,
	/* E0     */ R,        R,    R,    S_T1, R,   R,    R,    R,    R,    R,    R,    R,
	/* ED     */ R,        S_T1, S_T1, R,    R,   R,    R,    R,    R,    R,    R,    R,
	/* T3     */ R,        S_T2, S_T2, S_T2, R,   R,    R,    R,    R,    R,    R,    R,
	/* F0     */ R,        R,    S_T2, S_T2, R,   R,    R,    R,    R,    R,    R,    R,
	/* F4     */ R,        S_T2, R,    R,    R,   R,    R,    R,    R,    R,    R,    R,
};
#undef R

#define HIGH_BITS 0x8080808080808080ull

uint32_t ms_utf8_validate(uint32_t state, const uint8_t *p, size_t n)
{
	const uint8_t *end = p + n;

	/* REJECT is sticky; also guards the table against a garbage state. */
	if (state >= sizeof(transition) || state % 12 != 0 || state == S_REJECT)
		return S_REJECT;

	while (p < end) {
		/* Chat text is mostly ASCII: at a code point boundary, skip
		 * whole words with no high bit set. memcpy keeps unaligned
		 * loads legal; compilers turn it into a plain load. */
		if (state == S_ACCEPT) {
			while (end - p >= 8) {
				uint64_t w;

				memcpy(&w, p, 8);
				if (w & HIGH_BITS)
					break;
				p += 8;
			}
			if (p == end)
				break;
		}
		state = transition[state + byte_class[*p++]];
		if (state == S_REJECT)
			break;
	}
	return state;
}
