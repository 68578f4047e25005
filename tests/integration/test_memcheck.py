#!/usr/bin/python3
"""The real server under valgrind memcheck: a short integration run must
leave no leak and no invalid access. One worker, release build (valgrind and
ASan exclude each other, so only the release suite registers this test).

One server runs a short mixed session: /echo of 64 KiB messages over ws and
wss, a resumed TLS session, chat over both (join, publish, DMs to a user
with two devices, presence listing, leave), bad input of each layer (HTTP
garbage, an unmasked frame, a TLS record of garbage, a reset in the middle
of a frame), then SIGTERM with a client still connected (it gets 1001).
The test fails on any memcheck error (invalid read or write, use of an
uninitialised value, bad free) and on any definitely or indirectly lost
block: valgrind's exit status (--error-exitcode) and its log both say so.

valgrind replaces malloc everywhere, mimalloc's too (the test checks that
it saw the allocations). It runs one thread at a time and its wrapper of
io_uring_enter keeps that right while a worker waits, which is why one
worker and long timeouts.

Usage: test_memcheck.py SERVER_BINARY [SOURCE_DIR]
"""
import asyncio
import json
import os
import re
import shutil
import socket
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mstest  # noqa: E402

try:
    import websockets
except ImportError as e:  # not a kernel feature: a broken test environment
    print("python3-websockets is missing (%s): install it" % e)
    sys.exit(1)

T = 60.0  # per socket operation: everything is ~30x slower under valgrind


async def chat_session(srv):
    """Two devices of user 7 (ws and wss) and user 8: join, publish,
    DM, presence listing, leave; every reply and event checked."""
    ws_url = "ws://127.0.0.1:%d/ws?user=" % srv.port
    wss_url = "wss://127.0.0.1:%d/ws?user=" % srv.tls_port
    kw = dict(open_timeout=T, close_timeout=T, ping_interval=None)
    a1 = await websockets.connect(ws_url + "7", **kw)
    a2 = await websockets.connect(wss_url + "7", ssl=mstest.tls_client_context(), **kw)
    b = await websockets.connect(ws_url + "8", **kw)

    async def reply(ws, want_id):
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), T))
            if m.get("id") == want_id:
                assert m.get("ok") is True, m
                return m

    async def event(ws, kind):
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), T))
            if m.get("event") == kind:
                return m

    for i, ws in enumerate((a1, a2, b)):
        await ws.send(json.dumps({"op": "join", "stream": "room:1", "id": 10 + i}))
        await reply(ws, 10 + i)
    await b.send(json.dumps({"op": "publish", "stream": "room:1", "data": {"t": "x" * 3000}, "id": 20}))
    await reply(b, 20)
    for ws in (a1, a2, b):
        m = await event(ws, "message")
        assert m["stream"] == "room:1" and m["from"] == "8" and m["data"] == {"t": "x" * 3000}, m
    await b.send(json.dumps({"op": "dm", "to": "7", "data": [1, 2, 3], "id": 21}))
    await reply(b, 21)
    for ws in (a1, a2):
        m = await event(ws, "dm")
        assert m["from"] == "8" and m["data"] == [1, 2, 3], m
    await a1.send(json.dumps({"op": "presence", "stream": "room:1", "id": 22}))
    m = await reply(a1, 22)
    assert sorted(m["users"]) == ["7", "8"], m
    await a2.send(json.dumps({"op": "leave", "stream": "room:1", "id": 23}))
    await reply(a2, 23)
    await a2.send("{not json")  # an error reply; the socket stays open
    m = json.loads(await asyncio.wait_for(a2.recv(), T))
    assert m.get("error", {}).get("code") == 400, m
    for ws in (a1, a2, b):
        await ws.close()


