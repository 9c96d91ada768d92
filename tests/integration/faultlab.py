"""The machinery of the fault tests (issue 11 item 5; test_faults.py):
the lab's world of 2 punt servers, 2 front ends, Postfix and a client
machine (World), the 100-session load (Load), the final drain, the
invariants, the lock holder, and run_fault, which puts one fault in the
middle of the load and makes one row of the fault table (ROWS)."""

import collections
import json
import os
import poplib
import random
import re
import smtplib
import socket
import ssl
import threading
import time

import daemon as D
import harness
import netlab
import pki

PA, PB = "10.211.0.11", "10.211.0.12"
FE = {"fe1": "10.211.0.21", "fe2": "10.211.0.22"}
MX = "10.211.0.31"
CL = ["10.211.0.%d" % (101 + i) for i in range(5)]
PUNT_PORT = 7110
PUNTS = {"alpha": ("pa", PA, "punt-a"), "bravo": ("pb", PB, "punt-b")}
HOSTS = ["h%d.example.net" % i for i in range(10)]
USERS = ["u%d" % i for i in range(10)]
PUNT_SEND_TIMEOUT = 20      # [server] send_timeout of the punt servers
BARRIER_S = 150             # the longest fault() holds the load open
NSESSIONS = 100
LINK_TIMEOUT = 5            # [link] timeout: the per-command deadline
PUNT_IDLE = 120             # [punt_server] idle_timeout, > FE_IDLE
FE_IDLE = 90                # [server] idle_timeout of the front ends:
                            # the load's sessions wait through a fault
BIG_OCTETS = 40 << 20       # more than every socket buffer on the path
ROWS = []


def pw(host):
    return "pw-" + host


def punt_server_missing():
    try:
        with open(harness.binary("sdpsd"), "rb") as f:
            exe = f.read()
    except OSError as e:
        return "no sdpsd binary: %s" % e
    if b"sdps-punt" not in exe:
        return ("this sdpsd has no punt server yet (punt_listen, issue "
                "11): the fault tests need it")
    return None


# ---------------------------------------------------------------- world --

