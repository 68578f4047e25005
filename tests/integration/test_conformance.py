#!/usr/bin/python3
"""RFC 6455 conformance of the /echo route over raw sockets, and the HTTP
upgrade's error answers. One server (2 workers) serves every case that needs
no special flag; after each error case a fresh connection must still get its
echo. The server must stop cleanly at the end (teardown), with both workers
having accepted connections.

Usage: test_conformance.py SERVER_BINARY [SOURCE_DIR] [-k SUBSTRING]
"""
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mstest  # noqa: E402
from mstest import RawWS, frame, close_payload, assert_echo, http_exchange, upgrade_request  # noqa: E402

SRV = None
TEXT, BINARY, CLOSE, PING, PONG, CONT = 1, 2, 8, 9, 10, 0
MAX = 65536


def setup():
    global SRV
    SRV = mstest.Server().start()


def teardown():
    SRV.stop()
    acc = SRV.worker_accepts()
    assert len(acc) == 2, acc
    if "-k" not in sys.argv:  # the whole suite ran: both workers served it
        assert all(a > 0 for a in acc), "a worker took no connection: accepts=%r" % acc
        assert sum(acc) >= 100, acc


def port():
    assert SRV.alive(), "server died; stderr:\n" + SRV.stderr[-3000:]
    return SRV.port


def fails_with(code, data, *, bytewise=False, allow_before=(), then=None):
    """Send data on a fresh /echo connection; expect close `code`, then TCP
    close; then a fresh echo must work."""
    with RawWS(port()) as ws:
        if bytewise:
            ws.send_bytewise(data)
        else:
            ws.send(data)
        if then:
            then(ws)
        ws.expect_close(code, allow_before=allow_before)
    assert_echo(port())


def echo_roundtrip(ws, op, payload):
    ws.send(frame(op, payload))
    got = ws.recv_message()
    assert got == (op, payload), "echo mismatch for %d bytes: got op %d, %d bytes" % (
        len(payload), got[0], len(got[1]))


# ---- handshake --------------------------------------------------------------

