"""The SDPS rules of docs/design.md §4 and the SDPS parts of §3/§8, over real
sockets against a real sdpsd, with sdps-deliver and sdps-ctl as the MTA
and the SMTP delivery agent.
"""

import email.parser
import email.policy
import email.utils
import hashlib
import os
import re
import time

import pytest

import harness
from daemon import HOST, PW1, PW2, daemon, msg_bytes  # noqa: F401

# every scenario must leave the punts consistent
FSCK_AFTER = True

SENDER = "sender@example.org"
ALICE = "alice@" + HOST
BOB = "bob@" + HOST


def message(subject, body="body\n"):
    return harness.simple_message(subject, body)


def seen(msg, sender=SENDER):
    return ("Return-Path: <%s>\r\n" % sender).encode() + msg_bytes(msg)


def subjects(p):
    out = []
    n = p.stat()[0]
    for i in range(1, n + 1):
        for ln in p.top(i, 0).split(b"\r\n"):
            if ln.startswith(b"Subject: "):
                out.append(ln[9:].decode())
    return out


def ctl(d, *args):
    return d.ctl(*args)


# -------------------------------------------- rule 1: snapshot isolation --

def test_rule1_mail_arriving_during_session_is_not_shown(daemon):
    daemon.deliver_ok(message("before"), ALICE)
    with daemon.login() as p:
        before = (p.stat(), p.list(), p.uidl())
        daemon.deliver_ok(message("during a"), ALICE, punt="finchley")
        daemon.deliver_ok(message("during b"), ALICE, punt="docklands")
        assert (p.stat(), p.list(), p.uidl()) == before
        assert p.cmd("RETR 2").startswith("-ERR")
        assert subjects(p) == ["before"]
        assert p.quit().startswith("+OK")
    with daemon.login_when_free() as p:
        assert p.stat()[0] == 3
        assert sorted(subjects(p)) == ["before", "during a", "during b"]


# ------------------------------- rule 2: claimed by SMTP, still available --

def test_rule2_claimed_message_still_retrievable(daemon):
    m = message("claimed")
    daemon.deliver_ok(m, ALICE)
    with daemon.login() as p:
        uid = p.uidl()[1]
        r = ctl(daemon, "smtp", "claim", daemon.ref(uid), "--agent", "smtp1")
        assert r.rc == 0, r
        assert "IN_DELIVERY" in daemon.by_uidl()[uid]["flags"]
        assert p.retr(1) == seen(m)
        assert p.top(1, 0).startswith(b"Return-Path: <%s>\r\n"
                                      % SENDER.encode())
        assert p.quit().startswith("+OK")
    with daemon.login_when_free() as p:
        # claimed but not delivered: a new session still lists it
        assert p.uidl() == {1: uid}
        assert p.retr(1) == seen(m)


def test_rule2_claimed_before_login_is_listed(daemon):
    m = message("claimed early")
    daemon.deliver_ok(m, ALICE)
    uid = daemon.messages()[0]["uidl"]
    assert ctl(daemon, "smtp", "claim", daemon.ref(uid),
               "--agent", "smtp1").rc == 0
    with daemon.login() as p:
        assert p.uidl() == {1: uid}
        assert p.retr(1) == seen(m)


# ------------------------------ rule 3: delivered by SMTP -> dummy message --

def check_dummy(raw):
    """raw: what RETR/TOP sent (unstuffed).  A well-formed RFC 5322
    message from the postmaster."""
    assert raw.endswith(b"\r\n")
    lines = raw.split(b"\r\n")[:-1]
    for ln in lines:
        assert b"\r" not in ln and b"\n" not in ln
        assert len(ln) <= 998
        assert all(b < 0x80 for b in ln), ln
    assert b"" in lines, "no header/body separator"
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(
        raw)
    assert not msg.defects, msg.defects
    frm = msg["From"]
    assert frm is not None
    assert "postmaster" in frm.addresses[0].username.lower()
    assert msg["Date"] is not None
    assert msg["Date"].datetime is not None
    assert len(msg.get_all("From")) == 1
    assert len(msg.get_all("Date")) == 1
    return msg


