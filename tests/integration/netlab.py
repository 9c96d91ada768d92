"""The test lab of issue 11: simulated machines in network namespaces.

A Lab makes namespaces joined by veth pairs to a switch (a Linux bridge
in a namespace of its own), runs processes in them, and breaks links on
purpose.  Everything it makes it removes in close(), which the fixture
calls as a finalizer, so also when a test fails; a run that crashed
before close() is cleaned by the next Lab (clean_leftovers).

    lab = Lab()
    lab.add_machine("pa", ["10.211.0.11"])
    lab.add_machine("cl", ["10.211.0.101", "10.211.0.102"], wire=True)
    p = lab.popen("pa", ["sleep", "10"])         # runs inside "pa"
    with lab.enter("cl"):                       # this thread is in "cl"
        s = socket.create_connection(("10.211.0.11", 110))
    lab.link_down("pa"); lab.link_up("pa")       # ip link set eth0 down
    lab.partition("pa"); lab.heal("pa")          # silent: nftables drop
    lab.set_wire("cl", 200, 5)                   # 200 ms each way, 5 % loss
    lab.close()

Names.  Every namespace is PREFIX + pid + "x" + n + "-" + role (unique per
Lab of a run); a leftover whose pid is no longer alive is removed.  Only
addresses of 10.211.0.0/16 are used, and only inside the lab's
namespaces: nothing is routed to or from the machine's own network.

Delay and loss.  This kernel has no sch_netem, so a machine made with
wire=True is linked through a middle "wire" namespace where
tools/wire-relay.py forwards the frames, delayed and dropped as set.
Where `tc qdisc ... netem` works (netem_available()), set_wire uses it
instead, on both ends of the link, and no wire namespace is made.
tools/wire-relay.py says how the relay works and why the devices that
feed it have their offloads turned off.
"""

import contextlib
import ctypes
import itertools
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

PREFIX = "sdpslab"
NET = "10.211"
MASK = 16
HERE = os.path.dirname(os.path.abspath(__file__))
RELAY = os.path.abspath(os.path.join(HERE, "..", "..", "tools",
                                     "wire-relay.py"))
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count(1)


def unavailable():
    """Why the lab cannot run here (a skip reason), or None."""
    if os.geteuid() != 0:
        return "the network lab needs root (network namespaces, veth)"
    for tool in ("ip", "nft"):
        if subprocess.run(["which", tool], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode != 0:
            return "%s is not installed (iproute2, nftables)" % tool
    name = "%s%dprobe" % (PREFIX, os.getpid())
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True)
    if r.returncode != 0:
        return "cannot make a network namespace: %s" % r.stderr.decode(
            errors="replace").strip()
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _ip(*args, check=True):
    r = subprocess.run(["ip"] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(args),
                                          r.stderr.decode(errors="replace")))
    return r


def _netns_names():
    out = _ip("netns", "list", check=False).stdout.decode()
    return [ln.split()[0] for ln in out.splitlines() if ln.strip()]


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def ns_pids(ns):
    r = _ip("netns", "pids", ns, check=False)
    return [int(x) for x in r.stdout.split()]


