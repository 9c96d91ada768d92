"""Real POP3 clients from Debian against a real sdpsd.

poplib, curl, fetchmail (proto sdps, multidrop, and keep/UIDL), mpop
(pipelining, keep/UIDL) and getmail6 (SimplePOP3Retriever, and the
MultidropSDPSRetriever that reads *ENV) each fetch a small maildrop spread
over two punts; every test checks what the client delivered against what
sdps-deliver stored.
"""

import glob
import os
import poplib
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import urllib.parse

import pytest

from daemon import Daemon, Pop3, msg_bytes

HOST = "demo.example"
PW1 = "demo-pass-1"
PW2 = "demo pass 2, with spaces"    # PASS takes the whole rest of the line

# (sender, recipients, punt, text): spread over both punts, one message
# for two users, one with the null sender, lines that need dot-stuffing.
MESSAGES = [
    ("carol@example.org", ["alice"], "finchley",
     "From: Carol <carol@example.org>\nTo: alice@demo.example\n"
     "Subject: one\nMessage-ID: <m1@example.org>\n\nHello Alice.\n"
     ".a line with a leading dot\n..two dots\n.\nlast line\n"),
    ("dave@example.org", ["bob"], "docklands",
     "From: Dave <dave@example.org>\nTo: bob@demo.example\n"
     "Subject: two\nMessage-ID: <m2@example.org>\n\nHello Bob.\n"),
    ("", ["alice"], "docklands",
     "From: MAILER-DAEMON@example.org\nTo: alice@demo.example\n"
     "Subject: three (null sender)\nMessage-ID: <m3@example.org>\n\n"
     "A bounce.\n"),
    ("erin@example.org", ["alice", "bob"], "finchley",
     "From: Erin <erin@example.org>\nTo: alice@demo.example, "
     "bob@demo.example\nSubject: four (both)\n"
     "Message-ID: <m4@example.org>\n\nFor both of you.\n"),
    ("frank@example.org", ["bob"], "finchley",
     "From: Frank <frank@example.org>\nTo: bob@demo.example\n"
     "Subject: five (big)\nMessage-ID: <m5@example.org>\n\n"
     + "".join("line %05d of a bigger message, to span several "
               "TCP segments\n" % i for i in range(3000))),
]


def expected_bytes(sender, text):
    """What RETR returns: Return-Path added, CRLF line ends, unstuffed."""
    return b"Return-Path: <%s>\r\n" % sender.encode() + msg_bytes(text)


def spool_msgs(d, host=None):
    """sdps-ctl spool ls --json as a list (harness returns the object)."""
    j = d.spool_ls(host=host)
    return j["messages"] if isinstance(j, dict) else j


def msgid(i):
    return "<m%d@example.org>" % (i + 1)


class Demo:
    """A running sdpsd with MESSAGES delivered, in arrival order."""

    def __init__(self):
        self.d = Daemon(hosts=((HOST, PW1, PW2),))
        self.port = self.d.port
        self.expected = []
        self.rcpts = []
        self.senders = []
        for sender, users, punt, text in MESSAGES:
            self.deliver(sender, users, punt, text)
        self.tmp = tempfile.mkdtemp(prefix="sdps-clients-")

    def deliver(self, sender, users, punt, text):
        self.d.deliver_ok(text, ["%s@%s" % (u, HOST) for u in users],
                          sender=sender, punt=punt)
        self.expected.append(expected_bytes(sender, text))
        self.rcpts.append(list(users))
        self.senders.append(sender)

    def uidls(self):
        with self.d.login_when_free(HOST, PW1) as p:
            u = p.uidl()
            p.quit()
        return [u[k] for k in sorted(u)]

    def count(self):
        return len(spool_msgs(self.d, HOST))

    def cleanup(self):
        self.d.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def demo():
    x = Demo()
    yield x
    x.cleanup()


def need(prog):
    path = shutil.which(prog)
    if path is None:
        pytest.skip("%s is not installed (make deps)" % prog)
    return path


def run(argv, env=None, timeout=180):
    cp = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        env=env, timeout=timeout)
    return cp


def lines_bytes(lines):
    return b"".join(ln + b"\r\n" for ln in lines)


def head_of(msg, nlines=0):
    """TOP n nlines of a message as the client sees it."""
    i = msg.index(b"\r\n\r\n") + 4
    body = msg[i:].split(b"\r\n")[:-1]
    return msg[:i] + b"".join(ln + b"\r\n" for ln in body[:nlines])


# ------------------------------------------------------------- poplib --

