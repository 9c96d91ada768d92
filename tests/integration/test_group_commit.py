"""Group commit (issue 12 item 5, docs/design.md §18.5): LMTP
deliveries of separate sessions (separate worker processes) that are in
flight together share one LMDB commit, and a kill anywhere in that shared
commit never loses a message that got 250.

No clock decides anything: the test itself holds the punt's LMDB write
lock (a write transaction through liblmdb by ctypes, in a child
process), sends K messages on K connections, waits (bounded poll) until
all K are queued in the punt's commit queue (PUNT/index/commitq, read by
the layout its header states), and only then lets the lock go.  The
first worker to get the lock commits all K; the lmtp-stored log lines
carry that commit's LMDB txn id (commit=) and its size (batch=)."""

import os
import re
import signal
import struct
import subprocess
import sys

import pytest

import daemon as D
from test_lmtp import HOST, Raw, lmtp_daemon

FSCK_AFTER = False      # the crash tests repair first, then check
K = 4

HOLDER = r"""
import ctypes, sys
lib = ctypes.CDLL("liblmdb.so.0")
env = ctypes.c_void_p()
txn = ctypes.c_void_p()
assert lib.mdb_env_create(ctypes.byref(env)) == 0
lib.mdb_env_set_maxdbs(env, 4)
lib.mdb_env_set_maxreaders(env, 4096)
rc = lib.mdb_env_open(env, sys.argv[1].encode(), 0, 0o660)
assert rc == 0, rc
rc = lib.mdb_txn_begin(env, None, 0, ctypes.byref(txn))
assert rc == 0, rc
print("locked", flush=True)
sys.stdin.readline()
lib.mdb_txn_abort(txn)
lib.mdb_env_close(env)
print("released", flush=True)
"""


class WriteLock:
    """The punt's LMDB write lock, held by a child until release()."""

    def __init__(self, punt_path):
        self.p = subprocess.Popen(
            [sys.executable, "-c", HOLDER,
             os.path.join(punt_path, "index")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.p.stdout.readline() == b"locked\n"

    def release(self):
        self.p.stdin.write(b"\n")
        self.p.stdin.flush()
        assert self.p.stdout.readline() == b"released\n"
        self.p.wait(30)


def queued(punt_path):
    """Slots of the commit queue in state PENDING (2)."""
    try:
        with open(os.path.join(punt_path, "index", "commitq"), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0
    if len(data) < 20:
        return 0
    magic, version, nslots, size, off = struct.unpack_from("<5I", data)
    if magic != 0x71706473:
        return 0
    return sum(1 for i in range(nslots)
               if struct.unpack_from("<I", data, off + i * size)[0] & 0xff
               == 2)


def body(i):
    return (b"Subject: group %d\r\n\r\n" % i +
            (b"line %d of message %d\r\n" % (0, i)) * (50 + i * 30))


def send_all(d, conns):
    for i, c in enumerate(conns):
        c.send("MAIL FROM:<s@example.org>\r\nRCPT TO:<u%d@%s>\r\nDATA\r\n"
               % (i, HOST))
        assert [c.code()[0] for _ in range(3)] == [250, 250, 354]
        c.send(body(i) + b".\r\n")


def in_flight(d, punt):
    """K connections, each with a message queued behind the held lock;
    returns the connections and the lock."""
    conns = [Raw(d.lmtp_port) for _ in range(K)]
    for c in conns:
        c.send("LHLO m\r\n")
        assert c.code()[0] == 250
    lock = WriteLock(d.spool.punt_paths[punt])
    send_all(d, conns)
    D.wait_for(lambda: queued(d.spool.punt_paths[punt]) == K,
               what="%d messages queued" % K)
    return conns, lock


def outcome(c):
    """250, 451 (or another code), or None: the connection was cut."""
    try:
        return c.code()[0]
    except (EOFError, ConnectionResetError, OSError):
        return None


def stored_subjects(d):
    out = []
    for m in d.messages():
        with open(d.spool_file(m["punt"], m["id"]), "rb") as f:
            data = f.read()
        i = int(re.match(rb"Subject: group (\d+)", data).group(1))
        assert data == body(i), i
        out.append(i)
    return out


def test_concurrent_deliveries_share_one_commit(request):
    """K sessions in K workers, all queued before the lock goes: one
    commit (the same commit= in every lmtp-stored line, batch=K), and
    every message whole.  Before group commit each message had two
    commits of its own (the id, then the record): K distinct commits."""
    d = lmtp_daemon(npunts=1)
    punt = list(d.spool.punt_paths)[0]
    try:
        conns, lock = in_flight(d, punt)
        lock.release()
        assert [outcome(c) for c in conns] == [250] * K
        for c in conns:
            c.close()
        lines = d.log_lines("event=lmtp-stored")
        commits = [D.parse_kv(ln) for ln in lines]
        assert len(commits) == K, lines
        assert len({kv["commit"] for kv in commits}) == 1, lines
        assert {kv["batch"] for kv in commits} == {str(K)}, lines
        assert sorted(stored_subjects(d)) == list(range(K))
    finally:
        D._finish(request, d)


# (point, the leader's own message is stored)
BATCH_POINTS = [
    ("store.batch.queued", False),
    ("store.batch.taken", False),
    ("store.put.renamed:2", False),
    ("store.put.dir_fsynced", False),
    ("store.put.before_commit", False),
    ("store.put.committed", True),
]


@pytest.mark.parametrize("point,kept", BATCH_POINTS)
def test_kill_inside_a_shared_commit(request, monkeypatch, point, kept):
    """K deliveries in flight, every worker armed with SDPS_FAULT=POINT
    (each process counts its own hits), so the worker that leads the
    shared commit dies there, and so may each one that leads a retry.
    The rule: a message that got 250 is stored, exactly once and whole;
    one that got 451 or was cut is stored at most once; fsck finds only
    orphans and tmp files, and is clean after --repair.  After
    store.put.committed every message is stored (the K-1 others settle
    their slots from the index and answer 250); before it, the leader's
    own message is not."""
    monkeypatch.setenv("SDPS_FAULT", point)
    d = lmtp_daemon(npunts=1)
    monkeypatch.delenv("SDPS_FAULT")
    punt = list(d.spool.punt_paths)[0]
    try:
        conns, lock = in_flight(d, punt)
        lock.release()
        got = [outcome(c) for c in conns]
        for c in conns:
            c.close()
        assert None in got, got             # somebody died there
        stored = stored_subjects(d)
        assert len(stored) == len(set(stored)), stored
        for i, code in enumerate(got):
            if code == 250:
                assert i in stored, (i, got, stored)
            else:
                assert code in (None, 451), got
        if kept:
            assert sorted(stored) == list(range(K)), (got, stored)
            assert got.count(250) == K - 1, got
        elif point != "store.batch.queued":
            # every cut worker died leading a commit that never happened
            # (its own message was in it); one killed after queuing, not
            # leading, may be stored by the next leader: at most once
            for i, code in enumerate(got):
                if code is None:
                    assert i not in stored, (i, got, stored)
        d.stop()
        r = d.fsck()
        assert "file missing" not in r.text, r
        assert "undecodable" not in r.text, r
        r = d.fsck(repair=True)
        assert r.rc == 0, r
        r = d.fsck()
        assert r.rc == 0, r
        assert sorted(stored_subjects(d)) == sorted(stored)
    finally:
        D._finish(request, d)
