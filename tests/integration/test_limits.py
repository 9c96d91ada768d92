"""Connection limits (issue 8, finding 2): a per-address cap counted
before the greeting, a per-line idle deadline and a total AUTHORIZATION
deadline, a prompt "busy" answer when every POP3 worker is taken, and an
LMTP pool that a POP3 flood cannot starve.

Clients are real sockets on 127.0.0.0/8; "different addresses" are
client sockets bound to 127.0.0.2, 127.0.0.3, ...  Timing: the deadline
tests give the server a short timeout and assert only an upper bound
many times larger (the client keeps trickling until then), so a slow
machine can make them slower, not wrong.
"""

import os
import signal
import smtplib
import socket
import tempfile
import threading
import time

import pytest

import daemon as D
import harness

HOST = D.HOST
GENEROUS = 60.0         # seconds any single answer may take under load


def server_keys(keys):
    """The [server] keys a test asks for (one place to adjust them)."""
    return dict(keys)


class Pop3From(D.Pop3):
    """D.Pop3 from a chosen source address on the loopback net."""

    def __init__(self, port, src="127.0.0.1", timeout=GENEROUS,
                 greeting=True):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout,
                                             source_address=(src, 0))
        self.buf = b""
        self.raw = b""
        self.greeting = self.line() if greeting else None


def no_sessions(d):
    """Wait until the readiness probe's session (and any other) is over."""
    d.wait_sessions(lambda ss: len(ss) == 0, timeout=GENEROUS,
                    what="no live sessions")


def make(server, **kw):
    return D.Daemon(server=server_keys(server), **kw)


@pytest.fixture
def finish(request):
    made = []
    yield made.append
    for d in made:
        D._finish(request, d)


# ------------------------------------------------- per-address cap --

CAP_LINE = "-ERR [SYS/TEMP] too many connections from your address"
BUSY_LINE = "-ERR [SYS/TEMP] server busy, try again later"


def test_per_address_cap(finish):
    d = make({"max_conn_per_ip": 3, "min_spare": 4, "max_spare": 8,
              "max_workers": 8})
    finish(d)
    no_sessions(d)
    held = [Pop3From(d.port) for _ in range(3)]
    for p in held:
        assert p.greeting.startswith("+OK"), p.greeting
    d.wait_sessions(lambda ss: len(ss) == 3, what="3 sessions")
    # One more from the same address: refused before any greeting.
    with Pop3From(d.port) as p:
        assert p.greeting == CAP_LINE
        assert p.closed(timeout=GENEROUS)
    # Another address is not affected.
    with Pop3From(d.port, "127.0.0.2") as p:
        assert p.greeting.startswith("+OK"), p.greeting
        p.send("QUIT")
    # A held connection that goes away makes room again (the server
    # notices the drop a little later than the client makes it).
    held.pop().close()

    def room():
        p = Pop3From(d.port)
        if p.greeting.startswith("+OK"):
            return p
        assert p.greeting == CAP_LINE, p.greeting
        p.close()
        return None
    held.append(D.wait_for(room, GENEROUS, 0.05, "room under the cap"))
    for p in held:
        p.close()
    assert d.log_lines(r"event=conn-limit peer=127\.0\.0\.1|"
                       r"peer=127\.0\.0\.1 event=conn-limit")


def test_per_address_cap_is_exact_across_workers(finish):
    """20 clients at once from one address, cap 5, 8 workers: exactly 5
    get a greeting, whichever workers accept them."""
    d = make({"max_conn_per_ip": 5, "min_spare": 8, "max_spare": 8,
              "max_workers": 8})
    finish(d)
    no_sessions(d)
    n = 20
    barrier = threading.Barrier(n)
    results = [None] * n
    socks = [None] * n

    def client(i):
        barrier.wait(timeout=GENEROUS)
        try:
            p = Pop3From(d.port)
            socks[i] = p
            results[i] = p.greeting
        except (OSError, EOFError) as e:
            results[i] = "error: %r" % (e,)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(2 * GENEROUS)
    try:
        ok = [r for r in results if r and r.startswith("+OK")]
        capped = [r for r in results if r == CAP_LINE]
        assert len(ok) == 5, results
        assert len(capped) == n - 5, results
    finally:
        for p in socks:
            if p is not None:
                p.close()


# ------------------------------------------------------- deadlines --

def trickle_until_closed(sock, payload, interval, bound):
    """Send payload one octet at a time every interval seconds until the
    server closes the connection or bound seconds pass; the seconds it
    took, or None if it stayed open."""
    start = time.monotonic()
    i = 0
    sock.settimeout(interval)
    while time.monotonic() - start < bound:
        try:
            sock.sendall(payload[i % len(payload):i % len(payload) + 1])
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start
        i += 1
        # Wait interval for EOF; the replies to complete lines (if the
        # payload has any) are read and dropped.
        end = time.monotonic() + interval
        while time.monotonic() < end:
            sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, TimeoutError):
                break
            except ConnectionResetError:
                return time.monotonic() - start
            if not chunk:
                return time.monotonic() - start
    return None


@pytest.mark.parametrize("state", ["authorization", "transaction"])
def test_idle_deadline_is_per_line_not_per_octet(finish, state):
    """One octet every idle/3 s, never a whole line: logged out after
    about idle_timeout (bound: 15x), not kept forever."""
    idle = 2
    d = make({"idle_timeout": idle, "auth_timeout": 0})
    finish(d)
    p = d.connect()
    if state == "transaction":
        p.login(HOST, D.PW1)
    took = trickle_until_closed(p.sock, b"X" * 200, idle / 3.0, 15 * idle)
    p.close()
    assert took is not None, "still open after %d s of trickling" % (
        15 * idle)
    ev = [e for e in d.session_events("logout") if e.get("end")]
    assert any(e["end"] == "timeout" for e in ev), ev