def test_rule3_dummy_after_smtp_done(daemon):
    m = message("taken by smtp", "the real body\n")
    daemon.deliver_ok(m, ALICE)
    with daemon.login() as p:
        uid = p.uidl()[1]
        ref = daemon.ref(uid)
        assert ctl(daemon, "smtp", "claim", ref, "--agent", "a").rc == 0
        assert ctl(daemon, "smtp", "done", ref).rc == 0
        assert uid not in daemon.by_uidl()
        raw = p.retr(1)
        assert raw != seen(m)
        assert b"the real body" not in raw
        msg = check_dummy(raw)
        body = msg.get_body(preferencelist=("plain",)).get_content()
        assert body.strip()
        check_dummy(p.top(1, 0))
        # *ENV still answers from the snapshot
        env = p.env(1)
        assert env[2] == SENDER
        assert ALICE in env[3:]
        assert p.quit().startswith("+OK")
    with daemon.login_when_free() as p:
        assert p.stat() == (0, 0)


def test_rule3_dummy_top_matches_retr(daemon):
    """TOP n 0 shows the header block of the message RETR n sends, also
    for the dummy (RFC 1939 TOP): a client may match the two."""
    daemon.deliver_ok(message("taken"), ALICE)
    with daemon.login() as p:
        ref = daemon.ref(p.uidl()[1])
        assert ctl(daemon, "smtp", "claim", ref, "--agent", "a").rc == 0
        assert ctl(daemon, "smtp", "done", ref).rc == 0
        raw = p.retr(1)
        top = p.top(1, 0)
        assert top == raw.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
        assert p.retr(1) == raw


def test_rule3_dummy_when_top_first(daemon):
    daemon.deliver_ok(message("top first"), ALICE)
    with daemon.login() as p:
        uid = p.uidl()[1]
        ref = daemon.ref(uid)
        assert ctl(daemon, "smtp", "claim", ref, "--agent", "a").rc == 0
        assert ctl(daemon, "smtp", "done", ref).rc == 0
        check_dummy(p.top(1, 0))
        check_dummy(p.top(1, 5))
        check_dummy(p.retr(1))


def test_rule3_dele_of_taken_message_then_quit_ok(daemon):
    daemon.deliver_ok(message("gone"), ALICE)
    daemon.deliver_ok(message("stays"), ALICE)
    with daemon.login() as p:
        u = p.uidl()
        ref = daemon.ref(u[1])
        assert ctl(daemon, "smtp", "claim", ref, "--agent", "a").rc == 0
        assert ctl(daemon, "smtp", "done", ref).rc == 0
        p.ok("DELE 1")
        assert p.quit().startswith("+OK")
    with daemon.login_when_free() as p:
        assert p.uidl() == {1: u[2]}
    assert daemon.total_msgs() == 1


# --------------------------------------------- rule 4: DELE + QUIT table --

RULE4_CASES = [
    # (claimed, then, gone right after QUIT)
    ("claimed", "release", False),
    ("claimed", "done", False),
    ("unclaimed", None, True),
]


@pytest.mark.parametrize("state,then,gone_at_once", RULE4_CASES)
def test_rule4_dele_quit(daemon, state, then, gone_at_once):
    daemon.deliver_ok(message("target"), ALICE)
    daemon.deliver_ok(message("other"), ALICE)
    with daemon.login() as p:
        u = p.uidl()
        ref = daemon.ref(u[1])
        if state == "claimed":
            assert ctl(daemon, "smtp", "claim", ref,
                       "--agent", "smtp1").rc == 0
        p.ok("DELE 1")
        r = p.quit()
        assert r.startswith("+OK"), r
        assert p.closed()
    left = daemon.by_uidl()
    if gone_at_once:
        assert u[1] not in left
        assert daemon.total_msgs() == 1
        r = ctl(daemon, "smtp", "claim", ref, "--agent", "smtp1")
        assert r.rc != 0, r
        assert r.err.strip()
    else:
        # stays until the delivery finishes, hidden from new sessions
        assert u[1] in left
        assert "POP_DELETED" in left[u[1]]["flags"]
        assert "IN_DELIVERY" in left[u[1]]["flags"]
        with daemon.login_when_free() as p:
            assert p.uidl() == {1: u[2]}
            assert p.quit().startswith("+OK")
        assert ctl(daemon, "smtp", then, ref).rc == 0
        assert u[1] not in daemon.by_uidl()
        assert daemon.total_msgs() == 1
    with daemon.login_when_free() as p:
        assert p.uidl() == {1: u[2]}
    assert daemon.fsck().rc == 0


