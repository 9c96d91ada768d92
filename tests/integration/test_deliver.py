"""sdps-deliver: exit codes, nothing written on rejection, wire format."""

import glob
import os

import pytest

import harness

EX_OK, EX_USAGE, EX_DATAERR, EX_NOUSER = 0, 64, 65, 67
EX_TEMPFAIL, EX_CONFIG = 75, 78

HOST = "fred.example.net"
HOST2 = "wilma.example.net"

MSG = b"From: a@example.org\nSubject: hi\n\nhello\n"


@pytest.fixture
def sp():
    s = harness.Spool(npunts=2)
    s.add_host(HOST)
    s.add_host(HOST2)
    yield s
    s.cleanup()


def spool_files(sp):
    """Every file under any punt's spool/ and tmp/."""
    out = []
    for path in sp.punt_paths.values():
        out += [p for p in glob.glob(os.path.join(path, "spool", "*", "*"))]
        out += glob.glob(os.path.join(path, "tmp", "*"))
    return out


def assert_nothing_written(sp):
    assert sp.total_msgs() == 0
    assert sp.spool_ls()["messages"] == []
    assert spool_files(sp) == []


def one_line_error(r):
    lines = r.errtext.strip().splitlines()
    assert len(lines) == 1, r
    assert lines[-1].startswith("sdps-deliver: ")
    return lines[-1]


@pytest.mark.parametrize("rcpt,code", [
    ("joe@nobody.example.net", EX_NOUSER),
    ("joe@../x", EX_DATAERR),
    ("joe@a..b", EX_DATAERR),
    ("joe@.foo", EX_DATAERR),
    ("joe@x y", EX_DATAERR),
    ("joe@-bad.example.net", EX_DATAERR),
    ("joe@", EX_DATAERR),
    ("joe", EX_DATAERR),
    ("@" + HOST, EX_DATAERR),
    ("jo e@" + HOST, EX_DATAERR),
    ("jo/e@" + HOST, EX_DATAERR),
    ("jo\te@" + HOST, EX_DATAERR),
    ("x" * 65 + "@" + HOST, EX_DATAERR),
    ("joe@" + "a" * 64 + ".example.net", EX_DATAERR),
])
def test_bad_recipient_rejected_nothing_written(sp, rcpt, code):
    r = sp.deliver(MSG, [rcpt])
    assert r.rc == code, r
    one_line_error(r)
    assert_nothing_written(sp)


@pytest.mark.parametrize("rcpts,code", [
    (["ok@" + HOST, "bad user@" + HOST], EX_DATAERR),
    (["ok@" + HOST, "joe@../x"], EX_DATAERR),
    (["ok@" + HOST, "joe@unknown.example.net"], EX_NOUSER),
    (["joe@unknown.example.net", "ok@" + HOST2], EX_NOUSER),
])
def test_one_bad_recipient_rejects_all(sp, rcpts, code):
    r = sp.deliver(MSG, rcpts)
    assert r.rc == code, r
    assert_nothing_written(sp)


@pytest.mark.parametrize("sender", ["no-at-sign", "a b@example.org",
                                    "a@../x", "a@", "<a@b..c>"])
def test_bad_sender(sp, sender):
    r = sp.deliver(MSG, ["joe@" + HOST], sender=sender)
    assert r.rc == EX_DATAERR, r
    assert_nothing_written(sp)


@pytest.mark.parametrize("name,data", [
    ("nul", b"From: a@b.c\nSubject: x\n\nbody\x00more\n"),
    ("nul-in-header", b"From: a@b.c\x00\n\nbody\n"),
    ("no-header", b"hello there, no header here\n"),
    ("empty", b""),
    ("body-first", b"\nFrom: a@b.c\n"),
])
def test_bad_message_dataerr(sp, name, data):
    r = sp.deliver(data, ["joe@" + HOST])
    assert r.rc == EX_DATAERR, (name, r)
    one_line_error(r)
    assert_nothing_written(sp)


def test_oversize_dataerr():
    s = harness.Spool(npunts=1,
                      overrides={"store": {"max_message_size": 2000}})
    try:
        s.add_host(HOST)
        small = b"Subject: s\n\n" + b"x" * 500 + b"\n"
        big = b"Subject: b\n\n" + (b"y" * 70 + b"\n") * 40
        r = s.deliver(big, ["joe@" + HOST])
        assert r.rc == EX_DATAERR, r
        assert_nothing_written(s)
        s.deliver_ok(small, ["joe@" + HOST])
        assert s.total_msgs() == 1
    finally:
        s.cleanup()


def test_usage_errors(sp):
    argv = [harness.binary("sdps-deliver"), "-c", sp.conf]
    assert harness.run(argv + ["-f", "a@b.c"], MSG).rc == EX_USAGE
    assert harness.run(argv + ["joe@" + HOST], MSG).rc == EX_USAGE
    assert harness.run(argv + ["-x", "-f", "a@b.c", "joe@" + HOST],
                       MSG).rc == EX_USAGE
    r = sp.deliver(MSG, ["joe@" + HOST], punt="nosuchpunt")
    assert r.rc == EX_USAGE, r
    assert_nothing_written(sp)


