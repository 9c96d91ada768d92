"""The process side of sdpsd (docs/design.md §7 process model, §11 sdps-ctl
sessions/kill/status): admin kill, session listing, SIGHUP, SIGTERM,
worker recycling, idle timeout, session log lines."""

import os
import shutil
import signal
import socket
import stat
import subprocess

import pytest

import harness
from daemon import (HOST, PW1, Daemon, Pop3, daemon,  # noqa: F401
                    free_port, parse_kv, pid_alive, wait_for)

# every scenario must leave the punts consistent
FSCK_AFTER = True

ALICE = "alice@" + HOST


def sid_of(s):
    for k in ("session_id", "sid", "id"):
        if k in s:
            return str(s[k])
    raise AssertionError("no session id in %r" % (s,))


def live(d, maildrop=None):
    """sdps-ctl sessions entries that are logged in (optionally on
    maildrop)."""
    out = []
    for s in d.sessions():
        md = s.get("maildrop") or ""
        if md and (maildrop is None or md == maildrop):
            out.append(s)
    return out


@pytest.fixture
def mail(daemon):
    for i in range(3):
        daemon.deliver_ok(harness.simple_message("m%d" % i), ALICE)
    return daemon


# ------------------------------------------------------- sessions / kill --

def test_sessions_json_shows_live_session(mail):
    with mail.login() as p:
        p.retr(1)
        p.ok("NOOP")
        s = wait_for(lambda: live(mail, HOST), what="session listed")
        assert len(s) == 1
        s = s[0]
        assert s["maildrop"] == HOST
        assert "127.0.0.1" in s["peer"]
        assert s["pid"] == mail.worker_for(p)
        assert str(s["state"]).lower().startswith("trans")
        assert sid_of(s) not in ("", "0")
        assert s.get("retr") == 1
        assert str(s.get("command", "NOOP")).upper() == "NOOP"
        p.quit()
    wait_for(lambda: not live(mail), what="session gone from listing")


def test_sessions_lists_user_maildrop(mail):
    with mail.login(ALICE, PW1) as p:
        s = wait_for(lambda: live(mail), what="session listed")
        assert s[0]["maildrop"] == ALICE
        p.quit()


def test_sessions_text_output(mail):
    with mail.login() as p:
        wait_for(lambda: live(mail), what="session listed")
        r = mail.ctl_ok("sessions")
        assert HOST in r.text
        p.quit()


@pytest.mark.parametrize("how", ["id", "host"])
def test_kill_ends_session_without_applying_deles(mail, how):
    with mail.login() as p:
        uids = p.uidl()
        p.retr(1)
        p.ok("DELE 1")
        p.ok("DELE 2")
        s = wait_for(lambda: live(mail, HOST), what="session listed")[0]
        if how == "id":
            r = mail.ctl("kill", sid_of(s))
        else:
            r = mail.ctl("kill", "--host", HOST)
        assert r.rc == 0, r
        assert p.closed(), "killed session still open"
    with mail.login_when_free() as q:
        assert q.uidl() == uids
        # RD is committed however the session ends
        assert q.env(1)[0] == "RD"
    assert mail.total_msgs() == 3
    assert mail.running()


def test_kill_host_ends_user_sessions_too(mail):
    p = mail.login(ALICE, PW1)
    with p:
        wait_for(lambda: live(mail), what="session listed")
        r = mail.ctl("kill", "--host", HOST)
        assert r.rc == 0, r
        assert p.closed()


def test_kill_leaves_other_sessions(mail):
    mail.add_host("other.example.net", "otherpw")
    mail.deliver_ok(harness.simple_message("o"), "x@other.example.net")
    a = mail.login()
    b = mail.login("other.example.net", "otherpw")
    with a, b:
        wait_for(lambda: len(live(mail)) == 2, what="two sessions")
        assert mail.ctl("kill", "--host", HOST).rc == 0
        assert a.closed()
        assert b.stat()[0] == 1
        assert b.quit().startswith("+OK")