def test_rule4_unclaimed_dele_quit_removes_file(daemon):
    daemon.deliver_ok(message("target"), ALICE, punt="finchley")
    m = daemon.messages()[0]
    path = daemon.spool_file("finchley", m["id"])
    with daemon.login() as p:
        p.ok("DELE 1")
        assert p.quit().startswith("+OK")
        assert p.closed()
    assert not os.path.exists(path)


# ---------------------------------------------------------- per-user views --

@pytest.fixture
def views(daemon):
    daemon.deliver_ok(message("for alice"), ALICE)
    daemon.deliver_ok(message("for bob"), BOB)
    daemon.deliver_ok(message("for both"), [ALICE, BOB])
    daemon.deliver_ok(message("for carol"), "Carol@" + HOST)
    return daemon


@pytest.mark.parametrize("user,want", [
    (HOST, ["for alice", "for bob", "for both", "for carol"]),
    (ALICE, ["for alice", "for both"]),
    (BOB, ["for bob", "for both"]),
    ("alice+" + HOST, ["for alice", "for both"]),
    ("ALICE@" + HOST, ["for alice", "for both"]),
    ("Alice@" + HOST.upper(), ["for alice", "for both"]),
    ("carol@" + HOST, ["for carol"]),
    ("CAROL+" + HOST, ["for carol"]),
    ("dave@" + HOST, []),
])
def test_user_views(views, user, want):
    with views.login(user, PW1) as p:
        assert subjects(p) == want
        assert p.stat()[0] == len(want)
        assert len(p.list()) == len(want)


def test_the_one_stored_copy_for_two_users(views):
    assert views.total_msgs() == 4


def test_dele_by_alice_leaves_message_for_bob(views):
    with views.login(ALICE, PW1) as p:
        assert subjects(p) == ["for alice", "for both"]
        p.ok("DELE 2")
        assert p.quit().startswith("+OK")
    with views.login_when_free(ALICE, PW1) as p:
        assert subjects(p) == ["for alice"]
        p.quit()
    with views.login_when_free(BOB, PW1) as p:
        assert subjects(p) == ["for bob", "for both"]
        env = p.env(2)
        assert env[3:] == [BOB]
        p.quit()
    with views.login_when_free(HOST, PW1) as p:
        assert subjects(p) == ["for alice", "for bob", "for both",
                               "for carol"]
        both = p.env(3)
        assert both[3:] == [BOB]


def test_dele_by_both_users_removes_message(views):
    for u in (ALICE, BOB):
        with views.login_when_free(u, PW1) as p:
            p.ok("DELE 2")
            assert p.quit().startswith("+OK")
    with views.login_when_free(HOST, PW1) as p:
        assert subjects(p) == ["for alice", "for bob", "for carol"]
    assert views.total_msgs() == 3


def test_host_dele_removes_message_for_every_user(views):
    with views.login(HOST, PW1) as p:
        p.ok("DELE 3")
        assert p.quit().startswith("+OK")
    for u in (ALICE, BOB):
        with views.login_when_free(u, PW1) as p:
            assert "for both" not in subjects(p)
    assert views.total_msgs() == 3


# --------------------------------------------------------------- passwords --

@pytest.mark.parametrize("user", [HOST, ALICE, "bob+" + HOST])
@pytest.mark.parametrize("pw", [PW1, PW2])
def test_both_passwords_work(daemon, user, pw):
    with daemon.connect() as p:
        p.ok("USER " + user)
        r = p.cmd("PASS " + pw)
        assert r.startswith("+OK"), r


