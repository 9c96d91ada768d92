"""End to end with a real MTA: Debian's Postfix, in a private config and
queue under a temp dir on loopback, takes a message by SMTP (swaks) and
hands it to sdpsd over LMTP (inet and unix); the message ends in the sdps
spool and POP3 gives it back.  Skipped, with the reason, where Postfix
cannot run (not installed, not root)."""

import os
import shutil
import subprocess
import tempfile

import pytest

import daemon as D
import harness

FSCK_AFTER = True
HOST = D.HOST

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
syslog_name = postfix-sdps-test
myhostname = mta.sdps-test.example
mydomain = sdps-test.example
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {host} wilma.example.net
transport_maps = inline:{{ {host}=lmtp:inet:127.0.0.1:{lmtp_port}, wilma.example.net=lmtp:unix:{lmtp_sock} }}
smtpd_relay_restrictions = permit_mynetworks, reject
smtputf8_enable = no
biff = no
append_dot_mydomain = no
alias_maps =
alias_database =
local_recipient_maps =
smtp_dns_support_level = disabled
lmtp_host_lookup = native
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"""


def postfix_unavailable():
    if shutil.which("postfix") is None and \
            not os.path.exists("/usr/sbin/postfix"):
        return "Postfix is not installed (apt-get install postfix)"
    if shutil.which("swaks") is None:
        return "swaks is not installed (apt-get install swaks)"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root to start its master"
    return None


class Postfix:
    def __init__(self, lmtp_port, lmtp_sock):
        self.root = tempfile.mkdtemp(prefix="sdps-postfix-")
        # Postfix's daemons run as the postfix user and must reach the
        # queue; its master wants the queue root-owned, data its own
        os.chmod(self.root, 0o755)
        self.conf = os.path.join(self.root, "etc")
        os.makedirs(self.conf)
        os.makedirs(os.path.join(self.root, "queue"))
        os.makedirs(os.path.join(self.root, "data"))
        shutil.chown(os.path.join(self.root, "data"), "postfix")
        self.port = D.free_port()
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(MAIN_CF.format(root=self.root, host=HOST,
                                   lmtp_port=lmtp_port, lmtp_sock=lmtp_sock))
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(harness.POSTFIX_MASTER_CF.format(
                smtpd_addr="127.0.0.1:%d" % self.port))

    def run(self, *args, timeout=60):
        return subprocess.run(["postfix", "-c", self.conf] + list(args),
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout)

    def start(self):
        r = self.run("start")
        if r.returncode != 0:
            # postfix(1) reports to syslog or maillog_file, not stderr
            return "postfix start failed (exit %d): %s %s" % (
                r.returncode, r.stdout.decode("utf-8", "replace").strip(),
                self.log().strip())
        # ready once smtpd answers (master binds the port at start)
        try:
            D.wait_for(self.smtpd_up, 30, 0.1, "postfix smtpd")
        except D.WaitTimeout:
            return "postfix smtpd did not come up; log:\n" + self.log()
        return None

    def smtpd_up(self):
        import socket
        try:
            with socket.create_connection(("127.0.0.1", self.port), 2) as s:
                return s.recv(100).startswith(b"220")
        except OSError:
            return False

    def log(self):
        try:
            with open(os.path.join(self.root, "maillog")) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        self.run("stop")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def stack(request):
    why = postfix_unavailable()
    if why:
        pytest.skip(why)
    lmtp_port = D.free_port()
    sockdir = tempfile.mkdtemp(prefix="sdps-lmtp-")
    os.chmod(sockdir, 0o755)
    sock = os.path.join(sockdir, "lmtp.sock")
    d = D.Daemon(server={"lmtp_listen": ["127.0.0.1:%d" % lmtp_port,
                                          sock]},
                 hosts=((HOST, D.PW1, D.PW2),
                        ("wilma.example.net", "w1", None)))
    # Postfix's lmtp client runs as the postfix user
    os.chmod(sock, 0o666)
    pf = Postfix(lmtp_port, sock)
    why = pf.start()
    if why:
        pf.stop()
        D._finish(request, d)
        pytest.skip("Postfix cannot run here: " + why)
    yield d, pf
    pf.stop()
    D._finish(request, d)
    shutil.rmtree(sockdir, ignore_errors=True)


def swaks(pf, to, subject, body):
    r = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(pf.port),
         "--from", "someone@example.org", "--to", to,
         "--header", "Subject: " + subject, "--body", body],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out
    assert "<-  250 2.0.0 Ok: queued" in out, out
    return out


def test_postfix_delivers_over_lmtp(stack):
    d, pf = stack
    swaks(pf, "alice@%s,bob@%s" % (HOST, HOST), "through postfix",
          "hello from postfix\n.dot line")
    swaks(pf, "carol@wilma.example.net", "through the unix socket",
          "unix body")

    def arrived():
        ms = d.messages()
        return ms if len(ms) == 2 else None
    try:
        msgs = D.wait_for(arrived, 60, 0.2, "mail from postfix")
    except D.WaitTimeout:
        raise AssertionError("not delivered; postfix log:\n" + pf.log())
    by_host = {m["host"]: m for m in msgs}
    assert sorted(by_host[HOST]["rcpts"]) == ["alice", "bob"]
    assert by_host["wilma.example.net"]["rcpts"] == ["carol"]
    assert all(m["sender"] == "someone@example.org" for m in msgs)
    with d.login() as p:
        raw = p.retr(1)
        p.quit()
    assert raw.startswith(b"Return-Path: <someone@example.org>\r\n")
    assert b"Subject: through postfix\r\n" in raw
    assert b"\r\n.dot line\r\n" in raw
    # Postfix's own trace header: it really went through the MTA
    assert b"Received: from " in raw and b"mta.sdps-test.example" in raw
    assert "status=sent" in pf.log()
    assert d.status()["totals"]["lmtp_messages"] == 2


def test_postfix_unknown_host_bounces_at_lmtp(stack):
    d, pf = stack
    # Postfix relays the domain, sdps does not know the host: the
    # LMTP RCPT gets 550 5.1.1 and Postfix bounces, nothing is stored
    d.ctl_ok("host", "del", "wilma.example.net")
    swaks(pf, "carol@wilma.example.net", "nobody home", "x")
    D.wait_for(lambda: "5.1.1" in pf.log() and "status=bounced"
               in pf.log(), 60, 0.2, "postfix to record the bounce")
    assert d.messages() == []
