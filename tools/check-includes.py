#!/usr/bin/env python3
"""Check the tree's #include "..." lines against DESIGN.md §2's folder rules
and for include cycles; print the module-to-module include counts.

Usage: check-includes.py [SOURCE_DIR]   (default: the current directory)
Exit 0 when there is no cycle and no forbidden include, 1 otherwise.

Rules: a module includes only itself and the modules below it,
  core/  -> (nothing else; core/main.c, which wires the layers, excepted)
  tls/   -> core/
  net/   -> core/, tls/
  shard/ -> core/, net/
tests/ and tools/ may include anything but take part in the cycle check.
A header of the tree is named by its path from the root ("core/pkt.h");
any other quoted name resolves next to the file that includes it.
"""
import os
import re
import sys

ALLOWED = {
    'core': {'core'},
    'tls': {'core', 'tls'},
    'net': {'core', 'tls', 'net'},
    'shard': {'core', 'net', 'shard'},
}
EXEMPT = {'core/main.c'}
FOLDERS = ('core', 'net', 'tls', 'shard', 'tests', 'tools')
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def read_graph(root):
    graph = {}
    for top in FOLDERS:
        for d, _, files in os.walk(os.path.join(root, top)):
            for f in sorted(files):
                if not f.endswith(('.c', '.h')):
                    continue
                path = os.path.relpath(os.path.join(d, f), root)
                with open(os.path.join(root, path), errors='replace') as fh:
                    names = INCLUDE.findall(fh.read())
                deps = []
                for name in names:
                    if not os.path.exists(os.path.join(root, name)):
                        name = os.path.normpath(os.path.join(os.path.dirname(path), name))
                    if os.path.exists(os.path.join(root, name)):
                        deps.append(name)
                graph[path] = deps
    return graph


def find_cycles(graph):
    state, path, cycles = {}, [], []

    def visit(u):
        state[u] = 'open'
        path.append(u)
        for v in graph.get(u, ()):
            if state.get(v) == 'open':
                cycles.append(path[path.index(v):] + [v])
            elif v not in state:
                visit(v)
        path.pop()
        state[u] = 'done'

    for u in sorted(graph):
        if u not in state:
            visit(u)
    return cycles


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else '.'
    graph = read_graph(root)
    cycles = find_cycles(graph)
    counts, bad = {}, []
    for u, deps in sorted(graph.items()):
        a = u.split('/')[0]
        for v in deps:
            b = v.split('/')[0]
            if a != b:
                counts.setdefault((a, b), set()).add(u)
            if a in ALLOWED and b not in ALLOWED[a] and u not in EXEMPT:
                bad.append('%s includes %s' % (u, v))
    print('%d files, %d #include "..." lines of the tree' %
          (len(graph), sum(len(d) for d in graph.values())))
    for (a, b), files in sorted(counts.items()):
        print('  %s/ -> %s/: %d file%s' % (a, b, len(files), '' if len(files) == 1 else 's'))
    for c in cycles:
        print('CYCLE: ' + ' -> '.join(c))
    for b in bad:
        print('FORBIDDEN: ' + b)
    print('%d include cycles, %d forbidden includes' % (len(cycles), len(bad)))
    return 1 if cycles or bad else 0


if __name__ == '__main__':
    sys.exit(main())
