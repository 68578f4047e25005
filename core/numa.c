/*
 * NUMA placement. Topology from sysfs (the same numbers libnuma reads, but
 * from a directory a test can fake); the memory policy through libnuma's
 * set_mempolicy wrapper.
 */
#include "core/numa.h"

#include <dirent.h>
#include <errno.h>
#include <numa.h>
#include <numaif.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

static bool has(const uint64_t m[16], int c)
{
	return (m[c / 64] >> (c % 64)) & 1;
}

static int count(const uint64_t m[16])
{
	int n = 0;
	for (int k = 0; k < 16; k++)
		n += __builtin_popcountll(m[k]);
	return n;
}

void ms_cpulist_format(const uint64_t mask[16], char *buf, size_t n)
{
	size_t len = 0;
	buf[0] = 0;
	for (int c = 0; c < 1024; c++) {
		if (!has(mask, c))
			continue;
		int hi = c;
		while (hi + 1 < 1024 && has(mask, hi + 1))
			hi++;
		int w = hi == c ? snprintf(buf + len, n - len, "%s%d", len ? "," : "", c)
				: snprintf(buf + len, n - len, "%s%d-%d", len ? "," : "", c, hi);
		if (w < 0 || (size_t)w >= n - len)
			return; /* truncated, still terminated */
		len += (size_t)w;
		c = hi;
	}
}

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

int ms_numa_topo_read(ms_numa_topo *t, const char *sysfs, const uint64_t fallback[16])
{
	char path[512];
	memset(t, 0, sizeof(*t));
	snprintf(path, sizeof(path), "%s/devices/system/node", sysfs);
	DIR *d = opendir(path);
	if (!d) {
		if (errno != ENOENT)
			return -errno;
		t->n = 1; /* kernel without NUMA: one node */
		memcpy(t->cpus[0], fallback, sizeof(t->cpus[0]));
		return 1;
	}
	struct dirent *e;
	while ((e = readdir(d)) != NULL && t->n < MS_NUMA_MAX_NODES) {
		int id;
		char tail;
		if (sscanf(e->d_name, "node%d%c", &id, &tail) == 1 && id >= 0)
			t->id[t->n++] = id;
	}
	closedir(d);
	qsort(t->id, (size_t)t->n, sizeof(int), cmp_int);
	for (int i = 0; i < t->n; i++) {
		char line[4096] = "";
		snprintf(path, sizeof(path), "%s/devices/system/node/node%d/cpulist", sysfs, t->id[i]);
		FILE *f = fopen(path, "r");
		if (!f)
			return -errno;
		if (!fgets(line, sizeof(line), f))
			line[0] = 0;
		fclose(f);
		line[strcspn(line, "\n")] = 0;
		/* A node without CPUs (memory only) has an empty list. */
		if (line[0] && ms_cpulist_parse(line, t->cpus[i]) < 0)
			return -EINVAL;
	}
	if (t->n == 0) {
		t->n = 1;
		memcpy(t->cpus[0], fallback, sizeof(t->cpus[0]));
	}
	return t->n;
}

static void node_list(const ms_numa_topo *t, char *buf, size_t n)
{
	size_t len = 0;
	buf[0] = 0;
	for (int i = 0; i < t->n && len < n; i++)
		len += (size_t)snprintf(buf + len, n - len, "%s%d", i ? "," : "", t->id[i]);
}

