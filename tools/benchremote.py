"""benchremote: the remote side of tools/bench-compare (issue 11).

Two punt servers, each a real sdpsd with a punt_listen line in its own
network namespace, joined to the root namespace by a veth pair, serve the
two punt directories the local sdps side already filled; a front end in
the root namespace has both as remote [punt NAME] sections and serves the
same hosts from the same auth store.  So "sdps-remote" and "sdps" answer
the same corpus, and every run of a scenario measures both in turn.

The namespaces, links and addresses (10.213.N.0/30, inside the
namespaces only) are made at start and always removed at stop.
"""
import os
import signal
import subprocess
import time

NS_PREFIX = "sdpsbench"
NET = "10.213.%d.%d"
PUNT_PORT = 7110


def _run(*cmd, check=True):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(cmd), r.stderr.strip()))
    return r


def _openssl(*args):
    _run("openssl", *args)


def make_pki(d, server_ips, client="fe1.bench"):
    """A private CA, one server certificate per IP (SAN IP) and one
    client certificate: {"ca", "srv": [(cert, key)], "cli": (cert, key)}."""
    os.makedirs(d, exist_ok=True)
    ca, ca_key = os.path.join(d, "ca.pem"), os.path.join(d, "ca.key")
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-out", ca_key)
    _openssl("req", "-x509", "-new", "-key", ca_key, "-out", ca, "-days",
             "30", "-subj", "/CN=sdps bench punt CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def leaf(name, san, usage):
        key = os.path.join(d, name + ".key")
        csr = os.path.join(d, name + ".csr")
        crt = os.path.join(d, name + ".pem")
        ext = os.path.join(d, name + ".ext")
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt",
                 "ec_paramgen_curve:P-256", "-out", key)
        _openssl("req", "-new", "-key", key, "-out", csr, "-subj",
                 "/CN=" + name)
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                    "keyUsage=digitalSignature\nextendedKeyUsage=%s\n"
                    % (san, usage))
        _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
                 "-CAcreateserial", "-out", crt, "-days", "30",
                 "-extfile", ext)
        os.chmod(key, 0o600)
        return crt, key

    srv = [leaf("punt%d" % i, "IP:" + ip, "serverAuth")
           for i, ip in enumerate(server_ips)]
    cli = leaf(client, "DNS:" + client, "clientAuth")
    return {"ca": ca, "srv": srv, "cli": cli, "client_name": client}


PUNT_CONF = """\
[server]
listen = 127.0.0.1:1110
punt_listen = {addr}:{port} {punt}
user =
run_dir = {run}
min_spare = {spare}
max_spare = {maxw}
max_workers = {maxw}
max_sessions_per_worker = 100000
max_conn_per_ip = 0

[tls]
cert = {cert}
key = {key}
min_protocol = TLSv1.3

[punt_server]
ca = {ca}
allow = {allow}

[auth]
path = {auth}

[punt {punt}]
path = {path}
"""

FRONT_PUNT = """\
[punt {punt}]
address = {addr}:{port}
ca = {ca}
cert = {cert}
key = {key}

"""


