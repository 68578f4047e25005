#!/usr/bin/python3
"""Slow consumer: a client that stops reading while
--rate msg/s are published to its stream.

Three phases against one server (2 workers, plain ws, dev mode), each a
msock-bench fan-out run of --subs subscribers on stream bench.0 with one
publisher at --rate msg/s:
  A  baseline: nobody stalls;
  B  the same, plus one client that joins bench.0 and never reads again
     (SO_RCVBUF 4 KiB): the server must close it 1008 "slow consumer"
     (counted by /metrics; the close frame itself cannot reach a client
     that does not read, so the server cuts it off after its close timer);
  C  baseline again (drift check).
Reported: the server's peak RSS during B over its peak during A and C (the
same load without the stalled client), the system's MemAvailable drop
during B below its lowest during A and C (system-wide: other processes
move it too), the bound
--max-backpressure + --sndbuf (+10 %), the close code/reason the stalled
client finally finds after the data it never read, and the subscribers'
p99 latency in A, B and C (B's change against the mean of A and C).

usage: tools/bench/slowconsumer.py [--rate 1000] [--subs 50] [--secs 20] [--pad 1000]
         [--server build/mezon-sock] [--bench build/msock-bench] [--json FILE]
Bounded: each phase stops after --secs; the whole run takes ~4 x --secs.
"""
import argparse
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def mem_available_kb():
    with open("/proc/meminfo") as f:
        return int(re.search(r"MemAvailable:\s+(\d+)", f.read()).group(1))