@pytest.mark.parametrize("args", [["kill", "999999999"],
                                  ["kill", "--host", "nosuch.example.net"],
                                  ["kill", "not-a-number"]])
def test_kill_unknown_session_fails(mail, args):
    with mail.login() as p:
        r = mail.ctl(*args)
        assert r.rc != 0, r
        assert r.err.strip()
        assert p.stat()[0] == 3


def test_status(mail):
    r = mail.ctl("status")
    assert r.rc == 0, r
    assert str(mail.pid) in r.text
    j = mail.status()
    assert str(mail.pid) in str(j)


def test_status_without_daemon_fails(mail):
    mail.stop()
    r = mail.ctl("status")
    assert r.rc != 0, r
    assert r.err.strip()


# ----------------------------------------------------------------- SIGHUP --

def test_sighup_mid_session_session_continues(mail):
    old_workers = set(mail.workers())
    with mail.login() as p:
        serving = mail.worker_for(p)
        uids = p.uidl()
        mail.signal(signal.SIGHUP)
        # new workers for the new generation
        wait_for(lambda: set(mail.workers()) - old_workers,
                 what="new workers after SIGHUP")
        # idle old workers go; the busy one stays until its session ends
        wait_for(lambda: not (set(mail.workers()) & old_workers
                              - {serving}), what="old idle workers gone")
        assert serving in mail.workers()
        assert p.stat()[0] == 3
        assert p.retr(2)
        p.ok("DELE 2")
        assert p.quit().startswith("+OK")
        assert p.closed()
    wait_for(lambda: serving not in mail.workers(),
             what="old busy worker exits after its session")
    with mail.login_when_free() as q:
        assert q.uidl() == {1: uids[1], 2: uids[3]}


def test_sighup_applies_new_config(mail):
    with mail.connect() as p:
        p.ok("USER " + HOST)
        p.cmd("PASS wrong")
    mail.rewrite_config(server={"auth_max_failures": 1})
    old = set(mail.workers())
    mail.signal(signal.SIGHUP)
    wait_for(lambda: not (set(mail.workers()) & old), what="workers replaced")
    with mail.connect() as p:
        p.ok("USER " + HOST)
        assert p.cmd("PASS wrong").startswith("-ERR [AUTH]")
        assert p.closed(), "auth_max_failures=1 not applied after reload"


def test_sighup_bad_config_keeps_old_one(mail):
    good = open(mail.conf).read()
    with mail.login() as p:
        mail.rewrite_config(raw=good + "\n[server]\nno_such_key = 1\n")
        nlines = len(mail.log_lines())
        mail.signal(signal.SIGHUP)
        wait_for(lambda: [ln for ln in mail.log_lines()[nlines:]
                          if "no_such_key" in ln],
                 what="reload error logged")
        err = [ln for ln in mail.log_lines()[nlines:]
               if "no_such_key" in ln][0]
        assert mail.conf in err or "sdps.conf" in err
        assert mail.running()
        # the session and the daemon carry on with the old config
        assert p.stat()[0] == 3
        assert p.quit().startswith("+OK")
    with open(mail.conf, "w") as f:
        f.write(good)
    with mail.login_when_free() as q:
        assert q.stat()[0] == 3
    mail.signal(signal.SIGHUP)
    with mail.login_when_free() as q:
        assert q.stat()[0] == 3


# ---------------------------------------------------------------- SIGTERM --

def test_sigterm_with_session_open(mail):
    p = mail.login()
    with p:
        uids = p.uidl()
        mail.signal(signal.SIGTERM)

        def refused():
            try:
                s = socket.create_connection(("127.0.0.1", mail.port), 2)
            except OSError:
                return True
            s.close()
            return False
        wait_for(refused, what="listener closed after SIGTERM")
        # the open session can finish within the grace period
        assert mail.running()
        assert p.stat()[0] == 3
        assert p.retr(1)
        p.ok("DELE 1")
        assert p.quit().startswith("+OK")
        assert p.closed()
    rc = mail.wait_exit(60)
    assert rc == 0, mail.log()
    # the QUIT was applied before the exit
    left = {m["uidl"] for m in mail.messages()}
    assert left == {uids[2], uids[3]}
    assert mail.workers() == []


