"""Shared helpers of the integration tests (run with /usr/bin/python3).

- Server: spawns build/mezon-sock on 127.0.0.1:0, waits for the
  "listening on ws://127.0.0.1:PORT/ws" line (.port) and, unless
  --tls-listen is off, the "listening on wss://..." line (.tls_port; the
  "TLS: ... fingerprint XX:.." line gives .tls_fingerprint), captures
  stderr; stop() sends
  SIGTERM, waits, parses the "stats worker=N:" / "stats total:" lines and
  raises if the server crashed, exited non-zero or printed a sanitizer report.
  MS_SERVER_WRAP="valgrind --leak-check=full --error-exitcode=99" (any
  command prefix, split like a shell would) runs the server under it; the
  start-up wait is then 10 times longer.
- test_cert(): a self-signed certificate and key for servers started
  outside --dev with a TLS listener (their --cert/--key); jwt(): an HS256
  token.
- A raw RFC 6455 client (handshake, frame building, frame reading) for the
  conformance tests and the echo check that follows every error case; it
  takes a socket factory (connect=tls_tcp runs it over TLS).
- run(): a tiny test runner. Every module-level function test_* is a test;
  each failure is printed with its traceback; the last line is
  "N passed, N failed, N skipped"; exit status 1 on any failure, 77 when
  everything was skipped (ctest SKIP_RETURN_CODE).

Usage: test_x.py SERVER_BINARY [SOURCE_DIR] [-k SUBSTRING]
"""
import base64
import hashlib
import os
import re
import select
import shlex
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import traceback

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

SERVER_BIN = None  # set by run() from argv[1]
SOURCE_DIR = None

SANITIZER_PATTERNS = [
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "WARNING: ThreadSanitizer",
    "runtime error:",          # UBSan
    "UndefinedBehaviorSanitizer",
    "ERROR: MemorySanitizer",
]


class Skip(Exception):
    """Raise to skip a test (a kernel feature the host lacks)."""


class ServerError(AssertionError):
    pass


def parse_stats(text):
    """{'0': {...}, '1': {...}, 'total': {...}} from the stats lines."""
    out = {}
    for m in re.finditer(r"stats (worker=(\d+):|total:)([^\n]*)", text):
        key = m.group(2) if m.group(2) is not None else "total"
        d = {}
        for k, v in re.findall(r"(\w+)=([0-9.]+)", m.group(3)):
            d[k] = float(v) if "." in v else int(v)
        out[key] = d
    return out


