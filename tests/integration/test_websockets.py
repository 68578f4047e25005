#!/usr/bin/python3
"""Interop with Debian's python3-websockets (a client we did not write):
echo of every size class, client-fragmented messages, ping/pong, the close
handshake, many concurrent clients over both workers, idle timeout and
SIGTERM drain.

Must run under /usr/bin/python3 (the distribution's interpreter, which has
python3-websockets). Usage: test_websockets.py SERVER_BINARY [SOURCE_DIR]
"""
import asyncio
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mstest  # noqa: E402

try:
    import websockets
    from websockets.exceptions import ConnectionClosed
except ImportError as e:  # not a kernel feature: a broken test environment
    print("python3-websockets is missing (%s); run with /usr/bin/python3" % e)
    print("0 passed, 1 failed, 0 skipped")
    sys.exit(1)

SRV = None
MAX = 65536


def setup():
    global SRV
    SRV = mstest.Server().start()


def teardown():
    SRV.stop()


def uri(path="/echo", srv=None):
    return "ws://127.0.0.1:%d%s" % ((srv or SRV).port, path)


def connect(path="/echo", srv=None, **kw):
    kw.setdefault("ping_interval", None)
    kw.setdefault("max_size", 1 << 22)
    kw.setdefault("open_timeout", 5)
    kw.setdefault("close_timeout", 5)
    return websockets.connect(uri(path, srv), **kw)