def test_session_then_sigterm_is_clean():
    log = tempfile.NamedTemporaryFile(prefix="memcheck.", suffix=".log", delete=False)
    log.close()
    os.environ["MS_SERVER_WRAP"] = (
        "valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect "
        "--show-leak-kinds=definite,indirect --error-exitcode=99 --num-callers=30 "
        "--log-file=" + log.name)
    # Timeouts far above what valgrind's slowness needs (TLS handshakes
    # take seconds under it); --drain-timeout bounds the SIGTERM below.
    srv = mstest.Server("--admin-listen", "off", "--handshake-timeout", "300",
                        "--idle-timeout", "600", "--drain-timeout", "60").start()
    try:
        assert srv.workers == 1, srv.workers
        big = os.urandom(65536)
        mstest.assert_echo(srv.port, big, opcode=2, timeout=T)
        # wss: a full handshake, then one resumed from its session.
        ctx = mstest.tls_client_context()
        first = mstest.tls_tcp(srv.tls_port, T, context=ctx)
        with mstest.RawWS(srv.tls_port, connect=lambda p, t: first, timeout=T) as ws:
            ws.send(mstest.frame(2, big))
            assert ws.recv_message() == (2, big)
            session = first.session  # the ticket came before the echo
            ws.send(mstest.frame(8, mstest.close_payload(1000)))
            ws.expect_close(1000)
        again = mstest.tls_tcp(srv.tls_port, T, context=ctx, session=session)
        assert again.session_reused, "the second wss connection was not resumed"
        again.close()
        asyncio.run(chat_session(srv))
        # Bad input, each layer: an HTTP error, a protocol close, a TLS
        # alert or close, an abrupt reset mid-frame. Nothing else is hurt.
        status, _, _ = mstest.http_exchange(srv.port, b"GET /echo HTTP/1.1\r\nHost: x\r\n\x01\x02\r\n\r\n", T)
        assert status == 400, status
        with mstest.RawWS(srv.port, timeout=T) as ws:
            ws.send(mstest.frame(1, b"unmasked", mask=False))
            ws.expect_close(1002)
        with mstest.tcp(srv.tls_port, T) as s:
            s.sendall(b"\x16\x03\x01\x00\x20" + os.urandom(32))
            mstest.recv_until_close(s, T)
        ws = mstest.RawWS(srv.port, timeout=T)
        ws.send(mstest.frame(2, big)[:1000])  # part of a 64 KiB frame, then RST
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ws.close_socket()
        mstest.assert_echo(srv.port, timeout=T)
        # SIGTERM with a client connected: it gets 1001, the server exits.
        # The client pings meanwhile: under valgrind the main thread, which
        # takes the signal, runs only when the worker's io_uring_enter
        # returns (valgrind keeps its one-thread lock across that call), and
        # an idle worker waits for a completion; a ping makes one.
        with mstest.RawWS(srv.port, timeout=T) as ws:
            srv.terminate()
            deadline = time.monotonic() + T
            while True:
                assert time.monotonic() < deadline, "no close 1001 after SIGTERM"
                ws.send(mstest.frame(9, b"wake"))
                try:
                    fin, rsv, op, p = ws.recv_frame(1.0)
                except AssertionError:  # nothing yet
                    continue
                if op == 10:
                    continue
                assert op == 8, "opcode %d after SIGTERM" % op
                assert mstest.close_info(p)[0] == 1001, mstest.close_info(p)
                ws.send(mstest.frame(8, p[:2]))
                break
    finally:
        srv.stop(timeout=300.0, check=False)
    with open(log.name, errors="replace") as f:
        report = f.read()
    assert srv.returncode == 0, "exit status %s (99: memcheck errors or leaks); valgrind log %s:\n%s" % (
        srv.returncode, log.name, report[-6000:])
    srv.check()
    assert "ERROR SUMMARY: 0 errors" in report, report[-6000:]
    m = re.search(r"total heap usage: ([\d,]+) allocs", report)
    assert m and int(m.group(1).replace(",", "")) > 500, (
        "valgrind saw too few allocations (is malloc replaced?):\n" + report[-3000:])
    assert ("definitely lost: 0 bytes" in report or "All heap blocks were freed" in report), report[-6000:]
    assert "indirectly lost: 0 bytes" in report or "All heap blocks were freed" in report, report[-6000:]
    os.unlink(log.name)  # kept when the test fails


if __name__ == "__main__":
    if not shutil.which("valgrind"):
        print("valgrind is missing: tools/ms.sh deps installs it")
        sys.exit(1)
    mstest.run(globals())
