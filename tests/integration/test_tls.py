#!/usr/bin/python3
"""The wss:// listener: python3-websockets over TLS (verification off for
the self-signed default, on with a CA made here by the openssl CLI), the
self-signed certificate's logged fingerprint and SANs, session resumption
(openssl s_client -sess_out / -sess_in, python's ssl; across workers, and
across two processes sharing --ticket-key-file; rotation), protocol
versions, ciphers, groups, ALPN, garbage and handshake timeouts, HTTP and
the chat protocol over TLS, SIGTERM, hand-driven TLS records (every byte
its own TCP segment, a corrupted record), and a subset of
test_conformance.py run over TLS through mstest.RawWS's socket factory.

Needs /usr/bin/python3 (python3-websockets) and the openssl CLI.
Usage: test_tls.py SERVER_BINARY [SOURCE_DIR] [-k SUBSTRING]
"""
import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mstest  # noqa: E402
from mstest import RawWS, frame, close_payload, tls_tcp  # noqa: E402
import test_conformance as tc  # noqa: E402

try:
    import websockets
    from websockets.exceptions import ConnectionClosed
except ImportError as e:  # not a kernel feature: a broken test environment
    print("python3-websockets is missing (%s); run with /usr/bin/python3" % e)
    print("0 passed, 1 failed, 0 skipped")
    sys.exit(1)

logging.getLogger("websockets").setLevel(logging.CRITICAL)

SRV = None
TMP = None
PKI = None
MAX = 65536
TEXT, BINARY, CLOSE, PING, PONG, CONT = 1, 2, 8, 9, 10, 0
OPENSSL = shutil.which("openssl")
SLOW = 3.0 if os.environ.get("MS_SLOW", "0") not in ("", "0") else 1.0


def setup():
    global SRV, TMP
    if not OPENSSL:
        raise AssertionError("the openssl CLI is missing")
    TMP = tempfile.mkdtemp(prefix="mstest-tls-")
    SRV = mstest.Server().start()


def teardown():
    try:
        SRV.stop()
        if "-k" not in sys.argv:
            acc = SRV.worker_accepts()
            assert all(a > 0 for a in acc), "a worker took no connection: %r" % acc
    finally:
        shutil.rmtree(TMP, ignore_errors=True)


def tport(srv=None):
    srv = srv or SRV
    assert srv.alive(), "server died; stderr:\n" + srv.stderr[-3000:]
    return srv.tls_port


def ctx_noverify(**kw):
    return mstest.tls_client_context(**kw)


def wss(path="/echo", srv=None, ctx=None, **kw):
    kw.setdefault("ping_interval", None)
    kw.setdefault("max_size", 1 << 22)
    kw.setdefault("open_timeout", 10 * SLOW)
    kw.setdefault("close_timeout", 5)
    kw.setdefault("compression", None)
    return websockets.connect("wss://127.0.0.1:%d%s" % (tport(srv), path),
                              ssl=ctx or ctx_noverify(), **kw)


def arun(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout * SLOW))


def rcvd_code(exc):
    return exc.rcvd.code if exc.rcvd is not None else None


def tls_echo(port, payload=b"still alive over TLS"):
    """A fresh wss connection gets its echo and a clean close handshake."""
    mstest.assert_echo(port, payload, connect=tls_tcp)


def run(cmd, input=None, timeout=20):
    p = subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def must(cmd, **kw):
    rc, out = run(cmd, **kw)
    assert rc == 0, "%s failed (%d):\n%s" % (" ".join(cmd), rc, out)
    return out


# ---- a test PKI made with the openssl CLI ------------------------------------------

