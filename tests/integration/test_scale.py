#!/usr/bin/python3
"""Scale check: 15,000 concurrent WebSocket connections held on one server
process (--cores 2 --max-conns 20000), opened by several client processes
(the fd limit is 20000 per process), all open at once; each connection then
sends one echo message and must get it back. None may be lost, and both
workers must have taken a share (per-worker accepts in the stop stats).

Runs inside a private network namespace (unshare -n, lo brought up) when
possible, so the ephemeral ports are its own; else on the host loopback.

Usage: test_scale.py SERVER_BINARY [SOURCE_DIR] [--conns N] [--procs N]
Internal: test_scale.py --client PORT COUNT ID
"""
import asyncio
import os
import resource
import shutil
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

TOTAL = 15000
PROCS = 3
DEADLINE = 60.0


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# ---- client process -----------------------------------------------------------

def client_main(port, count, cid):
    raise_nofile()
    asyncio.run(client(port, count, cid))


async def client(port, count, cid):
    import base64
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    def say(msg):
        sys.stdout.write(msg + "\n")
        sys.stdout.flush()

    sem = asyncio.Semaphore(400)
    conns = [None] * count
    errors = []

    async def opener(i):
        key = base64.b64encode(os.urandom(16))
        req = (b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
               b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        async with sem:
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(req)
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
                if not head.startswith(b"HTTP/1.1 101 "):
                    raise RuntimeError("handshake answer %r" % head[:40])
                conns[i] = (r, w)
            except Exception as e:  # noqa: BLE001
                errors.append("conn %d: %r" % (i, e))

    await asyncio.gather(*(opener(i) for i in range(count)))
    opened = sum(1 for c in conns if c)
    say("READY %d %s" % (opened, errors[0] if errors else ""))

    if (await stdin.readline()).strip() != b"GO":
        return

    async def exchange(i):
        r, w = conns[i]
        payload = (b"scale-%d-%d-" % (cid, i)).ljust(40, b".")
        mask = os.urandom(4)
        masked = bytes(b ^ mask[j & 3] for j, b in enumerate(payload))
        w.write(struct.pack(">BB", 0x81, 0x80 | len(payload)) + mask + masked)
        try:
            hdr = await asyncio.wait_for(r.readexactly(2), 30)
            if hdr != struct.pack(">BB", 0x81, len(payload)):
                return "conn %d: header %r" % (i, hdr)
            got = await r.readexactly(len(payload))
            return None if got == payload else "conn %d: payload %r" % (i, got)
        except Exception as e:  # noqa: BLE001
            return "conn %d: %r" % (i, e)

    res = await asyncio.gather(*(exchange(i) for i in range(count) if conns[i]))
    bad = [x for x in res if x]
    say("DONE %d %d %s" % (len(res) - len(bad), len(bad), bad[0] if bad else ""))
    await stdin.readline()  # hold every connection until the parent says so
    for c in conns:
        if c:
            c[1].close()


# ---- parent --------------------------------------------------------------------

def in_private_netns(argv):
    """Re-run ourselves under unshare -n with lo up, if that works here."""
    if os.environ.get("MS_SCALE_NETNS") or not shutil.which("unshare") or not shutil.which("ip"):
        return None
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if probe.returncode != 0:
        print("note: unshare -n not available here; using the host loopback")
        return None
    env = dict(os.environ, MS_SCALE_NETNS="1")
    cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
           sys.executable, os.path.abspath(__file__)] + argv
    return subprocess.call(cmd, env=env)


def readline(p, what, timeout):
    import select
    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([p.stdout], [], [], left)[0]:
            raise AssertionError("client %s: no %s line within %.0fs" % (p.pid, what, timeout))
        c = os.read(p.stdout.fileno(), 1)
        if not c:
            raise AssertionError("client %s exited before %s (rc=%s)" % (p.pid, what, p.poll()))
        buf += c
    return buf.decode().strip()


