"""sdps-smtp, the SMTP delivery agent, against a real SMTP receiver
(Debian's python3-aiosmtpd), alone and at the same moment as a POP3
session on the same host (docs/design.md §4.1, §4.2, both sides).

The receiver can answer per recipient and per message, and can hold the
agent inside DATA on a threading.Event, so "while the agent holds the
claim" is a state the test waits for, not a sleep."""

import email
import email.policy
import glob
import os
import signal
import subprocess
import threading

import pytest

import daemon as D
import harness

aiosmtpd = pytest.importorskip("aiosmtpd.controller",
                               reason="python3-aiosmtpd not installed")

FSCK_AFTER = True
HOST = D.HOST
ALICE = "alice@" + HOST
BOB = "bob@" + HOST
CAROL = "carol@" + HOST


class Receiver:
    """aiosmtpd handler: records every accepted transaction."""

    def __init__(self, pipelining):
        self.pipelining = pipelining
        self.rcpt_replies = {}      # address -> reply for RCPT
        self.data_reply = None      # reply after DATA, None = 250
        self.hold = None            # Event: DATA waits until set
        self.in_data = threading.Event()
        self.got = []               # (mail_from, [rcpts], content bytes)
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname,
                          responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address,
                          rcpt_options):
        r = self.rcpt_replies.get(address)
        if r is not None:
            return r
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        # the answer is fixed when the data is in, so a test can change
        # the settings for the next transaction while this one waits
        hold, reply = self.hold, self.data_reply or "250 2.0.0 accepted"
        self.in_data.set()
        if hold is not None:
            # wait in a thread, so the event loop (and a watchdog
            # timeout on the test side) stays alive
            await server.loop.run_in_executor(None, hold.wait, 60)
        if reply.startswith("250"):
            with self.lock:
                self.got.append((envelope.mail_from,
                                 list(envelope.rcpt_tos),
                                 envelope.original_content))
        return reply


@pytest.fixture(params=[True, False], ids=["pipelining", "lockstep"])
def rx(request):
    from aiosmtpd.controller import Controller
    h = Receiver(pipelining=request.param)
    port = D.free_port()
    c = Controller(h, hostname="127.0.0.1", port=port)
    c.start()
    h.target = "127.0.0.1:%d" % port
    yield h
    if h.hold is not None:
        h.hold.set()
    c.stop()


@pytest.fixture
def sd(request):
    """A daemon whose bounces go to an outbox directory."""
    d = D.Daemon(overrides={"expire": {"sendmail": '""'}}, start=False)
    d.outbox = os.path.join(d.root, "outbox")
    d.rewrite_config(overrides={"expire": {"sendmail": '""',
                                           "outbox": d.outbox}})
    d.start()
    yield d
    D._finish(request, d)