def pki():
    """root CA (EC) -> intermediate (EC) -> ECDSA P-256 leaf; root -> RSA
    2048 leaf. Leaves: CN localhost, SAN DNS:localhost IP:127.0.0.1.
    Files: ca.pem, other_ca.pem, ec_chain.pem (leaf+intermediate),
    ec_leaf.pem, ec.key (PKCS#8), ec_sec1.key, rsa_chain.pem, rsa.key
    (PKCS#8), rsa_pkcs1.key."""
    global PKI
    if PKI:
        return PKI
    d = os.path.join(TMP, "pki")
    os.makedirs(d)
    j = lambda n: os.path.join(d, n)  # noqa: E731
    with open(j("ca.ext"), "w") as f:
        f.write("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n")
    with open(j("leaf.ext"), "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,"
                "keyEncipherment\nextendedKeyUsage=serverAuth\n"
                "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    for name, cn in (("ca", "mstest root"), ("other_ca", "mstest other root")):
        must([OPENSSL, "req", "-x509", "-new"] + ec + [
            "-nodes", "-keyout", j(name + ".key"), "-out", j(name + ".pem"), "-days", "2",
            "-subj", "/CN=" + cn, "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign"])

    def issue(name, keyspec, cn, ca, ext):
        must([OPENSSL, "req", "-new"] + keyspec + ["-nodes", "-keyout", j(name + ".key"),
                                                   "-out", j(name + ".csr"), "-subj", "/CN=" + cn])
        must([OPENSSL, "x509", "-req", "-in", j(name + ".csr"), "-CA", j(ca + ".pem"),
              "-CAkey", j(ca + ".key"), "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
              "-days", "2", "-sha256", "-out", j(name + ".pem"), "-extfile", j(ext)])

    issue("int", ec, "mstest intermediate", "ca", "ca.ext")
    issue("ec", ec, "localhost", "int", "leaf.ext")
    issue("rsa", ["-newkey", "rsa:2048"], "localhost", "ca", "leaf.ext")
    with open(j("ec_chain.pem"), "w") as f:
        f.write(open(j("ec.pem")).read() + open(j("int.pem")).read())
    shutil.copy(j("ec.pem"), j("ec_leaf.pem"))
    shutil.copy(j("rsa.pem"), j("rsa_chain.pem"))
    must([OPENSSL, "ec", "-in", j("ec.key"), "-out", j("ec_sec1.key")])
    must([OPENSSL, "rsa", "-traditional", "-in", j("rsa.key"), "-out", j("rsa_pkcs1.key")])
    PKI = j
    return j


def der_of_pem(path):
    return ssl.PEM_cert_to_DER_cert(open(path).read().split("-----END CERTIFICATE-----")[0]
                                    + "-----END CERTIFICATE-----\n")


def fp_colon(der):
    return ":".join("%02X" % b for b in hashlib.sha256(der).digest())


def peer_der(port, ctx=None, server_hostname="localhost"):
    with tls_tcp(port, context=ctx, server_hostname=server_hostname) as s:
        return s.getpeercert(binary_form=True)


# ---- echo over wss (python3-websockets, verification off) ------------------------------

SIZES = (0, 1, 125, 126, 16383, 16384, 16385, 65535, 65536)


def test_wss_echo_text_and_binary_sizes():
    async def main():
        async with wss() as ws:
            for n in SIZES:
                msg = "t" * n
                await ws.send(msg)
                assert await ws.recv() == msg, n
                msg = os.urandom(n)
                await ws.send(msg)
                got = await ws.recv()
                assert isinstance(got, bytes) and got == msg, (n, len(got))
            msg = "é" * 32768  # 65536 bytes of 2-byte characters
            await ws.send(msg)
            assert await ws.recv() == msg
    arun(main())


def test_wss_message_over_max_closes_1009():
    async def main():
        for payload in ("x" * (MAX + 1), os.urandom(MAX + 1)):
            async with wss() as ws:
                await ws.send(payload)
                try:
                    got = await ws.recv()
                    raise AssertionError("expected close 1009, got a %d-byte message" % len(got))
                except ConnectionClosed as e:
                    assert rcvd_code(e) == 1009, "expected close 1009, got %r" % (e,)
    arun(main())
    tls_echo(tport())


def test_wss_fragmented_messages():
    async def main():
        async with wss() as ws:
            await ws.send(["frag", "men", "ted ", "κόσμε"])
            assert await ws.recv() == "fragmented κόσμε"
            parts = [os.urandom(1000) for _ in range(60)]
            await ws.send(parts)
            assert await ws.recv() == b"".join(parts)
            # fragments straddling TLS record sizes; exactly the max
            parts = [os.urandom(16385), os.urandom(16383), os.urandom(MAX - 32768)]
            await ws.send(parts)
            assert await ws.recv() == b"".join(parts)
    arun(main())


def test_wss_ping_pong():
    async def main():
        async with wss() as ws:
            for payload in (b"", b"hello", os.urandom(125)):
                waiter = await ws.ping(payload)
                await asyncio.wait_for(waiter, 3)
            waiters = [await ws.ping(("p%d" % i).encode()) for i in range(10)]
            await asyncio.wait_for(asyncio.gather(*waiters), 3)
            await ws.send("after pings")
            assert await ws.recv() == "after pings"
    arun(main())


def test_wss_many_messages_pipelined():
    async def main():
        async with wss(max_queue=None) as ws:
            msgs = [("m%d-" % i) * (i % 40) for i in range(1000)]
            for m in msgs:
                await ws.send(m)
            for i, m in enumerate(msgs):
                assert await ws.recv() == m, i
            # 12 x 60000 B: more than the socket buffers hold, less than
            # --max-backpressure (1 MiB), so no slow-consumer close
            big = [os.urandom(60000 - 7 * i) for i in range(12)]
            for m in big:
                await ws.send(m)
            for i, m in enumerate(big):
                assert await ws.recv() == m, i
    arun(main())


def test_wss_50_concurrent_clients_both_workers():
    nclients, nmsgs = 50, 10

    async def client(srv, i, start):
        async with wss(srv=srv) as ws:
            await start.wait()
            for j in range(nmsgs):
                msg = ("c%d-m%d-" % (i, j)) * (1 + (i * 7 + j * 131) % 3000)
                if j % 2:
                    msg = msg.encode()
                await ws.send(msg)
                assert await ws.recv() == msg, (i, j)
            return True

    async def main(srv):
        start = asyncio.Event()
        tasks = [asyncio.create_task(client(srv, i, start)) for i in range(nclients)]
        await asyncio.sleep(0.3)
        start.set()
        assert await asyncio.gather(*tasks) == [True] * nclients

    with mstest.Server() as srv:
        arun(main(srv))
    acc = srv.worker_accepts()
    assert all(a > 0 for a in acc), "a worker took no client: %r" % acc
    assert sum(acc) == nclients, acc
    tot = srv.stats["total"]
    assert tot["msgs_in"] == nclients * nmsgs and tot["msgs_out"] == nclients * nmsgs, tot
    assert tot["records"] > 0, tot


def test_wss_close_handshake_codes():
    async def main():
        for code, reason in ((1000, ""), (1000, "bye"), (1001, "going"), (4999, "κόσμε")):
            async with wss() as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
                await ws.close(code, reason)
                await ws.wait_closed()
                assert ws.close_code == code, (code, ws.close_code)
    arun(main())


# ---- the self-signed default -------------------------------------------------------------

def test_self_signed_fingerprint_and_san():
    assert SRV.tls_fingerprint, "no fingerprint line in the log:\n" + SRV.stderr[:2000]
    der = peer_der(tport())
    assert fp_colon(der) == SRV.tls_fingerprint.upper(), (fp_colon(der), SRV.tls_fingerprint)
    pem = ssl.get_server_certificate(("127.0.0.1", tport()))
    assert ssl.PEM_cert_to_DER_cert(pem) == der
    path = os.path.join(TMP, "selfsigned.der")
    with open(path, "wb") as f:
        f.write(der)
    text = must([OPENSSL, "x509", "-inform", "DER", "-in", path, "-noout", "-text"])
    san = re.search(r"Subject Alternative Name:.*?\n\s*(.*)\n", text)
    assert san, text
    entries = {e.strip() for e in san.group(1).split(",")}
    assert {"DNS:localhost", "IP Address:127.0.0.1"} <= entries, entries
    assert "id-ecPublicKey" in text and "prime256v1" in text, text  # ECDSA P-256
    assert "ecdsa-with-SHA256" in text, text
    # Each process makes its own key: another server shows another cert.
    with mstest.Server() as other:
        assert other.tls_fingerprint and other.tls_fingerprint != SRV.tls_fingerprint
        assert fp_colon(peer_der(other.tls_port)) == other.tls_fingerprint


def test_self_signed_can_be_pinned_with_hostname_check():
    """Trusting the presented certificate itself: the chain verifies and
    both names match (localhost, 127.0.0.1)."""
    pem = ssl.get_server_certificate(("127.0.0.1", tport()))
    path = os.path.join(TMP, "pinned.pem")
    with open(path, "w") as f:
        f.write(pem)
    for name in ("localhost", "127.0.0.1"):
        ctx = mstest.tls_client_context(cafile=path)
        with tls_tcp(tport(), context=ctx, server_hostname=name) as s:
            assert s.getpeercert()["subject"], s.getpeercert()
    try:
        with tls_tcp(tport(), context=mstest.tls_client_context(cafile=path),
                     server_hostname="example.com"):
            raise AssertionError("hostname example.com accepted")
    except ssl.SSLCertVerificationError:
        pass


# ---- verification on: a test CA --------------------------------------------------------------

def verified_echo(srv, cafile, server_hostname="localhost", **ctxkw):
    ctx = mstest.tls_client_context(cafile=cafile, **ctxkw)

    async def main():
        async with wss(srv=srv, ctx=ctx, server_hostname=server_hostname) as ws:
            for n in (5, 16385, MAX):
                m = os.urandom(n)
                await ws.send(m)
                assert await ws.recv() == m
            return ws.transport.get_extra_info("ssl_object")
    so = arun(main())
    return so.version(), so.cipher()[0], so.getpeercert()


def cert_server(chain, key, *extra):
    return mstest.Server("--cert", chain, "--key", key, *extra)


def expect_verify_error(srv, cafile, server_hostname):
    ctx = mstest.tls_client_context(cafile=cafile)
    try:
        with tls_tcp(srv.tls_port, context=ctx, server_hostname=server_hostname):
            raise AssertionError("verification passed for %s with %s" % (server_hostname, cafile))
    except ssl.SSLCertVerificationError:
        pass


def test_ca_verified_ecdsa_chain():
    j = pki()
    with cert_server(j("ec_chain.pem"), j("ec.key")) as srv:
        ver, cipher, cert = verified_echo(srv, j("ca.pem"))
        assert dict(x[0] for x in cert["subject"])["commonName"] == "localhost", cert
        assert ("IP Address", "127.0.0.1") in cert["subjectAltName"], cert
        # the IP SAN verifies as well
        verified_echo(srv, j("ca.pem"), server_hostname="127.0.0.1")
        # the server sends the intermediate: the client only trusts the root
        out = s_client(srv.tls_port, "-CAfile", j("ca.pem"), "-verify_hostname", "localhost",
                       wait=0.2)
        assert "Verify return code: 0 (ok)" in out, out[-3000:]
        assert re.search(r"^ 1 s:CN ?= ?mstest intermediate", out, re.M), \
            "intermediate not sent:\n" + out[:3000]
        assert not re.search(r"^ 2 s:", out, re.M), out[:3000]
        expect_verify_error(srv, j("ca.pem"), "wrong.example")
        expect_verify_error(srv, j("other_ca.pem"), "localhost")
        # TLS 1.2 with the ECDSA key
        ver, cipher, _ = verified_echo(srv, j("ca.pem"), maximum_version=ssl.TLSVersion.TLSv1_2)
        assert ver == "TLSv1.2" and "ECDSA" in cipher, (ver, cipher)
        # the logged fingerprint is the leaf's
        assert srv.tls_fingerprint == fp_colon(der_of_pem(j("ec_leaf.pem"))), srv.tls_fingerprint
        assert "ec_chain.pem" in srv.stderr
        tls_echo(srv.tls_port)


def test_ca_verified_rsa_2048():
    j = pki()
    with cert_server(j("rsa_chain.pem"), j("rsa.key")) as srv:
        ver, cipher, cert = verified_echo(srv, j("ca.pem"))
        assert ver == "TLSv1.3", ver
        ver, cipher, _ = verified_echo(srv, j("ca.pem"), maximum_version=ssl.TLSVersion.TLSv1_2)
        assert ver == "TLSv1.2" and cipher.startswith("ECDHE-RSA-"), (ver, cipher)
        out = s_client(srv.tls_port, "-CAfile", j("ca.pem"), "-verify_hostname", "localhost")
        assert "Verify return code: 0 (ok)" in out and "Peer signature type: RSA-PSS" in out, out
        expect_verify_error(srv, j("other_ca.pem"), "localhost")


def test_key_formats_sec1_and_pkcs1():
    j = pki()
    with cert_server(j("ec_chain.pem"), j("ec_sec1.key")) as srv:
        verified_echo(srv, j("ca.pem"))
    with cert_server(j("rsa_chain.pem"), j("rsa_pkcs1.key")) as srv:
        verified_echo(srv, j("ca.pem"))


def expect_refused_start(*args, want=None, dev=True):
    p = subprocess.run([mstest.SERVER_BIN, "--listen", "127.0.0.1:0", "--tls-listen",
                        "127.0.0.1:0", "--cores", "1"] + (["--dev"] if dev else []) + list(args),
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=10)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 2, "expected exit status 2 for %r, got %d:\n%s" % (args, p.returncode, err)
    for pat in mstest.SANITIZER_PATTERNS:
        assert pat not in err, err
    if want:
        assert re.search(want, err, re.I), err
    return err


def test_bad_certificate_configuration_refuses_to_start():
    j = pki()
    expect_refused_start("--cert", j("ec_chain.pem"), "--key", j("rsa.key"))   # mismatch
    expect_refused_start("--cert", j("ec_chain.pem"), "--key", os.path.join(TMP, "nope.key"))
    expect_refused_start("--cert", os.path.join(TMP, "nope.pem"), "--key", j("ec.key"))
    expect_refused_start("--cert", j("ec.key"), "--key", j("ec.key"))         # not a cert
    expect_refused_start("--cert", j("ec_chain.pem"))                         # no key
    bad = os.path.join(TMP, "short.ticketkey")
    with open(bad, "wb") as f:
        f.write(os.urandom(79))
    expect_refused_start("--ticket-key-file", bad)
    expect_refused_start("--ticket-key-file", os.path.join(TMP, "nope.ticketkey"))


def test_no_certificate_refused_outside_dev():
    """The self-signed certificate is for --dev: outside it a TLS listener
    without --cert/--key does not start, and says what to give."""
    secret = ["--secret", "0123456789abcdef0123456789abcdef"]
    expect_refused_start(*secret, dev=False,
                         want=r"--tls-listen 127\.0\.0\.1:0 without a certificate: give --cert "
                              r"FILE --key FILE, or --tls-listen off")
    cert, key = mstest.test_cert()
    with mstest.Server(args=["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0",
                             "--cores", "1"] + secret + ["--cert", cert, "--key", key]) as srv:
        assert srv.tls_fingerprint == fp_colon(der_of_pem(cert)), srv.tls_fingerprint
        st = mstest.http_exchange(srv.tls_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                                  connect=mstest.tls_tcp)[0]
        assert st == 200, st


def test_listen_off_is_tls_only_or_a_clear_refusal():
    """--listen off passes the flag parser (it is an address flag like
    --tls-listen): the server must then either serve TLS only, or refuse
    at once with a usage error (status 2) that names --listen; not fail
    later with a socket error."""
    srv = mstest.Server("--listen", "off")
    try:
        srv.start()
    except mstest.ServerError:
        srv.proc.wait(10)
        err = srv.stderr
        assert srv.proc.returncode == 2 and "--listen" in err, \
            "--listen off: exit status %s, stderr:\n%s" % (srv.proc.returncode, err[-1500:])
        return
    try:
        assert srv.port is None and srv.tls_port
        tls_echo(srv.tls_port)
    finally:
        srv.stop()


# ---- session resumption ---------------------------------------------------------------------

def s_client(port, *args, wait=0.6, stdin=b""):
    """Run openssl s_client; keep stdin open `wait` seconds (so TLS 1.3
    NewSessionTickets arrive), then EOF ends it. Returns its output."""
    p = subprocess.Popen([OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port] + list(args),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        if stdin:
            p.stdin.write(stdin)
            p.stdin.flush()
        time.sleep(wait * SLOW)
        out, _ = p.communicate(timeout=10)  # closes stdin: s_client ends
    except BaseException:
        p.kill()
        p.wait()
        raise
    return out.decode("utf-8", "replace")


def session_line(out):
    m = re.search(r"^(New|Reused), (TLSv1\.[23]), Cipher is (\S+)", out, re.M)
    assert m, "no New/Reused line in s_client output:\n" + out[-3000:]
    return m.groups()


def resume_pair(port_a, port_b, proto_args, tag):
    sess = os.path.join(TMP, "sess-%s-%s" % (tag, os.urandom(4).hex()))
    out = s_client(port_a, "-sess_out", sess, *proto_args)
    kind, ver, _ = session_line(out)
    assert kind == "New", out
    assert os.path.exists(sess) and os.path.getsize(sess) > 0, \
        "no session written (no NewSessionTicket?):\n" + out[-2000:]
    out2 = s_client(port_b, "-sess_in", sess, *proto_args)
    return ver, session_line(out2)[0], out2


def test_s_client_resumption_tls13_and_tls12():
    for args, want in (((), "TLSv1.3"), (("-tls1_2",), "TLSv1.2")):
        for _ in range(3):  # lands on either worker: tickets are shared
            ver, kind, out = resume_pair(tport(), tport(), args, "local")
            assert ver == want, ver
            assert kind == "Reused", "%s session not resumed:\n%s" % (want, out[-3000:])


def test_python_resumption_across_workers():
    """python's ssl: one full handshake, then 12 resumptions (spread over
    both workers by the kernel) all reuse the session."""
    for maxv in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        ctx = ctx_noverify(maximum_version=maxv)
        with tls_tcp(tport(), context=ctx) as s:
            # read something, so TLS 1.3 tickets are processed
            s.sendall(mstest.upgrade_request("/echo")[0])
            assert s.recv(4096).startswith(b"HTTP/1.1 101 ")
            sess = s.session
            assert not s.session_reused
        assert sess is not None and sess.has_ticket, sess
        for i in range(12):
            with tls_tcp(tport(), context=ctx, session=sess) as s:
                assert s.session_reused, "resumption %d (%s) was a full handshake" % (i, maxv)
                s.sendall(mstest.upgrade_request("/echo")[0])
                assert s.recv(4096).startswith(b"HTTP/1.1 101 ")


def write_ticket_key(name, nkeys=1):
    path = os.path.join(TMP, name)
    with open(path, "wb") as f:
        f.write(os.urandom(80 * nkeys))
    return path


def test_resumption_across_processes_with_ticket_key_file():
    key = write_ticket_key("shared.ticketkey")
    with mstest.Server("--ticket-key-file", key) as a, \
            mstest.Server("--ticket-key-file", key) as b, \
            mstest.Server() as c:
        for args, want in (((), "TLSv1.3"), (("-tls1_2",), "TLSv1.2")):
            ver, kind, out = resume_pair(a.tls_port, b.tls_port, args, "ab")
            assert (ver, kind) == (want, "Reused"), \
                "session of server A not resumed on server B (%s):\n%s" % (want, out[-3000:])
            ver, kind, out = resume_pair(b.tls_port, a.tls_port, args, "ba")
            assert kind == "Reused", out[-3000:]
            # control: a process with its own random keys cannot open it
            ver, kind, out = resume_pair(a.tls_port, c.tls_port, args, "ac")
            assert kind == "New", "server C resumed a ticket of A's key:\n" + out[-3000:]
        # a restarted process with the same file resumes too
        sess = os.path.join(TMP, "sess-restart")
        assert session_line(s_client(a.tls_port, "-sess_out", sess))[0] == "New"
    with mstest.Server("--ticket-key-file", key) as a2:
        assert session_line(s_client(a2.tls_port, "-sess_in", sess))[0] == "Reused"


def test_ticket_key_file_older_keys_still_open():
    """Keys newest first: a ticket sealed with the old key (then listed
    second) still resumes."""
    old = os.urandom(80)
    new = os.urandom(80)
    f1 = os.path.join(TMP, "k1.ticketkey")
    f2 = os.path.join(TMP, "k2.ticketkey")
    open(f1, "wb").write(old)
    open(f2, "wb").write(new + old)
    with mstest.Server("--ticket-key-file", f1) as a, \
            mstest.Server("--ticket-key-file", f2) as b:
        for args in ((), ("-tls1_2",)):
            ver, kind, out = resume_pair(a.tls_port, b.tls_port, args, "old")
            assert kind == "Reused", out[-3000:]


def test_ticket_rotation_expires_old_tickets():
    """--ticket-rotate 3 without a key file: a ticket lives at least one and
    at most two rotation periods (plus the 1 s tick). 3 s, not 1 s, so a slow
    (sanitizer) run still gets its immediate resumption inside the window."""
    with mstest.Server("--ticket-rotate", "3") as srv:
        for args in ((), ("-tls1_2",)):
            sess = os.path.join(TMP, "sess-rot-%d" % len(args))
            assert session_line(s_client(srv.tls_port, "-sess_out", sess, *args))[0] == "New"
            # at once: sealed with the current key, or the previous one
            # (still kept for opening) if a rotation just happened
            assert session_line(s_client(srv.tls_port, "-sess_in", sess, *args))[0] == "Reused"
            time.sleep(7.5)
            kind = session_line(s_client(srv.tls_port, "-sess_in", sess, *args))[0]
            assert kind == "New", "a ticket older than 2 rotation periods was accepted"


# ---- versions, ciphers, groups, ALPN ---------------------------------------------------

def test_tls12_and_tls13_negotiate():
    for maxv, want in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        ctx = ctx_noverify(maximum_version=maxv)
        ctx.minimum_version = maxv
        with RawWS(tport(), connect=lambda p, t: tls_tcp(p, t, context=ctx)) as ws:
            assert ws.sock.version() == want, ws.sock.version()
            name = ws.sock.cipher()[0]
            assert "GCM" in name or "CHACHA20" in name, name
            tc.echo_roundtrip(ws, BINARY, os.urandom(20000))
            ws.send(frame(CLOSE, close_payload(1000)))
            ws.expect_close(1000)


def test_cipher_suites_and_groups():
    # TLS 1.2: both AEAD families; CBC-only clients are refused
    for c in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
              "ECDHE-ECDSA-CHACHA20-POLY1305"):
        ctx = ctx_noverify(maximum_version=ssl.TLSVersion.TLSv1_2)
        ctx.set_ciphers(c)
        with tls_tcp(tport(), context=ctx) as s:
            assert s.cipher()[0] == c, s.cipher()
    ctx = ctx_noverify(maximum_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA")
    try:
        with tls_tcp(tport(), context=ctx):
            raise AssertionError("a CBC-only TLS 1.2 client was accepted")
    except ssl.SSLError:
        pass
    # TLS 1.3 suites
    for suite in ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                  "TLS_CHACHA20_POLY1305_SHA256"):
        out = s_client(tport(), "-ciphersuites", suite, wait=0.2)
        assert session_line(out)[2] == suite, out[-2000:]
    # key exchange: X25519 by default, P-256 when it is all the client has
    for args, want in (((), "X25519"), (("-groups", "P-256"), "prime256v1"),
                       (("-tls1_2",), "X25519")):
        out = s_client(tport(), *args, wait=0.2)
        m = re.search(r"Server Temp Key: (.*)", out)
        assert m and want in m.group(1), (args, out[-2000:])
    # TLS 1.1 and older: refused
    out = s_client(tport(), "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", wait=0.2)
    assert not re.search(r"^(New|Reused), TLSv1\.[01]", out, re.M), out[-2000:]
    tls_echo(tport())


def test_alpn():
    for offer, want in ((["http/1.1"], "http/1.1"), (["h2", "http/1.1"], "http/1.1"),
                        (None, None), (["h2"], None)):
        ctx = ctx_noverify(alpn=offer)
        with RawWS(tport(), connect=lambda p, t: tls_tcp(p, t, context=ctx)) as ws:
            assert ws.sock.selected_alpn_protocol() == want, (offer, ws.sock.selected_alpn_protocol())
            tc.echo_roundtrip(ws, TEXT, b"alpn")


# ---- garbage and timeouts -----------------------------------------------------------------------

def expect_closed_maybe_alert(s, timeout=5.0):
    """The server closes; it may send a TLS alert first, never anything
    else (no plaintext HTTP on the TLS port)."""
    data = mstest.recv_until_close(s, timeout)
    if data:
        assert data[0] == 0x15 and data[1] == 0x03, "not a TLS alert: %r" % data[:60]
        assert len(data) <= 64, data
    return data


def test_garbage_plain_http_to_tls_port():
    for req in (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", mstest.upgrade_request("/echo")[0]):
        with mstest.tcp(tport()) as s:
            s.sendall(req)
            expect_closed_maybe_alert(s)
        tls_echo(tport())


def test_garbage_random_bytes():
    for data in (os.urandom(1), os.urandom(3000),
                 b"\x16\x03\x01\x00\x40" + os.urandom(64),       # handshake record, junk body
                 b"\x16\x03\x01\xff\xff" + os.urandom(2000),     # oversized record length
                 b"\x17\x03\x03\x00\x20" + os.urandom(32),       # app data before a handshake
                 b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10" + os.urandom(37)):  # SSLv2 hello
        with mstest.tcp(tport()) as s:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            if len(data) == 1:
                # one byte is a valid start: only the timeout closes it, so
                # follow it with junk that completes a bogus record
                try:
                    s.sendall(b"\x03\x01\x00\x05" + os.urandom(5))
                except (BrokenPipeError, ConnectionResetError):
                    pass
            expect_closed_maybe_alert(s)
        tls_echo(tport())


def client_hello():
    ctx = ctx_noverify()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    assert hello[:1] == b"\x16" and len(hello) > 100, hello[:10]
    return hello


def test_handshake_timeouts():
    """--handshake-timeout 2: timers tick once a second and never fire
    early, so a stalled connection closes after [2, 3) s."""
    with mstest.Server("--handshake-timeout", "2") as srv:
        hello = client_hello()

        def timed(setup, label):
            with mstest.tcp(srv.tls_port) as s:
                t0 = time.monotonic()
                setup(s)
                data = mstest.recv_until_close(s, timeout=6)
                dt = time.monotonic() - t0
                assert 1.9 <= dt <= 3.6, "%s: closed after %.2fs" % (label, dt)
                assert not data or data[:2] == b"\x15\x03", (label, data[:60])
            tls_echo(srv.tls_port)

        timed(lambda s: None, "idle TCP connection")
        timed(lambda s: s.sendall(hello[:len(hello) // 2]), "truncated ClientHello")
        timed(lambda s: s.sendall(hello[:3]), "3 bytes of a ClientHello")

        # TLS done, no HTTP request: 408 over TLS, then the close
        t0 = time.monotonic()
        with tls_tcp(srv.tls_port) as s:
            try:
                data = mstest.recv_until_close(s, timeout=6)
            except ssl.SSLError as e:
                raise AssertionError("no 408 over TLS, no close_notify after %.2fs: %r"
                                     % (time.monotonic() - t0, e))
        dt = time.monotonic() - t0
        assert 1.9 <= dt <= 3.6, dt
        assert data, "TLS connection closed without the 408 answer"
        st, _, _ = mstest.parse_http_response(data)
        assert st == 408, data[:100]
        # a partial request over TLS
        with tls_tcp(srv.tls_port) as s:
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
            try:
                data = mstest.recv_until_close(s, timeout=6)
            except ssl.SSLError as e:
                raise AssertionError("no 408 over TLS: %r" % e)
        assert data and mstest.parse_http_response(data)[0] == 408, data[:100]
        # an open wss connection is past the handshake: not closed at 2 s
        with RawWS(srv.tls_port, connect=tls_tcp) as ws:
            ws.no_frame_within(3.2)
            tc.echo_roundtrip(ws, TEXT, b"past the handshake")


# ---- hand-driven TLS records (memory BIOs over a raw socket) -----------------------------

class BioClient:
    """A TLS client whose every record and TCP write the test controls."""

    def __init__(self, port, ctx=None):
        self.sock = mstest.tcp(port)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = (ctx or ctx_noverify()).wrap_bio(self.inc, self.out,
                                                    server_hostname="localhost")
        self.plain = b""

    def close(self):
        self.sock.close()

    def _send(self, data, bytewise, delay=0.0005):
        if not bytewise:
            self.sock.sendall(data)
            return
        for i in range(len(data)):
            self.sock.send(data[i:i + 1])
            if delay:
                time.sleep(delay)

    def _recv_into_bio(self, timeout=5.0):
        self.sock.settimeout(timeout)
        d = self.sock.recv(65536)
        if not d:
            self.inc.write_eof()
            raise EOFError("server closed")
        self.inc.write(d)

    def handshake(self, bytewise=False):
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._send(self.out.read(), bytewise)
                self._recv_into_bio()
        self._send(self.out.read(), bytewise)

    def records(self, *chunks):
        """Ciphertext: one record per chunk (each write call is a record)."""
        for c in chunks:
            self.obj.write(c)
        return self.out.read()

    def read_plain(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(self.plain) < n:
            try:
                self.plain += self.obj.read(65536)
                continue
            except ssl.SSLWantReadError:
                pass
            assert time.monotonic() < deadline, "timed out; have %r" % self.plain[:80]
            self._recv_into_bio(max(0.05, deadline - time.monotonic()))
        out, self.plain = self.plain[:n], self.plain[n:]
        return out


def upgrade_over(bc, bytewise=False):
    req, key = mstest.upgrade_request("/echo")
    bc._send(bc.records(req), bytewise)
    head = b""
    while b"\r\n\r\n" not in head:
        head += bc.read_plain(1)
    assert head.startswith(b"HTTP/1.1 101 "), head


def test_handshake_and_session_one_byte_per_tcp_segment():
    bc = BioClient(tport())
    try:
        bc.handshake(bytewise=True)
        req, key = mstest.upgrade_request("/echo")
        # one record per byte of the upgrade request, each its own segment
        bc._send(bc.records(*[req[i:i + 1] for i in range(len(req))]), True, delay=0)
        head = b""
        while b"\r\n\r\n" not in head:
            head += bc.read_plain(1)
        assert head.startswith(b"HTTP/1.1 101 "), head
        msg = "κόσμε 😀".encode()
        f = frame(TEXT, msg)
        bc._send(bc.records(*[f[i:i + 1] for i in range(len(f))]), False)
        assert bc.read_plain(2 + len(msg)) == b"\x81" + bytes([len(msg)]) + msg
        # one 16 KiB record split into TCP segments at odd places
        data = os.urandom(16000)
        ct = bc.records(frame(BINARY, data))
        for a, b in ((0, 1), (1, 6), (6, 5000), (5000, 5001), (5001, len(ct))):
            bc._send(ct[a:b], False)
            time.sleep(0.01)
        assert bc.read_plain(4 + 16000) == b"\x82\x7e" + (16000).to_bytes(2, "big") + data
    finally:
        bc.close()
    tls_echo(tport())


def test_many_records_in_one_tcp_write():
    bc = BioClient(tport())
    try:
        bc.handshake()
        upgrade_over(bc)
        payloads = [os.urandom(i * 37 % 3000) for i in range(200)]
        bc._send(bc.records(*[frame(BINARY, p) for p in payloads]), False)
        for p in payloads:
            n = len(p)
            hdr = b"\x82" + (bytes([n]) if n < 126 else b"\x7e" + n.to_bytes(2, "big"))
            assert bc.read_plain(len(hdr) + n) == hdr + p
    finally:
        bc.close()


def test_corrupted_record_closes_that_connection_only():
    other = RawWS(tport(), connect=tls_tcp)
    bc = BioClient(tport())
    try:
        bc.handshake()
        upgrade_over(bc)
        ct = bytearray(bc.records(frame(TEXT, b"tampered")))
        ct[-3] ^= 0x40  # inside the AEAD tag
        bc._send(bytes(ct), False)
        bc.sock.settimeout(5)
        data = mstest.recv_until_close(bc.sock, 5)
        bc.inc.write(data)
        try:
            got = bc.obj.read(100)
            raise AssertionError("server answered a corrupted record with %r" % got)
        except ssl.SSLError as e:  # the alert (bad_record_mac) or EOF
            assert "BAD_RECORD_MAC" in str(e).upper() or isinstance(e, ssl.SSLEOFError) \
                or "EOF" in str(e).upper(), e
        tc.echo_roundtrip(other, TEXT, b"unaffected")
    finally:
        bc.close()
        other.close_socket()
    tls_echo(tport())


def test_tls12_renegotiation_refused():
    """s_client's "R" asks for a renegotiation; the server refuses (no
    second handshake) and keeps serving."""
    out = s_client(tport(), "-tls1_2", wait=1.0, stdin=b"R\n")
    assert "RENEGOTIATING" in out, out[-2000:]
    assert "alert no renegotiation" in out, "renegotiation not refused:\n" + out[-3000:]
    tls_echo(tport())


def test_peer_vanishes_mid_record():
    for cut in (3, 20):
        bc = BioClient(tport())
        bc.handshake()
        upgrade_over(bc)
        ct = bc.records(frame(BINARY, os.urandom(5000)))
        bc._send(ct[:cut], False)
        bc.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        bc.close()  # RST
    time.sleep(0.2)
    tls_echo(tport())


# ---- HTTP and chat over TLS -----------------------------------------------------------------------

def test_healthz_over_tls():
    try:
        st, h, body = mstest.http_exchange(tport(), b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                                           connect=tls_tcp)
    except ssl.SSLError as e:
        raise AssertionError("GET /healthz over TLS: no answer and no close_notify (%r)" % e)
    assert st == 200 and body.strip() == b"ok", (st, body)


def test_ws_chat_join_publish_over_wss():
    s = "tls-stream-%s" % os.urandom(4).hex()

    async def conn(user, tls):
        if tls:
            return await wss("/ws?user=%d" % user)
        return await websockets.connect("ws://127.0.0.1:%d/ws?user=%d" % (SRV.port, user),
                                        ping_interval=None, compression=None)

    seen = {}  # ws -> every parsed message, in arrival order

    async def next_msg(ws):
        m = json.loads(await asyncio.wait_for(ws.recv(), 5 * SLOW))
        seen.setdefault(ws, []).append(m)
        return m

    async def req(ws, rid, **o):
        o["id"] = rid
        await ws.send(json.dumps(o))
        for m in seen.get(ws, []):
            if m.get("id") == rid:
                return m
        while True:
            m = await next_msg(ws)
            if m.get("id") == rid:
                return m

    async def msgs(ws, n):
        def got():
            return [(m["seq"], m["from"], m["data"]) for m in seen.get(ws, [])
                    if m.get("event") == "message" and m.get("stream") == s]
        while len(got()) < n:
            await next_msg(ws)
        return got()

    async def main():
        a = await conn(1001, True)
        b = await conn(1002, True)
        c = await conn(1003, False)  # plain ws in the same stream
        for i, ws in enumerate((a, b, c)):
            j = await req(ws, 1, op="join", stream=s)
            assert j.get("ok") is True and j["seq"] == 0, j
        N = 40
        for i in range(N):
            o = await req(a if i % 2 == 0 else c, 100 + i, op="publish", stream=s,
                          data={"i": i, "pad": "x" * (i * 500)})
            assert o.get("ok") is True and o["seq"] == i + 1, o
        for ws in (a, b, c):
            got = await msgs(ws, N)
            assert [g[0] for g in got] == list(range(1, N + 1)), got
            assert [g[2]["i"] for g in got] == list(range(N))
            assert [g[1] for g in got] == [("1001" if i % 2 == 0 else "1003") for i in range(N)]
        for ws in (a, b, c):
            await ws.close()
    arun(main())


def test_sigterm_sends_1001_to_wss_clients():
    async def main(srv):
        conns = [await wss("/echo", srv=srv) for _ in range(10)]
        conns.append(await wss("/ws?user=7", srv=srv))
        for i, ws in enumerate(conns[:10]):
            await ws.send("m%d" % i)
            assert await ws.recv() == "m%d" % i
        srv.terminate()
        codes = []
        for ws in conns:
            try:
                got = await asyncio.wait_for(ws.recv(), 5)
                raise AssertionError("expected close, got %r" % got)
            except ConnectionClosed as e:
                codes.append(rcvd_code(e))
        assert codes == [1001] * len(conns), "close codes received: %r" % codes

    with mstest.Server("--drain-timeout", "10") as srv:
        arun(main(srv))
        t0 = time.monotonic()
        srv.stop(timeout=15)
        assert time.monotonic() - t0 < 5, time.monotonic() - t0


def test_raw_close_handshake_ends_with_close_notify():
    """After the close frames, the server says close_notify (a clean TLS
    EOF), not a bare TCP close."""
    with RawWS(tport(), connect=tls_tcp) as ws:
        ws.send(frame(TEXT, b"x"))
        assert ws.recv_message() == (TEXT, b"x")
        ws.send(frame(CLOSE, close_payload(1000, b"bye")))
        try:
            ws.expect_close(1000)
        except ssl.SSLEOFError as e:
            raise AssertionError("server closed TCP without close frame/close_notify: %r" % e)


# ---- test_conformance.py over TLS ------------------------------------------------------------

class TlsRawWS(RawWS):
    def __init__(self, port, path="/echo", timeout=5.0, extra="", connect=None):
        super().__init__(port, path, timeout, extra, connect=connect or tls_tcp)


CONFORMANCE = [
    "test_echo_sizes_and_length_encodings", "test_server_length_encoding_on_the_wire",
    "test_many_frames_in_one_write", "test_unmasked_frame_is_1002",
    "test_unmasked_after_good_frames_is_1002", "test_rsv_bits_are_1002",
    "test_reserved_opcodes_are_1002", "test_control_frame_over_125_is_1002",
    "test_fragmented_control_is_1002", "test_continuation_without_start_is_1002",
    "test_new_data_frame_during_fragmentation_is_1002", "test_fragmented_message_reassembled",
    "test_ping_between_fragments", "test_ping_pong_payloads", "test_non_minimal_lengths_are_1002",
    "test_64bit_length_msb_set_is_error", "test_invalid_utf8_single_frame_is_1007",
    "test_invalid_utf8_truncated_at_end_of_message_is_1007",
    "test_invalid_utf8_across_fragments_is_1007", "test_invalid_utf8_byte_by_byte_is_1007",
    "test_valid_utf8_split_across_fragments", "test_binary_is_not_utf8_checked",
    "test_close_with_1_byte_payload_is_1002", "test_invalid_close_codes_are_1002",
    "test_valid_close_codes_are_echoed", "test_empty_close_answered_with_empty_close",
    "test_close_reason_utf8", "test_close_after_messages_flushes_echoes_first",
    "test_close_during_fragmented_message", "test_message_over_max_is_1009",
    "test_fragmented_message_over_max_is_1009", "test_huge_declared_length_is_1009_without_payload",
    "test_http_healthz_200", "test_http_malformed_is_400_and_closed",
    "test_http_version_12_is_426_with_header", "test_http_unknown_path_is_404",
    "test_ws_route_dev_mode",
]


def _conformance_over_tls(name):
    fn = getattr(tc, name)

    def test():
        tc.SRV = SRV
        tc.port = tport
        tc.RawWS = TlsRawWS
        tc.assert_echo = lambda port, *a, **k: mstest.assert_echo(port, *a, connect=tls_tcp, **k)
        tc.http_exchange = lambda port, req, *a, **k: mstest.http_exchange(
            port, req, *a, connect=tls_tcp, **k)
        fn()
    test.__name__ = "test_tls_conf_" + name[5:]
    return test


for _n in CONFORMANCE:
    globals()["test_tls_conf_" + _n[5:]] = _conformance_over_tls(_n)


if __name__ == "__main__":
    mstest.run(globals(), setup=setup, teardown=teardown)
