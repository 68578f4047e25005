#!/usr/bin/python3
"""The chat core end to end (protocol v1, PROTOCOL.md):
4 workers on the machine's CPUs, clients landing on different workers.

- dev mode (--dev): join/publish/receive in seq order, byte-for-byte data,
  streams owned by every worker with subscribers on the others, presence
  events and paged listings, --presence-max-members, DMs to two devices and
  to offline users, every error class (socket stays open), disconnect
  clean-up and seq continuity, /room fan-out, and a randomized fan-out run
  (200 connections, 20 streams, 5 publishers per stream x 50 messages)
  checked for exactly-once in-order delivery.
- --secret-file: HS256 tokens minted here (query, Authorization: Bearer,
  Sec-WebSocket-Protocol bearer.JWT), 401 on bad tokens, the streams claim
  (403, user:<sub>, prefixes), expiry while connected (close 1008), refresh
  with the auth op, a narrower token leaving joined streams ("left" event)
  and refusing a join in flight, the dm claim (403, 401 when invalid), and
  no start without a secret or --dev.

Run with /usr/bin/python3 (Debian's python3-websockets).
Usage: test_chat.py SERVER_BINARY [SOURCE_DIR] [-k SUBSTRING]
"""
import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mstest  # noqa: E402

try:
    import websockets
    from websockets.exceptions import ConnectionClosed, InvalidStatusCode
except ImportError as e:  # not a kernel feature: a broken test environment
    print("python3-websockets is missing (%s); run with /usr/bin/python3" % e)
    print("0 passed, 1 failed, 0 skipped")
    sys.exit(1)

logging.getLogger("websockets").setLevel(logging.CRITICAL)

WORKERS = 4
SRV = None        # dev mode, 4 workers, --presence-page 2, --max-streams-per-conn 3
SRV_AUTH = None   # --secret-file, 4 workers
SECRET = b"test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
SECRET_FILE = None
SLOW = 3.0 if os.environ.get("MS_SLOW", "0") not in ("", "0") else 1.0  # sanitizer builds may set MS_SLOW=1

# ---- the server's hashing, ported (shard/map.c) ----------------------------------

M64 = (1 << 64) - 1


def fmix64(k):
    k ^= k >> 33
    k = (k * 0xff51afd7ed558ccd) & M64
    k ^= k >> 33
    k = (k * 0xc4ceb9fe1a85ec53) & M64
    k ^= k >> 33
    return k


def hash_bytes(b):
    """ms_hash_bytes: FNV-1a 64, then fmix64; 0 becomes 1."""
    h = 0xcbf29ce484222325
    for x in b:
        h = ((h ^ x) * 0x100000001b3) & M64
    h = fmix64(h)
    return h or 1


def stream_owner(name, workers=WORKERS):
    return (hash_bytes(name.encode()) % 128) % workers


def reg_shard(uid):
    return fmix64(uid) % 128


assert hash_bytes(b"clan:123") == 0x5ead39ca63b5ece3  # pinned in tests/unit/test_map.c


# ---- tokens ---------------------------------------------------------------------

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def mint(sub, exp_in=300, streams=None, secret=SECRET, alg="HS256", exp=None, extra=None):
    header = {"alg": alg, "typ": "JWT"}
    claims = {"sub": str(sub), "exp": int(time.time()) + exp_in if exp is None else exp}
    if streams is not None:
        claims["streams"] = streams
    if extra:
        claims.update(extra)
    signing = b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(claims).encode())
    if alg == "none":
        return signing + "."
    sig = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64u(sig)


# ---- a chat client --------------------------------------------------------------------