def scale(total, procs):
    import mstest
    soft, hard = raise_nofile()
    per = -(-total // procs)
    if per + 64 > soft:
        print("SKIP: RLIMIT_NOFILE %d too low for %d connections per client process" % (soft, per))
        return 77
    print("netns: %s; RLIMIT_NOFILE=%d; %d connections over %d client processes"
          % ("private" if os.environ.get("MS_SCALE_NETNS") else "host", soft, total, procs))
    t0 = time.monotonic()
    srv = mstest.Server("--max-conns", "20000", "--backlog", "4096").start()
    clients = []
    try:
        counts = [per] * (procs - 1) + [total - per * (procs - 1)]
        for cid, n in enumerate(counts):
            clients.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--client", str(srv.port), str(n), str(cid)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        opened = 0
        for p in clients:
            line = readline(p, "READY", DEADLINE)
            assert line.startswith("READY "), line
            opened += int(line.split()[1])
            assert int(line.split()[1]) == counts[clients.index(p)], "client lost connections: " + line
        t_open = time.monotonic() - t0
        print("all %d connections open in %.1fs" % (opened, t_open), flush=True)
        assert opened == total, opened
        assert srv.alive(), "server died: " + srv.stderr[-3000:]
        for p in clients:
            p.stdin.write(b"GO\n")
            p.stdin.flush()
        ok = 0
        for p in clients:
            line = readline(p, "DONE", DEADLINE)
            parts = line.split(" ", 3)
            assert parts[0] == "DONE", line
            assert int(parts[2]) == 0, "lost/corrupt echoes: " + line
            ok += int(parts[1])
        print("all %d echoes back in %.1fs" % (ok, time.monotonic() - t0), flush=True)
        assert ok == total, ok
        for p in clients:
            p.stdin.write(b"BYE\n")
            p.stdin.flush()
        for p in clients:
            assert p.wait(30) == 0, "client exit status %s" % p.returncode
    finally:
        for p in clients:
            if p.poll() is None:
                p.kill()
                p.wait()
        if srv.alive() and sys.exc_info()[0] is not None:
            srv.stop(check=False)
    srv.stop(timeout=30)
    elapsed = time.monotonic() - t0
    acc = srv.worker_accepts()
    peaks = [srv.stats[str(i)]["max_conns"] for i in range(srv.workers)]
    tot = srv.stats["total"]
    print("accepts per worker %r, peak connections per worker %r, msgs_in=%d msgs_out=%d, %.1fs"
          % (acc, peaks, tot["msgs_in"], tot["msgs_out"], elapsed))
    assert all(a > 0 for a in acc), "a worker took no share: %r" % acc
    assert min(acc) >= total // 10, "very uneven spread: %r" % acc
    assert sum(acc) == total, acc
    assert sum(peaks) >= total, "not all connections were held at once: %r" % peaks
    assert tot["msgs_in"] == total and tot["msgs_out"] == total, tot
    assert tot.get("rejects", 0) == 0, tot
    assert elapsed < DEADLINE, "took %.1fs (limit %.0fs)" % (elapsed, DEADLINE)
    return 0


def main():
    argv = sys.argv[1:]
    if argv and argv[0] == "--client":
        client_main(int(argv[1]), int(argv[2]), int(argv[3]))
        return 0
    rc = in_private_netns(argv)
    if rc is not None:
        return rc
    import mstest
    total, procs = TOTAL, PROCS
    if "--conns" in argv:
        i = argv.index("--conns")
        total = int(argv[i + 1])
        del argv[i:i + 2]
    if "--procs" in argv:
        i = argv.index("--procs")
        procs = int(argv[i + 1])
        del argv[i:i + 2]
    if not argv:
        print(__doc__)
        return 2
    mstest.SERVER_BIN = os.path.abspath(argv[0])
    try:
        rc = scale(total, procs)
    except Exception:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        print("0 passed, 1 failed")
        return 1
    if rc == 77:
        print("0 passed, 0 failed, 1 skipped")
        return 77
    print("1 passed, 0 failed")
    return rc


if __name__ == "__main__":
    sys.exit(main())