def test_handshake_rfc_example_key():
    req, _ = upgrade_request("/echo", key="dGhlIHNhbXBsZSBub25jZQ==")
    with mstest.tcp(port()) as s:
        s.sendall(req)
        data = b""
        while b"\r\n\r\n" not in data:
            d = s.recv(4096)
            assert d, data
            data += d
    st, h, _ = mstest.parse_http_response(data)
    assert st == 101, data
    assert h["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", h


def test_handshake_header_case_and_connection_list():
    key = mstest.ws_key()
    req = ("GET /echo HTTP/1.1\r\nhost: x\r\nUPGRADE: WebSocket\r\n"
           "connection: keep-alive, Upgrade\r\nsec-websocket-key: %s\r\n"
           "SEC-WEBSOCKET-VERSION: 13\r\n\r\n" % key).encode()
    with mstest.tcp(port()) as s:
        s.sendall(req + frame(TEXT, b"hi"))
        data = b""
        while not data.endswith(b"hi"):
            d = s.recv(4096)
            assert d, data
            data += d
    st, h, rest = mstest.parse_http_response(data)
    assert st == 101, data
    assert h["sec-websocket-accept"] == mstest.accept_of(key)
    assert rest == b"\x81\x02hi", rest


def test_frames_pipelined_with_handshake():
    """Frames in the same TCP write as the upgrade request are handled."""
    req, key = upgrade_request("/echo")
    msgs = [frame(TEXT, b"a" * i) for i in (0, 1, 200)] + [frame(BINARY, b"\x00\xff" * 30000)]
    with mstest.tcp(port()) as s:
        s.sendall(req + b"".join(msgs))
        ws = RawWS.__new__(RawWS)
        ws.sock, ws.timeout, ws.buf = s, 5.0, b""
        ws._fill(1, 5)
        while b"\r\n\r\n" not in ws.buf:
            ws._fill(len(ws.buf) + 1, 5)
        head, _, ws.buf = ws.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        for i in (0, 1, 200):
            assert ws.recv_message() == (TEXT, b"a" * i)
        assert ws.recv_message() == (BINARY, b"\x00\xff" * 30000)


# ---- data frames --------------------------------------------------------------

def test_echo_sizes_and_length_encodings():
    with RawWS(port()) as ws:
        for n in (0, 1, 125, 126, 127, 1000, 65535, 65536):
            echo_roundtrip(ws, TEXT, b"x" * n)
            echo_roundtrip(ws, BINARY, os.urandom(n))
        # 16-bit and 64-bit forms where they are minimal
        ws.send(frame(BINARY, b"b" * 126, length_form=16))
        assert ws.recv_message() == (BINARY, b"b" * 126)
        ws.send(frame(BINARY, b"c" * 65536, length_form=64))
        assert ws.recv_message() == (BINARY, b"c" * 65536)


def test_server_length_encoding_on_the_wire():
    """The server's own frames use 7/16/64-bit lengths exactly as needed."""
    with RawWS(port()) as ws:
        for n, hdr in ((125, b"\x82\x7d"), (126, b"\x82\x7e\x00\x7e"),
                       (65535, b"\x82\x7e\xff\xff"),
                       (65536, b"\x82\x7f" + struct.pack(">Q", 65536))):
            ws.send(frame(BINARY, b"z" * n))
            ws._fill(len(hdr) + n, 5)
            assert ws.buf[:len(hdr)] == hdr, (n, ws.buf[:10])
            ws.buf = ws.buf[len(hdr) + n:]


def test_many_frames_in_one_write():
    with RawWS(port()) as ws:
        payloads = [("m%d" % i).encode() * (i % 50) for i in range(300)]
        ws.send(b"".join(frame(TEXT, p) for p in payloads))
        for p in payloads:
            assert ws.recv_message() == (TEXT, p)


def test_mask_key_zero_and_varied():
    with RawWS(port()) as ws:
        ws.send(frame(TEXT, b"zero key", key=b"\0\0\0\0"))
        assert ws.recv_message() == (TEXT, b"zero key")
        ws.send(frame(BINARY, bytes(range(256)) * 5, key=b"\xff\x00\xaa\x55"))
        assert ws.recv_message() == (BINARY, bytes(range(256)) * 5)


def test_unmasked_frame_is_1002():
    fails_with(1002, frame(TEXT, b"hello", mask=False))


def test_unmasked_close_is_1002():
    fails_with(1002, frame(CLOSE, close_payload(1000), mask=False))


def test_unmasked_after_good_frames_is_1002():
    fails_with(1002, frame(TEXT, b"ok") + frame(TEXT, b"bad", mask=False),
               allow_before=(TEXT,))


def test_rsv_bits_are_1002():
    for rsv in (1, 2, 3, 4, 5, 6, 7):
        fails_with(1002, frame(TEXT, b"rsv", rsv=rsv))
    fails_with(1002, frame(PING, b"p", rsv=4))
    fails_with(1002, frame(TEXT, b"a", fin=False) + frame(CONT, b"b", rsv=2))


def test_reserved_opcodes_are_1002():
    for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15):
        fails_with(1002, frame(op, b"x"))
    # also in the middle of a fragmented message
    fails_with(1002, frame(TEXT, b"a", fin=False) + frame(11, b""))


def test_control_frame_over_125_is_1002():
    fails_with(1002, frame(PING, b"p" * 126))
    fails_with(1002, frame(PONG, b"p" * 126))
    fails_with(1002, frame(CLOSE, close_payload(1000, b"r" * 124)))
    # 125 is fine
    with RawWS(port()) as ws:
        ws.send(frame(PING, b"q" * 125))
        assert ws.recv_frame()[2:] == (PONG, b"q" * 125)


def test_fragmented_control_is_1002():
    fails_with(1002, frame(PING, b"abc", fin=False))
    fails_with(1002, frame(PONG, b"abc", fin=False))
    fails_with(1002, frame(CLOSE, close_payload(1000), fin=False))


