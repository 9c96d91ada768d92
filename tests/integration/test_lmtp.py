"""LMTP ingest (RFC 2033) into sdpsd's workers, with real clients: Python's
smtplib.LMTP, Debian's swaks, and a raw socket for exact replies and
pipelining.  What goes in is fetched back by POP3 (poplib) byte-exact."""

import os
import poplib
import re
import shutil
import smtplib
import socket
import subprocess

import pytest

import daemon as D
import harness

FSCK_AFTER = True
HOST = D.HOST
OTHER = "wilma.example.net"


def lmtp_daemon(server=None, overrides=None, unix=False, **kw):
    port = D.free_port()
    srv = {"lmtp_listen": "127.0.0.1:%d" % port}
    d = None
    if unix:
        # the socket path must be known before the config is written
        import tempfile
        sockdir = tempfile.mkdtemp(prefix="sdps-lmtp-")
        srv["lmtp_listen"] = [srv["lmtp_listen"],
                              os.path.join(sockdir, "lmtp.sock")]
    srv.update(server or {})
    d = D.Daemon(server=srv, overrides=overrides,
                 hosts=((HOST, D.PW1, D.PW2), (OTHER, "w1", None)), **kw)
    d.lmtp_port = port
    d.lmtp_sock = srv["lmtp_listen"][1] if unix else None
    return d


@pytest.fixture
def ld(request):
    d = lmtp_daemon()
    yield d
    D._finish(request, d)


class Raw:
    """A raw LMTP client: exact reply lines, no hidden state."""

    def __init__(self, port, timeout=20):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        self.buf = b""
        self.greeting = self.reply()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("server closed")
            self.buf += chunk
        ln, self.buf = self.buf.split(b"\n", 1)
        assert ln.endswith(b"\r"), ln
        return ln[:-1].decode("latin-1")

    def reply(self):
        """A whole (multi-line) reply as a list of lines."""
        out = [self.line()]
        while out[-1][3:4] == "-":
            out.append(self.line())
        return out

    def code(self):
        r = self.reply()
        return int(r[-1][:3]), r[-1]

    def close(self):
        self.sock.close()


def pop3_all(d, user=HOST, pw=D.PW1):
    """Every message of the maildrop by poplib: [(uidl, bytes)]."""
    p = poplib.POP3("127.0.0.1", d.port, timeout=20)
    try:
        p.user(user)
        p.pass_(pw)
        out = []
        for ent in p.uidl()[1]:
            n, uid = ent.decode().split()
            lines = p.retr(int(n))[1]
            out.append((uid, b"".join(ln + b"\r\n" for ln in lines)))
        p.quit()
        return out
    except Exception:
        p.close()
        raise


MSG = (b"From: Sender <sender@example.org>\r\n"
       b"To: fred users\r\n"
       b"Subject: lmtp test\r\n"
       b"\r\n"
       b"first line\r\n"
       b".a line that starts with a dot\r\n"
       b"..two dots\r\n"
       b".\r\n"
       b" .\r\n"
       b"last line\r\n")


def test_smtplib_per_recipient_and_pop3_byte_exact(ld):
    c = smtplib.LMTP("127.0.0.1", ld.lmtp_port)
    code, _ = c.ehlo("mta.example.org")
    assert code == 250
    for ext in ("pipelining", "enhancedstatuscodes", "8bitmime", "size"):
        assert c.has_extn(ext), ext
    assert int(c.esmtp_features["size"]) == 52428800
    refused = c.sendmail("sender@example.org",
                         ["Alice@Fred.Example.Net", "nobody@unknown.example",
                          "bob@fred.example.net", "carol@wilma.example.net"],
                         MSG)
    c.quit()
    # the unknown host is refused at RCPT with 550 5.1.1, the others
    # accepted; sendmail raises only if every recipient fails
    assert set(refused) == {"nobody@unknown.example"}
    assert refused["nobody@unknown.example"][0] == 550
    assert refused["nobody@unknown.example"][1].startswith(b"5.1.1")
    msgs = ld.messages()
    # stored once per host: one copy for fred (two users), one for wilma
    assert sorted((m["host"], tuple(m["rcpts"])) for m in msgs) == [
        (HOST, ("alice", "bob")), (OTHER, ("carol",))]
    got = pop3_all(ld)
    assert len(got) == 1
    assert got[0][1] == b"Return-Path: <sender@example.org>\r\n" + MSG
    assert pop3_all(ld, OTHER, "w1")[0][1] == got[0][1]
    assert ld.status()["totals"]["lmtp_messages"] == 2


