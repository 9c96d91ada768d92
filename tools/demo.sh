#!/bin/sh
# The target of `make run`: serve a demo sdps from ./run/ on 127.0.0.1:1110
# (POP3 with STLS) and 127.0.0.1:1995 (POP3 over implicit TLS).
#
#   tools/demo.sh BUILD_DIR
#
# Builds nothing (make does that first).  The first run creates ./run/
# with a config, two punts (finchley and docklands), an auth store with
# the host demo.example, and sample mail for alice@ and bob@demo.example
# spread over both punts.  Later runs reuse ./run/ as it is: mail that was
# fetched and deleted stays gone, nothing is seeded twice.  Remove ./run/
# to start again from scratch.
#
# TLS: a self-signed ECDSA P-256 certificate for localhost and 127.0.0.1,
# made with the openssl CLI in ./run/tls/ when it is missing.  Clients
# trust it as its own CA (curl --cacert, openssl s_client -CAfile).
set -eu

bin=${1:-}
if [ -z "$bin" ] || [ ! -x "$bin/sdpsd" ] || [ ! -x "$bin/sdps-ctl" ] ||
    [ ! -x "$bin/sdps-deliver" ]; then
	echo "usage: $0 BUILD_DIR (with sdpsd, sdps-ctl, sdps-deliver built)" >&2
	exit 2
fi

HOST=demo.example
PW1=demo-pass-1
PW2=demo-pass-2
PORT=1110
TLSPORT=1995

top=$(pwd)/run
conf=$top/sdps.conf
seeded=$top/.seeded
tlsdir=$top/tls
cert=$tlsdir/demo-cert.pem
key=$tlsdir/demo-key.pem

ctl() {
	"$bin/sdps-ctl" -c "$conf" "$@"
}

deliver() {
	# deliver PUNT SENDER RCPT... (message on stdin)
	punt=$1
	shift
	"$bin/sdps-deliver" -c "$conf" -p "$punt" -f "$@"
}

# Drop privileges to sdps when that user exists and can reach ./run;
# otherwise the daemon keeps the user it was started as.
user=""
if [ "$(id -u)" -eq 0 ] && id sdps >/dev/null 2>&1; then
	if command -v setpriv >/dev/null &&
	    setpriv --reuid=sdps --regid=sdps --init-groups \
	    test -x "$(pwd)" 2>/dev/null; then
		user=sdps
	else
		echo "demo: user sdps cannot reach $(pwd); running as root" >&2
	fi
fi

userval=${user:-'""'}

# The demo certificate, made only if missing (or half made).
if [ ! -s "$cert" ] || [ ! -s "$key" ]; then
	if ! command -v openssl >/dev/null; then
		echo "demo: openssl is not installed (make deps)" >&2
		exit 1
	fi
	mkdir -p "$tlsdir"
	rm -f "$cert" "$key"
	(umask 077 && openssl genpkey -algorithm EC \
	    -pkeyopt ec_paramgen_curve:P-256 -out "$key.tmp")
	openssl req -x509 -new -key "$key.tmp" -out "$cert.tmp" -days 825 \
	    -subj "/CN=localhost" \
	    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
	    -addext "extendedKeyUsage=serverAuth" 2>/dev/null
	mv "$key.tmp" "$key"
	mv "$cert.tmp" "$cert"
	echo "demo: made a self-signed certificate, $cert"
fi

tls_config() {
	cat <<EOF

[tls]
; the demo's self-signed certificate (tools/demo.sh makes it)
cert = $cert
key = $key
EOF
}

if [ -f "$seeded" ] && [ -f "$conf" ]; then
	echo "demo: reusing $top (remove it for a fresh demo)"
	# The user may have changed since the demo was made.
	sed -i "s/^user = .*/user = $userval/" "$conf"
	# A demo made before TLS: its listener becomes the STLS one, and
	# implicit TLS and the certificate are added.
	if ! grep -q '^\[tls\]' "$conf"; then
		sed -i "s/^listen = 127.0.0.1:$PORT\$/listen = 127.0.0.1:$PORT tls=starttls\\
listen = 127.0.0.1:$TLSPORT tls=implicit/" "$conf"
		tls_config >>"$conf"
	fi
else
	# A half-made demo (interrupted seeding) is rebuilt from nothing, so
	# no message is ever stored twice.
	rm -rf "$top/punts" "$top/auth" "$top/run" "$conf"
	mkdir -p "$top/run" "$top/punts" "$top/outbox"
	cat >"$conf" <<EOF