def test_poplib_host_session(demo):
    exp = demo.expected
    p = poplib.POP3("127.0.0.1", demo.port, timeout=60)
    try:
        caps = p.capa()
        for c in ("TOP", "UIDL", "USER", "PIPELINING", "RESP-CODES",
                  "X-SDPS"):
            assert c in caps, caps
        p.user(HOST)
        assert p.pass_(PW2).startswith(b"+OK")
        assert p.stat() == (len(exp), sum(len(m) for m in exp))

        resp, lines, _ = p.list()
        assert [tuple(map(int, ln.split())) for ln in lines] == \
            [(i + 1, len(m)) for i, m in enumerate(exp)]
        assert p.list(2).split()[1:] == [b"2", str(len(exp[1])).encode()]

        resp, lines, _ = p.uidl()
        uids = [ln.split()[1].decode() for ln in lines]
        assert len(set(uids)) == len(exp)
        assert sorted(uids) == sorted(m["uidl"]
                                      for m in spool_msgs(demo.d, HOST))

        for i, m in enumerate(exp):
            resp, lines, octets = p.retr(i + 1)
            assert lines_bytes(lines) == m, "message %d" % (i + 1)
        for n in (0, 2):
            resp, lines, _ = p.top(1, n)
            assert lines_bytes(lines) == head_of(exp[0], n)

        p.dele(1)
        p.dele(3)
        with pytest.raises(poplib.error_proto):
            p.retr(1)        # deleted in this session
        assert p.stat()[0] == len(exp) - 2
        assert p.quit().startswith(b"+OK")
    finally:
        p.close()

    # The deletion was applied at QUIT: gone from the spool and from a
    # new session, the rest untouched and still in order.
    assert demo.count() == len(exp) - 2
    with demo.d.login_when_free(HOST, PW1) as q:
        assert q.uidl() == {1: uids[1], 2: uids[3], 3: uids[4]}
        assert q.retr(1) == exp[1]
        q.quit()


def test_poplib_user_sessions(demo):
    for user, login in (("alice", "alice@" + HOST), ("bob", "bob+" + HOST)):
        mine = [m for m, r in zip(demo.expected, demo.rcpts) if user in r]
        p = poplib.POP3("127.0.0.1", demo.port, timeout=60)
        try:
            p.user(login)
            p.pass_(PW1)
            assert p.stat() == (len(mine), sum(len(m) for m in mine))
            for i, m in enumerate(mine):
                assert lines_bytes(p.retr(i + 1)[1]) == m
            p.quit()
        finally:
            p.close()


def test_poplib_bad_password(demo):
    p = poplib.POP3("127.0.0.1", demo.port, timeout=60)
    try:
        p.user(HOST)
        with pytest.raises(poplib.error_proto) as e:
            p.pass_("not the password")
        assert b"[AUTH]" in e.value.args[0]
    finally:
        p.close()


# --------------------------------------------------------------- curl --

def curl_url(user, pw, port, path=""):
    return "pop3://%s:%s@127.0.0.1:%d/%s" % (
        urllib.parse.quote(user, safe=""), urllib.parse.quote(pw, safe=""),
        port, path)


def curl(*args):
    cp = run([need("curl"), "-sS", "--max-time", "120"] + list(args))
    assert cp.returncode == 0, cp.stderr
    return cp.stdout


def test_curl_list_and_retrieve(demo):
    exp = demo.expected
    out = curl(curl_url(HOST, PW1, demo.port))
    assert out.endswith(b"\r\n")
    assert [tuple(map(int, ln.split())) for ln in out.splitlines()] == \
        [(i + 1, len(m)) for i, m in enumerate(exp)]
    for i, m in enumerate(exp):
        assert curl(curl_url(HOST, PW2, demo.port, str(i + 1))) == m

    # A custom command, and a user session spelt user@host.
    out = curl("-X", "UIDL", curl_url(HOST, PW1, demo.port))
    assert [ln.split()[1].decode() for ln in out.splitlines()] == \
        demo.uidls()
    out = curl(curl_url("alice@" + HOST, PW1, demo.port))
    alice = [m for m, r in zip(exp, demo.rcpts) if "alice" in r]
    assert [int(ln.split()[1]) for ln in out.splitlines()] == \
        [len(m) for m in alice]


def test_curl_dele(demo):
    uids = demo.uidls()
    # -I: no transfer; curl sends DELE 2 and then QUIT, which commits it.
    curl("-I", "-X", "DELE", curl_url(HOST, PW1, demo.port, "2"))
    assert demo.uidls() == uids[:1] + uids[2:]
    assert demo.count() == len(uids) - 1


# ---------------------------------------------------------- fetchmail --