class Server:
    """One mezon-sock process. Use as a context manager or start()/stop()."""

    DEFAULT_ARGS = ["--dev", "--diag", "--listen", "127.0.0.1:0",
                    "--tls-listen", "127.0.0.1:0", "--cores", "2"]

    def __init__(self, *extra, binary=None, args=None, env=None, cores=2):
        self.binary = binary or SERVER_BIN
        a = list(self.DEFAULT_ARGS if args is None else args)
        if os.environ.get("MS_SERVER_WRAP") and args is None and cores == 2:
            # Under valgrind one worker unless a test asks for more: it runs
            # one thread at a time and its io_uring_enter wrapper keeps that
            # right while the thread waits, so each worker slows the others.
            cores = 1
        if cores != 2 and args is None:
            a[a.index("--cores") + 1] = str(cores)
        self.args = a + [str(x) for x in extra]
        if "--admin-listen" not in self.args:
            # Never the fixed default port: tests run side by side.
            self.args += ["--admin-listen", "127.0.0.1:0"]
        self.env = env
        self.proc = None
        self.port = None
        self.tls_port = None
        self.admin_port = None
        self.tls_fingerprint = None
        self.workers = None
        self._err = []
        self._lock = threading.Lock()
        self.stats = None
        self.returncode = None
        self._termed = False

    def _flag(self, name, default):
        """The last value given for --name in the arguments."""
        v = default
        for i, a in enumerate(self.args[:-1]):
            if a == name:
                v = self.args[i + 1]
        return v

    # -- lifecycle --------------------------------------------------------
    def start(self, timeout=10.0):
        if not self.binary or not os.access(self.binary, os.X_OK):
            raise ServerError("server binary not executable: %r" % self.binary)
        env = dict(os.environ if self.env is None else self.env)
        # Sanitizer builds: stack traces in reports, leaks checked at exit.
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        wrap = shlex.split(os.environ.get("MS_SERVER_WRAP", ""))
        if wrap:
            # Under valgrind with one worker, the main thread runs only
            # while the worker's io_uring_enter is not waiting (valgrind
            # keeps its one-thread lock there, up to the 1 s tick): each of
            # main's start-up syscalls can cost a tick, and a loaded machine
            # stretched start-up past 100 s once.
            timeout *= 30
        self.proc = subprocess.Popen(wrap + [self.binary] + self.args,
                                     stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env)
        ready = threading.Event()
        want_plain = self._flag("--listen", "") != "off"
        want_tls = self._flag("--tls-listen", "") != "off"
        want_admin = self._flag("--admin-listen", "") != "off"

        def pump():
            for raw in iter(self.proc.stderr.readline, b""):
                line = raw.decode("utf-8", "replace")
                with self._lock:
                    self._err.append(line)
                if self.tls_fingerprint is None:
                    m = re.search(r"TLS: .* SHA-256 fingerprint ([0-9A-Fa-f:]+)", line)
                    if m:
                        self.tls_fingerprint = m.group(1)
                m = re.search(r"listening on (wss?)://(?:\[[^\]]*\]|[^:/]+):(\d+)/ws with (\d+) workers",
                              line)
                if m:
                    if m.group(1) == "ws" and self.port is None:
                        self.port = int(m.group(2))
                    elif m.group(1) == "wss" and self.tls_port is None:
                        self.tls_port = int(m.group(2))
                    self.workers = int(m.group(3))
                m = re.search(r"admin on http://(?:\[[^\]]*\]|[^:/]+):(\d+)/metrics", line)
                if m and self.admin_port is None:
                    self.admin_port = int(m.group(1))
                if ((self.port is not None or not want_plain)
                        and (self.tls_port is not None or not want_tls)
                        and (self.admin_port is not None or not want_admin)
                        and self.workers is not None):
                    ready.set()
            ready.set()

        self._thread = threading.Thread(target=pump, daemon=True)
        self._thread.start()
        if (not ready.wait(timeout) or (want_plain and self.port is None)
                or (want_tls and self.tls_port is None)):
            self.proc.kill()
            self.proc.wait()
            self._thread.join(2)
            raise ServerError("server did not report its port; stderr:\n" + self.stderr)
        return self

    @property
    def stderr(self):
        with self._lock:
            return "".join(self._err)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def terminate(self):
        """Send SIGTERM once (a second one makes the server exit at once,
        with status 1)."""
        if not self._termed and self.proc.poll() is None:
            self._termed = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout=20.0, check=True):
        """SIGTERM, wait, parse stats; raise ServerError on any bad outcome."""
        if self.proc is None:
            return None
        self.terminate()
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
            self._thread.join(5)
            raise ServerError("server did not exit within %.0fs of SIGTERM; stderr:\n%s"
                              % (timeout, self.stderr[-4000:]))
        self._thread.join(5)
        err = self.stderr
        self.stats = parse_stats(err)
        if check:
            self.check(err)
        return self.stats

    def check(self, err=None):
        err = self.stderr if err is None else err
        for pat in SANITIZER_PATTERNS:
            if pat in err:
                raise ServerError("sanitizer report (%r) in server stderr:\n%s" % (pat, err[-6000:]))
        if self.returncode is None:
            raise ServerError("server still running")
        if self.returncode < 0:
            raise ServerError("server killed by signal %d; stderr:\n%s"
                              % (-self.returncode, err[-4000:]))
        if self.returncode != 0:
            raise ServerError("server exited with status %d; stderr:\n%s"
                              % (self.returncode, err[-4000:]))
        if "total" not in self.stats:
            raise ServerError("no 'stats total:' line in server stderr:\n" + err[-4000:])
        n = self.workers or 0
        for i in range(n):
            if str(i) not in self.stats:
                raise ServerError("no stats line for worker %d:\n%s" % (i, err[-4000:]))

    def worker_accepts(self):
        return [self.stats[str(i)]["accepts"] for i in range(self.workers)]

    def __enter__(self):
        return self.start()

    def __exit__(self, et, ev, tb):
        if et is None:
            self.stop()
        else:
            try:
                self.stop(check=False)
            except Exception:
                pass
        return False


