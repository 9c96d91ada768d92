"""The punt server (issue 11): a real sdpsd with a punt_listen listener on
127.0.0.1, driven by Python's ssl module as the front end
(docs/punt-protocol.md).

The fixture makes a throwaway CA (tlsutil's), the server certificate, and
client certificates: fe1 (allowed), fe2 (signed, not on the allow-list),
and rogue (fe1's name, signed by another CA).  Every wait is a bounded
poll for a state change (the server's EOF, a log line, a lock that is
free), never a sleep that decides a verdict.
"""

import os
import re
import signal
import socket
import ssl

import pytest

import harness
import tlsutil
from daemon import Daemon, Pop3, Pop3Error, free_port, wait_for

HOST = "fred.example.net"
OTHER = "other.example.net"
PUNT = "finchley"
MAX_OCTETS = 8192


def _client_leaf(d, name, ca, ca_key, cn, san):
    """A client certificate (extendedKeyUsage clientAuth) signed by ca."""
    return tlsutil.sign_leaf(d, name, ca, ca_key, cn, san, "clientAuth")


class Certs:
    pass


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    base = tlsutil.test_certs()
    d = str(tmp_path_factory.mktemp("punt-certs"))
    c = Certs()
    c.ca, c.cert, c.key = base.ca, base.cert, base.key
    c.fe1 = _client_leaf(d, "fe1", base.ca, base.ca_key, "fe1",
                         "DNS:fe1.example.net")
    c.fe2 = _client_leaf(d, "fe2", base.ca, base.ca_key, "fe2",
                         "DNS:fe2.example.net")
    # No SAN: the CN is matched.
    c.fe3 = _client_leaf(d, "fe3", base.ca, base.ca_key, "fe3.example.net",
                         None)
    rd = os.path.join(d, "rogue")
    os.mkdir(rd)
    rca, rkey = tlsutil.make_ca(rd, cn="rogue CA")
    c.rogue = _client_leaf(rd, "rogue", rca, rkey, "rogue",
                           "DNS:fe1.example.net")
    return c


def _daemon(certs, idle=None, server=None):
    port = free_port()
    ps = {"ca": certs.ca, "allow": "fe1.example.net fe3.example.net"}
    if idle is not None:
        ps["idle_timeout"] = idle
    srv = {"punt_listen": "127.0.0.1:%d %s" % (port, PUNT)}
    srv.update(server or {})
    d = Daemon(npunts=1, server=srv,
               overrides={"tls": {"cert": certs.cert, "key": certs.key},
                          "punt_server": ps,
                          "store": {"max_message_size": MAX_OCTETS}},
               hosts=((HOST, "pw1"), (OTHER, "pw2")))
    d.punt_port = port
    return d


@pytest.fixture(scope="module")
def psd(certs):
    d = _daemon(certs)
    yield d
    d.cleanup()


def ctx_for(certs, leaf=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if leaf is not None:
        ctx.load_cert_chain(*leaf)
    return ctx


class Link(Pop3):
    """A front end's end of the link: Pop3's line I/O plus counted data."""

    def counted(self, line):
        """Send a BODY/TOP command: (reply, the N octets or None)."""
        r = self.cmd(line)
        if not r.startswith("+OK "):
            return r, None
        n = int(r.split()[1])
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return r, data

    def deliver(self, host, sender, data, rcpts, body=None, n=None):
        body = len(unstuff(data)) if body is None else body
        n = len(data) if n is None else n
        self.send_raw(("DELIVER %s %s %d %d %s\r\n"
                       % (host, sender, n, body, " ".join(rcpts)))
                      .encode("latin-1") + data)
        return self.line()


def link(d, certs, leaf="fe1"):
    return Link("127.0.0.1", d.punt_port,
                tls=ctx_for(certs, getattr(certs, leaf)))


def unstuff(data):
    """Stored wire data without its stuffing (what POP3 counts)."""
    if data.startswith(b".."):
        data = data[1:]
    return data.replace(b"\r\n..", b"\r\n.")


def xtext_decode(s):
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), s)