def arun(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def rcvd_code(exc):
    return exc.rcvd.code if exc.rcvd is not None else None


# ---- echo --------------------------------------------------------------------

def test_handshake_no_extensions_negotiated():
    async def main():
        # websockets offers permessage-deflate by default; we speak none.
        async with connect(compression="deflate") as ws:
            assert ws.extensions == [], ws.extensions
            assert ws.subprotocol is None
            assert ws.response_headers["Upgrade"].lower() == "websocket"
            await ws.send("x")
            assert await ws.recv() == "x"
    arun(main())


def test_echo_text_sizes():
    async def main():
        async with connect() as ws:
            for n in (0, 1, 125, 126, 127, 65535, 65536):
                msg = "t" * n
                await ws.send(msg)
                got = await ws.recv()
                assert got == msg, (n, len(got))
            # multi-byte characters, 65534 bytes (2 per char)
            msg = "é" * 32767
            await ws.send(msg)
            assert await ws.recv() == msg
            msg = "😀 κόσμε \U0010FFFF"
            await ws.send(msg)
            assert await ws.recv() == msg
    arun(main())


def test_echo_binary_sizes():
    async def main():
        async with connect() as ws:
            for n in (0, 1, 125, 126, 127, 65535, 65536):
                msg = os.urandom(n)
                await ws.send(msg)
                got = await ws.recv()
                assert isinstance(got, bytes) and got == msg, (n, len(got))
    arun(main())


def test_message_over_max_closes_1009():
    async def main():
        for payload in ("x" * (MAX + 1), os.urandom(MAX + 1)):
            async with connect() as ws:
                await ws.send(payload)
                try:
                    got = await ws.recv()
                    raise AssertionError("expected close 1009, got a %d-byte message" % len(got))
                except ConnectionClosed as e:
                    assert rcvd_code(e) == 1009, e
                await ws.wait_closed()
                assert ws.close_code == 1009, ws.close_code
    arun(main())
    mstest.assert_echo(SRV.port)


def test_client_fragmented_messages():
    async def main():
        async with connect() as ws:
            await ws.send(["frag", "men", "ted ", "κόσμε"])
            assert await ws.recv() == "fragmented κόσμε"
            parts = [os.urandom(1000) for _ in range(60)]
            await ws.send(parts)
            assert await ws.recv() == b"".join(parts)

            async def gen():
                for i in range(50):
                    yield "p%d," % i
            await ws.send(gen())
            assert await ws.recv() == "".join("p%d," % i for i in range(50))
            # a fragmented message of exactly the max size is accepted ...
            await ws.send([b"a" * 40000, b"b" * (MAX - 40000)])
            assert await ws.recv() == b"a" * 40000 + b"b" * (MAX - 40000)
            # ... one byte more is not
            await ws.send([b"a" * 40000, b"b" * (MAX - 40000 + 1)])
            try:
                await ws.recv()
                raise AssertionError("expected close 1009")
            except ConnectionClosed as e:
                assert rcvd_code(e) == 1009, e
    arun(main())


def test_ping_pong():
    async def main():
        async with connect() as ws:
            for payload in (b"", b"hello", os.urandom(125)):
                waiter = await ws.ping(payload)
                await asyncio.wait_for(waiter, 3)
            # several pings in flight, answered in order
            waiters = [await ws.ping(("p%d" % i).encode()) for i in range(10)]
            await asyncio.wait_for(asyncio.gather(*waiters), 3)
            await ws.send("after pings")
            assert await ws.recv() == "after pings"
    arun(main())


def test_close_handshake_codes():
    async def main():
        for code, reason in ((1000, ""), (1000, "bye"), (1001, "going"), (3000, "app"),
                             (4999, "κόσμε")):
            async with connect() as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
                await ws.close(code, reason)
                await ws.wait_closed()
                # The server echoes the client's code.
                assert ws.close_code == code, (code, ws.close_code)
    arun(main())


def test_dev_ws_route_answers_ping_and_errors():
    async def main():
        async with connect("/ws?user=42") as ws:
            await ws.send('{"op":"ping","id":1}')
            got = await asyncio.wait_for(ws.recv(), 3)
            assert got == '{"id":1,"ok":true}', got
            await ws.send('{"op":"nope","id":2}')
            got = await asyncio.wait_for(ws.recv(), 3)
            assert '"id":2' in got and '"code":400' in got, got
        try:
            async with connect("/ws"):
                raise AssertionError("/ws without user accepted in dev mode")
        except websockets.exceptions.InvalidStatusCode as e:
            assert e.status_code == 400, e.status_code
        try:
            async with connect("/nowhere"):
                raise AssertionError("unknown path accepted")
        except websockets.exceptions.InvalidStatusCode as e:
            assert e.status_code == 404, e.status_code
    arun(main())


# ---- many clients, both workers ------------------------------------------------

def test_many_concurrent_clients_both_workers():
    nclients, nmsgs = 200, 10

    async def client(i, start):
        async with connect(srv=srv) as ws:
            await start.wait()
            for j in range(nmsgs):
                msg = ("c%d-m%d-" % (i, j)) * (1 + (i + j) % 40)
                if j % 2:
                    msg = msg.encode()
                await ws.send(msg)
                got = await ws.recv()
                assert got == msg, (i, j)
            return True

    async def main():
        start = asyncio.Event()
        tasks = [asyncio.create_task(client(i, start)) for i in range(nclients)]
        await asyncio.sleep(0.3)
        start.set()
        res = await asyncio.gather(*tasks)
        assert res == [True] * nclients

    with mstest.Server() as srv:
        arun(main(), timeout=60)
    acc = srv.worker_accepts()
    assert all(a > 0 for a in acc), "a worker took no client: %r" % acc
    assert sum(acc) == nclients, acc
    tot = srv.stats["total"]
    assert tot["msgs_in"] == nclients * nmsgs, tot
    assert tot["msgs_out"] == nclients * nmsgs, tot
    assert tot["max_conns"] >= 1


# ---- timers and shutdown ----------------------------------------------------------

def test_idle_timeout_ping_then_close_1001():
    """A client that never answers gets a ping after half the idle timeout,
    then close 1001 half a timeout later. Timers tick once a second and never
    fire early, so with --idle-timeout 2 the ping comes within [1, 2) s and
    the close [1, 2) s after the ping."""
    with mstest.Server("--idle-timeout", "2") as srv:
        with mstest.RawWS(srv.port) as ws:
            t0 = time.monotonic()
            fin, rsv, op, payload = ws.recv_frame(timeout=4)
            t_ping = time.monotonic() - t0
            assert op == 9, "expected a ping, got opcode %d" % op
            assert 0.9 <= t_ping <= 2.3, t_ping
            reason = ws.expect_close(1001, timeout=4, reply=True)
            t_close = time.monotonic() - t0
            assert 1.9 <= t_close <= 4.5, t_close
            assert 0.9 <= t_close - t_ping <= 2.3, (t_ping, t_close)
            assert "idle" in reason, reason
        mstest.assert_echo(srv.port)


def test_idle_timeout_reset_by_messages():
    """A client that never answers pings but sends a message every 0.5 s is
    not idle: it is never closed."""
    with mstest.Server("--idle-timeout", "2") as srv:
        with mstest.RawWS(srv.port) as ws:
            pings = 0
            for i in range(10):   # 5 s = 2.5 idle timeouts
                ws.send(mstest.frame(1, b"tick%d" % i))
                while True:
                    fin, rsv, op, p = ws.recv_frame(timeout=3)
                    assert op != 8, "closed although active: %r" % (mstest.close_info(p),)
                    if op == 9:
                        pings += 1
                        continue
                    assert (op, p) == (1, b"tick%d" % i), (op, p)
                    break
                time.sleep(0.5)
            ws.send(mstest.frame(8, mstest.close_payload(1000)))
            ws.expect_close(1000, allow_before=(9,))


def test_idle_timeout_kept_alive_by_pongs():
    """python-websockets answers the server's pings, so it stays connected."""
    class Capture(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.lines = []

        def emit(self, rec):
            self.lines.append(rec.getMessage())

    cap = Capture()
    log = logging.getLogger("mstest.ws.idle")
    log.setLevel(logging.DEBUG)
    log.addHandler(cap)
    log.propagate = False

    async def main(srv):
        async with connect(srv=srv, logger=log) as ws:
            await asyncio.sleep(5)   # 2.5 idle timeouts without a message
            await ws.send("still here")
            assert await ws.recv() == "still here"
        pings = [ln for ln in cap.lines if ln.startswith("< PING")]
        assert len(pings) >= 2, "expected server pings, log: %r" % cap.lines[-20:]

    with mstest.Server("--idle-timeout", "2") as srv:
        arun(main(srv))


def test_sigterm_sends_1001_to_clients():
    async def main(srv):
        conns = [await websockets.connect(uri("/echo", srv), ping_interval=None, close_timeout=5)
                 for _ in range(20)]
        conns.append(await websockets.connect(uri("/ws?user=7", srv), ping_interval=None,
                                              close_timeout=5))
        for i, ws in enumerate(conns[:20]):
            await ws.send("m%d" % i)
            assert await ws.recv() == "m%d" % i
        t0 = time.monotonic()
        srv.terminate()
        for ws in conns:
            try:
                got = await asyncio.wait_for(ws.recv(), 5)
                raise AssertionError("expected close, got %r" % got)
            except ConnectionClosed as e:
                assert rcvd_code(e) == 1001, e
            await ws.wait_closed()
            assert ws.close_code == 1001
        return time.monotonic() - t0

    with mstest.Server("--drain-timeout", "10") as srv:
        dt = arun(main(srv))
        assert dt < 3, dt
        t0 = time.monotonic()
        srv.stop(timeout=15)
        # every client answered the close, so the drain ends well before
        # --drain-timeout
        assert time.monotonic() - t0 < 5, time.monotonic() - t0
    assert sum(srv.worker_accepts()) == 21


def test_sigterm_with_unresponsive_client_exits_after_drain_timeout():
    with mstest.Server("--drain-timeout", "2") as srv:
        ws = mstest.RawWS(srv.port)   # never answers the close frame
        t0 = time.monotonic()
        srv.terminate()
        fin, rsv, op, p = ws.recv_frame(timeout=5)
        assert op == 8 and mstest.close_info(p)[0] == 1001, (op, p)
        srv.stop(timeout=10)
        dt = time.monotonic() - t0
        # it waited for the close handshake, but no longer than the drain
        # timeout (plus the 1 s timer granularity)
        assert 1.0 <= dt < 4.5, dt
        ws.close_socket()


if __name__ == "__main__":
    mstest.run(globals(), setup=setup, teardown=teardown)
