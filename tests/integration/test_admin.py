#!/usr/bin/python3
"""Operating the server: the admin listener's /healthz and
/metrics (Prometheus text, parsed), the server API (auth, publish with seq
order and "from":"server", DM, disconnect), graceful shutdown under load
(every message acknowledged before SIGTERM reaches every subscriber, then
close 1001; /healthz 503 while draining), and a restart with two
overlapping processes on the same ports that loses no connection attempt
(run in a private network namespace with net.ipv4.tcp_migrate_req=1).

usage: test_admin.py SERVER_BINARY [SOURCE_DIR] [-k SUBSTRING]
"""
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mstest  # noqa: E402

import websockets  # noqa: E402  (Debian's python3-websockets)

SLOW = 3.0 if os.environ.get("MS_SLOW", "0") not in ("", "0") else 1.0
KEY = "test-api-key-0123456789"


def http(port, method, path, body=None, key=None, timeout=5.0):
    """One request on its own connection: (status, headers dict, body bytes)."""
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method, path)
    if key is not None:
        head += "Authorization: Bearer %s\r\n" % key
    if body is not None:
        head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(data)
    return mstest.http_exchange(port, head.encode() + b"\r\n" + data, timeout=timeout * SLOW)


def parse_prometheus(text):
    """Validate the text exposition format line by line; return
    {name: [(labels dict, value)]} and {name: type}."""
    samples, types, helps = {}, {}, set()
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.split("\n"):
        if not line:
            continue
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in helps, "duplicate HELP for %s" % name
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert typ in ("counter", "gauge", "summary", "histogram", "untyped"), line
            assert name not in types, "duplicate TYPE for %s" % name
            types[name] = typ
            continue
        assert not line.startswith("#"), "stray comment: %r" % line
        m = line_re.match(line)
        assert m, "not a sample line: %r" % line
        name, labels = m.group(1), dict(label_re.findall(m.group(3) or ""))
        base = re.sub(r"_(sum|count)$", "", name)
        assert name in types or base in types, "sample before its TYPE: %r" % line
        samples.setdefault(name, []).append((labels, float(m.group(4))))
    assert text.endswith("\n")
    return samples, types


def total(samples, name, **want):
    return sum(v for labels, v in samples.get(name, [])
               if all(labels.get(k) == str(x) for k, x in want.items()))


def arun(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout * SLOW))


async def ws_connect(port, user):
    return await websockets.connect("ws://127.0.0.1:%d/ws?user=%d" % (port, user),
                                    open_timeout=10 * SLOW, close_timeout=5, max_queue=None)


async def request(ws, **req):
    await ws.send(json.dumps(req))
    while True:
        o = json.loads(await ws.recv())
        if o.get("id") == req.get("id") and "event" not in o:
            return o


def key_file():
    f = tempfile.NamedTemporaryFile("w", prefix="ms-apikey-", delete=False)
    f.write(KEY + "\n")
    f.close()
    return f.name


# ---- tests -------------------------------------------------------------------

