"""SASL AUTH (RFC 5034) with PLAIN (RFC 4616) and LOGIN against a real
sdpsd (issue 10): over implicit TLS and after STLS, good, bad and
malformed, cancelled, and through the same throttle, delays and log
lines as USER/PASS.  Verdicts come from replies, log lines and the
`sdps-ctl status --json` counters, never from timing."""

import base64
import threading

import pytest

from daemon import Daemon, HOST, PW1, PW2, finish_fsck
from daemon import tls_strict as tlsd  # noqa: F401

FSCK_AFTER = True


def b64(data):
    if isinstance(data, str):
        data = data.encode("latin-1")
    return base64.b64encode(data).decode()


def plain(authcid=HOST, pw=PW1, authzid=""):
    return b64("%s\0%s\0%s" % (authzid, authcid, pw))


finish = finish_fsck


def auth_counts(d):
    a = d.status()["auth"]
    return a["failures"], a["hashes"]


def over(d, how):
    """A connection where a password may be sent: implicit TLS or STLS."""
    return d.connect_tls() if how == "implicit" else d.connect_stls()


# ------------------------------------------------------------ good --

@pytest.mark.parametrize("how", ["implicit", "stls"])
def test_plain_with_initial_response(tlsd, how):
    with over(tlsd, how) as p:
        r = p.cmd("AUTH PLAIN " + plain())
        assert r.startswith("+OK maildrop has 0 messages"), r
        assert p.stat() == (0, 0)
        assert p.quit().startswith("+OK")
    (e,) = tlsd.session_events("login")
    assert e["mech"] == "plain" and e["tls"].startswith("TLSv1.")


@pytest.mark.parametrize("how", ["implicit", "stls"])
def test_plain_without_initial_response(tlsd, how):
    with over(tlsd, how) as p:
        p.send("AUTH PLAIN")
        assert p.line_bytes() == b"+ \r\n"
        r = p.cmd(plain(pw=PW2, authzid=HOST))
        assert r.startswith("+OK maildrop"), r
        p.quit()


def test_auth_without_argument_lists_mechanisms(tlsd):
    with tlsd.connect_tls() as p:
        assert p.multi_ok("AUTH") == [b"PLAIN", b"LOGIN"]
        p.login(HOST, PW1)
        p.quit()
    with tlsd.connect() as p:               # clear, not allowed: none
        assert p.multi_ok("AUTH") == []


def test_login_mechanism(tlsd):
    with tlsd.connect_stls() as p:
        assert p.cmd("AUTH LOGIN") == "+ VXNlcm5hbWU6"     # "Username:"
        assert p.cmd(b64(HOST)) == "+ UGFzc3dvcmQ6"        # "Password:"
        r = p.cmd(b64(PW1))
        assert r.startswith("+OK maildrop"), r
        p.quit()
    with tlsd.connect_tls() as p:
        assert p.cmd("AUTH LOGIN " + b64(HOST)) == "+ UGFzc3dvcmQ6"
        r = p.cmd(b64("not the password"))
        assert r == "-ERR [AUTH] invalid user name or password", r
        assert p.cmd("AUTH LOGIN " + b64(HOST)) == "+ UGFzc3dvcmQ6"
        assert p.cmd(b64(PW2)).startswith("+OK maildrop")
        p.quit()
    assert [e["mech"] for e in tlsd.session_events("login")] == \
        ["login", "login"]


# ------------------------------------------------------------- bad --

def test_bad_password_is_an_auth_failure_like_pass(tlsd):
    with tlsd.connect_tls() as p:
        r = p.cmd("AUTH PLAIN " + plain(pw="wrong"))
        assert r == "-ERR [AUTH] invalid user name or password", r
        p.ok("USER " + HOST)
        r2 = p.cmd("PASS wrong")
        assert r2 == r
        assert p.cmd("AUTH PLAIN " + plain()).startswith("+OK")
        p.quit()
    fails = tlsd.session_events("auth-fail")
    assert len(fails) == 2
    # the same log line, whichever way the password came
    assert set(fails[0]) == set(fails[1])
    assert fails[0]["host"] == fails[1]["host"] == HOST
    assert int(fails[1]["recent"]) == int(fails[0]["recent"]) + 1
    assert auth_counts(tlsd)[0] == 2
    assert "wrong" not in tlsd.log()