class World:
    """The lab and its daemons, shared by the module's tests."""

    def __init__(self, root, local=False):
        """local=True: each front end keeps the two punts on its own disk
        (no punt servers): the load, Postfix and the invariants without
        remote punts, runnable before the punt server exists."""
        self.root = root
        self.local = local
        self.lab = netlab.Lab()
        self.acked_direct = set()   # Message-IDs sdps-deliver stored
        self.retrieved = set()      # Message-IDs some session got in full
        self.removed = []           # (t_quit_ok, {ids}) of +OK QUITs
        self.sessions = []          # every session record, all tests
        self.reported = set()       # violations a test already failed on
        self.seq = 0
        self.lock = threading.Lock()
        self.punts = {}
        self.fes = {}
        try:
            self._build()
        except BaseException:
            # the fixture never gets the world: remove the lab here
            self.close()
            raise

    def _build(self):
        lab = self.lab
        lab.add_machine("pa", [PA])
        lab.add_machine("pb", [PB], wire=True)
        for fe, addr in FE.items():
            lab.add_machine(fe, [addr])
        lab.add_machine("mx", [MX])
        lab.add_machine("cl", CL)
        self.pki = pki.make_pki(os.path.join(self.root, "pki"),
                                servers=("punt-a", "punt-b"),
                                clients=("fe1", "fe2"),
                                server_ips=(PA, PB))
        self.uid = {}
        for name, (role, addr, cn) in PUNTS.items():
            if not self.local:
                self.punts[name] = self._punt_server(name, role, addr, cn)
        self.fes = {fe: self._front_end(fe, addr) for fe, addr in FE.items()}
        routes = {}
        for i, h in enumerate(HOSTS):
            fe = "fe1" if i < len(HOSTS) // 2 else "fe2"
            routes[h] = "lmtp:inet:[%s]:24" % FE[fe]
        self.pf = netlab.NsPostfix(lab, "mx", os.path.join(self.root, "mx"), MX,
                                   routes)
        self.pf.start()

    # -- machines --
    def _punt_server(self, name, role, addr, cn):
        leaf = self.pki[cn]
        d = os.path.join(self.root, role)
        secs = [("server", {"listen": "127.0.0.1:110",
                            # one worker per link: every session of
                            # both front ends holds one
                            "max_workers": 2 * NSESSIONS + 40,
                            "max_spare": 16,
                            # a restart waits this long for open links
                            "shutdown_grace": 2,
                            # the link's TCP_USER_TIMEOUT at the punt: a
                            # silent front end's locks go after this
                            # (keepalive alone would take 25 s, but
                            # TCP_USER_TIMEOUT overrides its probe count)
                            "send_timeout": PUNT_SEND_TIMEOUT,
                            "punt_listen": "%s:%d %s" % (addr, PUNT_PORT,
                                                         name)}),
                ("tls", {"cert": leaf["cert"], "key": leaf["key"]}),
                ("punt_server", {"ca": self.pki["ca"], "allow": "fe1 fe2",
                                 "idle_timeout": PUNT_IDLE}),
                ("auth", {"path": os.path.join(d, "auth"),
                          "hash_cost": "min"}),
                ("punt " + name, {"path": os.path.join(d, "punts", name)})]
        s = netlab.NsSdpsd(self.lab, role, d, secs,
                           ready=lambda srv: self._greeting(name) is not None)
        s.ctl_ok("punt", "create")
        for h in HOSTS:
            s.add_host(h, pw(h))
        s.start()
        self.uid[name] = self._greeting(name).split()[3]
        return s

    def _greeting(self, name):
        """The punt's greeting over a mutual-TLS link, or None."""
        role, addr, cn = PUNTS[name]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(self.pki["ca"])
        ctx.load_cert_chain(self.pki["fe1"]["cert"], self.pki["fe1"]["key"])
        try:
            raw = netlab.tcp_connect(self.lab, "cl", addr, PUNT_PORT, 5)
            with ctx.wrap_socket(raw, server_hostname=cn) as s:
                s.settimeout(5)
                buf = b""
                while not buf.endswith(b"\r\n"):
                    chunk = s.recv(512)
                    if not chunk:
                        return None
                    buf += chunk
                g = buf.decode().strip()
                return g if g.startswith("+OK sdps-punt %s " % name) \
                    else None
        except (OSError, ssl.SSLError):
            return None

    def _front_end(self, fe, addr):
        d = os.path.join(self.root, fe)
        secs = [("server", {"listen": "%s:110" % addr,
                            "lmtp_listen": "%s:24" % addr,
                            "idle_timeout": FE_IDLE,
                            # a worker serves one connection at a time
                            # (docs/design.md §7): half the load, the
                            # holders and the drain, plus LMTP's 8
                            "max_workers": NSESSIONS + 20,
                            "max_spare": 16}),
                ("auth", {"path": os.path.join(d, "auth"),
                          "hash_cost": "min"}),
                ("link", {"timeout": LINK_TIMEOUT,
                          "connect_timeout_ms": 5000, "down_time": 5})]
        for name, (role, paddr, cn) in PUNTS.items():
            if self.local:
                secs.append(("punt " + name,
                             {"path": os.path.join(d, "punts", name)}))
                continue
            secs.append(("punt " + name, {
                "address": "%s:%d" % (paddr, PUNT_PORT),
                "ca": self.pki["ca"], "cert": self.pki[fe]["cert"],
                "key": self.pki[fe]["key"], "server_name": cn}))
        s = netlab.NsSdpsd(self.lab, fe, d, secs, pop3=(addr, 110))
        if self.local:
            s.ctl_ok("punt", "create")
        # every machine keeps its own auth store, with the same hosts
        for h in HOSTS:
            s.add_host(h, pw(h))
        return s.start()

    def close(self):
        self.lab.close()
        for d in list(self.punts.values()) + list(self.fes.values()):
            d._close_log()

    # -- mail --
    def next_mid(self, tag):
        with self.lock:
            self.seq += 1
            return "%s.%d@lab" % (tag, self.seq)

    def submit(self, rcpts, tag="m", body=None, smtp=None):
        """Send messages through Postfix: [(rcpt, mid)]."""
        out = []
        own = smtp is None
        if own:
            with self.lab.enter("cl"):
                smtp = smtplib.SMTP(MX, 25, timeout=30)
        try:
            for r in rcpts:
                mid = self.next_mid(tag)
                smtp.sendmail("s@example.org", [r], message(r, mid, body))
                out.append((r, mid))
        finally:
            if own:
                smtp.quit()
        return out

    def deliver_on_punt(self, punt, rcpt, mid, body):
        """sdps-deliver on the punt machine itself, into its local punt:
        the message lands on a known punt."""
        srv = self.punts[punt]
        r = harness.run(self.lab.argv(PUNTS[punt][0], [
            harness.binary("sdps-deliver"), "-c", srv.conf, "-f",
            "s@example.org", rcpt]), stdin=message(rcpt, mid, body))
        assert r.rc == 0, "sdps-deliver on %s: %r" % (punt, r)
        with self.lock:
            self.acked_direct.add(mid)

    def acked(self):
        return self.pf.acked() | self.acked_direct

    def punt_msgs(self):
        where = self.fes if self.local else self.punts
        return {p: sum(x["msgs"] for x in
                       s.ctl_json("spool", "stat")["punts"])
                for p, s in where.items()}

    def restart(self, srv):
        if srv.running():
            srv.kill()
        srv.start()


