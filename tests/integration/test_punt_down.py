"""Punt trouble (docs/design.md §1 "a punt that is down", §8.4 "Punt trouble").

We run as root, so chmod does not stop the daemon: a punt is made
unavailable by renaming its directory (or its spool) away, and brought
back by renaming it home.
"""

import contextlib
import os

import pytest

import harness
from daemon import HOST, PW1, Daemon, daemon  # noqa: F401

# every scenario must leave the punts consistent
FSCK_AFTER = True

ALICE = "alice@" + HOST


@contextlib.contextmanager
def moved(path):
    away = path + ".away"
    os.rename(path, away)
    try:
        yield away
    finally:
        os.rename(away, path)


def subject(p, i):
    for ln in p.top(i, 0).split(b"\r\n"):
        if ln.startswith(b"Subject: "):
            return ln[9:].decode()
    return None


@pytest.fixture
def two(daemon):
    daemon.deliver_ok(harness.simple_message("on finchley"), ALICE,
                      punt="finchley")
    daemon.deliver_ok(harness.simple_message("on docklands"), ALICE,
                      punt="docklands")
    # a session first, so the workers have both punts open already
    with daemon.login() as p:
        assert p.stat()[0] == 2
        p.quit()
    return daemon


@pytest.mark.parametrize("down,up", [("docklands", "finchley"),
                                     ("finchley", "docklands")])
def test_one_punt_gone_at_login_serves_the_other(two, down, up):
    with moved(two.punt_paths[down]):
        with two.login_when_free() as p:
            assert p.stat()[0] == 1
            assert subject(p, 1) == "on " + up
            assert p.env(1)[1].split()[0] == up
            assert p.retr(1)
            p.ok("DELE 1")
            assert p.quit().startswith("+OK")
        assert two.log_lines(down)
    # back again: the down punt's mail is there, the DELE of the other
    # punt's message was applied
    with two.login_when_free() as p:
        assert p.stat()[0] == 1
        assert subject(p, 1) == "on " + down


def test_punt_missing_at_start_of_daemon():
    dm = Daemon(start=False)
    try:
        dm.deliver_ok(harness.simple_message("kept"), ALICE,
                      punt="finchley")
        with moved(dm.punt_paths["docklands"]):
            dm.start()
            with dm.login() as p:
                assert p.stat()[0] == 1
                assert subject(p, 1) == "kept"
    finally:
        dm.cleanup()


def test_all_punts_gone_is_sys_temp(two):
    with moved(two.punt_paths["finchley"]), \
            moved(two.punt_paths["docklands"]):
        with two.connect() as p:
            p.ok("USER " + HOST)
            r = p.cmd("PASS " + PW1)
            assert r.startswith("-ERR [SYS/TEMP]"), r
            assert p.cmd("STAT").startswith("-ERR")
    with two.login_when_free() as p:
        assert p.stat()[0] == 2


def test_punt_failing_mid_session_answers_sys_temp_for_its_messages(two):
    with two.login() as p:
        assert p.stat()[0] == 2
        assert subject(p, 2) == "on docklands"
        spool = os.path.join(two.punt_paths["docklands"], "spool")
        with moved(spool):
            r = p.cmd("RETR 2")
            assert r.startswith("-ERR [SYS/TEMP]"), r
            r = p.cmd("TOP 2 0")
            assert r.startswith("-ERR [SYS/TEMP]"), r
            # the other punt's message is fine
            assert b"on finchley" in p.retr(1)
            # answers from the snapshot still work
            assert p.stat()[0] == 2
            assert len(p.list()) == 2
            assert len(p.uidl()) == 2
            assert p.env(2)[1].split()[0] == "docklands"
            assert p.ok("NOOP")
        assert p.quit().startswith("+OK")
    assert two.total_msgs() == 2