def wire(text):
    """Wire format of a message text (as store_put takes it)."""
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out = ""
    for ln in lines:
        out += ("." + ln if ln.startswith(".") else ln) + "\r\n"
    return out.encode("latin-1")


def refused(d, ctx):
    """True if the link got no greeting (the handshake or the first read
    failed, or the server closed at once)."""
    s = socket.create_connection(("127.0.0.1", d.punt_port), timeout=20)
    try:
        try:
            ss = ctx.wrap_socket(s, server_hostname="localhost")
        except (ssl.SSLError, OSError):
            return True
        try:
            data = ss.recv(1024)
        except (ssl.SSLError, OSError):
            return True
        finally:
            ss.close()
        return data == b""
    finally:
        s.close()


def messages(d, host=HOST):
    return {m["id"]: m for m in d.spool_ls(host=host)["messages"]}


def tmp_files(d):
    return os.listdir(os.path.join(d.spool.punt_paths[PUNT], "tmp"))


# ------------------------------------------------------------ the link --

def test_greeting_and_capa(psd, certs):
    psd.deliver_ok(harness.simple_message(), "a@" + HOST)
    uid = next(iter(messages(psd).values()))["uidl"].split("-")[0]
    with link(psd, certs) as ln:
        assert ln.greeting == "+OK sdps-punt %s %s" % (PUNT, uid)
        assert ln.tls_version == "TLSv1.3"
        assert ln.capa() == ["SDPS-PUNT 1", "XCLIENT", "DELIVER"]
        assert ln.ok("NOOP") == "+OK"
        assert ln.cmd("QUIT") == "+OK bye"
        assert ln.closed()


def test_refused_certificates(psd, certs):
    # The check below can fail: an allowed front end is greeted.
    assert not refused(psd, ctx_for(certs, certs.fe1))
    # Not signed by the CA: fails the handshake, never greeted.
    assert refused(psd, ctx_for(certs, certs.rogue))
    psd.wait_log(r"event=link-refused.*CN=rogue DNS=fe1\.example\.net")
    # Signed, but not on the allow-list.
    assert refused(psd, ctx_for(certs, certs.fe2))
    psd.wait_log(r"event=link-refused.*CN=fe2 DNS=fe2\.example\.net: "
                 r"not in \[punt_server\] allow")
    # No certificate at all.
    assert refused(psd, ctx_for(certs))
    # TLS 1.2 is not accepted.
    ctx = ctx_for(certs, certs.fe1)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    assert refused(psd, ctx)
    # The CN is matched when there is no DNS subjectAltName.
    with link(psd, certs, "fe3") as ln:
        assert ln.greeting.startswith("+OK sdps-punt " + PUNT)
    # Plain text: no greeting either.
    s = socket.create_connection(("127.0.0.1", psd.punt_port), timeout=20)
    s.sendall(b"CAPA\r\n")
    data = b""
    try:
        while True:
            chunk = s.recv(1024)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    s.close()
    assert b"+OK" not in data


def test_protocol_errors(psd, certs):
    with link(psd, certs) as ln:
        assert ln.cmd("FROB").startswith("-ERR [PROTO]")
        assert ln.cmd("XLIST").startswith("-ERR [PROTO]")
        assert ln.cmd("BODY 1").startswith("-ERR [PROTO]")
        assert ln.cmd("SELECT ../etc").startswith("-ERR [PROTO]")
        assert ln.cmd("SELECT  %s" % HOST).startswith("-ERR [PROTO]")
        assert ln.cmd("XCLIENT ADDR=1.2.3.4 FOO=1").startswith(
            "-ERR [PROTO]")
        assert ln.ok("SELECT " + HOST) == "+OK locked"
        assert ln.cmd("SELECT " + HOST) == "-ERR [PROTO] already selected"
        assert ln.cmd("RD x").startswith("-ERR [PROTO]")
        assert ln.cmd("DELE " + " ".join(["1"] * 65)).startswith(
            "-ERR [PROTO]")
        ln.ok("UNSELECT")


