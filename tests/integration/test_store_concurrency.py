"""Store under load, under SIGKILL and on a full disk, through the CLI."""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

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
    """A message of 1-300 KB so the kill lands in every phase."""
    size = rnd.randint(1000, 300000)
    line = b"%06d " % i + b"z" * 70
    body = (line + b"\n") * (size // (len(line) + 1))
    raw = b"Subject: crash %d\n\n.dot\n" % i + body
    wire = raw.replace(b"\n", b"\r\n").replace(b"\r\n.dot", b"\r\n..dot")
    return raw, wire


def test_sigkill_at_random_points():
    rnd = random.Random(20261128)
    s = harness.Spool(npunts=2)
    try:
        s.add_host(HOST)
        # Learn how long a delivery takes so kills spread over all of it;
        # this only shapes the kill times, never a verdict.
        t0 = time.monotonic()
        for i in range(5):
            raw, _ = crash_message(100000 + i, rnd)
            s.deliver_ok(raw, ["warm%d@%s" % (i, HOST)])
        span = max((time.monotonic() - t0) / 5 * 1.5, 0.002)

        expect = {}         # rcpt local part -> wire bytes
        succeeded = set()
        killed = 0
        rounds = 300
        for i in range(rounds):
            raw, wire = crash_message(i, rnd)
            rcpt = "m%d" % i
            expect[rcpt] = wire
            p = subprocess.Popen(
                s.deliver_argv("crash@example.org", [rcpt + "@" + HOST]),
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
            delay = rnd.uniform(0, span)
            t_end = time.monotonic() + delay
            try:
                p.stdin.write(raw)
                p.stdin.close()
            except BrokenPipeError:
                pass
            rest = t_end - time.monotonic()
            if rest > 0:
                time.sleep(rest)
            p.send_signal(signal.SIGKILL)
            rc = p.wait()
            if rc == 0:
                succeeded.add(rcpt)
            else:
                assert rc == -signal.SIGKILL, rc
                killed += 1
        print("crash: %d killed, %d stored, span %.4fs" % (killed, len(succeeded), span))
        # the test is only meaningful if both outcomes happened a lot
        assert killed >= 30, killed
        assert len(succeeded) >= 30, len(succeeded)

        r = s.fsck(repair=True)
        assert r.rc == 0, r
        r = s.fsck()
        assert r.rc == 0, r
        assert "0 orphan" in r.text

        seen = {}
        for m in s.spool_ls()["messages"]:
            assert len(m["rcpts"]) == 1
            seen[m["rcpts"][0]] = m
        for rcpt in succeeded:
            assert rcpt in seen, "%s lost after exit 0" % rcpt
        # every message the index holds is intact, acknowledged or not
        for rcpt, m in seen.items():
            if rcpt.startswith("warm"):
                continue
            data = s.ctl_ok("spool", "show",
                            "%s:%d" % (m["punt"], m["id"])).out
            assert data == expect[rcpt], rcpt
            assert m["stored_octets"] == len(expect[rcpt])
        # the spool still works after all that
        s.deliver_ok(b"Subject: after\n\nok\n", ["after@" + HOST])
        assert s.fsck().rc == 0
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
