#!/usr/bin/python3
"""Hostile clients, the acceptance measurement: each attack of findings 1-4
run for DURATION seconds by one client (a few connections) against a fresh
server, while a victim on the attacker's worker pings and a subscriber reads.

Per attack, one server (started here, under an address-space limit so that
an unbounded server aborts "out of memory" instead of taking the machine
down; --dev --diag, 2 workers, plain ws, extra flags after `--`):
  1. 300 members join stream hostile.s when the attack needs them (presence,
     toggle); they read and discard everything;
  2. a subscriber (user 900001) joins hostile.s and reads everything; it is
     also the DM target;
  3. a victim (user 900002) pings at 50/s from a child process; --baseline
     seconds (10) before the attack give its baseline (p99 of 500 pings: a
     build on the machine shows in it, so run this on a quiet machine);
  4. the attacker (user 900003, a child process, niced: we measure the
     server's fairness, not the kernel scheduler's) opens --conns
     connections on the worker that does NOT own hostile.s (placed by
     /metrics' per-worker upgrade counters; the victim and the subscriber
     are placed there too), sends its attack without reading for DURATION
     seconds, re-opening connections the server closes, then reads what is
     left (replies, close frames) for the report;
  5. --settle seconds after the attack, the end RSS; then SIGTERM.

Attacks (--attacks, comma-separated; default all):
  presence       {"op":"presence","stream":"hostile.s"} back to back (300 members)
  dm-burst       bursts of 32 DMs of 64,000 bytes to the subscriber
  publish-burst  bursts of 32 publishes of 64,000 bytes to hostile.s
  continuation   a text frame without FIN, then empty continuation frames
  e-heavy        64 KiB publishes of \\u00e9 escapes and UTF-8 é to hostile.s
  pings          {"op":"ping"} back to back
  fresh-streams  publishes to a new stream name each
  short-frames   --short-conns connections each holding a 64 KiB frame one
                 byte short on /echo, sent in 4 KiB rounds over all of them
                 (the attack is memory, not traffic: reported per held frame,
                 RSS after the frames less RSS before, rings made resident)
  toggle         join/leave of hostile.s (300 members) back to back

Reported per attack, as a markdown table row: server RSS at the attack's
start, its peak and its end (after --settle) in MB; the victim's ping
p50/p99/max during the attack and its baseline p50/p99 (ms); the victim's
and the subscriber's close code if closed, and the messages the subscriber
got; whether the server was alive at the end (else its last words); what the
attacker saw (connections, MB sent, replies by code, close frames by code);
and a verdict against the acceptance bounds (ok: alive, victim, subscriber
and members not closed, p99 <= max(2 ms, 3 x baseline p99), peak RSS growth
<= --rss-bound MB, and for short-frames <= 1.25 x 64 KiB per connection).

usage: tools/bench/hostile.py SERVER_BINARY [--duration S] [--attacks LIST]
         [--conns N] [--short-conns N] [--members N] [--baseline S] [--settle S]
         [--cap-gb G] [--rss-bound MB] [--no-nice] [--json FILE] [-- SERVER FLAGS...]
DURATION defaults to $DURATION or 60. Bounded: each attack takes about
baseline + DURATION + settle + 10 s; loopback only.
"""
import argparse
import json
import os
import re
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

STREAM = "hostile.s"
SUB_UID, VICTIM_UID, ATTACKER_UID, MEMBER_UID0 = 900001, 900002, 900003, 910000
MASK = b"\x5a\xa5\x3c\xc3"
MiB = 1 << 20

ATTACKS = ["presence", "dm-burst", "publish-burst", "continuation", "e-heavy", "pings",
           "fresh-streams", "short-frames", "toggle"]
NEEDS_MEMBERS = {"presence", "toggle"}


# ---- WebSocket bits -------------------------------------------------------------

