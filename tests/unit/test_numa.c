/* NUMA placement: the topology reader on a fake sysfs tree, the CPU plan on
 * made-up machines (pure function), and the memory policy on this machine. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <numa.h>
#include <numaif.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/numa.h"

static void mask_of(const char *list, uint64_t m[16])
{
	assert_true(ms_cpulist_parse(list, m) > 0);
}

/* A topology from "0-3", "4-7", ... (NULL ends; "" = a node without CPUs). */
static void topo_of(ms_numa_topo *t, const int *ids, const char *const *lists)
{
	memset(t, 0, sizeof(*t));
	for (; lists[t->n]; t->n++) {
		t->id[t->n] = ids[t->n];
		if (lists[t->n][0])
			mask_of(lists[t->n], t->cpus[t->n]);
	}
}

static uint64_t all[16];

static void expect_cpus(const ms_numa_plan *p, const int *cpus, const int *nodes, int n)
{
	assert_int_equal(p->workers, n);
	for (int i = 0; i < n; i++) {
		if (p->cpu[i] != cpus[i] || p->node[i] != nodes[i])
			fail_msg("worker %d: cpu %d node %d, want cpu %d node %d", i, p->cpu[i],
				 p->node[i], cpus[i], nodes[i]);
	}
}

static void format(void **state)
{
	uint64_t m[16];
	char buf[64];
	mask_of("0-3,6,8-9,64,1023", m);
	ms_cpulist_format(m, buf, sizeof(buf));
	assert_string_equal(buf, "0-3,6,8-9,64,1023");
	memset(m, 0, sizeof(m));
	ms_cpulist_format(m, buf, sizeof(buf));
	assert_string_equal(buf, "");
	mask_of("0,2,4,6,8,10,12", m);
	ms_cpulist_format(m, buf, 8); /* truncated, still a string */
	assert_true(strlen(buf) < 8);
}

