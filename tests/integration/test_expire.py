"""sdps-ctl expire (docs/design.md §10.3): unread mail is bounced to its
sender with an RFC 3464 DSN, mail read by POP3 and mail from the null
sender expire silently, mail an SMTP agent holds is skipped."""

import email
import email.policy
import glob
import json
import os
import stat

import pytest

import daemon as D
import harness

FSCK_AFTER = True
HOST = D.HOST
ALICE = "alice@" + HOST
BOB = "bob@" + HOST


@pytest.fixture
def ed(request):
    d = D.Daemon(overrides={"expire": {"sendmail": '""', "days": 7}},
                 start=False)
    d.outbox = os.path.join(d.root, "outbox")
    d.rewrite_config(overrides={"expire": {"outbox": d.outbox}})
    d.start()
    yield d
    D._finish(request, d)


def message(subject, body="body\n"):
    return ("From: Sender <sender@example.org>\nTo: alice\n"
            "Subject: %s\nX-Original: keep me\n\n%s" % (subject, body))


def outbox(d):
    return sorted(glob.glob(os.path.join(d.outbox, "*.eml")))


def expire(d, *args):
    r = d.ctl("expire", *args, "--json")
    assert r.rc == 0, r
    return r.json()


def parse_dsn(raw):
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert not msg.defects, msg.defects
    text, status, headers = list(msg.iter_parts())
    assert text.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    assert headers.get_content_type() == "text/rfc822-headers"
    blocks = status.get_payload()
    per_rcpt = [(b["Final-Recipient"], b["Action"], b["Status"])
                for b in blocks[1:]]
    return msg, per_rcpt, headers.get_payload()


def test_unread_bounced_read_silent_claimed_skipped(ed):
    ed.deliver_ok(message("unread"), [ALICE, BOB])
    ed.deliver_ok(message("read by pop3"), ALICE)
    ed.deliver_ok(message("claimed"), ALICE)
    ed.deliver_ok(message("from the null sender"), ALICE, sender="")
    uids = [m["uidl"] for m in sorted(ed.messages(),
                                      key=lambda m: m["arrival_us"])]
    with ed.login() as p:
        assert p.uidl() == {1: uids[0], 2: uids[1], 3: uids[2],
                            4: uids[3]}
        p.retr(2)
        assert p.quit().startswith("+OK")
    assert "RD" in ed.by_uidl()[uids[1]]["flags"]
    ed.ctl_ok("smtp", "claim", ed.ref(uids[2]), "--agent", "other-agent")

    # nothing is old enough under the configured 7 days
    j = expire(ed)
    assert (j["older_than_days"], j["messages"]) == (7, [])
    assert len(ed.messages()) == 4

    j = expire(ed, "--older-than", "0")
    acts = {m["uidl"]: m["action"] for m in j["messages"]}
    assert acts == {uids[0]: "bounced and expired",
                    uids[1]: "expired silently",
                    uids[2]: "skip (claimed)",
                    uids[3]: "expired silently"}
    assert (j["bounced"], j["silent"], j["skipped"], j["failed"]) == \
        (1, 2, 1, 0)
    left = ed.messages()
    assert [m["uidl"] for m in left] == [uids[2]]
    assert left[0]["agent"] == "other-agent"

    # exactly one bounce: to the sender of the unread one
    dsn, = outbox(ed)
    with open(dsn, "rb") as f:
        raw = f.read()
    msg, rcpts, headers = parse_dsn(raw)
    assert msg["To"].addresses[0].addr_spec == "sender@example.org"
    assert sorted(r[0] for r in rcpts) == ["rfc822; " + ALICE,
                                           "rfc822; " + BOB]
    assert all(a == "failed" and s == "4.4.7" for _, a, s in rcpts)
    # the original header block, and only it
    assert "Subject: unread" in headers
    assert "X-Original: keep me" in headers
    assert "body" not in headers.split("X-Original")[1]

    # once released the claimed one goes too
    ed.ctl_ok("smtp", "release", ed.ref(uids[2]))
    j = expire(ed, "--older-than", "0")
    assert [m["action"] for m in j["messages"]] == ["bounced and expired"]
    assert ed.messages() == [] and len(outbox(ed)) == 2


