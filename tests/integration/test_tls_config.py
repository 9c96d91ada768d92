"""TLS configuration, start-up and reload with real sdpsd processes
(issue 10): a bad certificate or key stops start-up with file:line, a
good pair is what clients see, SIGHUP swaps the certificate for new
connections only (through the root key reader when privileges are
dropped), a bad pair on reload keeps the old one, and sessions resume
across workers with the master's ticket keys.

Fingerprints are compared with `openssl x509 -fingerprint -sha256` of
the files (tlsutil.fingerprint).  Every wait is a bounded poll for a
state change.
"""

import hashlib
import os
import pwd
import re
import shutil
import signal
import ssl
import subprocess

import pytest

import harness
import tlsutil
from daemon import (HOST, PW1, Daemon, Pop3, children_of,
                    daemon, free_port, proc_comm, wait_for)  # noqa: F401

EX_CONFIG = 78
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


# ------------------------------------------------------------ helpers --

def tls_daemon(**kw):
    return Daemon(tls=True, **kw)


def certs():
    return tlsutil.test_certs()


def conf_line(conf, key, nth=0):
    """1-based line of the nth `key = ...` line in the config file."""
    n = 0
    with open(conf) as f:
        for i, ln in enumerate(f, 1):
            if re.match(r"\s*%s\s*=" % re.escape(key), ln):
                if n == nth:
                    return i
                n += 1
    raise AssertionError("no %s line in %s" % (key, conf))