class Client:
    """One /ws connection. A reader task sorts what arrives: replies with a
    pending id resolve their request; events go to .events (and message
    events also to .msgs[stream] as (seq, from, raw_data, raw_text));
    everything else (replies without id, unexpected replies) to .other."""

    def __init__(self, ws, label):
        self.user = None
        self.ws = ws
        self.label = label
        self.pending = {}
        self.events = asyncio.Queue()
        self.other = asyncio.Queue()
        self.msgs = {}
        self.seen = []    # every parsed text message, in arrival order
        self.errors = []
        self.next_id = 1
        self.closed = asyncio.Event()
        self.task = asyncio.ensure_future(self._reader())

    async def _reader(self):
        try:
            async for m in self.ws:
                if isinstance(m, bytes):
                    self.other.put_nowait(("binary", m))
                    continue
                try:
                    o = json.loads(m)
                except ValueError:
                    self.errors.append("invalid JSON from the server: %r" % m[:200])
                    continue
                self.seen.append(o)
                if "event" in o:
                    if o["event"] == "message":
                        self.msgs.setdefault(o["stream"], []).append(
                            (o["seq"], o["from"], raw_data(m), m))
                    self.events.put_nowait((m, o))
                elif "id" in o and o["id"] in self.pending:
                    fut = self.pending.pop(o["id"])
                    if not fut.done():
                        fut.set_result((m, o))
                else:
                    self.other.put_nowait((m, o))
        except ConnectionClosed:
            pass
        except Exception as e:  # noqa: BLE001
            self.errors.append("reader: %r" % e)
        finally:
            self.closed.set()

    def _take_id(self):
        i = self.next_id
        self.next_id += 1
        return i

    async def send_raw(self, text, rid=None, timeout=5.0):
        """Send text; if rid is given, wait for the reply carrying it."""
        fut = None
        if rid is not None:
            fut = asyncio.get_event_loop().create_future()
            self.pending[rid] = fut
        await self.ws.send(text)
        if fut is None:
            return None
        try:
            return await asyncio.wait_for(fut, timeout * SLOW)
        except asyncio.TimeoutError:
            raise AssertionError("%s: no reply to %r within %.1fs" % (self.label, text[:200], timeout))

    async def req(self, op, timeout=5.0, **fields):
        """Send {"op":op, ...fields, "id":N}; return the parsed reply."""
        rid = self._take_id()
        obj = {"op": op}
        obj.update(fields)
        obj["id"] = rid
        _, o = await self.send_raw(json.dumps(obj), rid, timeout)
        return o

    async def ok(self, op, **fields):
        o = await self.req(op, **fields)
        assert o.get("ok") is True, "%s: %s %r failed: %r" % (self.label, op, fields, o)
        return o

    async def publish_raw(self, stream, data_text):
        """Publish with data given as raw JSON text; returns the seq."""
        rid = self._take_id()
        text = '{"op":"publish","stream":%s,"data":%s,"id":%d}' % (json.dumps(stream), data_text, rid)
        _, o = await self.send_raw(text, rid)
        assert o.get("ok") is True, "%s: publish failed: %r" % (self.label, o)
        return o["seq"]

    async def event(self, kind=None, timeout=5.0, stream=None, skip_own_join=True):
        """Next event (of that kind/stream; others are dropped). A joiner is
        a subscriber when its own join is announced, so presence events
        that only announce this connection's own user are skipped."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%s: no %s event within %.1fs" % (self.label, kind, timeout))
            try:
                m, o = await asyncio.wait_for(self.events.get(), left)
            except asyncio.TimeoutError:
                continue
            if skip_own_join and o["event"] == "presence" and o.get("join") == [str(self.user)] \
                    and "leave" not in o:
                continue
            if (kind is None or o["event"] == kind) and (stream is None or o.get("stream") == stream):
                return o

    async def other_msg(self, timeout=5.0):
        try:
            return await asyncio.wait_for(self.other.get(), timeout * SLOW)
        except asyncio.TimeoutError:
            raise AssertionError("%s: nothing (without a pending id) within %.1fs" % (self.label, timeout))

    def drain_events(self):
        out = []
        while not self.events.empty():
            out.append(self.events.get_nowait()[1])
        return out

    async def wait_msgs(self, stream, n, timeout=10.0):
        deadline = time.monotonic() + timeout * SLOW
        while len(self.msgs.get(stream, [])) < n:
            if time.monotonic() > deadline:
                raise AssertionError("%s: %d of %d messages on %s within %.1fs"
                                     % (self.label, len(self.msgs.get(stream, [])), n, stream, timeout))
            if self.closed.is_set():
                raise AssertionError("%s: closed while waiting for messages" % self.label)
            await asyncio.sleep(0.01)
        return self.msgs[stream]

    async def alive(self):
        """The socket still serves requests."""
        o = await self.req("ping")
        assert o == {"id": o["id"], "ok": True}, o

    def check_clean(self):
        assert not self.errors, "%s: %r" % (self.label, self.errors)
        assert self.other.empty(), "%s: unexpected %r" % (self.label, self.other.get_nowait())

    async def close(self):
        try:
            await self.ws.close()
        except Exception:  # noqa: BLE001
            pass
        self.task.cancel()

    def abort(self):
        """Drop the TCP connection without a close handshake."""
        self.ws.transport.abort()
        self.task.cancel()


def raw_data(text):
    """The raw text of a message/dm event's data span (the server puts data
    last: ..."data":<value>})."""
    i = text.find(',"data":')
    assert i >= 0 and text.endswith("}"), "no data span in %r" % text[:200]
    return text[i + 8:-1]


def uri(srv, path="/ws", user=None, token=None):
    q = []
    if user is not None:
        q.append("user=%s" % user)
    if token is not None:
        q.append("token=%s" % token)
    return "ws://127.0.0.1:%d%s%s" % (srv.port, path, ("?" + "&".join(q)) if q else "")


async def connect(srv, user=None, path="/ws", token=None, label=None, **kw):
    kw.setdefault("ping_interval", None)
    kw.setdefault("max_size", 1 << 22)
    kw.setdefault("open_timeout", 10 * SLOW)
    kw.setdefault("close_timeout", 5)
    kw.setdefault("max_queue", None)
    kw.setdefault("compression", None)
    ws = await websockets.connect(uri(srv, path, user, token), **kw)
    c = Client(ws, label or ("user %s" % user))
    c.user = user
    return c


async def connect_many(srv, users, **kw):
    return list(await asyncio.gather(*[connect(srv, u, **kw) for u in users]))


def arun(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout * SLOW))


def expect_error(o, code, has_id=True):
    assert o.get("ok") is False, "expected error %d, got %r" % (code, o)
    assert o["error"]["code"] == code, "expected error %d, got %r" % (code, o)
    assert isinstance(o["error"].get("message"), str), o
    if not has_id:
        assert "id" not in o, "an error for a frame that is not JSON carries no id: %r" % o
    return o


_names = [0]


def fresh(prefix="s"):
    """A stream name not used before in this run."""
    _names[0] += 1
    return "%s:%d.%d" % (prefix, os.getpid() % 10000, _names[0])


def fresh_owned_by(worker, prefix="s"):
    while True:
        n = fresh(prefix)
        if stream_owner(n) == worker:
            return n


_uids = [100000]


def uid():
    _uids[0] += 1
    return _uids[0]


def setup():
    global SRV, SRV_AUTH, SECRET_FILE
    SRV = mstest.Server("--presence-page", "2", "--max-streams-per-conn", "3",
                        cores=WORKERS).start()
    assert SRV.workers == WORKERS, SRV.workers
    fd, SECRET_FILE = tempfile.mkstemp(prefix="ms-secret-")
    os.write(fd, SECRET + b"\n")  # one trailing newline is stripped
    os.close(fd)
    cert, key = mstest.test_cert()
    SRV_AUTH = mstest.Server(args=["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--cores", str(WORKERS),
                                   "--secret-file", SECRET_FILE, "--cert", cert, "--key", key]).start()


def teardown():
    try:
        for s in (SRV, SRV_AUTH):
            s.stop()
            tot = s.stats["total"]
            assert tot["closes"] == tot["accepts"], "closes != accepts: %r" % tot
    finally:
        if SECRET_FILE:
            os.unlink(SECRET_FILE)


# ---- join / publish / receive ------------------------------------------------------

def test_join_publish_seq_order():
    async def main():
        s = fresh("clan")
        a, b = await connect_many(SRV, [uid(), uid()])
        ja = await a.ok("join", stream=s)
        assert ja["seq"] == 0, ja
        assert isinstance(ja["epoch"], str) and ja["epoch"], ja
        jb = await b.ok("join", stream=s)
        assert jb["epoch"] == ja["epoch"] and jb["seq"] == 0, (ja, jb)
        N = 120
        seqs = []
        for i in range(N):
            o = await a.ok("publish", stream=s, data={"i": i})
            seqs.append(o["seq"])
        assert seqs == list(range(1, N + 1)), seqs
        for c in (a, b):  # the publisher, subscribed, gets its own messages too
            got = await c.wait_msgs(s, N)
            assert [g[0] for g in got] == list(range(1, N + 1))
            assert [json.loads(g[2])["i"] for g in got] == list(range(N))
            # "from" is the publisher's id as a string.
            assert {g[1] for g in got} == {str(a.user)}
        # A later joiner learns the current seq, same epoch.
        c = await connect(SRV, uid())
        jc = await c.ok("join", stream=s)
        assert jc["seq"] == N and jc["epoch"] == ja["epoch"], jc
        o = await c.ok("publish", stream=s, data=1)
        assert o["seq"] == N + 1
        for x in (a, b, c):
            got = await x.wait_msgs(s, N + 1 if x is not c else 1)
            assert got[-1][0] == N + 1
        for x in (a, b, c):
            x.check_clean()
            await x.close()
    arun(main())


def test_publish_without_id_and_pipelined_order():
    """Publishes sent back to back (no waiting) keep their order; a publish
    without id gets a reply without id."""
    async def main():
        s = fresh()
        a = await connect(SRV, uid())
        await a.ok("join", stream=s)
        await a.ws.send(json.dumps({"op": "publish", "stream": s, "data": "noid"}))
        m, o = await a.other_msg()
        assert o == {"ok": True, "seq": 1}, o
        for i in range(200):
            await a.ws.send(json.dumps({"op": "publish", "stream": s, "data": i, "id": 1000 + i}))
        got = await a.wait_msgs(s, 201)
        assert [g[0] for g in got] == list(range(1, 202))
        assert [json.loads(g[2]) for g in got[1:]] == list(range(200))
        # 200 replies without a pending future land in .other, in order.
        for i in range(200):
            m, o = await a.other_msg()
            assert o == {"id": 1000 + i, "ok": True, "seq": i + 2}, o
        a.check_clean()
        await a.close()
    arun(main())


def test_data_forwarded_byte_for_byte():
    async def main():
        s = fresh()
        a, b = await connect_many(SRV, [uid(), uid()])
        await a.ok("join", stream=s)
        await b.ok("join", stream=s)
        datas = [
            '{ "a" :  1 ,\t"b":[ 1 , 2 ,3 ] ,"c":"\\u00e9\\ud83d\\ude00\\n" }',
            '"spaced string"',
            '"caf\u00e9 \U0001F600 \\" \\\\ \\/"',
            '1.50e+00',
            '-0',
            'null',
            'true',
            '[]',
            '{}',
            '[{"x":{"y":[null,false,{"z":"\\u0000"}]}}]',
            '"' + "x" * 3000 + '"',
            '{"seq":999,"event":"fake","data":{"from":"0"}}',
        ]
        seqs = []
        for d in datas:
            seqs.append(await a.publish_raw(s, d))
        for c in (a, b):
            got = await c.wait_msgs(s, len(datas))
            assert [g[0] for g in got] == seqs
            for (seq, frm, raw, text), d in zip(got, datas):
                assert raw == d, "data changed: sent %r, got %r" % (d, raw)
                o = json.loads(text)
                assert o["stream"] == s and o["seq"] == seq and o["event"] == "message"
                assert o["data"] == json.loads(d)
        a.check_clean()
        b.check_clean()
        await a.close()
        await b.close()
    arun(main())


# ---- streams owned by every worker, subscribers on the others ------------------------

def test_cross_worker_fanout():
    """48 connections (so that each of the 4 workers accepts some: the stats
    prove it) each join 8 streams, two owned by each worker; every
    connection publishes to every stream. Whatever worker a connection
    landed on, it publishes to streams owned by the other workers whose
    subscribers sit on the rest: every delivery is asserted."""
    srv = mstest.Server(cores=WORKERS).start()
    try:
        async def main():
            streams = [fresh_owned_by(w % WORKERS, "x") for w in range(8)]
            assert sorted(stream_owner(s) for s in streams) == [0, 0, 1, 1, 2, 2, 3, 3]
            users = [uid() for _ in range(48)]
            cs = await connect_many(srv, users)
            await asyncio.gather(*[c.ok("join", stream=s) for c in cs for s in streams])
            # Every connection publishes once to each stream, concurrently.
            async def pub(c):
                out = []
                for s in streams:
                    o = await c.ok("publish", stream=s, data={"from": c.label, "s": s})
                    out.append((s, o["seq"]))
                return out
            res = await asyncio.gather(*[pub(c) for c in cs])
            per_stream = {s: sorted(q for r in res for (t, q) in r if t == s) for s in streams}
            for s in streams:
                assert per_stream[s] == list(range(1, 49)), (s, per_stream[s])
            for c in cs:
                for s in streams:
                    got = await c.wait_msgs(s, 48)
                    assert [g[0] for g in got] == list(range(1, 49)), (c.label, s)
                    assert sorted(g[1] for g in got) == sorted(str(u) for u in users)
                c.check_clean()
            # The same seq carries the same message for every subscriber.
            for s in streams:
                ref = [g[2] for g in cs[0].msgs[s]]
                for c in cs[1:]:
                    assert [g[2] for g in c.msgs[s]] == ref
            await asyncio.gather(*[c.close() for c in cs])
        arun(main())
    finally:
        srv.stop()
    acc = srv.worker_accepts()
    assert all(a > 0 for a in acc), "some worker accepted nothing: %r" % acc
    tot = srv.stats["total"]
    assert tot["closes"] == tot["accepts"] == 48, tot
    assert tot["deliveries"] >= 48 * 48 * 8, tot


# ---- presence ------------------------------------------------------------------------

def presence_counts(events, stream):
    joins, leaves = {}, {}
    for e in events:
        if e["event"] != "presence" or e["stream"] != stream:
            continue
        for u in e.get("join", []):
            joins[u] = joins.get(u, 0) + 1
        for u in e.get("leave", []):
            leaves[u] = leaves.get(u, 0) + 1
    return joins, leaves


async def presence_until(obs, stream, done, timeout=10.0):
    """Collect obs's presence events on stream until done(joins, leaves)
    holds (then 0.3 s more, so duplicates would show) or the timeout
    passes; returns the counts. A loaded CI machine running a sanitized
    server may need more than a fixed sleep for ten closing handshakes."""
    events = []
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        events += obs.drain_events()
        if done(*presence_counts(events, stream)):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    events += obs.drain_events()
    return presence_counts(events, stream)


def test_presence_events():
    async def main():
        s = fresh("pres")
        ua, ub, uc = uid(), uid(), uid()
        a = await connect(SRV, ua)
        await a.ok("join", stream=s)
        b1 = await connect(SRV, ub, label="b1")
        await b1.ok("join", stream=s)
        e = await a.event("presence", stream=s)
        assert e.get("join") == [str(ub)] and "leave" not in e, e
        # A second device of b joining: b is already present, no event.
        b2 = await connect(SRV, ub, label="b2")
        await b2.ok("join", stream=s)
        # c joining: an event for c only.
        c = await connect(SRV, uc)
        await c.ok("join", stream=s)
        e = await a.event("presence", stream=s)
        assert e.get("join") == [str(uc)] and "leave" not in e, e
        # b1 leaves: b is still present through b2.
        await b1.ok("leave", stream=s)
        await asyncio.sleep(0.3)
        # b2 disconnects (no leave op): the last connection: leave event.
        b2.abort()
        e = await a.event("presence", stream=s)
        assert e.get("leave") == [str(ub)] and "join" not in e, e
        # c leaves with the op.
        await c.ok("leave", stream=s)
        e = await a.event("presence", stream=s)
        assert e.get("leave") == [str(uc)], e
        await asyncio.sleep(0.3)
        rest = a.drain_events()
        assert not [x for x in rest if x["event"] == "presence"], rest
        # Listing: only a is left.
        o = await a.ok("presence", stream=s)
        assert o["users"] == [str(ua)] and "next" not in o, o
        for x in (a, b1, c):
            x.check_clean()
            await x.close()
    arun(main())


def test_presence_event_seen_by_other_workers_and_coalescing_allowed():
    """Ten users join at once; a subscriber sees each exactly once as a
    join (possibly coalesced into fewer events), and later each leave once."""
    async def main():
        s = fresh("pres")
        obs = await connect(SRV, uid(), label="observer")
        await obs.ok("join", stream=s)
        users = [uid() for _ in range(10)]
        cs = await connect_many(SRV, users)
        await asyncio.gather(*[c.ok("join", stream=s) for c in cs])
        want = {str(u): 1 for u in users}
        joins, leaves = await presence_until(
            obs, s, lambda j, l: {k: v for k, v in j.items() if k != str(obs.user)} == want)
        joins.pop(str(obs.user), None)  # its own join, if announced to itself
        assert joins == want and not leaves, (joins, leaves)
        await asyncio.gather(*[c.close() for c in cs])
        joins, leaves = await presence_until(obs, s, lambda j, l: l == want)
        assert leaves == want and not joins, (joins, leaves)
        obs.check_clean()
        await obs.close()
    arun(main())


async def list_all(c, s):
    users, pages, cursor = [], 0, None
    while True:
        kw = {"stream": s}
        if cursor is not None:
            kw["cursor"] = cursor
        o = await c.ok("presence", **kw)
        pages += 1
        assert len(o["users"]) <= 2, "page larger than --presence-page 2: %r" % o
        users += o["users"]
        if "next" not in o:
            return users, pages
        assert isinstance(o["next"], str), o
        cursor = o["next"]
        assert pages < 100, "cursor loop"


def test_presence_listing_paged():
    async def main():
        s = fresh("plist")
        users = [uid() for _ in range(7)]
        cs = await connect_many(SRV, users)
        await asyncio.gather(*[c.ok("join", stream=s) for c in cs])
        # A second device of a user counts once.
        extra = await connect(SRV, users[0], label="dev2")
        await extra.ok("join", stream=s)
        lister = await connect(SRV, uid(), label="lister")  # not joined: listing still works
        got, pages = await list_all(lister, s)
        assert sorted(got) == sorted(str(u) for u in users), got
        assert len(got) == len(set(got)), "duplicates in paged listing: %r" % got
        assert pages == 4, pages
        # Unknown stream: empty listing.
        o = await lister.ok("presence", stream=fresh("nobody"))
        assert o["users"] == [] and "next" not in o, o
        # Bad cursor.
        o = await lister.req("presence", stream=s, cursor="x1")
        expect_error(o, 400)
        await lister.alive()
        for c in cs + [extra, lister]:
            c.check_clean()
            await c.close()
    arun(main())


def test_presence_max_members():
    srv = mstest.Server("--presence-max-members", "2", "--presence-page", "3", cores=WORKERS).start()
    try:
        async def main():
            s = fresh("big")
            users = [uid() for _ in range(5)]
            a = await connect(srv, users[0])
            await a.ok("join", stream=s)
            b = await connect(srv, users[1])
            await b.ok("join", stream=s)
            e = await a.event("presence", stream=s)  # 2 members: still announced
            assert e.get("join") == [str(users[1])], e
            rest = await connect_many(srv, users[2:])
            for c in rest:
                await c.ok("join", stream=s)
            await asyncio.sleep(0.5)
            evs = [x for x in a.drain_events() if x["event"] == "presence"
                   and set(x.get("join", [])) & {str(u) for u in users[2:]}]
            assert not evs, "presence events above --presence-max-members 2: %r" % evs
            evs = [x for x in b.drain_events() if x["event"] == "presence"]
            assert not [x for x in evs if set(x.get("join", [])) & {str(u) for u in users[2:]}], evs
            await rest[0].close()
            await asyncio.sleep(0.5)
            evs = [x for x in a.drain_events() if x["event"] == "presence"]
            assert not evs, "leave event above --presence-max-members: %r" % evs
            # Listings still work (page 3, two pages).
            got, pages = [], 0
            cursor = None
            while True:
                kw = {"stream": s}
                if cursor:
                    kw["cursor"] = cursor
                o = await a.ok("presence", **kw)
                got += o["users"]
                pages += 1
                cursor = o.get("next")
                if not cursor:
                    break
            assert sorted(got) == sorted(str(u) for u in users if u != users[2]), got
            for c in [a, b] + rest[1:]:
                c.check_clean()
                await c.close()
        arun(main())
    finally:
        srv.stop()


# ---- DMs -------------------------------------------------------------------------------

async def dm_when_registered(sender, to, data, timeout=3.0):
    """Registration is asynchronous (REGISTER to the user's shard owner):
    retry a 404 for a moment after the recipient connected."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        o = await sender.req("dm", to=str(to), data=data)
        if o.get("ok") or time.monotonic() > deadline:
            return o
        expect_error(o, 404)
        await asyncio.sleep(0.05)


def test_dm_two_devices_and_offline():
    async def main():
        u, v = uid(), uid()
        d1 = await connect(SRV, u, label="d1")
        d2 = await connect(SRV, u, label="d2")
        sender = await connect(SRV, v, label="sender")
        await asyncio.sleep(0.2)  # both REGISTERs reach the owner
        o = await dm_when_registered(sender, u, {"hi": 1})
        assert o == {"id": o["id"], "ok": True}, o
        for d in (d1, d2):
            e = await d.event("dm")
            assert e == {"event": "dm", "from": str(v), "data": {"hi": 1}}, e
        # Byte for byte.
        rid = sender._take_id()
        data = '{ "x" : "\\u00e9\U0001F600" , "y":[1 ,2] }'
        _, o = await sender.send_raw('{"op":"dm","to":"%d","data":%s,"id":%d}' % (u, data, rid), rid)
        assert o["ok"] is True, o
        for d in (d1, d2):
            while True:
                m, e = await asyncio.wait_for(d.events.get(), 5 * SLOW)
                if e["event"] == "dm":
                    break
            assert raw_data(m) == data, m
        # Offline user: 404 with the id.
        o = await sender.req("dm", to="987654321987", data=1)
        expect_error(o, 404)
        # One device gone: the other still gets DMs.
        await d1.close()
        await asyncio.sleep(0.3)
        o = await sender.ok("dm", to=str(u), data="one")
        e = await d2.event("dm")
        assert e["data"] == "one"
        # Both gone: 404 (once UNREGISTER reached the owner).
        await d2.close()
        deadline = time.monotonic() + 3 * SLOW
        while True:
            o = await sender.req("dm", to=str(u), data="gone")
            if not o.get("ok"):
                break
            assert time.monotonic() < deadline, "DM still accepted for a disconnected user"
            await asyncio.sleep(0.05)
        expect_error(o, 404)
        # DM to oneself reaches the sender's own connection.
        o = await sender.ok("dm", to=str(v), data="me")
        e = await sender.event("dm")
        assert e == {"event": "dm", "from": str(v), "data": "me"}, e
        sender.check_clean()
        d2.check_clean()
        await sender.close()
    arun(main())


# ---- errors ------------------------------------------------------------------------------

def test_errors_socket_stays_open():
    async def main():
        c = await connect(SRV, uid())
        s = fresh()

        async def noid_error(text, code):
            await c.ws.send(text)
            m, o = await c.other_msg()
            expect_error(o, code, has_id=False)
            await c.alive()

        # Invalid JSON: 400 without id (even if an id is visible).
        await noid_error('{"op":"join","stream":"a","id":5', 400)
        await noid_error('not json', 400)
        await noid_error('{"op":"ping","id":7}}', 400)
        # Unknown op: 400 with id.
        o = await c.req("frobnicate", stream=s)
        expect_error(o, 400)
        await c.alive()
        # Duplicate keys (top level, also in escaped spellings).
        for text in ('{"op":"join","stream":"a","stream":"b","id":%d}',
                     '{"op":"join","op":"leave","stream":"a","id":%d}',
                     '{"op":"join","stream":"a","str\\u0065am":"b","id":%d}'):
            rid = c._take_id()
            _, o = await c.send_raw(text % rid, rid)
            expect_error(o, 400)
        await c.alive()
        # Bad stream names.
        for name in ("", "a b", "a/b", "x" * 129, "caf\u00e9", "a\"b", "#room"):
            o = await c.req("join", stream=name)
            expect_error(o, 400)
            o = await c.req("publish", stream=name, data=1)
            expect_error(o, 400)
        o = await c.ok("join", stream="x" * 128)  # the longest valid name
        await c.ok("leave", stream="x" * 128)
        # Missing fields / bad data.
        for obj in ({"op": "join"}, {"op": "publish", "stream": s},
                    {"op": "dm", "data": 1}, {"op": "dm", "to": "007", "data": 1},
                    {"op": "join", "stream": 5}):
            o = await c.req(obj.pop("op"), **obj)
            expect_error(o, 400)
        # data that is not one JSON value makes the frame invalid JSON: no id.
        await noid_error('{"op":"publish","stream":"%s","data":1 2,"id":77}' % s, 400)
        # join twice → 409; leave not joined → 409.
        await c.ok("join", stream=s)
        expect_error(await c.req("join", stream=s), 409)
        expect_error(await c.req("leave", stream=fresh()), 409)
        await c.ok("leave", stream=s)
        expect_error(await c.req("leave", stream=s), 409)
        # More than --max-streams-per-conn 3 → 403; a slot freed is reusable.
        names = [fresh() for _ in range(4)]
        for n in names[:3]:
            await c.ok("join", stream=n)
        expect_error(await c.req("join", stream=names[3]), 403)
        await c.alive()
        await c.ok("leave", stream=names[0])
        await c.ok("join", stream=names[3])
        # Binary frame on /ws → 400 reply without id; the socket stays open.
        await c.ws.send(b'{"op":"ping","id":1}')
        m, o = await c.other_msg()
        expect_error(o, 400, has_id=False)
        await c.alive()
        c.check_clean()
        assert not c.closed.is_set()
        await c.close()
    arun(main())


def test_dev_mode_user_param():
    """Dev mode: /ws without ?user= or with a non-canonical id → 400."""
    for q in ("/ws", "/ws?user=", "/ws?user=01", "/ws?user=abc", "/ws?user=18446744073709551616"):
        req, _ = mstest.upgrade_request(q)
        st, _, _ = mstest.http_exchange(SRV.port, req)
        assert st == 400, (q, st)
    # 2^64-1 is a valid id.
    with mstest.RawWS(SRV.port, "/ws?user=18446744073709551615") as ws:
        ws.send(mstest.frame(1, b'{"op":"ping","id":1}'))
        assert ws.recv_message() == (1, b'{"id":1,"ok":true}')


# ---- disconnect clean-up ------------------------------------------------------------------

def test_disconnect_cleanup_and_seq_continuity():
    srv = mstest.Server(cores=WORKERS).start()
    try:
        async def main():
            s = fresh("cl")
            ua, ub, uc, up = uid(), uid(), uid(), uid()
            a, b, c, p = await connect_many(srv, [ua, ub, uc, up])
            j = await a.ok("join", stream=s)
            epoch = j["epoch"]
            for x in (b, c):
                await x.ok("join", stream=s)
            for i in range(10):
                await p.ok("publish", stream=s, data=i)
            for x in (a, b, c):
                await x.wait_msgs(s, 10)
            a.drain_events()
            # c vanishes without a close handshake; then b closes properly.
            c.abort()
            e = await a.event("presence", stream=s)
            assert e.get("leave") == [str(uc)], e
            await b.close()
            e = await a.event("presence", stream=s)
            assert e.get("leave") == [str(ub)], e
            # Publishing still works; the remaining subscriber still receives.
            for i in range(10, 20):
                o = await p.ok("publish", stream=s, data=i)
                assert o["seq"] == i + 1
            got = await a.wait_msgs(s, 20)
            assert [g[0] for g in got] == list(range(1, 21))
            # Everyone leaves; the stream's seq survives (same epoch).
            await a.close()
            await p.close()
            await asyncio.sleep(0.3)
            n = await connect(srv, uid())
            j2 = await n.ok("join", stream=s)
            assert j2["seq"] == 20 and j2["epoch"] == epoch, (j2, epoch)
            o = await n.ok("publish", stream=s, data="again")
            assert o["seq"] == 21
            got = await n.wait_msgs(s, 1)
            assert got[0][0] == 21
            o = await n.ok("presence", stream=s)
            assert o["users"] == [str(n.user)], o
            n.check_clean()
            await n.close()
            # Many connections that join, publish and vanish mid-flight.
            for round_ in range(3):
                cs = await connect_many(srv, [uid() for _ in range(30)])
                await asyncio.gather(*[x.ok("join", stream=s) for x in cs])
                for x in cs:
                    await x.ws.send(json.dumps({"op": "publish", "stream": s, "data": round_}))
                for x in cs[::2]:
                    x.abort()
                await asyncio.gather(*[x.close() for x in cs[1::2]])
            # Joins still in flight when the connection vanishes (the
            # JOIN_ACK finds it gone and undoes the membership).
            cs = await connect_many(srv, [uid() for _ in range(30)])
            for x in cs:
                await x.ws.send(json.dumps({"op": "join", "stream": s, "id": 1}))
                await x.ws.send(json.dumps({"op": "publish", "stream": s, "data": "late"}))
            for x in cs:
                x.abort()
            await asyncio.sleep(0.5)
            n = await connect(srv, uid())
            j3 = await n.ok("join", stream=s)
            assert j3["epoch"] == epoch and j3["seq"] >= 21, j3
            o = await n.ok("presence", stream=s)
            assert o["users"] == [str(n.user)], "stale members: %r" % o
            await n.close()
        arun(main())
    finally:
        srv.stop()
    tot = srv.stats["total"]
    assert tot["closes"] == tot["accepts"], tot


def test_pipelined_join_leave_join():
    """join, leave, join of one stream in one TCP segment: the client was
    told the leave succeeded, so the second join must succeed too, and every
    request gets exactly one reply."""
    with mstest.RawWS(SRV.port, "/ws?user=%d" % uid()) as ws:
        s = fresh_owned_by(1)
        batch = b"".join(mstest.frame(1, json.dumps(o).encode()) for o in (
            {"op": "join", "stream": s, "id": 1},
            {"op": "leave", "stream": s, "id": 2},
            {"op": "join", "stream": s, "id": 3},
            {"op": "ping", "id": 4}))
        ws.send(batch)
        replies = {}
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and len(replies) < 4:
            try:
                op, p = ws.recv_message(timeout=max(0.1, deadline - time.monotonic()))
            except AssertionError:
                break
            o = json.loads(p)
            if "id" in o:
                assert o["id"] not in replies, "two replies for id %d" % o["id"]
                replies[o["id"]] = o
        assert set(replies) == {1, 2, 3, 4}, "replies: %r" % replies
        assert replies[2].get("ok") is True, replies
        assert replies[3].get("ok") is True, "join after an acknowledged leave: %r" % replies[3]


# ---- /room -----------------------------------------------------------------------------

def test_room_fanout():
    async def main():
        N = 6
        cs = [await websockets.connect("ws://127.0.0.1:%d/room" % SRV.port, ping_interval=None,
                                       compression=None, max_queue=None) for _ in range(N)]
        # The room join is asynchronous and silent: sync with probes until a
        # probe reaches everyone, then drop the probes.
        got = [[] for _ in range(N)]

        async def reader(i):
            try:
                async for m in cs[i]:
                    got[i].append(m)
            except ConnectionClosed:
                pass
        tasks = [asyncio.ensure_future(reader(i)) for i in range(N)]
        deadline = time.monotonic() + 5 * SLOW
        k = 0
        while True:
            k += 1
            probe = "sync-%d" % k
            await cs[0].send(probe)
            await asyncio.sleep(0.1)
            if all(probe in g for g in got):
                break
            assert time.monotonic() < deadline, "room joins never completed"
        await asyncio.sleep(0.1)
        for g in got:
            g.clear()
        msgs = []
        for i, c in enumerate(cs):
            t = "text from %d: caf\u00e9 \U0001F600 {not json" % i
            b = bytes([0xff, 0x00, i, 0x80]) + os.urandom(20)
            msgs += [t, b]
            await c.send(t)
            await c.send(b)
        await cs[0].send("")
        await cs[1].send(b"")
        msgs += ["", b""]
        deadline = time.monotonic() + 5 * SLOW
        while any(len(g) < len(msgs) for g in got) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        for i, g in enumerate(got):
            assert sorted(map(repr, g)) == sorted(map(repr, msgs)), \
                "connection %d got %d of %d: missing %r extra %r" % (
                    i, len(g), len(msgs), [m for m in msgs if m not in g][:3],
                    [m for m in g if m not in msgs][:3])
            # Per sender, order kept.
            for j in range(N):
                mine = [m for m in g if m in (msgs[2 * j], msgs[2 * j + 1])]
                assert mine == [msgs[2 * j], msgs[2 * j + 1]], mine
        for c in cs:
            await c.close()
        for t in tasks:
            t.cancel()
    arun(main())


# ---- the randomized fan-out run -------------------------------------------------------------

def test_random_fanout_exactly_once_in_order():
    """4 workers, 200 connections over 20 streams with random joins (1-3
    each), 5 publishers per stream x 50 messages, all concurrent. Checker:
    every subscriber receives every message of its streams exactly once, in
    seq order without gaps, seq = 1..250 per stream, and each seq carries
    the message whose publish reply got that seq."""
    srv = mstest.Server(cores=WORKERS).start()
    rnd = random.Random(20240905)
    try:
        async def main():
            # 5 streams per owning worker, so every worker owns some
            streams, per = [], {k: 0 for k in range(WORKERS)}
            while len(streams) < 20:
                name = fresh("f")
                if per[stream_owner(name)] < 20 // WORKERS:
                    per[stream_owner(name)] += 1
                    streams.append(name)
            owners = {stream_owner(s) for s in streams}
            assert owners == set(range(WORKERS)), owners
            users = [uid() for _ in range(200)]
            cs = []
            for i in range(0, 200, 50):
                cs += await connect_many(srv, users[i:i + 50])
            subs = {}
            for c in cs:
                subs[c] = rnd.sample(streams, rnd.randint(1, 3))
            for s in streams:  # every stream has a subscriber
                if not any(s in v for v in subs.values()):
                    subs[cs[rnd.randrange(200)]][0] = s
            # Each stream has 5 publishers among the connections (subscribed or not).
            pubs = {s: rnd.sample(cs, 5) for s in streams}
            js = await asyncio.gather(*[c.ok("join", stream=s) for c in cs for s in subs[c]])
            assert all(j["seq"] == 0 for j in js)
            replies = {s: {} for s in streams}  # seq -> (publisher, k)

            async def publisher(c, s, k0):
                for k in range(50):
                    data = {"p": c.label, "k": k, "s": s}
                    o = await c.ok("publish", stream=s, data=data)
                    assert o["seq"] not in replies[s], "seq %d given twice on %s" % (o["seq"], s)
                    replies[s][o["seq"]] = (c.label, k)
            await asyncio.gather(*[publisher(c, s, 0) for s in streams for c in pubs[s]])
            for s in streams:
                assert sorted(replies[s]) == list(range(1, 251)), s
                # One connection's publishes keep their order.
                for c in pubs[s]:
                    ks = [replies[s][q][1] for q in sorted(replies[s]) if replies[s][q][0] == c.label]
                    assert ks == list(range(50)), (s, c.label, ks)
            for c in cs:
                for s in subs[c]:
                    got = await c.wait_msgs(s, 250, timeout=30)
                    seqs = [g[0] for g in got]
                    assert seqs == list(range(1, 251)), \
                        "%s on %s: gaps/dups/reorder: first bad at %r" % (
                            c.label, s, next((i, q) for i, q in enumerate(seqs) if q != i + 1))
                    for q, frm, raw, text in got:
                        d = json.loads(raw)
                        assert (d["p"], d["k"]) == replies[s][q] and d["s"] == s, (q, d)
                        assert "user %s" % frm == d["p"], (frm, d)
                for s in streams:
                    if s not in subs[c]:
                        assert s not in c.msgs, "%s got messages of %s it never joined" % (c.label, s)
            await asyncio.sleep(0.2)
            for c in cs:
                for s in subs[c]:
                    assert len(c.msgs[s]) == 250, "extra deliveries to %s on %s" % (c.label, s)
                c.check_clean()
            await asyncio.gather(*[c.close() for c in cs])
        arun(main(), timeout=240)
    finally:
        srv.stop()
    acc = srv.worker_accepts()
    assert all(a > 0 for a in acc), acc
    tot = srv.stats["total"]
    assert tot["closes"] == tot["accepts"] == 200, tot


# ---- ids at the edges of the range -----------------------------------------------------------

def test_presence_high_user_ids():
    """User ids >= 2^63 are valid (canonical decimal up to 2^64-1): their
    presence join must be reported as a join of that id."""
    async def main():
        s = fresh("hi")
        a = await connect(SRV, uid())
        await a.ok("join", stream=s)
        hi = (1 << 63) + 5
        h = await connect(SRV, hi)
        await h.ok("join", stream=s)
        e = await a.event("presence", stream=s)
        assert e.get("join") == [str(hi)] and "leave" not in e, \
            "join of user %d reported as %r" % (hi, e)
        o = await a.ok("presence", stream=s)
        assert str(hi) in o["users"], o
        await h.close()
        e = await a.event("presence", stream=s)
        assert e.get("leave") == [str(hi)] and "join" not in e, e
        await a.close()
    arun(main())


def test_user_id_max():
    """User 2^64-1 (valid per PROTOCOL.md) after another user of its
    registry shard: the server must keep serving, list it in presence and
    deliver DMs to it."""
    srv = mstest.Server(cores=WORKERS).start()
    try:
        async def main():
            umax = M64
            # Another user in umax's registry shard whose map key (uid + 1)
            # sits in slot 0 of a fresh 8-slot map, where key 0 would probe.
            other = next(u for u in range(1, 10 ** 7)
                         if reg_shard(u) == reg_shard(umax) and fmix64(u + 1) & 7 == 0)
            o = await connect(srv, other, label="other")
            await asyncio.sleep(0.3)
            m = await connect(srv, umax, label="max")
            await asyncio.sleep(0.3)
            s = fresh("mx")
            await m.ok("join", stream=s)
            await o.ok("join", stream=s)
            r = await o.ok("presence", stream=s)
            assert sorted(r["users"]) == sorted([str(other), str(umax)]), r
            r = await dm_when_registered(o, umax, "to max")
            assert r.get("ok") is True, r
            e = await m.event("dm")
            assert e["data"] == "to max", e
            await m.close()
            await o.close()
        arun(main(), timeout=30)
    finally:
        srv.stop()


# ---- authorization (--secret-file) ------------------------------------------------------------

def status_of(srv, path, extra=""):
    req, _ = mstest.upgrade_request(path, extra=extra)
    st, headers, body = mstest.http_exchange(srv.port, req)
    return st


def test_auth_token_sources():
    async def main():
        u = uid()
        tok = mint(u, streams=["clan:1"])
        # ?token=
        c1 = await connect(SRV_AUTH, token=tok, label="query")
        assert c1.ws.subprotocol is None
        # Authorization: Bearer
        c2 = await connect(SRV_AUTH, extra_headers={"Authorization": "Bearer " + tok}, label="bearer")
        # Sec-WebSocket-Protocol: mezon.v1, bearer.<jwt> → the server answers mezon.v1
        c3 = await connect(SRV_AUTH, subprotocols=["mezon.v1", "bearer." + tok], label="subproto")
        assert c3.ws.subprotocol == "mezon.v1", c3.ws.subprotocol
        for c in (c1, c2, c3):
            await c.ok("join", stream="clan:1")
            await c.alive()
        # All three are user u: a DM reaches each.
        await asyncio.sleep(0.2)
        sender = await connect(SRV_AUTH, token=mint(uid()), label="sender")
        o = await dm_when_registered(sender, u, "x")
        assert o["ok"], o
        for c in (c1, c2, c3):
            e = await c.event("dm")
            assert e["data"] == "x"
        for c in (c1, c2, c3, sender):
            c.check_clean()
            await c.close()
    arun(main())


def test_auth_upgrade_rejections():
    u = uid()
    now = int(time.time())
    cases = {
        "missing": ("/ws", ""),
        "dev user param": ("/ws?user=%d" % u, ""),
        "bad signature": ("/ws?token=" + mint(u, secret=b"another-secret-0123456789-abcdefghijklmnop"), ""),
        "tampered": ("/ws?token=" + mint(u)[:-2] + "AA", ""),
        "expired": ("/ws?token=" + mint(u, exp=now - 10), ""),
        "exp now": ("/ws?token=" + mint(u, exp=now - 1), ""),
        "alg none": ("/ws?token=" + mint(u, alg="none"), ""),
        "alg none signed": ("/ws?token=" + mint(u, alg="none")[:-1] + "." + mint(u).split(".")[2], ""),
        "alg HS512": ("/ws?token=" + mint(u, alg="HS512"), ""),
        "garbage": ("/ws?token=abc.def.ghi", ""),
        "bad sub": ("/ws?token=" + mint("007"), ""),
        "bearer bad": ("/ws", "Authorization: Bearer " + mint(u, exp=now - 10) + "\r\n"),
        "subproto bad": ("/ws", "Sec-WebSocket-Protocol: mezon.v1, bearer.x.y.z\r\n"),
        "no exp": ("/ws?token=" + _no_exp_token(u), ""),
    }
    bad = {k: status_of(SRV_AUTH, p, e) for k, (p, e) in cases.items()}
    wrong = {k: v for k, v in bad.items() if v != 401}
    assert not wrong, "expected 401 for all, got %r" % wrong
    # The server still serves.
    with mstest.RawWS(SRV_AUTH.port, "/ws?token=" + mint(u)) as ws:
        ws.send(mstest.frame(1, b'{"op":"ping","id":1}'))
        assert ws.recv_message() == (1, b'{"id":1,"ok":true}')


def test_diag_routes_need_a_token_outside_dev():
    """--diag without --dev: /echo and /room need a valid token exactly like
    /ws (the same three ways to give it), and the start says they are on.
    With --dev (SRV) they stay open."""
    with mstest.Server(args=["--listen", "127.0.0.1:0", "--tls-listen", "off", "--cores", "2",
                             "--diag", "--secret-file", SECRET_FILE]) as srv:
        assert re.search(r"warn.*diagnostic routes on \(--diag\).*valid token", srv.stderr), \
            srv.stderr[-2000:]
        u = uid()
        tok = mint(u)
        for path in ("/echo", "/room"):
            for p, e in ((path, ""), (path + "?user=%d" % u, ""),
                         (path + "?token=" + mint(u, exp_in=-10), ""),
                         (path + "?token=" + mint(u, secret=b"another-secret-0123456789-abcdefghijklmnop"), ""),
                         (path, "Authorization: Bearer x.y.z\r\n"),
                         (path, "Sec-WebSocket-Protocol: mezon.v1, bearer.x.y.z\r\n")):
                assert status_of(srv, p, e) == 401, (p, e)
        mstest.assert_echo(srv.port, path="/echo?token=" + tok)

        async def main():
            a = await websockets.connect(uri(srv, "/echo"), extra_headers={"Authorization": "Bearer " + tok},
                                         open_timeout=10 * SLOW)
            await a.send("hello")
            assert await asyncio.wait_for(a.recv(), 5 * SLOW) == "hello"
            b = await websockets.connect(uri(srv, "/room"), subprotocols=["mezon.v1", "bearer." + tok],
                                         open_timeout=10 * SLOW)
            assert b.subprotocol == "mezon.v1", b.subprotocol
            c = await websockets.connect(uri(srv, "/room", token=tok), open_timeout=10 * SLOW)
            await asyncio.sleep(0.2)  # both in the room
            await c.send("to the room")
            assert await asyncio.wait_for(b.recv(), 5 * SLOW) == "to the room"
            for ws in (a, b, c):
                await ws.close()
        arun(main())
    # --dev: open, and the warning says so.
    assert re.search(r"diagnostic routes on \(--diag\).*open to anyone", SRV.stderr), SRV.stderr[-2000:]
    with mstest.RawWS(SRV.port, "/room"):
        pass
    mstest.assert_echo(SRV.port)


def _no_exp_token(u):
    h = b64u(b'{"alg":"HS256","typ":"JWT"}') + "." + b64u(json.dumps({"sub": str(u)}).encode())
    return h + "." + b64u(hmac.new(SECRET, h.encode(), hashlib.sha256).digest())


def test_auth_streams_claim():
    async def main():
        u = uid()
        c = await connect(SRV_AUTH, token=mint(u, streams=["clan:*", "room:7"]))
        for s in ("clan:1", "clan:abc", "clan:", "room:7", "user:%d" % u):
            await c.ok("join", stream=s)
            await c.ok("publish", stream=s, data=1)
        for s in ("room:8", "room:77", "clan", "clanx:1", "user:%d" % (u + 1), "other"):
            expect_error(await c.req("join", stream=s), 403)
            expect_error(await c.req("publish", stream=s, data=1), 403)
            expect_error(await c.req("presence", stream=s), 403)
        await c.alive()
        # Without a streams claim only user:<sub>.
        d = await connect(SRV_AUTH, token=mint(u + 1))
        await d.ok("join", stream="user:%d" % (u + 1))
        expect_error(await d.req("join", stream="clan:1"), 403)
        # Someone else's user stream: no.
        expect_error(await d.req("join", stream="user:%d" % u), 403)
        # An empty claim: same.
        e = await connect(SRV_AUTH, token=mint(u + 2, streams=[]))
        expect_error(await e.req("join", stream="clan:1"), 403)
        await e.ok("join", stream="user:%d" % (u + 2))
        for x in (c, d, e):
            x.check_clean()
            await x.close()
    arun(main())


def test_auth_expiry_closes_1008():
    async def main():
        u = uid()
        c = await connect(SRV_AUTH, token=mint(u, exp_in=3))
        await c.ok("join", stream="user:%d" % u)
        t0 = time.monotonic()
        await asyncio.wait_for(c.closed.wait(), 8 * SLOW)
        took = time.monotonic() - t0
        assert c.ws.close_code == 1008, (c.ws.close_code, c.ws.close_reason)
        assert "expired" in c.ws.close_reason, c.ws.close_reason
        assert 1.0 < took < 6.0 * SLOW, took
    arun(main())


def test_auth_refresh_keeps_connection():
    async def main():
        u = uid()
        c = await connect(SRV_AUTH, token=mint(u, exp_in=3, streams=["a:1"]))
        await c.ok("join", stream="a:1")
        await asyncio.sleep(1)
        # Another user's token: 403, connection unchanged.
        expect_error(await c.req("auth", token=mint(u + 1, exp_in=60)), 403)
        # Invalid tokens: 401.
        expect_error(await c.req("auth", token=mint(u, exp_in=-5)), 401)
        expect_error(await c.req("auth", token="x.y.z"), 401)
        # A fresh token for the same sub, with a new claim.
        o = await c.ok("auth", token=mint(u, exp_in=60, streams=["b:*"]))
        assert o == {"id": o["id"], "ok": True}, o
        await asyncio.sleep(4.5)
        assert not c.closed.is_set(), "closed at the old exp despite the refresh (%r %r)" % (
            c.ws.close_code, c.ws.close_reason)
        await c.alive()
        # The new claim applies.
        await c.ok("join", stream="b:x")
        expect_error(await c.req("join", stream="a:2"), 403)
        c.check_clean()
        await c.close()
    arun(main(), timeout=30)


def test_auth_op_in_dev_mode():
    async def main():
        c = await connect(SRV, uid())
        expect_error(await c.req("auth", token=mint(1)), 400)
        await c.alive()
        await c.close()
    arun(main())


def test_auth_other_user_cannot_take_over():
    """After a 403 auth for another sub, the connection keeps its identity."""
    async def main():
        u = uid()
        c = await connect(SRV_AUTH, token=mint(u, exp_in=60))
        expect_error(await c.req("auth", token=mint(u + 7, exp_in=600, streams=["x:*"])), 403)
        expect_error(await c.req("join", stream="user:%d" % (u + 7)), 403)
        await c.ok("join", stream="user:%d" % u)
        await c.close()
    arun(main())


def test_auth_narrowed_token_leaves_streams():
    """An auth op whose streams claim no longer allows a joined stream: the
    connection leaves it as a leave would (one "left" event, after the auth
    reply; no more of its messages; the user's membership through this
    connection gone, presence leave at the last one), and the streams still
    allowed keep delivering."""
    async def main():
        u, v = uid(), uid()
        sa, sb = fresh("a"), fresh("b")
        wide = ["a:*", "b:*"]
        c = await connect(SRV_AUTH, token=mint(u, streams=wide), label="narrowed")
        c2 = await connect(SRV_AUTH, token=mint(u, streams=wide), label="second device")
        obs = await connect(SRV_AUTH, token=mint(v, streams=wide), label="observer")
        c.user = c2.user = u
        obs.user = v
        for s in (sa, sb):
            await obs.ok("join", stream=s)
            await c.ok("join", stream=s)
        await c.ok("join", stream="user:%d" % u)
        await c2.ok("join", stream=sb)
        await obs.ok("publish", stream=sa, data="a1")
        await obs.ok("publish", stream=sb, data="b1")
        await c.wait_msgs(sa, 1)
        await c.wait_msgs(sb, 1)

        o = await c.ok("auth", token=mint(u, streams=["a:*"]))
        e = await c.event("left")
        assert e == {"event": "left", "stream": sb, "reason": "token"}, e
        reply_at = next(i for i, x in enumerate(c.seen) if x.get("id") == o["id"])
        left_at = next(i for i, x in enumerate(c.seen) if x.get("event") == "left")
        assert reply_at < left_at, "left event before the auth reply: %r" % c.seen[-3:]

        # b: nothing more for c (c2, same user, still gets it); a: still live.
        await obs.ok("publish", stream=sb, data="b2")
        await obs.ok("publish", stream=sa, data="a2")
        await c.wait_msgs(sa, 2)
        await c2.wait_msgs(sb, 2)
        await obs.wait_msgs(sb, 2)
        await asyncio.sleep(0.3)
        assert [m[2] for m in c.msgs[sb]] == ['"b1"'], c.msgs[sb]
        assert [m[2] for m in c.msgs[sa]] == ['"a1"', '"a2"'], c.msgs[sa]
        # One left event, for b only (a and user:<sub> are still allowed).
        lefts = [x for x in c.seen if x.get("event") == "left"]
        assert len(lefts) == 1, lefts
        # Left as a leave would: not joined any more, and b is not allowed.
        expect_error(await c.req("leave", stream=sb), 409)
        expect_error(await c.req("join", stream=sb), 403)
        await c.ok("publish", stream=sa, data="a3")
        # Presence: u is still in b through c2; gone when c2 leaves too.
        o = await obs.ok("presence", stream=sb)
        assert sorted(o["users"]) == sorted([str(u), str(v)]), o
        obs.drain_events()
        await c2.ok("leave", stream=sb)
        joins, leaves = await presence_until(obs, sb, lambda j, l: l.get(str(u)) == 1)
        assert leaves == {str(u): 1} and not joins, (joins, leaves)
        o = await obs.ok("presence", stream=sb)
        assert o["users"] == [str(v)], o
        o = await obs.ok("presence", stream=sa)
        assert sorted(o["users"]) == sorted([str(u), str(v)]), o
        for x in (c, c2, obs):
            x.check_clean()
            await x.close()
    arun(main())


def test_auth_narrowed_token_leaves_last_connection():
    """The narrowed connection was the user's only one in the stream:
    presence says the user left, and the listing no longer has it."""
    async def main():
        u, v = uid(), uid()
        sb = fresh("b")
        c = await connect(SRV_AUTH, token=mint(u, streams=["a:*", "b:*"]), label="narrowed")
        obs = await connect(SRV_AUTH, token=mint(v, streams=["b:*"]), label="observer")
        obs.user = v
        await obs.ok("join", stream=sb)
        await c.ok("join", stream=sb)
        joins, _ = await presence_until(obs, sb, lambda j, l: j.get(str(u)) == 1)
        joins.pop(str(v), None)  # its own join, if announced to itself
        assert joins == {str(u): 1}, joins
        await c.ok("join", stream=fresh("a"))
        await c.ok("join", stream="user:%d" % u)
        await c.ok("auth", token=mint(u, streams=["a:*"]))
        e = await c.event("left")
        assert e == {"event": "left", "stream": sb, "reason": "token"}, e
        joins, leaves = await presence_until(obs, sb, lambda j, l: l.get(str(u)) == 1)
        assert leaves == {str(u): 1} and not joins, (joins, leaves)
        o = await obs.ok("presence", stream=sb)
        assert o["users"] == [str(v)], o
        # A token that allows every joined stream leaves nothing.
        await c.ok("auth", token=mint(u, streams=["a:*"]))
        await c.alive()
        await asyncio.sleep(0.2)
        assert len([x for x in c.seen if x.get("event") == "left"]) == 1, c.seen
        for x in (c, obs):
            x.check_clean()
            await x.close()
    arun(main())


def raw_call(ws, obj, events, timeout=3.0):
    """Send obj on a RawWS and return the reply carrying its id; whatever
    else arrives meanwhile is appended to events."""
    ws.send(mstest.frame(1, json.dumps(obj).encode()))
    deadline = time.monotonic() + timeout * SLOW
    while True:
        _, p = ws.recv_message(timeout=max(0.05, deadline - time.monotonic()))
        o = json.loads(p)
        if "event" not in o and o.get("id") == obj["id"]:
            return o
        events.append(o)


def test_auth_narrowed_token_refuses_join_in_flight():
    """Joins, then an auth op with a narrower token, in one TCP segment: the
    joins are still on their way to the streams' owners when the token
    changes. The one the new token does not allow is answered 403 and leaves
    no membership; the allowed one succeeds."""
    u, v = uid(), uid()
    sa, sb = fresh("a"), fresh("b")
    c_events, o_events = [], []
    with mstest.RawWS(SRV_AUTH.port, "/ws?token=" + mint(u, streams=["a:*", "b:*"])) as c, \
            mstest.RawWS(SRV_AUTH.port, "/ws?token=" + mint(v, streams=["a:*", "b:*"])) as obs:
        c.send(b"".join(mstest.frame(1, json.dumps(o).encode()) for o in (
            {"op": "join", "stream": sa, "id": 1},
            {"op": "join", "stream": sb, "id": 2},
            {"op": "auth", "token": mint(u, streams=["a:*"]), "id": 3},
            {"op": "ping", "id": 4})))
        replies = {}
        deadline = time.monotonic() + 3 * SLOW
        while len(replies) < 4 and time.monotonic() < deadline:
            _, p = c.recv_message(timeout=max(0.05, deadline - time.monotonic()))
            o = json.loads(p)
            if "event" in o:
                c_events.append(o)
                continue
            assert o["id"] not in replies, "two replies for id %d" % o["id"]
            replies[o["id"]] = o
        assert set(replies) == {1, 2, 3, 4}, replies
        assert replies[3] == {"id": 3, "ok": True}, replies
        assert replies[1].get("ok") is True, replies
        assert replies[2] == {"id": 2, "ok": False, "error": {
            "code": 403, "message": "stream not allowed by token"}}, replies
        # The refused join never completed: no left event for it.
        assert not [e for e in c_events if e["event"] == "left"], c_events
        # No membership remains in b (the undo reaches the owner a hop
        # later), a is joined.
        assert raw_call(obs, {"op": "join", "stream": sa, "id": 1}, o_events)["ok"]
        assert raw_call(obs, {"op": "join", "stream": sb, "id": 2}, o_events)["ok"]
        rid, listed = 10, None
        deadline = time.monotonic() + 3 * SLOW
        while time.monotonic() < deadline:
            rid += 1
            listed = raw_call(obs, {"op": "presence", "stream": sb, "id": rid}, o_events)
            if listed.get("users") == [str(v)]:
                break
            time.sleep(0.05)
        assert listed.get("users") == [str(v)], listed
        o = raw_call(obs, {"op": "presence", "stream": sa, "id": 3}, o_events)
        assert sorted(o["users"]) == sorted([str(u), str(v)]), o
        # Nothing of b reaches c; a does.
        assert raw_call(obs, {"op": "publish", "stream": sb, "data": "b1", "id": 4}, o_events)["ok"]
        assert raw_call(obs, {"op": "publish", "stream": sa, "data": "a1", "id": 5}, o_events)["ok"]
        got = []
        deadline = time.monotonic() + 1.0 * SLOW
        while time.monotonic() < deadline:
            try:
                _, p = c.recv_message(timeout=max(0.05, deadline - time.monotonic()))
            except AssertionError:
                break
            o = json.loads(p)
            if o.get("event") == "message":
                got.append((o["stream"], o["data"]))
        assert got == [(sa, "a1")], got
        assert raw_call(c, {"op": "ping", "id": 5}, c_events) == {"id": 5, "ok": True}


def test_auth_dm_claim():
    """dm claim: false refuses every DM (403, also to users offline, so the
    claim also closes the online probe); a list allows exact ids and
    prefixes (then 200, or 404 when offline) and refuses the rest; the
    claim comes with the token, so an auth op replaces it; an invalid value
    refuses the token (401 at the upgrade, 401 for the auth op)."""
    async def main():
        # The list holds one id (seven) and one prefix (p*): p, p*10+1
        # ("eightyone") and p*10+2 match it; nine, seven*10 and s do not.
        # p is ten times an id of this run, so no other user matches it.
        s, seven, nine, p = uid(), uid(), uid(), uid() * 10
        eightyone = p * 10 + 1
        allowed = [str(seven), "%d*" % p]
        targets = {}
        for t in (seven, eightyone, nine):
            targets[t] = await connect(SRV_AUTH, token=mint(t), label="user %d" % t)
        await asyncio.sleep(0.2)  # their REGISTERs reach the owners
        nobody = await connect(SRV_AUTH, token=mint(s, extra={"dm": False}), label="dm false")
        for t in (seven, eightyone, nine, p * 10 + 2):
            o = await nobody.req("dm", to=str(t), data="x")
            assert o == {"id": o["id"], "ok": False, "error": {
                "code": 403, "message": "dm not allowed by token"}}, o
        await nobody.alive()

        some = await connect(SRV_AUTH, token=mint(s, extra={"dm": allowed}, streams=["a:*"]),
                             label="dm list")
        for t in (seven, eightyone):
            o = await dm_when_registered(some, t, {"n": t})
            assert o == {"id": o["id"], "ok": True}, o
            e = await targets[t].event("dm")
            assert e == {"event": "dm", "from": str(s), "data": {"n": t}}, e
        expect_error(await some.req("dm", to=str(p * 10 + 2), data=1), 404)  # allowed, offline
        expect_error(await some.req("dm", to=str(p), data=1), 404)
        for t in (nine, seven * 10, s):  # outside the list, oneself included
            o = await some.req("dm", to=str(t), data=1)
            assert o.get("error") == {"code": 403, "message": "dm not allowed by token"}, o
        # The streams claim of the same token still applies.
        await some.ok("join", stream=fresh("a"))
        expect_error(await some.req("join", stream=fresh("b")), 403)
        # An auth op replaces the claim: none (anyone), then false.
        await some.ok("auth", token=mint(s, streams=["a:*"]))
        assert (await dm_when_registered(some, nine, "now"))["ok"]
        assert (await targets[nine].event("dm"))["data"] == "now"
        await some.ok("auth", token=mint(s, extra={"dm": False}))
        expect_error(await some.req("dm", to=str(seven), data=1), 403)
        expect_error(await some.req("join", stream=fresh("a")), 403)  # streams claim gone too
        # Invalid values: refused like an invalid streams claim.
        for bad in (True, None, "7", 7, [7], ["07"], ["7", None], ["user:7"], ["7**"], {}):
            tok = mint(s, extra={"dm": bad})
            assert status_of(SRV_AUTH, "/ws?token=" + tok) == 401, bad
            expect_error(await some.req("auth", token=tok), 401)
        # The refused auth ops changed nothing.
        expect_error(await some.req("dm", to=str(seven), data=1), 403)
        for x in [nobody, some] + list(targets.values()):
            x.check_clean()
            await x.close()
    arun(main())


def test_no_secret_no_dev_refuses_to_start():
    p = subprocess.run([mstest.SERVER_BIN, "--listen", "127.0.0.1:0", "--cores", "1"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=10)
    assert p.returncode == 2, (p.returncode, p.stderr[-500:])
    assert b"secret" in p.stderr and b"--dev" in p.stderr, p.stderr[-500:]
    # A secret file that does not exist: also refused.
    p = subprocess.run([mstest.SERVER_BIN, "--listen", "127.0.0.1:0", "--cores", "1",
                        "--secret-file", "/nonexistent/secret"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=10)
    assert p.returncode == 2, (p.returncode, p.stderr[-500:])


if __name__ == "__main__":
    mstest.run(globals(), setup, teardown)
