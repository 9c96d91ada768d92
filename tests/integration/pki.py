"""A throwaway private CA and certificates for the punt links (issue 11),
made with the openssl CLI (ECDSA P-256).

    paths = make_pki(dir, ["punt-a", "fe1"], ips={"punt-a": "10.211.0.11"})
    paths["ca"]                       # the CA certificate (PEM)
    paths["punt-a"].cert / .key       # chain (leaf then CA) and key

Every leaf carries its name as CN and as a DNS subjectAltName (what
[punt_server] allow and [punt NAME] server_name match), plus the IP
address given for it, and may be used as TLS server and client (a punt
serves, a front end is a client; one profile keeps the helper small).
Nothing is trusted system-wide; the directory is the caller's to remove.
"""

import os
import subprocess


class Leaf:
    def __init__(self, name, cert, key):
        self.name = name
        self.cert = cert
        self.key = key

    def __repr__(self):
        return "Leaf(%r, %r, %r)" % (self.name, self.cert, self.key)


def _run(*args):
    r = subprocess.run(args, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(args),
                                       r.stderr.decode(errors="replace")))


def _ec_key(path):
    _run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-out", path)
    os.chmod(path, 0o600)


def make_ca(d, cn="sdps lab CA", stem="ca"):
    key = os.path.join(d, stem + ".key")
    crt = os.path.join(d, stem + ".pem")
    _ec_key(key)
    _run("openssl", "req", "-x509", "-new", "-key", key, "-out", crt,
         "-days", "30", "-subj", "/CN=" + cn,
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return crt, key


def make_leaf(d, name, ca, ca_key, ip=None):
    key = os.path.join(d, name + ".key")
    csr = os.path.join(d, name + ".csr")
    leaf = os.path.join(d, name + ".leaf.pem")
    chain = os.path.join(d, name + ".pem")
    ext = os.path.join(d, name + ".ext")
    _ec_key(key)
    _run("openssl", "req", "-new", "-key", key, "-out", csr,
         "-subj", "/CN=" + name)
    san = "DNS:" + name + ("" if ip is None else ",IP:" + ip)
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature\n"
                "extendedKeyUsage=serverAuth,clientAuth\n" % san)
    _run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
         "-CAcreateserial", "-out", leaf, "-days", "30", "-extfile", ext)
    with open(chain, "w") as out:
        for p in (leaf, ca):
            with open(p) as f:
                out.write(f.read())
    return Leaf(name, chain, key)


def make_pki(d, names, ips=None):
    """A CA and one leaf per name under d: {"ca": path, "ca_key": path,
    name: Leaf, ...}."""
    ips = ips or {}
    os.makedirs(d, exist_ok=True)
    ca, ca_key = make_ca(d)
    out = {"ca": ca, "ca_key": ca_key}
    for n in names:
        out[n] = make_leaf(d, n, ca, ca_key, ips.get(n))
    return out


def make_foreign_leaf(d, name):
    """A leaf from another CA (the lab's CA did not sign it)."""
    sub = os.path.join(d, "foreign")
    os.makedirs(sub, exist_ok=True)
    ca, ca_key = make_ca(sub, cn="not the lab CA")
    return make_leaf(sub, name, ca, ca_key)