def test_admin_healthz_and_metrics():
    with mstest.Server("--cores", "2") as srv:
        st, _, body = http(srv.admin_port, "GET", "/healthz")
        assert (st, body) == (200, b"ok\n"), (st, body)

        async def main():
            ws = await ws_connect(srv.port, 7)
            assert (await request(ws, op="ping", id=1))["ok"]
            st, h, body = http(srv.admin_port, "GET", "/metrics")
            assert st == 200 and h.get("content-type", "").startswith("text/plain"), (st, h)
            samples, types = parse_prometheus(body.decode())
            assert total(samples, "mezon_workers") == 2
            assert total(samples, "mezon_connections", transport="plain") == 1, samples["mezon_connections"]
            assert total(samples, "mezon_connections", transport="admin") == 1
            assert total(samples, "mezon_upgrades_total") >= 1
            assert total(samples, "mezon_messages_in_total") >= 1
            for name in ("mezon_accepts_total", "mezon_deliveries_total", "mezon_enters_total",
                         "mezon_sends_total", "mezon_records_total", "mezon_mailbox_pushes_total",
                         "mezon_mailbox_overflows_total", "mezon_mailbox_doorbells_total",
                         "mezon_slow_consumer_closes_total", "mezon_tls_handshakes_total",
                         "mezon_errors_total"):
                assert types.get(name) == "counter", name
                assert len({lab["worker"] for lab, _ in samples[name]}) == 2, name
            # A wss client: handshake counted, and timed.
            wss = await websockets.connect("wss://127.0.0.1:%d/ws?user=8" % srv.tls_port,
                                           ssl=mstest.tls_client_context(), open_timeout=10 * SLOW)
            assert (await request(wss, op="ping", id=2))["ok"]
            s3, _ = parse_prometheus(http(srv.admin_port, "GET", "/metrics")[2].decode())
            assert total(s3, "mezon_tls_handshakes_total") >= 1
            assert total(s3, "mezon_connections", transport="tls") == 1
            assert total(s3, "mezon_latency_seconds_count", hist="tls_handshake") >= 1
            assert total(s3, "mezon_latency_seconds_count", hist="op_ping") >= 2
            await wss.close()
            await ws.close()
            # The close is counted once the slot is freed.
            deadline = time.monotonic() + 5 * SLOW
            while True:
                s2, _ = parse_prometheus(http(srv.admin_port, "GET", "/metrics")[2].decode())
                if total(s2, "mezon_connections", transport="plain") + total(
                        s2, "mezon_connections", transport="tls") == 0:
                    break
                assert time.monotonic() < deadline, "connection gauge did not drop"
                await asyncio.sleep(0.05)
        arun(main())
        # Wrong method, unknown path: clear answers.
        assert http(srv.admin_port, "POST", "/metrics", body={})[0] == 405
        assert http(srv.admin_port, "GET", "/nope")[0] == 404
        # The public listener does not serve metrics.
        assert http(srv.port, "GET", "/metrics")[0] == 404


def test_api_disabled_without_key_file():
    with mstest.Server("--cores", "2") as srv:
        st, _, body = http(srv.admin_port, "POST", "/api/publish",
                           body={"stream": "a", "data": 1}, key=KEY)
        assert st == 403 and b"api-key-file" in body, (st, body)


def test_api_auth_and_bad_requests():
    kf = key_file()
    try:
        with mstest.Server("--cores", "2", "--api-key-file", kf) as srv:
            p = srv.admin_port
            st, h, _ = http(p, "POST", "/api/publish", body={"stream": "a", "data": 1})
            assert st == 401 and h.get("www-authenticate") == "Bearer", (st, h)
            assert http(p, "POST", "/api/publish", body={"stream": "a", "data": 1}, key=KEY + "x")[0] == 401
            assert http(p, "POST", "/api/publish", body={"stream": "a", "data": 1}, key=KEY[:-1])[0] == 401
            assert http(p, "GET", "/api/publish", key=KEY)[0] == 405
            assert http(p, "POST", "/api/publish", body=b"{nope", key=KEY)[0] == 400
            assert http(p, "POST", "/api/publish", body={"stream": "bad name!", "data": 1}, key=KEY)[0] == 400
            assert http(p, "POST", "/api/publish", body={"stream": "a"}, key=KEY)[0] == 400
            assert http(p, "POST", "/api/publish", body=b'{"stream":"a","data":}', key=KEY)[0] == 400
            assert http(p, "POST", "/api/dm", body={"to": "012", "data": 1}, key=KEY)[0] == 400
            assert http(p, "POST", "/api/frobnicate", body={}, key=KEY)[0] == 404
            big = {"stream": "a", "data": "x" * (70 * 1024)}
            assert http(p, "POST", "/api/publish", body=big, key=KEY)[0] == 413
            st, _, body = http(p, "POST", "/api/dm", body={"to": "424242", "data": 1}, key=KEY)
            assert st == 404 and json.loads(body)["error"]["code"] == 404, (st, body)
    finally:
        os.unlink(kf)