def test_xclient_in_log(psd, certs):
    with link(psd, certs) as ln:
        assert ln.ok("XCLIENT ADDR=192.0.2.7 PORT=51234 "
                     "SID=00000000000004d2") == "+OK"
        ln.ok("SELECT " + HOST)
        ln.ok("UNSELECT")
    psd.wait_log(r'fe="CN=fe1 DNS=fe1\.example\.net" client=192\.0\.2\.7 '
                 r'cport=51234 csid=00000000000004d2 event=link-lock')


def test_long_line_closes(psd, certs):
    with link(psd, certs) as ln:
        ln.send("NOOP " + "A" * 17000)
        assert ln.line() == "-ERR [PROTO] line too long"
        assert ln.closed()


# ---------------------------------------------------------------- locks --

def test_in_use_and_eof_frees(psd, certs):
    a = link(psd, certs)
    b = link(psd, certs)
    try:
        a.ok("SELECT " + HOST)
        assert b.cmd("SELECT " + HOST) == "-ERR [IN-USE] maildrop in use"
        # A user session is excluded by the host session too.
        assert b.cmd("SELECT %s fred" % HOST).startswith("-ERR [IN-USE]")
        # Another maildrop is free.
        b.ok("SELECT " + OTHER)
        b.ok("UNSELECT")
        a.sock.close()      # EOF, no QUIT: the lock goes with the link

        def free():
            r = b.cmd("SELECT " + HOST)
            if r == "+OK locked":
                return True
            assert r.startswith("-ERR [IN-USE]"), r
            return False
        wait_for(free, what="the lock freed at EOF")
        b.ok("UNSELECT")
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("release", ["UNSELECT", "UPDATE", "QUIT"])
def test_release_frees(psd, certs, release):
    a = link(psd, certs)
    b = link(psd, certs)
    try:
        a.ok("SELECT %s fred" % HOST)
        assert b.cmd("SELECT " + HOST).startswith("-ERR [IN-USE]")
        assert a.cmd(release).startswith("+OK")
        # The reply came after the unlock: free at once.
        assert b.ok("SELECT " + HOST) == "+OK locked"
        b.ok("UNSELECT")
    finally:
        a.close()
        b.close()


def test_idle_deadline_frees(certs):
    """idle_timeout = 1: the server ends a quiet link and frees its lock.
    Nothing here depends on how fast the test runs: a link that the
    deadline ends before its SELECT is simply opened again."""
    d = _daemon(certs, idle=1)

    def selected():
        try:
            ln = link(d, certs)
        except (OSError, EOFError, Pop3Error):
            return None
        try:
            r = ln.cmd("SELECT " + HOST)
        except (OSError, EOFError):
            ln.close()
            return None
        if r == "+OK locked":
            return ln
        ln.close()
        assert r.startswith("-ERR [IN-USE]"), r
        return None

    try:
        a = wait_for(selected, what="a link that selects")
        # The server ends the quiet link: EOF, nothing sent first.
        assert a.closed(timeout=60)
        assert a.buf == b""
        a.close()
        d.wait_log(r"event=link-unlock maildrop=%s how=idle-timeout"
                   % re.escape(HOST))
        c = wait_for(selected, what="the lock free again")
        c.close()
    finally:
        d.cleanup()


# ------------------------------------------------------------- reading --

def clear(d, certs, host=HOST):
    ids = list(messages(d, host))
    if not ids:
        return
    with link(d, certs) as ln:
        ln.ok("SELECT " + host)
        for i in ids:
            ln.ok("DELE %d" % i)
        ln.ok("UPDATE")
    assert messages(d, host) == {}