def agent(d, target, host=HOST, wait=True):
    argv = [harness.binary("sdps-smtp"), "-c", d.conf, "deliver", host,
            "--to", target]
    if not wait:
        return subprocess.Popen(argv, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    return harness.run(argv, timeout=60)


def stats(text):
    """key=value pairs of sdps-smtp's result line."""
    return D.parse_kv(text.strip().splitlines()[-1])


def message(subject, body="body line\n.dot line\n"):
    return ("From: Sender <sender@example.org>\nTo: fred\n"
            "Subject: %s\n\n%s" % (subject, body))


def outbox(d):
    return sorted(glob.glob(os.path.join(d.outbox, "*.eml")))


def parse_dsn(path):
    with open(path, "rb") as f:
        raw = f.read()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    # message/delivery-status: per-message block, then per-recipient
    # blocks (email gives them as sub-messages)
    blocks = parts[1].get_payload()
    assert blocks[0]["Reporting-MTA"].startswith("dns;")
    rcpts = [(b["Final-Recipient"], b["Action"], b["Status"])
             for b in blocks[1:]]
    return msg, rcpts, parts[2].get_payload()


def spooled(d):
    return d.messages(host=HOST)


def wait_claimed(d):
    """Wait until the agent's claim shows in the index; the claimed
    message's record."""
    def claimed():
        c = [m for m in spooled(d) if "IN_DELIVERY" in m["flags"]]
        return c[0] if c else None
    m = D.wait_for(claimed, what="agent claim")
    assert m["agent"].startswith("sdps-smtp")
    return m


# ----------------------------------------------------------- outcomes --

def test_250_delivers_in_order_and_removes(sd, rx):
    sd.deliver_ok(message("one"), [ALICE, BOB], punt="finchley")
    sd.deliver_ok(message("two"), ALICE, sender="", punt="docklands")
    sd.deliver_ok(message("three"), CAROL, punt="finchley")
    r = agent(sd, rx.target)
    assert r.rc == 0, r
    assert stats(r.text)["sent"] == "3"
    # in arrival order across the punts; aiosmtpd gives the null
    # sender as "<>"
    assert [(f, t) for f, t, _ in rx.got] == [
        ("sender@example.org", [ALICE, BOB]), ("<>", [ALICE]),
        ("sender@example.org", [CAROL])]
    # DATA sent straight from the wire-format file: what arrives,
    # unstuffed, is the message as it was handed to sdps-deliver
    assert rx.got[0][2] == D.msg_bytes(message("one"))
    assert rx.got[1][2] == D.msg_bytes(message("two"))
    assert spooled(sd) == []
    assert outbox(sd) == []


def test_target_from_host_record_and_run(sd, rx):
    sd.add_host("wilma.example.net", "w1")
    sd.add_host("barney.example.net", "b1")     # no target: not run
    sd.deliver_ok(message("for fred"), ALICE)
    sd.deliver_ok(message("for wilma"), "w@wilma.example.net")
    sd.deliver_ok(message("for barney"), "b@barney.example.net")
    r = harness.run([harness.binary("sdps-smtp"), "-c", sd.conf, "deliver",
                     HOST])
    assert r.rc != 0 and "no SMTP target" in r.errtext
    sd.ctl_ok("host", "set", HOST, "smtp=" + rx.target)
    sd.ctl_ok("host", "set", "wilma.example.net", "smtp=" + rx.target)
    r = harness.run([harness.binary("sdps-smtp"), "-c", sd.conf, "run",
                     "-j", "2"], timeout=60)
    assert r.rc == 0, r
    assert sorted(t[0] for _, t, _ in rx.got) == [
        ALICE, "w@wilma.example.net"]
    assert [m["host"] for m in sd.messages()] == ["barney.example.net"]


def test_4xx_keeps_and_releases(sd, rx):
    sd.deliver_ok(message("deferred rcpt"), ALICE)
    rx.rcpt_replies[ALICE] = "451 4.3.0 try later"
    r = agent(sd, rx.target)
    assert r.rc == 0 and stats(r.text)["deferred"] == "1", r
    m, = spooled(sd)
    assert m["flags"] == [] and m["agent"] == ""
    # a 4xx after DATA: the same
    del rx.rcpt_replies[ALICE]
    rx.data_reply = "452 4.3.1 queue full"
    r = agent(sd, rx.target)
    assert stats(r.text)["deferred"] == "1", r
    m, = spooled(sd)
    assert m["flags"] == [] and rx.got == []
    # and the next run gets it through
    rx.data_reply = None
    assert stats(agent(sd, rx.target).text)["sent"] == "1"
    assert spooled(sd) == [] and outbox(sd) == []


def test_5xx_bounces_and_removes(sd, rx):
    sd.deliver_ok(message("refused"), [ALICE, BOB])
    rx.data_reply = "554 5.7.1 no thanks"
    r = agent(sd, rx.target)
    assert r.rc == 0 and stats(r.text)["bounced"] == "1", r
    assert spooled(sd) == []
    dsn, = outbox(sd)
    msg, rcpts, hdrs = parse_dsn(dsn)
    assert msg["To"] == "<sender@example.org>" or \
        "sender@example.org" in str(msg["To"])
    assert sorted(r[0] for r in rcpts) == [
        "rfc822; " + ALICE, "rfc822; " + BOB]
    assert all(a == "failed" and s.startswith("5.") for _, a, s in rcpts)
    assert "Subject: refused" in str(hdrs)
    assert "no thanks" in dsn_text(dsn)


def dsn_text(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def test_mixed_recipients_only_failed_bounce(sd, rx):
    sd.deliver_ok(message("mixed"), [ALICE, BOB, CAROL])
    rx.rcpt_replies[BOB] = "550 5.1.1 no such user"
    rx.rcpt_replies[CAROL] = "450 4.2.1 mailbox busy"
    r = agent(sd, rx.target)
    assert r.rc == 0, r
    assert [t for _, t, _ in rx.got] == [[ALICE]]
    # bob bounced, alice delivered: only carol is left to retry
    m, = spooled(sd)
    assert m["rcpts"] == ["carol"] and m["flags"] == []
    dsn, = outbox(sd)
    _, rcpts, _ = parse_dsn(dsn)
    assert [r[0] for r in rcpts] == ["rfc822; " + BOB]
    del rx.rcpt_replies[CAROL]
    assert stats(agent(sd, rx.target).text)["sent"] == "1"
    assert [t for _, t, _ in rx.got] == [[ALICE], [CAROL]]
    assert spooled(sd) == [] and len(outbox(sd)) == 1


def test_null_sender_never_bounced(sd, rx):
    sd.deliver_ok(message("bounce of a bounce"), ALICE, sender="")
    rx.rcpt_replies[ALICE] = "550 5.1.1 gone"
    r = agent(sd, rx.target)
    assert r.rc == 0, r
    assert spooled(sd) == [] and outbox(sd) == []


def test_unreachable_target_claims_nothing(sd, rx):
    sd.deliver_ok(message("stays"), ALICE)
    r = agent(sd, "127.0.0.1:%d" % D.free_port())
    assert r.rc != 0 and stats(r.text)["result"] == "failed"
    m, = spooled(sd)
    assert m["flags"] == []


def test_abandoned_claim_expires_after_lease(sd, rx):
    sd.deliver_ok(message("abandoned"), ALICE)
    dead = rx.hold = threading.Event()
    # the dead agent's transaction must not count as delivered
    rx.data_reply = "451 4.3.0 client gone"
    p = agent(sd, rx.target, wait=False)
    try:
        assert rx.in_data.wait(30)
        wait_claimed(sd)
        p.kill()                # the agent dies holding the claim
        p.wait()
        assert "IN_DELIVERY" in spooled(sd)[0]["flags"]
        rx.hold = rx.data_reply = None
        # a new agent is refused while the claim is younger than the
        # lease (the default, an hour) ...
        first = stats(agent(sd, rx.target).text)
        assert (first["sent"], first["skipped"]) == ("0", "1"), first
        # ... and takes it over once the claim is older than the lease
        sd.rewrite_config(overrides={"store": {"claim_lease": 1}})
        D.wait_for(lambda: stats(agent(sd, rx.target).text)["sent"]
                   == "1", timeout=30, interval=0.3,
                   what="claim lease to expire")
    finally:
        dead.set()
    assert spooled(sd) == []
    assert [t for _, t, _ in rx.got] == [[ALICE]]


# --------------------------------- concurrently with a POP3 session --

def test_rule2_3_both_see_it_then_dummy(sd, rx):
    m = message("shared", "the real body\n")
    sd.deliver_ok(m, ALICE)
    rx.hold = threading.Event()
    with sd.login() as p:
        assert p.stat()[0] == 1
        a = agent(sd, rx.target, wait=False)
        try:
            assert rx.in_data.wait(30)
            wait_claimed(sd)
            # rule 2: while SMTP delivers it, POP3 still has it
            assert p.retr(1).endswith(D.msg_bytes(m))
            rx.hold.set()
            out, _ = a.communicate(timeout=60)
        finally:
            rx.hold.set()
            if a.poll() is None:
                a.kill()
        assert a.returncode == 0
        assert stats(out.decode())["sent"] == "1"
        assert rx.got[0][2] == D.msg_bytes(m)
        # rule 3: delivered by SMTP -> the session, which still lists
        # it, gets the dummy message
        raw = p.retr(1)
        assert b"the real body" not in raw
        assert b"already delivered by SMTP" in raw
        assert p.quit().startswith("+OK")
    assert spooled(sd) == []


@pytest.mark.parametrize("outcome", ["250 2.0.0 ok", "451 4.3.0 later",
                                     "554 5.7.1 refused"])
def test_rule4_dele_quit_during_claim_goes_after(sd, rx, outcome):
    sd.deliver_ok(message("deleted while claimed"), ALICE)
    rx.hold = threading.Event()
    rx.data_reply = outcome
    p = sd.login()
    a = agent(sd, rx.target, wait=False)
    try:
        assert rx.in_data.wait(30)
        wait_claimed(sd)
        p.ok("DELE 1")
        # rule 4: the QUIT is +OK, but the message stays until the
        # delivery finishes ...
        assert p.quit().startswith("+OK")
        p.close()
        m, = spooled(sd)
        assert "IN_DELIVERY" in m["flags"] and "POP_DELETED" in m["flags"]
        # ... hidden from new sessions
        with sd.login_when_free() as q:
            assert q.stat() == (0, 0)
            q.quit()
        rx.hold.set()
        out, _ = a.communicate(timeout=60)
    finally:
        rx.hold.set()
        if a.poll() is None:
            a.kill()
    assert a.returncode == 0
    # ... then it goes, whatever the outcome, and POP3 took it, so a
    # refusal is not bounced
    assert spooled(sd) == []
    assert outbox(sd) == []


def test_rule4_pop3_removed_cannot_be_claimed(sd, rx):
    sd.deliver_ok(message("first"), ALICE, punt="finchley")
    sd.deliver_ok(message("second"), ALICE, punt="finchley")
    rx.hold = threading.Event()
    with sd.login() as p:
        assert p.stat()[0] == 2
        a = agent(sd, rx.target, wait=False)
        try:
            # the agent listed both and holds the first in DATA
            assert rx.in_data.wait(30)
            wait_claimed(sd)
            p.ok("DELE 2")
            assert p.quit().startswith("+OK")
            # not claimed, so gone at once
            D.wait_for(lambda: len(spooled(sd)) == 1, what="DELE 2 gone")
            rx.hold.set()
            out, _ = a.communicate(timeout=60)
        finally:
            rx.hold.set()
            if a.poll() is None:
                a.kill()
    st = stats(out.decode())
    assert (st["sent"], st["skipped"]) == ("1", "1"), st
    assert len(rx.got) == 1
    assert b"Subject: first" in rx.got[0][2]
    assert spooled(sd) == []
    # and the markers say so from the CLI side as well
    sd.deliver_ok(message("third"), ALICE)
    with sd.login_when_free() as p:
        p.ok("DELE 1")
        p.quit()
    assert spooled(sd) == []