def test_stored_bytes_match_sdps_deliver(ld):
    """The same message through LMTP and through sdps-deliver lands as
    the same wire-format file (dot-stuffed, CRLF)."""
    raw = MSG.replace(b"\r\n", b"\n")
    ld.deliver_ok(raw, "x@" + HOST, sender="sender@example.org",
                  punt="finchley")
    c = smtplib.LMTP("127.0.0.1", ld.lmtp_port)
    c.sendmail("sender@example.org", ["y@" + HOST], MSG)
    c.quit()
    msgs = ld.messages(host=HOST)
    assert len(msgs) == 2
    files = [open(ld.spool_file(m["punt"], m["id"]), "rb").read()
             for m in msgs]
    assert files[0] == files[1]
    assert b"\r\n...a line that starts" not in files[0]
    assert b"\r\n..a line that starts with a dot\r\n" in files[0]
    assert b"\r\n...two dots\r\n" in files[0]
    assert msgs[0]["octets"] == msgs[1]["octets"]


def test_swaks_lmtp(ld):
    if shutil.which("swaks") is None:
        pytest.skip("swaks not installed (apt-get install swaks)")
    r = subprocess.run(
        ["swaks", "--protocol", "LMTP", "--server", "127.0.0.1",
         "--port", str(ld.lmtp_port), "--from", "swaks@example.org",
         "--to", "dan@%s,eve@nohost.example" % HOST,
         "--header", "Subject: via swaks", "--body", "swaks body"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = r.stdout.decode("utf-8", "replace")
    # swaks prints server lines prefixed "<-" (or "<~"), errors "<**"
    assert "<** 550 5.1.1" in out, out
    assert "<-  250 2.0.0 <dan@%s> stored as" % HOST in out, out
    got = pop3_all(ld)
    assert len(got) == 1
    body = got[0][1]
    assert body.startswith(b"Return-Path: <swaks@example.org>\r\n")
    assert b"Subject: via swaks\r\n" in body
    assert b"\r\n\r\nswaks body\r\n" in body
    assert [m["rcpts"] for m in ld.messages()] == [["dan"]]


def test_raw_pipelined_replies_in_order(ld):
    c = Raw(ld.lmtp_port)
    assert c.greeting[0].startswith("220 ")
    # one group, DATA last (RFC 2920): the replies come back in order
    c.send("LHLO mta\r\n"
           "MAIL FROM:<s@example.org> SIZE=100 BODY=8BITMIME\r\n"
           "RCPT TO:<a@fred.example.net>\r\n"
           "RCPT TO:<b@unknown.example>\r\n"
           "RCPT TO:<not an address>\r\n"
           "RCPT TO:<c@wilma.example.net>\r\n"
           "RCPT TO:<A@FRED.example.net>\r\n"
           "DATA\r\n")
    lhlo = c.reply()
    assert lhlo[0].startswith("250-")
    assert lhlo[-1].startswith("250 SIZE ")
    assert c.code()[0] == 250
    assert c.code()[0] == 250
    code, text = c.code()
    assert (code, text[4:9]) == (550, "5.1.1")
    code, text = c.code()
    assert (code, text[4:9]) == (501, "5.1.3")
    assert c.code()[0] == 250
    assert c.code()[0] == 250
    assert c.code()[0] == 354
    c.send("Subject: raw\r\n\r\nbody\r\n.\r\n")
    # one reply per accepted recipient, in RCPT order (RFC 2033 §4.2)
    replies = [c.code()[1] for _ in range(3)]
    assert replies[0].startswith("250 2.0.0 <a@fred.example.net>")
    assert replies[1].startswith("250 2.0.0 <c@wilma.example.net>")
    assert replies[2].startswith("250 2.0.0 <a@fred.example.net>")
    c.send("QUIT\r\n")
    assert c.code()[0] == 221
    c.close()
    msgs = sorted(ld.messages(), key=lambda m: m["host"])
    # a recipient given twice is stored once
    assert [(m["host"], m["rcpts"]) for m in msgs] == [
        (HOST, ["a"]), (OTHER, ["c"])]


def test_pipelined_transactions(ld):
    c = Raw(ld.lmtp_port)
    c.send("LHLO mta\r\nMAIL FROM:<one@example.org>\r\n"
           "RCPT TO:<u1@fred.example.net>\r\nDATA\r\n")
    c.reply()
    assert [c.code()[0] for _ in range(3)] == [250, 250, 354]
    # the end of message 1 and all of transaction 2 in one segment
    c.send("Subject: one\r\n\r\n1\r\n.\r\n"
           "MAIL FROM:<>\r\nRCPT TO:<u2@fred.example.net>\r\n"
           "RCPT TO:<u3@fred.example.net>\r\nDATA\r\n")
    assert [c.code()[0] for _ in range(5)] == [250, 250, 250, 250, 354]
    c.send("Subject: two\r\n\r\n2\r\n.\r\nQUIT\r\n")
    assert [c.code()[0] for _ in range(3)] == [250, 250, 221]
    c.close()
    got = [b for _, b in pop3_all(ld)]
    assert got == [b"Return-Path: <one@example.org>\r\nSubject: one\r\n"
                   b"\r\n1\r\n",
                   b"Return-Path: <>\r\nSubject: two\r\n\r\n2\r\n"]


def test_rset_and_sequence_errors(ld):
    c = Raw(ld.lmtp_port)
    c.send("MAIL FROM:<a@example.org>\r\n")
    assert c.code()[1].startswith("503 5.5.1")     # LHLO first
    for cmd in ("HELO x", "EHLO x"):
        c.send(cmd + "\r\n")
        assert c.code()[1].startswith("500 5.5.1")  # RFC 2033 §4.1
    c.send("LHLO mta\r\n")
    c.reply()
    c.send("VRFY fred\r\n")
    assert c.code()[0] == 252
    c.send("NOOP\r\n")
    assert c.code()[0] == 250
    c.send("RCPT TO:<a@fred.example.net>\r\n")
    assert c.code()[1].startswith("503")
    c.send("MAIL FROM:<first@example.org>\r\n")
    assert c.code()[0] == 250
    c.send("MAIL FROM:<again@example.org>\r\n")
    assert c.code()[1].startswith("503")
    c.send("RCPT TO:<a@fred.example.net>\r\n")
    assert c.code()[0] == 250
    c.send("RSET\r\n")
    assert c.code()[0] == 250
    # RSET dropped the transaction: no recipient, no sender
    c.send("RCPT TO:<a@fred.example.net>\r\n")
    assert c.code()[1].startswith("503")
    c.send("DATA\r\n")
    assert c.code()[1].startswith("503")
    c.send("MAIL FROM:<second@example.org> FOO=bar\r\n")
    assert c.code()[1].startswith("555 5.5.4")
    c.send("MAIL FROM:<second@example.org> BODY=BINARYMIME\r\n")
    assert c.code()[1].startswith("501")
    c.send("MAIL FROM:<not-an-address>\r\n")
    assert c.code()[1].startswith("501 5.1.7")
    c.send("MAIL FROM:<second@example.org>\r\n")
    assert c.code()[0] == 250
    c.send("DATA\r\n")
    assert c.code()[1].startswith("503")          # no recipients
    c.send("RCPT TO:<b@fred.example.net>\r\nDATA\r\n")
    assert [c.code()[0] for _ in range(2)] == [250, 354]
    c.send("Subject: x\r\n\r\ny\r\n.\r\nBOGUS\r\n")
    assert c.code()[0] == 250
    assert c.code()[1].startswith("500 5.5.2")
    c.close()
    msgs = ld.messages()
    assert [(m["sender"], m["rcpts"]) for m in msgs] == [
        ("second@example.org", ["b"])]


def test_size_limit(request):
    d = lmtp_daemon(overrides={"store": {"max_message_size": 2000}})
    try:
        c = Raw(d.lmtp_port)
        c.send("LHLO mta\r\n")
        assert c.reply()[-1] == "250 SIZE 2000"
        c.send("MAIL FROM:<s@example.org> SIZE=5000\r\n")
        assert c.code()[1].startswith("552 5.3.4")
        # a lying (or absent) SIZE: the data itself is measured
        c.send("MAIL FROM:<s@example.org> SIZE=100\r\n"
               "RCPT TO:<a@fred.example.net>\r\n"
               "RCPT TO:<b@wilma.example.net>\r\nDATA\r\n")
        assert [c.code()[0] for _ in range(4)] == [250, 250, 250, 354]
        c.send("Subject: big\r\n\r\n" + ("x" * 70 + "\r\n") * 40 +
               ".\r\n")
        assert [c.code()[1][:9] for _ in range(2)] == ["552 5.3.4"] * 2
        # the session goes on, and a message under the limit fits
        c.send("MAIL FROM:<s@example.org>\r\n"
               "RCPT TO:<a@fred.example.net>\r\nDATA\r\n")
        assert [c.code()[0] for _ in range(3)] == [250, 250, 354]
        c.send("Subject: small\r\n\r\n" + ("x" * 70 + "\r\n") * 20 +
               ".\r\n")
        assert c.code()[0] == 250
        c.close()
        assert [m["sender"] for m in d.messages()] == ["s@example.org"]
        assert d.messages()[0]["octets"] < 2000 + 40
    finally:
        D._finish(request, d)


def test_bad_data_is_refused_whole(ld):
    c = Raw(ld.lmtp_port)
    c.send("LHLO mta\r\n")
    c.reply()

    def txn(data):
        c.send("MAIL FROM:<s@example.org>\r\n"
               "RCPT TO:<a@fred.example.net>\r\n"
               "RCPT TO:<b@fred.example.net>\r\nDATA\r\n")
        assert [c.code()[0] for _ in range(4)] == [250, 250, 250, 354]
        c.send(data)
        return [c.code()[1] for _ in range(2)]

    # RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with CRLF
    ok = "Subject: x\r\n\r\n" + "y" * 998 + "\r\n.\r\n"
    long_ = "Subject: x\r\n\r\n" + "y" * 999 + "\r\n.\r\n"
    assert [r[:3] for r in txn(long_)] == ["500", "500"]
    assert [r[:9] for r in txn("Subject: x\r\n\r\na\0b\r\n.\r\n")] == \
        ["554 5.6.0"] * 2
    assert [r[:9] for r in txn("no header here\r\n.\r\n")] == \
        ["554 5.6.0"] * 2
    assert ld.messages() == []
    assert [r[:9] for r in txn(ok)] == ["250 2.0.0"] * 2
    c.close()
    assert len(ld.messages()) == 1
    assert len(pop3_all(ld)[0][1]) == len(
        b"Return-Path: <s@example.org>\r\n") + len(ok) - 3


def test_unix_socket_and_drop_mid_data(request):
    d = lmtp_daemon(unix=True)
    try:
        c = smtplib.LMTP(d.lmtp_sock)
        c.sendmail("<>", ["z@" + HOST], b"Subject: unix\r\n\r\nz\r\n")
        c.quit()
        # a client that goes away inside DATA stores nothing
        r = Raw(d.lmtp_port)
        r.send("LHLO m\r\nMAIL FROM:<s@example.org>\r\n"
               "RCPT TO:<q@fred.example.net>\r\nDATA\r\n")
        r.reply()
        assert [r.code()[0] for _ in range(3)] == [250, 250, 354]
        # more than one 64 KiB drain, so the tmp file has data in it
        r.send(b"Subject: cut\r\n\r\n" + b"x" * 70 * 2000 + b"\r\nhalf")
        r.close()
        d.wait_log(r"event=lmtp-drop in=data")
        # and leaves no tmp file behind
        for p in d.spool.punt_paths.values():
            assert os.listdir(os.path.join(p, "tmp")) == []
        got = pop3_all(d)
        assert got == [(got[0][0], b"Return-Path: <>\r\nSubject: unix\r\n"
                        b"\r\nz\r\n")]
        assert d.status()["totals"]["lmtp_messages"] == 1
    finally:
        D._finish(request, d)


def test_punt_down_stores_on_the_other(request):
    d = lmtp_daemon()
    try:
        # make finchley unusable: every message must land on docklands
        fin = d.spool.punt_paths["finchley"]
        os.rename(fin, fin + ".away")
        c = smtplib.LMTP("127.0.0.1", d.lmtp_port)
        for i in range(6):
            c.sendmail("s@example.org", ["p%d@%s" % (i, HOST)],
                       b"Subject: %d\r\n\r\nx\r\n" % i)
        c.quit()
        os.rename(fin + ".away", fin)
        assert {m["punt"] for m in d.messages()} == {"docklands"}
        assert len(d.messages()) == 6
        # every punt down: 451 4.3.0 per recipient, nothing stored
        doc = d.spool.punt_paths["docklands"]
        os.rename(fin, fin + ".away")
        os.rename(doc, doc + ".away")
        r = Raw(d.lmtp_port)
        r.send("LHLO m\r\nMAIL FROM:<s@example.org>\r\n"
               "RCPT TO:<q@fred.example.net>\r\nDATA\r\n")
        r.reply()
        assert [r.code()[0] for _ in range(3)] == [250, 250, 354]
        r.send("Subject: t\r\n\r\nx\r\n.\r\n")
        assert r.code()[1].startswith("451 4.3.0")
        r.close()
        os.rename(fin + ".away", fin)
        os.rename(doc + ".away", doc)
        assert len(d.messages()) == 6
    finally:
        D._finish(request, d)


# -- issue 8 "Hardening": SMTP smuggling (finding 8) --------------------------

SMUGGLED = ("MAIL FROM:<ceo@forged.example>\r\n"
            "RCPT TO:<a@fred.example.net>\r\nDATA\r\n"
            "Subject: smuggled\r\n\r\nsend money\r\n")


@pytest.mark.parametrize("fake", ["\n.\n", "\r\n.\n", "\n.\r\n"])
def test_smuggled_terminator_stores_nothing(ld, fake):
    """Only CRLF.CRLF ends DATA.  A fake terminator with a bare LF does
    not, the bytes after it are never run as commands, and the bare LF
    refuses the message for every recipient after the real final dot."""
    c = Raw(ld.lmtp_port)
    c.send("LHLO mta\r\nMAIL FROM:<s@example.org>\r\n"
           "RCPT TO:<a@fred.example.net>\r\n"
           "RCPT TO:<b@wilma.example.net>\r\nDATA\r\n")
    c.reply()
    assert [c.code()[0] for _ in range(4)] == [250, 250, 250, 354]
    c.send("Subject: real\r\n\r\nhello" + fake + SMUGGLED + ".\r\n")
    assert [c.code()[1][:9] for _ in range(2)] == ["554 5.6.0"] * 2
    # the next reply is the one to NOOP: nothing smuggled was answered
    c.send("NOOP\r\n")
    assert c.code()[1].startswith("250 2.0.0 OK")
    assert ld.messages() == []
    # the session is in sync: a clean message goes through byte-exact
    c.send("MAIL FROM:<s@example.org>\r\n"
           "RCPT TO:<a@fred.example.net>\r\nDATA\r\n")
    assert [c.code()[0] for _ in range(3)] == [250, 250, 354]
    c.send(MSG.replace(b"\r\n.\r\n", b"\r\n..\r\n").replace(
        b"\r\n.a", b"\r\n..a").replace(b"\r\n..t", b"\r\n...t") + b".\r\n")
    assert c.code()[1].startswith("250 2.0.0")
    c.send("QUIT\r\n")
    assert c.code()[0] == 221
    c.close()
    msgs = ld.messages()
    assert [(m["sender"], m["host"]) for m in msgs] == [
        ("s@example.org", HOST)]
    assert pop3_all(ld)[0][1] == b"Return-Path: <s@example.org>\r\n" + MSG


@pytest.mark.parametrize("data", [
    "Subject: x\nX-A: b\r\n\r\nbody\r\n",       # bare LF in the header
    "Subject: x\r\n\r\nbo\ndy\r\n",             # bare LF in the body
    "Subject: x\r\n\r\nbo\rdy\r\n",             # bare CR
    "Subject: x\r\n\r\nbody\r\r\n",             # CR CR LF
])
def test_bare_line_ends_refused(ld, data):
    c = Raw(ld.lmtp_port)
    c.send("LHLO mta\r\nMAIL FROM:<s@example.org>\r\n"
           "RCPT TO:<a@fred.example.net>\r\nDATA\r\n")
    c.reply()
    assert [c.code()[0] for _ in range(2)] == [250, 250]
    assert c.code()[0] == 354
    c.send(data + ".\r\n")
    assert c.code()[1][:9] == "554 5.6.0"
    c.send("QUIT\r\n")
    assert c.code()[0] == 221
    c.close()
    assert ld.messages() == []


# -- finding 10: unknown hosts at RCPT count as bad commands -----------------

def test_unknown_host_rcpt_counts_as_bad_command(request):
    d = lmtp_daemon(server={"max_bad_commands": 3})
    try:
        c = Raw(d.lmtp_port)
        c.send("LHLO mta\r\nMAIL FROM:<s@example.org>\r\n")
        c.reply()
        assert c.code()[0] == 250
        # a known host is fine and does not count
        c.send("RCPT TO:<a@fred.example.net>\r\n")
        assert c.code()[0] == 250
        for i in range(3):
            c.send("RCPT TO:<x@guess%d.example>\r\n" % i)
            assert c.code()[1].startswith("550 5.1.1")
        # the third one reached the limit: goodbye
        assert c.code()[1].startswith("421 4.7.0")
        with pytest.raises(EOFError):
            c.line()
        c.close()
        d.wait_log(r"event=lmtp-close how=badcmd-limit")
        assert d.messages() == []
    finally:
        D._finish(request, d)


# -- finding 5: DATA is streamed to disk, not held in memory -----------------

def vm_hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmHWM:"):
                return int(ln.split()[1])
    raise AssertionError("no VmHWM for %d" % pid)


def lmtp_worker(d):
    """Pid of the worker serving the only LMTP session (sdps-ctl
    sessions shows it in state lmtp)."""
    def find():
        s = [x for x in d.sessions() if x.get("state") == "lmtp"]
        return s[0]["pid"] if len(s) == 1 else None
    return D.wait_for(find, 20, what="the lmtp session's worker")


def big_message(mb):
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"   # 74
    body = line * (mb * 1024 * 1024 // len(line))
    return b"Subject: big\r\nFrom: s@example.org\r\n\r\n" + body


def test_large_message_memory_bound(request):
    """A 40 MB message raises the LMTP worker's peak RSS (VmHWM) by far
    less than its size: DATA goes to the spool through a small buffer."""
    d = lmtp_daemon(overrides={"store": {"max_message_size": 64 << 20}})
    try:
        msg = big_message(40)
        c = Raw(d.lmtp_port)
        c.send("LHLO mta\r\n")
        c.reply()
        pid = lmtp_worker(d)
        c.send("MAIL FROM:<s@example.org>\r\n"
               "RCPT TO:<a@fred.example.net>\r\n"
               "RCPT TO:<b@wilma.example.net>\r\nDATA\r\n")
        assert [c.code()[0] for _ in range(4)] == [250, 250, 250, 354]
        before = vm_hwm_kb(pid)
        c.send(msg + b".\r\n")
        assert [c.code()[1][:9] for _ in range(2)] == ["250 2.0.0"] * 2
        after = vm_hwm_kb(pid)
        c.send("QUIT\r\n")
        c.close()
        grow_kb = after - before
        print("VmHWM before %d kB after %d kB growth %d kB" %
              (before, after, grow_kb))
        assert grow_kb < 8 * 1024, (before, after)
        msgs = d.messages()
        assert len(msgs) == 2
        for m in msgs:
            assert m["stored_octets"] == len(msg)
            assert m["octets"] == len(msg) + len(
                b"Return-Path: <s@example.org>\r\n")
            with open(d.spool_file(m["punt"], m["id"]), "rb") as f:
                assert f.read() == msg
        # nothing left in tmp/
        for p in d.spool.punt_paths.values():
            assert os.listdir(os.path.join(p, "tmp")) == []
    finally:
        D._finish(request, d)


@pytest.mark.parametrize("point", ["lmtp.data.written", "lmtp.data.synced"])
def test_worker_killed_in_data_leaves_only_what_fsck_clears(
        request, monkeypatch, point):
    """A worker that dies inside DATA (SIGKILL at a fault point: after the
    first write to its tmp file, or once the whole text is fsynced there)
    stores nothing; the one tmp file it leaves is what fsck --repair
    clears."""
    monkeypatch.setenv("SDPS_FAULT", point)
    d = lmtp_daemon()
    monkeypatch.delenv("SDPS_FAULT")
    try:
        c = Raw(d.lmtp_port)
        c.send("LHLO m\r\nMAIL FROM:<s@example.org>\r\n"
               "RCPT TO:<q@fred.example.net>\r\nDATA\r\n")
        c.reply()
        assert [c.code()[0] for _ in range(3)] == [250, 250, 354]
        c.send(b"Subject: killed\r\n\r\n" + (b"y" * 70 + b"\r\n") * 2000
               + b".\r\n")
        with pytest.raises((EOFError, ConnectionResetError)):
            c.line()
        c.close()
        assert d.messages() == []
        left = [os.path.join(p, "tmp", f)
                for p in d.spool.punt_paths.values()
                for f in os.listdir(os.path.join(p, "tmp"))]
        assert len(left) == 1
        d.stop()
        r = d.fsck()
        assert r.rc != 0 and "leftover in tmp" in r.text, r
        r = d.ctl("fsck", "--repair")
        assert r.rc == 0, r
        assert not os.path.exists(left[0])
    finally:
        D._finish(request, d)


def test_copy_across_filesystems(request):
    """Punts on different filesystems: the streamed file is renamed or
    linked on its own punt and copied (copy_file_range) to the other;
    every copy is byte-exact.  Per host the punt is random, so over 30 two-host
    messages both ways occur (a miss only weakens coverage: the verdict
    is on the bytes)."""
    shm = "/dev/shm"
    if not os.path.isdir(shm) or \
            os.stat(shm).st_dev == os.stat(os.path.dirname(
                os.path.abspath(__file__))).st_dev:
        pytest.skip("no second filesystem at /dev/shm")
    import tempfile
    other = tempfile.mkdtemp(prefix="sdps-lmtp-shm-", dir=shm)
    d = lmtp_daemon(punt_paths={"docklands": os.path.join(other, "dock")})
    try:
        body = b"Subject: fs\r\n\r\n" + b"..dot\r\n" + \
            (b"z" * 60 + b"\r\n") * 3000
        c = Raw(d.lmtp_port)
        c.send("LHLO m\r\n")
        c.reply()
        for i in range(30):
            c.send("MAIL FROM:<s@example.org>\r\nRCPT TO:<a%d@%s>\r\n"
                   "RCPT TO:<b%d@%s>\r\nDATA\r\n" % (i, HOST, i, OTHER))
            assert [c.code()[0] for _ in range(4)] == [250, 250, 250, 354]
            # body is already in wire form (dot-stuffed): sent as is
            c.send(body + b".\r\n")
            assert [c.code()[0] for _ in range(2)] == [250, 250]
        c.send("QUIT\r\n")
        c.close()
        msgs = d.messages()
        assert len(msgs) == 60
        for m in msgs:
            with open(d.spool_file(m["punt"], m["id"]), "rb") as f:
                assert f.read() == body
        for p in d.spool.punt_paths.values():
            assert os.listdir(os.path.join(p, "tmp")) == []
        vias = set(re.findall(r"event=lmtp-stored .* via=(\w+)",
                              d.log()))
        print("via:", vias)
        assert vias <= {"rename", "link", "copy"}
    finally:
        D._finish(request, d)
        shutil.rmtree(other, ignore_errors=True)


def test_worker_killed_after_the_shared_commit_keeps_every_copy(
        request, monkeypatch):
    """Killed after the commit that holds both hosts' copies (one message,
    two hosts, one commit on the file's punt: store_put_file_batch), before
    any reply: both copies are durable and whole (the first shares its
    inode with the file it was linked from; fsck --repair removes only
    tmp names), and the MTA, which got no reply, retries: a duplicate,
    never a loss.  (Before group commit each host had its own commit and
    this kill left only the first host's copy.)"""
    monkeypatch.setenv("SDPS_FAULT", "lmtp.host.stored")
    d = lmtp_daemon()
    monkeypatch.delenv("SDPS_FAULT")
    try:
        body = b"Subject: half\r\n\r\n" + (b"w" * 70 + b"\r\n") * 2000
        c = Raw(d.lmtp_port)
        c.send("LHLO m\r\nMAIL FROM:<s@example.org>\r\n"
               "RCPT TO:<q@fred.example.net>\r\n"
               "RCPT TO:<r@wilma.example.net>\r\nDATA\r\n")
        c.reply()
        assert [c.code()[0] for _ in range(4)] == [250, 250, 250, 354]
        c.send(body + b".\r\n")
        with pytest.raises((EOFError, ConnectionResetError)):
            c.line()
        c.close()
        msgs = d.messages()
        assert sorted((m["host"], m["rcpts"]) for m in msgs) == [
            (HOST, ["q"]), (OTHER, ["r"])]
        assert len({m["punt"] for m in msgs}) == 1
        d.stop()
        r = d.ctl("fsck", "--repair")
        assert r.rc == 0, r
        for p in d.spool.punt_paths.values():
            assert os.listdir(os.path.join(p, "tmp")) == []
        for m in msgs:
            with open(d.spool_file(m["punt"], m["id"]), "rb") as f:
                assert f.read() == body
    finally:
        D._finish(request, d)