def start_refused(d, preexec_fn=None):
    """Run sdpsd on d's config in the foreground: (exit status, stderr)."""
    r = subprocess.run([harness.binary("sdpsd"), "-c", d.conf, "-f"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60,
                       preexec_fn=preexec_fn)
    return r.returncode, r.stderr.decode("utf-8", "replace")


def fp_of_der(der):
    return ":".join("%02X" % b for b in hashlib.sha256(der).digest())


def client_ctx(**kw):
    ctx = ssl.create_default_context(cafile=certs().ca)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


class TlsPop3(Pop3):
    """daemon.Pop3 over implicit TLS (Python ssl), resuming session if
    one is given."""

    def __init__(self, port, session=None, ctx=None):
        super().__init__(port=port, greeting=False)
        self.sock = (ctx or client_ctx()).wrap_socket(
            self.sock, server_hostname="localhost", session=session)
        self.greeting = self.line()

    def login(self, user=HOST, pw=PW1):
        return super().login(user, pw)

    def fingerprint(self):
        return fp_of_der(self.sock.getpeercert(binary_form=True))


def served_fp(d):
    """The fingerprint a new implicit-TLS connection sees."""
    with TlsPop3(d.tls_port) as c:
        assert c.greeting.startswith("+OK"), c.greeting
        fp = c.fingerprint()
        c.ok("QUIT")
        return fp


def key_reader(d):
    """Pid of the master's root key reader (comm sdpsd-keys)."""
    kids = [p for p in children_of(d.pid) if proc_comm(p) == "sdpsd-keys"]
    assert len(kids) == 1, kids
    return kids[0]


def gone(pid):
    """No process and no zombie: reaped."""
    return not os.path.exists("/proc/%d" % pid)


def uids(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("Uid:"):
                return [int(x) for x in ln.split()[1:]]
    raise AssertionError("no Uid line")


@pytest.fixture
def tlsd(request):
    d = tls_daemon()
    yield d
    d.cleanup()


def new_generation_serves(d, old_pids):
    """Wait until none of the workers forked before a reload remains
    idle (they leave after their session): new connections then reach
    only workers forked after it."""
    wait_for(lambda: not set(old_pids) & set(d.workers()),
             what="the old workers to leave")


# ---------------------------------------------------- refused start-up --

def refused(mutate, where, reason_re, tls=True):
    """Build a TLS daemon config, mutate(d) it, and require sdpsd to
    refuse to start with exit 78 and "CONF:LINE: reason" on stderr, where
    LINE is where(d) (a line number or a set of them)."""
    d = Daemon(tls=tls, start=False)
    try:
        mutate(d)
        rc, err = start_refused(d)
        lines = where(d)
        lines = {lines} if isinstance(lines, int) else set(lines)
        pat = r"%s:(%s): (.*)" % (re.escape(d.conf),
                                  "|".join(str(n) for n in lines))
        m = re.search(pat, err)
        assert rc == EX_CONFIG, (rc, err)
        assert m, "want %s in:\n%s" % (pat, err)
        assert re.search(reason_re, m.group(2), re.I), err
        # nothing was served: no pid file, no scoreboard
        assert not os.path.exists(d.pidfile)
        return err
    finally:
        d.cleanup()


def set_tls(**keys):
    return lambda d: d.rewrite_config(overrides={"tls": keys})


def test_missing_cert_file_refused():
    refused(set_tls(cert="/nonexistent/sdps/cert.pem"),
            lambda d: conf_line(d.conf, "cert"),
            r"/nonexistent/sdps/cert\.pem|no such file")


def test_missing_key_file_refused():
    refused(set_tls(key="/nonexistent/sdps/key.pem"),
            lambda d: conf_line(d.conf, "key"),
            r"/nonexistent/sdps/key\.pem|no such file")


def test_key_that_is_a_directory_refused(tmp_path):
    """An unreadable key: root reads any file, but not a directory."""
    refused(set_tls(key=str(tmp_path)),
            lambda d: conf_line(d.conf, "key"), r".")


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="no setpriv")
def test_key_unreadable_to_root_without_dac_override(tmp_path):
    """chmod 000, and sdpsd run as root without CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH (setpriv), so the permission check is real."""
    key = tmp_path / "key.pem"
    shutil.copy(certs().key, key)
    os.chmod(key, 0)
    d = Daemon(tls=True, start=False)
    try:
        d.rewrite_config(overrides={"tls": {"key": str(key)}})
        argv = [shutil.which("setpriv"), "--inh-caps=-dac_override,"
                "-dac_read_search", "--bounding-set=-dac_override,"
                "-dac_read_search", harness.binary("sdpsd"), "-c", d.conf,
                "-f"]
        r = subprocess.run(argv, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=60)
        err = r.stderr.decode()
        assert r.returncode == EX_CONFIG, (r.returncode, err)
        assert re.search(r"%s:%d: .*(permission denied|%s)" % (
            re.escape(d.conf), conf_line(d.conf, "key"),
            re.escape(str(key))), err, re.I), err
    finally:
        d.cleanup()


def test_mismatched_pair_refused():
    c = certs()
    refused(set_tls(cert=c.cert, key=c.key2),
            lambda d: (conf_line(d.conf, "cert"), conf_line(d.conf, "key")),
            r"match|mismatch|does not belong|key values")


@pytest.mark.parametrize("which", ["cert", "key"])
def test_garbage_pem_refused(tmp_path, which):
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n"
                    "-----END CERTIFICATE-----\n")
    refused(set_tls(**{which: str(junk)}),
            lambda d: conf_line(d.conf, which), r".")


def test_empty_pem_refused(tmp_path):
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    refused(set_tls(cert=str(empty)),
            lambda d: conf_line(d.conf, "cert"), r".")


@pytest.mark.parametrize("proto", ["TLSv1.1", "TLSv1", "SSLv3"])
def test_old_min_protocol_refused(proto):
    refused(set_tls(min_protocol=proto),
            lambda d: conf_line(d.conf, "min_protocol"),
            r"min_protocol: expected TLSv1\.2\|TLSv1\.3")


def test_bad_cipher_list_refused():
    refused(set_tls(ciphers="NO-SUCH-CIPHER"),
            lambda d: conf_line(d.conf, "ciphers"), r".")


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_tls_listener_without_tls_section_refused(mode):
    def mutate(d):
        d.rewrite_config(server={"listen": [
            "127.0.0.1:%d" % d.port,
            "127.0.0.1:%d tls=%s" % (free_port(), mode)]})
    refused(mutate, lambda d: conf_line(d.conf, "listen", 1),
            r"tls=%s needs \[tls\] cert and key" % mode, tls=False)