class SdpsRemote:
    """The front end over two remote punts; local is the Sdps side whose
    punt directories, hosts and settings it shares."""

    def __init__(self, top, local, maxw, mtu=1500):
        self.name = self.result_name = "sdps-remote"
        self.local = local
        self.bin = local.bin
        self.d = os.path.join(top, "sdps-remote")
        os.makedirs(self.d)
        self.tls = False
        self.tls_error = None
        self.port = local.port + 0   # replaced below
        self.proc = None
        self.punts = []          # (ns, addr, conf, proc)
        self.ns_up = False
        self.maxw = maxw
        self.mtu = mtu
        self.pki = make_pki(os.path.join(self.d, "pki"),
                            [NET % (i, 2) for i in range(2)])
        with open(local.conf) as f:
            conf = f.read()
        # Same [server] and [auth], run_dir of its own, remote punts.
        head = conf[:conf.index("[punt ")]
        head = head.replace("run_dir = %s/run" % local.spool,
                            "run_dir = %s/run" % self.d)
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        head = head.replace("listen = 127.0.0.1:%d" % local.port,
                            "listen = 127.0.0.1:%d" % self.port, 1)
        punts = "".join(FRONT_PUNT.format(
            punt="p%d" % i, addr=NET % (i, 2), port=PUNT_PORT,
            ca=self.pki["ca"], cert=self.pki["cli"][0],
            key=self.pki["cli"][1]) for i in range(2))
        self.conf = os.path.join(self.d, "sdps.conf")
        with open(self.conf, "w") as f:
            f.write(head + punts)
        auth = None
        for line in conf.splitlines():
            if line.startswith("path = ") and auth is None and \
                    line.endswith("/auth"):
                auth = line[len("path = "):]
        for i in range(2):
            ns = "%s-p%d" % (NS_PREFIX, i)
            run = os.path.join(self.d, "run-p%d" % i)
            pconf = os.path.join(self.d, "punt%d.conf" % i)
            with open(pconf, "w") as f:
                f.write(PUNT_CONF.format(
                    addr=NET % (i, 2), port=PUNT_PORT, punt="p%d" % i,
                    run=run, spare=min(32, maxw), maxw=maxw,
                    cert=self.pki["srv"][i][0], key=self.pki["srv"][i][1],
                    ca=self.pki["ca"], allow=self.pki["client_name"],
                    auth=auth, path=os.path.join(local.spool,
                                                 "punt%d" % i)))
            self.punts.append([ns, NET % (i, 2), pconf, None])

    # ---- the simulated machines

    def net_up(self):
        self.net_down()
        for i, p in enumerate(self.punts):
            ns = p[0]
            a, b = "sdpsb%da" % i, "sdpsb%db" % i
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            _run("ip", "link", "set", b, "netns", ns)
            _run("ip", "addr", "add", NET % (i, 1) + "/30", "dev", a)
            _run("ip", "-n", ns, "addr", "add", NET % (i, 2) + "/30",
                 "dev", b)
            _run("ip", "link", "set", a, "mtu", str(self.mtu), "up")
            _run("ip", "-n", ns, "link", "set", b, "mtu", str(self.mtu),
                 "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        self.ns_up = True

    def net_down(self):
        for i, p in enumerate(self.punts):
            _run("ip", "netns", "del", p[0], check=False)
            _run("ip", "link", "del", "sdpsb%da" % i, check=False)
        self.ns_up = False

    # ---- the bench-compare server interface

    def serves(self, sc):
        return sc in ("poll", "fetch", "big")

    def start(self):
        from importlib import import_module  # noqa: F401 (same process)
        if not self.ns_up:
            self.net_up()
        for p in self.punts:
            logp = os.path.join(self.d, os.path.basename(p[2]) + ".log")
            p[3] = subprocess.Popen(
                ["ip", "netns", "exec", p[0],
                 os.path.join(self.bin, "sdpsd"), "-f", "-c", p[2]],
                stderr=open(logp, "a"))
        for p in self.punts:
            self._wait_punt(p)
        logp = os.path.join(self.d, "sdpsd.log")
        self.proc = subprocess.Popen(
            [os.path.join(self.bin, "sdpsd"), "-f", "-c", self.conf],
            stderr=open(logp, "a"))
        self._wait_port(self.port, self.proc)

    def _wait_punt(self, p, secs=20):
        t = time.time() + secs
        while time.time() < t:
            if p[3].poll() is not None:
                raise RuntimeError("punt server %s exited" % p[0])
            r = _run("ip", "netns", "exec", p[0], "ss", "-Hltn",
                     "sport = :%d" % PUNT_PORT, check=False)
            if r.stdout.strip():
                return
            time.sleep(0.1)
        raise RuntimeError("punt server %s did not listen" % p[0])

    @staticmethod
    def _wait_port(port, proc, secs=20):
        import socket
        t = time.time() + secs
        while time.time() < t:
            if proc.poll() is not None:
                raise RuntimeError("front end exited")
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("front end did not listen")

    def pid(self):
        """The front end and both punt servers: the CPU and memory
        bench-compare charges to this side are all three trees'."""
        return [self.proc.pid] + [p[3].pid for p in self.punts
                                  if p[3] is not None]

    def stop(self):
        for proc in [self.proc] + [p[3] for p in self.punts]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.proc = None
        for p in self.punts:
            p[3] = None
        self.net_down()


TARGETS = {"poll": 0.50, "fetch": 0.60, "big": 0.60}


def remote_table(cell, fmt, median_run):
    """Remote against local for poll, fetch and big, with the targets,
    and the added login latency.  cell(server, sc) is bench-compare's
    (median, min, max, errors, mismatches) or None, fmt its formatter,
    median_run(server, sc) the median run's record."""
    out = ["| scenario | local sdps | remote sdps (2 punts over veth) | "
           "remote / local | target | met |", "|---|---|---|---|---|---|"]
    lines = []
    for sc, want in TARGETS.items():
        lo, rm = cell("sdps", sc), cell("sdps-remote", sc)
        if lo is None or rm is None:
            continue
        r = rm[0] / lo[0] if lo[0] else 0
        out.append("| %s | %s | %s | %d %% | >= %d %% | %s |"
                   % (sc, fmt(lo), fmt(rm), round(100 * r),
                      round(100 * want), "yes" if r >= want else "no"))
    lo, rm = median_run("sdps", "poll"), median_run("sdps-remote", "poll")
    if lo is not None and rm is not None:
        for q in ("p50_ms", "p99_ms"):
            x, y = lo.get(q), rm.get(q)
            if x is not None and y is not None:
                lines.append("login (one poll session) %s: local %.2f ms, "
                             "remote %.2f ms, added %.2f ms"
                             % (q[:3], float(x), float(y),
                                float(y) - float(x)))
    return "\n".join(out), lines
