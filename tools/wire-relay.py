#!/usr/bin/python3
"""wire-relay: delay and loss on one veth link, in user space.

This kernel has no sch_netem (CONFIG_NET_SCH_NETEM is not set), so `tc
qdisc ... netem` cannot add delay or loss.  The test lab
(tests/integration/netlab.py) instead puts a "wire" network namespace in
the middle of a link:

    machine:eth0 <-veth-> wire:a  [this relay]  wire:b <-veth-> switch:port

and runs this program in it.  It reads every Ethernet frame arriving on
one end (an AF_PACKET raw socket per end, promiscuous) and writes it out
of the other end D ms later, or drops it with probability P.  The
random generator is seeded, one stream per direction, so a run drops
the same frames given the same traffic.  The wire namespace has no
addresses, so its own stack never answers anything: it is a cable.

    wire-relay.py relay A B [--seed N] [--delay MS] [--loss PCT]
        prints "ready" once both ends are open; then reads commands on
        stdin, one a line, each answered on stdout:
            set MS PCT   -> "ok MS PCT"   (new delay and loss from now on)
            stats        -> "stats a2b_in a2b_drop b2a_in b2a_drop sent err"
        and exits at EOF on stdin (the lab closes the pipe to stop it).

    wire-relay.py offload-off DEV...
        turns off checksum offload, scatter-gather, TSO, GSO and GRO on
        the devices (the SIOCETHTOOL ioctl, as `ethtool -K` does; Debian
        has no ethtool here).  A frame read from a raw socket carries
        the checksum the sender left for the device to fill in, and a
        TSO frame can be 64 KiB, which a raw socket cannot send on: with
        the offloads off at every device that transmits into the wire,
        the kernel segments and checksums before the frame reaches it.
"""

import ctypes
import fcntl
import heapq
import os
import random
import select
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_OUTGOING = 4
SIOCETHTOOL = 0x8946
# legacy ethtool "set one feature" commands (linux/ethtool.h)
ETHTOOL_OFF = (0x17,    # ETHTOOL_STXCSUM
               0x15,    # ETHTOOL_SRXCSUM
               0x19,    # ETHTOOL_SSG
               0x1f,    # ETHTOOL_STSO
               0x24,    # ETHTOOL_SGSO
               0x2c)    # ETHTOOL_SGRO


def offload_off(devs):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for dev in devs:
        for cmd in ETHTOOL_OFF:
            val = ctypes.create_string_buffer(struct.pack("II", cmd, 0))
            ifr = struct.pack("16sP", dev.encode(),
                              ctypes.addressof(val))
            try:
                fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr)
            except OSError:
                # a feature the device cannot change is already off
                pass
    s.close()


def open_end(dev):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                      socket.htons(ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.bind((dev, ETH_P_ALL))
    mreq = struct.pack("iHH8s", socket.if_nametoindex(dev),
                       PACKET_MR_PROMISC, 0, b"")
    s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
    s.setblocking(False)
    return s


def relay(a, b, seed, delay_ms, loss_pct):
    sa, sb = open_end(a), open_end(b)
    # one stream per direction: a2b's draws do not depend on b2a's traffic
    rng = {sa: random.Random(seed * 2 + 1), sb: random.Random(seed * 2 + 2)}
    other = {sa: sb, sb: sa}
    st = {"a2b_in": 0, "a2b_drop": 0, "b2a_in": 0, "b2a_drop": 0,
          "sent": 0, "err": 0}
    names = {sa: ("a2b_in", "a2b_drop"), sb: ("b2a_in", "b2a_drop")}
    delay = delay_ms / 1000.0
    loss = loss_pct / 100.0
    queue = []
    seq = 0
    stdin = sys.stdin.buffer.raw
    cmdbuf = b""
    print("ready", flush=True)
    while True:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            try:
                out.send(frame)
                st["sent"] += 1
            except OSError:
                # the far end is down (ip link set down): the frame is lost
                st["err"] += 1
        timeout = max(0.0, queue[0][0] - now) if queue else None
        r, _, _ = select.select([sa, sb, stdin], [], [], timeout)
        for s in r:
            if s is stdin:
                chunk = os.read(stdin.fileno(), 4096)
                if not chunk:
                    return
                cmdbuf += chunk
                while b"\n" in cmdbuf:
                    ln, cmdbuf = cmdbuf.split(b"\n", 1)
                    w = ln.decode().split()
                    if w[:1] == ["set"] and len(w) == 3:
                        delay = float(w[1]) / 1000.0
                        loss = float(w[2]) / 100.0
                        print("ok %s %s" % (w[1], w[2]), flush=True)
                    elif w[:1] == ["stats"]:
                        print("stats %(a2b_in)d %(a2b_drop)d %(b2a_in)d "
                              "%(b2a_drop)d %(sent)d %(err)d" % st,
                              flush=True)
                    else:
                        print("error unknown command", flush=True)
                continue
            # drain what is there; a frame we sent ourselves comes back
            # as PACKET_OUTGOING and is not relayed again
            for _ in range(256):
                try:
                    frame, addr = s.recvfrom(65536)
                except BlockingIOError:
                    break
                except OSError:
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue
                cin, cdrop = names[s]
                st[cin] += 1
                if loss > 0 and rng[s].random() < loss:
                    st[cdrop] += 1
                    continue
                if delay <= 0 and not queue:
                    try:
                        other[s].send(frame)
                        st["sent"] += 1
                    except OSError:
                        st["err"] += 1
                    continue
                seq += 1
                heapq.heappush(queue, (time.monotonic() + delay, seq,
                                       other[s], frame))


def main(argv):
    if len(argv) >= 2 and argv[1] == "offload-off":
        offload_off(argv[2:])
        return 0
    if len(argv) >= 4 and argv[1] == "relay":
        a, b = argv[2], argv[3]
        opts = {"--seed": "1", "--delay": "0", "--loss": "0"}
        rest = argv[4:]
        while rest:
            if rest[0] not in opts or len(rest) < 2:
                print("unknown option %s" % rest[0], file=sys.stderr)
                return 2
            opts[rest[0]] = rest[1]
            rest = rest[2:]
        relay(a, b, int(opts["--seed"]), float(opts["--delay"]),
              float(opts["--loss"]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
