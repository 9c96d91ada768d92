"""Store under load, under SIGKILL and on a full disk, through the CLI."""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile

import pytest

import harness

HOST = "fred.example.net"
EX_TEMPFAIL = 75

# One driver process: deliver COUNT messages one after another and print
# {"ok": n, "fail": [[i, rc, stderr], ...]} on stdout.
DRIVER = r"""
import json, subprocess, sys
deliver, conf, tag, count, host = sys.argv[1:6]
ok, fail = 0, []
for i in range(int(count)):
    msg = ("From: load@example.org\nSubject: %s-%d\n\nbody %s %d\n"
           % (tag, i, tag, i)).encode()
    cp = subprocess.run([deliver, "-c", conf, "-f", "load@example.org",
                         "u%s@%s" % (tag, host)], input=msg,
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if cp.returncode == 0:
        ok += 1
    else:
        fail.append([i, cp.returncode, cp.stderr.decode()[:200]])
print(json.dumps({"ok": ok, "fail": fail[:20], "nfail": len(fail)}))
"""


def test_four_concurrent_deliverers_10000():
    # 10,000 deliveries are about 5 minutes here, nearly all of it process
    # start-up (an exec costs ~40 ms on this VM); SDPS_LOAD_PER_PROC
    # shrinks the run for a quick check.
    procs = 4
    per = int(os.environ.get("SDPS_LOAD_PER_PROC", "2500"))
    s = harness.Spool(npunts=1)
    try:
        s.add_host(HOST)
        drivers = [subprocess.Popen(
            [sys.executable, "-c", DRIVER, harness.binary("sdps-deliver"),
             s.conf, "w%d" % k, str(per), HOST],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for k in range(procs)]
        results = []
        for d in drivers:
            out, err = d.communicate(timeout=1800)
            assert d.returncode == 0, err
            results.append(json.loads(out))
        for r in results:
            assert r["nfail"] == 0, r
            assert r["ok"] == per
        st = s.spool_stat()
        assert st["total"]["msgs"] == procs * per
        assert st["punts"][0]["hosts"] == 1
        msgs = s.spool_ls()["messages"]
        assert len(msgs) == procs * per
        assert len({m["id"] for m in msgs}) == procs * per
        assert len({m["uidl"] for m in msgs}) == procs * per
        per_rcpt = {}
        for m in msgs:
            assert len(m["rcpts"]) == 1
            per_rcpt[m["rcpts"][0]] = per_rcpt.get(m["rcpts"][0], 0) + 1
        assert per_rcpt == {"uw%d" % k: per for k in range(procs)}
        # a sample is stored byte for byte
        rnd = random.Random(7)
        for m in rnd.sample(msgs, 20):
            raw = s.ctl_ok("spool", "show", "finchley:%d" % m["id"]).out
            tag = m["rcpts"][0][1:]
            assert raw.startswith(b"From: load@example.org\r\nSubject: %s-"
                                  % tag.encode())
            i = int(raw.split(b"\r\n")[1].split(b"-")[-1])
            assert raw.endswith(b"\r\n\r\nbody %s %d\r\n"
                                % (tag.encode(), i))
        r = s.fsck()
        assert r.rc == 0, r
    finally:
        s.cleanup()


def crash_message(i, rnd):
    """A message of 1-300 KB with a line that needs dot-stuffing."""
    size = rnd.randint(1000, 300000)
    line = b"%06d " % i + b"z" * 70
    body = (line + b"\n") * (size // (len(line) + 1))
    raw = b"Subject: crash %d\n\n.dot\n" % i + body
    wire = raw.replace(b"\n", b"\r\n").replace(b"\r\n.dot", b"\r\n..dot")
    return raw, wire


# Every crash point a delivery passes, in order, and whether the copy
# being stored when the kill lands is kept (stored means after the LMDB
# commit, docs/design.md §5.4).  Listed in docs/design.md §15.7.
PUT_POINTS = [
    ("store.put.tmp_written", False),
    ("store.put.fsynced", False),
    ("store.put.renamed", False),
    ("store.put.dir_fsynced", False),
    ("store.put.before_commit", False),
    ("store.put.committed", True),
    ("deliver.host_stored", True),
]
CRASH_HOSTS = ["h%d.example.net" % k for k in (1, 2, 3)]
CRASH_SENDER = "crash@example.org"


def test_sigkill_at_every_crash_point():
    """sdps-deliver killed by SDPS_FAULT=POINT:N at every crash point of
    the store path, N = 1..3: one delivery for three hosts stores three
    copies, so the kill lands in the N-th copy.  Copies before it must be
    there, the N-th exactly when the point is past the commit, later ones
    not; every exit-0 delivery byte-exact in the index, the spool and
    over POP3; fsck --repair, then fsck clean.  No clock involved."""
    from daemon import Daemon, PW1, PW2

    rnd = random.Random(20261128)
    d = Daemon(npunts=2, hosts=[(h, PW1, PW2) for h in
                                [HOST] + CRASH_HOSTS], start=False)
    try:
        expect = {}         # (host, rcpt) -> raw message
        absent = set()      # (host, rcpt) that must not be stored
        i = 0
        for point, stored in PUT_POINTS:
            for n in (1, 2, 3):
                i += 1
                raw, _ = crash_message(i, rnd)
                rcpt = "m%d" % i
                env = dict(os.environ, SDPS_FAULT="%s:%d" % (point, n))
                r = harness.run(d.deliver_argv(
                    CRASH_SENDER, [rcpt + "@" + h for h in CRASH_HOSTS]),
                    stdin=raw, env=env)
                assert r.rc == -signal.SIGKILL, (point, n, r)
                for k, h in enumerate(CRASH_HOSTS, 1):
                    if k < n or (k == n and stored):
                        expect[(h, rcpt)] = raw
                    else:
                        absent.add((h, rcpt))
                # and a delivery that is not killed, between any two
                i += 1
                raw, _ = crash_message(i, rnd)
                rcpt = "m%d" % i
                d.deliver_ok(raw, [rcpt + "@" + HOST],
                             sender=CRASH_SENDER)
                expect[(HOST, rcpt)] = raw

        # the kills left tmp files and orphans, nothing worse
        r = d.fsck()
        assert r.rc == 1, r
        assert "file missing" not in r.text, r
        assert "undecodable" not in r.text and "no record" not in r.text, r
        r = d.fsck(repair=True)
        assert r.rc == 0, r
        r = d.fsck()
        assert r.rc == 0, r
        assert "0 orphan" in r.text, r

        seen = {}
        for m in d.spool_ls()["messages"]:
            assert len(m["rcpts"]) == 1
            seen[(m["host"], m["rcpts"][0])] = m
        assert set(seen) == set(expect), (
            "lost: %s; kept but killed before the commit: %s"
            % (sorted(set(expect) - set(seen)),
               sorted(set(seen) & absent)))
        for key, m in seen.items():
            raw = expect[key]
            wire = raw.replace(b"\n", b"\r\n").replace(b"\r\n.dot",
                                                      b"\r\n..dot")
            data = d.ctl_ok("spool", "show",
                            "%s:%d" % (m["punt"], m["id"])).out
            assert data == wire, key
            assert m["stored_octets"] == len(wire)
            rp = b"Return-Path: <%s>\r\n" % CRASH_SENDER.encode()
            assert m["octets"] == len(rp) + len(raw.replace(b"\n", b"\r\n"))

        # what POP3 clients see
        d.start()
        for h in [HOST] + CRASH_HOSTS:
            mine = {k[1]: v for k, v in expect.items() if k[0] == h}
            with d.login(h, PW1) as p:
                nmsg, octets = p.stat()
                assert nmsg == len(mine), h
                for k in range(1, nmsg + 1):
                    got = p.retr(k)
                    head, rest = got.split(b"\r\n", 1)
                    assert head == rp[:-2], h
                    subj = rest.split(b"\r\n", 1)[0]
                    i = int(subj.split()[-1])
                    raw = mine.pop("m%d" % i)
                    assert rest == raw.replace(b"\n", b"\r\n"), (h, i)
                assert mine == {}
                assert p.quit().startswith("+OK")
        # the spool still works after all that
        d.deliver_ok(b"Subject: after\n\nok\n", ["after@" + HOST])
        d.stop()
        assert d.fsck().rc == 0
    finally:
        d.stop()
        d.spool.cleanup()


def test_ctl_markers_killed_at_crash_points():
    """sdps-ctl smtp claim/release/done killed before and after their
    commits: the marker is either set or not, the message either there or
    gone, and fsck --repair leaves the punt clean."""
    s = harness.Spool(npunts=1)
    try:
        s.add_host(HOST)
        s.deliver_ok(b"Subject: m\n\nhello\n", ["joe@" + HOST])
        m = s.spool_ls()["messages"][0]
        ref = "finchley:%d" % m["id"]
        ctl = [harness.binary("sdps-ctl"), "-c", s.conf]

        def killed_at(point, *args):
            env = dict(os.environ, SDPS_FAULT=point)
            r = harness.run(ctl + list(args), env=env)
            assert r.rc == -signal.SIGKILL, (point, args, r)

        def flags():
            ms = s.spool_ls()["messages"]
            return ms[0]["flags"] if ms else None

        killed_at("store.marker.before_commit", "smtp", "claim", ref,
                  "--agent", "a")
        assert flags() == []
        killed_at("store.marker.committed", "smtp", "claim", ref,
                  "--agent", "a")
        assert flags() == ["IN_DELIVERY"]
        killed_at("store.marker.before_commit", "smtp", "release", ref)
        assert flags() == ["IN_DELIVERY"]
        killed_at("store.marker.committed", "smtp", "release", ref)
        assert flags() == []
        s.ctl_ok("smtp", "claim", ref, "--agent", "a")
        killed_at("store.del.before_commit", "smtp", "done", ref)
        assert flags() == ["IN_DELIVERY"]
        assert s.fsck().rc == 0
        path = s.spool_file("finchley", m["id"])
        killed_at("store.del.committed", "smtp", "done", ref)
        assert flags() is None
        assert os.path.exists(path)     # committed, not yet unlinked
        r = s.fsck()
        assert r.rc == 1 and "file without a record" in r.text, r
        assert s.fsck(repair=True).rc == 0
        assert not os.path.exists(path)
        r = s.fsck()
        assert r.rc == 0, r
    finally:
        s.cleanup()


# ---- full disk ----

def try_mount_tmpfs(path, size="512k"):
    if os.geteuid() != 0:
        return False
    cp = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size,
                         "tmpfs", path], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
    return cp.returncode == 0


def build_shim(outdir):
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "enospc_shim.c")
    so = os.path.join(outdir, "enospc_shim.so")
    subprocess.run(["cc", "-D_GNU_SOURCE", "-shared", "-fPIC", "-o", so,
                    src, "-ldl"], check=True)
    return so


