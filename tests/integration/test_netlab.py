"""The test lab itself (tests/integration/netlab.py, issue 11): namespaces
made and removed, POP3 and LMTP across veth links, Postfix in one
machine delivering to sdpsd in another, the wire relay's delay and
loss, the silent partition, the link cut.  Local punts only: the remote
punts' faults are test_faults.py.  Skipped, with the reason, without
root or namespaces."""

import errno
import os
import poplib
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import shutil

import pytest

import daemon as D
import netlab

HOST = "fred.example.net"
PW = "lab secret"
FE = "10.211.0.21"
CL = ["10.211.0.101", "10.211.0.102", "10.211.0.103"]
SRV = "10.211.0.12"
MX = "10.211.0.31"


@pytest.fixture
def lab(request):
    why = netlab.unavailable()
    if why:
        pytest.skip(why)
    lab = netlab.Lab()
    request.addfinalizer(lab.close)
    return lab


@pytest.fixture
def tmp(request):
    d = tempfile.mkdtemp(prefix="sdps-lab-")
    os.chmod(d, 0o755)
    request.addfinalizer(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def echo_server(lab, role, addr, port):
    """A TCP echo server in role, ready when this returns."""
    code = ("import socket,threading\n"
            "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,"
            "socket.SO_REUSEADDR,1)\n"
            "s.bind((%r,%d));s.listen(64)\n"
            "def h(c):\n"
            " while True:\n"
            "  d=c.recv(65536)\n"
            "  if not d: break\n"
            "  c.sendall(d)\n"
            " c.close()\n"
            "while True:\n"
            " c,_=s.accept();threading.Thread(target=h,args=(c,),"
            "daemon=True).start()\n" % (addr, port))
    p = lab.popen(role, [sys.executable, "-c", code])

    def up():
        try:
            netlab.tcp_connect(lab, "cl", addr, port, 2).close()
            return True
        except OSError:
            return False
    D.wait_for(up, 20, 0.05, "echo server in " + role)
    return p


def local_fe(lab, tmp, role="fe1", addr=FE, punts=("alpha", "bravo")):
    secs = [("server", {"listen": "%s:110" % addr,
                        "lmtp_listen": "%s:24" % addr}),
            ("auth", {"path": os.path.join(tmp, role, "auth"),
                      "hash_cost": "min"})]
    for p in punts:
        secs.append(("punt " + p,
                     {"path": os.path.join(tmp, role, "punts", p)}))
    d = netlab.NsSdpsd(lab, role, os.path.join(tmp, role), secs,
                       pop3=(addr, 110))
    d.ctl_ok("punt", "create")
    d.add_host(HOST, PW)
    return d.start()


def message(mid, body="hello across the wire\n"):
    return ("From: a@example.org\r\nTo: u@%s\r\nMessage-ID: <%s>\r\n"
            "Subject: lab\r\n\r\n%s" % (HOST, mid, body))


class SrcPOP3(poplib.POP3):
    """poplib from a lab machine and a chosen source address."""

    def __init__(self, lab, role, host, port=110, source=None, timeout=20):
        self._src = source
        with lab.enter(role):
            super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout):
        return socket.create_connection(
            (self.host, self.port), timeout,
            source_address=(self._src, 0) if self._src else None)


# ----------------------------------------------------------- the tests --

def test_namespaces_made_and_removed():
    why = netlab.unavailable()
    if why:
        pytest.skip(why)
    # a leftover of a crashed run: a pid that is surely dead
    p = subprocess.Popen(["true"])
    p.wait()
    stale = "%s%dx1-zz" % (netlab.PREFIX, p.pid)
    subprocess.run(["ip", "netns", "add", stale], check=True)
    lab = netlab.Lab()
    try:
        assert stale not in netlab._netns_names()
        lab.add_machine("a", ["10.211.0.11"])
        lab.add_machine("b", ["10.211.0.12"], wire=True)
        names = set(lab.ns.values())
        assert names <= set(netlab._netns_names())
        # a process in a namespace runs there: it sees only that
        # machine's address
        out = lab.run("a", ["ip", "-o", "-4", "addr", "show", "dev",
                            "eth0"]).stdout.decode()
        assert "10.211.0.11/16" in out and "10.211.0.12" not in out
        sleeper = lab.popen("b", ["sleep", "600"])
        assert sleeper.pid in lab.pids("b")
    finally:
        lab.close()
    left = set(netlab._netns_names())
    assert not (names & left), left
    assert sleeper.poll() is not None      # close() ended it


def test_pop3_and_lmtp_across_veth(lab, tmp):
    lab.add_machine("fe1", [FE])
    lab.add_machine("cl", CL)
    fe = local_fe(lab, tmp)
    with lab.enter("cl"):
        with smtplib.LMTP(FE, 24, source_address=(CL[1], 0),
                          timeout=20) as l:
            refused = l.sendmail("a@example.org", ["u@" + HOST],
                                 message("m1@lab"))
    assert refused == {}
    p = SrcPOP3(lab, "cl", FE, source=CL[2])
    p.user(HOST)
    p.pass_(PW)
    resp, lines, _ = p.retr(1)
    assert b"Message-ID: <m1@lab>" in lines
    assert p.quit().startswith(b"+OK")
    # the daemon saw the client's lab address, not loopback
    D.wait_for(lambda: fe.log_lines(r"\b%s\b" % CL[2].replace(".", r"\.")),
               20, what="the client address in the session log")