def test_lmtp_listener_with_tls_refused():
    refused(lambda d: d.rewrite_config(server={
        "lmtp_listen": "127.0.0.1:%d tls=implicit" % free_port()}),
        lambda d: conf_line(d.conf, "lmtp_listen"),
        r"LMTP is plain only", tls=False)


def test_default_config_needs_no_certificate():
    """The shipped defaults: plain only, so no [tls] is needed."""
    d = Daemon()
    try:
        with open(d.conf) as f:
            assert "[tls]" not in f.read()
        assert d.running()
    finally:
        d.cleanup()


# ------------------------------------------------------- good start-up --

def test_good_pair_served(tlsd):
    c = certs()
    want = tlsutil.fingerprint(c.cert)
    assert served_fp(tlsd) == want
    # the log names it: subject and fingerprint (tls_server_describe)
    tlsd.wait_log(r"master: tls: ")
    # openssl s_client sees the same certificate and verifies it
    r = subprocess.run(["openssl", "s_client", "-connect",
                        "127.0.0.1:%d" % tlsd.tls_port, "-CAfile", c.ca,
                        "-verify_return_error", "-servername", "localhost"],
                       input=b"QUIT\r\n", capture_output=True, timeout=30)
    out = r.stdout.decode("utf-8", "replace")
    assert "Verify return code: 0 (ok)" in out, out + r.stderr.decode()
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE"
                    r"-----", out, re.S).group(0)
    x = subprocess.run(["openssl", "x509", "-noout", "-fingerprint",
                        "-sha256"], input=pem.encode(), capture_output=True,
                       timeout=30, check=True)
    assert x.stdout.decode().strip().split("=", 1)[1] == want


def test_key_reader_is_not_a_worker(tlsd):
    reader = key_reader(tlsd)
    assert reader not in tlsd.workers()
    assert uids(reader)[0] == 0
    # it holds no listener: only its socket and stderr besides 0..1
    fds = os.listdir("/proc/%d/fd" % reader)
    assert len(fds) <= 4, fds


def test_sessions_show_tls(tlsd):
    with TlsPop3(tlsd.tls_port) as c:
        c.login()

        def listed():
            s = [x for x in tlsd.sessions() if x.get("maildrop") == HOST]
            return s and s[0]
        s = wait_for(listed, what="the TLS session listed")
        assert re.match(r"TLSv1\.[23]/\S+( ktls)?$", s["tls"]), s
        r = tlsd.ctl_ok("sessions")
        assert "TLS" in r.text.splitlines()[0]
        assert s["tls"] in r.text
        c.ok("QUIT")
    # a plain session shows "" in JSON, "-" in the table
    with tlsd.login() as p:
        s = wait_for(lambda: [x for x in tlsd.sessions()
                              if x.get("maildrop") == HOST],
                     what="the plain session listed")
        assert s[0]["tls"] == ""
        p.quit()


# -------------------------------------------------------------- reload --

def reload_to(d, cert, key, expect_log):
    n = len(d.log_lines(expect_log))
    d.rewrite_config(overrides={"tls": {"cert": cert, "key": key}})
    old = d.workers()
    d.signal(signal.SIGHUP)
    d.wait_log(expect_log, count=n + 1)
    return old


def check_reload_new_pair(d):
    c = certs()
    fp1, fp2 = tlsutil.fingerprint(c.cert), tlsutil.fingerprint(c.cert2)
    assert fp1 != fp2
    d.deliver_ok(harness.simple_message(), "someone@" + HOST)
    with TlsPop3(d.tls_port) as before:
        before.login()
        assert before.fingerprint() == fp1
        old = reload_to(d, c.cert2, c.key2, r"reload: tls: ")
        new_generation_serves(d, [p for p in old if p != d.worker_for(
            before.sock, port=d.tls_port)])
        # new connections: the new certificate
        assert served_fp(d) == fp2
        # the session opened before the reload goes on to the end
        assert list(before.list()) == [1]
        assert b"hello" in before.retr(1)
        before.quit()
    return fp2