def test_sigterm_idle_exits(mail):
    kids = mail.workers()
    assert kids
    mail.signal(signal.SIGTERM)
    assert mail.wait_exit(60) == 0
    wait_for(lambda: not any(os.path.exists("/proc/%d" % k) for k in kids),
             what="workers gone")


# -------------------------------------------------------------- recycling --

def test_worker_recycled_after_max_sessions():
    d = Daemon(server={"max_sessions_per_worker": 2, "min_spare": 1,
                       "max_spare": 2})
    try:
        d.deliver_ok(harness.simple_message("x"), ALICE)
        served = {}
        for _ in range(8):
            with d.login_when_free() as p:
                pid = d.worker_for(p)
                served[pid] = served.get(pid, 0) + 1
                assert p.stat()[0] == 1
                assert p.quit().startswith("+OK")
                assert p.closed()
        assert max(served.values()) <= 2, served
        assert len(served) >= 4, served
        assert d.running()
    finally:
        d.cleanup()


# ----------------------------------------------------------- idle timeout --

def test_idle_timeout_closes_without_update():
    d = Daemon(server={"idle_timeout": 1})
    try:
        d.deliver_ok(harness.simple_message("x"), ALICE)
        p = d.login()
        with p:
            p.ok("DELE 1")
            assert p.closed(timeout=60), "idle session not closed"
        with d.login_when_free() as q:
            assert q.stat()[0] == 1
        assert d.total_msgs() == 1
        assert d.log_lines("idle_timeout|idle")
    finally:
        d.cleanup()


# ---------------------------------------------------------- session logs --

def test_one_login_and_one_logout_line_per_session(mail):
    with mail.login() as p:
        p.retr(1)
        p.ok("DELE 1")
        assert p.quit().startswith("+OK")
    with mail.login_when_free(ALICE, PW1) as p:
        p.stat()
    # the second one dropped without QUIT

    def sessions():
        ev = {}
        for ln in mail.log_lines(r"\bsid="):
            kv = parse_kv(ln)
            ev.setdefault(kv["sid"], []).append(kv)
        done = [v for v in ev.values()
                if any(e.get("event") == "logout" for e in v)
                and any(e.get("event") == "login" for e in v)]
        return len(done) >= 2 and ev
    ev = wait_for(sessions, what="two sessions logged")
    logged = [v for v in ev.values()
              if any(e.get("event") == "login" for e in v)]
    assert len(logged) == 2
    ends = []
    for v in logged:
        assert len([e for e in v if e.get("event") == "login"]) == 1, v
        out = [e for e in v if e.get("event") == "logout"]
        assert len(out) == 1, v
        ends.append(out[0])
    first, second = ends
    assert first["maildrop"] == HOST
    assert (first["retr"], first["dele"], first["removed"]) == \
        ("1", "1", "1")
    assert first["end"] == "quit"
    assert second["maildrop"] == ALICE
    assert second["removed"] == "0"
    assert second["end"] != "quit"
    # every session (also the readiness probes) ends with one logout line
    for sid, v in ev.items():
        assert len([e for e in v if e.get("event") == "logout"]) <= 1, v
    log = mail.log()
    assert PW1 not in log


# ------------------------------------------------ bad commands, send timeout --

