"""Run a real sdpsd for the integration tests, and talk POP3 to it.

Built on harness.py (config, punts, hosts, sdps-ctl, sdps-deliver): a
Daemon owns a harness.Spool, adds the [server] keys a daemon needs (a free
127.0.0.1 port, no privilege drop, few spares, short auth delay), starts
`sdpsd -c CONF -f` with stderr in a log file, and waits until it serves.

    from daemon import Daemon, Pop3, daemon   # `daemon` is a fixture

    def test_x(daemon):
        daemon.add_host("fred.example.net", "pw1", "pw2")
        daemon.deliver_ok(harness.simple_message(), "a@fred.example.net")
        with daemon.login("fred.example.net", "pw1") as p:
            assert p.stat() == (1, daemon.spool_ls()[0]["size"])

Every wait here is a bounded poll for a state change; nothing measures
time to decide pass or fail.
"""

import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import time

import pytest

import harness

HOST = "fred.example.net"
PW1 = "first secret"
PW2 = "second secret with spaces"


class WaitTimeout(AssertionError):
    pass


def wait_for(pred, timeout=20.0, interval=0.02, what="condition"):
    """Poll pred() until it returns a true value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise WaitTimeout("timed out waiting for %s" % what)
        time.sleep(interval)


def free_port(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        return st[st.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return False


def children_of(ppid):
    """Pids whose parent is ppid (live, not zombies), from /proc."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        rest = st[st.rindex(")") + 2:].split()
        if rest[0] != "Z" and int(rest[1]) == ppid:
            out.append(int(d))
    return sorted(out)


def proc_comm(pid):
    """The process name (/proc/PID/comm), or None if it is gone."""
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def parse_kv(line):
    """key=value pairs of a log line as a dict (values without spaces)."""
    return dict(m.groups() for m in re.finditer(r'(\w[\w.-]*)=(\S*)', line))


# ---------------------------------------------------------------- POP3 --

class Pop3Error(AssertionError):
    pass