MALFORMED = [
    ("AUTH PLAIN AGZy!", "-ERR invalid base64 in response"),
    ("AUTH PLAIN " + plain()[:-1], "-ERR invalid base64 in response"),
    ("AUTH PLAIN " + b64("\0" + HOST + PW1), "-ERR malformed PLAIN response"),
    ("AUTH PLAIN " + b64("\0%s\0%s\0" % (HOST, PW1)),
     "-ERR malformed PLAIN response"),
    ("AUTH PLAIN " + b64("\0\0%s\0%s" % (HOST, PW1)),
     "-ERR malformed PLAIN response"),
    ("AUTH PLAIN =", "-ERR malformed PLAIN response"),
    ("AUTH PLAIN " + plain(pw=""), "-ERR empty password"),
    ("AUTH PLAIN " + plain(authzid="barney.example.net"),
     "-ERR authorization identity must be empty or the user name"),
    ("AUTH PLAIN " + plain(authcid="not a host"), "-ERR invalid user name"),
    ("AUTH LOGIN " + b64("x\0y"), "-ERR invalid user name"),
    ("AUTH CRAM-MD5", "-ERR unsupported SASL mechanism"),
]


@pytest.mark.parametrize("how", ["implicit", "stls"])
def test_malformed_changes_nothing(tlsd, how):
    with over(tlsd, how) as p:
        for line, want in MALFORMED:
            assert p.cmd(line) == want, line
        # in a continuation too, and a cancel
        assert p.cmd("AUTH PLAIN") == "+ "
        assert p.cmd(plain() + " ") == "-ERR invalid base64 in response"
        assert p.cmd("AUTH PLAIN") == "+ "
        assert p.cmd("*") == "-ERR AUTH cancelled"
        assert p.cmd("AUTH LOGIN") == "+ VXNlcm5hbWU6"
        assert p.cmd("*") == "-ERR AUTH cancelled"
        # no failure counted, no hash computed; the login still works
        assert auth_counts(tlsd) == (0, 0)
        assert p.cmd("AUTH PLAIN " + plain()).startswith("+OK maildrop")
        p.quit()
    assert not tlsd.session_events("auth-fail")


def test_long_response_in_continuation(tlsd):
    """RFC 5034 §4: a response to a challenge may exceed the 255-octet
    command line (one that does is refused as too long only past the
    SASL limit, and the session goes on)."""
    long_pw = "p" * 400
    with tlsd.connect_tls() as p:
        assert p.cmd("AUTH PLAIN") == "+ "
        r = p.cmd(plain(pw=long_pw))
        assert r == "-ERR [AUTH] invalid user name or password", r
        assert p.cmd("AUTH PLAIN") == "+ "
        assert p.cmd("A" * 5000) == "-ERR response too long"
        assert p.cmd("AUTH PLAIN " + plain()).startswith("+OK")
        p.quit()


# -------------------------------------------------------- throttle --

def test_throttle_applies_to_auth():
    """A burst of wrong AUTH PLAIN from one source: once the source's
    budget is spent the answer is the throttle's, exactly as for PASS,
    and a right password from it is refused too, without a hash."""
    d = Daemon(tls=True, server={
        "auth_fail_delay_ms": 0, "auth_cache_ttl": 0,
        "auth_source_budget": 4, "auth_host_budget": 100,
        "auth_budget_window": 86400, "auth_max_failures": 3})
    try:
        replies = []
        for n in range(3):                       # 9 attempts > budget 4
            with d.connect_tls() as p:
                for k in range(3):
                    replies.append(p.cmd("AUTH PLAIN " +
                                         plain(pw="guess-%d-%d" % (n, k))))
                assert p.closed()
        assert replies[:4] == \
            ["-ERR [AUTH] invalid user name or password"] * 4
        assert set(replies[4:]) == \
            {"-ERR [AUTH] too many failed logins, try again later"}
        hashes = d.status()["auth"]["hashes"]
        assert hashes == 4
        with d.connect_tls() as p:
            r = p.cmd("AUTH PLAIN " + plain())
            assert r == "-ERR [AUTH] too many failed logins, try again" \
                " later", r
        with d.connect() as p:                  # PASS: the same budget
            p.ok("USER " + HOST)
            assert p.cmd("PASS " + PW1) == r
        assert d.status()["auth"]["hashes"] == hashes
        assert len(d.session_events("auth-throttled")) == 5 + 2
    finally:
        finish(d)


def test_concurrent_auth_logins(tlsd):
    """A few TLS AUTH logins at once, on different workers."""
    errors = []

    def one(i):
        try:
            with tlsd.connect_tls() as p:
                r = p.cmd("AUTH PLAIN " + plain(authcid="u%d@%s" % (i, HOST)))
                if not r.startswith("+OK"):
                    errors.append(r)
                p.quit()
        except Exception as e:          # noqa: BLE001 - reported below
            errors.append(repr(e))
    ts = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert errors == []


def test_auth_in_clear_on_loopback_default():
    """The default policy: loopback may AUTH in clear (curl's default
    when CAPA offers SASL is AUTH PLAIN)."""
    d = Daemon(tls=True)
    try:
        with d.connect() as p:
            assert p.cmd("AUTH PLAIN " + plain()).startswith("+OK")
            p.quit()
        assert d.session_events("login")[0]["tls"] == "none"
    finally:
        finish(d)