# ---- credentials for servers outside --dev -----------------------------------

_CERT = None


def test_cert():
    """(certificate, key) paths of a self-signed ECDSA certificate for
    localhost/127.0.0.1, made once per test process with the openssl CLI
    and removed at exit. Outside --dev a TLS listener needs one: the
    server's own self-signed certificate is for --dev only."""
    global _CERT
    if _CERT:
        return _CERT
    import atexit
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="ms-cert-")
    atexit.register(shutil.rmtree, d, True)
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
    _CERT = (cert, key)
    return _CERT


def jwt(secret, sub, exp_in=300, claims=None):
    """An HS256 token for user sub, expiring exp_in seconds from now."""
    import hmac
    import json
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    body = {"sub": str(sub), "exp": int(time.time()) + exp_in}
    body.update(claims or {})
    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(body).encode())
    return signing + "." + b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest())


# ---- raw sockets -----------------------------------------------------------

def tcp(port, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def tls_client_context(cafile=None, check_hostname=None, alpn=None,
                       minimum_version=None, maximum_version=None):
    """A client SSLContext: no verification unless cafile is given (then
    hostname checks too, unless check_hostname=False)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # A TCP close without close_notify is an error (SSLEOFError), not EOF.
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    if cafile:
        ctx.load_verify_locations(cafile)
        ctx.check_hostname = True if check_hostname is None else check_hostname
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if minimum_version is not None:
        ctx.minimum_version = minimum_version
    if maximum_version is not None:
        ctx.maximum_version = maximum_version
    return ctx


def tls_tcp(port, timeout=5.0, context=None, server_hostname="localhost",
            suppress_ragged_eofs=False, session=None):
    """A TCP connection with a completed TLS handshake (verification off
    unless context says otherwise). A TCP close without close_notify raises
    ssl.SSLEOFError on recv unless suppress_ragged_eofs."""
    s = tcp(port, timeout)
    try:
        return (context or tls_client_context()).wrap_socket(
            s, server_hostname=server_hostname,
            suppress_ragged_eofs=suppress_ragged_eofs, session=session)
    except BaseException:
        s.close()
        raise


def recv_until_close(s, timeout=5.0, limit=1 << 20):
    """All bytes until the peer closes (EOF or reset). Raises on timeout."""
    s.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            return buf
        except socket.timeout:
            raise AssertionError("connection not closed by the server within %.1fs; got %r"
                                 % (timeout, buf[:300]))
        if not d:
            return buf
        buf += d
        if len(buf) > limit or time.monotonic() > deadline:
            raise AssertionError("connection not closed; got %r" % buf[:300])


def parse_http_response(data):
    """(status, {lower-name: value}, body) of one HTTP/1.1 response."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, "no complete HTTP response head in %r" % data[:300]
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.1 (\d{3}) ", lines[0] + " ")
    assert m, "bad status line %r" % lines[0]
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(m.group(1)), headers, body


def http_exchange(port, request, timeout=5.0, connect=None):
    """Send raw bytes, read to EOF; (status, headers, body). connect: a
    socket factory (port, timeout) -> socket, default tcp."""
    with (connect or tcp)(port, timeout) as s:
        s.sendall(request)
        data = recv_until_close(s, timeout)
    assert data, "server closed without answering %r" % request[:100]
    return parse_http_response(data)


def ws_key():
    return base64.b64encode(os.urandom(16)).decode()


def accept_of(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def upgrade_request(path="/echo", key=None, version="13", extra=""):
    key = key or ws_key()
    return ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
            "Sec-WebSocket-Version: %s\r\n%s\r\n" % (path, key, version, extra)).encode(), key


class RawWS:
    """A deliberately low-level client: it sends exactly the bytes asked for."""

    def __init__(self, port, path="/echo", timeout=5.0, extra="", connect=None):
        """connect: a socket factory (port, timeout) -> socket, default tcp;
        tls_tcp gives the same client over TLS."""
        self.sock = (connect or tcp)(port, timeout)
        self.timeout = timeout
        self.buf = b""
        req, key = upgrade_request(path, extra=extra)
        self.sock.sendall(req)
        while b"\r\n\r\n" not in self.buf:
            d = self.sock.recv(4096)
            assert d, "connection closed during the handshake: %r" % self.buf
            self.buf += d
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status, headers, _ = parse_http_response(head + b"\r\n\r\n")
        assert status == 101, "expected 101, got %d (%r)" % (status, head)
        assert headers.get("upgrade", "").lower() == "websocket", headers
        assert "upgrade" in headers.get("connection", "").lower(), headers
        assert headers.get("sec-websocket-accept") == accept_of(key), headers
        self.headers = headers

    def close_socket(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close_socket()
        return False

    def send(self, data):
        self.sock.sendall(data)

    def send_bytewise(self, data, delay=0.0):
        for i in range(len(data)):
            self.sock.send(data[i:i + 1])
            if delay:
                time.sleep(delay)

    def _fill(self, n, timeout):
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out waiting for %d bytes (have %r)" % (n, self.buf[:64]))
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                d = b""
            if not d:
                raise EOFError("connection closed by the server (buffered %r)" % self.buf[:64])
            self.buf += d

    def recv_frame(self, timeout=None):
        """(fin, rsv, opcode, payload) of the next server frame, checked for
        the rules a server must follow (unmasked, minimal length)."""
        timeout = self.timeout if timeout is None else timeout
        self._fill(2, timeout)
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "server frame is masked"
        n = b1 & 0x7F
        hl = 2
        if n == 126:
            self._fill(4, timeout)
            n = struct.unpack(">H", self.buf[2:4])[0]
            hl = 4
            assert n >= 126, "server used a non-minimal 16-bit length"
        elif n == 127:
            self._fill(10, timeout)
            n = struct.unpack(">Q", self.buf[2:10])[0]
            hl = 10
            assert n >= 65536, "server used a non-minimal 64-bit length"
        self._fill(hl + n, timeout)
        payload = self.buf[hl:hl + n]
        self.buf = self.buf[hl + n:]
        return bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, payload

    def recv_message(self, timeout=None):
        """(opcode, payload) of the next data message; control frames other
        than close are an assertion failure (there should be none)."""
        fin, rsv, op, p = self.recv_frame(timeout)
        assert rsv == 0, "server set RSV bits"
        if op == 8:
            raise AssertionError("expected a message, got close %r" % (close_info(p),))
        assert op in (1, 2), "expected a data frame, got opcode %d" % op
        chunks = [p]
        while not fin:
            fin, rsv, op2, p = self.recv_frame(timeout)
            assert op2 == 0, "expected continuation, got opcode %d" % op2
            chunks.append(p)
        return op, b"".join(chunks)

    def expect_close(self, code, timeout=None, reply=False, allow_before=()):
        """Read frames until a close frame; assert its status code (None =
        no payload) and that the server then closes the TCP connection.
        Data frames before the close are a failure unless their opcode is in
        allow_before."""
        timeout = self.timeout if timeout is None else timeout
        while True:
            try:
                fin, rsv, op, p = self.recv_frame(timeout)
            except EOFError as e:
                raise AssertionError("expected close %s, but the TCP connection ended "
                                     "without a close frame (%s)" % (code, e))
            if op == 8:
                break
            assert op in allow_before, ("expected close %s, got opcode %d payload %r"
                                        % (code, op, p[:40]))
        assert fin and rsv == 0, "bad close frame header"
        got, reason = close_info(p)
        assert got == code, "expected close code %s, got %s (reason %r)" % (code, got, reason)
        if reply:
            try:
                self.send(frame(8, p[:2]))
            except OSError:
                pass
        # After its close frame (and ours, or a protocol failure), the server
        # closes TCP.
        self.expect_eof(timeout)
        return reason

    def expect_eof(self, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "server did not close the TCP connection (extra %r)" % self.buf[:64]
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return
            if not d:
                assert not self.buf, "trailing bytes after close: %r" % self.buf[:64]
                return
            self.buf += d
            raise AssertionError("data after the close frame: %r" % self.buf[:64])

    def no_frame_within(self, seconds):
        """Assert nothing arrives for `seconds` (connection stays open)."""
        self.sock.settimeout(seconds)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return
        raise AssertionError("unexpected data/EOF from the server: %r" % d[:64])


def close_info(payload):
    """(code or None, reason str) of a close payload; checks the reason."""
    if not payload:
        return None, ""
    assert len(payload) >= 2, "server close payload of 1 byte"
    code = struct.unpack(">H", payload[:2])[0]
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise AssertionError("server close reason is not UTF-8: %r" % payload[2:])
    return code, reason


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length_form=None, key=None):
    """One client frame. length_form: None (minimal), 16 or 64 to force a
    length encoding (non-minimal when the payload is small)."""
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    n = len(payload)
    mbit = 0x80 if mask else 0
    if length_form == 64 or (length_form is None and n > 0xFFFF):
        hdr = struct.pack(">BBQ", b0, mbit | 127, n)
    elif length_form == 16 or (length_form is None and n > 125):
        hdr = struct.pack(">BBH", b0, mbit | 126, n)
    else:
        hdr = struct.pack(">BB", b0, mbit | n)
    if not mask:
        return hdr + payload
    key = os.urandom(4) if key is None else key
    return hdr + key + apply_mask(payload, key)


def apply_mask(data, key):
    if not data:
        return b""
    k = (key * (len(data) // 4 + 1))[:len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(len(data), "big")


def close_payload(code, reason=b""):
    return struct.pack(">H", code) + reason


def assert_echo(port, payload=b"still alive", opcode=1, path="/echo", connect=None, timeout=5.0):
    """A fresh connection gets its message back: the server still serves."""
    with RawWS(port, path, timeout=timeout, connect=connect) as ws:
        ws.send(frame(opcode, payload))
        op, got = ws.recv_message()
        assert (op, got) == (opcode, payload), "echo mismatch: %r" % ((op, got[:40]),)
        ws.send(frame(8, close_payload(1000)))
        ws.expect_close(1000)


# ---- runner ------------------------------------------------------------------

def run(namespace, setup=None, teardown=None):
    """Run every test_* function of the calling module; see module doc."""
    global SERVER_BIN, SOURCE_DIR
    argv = sys.argv[1:]
    only = None
    if "-k" in argv:
        i = argv.index("-k")
        only = argv[i + 1]
        del argv[i:i + 2]
    if not argv:
        print("usage: %s SERVER_BINARY [SOURCE_DIR] [-k SUBSTRING]" % sys.argv[0])
        sys.exit(2)
    SERVER_BIN = os.path.abspath(argv[0])
    SOURCE_DIR = argv[1] if len(argv) > 1 else None
    tests = [(n, f) for n, f in namespace.items()
             if n.startswith("test_") and callable(f)]
    tests.sort(key=lambda t: t[1].__code__.co_firstlineno)
    if only:
        tests = [t for t in tests if only in t[0]]
    passed = failed = skipped = 0
    failures = []
    try:
        if setup:
            setup()
    except Skip as e:
        print("SKIP all: %s" % e)
        print("0 passed, 0 failed, %d skipped" % len(tests))
        sys.exit(77)
    for name, fn in tests:
        t0 = time.monotonic()
        try:
            fn()
        except Skip as e:
            skipped += 1
            print("SKIP %s: %s" % (name, e), flush=True)
            continue
        except BaseException as e:  # noqa: BLE001 - report everything
            if isinstance(e, KeyboardInterrupt):
                raise
            failed += 1
            failures.append(name)
            print("FAIL %s (%.2fs)\n%s" % (name, time.monotonic() - t0,
                                           traceback.format_exc()), flush=True)
            continue
        passed += 1
        print("ok   %s (%.2fs)" % (name, time.monotonic() - t0), flush=True)
    if teardown:
        try:
            teardown()
            passed += 1
            print("ok   teardown (server stopped cleanly)", flush=True)
        except BaseException:  # noqa: BLE001
            failed += 1
            failures.append("teardown")
            print("FAIL teardown\n%s" % traceback.format_exc(), flush=True)
    if failures:
        print("failed: " + ", ".join(failures))
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    if failed:
        sys.exit(1)
    if skipped and not passed:
        sys.exit(77)
    sys.exit(0)
