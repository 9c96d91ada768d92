"""RFC 1939 (+ RFC 2449 CAPA) conformance of sdpsd over a real socket.

docs/design.md §2.1 (the RFC choices), §2.3 (bad input).
"""

import re

import pytest

import harness
from daemon import HOST, PW1, Pop3Error, daemon, msg_bytes  # noqa: F401

# every scenario must leave the punts consistent
FSCK_AFTER = True

SENDER = "sender@example.org"
RCPT = "alice@" + HOST

# A message with lines that need dot-stuffing on the wire.
MSG1 = ("From: Sender <sender@example.org>\n"
        "To: alice@fred.example.net\n"
        "Subject: first\n"
        "Message-ID: <m1@example.org>\n"
        "\n"
        "line one\n"
        ".dot line\n"
        "..two dots\n"
        "line four\n"
        ".\n"
        "last line\n")
MSG2 = harness.simple_message("second", "body two\n")
MSG3 = harness.simple_message("third", "body three\nmore\n")


def seen(msg, sender=SENDER):
    """What RETR must send for msg (unstuffed): Return-Path, then the
    message with CRLF line ends."""
    return ("Return-Path: <%s>\r\n" % sender).encode() + msg_bytes(msg)


@pytest.fixture
def d3(daemon):
    """The daemon with three messages for alice, in arrival order."""
    for m in (MSG1, MSG2, MSG3):
        daemon.deliver_ok(m, RCPT)
    return daemon


def fresh(d):
    return d.login(HOST, PW1)


# ------------------------------------------------------------ greeting --

def test_greeting_is_ok_line(daemon):
    with daemon.connect() as p:
        assert re.match(r"^\+OK\b", p.greeting)
        assert p.raw.endswith(b"\r\n")


# ---------------------------------------------- commands in each state --

AUTH_STATE_ERR = ["STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "NOOP",
                  "RSET", "TOP 1 0", "UIDL", "UIDL 1", "*ENV 1", "LAST",
                  "PASS " + PW1]


@pytest.mark.parametrize("cmd", AUTH_STATE_ERR)
def test_authorization_state_rejects(d3, cmd):
    """Before login only USER, PASS (after USER), CAPA, QUIT are allowed."""
    with d3.connect() as p:
        assert p.cmd(cmd).startswith("-ERR")
        # nothing changed: the session still works and can log in
        p.login(HOST, PW1)
        assert p.stat()[0] == 3
        assert p.quit().startswith("+OK")


def test_authorization_capa_and_quit(daemon):
    with daemon.connect() as p:
        body = p.multi_ok("CAPA")
        assert body
        assert p.quit().startswith("+OK")
        assert p.closed()


def test_apop_is_err_in_authorization(daemon):
    with daemon.connect() as p:
        assert p.cmd("APOP %s c4c9334bac560ecc979e58001b3e22fb"
                     % HOST).startswith("-ERR")
        p.login(HOST, PW1)


def test_pass_without_user_is_err(daemon):
    with daemon.connect() as p:
        assert p.cmd("PASS " + PW1).startswith("-ERR")
        p.login(HOST, PW1)


def test_user_without_argument_is_err(daemon):
    with daemon.connect() as p:
        assert p.cmd("USER").startswith("-ERR")
        p.login(HOST, PW1)


@pytest.mark.parametrize("cmd", ["USER " + HOST, "PASS " + PW1,
                                 "APOP %s c4c9334bac560ecc979e58001b3e22fb"
                                 % HOST])
def test_transaction_state_rejects(d3, cmd):
    with fresh(d3) as p:
        assert p.cmd(cmd).startswith("-ERR")
        assert p.stat()[0] == 3
        assert p.quit().startswith("+OK")


def test_transaction_state_accepts_every_command(d3):
    with fresh(d3) as p:
        assert p.ok("NOOP")
        n, size = p.stat()
        assert n == 3
        assert len(p.list()) == 3
        assert p.ok("LIST 1").split()[1] == "1"
        assert len(p.uidl()) == 3
        assert p.ok("UIDL 2").split()[1] == "2"
        assert p.retr(1)
        assert p.top(1, 0)
        assert p.env(1)
        assert p.multi_ok("CAPA")
        assert p.ok("DELE 3")
        assert p.ok("RSET")
        assert p.quit().startswith("+OK")
        assert p.closed()


