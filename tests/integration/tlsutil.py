"""Certificates for the TLS tests (issue 10), made with the openssl CLI.

test_certs() makes, once per test run, a private CA and a leaf for
"localhost" / 127.0.0.1 signed by it (ECDSA P-256, the Mozilla
intermediate profile's first choice), plus a second leaf for reload
tests.  Clients verify against ca; nothing is trusted system-wide.

    c = tlsutil.test_certs()
    c.ca, c.cert, c.key, c.cert2, c.key2
"""

import atexit
import os
import shutil
import subprocess
import tempfile


class Certs:
    pass


_certs = None


def _run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def _ec_key(path):
    _run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-out", path)


def make_ca(d, cn="sdps test CA"):
    key = os.path.join(d, "ca.key")
    crt = os.path.join(d, "ca.pem")
    _ec_key(key)
    _run("openssl", "req", "-x509", "-new", "-key", key, "-out", crt,
         "-days", "30", "-subj", "/CN=" + cn,
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return crt, key


def sign_leaf(d, name, ca, ca_key, cn, san, usage):
    """A certificate for cn signed by ca, with extendedKeyUsage usage
    (serverAuth, clientAuth) and subjectAltName san (None: no SAN, for a
    CN-only identity): (cert path, key path), files d/name.*, the key
    0600.  The one recipe of the tests' certificates (tlsutil, pki and
    the punt tests)."""
    key = os.path.join(d, name + ".key")
    csr = os.path.join(d, name + ".csr")
    crt = os.path.join(d, name + ".leaf.pem")
    ext = os.path.join(d, name + ".ext")
    _ec_key(key)
    _run("openssl", "req", "-new", "-key", key, "-out", csr,
         "-subj", "/CN=" + cn)
    with open(ext, "w") as f:
        f.write("%sbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                "extendedKeyUsage=%s\n"
                % ("subjectAltName=%s\n" % san if san else "", usage))
    _run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
         "-CAcreateserial", "-out", crt, "-days", "30", "-extfile", ext)
    os.chmod(key, 0o600)
    return crt, key


def make_leaf(d, name, ca, ca_key, cn="localhost",
              san="DNS:localhost,IP:127.0.0.1"):
    """A server leaf signed by ca: (chain path, key path); the chain file
    holds the leaf then the CA, as an operator's fullchain.pem does."""
    leaf, key = sign_leaf(d, name, ca, ca_key, cn, san, "serverAuth")
    chain = os.path.join(d, name + ".pem")
    with open(chain, "w") as out:
        for p in (leaf, ca):
            with open(p) as f:
                out.write(f.read())
    return chain, key


def test_certs():
    global _certs
    if _certs is None:
        d = tempfile.mkdtemp(prefix="sdps-tls-")
        atexit.register(shutil.rmtree, d, True)
        c = Certs()
        c.dir = d
        c.ca, c.ca_key = make_ca(d)
        c.cert, c.key = make_leaf(d, "server", c.ca, c.ca_key)
        c.cert2, c.key2 = make_leaf(d, "server2", c.ca, c.ca_key)
        _certs = c
    return _certs


def fingerprint(pem_path):
    """SHA-256 fingerprint of the first certificate in pem_path, as
    openssl prints it (AA:BB:...)."""
    out = subprocess.run(["openssl", "x509", "-in", pem_path, "-noout",
                          "-fingerprint", "-sha256"], check=True,
                         capture_output=True, text=True).stdout
    return out.strip().split("=", 1)[1]