def test_dry_run_changes_nothing(ed):
    ed.deliver_ok(message("a"), ALICE)
    ed.deliver_ok(message("b"), ALICE, sender="")
    def state():
        return [{k: v for k, v in m.items() if k != "age_s"}
                for m in ed.messages()]
    before = state()
    j = expire(ed, "--older-than", "0", "--dry-run")
    assert j["dry_run"] is True
    assert sorted(m["action"] for m in j["messages"]) == [
        "would bounce and expire", "would expire silently"]
    assert state() == before
    assert outbox(ed) == []
    # and the text form says the same in one line per message
    r = ed.ctl_ok("expire", "--older-than", "0", "--dry-run")
    assert r.text.count("would ") == 2
    assert r.text.strip().endswith("dry run: 1 bounced, 1 silent, "
                                   "0 skipped, 0 failed")


def test_capa_expire_shows_policy(ed):
    with ed.connect() as p:
        capa = p.multi_ok("CAPA")
    assert b"EXPIRE 7" in capa


def test_sendmail_command(request, tmp_path):
    """The configured command gets the DSN on stdin and the sender as
    its last argument; a failing command keeps the message."""
    log = tmp_path / "sendmail.log"
    script = tmp_path / "fake-sendmail"
    script.write_text("#!/bin/sh\n"
                      "printf '%%s\\n' \"$@\" > %s.args\n"
                      "cat > %s.msg\n"
                      "exit ${FAKE_RC:-0}\n" % (log, log))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    sp = harness.Spool(npunts=1, overrides={
        "expire": {"sendmail": "%s -oi -f <>" % script}})
    try:
        sp.add_host(HOST, "pw")
        sp.deliver_ok(message("via sendmail"), ALICE)
        r = sp.ctl("expire", "--older-than", "0")
        assert r.rc == 0, r
        args = (tmp_path / "sendmail.log.args").read_text().split("\n")
        assert args[:5] == ["-oi", "-f", "<>", "--", "sender@example.org"]
        _, rcpts, headers = parse_dsn(
            (tmp_path / "sendmail.log.msg").read_bytes())
        assert rcpts[0][0] == "rfc822; " + ALICE
        assert "Subject: via sendmail" in headers
        assert sp.spool_ls()["messages"] == []

        # a sendmail that fails: exit 1, the message stays, unclaimed
        script.write_text("#!/bin/sh\ncat >/dev/null\nexit 75\n")
        sp.deliver_ok(message("kept"), ALICE)
        r = sp.ctl("expire", "--older-than", "0")
        assert r.rc == 1 and "bounce to <sender@example.org> failed" \
            in r.errtext, r
        m, = sp.spool_ls()["messages"]
        assert m["flags"] == []
        assert sp.fsck().rc == 0
    finally:
        sp.cleanup()


def test_sendmail_hostile_sender(request, tmp_path):
    """A sender that looks like an option reaches sendmail after "--", so
    sendmail takes it as the recipient address, never as an option."""
    log = tmp_path / "sendmail.log"
    script = tmp_path / "fake-sendmail"
    script.write_text("#!/bin/sh\n"
                      "printf '%%s\\n' \"$@\" > %s.args\n"
                      "cat >/dev/null\n" % log)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    sp = harness.Spool(npunts=1, overrides={
        "expire": {"sendmail": "%s -oi -f <>" % script}})
    try:
        sp.add_host(HOST, "pw")
        hostile = "-bd@example.org"  # sendmail -bd: run as a daemon
        sp.deliver_ok(message("hostile"), ALICE, sender=hostile)
        r = sp.ctl("expire", "--older-than", "0")
        assert r.rc == 0, r
        args = (tmp_path / "sendmail.log.args").read_text().split("\n")
        assert args[:5] == ["-oi", "-f", "<>", "--", hostile], args
        assert sp.spool_ls()["messages"] == []
    finally:
        sp.cleanup()


def test_bad_arguments(ed):
    ed.deliver_ok(message("stays"), ALICE)
    for args in (["--older-than", "-1"], ["--older-than", "x"],
                 ["--older-than"], ["extra"]):
        r = ed.ctl("expire", *args)
        assert r.rc != 0, args
        assert r.errtext.strip(), args
    assert len(ed.messages()) == 1
