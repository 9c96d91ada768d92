#!/bin/sh
# Install the Debian packages sdps builds and tests with, when missing.
# As root it runs apt-get; otherwise it prints the apt-get line.
PKGS="gcc clang make pkg-config liblmdb-dev lmdb-utils libsodium-dev
libinih-dev libssl-dev openssl libcmocka-dev libclang-rt-14-dev python3 python3-pytest
fetchmail mpop getmail6 curl swaks python3-aiosmtpd valgrind procps
iproute2 nftables postfix man-db groff-base"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
	    missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "missing packages; run as root:" >&2
	echo "apt-get install -y$missing" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q && apt-get install -y -q --no-install-recommends $missing
