"""Real Debian POP3 clients against sdpsd over TLS (issue 10).

Each client logs in and fetches the maildrop of test_clients.MESSAGES
(two punts, dot-stuffing, the null sender, a 3000-line message that spans
many TLS records) over implicit TLS (`tls=implicit`) and over STLS
(`tls=starttls`) where it can, and the test compares what it stored or
printed with what RETR returns.  Every client verifies the server's
certificate against the test CA (tlsutil); none runs with verification
off.

The daemon runs with allow_cleartext = no, so a client that skipped the
STLS upgrade could not log in at all (loopback is trusted by default),
and every login line in sdpsd's log must say tls=.  Each client runs
with its protocol trace on (curl -v, fetchmail -v, mpop --debug), and the
test pins the authentication command it chose when CAPA offers
"SASL PLAIN LOGIN" and USER: that answers the issue's question of whether
clients in Debian use AUTH LOGIN.

Every client process has a bounded timeout; a failure message carries
the client's output and the tail of sdpsd's log.
"""

import base64
import contextlib
import os
import poplib
import re
import shutil
import ssl
import subprocess
import sys
import tempfile

import pytest

from daemon import Daemon, parse_kv, tls_client_context
from test_clients import (HOST, MESSAGES, PW1, PW2, Demo, delivered,
                          fetchmail_argv, fetchmail_home, header,
                          lines_bytes, maildir, maildir_msgs, msgid, need,
                          norm, unprivileged)

MODES = ("implicit", "stls")
CLIENT_TIMEOUT = 120        # seconds, for every client process


