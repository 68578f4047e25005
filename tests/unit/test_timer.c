/* Timer wheel: firing order, cancel, re-arm from a callback, far deadlines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/timer.h"

struct rec {
	ms_pool *pool;
	ms_wheel *wheel;
	uint32_t fired[64];
	uint32_t at[64];
	int n;
	uint32_t now;
	int rearm_idx;   /* re-arm this slot once, 3 s later */
	int cancel_idx;  /* when firing anything, cancel this slot */
};

static void fire(void *arg, ms_conn *c)
{
	struct rec *r = arg;
	r->fired[r->n] = c->idx;
	r->at[r->n++] = r->wheel->now;
	if ((int)c->idx == r->rearm_idx) {
		r->rearm_idx = -1;
		ms_wheel_set(r->wheel, r->pool, c, r->wheel->now + 3);
	}
	if (r->cancel_idx >= 0) {
		ms_wheel_set(r->wheel, r->pool, ms_pool_at(r->pool, (uint32_t)r->cancel_idx), 0);
		r->cancel_idx = -1;
	}
}

struct fx {
	ms_pool pool;
	ms_wheel wheel;
	ms_conn *c[8];
	struct rec rec;
};

static int setup(void **state)
{
	static struct fx f;
	ms_pool_init(&f.pool, 8, 0);
	ms_wheel_init(&f.wheel, 100);
	for (int i = 0; i < 8; i++)
		f.c[i] = ms_pool_alloc(&f.pool);
	f.rec = (struct rec){ .pool = &f.pool, .wheel = &f.wheel, .rearm_idx = -1, .cancel_idx = -1 };
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	ms_wheel_fini(&f->wheel);
	ms_pool_fini(&f->pool);
	return 0;
}

static void fires_at_deadline_in_order(void **state)
{
	struct fx *f = *state;
	ms_wheel_set(&f->wheel, &f->pool, f->c[0], 105);
	ms_wheel_set(&f->wheel, &f->pool, f->c[1], 102);
	ms_wheel_set(&f->wheel, &f->pool, f->c[2], 103);
	ms_wheel_advance(&f->wheel, &f->pool, 101, fire, &f->rec);
	assert_int_equal(f->rec.n, 0);
	ms_wheel_advance(&f->wheel, &f->pool, 110, fire, &f->rec);
	assert_int_equal(f->rec.n, 3);
	assert_int_equal(f->rec.fired[0], f->c[1]->idx);
	assert_int_equal(f->rec.at[0], 102);
	assert_int_equal(f->rec.fired[1], f->c[2]->idx);
	assert_int_equal(f->rec.fired[2], f->c[0]->idx);
	assert_int_equal(f->rec.at[2], 105);
	assert_int_equal(f->wheel.count, 0);
	assert_int_equal(f->c[0]->deadline, 0);
}

static void cancel_and_replace(void **state)
{
	struct fx *f = *state;
	ms_wheel_set(&f->wheel, &f->pool, f->c[0], 102);
	ms_wheel_set(&f->wheel, &f->pool, f->c[1], 102);
	ms_wheel_set(&f->wheel, &f->pool, f->c[0], 0);    /* cancel */
	ms_wheel_set(&f->wheel, &f->pool, f->c[1], 104);  /* move */
	ms_wheel_advance(&f->wheel, &f->pool, 103, fire, &f->rec);
	assert_int_equal(f->rec.n, 0);
	ms_wheel_advance(&f->wheel, &f->pool, 104, fire, &f->rec);
	assert_int_equal(f->rec.n, 1);
	assert_int_equal(f->rec.fired[0], f->c[1]->idx);
}

static void past_deadline_fires_next_tick(void **state)
{
	struct fx *f = *state;
	ms_wheel_set(&f->wheel, &f->pool, f->c[3], 50);
	ms_wheel_advance(&f->wheel, &f->pool, 101, fire, &f->rec);
	assert_int_equal(f->rec.n, 1);
	assert_int_equal(f->rec.at[0], 101);
}

static void rearm_from_callback(void **state)
{
	struct fx *f = *state;
	f->rec.rearm_idx = (int)f->c[2]->idx;
	ms_wheel_set(&f->wheel, &f->pool, f->c[2], 102);
	ms_wheel_advance(&f->wheel, &f->pool, 110, fire, &f->rec);
	assert_int_equal(f->rec.n, 2);
	assert_int_equal(f->rec.at[0], 102);
	assert_int_equal(f->rec.at[1], 105);
}

static void callback_cancels_another_due(void **state)
{
	struct fx *f = *state;
	f->rec.cancel_idx = (int)f->c[6]->idx;
	ms_wheel_set(&f->wheel, &f->pool, f->c[6], 104);
	ms_wheel_set(&f->wheel, &f->pool, f->c[7], 104); /* linked last: fires first */
	ms_wheel_advance(&f->wheel, &f->pool, 104, fire, &f->rec);
	assert_int_equal(f->rec.n, 1);
	assert_int_equal(f->rec.fired[0], f->c[7]->idx);
	assert_int_equal(f->c[6]->deadline, 0);
	assert_int_equal(f->wheel.count, 0);
}

static void far_deadline_waits_its_turn(void **state)
{
	struct fx *f = *state;
	uint32_t far = 100 + MS_WHEEL_SLOTS + 7; /* same slot as 107 */
	ms_wheel_set(&f->wheel, &f->pool, f->c[0], far);
	ms_wheel_advance(&f->wheel, &f->pool, 108, fire, &f->rec);
	assert_int_equal(f->rec.n, 0);
	assert_int_equal(f->wheel.count, 1);
	ms_wheel_advance(&f->wheel, &f->pool, far - 1, fire, &f->rec);
	assert_int_equal(f->rec.n, 0);
	ms_wheel_advance(&f->wheel, &f->pool, far, fire, &f->rec);
	assert_int_equal(f->rec.n, 1);
	assert_int_equal(f->rec.at[0], far);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(fires_at_deadline_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(cancel_and_replace, setup, teardown),
		cmocka_unit_test_setup_teardown(past_deadline_fires_next_tick, setup, teardown),
		cmocka_unit_test_setup_teardown(rearm_from_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(callback_cancels_another_due, setup, teardown),
		cmocka_unit_test_setup_teardown(far_deadline_waits_its_turn, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