def test_continuation_without_start_is_1002():
    fails_with(1002, frame(CONT, b"orphan"))
    fails_with(1002, frame(CONT, b"orphan", fin=False))
    # a continuation after a completed message
    fails_with(1002, frame(TEXT, b"done") + frame(CONT, b"late"), allow_before=(TEXT,))


def test_new_data_frame_during_fragmentation_is_1002():
    fails_with(1002, frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"))
    fails_with(1002, frame(BINARY, b"a", fin=False) + frame(TEXT, b"b", fin=False))
    fails_with(1002, frame(TEXT, b"a", fin=False) + frame(BINARY, b"b"))


def test_fragmented_message_reassembled():
    with RawWS(port()) as ws:
        ws.send(frame(TEXT, b"Hel", fin=False) + frame(CONT, b"lo, ", fin=False)
                + frame(CONT, b"") + b"")  # empty final fragment
        assert ws.recv_message() == (TEXT, b"Hello, ")
        parts = [os.urandom(700) for _ in range(90)]
        data = frame(BINARY, parts[0], fin=False)
        data += b"".join(frame(CONT, p, fin=False) for p in parts[1:-1])
        data += frame(CONT, parts[-1])
        ws.send(data)
        assert ws.recv_message() == (BINARY, b"".join(parts))
        # empty first fragments
        ws.send(frame(TEXT, b"", fin=False) + frame(CONT, b"", fin=False) + frame(CONT, b"x"))
        assert ws.recv_message() == (TEXT, b"x")
        # a fragmented message that is empty altogether
        ws.send(frame(BINARY, b"", fin=False) + frame(CONT, b""))
        assert ws.recv_message() == (BINARY, b"")


def test_ping_between_fragments():
    with RawWS(port()) as ws:
        ws.send(frame(TEXT, b"frag1-", fin=False))
        ws.send(frame(PING, b"between"))
        f = ws.recv_frame()
        assert f == (True, 0, PONG, b"between"), f
        ws.send(frame(PONG, b"unsolicited"))  # ignored
        ws.send(frame(CONT, b"frag2-", fin=False) + frame(PING, b"") + frame(CONT, b"end"))
        assert ws.recv_frame() == (True, 0, PONG, b"")
        assert ws.recv_message() == (TEXT, b"frag1-frag2-end")


def test_ping_pong_payloads():
    with RawWS(port()) as ws:
        for p in (b"", b"x", os.urandom(125)):
            ws.send(frame(PING, p))
            assert ws.recv_frame() == (True, 0, PONG, p)
        # unsolicited pong: no answer, connection stays usable
        ws.send(frame(PONG, b"hello"))
        echo_roundtrip(ws, TEXT, b"after pong")


def test_non_minimal_lengths_are_1002():
    fails_with(1002, frame(TEXT, b"short", length_form=16))
    fails_with(1002, frame(TEXT, b"x" * 125, length_form=16))
    fails_with(1002, frame(TEXT, b"short", length_form=64))
    fails_with(1002, frame(BINARY, b"y" * 65535, length_form=64))
    fails_with(1002, frame(PING, b"p", length_form=16))


def test_64bit_length_msb_set_is_error():
    hdr = struct.pack(">BBQ", 0x82, 0xFF, (1 << 63) | 200) + b"\0\0\0\0"
    with RawWS(port()) as ws:
        ws.send(hdr)
        fin, rsv, op, p = ws.recv_frame()
        assert op == CLOSE, op
        code, _ = mstest.close_info(p)
        # RFC 6455 5.2: the most significant bit MUST be 0 -> protocol error
        assert code == 1002, code
        ws.expect_eof()
    assert_echo(port())


# ---- UTF-8 ----------------------------------------------------------------------

INVALID_UTF8 = [
    b"\x80",                     # lone continuation
    b"\xbf",
    b"\xc0\xaf",                 # overlong '/'
    b"\xc1\xbf",
    b"\xe0\x80\xaf",             # overlong 3-byte
    b"\xf0\x80\x80\xaf",         # overlong 4-byte
    b"\xed\xa0\x80",             # surrogate U+D800
    b"\xed\xbf\xbf",             # surrogate U+DFFF
    b"\xf4\x90\x80\x80",         # > U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xfe", b"\xff",
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
    b"\xe2\x28\xa1",             # bad second byte
]


def test_invalid_utf8_single_frame_is_1007():
    for bad in INVALID_UTF8:
        fails_with(1007, frame(TEXT, b"ok " + bad + b" tail"))


def test_invalid_utf8_truncated_at_end_of_message_is_1007():
    for bad in (b"\xe2\x82", b"\xf0\x9f\x98", b"\xc3", b"\xf0"):
        fails_with(1007, frame(TEXT, b"abc" + bad))
        # and as the final fragment of a fragmented message
        fails_with(1007, frame(TEXT, b"abc", fin=False) + frame(CONT, bad))


def test_invalid_utf8_across_fragments_is_1007():
    # a 3-byte sequence started in one fragment, broken in the next
    fails_with(1007, frame(TEXT, b"ab\xe2", fin=False) + frame(CONT, b"\x28\xa1"))
    # surrogate split over three fragments
    fails_with(1007, frame(TEXT, b"\xed", fin=False) + frame(CONT, b"\xa0", fin=False)
               + frame(CONT, b"\x80"))
    # invalid byte alone in a middle fragment
    fails_with(1007, frame(TEXT, b"good", fin=False) + frame(CONT, b"\xff", fin=False)
               + frame(CONT, b"more"))


def test_invalid_utf8_fails_fast_before_message_end():
    """An invalid first fragment is rejected without waiting for the rest."""
    with RawWS(port()) as ws:
        ws.send(frame(TEXT, b"valid then \xc0\xaf", fin=False))
        ws.expect_close(1007)
    assert_echo(port())


def test_invalid_utf8_byte_by_byte_is_1007():
    fails_with(1007, frame(TEXT, "κόσμε".encode() + b"\xed\xa0\x80" + b"x"), bytewise=True)
    fails_with(1007, frame(TEXT, b"ab\xf0\x9f", fin=False) + frame(CONT, b"\x98\x28"),
               bytewise=True)


def test_valid_utf8_split_across_fragments():
    s = "κόσμε 😀 €uro \U0010FFFF \u0800 end".encode()
    with RawWS(port()) as ws:
        # every split point of the whole message into two fragments
        for i in range(len(s) + 1):
            ws.send(frame(TEXT, s[:i], fin=False) + frame(CONT, s[i:]))
            assert ws.recv_message() == (TEXT, s), i
        # one byte per fragment
        data = b"".join(frame(CONT if i else TEXT, s[i:i + 1], fin=(i == len(s) - 1))
                        for i in range(len(s)))
        ws.send(data)
        assert ws.recv_message() == (TEXT, s)
        # byte-by-byte TCP writes of a single frame
        ws.send_bytewise(frame(TEXT, s))
        assert ws.recv_message() == (TEXT, s)


def test_binary_is_not_utf8_checked():
    with RawWS(port()) as ws:
        echo_roundtrip(ws, BINARY, b"\xff\xfe\xc0\xaf\xed\xa0\x80")
        ws.send(frame(BINARY, b"\xe2", fin=False) + frame(CONT, b"\x28"))
        assert ws.recv_message() == (BINARY, b"\xe2\x28")


# ---- close handshake ------------------------------------------------------------

def test_close_with_1_byte_payload_is_1002():
    fails_with(1002, frame(CLOSE, b"\x03"))


def test_invalid_close_codes_are_1002():
    for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535):
        fails_with(1002, frame(CLOSE, close_payload(code)))


