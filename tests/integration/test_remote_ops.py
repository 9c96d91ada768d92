"""Issue 11, the front end's side operations through the link: new mail
by LMTP (and sdps-deliver) lands on a random reachable punt, local or
remote; sdps-ctl status shows the remote punt's state and RTT (and
--probe measures one); spool ls / show / stat read a remote punt through
the link exactly as its own punt server lists it; the store verbs that
need the punt's directory refuse a remote punt.

One punt server (sdpsd with punt_listen on 127.0.0.1, punt "finchley")
and one front end with finchley remote and "docklands" local.  The certs
come from pki.py.  The test skips itself when this sdpsd has no punt
server (the punt port does not greet as docs/punt-protocol.md says).
"""

import os
import signal
import smtplib
import socket
import ssl
import tempfile

import pytest

import daemon as D
import pki

HOST = D.HOST
RCPT = "fred@" + HOST
OTHER = "wilma.example.net"	# a second host, for copies per host
PUNT = "finchley"	# served by the punt server, remote at the front end
LOCAL = "docklands"	# the front end's own

# The front end's own fsck refuses its remote punt; the punt server is
# checked explicitly.
FSCK_AFTER = False


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="sdps-pki-")
    return pki.make_pki(d, servers=(PUNT,), clients=("fe1",))