def frame(opcode, payload=b"", fin=True):
    """One masked client frame (fixed mask key: repeated frames are the same)."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n > 0xFFFF:
        hdr = struct.pack(">BBQ", b0, 0x80 | 127, n)
    elif n > 125:
        hdr = struct.pack(">BBH", b0, 0x80 | 126, n)
    else:
        hdr = struct.pack(">BB", b0, 0x80 | n)
    if not n:
        return hdr + MASK
    k = (MASK * (n // 4 + 1))[:n]
    return hdr + MASK + (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def req(**fields):
    return frame(1, json.dumps(fields, separators=(",", ":")).encode())


def dial(port, path, timeout=3.0):
    """A connected, upgraded socket; raises OSError/ValueError if refused."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
               % path).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(1)  # byte by byte: no frame is read with the head
        if not d:
            s.close()
            raise ValueError("closed during the upgrade")
        head += d
    if not head.startswith(b"HTTP/1.1 101"):
        s.close()
        raise ValueError(head.split(b"\r\n", 1)[0].decode("latin-1"))
    return s


def walk_frames(data):
    """(frames [(opcode, payload)], rest) of server frames (unmasked)."""
    out, i = [], 0
    while i + 2 <= len(data):
        op, ln, j = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
        if ln == 126:
            if j + 2 > len(data):
                break
            ln, j = struct.unpack(">H", data[j:j + 2])[0], j + 2
        elif ln == 127:
            if j + 8 > len(data):
                break
            ln, j = struct.unpack(">Q", data[j:j + 8])[0], j + 8
        if j + ln > len(data):
            break
        out.append((op, data[j:j + ln]))
        i = j + ln
    return out, data[i:]


def close_of(payload):
    if len(payload) < 2:
        return "close"
    return "%d %s" % (struct.unpack(">H", payload[:2])[0], payload[2:].decode("utf-8", "replace"))


class Conn:
    """A /ws client for setup: requests, replies by id, events ignored."""

    def __init__(self, port, user):
        self.sock = dial(port, "/ws?user=%d" % user)
        self.buf, self.rid = b"", 0

    def request(self, timeout=5.0, **fields):
        self.rid += 1
        fields["id"] = self.rid
        self.sock.sendall(req(**fields))
        deadline = time.monotonic() + timeout
        while True:
            frames, self.buf = walk_frames(self.buf)
            for op, p in frames:
                if op == 8:
                    raise RuntimeError("closed %s during setup" % close_of(p))
                if op == 1 and b'"id":%d,' % self.rid in p:
                    return json.loads(p)
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("no reply to %r" % fields)
            self.sock.settimeout(left)
            d = self.sock.recv(65536)
            if not d:
                raise RuntimeError("closed during setup")
            self.buf += d


# ---- the server ----------------------------------------------------------------

M64 = (1 << 64) - 1


def stream_owner(name, workers):
    """shard/chat.c ms_chat_stream_owner: (ms_hash_bytes(name) % 128) % workers,
    ms_hash_bytes = FNV-1a 64 then fmix64 (0 -> 1)."""
    h = 0xcbf29ce484222325
    for x in name.encode():
        h = ((h ^ x) * 0x100000001b3) & M64
    h ^= h >> 33
    h = (h * 0xff51afd7ed558ccd) & M64
    h ^= h >> 33
    h = (h * 0xc4ceb9fe1a85ec53) & M64
    h ^= h >> 33
    return ((h or 1) % 128) % workers