def _kill_ns_processes(ns, timeout=10.0):
    """SIGKILL everything running in ns; wait (bounded) until it is gone."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in ns_pids(ns) if p != os.getpid()]
        if not pids:
            return
        for p in pids:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _remove_ns(ns):
    _kill_ns_processes(ns)
    _ip("netns", "del", ns, check=False)


def clean_leftovers():
    """Remove the namespaces of earlier runs that died before close()."""
    rx = re.compile(r"^%s(\d+)(x\d+-|probe$)" % PREFIX)
    for ns in _netns_names():
        m = rx.match(ns)
        if m and not _pid_alive(int(m.group(1))):
            _remove_ns(ns)


def _setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "setns %s: %s" % (path, os.strerror(e)))
    finally:
        os.close(fd)


@contextlib.contextmanager
def in_netns(ns):
    """Run the body with this thread in network namespace ns.  Sockets
    made inside stay in ns after the body ends (setns is per thread)."""
    orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns("/run/netns/" + ns)
        try:
            yield
        finally:
            if _libc.setns(orig, CLONE_NEWNET) != 0:
                # a thread left in a lab namespace would poison the run
                os._exit(99)
    finally:
        os.close(orig)


def enter_for_good(ns):
    """Move this thread into ns for the rest of its life (load threads)."""
    _setns("/run/netns/" + ns)


class Relay:
    """tools/wire-relay.py running in a wire namespace."""

    def __init__(self, lab, wns, seed):
        self.proc = lab.popen_ns(wns, [sys.executable, RELAY, "relay",
                                       "wa", "wb", "--seed", str(seed)],
                                 stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE)
        if self._reply() != "ready":
            raise RuntimeError("wire relay did not start")

    def _reply(self, timeout=10.0):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            raise RuntimeError("wire relay does not answer")
        return self.proc.stdout.readline().decode().strip()

    def command(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        return self._reply()

    def set(self, delay_ms, loss_pct):
        r = self.command("set %s %s" % (delay_ms, loss_pct))
        if not r.startswith("ok"):
            raise RuntimeError("wire relay: %s" % r)

    def stats(self):
        w = self.command("stats").split()
        keys = ("a2b_in", "a2b_drop", "b2a_in", "b2a_drop", "sent", "err")
        return dict(zip(keys, (int(x) for x in w[1:])))

    def stop(self):
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Lab:
    def __init__(self):
        clean_leftovers()
        self.tag = "%s%dx%d" % (PREFIX, os.getpid(), next(_counter))
        self.ns = {}            # role -> namespace name
        self.addrs = {}         # role -> [addresses]
        self.relays = {}        # role -> Relay
        self.procs = []
        self.netem = None
        self.closed = False
        try:
            self._add_ns("sw")
            self.run("sw", ["ip", "link", "add", "br0", "type", "bridge"])
            self.run("sw", ["ip", "link", "set", "br0", "up"])
        except Exception:
            self.close()
            raise

    # -- building --
    def _add_ns(self, role):
        name = "%s-%s" % (self.tag, role)
        _ip("netns", "add", name)
        self.ns[role] = name
        self.run(role, ["ip", "link", "set", "lo", "up"])
        # IPv6 off: no router solicitations or DAD chatter on the wires
        self.run(role, ["sysctl", "-q", "-w",
                        "net.ipv6.conf.all.disable_ipv6=1"])
        self.run(role, ["sysctl", "-q", "-w",
                        "net.ipv6.conf.default.disable_ipv6=1"])
        return name

    def add_machine(self, role, addrs, wire=False):
        """A namespace with eth0 holding addrs (/16), linked to the switch;
        wire=True: through a wire namespace (set_wire delays it)."""
        assert len(role) <= 10 and role not in self.ns, role
        for a in addrs:
            assert a.startswith(NET + "."), a   # only the lab's range
        self._add_ns(role)
        port = "s-" + role
        if wire and self.netem is None:
            self.netem = netem_available(self, role)
        if wire and not self.netem:
            wrole = "w-" + role
            self._add_ns(wrole)
            _ip("-n", self.ns[role], "link", "add", "eth0", "type", "veth",
                "peer", "name", "wa", "netns", self.ns[wrole])
            _ip("-n", self.ns[wrole], "link", "add", "wb", "type", "veth",
                "peer", "name", port, "netns", self.ns["sw"])
            for dev in ("wa", "wb"):
                self.run(wrole, ["ip", "link", "set", dev, "up"])
            # the devices that transmit into the wire hand it finished
            # frames (tools/wire-relay.py, offload-off)
            self.run(role, [sys.executable, RELAY, "offload-off", "eth0"])
            self.run("sw", [sys.executable, RELAY, "offload-off", port])
            self.run(wrole, [sys.executable, RELAY, "offload-off",
                             "wa", "wb"])
            self.relays[role] = Relay(self, self.ns[wrole],
                                      seed=len(self.relays) + 1)
        else:
            _ip("-n", self.ns[role], "link", "add", "eth0", "type", "veth",
                "peer", "name", port, "netns", self.ns["sw"])
        self.run("sw", ["ip", "link", "set", port, "master", "br0"])
        self.run("sw", ["ip", "link", "set", port, "up"])
        for a in addrs:
            self.run(role, ["ip", "addr", "add", "%s/%d" % (a, MASK),
                            "dev", "eth0"])
        self.run(role, ["ip", "link", "set", "eth0", "up"])
        self.addrs[role] = list(addrs)
        return self.ns[role]

    # -- processes --
    def argv(self, role, argv):
        return ["ip", "netns", "exec", self.ns[role]] + list(argv)

    def popen_ns(self, ns, argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(["ip", "netns", "exec", ns] + list(argv), **kw)
        self.procs.append(p)
        return p

    def popen(self, role, argv, **kw):
        """A process in role's namespace (ip netns exec execs it, so the
        Popen's pid is the program's own)."""
        return self.popen_ns(self.ns[role], argv, **kw)

    def run(self, role, argv, check=True, timeout=60, **kw):
        r = subprocess.run(self.argv(role, argv), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout, **kw)
        if check and r.returncode != 0:
            raise RuntimeError("in %s: %s: %s" % (
                role, " ".join(argv), r.stderr.decode(errors="replace")))
        return r

    def enter(self, role):
        return in_netns(self.ns[role])

    def pids(self, role):
        return ns_pids(self.ns[role])

    # -- faults --
    def link_down(self, role):
        self.run(role, ["ip", "link", "set", "eth0", "down"])

    def link_up(self, role):
        self.run(role, ["ip", "link", "set", "eth0", "up"])

    def partition(self, role, peers=None):
        """Silently drop role's packets (to and from peers, a list of
        addresses, or everything but loopback): the peers see no answer,
        not a refusal."""
        if peers:
            match_in = "ip saddr { %s }" % ", ".join(peers)
            match_out = "ip daddr { %s }" % ", ".join(peers)
        else:
            match_in = 'iifname != "lo"'
            match_out = 'oifname != "lo"'
        rules = ("table inet sdpslab {\n"
                 " chain in { type filter hook input priority 0; "
                 "policy accept; %s drop; }\n"
                 " chain out { type filter hook output priority 0; "
                 "policy accept; %s drop; }\n}\n" % (match_in, match_out))
        self.run(role, ["nft", "-f", "-"], input=rules.encode())

    def heal(self, role):
        self.run(role, ["nft", "delete", "table", "inet", "sdpslab"],
                 check=False)

    def set_wire(self, role, delay_ms, loss_pct=0):
        """Each frame crossing role's link delayed by delay_ms, lost with
        probability loss_pct %, in both directions (0, 0: a plain wire)."""
        if role in self.relays:
            self.relays[role].set(delay_ms, loss_pct)
            return
        if not self.netem:
            raise RuntimeError("%s was not made with wire=True" % role)
        for r, dev in ((role, "eth0"), ("sw", "s-" + role)):
            if delay_ms == 0 and loss_pct == 0:
                self.run(r, ["tc", "qdisc", "del", "dev", dev, "root"],
                         check=False)
            else:
                self.run(r, ["tc", "qdisc", "replace", "dev", dev, "root",
                             "netem", "delay", "%dms" % delay_ms,
                             "loss", "%s%%" % loss_pct])

    def wire_stats(self, role):
        return self.relays[role].stats() if role in self.relays else None

    # -- cleanup --
    def close(self):
        if self.closed:
            return
        self.closed = True
        for r in self.relays.values():
            with contextlib.suppress(Exception):
                r.stop()
        for role, ns in list(self.ns.items()):
            _kill_ns_processes(ns)
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(OSError):
                    p.kill()
            with contextlib.suppress(Exception):
                p.wait(5)
        # the switch last: deleting a namespace deletes its veth ends
        for role in sorted(self.ns, key=lambda r: r == "sw"):
            _ip("netns", "del", self.ns[role], check=False)
        self.ns = {}


def netem_available(lab, role):
    """True when `tc qdisc ... netem` works (not on this kernel: no
    CONFIG_NET_SCH_NETEM)."""
    r = lab.run(role, ["tc", "qdisc", "add", "dev", "lo", "root", "netem",
                       "delay", "1ms"], check=False)
    if r.returncode != 0:
        return False
    lab.run(role, ["tc", "qdisc", "del", "dev", "lo", "root"], check=False)
    return True


def tcp_connect(lab, role, addr, port, timeout=5.0, source=None):
    """A TCP socket from role's namespace to addr:port."""
    with lab.enter(role):
        return socket.create_connection(
            (addr, port), timeout,
            source_address=(source, 0) if source else None)