def test_bad_command_limit_closes_without_update():
    d = Daemon(server={"max_bad_commands": 3})
    try:
        d.deliver_ok(harness.simple_message("x"), ALICE)
        p = d.login()
        with p:
            p.ok("DELE 1")
            closed = False
            for _ in range(10):
                try:
                    r = p.cmd("BOGUS")
                    assert r.startswith("-ERR"), r
                except (EOFError, ConnectionError):
                    closed = True
                    break
            assert closed or p.closed(), "not closed after the bad limit"
        with d.login_when_free() as q:
            assert q.stat()[0] == 1
        d.wait_log(r"event=logout .*end=badcmd")
    finally:
        d.cleanup()


def test_client_that_stops_reading_does_not_hold_worker():
    d = Daemon(server={"send_timeout": 1})
    try:
        big = harness.simple_message("big", ("x" * 70 + "\n") * 120000)
        d.deliver_ok(big, ALICE)
        p = d.connect(rcvbuf=4096)
        with p:
            p.login(HOST, PW1)
            p.send("RETR 1")        # and never read the 8 MB reply
            # the server gives up on us: the session ends and the lock
            # is released
            wait_for(lambda: not live(d), timeout=60,
                     what="stuck session ended by send timeout")
            with d.login_when_free() as q:
                assert q.stat()[0] == 1
    finally:
        d.cleanup()


def test_sigterm_grace_expired_session_ends_without_update():
    d = Daemon(server={"shutdown_grace": 1})
    try:
        d.deliver_ok(harness.simple_message("x"), ALICE)
        p = d.login()
        with p:
            p.retr(1)
            p.ok("DELE 1")
            d.signal(signal.SIGTERM)
            # the client never QUITs: the grace runs out, the master
            # ends the session and exits
            assert d.wait_exit(60) is not None
            assert p.closed()
        msgs = d.messages()
        assert len(msgs) == 1
        assert d.workers() == []
    finally:
        d.cleanup()


# ------------------------------- worker killed inside a scoreboard write --
# Issue 8, finding 3: a worker SIGKILLed between sb_slot_write_begin and
# sb_slot_write_end leaves its slot's seq odd.  The master used to spin
# on that slot in its reaper (100% CPU, deaf to SIGTERM, no new workers),
# and sdps-ctl sessions/status spun on it too.

# Every worker kills itself at its 40th slot write ("sb.slot.write" is
# inside sb_slot_write_begin, with seq odd).  A worker makes one write at
# start and about a dozen per POP3 session, so each serves a few sessions
# first and then dies in the middle of one, over and over.
SB_WRITE_FAULT = "sb.slot.write:40"


def one_session(d):
    """Log in, STAT, QUIT: True if the whole session worked."""
    try:
        with Pop3(port=d.port, timeout=10) as p:
            p.login(HOST, PW1)
            p.stat()
            return p.quit().startswith("+OK")
    except (OSError, EOFError, AssertionError):
        return False


def test_worker_killed_inside_scoreboard_write_master_carries_on():
    d = Daemon(server={"min_spare": 2, "max_spare": 4, "max_workers": 8},
               env={"SDPS_FAULT": SB_WRITE_FAULT})
    try:
        d.deliver_ok(harness.simple_message("x"), ALICE)
        seen = set(d.workers())
        ok_after_death = 0
        misses = 0
        for _ in range(80):     # bounded count of connections
            ok = one_session(d)
            seen |= set(d.workers())
            dead = {p for p in seen if not pid_alive(p)}
            if ok and dead:
                ok_after_death += 1
            misses = 0 if ok else misses + 1
            if len(dead) >= 4 and ok_after_death >= 3:
                break
            # a hung master forks no more workers: stop asking
            if misses >= 6:
                break
        # sdps-ctl must not spin on an odd slot, nor on a slot the hung
        # master never reset (the timeout makes a hang a failure)
        for verb in ("status", "sessions"):
            r = d.ctl(verb, timeout=60)
            assert r.rc == 0, r
            r = d.ctl(verb, "--json", timeout=60)
            assert r.rc == 0, r
            r.json()
        assert len(dead) >= 4, "workers did not die as planned"
        # the master reaped them, said where they died, replaced them,
        # and the replacements served
        torn = d.log_lines(r"killed by signal 9 inside a scoreboard write")
        assert len(torn) >= 4, d.log()
        assert ok_after_death >= 3, "no service after the first death"
        assert d.running()
        d.signal(signal.SIGTERM)
        assert d.wait_exit(60) == 0, d.log()
    finally:
        d.cleanup()