@pytest.mark.parametrize("spelling", ["stat", "Stat", "sTaT"])
def test_commands_case_insensitive(d3, spelling):
    with d3.connect() as p:
        p.ok("uSeR " + HOST)
        p.ok("pass " + PW1)
        assert p.ok(spelling).split()[1] == "3"
        assert p.ok("noop")
        assert len(p.multi_ok("list")) == 3
        assert p.multi_ok("retr 2")
        assert p.multi_ok("top 2 0")
        assert p.multi_ok("uidl")
        assert p.multi_ok("*env 1")
        assert p.ok("dele 1")
        assert p.ok("rset")
        assert p.cmd("quit").startswith("+OK")


# --------------------------------------------------------------- sizes --

def test_list_and_stat_sizes_equal_retr_octets(d3):
    with fresh(d3) as p:
        n, total = p.stat()
        sizes = p.list()
        got = {i: p.retr(i) for i in sizes}
        for i in sizes:
            assert sizes[i] == len(got[i]), "message %d" % i
            assert int(p.ok("LIST %d" % i).split()[2]) == sizes[i]
        assert total == sum(sizes.values())
        assert got[1] == seen(MSG1)
        assert got[2] == seen(MSG2)
        assert got[3] == seen(MSG3)


def test_retr_is_dot_stuffed_on_the_wire(d3):
    with fresh(d3) as p:
        start = len(p.raw)
        p.retr(1)
        wire = p.raw[start:]
        assert b"\r\n..dot line\r\n" in wire
        assert b"\r\n...two dots\r\n" in wire
        assert b"\r\n..\r\nlast line\r\n.\r\n" in wire
        assert wire.endswith(b"last line\r\n.\r\n")


def test_stat_counts_null_sender_return_path(daemon):
    daemon.deliver_ok(MSG2, RCPT, sender="")
    with fresh(daemon) as p:
        body = p.retr(1)
        assert body == seen(MSG2, sender="")
        assert body.startswith(b"Return-Path: <>\r\n")
        assert p.stat() == (1, len(body))


# ----------------------------------------------------------------- TOP --

def split_msg(b):
    head, sep, body = b.partition(b"\r\n\r\n")
    return head + b"\r\n", body


def test_top_zero_lines_is_header_block(d3):
    with fresh(d3) as p:
        full = p.retr(1)
        head, _ = split_msg(full)
        assert p.top(1, 0) == head + b"\r\n"
        assert p.top(1, 0).startswith(b"Return-Path: <%s>\r\n"
                                      % SENDER.encode())


def test_top_two_lines(d3):
    with fresh(d3) as p:
        head, body = split_msg(p.retr(1))
        assert p.top(1, 2) == head + b"\r\n" + b"line one\r\n.dot line\r\n"


def test_top_more_lines_than_body_is_whole_message(d3):
    with fresh(d3) as p:
        assert p.top(2, 1000) == p.retr(2)


@pytest.mark.parametrize("args", ["1", "1 -1", "1 x", "1 +1", "", "1 2 3"])
def test_top_bad_arguments(d3, args):
    with fresh(d3) as p:
        assert p.cmd(("TOP " + args).strip()).startswith("-ERR")
        assert p.stat()[0] == 3


# ---------------------------------------------------------------- UIDL --

def test_uidl_unique_printable_and_stable_across_sessions(daemon):
    daemon.deliver_ok(MSG1, RCPT, punt="finchley")
    daemon.deliver_ok(MSG2, RCPT, punt="docklands")
    daemon.deliver_ok(MSG3, RCPT, punt="finchley")
    with fresh(daemon) as p:
        u1 = p.uidl()
        for i, u in u1.items():
            assert p.ok("UIDL %d" % i) == "+OK %d %s" % (i, u)
        p.quit()
    assert len(set(u1.values())) == 3
    for u in u1.values():
        assert 1 <= len(u) <= 70
        assert all(0x21 <= ord(c) <= 0x7e for c in u), u
    with daemon.login_when_free() as p:
        assert p.uidl() == u1
        p.quit()


def test_uidl_not_reused_after_delete(daemon):
    daemon.deliver_ok(MSG1, RCPT, punt="finchley")
    with fresh(daemon) as p:
        old = p.uidl()[1]
        p.ok("DELE 1")
        assert p.quit().startswith("+OK")
    daemon.deliver_ok(MSG1, RCPT, punt="finchley")
    with daemon.login_when_free() as p:
        assert p.uidl()[1] != old


# ------------------------------------------------------ DELE/RSET/QUIT --

