"""STLS (RFC 2595), implicit TLS and the cleartext policy (issue 10),
against a real sdpsd with real OpenSSL on both ends (Python's ssl).

Daemon(tls=True) serves three listeners: d.port (plain), d.stls_port
(tls=starttls) and d.tls_port (tls=implicit), with tlsutil's test
certificate; clients trust only the test CA.  Verdicts come from replies
and log lines; deadlines are asserted as "closed within a generous
multiple of the limit", never as a measured time."""

import contextlib
import ctypes
import os
import shutil
import socket
import ssl
import subprocess

import pytest

from daemon import (Daemon, HOST, PW1, Pop3, finish_fsck,
                    tls_client_context)
from daemon import tls_daemon as tlsd, tls_strict as strict  # noqa: F401

FSCK_AFTER = True
HANDSHAKE_S = 2
finish = finish_fsck


def names(caps):
    return [c.split()[0].upper() for c in caps]


def sasl_line(caps):
    return [c for c in caps if c.upper().startswith("SASL")]


# ------------------------------------------------------------ CAPA --

def test_capa_before_and_after_stls(strict):
    with strict.connect(port=strict.stls_port) as p:
        before = p.capa()
        assert "STLS" in names(before)
        assert "USER" not in names(before)
        assert sasl_line(before) == []
        p.stls(strict.client_context())
        assert p.tls_version in ("TLSv1.2", "TLSv1.3")
        after = p.capa()
        assert "STLS" not in names(after)
        assert "USER" in names(after)
        assert sasl_line(after) == ["SASL PLAIN LOGIN"]
        p.login(HOST, PW1)
        assert "STLS" not in names(p.capa())
        assert p.quit().startswith("+OK")


def test_capa_per_listener(strict):
    with strict.connect() as p:                 # plain: nothing to offer
        caps = names(p.capa())
        assert "STLS" not in caps and "USER" not in caps
        assert "SASL" not in caps
    with strict.connect_tls() as p:             # implicit: TLS already
        caps = p.capa()
        assert "STLS" not in names(caps)
        assert "USER" in names(caps)
        assert sasl_line(caps) == ["SASL PLAIN LOGIN"]


def test_capa_loopback_default(tlsd):
    """The default policy trusts a loopback peer: USER and SASL in clear,
    STLS offered alongside on the STLS port."""
    with tlsd.connect(port=tlsd.stls_port) as p:
        caps = names(p.capa())
        assert "STLS" in caps and "USER" in caps and "SASL" in caps
    with tlsd.connect() as p:
        caps = names(p.capa())
        assert "STLS" not in caps and "USER" in caps


# ------------------------------------------------------- injection --

def test_pipelined_command_after_stls_is_discarded(tlsd):
    """CVE-2011-0411: "STLS\\r\\nUSER x\\r\\n" in one segment.  The USER was
    sent in clear and must never be executed: the first reply inside TLS
    is CAPA's, and a PASS then finds no USER."""
    with tlsd.connect(port=tlsd.stls_port) as p:
        p.send_raw(b"STLS\r\nUSER " + HOST.encode() + b"\r\n")
        r = p.line()
        assert r.startswith("+OK begin TLS"), r
        # nothing else in clear: an answer to USER would be here (or
        # break the handshake below)
        assert p.buf == b""
        p.sock = tlsd.client_context().wrap_socket(
            p.sock, server_hostname="localhost")
        p.send("CAPA")
        first = p.line()
        assert first == "+OK capability list follows", first
        p.multi_body()
        r = p.cmd("PASS " + PW1)
        assert r == "-ERR USER first", r
        p.login(HOST, PW1)
        assert p.quit().startswith("+OK")
    assert not [e for e in tlsd.session_events("login")
                if e.get("tls") == "none"]


# ------------------------------------------------ STLS refusals --

def test_stls_twice(tlsd):
    with tlsd.connect_stls() as p:
        r = p.cmd("STLS")
        assert r == "-ERR already using TLS", r
        p.login(HOST, PW1)
        assert p.quit().startswith("+OK")


def test_stls_after_user(tlsd):
    with tlsd.connect(port=tlsd.stls_port) as p:
        p.ok("USER " + HOST)
        r = p.cmd("STLS")
        assert r == "-ERR STLS only before USER or AUTH", r
        # still in clear, and nothing changed: the USER stands
        assert p.tls_version is None
        assert p.ok("PASS " + PW1).startswith("+OK maildrop")
        r = p.cmd("STLS")
        assert r.startswith("-ERR"), r
        p.quit()