class Server:
    def __init__(self, binary, extra, cap_gb):
        args = [binary, "--dev", "--diag", "--cores", "2", "--listen", "127.0.0.1:0",
                "--tls-listen", "off", "--admin-listen", "127.0.0.1:0"] + extra
        cap = int(cap_gb * (1 << 30))

        def limit():
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=limit)
        self.err, self.port, self.admin, self.workers = [], None, None, None
        ready = threading.Event()

        def pump():
            for raw in iter(self.proc.stderr.readline, b""):
                line = raw.decode("utf-8", "replace")
                self.err.append(line)
                m = re.search(r"listening on ws://[^:]+:(\d+)/ws with (\d+) workers", line)
                if m:
                    self.port, self.workers = int(m.group(1)), int(m.group(2))
                m = re.search(r"admin on http://[^:]+:(\d+)/", line)
                if m:
                    self.admin = int(m.group(1))
                if self.port and self.admin:
                    ready.set()
            ready.set()
        threading.Thread(target=pump, daemon=True).start()
        ready.wait(15)
        if not (self.port and self.admin):
            self.stop()
            sys.exit("server did not start:\n" + "".join(self.err[-20:]))

    def alive(self):
        return self.proc.poll() is None

    def rss_mb(self):
        return rss_of(self.proc.pid)

    def last_words(self):
        """How it ended: the exit status and its last line (not info/debug)."""
        self.proc.wait()
        time.sleep(0.2)  # the stderr pump
        rc = self.proc.returncode
        how = "killed by signal %d" % -rc if rc < 0 else "exit %d" % rc
        lines = [ln.strip() for ln in self.err if not re.search(r" (info|debug) \[", ln)]
        return how + (": " + lines[-1][:100] if lines else "")

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def upgrades(admin):
    """mezon_upgrades_total per worker."""
    s = socket.create_connection(("127.0.0.1", admin), timeout=5)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    return {int(w): float(v) for w, v in
            re.findall(rb'^mezon_upgrades_total\{worker="(\d+)"\} (\S+)$', data, re.M)}


def placed(admin, worker, open_fn, tries=30):
    """open_fn() until the upgrade lands on `worker` (others closed):
    (connection, True), or (another one, False) after `tries`."""
    before = upgrades(admin)
    for _ in range(tries):
        c = open_fn()
        after = upgrades(admin)
        moved = [w for w in after if after[w] > before.get(w, 0)]
        before = after
        if moved == [worker]:
            return c, True
        c.sock.close()
    return open_fn(), False


# ---- the attacker (a child process: python3 hostile.py --attacker) ------------------

def chunks(kind):
    """(prefix sent once per connection, next-chunk function) of an attack."""
    if kind == "presence":
        one = req(op="presence", stream=STREAM) * 1500
    elif kind == "dm-burst":
        one = req(op="dm", to=str(SUB_UID), data="d" * 64000) * 32
    elif kind == "publish-burst":
        one = req(op="publish", stream=STREAM, data="p" * 64000) * 32
    elif kind == "continuation":
        return frame(1, b"", fin=False), lambda: frame(0, b"", fin=False) * 10000
    elif kind == "e-heavy":
        data = '"' + "\\u00e9" * 5000 + "\u00e9" * 16000 + '"'
        one = frame(1, ('{"op":"publish","stream":"%s","data":%s}' % (STREAM, data)).encode())
    elif kind == "pings":
        one = req(op="ping") * 4000
    elif kind == "fresh-streams":
        n = [0]

        def fresh():
            base = n[0]
            n[0] += 1000
            return b"".join(req(op="publish", stream="fresh.%d.%d" % (os.getpid(), base + i), data=1)
                            for i in range(1000))
        return b"", fresh
    elif kind == "short-frames":
        return frame(2, b"\x00" * 65536)[:-1], None
    elif kind == "toggle":
        one = (req(op="join", stream=STREAM) + req(op="leave", stream=STREAM)) * 500
    else:
        raise ValueError(kind)
    return b"", lambda: one