def test_api_json_read_like_ws():
    """The API body is read as any JSON parser reads it: escapes in keys and
    strings decoded, a key given twice (decoded) refused, so the server and
    whoever checked the body before it cannot disagree on its meaning."""
    kf = key_file()
    try:
        with mstest.Server("--cores", "2", "--api-key-file", kf) as srv:
            p = srv.admin_port

            def api(path, raw):
                return http(p, "POST", path, body=raw.encode(), key=KEY)

            async def main():
                c1, c2 = await ws_connect(srv.port, 201), await ws_connect(srv.port, 202)
                assert (await request(c1, op="join", stream="clan:1", id=1))["ok"]
                assert (await request(c2, op="join", stream="clan:2", id=1))["ok"]
                for raw in ('{"stream":"clan:1","str\\u0065am":"clan:2","data":1}',
                            '{"str\\u0065am":"clan:2","stream":"clan:1","data":1}',
                            '{"stream":"clan:1","data":1,"d\\u0061ta":2}',
                            '{"x":1,"\\u0078":2,"stream":"clan:1","data":1}'):
                    st, _, body = api("/api/publish", raw)
                    assert st == 400 and json.loads(body)["error"]["message"] == "duplicate key", \
                        (raw, st, body)
                st, _, body = api("/api/publish", '{"stream":"clan:1","stream":"clan:1","data":1}')
                assert st == 400, (st, body)
                for raw in ('{"stream":["clan:1"],"data":1}', '{"stream":"clan\\u0020:1","data":1}',
                            '{"stream":"' + "a" * 129 + '","data":1}'):
                    assert api("/api/publish", raw)[0] == 400, raw
                many = "{" + "".join('"k%d":0,' % i for i in range(100)) + '"stream":"clan:1","data":1}'
                assert api("/api/publish", many)[0] == 400
                # An escaped key or value means what it decodes to.
                st, _, body = api("/api/publish", '{"str\\u0065am":"clan:2","data":{"n":1}}')
                assert st == 200, (st, body)
                st, _, body = api("/api/publish", '{"stream":"clan\\u003a2","data":{"n":2}}')
                assert st == 200, (st, body)
                async def event(ws):
                    while True:
                        o = json.loads(await asyncio.wait_for(ws.recv(), 5 * SLOW))
                        if o.get("event") != "presence":
                            return o
                for n in (1, 2):
                    o = await event(c2)
                    assert o["event"] == "message" and o["stream"] == "clan:2" and o["data"] == {"n": n}, o
                st, _, body = api("/api/dm", '{"t\\u006f":"2\\u00302","data":3}')
                assert st == 200 and json.loads(body) == {"delivered": 1}, (st, body)
                o = await event(c2)
                assert o == {"event": "dm", "from": "server", "data": 3}, o
                # Nothing reached clan:1: the ping's answer is the next
                # thing it gets.
                await c1.send(json.dumps({"op": "ping", "id": 2}))
                o = await event(c1)
                assert o == {"id": 2, "ok": True}, o
                await c1.close()
                await c2.close()
            arun(main())
    finally:
        os.unlink(kf)