class TlsDemo(Demo):
    """test_clients.Demo (MESSAGES delivered in order; deliver, count,
    cleanup) on an sdpsd with a plain, an STLS and an implicit-TLS
    listener and cleartext logins refused everywhere."""

    def __init__(self):
        self.d = Daemon(hosts=((HOST, PW1, PW2),), tls=True,
                        server={"allow_cleartext": "no"})
        self.ca = self.d.certs.ca
        self.ports = {"implicit": self.d.tls_port, "stls": self.d.stls_port}
        self.port = None        # plain POP3 takes no password here
        self.expected, self.rcpts, self.senders = [], [], []
        for m in MESSAGES:
            self.deliver(*m)
        self.tmp = tempfile.mkdtemp(prefix="sdps-tls-clients-")

    def log_tail(self, n=40):
        return "\n".join(self.d.log_lines()[-n:])

    def explain(self, what, out=""):
        return "%s\n--- client output ---\n%s\n--- sdpsd log (tail) ---\n%s" \
            % (what, out, self.log_tail())

    def run(self, what, argv, env=None, input=None, timeout=CLIENT_TIMEOUT):
        """Run a client, bounded; returns (returncode, stdout, stderr)."""
        try:
            cp = subprocess.run(argv, input=input, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env,
                                timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(self.explain(
                "%s: still running after %ss (killed)" % (what, timeout),
                _text(e.stdout) + _text(e.stderr)))
        return cp.returncode, cp.stdout, cp.stderr

    def run_ok(self, what, argv, env=None, input=None, ok=(0,)):
        rc, out, err = self.run(what, argv, env=env, input=input)
        assert rc in ok, self.explain("%s: exit %d" % (what, rc),
                                      _text(out) + _text(err))
        return out, err

    @contextlib.contextmanager
    def explaining(self, what):
        """For in-process clients (poplib): any exception becomes an
        assertion that carries sdpsd's log tail."""
        try:
            yield
        except AssertionError as e:
            raise AssertionError(self.explain("%s: %s" % (what, e))) \
                from e
        except (OSError, EOFError, poplib.error_proto) as e:
            raise AssertionError(self.explain("%s: %r" % (what, e))) \
                from e

    def logins(self):
        return self.d.log_lines(r"event=login\b")

    def assert_tls_logins(self, before, what, out="", at_least=1):
        """Every login since `before` (a len(logins())) was over TLS;
        returns the set of their mechanisms (the login line's mech=:
        pass for USER/PASS, plain, login)."""
        new = self.logins()[before:]
        assert len(new) >= at_least, self.explain(
            "%s: %d login(s) logged, expected %d" % (what, len(new),
                                                     at_least), out)
        for ln in new:
            assert re.search(r"\btls=TLSv1\.[23]/", ln), self.explain(
                "%s: login not over TLS: %s" % (what, ln), out)
        return {parse_kv(ln).get("mech") for ln in new}



def _text(b):
    if b is None:
        return ""
    if isinstance(b, bytes):
        return b.decode("utf-8", "replace")
    return b


@pytest.fixture
def tdemo():
    x = TlsDemo()
    yield x
    x.cleanup()


def first_auth(trace, rx):
    """The first authentication command in a client's trace: "USER",
    "APOP" or "AUTH <MECH>" (rx matches a client-to-server line and
    captures the command)."""
    for ln in trace.splitlines():
        m = re.search(rx, ln)
        if m:
            words = m.group(1).split()
            if words[0].upper() == "AUTH":
                return "AUTH " + words[1].upper()
            return words[0].upper()
    return None


# -------------------------------------------------------- openssl s_client --

def plain_b64(user, pw):
    return base64.b64encode(b"\0" + user.encode() + b"\0" +
                            pw.encode()).decode()


def parse_transcript(data, commands):
    """Split a POP3 server transcript into replies, one per command:
    (status line, body bytes or None).  A body follows the +OK of RETR,
    TOP, UIDL, CAPA and LIST without an argument; it is returned
    dot-unstuffed, CRLF lines, as test_clients.lines_bytes makes it."""
    lines = data.split(b"\r\n")
    pos = 0
    out = []
    for cmd in commands:
        status = lines[pos].decode("latin-1")
        pos += 1
        body = None
        verb = cmd.split()[0].upper()
        multi = verb in ("RETR", "TOP", "UIDL", "CAPA") or \
            (verb == "LIST" and len(cmd.split()) == 1)
        if status.startswith("+OK") and multi:
            body = []
            while lines[pos] != b".":
                ln = lines[pos]
                body.append(ln[1:] if ln.startswith(b".") else ln)
                pos += 1
            pos += 1
            body = lines_bytes(body)
        out.append((status, body))
    return out


def s_client_argv(tdemo, mode, ca):
    argv = [need("openssl"), "s_client",
            "-connect", "127.0.0.1:%d" % tdemo.ports[mode],
            "-CAfile", ca, "-verify_return_error",
            "-verify_ip", "127.0.0.1", "-quiet", "-crlf"]
    if mode == "stls":
        argv += ["-starttls", "pop3"]
    return argv


@pytest.mark.parametrize("auth", ("user", "plain"))
@pytest.mark.parametrize("mode", MODES)
def test_openssl_s_client(tdemo, mode, auth):
    """A scripted session through s_client, the commands pipelined after
    the handshake: login, STAT, LIST, every RETR, QUIT."""
    exp = tdemo.expected
    argv = s_client_argv(tdemo, mode, tdemo.ca)
    if auth == "user":
        cmds = ["USER " + HOST, "PASS " + PW2]
    else:
        cmds = ["AUTH PLAIN " + plain_b64(HOST, PW2)]
    cmds += ["STAT", "LIST"] + ["RETR %d" % (i + 1)
                                for i in range(len(exp))] + ["QUIT"]
    before = len(tdemo.logins())
    out, err = tdemo.run_ok("openssl s_client", argv,
                            input="".join(c + "\n" for c in cmds).encode())
    why = _text(err) + _text(out)[-2000:]
    if mode == "implicit":
        # s_client -starttls consumes the greeting and the STLS reply
        # itself; with implicit TLS the greeting is ours to read.
        greet, out = out.split(b"\r\n", 1)
        assert greet.startswith(b"+OK"), tdemo.explain("greeting", why)
    try:
        replies = parse_transcript(out, cmds)
    except IndexError:
        raise AssertionError(tdemo.explain("transcript ends early", why))
    assert all(s.startswith("+OK") for s, _ in replies), \
        tdemo.explain("a command failed: %r" % [s for s, _ in replies], why)
    i = len(cmds) - len(exp) - 3
    assert replies[i][0].split()[1:] == \
        [str(len(exp)), str(sum(len(m) for m in exp))]
    assert replies[i + 1][1] == b"".join(
        b"%d %d\r\n" % (n + 1, len(m)) for n, m in enumerate(exp))
    for n, m in enumerate(exp):
        assert replies[i + 2 + n][1] == m, "RETR %d differs" % (n + 1)
    assert tdemo.assert_tls_logins(before, "openssl s_client", why) == \
        {"pass" if auth == "user" else "plain"}
    assert tdemo.count() == len(exp)


# --------------------------------------------------------------- curl --

def curl_argv(tdemo, mode, user, pw, path="", ca=None):
    scheme = "pop3s" if mode == "implicit" else "pop3"
    argv = [need("curl"), "-sS", "-v", "--max-time", "60",
            "--cacert", ca or tdemo.ca, "-u", "%s:%s" % (user, pw)]
    if mode == "stls":
        argv.append("--ssl-reqd")
    return argv + ["%s://127.0.0.1:%d/%s" % (scheme, tdemo.ports[mode],
                                             path)]


@pytest.mark.parametrize("mode", MODES)
def test_curl(tdemo, mode):
    exp = tdemo.expected
    before = len(tdemo.logins())
    out, err = tdemo.run_ok("curl LIST", curl_argv(tdemo, mode, HOST, PW1))
    assert out == b"".join(b"%d %d\r\n" % (n + 1, len(m))
                           for n, m in enumerate(exp)), \
        tdemo.explain("curl LIST", _text(err))
    for n, m in enumerate(exp):
        got, err = tdemo.run_ok("curl RETR", curl_argv(
            tdemo, mode, HOST, PW2, str(n + 1)))
        assert got == m, tdemo.explain("curl RETR %d differs" % (n + 1),
                                       _text(err))
    # A user session spelt user@host, over TLS too.
    out, err = tdemo.run_ok("curl alice", curl_argv(
        tdemo, mode, "alice@" + HOST, PW1))
    alice = [m for m, r in zip(exp, tdemo.rcpts) if "alice" in r]
    assert [int(ln.split()[1]) for ln in out.splitlines()] == \
        [len(m) for m in alice]
    # curl prefers SASL to USER and, of PLAIN and LOGIN, PLAIN.
    assert tdemo.assert_tls_logins(before, "curl", _text(err),
                                   len(exp) + 2) == {"plain"}
    trace = _text(err)
    assert first_auth(trace, r"^> ((?:AUTH|USER|APOP)\b.*)") == \
        "AUTH PLAIN", trace
    if mode == "stls":
        assert re.search(r"^> STLS", trace, re.M), trace


# ---------------------------------------------------------- fetchmail --

def fetchmail_rc(tdemo, name, proto, mode, keep, ca=None):
    """A fetchmailrc for one poll of the TLS listener: `ssl` for implicit
    TLS, `sslproto tls1.2+` without `ssl` for mandatory STLS; the
    certificate checked against the test CA.  proto sdps polls as a
    multidrop (the *ENV envelope); pop3 as a single drop to "tlsuser".
    No auth line: fetchmail chooses.  It polls "localhost", not
    127.0.0.1: fetchmail 6.4 matches the server name against the
    certificate's DNS names and CN only, never an IP address SAN
    ("Server CommonName mismatch: localhost != 127.0.0.1")."""
    home, out, mda = fetchmail_home(tdemo, name)
    tls = "ssl sslproto tls1.2+" if mode == "implicit" else "sslproto tls1.2+"
    if proto == "sdps":
        who = ('  localdomains %s\n  user "%s" there with password "%s" '
               'to * here\n' % (HOST, HOST, PW2))
        nodns = " no dns"
    else:
        who = '  user "%s" there with password "%s" is tlsuser here\n' % (
            HOST, PW2)
        nodns = ""
    argv, env = fetchmail_argv(home,
        'poll localhost port %d proto %s%s timeout 60\n%s'
        '  mda "/bin/sh %s %s %%T %%F"\n'
        '  %s sslcertck sslcertfile "%s"\n'
        '  %s\n'
        % (tdemo.ports[mode], proto, nodns, who, mda, out,
           tls, ca or tdemo.ca, "keep" if keep else "fetchall"))
    return argv, env, out


@pytest.mark.parametrize("proto", ("pop3", "sdps"))
@pytest.mark.parametrize("mode", MODES)
def test_fetchmail(tdemo, mode, proto):
    keep = proto == "pop3" and mode == "stls"
    argv, env, out = fetchmail_rc(tdemo, "fm-%s-%s" % (proto, mode), proto,
                                  mode, keep)
    before = len(tdemo.logins())
    so, se = tdemo.run_ok("fetchmail", argv, env=env)
    trace = _text(so) + _text(se)
    # fetchmail knows no SASL PLAIN or LOGIN for POP3: USER/PASS.
    assert tdemo.assert_tls_logins(before, "fetchmail", trace) == {"pass"}
    if mode == "stls":
        assert re.search(r"POP3> STLS", trace), trace
    if proto == "sdps":
        assert "*ENV" in trace, trace     # it used the SDPS extension
    got = delivered(out)
    assert sorted(got) == sorted(msgid(i) for i in range(len(MESSAGES))), \
        tdemo.explain("fetchmail delivered %r" % sorted(got), trace)
    for i, (sender, users, punt, text) in enumerate(MESSAGES):
        (rcpt, env_from, data), = got[msgid(i)]
        # fetchmail puts its Received: field on top and writes LF line
        # ends; after it comes the message RETR gave, byte for byte.
        want = norm(tdemo.expected[i])
        assert data.startswith(b"Received: ") and data.endswith(want), \
            tdemo.explain("message %d differs:\n%r" % (i + 1, data[:600]),
                          trace)
        if proto == "sdps":
            assert rcpt.split("@")[0] in users
            if sender:
                assert env_from == sender
        else:
            assert rcpt.split("@")[0] == "tlsuser"
    assert tdemo.count() == (len(MESSAGES) if keep else 0)
    assert first_auth(trace, r"POP3> ((?:AUTH|USER|APOP)\b.*)") == \
        "USER", trace


# --------------------------------------------------------------- mpop --

def mpop_argv(tdemo, mode, keep, home, ca=None):
    """mpop with TLS on, STLS or not, verifying against ca; it delivers
    to home/Maildir.  (argv, env, maildir)"""
    md = maildir(os.path.join(home, "Maildir"))
    pwfile = os.path.join(home, "pw")
    with open(pwfile, "w") as f:
        f.write(PW2 + "\n")
    os.chmod(pwfile, 0o600)
    argv = [need("mpop"), "--debug", "--host=127.0.0.1",
            "--port=%d" % tdemo.ports[mode], "--tls=on",
            "--tls-starttls=%s" % ("on" if mode == "stls" else "off"),
            "--tls-trust-file=" + (ca or tdemo.ca), "--auth=on",
            "--user=" + HOST, "--passwordeval=cat " + pwfile,
            "--keep=%s" % ("on" if keep else "off"),
            "--received-header=off",
            "--uidls-file=" + os.path.join(home, "uidls"),
            "--delivery=maildir," + md, "--timeout=60"]
    env = {"HOME": home, "LC_ALL": "C",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return argv, env, md


@pytest.mark.parametrize("mode", MODES)
def test_mpop(tdemo, mode):
    keep = mode == "implicit"
    argv, env, md = mpop_argv(tdemo, mode, keep,
                              os.path.join(tdemo.tmp, "mpop-" + mode))
    before = len(tdemo.logins())
    so, se = tdemo.run_ok("mpop", argv, env=env)
    trace = _text(so) + _text(se)
    # mpop (--auth=on) takes the best mechanism it can: PLAIN.
    assert tdemo.assert_tls_logins(before, "mpop", trace) == {"plain"}
    # mpop stores the message as RETR gave it, with local line ends.
    want = sorted(norm(m) for m in tdemo.expected)
    assert sorted(maildir_msgs(md)) == want, \
        tdemo.explain("mpop's maildir differs", trace)
    assert tdemo.count() == (len(MESSAGES) if keep else 0)
    if mode == "stls":
        assert re.search(r"^--> STLS", trace, re.M), trace
    assert first_auth(trace, r"^--> ((?:AUTH|USER|APOP)\b.*)") == \
        "AUTH PLAIN", trace


# ------------------------------------------------------------ getmail --

# getmail6 6.18 (Debian 12) forks a child for every local delivery and
# installs its SIGCHLD handler only after fork(); a child that exits
# before that is never reaped, and getmail waits out its socket timeout
# (getmail6 issues #52 and #226; upstream replaced it with
# multiprocessing in d3a3aa3).  On this busy 2-core machine that hung a
# test run.  The launcher below runs the unchanged /usr/bin/getmail with
# only that delivery wait made race-free (fork, then waitpid); the POP3,
# TLS and certificate code is Debian's as shipped.
GETMAIL_LAUNCHER = """\
import os, runpy, sys
import getmailcore.baseclasses as b
from getmailcore.exceptions import getmailOperationError

def forkchild(self, childfun, with_out=True):
    self.child = child = b.Namespace()
    child.stdout = b.TemporaryFile23()
    child.stderr = b.TemporaryFile23()
    child.childpid = os.fork()
    if child.childpid == 0:
        childfun(child.stdout, child.stderr)
        os._exit(127)
    _, status = os.waitpid(child.childpid, 0)
    if not os.WIFEXITED(status):
        raise getmailOperationError("child pid %d failed: status %d"
                                    % (child.childpid, status))
    child.exitcode = os.WEXITSTATUS(status)
    child.stderr.seek(0)
    child.err = child.stderr.read().strip().decode()
    child.stdout.seek(0)
    if with_out:
        child.out = child.stdout.read().strip()
    return child

b.ForkingBase.forkchild = forkchild
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def getmail_argv(tdemo, home, ca=None):
    """getmail6's SimplePOP3SSLRetriever on the implicit-TLS port with
    ca_certs, read_all and delete, into home/Maildir.  It runs as
    nobody, so the CA is copied into its home.  (argv, env, maildir)"""
    md = maildir(os.path.join(home, "Maildir"))
    cafile = os.path.join(home, "ca.pem")
    shutil.copy(ca or tdemo.ca, cafile)
    rc = ("[retriever]\ntype = SimplePOP3SSLRetriever\nserver = 127.0.0.1\n"
          "port = %d\nusername = %s\npassword = %s\nca_certs = %s\n\n"
          "[destination]\ntype = Maildir\npath = %s/\n\n"
          "[options]\nverbose = 2\nread_all = true\ndelete = true\n"
          "delivered_to = false\nreceived = false\n"
          % (tdemo.ports["implicit"], HOST, PW1, cafile, md))
    rcfile = os.path.join(home, "getmailrc")
    with open(rcfile, "w") as f:
        f.write(rc)
    os.chmod(rcfile, 0o600)
    env = {"HOME": home, "LC_ALL": "C.UTF-8",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    launcher = os.path.join(home, "getmail-launcher.py")
    with open(launcher, "w") as f:
        f.write(GETMAIL_LAUNCHER)
    argv = unprivileged([sys.executable, launcher, need("getmail"),
                         "--getmaildir=" + home, "--rcfile=" + rcfile], home)
    return argv, env, md


def test_getmail_ssl(tdemo):
    """getmail6 over implicit TLS only: getmail6 6.18 has no STLS for
    POP3 (only its IMAP retrievers know STARTTLS)."""
    argv, env, md = getmail_argv(tdemo, os.path.join(tdemo.tmp, "getmail"))
    before = len(tdemo.logins())
    so, se = tdemo.run_ok("getmail", argv, env=env)
    trace = _text(so) + _text(se)
    # getmail6 has only USER/PASS and APOP for POP3.
    assert tdemo.assert_tls_logins(before, "getmail", trace) == {"pass"}
    got = maildir_msgs(md)
    assert len(got) == len(MESSAGES), tdemo.explain(
        "getmail stored %d messages" % len(got), trace)
    # With received = false and delivered_to = false getmail stores the
    # message as RETR gave it, with local line ends.
    by_id = {header(m, "Message-ID").decode(): m for m in got}
    for i in range(len(MESSAGES)):
        assert by_id[msgid(i)] == norm(tdemo.expected[i]), tdemo.explain(
            "message %d differs:\n%r" % (i + 1, by_id[msgid(i)][:600]),
            trace)
    assert tdemo.count() == 0       # delete = true, committed at QUIT


# ------------------------------------------------------------- poplib --

def ca_context(tdemo):
    ctx = tdemo.d.client_context()
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    return ctx


def poplib_fetch(tdemo, p):
    exp = tdemo.expected
    caps = p.capa()
    assert "USER" in caps and "STLS" not in caps, caps
    p.user(HOST)
    assert p.pass_(PW2).startswith(b"+OK")
    assert p.stat() == (len(exp), sum(len(m) for m in exp))
    _, lines, _ = p.list()
    assert [tuple(map(int, ln.split())) for ln in lines] == \
        [(n + 1, len(m)) for n, m in enumerate(exp)]
    for n, m in enumerate(exp):
        assert lines_bytes(p.retr(n + 1)[1]) == m, "RETR %d" % (n + 1)
    p.dele(2)
    assert p.quit().startswith(b"+OK")


@pytest.mark.parametrize("mode", MODES)
def test_poplib(tdemo, mode):
    """POP3_SSL for implicit TLS, POP3.stls() for STLS."""
    before = len(tdemo.logins())
    with tdemo.explaining("poplib " + mode):
        if mode == "implicit":
            p = poplib.POP3_SSL("127.0.0.1", tdemo.ports[mode],
                                context=ca_context(tdemo), timeout=60)
        else:
            p = poplib.POP3("127.0.0.1", tdemo.ports[mode], timeout=60)
        try:
            if mode == "stls":
                caps = p.capa()
                # allow_cleartext = no: before STLS, no way to send a
                # password.
                assert "STLS" in caps and "USER" not in caps, caps
                assert "SASL" not in caps, caps
                assert p.stls(context=ca_context(tdemo)).startswith(b"+OK")
            assert p.sock.version() in ("TLSv1.2", "TLSv1.3")
            poplib_fetch(tdemo, p)
        finally:
            p.close()
    assert tdemo.assert_tls_logins(before, "poplib " + mode) == {"pass"}
    assert tdemo.count() == len(MESSAGES) - 1


# ---------------------------------------------------------- AUTH LOGIN --

@pytest.mark.parametrize("client", ("curl", "mpop"))
def test_auth_login_when_asked(tdemo, client):
    """No client here picks AUTH LOGIN while PLAIN is offered, but curl
    and mpop can be told to use it: over STLS each logs in with LOGIN
    (the server's mech=login) and fetches."""
    before = len(tdemo.logins())
    if client == "curl":
        argv = curl_argv(tdemo, "stls", HOST, PW2, "2")
        argv[1:1] = ["--login-options", "AUTH=LOGIN"]
        out, err = tdemo.run_ok("curl AUTH=LOGIN", argv)
        assert out == tdemo.expected[1], tdemo.explain("RETR 2 differs",
                                                       _text(err))
        trace = _text(err)
        rx = r"^> ((?:AUTH|USER|APOP)\b.*)"
    else:
        argv, env, md = mpop_argv(tdemo, "stls", True,
                                  os.path.join(tdemo.tmp, "mpop-login"))
        argv = [a if a != "--auth=on" else "--auth=login" for a in argv]
        so, se = tdemo.run_ok("mpop --auth=login", argv, env=env)
        trace = _text(so) + _text(se)
        assert sorted(maildir_msgs(md)) == sorted(
            norm(m) for m in tdemo.expected), tdemo.explain(
            "mpop's maildir differs", trace)
        rx = r"^--> ((?:AUTH|USER|APOP)\b.*)"
    assert first_auth(trace, rx) == "AUTH LOGIN", trace
    assert tdemo.assert_tls_logins(before, client, trace) == {"login"}


# ----------------------------------------------------------- wrong CA --

def other_ca(tmp_path):
    import tlsutil
    return tlsutil.make_ca(str(tmp_path), cn="not the sdps test CA")[0]


# How each client says that the certificate did not verify (so that a
# handshake failing for another reason does not pass the test below).
VERIFY_FAILED = {
    "openssl": r"verify error|certificate verify failed",
    "curl": r"SSL certificate problem",
    "fetchmail": r"certificate verif",
    "mpop": r"TLS certificate verification failed",
    "getmail": r"CERTIFICATE_VERIFY_FAILED|certificate verify failed",
}


@pytest.mark.parametrize("client", sorted(VERIFY_FAILED))
def test_wrong_ca_refused(tdemo, tmp_path, client):
    """Each client above really verifies: given a CA that did not sign
    the server's certificate, it refuses the server over implicit TLS
    and STLS, saying why, before any password is sent."""
    ca = other_ca(tmp_path)
    for mode in (MODES if client != "getmail" else ("implicit",)):
        home = os.path.join(tdemo.tmp, "%s-wrong-%s" % (client, mode))
        os.makedirs(home, exist_ok=True)
        env, md, out, inp = None, None, None, None
        if client == "openssl":
            argv = s_client_argv(tdemo, mode, ca)
            inp = ("USER %s\nPASS %s\nQUIT\n" % (HOST, PW1)).encode()
        elif client == "curl":
            argv = curl_argv(tdemo, mode, HOST, PW1, ca=ca)
        elif client == "fetchmail":
            argv, env, out = fetchmail_rc(tdemo, "fm-wrong-" + mode, "pop3",
                                          mode, False, ca=ca)
        elif client == "mpop":
            argv, env, md = mpop_argv(tdemo, mode, False, home, ca=ca)
        else:
            argv, env, md = getmail_argv(tdemo, home, ca=ca)
        before = len(tdemo.logins())
        rc, so, se = tdemo.run(client, argv, env=env, input=inp)
        trace = _text(so) + _text(se)
        assert rc != 0, tdemo.explain("%s %s: accepted a certificate the "
                                      "CA did not sign" % (client, mode),
                                      trace)
        assert re.search(VERIFY_FAILED[client], trace), tdemo.explain(
            "%s %s failed, but not for the certificate" % (client, mode),
            trace)
        assert len(tdemo.logins()) == before, tdemo.explain(
            "%s %s logged in" % (client, mode), trace)
        assert not (md and maildir_msgs(md)) and not (out and delivered(out))
    assert tdemo.count() == len(MESSAGES)


def test_poplib_wrong_ca_refused(tdemo, tmp_path):
    """poplib too: a CA that did not sign the server's certificate makes
    the handshake fail."""
    ctx = tls_client_context(other_ca(tmp_path))
    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL("127.0.0.1", tdemo.ports["implicit"], context=ctx,
                        timeout=60)
    assert tdemo.logins() == []
    p = poplib.POP3("127.0.0.1", tdemo.ports["stls"], timeout=60)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            p.stls(context=ctx)
    finally:
        # the failed handshake closed poplib's socket under it: its
        # close() then fails with EBADF
        with contextlib.suppress(OSError):
            p.close()
    assert tdemo.logins() == []