# ------------------------------------------- run directory (finding 6) --
# Root starts sdpsd in a run_dir the service user may own: nothing in it
# may be followed, and a directory others can plant names in is refused.

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def precious(d, name="precious"):
    """A root-only file with known content, outside run_dir."""
    path = os.path.join(d.root, name)
    with open(path, "w") as f:
        f.write("root only\n")
    os.chmod(path, 0o600)
    os.chown(path, 0, 0)
    return path


def unchanged(path):
    st = os.lstat(path)
    with open(path) as f:
        text = f.read()
    return (st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_nlink,
            text) == (0o600, 0, 0, 1, "root only\n")


@needs_root
@pytest.mark.parametrize("plant", ["lmtp.sock-symlink", "scoreboard-symlink",
                                   "scoreboard-hardlink"])
def test_planted_names_in_run_dir_not_followed(plant):
    d = Daemon(start=False)
    try:
        sock = os.path.join(d.run_dir, "lmtp.sock")
        d.rewrite_config(server={"lmtp_listen": sock})
        os.makedirs(d.run_dir, 0o755, exist_ok=True)
        target = precious(d)
        name, how = plant.split("-")
        where = os.path.join(d.run_dir, name)
        if how == "symlink":
            os.symlink(target, where)
        else:
            # the old code opened this O_TRUNC, then made it 0644
            os.link(target, where)
        d.start()
        # the name was replaced; what it pointed at is untouched
        assert os.stat(target).st_nlink == 1
        assert unchanged(target), os.stat(target)
        st = os.lstat(sock)
        assert stat.S_ISSOCK(st.st_mode)
        assert st.st_mode & 0o7777 == 0o660
        st = os.lstat(os.path.join(d.run_dir, "scoreboard"))
        assert stat.S_ISREG(st.st_mode)
        assert st.st_mode & 0o7777 == 0o640
        # and it serves LMTP on the socket
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect(sock)
        assert s.recv(512).startswith(b"220")
        s.close()
        assert d.ctl("status").rc == 0
        # no private directory left next to the socket
        assert [n for n in os.listdir(d.run_dir) if n.startswith(".")] \
            == []
    finally:
        d.cleanup()


def start_fails(d):
    """Run sdpsd on d's config in the foreground: (exit status, log)."""
    r = harness.run([harness.binary("sdpsd"), "-c", d.conf, "-f"],
                    timeout=60)
    return r.rc, r.errtext


@needs_root
@pytest.mark.parametrize("bad", ["world-writable", "group-writable",
                                 "other-owner", "symlink"])
def test_bad_run_dir_refused(bad):
    d = Daemon(start=False)
    try:
        if bad == "symlink":
            real = os.path.join(d.root, "elsewhere")
            os.mkdir(real, 0o755)
            shutil.rmtree(d.run_dir, ignore_errors=True)
            os.symlink(real, d.run_dir)
        else:
            os.makedirs(d.run_dir, 0o755, exist_ok=True)
        if bad == "world-writable":
            os.chmod(d.run_dir, 0o777)
        elif bad == "group-writable":
            os.chmod(d.run_dir, 0o775)
        elif bad == "other-owner":
            os.chown(d.run_dir, 65534, 65534)
        rc, err = start_fails(d)
        assert rc == 78, err
        assert "run_dir" in err and "refusing" in err, err
        # nothing was created in it
        assert "scoreboard" not in os.listdir(d.run_dir)
    finally:
        d.cleanup()