@pytest.mark.parametrize("user,pw", [
    (HOST, "wrong"),
    (HOST, PW1 + " "),
    (HOST, PW1.upper()),
    (HOST, PW2.split()[0]),
    ("nosuch.example.net", PW1),
    (ALICE, "wrong"),
])
def test_wrong_password_is_auth_error(daemon, user, pw):
    with daemon.connect() as p:
        # USER does not tell whether the host exists
        p.ok("USER " + user)
        r = p.cmd("PASS " + pw)
        assert r.startswith("-ERR [AUTH]"), r
        assert p.cmd("STAT").startswith("-ERR")


def test_password_never_logged(daemon):
    with daemon.connect() as p:
        p.ok("USER " + HOST)
        p.cmd("PASS wrong-and-secret-xyz")
    with daemon.login(HOST, PW2) as p:
        p.quit()
    daemon.wait_log(r"event=logout|event=quit", 1)
    log = daemon.log()
    assert "wrong-and-secret-xyz" not in log
    assert PW2 not in log


# -------------------------------------------------------------- Return-Path --

@pytest.mark.parametrize("given,shown", [
    ("sender@example.org", "<sender@example.org>"),
    ("<sender@example.org>", "<sender@example.org>"),
    ("", "<>"),
    ("<>", "<>"),
])
def test_return_path_line_exact(daemon, given, shown):
    m = message("rp")
    daemon.deliver_ok(m, ALICE, sender=given)
    with daemon.login() as p:
        raw = p.retr(1)
        assert raw == b"Return-Path: " + shown.encode() + b"\r\n" + \
            msg_bytes(m)
        assert p.stat()[1] == len(raw)
        assert p.top(1, 0).startswith(b"Return-Path: " + shown.encode()
                                      + b"\r\nFrom: ")


# -------------------------------------------------------------------- *ENV --

def test_env_byte_exact(daemon):
    t0 = time.time()
    daemon.deliver_ok(message("env"), [ALICE, BOB], punt="docklands")
    t1 = time.time()
    with daemon.login() as p:
        uid = p.uidl()[1]
        start = len(p.raw)
        p.send("*ENV 1")
        status = p.line()
        assert status.startswith("+OK")
        body = p.multi_body()
        wire = p.raw[start:]
        lines = [b.decode() for b in body]
        assert lines[0] == ""
        punt, u, date = lines[1].split(" ", 2)
        assert punt == "docklands"
        assert u == uid
        when = email.utils.parsedate_to_datetime(date)
        assert when.tzinfo is not None
        # the arrival time: between the delivery's start and end, at the
        # one-second resolution of an RFC 5322 date
        assert int(t0) - 1 <= when.timestamp() <= t1 + 1
        assert re.match(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} "
                        r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
                        r" \d{4} \d\d:\d\d:\d\d [+-]\d{4}$", date), date
        assert lines[2] == SENDER
        assert sorted(lines[3:]) == sorted([ALICE, BOB])
        assert len(lines) == 5
        assert wire == (status.encode() + b"\r\n\r\n" +
                        lines[1].encode() + b"\r\n" + SENDER.encode() +
                        b"\r\n" + b"".join(x.encode() + b"\r\n"
                                           for x in lines[3:]) + b".\r\n")
        p.retr(1)
        assert p.env(1)[0] == "RD"
        assert p.env(1)[1:] == lines[1:]


def test_env_for_user_session_shows_only_visible_recipient(daemon):
    daemon.deliver_ok(message("env"), [ALICE, BOB, "carol@" + HOST])
    with daemon.login(BOB, PW1) as p:
        assert p.env(1)[3:] == [BOB]


def test_env_null_sender_is_empty_line(daemon):
    daemon.deliver_ok(message("bounce"), ALICE, sender="<>")
    with daemon.login() as p:
        env = p.env(1)
        assert env[2] == ""
        assert env[3:] == [ALICE]