def test_dele_then_rset_restores(d3):
    with fresh(d3) as p:
        n, total = p.stat()
        sizes = p.list()
        p.ok("DELE 2")
        assert p.stat() == (2, total - sizes[2])
        assert 2 not in p.list()
        assert 2 not in p.uidl()
        for c in ("RETR 2", "LIST 2", "TOP 2 0", "UIDL 2", "DELE 2",
                  "*ENV 2"):
            assert p.cmd(c).startswith("-ERR"), c
        p.ok("RSET")
        assert p.stat() == (n, total)
        assert p.list() == sizes
        assert p.quit().startswith("+OK")
    with d3.login_when_free() as p:
        assert p.stat() == (n, total)


def test_dele_then_quit_removes(d3):
    with fresh(d3) as p:
        uids = p.uidl()
        p.ok("DELE 1")
        p.ok("DELE 3")
        assert p.quit().startswith("+OK")
        assert p.closed()
    with d3.login_when_free() as p:
        assert p.uidl() == {1: uids[2]}
        assert p.retr(1) == seen(MSG2)
    assert d3.total_msgs() == 1


def test_drop_without_quit_deletes_nothing(d3):
    """RFC 1939 §6: no QUIT, no UPDATE state."""
    with fresh(d3) as p:
        uids = p.uidl()
        p.ok("DELE 1")
        p.ok("DELE 2")
    # the socket is closed without QUIT
    with d3.login_when_free() as p:
        assert p.uidl() == uids
    assert d3.total_msgs() == 3


def test_quit_in_authorization_deletes_nothing(d3):
    with d3.connect() as p:
        p.ok("USER " + HOST)
        assert p.quit().startswith("+OK")
    assert d3.total_msgs() == 3


# ---------------------------------------------------------- pipelining --

def test_pipelined_commands_answered_in_order(d3):
    with d3.connect() as p:
        p.send_raw("USER %s\r\nPASS %s\r\nSTAT\r\nLIST\r\nNOOP\r\n"
                   "RETR 2\r\nBOGUS\r\nUIDL 1\r\nDELE 1\r\nRSET\r\n"
                   "TOP 3 0\r\nQUIT\r\n" % (HOST, PW1))
        assert p.line().startswith("+OK")          # USER
        assert p.line().startswith("+OK")          # PASS
        st = p.line()
        assert st.startswith("+OK 3 ")              # STAT
        assert p.line().startswith("+OK")          # LIST
        assert len(p.multi_body()) == 3
        assert p.line().startswith("+OK")          # NOOP
        assert p.line().startswith("+OK")          # RETR 2
        assert b"".join(l + b"\r\n" for l in p.multi_body()) == seen(MSG2)
        assert p.line().startswith("-ERR")         # BOGUS
        assert re.match(r"^\+OK 1 \S+$", p.line())  # UIDL 1
        assert p.line().startswith("+OK")          # DELE 1
        assert p.line().startswith("+OK")          # RSET
        assert p.line().startswith("+OK")          # TOP 3 0
        p.multi_body()
        assert p.line().startswith("+OK")          # QUIT
        assert p.closed()
    assert d3.total_msgs() == 3


# ---------------------------------------------------------------- CAPA --

@pytest.mark.parametrize("logged_in", [False, True])
def test_capa_lists_required_capabilities(daemon, logged_in):
    p = fresh(daemon) if logged_in else daemon.connect()
    with p:
        caps = [c.decode() for c in p.multi_ok("CAPA")]
    names = {c.split()[0].upper() for c in caps if c.strip()}
    for need in ("TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE",
                 "PIPELINING", "EXPIRE", "IMPLEMENTATION", "X-SDPS"):
        assert need in names, (need, caps)
    expire = [c for c in caps if c.upper().startswith("EXPIRE")][0]
    assert re.match(r"^EXPIRE (NEVER|\d+)( USER)?$", expire), expire
    # issue 10: SASL (RFC 5034) where USER is allowed (loopback, by the
    # default cleartext policy); STLS only on a tls=starttls listener
    assert "SASL PLAIN LOGIN" in caps, caps
    assert "STLS" not in names, caps


# ----------------------------------------------------------- bad input --

@pytest.mark.parametrize("length", [256, 300, 4000])
def test_long_line_is_err_and_session_continues(d3, length):
    with fresh(d3) as p:
        line = "NOOP " + "x" * (length - 7)     # + CRLF = length octets
        assert len(line) + 2 == length
        assert p.cmd(line).startswith("-ERR")
        assert p.ok("NOOP")
        assert p.stat()[0] == 3


def test_long_line_in_authorization_then_login(d3):
    with d3.connect() as p:
        assert p.cmd("USER " + "a" * 400).startswith("-ERR")
        p.login(HOST, PW1)
        assert p.stat()[0] == 3