def test_reload_new_pair(tlsd):
    check_reload_new_pair(tlsd)


@pytest.mark.parametrize("bad", ["mismatch", "missing", "garbage"])
def test_reload_bad_pair_keeps_old(tlsd, tmp_path, bad):
    c = certs()
    fp1 = tlsutil.fingerprint(c.cert)
    cert, key = {"mismatch": (c.cert2, c.key),
                 "missing": (c.cert, str(tmp_path / "gone.key")),
                 "garbage": (str(tmp_path / "junk.pem"), c.key)}[bad]
    (tmp_path / "junk.pem").write_text("junk\n")
    old = reload_to(tlsd, cert, key,
                    r"reload: keeping the old TLS certificate: ")
    line = tlsd.log_lines(r"reload: keeping the old TLS certificate")[-1]
    assert re.search(r"%s:(%d|%d): \S" % (
        re.escape(tlsd.conf), conf_line(tlsd.conf, "cert"),
        conf_line(tlsd.conf, "key")), line), line
    # the rest of the reload went through: a new generation serves, with
    # the old certificate
    tlsd.wait_log(r"reloaded .*generation")
    new_generation_serves(tlsd, old)
    assert served_fp(tlsd) == fp1
    # and a good pair afterwards is taken
    reload_to(tlsd, c.cert2, c.key2, r"reload: tls: ")
    wait_for(lambda: served_fp(tlsd) == tlsutil.fingerprint(c.cert2),
             what="the new certificate after a good reload")


# ----------------------------------------------------- privilege drop --

@pytest.fixture
def dropd(request, tmp_path):
    """A TLS daemon that drops to nobody; the keys root:root 0600 in a
    root-only directory, the spool nobody's."""
    nobody = pwd.getpwnam("nobody")
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    c = certs()
    files = {}
    for name in ("cert", "key", "cert2", "key2"):
        dst = keys / os.path.basename(getattr(c, name))
        shutil.copy(getattr(c, name), dst)
        os.chown(dst, 0, 0)
        os.chmod(dst, 0o600)
        files[name] = str(dst)
    d = Daemon(tls=True, start=False,
               server={"user": "nobody"},
               overrides={"tls": {"cert": files["cert"],
                                  "key": files["key"]}})
    d.keyfiles = files
    for top, dirs, fs in os.walk(d.root):
        for n in dirs + fs:
            os.lchown(os.path.join(top, n), nobody.pw_uid, nobody.pw_gid)
    os.chown(d.root, nobody.pw_uid, nobody.pw_gid)
    os.chown(d.conf, 0, 0)
    os.chmod(d.conf, 0o644)
    d.start()
    yield d
    d.cleanup()


@needs_root
def test_reload_with_privilege_drop(dropd):
    nobody = pwd.getpwnam("nobody")
    f = dropd.keyfiles
    reader = key_reader(dropd)
    assert uids(reader) == [0, 0, 0, 0]
    assert uids(dropd.pid)[0] == nobody.pw_uid
    with TlsPop3(dropd.tls_port) as c:
        c.login()
        worker = dropd.worker_for(c.sock, port=dropd.tls_port)
        assert uids(worker) == [nobody.pw_uid] * 4
        c.ok("QUIT")

    # the worker's credentials cannot open the key
    def try_open():
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
        try:
            open(f["key"], "rb").close()
        except PermissionError:
            os._exit(13)
        os._exit(0)
    pid = os.fork()
    if pid == 0:
        try_open()
    assert os.waitpid(pid, 0)[1] >> 8 == 13
    # so the master (nobody too) reloads through the reader
    old = reload_to(dropd, f["cert2"], f["key2"], r"reload: tls: ")
    new_generation_serves(dropd, old)
    assert served_fp(dropd) == tlsutil.fingerprint(f["cert2"])
    assert key_reader(dropd) == reader


