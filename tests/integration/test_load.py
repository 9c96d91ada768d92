"""Load and abuse: many sessions at once, idle and stuck clients, garbage.

Every check is about correctness (bytes, counts, the server still
serving); the waits are generous bounds on state changes, never a
measurement that decides pass or fail.
"""

import concurrent.futures
import random
import socket
import threading

import pytest

from daemon import HOST, PW1, Daemon, Pop3, msg_bytes

NHOSTS = 50
USERS_PER_HOST = 4          # 50 hosts x 4 users = 200 sessions at once
NSESSIONS = NHOSTS * USERS_PER_HOST


def host_name(i):
    return "load%02d.example" % i


def host_pw(i):
    return "pw-%02d secret" % i


def crash_lines(d):
    """Log lines that say a worker died abnormally."""
    return d.log_lines(r"killed by signal|exited with status|"
                       r"AddressSanitizer|runtime error")


def spool_msgs(d, host=None):
    """sdps-ctl spool ls --json as a list (harness returns the object)."""
    j = d.spool_ls(host=host)
    return j["messages"] if isinstance(j, dict) else j


# ------------------------------------------------------ 200 sessions --

def load_message(rng, h, u, k):
    body = "".join("%s %d/%d/%d %s\n" % (
        "".join(rng.choice("abcdefghij .") for _ in range(rng.randint(0, 70))),
        h, u, k, "." * (k % 2)) for _ in range(rng.randint(1, 400)))
    # Lines that start with dots, so stuffing is exercised under load.
    body += ".\n..\n.x\n"
    return ("From: load@example.org\nTo: u%d@%s\nSubject: %d/%d/%d\n"
            "Message-ID: <%d.%d.%d@load.example>\n\n%s"
            % (u, host_name(h), h, u, k, h, u, k, body))


@pytest.fixture(scope="module")
def loaded():
    d = Daemon(hosts=[(host_name(i), host_pw(i)) for i in range(NHOSTS)],
               server={"min_spare": 64, "max_spare": 256,
                       "max_workers": 256, "auth_max_parallel": 4,
                       "auth_cache_ttl": 0,
                       # 200 sessions at once, all from 127.0.0.1
                       "max_conn_per_ip": 0})
    rng = random.Random(1939)
    jobs = []
    for h in range(NHOSTS):
        for u in range(USERS_PER_HOST):
            for k in range(1 + (h + u) % 3):
                sender = "" if k == 2 else "s%d@example.org" % k
                jobs.append((h, u, k, sender, load_message(rng, h, u, k),
                             ("finchley", "docklands")[(h + u + k) % 2]))
    # Deliveries in a few parallel streams, but each user's messages in
    # order, so arrival order (and so message numbers) is known.
    expected = {}
    by_user = {}
    for j in jobs:
        by_user.setdefault((j[0], j[1]), []).append(j)

    def deliver_user(key):
        out = []
        for h, u, k, sender, text, punt in by_user[key]:
            d.deliver_ok(text, ["u%d@%s" % (u, host_name(h))],
                         sender=sender, punt=punt)
            out.append(b"Return-Path: <%s>\r\n" % sender.encode()
                       + msg_bytes(text))
        return key, out

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        for key, out in ex.map(deliver_user, sorted(by_user)):
            expected[key] = out
    yield d, expected
    d.cleanup()