; sdps demo configuration, made by tools/demo.sh.  Every key not set
; here has its documented default (see config/sdps.conf).
[server]
; POP3 with STLS (RFC 2595), and POP3 over implicit TLS (as on port 995).
; Passwords in clear are accepted from loopback only (allow_cleartext).
listen = 127.0.0.1:$PORT tls=starttls
listen = 127.0.0.1:$TLSPORT tls=implicit
user = $userval
run_dir = $top/run
min_spare = 2
max_spare = 8
max_workers = 32

[auth]
path = $top/auth
hash_cost = interactive

[expire]
; demo bounces go to a directory instead of the local MTA
sendmail = ""
outbox = $top/outbox

[punt finchley]
path = $top/punts/finchley

[punt docklands]
path = $top/punts/docklands
EOF
	tls_config >>"$conf"
	ctl punt create >/dev/null
	printf '%s\n%s\n' "$PW1" "$PW2" | ctl host add "$HOST" >/dev/null

	deliver finchley carol@example.org alice@$HOST <<'EOF'
From: Carol <carol@example.org>
To: alice@demo.example
Subject: Welcome to sdps
Date: Mon, 1 Jan 2024 09:00:00 +0000
Message-ID: <demo-1@example.org>

Hello Alice,

this message lives on the punt "finchley".
.A line that starts with a dot survives the trip.
EOF
	deliver docklands dave@example.org alice@$HOST <<'EOF'
From: Dave <dave@example.org>
To: alice@demo.example
Subject: Lunch?
Date: Mon, 1 Jan 2024 11:30:00 +0000
Message-ID: <demo-2@example.org>

Alice, lunch on Thursday?  (stored on "docklands")
EOF
	deliver docklands carol@example.org bob@$HOST <<'EOF'
From: Carol <carol@example.org>
To: bob@demo.example
Subject: Your order has shipped
Date: Tue, 2 Jan 2024 08:15:00 +0000
Message-ID: <demo-3@example.org>

Bob, your order is on its way.
EOF
	deliver finchley '' bob@$HOST <<'EOF'
From: Mail Delivery System <MAILER-DAEMON@example.org>
To: bob@demo.example
Subject: A message with the null envelope sender
Date: Tue, 2 Jan 2024 10:00:00 +0000
Message-ID: <demo-4@example.org>

*ENV shows an empty sender line for this one; RETR adds Return-Path: <>.
EOF
	deliver finchley erin@example.org alice@$HOST bob@$HOST <<'EOF'
From: Erin <erin@example.org>
To: alice@demo.example, bob@demo.example
Subject: For both of you
Date: Wed, 3 Jan 2024 16:45:00 +0000
Message-ID: <demo-5@example.org>

Stored once, seen by the host session and by both user sessions.
EOF
	touch "$seeded"
fi

if [ -n "$user" ]; then
	chown -R sdps:sdps "$top"
fi

cat <<EOF

sdps demo, host $HOST:
  POP3 with STLS on 127.0.0.1:$PORT, POP3 over TLS on 127.0.0.1:$TLSPORT
  passwords:   $PW1  or  $PW2 (either works)
  punts:       $top/punts/finchley, $top/punts/docklands
  certificate: $cert (self-signed)

Try TLS, from another terminal:
  curl --cacert $cert pop3s://127.0.0.1:$TLSPORT/ -u $HOST:$PW1
  curl --cacert $cert --ssl-reqd pop3://127.0.0.1:$PORT/1 -u $HOST:$PW1
  openssl s_client -connect 127.0.0.1:$TLSPORT -CAfile $cert -crlf -quiet
  openssl s_client -starttls pop3 -connect 127.0.0.1:$PORT -CAfile $cert -crlf -quiet
    (then type USER $HOST, PASS $PW1, STAT, RETR 1, QUIT)

Without TLS (loopback only: passwords in clear are refused elsewhere):
  curl pop3://$HOST:$PW1@127.0.0.1:$PORT/          # list the whole host
  curl pop3://$HOST:$PW1@127.0.0.1:$PORT/1         # retrieve message 1
  curl pop3://alice%40$HOST:$PW2@127.0.0.1:$PORT/  # only alice's mail
  $bin/sdps-ctl -c $conf sessions
  $bin/sdps-ctl -c $conf spool ls

fetchmail, multidrop with the *ENV envelope (~/.fetchmailrc, mode 0600):
  poll 127.0.0.1 port $PORT proto sdps no dns
    sslproto tls1.2+ sslcertck sslcertfile "$cert"
    localdomains $HOST
    user "$HOST" there with password "$PW1" is * here
    keep

New mail: echo "Subject: hi" | $bin/sdps-deliver -c $conf -f me@example.org alice@$HOST

Serving in the foreground; Ctrl-C stops.
EOF
exec "$bin/sdpsd" -c "$conf" -f