def test_env_for_message_taken_by_smtp_is_multiline_ok(daemon):
    daemon.deliver_ok(message("taken"), ALICE)
    with daemon.login() as p:
        before = p.env(1)
        ref = daemon.ref(p.uidl()[1])
        assert ctl(daemon, "smtp", "claim", ref, "--agent", "x").rc == 0
        assert p.env(1) == before
        assert ctl(daemon, "smtp", "done", ref).rc == 0
        r, body = p.multi("*ENV 1")
        assert r.startswith("+OK")
        assert [b.decode() for b in body] == before


@pytest.mark.parametrize("arg", ["0", "2", "-1", "x", "99999999999999999999"])
def test_env_bad_number_is_err(daemon, arg):
    daemon.deliver_ok(message("one"), ALICE)
    with daemon.login() as p:
        assert p.cmd("*ENV " + arg).startswith("-ERR")
        assert p.ok("NOOP")


def test_env_deleted_number_is_err(daemon):
    daemon.deliver_ok(message("one"), ALICE)
    with daemon.login() as p:
        p.ok("DELE 1")
        assert p.cmd("*ENV 1").startswith("-ERR")


# ----------------------------------------------------- RD across sessions --

@pytest.mark.parametrize("ending", ["quit", "drop"])
def test_rd_visible_in_next_session(daemon, ending):
    daemon.deliver_ok(message("read me"), ALICE)
    daemon.deliver_ok(message("unread"), ALICE)
    with daemon.login() as p:
        assert p.env(1)[0] == ""
        p.retr(1)
        assert p.env(1)[0] == "RD"
        assert p.env(2)[0] == ""
        if ending == "quit":
            assert p.quit().startswith("+OK")
    with daemon.login_when_free() as p:
        assert p.env(1)[0] == "RD"
        assert p.env(2)[0] == ""
    flags = {m["uidl"]: m["flags"] for m in daemon.messages()}
    assert sorted("RD" in f for f in flags.values()) == [False, True]


def test_rd_not_set_by_top(daemon):
    daemon.deliver_ok(message("peek"), ALICE)
    with daemon.login() as p:
        p.top(1, 3)
        assert p.env(1)[0] == ""
        assert p.quit().startswith("+OK")
    with daemon.login_when_free() as p:
        assert p.env(1)[0] == ""


def test_rd_for_user_session(daemon):
    daemon.deliver_ok(message("both"), [ALICE, BOB])
    with daemon.login(ALICE, PW1) as p:
        p.retr(1)
        assert p.quit().startswith("+OK")
    with daemon.login_when_free(HOST, PW1) as p:
        assert p.env(1)[0] == "RD"


# ---------------------------------------------------- look-only: no writes --

def index_fingerprint(d):
    out = {}
    for name, path in d.punt_paths.items():
        f = os.path.join(path, "index", "data.mdb")
        st = os.stat(f)
        with open(f, "rb") as fh:
            h = hashlib.sha256(fh.read()).hexdigest()
        out[name] = (st.st_size, st.st_mtime_ns, h)
    return out


