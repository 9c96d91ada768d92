"""Maildrop locks (docs/design.md §6) and a
worker killed mid-session."""

import os
import re
import signal

import pytest

import harness
from daemon import HOST, PW1, PW2, daemon, wait_for  # noqa: F401

# every scenario must leave the punts consistent
FSCK_AFTER = True

ALICE = "alice@" + HOST
BOB = "bob@" + HOST


def try_login(d, user, pw=PW1):
    """(connection, PASS reply); the connection is open either way."""
    p = d.connect()
    p.ok("USER " + user)
    return p, p.cmd("PASS " + pw)


@pytest.fixture
def mail(daemon):
    daemon.deliver_ok(harness.simple_message("a"), ALICE, punt="finchley")
    daemon.deliver_ok(harness.simple_message("b"), BOB, punt="docklands")
    daemon.deliver_ok(harness.simple_message("c"), [ALICE, BOB])
    return daemon


# (first session, second session, second must be refused)
CONFLICTS = [
    (HOST, HOST, True),
    (HOST, ALICE, True),
    (ALICE, HOST, True),
    (ALICE, ALICE, True),
    (ALICE, "ALICE@" + HOST, True),
    (ALICE, "alice+" + HOST, True),
    (ALICE, BOB, False),
    (BOB, ALICE, False),
    ("alice+" + HOST, BOB, False),
]


@pytest.mark.parametrize("first,second,refused", CONFLICTS)
def test_lock_conflicts(mail, first, second, refused):
    p1, r1 = try_login(mail, first, PW1)
    with p1:
        assert r1.startswith("+OK"), r1
        p2, r2 = try_login(mail, second, PW2)
        with p2:
            if refused:
                assert r2.startswith("-ERR [IN-USE]"), r2
                # refused session stays in AUTHORIZATION
                assert p2.cmd("STAT").startswith("-ERR")
            else:
                assert r2.startswith("+OK"), r2
                assert p2.stat()[0] == 2
        # the first session is unaffected
        assert p1.stat()[0] >= 2
        assert p1.quit().startswith("+OK")


def test_second_host_session_in_use_then_free_after_quit(mail):
    with mail.login() as p1:
        p2, r = try_login(mail, HOST)
        p2.close()
        assert r.startswith("-ERR [IN-USE]"), r
        assert p1.quit().startswith("+OK")
    with mail.login_when_free() as p:
        assert p.stat()[0] == 3


def test_refused_session_can_retry_login(mail):
    p1 = mail.login(ALICE, PW1)
    p2, r = try_login(mail, HOST)
    with p2:
        assert r.startswith("-ERR [IN-USE]"), r
        p1.quit()
        p1.close()

        def again():
            p2.ok("USER " + HOST)
            r2 = p2.cmd("PASS " + PW1)
            assert r2.startswith("+OK") or "[IN-USE]" in r2, r2
            return r2.startswith("+OK")
        wait_for(again, what="host lock free")
        assert p2.stat()[0] == 3


def test_alice_and_bob_parallel_deletes_both_apply(mail):
    pa = mail.login(ALICE, PW1)
    pb = mail.login(BOB, PW2)
    with pa, pb:
        assert pa.stat()[0] == 2
        assert pb.stat()[0] == 2
        pa.ok("DELE 1")         # alice's own
        pb.ok("DELE 1")         # bob's own
        assert pa.quit().startswith("+OK")
        assert pb.quit().startswith("+OK")
    with mail.login_when_free() as p:
        assert p.stat()[0] == 1
    assert mail.total_msgs() == 1


def test_worker_killed_mid_session(mail):
    before = mail.total_msgs()
    p = mail.login()
    uids = p.uidl()
    p.retr(1)
    p.ok("DELE 1")
    p.ok("DELE 2")
    victim = mail.worker_for(p)
    workers_before = set(mail.workers())
    os.kill(victim, signal.SIGKILL)
    assert p.closed(), "connection not closed after its worker died"
    p.close()
    wait_for(lambda: victim not in mail.workers(), what="victim reaped")
    # the lock of the dead worker is taken over
    q = mail.login_when_free()
    with q:
        # nothing was deleted
        assert q.uidl() == uids
        assert mail.total_msgs() == before
        # this session holds a worker: the master must fork a new one to
        # keep its spares (min_spare = 2, the killed one is gone)
        wait_for(lambda: set(mail.workers()) - workers_before,
                 what="a new worker")
        assert q.quit().startswith("+OK")
    assert mail.running()
    assert mail.fsck().rc == 0
    # the dead worker's slot no longer shows a session
    wait_for(lambda: all(s.get("pid") != victim for s in mail.sessions()),
             what="dead worker's session gone from sdps-ctl sessions")


def test_worker_killed_user_lock_taken_over(mail):
    p = mail.login(ALICE, PW1)
    victim = mail.worker_for(p)
    os.kill(victim, signal.SIGKILL)
    assert p.closed()
    p.close()
    with mail.login_when_free(ALICE, PW1) as q:
        assert q.stat()[0] == 2
    with mail.login_when_free(HOST, PW1) as q:
        assert q.stat()[0] == 3


def test_lock_held_during_update_is_released(mail):
    for _ in range(3):
        with mail.login_when_free() as p:
            assert p.stat()[0] == 3
            assert p.quit().startswith("+OK")
            assert p.closed()
        p2, r = try_login(mail, HOST)
        with p2:
            # after the server closed the connection the lock is free
            assert r.startswith("+OK"), r
            p2.quit()


def lock_area_files(d):
    """Every file and directory below RUN_DIR/locks."""
    top = os.path.join(d.run_dir, "locks")
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        found += [os.path.join(dirpath, n) for n in dirnames + filenames]
    return sorted(found)


def test_made_up_users_leave_no_lock_files(mail):
    """Issue 8 finding 7: logins as made-up users of a host (and drops,
    and refused second logins) cost no file that outlives the session;
    only the one lock file per punt stays."""
    n = 120
    for i in range(n):
        user = "nobody%d@%s" % (i, HOST)
        p, r = try_login(mail, user)
        with p:
            assert r.startswith("+OK"), r
            if i % 3 == 0:
                p2, r2 = try_login(mail, user, PW2)
                with p2:
                    assert r2.startswith("-ERR [IN-USE]"), r2
            if i % 2 == 0:
                assert p.quit().startswith("+OK")
                assert p.closed()
            # else: dropped without QUIT
    # a dropped session's locks go when its worker notices the drop
    with mail.login_when_free(HOST, PW1) as p:
        assert p.stat()[0] == 3
        assert p.quit().startswith("+OK")
    # only the punts' fixed shard files, at most 64 each, whatever logged in
    pat = re.compile(r"^(%s)\.[0-9a-f]{2}$"
                     % "|".join(map(re.escape, mail.spool.punt_paths)))
    top = os.path.join(mail.run_dir, "locks")

    def only_shards():
        found = lock_area_files(mail)
        return all(os.path.dirname(f) == top and os.path.isfile(f) and
                   pat.match(os.path.basename(f)) for f in found)
    wait_for(only_shards, what="lock area holds only shard files")
    assert len(lock_area_files(mail)) <= 64 * len(mail.spool.punt_paths)