def test_stls_after_failed_user_or_auth(tlsd):
    for first in ("USER -not-a-host-", "AUTH PLAIN !!!!"):
        with tlsd.connect(port=tlsd.stls_port) as p:
            assert p.cmd(first).startswith("-ERR")
            r = p.cmd("STLS")
            assert r == "-ERR STLS only before USER or AUTH", (first, r)
            p.quit()


def test_stls_on_plain_and_implicit_listeners(tlsd):
    with tlsd.connect() as p:
        assert p.cmd("STLS") == "-ERR STLS not offered on this port"
        p.login(HOST, PW1)
        p.quit()
    with tlsd.connect_tls() as p:
        assert p.cmd("STLS") == "-ERR already using TLS"
        p.login(HOST, PW1)
        p.quit()


# ---------------------------------------------- cleartext policy --

def test_cleartext_refused_with_allow_no(strict):
    with strict.connect(port=strict.stls_port) as p:
        r = p.cmd("USER " + HOST)
        assert r == ("-ERR [AUTH] cleartext login refused, use STLS or TLS"
                     " on port %d" % strict.tls_port), r
        # a PASS anyway is refused unread
        assert p.cmd("PASS " + PW1).startswith("-ERR [AUTH] cleartext")
        assert p.cmd("AUTH PLAIN AGZyZWQuZXhhbXBsZS5uZXQAZmlyc3Qgc2VjcmV0"
                     ).startswith("-ERR [AUTH] cleartext")
        # the refusals changed nothing: STLS is still allowed
        p.stls(strict.client_context())
        p.login(HOST, PW1)
        assert p.quit().startswith("+OK")
    with strict.connect() as p:
        r = p.cmd("USER " + HOST)
        assert r == ("-ERR [AUTH] cleartext login refused, use TLS on"
                     " port %d" % strict.tls_port), r
    assert not strict.session_events("auth-fail")
    assert strict.status()["auth"]["failures"] == 0


def test_cleartext_allowed_with_yes():
    """yes: USER/PASS in clear even on the STLS port, where CAPA then
    lists USER, SASL and STLS together."""
    d = Daemon(tls=True, server={"allow_cleartext": "yes"})
    try:
        with d.connect(port=d.stls_port) as p:
            caps = names(p.capa())
            assert "USER" in caps and "STLS" in caps and "SASL" in caps
            p.login(HOST, PW1)
            p.quit()
        assert [e["tls"] for e in d.session_events("login")] == ["none"]
    finally:
        finish(d)


# --------------------------------- a peer that is not on loopback --

CLONE_NEWNET = 0x40000000


def _setns(fd):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