def fill_and_check(s, full_punt, env=None):
    """Deliver to full_punt until 75; check fsck and the fallback."""
    msg = b"Subject: fill\n\n" + (b"f" * 76 + b"\n") * 600   # ~46 KB
    stored, rc = [], None
    for i in range(200):
        r = harness.run(s.deliver_argv("a@example.org",
                                       ["fill%d@%s" % (i, HOST)],
                                       punt=full_punt), stdin=msg, env=env)
        if r.rc != 0:
            rc = r
            break
        stored.append("fill%d" % i)
    assert rc is not None, "the punt never filled up"
    assert rc.rc == EX_TEMPFAIL, rc
    lines = rc.errtext.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sdps-deliver: "), rc
    # once more: still full, still 75, still nothing half-written
    r = harness.run(s.deliver_argv("a@example.org", ["again@" + HOST],
                                   punt=full_punt), stdin=msg, env=env)
    assert r.rc == EX_TEMPFAIL, r
    r = harness.run([harness.binary("sdps-ctl"), "-c", s.conf, "fsck"],
                    env=env)
    assert r.rc == 0, r
    # without -p the full punt is skipped and the other one takes it
    for i in range(6):
        r = harness.run(s.deliver_argv("a@example.org",
                                       ["spill%d@%s" % (i, HOST)]),
                        stdin=msg, env=env)
        assert r.rc == 0, r
    listed = {m["rcpts"][0]: m for m in s.spool_ls()["messages"]}
    for rcpt in stored:
        assert listed[rcpt]["punt"] == full_punt
    for i in range(6):
        assert listed["spill%d" % i]["punt"] != full_punt
    assert "again" not in listed
    for rcpt in stored + ["spill0"]:
        m = listed[rcpt]
        assert s.ctl_ok("spool", "show", "%s:%d" % (m["punt"], m["id"])) \
            .out == msg.replace(b"\n", b"\r\n")
    return len(stored)