def test_line_of_255_octets_is_not_too_long(d3):
    with fresh(d3) as p:
        line = "NOOP" + " " * (255 - 4 - 2)
        assert len(line) + 2 == 255
        r = p.cmd(line)
        # trailing spaces may or may not count as an argument, but the
        # line must not be rejected as too long (and must answer once)
        assert r.startswith("+OK") or "long" not in r.lower()
        assert p.ok("NOOP")


@pytest.mark.parametrize("raw", [b"NO\x00OP\r\n", b"STAT\x00\r\n",
                                 b"\x00\r\n", b"LIST \x001\r\n"])
def test_nul_in_line_is_err(d3, raw):
    with fresh(d3) as p:
        p.send_raw(raw)
        assert p.line().startswith("-ERR")
        assert p.ok("NOOP")
        assert p.stat()[0] == 3


@pytest.mark.parametrize("cmd", ["FOO", "", "   ", "STATX", "RETRIEVE 1",
                                 "\xff\xfe", "STAT 1", "NOOP x", "QUIT now",
                                 "RETR", "DELE", "RETR 1 2", "LIST 1 2",
                                 "UIDL 1 2", "*ENV", "ENV 1", "* ENV 1"])
def test_garbage_commands(d3, cmd):
    with fresh(d3) as p:
        assert p.cmd(cmd).startswith("-ERR"), cmd
        assert p.stat()[0] == 3
        assert p.quit().startswith("+OK")
    assert d3.total_msgs() == 3


BAD_NUMBERS = ["0", "-1", "+1", "4", "99999999999999999999",
               "18446744073709551617", "1x", "x", "0x1", "01a",
               "1.0"]


@pytest.mark.parametrize("num", BAD_NUMBERS)
@pytest.mark.parametrize("cmd", ["RETR %s", "DELE %s", "LIST %s",
                                 "UIDL %s", "TOP %s 0", "*ENV %s"])
def test_bad_message_numbers(d3, cmd, num):
    with fresh(d3) as p:
        r = p.cmd(cmd % num)
        assert r.startswith("-ERR"), (cmd % num, r)
        assert p.stat()[0] == 3
        assert p.quit().startswith("+OK")
    assert d3.total_msgs() == 3


@pytest.mark.parametrize("cmd", ["RETR 1", "DELE 1", "LIST 1", "UIDL 1",
                                 "TOP 1 0", "*ENV 1"])
def test_deleted_message_number(d3, cmd):
    with fresh(d3) as p:
        p.ok("DELE 1")
        assert p.cmd(cmd).startswith("-ERR"), cmd
        p.ok("RSET")
        p.ok("LIST 1")


def test_wrong_password_then_right(daemon):
    with daemon.connect() as p:
        p.ok("USER " + HOST)
        r = p.cmd("PASS wrong")
        assert r.startswith("-ERR [AUTH]"), r
        p.login(HOST, PW1)


def test_too_many_auth_failures_close_connection(daemon):
    with daemon.connect() as p:
        closed = False
        for _ in range(30):
            try:
                p.ok("USER " + HOST)
                assert p.cmd("PASS wrong").startswith("-ERR")
            except (EOFError, ConnectionError, Pop3Error):
                closed = True
                break
        assert closed or p.closed(timeout=5)


# ------------------------------------------------ message content, exact --

@pytest.mark.parametrize("name,raw", [
    ("no final newline", b"Subject: x\n\nno newline at the end"),
    ("crlf input", b"Subject: x\r\n\r\nalready crlf\r\n.\r\nend\r\n"),
    ("8bit", b"Subject: 8bit\n\ncaf\xc3\xa9 \xff\xfe\x01 bytes\n"),
    ("only headers", b"Subject: nothing else\n"),
    ("dots only", b"Subject: dots\n\n.\n..\n...\n"),
    ("empty lines", b"Subject: e\n\n\n\n\nx\n\n"),
])
def test_retr_exact_bytes(daemon, name, raw):
    daemon.deliver_ok(raw, RCPT)
    with fresh(daemon) as p:
        got = p.retr(1)
        assert got == b"Return-Path: <sender@example.org>\r\n" + \
            msg_bytes(raw), name
        assert p.list()[1] == len(got)
        assert p.stat() == (1, len(got))


def test_large_message_exact(daemon):
    lines = [(".%d " % i + "y" * (i % 200)) for i in range(40000)]
    raw = ("Subject: big\n\n" + "\n".join(lines) + "\n").encode()
    daemon.deliver_ok(raw, RCPT)
    with fresh(daemon) as p:
        got = p.retr(1)
        assert got == b"Return-Path: <sender@example.org>\r\n" + \
            msg_bytes(raw)
        assert p.list()[1] == len(got)
        assert p.ok("NOOP")