def attacker():
    spec = json.loads(sys.stdin.read())
    if spec["nice"]:
        os.nice(spec["nice"])
    deadline = time.monotonic() + spec["secs"]
    kind = spec["kind"]
    prefix, nxt = chunks(kind)
    path = "/echo" if kind in ("continuation", "short-frames") else "/ws?user=%d" % ATTACKER_UID
    rep = {"conns": 0, "unplaced": 0, "refused": {}, "sent": 0, "drops": 0, "codes": {},
           "closes": {}, "read": 0}

    class A:  # one attacking connection
        pass

    def open_one():
        def d():
            a = A()
            a.sock = dial(spec["port"], path)
            return a
        while time.monotonic() < deadline:
            try:
                if spec["place"]:
                    a, ok = placed(spec["admin"], spec["worker"], d, tries=10)
                    rep["unplaced"] += not ok
                else:
                    a = d()
                rep["conns"] += 1
                a.sock.setblocking(False)
                a.buf, a.off = memoryview(prefix or nxt()), 0
                return a
            except (OSError, ValueError) as e:
                k = str(e)[:60]
                rep["refused"][k] = rep["refused"].get(k, 0) + 1
                time.sleep(0.05)
        return None

    def account(a):
        """Read what the server left for us (a bounded amount), count it."""
        data = b""
        try:
            a.sock.setblocking(False)
            end, quiet = time.monotonic() + 0.5, time.monotonic() + 0.05
            while len(data) < 8 * MiB and time.monotonic() < min(end, quiet):
                try:
                    d = a.sock.recv(1 << 20)
                except BlockingIOError:
                    time.sleep(0.005)
                    continue
                if not d:
                    break
                data += d
                quiet = time.monotonic() + 0.05
        except OSError:
            pass
        rep["read"] += len(data)
        frames, _ = walk_frames(data)
        for op, p in frames:
            if op == 8:
                k = close_of(p)
                rep["closes"][k] = rep["closes"].get(k, 0) + 1
            elif op == 1:
                for c in re.findall(rb'"code":(\d+)', p) or ([b"200"] if b'"ok":true' in p else []):
                    c = c.decode()
                    rep["codes"][c] = rep["codes"].get(c, 0) + 1
        a.sock.close()

    sel = selectors.DefaultSelector()
    held = []
    if kind == "short-frames":
        # Open them all; warm up with rounds of one small echo each (every
        # one its own receive) so that the workers' receive rings are
        # resident (a worker with connections keeps its ring); then
        # trickle the frames in 4 KiB rounds over all of them (input growing
        # on many connections together) and hold them. The server's RSS
        # before and after the trickle gives what one held frame costs.
        held = [a for a in (open_one() for _ in range(spec["conns"])) if a]
        echo = frame(1, b"w" * 1000)
        for _ in range(spec["rounds"]):
            for a in held:
                a.sock.setblocking(True)
                a.sock.sendall(echo)
            for a in held:
                got = 0
                while got < 1004:
                    d = a.sock.recv(1004 - got)
                    if not d:
                        break
                    got += len(d)
        time.sleep(0.3)
        rss0 = rss_of(spec["pid"])
        for off in range(0, len(prefix), 4096):
            for a in held:
                try:
                    a.sock.setblocking(True)
                    a.sock.sendall(prefix[off:off + 4096])
                    rep["sent"] += len(prefix[off:off + 4096])
                except OSError:
                    rep["drops"] += 1
            time.sleep(0.01)
        time.sleep(1.0)
        if held and rss0 is not None:
            rep["held_bytes_per_frame"] = (rss_of(spec["pid"]) - rss0) * MiB / len(held)
    else:
        for _ in range(spec["conns"]):
            a = open_one()
            if a:
                sel.register(a.sock, selectors.EVENT_WRITE, a)
    while time.monotonic() < deadline and (sel.get_map() or held):
        if not sel.get_map():  # short-frames: everything sent, hold until the end
            time.sleep(max(0.0, min(0.2, deadline - time.monotonic())))
            continue
        for key, _ in sel.select(0.05):
            a = key.data
            try:
                n = a.sock.send(a.buf[a.off:a.off + (1 << 20)])
            except BlockingIOError:
                continue
            except OSError:
                rep["drops"] += 1
                sel.unregister(a.sock)
                account(a)
                b = open_one()
                if b:
                    sel.register(b.sock, selectors.EVENT_WRITE, b)
                continue
            rep["sent"] += n
            a.off += n
            if a.off >= len(a.buf):
                if nxt is None:  # short-frames: hold it
                    sel.unregister(a.sock)
                    held.append(a)
                    continue
                a.buf, a.off = memoryview(nxt()), 0
    for key in list(sel.get_map().values()):
        account(key.data)
    for a in held:
        account(a)
    print(json.dumps(rep))


# ---- the victim (a child process: python3 hostile.py --pinger) --------------------------

