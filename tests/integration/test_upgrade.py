"""sdps-ctl punt upgrade: a format-1 punt to index format 2
(docs/design.md §18.4).

The format-1 punt is written by tools/sdps-fmt1 (raw LMDB and rec_encode,
the layout the format-1 binary wrote): three hosts, one to three
recipients, the null sender, READ, live and stale SMTP claims,
POP_DELETED, arrivals out of id order, a dot-stuffed line.  Crash points
are SDPS_FAULT kills (src/lib/fault.c), never timed kills.
"""

import os
import shutil
import subprocess
import time

import pytest

import harness
from daemon import Daemon

N = 30          # messages
BATCH = 4       # --batch: 8 batches
NBATCH = (N + BATCH - 1) // BATCH
PUNT = "finchley"
HOSTS = ("a.example", "b.example", "c.example.org")
PW = "upgrade secret"
NOW_US = str(int(time.time()) * 1000000)   # live claims: one time for all


def fmt1(*args):
    r = harness.run([harness.binary("tools/sdps-fmt1")] + list(args))
    assert r.rc == 0, r
    return r


def make_fmt1(sp, n=N):
    path = sp.punt_paths[PUNT]
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fmt1("make", path, PUNT, str(n), NOW_US)
    return path


def raw_dump(sp, db):
    cp = subprocess.run(["mdb_dump", "-s", db,
                         os.path.join(sp.punt_paths[PUNT], "index")],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout


def dump(sp, db):
    """mdb_dump of one database: its exact records (hex), without the
    header (it has the map size, which may change)."""
    return raw_dump(sp, db).split(b"HEADER=END\n", 1)[1]


def old_data(sp):
    return (dump(sp, "msg"), dump(sp, "host"))


def spool_files(sp):
    out = {}
    top = os.path.join(sp.punt_paths[PUNT], "spool")
    for d, _, files in os.walk(top):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                out[os.path.relpath(os.path.join(d, f), top)] = fh.read()
    return out


def upgrade(sp, *extra, fault=None):
    env = dict(os.environ)
    env.pop("SDPS_FAULT", None)
    if fault:
        env["SDPS_FAULT"] = fault
    return harness.run([harness.binary("sdps-ctl"), "-c", sp.conf, "punt",
                        "upgrade", PUNT] + list(extra), env=env)


def refused(sp):
    """A normal open (sdps-ctl spool stat through store_open) refuses."""
    r = sp.ctl("spool", "stat")
    return "upgrade" in r.errtext and PUNT in r.errtext


def expected(i):
    """What sdps-fmt1 wrote for id i (tools/sdps-fmt1.c make_one)."""
    flags = {1: ["RD"], 2: ["IN_DELIVERY"],
             3: ["IN_DELIVERY", "POP_DELETED"],
             4: ["RD", "IN_DELIVERY"]}.get(i % 6, [])
    return {"host": HOSTS[i % 3],
            "sender": "" if i % 7 == 0 else "sender%d@x.example" % i,
            "rcpts": ["alice", "bob", "carol"][:1 + i % 3],
            "flags": flags,
            "arrival_us": 1700000000000000 + i * 1000 -
            (500000 if i % 4 == 0 else 0)}


def listing(sp):
    ms = sp.spool_ls()["messages"]
    for m in ms:
        m.pop("age_s", None)
    return sorted(ms, key=lambda m: m["id"])


def check_upgraded(sp, files):
    ms = listing(sp)
    assert [m["id"] for m in ms] == list(range(1, N + 1))
    for m in ms:
        e = expected(m["id"])
        for k, v in e.items():
            assert m[k] == v, (m, k, v)
        f = files["%02x/%016x" % (m["id"] & 0xff, m["id"])]
        assert m["stored_octets"] == len(f)
        show = sp.ctl_json("spool", "show", "%s:%d" % (PUNT, m["id"]))
        assert show["data"].encode() == f
        assert m["uidl"] == "5d95f00d1234abcd-%016x" % m["id"]
    assert spool_files(sp) == files, "spool files changed"
    r = sp.fsck()
    assert r.rc == 0 and "clean" in r.text, r
    return ms


@pytest.fixture
def sp():
    s = harness.Spool(npunts=1, create=False)
    make_fmt1(s)
    yield s
    s.cleanup()


def test_format1_refused_then_upgraded(sp):
    files = spool_files(sp)
    assert refused(sp)
    r = upgrade(sp, "--batch", str(BATCH))
    assert r.rc == 0, r
    assert "upgraded to index format 2: %d records" % N in r.text
    assert "in %d batches" % NBATCH in r.text
    ms = check_upgraded(sp, files)
    stat = sp.spool_stat()["punts"][0]
    assert stat["msgs"] == N and stat["hosts"] == 3
    # msg and host emptied by the switch
    assert dump(sp, "msg") == b"DATA=END\n"
    assert dump(sp, "host") == b"DATA=END\n"
    r = upgrade(sp)
    assert r.rc == 0 and "already index format 2, nothing changed" in r.text
    assert listing(sp) == ms
    r = upgrade(sp, "--abort")
    assert r.rc == 1 and "nothing to abort" in r.errtext


def uninterrupted():
    s = harness.Spool(npunts=1, create=False)
    try:
        make_fmt1(s)
        assert upgrade(s, "--batch", str(BATCH)).rc == 0
        return listing(s), dump(s, "rec"), dump(s, "id"), dump(s, "hosts")
    finally:
        s.cleanup()


POINTS = [("upgrade.marked", 1)] + \
    [("upgrade.batch.before_commit", n) for n in (1, 2, NBATCH)] + \
    [("upgrade.batch.committed", n) for n in (1, 2, NBATCH)] + \
    [("upgrade.switch.before_commit", 1)]


@pytest.fixture(scope="module")
def reference():
    return uninterrupted()


@pytest.mark.parametrize("point,n", POINTS)
def test_kill_then_rerun(sp, reference, point, n):
    files = spool_files(sp)
    old = old_data(sp)
    r = upgrade(sp, "--batch", str(BATCH), fault="%s:%d" % (point, n))
    assert r.rc == -9, r
    assert refused(sp), "a half-done upgrade must be refused"
    assert old_data(sp) == old, "the format-1 data changed before the switch"
    assert spool_files(sp) == files
    r = upgrade(sp, "--batch", str(BATCH))
    assert r.rc == 0, r
    assert "an interrupted upgrade finished" in r.text
    check_upgraded(sp, files)
    assert (listing(sp), dump(sp, "rec"), dump(sp, "id"),
            dump(sp, "hosts")) == reference


@pytest.mark.parametrize("point,n", POINTS)
def test_kill_then_abort(sp, point, n):
    files = spool_files(sp)
    old = old_data(sp) + (dump(sp, "meta"),)
    r = upgrade(sp, "--batch", str(BATCH), fault="%s:%d" % (point, n))
    assert r.rc == -9, r
    r = upgrade(sp, "--abort")
    assert r.rc == 0 and "format 1 again" in r.text, r
    assert old_data(sp) + (dump(sp, "meta"),) == old
    assert spool_files(sp) == files
    assert "punt format 1: run sdps-ctl punt upgrade" in \
        sp.ctl("spool", "stat").errtext
    r = upgrade(sp, "--abort")
    assert r.rc == 0 and "nothing to abort" in r.text
    # and it still upgrades afterwards
    assert upgrade(sp).rc == 0
    check_upgraded(sp, files)


def test_kill_after_switch(sp, reference):
    files = spool_files(sp)
    r = upgrade(sp, "--batch", str(BATCH), fault="upgrade.switched")
    assert r.rc == -9
    assert not refused(sp)
    check_upgraded(sp, files)
    assert "already index format 2" in upgrade(sp).text


def test_kill_in_abort(sp):
    old = old_data(sp) + (dump(sp, "meta"),)
    assert upgrade(sp, fault="upgrade.batch.committed:1",
                   *["--batch", str(BATCH)]).rc == -9
    r = upgrade(sp, "--abort", fault="upgrade.abort.before_commit")
    assert r.rc == -9
    assert refused(sp)
    r = upgrade(sp, "--abort")
    assert r.rc == 0 and "format 1 again" in r.text
    assert old_data(sp) + (dump(sp, "meta"),) == old


def test_refuses_newer_record(sp):
    fmt1("newer", sp.punt_paths[PUNT], "5")
    old = old_data(sp) + (dump(sp, "meta"),)
    r = upgrade(sp)
    assert r.rc == 1
    assert "record version 9" in r.errtext and "nothing changed" in r.errtext
    assert old_data(sp) + (dump(sp, "meta"),) == old
    assert "punt format 1" in sp.ctl("spool", "stat").errtext


def test_refuses_index_fault(sp):
    fmt1("unhost", sp.punt_paths[PUNT], "7")
    old = old_data(sp) + (dump(sp, "meta"),)
    r = upgrade(sp)
    assert r.rc == 1 and "fsck --repair first" in r.errtext, r
    assert old_data(sp) + (dump(sp, "meta"),) == old


def test_refuses_map_too_small(sp):
    make_fmt1(sp, 6000)     # ~1.2 MB of index: the copy cannot fit in 1 MB
    sp.rewrite_config(overrides={"store": {"map_size_mb": "1"}})
    old = old_data(sp) + (dump(sp, "meta"),)
    r = upgrade(sp)
    assert r.rc == 1 and "map_size_mb" in r.errtext, r
    assert old_data(sp) + (dump(sp, "meta"),) == old


def test_refuses_punt_in_use(sp):
    old = old_data(sp) + (dump(sp, "meta"),)
    holder = subprocess.Popen([harness.binary("tools/sdps-fmt1"), "hold",
                               sp.punt_paths[PUNT]], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"ready\n"
        r = upgrade(sp)
        assert r.rc == 1
        assert "in use by pid %d" % holder.pid in r.errtext, r
        assert old_data(sp) + (dump(sp, "meta"),) == old
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert upgrade(sp).rc == 0


def test_newer_format_refused_nothing_deleted(sp):
    """A punt of a format newer than this binary's: every path refuses,
    nothing is deleted."""
    assert upgrade(sp).rc == 0
    files = spool_files(sp)
    # raise meta version to 3 with the raw writer's tool: mdb_load
    meta = raw_dump(sp, "meta")
    new = meta.replace(b" 76657273696f6e\n 02000000\n",
                       b" 76657273696f6e\n 03000000\n")
    assert new != meta
    cp = subprocess.run(["mdb_load", "-s", "meta",
                         os.path.join(sp.punt_paths[PUNT], "index")],
                        input=new, stderr=subprocess.PIPE)
    assert cp.returncode == 0, cp.stderr
    before = dump(sp, "rec")
    r = upgrade(sp)
    assert r.rc == 1 and "nothing changed" in r.errtext, r
    r = sp.fsck(repair=True)
    assert r.rc == 1 and "newer" in r.text + r.errtext, r
    assert dump(sp, "rec") == before
    assert spool_files(sp) == files


def test_pop3_after_upgrade_and_online():
    """The daemon leaves a format-1 punt out (a punt that is down) and
    serves it after an online upgrade; every RETR equals the stored
    bytes, unstuffed, after the Return-Path line."""
    d = Daemon(npunts=2, hosts=[(h, PW) for h in HOSTS], start=False)
    try:
        make_fmt1(d.spool)
        files = spool_files(d.spool)
        d.deliver_ok(harness.simple_message("on docklands"),
                     "zed@a.example", punt="docklands")
        d.start()
        with d.login_when_free("a.example", PW) as p:
            assert p.stat()[0] == 1     # docklands only: finchley is down
            p.quit()
        r = upgrade(d.spool)
        assert r.rc == 0, (r, d.log())
        for h in HOSTS:
            ids = [i for i in range(1, N + 1) if i % 3 == HOSTS.index(h)
                   and i % 6 != 3]          # POP_DELETED left out
            extra = 1 if h == "a.example" else 0     # docklands' message
            with d.login_when_free(h, PW) as p:
                assert p.stat()[0] == len(ids) + extra
                for n, i in enumerate(sorted(
                        ids, key=lambda i: (expected(i)["arrival_us"], i)),
                        1):
                    f = files["%02x/%016x" % (i & 0xff, i)]
                    body = b"".join(
                        (ln[1:] if ln.startswith(b".") else ln) + b"\r\n"
                        for ln in f.split(b"\r\n")[:-1])
                    want = (b"Return-Path: <" +
                            expected(i)["sender"].encode() + b">\r\n" + body)
                    assert p.retr(n) == want, (h, n, i)
                p.quit()
    finally:
        d.stop()
        r = d.fsck()
        d.spool.cleanup()
    assert r.rc == 0, r