def test_full_disk_tempfail():
    root = tempfile.mkdtemp(prefix="sdps-full-")
    mnt = os.path.join(root, "mnt")
    os.makedirs(mnt)
    mounted = try_mount_tmpfs(mnt)
    try:
        env = None
        overrides = {"store": {"map_size_mb": 1}}
        if not mounted:
            env = dict(os.environ)
            env["LD_PRELOAD"] = build_shim(root)
            env["ASAN_OPTIONS"] = "verify_asan_link_order=0"
        s = harness.Spool(npunts=2, root=root, overrides=overrides,
                          punt_paths={"finchley": os.path.join(mnt, "p")})
        s.add_host(HOST)
        if env is not None:
            # only the spool's tmp/ is "full": earlier messages fit
            env["SDPS_ENOSPC_DIR"] = os.path.join(mnt, "p", "tmp")
        n = fill_and_check(s, "finchley", env)
        if mounted:
            assert n > 0      # some mail fit before the disk filled
    finally:
        if mounted:
            subprocess.run(["umount", mnt])
        harness.shutil.rmtree(root, ignore_errors=True)


def test_enospc_shim_tempfail():
    """The LD_PRELOAD path runs too, so the fallback itself is tested."""
    root = tempfile.mkdtemp(prefix="sdps-shim-")
    try:
        s = harness.Spool(npunts=2, root=root)
        s.add_host(HOST)
        env = dict(os.environ)
        env["LD_PRELOAD"] = build_shim(root)
        env["ASAN_OPTIONS"] = "verify_asan_link_order=0"
        env["SDPS_ENOSPC_DIR"] = os.path.join(s.punt_paths["finchley"],
                                              "tmp")
        n = fill_and_check(s, "finchley", env)
        assert n == 0
    finally:
        harness.shutil.rmtree(root, ignore_errors=True)