MDA = """#!/bin/sh
# mda OUTDIR RCPT SENDER: keep stdin as OUTDIR/RCPT/m.* and the sender
set -e
d="$1/$2"
mkdir -p "$d"
f=$(mktemp "$d/m.XXXXXX")
cat >"$f"
printf '%s\\n' "$3" >"$f.from"
"""


def fetchmail_home(demo, name):
    """A fresh HOME for one fetchmail run, with the mda script: (home,
    out, mda); the mda files each message under out."""
    home = os.path.join(demo.tmp, name)
    out = os.path.join(home, "out")
    os.makedirs(out)
    mda = os.path.join(home, "mda.sh")
    with open(mda, "w") as f:
        f.write(MDA)
    return home, out, mda


def fetchmail_argv(home, rc_text):
    """Write home's fetchmailrc and return (argv, env) to run it."""
    rc = os.path.join(home, "fetchmailrc")
    with open(rc, "w") as f:
        f.write('set no syslog\nset no bouncemail\n'
                'set idfile "%s/fetchids"\n' % home + rc_text)
    # fetchmail refuses an rc file others can read (it holds a password).
    os.chmod(rc, stat.S_IRUSR | stat.S_IWUSR)
    env = {"HOME": home, "FETCHMAILHOME": home, "LC_ALL": "C",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    # Its own pid file: as root fetchmail's default is one file for the
    # whole machine (/var/run), and a second test run at the same time
    # would be refused ("another foreground fetchmail is running").
    argv = [need("fetchmail"), "-f", rc, "--nodetach", "-v",
            "--pidfile", os.path.join(home, "fetchmail.pid")]
    return argv, env


def fetchmail_setup(demo, name, user_opts, server_opts=""):
    home, out, mda = fetchmail_home(demo, name)
    argv, env = fetchmail_argv(home,
        'poll 127.0.0.1 port %d proto sdps auth password no dns %s\n'
        '  localdomains %s\n'
        '  user "%s" there with password "%s" to * here\n'
        '  mda "/bin/sh %s %s %%T %%F"\n'
        '  sslproto ""\n'
        '  %s\n'
        % (demo.port, server_opts, HOST, HOST, PW2, mda, out, user_opts))
    return argv, env, out


def delivered(out):
    """{Message-ID: [(local user, sender, message bytes)]} from the mda."""
    got = {}
    for path in sorted(glob.glob(os.path.join(out, "*", "m.*"))):
        if path.endswith(".from"):
            continue
        with open(path, "rb") as f:
            data = f.read()
        with open(path + ".from") as f:
            sender = f.read().rstrip("\n")
        user = os.path.basename(os.path.dirname(path))
        mid = None
        for ln in data.split(b"\n"):
            if ln.lower().startswith(b"message-id:"):
                mid = ln.split(b":", 1)[1].strip().decode()
                break
            if ln.strip() == b"":
                break
        got.setdefault(mid, []).append((user, sender, data))
    return got


def first_env_rcpts(demo):
    """Line 4 of *ENV (the first recipient) for each message, in order."""
    with demo.d.login_when_free(HOST, PW1) as p:
        n = p.stat()[0]
        envs = [p.env(i + 1) for i in range(n)]
        p.quit()
    for e, sender in zip(envs, demo.senders):
        assert e[2] == sender, e
    return [e[3] for e in envs]


def body_of(msg):
    msg = msg.replace(b"\r\n", b"\n")
    return msg[msg.index(b"\n\n") + 2:]


def test_fetchmail_sdps_multidrop(demo):
    firsts = first_env_rcpts(demo)
    argv, env, out = fetchmail_setup(demo, "fm-multidrop", "fetchall")
    cp = run(argv, env=env)
    assert cp.returncode == 0, cp.stdout.decode() + cp.stderr.decode()
    log = cp.stdout.decode() + cp.stderr.decode()
    assert "*ENV" in log      # -v shows fetchmail used the SDPS command

    got = delivered(out)
    assert sorted(got) == sorted(msgid(i) for i in range(len(MESSAGES)))
    for i, (sender, users, punt, text) in enumerate(MESSAGES):
        # fetchmail routes by the *ENV envelope, not by the To: header:
        # each message to the local part of its first envelope recipient.
        # (%T is the envelope address, domain kept with "to * here".)
        (rcpt, env_from, data), = got[msgid(i)]
        assert rcpt.split("@")[0] in users
        assert rcpt in (firsts[i], firsts[i].split("@")[0])
        if sender:
            assert env_from == sender
        else:
            assert env_from in ("", "<>", "MAILER-DAEMON")
        assert body_of(data) == body_of(demo.expected[i])
    # No keep: fetchmail deleted what it fetched, and QUIT committed it.
    assert demo.count() == 0


def test_fetchmail_keep_uidl(demo):
    argv, env, out = fetchmail_setup(demo, "fm-keep", "keep", "uidl")
    cp = run(argv, env=env)
    assert cp.returncode == 0, cp.stdout.decode() + cp.stderr.decode()
    assert len(delivered(out)) == len(MESSAGES)
    assert demo.count() == len(MESSAGES)

    # Same UIDLs, nothing new: fetchmail exits 1 (PS_NOMAIL).
    cp = run(argv, env=env)
    assert cp.returncode == 1, cp.stdout.decode() + cp.stderr.decode()
    assert len(delivered(out)) == len(MESSAGES)

    demo.deliver("gina@example.org", ["bob"], "docklands",
                 "Subject: six\nMessage-ID: <m6@example.org>\n\nNew.\n")
    cp = run(argv, env=env)
    assert cp.returncode == 0, cp.stdout.decode() + cp.stderr.decode()
    got = delivered(out)
    assert len(got) == len(MESSAGES) + 1
    assert [u.split("@")[0] for u, _, _ in got["<m6@example.org>"]] == \
        ["bob"]
    assert demo.count() == len(MESSAGES) + 1


# --------------------------------------------------------------- mpop --

def maildir(path):
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    return path


def maildir_msgs(path):
    out = []
    for sub in ("new", "cur"):
        for f in sorted(os.listdir(os.path.join(path, sub))):
            with open(os.path.join(path, sub, f), "rb") as fh:
                out.append(fh.read())
    return out


def test_mpop_pipelining_keep(demo):
    home = os.path.join(demo.tmp, "mpop")
    md = maildir(os.path.join(home, "Maildir"))
    pwfile = os.path.join(home, "pw")
    with open(pwfile, "w") as f:
        f.write(PW2 + "\n")
    os.chmod(pwfile, 0o600)
    argv = [need("mpop"), "--host=127.0.0.1", "--port=%d" % demo.port,
            "--tls=off", "--auth=user", "--user=" + HOST,
            "--passwordeval=cat " + pwfile, "--pipelining=on",
            "--keep=on", "--only-new=on", "--received-header=off",
            "--uidls-file=" + os.path.join(home, "uidls"),
            "--delivery=maildir," + md, "--timeout=60"]
    env = {"HOME": home, "LC_ALL": "C",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    cp = run(argv, env=env)
    assert cp.returncode == 0, cp.stdout.decode() + cp.stderr.decode()
    # mpop stores the message as RETR gave it, with local line ends.
    want = sorted(m.replace(b"\r\n", b"\n") for m in demo.expected)
    assert sorted(maildir_msgs(md)) == want
    assert demo.count() == len(MESSAGES)

    cp = run(argv, env=env)
    assert cp.returncode == 0, cp.stdout.decode() + cp.stderr.decode()
    assert sorted(maildir_msgs(md)) == want        # nothing new

    demo.deliver("", ["alice"], "finchley",
                 "Subject: six\nMessage-ID: <m6@example.org>\n\nNew.\n")
    cp = run(argv, env=env)
    assert cp.returncode == 0, cp.stdout.decode() + cp.stderr.decode()
    assert sorted(maildir_msgs(md)) == sorted(
        want + [demo.expected[-1].replace(b"\r\n", b"\n")])


# ------------------------------------------------------------ getmail --

def unprivileged(argv, path):
    """getmail will not deliver as root: run it as nobody, owning path."""
    if os.geteuid() != 0:
        return argv
    pw = pwd.getpwnam("nobody")
    for root, dirs, files in os.walk(path):
        for n in [root] + [os.path.join(root, x) for x in dirs + files]:
            os.chown(n, pw.pw_uid, pw.pw_gid)
    d = os.path.dirname(path)
    while d not in ("/", ""):
        os.chmod(d, os.stat(d).st_mode | 0o111)
        d = os.path.dirname(d)
    return [need("setpriv"), "--reuid=%d" % pw.pw_uid,
            "--regid=%d" % pw.pw_gid, "--clear-groups"] + argv


def getmail_run(home, rc_text):
    os.makedirs(home, exist_ok=True)
    rc = os.path.join(home, "getmailrc")
    with open(rc, "w") as f:
        f.write(rc_text)
    os.chmod(rc, 0o600)
    env = {"HOME": home, "LC_ALL": "C.UTF-8",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    argv = [need("getmail"), "--getmaildir=" + home, "--rcfile=" + rc]
    return run(unprivileged(argv, home), env=env)


def getmail_ok(cp):
    assert cp.returncode == 0, cp.stdout.decode() + cp.stderr.decode()
    return cp


def norm(data):
    return data.replace(b"\r\n", b"\n")


def header(msg, name):
    """The first header field called name, unfolded, or None."""
    name = name.lower().encode() + b":"
    for ln in norm(msg)[:norm(msg).index(b"\n\n")].split(b"\n"):
        if ln.lower().startswith(name):
            return ln[len(name):].strip()
    return None


def test_getmail_simple_keep(demo):
    home = os.path.join(demo.tmp, "getmail")
    md = maildir(os.path.join(home, "Maildir"))
    rc = ("[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\n"
          "port = %d\nusername = %s\npassword = %s\n\n"
          "[destination]\ntype = Maildir\npath = %s/\n\n"
          "[options]\nverbose = 2\nread_all = false\ndelete = false\n"
          "delivered_to = false\nreceived = false\n"
          % (demo.port, HOST, PW1, md))
    getmail_ok(getmail_run(home, rc))
    got = maildir_msgs(md)
    assert len(got) == len(MESSAGES)
    # getmail re-serialises the message; the Return-Path it writes comes
    # from ours, and each body must be intact.
    by_id = {header(m, "Message-ID").decode(): m for m in got}
    for i, (sender, users, punt, text) in enumerate(MESSAGES):
        m = by_id[msgid(i)]
        assert body_of(norm(m)) == body_of(demo.expected[i])
        assert header(m, "Return-Path") == b"<%s>" % sender.encode()
    assert demo.count() == len(MESSAGES)

    getmail_ok(getmail_run(home, rc))
    assert len(maildir_msgs(md)) == len(MESSAGES)   # nothing new


def test_getmail_sdps_envelope(demo):
    """getmail's MultidropSDPSRetriever takes the envelope from *ENV
    lines 3 and 4 (sender, recipient).  getmail6 6.18 keeps them as
    bytes, so it cannot write a Delivered-To field or sort by recipient
    (a getmail bug); its verbose log still reports the envelope it read,
    and that is what is checked here, with the delivered messages."""
    home = os.path.join(demo.tmp, "getmail-sdps")
    md = maildir(os.path.join(home, "Maildir"))
    rc = ("[retriever]\ntype = MultidropSDPSRetriever\nserver = 127.0.0.1\n"
          "port = %d\nusername = %s\npassword = %s\n\n"
          "[destination]\ntype = Maildir\npath = %s/\n\n"
          "[options]\nverbose = 2\nread_all = true\ndelete = true\n"
          "delivered_to = false\nreceived = false\n"
          % (demo.port, HOST, PW2, md))
    firsts = first_env_rcpts(demo)
    cp = getmail_ok(getmail_run(home, rc))
    envs = re.findall(r"msg (\d+)/\d+ \(\d+ bytes\) from <(?:b')?([^'>]*)'?>"
                      r" to <(?:b')?([^'>]*)'?>", cp.stdout.decode())
    assert [(int(n), f, t) for n, f, t in envs] == \
        [(i + 1, demo.senders[i], firsts[i]) for i in range(len(MESSAGES))]
    got = maildir_msgs(md)
    assert len(got) == len(MESSAGES)
    by_id = {header(m, "Message-ID").decode(): m for m in got}
    for i in range(len(MESSAGES)):
        assert body_of(norm(by_id[msgid(i)])) == body_of(demo.expected[i])
    assert demo.count() == 0        # delete = true, committed at QUIT


# ------------------------------------------------------ pipelining raw --

def test_raw_pipelined_batch(demo):
    """What mpop relies on: a batch of commands in one write is answered
    in order."""
    exp = demo.expected
    with Pop3(port=demo.port) as p:
        p.send_raw("USER %s\r\nPASS %s\r\nSTAT\r\nRETR 2\r\nLIST 1\r\n"
                   "RETR 1\r\nQUIT\r\n" % (HOST, PW1))
        assert p.line().startswith("+OK")
        assert p.line().startswith("+OK")
        assert p.line().split()[1:] == [str(len(exp)),
                                        str(sum(len(m) for m in exp))]
        assert p.line().startswith("+OK")
        assert lines_bytes(p.multi_body()) == exp[1]
        assert p.line().split()[1:] == ["1", str(len(exp[0]))]
        assert p.line().startswith("+OK")
        assert lines_bytes(p.multi_body()) == exp[0]
        assert p.line().startswith("+OK")
        assert p.closed()
