"""The shared auth cache (issue 5): a repeat login within auth_cache_ttl
skips the argon2id hash; a password change, `sdps-ctl auth flush` and a
failed password never let a cached entry answer.  Which path a login took
is read from its log line (auth=cache|hash), never from timing."""

import pytest

from daemon import Daemon, HOST, PW1, PW2

FSCK_AFTER = True


def logins(d):
    return [e.get("auth") for e in d.session_events("login")]


def login_quit(d, user=HOST, pw=PW1):
    with d.login(user, pw) as p:
        p.quit()


@pytest.fixture
def cached():
    d = Daemon(server={"auth_cache_ttl": 300})
    yield d
    d.stop()
    d.spool.cleanup()


def test_repeat_login_comes_from_cache(cached):
    login_quit(cached)
    login_quit(cached)
    cached.wait_log(r"event=login", 2)
    assert logins(cached) == ["hash", "cache"]


def test_each_password_is_its_own_entry(cached):
    login_quit(cached, pw=PW1)
    login_quit(cached, pw=PW2)
    login_quit(cached, pw=PW2)
    cached.wait_log(r"event=login", 3)
    assert logins(cached) == ["hash", "hash", "cache"]


def test_user_session_shares_the_host_entry(cached):
    # The cache keys on host and password: users share the host's pair.
    login_quit(cached, user=HOST)
    login_quit(cached, user="alice@" + HOST)
    cached.wait_log(r"event=login", 2)
    assert logins(cached) == ["hash", "cache"]


def test_wrong_password_never_hits(cached):
    login_quit(cached)
    with cached.connect() as p:
        p.ok("USER " + HOST)
        assert p.cmd("PASS not the password").startswith("-ERR [AUTH]")
    login_quit(cached)
    cached.wait_log(r"event=login", 2)
    assert logins(cached) == ["hash", "cache"]


def test_password_change_invalidates(cached):
    login_quit(cached)
    cached.ctl_ok("host", "passwd", HOST, "--slot", "1",
                  stdin="brand new secret\n")
    with cached.connect() as p:
        p.ok("USER " + HOST)
        assert p.cmd("PASS " + PW1).startswith("-ERR [AUTH]")
    login_quit(cached, pw="brand new secret")
    cached.wait_log(r"event=login", 2)
    assert logins(cached) == ["hash", "hash"]


def test_auth_flush_invalidates(cached):
    login_quit(cached)
    cached.ctl_ok("auth", "flush")
    cached.wait_log(r"auth cache flushed")
    login_quit(cached)
    login_quit(cached)
    cached.wait_log(r"event=login", 3)
    assert logins(cached) == ["hash", "hash", "cache"]


def test_ttl_zero_disables_the_cache():
    d = Daemon(server={"auth_cache_ttl": 0})
    try:
        login_quit(d)
        login_quit(d)
        d.wait_log(r"event=login", 2)
        assert logins(d) == ["hash", "hash"]
    finally:
        d.stop()
        d.spool.cleanup()