def pinger():
    """Ping on the inherited socket every 20 ms until the deadline (a
    CLOCK_MONOTONIC time); print [[t, rtt], ...] and the close if any."""
    spec = json.loads(sys.stdin.read())
    s = socket.socket(fileno=spec["fd"])
    s.setblocking(True)
    buf, out, closed, rid = b"", [], None, 0
    while time.monotonic() < spec["until"] and closed is None:
        rid += 1
        t0 = time.monotonic()
        try:
            s.sendall(req(op="ping", id=rid))
            got = False
            while not got and closed is None:
                s.settimeout(max(0.01, 5.0 - (time.monotonic() - t0)))
                d = s.recv(65536)
                if not d:
                    closed = "EOF"
                    break
                buf += d
                frames, buf = walk_frames(buf)
                for op, p in frames:
                    if op == 8:
                        closed = close_of(p)
                    elif b'"id":%d,' % rid in p:
                        got = True
            if got:
                out.append([t0, time.monotonic() - t0])
        except socket.timeout:
            out.append([t0, 5.0])
        except OSError as e:
            closed = "error %s" % e
        time.sleep(max(0.0, 0.02 - (time.monotonic() - t0)))
    print(json.dumps({"samples": out, "closed": closed}))


# ---- the measurement ---------------------------------------------------------------

PONG = frame(10)  # unsolicited pong: traffic for the idle timeout (RFC 6455 5.5.3)


class Drain(threading.Thread):
    """Members: read and discard (an unsolicited pong every 10 s keeps them
    from the idle timeout); count closes."""

    def __init__(self, socks):
        super().__init__(daemon=True)
        self.socks, self.stop, self.closed = socks, threading.Event(), 0
        self.start()

    def run(self):
        sel = selectors.DefaultSelector()
        for s in self.socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        pong_at = time.monotonic() + 10
        while not self.stop.is_set() and sel.get_map():
            if time.monotonic() > pong_at:
                pong_at += 10
                for key in list(sel.get_map().values()):
                    try:
                        key.fileobj.send(PONG)
                    except OSError:
                        pass
            for key, _ in sel.select(0.1):
                try:
                    d = key.fileobj.recv(1 << 16)
                except BlockingIOError:
                    continue
                except OSError:
                    d = b""
                if not d:
                    self.closed += 1
                    sel.unregister(key.fileobj)


class Subscriber(threading.Thread):
    """Reads everything; counts message and DM events; notes a close;
    answers pings."""

    def __init__(self, sock):
        super().__init__(daemon=True)
        self.sock, self.stop, self.msgs, self.closed = sock, threading.Event(), 0, None
        self.start()

    def run(self):
        buf = b""
        self.sock.settimeout(0.2)
        while not self.stop.is_set() and self.closed is None:
            try:
                d = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError as e:
                self.closed = "error %s" % e
                break
            if not d:
                self.closed = "EOF"
                break
            buf += d
            frames, buf = walk_frames(buf)
            for op, p in frames:
                if op == 8:
                    self.closed = close_of(p)
                elif op == 9:
                    try:
                        self.sock.sendall(frame(10, p))
                    except OSError:
                        pass
                elif p.startswith(b'{"event":"message"') or p.startswith(b'{"event":"dm"'):
                    self.msgs += 1


def pct(xs, q):
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))] * 1e3 if s else float("nan")


def child(mode, spec, fds=()):
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), mode], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=tuple(fds))
    p.stdin.write(json.dumps(spec).encode())
    p.stdin.close()
    p.stdin = None
    return p


def collect(p, timeout):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    try:
        return json.loads(out)
    except ValueError:
        return {"error": err.decode("utf-8", "replace")[-300:]}


