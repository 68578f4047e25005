/*
 * The wheel keeps doubly linked lists threaded through the connection slots
 * (indices, not pointers: 8 bytes per slot instead of 16). Advancing first
 * unlinks every due connection into a side array (index and generation) and
 * only then fires them, so a callback may re-arm or close any connection,
 * itself or another due one, without corrupting a list being walked.
 */
#include "core/timer.h"

#include <stdlib.h>
#include <string.h>

void ms_wheel_init(ms_wheel *w, uint32_t now)
{
	memset(w, 0, sizeof(*w));
	w->now = now;
}

void ms_wheel_fini(ms_wheel *w)
{
	free(w->due);
	w->due = NULL;
}

static void unlink_conn(ms_wheel *w, ms_pool *p, ms_conn *c)
{
	uint32_t slot = c->deadline % MS_WHEEL_SLOTS;
	if (c->t_prev)
		ms_pool_at(p, c->t_prev - 1)->t_next = c->t_next;
	else
		w->head[slot] = c->t_next;
	if (c->t_next)
		ms_pool_at(p, c->t_next - 1)->t_prev = c->t_prev;
	c->t_prev = c->t_next = 0;
	c->deadline = 0;
	w->count--;
}

static void link_conn(ms_wheel *w, ms_pool *p, ms_conn *c, uint32_t deadline)
{
	uint32_t slot = deadline % MS_WHEEL_SLOTS;
	c->deadline = deadline;
	c->t_prev = 0;
	c->t_next = w->head[slot];
	if (c->t_next)
		ms_pool_at(p, c->t_next - 1)->t_prev = c->idx + 1;
	w->head[slot] = c->idx + 1;
	w->count++;
}

/* deadline value of a connection taken off the wheel to fire this tick */
#define DUE UINT32_MAX

void ms_wheel_set(ms_wheel *w, ms_pool *p, ms_conn *c, uint32_t deadline)
{
	if (c->deadline == DUE)
		c->deadline = 0; /* due but not fired yet: cancelling stops it */
	else if (c->deadline)
		unlink_conn(w, p, c);
	if (deadline) {
		if (deadline <= w->now)
			deadline = w->now + 1; /* the past fires on the next tick */
		link_conn(w, p, c, deadline);
	}
}

void ms_wheel_advance(ms_wheel *w, ms_pool *p, uint32_t now,
		      void (*fire)(void *arg, ms_conn *c), void *arg)
{
	while (w->now < now) {
		uint32_t sec = ++w->now;
		uint32_t slot = sec % MS_WHEEL_SLOTS;
		uint32_t i = w->head[slot];
		w->head[slot] = 0;
		w->ndue = 0;
		while (i) {
			ms_conn *c = ms_pool_at(p, i - 1);
			uint32_t next = c->t_next;
			w->count--;
			if (c->deadline > sec) {
				link_conn(w, p, c, c->deadline);
			} else {
				c->t_prev = c->t_next = 0;
				c->deadline = DUE;
				if (w->ndue == w->due_cap) {
					w->due_cap = w->due_cap ? w->due_cap * 2 : 256;
					w->due = realloc(w->due, w->due_cap * sizeof(*w->due));
					if (!w->due)
						abort();
				}
				w->due[w->ndue++] = (uint64_t)c->gen << 32 | c->idx;
			}
			i = next;
		}
		for (uint32_t k = 0; k < w->ndue; k++) {
			ms_conn *c = ms_pool_at(p, (uint32_t)w->due[k]);
			/* Skip a slot freed, cancelled or re-armed by an earlier fire. */
			if (c->gen == (uint32_t)(w->due[k] >> 32) && c->deadline == DUE) {
				c->deadline = 0;
				fire(arg, c);
			}
		}
	}
}