class Pop3:
    """A tiny raw POP3 client: exact bytes, no hidden state.

    Replies are returned as bytes/str so tests can compare byte-exact.
    """

    def __init__(self, host="127.0.0.1", port=110, timeout=20.0,
                 greeting=True, rcvbuf=None, tls=None):
        if rcvbuf is None:
            self.sock = socket.create_connection((host, port),
                                                 timeout=timeout)
        else:
            # a small receive window, set before connect, so a client
            # that stops reading pushes back on the server quickly
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                 rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect((host, port))
        self.buf = b""
        self.raw = b""          # everything received, for exact checks
        if tls is not None:
            # implicit TLS (port 995): the handshake before the greeting
            self.sock = tls.wrap_socket(self.sock,
                                        server_hostname="localhost")
        self.greeting = self.line() if greeting else None

    @property
    def tls_version(self):
        """"TLSv1.3" etc. once the connection runs TLS, else None."""
        v = getattr(self.sock, "version", None)
        return v() if v is not None else None

    def stls(self, ctx, check_empty=True):
        """RFC 2595 STLS, then the handshake on the same socket.  The
        "+OK" must be the last thing sent in clear (check_empty)."""
        r = self.ok("STLS")
        if check_empty and self.buf:
            raise Pop3Error("cleartext after the STLS answer: %r"
                            % self.buf)
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        return r

    def capa(self):
        """CAPA's lines as str."""
        return [c.decode("latin-1") for c in self.multi_ok("CAPA")]

    # -- I/O --
    def send_raw(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def send(self, line):
        if isinstance(line, str):
            line = line.encode("latin-1")
        self.send_raw(line + b"\r\n")

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by server")
        self.buf += chunk
        self.raw += chunk

    def line_bytes(self):
        """One line as sent, CRLF included."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                ln, self.buf = self.buf[:i + 1], self.buf[i + 1:]
                return ln
            self._fill()

    def line(self):
        """One line as str, without its CRLF."""
        ln = self.line_bytes()
        if not ln.endswith(b"\r\n"):
            raise Pop3Error("line not ended by CRLF: %r" % ln)
        return ln[:-2].decode("latin-1")

    def multi_body(self):
        """After a +OK status line: the body lines, dot-unstuffed, as
        bytes without CRLF (the terminating "." is consumed)."""
        lines = []
        while True:
            ln = self.line_bytes()
            if not ln.endswith(b"\r\n"):
                raise Pop3Error("line not ended by CRLF: %r" % ln)
            ln = ln[:-2]
            if ln == b".":
                return lines
            if ln.startswith(b"."):
                ln = ln[1:]
            lines.append(ln)

    def closed(self, timeout=20.0):
        """True once the server has closed the connection (EOF);
        anything received meanwhile is kept in self.buf."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
                self.raw += chunk
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- commands --
    def cmd(self, line):
        """Send a command, return its single status line."""
        self.send(line)
        return self.line()

    def ok(self, line):
        r = self.cmd(line)
        if not r.startswith("+OK"):
            raise Pop3Error("%s: expected +OK, got %r" % (line, r))
        return r

    def err(self, line):
        r = self.cmd(line)
        if not r.startswith("-ERR"):
            raise Pop3Error("%s: expected -ERR, got %r" % (line, r))
        return r

    def multi(self, line):
        """Send a multi-line command: (status line, body lines or None)."""
        r = self.cmd(line)
        if r.startswith("+OK"):
            return r, self.multi_body()
        return r, None

    def multi_ok(self, line):
        r, body = self.multi(line)
        if body is None:
            raise Pop3Error("%s: expected +OK, got %r" % (line, r))
        return body

    def user_pass(self, user, pw):
        self.ok("USER " + user)
        return self.cmd("PASS " + pw)

    def login(self, user, pw):
        self.ok("USER " + user)
        return self.ok("PASS " + pw)

    def stat(self):
        r = self.ok("STAT").split()
        return int(r[1]), int(r[2])

    def list(self):
        """{msn: size} from LIST."""
        return {int(a): int(b) for a, b in
                (ln.split() for ln in self.multi_ok("LIST"))}

    def uidl(self):
        """{msn: uid} from UIDL."""
        out = {}
        for ln in self.multi_ok("UIDL"):
            a, b = ln.decode("latin-1").split(" ", 1)
            out[int(a)] = b
        return out

    def retr(self, n):
        """The message as the client sees it: unstuffed, CRLF lines."""
        return b"".join(ln + b"\r\n" for ln in self.multi_ok("RETR %s" % n))

    def top(self, n, lines):
        return b"".join(ln + b"\r\n"
                        for ln in self.multi_ok("TOP %s %s" % (n, lines)))

    def env(self, n):
        """*ENV n body lines as str."""
        return [ln.decode("latin-1") for ln in self.multi_ok("*ENV %s" % n)]

    def quit(self):
        r = self.cmd("QUIT")
        return r


# -------------------------------------------------------------- daemon --

DEFAULT_SERVER = {
    "user": "",
    "min_spare": 2,
    "max_spare": 4,
    "max_workers": 16,
    "auth_fail_delay_ms": 50,
}


def tls_client_context(ca, maximum_version=None):
    """A client SSLContext that trusts only the test CA (tlsutil)."""
    ctx = ssl.create_default_context(cafile=ca)
    if maximum_version is not None:
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = maximum_version
    return ctx


class Daemon:
    """A harness.Spool plus a running sdpsd on it.

    host: the address every listener binds and the clients connect to
    (127.0.0.1; a test in its own network namespace passes another)."""

    def __init__(self, npunts=2, server=None, overrides=None,
                 punt_paths=None, hosts=((HOST, PW1, PW2),), start=True,
                 env=None, tls=False, host="127.0.0.1"):
        self.host = host
        self.port = free_port(host)
        # extra environment for sdpsd (e.g. SDPS_FAULT), inherited by
        # its workers
        self.env = dict(env or {})
        self.server = dict(DEFAULT_SERVER)
        self.server["listen"] = "%s:%d" % (host, self.port)
        # tls=True (issue 10): two more listeners, STLS on stls_port and
        # implicit TLS on tls_port, with tlsutil's certificate; clients
        # verify against self.certs.ca.
        self.stls_port = self.tls_port = None
        self.certs = None
        if tls:
            import tlsutil
            self.certs = tlsutil.test_certs()
            self.stls_port = free_port(host)
            self.tls_port = free_port(host)
            self.server["listen"] = [
                "%s:%d" % (host, self.port),
                "%s:%d tls=starttls" % (host, self.stls_port),
                "%s:%d tls=implicit" % (host, self.tls_port)]
            overrides = dict(overrides or {})
            tlssec = {"cert": self.certs.cert, "key": self.certs.key}
            tlssec.update(overrides.get("tls", {}))
            overrides["tls"] = tlssec
        self.server.update(server or {})
        self.extra = dict(overrides or {})
        self.spool = harness.Spool(npunts=npunts,
                                   overrides=self._overrides(),
                                   punt_paths=punt_paths)
        self.root = self.spool.root
        self.conf = self.spool.conf
        self.run_dir = os.path.join(self.root, "run")
        self.pidfile = os.path.join(self.run_dir, "sdpsd.pid")
        self.logpath = os.path.join(self.root, "sdpsd.log")
        self.proc = None
        self._log = None
        for h in hosts or ():
            self.add_host(*h)
        if start:
            self.start()

    def _overrides(self):
        ov = {k: dict(v) for k, v in self.extra.items()}
        ov.setdefault("server", {}).update(self.server)
        for k, v in list(ov["server"].items()):
            if v is None:
                ov["server"][k] = None
        return ov

    def rewrite_config(self, server=None, overrides=None, raw=None):
        """Write a new config (for SIGHUP).  raw: write this text instead."""
        if raw is not None:
            with open(self.conf, "w") as f:
                f.write(raw)
            return
        self.server.update(server or {})
        for sec, keys in (overrides or {}).items():
            self.extra.setdefault(sec, {}).update(keys)
        self.spool.rewrite_config(self._overrides(),
                                  punt_paths=self.spool.punt_paths)

    # -- spool pass-throughs --
    def __getattr__(self, name):
        # ctl, ctl_ok, ctl_json, add_host, deliver, deliver_ok, spool_ls...
        if name in ("spool",):
            raise AttributeError(name)
        return getattr(self.spool, name)

    # -- process --
    def start(self, timeout=30.0):
        try:
            os.unlink(self.pidfile)
        except FileNotFoundError:
            pass
        self._log = open(self.logpath, "ab")
        self.proc = subprocess.Popen(
            [harness.binary("sdpsd"), "-c", self.conf, "-f"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            env=dict(os.environ, **self.env) if self.env else None)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=30.0):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("sdpsd exited with %s; log:\n%s"
                                     % (self.proc.returncode, self.log()))
            if not os.path.exists(self.pidfile):
                return False
            try:
                with Pop3(self.host, self.port, timeout=5) as p:
                    ok = p.greeting.startswith("+OK")
                    p.send("QUIT")
                    return ok
            except (OSError, EOFError, Pop3Error):
                return False
        wait_for(ready, timeout, 0.05, "sdpsd to serve on port %d"
                 % self.port)

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def workers(self):
        """Pids of the master's live children but the TLS key reader
        (issue 10: a root helper named sdpsd-keys, not a worker)."""
        return [p for p in children_of(self.proc.pid)
                if proc_comm(p) != "sdpsd-keys"]

    def worker_for(self, pop3, timeout=20.0, port=None):
        """Pid of the worker serving the connection pop3 (a Pop3 or a
        socket; its server-side socket, found through /proc/net/tcp and
        the workers' fds) on port (default: the plain POP3 port)."""
        cport = getattr(pop3, "sock", pop3).getsockname()[1]
        port = port or self.port

        def find():
            inode = None
            with open("/proc/net/tcp") as f:
                next(f)
                for ln in f:
                    fl = ln.split()
                    lport = int(fl[1].split(":")[1], 16)
                    rport = int(fl[2].split(":")[1], 16)
                    if lport == port and rport == cport:
                        inode = fl[9]
            if inode is None or inode == "0":
                return None
            want = "socket:[%s]" % inode
            for pid in self.workers():
                fddir = "/proc/%d/fd" % pid
                try:
                    fds = os.listdir(fddir)
                except OSError:
                    continue
                for fd in fds:
                    try:
                        if os.readlink(os.path.join(fddir, fd)) == want:
                            return pid
                    except OSError:
                        pass
            return None
        return wait_for(find, timeout, what="worker of port %d" % cport)

    def wait_workers(self, n=1, timeout=20.0):
        return wait_for(lambda: len(self.workers()) >= n and self.workers(),
                        timeout, what="%d workers" % n)

    def wait_exit(self, timeout=30.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise WaitTimeout("sdpsd did not exit within %ss" % timeout)

    def stop(self, timeout=30.0):
        """SIGTERM the master and wait; kill leftovers.  Exit status."""
        if self.proc is None:
            return None
        kids = self.workers()
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
        for k in kids:
            if pid_alive(k):
                with contextlib.suppress(OSError):
                    os.kill(k, signal.SIGKILL)
        if self._log:
            self._log.close()
            self._log = None
        return rc

    def cleanup(self):
        self.stop()
        self.spool.cleanup()

    # -- log --
    def log(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_lines(self, pattern=None):
        lines = self.log().splitlines()
        if pattern is None:
            return lines
        rx = re.compile(pattern)
        return [ln for ln in lines if rx.search(ln)]

    def wait_log(self, pattern, count=1, timeout=20.0):
        """Wait until pattern (a regex) matches count log lines."""
        return wait_for(lambda: len(self.log_lines(pattern)) >= count
                        and self.log_lines(pattern), timeout,
                        what="log /%s/ x%d" % (pattern, count))

    def session_events(self, event=None):
        """key=value dicts of the session log lines (those with sid=)."""
        out = []
        for ln in self.log_lines(r"\bsid="):
            kv = parse_kv(ln)
            if event is None or kv.get("event") == event:
                out.append(kv)
        return out

    # -- POP3 --
    def connect(self, **kw):
        p = Pop3(self.host, kw.pop("port", self.port), **kw)
        assert p.greeting.startswith("+OK"), p.greeting
        return p

    # -- TLS (issue 10; Daemon(tls=True)) --
    def client_context(self, **kw):
        return tls_client_context(self.certs.ca, **kw)

    def connect_tls(self, ctx=None, **kw):
        """Implicit TLS on tls_port: the greeting comes over TLS."""
        return self.connect(port=self.tls_port,
                            tls=ctx or self.client_context(), **kw)

    def connect_stls(self, ctx=None, **kw):
        """The STLS port, upgraded with STLS before anything else."""
        p = self.connect(port=self.stls_port, **kw)
        p.stls(ctx or self.client_context())
        return p

    def login(self, user=HOST, pw=PW1):
        p = self.connect()
        p.login(user, pw)
        return p

    def login_when_free(self, user=HOST, pw=PW1, timeout=20.0):
        """Log in, retrying while the maildrop is still locked by a
        session that is ending (the server notices a drop a little
        later than the client makes it)."""
        def attempt():
            p = self.connect()
            p.ok("USER " + user)
            r = p.cmd("PASS " + pw)
            if r.startswith("+OK"):
                return p
            p.close()
            if "[IN-USE]" not in r:
                raise Pop3Error("PASS: %r" % r)
            return None
        return wait_for(attempt, timeout, 0.05, "maildrop %s free" % user)

    # -- sdps-ctl about the daemon --
    def sessions(self):
        """sdps-ctl sessions --json as a list of dicts."""
        j = self.spool.ctl_json("sessions")
        if isinstance(j, dict):
            j = j.get("sessions", [])
        return j

    def status(self):
        return self.spool.ctl_json("status")

    def wait_sessions(self, pred, timeout=20.0, what="sessions"):
        return wait_for(lambda: pred(self.sessions()), timeout, what=what)

    def messages(self, host=None, punt=None):
        """sdps-ctl spool ls --json: the list of message dicts (punt, id,
        uidl, host, octets, stored_octets, flags, agent, sender, rcpts)."""
        return self.spool.spool_ls(host=host, punt=punt)["messages"]

    def by_uidl(self):
        """{uidl: message dict} from sdps-ctl spool ls --json."""
        return {m["uidl"]: m for m in self.messages()}

    def ref(self, uidl):
        """"PUNT:ID" of the message with this UIDL, for sdps-ctl smtp."""
        m = self.by_uidl()[uidl]
        return "%s:%d" % (m["punt"], m["id"])


def _finish(request, d):
    """Stop d; then, if the test module sets FSCK_AFTER = True, require
    `sdps-ctl fsck` to find the punts consistent (the tools are
    the checkers after each scenario)."""
    try:
        d.stop()
        if getattr(request.module, "FSCK_AFTER", False):
            r = d.fsck()
            assert r.rc == 0, "fsck after the test: %r" % (r,)
    finally:
        d.spool.cleanup()


@pytest.fixture
def daemon(request):
    d = Daemon()
    yield d
    _finish(request, d)


@pytest.fixture
def daemon1(request):
    d = Daemon(npunts=1)
    yield d
    _finish(request, d)


@pytest.fixture
def tls_daemon(request):
    """Daemon(tls=True) with the default cleartext policy (loopback
    trusted, which these clients are)."""
    d = Daemon(tls=True)
    yield d
    _finish(request, d)


@pytest.fixture
def tls_strict(request):
    """Daemon(tls=True) with allow_cleartext = no: a password only over
    TLS, loopback included."""
    d = Daemon(tls=True, server={"allow_cleartext": "no"})
    yield d
    _finish(request, d)


def finish_fsck(d):
    """Stop d, require `sdps-ctl fsck` to find the punts consistent, and
    remove the spool (for daemons a test makes itself)."""
    try:
        d.stop()
        r = d.fsck()
        assert r.rc == 0, "fsck after the test: %r" % (r,)
    finally:
        d.spool.cleanup()


def msg_bytes(text):
    """What a client sees of a stored message body: CRLF lines."""
    if isinstance(text, str):
        text = text.encode()
    text = text.replace(b"\r\n", b"\n")
    if not text.endswith(b"\n"):
        text += b"\n"
    return text.replace(b"\n", b"\r\n")