def test_xlist_fields(psd, certs):
    clear(psd, certs)
    psd.deliver_ok(harness.simple_message("one"), ["fred@" + HOST,
                                                   "bob@" + HOST])
    psd.deliver_ok(harness.simple_message("two"), ["fred@" + HOST],
                   sender="")
    psd.deliver_ok(harness.simple_message("three"), ["bob@" + HOST],
                   sender="a+b=c@example.org")
    psd.deliver_ok(harness.simple_message("else"), ["x@" + OTHER])
    want = messages(psd)
    with link(psd, certs) as ln:
        ln.ok("SELECT " + HOST)
        r, lines = ln.multi("XLIST")
        assert r == "+OK 3 messages"
        got = {}
        for raw in lines:
            f = raw.decode("latin-1").split(" ")
            got[int(f[0])] = f
        assert set(got) == set(want)
        order = [int(raw.split(b" ")[0]) for raw in lines]
        assert order == sorted(want, key=lambda i: (want[i]["arrival_us"],
                                                    i))
        for i, f in got.items():
            m = want[i]
            assert int(f[1]) == m["arrival_us"]
            assert int(f[2]) == m["octets"]
            assert int(f[3]) == 0
            sender = "" if f[4] == "<>" else xtext_decode(f[4])
            assert sender == m["sender"]
            assert [xtext_decode(x) for x in f[5:]] == m["rcpts"]
        assert any(f[4] == "a+2Bb+3Dc@example.org" for f in got.values())
        ln.ok("UNSELECT")
        # A user session lists that user's messages (every recipient).
        ln.ok("SELECT %s fred" % HOST)
        r, lines = ln.multi("XLIST")
        assert r == "+OK 2 messages"
        assert {int(x.split(b" ")[0]) for x in lines} == {
            i for i, m in want.items() if "fred" in m["rcpts"]}
        ln.ok("QUIT")


def test_body_top_rd(psd, certs):
    clear(psd, certs)
    clear(psd, certs, OTHER)
    text = ("From: a@example.org\nSubject: body test\n\nline 1\n.dotted\n"
            "line 3\nline 4\n")
    psd.deliver_ok(text, ["fred@" + HOST])
    psd.deliver_ok(harness.simple_message(), ["x@" + OTHER])
    (mid, m), = messages(psd).items()
    (oid, _), = messages(psd, OTHER).items()
    with open(psd.spool_file(PUNT, mid), "rb") as f:
        stored = f.read()
    assert b"\r\n..dotted\r\n" in stored
    with link(psd, certs) as ln:
        ln.ok("SELECT " + HOST)
        r, data = ln.counted("BODY %d" % mid)
        assert r == "+OK %d" % len(stored)
        assert data == stored
        head = stored[:stored.index(b"\r\n\r\n") + 4]
        r, data = ln.counted("TOP %d 0" % mid)
        assert data == head and r == "+OK %d" % len(head)
        r, data = ln.counted("TOP %d 2" % mid)
        assert data == head + b"line 1\r\n..dotted\r\n"
        r, data = ln.counted("TOP %d 100" % mid)
        assert data == stored
        # Not this maildrop's, and no such message.
        assert ln.cmd("BODY %d" % oid) == "-ERR [GONE] no such message"
        assert ln.cmd("TOP %d 1" % oid).startswith("-ERR [GONE]")
        assert ln.cmd("BODY 999999").startswith("-ERR [GONE]")
        assert ln.cmd("TOP %d x" % mid).startswith("-ERR [PROTO]")
        assert "RD" not in messages(psd)[mid]["flags"]
        ln.ok("RD %d" % mid)
        assert "RD" in messages(psd)[mid]["flags"]
        # The link is still in step after all that.
        ln.ok("NOOP")
        ln.ok("UNSELECT")