def test_auth_failures_logged_and_counted_by_reason():
    """Each failed authentication (upgrade 401, auth op, server API key) is
    counted by reason on /metrics and logged at info with its reason, but
    never the token or the query string."""
    secret = b"auth-metrics-secret-0123456789abcdef"
    kf = key_file()
    try:
        with mstest.Server(args=["--listen", "127.0.0.1:0", "--tls-listen", "off", "--cores", "2",
                                 "--secret", secret.decode(), "--api-key-file", kf]) as srv:
            def upgrade(path, extra=""):
                req, _ = mstest.upgrade_request(path, extra=extra)
                return mstest.http_exchange(srv.port, req)[0]

            expired = mstest.jwt(secret, 5, exp_in=-10)
            forged = mstest.jwt(b"not-the-secret-0123456789abcdef-xyz", 5)
            assert upgrade("/ws") == 401                                         # missing
            assert upgrade("/ws?token=" + expired + "&x=secretquery") == 401    # expired
            assert upgrade("/ws", "Authorization: Bearer " + expired + "\r\n") == 401
            assert upgrade("/ws?token=" + forged) == 401                         # bad_signature
            assert upgrade("/ws?token=abc.def.ghi") == 401                       # malformed
            assert http(srv.admin_port, "POST", "/api/publish", body={"stream": "a", "data": 1},
                        key=KEY + "x")[0] == 401                                 # api_key

            async def main():
                ws = await websockets.connect("ws://127.0.0.1:%d/ws?token=%s"
                                              % (srv.port, mstest.jwt(secret, 5)), open_timeout=10 * SLOW)
                r = await request(ws, op="auth", token=mstest.jwt(secret, 6), id=1)
                assert r["error"]["code"] == 403, r                             # wrong_user
                r = await request(ws, op="auth", token=forged, id=2)
                assert r["error"]["code"] == 401, r                             # bad_signature
                await ws.close()
            arun(main())
            s, types = parse_prometheus(http(srv.admin_port, "GET", "/metrics")[2].decode())
            assert types.get("mezon_auth_failures_total") == "counter"
            got = {r: total(s, "mezon_auth_failures_total", reason=r)
                   for r in ("missing", "expired", "bad_signature", "malformed", "wrong_user",
                             "api_key", "bad_alg", "bad_sub", "bad_claim", "other")}
            assert got == {"missing": 1, "expired": 2, "bad_signature": 2, "malformed": 1,
                           "wrong_user": 1, "api_key": 1, "bad_alg": 0, "bad_sub": 0,
                           "bad_claim": 0, "other": 0}, got
            # Every reason on every worker, zeros included.
            assert len(s["mezon_auth_failures_total"]) == 10 * 2, s["mezon_auth_failures_total"]
            assert total(s, "mezon_errors_total", kind="auth") == 8
            log = srv.stderr
        lines = [ln for ln in log.splitlines() if "authentication failed" in ln]
        assert len(lines) == 8, lines
        for reason, where in (("missing", "upgrade /ws"), ("expired", "upgrade /ws"),
                              ("malformed", "upgrade /ws"), ("api_key", "server API"),
                              ("wrong_user", "auth op of user 5"), ("bad_signature", "auth op of user 5")):
            # The peer's address follows where the worker reads it (the
            # per-address handshake limit: every public connection).
            assert any(" info " in ln and re.search(r": %s at %s( from [0-9a-f.:]+)?," %
                                                    (reason, where), ln)
                       for ln in lines), (reason, lines)
        for secret_text in (expired, expired.split(".")[2], forged.split(".")[2], "secretquery",
                            "abc.def", KEY):
            assert secret_text not in log, secret_text
        # With the peer's address known (read for --max-conns-per-ip), the
        # line names it.
        with mstest.Server(args=["--listen", "127.0.0.1:0", "--tls-listen", "off", "--cores", "1",
                                 "--secret", secret.decode(), "--max-conns-per-ip", "100"]) as srv:
            req, _ = mstest.upgrade_request("/ws")
            assert mstest.http_exchange(srv.port, req)[0] == 401
            log = srv.stderr
        assert "authentication failed: missing at upgrade /ws from 127.0.0.1, conn" in log, log[-2000:]
    finally:
        os.unlink(kf)


def test_auth_failure_log_is_budgeted():
    """A client failing auth ops back to back is counted every time but
    logged within the per-worker budget (100 at once, 20/s); the next line
    says how many were not logged."""
    secret = b"auth-budget-secret-0123456789abcdef"
    with mstest.Server(args=["--listen", "127.0.0.1:0", "--tls-listen", "off", "--cores", "1",
                             "--secret", secret.decode()]) as srv:
        async def main():
            ws = await websockets.connect("ws://127.0.0.1:%d/ws?token=%s"
                                          % (srv.port, mstest.jwt(secret, 5)), open_timeout=10 * SLOW)
            for i in range(300):
                await ws.send(json.dumps({"op": "auth", "token": "x.y.z", "id": i}))
            for i in range(300):
                assert json.loads(await asyncio.wait_for(ws.recv(), 5 * SLOW))["error"]["code"] == 401
            await asyncio.sleep(1.0)
            assert (await request(ws, op="auth", token="x.y.z", id=301))["error"]["code"] == 401
            await ws.close()
        arun(main())
        s, _ = parse_prometheus(http(srv.admin_port, "GET", "/metrics")[2].decode())
        assert total(s, "mezon_auth_failures_total", reason="malformed") == 301
        log = srv.stderr
    lines = [ln for ln in log.splitlines() if "authentication failed" in ln]
    assert 100 <= len(lines) < 150, len(lines)
    assert re.search(r"authentication failed: malformed at auth op of user 5( from [0-9a-f.:]+)?, conn \d+ "
                     r"\(and \d+ earlier not logged\)", lines[-1]), lines[-1]