static void mkfile(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void topo_read_fake_sysfs(void **state)
{
	char root[] = "/tmp/ms-test-numa-XXXXXX", p[256];
	assert_non_null(mkdtemp(root));
	const char *dirs[] = { "devices", "devices/system", "devices/system/node",
			       "devices/system/node/node0", "devices/system/node/node1",
			       "devices/system/node/node3", "devices/system/node/power", NULL };
	for (int i = 0; dirs[i]; i++) {
		snprintf(p, sizeof(p), "%s/%s", root, dirs[i]);
		assert_int_equal(mkdir(p, 0700), 0);
	}
	snprintf(p, sizeof(p), "%s/devices/system/node/node0/cpulist", root);
	mkfile(p, "0-3,8-11\n");
	snprintf(p, sizeof(p), "%s/devices/system/node/node1/cpulist", root);
	mkfile(p, "4-7,12-15\n");
	snprintf(p, sizeof(p), "%s/devices/system/node/node3/cpulist", root);
	mkfile(p, "\n"); /* memory-only node */
	snprintf(p, sizeof(p), "%s/devices/system/node/possible", root);
	mkfile(p, "0-3\n");
	snprintf(p, sizeof(p), "%s/devices/system/node/online", root);
	mkfile(p, "0-1,3\n");

	ms_numa_topo t;
	uint64_t fb[16], want[16];
	mask_of("0-1", fb);
	assert_int_equal(ms_numa_topo_read(&t, root, fb), 3);
	assert_int_equal(t.id[0], 0);
	assert_int_equal(t.id[1], 1);
	assert_int_equal(t.id[2], 3);
	mask_of("0-3,8-11", want);
	assert_memory_equal(t.cpus[0], want, sizeof(want));
	mask_of("4-7,12-15", want);
	assert_memory_equal(t.cpus[1], want, sizeof(want));
	memset(want, 0, sizeof(want));
	assert_memory_equal(t.cpus[2], want, sizeof(want));

	/* Spread over the two nodes with CPUs; node 3 has none. */
	ms_numa_plan plan;
	char err[256];
	assert_int_equal(ms_numa_plan_make(&plan, &t, -1, all, NULL, 4, err, sizeof(err)), 4);
	expect_cpus(&plan, (int[]){ 0, 4, 1, 5 }, (int[]){ 0, 1, 0, 1 }, 4);
	assert_int_equal(plan.nodes_used, 2);
	/* Node 3 exists but has no CPU: exit-2 material, naming the node. */
	assert_int_equal(ms_numa_plan_make(&plan, &t, 3, all, NULL, 0, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "--numa-node 3"));
	assert_non_null(strstr(err, "none"));

	/* No node directory (kernel without NUMA): one node, the fallback CPUs. */
	snprintf(p, sizeof(p), "%s/devices/system", root);
	assert_int_equal(ms_numa_topo_read(&t, p, fb), 1);
	assert_int_equal(t.id[0], 0);
	assert_memory_equal(t.cpus[0], fb, sizeof(fb));

	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	assert_int_equal(system(cmd), 0);
}

static void plan_spread(void **state)
{
	ms_numa_topo t;
	ms_numa_plan p;
	char err[256];
	topo_of(&t, (int[]){ 0, 1 }, (const char *[]){ "0-3", "4-7", NULL });
	/* Default: one worker per CPU, alternating nodes. */
	assert_int_equal(ms_numa_plan_make(&p, &t, -1, all, NULL, 0, err, sizeof(err)), 8);
	expect_cpus(&p, (int[]){ 0, 4, 1, 5, 2, 6, 3, 7 }, (int[]){ 0, 1, 0, 1, 0, 1, 0, 1 }, 8);
	assert_false(p.bind);
	/* More workers than CPUs: the same order again. */
	assert_int_equal(ms_numa_plan_make(&p, &t, -1, all, NULL, 10, err, sizeof(err)), 10);
	assert_int_equal(p.cpu[8], 0);
	assert_int_equal(p.cpu[9], 4);
	/* Unequal nodes: the small node runs out, the big one takes the rest,
	 * and no CPU is doubled before every CPU has a worker. */
	topo_of(&t, (int[]){ 0, 2 }, (const char *[]){ "0-3", "4-5", NULL });
	assert_int_equal(ms_numa_plan_make(&p, &t, -1, all, NULL, 0, err, sizeof(err)), 6);
	expect_cpus(&p, (int[]){ 0, 4, 1, 5, 2, 3 }, (int[]){ 0, 2, 0, 2, 0, 0 }, 6);
	/* The allowed set (taskset, systemd CPUAffinity) and --cpus narrow it. */
	uint64_t allowed[16], cpus[16];
	mask_of("1-5", allowed);
	mask_of("0-2,5", cpus);
	assert_int_equal(ms_numa_plan_make(&p, &t, -1, allowed, cpus, 0, err, sizeof(err)), 3);
	expect_cpus(&p, (int[]){ 1, 5, 2 }, (int[]){ 0, 2, 0 }, 3);
	/* Nothing usable: -EINVAL naming --cpus and the allowed set. */
	mask_of("6-7", cpus);
	assert_int_equal(ms_numa_plan_make(&p, &t, -1, allowed, cpus, 0, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "--cpus 6-7"));
	assert_non_null(strstr(err, "1-5"));
	/* A big box: at most MS_MAX_WORKERS by default. */
	topo_of(&t, (int[]){ 0 }, (const char *[]){ "0-127", NULL });
	assert_int_equal(ms_numa_plan_make(&p, &t, -1, all, NULL, 0, err, sizeof(err)),
			 MS_MAX_WORKERS);
	assert_int_equal(p.cpu[MS_MAX_WORKERS - 1], MS_MAX_WORKERS - 1);
	/* One node (this machine): CPUs in order. */
	topo_of(&t, (int[]){ 0 }, (const char *[]){ "0-1", NULL });
	assert_int_equal(ms_numa_plan_make(&p, &t, -1, all, NULL, 4, err, sizeof(err)), 4);
	expect_cpus(&p, (int[]){ 0, 1, 0, 1 }, (int[]){ 0, 0, 0, 0 }, 4);
	assert_int_equal(p.nodes_used, 1);
}

static void plan_one_node(void **state)
{
	ms_numa_topo t;
	ms_numa_plan p;
	char err[256];
	uint64_t cpus[16];
	topo_of(&t, (int[]){ 0, 1 }, (const char *[]){ "0-3", "4-7", NULL });
	/* --numa-node 1: its CPUs only, --cores defaults to all of them. */
	assert_int_equal(ms_numa_plan_make(&p, &t, 1, all, NULL, 0, err, sizeof(err)), 4);
	expect_cpus(&p, (int[]){ 4, 5, 6, 7 }, (int[]){ 1, 1, 1, 1 }, 4);
	assert_true(p.bind);
	assert_int_equal(p.nodes_used, 1);
	/* With --cpus: the intersection. */
	mask_of("0,5-6", cpus);
	assert_int_equal(ms_numa_plan_make(&p, &t, 1, all, cpus, 0, err, sizeof(err)), 2);
	expect_cpus(&p, (int[]){ 5, 6 }, (int[]){ 1, 1 }, 2);
	assert_int_equal(ms_numa_plan_make(&p, &t, 1, all, cpus, 3, err, sizeof(err)), 3);
	expect_cpus(&p, (int[]){ 5, 6, 5 }, (int[]){ 1, 1, 1 }, 3);
	/* Empty intersection. */
	mask_of("0-3", cpus);
	assert_int_equal(ms_numa_plan_make(&p, &t, 1, all, cpus, 0, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "--numa-node 1 --cpus 0-3"));
	assert_non_null(strstr(err, "node 1 has CPUs 4-7"));
	/* A node that does not exist: -ENOENT with the list of nodes. */
	assert_int_equal(ms_numa_plan_make(&p, &t, 2, all, NULL, 0, err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "--numa-node 2: no such NUMA node (nodes: 0,1)");
}

/* The real kernel: binding the calling thread shows in get_mempolicy. */
static void thread_policy(void **state)
{
	int mode = -1;
	unsigned long mask[16] = { 0 };
	assert_int_equal(ms_numa_thread_policy(0, -1), 0);
	assert_int_equal(get_mempolicy(&mode, mask, 1024 + 1, NULL, 0), 0);
	assert_int_equal(mode, MPOL_BIND);
	assert_int_equal(mask[0], 1);
	/* Spreading: one node leaves the policy alone (no syscall); several
	 * make the thread prefer its CPU's node. */
	assert_int_equal(set_mempolicy(MPOL_DEFAULT, NULL, 0), 0);
	assert_int_equal(ms_numa_thread_policy(-1, 0), 0);
	assert_int_equal(get_mempolicy(&mode, NULL, 0, NULL, 0), 0);
	assert_int_equal(mode, numa_num_configured_nodes() > 1 ? MPOL_PREFERRED : MPOL_DEFAULT);
	assert_int_equal(set_mempolicy(MPOL_DEFAULT, NULL, 0), 0);
}

int main(void)
{
	memset(all, 0xff, sizeof(all));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(format),
		cmocka_unit_test(topo_read_fake_sysfs),
		cmocka_unit_test(plan_spread),
		cmocka_unit_test(plan_one_node),
		cmocka_unit_test(thread_policy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