@needs_root
def test_key_reader_killed_keeps_old_and_is_reaped(dropd):
    """Without its reader the master (as nobody) cannot read the key:
    the reload keeps the old certificate and says why; the dead reader
    is reaped, not left a zombie."""
    f = dropd.keyfiles
    reader = key_reader(dropd)
    os.kill(reader, signal.SIGKILL)
    wait_for(lambda: gone(reader), what="the key reader reaped")
    dropd.wait_log(r"key reader \(pid %d\): killed by signal 9" % reader)
    old = reload_to(dropd, f["cert2"], f["key2"],
                    r"reload: keeping the old TLS certificate: .*key reader")
    new_generation_serves(dropd, old)
    assert served_fp(dropd) == tlsutil.fingerprint(f["cert"])


def test_key_reader_leaves_with_the_master():
    # SIGTERM: the master collects it before it exits
    d = Daemon(tls=True)
    try:
        reader = key_reader(d)
        assert d.stop() == 0
        assert gone(reader)
    finally:
        d.cleanup()
    # SIGKILL: PR_SET_PDEATHSIG (and EOF on its socket), not an orphan
    d = Daemon(tls=True)
    try:
        reader = key_reader(d)
        os.kill(d.pid, signal.SIGKILL)
        wait_for(lambda: gone(reader), what="the orphaned key reader gone")
    finally:
        d.cleanup()


def test_no_key_reader_without_tls(daemon):
    assert all(proc_comm(p) != "sdpsd-keys" for p in children_of(daemon.pid))


# ------------------------------------------------- session resumption --

def test_session_resumes_on_another_worker(tlsd):
    """A ticket issued by one worker resumes on another: the keys are the
    master's, made before fork.  The first connection stays open, so the
    second one must reach a different worker."""
    ctx = client_ctx()
    with TlsPop3(tlsd.tls_port, ctx=ctx) as first:
        assert first.greeting.startswith("+OK")
        w1 = tlsd.worker_for(first.sock, port=tlsd.tls_port)
        sess = first.sock.session
        assert sess is not None and sess.has_ticket, \
            "no session ticket from the server"
        with TlsPop3(tlsd.tls_port, session=sess, ctx=ctx) as second:
            w2 = tlsd.worker_for(second.sock, port=tlsd.tls_port)
            assert w1 != w2
            assert second.sock.session_reused
            second.ok("QUIT")
        first.ok("QUIT")


def test_resumed_session_gets_a_new_ticket(tlsd):
    """A TLS 1.3 client should use a ticket once (RFC 8446 C.4; OpenSSL
    clients with a session cache do), so a resumed session must bring a
    fresh ticket: each connection of a chain resumes with the ticket the
    one before received, and leaves with a new one.  Without renewal the
    session after a resumption was the one offered, and clients that use
    a ticket once resumed only every other connection."""
    ctx = client_ctx()
    with TlsPop3(tlsd.tls_port, ctx=ctx) as p:
        assert p.sock.version() == "TLSv1.3"
        # the ticket follows the handshake: one reply makes sure it is in
        p.multi_ok("CAPA")
        sess = p.sock.session
        p.ok("QUIT")
    for i in range(3):
        with TlsPop3(tlsd.tls_port, session=sess, ctx=ctx) as p:
            assert p.sock.session_reused, "connection %d of the chain" % i
            p.multi_ok("CAPA")
            new = p.sock.session
            p.ok("QUIT")
        assert new != sess and new.id != sess.id, \
            "connection %d resumed but got no new ticket" % i
        sess = new


def test_no_resumption_with_ticket_lifetime_0():
    d = tls_daemon(overrides={"tls": {"ticket_lifetime": "0"}})
    try:
        ctx = client_ctx()
        with TlsPop3(d.tls_port, ctx=ctx) as first:
            sess = first.sock.session
            with TlsPop3(d.tls_port, session=sess, ctx=ctx) as second:
                assert not second.sock.session_reused
                second.ok("QUIT")
            first.ok("QUIT")
    finally:
        d.cleanup()