def test_200_concurrent_sessions(loaded):
    d, expected = loaded
    total = sum(len(v) for v in expected.values())
    assert len(spool_msgs(d)) == total
    barrier = threading.Barrier(NSESSIONS)
    errors = []

    def session(key):
        h, u = key
        want = expected[key]
        stage = "connect"
        try:
            with Pop3(port=d.port, timeout=180) as p:
                assert p.greeting.startswith("+OK"), p.greeting
                stage = "login"
                p.login("u%d@%s" % (u, host_name(h)), host_pw(h))
                # Every session is logged in at the same time.
                stage = "barrier"
                barrier.wait(timeout=300)
                stage = "stat"
                assert p.stat() == (len(want), sum(len(m) for m in want))
                n = 1 + (h * 7 + u) % len(want)
                stage = "retr"
                assert p.retr(n) == want[n - 1]
                stage = "quit"
                assert p.quit().startswith("+OK")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append("%s at %s: %r" % (key, stage, e))
            barrier.abort()

    threads = [threading.Thread(target=session, args=(k,))
               for k in sorted(expected)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not any(t.is_alive() for t in threads)
    # A broken barrier in the others is a consequence; show the causes.
    real = [e for e in errors if "BrokenBarrierError" not in e]
    assert not errors, "\n".join((real or errors)[:20]) + \
        "\nlog:\n" + "\n".join(d.log_lines(r"warn|err|fail|ERR")[-40:])
    assert d.running()
    assert crash_lines(d) == []
    # Nothing was deleted; every RETR set RD on exactly its message.
    msgs = spool_msgs(d)
    assert len(msgs) == total


# ------------------------------------------------------- idle timeout --

@pytest.fixture
def short_idle():
    d = Daemon(server={"idle_timeout": 2})
    yield d
    d.cleanup()


def test_idle_client_dropped(short_idle):
    d = short_idle
    text = "Subject: idle\n\nkeep me\n"
    d.deliver_ok(text, "a@fred.example.net")
    d.deliver_ok(text, "b@fred.example.net")

    fresh = d.connect()               # idle before USER
    p = d.login()                     # idle in TRANSACTION, after a DELE
    p.ok("DELE 1")
    try:
        assert fresh.closed(timeout=60), "idle AUTHORIZATION not dropped"
        assert p.closed(timeout=60), "idle TRANSACTION not dropped"
    finally:
        fresh.close()
        p.close()
    # A drop is not a QUIT: nothing deleted, the maildrop is free again.
    assert len(spool_msgs(d)) == 2
    with d.login_when_free() as q:
        assert q.stat()[0] == 2
        assert q.quit().startswith("+OK")
    assert d.running()


# ------------------------------------------------------ stuck reader --

def test_stuck_reader_does_not_stall_others():
    d = Daemon(server={"send_timeout": 2, "min_spare": 4},
               hosts=(("big.example", "big pw"),
                      ("small.example", "small pw")))
    try:
        rng = random.Random(20)
        line = "".join(rng.choice("0123456789abcdef") for _ in range(76))
        big = ("Subject: big\n\n" + (line + "\n") * (20 * 1024 * 1024 // 78))
        d.deliver_ok(big, "x@big.example")
        big_size = len(msg_bytes(big))
        assert big_size > 20 * 1000 * 1000
        small = "Subject: small\n\nhello\n"
        d.deliver_ok(small, "y@small.example", sender="s@example.org")
        want_small = b"Return-Path: <s@example.org>\r\n" + msg_bytes(small)

        # A client that asks for 20 MB and then reads nothing more: far
        # more than the socket buffers on both sides hold.
        stuck = d.connect(timeout=60)
        s = stuck.sock
        stuck.login("big.example", "big pw")
        stuck.send("RETR 1")
        assert stuck.line().startswith("+OK")

        # While it is stuck, other sessions come and go, complete.
        for _ in range(20):
            with d.login("small.example", "small pw") as p:
                assert p.retr(1) == want_small
                assert p.quit().startswith("+OK")

        # send_timeout frees the stuck worker: the big maildrop's lock is
        # released and a new session gets in.
        with d.login_when_free("big.example", "big pw", timeout=120) as p:
            assert p.stat()[0] == 1
            p.quit()
        # The stuck client sees the connection end short of the message.
        got = len(stuck.buf)
        s.settimeout(60)
        try:
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
        except ConnectionResetError:
            pass
        s.close()
        assert got < big_size
        assert d.running()
        assert crash_lines(d) == []
    finally:
        d.cleanup()


# ------------------------------------------------------------ garbage --

@pytest.fixture
def garbage_daemon():
    d = Daemon()
    d.deliver_ok("Subject: g\n\nstill here\n", "a@fred.example.net",
                 sender="g@example.org")
    yield d
    d.cleanup()


def drain(p, timeout=30):
    """Read until the server closes or goes quiet; True if it closed."""
    try:
        return p.closed(timeout=timeout)
    except OSError:
        return True


def send_ignoring_close(p, data):
    try:
        p.send_raw(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def reply_lines(buf):
    return [ln for ln in buf.split(b"\r\n") if ln]


def test_garbage_never_crashes(garbage_daemon):
    d = garbage_daemon
    rng = random.Random(255)

    # Random bytes, with and without line ends: every reply is -ERR (or
    # the server hangs up after too many bad commands).
    for size in (1, 100, 4096, 65536):
        with d.connect() as p:
            send_ignoring_close(p, bytes(rng.randrange(256)
                                         for _ in range(size)))
            send_ignoring_close(p, b"\r\n")
            p.sock.settimeout(5)
            drain(p, timeout=3)
            for ln in reply_lines(p.buf):
                assert ln.startswith(b"-ERR"), ln

    # A 10 KB line gets one -ERR; the session goes on as if it never was.
    with d.connect() as p:
        p.send_raw(b"USER " + b"x" * 10240 + b"\r\nCAPA\r\n")
        assert p.line().startswith("-ERR")
        assert p.line().startswith("+OK")     # CAPA answered next
        p.multi_body()
        p.login(HOST, PW1)
        p.send_raw(b"RETR 1" + b"1" * 10240 + b"\r\n")
        assert p.line().startswith("-ERR")
        assert p.stat()[0] == 1
        p.quit()

    # NULs anywhere in a line.
    with d.connect() as p:
        for bad in (b"US\0ER fred.example.net", b"\0", b"USER \0",
                    b"QUIT\0"):
            assert p.cmd(bad).startswith("-ERR"), bad
        p.login(HOST, PW1)
        assert p.cmd(b"PASS \0").startswith("-ERR")
        assert p.cmd(b"DELE 1\0").startswith("-ERR")
        assert p.stat()[0] == 1        # the bad DELE deleted nothing
        assert p.quit().startswith("+OK")
    assert len(spool_msgs(d)) == 1

    # A flood of long lines, and a megabyte with no line end at all.
    with d.connect() as p:
        send_ignoring_close(p, (b"z" * 10240 + b"\r\n") * 200)
        drain(p, timeout=60)
        for ln in reply_lines(p.buf):
            assert ln.startswith(b"-ERR"), ln[:80]
    with d.connect() as p:
        send_ignoring_close(p, b"A" * (1 << 20))
    # Garbage after login, then a drop: nothing is deleted.
    with d.login() as p:
        p.ok("DELE 1")
        send_ignoring_close(p, bytes(rng.randrange(256) for _ in range(4096)))
    # Connect-and-vanish, many times.
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", d.port))
        s.close()

    # A normal session afterwards sees everything intact.
    with d.login_when_free() as p:
        assert p.stat()[0] == 1
        body = p.retr(1)
        assert body == (b"Return-Path: <g@example.org>\r\n"
                        + msg_bytes("Subject: g\n\nstill here\n"))
        assert p.quit().startswith("+OK")
    assert d.running()
    assert crash_lines(d) == []