def test_dele_update_and_quit(psd, certs):
    clear(psd, certs)
    clear(psd, certs, OTHER)
    for s in ("a", "b", "c"):
        psd.deliver_ok(harness.simple_message(s), ["fred@" + HOST])
    psd.deliver_ok(harness.simple_message(), ["x@" + OTHER])
    ids = sorted(messages(psd))
    (oid, _), = messages(psd, OTHER).items()
    with link(psd, certs) as ln:
        ln.ok("SELECT " + HOST)
        ln.ok("DELE %d %d" % (ids[0], ids[1]))
        assert ln.cmd("QUIT") == "+OK bye"
    assert sorted(messages(psd)) == ids          # QUIT never removes
    with link(psd, certs) as ln:
        ln.ok("SELECT " + HOST)
        ln.ok("DELE %d" % ids[0])
        ln.ok("RSET")
        assert ln.ok("UPDATE") == "+OK 0 removed"
        assert sorted(messages(psd)) == ids
        ln.ok("SELECT " + HOST)
        ln.ok("DELE %d %d" % (ids[0], ids[1]))
        ln.ok("DELE %d" % ids[0])
        # Another maildrop's id, and one that does not exist: ignored.
        ln.ok("DELE %d 999999" % oid)
        assert ln.cmd("XLIST").startswith("+OK")
        ln.multi_body()
        assert ln.ok("UPDATE") == "+OK 2 removed"
        assert sorted(messages(psd)) == ids[2:]
        assert list(messages(psd, OTHER)) == [oid]
        # UPDATE released the lock: the link is no longer selected.
        assert ln.cmd("XLIST").startswith("-ERR [PROTO]")


def test_user_update_removes_only_that_user(psd, certs):
    clear(psd, certs)
    psd.deliver_ok(harness.simple_message(), ["fred@" + HOST, "bob@" + HOST])
    (mid, _), = messages(psd).items()
    with link(psd, certs) as ln:
        ln.ok("SELECT %s fred" % HOST)
        ln.ok("DELE %d" % mid)
        assert ln.ok("UPDATE") == "+OK 1 removed"
    assert messages(psd)[mid]["rcpts"] == ["bob"]
    # fred's session can no longer remove it (not in fred's maildrop).
    with link(psd, certs) as ln:
        ln.ok("SELECT %s fred" % HOST)
        ln.ok("DELE %d" % mid)
        assert ln.ok("UPDATE") == "+OK 0 removed"
    assert messages(psd)[mid]["rcpts"] == ["bob"]


# ------------------------------------------------------------ DELIVER --

def test_deliver_durable(psd, certs):
    clear(psd, certs)
    data = wire("From: x@example.org\nSubject: via link\n\nhello\n.dot\n")
    with link(psd, certs) as ln:
        r = ln.deliver(HOST, "s+2Bx@example.org", data, ["fred", "bob"])
        assert r.startswith("+OK ")
        mid = int(r.split()[1])
        r = ln.deliver(HOST, "<>", data, ["fred"])
        assert r.startswith("+OK ")
        nid = int(r.split()[1])
    ms = messages(psd)
    assert set(ms) == {mid, nid}
    assert ms[mid]["sender"] == "s+x@example.org"
    assert ms[mid]["rcpts"] == ["fred", "bob"]
    assert ms[nid]["sender"] == ""
    with open(psd.spool_file(PUNT, mid), "rb") as f:
        assert f.read() == data
    # A new link lists it, with the POP3 size of a local delivery.
    with link(psd, certs) as ln:
        ln.ok("SELECT " + HOST)
        r, lines = ln.multi("XLIST")
        assert {int(x.split(b" ")[0]) for x in lines} == {mid, nid}
        r, body = ln.counted("BODY %d" % mid)
        assert body == data
        ln.ok("UNSELECT")
    assert ms[mid]["octets"] == len(unstuff(data)) + len(
        "Return-Path: <s+x@example.org>\r\n")
    assert tmp_files(psd) == []