def message(rcpt, mid, body=None):
    if body is None:
        body = "message %s for %s\r\n" % (mid, rcpt) + "x" * 400 + "\r\n"
    return ("From: s@example.org\r\nTo: %s\r\nMessage-ID: <%s>\r\n"
            "Subject: lab %s\r\n\r\n%s" % (rcpt, mid, mid, body))


MID_RX = re.compile(rb"^Message-ID: <([^>]*)>", re.I | re.M)


def mid_of(lines):
    m = MID_RX.search(b"\r\n".join(lines[:40]))
    return m.group(1).decode() if m else None


def write_table(root):
    if not ROWS:
        return
    path = os.environ.get("SDPS_FAULT_TABLE") or os.path.join(
        harness.bin_dir(), "fault-table.json")
    with open(path, "w") as f:
        json.dump(ROWS, f, indent=1)
    print("\nfault table (%s):" % path)
    print("| fault | what the clients saw | messages lost | locks freed "
          "after |")
    print("|---|---|---|---|")
    for r in ROWS:
        print("| %s | %s | %d | %s |" % (
            r["fault"], r["client_saw"], r["lost"],
            "%.2f s" % r["lock_free_s"] if r["lock_free_s"] is not None
            else "-"))


# ----------------------------------------------------------------- load --

class Client(poplib.POP3):
    """poplib from the client machine, from a chosen source address."""

    def __init__(self, lab, fe, source, timeout=30, enter=True):
        self._src = source
        if enter:
            with lab.enter("cl"):
                super().__init__(FE[fe], 110, timeout=timeout)
        else:
            super().__init__(FE[fe], 110, timeout=timeout)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self._src, 0))


def err_text(e):
    a = e.args[0] if e.args else e
    return a.decode("latin-1", "replace") if isinstance(a, bytes) \
        else str(a)