@needs_root
def test_sticky_world_writable_run_dir_accepted():
    d = Daemon(start=False)
    try:
        os.makedirs(d.run_dir, 0o755, exist_ok=True)
        os.chmod(d.run_dir, 0o1777)
        d.start()
        assert d.ctl("status").rc == 0
    finally:
        d.cleanup()


@needs_root
def test_lmtp_socket_mode_and_group_from_config():
    import grp
    d = Daemon(start=False)
    try:
        sock = os.path.join(d.root, "lmtp.sock")
        d.rewrite_config(server={"lmtp_listen": sock,
                                 "lmtp_socket_mode": "0620",
                                 "lmtp_socket_group": "mail"})
        d.start()
        st = os.lstat(sock)
        assert stat.S_ISSOCK(st.st_mode)
        assert st.st_mode & 0o7777 == 0o620
        assert st.st_gid == grp.getgrnam("mail").gr_gid
        d.stop()
        d.rewrite_config(server={"lmtp_socket_group": "no-such-group"})
        rc, err = start_fails(d)
        assert rc == 78, err
        assert "no-such-group" in err
    finally:
        d.cleanup()


# ------------------------------------------ scoreboard (finding 10) --

def ctl_as(d, uid, gid, groups, *args):
    """sdps-ctl as another user (the test's files made readable)."""
    def become():
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
    return subprocess.run([harness.binary("sdps-ctl"), "-c", d.conf]
                          + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=60,
                          preexec_fn=become)


@needs_root
@pytest.mark.parametrize("admin", [None, "adm"])
def test_scoreboard_readable_by_admin_group_only(admin):
    import grp
    gid = grp.getgrnam(admin).gr_gid if admin else os.getegid()
    d = Daemon(server={"admin_group": admin} if admin else None)
    try:
        sb = os.path.join(d.run_dir, "scoreboard")
        st = os.stat(sb)
        assert st.st_mode & 0o7777 == 0o640
        assert st.st_gid == gid
        # let nobody reach the config and run_dir, not the scoreboard
        for p in (d.root, d.run_dir):
            os.chmod(p, 0o755)
        os.chmod(d.conf, 0o644)
        r = ctl_as(d, 65534, 65534, [], "status")
        assert r.returncode != 0, r
        assert b"Permission denied" in r.stderr, r
        r = ctl_as(d, 65534, 65534, [gid], "status")
        assert r.returncode == 0, r
        assert str(d.pid).encode() in r.stdout
    finally:
        d.cleanup()


def test_scoreboard_keeps_no_past_session_strings(mail):
    sb = os.path.join(mail.run_dir, "scoreboard")
    with mail.login(ALICE, PW1) as p:
        p.stat()
        p.quit()
    with mail.login_when_free() as p:
        p.ok("NOOP")
        p.quit()

    def clean():
        if live(mail):
            return False
        with open(sb, "rb") as f:
            data = f.read()
        return not any(s in data for s in (HOST.encode(), b"27.0.0.1",
                                           b"OOP", b"UIT"))
    wait_for(clean, what="past sessions' strings wiped from the "
             "scoreboard")


def test_lmtp_verb_escape_sequences_not_shown():
    port = free_port()
    d = Daemon(server={"lmtp_listen": "127.0.0.1:%d" % port})
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        with s, s.makefile("rb") as f:
            assert f.readline().startswith(b"220")
            s.sendall(b"\x1b[31mEVIL\x07\r\n")
            assert f.readline()[:1] in (b"5", b"4")

            def shown():
                r = d.ctl("sessions")
                return "[31mEVIL" in r.text and r
            r = wait_for(shown, what="the verb in sdps-ctl sessions")
            assert b"\x1b" not in r.out and b"\x07" not in r.out
            r = d.ctl_ok("sessions", "--json")
            assert b"\x1b" not in r.out and b"\\u001b" not in r.out
            cmds = [x.get("command") for x in d.sessions()]
            assert "?[31mEVIL?" in cmds, cmds
    finally:
        d.cleanup()