def test_valid_close_codes_are_echoed():
    for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999):
        with RawWS(port()) as ws:
            ws.send(frame(CLOSE, close_payload(code, b"bye")))
            ws.expect_close(code)
    assert_echo(port())


def test_empty_close_answered_with_empty_close():
    with RawWS(port()) as ws:
        ws.send(frame(CLOSE, b""))
        ws.expect_close(None)


def test_close_reason_utf8():
    with RawWS(port()) as ws:
        ws.send(frame(CLOSE, close_payload(1000, "ça va 😀".encode())))
        ws.expect_close(1000)
    fails_with(1007, frame(CLOSE, close_payload(1000, b"bad \xff reason")))
    fails_with(1007, frame(CLOSE, close_payload(1000, b"trunc \xe2\x82")))


def test_close_after_messages_flushes_echoes_first():
    with RawWS(port()) as ws:
        ws.send(frame(TEXT, b"one") + frame(BINARY, b"two" * 20000) + frame(CLOSE, close_payload(1000)))
        assert ws.recv_message() == (TEXT, b"one")
        assert ws.recv_message() == (BINARY, b"two" * 20000)
        ws.expect_close(1000)


def test_close_during_fragmented_message():
    with RawWS(port()) as ws:
        ws.send(frame(TEXT, b"half", fin=False) + frame(CLOSE, close_payload(1000)))
        ws.expect_close(1000)
    assert_echo(port())