def test_api_publish_dm_disconnect():
    kf = key_file()
    try:
        with mstest.Server("--cores", "2", "--api-key-file", kf) as srv:
            async def main():
                # Subscribers on both workers (the kernel spreads them).
                subs = [await ws_connect(srv.port, 101 + i) for i in range(6)]
                pubc = await ws_connect(srv.port, 100)  # not subscribed: replies only
                for i, ws in enumerate(subs):
                    r = await request(ws, op="join", stream="news", id=1)
                    assert r["ok"] and r["seq"] == 0, r
                # Interleave client and API publishes: one seq order for all.
                seqs = []
                for k in range(10):
                    if k % 2:
                        st, _, body = http(srv.admin_port, "POST", "/api/publish",
                                           body={"stream": "news", "data": {"k": k}}, key=KEY)
                        assert st == 200, (st, body)
                        seqs.append(json.loads(body)["seq"])
                    else:
                        r = await request(pubc, op="publish", stream="news", data={"k": k}, id=10 + k)
                        seqs.append(r["seq"])
                assert seqs == list(range(1, 11)), seqs
                for ws in subs:
                    got = []
                    while len(got) < 10:
                        try:
                            o = json.loads(await asyncio.wait_for(ws.recv(), 5 * SLOW))
                        except asyncio.TimeoutError:
                            raise AssertionError("only %d of 10 messages: %r" % (len(got), got))
                        if o.get("event") == "message":
                            got.append(o)
                    assert [o["seq"] for o in got] == list(range(1, 11)), got
                    assert [o["data"]["k"] for o in got] == list(range(10))
                    assert all(o["from"] == ("server" if o["data"]["k"] % 2 else "100") for o in got), got
                # DM from the server to a user with two devices.
                d2 = await ws_connect(srv.port, 103)
                await request(d2, op="ping", id=1)  # registered by now (one hop)
                await asyncio.sleep(0.2)
                st, _, body = http(srv.admin_port, "POST", "/api/dm",
                                   body={"to": "103", "data": [1, "two"]}, key=KEY)
                assert st == 200 and json.loads(body) == {"delivered": 2}, (st, body)
                for ws in (subs[2], d2):
                    while True:
                        o = json.loads(await asyncio.wait_for(ws.recv(), 5 * SLOW))
                        if o.get("event") == "dm":
                            assert o == {"event": "dm", "from": "server", "data": [1, "two"]}, o
                            break
                # Disconnect both devices of user 103: close 1008; others stay.
                st, _, body = http(srv.admin_port, "POST", "/api/disconnect",
                                   body={"user": "103"}, key=KEY)
                assert st == 200 and json.loads(body) == {"disconnected": 2}, (st, body)
                for ws in (subs[2], d2):
                    try:
                        while True:
                            await asyncio.wait_for(ws.recv(), 5 * SLOW)
                    except websockets.ConnectionClosed:
                        pass
                    assert ws.close_code == 1008, (ws.close_code, ws.close_reason)
                assert (await request(subs[3], op="ping", id=5))["ok"]
                st, _, _ = http(srv.admin_port, "POST", "/api/disconnect",
                                body={"user": "103"}, key=KEY)
                assert st in (200, 404)  # unregistration is one hop behind
                for ws in subs + [pubc]:
                    await ws.close()
            arun(main())
    finally:
        os.unlink(kf)


