"""The syscalls a POP3 session costs do not grow with what it does not need
(issue 12 item 3, docs/design.md §18.2).  Counted with strace on the
workers around one session, never timed:

- a punt's health (stat, stat, access) is checked at login and when a
  body cannot be opened, not before every RETR;
- the "ident[pid]" log prefix does not ask getpid(2) per line;
- a pipelined batch of RETRs shares one TCP_CORK on/off pair, and a
  client that waits for each reply still gets every body whole.

Skipped where strace is missing or not allowed."""

import os
import shutil
import signal
import subprocess
import tempfile

import pytest

import harness
from daemon import Daemon, wait_for

ALICE = "alice@fred.example.net"
N_RETR = 10

pytestmark = pytest.mark.skipif(shutil.which("strace") is None,
                                reason="no strace")


def traced(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for ln in f:
                if ln.startswith("TracerPid:"):
                    return int(ln.split()[1]) != 0
    except OSError:
        return True     # gone: nothing to wait for
    return False


def count_syscalls(d, session):
    """Run session(d) with strace on every worker; {syscall: count}."""
    pids = d.workers()
    out = tempfile.NamedTemporaryFile(prefix="sdps-strace-", delete=False)
    out.close()
    args = ["strace", "-qq", "-f", "-o", out.name]
    for p in pids:
        args += ["-p", str(p)]
    st = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    try:
        try:
            wait_for(lambda: all(traced(p) for p in pids), 10,
                     what="strace to attach")
        except AssertionError:
            if st.poll() is not None:
                pytest.skip("strace cannot attach: %s"
                            % st.stderr.read().decode(errors="replace"))
            raise
        session(d)
    finally:
        st.send_signal(signal.SIGINT)
        st.wait(30)
    counts = {}
    with open(out.name) as f:
        for ln in f:
            parts = ln.split(None, 1)
            if len(parts) < 2 or "(" not in parts[1]:
                continue
            name = parts[1].split("(", 1)[0]
            counts[name] = counts.get(name, 0) + 1
    os.unlink(out.name)
    return counts


def fetch_all(d):
    with d.login() as p:
        assert p.stat()[0] == N_RETR
        for i in range(1, N_RETR + 1):
            assert p.retr(i)
        assert p.quit().startswith("+OK")
        assert p.closed()


@pytest.fixture
def mail():
    d = Daemon(server={"min_spare": 1, "max_spare": 1, "max_workers": 4})
    try:
        for i in range(N_RETR):
            d.deliver_ok(harness.simple_message("m%d" % i), ALICE)
        fetch_all(d)        # the auth cache and lock files are warm
        yield d
    finally:
        d.cleanup()


def test_health_is_not_checked_per_retr(mail):
    c = count_syscalls(mail, fetch_all)
    health = c.get("newfstatat", 0) + c.get("stat", 0) + \
        c.get("access", 0)
    # login: stat, stat, access per punt (2 punts); RETR: one fstat each
    # of the body file; before the fix 3 more per RETR (>= 40 here).
    assert health <= 3 * 2 + N_RETR + 2, c


def test_log_prefix_does_not_ask_pid_per_line(mail):
    c = count_syscalls(mail, fetch_all)
    # connect, login and logout lines: 3 getpid before the fix
    assert c.get("getpid", 0) <= 1, c


def fetch_pipelined(d):
    with d.login() as p:
        p.send_raw("".join("RETR %d\r\n" % i
                           for i in range(1, N_RETR + 1)) + "QUIT\r\n")
        for i in range(N_RETR):
            assert p.line().startswith("+OK")
            body = p.multi_body()
            assert any(b"m%d" % i in ln for ln in body), body[:12]
        assert p.line().startswith("+OK")
        assert p.closed()


def test_pipelined_retrs_share_one_cork(mail):
    c = count_syscalls(mail, fetch_pipelined)
    # before: a TCP_CORK on and off around every body (2 x N_RETR)
    assert c.get("setsockopt", 0) <= 4, c
    # and one RETR at a time still ends with the body pushed out
    # (fetch_all waits for each terminator before the next command)
    c = count_syscalls(mail, fetch_all)
    assert c.get("setsockopt", 0) <= 2 * N_RETR + 2, c