# ---- sizes ---------------------------------------------------------------------

def test_message_over_max_is_1009():
    fails_with(1009, frame(TEXT, b"x" * (MAX + 1)))
    fails_with(1009, frame(BINARY, b"x" * (MAX + 1)))


def test_fragmented_message_over_max_is_1009():
    fails_with(1009, frame(BINARY, b"x" * 40000, fin=False) + frame(CONT, b"y" * 30000))
    fails_with(1009, frame(TEXT, b"x" * MAX, fin=False) + frame(CONT, b"y"))
    # exactly max across fragments is fine
    with RawWS(port()) as ws:
        ws.send(frame(TEXT, b"x" * 30000, fin=False) + frame(CONT, b"y" * (MAX - 30000)))
        assert ws.recv_message() == (TEXT, b"x" * 30000 + b"y" * (MAX - 30000))


def test_huge_declared_length_is_1009_without_payload():
    """A header announcing 1 TiB is refused at once, not buffered."""
    with RawWS(port()) as ws:
        ws.send(struct.pack(">BBQ", 0x82, 0xFF, 1 << 40) + b"abcd")
        ws.expect_close(1009)
    assert_echo(port())


# ---- whole session byte by byte ---------------------------------------------------

def test_byte_at_a_time_session():
    req, key = upgrade_request("/echo")
    session = [frame(TEXT, "héllo wörld".encode()),
               frame(BINARY, bytes(range(200))),
               frame(TEXT, b"fr", fin=False) + frame(PING, b"pp") + frame(CONT, "ag😀".encode()),
               frame(CLOSE, close_payload(3001, b"done"))]
    with mstest.tcp(port()) as s:
        ws = RawWS.__new__(RawWS)
        ws.sock, ws.timeout, ws.buf = s, 5.0, b""
        ws.send_bytewise(req)
        while b"\r\n\r\n" not in ws.buf:
            ws._fill(len(ws.buf) + 1, 5)
        head, _, ws.buf = ws.buf.partition(b"\r\n\r\n")
        st, h, _ = mstest.parse_http_response(head + b"\r\n\r\n")
        assert st == 101 and h["sec-websocket-accept"] == mstest.accept_of(key), head
        ws.send_bytewise(session[0])
        assert ws.recv_message() == (TEXT, "héllo wörld".encode())
        ws.send_bytewise(session[1])
        assert ws.recv_message() == (BINARY, bytes(range(200)))
        ws.send_bytewise(session[2])
        assert ws.recv_frame() == (True, 0, PONG, b"pp")
        assert ws.recv_message() == (TEXT, "frag😀".encode())
        ws.send_bytewise(session[3])
        ws.expect_close(3001)


# ---- HTTP -------------------------------------------------------------------------