def rss_of(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024.0
    except (OSError, AttributeError):
        return None


def run_attack(kind, a):
    srv = Server(a.server, a.server_flags, a.cap_gb)
    res = {"attack": kind, "loadavg": os.getloadavg()}
    members, drain = [], None
    try:
        owner = stream_owner(STREAM, srv.workers)
        worker = (owner + 1) % srv.workers
        res["workers"], res["attacker_worker"] = srv.workers, worker
        if kind in NEEDS_MEMBERS:
            for i in range(a.members):
                c = Conn(srv.port, MEMBER_UID0 + i)
                c.sock.sendall(req(op="join", stream=STREAM))
                members.append(c.sock)
            drain = Drain(members)
        sub, ok1 = placed(srv.admin, worker, lambda: Conn(srv.port, SUB_UID))
        sub.request(op="join", stream=STREAM)
        subscriber = Subscriber(sub.sock)
        vic, ok2 = placed(srv.admin, worker, lambda: Conn(srv.port, VICTIM_UID))
        if not (ok1 and ok2):
            print("warning: the subscriber or the victim is not on worker %d" % worker,
                  file=sys.stderr)
        for _ in range(10):
            vic.request(op="ping")
        t_start = time.monotonic()
        until = t_start + a.baseline + a.duration + a.settle
        ping = child("--pinger", {"fd": vic.sock.fileno(), "until": until}, fds=[vic.sock.fileno()])
        rss = {"peak": srv.rss_mb()}
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                r = srv.rss_mb()
                if r is not None:
                    rss["peak"] = max(rss["peak"] or 0.0, r)
                time.sleep(0.05)
        threading.Thread(target=sample, daemon=True).start()
        time.sleep(a.baseline)
        rss["start"] = srv.rss_mb()
        rss["peak"] = rss["start"]
        t0 = time.monotonic()
        atk = child("--attacker", {"kind": kind, "secs": a.duration, "port": srv.port,
                                   "admin": srv.admin, "worker": worker,
                                   "place": srv.workers > 1 and kind != "short-frames",
                                   "conns": a.short_conns if kind == "short-frames" else a.conns,
                                   "nice": 0 if a.no_nice else 10, "pid": srv.proc.pid,
                                   "rounds": 13 * srv.workers})
        res["attacker"] = collect(atk, a.duration + 60)
        t1 = time.monotonic()
        time.sleep(max(0.0, t1 + a.settle - time.monotonic()))
        rss["end"] = srv.rss_mb()
        stop.set()
        v = collect(ping, max(0.0, until - time.monotonic()) + 30)
        samples = v.get("samples", [])
        base = [r for t, r in samples if t < t0]
        under = [r for t, r in samples if t0 <= t < t1]
        res["victim"] = {"base_p50": pct(base, 0.5), "base_p99": pct(base, 0.99),
                         "p50": pct(under, 0.5), "p99": pct(under, 0.99),
                         "max": max(under) * 1e3 if under else float("nan"),
                         "n": len(under), "closed": v.get("closed") or v.get("error")}
        subscriber.stop.set()
        subscriber.join(2)
        res["subscriber"] = {"msgs": subscriber.msgs, "closed": subscriber.closed}
        res["members_closed"] = drain.closed if drain else 0
        res["rss_mb"] = rss
        res["alive"] = srv.alive()
        if not res["alive"]:
            res["last_words"] = srv.last_words()
            res["stderr_tail"] = "".join(srv.err[-5:])
    finally:
        if drain:
            drain.stop.set()
        srv.stop()
        for s in members:
            s.close()
    return res


def verdict(r, a):
    v, why = r["victim"], []
    if not r["alive"]:
        why.append("server died")
    if v["closed"]:
        why.append("victim closed")
    if r["subscriber"]["closed"]:
        why.append("subscriber closed")
    if r["members_closed"]:
        why.append("members closed")
    bound = max(2.0, 3 * v["base_p99"])
    if not v["p99"] <= bound:
        why.append("p99 > %.1f ms" % bound)
    rs = r["rss_mb"]
    if rs.get("start") is not None and rs["peak"] - rs["start"] > a.rss_bound:
        why.append("RSS +%.0f MB" % (rs["peak"] - rs["start"]))
    per = r["attacker"].get("held_bytes_per_frame")
    if per is not None and per > 1.25 * 65544:
        # The input one connection may hold is its frame: ~64 KiB, + 25 %.
        why.append("%.0f KB per held 64 KiB frame" % (per / 1024))
    return "ok" if not why else "FAIL: " + ", ".join(why)


def attacker_text(at):
    if "error" in at:
        return "attacker failed: " + at["error"].replace("\n", " ")[-120:]
    parts = ["%d conns" % at["conns"], "%.0f MB sent" % (at["sent"] / MiB)]
    if at.get("held_bytes_per_frame") is not None:
        parts.append("RSS +%.0f KB per held frame" % (at["held_bytes_per_frame"] / 1024))
    if at.get("unplaced"):
        parts.append("%d not on the victim's worker" % at["unplaced"])
    if at["drops"]:
        parts.append("%d closed by the server" % at["drops"])
    if at["closes"]:
        parts.append("close " + ", ".join("%s ×%d" % kv for kv in sorted(at["closes"].items())))
    if at["codes"]:
        parts.append("replies read " + ", ".join("%s ×%d" % kv for kv in sorted(at["codes"].items())))
    if at["refused"]:
        parts.append("upgrades refused " + ", ".join("%s ×%d" % kv for kv in at["refused"].items()))
    return "; ".join(parts)


HEADER = ("| attack | RSS start / peak / end MB | victim p50 / p99 / max ms (baseline p50 / p99) "
          "| victim closed | subscriber: msgs, closed | server alive | attacker | verdict |\n"
          "|---|---|---|---|---|---|---|---|")


def row(r, a):
    rs, v = r["rss_mb"], r["victim"]
    f = lambda x: "-" if x is None else "%.1f" % x  # noqa: E731
    alive = "yes" if r["alive"] else "**no**: " + r.get("last_words", "").replace("|", "/")
    return ("| %s | %s / %s / %s | %.2f / %.2f / %.1f (%.2f / %.2f) | %s | %d, %s | %s | %s | %s |"
            % (r["attack"], f(rs.get("start")), f(rs.get("peak")), f(rs.get("end")),
               v["p50"], v["p99"], v["max"], v["base_p50"], v["base_p99"], v["closed"] or "no",
               r["subscriber"]["msgs"], (r["subscriber"]["closed"] or "no")
               + (" (%d members closed)" % r["members_closed"] if r["members_closed"] else ""), alive,
               attacker_text(r["attacker"]).replace("|", "/"), verdict(r, a)))


def main():
    if sys.argv[1:2] == ["--attacker"]:
        return attacker()
    if sys.argv[1:2] == ["--pinger"]:
        return pinger()
    argv = sys.argv[1:]
    server_flags = []
    if "--" in argv:
        i = argv.index("--")
        argv, server_flags = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("server")
    ap.add_argument("--duration", type=float, default=float(os.environ.get("DURATION", 60)))
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--conns", type=int, default=4, help="attacker connections [4]")
    ap.add_argument("--short-conns", type=int, default=200,
                    help="connections of the short-frames attack [200]")
    ap.add_argument("--members", type=int, default=300)
    ap.add_argument("--baseline", type=float, default=10.0,
                    help="seconds of victim pings before the attack [10]")
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--cap-gb", type=float, default=3.0, help="server RLIMIT_AS [3]")
    ap.add_argument("--rss-bound", type=float, default=64.0,
                    help="peak RSS growth (MB) above which the verdict fails [64]")
    ap.add_argument("--no-nice", action="store_true", help="run the attacker at nice 0")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    a.server_flags = server_flags
    kinds = [k for k in a.attacks.split(",") if k]
    for k in kinds:
        if k not in ATTACKS:
            sys.exit("unknown attack %r (known: %s)" % (k, ", ".join(ATTACKS)))
    print("# hostile.py: %s %s; %g s per attack, %d attacker connections, server RLIMIT_AS %g GiB"
          % (a.server, " ".join(server_flags), a.duration, a.conns, a.cap_gb), flush=True)
    print(HEADER, flush=True)
    results = []
    for k in kinds:
        r = run_attack(k, a)
        results.append(r)
        print(row(r, a), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if all(verdict(r, a) == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