def one_session(world, fe, src, user, enter=True, max_retr=20,
                after_login=None, keep=None):
    """A POP3 session: login, UIDL, after_login() (the load holds its
    sessions open there), RETR each (up to max_retr) and DELE it unless
    keep(uidl) says to leave it for a later session, QUIT.  Returns its
    record; never raises for a server's answer.  got: the Message-IDs
    retrieved in full; uidls: their UIDLs; dele: the UIDLs deleted."""
    rec = {"fe": fe, "src": src, "user": user, "login": None,
           "t_pass": None, "got": [], "uidls": [], "temp": [], "errs": [],
           "quit": None, "t_quit": None, "dropped": False, "dele": set()}
    try:
        c = Client(world.lab, fe, src, enter=enter)
    except OSError as e:
        rec["login"] = "connect: %s" % e.__class__.__name__
        return rec
    try:
        c.user(user)
        rec["t_pass"] = time.monotonic()
        c.pass_(pw(user.rsplit("@", 1)[-1]))
        rec["login"] = "+OK"
        uidl = {}
        for ln in c.uidl()[1]:
            n, u = ln.decode().split()
            uidl[int(n)] = u
        if after_login is not None:
            after_login()
        dele = []
        for n in sorted(uidl)[:max_retr]:
            try:
                lines = c.retr(n)[1]
            except poplib.error_proto as e:
                t = err_text(e)
                if t == "-ERR EOF":
                    raise
                (rec["temp"] if "[SYS/TEMP]" in t else rec["errs"]).append(
                    (uidl[n], t))
                continue
            mid = mid_of(lines)
            if mid:
                rec["got"].append(mid)
                rec["uidls"].append(uidl[n])
                if keep is None or not keep(uidl[n]):
                    dele.append(n)
        ids = set()
        for n in dele:
            c.dele(n)
            ids.add(uidl[n])
        rec["dele"] = ids
        try:
            rec["quit"] = c.quit().decode("latin-1")
            rec["t_quit"] = time.monotonic()
        except poplib.error_proto as e:
            rec["quit"] = err_text(e)
    except poplib.error_proto as e:
        t = err_text(e)
        if rec["login"] is None:
            rec["login"] = t
        else:
            rec["dropped"] = True
            rec["errs"].append(("", t))
    except (OSError, EOFError) as e:
        rec["dropped"] = True
        rec["errs"].append(("", e.__class__.__name__))
    finally:
        try:
            c.close()
        except OSError:
            pass
    return rec


def record(world, rec):
    with world.lock:
        world.sessions.append(rec)
        world.retrieved.update(rec["got"])
        if rec["quit"] and rec["quit"].startswith("+OK") and rec.get("dele"):
            world.removed.append((rec["t_quit"], rec["dele"]))


