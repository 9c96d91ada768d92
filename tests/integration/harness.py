"""Reusable helpers for the sdps integration tests.

A test makes a Spool (a temp dir with a generated config and N punts),
then drives the real binaries in $SDPS_BIN through it.  The daemon tests
build their own module on top of this one.
"""

import json
import os
import shutil
import subprocess
import tempfile

PUNT_NAMES = ("finchley", "docklands", "croydon", "stratford",
              "wembley", "ealing", "barking", "bromley")


def bin_dir():
    d = os.environ.get("SDPS_BIN")
    if not d:
        here = os.path.dirname(os.path.abspath(__file__))
        d = os.path.join(here, "..", "..", "build")
    return os.path.abspath(d)


def binary(name):
    return os.path.join(bin_dir(), name)


def render_config(sections):
    """sections: ordered list of (section_name, {key: value}) pairs."""
    out = []
    for name, keys in sections:
        out.append("[%s]" % name)
        for k, v in keys.items():
            if isinstance(v, (list, tuple)):
                for item in v:
                    out.append("%s = %s" % (k, item))
            else:
                out.append("%s = %s" % (k, v))
        out.append("")
    return "\n".join(out)


def config_sections(root, npunts=2, overrides=None, punt_paths=None):
    """The sections of a test config under root, with overrides applied.

    overrides: {section: {key: value}}; a value of None removes the key.
    punt_paths: {punt_name: path} to put a punt somewhere else.
    """
    overrides = overrides or {}
    punt_paths = punt_paths or {}
    # Only what every test needs; the daemon tests add listen, user...
    server = {
        "run_dir": os.path.join(root, "run"),
    }
    auth = {
        "path": os.path.join(root, "auth"),
        "hash_cost": "min",
    }
    store = {}
    sections = [("server", server), ("auth", auth), ("store", store)]
    for i in range(npunts):
        name = PUNT_NAMES[i]
        path = punt_paths.get(name, os.path.join(root, "punts", name))
        sections.append(("punt " + name, {"path": path}))
    by_name = dict(sections)
    for sec, keys in overrides.items():
        if sec not in by_name:
            by_name[sec] = {}
            sections.append((sec, by_name[sec]))
        for k, v in keys.items():
            if v is None:
                by_name[sec].pop(k, None)
            else:
                by_name[sec][k] = v
    return [(n, k) for n, k in sections if k or not n == "store"]


def write_config(root, npunts=2, overrides=None, punt_paths=None,
                 name="sdps.conf"):
    path = os.path.join(root, name)
    with open(path, "w") as f:
        f.write(render_config(config_sections(root, npunts, overrides,
                                              punt_paths)))
    return path


class Result:
    def __init__(self, cp):
        self.rc = cp.returncode
        self.out = cp.stdout
        self.err = cp.stderr

    @property
    def text(self):
        return self.out.decode("utf-8", "replace")

    @property
    def errtext(self):
        return self.err.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return "Result(rc=%d, out=%r, err=%r)" % (self.rc, self.out[:300],
                                                   self.err[:300])


def run(argv, stdin=b"", timeout=120, env=None):
    if isinstance(stdin, str):
        stdin = stdin.encode()
    cp = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, timeout=timeout, env=env)
    return Result(cp)


def simple_message(subject="test", body="hello\n", extra_headers=""):
    return ("From: sender@example.org\nTo: someone@example.net\n"
            "Subject: %s\n%s\n%s" % (subject, extra_headers, body))


class Spool:
    """A temp dir with a config, N created punts and an auth store."""

    def __init__(self, npunts=2, overrides=None, punt_paths=None,
                 create=True, root=None):
        self.root = root or tempfile.mkdtemp(prefix="sdps-it-")
        self.owns_root = root is None
        os.makedirs(os.path.join(self.root, "run"), exist_ok=True)
        self.npunts = npunts
        self.punts = list(PUNT_NAMES[:npunts])
        self.punt_paths = {}
        for name in self.punts:
            self.punt_paths[name] = (punt_paths or {}).get(
                name, os.path.join(self.root, "punts", name))
        self.conf = write_config(self.root, npunts, overrides, punt_paths)
        if create:
            self.ctl_ok("punt", "create")

    def rewrite_config(self, overrides=None, punt_paths=None):
        self.conf = write_config(self.root, self.npunts, overrides,
                                 punt_paths)

    def cleanup(self):
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- sdps-ctl --
    def ctl(self, *args, stdin=b"", timeout=120):
        return run([binary("sdps-ctl"), "-c", self.conf] + list(args),
                   stdin=stdin, timeout=timeout)

    def ctl_ok(self, *args, stdin=b""):
        r = self.ctl(*args, stdin=stdin)
        assert r.rc == 0, "sdps-ctl %s: %r" % (" ".join(args), r)
        return r

    def ctl_json(self, *args):
        return self.ctl_ok(*(list(args) + ["--json"])).json()

    def add_host(self, host, pw1="secret1", pw2=None):
        data = pw1 + "\n" + (pw2 + "\n" if pw2 is not None else "")
        return self.ctl_ok("host", "add", host, stdin=data)

    def spool_ls(self, host=None, punt=None):
        args = ["spool", "ls"]
        if host:
            args += ["--host", host]
        if punt:
            args += ["--punt", punt]
        return self.ctl_json(*args)

    def spool_stat(self):
        return self.ctl_json("spool", "stat")

    def total_msgs(self):
        return sum(p["msgs"] for p in self.spool_stat()["punts"])

    def fsck(self, repair=False):
        args = ["fsck"] + (["--repair"] if repair else [])
        return self.ctl(*args)

    # -- sdps-deliver --
    def deliver_argv(self, sender, rcpts, punt=None):
        argv = [binary("sdps-deliver"), "-c", self.conf]
        if punt:
            argv += ["-p", punt]
        argv += ["-f", sender] + list(rcpts)
        return argv

    def deliver(self, message, rcpts, sender="sender@example.org",
                punt=None, timeout=120):
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        return run(self.deliver_argv(sender, rcpts, punt), stdin=message,
                   timeout=timeout)

    def deliver_ok(self, message, rcpts, sender="sender@example.org",
                   punt=None):
        r = self.deliver(message, rcpts, sender, punt)
        assert r.rc == 0, "sdps-deliver: %r" % (r,)
        return r

    def spool_file(self, punt, msg_id):
        """Path of a message file: PUNT/spool/XX/ID, XX the id's low byte."""
        d = os.path.join(self.punt_paths[punt], "spool",
                         "%02x" % (msg_id & 0xff))
        for cand in (str(msg_id), "%x" % msg_id, "%016x" % msg_id):
            p = os.path.join(d, cand)
            if os.path.exists(p):
                return p
        raise FileNotFoundError("no spool file for %s:%d in %s"
                                % (punt, msg_id, d))


# master.cf of the private Postfix instances the tests run (test_postfix.py,
# netlab.py): every service in-process (no chroot), smtpd on {smtpd_addr}.
POSTFIX_MASTER_CF = """\
{smtpd_addr} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""