def test_http_healthz_200():
    st, h, body = http_exchange(port(), b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert st == 200, st
    assert body.strip() == b"ok", body


def test_http_malformed_is_400_and_closed():
    for req in (b"HELLO\r\n\r\n",
                b"GET\r\n\r\n",
                b"GET /echo HTTP/1.1\r\nno colon here\r\n\r\n",
                b"GET /echo\r\nHost: x\r\n\r\n",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40 + b"\r\n\r\n"):
        st, _, _ = http_exchange(port(), req)
        assert st == 400, (req, st)
    # an unknown HTTP version: 400, or 505 HTTP Version Not Supported
    st, _, _ = http_exchange(port(), b"GET /echo HTTP/9.9\r\nHost: x\r\n\r\n")
    assert st in (400, 505), st
    assert_echo(port())


def test_http_missing_upgrade_or_key_is_400():
    key = mstest.ws_key()
    base = {"Host": "x", "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"}
    for drop in ("Upgrade", "Connection", "Sec-WebSocket-Key"):
        hdrs = "".join("%s: %s\r\n" % kv for kv in base.items() if kv[0] != drop)
        st, _, _ = http_exchange(port(), ("GET /echo HTTP/1.1\r\n%s\r\n" % hdrs).encode())
        assert st == 400, (drop, st)
    # Upgrade to something else
    req, _ = upgrade_request("/echo")
    st, _, _ = http_exchange(port(), req.replace(b"Upgrade: websocket", b"Upgrade: h2c"))
    assert st == 400, st
    assert_echo(port())


def test_http_bad_key_is_400():
    """RFC 6455 4.2.1: the key must be base64 of 16 bytes."""
    for key in ("short", "dGhlIHNhbXBsZSBub25jZQ", "!!!!!!!!!!!!!!!!!!!!!!==",
                "dGhlIHNhbXBsZSBub25jZSB0b28gbG9uZw=="):
        req, _ = upgrade_request("/echo", key=key)
        st, _, _ = http_exchange(port(), req)
        assert st == 400, (key, st)


def test_http_post_upgrade_refused():
    req, _ = upgrade_request("/echo")
    st, _, _ = http_exchange(port(), b"POST" + req[3:])
    assert st in (400, 405), st


def test_http_version_12_is_426_with_header():
    for v in ("12", "8", "14", "abc"):
        req, _ = upgrade_request("/echo", version=v)
        st, h, _ = http_exchange(port(), req)
        assert st == 426, (v, st)
        assert h.get("sec-websocket-version") == "13", h
    req, _ = upgrade_request("/echo")
    st, _, _ = http_exchange(port(), req.replace(b"Sec-WebSocket-Version: 13\r\n", b""))
    assert st in (400, 426), st
    assert_echo(port())


def test_http_unknown_path_is_404():
    for path in ("/nope", "/echo2", "/ech", "/healthz/x", "/room2"):
        req, _ = upgrade_request(path)
        st, _, _ = http_exchange(port(), req)
        assert st == 404, (path, st)
    st, _, _ = http_exchange(port(), b"GET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n")
    assert st == 404, st


def test_http_head_over_8k_is_431():
    req, _ = upgrade_request("/echo", extra="X-Big: %s\r\n" % ("a" * 9000))
    st, _, _ = http_exchange(port(), req)
    assert st in (431, 400), st
    # a head that never ends, sent in pieces
    with mstest.tcp(port()) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\n")
        try:
            for _ in range(20):
                s.sendall(b"X-Filler: " + b"b" * 1000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = mstest.recv_until_close(s)
    st, _, _ = mstest.parse_http_response(data)
    assert st in (431, 400), st
    assert_echo(port())


def test_http_too_many_headers_is_431():
    extra = "".join("X-H%d: v\r\n" % i for i in range(100))
    req, _ = upgrade_request("/echo", extra=extra)
    st, _, _ = http_exchange(port(), req)
    assert st in (431, 400), st
    assert_echo(port())


def test_http_head_just_under_8k_ok():
    req, _ = upgrade_request("/echo", extra="X-Pad: %s\r\n")
    pad = 8192 - len(req) - 200
    req, key = upgrade_request("/echo", extra="X-Pad: %s\r\n" % ("p" * pad))
    assert len(req) < 8192
    with mstest.tcp(port()) as s:
        s.sendall(req)
        data = b""
        while b"\r\n\r\n" not in data:
            d = s.recv(4096)
            assert d, data
            data += d
    assert data.startswith(b"HTTP/1.1 101 "), data[:100]


def test_ws_route_dev_mode():
    with RawWS(port(), "/ws?user=42") as ws:
        ws.send(frame(TEXT, b'{"op":"ping","id":1}'))
        op, body = ws.recv_message()
        assert op == TEXT and body.startswith(b"{"), body
    for q in ("/ws", "/ws?user=", "/ws?user=007", "/ws?user=abc", "/ws?user=18446744073709551616"):
        req, _ = upgrade_request(q)
        st, _, _ = http_exchange(port(), req)
        assert st == 400, (q, st)


# ---- flags needing their own server ---------------------------------------------

def test_slow_handshake_is_408():
    # Timers tick once a second and never fire early: a 2 s timeout fires
    # after [2, 3) s.
    with mstest.Server("--handshake-timeout", "2") as srv:
        t0 = time.monotonic()
        with mstest.tcp(srv.port) as s:   # idle TCP connection
            data = mstest.recv_until_close(s, timeout=5)
        dt = time.monotonic() - t0
        st, _, _ = mstest.parse_http_response(data)
        assert st == 408, st
        assert 1.9 <= dt <= 3.5, dt
        # a partial head then silence
        with mstest.tcp(srv.port) as s:
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
            data = mstest.recv_until_close(s, timeout=5)
        st, _, _ = mstest.parse_http_response(data)
        assert st == 408, st
        assert_echo(srv.port)


def test_echo_not_served_without_diag():
    with mstest.Server(args=["--dev", "--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--cores", "2"]) as srv:
        req, _ = upgrade_request("/echo")
        st, _, _ = http_exchange(srv.port, req)
        assert st == 404, st
        st, _, _ = http_exchange(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert st == 200, st


def test_max_message_flag():
    with mstest.Server("--max-message", "1000") as srv:
        with RawWS(srv.port) as ws:
            echo_roundtrip(ws, BINARY, b"m" * 1000)
            ws.send(frame(BINARY, b"m" * 1001))
            ws.expect_close(1009)
        assert_echo(srv.port)


def test_sender_that_does_not_read_is_held_not_queued():
    """PROTOCOL.md / docs/limits.md: a client that sends requests without
    reading their answers is held by TCP flow control: once its queued
    output passes half of --max-backpressure the server stops reading it,
    so what it is owed stays bounded; it is not closed for that, and when
    it reads it gets every echo, in order. Other clients are not affected.
    The client sends without reading until its sends stop being taken."""
    bound = 262144
    with mstest.Server("--max-backpressure", str(bound), "--sndbuf", "65536") as srv:
        with mstest.RawWS(srv.port, timeout=10) as ws:
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            payloads = [os.urandom(60000) for _ in range(8)]
            ws.sock.setblocking(False)
            sent, stalled_since = 0, None
            deadline = time.time() + 20
            # Far more than the kernel's socket buffers on both sides hold.
            count = 1000
            data = b"".join(frame(BINARY, payloads[i % 8]) for i in range(count))
            off = 0
            while off < len(data) and time.time() < deadline:
                try:
                    off += ws.sock.send(data[off:off + 65536])
                    stalled_since = None
                except BlockingIOError:
                    if stalled_since is None:
                        stalled_since = time.time()
                    elif time.time() - stalled_since > 1.0:
                        break  # the server stopped taking our input
                    time.sleep(0.01)
            ws.sock.setblocking(True)
            assert off < len(data), "the server read 60 MB from a client that never reads"
            # Now read: every whole frame we sent comes back, in order, no close.
            whole = 0
            pos = 0
            for i in range(count):
                flen = len(frame(BINARY, payloads[i % 8]))
                if pos + flen > off:
                    break
                pos += flen
                whole += 1
            for i in range(whole):
                fin, rsv, op, p = ws.recv_frame(10)
                assert op == BINARY and p == payloads[i % 8], (i, op, len(p))
        assert_echo(srv.port)
        stats = srv.stop()
        assert stats["total"]["slow_closes"] == 0, stats["total"]
        assert stats["total"]["conn_pauses"] >= 1, stats["total"]


if __name__ == "__main__":
    mstest.run(globals(), setup=setup, teardown=teardown)