class Load:
    """NSESSIONS threads, each its own user@host, from the client's
    addresses, against both front ends, session after session until
    stop(); plus a feeder sending mail through Postfix."""

    def __init__(self, world):
        self.world = world
        self.stop_ev = threading.Event()
        self.recs = []
        self.lock = threading.Lock()
        self.threads = []
        self.ended = 0
        self.cv = threading.Condition(self.lock)
        self.feed_err = None
        # every thread's first session waits here logged in, with its
        # listing taken, until the test has put the fault in place and
        # joins (release): NSESSIONS sessions open at once when the fault
        # hits, whatever the machine's speed
        self.barrier = threading.Barrier(NSESSIONS + 1)
        self.open = 0
        self.max_open = 0
        self.all_open = False

    def start(self):
        for i in range(NSESSIONS):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)
        t = threading.Thread(target=self._feed, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def _run(self, i):
        netlab.enter_for_good(self.world.lab.ns["cl"])
        user = "%s@%s" % (USERS[i % 10], HOSTS[i // 10])
        fe = "fe1" if i % 2 == 0 else "fe2"
        src = CL[i % len(CL)]
        first = [True]
        rng = random.Random(1000 + i)

        def hold():
            with self.lock:
                self.open += 1
                self.max_open = max(self.max_open, self.open)
            if first[0]:
                first[0] = False
                try:
                    self.barrier.wait(BARRIER_S)
                    self.all_open = True
                except threading.BrokenBarrierError:
                    pass
            else:
                # pacing: sessions overlap, as a real client population's
                self.stop_ev.wait(0.3)

        while not self.stop_ev.is_set():
            was_first = first[0]
            # half of what a session retrieves stays for a later one, so
            # sessions keep finding mail on both punts when a fault hits
            rec = one_session(self.world, fe, src, user, enter=False,
                              after_login=hold,
                              keep=lambda u: rng.random() < 0.5)
            rec["t_end"] = time.monotonic()
            rec["held"] = was_first     # waited at the barrier
            if rec["login"] == "+OK":
                with self.lock:
                    self.open -= 1
            record(self.world, rec)
            with self.cv:
                self.recs.append(rec)
                self.ended += 1
                self.cv.notify_all()
            # pacing, not synchronisation: 100 threads on 2 cores
            self.stop_ev.wait(0.2)

    def _feed(self):
        netlab.enter_for_good(self.world.lab.ns["cl"])
        rng = random.Random(11)
        try:
            smtp = smtplib.SMTP(MX, 25, timeout=30)
            while not self.stop_ev.is_set():
                rc = ["%s@%s" % (rng.choice(USERS), rng.choice(HOSTS))
                      for _ in range(2)]
                self.world.submit(rc, "load", smtp=smtp)
                self.stop_ev.wait(0.2)
            smtp.quit()
        except Exception as e:      # reported by stop()
            self.feed_err = e

    def wait_sessions(self, n, timeout=120, pred=None):
        """Wait until n more sessions ended (matching pred)."""
        with self.cv:
            base = len([r for r in self.recs if pred is None or pred(r)])
            deadline = time.monotonic() + timeout
            while len([r for r in self.recs if pred is None or pred(r)]) \
                    < base + n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise D.WaitTimeout("%d more sessions did not end" % n)
                self.cv.wait(min(left, 1.0))

    def wait_all_open(self, timeout=120):
        """Until every thread's first session is logged in and waiting."""
        D.wait_for(lambda: self.barrier.n_waiting >= NSESSIONS or
                   self.barrier.broken, timeout, 0.02,
                   "%d sessions open at once" % NSESSIONS)
        assert not self.barrier.broken, "the load's barrier broke"

    def release(self):
        """The test joins the barrier: the held sessions go on."""
        try:
            self.barrier.wait(10)
        except threading.BrokenBarrierError:
            pass

    def stop(self):
        self.stop_ev.set()
        self.barrier.abort()
        for t in self.threads:
            t.join(120)
        assert not any(t.is_alive() for t in self.threads), \
            "load threads did not end"
        assert self.feed_err is None, "mail feeder: %r" % (self.feed_err,)


# ---------------------------------------------------------- invariants --

def drain(world, timeout=120):
    """Host sessions on fe1 take every message until both punts are
    empty and Postfix's queue is too (bounded); returns the number of
    drain rounds."""
    deadline = time.monotonic() + timeout
    rounds = 0
    while True:
        world.pf.flush()
        for h, fe in [(h, fe) for h in HOSTS
                      for fe in (("fe1", "fe2") if world.local else
                                 ("fe1",))]:
            while True:
                rec = one_session(world, fe, CL[0], h, max_retr=10000)
                rec["drain"] = True
                record(world, rec)
                assert not rec["temp"], "drain: %r" % (rec,)
                if rec["login"] == "+OK" or time.monotonic() > deadline:
                    break
                # [IN-USE]: a lock of the fault not yet freed
                time.sleep(0.2)
        rounds += 1
        if os.environ.get("SDPS_LAB_DEBUG"):
            print("drain round %d: punts %r queue empty %s" % (
                rounds, world.punt_msgs(), world.pf.queue_empty()))
        if world.pf.queue_empty() and \
                not any(world.punt_msgs().values()):
            return rounds
        assert time.monotonic() < deadline, \
            "not drained: punts %r, postfix queue empty %s" % (
                world.punt_msgs(), world.pf.queue_empty())
        time.sleep(0.5)


def check_invariants(world, recs, failed_uids):
    acked = world.acked()
    lost = acked - world.retrieved
    # 2: nothing retrieved after a QUIT that removed it answered +OK
    # (by UIDL: an MTA may deliver a message twice when a 250 is lost,
    # and the second copy is another message with the same Message-ID)
    gone = {}
    for t_quit, ids in world.removed:
        for i in ids:
            gone[i] = min(t_quit, gone.get(i, t_quit))
    back = [(i, r["user"]) for r in world.sessions if r["t_pass"]
            for i in r["uidls"] if i in gone and r["t_pass"] > gone[i]]
    # 3: [SYS/TEMP] only for the failed punt's messages
    wrong = [(u, t, r["user"]) for r in recs for u, t in r["temp"]
             if u[:16] not in failed_uids]
    # a violation fails the test that saw it, and only that one
    lost -= world.reported
    back = [b for b in back if b not in world.reported]
    world.reported.update(lost)
    world.reported.update(back)
    assert not lost, "acknowledged messages lost: %s" % sorted(lost)[:20]
    assert not back, "messages back after QUIT +OK: %r" % back[:10]
    assert not wrong, "[SYS/TEMP] for a punt that did not fail: %r" % (
        wrong[:10],)
    return len(lost)


def median_session(recs):
    """Median seconds from PASS to the end of a session that logged in,
    but the first ones held at the barrier (reported, never judged: it
    depends on the machine)."""
    d = sorted(r["t_end"] - r["t_pass"] for r in recs
               if r["login"] == "+OK" and r.get("t_end") and
               not r.get("held"))
    return round(d[len(d) // 2], 3) if d else None


def duplicates(world):
    """Message-IDs retrieved under more than one UIDL: the MTA delivered
    them twice (a 250 lost to the fault, the retry stored a second
    copy).  Allowed (LMTP is at-least-once), counted for the table."""
    seen = collections.defaultdict(set)
    for r in world.sessions:
        for m, u in zip(r["got"], r["uidls"]):
            seen[m].add(u)
    return sum(1 for us in seen.values() if len(us) > 1)


def summary(recs):
    c = collections.Counter()
    for r in recs:
        if r["login"] != "+OK":
            t = r["login"] or "?"
            c["login " + (t.split()[1] if t.startswith("-ERR ") and
                          len(t.split()) > 1 else t[:40])] += 1
            continue
        c["sessions"] += 1
        if r["temp"]:
            c["RETR -ERR [SYS/TEMP]"] += len(r["temp"])
        for _, t in r["errs"]:
            c["RETR " + t[:30]] += 1
        if r["dropped"]:
            c["connection dropped"] += 1
        if r["quit"] and not r["quit"].startswith("+OK"):
            c["QUIT " + r["quit"][:40]] += 1
        elif r["quit"]:
            c["QUIT +OK"] += 1
    return ", ".join("%s: %d" % kv for kv in sorted(c.items()))


def punt_locks(world, md):
    """{punt: how its last lock of maildrop md ended, or None while it
    is held}, from the punt servers' event=link-lock / link-unlock log
    lines since each started: the lock as the punt sees it."""
    out = {}
    rx_lock = re.compile(r"event=link-lock maildrop=%s(\s|$)" %
                         re.escape(md), re.M)
    rx_unlock = re.compile(r"event=link-unlock maildrop=%s how=(\S+)" %
                           re.escape(md))
    for p, srv in world.punts.items():
        text = srv.log_since_start()
        n_lock = len(rx_lock.findall(text))
        un = rx_unlock.findall(text)
        if n_lock > len(un):
            out[p] = None
        elif un:
            out[p] = un[-1]
    return out


class Holder:
    """A session that holds NAME@HOST's locks across a fault."""

    def __init__(self, world, fe, host, name="hold"):
        self.world, self.fe, self.user = world, fe, "%s@%s" % (name, host)
        self.c = Client(world.lab, fe, CL[4])
        self.c.user(self.user)
        self.c.pass_(pw(host))
        self.how = {}

    def abandon(self):
        """The client goes away without QUIT (poplib's file object
        holds the socket too: both closed, or nothing is)."""
        try:
            self.c.close()
        except OSError:
            pass

    def time_to_free(self, other_fe, limit):
        """Seconds until no punt holds the holder's maildrop lock (its
        log says so; self.how: how each lock ended), and then other_fe
        logs in as that user (not [IN-USE]); fails after limit seconds."""
        t0 = time.monotonic()
        locks = {}
        while not self.world.local:
            locks = punt_locks(self.world, self.user)
            if None not in locks.values():
                break
            if time.monotonic() - t0 > limit:
                raise AssertionError("lock of %s still held at %r after "
                                     "%ss" % (self.user, locks, limit))
            time.sleep(0.05)
        freed = time.monotonic() - t0
        self.how = locks
        seen = collections.Counter()
        while True:
            try:
                c = Client(self.world.lab, other_fe, CL[3], timeout=10)
                c.user(self.user)
                c.pass_(pw(self.user.split("@")[1]))
                c.quit()
                return freed
            except poplib.error_proto as e:
                seen[err_text(e)[:30]] += 1
            except OSError as e:
                seen[e.__class__.__name__] += 1
            if time.monotonic() - t0 > limit:
                raise AssertionError("%s cannot log in on %s after %ss: "
                                     "%r" % (self.user, other_fe, limit,
                                             seen))
            time.sleep(0.1)


def run_fault(world, name, fault, repair, failed, holder_fe="fe1",
              other_fe="fe2", during=NSESSIONS, lock_limit=None):
    """Load on; a holder session; the fault; `during` sessions end while
    it lasts; repair; the holder abandoned and the time until its lock is
    free measured; sessions after the repair; load off; drain; the
    invariants.  failed: the punts whose messages may get [SYS/TEMP]."""
    t_start = time.monotonic()
    phases = {}
    # two messages for every user of the load, on either punt, so the
    # sessions the fault hits have mail on the failed punt
    burst = world.submit(["%s@%s" % (u, h) for h in HOSTS for u in USERS
                          for _ in range(2)], "burst")
    D.wait_for(lambda: {m for _, m in burst} <= world.pf.acked(), 120, 0.2,
               "the burst to be delivered")
    phases["burst"] = time.monotonic() - t_start
    load = Load(world).start()
    extra = {}
    try:
        load.wait_all_open()
        phases["open"] = time.monotonic() - t_start
        holder = Holder(world, holder_fe, HOSTS[len(ROWS) % len(HOSTS)])
        t_fault = time.monotonic()
        extra.update(fault() or {})
        # the 100 sessions, logged in before the fault, go on into it
        load.release()
        # sessions that logged in after the fault began have met it
        load.wait_sessions(during, pred=lambda r: r["t_pass"] is not None
                           and r["t_pass"] > t_fault)
        # the holder's client goes away while the fault lasts: its front
        # end cannot tell a punt it cannot reach
        holder.abandon()
        t_repair = time.monotonic()
        repair()
        lock_free = holder.time_to_free(
            other_fe, lock_limit or PUNT_IDLE + LINK_TIMEOUT + 30)
        load.wait_sessions(during, pred=lambda r: r["t_pass"] is not None
                           and r["t_pass"] > t_repair
                           and r["login"] == "+OK")
        phases["after"] = time.monotonic() - t_start
    finally:
        load.stop()
    phases["stop"] = time.monotonic() - t_start
    drain(world)
    phases["drain"] = time.monotonic() - t_start
    uids = {world.uid[p] for p in failed}
    lost = check_invariants(world, load.recs, uids)
    extra["duplicates"] = duplicates(world)
    saw = summary(load.recs)
    if extra.get("saw"):
        saw = extra["saw"] + "; load: " + saw
    row = {"fault": name, "client_saw": saw, "lost": lost,
           "lock_free_s": extra.get("lock_free_s", lock_free),
           "lock_end": extra.get("lock_end", holder.how),
           "sessions": len(load.recs), "max_open": load.max_open,
           "median_session_s": median_session(load.recs),
           "all_open_at_once": load.all_open,
           "phases_s": {k: round(v, 2) for k, v in phases.items()}}
    row.update({k: v for k, v in extra.items() if k not in row})
    ROWS.append(row)
    print("\n%s: %s" % (name, json.dumps(row)))
    if os.environ.get("SDPS_LAB_DEBUG"):
        with open(os.path.join(world.root, "..", "lab-recs-%d.json"
                               % len(ROWS)), "w") as f:
            json.dump([dict(r, dele=sorted(r["dele"]), t_fault=t_fault)
                       for r in load.recs], f)
    return row