def test_bad_config(sp, tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("[server]\nrun_dir = /tmp\nbogus_key = 1\n")
    r = harness.run([harness.binary("sdps-deliver"), "-c", str(conf),
                     "-f", "a@b.c", "joe@" + HOST], MSG)
    assert r.rc == EX_CONFIG, r
    assert "%s:3:" % conf in r.errtext
    r = harness.run([harness.binary("sdps-deliver"), "-c",
                     str(tmp_path / "missing.conf"), "-f", "a@b.c",
                     "joe@" + HOST], MSG)
    assert r.rc == EX_CONFIG, r


@pytest.mark.parametrize("sender", ["", "<>"])
def test_null_sender(sp, sender):
    sp.deliver_ok(MSG, ["joe@" + HOST], sender=sender)
    msgs = sp.spool_ls()["messages"]
    assert len(msgs) == 1
    assert msgs[0]["sender"] == ""
    assert msgs[0]["rcpts"] == ["joe"]


def test_sender_brackets_stripped(sp):
    sp.deliver_ok(MSG, ["joe@" + HOST], sender="<Alice@Example.ORG>")
    m = sp.spool_ls()["messages"][0]
    assert m["sender"] == "Alice@example.org"


def stored_bytes(sp, m):
    """The message file, read via spool show and directly from disk."""
    r = sp.ctl_ok("spool", "show", "%s:%d" % (m["punt"], m["id"]))
    files = glob.glob(os.path.join(sp.punt_paths[m["punt"]], "spool",
                                   "*", "*"))
    assert len(files) == 1
    with open(files[0], "rb") as f:
        disk = f.read()
    assert disk == r.out
    return r.out


def test_wire_format_byte_exact(sp):
    raw = (b"From: a@example.org\n"
           b"Subject: wire\r\n"
           b"X-CR: lone\rcr\n"
           b"\n"
           b".leading dot\n"
           b"..two dots\n"
           b".\n"
           b"middle . dot\n"
           b"last line without newline")
    want = (b"From: a@example.org\r\n"
            b"Subject: wire\r\n"
            b"X-CR: lone\r\ncr\r\n"
            b"\r\n"
            b"..leading dot\r\n"
            b"...two dots\r\n"
            b"..\r\n"
            b"middle . dot\r\n"
            b"last line without newline\r\n")
    sp.deliver_ok(raw, ["joe@" + HOST])
    m = sp.spool_ls()["messages"][0]
    assert stored_bytes(sp, m) == want
    assert m["stored_octets"] == len(want)
    # The client size counts the unstuffed message plus Return-Path.
    stuffed_dots = 3
    unstuffed = len(want) - stuffed_dots
    rp = len(b"Return-Path: <sender@example.org>\r\n")
    assert m["octets"] == unstuffed + rp


def test_crlf_input_unchanged(sp):
    raw = b"Subject: crlf\r\n\r\nline one\r\nline two\r\n"
    sp.deliver_ok(raw, ["joe@" + HOST])
    m = sp.spool_ls()["messages"][0]
    assert stored_bytes(sp, m) == raw


def test_multi_host_stored_once_per_host(sp):
    rcpts = ["Joe@" + HOST, "ann@" + HOST.upper(), "joe@" + HOST,
             "bob@" + HOST2]
    sp.deliver_ok(MSG, rcpts)
    msgs = sp.spool_ls()["messages"]
    assert len(msgs) == 2
    by_host = {m["host"]: m for m in msgs}
    assert sorted(by_host) == [HOST, HOST2]
    assert sorted(by_host[HOST]["rcpts"]) == ["ann", "joe"]
    assert by_host[HOST2]["rcpts"] == ["bob"]
    assert len(sp.spool_ls(host=HOST)["messages"]) == 1
    assert sp.spool_ls(host=HOST2)["messages"][0]["rcpts"] == ["bob"]
    assert sp.total_msgs() == 2
    assert sp.fsck().rc == 0


def test_per_recipient_listing_text(sp):
    sp.deliver_ok(MSG, ["joe@" + HOST, "ann@" + HOST])
    r = sp.ctl_ok("spool", "ls", "--host", HOST)
    lines = r.text.strip().splitlines()
    assert lines[0].split()[:4] == ["PUNT", "ID", "UIDL", "HOST"]
    assert len(lines) == 2
    assert lines[1].split()[-1] in ("joe,ann", "ann,joe")


def test_punt_option_pins_punt(sp):
    for _ in range(5):
        sp.deliver_ok(MSG, ["joe@" + HOST], punt="docklands")
    assert len(sp.spool_ls(punt="docklands")["messages"]) == 5
    assert sp.spool_ls(punt="finchley")["messages"] == []


def test_random_punt_uses_both(sp):
    # The chance that 40 random choices all hit one of two punts is 2^-39.
    for _ in range(40):
        sp.deliver_ok(MSG, ["joe@" + HOST])
    counts = {p["name"]: p["msgs"] for p in sp.spool_stat()["punts"]}
    assert sum(counts.values()) == 40
    assert all(n > 0 for n in counts.values()), counts


def test_unavailable_punt_skipped_or_tempfail(tmp_path):
    root = str(tmp_path)
    s = harness.Spool(npunts=2, root=root, create=False)
    s.ctl_ok("punt", "create", "finchley")   # docklands never created
    s.add_host(HOST)
    r = s.deliver(MSG, ["joe@" + HOST], punt="docklands")
    assert r.rc == EX_TEMPFAIL, r
    one_line_error(r)
    for _ in range(10):
        s.deliver_ok(MSG, ["joe@" + HOST])
    assert len(s.spool_ls(punt="finchley")["messages"]) == 10


def test_no_punt_available_tempfail(tmp_path):
    s = harness.Spool(npunts=2, root=str(tmp_path), create=False)
    s.add_host(HOST)
    r = s.deliver(MSG, ["joe@" + HOST])
    assert r.rc == EX_TEMPFAIL, r


def test_auth_store_missing_tempfail(tmp_path):
    s = harness.Spool(npunts=1, root=str(tmp_path))
    r = s.deliver(MSG, ["joe@" + HOST])
    assert r.rc == EX_TEMPFAIL, r
    assert s.total_msgs() == 0