def test_sigterm_under_load_delivers_acked_then_1001():
    """Publishers keep publishing on four workers; at some point SIGTERM.
    Every message whose ack the publisher had received before the signal
    was sent reaches every subscriber, in seq order, before close 1001;
    /healthz on the admin listener answers 503 while draining."""
    srv = mstest.Server("--cores", "4")
    srv.start()
    try:
        async def main():
            subs = [await ws_connect(srv.port, 1000 + i) for i in range(16)]
            for ws in subs:
                assert (await request(ws, op="join", stream="load", id=1))["ok"]
            pubs = subs[:4]
            acked = set()
            stop = asyncio.Event()
            sent_at_signal = {}

            async def publisher(ws, base):
                k = 0
                while not stop.is_set():
                    k += 1
                    await ws.send(json.dumps({"op": "publish", "stream": "load",
                                              "data": base + k, "id": base + k}))
                    if k % 8 == 0:
                        await asyncio.sleep(0.002)
            # Replies and events arrive on the same socket: one reader each.
            received = {id(ws): [] for ws in subs}
            codes = {}

            async def reader(ws):
                try:
                    async for m in ws:
                        o = json.loads(m)
                        if o.get("event") == "message":
                            received[id(ws)].append((o["seq"], o["data"]))
                        elif o.get("ok") is True and "seq" in o:
                            acked.add(o["id"])
                except websockets.ConnectionClosed:
                    pass
                codes[id(ws)] = (ws.close_code, ws.close_reason)

            readers = [asyncio.ensure_future(reader(ws)) for ws in subs]
            tasks = [asyncio.ensure_future(publisher(ws, 10 ** 6 * (i + 1))) for i, ws in enumerate(pubs)]
            await asyncio.sleep(1.0)
            sent_at_signal["acked"] = set(acked)
            srv.terminate()
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.wait_for(asyncio.gather(*readers), 20 * SLOW)
            must = sent_at_signal["acked"]
            assert len(must) > 100, "too few acks before the signal: %d" % len(must)
            for ws in subs:
                assert codes[id(ws)] == (1001, "server shutting down"), codes[id(ws)]
                got = received[id(ws)]
                seqs = [s for s, _ in got]
                assert seqs == list(range(1, len(seqs) + 1)), "gap or reorder: %r" % seqs[:20]
                missing = must - {d for _, d in got}
                assert not missing, "%d acked messages not delivered, e.g. %r" % (
                    len(missing), sorted(missing)[:5])
        arun(main())
    finally:
        srv.stop()


def test_healthz_503_while_draining():
    """A client that never answers our close frame keeps the drain going
    (up to the close timeout): meanwhile the admin /healthz says 503 and
    /metrics says draining."""
    srv = mstest.Server("--cores", "2", "--drain-timeout", "20")
    srv.start()
    try:
        s = mstest.tcp(srv.port)
        s.sendall(mstest.upgrade_request("/ws?user=5")[0])
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101"), head
        srv.terminate()
        deadline = time.monotonic() + 5 * SLOW
        while True:
            st, _, body = http(srv.admin_port, "GET", "/healthz")
            if st == 503:
                break
            assert time.monotonic() < deadline, "healthz never said 503 (%d %r)" % (st, body)
            time.sleep(0.02)
        samples, _ = parse_prometheus(http(srv.admin_port, "GET", "/metrics")[2].decode())
        assert total(samples, "mezon_draining") == 1
        # The stalled client got close 1001; answering it ends the drain.
        data = b""
        while len(data) < 4:
            data += s.recv(4096)
        assert data[0] == 0x88, data
        s.sendall(mstest.frame(8, mstest.close_payload(1001)))
        s.close()
    finally:
        srv.stop()


def parse_hgrm(path):
    """HdrHistogram percentile-distribution text: rows (value, percentile,
    total count) and the footer's total count."""
    rows, total_count = [], None
    with open(path) as f:
        lines = f.read().split("\n")
    assert lines[0].split() == ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"], lines[0]
    for ln in lines[1:]:
        if not ln.strip():
            continue
        if ln.startswith("#["):
            m = re.search(r"Total count\s*=\s*(\d+)", ln)
            if m:
                total_count = int(m.group(1))
            continue
        parts = ln.split()
        assert len(parts) in (3, 4), ln
        rows.append((float(parts[0]), float(parts[1]), int(parts[2])))
    assert total_count is not None, "no footer in %s" % path
    if rows:
        assert [r[1] for r in rows] == sorted(r[1] for r in rows), "percentiles not increasing"
        assert [r[0] for r in rows] == sorted(r[0] for r in rows), "values not increasing"
        assert rows[-1][2] == total_count and rows[-1][1] == 1.0, (rows[-1], total_count)
    return rows, total_count