int ms_numa_plan_make(ms_numa_plan *p, const ms_numa_topo *t, int node,
		      const uint64_t allowed[16], const uint64_t *cpus, uint32_t cores,
		      char *err, size_t errlen)
{
	uint64_t usable[MS_NUMA_MAX_NODES][16];
	int nusable[MS_NUMA_MAX_NODES], first = 0, last = t->n;
	memset(p, 0, sizeof(*p));
	if (node >= 0) {
		for (first = 0; first < t->n && t->id[first] != node; first++)
			;
		if (first == t->n) {
			char nodes[256];
			node_list(t, nodes, sizeof(nodes));
			snprintf(err, errlen, "--numa-node %d: no such NUMA node (nodes: %s)", node,
				 nodes);
			return -ENOENT;
		}
		last = first + 1;
		p->bind = true;
	}
	int total = 0;
	for (int i = first; i < last; i++) {
		nusable[i] = 0;
		for (int k = 0; k < 16; k++) {
			usable[i][k] = t->cpus[i][k] & allowed[k] & (cpus ? cpus[k] : ~0ull);
			p->usable[k] |= usable[i][k];
		}
		nusable[i] = count(usable[i]);
		total += nusable[i];
	}
	if (total == 0) {
		char a[256], c[256], nc[256];
		ms_cpulist_format(allowed, a, sizeof(a));
		if (cpus)
			ms_cpulist_format(cpus, c, sizeof(c));
		if (node >= 0) {
			ms_cpulist_format(t->cpus[first], nc, sizeof(nc));
			snprintf(err, errlen, "--numa-node %d%s%s: no usable CPU (node %d has CPUs "
				 "%s; this process may run on %s)", node, cpus ? " --cpus " : "",
				 cpus ? c : "", node, nc[0] ? nc : "none", a);
		} else {
			snprintf(err, errlen, "--cpus %s: no usable CPU (this process may run on %s)",
				 cpus ? c : "", a);
		}
		return -EINVAL;
	}
	if (cores == 0)
		cores = total < MS_MAX_WORKERS ? (uint32_t)total : MS_MAX_WORKERS;
	/* Round-robin over the nodes; within a node, CPUs in ascending order.
	 * A node whose CPUs are all taken is passed over until every CPU is
	 * taken; then the order starts again (workers share CPUs). */
	int next[MS_NUMA_MAX_NODES] = { 0 }, taken = 0, rr = first;
	bool used[MS_NUMA_MAX_NODES] = { false };
	for (uint32_t w = 0; w < cores; w++) {
		if (taken == total) {
			memset(next, 0, sizeof(next));
			taken = 0;
		}
		int i = rr;
		while (next[i] >= nusable[i])
			i = i + 1 < last ? i + 1 : first;
		int seen = 0, cpu = -1;
		for (int c = 0; c < 1024 && cpu < 0; c++)
			if (has(usable[i], c) && seen++ == next[i])
				cpu = c;
		next[i]++;
		taken++;
		p->cpu[w] = cpu;
		p->node[w] = t->id[i];
		used[i] = true;
		rr = i + 1 < last ? i + 1 : first;
	}
	p->workers = cores;
	for (int i = first; i < last; i++)
		p->nodes_used += used[i];
	return (int)cores;
}

int ms_numa_thread_policy(int bind_node, int cpu)
{
	if (numa_available() < 0) {
		if (bind_node >= 0)
			ms_warn("NUMA: no kernel NUMA support; memory not bound to node %d", bind_node);
		return -ENOSYS;
	}
	int node = bind_node;
	int mode = MPOL_BIND;
	if (node < 0) {
		if (numa_num_configured_nodes() <= 1 || cpu < 0)
			return 0; /* one node: the default policy is already local */
		node = numa_node_of_cpu(cpu);
		if (node < 0)
			return 0;
		mode = MPOL_PREFERRED;
	}
	unsigned long mask[1024 / (8 * sizeof(unsigned long))];
	memset(mask, 0, sizeof(mask));
	mask[(unsigned)node / (8 * sizeof(unsigned long))] |= 1ul << ((unsigned)node % (8 * sizeof(unsigned long)));
	if (set_mempolicy(mode, mask, 1024 + 1) != 0) {
		int e = errno;
		ms_warn("NUMA: cannot %s memory to node %d: %s", mode == MPOL_BIND ? "bind" : "prefer",
			node, strerror(e));
		return -e;
	}
	return 0;
}