def spool_fingerprint(d):
    out = {}
    for name, path in d.punt_paths.items():
        for top, dirs, files in os.walk(path):
            if os.path.basename(top) == "index":
                continue
            for fn in files:
                st = os.stat(os.path.join(top, fn))
                out[os.path.join(top, fn)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("user", [HOST, ALICE])
def test_look_only_session_writes_nothing(daemon, user):
    """docs/design.md §5.4 cost budget: login, STAT, LIST, UIDL, QUIT commit no
    write transaction to any punt index and touch no spool file."""
    daemon.deliver_ok(message("a"), ALICE, punt="finchley")
    daemon.deliver_ok(message("b"), ALICE, punt="docklands")
    # one session first, so a worker has opened both punts already
    with daemon.login(user, PW1) as p:
        p.quit()
    daemon.wait_log(r"event=(logout|quit)", 1)
    stat = daemon.spool_stat()
    idx = index_fingerprint(daemon)
    files = spool_fingerprint(daemon)
    for _ in range(3):
        with daemon.login_when_free(user, PW1) as p:
            p.stat()
            p.list()
            p.uidl()
            p.env(1)
            p.top(2, 1)
            assert p.quit().startswith("+OK")
            assert p.closed()
    assert index_fingerprint(daemon) == idx
    assert spool_fingerprint(daemon) == files
    assert daemon.spool_stat()["punts"] == stat["punts"]


def test_retr_session_does_write(daemon):
    """The check above can fail: a RETR (RD flag) changes the index."""
    daemon.deliver_ok(message("a"), ALICE, punt="finchley")
    daemon.deliver_ok(message("b"), ALICE, punt="docklands")
    idx = index_fingerprint(daemon)
    with daemon.login() as p:
        p.retr(1)
        p.retr(2)
        assert p.quit().startswith("+OK")
    wait = daemon.login_when_free()
    wait.close()
    after = index_fingerprint(daemon)
    assert after["finchley"][2] != idx["finchley"][2]
    assert after["docklands"][2] != idx["docklands"][2]


# -------------------------------------------------------- merge of punts --

def test_merge_of_punts_in_arrival_order(daemon):
    order = [("m1", "finchley"), ("m2", "docklands"), ("m3", "docklands"),
             ("m4", "finchley"), ("m5", "docklands")]
    for subj, punt in order:
        daemon.deliver_ok(message(subj), ALICE, punt=punt)
    with daemon.login() as p:
        assert subjects(p) == [s for s, _ in order]
        punts = [p.env(i)[1].split()[0] for i in range(1, 6)]
        assert punts == [pt for _, pt in order]
        uids = p.uidl()
        assert len(set(uids.values())) == 5
    by = daemon.by_uidl()
    assert [by[uids[i]]["punt"] for i in range(1, 6)] == punts


def test_merge_dele_across_punts(daemon):
    daemon.deliver_ok(message("a"), ALICE, punt="finchley")
    daemon.deliver_ok(message("b"), ALICE, punt="docklands")
    daemon.deliver_ok(message("c"), ALICE, punt="finchley")
    with daemon.login() as p:
        p.ok("DELE 1")
        p.ok("DELE 2")
        assert p.quit().startswith("+OK")
    with daemon.login_when_free() as p:
        assert subjects(p) == ["c"]
    st = {x["name"]: x["msgs"] for x in daemon.spool_stat()["punts"]}
    assert st == {"finchley": 1, "docklands": 0}


def test_rule4_user_dele_of_shared_claimed_message(daemon):
    """alice's DELE+QUIT of a message SMTP is delivering, that bob also
    has: +OK; gone from alice's view, still in bob's until SMTP is done."""
    daemon.deliver_ok(message("shared"), [ALICE, BOB])
    uid = daemon.messages()[0]["uidl"]
    ref = daemon.ref(uid)
    with daemon.login(ALICE, PW1) as p:
        assert ctl(daemon, "smtp", "claim", ref, "--agent", "a").rc == 0
        p.ok("DELE 1")
        assert p.quit().startswith("+OK")
    with daemon.login_when_free(ALICE, PW1) as p:
        assert p.stat()[0] == 0
    with daemon.login_when_free(BOB, PW1) as p:
        assert p.uidl() == {1: uid}
        assert p.env(1)[3:] == [BOB]
        p.quit()
    assert ctl(daemon, "smtp", "done", ref).rc == 0
    with daemon.login_when_free(BOB, PW1) as p:
        assert p.stat()[0] == 0
    assert daemon.total_msgs() == 0


def test_rule3_dummy_in_user_session(daemon):
    daemon.deliver_ok(message("shared"), [ALICE, BOB])
    with daemon.login(BOB, PW1) as p:
        ref = daemon.ref(p.uidl()[1])
        assert ctl(daemon, "smtp", "claim", ref, "--agent", "a").rc == 0
        assert ctl(daemon, "smtp", "done", ref).rc == 0
        check_dummy(p.retr(1))
        p.ok("DELE 1")
        assert p.quit().startswith("+OK")
    assert daemon.total_msgs() == 0