def test_sigusr1_dumps_histograms_while_traffic_flows():
    d = tempfile.mkdtemp(prefix="ms-hist-")
    srv = mstest.Server("--cores", "2", "--hist-dir", d)
    srv.start()
    try:
        async def main():
            subs = [await ws_connect(srv.port, 500 + i) for i in range(8)]
            for ws in subs:
                assert (await request(ws, op="join", stream="h", id=1))["ok"]
            stop = asyncio.Event()

            async def publish():
                k = 0
                while not stop.is_set():
                    k += 1
                    await request(subs[0], op="publish", stream="h", data=k, id=k + 10)

            async def drain(ws):
                try:
                    while True:
                        await ws.recv()
                except (websockets.ConnectionClosed, asyncio.CancelledError):
                    pass
            readers = [asyncio.ensure_future(drain(ws)) for ws in subs[1:]]
            pub = asyncio.ensure_future(publish())
            await asyncio.sleep(0.5)
            srv.proc.send_signal(signal.SIGUSR1)  # while traffic flows
            deadline = time.monotonic() + 10 * SLOW
            names = ["iteration", "hop", "publish_to_flush", "op_publish", "op_join"]
            while True:
                files = {n: [f for f in os.listdir(d) if f.endswith("-%s.hgrm" % n)] for n in names}
                if all(files.values()):
                    break
                assert time.monotonic() < deadline, "no dump files: %r" % os.listdir(d)
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # the files of one dump are written together
            for n in names:
                rows, count = parse_hgrm(os.path.join(d, files[n][0]))
                assert count > 0 and rows, (n, count)
            # The same figures on /metrics, as summaries.
            samples, types = parse_prometheus(http(srv.admin_port, "GET", "/metrics")[2].decode())
            assert types["mezon_latency_seconds"] == "summary"
            assert total(samples, "mezon_latency_seconds_count", hist="publish_to_flush") > 0
            q = [v for lab, v in samples["mezon_latency_seconds"]
                 if lab.get("hist") == "publish_to_flush" and lab.get("quantile") == "0.99"]
            assert len(q) == 1 and 0 < q[0] < 10, q
            stop.set()
            await pub
            for ws in subs:
                await ws.close()
            for r in readers:
                r.cancel()
        arun(main())
    finally:
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)
    err = srv.stderr
    assert re.search(r"histogram \(dump\) publish_to_flush: n=[1-9]", err), err[-2000:]
    assert re.search(r"histogram \(exit\) publish_to_flush: n=[1-9]", err), err[-2000:]



def test_startup_refusals():
    """An admin listener sharing a public port (SO_REUSEPORT would split
    connections between them) and a --hist-dir that does not exist are
    refused at start: exit 2, one line naming the flag."""
    for args, flag in ((["--listen", "127.0.0.1:29999", "--admin-listen", "127.0.0.1:29999"], "--admin-listen"),
                       (["--tls-listen", "0.0.0.0:29998", "--admin-listen", "127.0.0.1:29998"], "--admin-listen"),
                       (["--hist-dir", "/nonexistent/hist"], "--hist-dir")):
        p = subprocess.run([mstest.SERVER_BIN, "--dev"] + args, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=20 * SLOW)
        err = [ln for ln in p.stderr.decode().splitlines() if ln.startswith("mezon-sock:")]
        assert p.returncode == 2 and len(err) == 1 and flag in err[0], (p.returncode, p.stderr)


def test_admin_answers_half_closed_full_and_proxy():
    """The admin listener answers a client that half-closes after its
    request (immediate and cross-core answers alike), answers while the
    worker is full, and is not subject to --proxy-protocol."""
    with mstest.Server("--cores", "1", "--max-conns", "1", "--proxy-protocol") as srv:
        for path, want in (("/healthz", b"ok\n"), ("/metrics", b"mezon_workers 1")):
            s = mstest.tcp(srv.admin_port)
            s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
            s.shutdown(socket.SHUT_WR)
            st, _, body = mstest.parse_http_response(mstest.recv_until_close(s, 5 * SLOW))
            s.close()
            assert st == 200 and want in body, (path, st, body[:100])
        # Fill the worker's one slot with a public connection (PROXY v1 header
        # first, as --proxy-protocol wants), then ask the admin listener.
        # (The admin connections above may still hold the slot while they
        # close: retry the upgrade until the slot is free.)
        deadline = time.monotonic() + 10 * SLOW
        while True:
            pub = mstest.tcp(srv.port)
            pub.sendall(b"PROXY TCP4 10.0.0.1 10.0.0.2 1234 80\r\n" + mstest.upgrade_request("/ws?user=9")[0])
            head = b""
            while b"\r\n\r\n" not in head:
                head += pub.recv(4096)
            if head.startswith(b"HTTP/1.1 101"):
                break
            pub.close()
            assert head.startswith(b"HTTP/1.1 503") and time.monotonic() < deadline, head
            time.sleep(0.05)
        st, _, body = http(srv.admin_port, "GET", "/healthz")
        assert (st, body) == (200, b"ok\n"), (st, body)
        samples, _ = parse_prometheus(http(srv.admin_port, "GET", "/metrics")[2].decode())
        assert total(samples, "mezon_connections", transport="plain") == 1
        pub.close()