def test_complete_lines_rearm_the_idle_timer(finish):
    """The other half: each whole command line re-arms it, so a session
    with a NOOP every idle/8 s lives past 3x idle_timeout."""
    idle = 2
    d = make({"idle_timeout": idle})
    finish(d)
    with d.login() as p:
        end = time.monotonic() + 3 * idle
        n = 0
        while time.monotonic() < end:
            assert p.ok("NOOP").startswith("+OK")
            n += 1
            time.sleep(idle / 8.0)
        assert n > 0
        p.ok("QUIT")


def test_authorization_deadline(finish):
    """CAPA lines every auth_timeout/3 s keep the idle timer happy, but
    the AUTHORIZATION state as a whole ends after auth_timeout (bound:
    15x); a session that logged in is not affected by it."""
    at = 2
    d = make({"auth_timeout": at, "idle_timeout": 600})
    finish(d)
    p = d.connect()
    took = trickle_until_closed(p.sock, b"CAPA\r\n", at / 3.0 / 6, 15 * at)
    p.close()
    assert took is not None, "AUTHORIZATION not ended after %d s" % (15 * at)
    with d.login() as q:
        # Quiet for longer than auth_timeout: the deadline was lifted at
        # PASS, so the session still answers.
        time.sleep(2 * at)
        assert q.ok("NOOP").startswith("+OK")
        q.ok("QUIT")


# -------------------------------------------------- busy answer --

def test_busy_answer_when_all_pop3_workers_are_taken(finish):
    d = make({"max_workers": 4, "min_spare": 2, "max_spare": 4,
              "max_conn_per_ip": 10})
    finish(d)
    no_sessions(d)
    held = []
    for k in range(4):
        p = Pop3From(d.port, "127.0.0.%d" % (k + 2))
        assert p.greeting.startswith("+OK"), p.greeting
        held.append(p)
    d.wait_sessions(lambda ss: len(ss) == 4, what="4 sessions")
    with Pop3From(d.port, "127.0.0.9") as p:
        assert p.greeting == BUSY_LINE
        assert p.closed(timeout=GENEROUS)
    # Once a worker is free again, clients are served as before.
    held.pop().close()

    def served():
        p = Pop3From(d.port, "127.0.0.9")
        if p.greeting.startswith("+OK"):
            return p
        assert p.greeting == BUSY_LINE, p.greeting
        p.close()
        return None
    q = D.wait_for(served, GENEROUS, 0.05, "a free worker")
    q.login(HOST, D.PW1)
    q.ok("QUIT")
    q.close()
    for p in held:
        p.close()


# ------------------------------------------------ LMTP never starved --

def test_lmtp_is_not_starved_by_a_pop3_flood(finish):
    lport = D.free_port()
    sockdir = tempfile.mkdtemp(prefix="sdps-lim-")
    usock = os.path.join(sockdir, "lmtp.sock")
    d = make({"lmtp_listen": ["127.0.0.1:%d" % lport, usock],
              "max_workers": 2, "min_spare": 1, "max_spare": 2,
              "lmtp_workers": 2})
    finish(d)
    no_sessions(d)
    # Every POP3 worker held, and more POP3 clients knocking.
    held = [Pop3From(d.port, "127.0.0.%d" % (k + 2)) for k in range(2)]
    for p in held:
        assert p.greeting.startswith("+OK"), p.greeting
    d.wait_sessions(lambda ss: len(ss) == 2, what="2 POP3 sessions")
    extra = []
    for k in range(6):
        p = Pop3From(d.port, "127.0.0.%d" % (k + 10), greeting=False)
        extra.append(p)

    def deliver(host, port, subject):
        lm = smtplib.LMTP(host, port, timeout=GENEROUS)
        try:
            lm.ehlo("mta.example")   # LHLO (smtplib.LMTP)
            # sdps-ctl sessions shows the LMTP worker while it serves.
            d.wait_sessions(lambda ss: any(s.get("state") == "lmtp"
                                           for s in ss),
                            what="an lmtp session")
            refused = lm.sendmail("sender@example.org", ["a@" + HOST],
                                  harness.simple_message(subject))
            assert refused == {}
        finally:
            lm.quit()

    deliver("127.0.0.1", lport, "over tcp")
    deliver(usock, 0, "over unix")
    # A reload replaces the LMTP pool too; delivery goes on.
    d.signal(signal.SIGHUP)
    d.wait_log(r"reloaded")
    deliver("127.0.0.1", lport, "after reload")
    for p in extra + held:
        p.close()

    def logged_in():
        p = Pop3From(d.port)
        if p.greeting == BUSY_LINE:     # the drops not noticed yet
            p.close()
            return None
        p.login(HOST, D.PW1)
        return p
    p = D.wait_for(logged_in, GENEROUS, 0.05, "a POP3 login")
    try:
        n, _ = p.stat()
        assert n == 3
        subjects = b"".join(p.retr(i) for i in (1, 2, 3))
        for s in (b"over tcp", b"over unix", b"after reload"):
            assert b"Subject: " + s in subjects
        p.ok("QUIT")
    finally:
        p.close()