# ------------------------------------------------------------ daemons --

sys.path.insert(0, HERE)
import harness  # noqa: E402
import daemon as D  # noqa: E402

# [server] keys every lab sdpsd gets: no privilege drop, a small pool,
# cleartext logins from the lab's addresses (they are not loopback), and
# no per-address cap (the load comes from a few client addresses).
LAB_SERVER = {
    "user": "",
    "min_spare": 2,
    "max_spare": 4,
    "max_workers": 16,
    "auth_fail_delay_ms": 50,
    "allow_cleartext": "yes",
    "max_conn_per_ip": 0,
}


class NsSdpsd:
    """A real sdpsd in a lab machine, with its own config dir.

    sections: [(name, {key: value})] as harness.render_config takes
    them; [server] gets run_dir and LAB_SERVER under the caller's keys.
    ready: a callable (this object) -> bool, polled after start; the
    default connects to pop3 = (addr, port) from inside the machine."""

    def __init__(self, lab, role, root, sections, pop3=None, ready=None,
                 env=None):
        self.lab, self.role, self.root = lab, role, root
        os.makedirs(os.path.join(root, "run"), exist_ok=True)
        self.run_dir = os.path.join(root, "run")
        self.pidfile = os.path.join(self.run_dir, "sdpsd.pid")
        self.logpath = os.path.join(root, "sdpsd.log")
        self.conf = os.path.join(root, "sdps.conf")
        self.pop3 = pop3
        self.ready = ready
        self.env = dict(env or {})
        self.proc = None
        self._log = None
        self.log_mark = 0
        secs = []
        for name, keys in sections:
            keys = dict(keys)
            if name == "server":
                merged = dict(LAB_SERVER)
                merged["run_dir"] = self.run_dir
                merged.update(keys)
                keys = merged
            secs.append((name, keys))
        with open(self.conf, "w") as f:
            f.write(harness.render_config(secs))

    # -- tools, run inside the machine (a remote punt is reached there) --
    def ctl(self, *args, stdin=b"", timeout=120):
        return harness.run(self.lab.argv(self.role, [
            harness.binary("sdps-ctl"), "-c", self.conf] + list(args)),
            stdin=stdin, timeout=timeout)

    def ctl_ok(self, *args, stdin=b""):
        r = self.ctl(*args, stdin=stdin)
        assert r.rc == 0, "sdps-ctl %s on %s: %r" % (" ".join(args),
                                                    self.role, r)
        return r

    def ctl_json(self, *args):
        return self.ctl_ok(*(list(args) + ["--json"])).json()

    def add_host(self, host, pw1, pw2=None):
        data = pw1 + "\n" + (pw2 + "\n" if pw2 is not None else "")
        return self.ctl_ok("host", "add", host, stdin=data)

    # -- process --
    def start(self, timeout=30.0):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.pidfile)
        self._log = open(self.logpath, "ab")
        # where this run's lines begin (log_since_start)
        self.log_mark = self._log.seek(0, os.SEEK_END)
        self.proc = self.lab.popen(
            self.role, [harness.binary("sdpsd"), "-c", self.conf, "-f"],
            stdout=self._log, stderr=self._log,
            env=dict(os.environ, **self.env))
        D.wait_for(self._ready, timeout, 0.05,
                   "sdpsd on %s to serve" % self.role)
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("sdpsd on %s exited with %s; log:\n%s" % (
                self.role, self.proc.returncode, self.log()[-4000:]))
        if not os.path.exists(self.pidfile):
            return False
        if self.ready is not None:
            return self.ready(self)
        if self.pop3 is None:
            return True
        try:
            with self.lab.enter(self.role):
                p = D.Pop3(self.pop3[0], self.pop3[1], timeout=5)
            with p:
                ok = p.greeting.startswith("+OK")
                p.send("QUIT")
                return ok
        except (OSError, EOFError, D.Pop3Error):
            return False

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def processes(self):
        """The master and its live children (workers, key reader)."""
        if not self.running():
            return []
        return [self.proc.pid] + D.children_of(self.proc.pid)

    def kill(self):
        """SIGKILL the master and every child at once: the machine's
        daemon dies, as in a crash (the kernel closes its sockets)."""
        pids = self.processes()
        for p in pids:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)
        D.wait_for(lambda: not any(D.pid_alive(p) for p in pids), 10,
                   what="the killed sdpsd's processes to go")
        self._close_log()

    def freeze(self):
        for p in self.processes():
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGSTOP)

    def stop(self, timeout=30.0):
        if self.proc is None:
            return None
        kids = D.children_of(self.proc.pid) if self.running() else []
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
        for k in kids:
            with contextlib.suppress(OSError):
                os.kill(k, signal.SIGKILL)
        self._close_log()
        return rc

    def _close_log(self):
        if self._log:
            self._log.close()
            self._log = None

    def log(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_since_start(self):
        """The log lines of the daemon started last (a killed one's
        locks died with it, unlogged)."""
        try:
            with open(self.logpath, "rb") as f:
                f.seek(getattr(self, "log_mark", 0))
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_lines(self, pattern):
        rx = re.compile(pattern)
        return [ln for ln in self.log().splitlines() if rx.search(ln)]


# ------------------------------------------------------------ Postfix --

POSTFIX_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
syslog_name = postfix-sdps-lab
myhostname = mx.sdps-lab.example
mydomain = sdps-lab.example
myorigin = $myhostname
mydestination =
inet_interfaces = {addr}
inet_protocols = ipv4
mynetworks = {net}.0.0/{mask}
relay_domains = {domains}
transport_maps = inline:{{ {routes} }}
smtpd_relay_restrictions = permit_mynetworks, reject
smtputf8_enable = no
biff = no
append_dot_mydomain = no
alias_maps =
alias_database =
local_recipient_maps =
smtp_dns_support_level = disabled
lmtp_host_lookup = native
lmtp_connect_timeout = 5s
# a front end that dies silently in the middle of a transaction must not
# hold a message for Postfix's default 10 minutes
lmtp_lhlo_timeout = 15s
lmtp_mail_timeout = 15s
lmtp_rcpt_timeout = 15s
lmtp_data_init_timeout = 15s
lmtp_data_xfer_timeout = 15s
lmtp_data_done_timeout = 15s
lmtp_rset_timeout = 15s
lmtp_quit_timeout = 15s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
default_destination_concurrency_limit = 8
"""


def postfix_unavailable():
    if subprocess.run(["which", "postfix"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode != 0:
        return "Postfix is not installed (apt-get install postfix)"
    return None


class NsPostfix:
    """A private Postfix instance in a lab machine: its own config and
    queue under root, smtpd on addr:25, relaying each domain of routes
    ({domain: "lmtp:inet:[ADDR]:PORT"}) to its LMTP next hop."""

    def __init__(self, lab, role, root, addr, routes):
        import shutil
        self.lab, self.role, self.root, self.addr = lab, role, root, addr
        os.makedirs(root, exist_ok=True)
        # Postfix's daemons run as the postfix user and must reach the
        # queue; its master wants the queue root-owned, data its own
        os.chmod(root, 0o755)
        self.conf = os.path.join(root, "etc")
        for d in ("etc", "queue", "data"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        shutil.chown(os.path.join(root, "data"), "postfix")
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(POSTFIX_MAIN_CF.format(
                root=root, addr=addr, net=NET, mask=MASK,
                domains=" ".join(sorted(routes)),
                routes=", ".join("%s=%s" % kv for kv in
                                 sorted(routes.items()))))
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(harness.POSTFIX_MASTER_CF.format(
                smtpd_addr="%s:25" % addr))

    def postfix(self, *args, timeout=60):
        return self.lab.run(self.role, ["postfix", "-c", self.conf] +
                            list(args), check=False, timeout=timeout)

    def start(self):
        r = self.postfix("start")
        if r.returncode != 0:
            raise AssertionError("postfix start on %s failed: %s %s" % (
                self.role, r.stdout.decode(errors="replace"), self.log()))
        D.wait_for(self.smtpd_up, 30, 0.1, "postfix smtpd on " + self.role)

    def smtpd_up(self):
        try:
            with tcp_connect(self.lab, self.role, self.addr, 25, 2) as s:
                return s.recv(100).startswith(b"220")
        except OSError:
            return False

    def flush(self):
        self.postfix("flush")

    def log(self):
        try:
            with open(os.path.join(self.root, "maillog")) as f:
                return f.read()
        except OSError:
            return ""

    def acked(self):
        """Message-IDs whose LMTP delivery the next hop acknowledged
        (status=sent), from the maillog: the "acknowledged by LMTP" set
        of the invariants."""
        mid, sent = {}, set()
        rx_mid = re.compile(r"\]: ([0-9A-F]+): message-id=<([^>]*)>")
        rx_sent = re.compile(r"/lmtp\[\d+\]: ([0-9A-F]+): .*status=sent")
        for ln in self.log().splitlines():
            m = rx_mid.search(ln)
            if m:
                mid[m.group(1)] = m.group(2)
                continue
            m = rx_sent.search(ln)
            if m:
                sent.add(m.group(1))
        return {mid[q] for q in sent if q in mid}

    def queue_empty(self):
        r = self.lab.run(self.role, ["postqueue", "-c", self.conf, "-j"],
                         check=False)
        return r.returncode == 0 and not r.stdout.strip()

    def stop(self):
        self.postfix("stop")