def start_server(args):
    p = subprocess.Popen([args.server, "--dev", "--cores", "2", "--listen", "127.0.0.1:0",
                          "--tls-listen", "off", "--admin-listen", "127.0.0.1:0",
                          "--max-backpressure", str(args.max_backpressure),
                          "--sndbuf", str(args.sndbuf)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port = None
    for raw in p.stderr:
        m = re.search(rb"listening on ws://127\.0\.0\.1:(\d+)/ws", raw)
        if m:
            port = int(m.group(1))
        m = re.search(rb"admin on http://127\.0\.0\.1:(\d+)/", raw)
        if m:
            args.admin = int(m.group(1))
            break
    threading.Thread(target=lambda: p.stderr.read(), daemon=True).start()
    if not port:
        p.kill()
        sys.exit("server did not start")
    return p, port


def slow_closes(args, srv):
    """mezon_slow_consumer_closes_total summed over the workers."""
    c = socket.create_connection(("127.0.0.1", args.admin), timeout=10)
    c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while True:
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    c.close()
    return int(sum(float(v) for v in re.findall(
        rb"^mezon_slow_consumer_closes_total\{[^}]*\} (\S+)$", data, re.M)))


def fanout(args, port, tag):
    out = tempfile.mktemp(prefix="slowc-%s-" % tag, suffix=".json")
    cmd = [args.bench, "--url", "ws://127.0.0.1:%d/ws" % port, "--scenario", "fanout",
           "--conns", str(args.subs), "--streams", "1", "--joins", "1", "--publishers", "1",
           "--pub-rate", str(args.rate), "--warmup", "2", "--duration", str(args.secs),
           "--user-base", "1000", "--pad", str(args.pad), "--quiet", "--json", out]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=args.secs * 3 + 60)
    if r.returncode != 0:
        sys.exit("msock-bench failed (%s):\n%s" % (tag, r.stdout.decode()[-2000:]))
    with open(out) as f:
        j = json.load(f)
    os.unlink(out)
    return j


def p99_us(j):
    """The end-to-end latency p99 in µs from msock-bench's JSON."""
    return float(j["latency"]["p99_us"])


def stalled_client(port):
    """Upgrade, join bench.0, then never read (small receive buffer)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    s.sendall(("GET /ws?user=999999 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
               % key).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)  # byte by byte: leave the frames unread
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = json.dumps({"op": "join", "stream": "bench.0", "id": 1}).encode()
    mask = os.urandom(4)
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask +
              bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return s


def read_to_close(s, limit_s=30):
    """Read everything the server sent; return (bytes, close code, reason)."""
    s.settimeout(limit_s)
    data = b""
    try:
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    # Walk the frames to the close frame.
    i, code, reason = data.index(b"\r\n\r\n") + 4 if b"\r\n\r\n" in data else 0, None, ""
    while i + 2 <= len(data):
        op, ln = data[i] & 0x0F, data[i + 1] & 0x7F
        j = i + 2
        if ln == 126:
            ln, j = struct.unpack(">H", data[j:j + 2])[0], j + 2
        elif ln == 127:
            ln, j = struct.unpack(">Q", data[j:j + 8])[0], j + 8
        if j + ln > len(data):
            break
        if op == 8:
            code = struct.unpack(">H", data[j:j + 2])[0] if ln >= 2 else None
            reason = data[j + 2:j + ln].decode("utf-8", "replace")
            break
        i = j + ln
    return len(data), code, reason


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--subs", type=int, default=50)
    ap.add_argument("--secs", type=int, default=20)
    ap.add_argument("--pad", type=int, default=1000, help="bytes of padding per message")
    ap.add_argument("--server", default="build/mezon-sock")
    ap.add_argument("--bench", default="build/msock-bench")
    ap.add_argument("--max-backpressure", type=int, default=1 << 20)
    ap.add_argument("--sndbuf", type=int, default=256 << 10)
    ap.add_argument("--json")
    args = ap.parse_args()

    srv, port = start_server(args)

    def run_phase(tag):
        """One fan-out run while RSS and MemAvailable are sampled (50 ms)."""
        peak = {"rss": rss_kb(srv.pid), "avail": mem_available_kb()}
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak["rss"] = max(peak["rss"], rss_kb(srv.pid))
                peak["avail"] = min(peak["avail"], mem_available_kb())
                time.sleep(0.05)
        t = threading.Thread(target=sample, daemon=True)
        t.start()
        j = fanout(args, port, tag)
        stop.set()
        t.join()
        return j, peak

    try:
        a, pa = run_phase("A")
        avail0 = mem_available_kb()
        slow0 = slow_closes(args, srv)
        s = stalled_client(port)
        b, pb = run_phase("B")
        slow1 = slow_closes(args, srv)
        got, code, reason = read_to_close(s, 2)
        s.close()
        c, pc = run_phase("C")
    finally:
        srv.terminate()
        srv.wait(30)
    rss0 = max(pa["rss"], pc["rss"])
    # System memory in use: the lowest MemAvailable during B against the
    # lowest during A and C (same load, so the client and the other
    # subscribers' socket buffers cancel out).
    avail0 = min(pa["avail"], pc["avail"])
    peak = {"rss": pb["rss"], "avail": pb["avail"]}
    bound_kb = (args.max_backpressure + args.sndbuf) * 1.10 / 1024
    res = {
        "rate": args.rate, "subs": args.subs, "secs": args.secs,
        "rss_start_kb": rss0, "rss_peak_kb": peak["rss"], "rss_growth_kb": peak["rss"] - rss0,
        "memavail_min_AC_kb": avail0, "memavail_min_B_kb": peak["avail"],
        "memavail_drop_kb": avail0 - peak["avail"], "bound_kb": round(bound_kb),
        "stalled_bytes_read_after": got, "stalled_close_code": code, "stalled_close_reason": reason,
        "server_slow_consumer_closes": slow1 - slow0,
        "p99_us": {"A": p99_us(a), "B": p99_us(b), "C": p99_us(c)},
        "deliveries_per_s": {"A": a.get("msg_rate"), "B": b.get("msg_rate"),
                             "C": c.get("msg_rate")},
    }
    base = (res["p99_us"]["A"] + res["p99_us"]["C"]) / 2
    res["p99_change_B_vs_AC"] = round(res["p99_us"]["B"] / base - 1, 3) if base else None
    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    ok = res["server_slow_consumer_closes"] == 1 and res["rss_growth_kb"] <= bound_kb
    print("verdict: %s (server closed %d slow consumer(s) 1008; the stalled client, reading "
          "afterwards, found close %s %r; peak RSS in B %+d KiB over A/C's, MemAvailable %+d KiB, "
          "bound %d KiB; p99 change %+.0f%%)"
          % ("ok" if ok else "FAIL", res["server_slow_consumer_closes"], code, reason,
             res["rss_growth_kb"], -res["memavail_drop_kb"], bound_kb,
             100 * (res["p99_change_B_vs_AC"] or 0)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