def test_concurrent_scrapes_share_one_round():
    with mstest.Server("--cores", "2") as srv:
        socks = []
        for _ in range(20):
            s = mstest.tcp(srv.admin_port)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        for s in socks:
            st, _, body = mstest.parse_http_response(mstest.recv_until_close(s, 5 * SLOW))
            assert st == 200 and body.endswith(b"\n") and b"mezon_workers 2" in body
            s.close()

# ---- restart with overlapping processes -------------------------------------

def _restart_inner():
    """Inside a private netns with tcp_migrate_req=1: server A on fixed
    ports, a client thread opening connections back to back; server B
    starts on the same ports, A gets SIGTERM and drains. Every connection
    attempt must get an answer (101, or a 503 with Retry-After from the
    process that is draining) - none refused, reset or timed out."""
    port, admin = 18080, 19090
    args = ["--dev", "--cores", "2", "--listen", "127.0.0.1:%d" % port, "--tls-listen", "off",
            "--admin-listen", "127.0.0.1:%d" % admin]
    a = mstest.Server(args=args)
    a.start()
    results = {"ok": 0, "503": 0, "errors": []}
    done = threading.Event()

    def client():
        n = 0
        while not done.is_set():
            n += 1
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
                s.sendall(mstest.upgrade_request("/ws?user=%d" % n)[0])
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = s.recv(4096)
                    if not chunk:
                        raise ConnectionError("closed before an answer")
                    head += chunk
                if head.startswith(b"HTTP/1.1 101"):
                    results["ok"] += 1
                    s.sendall(mstest.frame(8, mstest.close_payload(1000)))
                elif head.startswith(b"HTTP/1.1 503") and b"Retry-After" in head:
                    results["503"] += 1
                else:
                    results["errors"].append(head[:40])
                s.close()
            except OSError as e:
                results["errors"].append(repr(e))
    t = threading.Thread(target=client, daemon=True)
    t.start()
    b = None
    try:
        time.sleep(0.5)
        b = mstest.Server(args=args)
        b.start()
        time.sleep(0.3)
        before = results["ok"]
        a.stop()
        time.sleep(0.7)
        done.set()
        t.join(10)
        assert results["ok"] > before, "no connection reached the new process"
        assert not results["errors"], "lost connection attempts: %r (ok %d, 503 %d)" % (
            results["errors"][:5], results["ok"], results["503"])
        print("restart: %d upgrades, %d answered 503 by the draining process, 0 lost"
              % (results["ok"], results["503"]))
    finally:
        done.set()
        if b:
            b.stop()


def test_restart_overlapping_processes_loses_nothing():
    if os.environ.get("MS_ADMIN_NETNS"):
        _restart_inner()
        return
    if not shutil.which("unshare"):
        raise AssertionError("unshare (util-linux) is required")
    cmd = ["unshare", "-n", "sh", "-c",
           'ip link set lo up && sysctl -qw net.ipv4.tcp_migrate_req=1 && exec "$@"', "sh",
           sys.executable, os.path.abspath(__file__), mstest.SERVER_BIN]
    if mstest.SOURCE_DIR:
        cmd.append(mstest.SOURCE_DIR)
    cmd += ["-k", "test_restart_overlapping"]
    env = dict(os.environ, MS_ADMIN_NETNS="1")
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120 * SLOW)
    out = p.stdout.decode("utf-8", "replace")
    print(out.strip())
    assert p.returncode == 0 and "ok   test_restart" in out, out


if __name__ == "__main__":
    mstest.run(globals())