@contextlib.contextmanager
def netns(addr):
    """This thread (and what it starts) in a fresh network namespace with
    lo and a veth pair (this kernel has no dummy driver), one end holding
    addr/24; removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (ip)")
    name = "sdps-tls-%d" % os.getpid()
    ip = ["ip", "-n", name]

    def run(*a):
        subprocess.run(a, check=True, capture_output=True)
    run("ip", "netns", "add", name)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        run(*ip, "link", "set", "lo", "up")
        run(*ip, "link", "add", "sdps0", "type", "veth", "peer", "name",
            "sdps1")
        run(*ip, "addr", "add", addr + "/24", "dev", "sdps0")
        run(*ip, "link", "set", "sdps0", "up")
        run(*ip, "link", "set", "sdps1", "up")
        fd = os.open("/var/run/netns/" + name, os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


ADDR = "10.199.77.1"


def test_cleartext_refused_by_default_off_loopback():
    """The default policy on a real non-loopback address (a network
    namespace of our own): USER refused with the way to TLS, CAPA
    without USER and SASL; after STLS the login works."""
    with netns(ADDR):
        d = Daemon(tls=True, host=ADDR)
        try:
            with d.connect(port=d.stls_port) as p:
                assert p.sock.getpeername()[0] == ADDR
                caps = names(p.capa())
                assert "STLS" in caps
                assert "USER" not in caps and "SASL" not in caps
                r = p.cmd("USER " + HOST)
                assert r.startswith("-ERR [AUTH] cleartext login refused,"
                                    " use STLS or TLS on port"), r
                assert p.cmd("PASS " + PW1).startswith("-ERR [AUTH]")
                p.stls(d.client_context())
                p.login(HOST, PW1)
                p.quit()
            with d.connect() as p:
                assert p.cmd("USER " + HOST).startswith("-ERR [AUTH]")
            with d.connect_tls() as p:
                p.login(HOST, PW1)
                p.quit()
        finally:
            finish(d)


def test_cleartext_allowed_by_yes_off_loopback():
    with netns(ADDR):
        d = Daemon(tls=True, host=ADDR, server={"allow_cleartext": "yes"})
        try:
            with d.connect() as p:
                assert "USER" in names(p.capa())
                p.login(HOST, PW1)
                p.quit()
        finally:
            finish(d)


# --------------------------------------------- the login's tls= --

def test_login_line_and_slot_say_tls(tlsd):
    with tlsd.connect_tls() as p:
        p.login(HOST, PW1)
        ver = p.tls_version
        cipher = p.sock.cipher()[0]
        rows = tlsd.wait_sessions(
            lambda ss: [s for s in ss if s.get("tls")], what="tls slot")
        assert ver in rows[0]["tls"], rows
        p.quit()
    with tlsd.connect_stls() as p:
        p.login(HOST, PW1)
        p.quit()
    with tlsd.connect() as p:
        p.login(HOST, PW1)
        p.quit()
    logins = tlsd.session_events("login")
    assert len(logins) == 3
    assert logins[0]["tls"].startswith(ver + "/"), logins[0]
    assert cipher in logins[0]["tls"] or ver == "TLSv1.3", logins[0]
    assert logins[0]["ktls"] in ("yes", "no")
    assert logins[1]["tls"].startswith("TLSv1.")
    assert logins[2]["tls"] == "none" and logins[2]["ktls"] == "no"
    assert [e["mode"] for e in tlsd.session_events("tls")] == \
        ["implicit", "starttls"]


# ------------------------------------------------ handshake deadline --

@pytest.fixture
def onew():
    """One worker only, so "the worker is free again" is observable: a
    new login can only be served once the stalled session has ended."""
    d = Daemon(tls=True, server={"min_spare": 1, "max_spare": 1,
                                 "max_workers": 1},
               overrides={"tls": {"handshake_timeout": HANDSHAKE_S}})
    yield d
    finish(d)


def raw_until_closed(d, send=b""):
    """A TCP client on the implicit port that sends send (no TLS) and
    reads until the server closes, within a generous multiple of the
    handshake deadline; what it got."""
    s = socket.create_connection(("127.0.0.1", d.tls_port), timeout=60)
    data = b""
    try:
        if send:
            s.sendall(send)
        s.settimeout(10 * HANDSHAKE_S + 20)
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return data
            data += chunk
    finally:
        s.close()


def test_implicit_client_that_never_says_hello(onew):
    # no greeting before TLS: nothing at all, then the close at the
    # handshake deadline
    assert raw_until_closed(onew) == b""
    onew.wait_log(r"event=tls-fail mode=implicit reason=timeout")
    with onew.connect_tls() as p:
        p.login(HOST, PW1)
        p.quit()


def test_stls_then_nothing(onew):
    with onew.connect(port=onew.stls_port) as p:
        assert p.ok("STLS").startswith("+OK begin TLS")
        assert p.closed(timeout=10 * HANDSHAKE_S + 20)
    onew.wait_log(r"event=tls-fail mode=starttls reason=timeout")
    with onew.connect_stls() as p:
        p.login(HOST, PW1)
        p.quit()


def test_garbage_instead_of_client_hello(onew):
    data = raw_until_closed(onew, b"USER " + HOST.encode() + b"\r\n")
    assert b"+OK" not in data       # at most a TLS alert
    onew.wait_log(r"event=tls-fail mode=implicit")
    with onew.connect_tls() as p:
        p.login(HOST, PW1)
        p.quit()


# --------------------------------------------------- old protocols --

@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1,
                                     ssl.TLSVersion.TLSv1_1])
def test_tls10_and_11_refused(tlsd, version):
    ctx = tls_client_context(tlsd.certs.ca, maximum_version=version)
    # let the client offer the old protocol at all (OpenSSL 3's default
    # security level refuses it on the client side already)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    # the server's refusal: its protocol_version alert
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        Pop3("127.0.0.1", tlsd.tls_port, tls=ctx, timeout=30)
    tlsd.wait_log(r"event=tls-fail mode=implicit")
    with tlsd.connect(port=tlsd.stls_port) as p:
        p.ok("STLS")
        with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
            ctx.wrap_socket(p.sock, server_hostname="localhost")
    tlsd.wait_log(r"event=tls-fail mode=starttls")
    assert not tlsd.session_events("login")
