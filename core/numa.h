/*
 * NUMA placement: which CPU each worker is pinned to and which node its
 * memory comes from.
 *
 * The topology is plain data (node → CPU list), read from sysfs, so the
 * choice itself (ms_numa_plan_make) is a pure function that tests feed with
 * made-up machines. Memory policy is applied by each thread to itself
 * (set_mempolicy is per thread), right after it pins itself.
 */
#ifndef MS_CORE_NUMA_H
#define MS_CORE_NUMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

#define MS_NUMA_MAX_NODES 64

/* Node → CPU list. CPU masks are 1024 bits, as ms_cpulist_parse makes. */
typedef struct ms_numa_topo {
	int n;                                /* nodes */
	int id[MS_NUMA_MAX_NODES];            /* node numbers, ascending */
	uint64_t cpus[MS_NUMA_MAX_NODES][16]; /* each node's CPUs */
} ms_numa_topo;

/* Each worker's CPU and node. */
typedef struct ms_numa_plan {
	uint32_t workers;
	bool bind;                 /* memory bound to node[] (--numa-node) */
	int cpu[MS_MAX_WORKERS];
	int node[MS_MAX_WORKERS];
	int nodes_used;            /* distinct nodes the workers sit on */
	uint64_t usable[16];       /* CPUs the workers were chosen from */
} ms_numa_plan;

/* Read the topology from SYSFS/devices/system/node/node<N>/cpulist (SYSFS is
 * "/sys", or a fake tree in tests). A kernel without that directory counts
 * as one node 0 holding every CPU in `fallback`. Returns the number of nodes
 * or a negative errno. */
int ms_numa_topo_read(ms_numa_topo *t, const char *sysfs, const uint64_t fallback[16]);

/* Choose the workers' CPUs. Pure function of its arguments.
 *   node     -1: every node; workers go round-robin over the nodes that have
 *            usable CPUs, each taking an unused CPU of its node while any is
 *            left (then CPUs are shared in the same order).
 *            N:  only node N's CPUs; memory bound to N (plan->bind).
 *   allowed  the process's affinity mask; cpus: --cpus mask or NULL. A CPU is
 *            usable if it is in allowed, in cpus (if given), and in the node.
 *   cores    workers wanted; 0 = one per usable CPU (at most MS_MAX_WORKERS).
 * Returns the number of workers, or -ENOENT (no such node) / -EINVAL (no
 * usable CPU) after writing a one-line reason naming the flags into err. */
int ms_numa_plan_make(ms_numa_plan *p, const ms_numa_topo *t, int node,
		      const uint64_t allowed[16], const uint64_t *cpus, uint32_t cores,
		      char *err, size_t errlen);

/* "0-3,6" for a mask (empty string for none). */
void ms_cpulist_format(const uint64_t mask[16], char *buf, size_t n);

/* Set the calling thread's memory policy: bind_node >= 0 binds it there
 * (MPOL_BIND); otherwise, on a machine with more than one node, it prefers
 * the node of `cpu` (MPOL_PREFERRED: node-local, falls back when full). A
 * single node with bind_node -1 changes nothing. Logs a warning and returns
 * a negative errno if the kernel refuses (e.g. seccomp); the thread then
 * keeps the default policy. Any thread, for itself. */
int ms_numa_thread_policy(int bind_node, int cpu);

#endif