def test_postfix_in_one_machine_delivers_to_another(lab, tmp):
    why = netlab.postfix_unavailable()
    if why:
        pytest.skip(why)
    lab.add_machine("fe1", [FE])
    lab.add_machine("mx", [MX])
    lab.add_machine("cl", CL)
    local_fe(lab, tmp)
    pf = netlab.NsPostfix(lab, "mx", os.path.join(tmp, "mx"), MX,
                          {HOST: "lmtp:inet:[%s]:24" % FE})
    pf.start()
    with lab.enter("cl"):
        with smtplib.SMTP(MX, 25, timeout=20) as s:
            s.sendmail("a@example.org", ["u@" + HOST], message("pf1@lab"))
    D.wait_for(lambda: "pf1@lab" in pf.acked(), 60, 0.2,
               "postfix to deliver by LMTP")
    p = SrcPOP3(lab, "cl", FE, source=CL[0])
    p.user(HOST)
    p.pass_(PW)
    _, lines, _ = p.retr(1)
    p.quit()
    assert b"Message-ID: <pf1@lab>" in lines
    assert any(ln.startswith(b"Received: from ") for ln in lines)


def rtt_connect(lab, addr, port):
    t = time.monotonic()
    netlab.tcp_connect(lab, "cl", addr, port, 20).close()
    return time.monotonic() - t


def test_wire_relay_delays_and_drops(lab):
    lab.add_machine("cl", CL)
    lab.add_machine("srv", [SRV], wire=True)
    echo_server(lab, "srv", SRV, 7000)
    lab.set_wire("srv", 150, 0)
    # the SYN and the SYN-ACK each cross the delayed link once: a
    # connect takes at least 2 x 150 ms on any machine
    assert rtt_connect(lab, SRV, 7000) >= 0.300
    # and an echo of a line: one more round trip
    s = netlab.tcp_connect(lab, "cl", SRV, 7000, 20)
    t = time.monotonic()
    s.sendall(b"ping\n")
    assert s.recv(10) == b"ping\n"
    assert time.monotonic() - t >= 0.300
    s.close()
    # loss: frames dropped, TCP still delivers every byte
    lab.set_wire("srv", 5, 5)
    before = lab.wire_stats("srv")
    s = netlab.tcp_connect(lab, "cl", SRV, 7000, 60)
    data = os.urandom(200000)
    got = b""
    s.settimeout(60)
    for i in range(0, len(data), 20000):
        s.sendall(data[i:i + 20000])
        while len(got) < i + 20000:
            got += s.recv(65536)
    s.close()
    assert got == data
    after = lab.wire_stats("srv")
    if after is not None:       # the relay (netem keeps no such count)
        assert after["a2b_drop"] + after["b2a_drop"] > \
            before["a2b_drop"] + before["b2a_drop"]
    lab.set_wire("srv", 0, 0)


def test_partition_drops_silently(lab):
    lab.add_machine("cl", CL)
    lab.add_machine("srv", [SRV])
    echo_server(lab, "srv", SRV, 7000)
    # without the partition a closed port is refused at once...
    with pytest.raises(ConnectionRefusedError):
        netlab.tcp_connect(lab, "cl", SRV, 7001, 20)
    lab.partition("srv")
    # ...with it, neither the open nor the closed port answers at all
    for port in (7000, 7001):
        with pytest.raises(socket.timeout):
            netlab.tcp_connect(lab, "cl", SRV, port, 1.5)
    lab.heal("srv")
    netlab.tcp_connect(lab, "cl", SRV, 7000, 20).close()


def test_partition_from_some_peers_only(lab):
    lab.add_machine("cl", CL)
    lab.add_machine("srv", [SRV])
    echo_server(lab, "srv", SRV, 7000)
    lab.partition("srv", peers=[CL[0]])
    with pytest.raises(socket.timeout):
        netlab.tcp_connect(lab, "cl", SRV, 7000, 1.5, source=CL[0])
    netlab.tcp_connect(lab, "cl", SRV, 7000, 20, source=CL[1]).close()
    lab.heal("srv")


def test_link_down_and_up(lab):
    lab.add_machine("cl", CL)
    lab.add_machine("srv", [SRV])
    echo_server(lab, "srv", SRV, 7000)
    s = netlab.tcp_connect(lab, "cl", SRV, 7000, 20)
    lab.link_down("srv")
    # nothing crosses: a new connection gets no answer (or no route
    # once ARP gives up), an open one no echo
    try:
        netlab.tcp_connect(lab, "cl", SRV, 7000, 1.5).close()
        raise AssertionError("connected across a link that is down")
    except socket.timeout:
        pass
    except OSError as e:
        assert e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH), e
    s.settimeout(1.0)
    s.sendall(b"x\n")
    with pytest.raises(socket.timeout):
        s.recv(10)
    lab.link_up("srv")
    # the open connection resumes: TCP retransmits the line
    s.settimeout(30)
    assert s.recv(10) == b"x\n"
    s.close()