def test_deliver_refused_changes_nothing(psd, certs):
    clear(psd, certs)
    before = psd.total_msgs()
    data = wire("From: x@example.org\n\nhello\n")
    big = wire("From: x@example.org\n\n" +
               ("z" * 78 + "\n") * (MAX_OCTETS // 80 + 10))
    with link(psd, certs) as ln:
        bad = [
            # body_octets that do not match the data
            (HOST, "a@example.org", data, ["fred"], len(data) + 1, None,
             "-ERR [PROTO]"),
            (HOST, "a@example.org", data, ["fred"], len(data) - 3, None,
             "-ERR [PROTO]"),
            # hostile names
            ("../../etc", "a@example.org", data, ["fred"], None, None,
             "-ERR [PROTO]"),
            ("a/b", "a@example.org", data, ["fred"], None, None,
             "-ERR [PROTO]"),
            (HOST, "a@example.org", data, ["../x"], None, None,
             "-ERR [PROTO]"),
            (HOST, "a@example.org", data, ["fr+2Fed"], None, None,
             "-ERR [PROTO]"),
            (HOST, "not+20an+20address", data, ["fred"], None, None,
             "-ERR [PROTO]"),
            (HOST, "a@example.org", data, ["fr+00ed"], None, None,
             "-ERR [PROTO]"),
            # not wire format: a bare LF, an unstuffed dot line
            (HOST, "a@example.org", b"From: x\n\r\nhi\r\n", ["fred"], None,
             None, "-ERR [PROTO]"),
            (HOST, "a@example.org", b"From: x\r\n.\r\n", ["fred"], None,
             None, "-ERR [PROTO]"),
            (HOST, "a@example.org", b"From: x\r\nno end", ["fred"], None,
             None, "-ERR [PROTO]"),
            # over max_message_octets (read, then refused)
            (HOST, "a@example.org", big, ["fred"], None, None,
             "-ERR [SYS/PERM]"),
        ]
        for host, sender, d, rcpts, body, n, want in bad:
            r = ln.deliver(host, sender, d, rcpts, body=body, n=n)
            assert r.startswith(want), (host, rcpts, d[:40], r)
            # still in step
            assert ln.ok("NOOP") == "+OK"
    assert psd.total_msgs() == before
    assert tmp_files(psd) == []
    # An absurd count is answered and the link closed, the data unread.
    with link(psd, certs) as ln:
        ln.send("DELIVER %s a@example.org %d 10 fred"
                % (HOST, 10 * MAX_OCTETS))
        assert ln.line().startswith("-ERR [SYS/PERM]")
        assert ln.closed()
    # A count that is not a number cannot be framed: closed.
    with link(psd, certs) as ln:
        ln.send("DELIVER %s a@example.org many 10 fred" % HOST)
        assert ln.line().startswith("-ERR [PROTO]")
        assert ln.closed()
    # The link dies in the middle of the data: nothing stored, no tmp.
    with link(psd, certs) as ln:
        ln.send_raw(("DELIVER %s a@example.org %d %d fred\r\n"
                     % (HOST, len(data), len(data))).encode() + data[:5])
        ln.sock.close()
    psd.wait_log(r"event=deliver-aborted host=%s octets=%d how=drop"
                 % (re.escape(HOST), len(data)))
    wait_for(lambda: tmp_files(psd) == [], what="tmp/ empty")
    assert psd.total_msgs() == before


# -------------------------------------------------------------- admin --

def test_xstat_xls_xrec(psd, certs):
    clear(psd, certs)
    clear(psd, certs, OTHER)
    psd.deliver_ok(harness.simple_message(), ["fred@" + HOST])
    psd.deliver_ok(harness.simple_message(), ["x@" + OTHER],
                   sender="")
    st = [p for p in psd.spool_stat()["punts"] if p["name"] == PUNT][0]
    want = {m["id"]: m for m in psd.spool_ls()["messages"]}
    with link(psd, certs) as ln:
        f = ln.ok("XSTAT").split()
        assert len(f) == 11
        assert int(f[1]) == st["msgs"] == 2
        assert int(f[3]) == st["octets"]
        r, lines = ln.multi("XLS")
        assert r == "+OK 2 messages"
        got = {int(x.split(b" ")[0]): x.decode().split(" ") for x in lines}
        assert set(got) == set(want)
        for i, f in got.items():
            m = want[i]
            assert (int(f[1]), int(f[2]), int(f[3])) == (
                m["arrival_us"], m["octets"], m["stored_octets"])
            assert f[6] == m["host"] and f[7] == "-"
            assert ("" if f[8] == "<>" else f[8]) == m["sender"]
            assert f[9:] == m["rcpts"]
        r, lines = ln.multi("XLS " + OTHER)
        assert r == "+OK 1 messages" and len(lines) == 1
        oid = int(lines[0].split(b" ")[0])
        assert ln.ok("XREC %d" % oid) == "+OK " + lines[0].decode()
        assert ln.cmd("XREC 999999").startswith("-ERR [GONE]")
        # BODY id ADMIN: no lock needed, any host.
        r, data = ln.counted("BODY %d ADMIN" % oid)
        with open(psd.spool_file(PUNT, oid), "rb") as fh:
            assert data == fh.read()
        assert ln.cmd("BODY %d OTHER" % oid).startswith("-ERR [PROTO]")
        assert ln.cmd("XLS a/b").startswith("-ERR [PROTO]")


def test_pop3_still_served(psd, certs):
    """The punt machine's own POP3 listener works beside the links."""
    clear(psd, certs)
    psd.deliver_ok(harness.simple_message(), ["fred@" + HOST])
    with link(psd, certs) as ln:
        ln.ok("SELECT " + HOST)
        p = psd.connect()
        p.ok("USER " + HOST)
        assert p.cmd("PASS pw1").startswith("-ERR [IN-USE]")
        p.close()
        ln.ok("UNSELECT")
    p = psd.login_when_free(HOST, "pw1")
    assert p.stat()[0] == 1
    p.quit()


def test_scoreboard_link_state(psd, certs):
    """A worker serving a link is in state "link", with the selected
    maildrop (sdps-ctl sessions)."""
    with link(psd, certs) as ln:
        ln.ok("SELECT %s fred" % HOST)
        got = psd.wait_sessions(
            lambda ss: [x for x in ss if x.get("state") == "link" and
                        x.get("maildrop") == "fred@" + HOST],
            what="a link session with its maildrop")
        assert got
        ln.ok("UNSELECT")
        psd.wait_sessions(
            lambda ss: [x for x in ss if x.get("state") == "link" and
                        not x.get("maildrop")],
            what="the link unselected")


def test_worker_killed_frees_lock(psd, certs):
    """The lock is the worker's: SIGKILL of the process serving a link
    frees it (the kernel drops the lock with the process)."""
    a = link(psd, certs)
    b = link(psd, certs)
    try:
        a.ok("SELECT " + HOST)
        assert b.cmd("SELECT " + HOST).startswith("-ERR [IN-USE]")
        pid = psd.worker_for(a.sock, port=psd.punt_port)
        os.kill(pid, signal.SIGKILL)
        assert a.closed()

        def free():
            r = b.cmd("SELECT " + HOST)
            assert r == "+OK locked" or r.startswith("-ERR [IN-USE]"), r
            return r == "+OK locked"
        wait_for(free, what="the lock of a killed worker freed")
        b.ok("UNSELECT")
    finally:
        a.close()
        b.close()


def test_reload_changes_allow_list(certs):
    """SIGHUP: new workers take the new [punt_server] allow."""
    d = _daemon(certs)
    try:
        assert refused(d, ctx_for(certs, certs.fe2))
        assert not refused(d, ctx_for(certs, certs.fe1))
        d.rewrite_config(overrides={"punt_server":
                                    {"allow": "fe2.example.net"}})
        d.signal(signal.SIGHUP)
        # Old workers leave between sessions; retry until a new one
        # answers (bounded).
        wait_for(lambda: not refused(d, ctx_for(certs, certs.fe2)),
                 what="fe2 allowed after the reload")
        wait_for(lambda: refused(d, ctx_for(certs, certs.fe1)),
                 what="fe1 refused after the reload")
    finally:
        d.cleanup()


def test_links_not_capped_per_address(certs):
    """max_conn_per_ip is for POP3 clients: a front end opens one link
    per worker from one address."""
    d = _daemon(certs, server={"max_conn_per_ip": 1})
    links = []
    try:
        for _ in range(3):
            links.append(link(d, certs))
            assert links[-1].greeting.startswith("+OK sdps-punt")
        p = d.connect()         # one POP3 client: within the cap
        q = Pop3("127.0.0.1", d.port)
        assert q.greeting.startswith("-ERR [SYS/TEMP] too many")
        q.close()
        p.close()
    finally:
        for ln in links:
            ln.close()
        d.cleanup()
