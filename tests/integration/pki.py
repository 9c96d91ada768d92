"""A throwaway private CA for the punt link (issue 11), made with the
openssl CLI: the punt servers' certificates and the front ends' client
certificates, all signed by one CA, as an operator's private CA would.

    p = pki.make_pki(dir, servers=("punt-a",), clients=("fe1",))
    p["ca"]                      # the CA certificate (PEM)
    p["punt-a"]["cert"], p["punt-a"]["key"]   # server: SAN DNS:punt-a,
                                 # DNS:localhost, IP:127.0.0.1 (+ ips)
    p["fe1"]["cert"], p["fe1"]["key"]         # client: CN and SAN fe1

A server certificate carries every address in server_ips (default
127.0.0.1) so a front end can check server_name = an IP.  foreign=True
adds p["foreign"]: a client certificate named like the first client but
signed by another CA (a front end the punt must refuse).  ECDSA P-256,
30 days; the keys are 0600.  Nothing is trusted system-wide.
"""

import os
import subprocess

import tlsutil


def _run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def _key(path):
    _run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-out", path)
    os.chmod(path, 0o600)


def _ca(d, name):
    key = os.path.join(d, name + ".key")
    crt = os.path.join(d, name + ".pem")
    _key(key)
    _run("openssl", "req", "-x509", "-new", "-key", key, "-out", crt,
         "-days", "30", "-subj", "/CN=" + name,
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return crt, key


def _leaf(d, name, ca, ca_key, san, usage, prefix=""):
    crt, key = tlsutil.sign_leaf(d, prefix + name, ca, ca_key, name, san,
                                 usage)
    return {"cert": crt, "key": key}


def make_pki(d, servers=("punt",), clients=("fe1",),
             server_ips=("127.0.0.1",), foreign=False):
    """Make the CA and the named certificates in directory d (created if
    missing); return the dict of paths described above."""
    os.makedirs(d, exist_ok=True)
    ca, ca_key = _ca(d, "sdps-punt-ca")
    out = {"ca": ca, "ca_key": ca_key, "dir": d}
    for s in servers:
        san = ",".join(["DNS:" + s, "DNS:localhost"] +
                       ["IP:" + ip for ip in server_ips])
        out[s] = _leaf(d, s, ca, ca_key, san, "serverAuth")
    for c in clients:
        out[c] = _leaf(d, c, ca, ca_key, "DNS:" + c, "clientAuth")
    if foreign and clients:
        fca, fkey = _ca(d, "foreign-ca")
        out["foreign"] = _leaf(d, clients[0], fca, fkey,
                               "DNS:" + clients[0], "clientAuth",
                               prefix="foreign-")
    return out