def punt_greeting(port, certs):
    """The punt server's greeting line over TLS with fe1's cert, or
    None when nothing there speaks the punt protocol."""
    ctx = ssl.create_default_context(cafile=certs["ca"])
    ctx.load_cert_chain(certs["fe1"]["cert"], certs["fe1"]["key"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
                buf = b""
                while b"\r\n" not in buf and len(buf) < 4096:
                    chunk = t.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                return buf.split(b"\r\n")[0].decode("latin-1")
    except (OSError, ssl.SSLError):
        return None


def start_punt_server(certs):
    port = D.free_port()
    d = D.Daemon(npunts=1, start=False, server={
        "punt_listen": "127.0.0.1:%d %s" % (port, PUNT)}, overrides={
        "tls": {"cert": certs[PUNT]["cert"], "key": certs[PUNT]["key"]},
        "punt_server": {"ca": certs["ca"], "allow": "fe1"}})
    d.punt_port = port
    try:
        d.start()
    except AssertionError as e:
        d.spool.cleanup()
        pytest.skip("sdpsd refuses punt_listen: %s" % str(e)[:300])
    g = punt_greeting(port, certs)
    if g is None or not g.startswith("+OK sdps-punt %s " % PUNT):
        d.stop()
        d.spool.cleanup()
        pytest.skip("no punt server in this sdpsd (greeting %r)" % (g,))
    return d


def start_front_end(certs, punt_port, local=True):
    """A front end whose punt finchley is the punt server at punt_port
    (and, with local, docklands is its own directory)."""
    lport = D.free_port()
    d = D.Daemon(npunts=2 if local else 1, start=False,
                 server={"lmtp_listen": "127.0.0.1:%d" % lport},
                 hosts=((HOST, D.PW1, D.PW2), (OTHER, "w1", None)))
    d.lmtp_port = lport
    d.rewrite_config(overrides={"punt " + PUNT: {
        "path": None, "address": "127.0.0.1:%d" % punt_port,
        "ca": certs["ca"], "cert": certs["fe1"]["cert"],
        "key": certs["fe1"]["key"]}})
    d.start()
    return d


@pytest.fixture
def pair(request, certs):
    ps = start_punt_server(certs)
    fe = None
    try:
        fe = start_front_end(certs, ps.punt_port)
        yield ps, fe
    finally:
        if fe is not None:
            D._finish(request, fe)
        D._finish(request, ps)


def lmtp_send(port, n, tag, rcpts=(RCPT,)):
    """n messages over one LMTP connection: [(code, reply text)], the
    reply for the first recipient (smtplib reads one per DATA); with
    several recipients use lmtp_multi."""
    out = []
    c = smtplib.LMTP("127.0.0.1", port, timeout=60)
    try:
        assert c.ehlo("mta.example.org")[0] == 250
        for i in range(n):
            assert c.mail("sender@example.org")[0] == 250
            for r in rcpts:
                assert c.rcpt(r)[0] == 250
            code, text = c.data(("From: sender@example.org\r\nTo: %s\r\n"
                                 "Subject: %s %d\r\n\r\nbody %s %d\r\n"
                                 % (rcpts[0], tag, i, tag, i)).encode())
            out.append((code, text.decode("latin-1")))
            if code != 250:
                c.rset()
        c.quit()
    finally:
        c.close()
    return out


def lmtp_multi(port, rcpts, tag):
    """One message to every rcpt (RFC 2033: one reply each after the
    dot), on a raw socket: [reply line per recipient]."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    f = s.makefile("rb")

    def reply():
        lines = []
        while True:
            ln = f.readline().decode("latin-1").rstrip("\r\n")
            assert ln, "connection closed"
            lines.append(ln)
            if ln[3:4] != "-":
                return ln
    try:
        assert reply().startswith("220")
        s.sendall(b"LHLO mta.example.org\r\n")
        assert reply().startswith("250")
        s.sendall(b"MAIL FROM:<sender@example.org>\r\n")
        assert reply().startswith("250")
        for r in rcpts:
            s.sendall(("RCPT TO:<%s>\r\n" % r).encode())
            assert reply().startswith("250")
        s.sendall(b"DATA\r\n")
        assert reply().startswith("354")
        s.sendall(("Subject: %s\r\n\r\nto several hosts\r\n.\r\n"
                   % tag).encode())
        out = [reply() for _ in rcpts]
        s.sendall(b"QUIT\r\n")
        return out
    finally:
        f.close()
        s.close()


def stored_as(text):
    """"250 2.0.0 <r> stored as PUNT:ID" -> (PUNT, ID)."""
    ref = text.rsplit(" ", 1)[1]
    punt, mid = ref.rsplit(":", 1)
    return punt, int(mid)


def without_age(rows):
    return [{k: v for k, v in r.items() if k != "age_s"} for r in rows]


def text_rows(out, punt):
    """spool ls text lines of punt, without the AGE column (the clock)."""
    rows = []
    for ln in out.splitlines()[1:]:
        f = ln.split()
        if f and f[0] == punt:
            rows.append(f[:5] + f[6:])
    return rows


def punt_state(fe, name):
    for p in fe.ctl_json("status")["punts"]:
        if p["name"] == name:
            return p
    raise AssertionError("no punt %s in status" % name)


def kill_punt_server(ps):
    kids = ps.workers()
    os.kill(ps.pid, signal.SIGKILL)
    for k in kids:
        try:
            os.kill(k, signal.SIGKILL)
        except ProcessLookupError:
            pass
    ps.proc.wait(30)

    def refused():
        try:
            socket.create_connection(("127.0.0.1", ps.punt_port),
                                     timeout=5).close()
            return False
        except OSError:
            return True
    D.wait_for(refused, 30, what="the punt port to refuse")


def test_lmtp_lands_on_both_and_survives_a_dead_punt(pair):
    ps, fe = pair
    acked = lmtp_send(fe.lmtp_port, 40, "before")
    assert all(code == 250 for code, _ in acked), acked
    refs = [stored_as(t) for _, t in acked]
    # A random punt per message: 40 all on one side would be a bug.
    assert {p for p, _ in refs} == {PUNT, LOCAL}, refs
    # Every acknowledged message is listed, on the punt it was said to be.
    ls = fe.ctl_json("spool", "ls")["messages"]
    assert sorted((m["punt"], m["id"]) for m in ls) == sorted(refs)
    theirs = ps.ctl_json("spool", "ls")["messages"]
    assert sorted(m["id"] for m in theirs) == sorted(
        i for p, i in refs if p == PUNT)
    assert ps.fsck().rc == 0
    # The front end's tmp files (DATA bound for the remote punt) are
    # gone once each transaction ended; the directory is private.
    tmpdir = os.path.join(fe.run_dir, "lmtp-tmp")
    assert os.listdir(tmpdir) == []
    assert os.stat(tmpdir).st_mode & 0o777 == 0o700

    st = punt_state(fe, PUNT)
    assert st["remote"] is True and st["state"] == "up", st
    pr = fe.ctl_json("status", "--probe")["probe"]
    assert [p["name"] for p in pr] == [PUNT] and pr[0]["up"], pr
    assert pr[0]["rtt_us"] > 0

    kill_punt_server(ps)
    after = lmtp_send(fe.lmtp_port, 20, "after")
    # Every message still gets 250, from the local punt.
    assert all(code == 250 for code, _ in after), after
    assert {stored_as(t)[0] for _, t in after} == {LOCAL}
    st = punt_state(fe, PUNT)
    assert st["state"] == "down", st
    r = fe.ctl("status", "--probe", "--json")
    assert r.rc == 1 and r.json()["probe"][0]["up"] is False, r
    # The local punt's mail is all there.
    ls = fe.ctl_json("spool", "ls", "--punt", LOCAL)["messages"]
    assert len(ls) == sum(1 for p, _ in refs if p == LOCAL) + len(after)


def test_lmtp_several_hosts_each_copy_stored(pair):
    ps, fe = pair
    punts = set()
    for i in range(12):
        out = lmtp_multi(fe.lmtp_port, [RCPT, "wilma@" + OTHER],
                         "multi %d" % i)
        assert all(r.startswith("250 ") for r in out), out
        refs = [stored_as(r) for r in out]
        punts |= {p for p, _ in refs}
        for (p, mid), host in zip(refs, (HOST, OTHER)):
            ls = fe.ctl_json("spool", "ls", "--punt", p, "--host",
                             host)["messages"]
            assert mid in [m["id"] for m in ls], (p, mid, host)
    # Both punts held copies: the remote path (one DELIVER per host)
    # and the local batch both ran.
    assert punts == {PUNT, LOCAL}, punts
    assert os.listdir(os.path.join(fe.run_dir, "lmtp-tmp")) == []


def test_spool_ls_show_stat_through_the_link(pair):
    ps, fe = pair
    for i in range(3):
        fe.deliver_ok(("Subject: direct %d\n\nvia sdps-deliver\n" % i)
                      .encode(), [RCPT], punt=PUNT)
    lmtp_send(fe.lmtp_port, 6, "ls")
    mine = fe.ctl_json("spool", "ls", "--punt", PUNT)["messages"]
    theirs = ps.ctl_json("spool", "ls")["messages"]
    assert len(theirs) >= 3
    assert without_age(mine) == without_age(theirs)
    # The same in text, and with --host; merged in order with the local.
    assert text_rows(fe.ctl_ok("spool", "ls").text, PUNT) == \
        text_rows(ps.ctl_ok("spool", "ls").text, PUNT)
    assert without_age(fe.ctl_json("spool", "ls", "--host", HOST)[
        "messages"]) == without_age(sorted(
            fe.ctl_json("spool", "ls")["messages"],
            key=lambda m: (m["arrival_us"], m["punt"] != PUNT, m["id"])))
    for m in theirs[:3]:
        ref = "%s:%d" % (PUNT, m["id"])
        assert fe.ctl_ok("spool", "show", ref).out == \
            ps.ctl_ok("spool", "show", ref).out
        a = fe.ctl_json("spool", "show", ref)
        b = ps.ctl_json("spool", "show", ref)
        assert a["data"] == b["data"]
        assert without_age([a["message"]]) == without_age([b["message"]])
    r = fe.ctl("spool", "show", "%s:999999" % PUNT)
    assert r.rc == 1 and "no such message" in r.errtext, r
    s = {p["name"]: p for p in fe.ctl_json("spool", "stat")["punts"]}
    t = ps.ctl_json("spool", "stat")["punts"][0]
    assert s[PUNT]["available"] and s[PUNT]["msgs"] == t["msgs"], (s, t)


def test_store_verbs_refuse_a_remote_punt(pair):
    ps, fe = pair
    for args in (["fsck"], ["expire", "--dry-run"],
                 ["punt", "create", PUNT], ["punt", "upgrade", PUNT],
                 ["smtp", "done", "%s:1" % PUNT]):
        r = fe.ctl(*args)
        assert r.rc == 64, (args, r)
        assert "punt %s is remote: run this on its punt server" % PUNT \
            in r.errtext, (args, r)


def test_only_remote_punt_lmtp_then_dead_4xx(request, certs):
    ps = start_punt_server(certs)
    fe = None
    try:
        fe = start_front_end(certs, ps.punt_port, local=False)
        # Every punt remote: DATA waits in the front end's own file.
        out = lmtp_send(fe.lmtp_port, 5, "remote only")
        assert all(code == 250 for code, _ in out), out
        assert {stored_as(t)[0] for _, t in out} == {PUNT}
        theirs = ps.ctl_json("spool", "ls")["messages"]
        assert sorted(m["id"] for m in theirs) == sorted(
            stored_as(t)[1] for _, t in out)
        kill_punt_server(ps)
        out = lmtp_send(fe.lmtp_port, 3, "dead")
        assert all(400 <= code < 500 for code, _ in out), out
    finally:
        if fe is not None:
            D._finish(request, fe)
        D._finish(request, ps)


def test_only_remote_punt_dead_lmtp_4xx(request, certs):
    # Nothing listens on the punt port: the only punt is unreachable.
    fe = start_front_end(certs, D.free_port(), local=False)
    try:
        out = lmtp_send(fe.lmtp_port, 3, "dead")
        assert all(400 <= code < 500 for code, _ in out), out
        st = punt_state(fe, PUNT)
        assert st["remote"] is True and st["state"] != "up", st
        r = fe.ctl("spool", "ls")
        assert r.rc == 1 and PUNT in r.errtext, r
    finally:
        D._finish(request, fe)
