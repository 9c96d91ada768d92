#!/bin/sh
# The target of `make run`: serve a demo sdps on 127.0.0.1:1110 from ./run/.
#
#   tools/demo.sh BUILD_DIR
#
# Builds nothing (make does that first).  The first run creates ./run/
# with a config, two punts (finchley and docklands), an auth store with
# the host demo.example, and sample mail for alice@ and bob@demo.example
# spread over both punts.  Later runs reuse ./run/ as it is: mail that was
# fetched and deleted stays gone, nothing is seeded twice.  Remove ./run/
# to start again from scratch.
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

top=$(pwd)/run
conf=$top/sdps.conf
seeded=$top/.seeded

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

if [ -f "$seeded" ] && [ -f "$conf" ]; then
	echo "demo: reusing $top (remove it for a fresh demo)"
	# The user may have changed since the demo was made.
	sed -i "s/^user = .*/user = $userval/" "$conf"
else
	# A half-made demo (interrupted seeding) is rebuilt from nothing, so
	# no message is ever stored twice.
	rm -rf "$top/punts" "$top/auth" "$top/run" "$conf"
	mkdir -p "$top/run" "$top/punts" "$top/outbox"
	cat >"$conf" <<EOF
; sdps demo configuration, made by tools/demo.sh.  Every key not set
; here has its documented default (see config/sdps.conf).
[server]
listen = 127.0.0.1:$PORT
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

sdps demo: POP3 on 127.0.0.1:$PORT, host $HOST
  passwords: $PW1  or  $PW2 (either works)
  punts:     $top/punts/finchley, $top/punts/docklands

Try, from another terminal:
  curl pop3://$HOST:$PW1@127.0.0.1:$PORT/          # list the whole host
  curl pop3://$HOST:$PW1@127.0.0.1:$PORT/1         # retrieve message 1
  curl pop3://alice%40$HOST:$PW2@127.0.0.1:$PORT/  # only alice's mail
  $bin/sdps-ctl -c $conf sessions
  $bin/sdps-ctl -c $conf spool ls

fetchmail, multidrop with the *ENV envelope (~/.fetchmailrc, mode 0600):
  poll 127.0.0.1 port $PORT proto sdps no dns
    localdomains $HOST
    user "$HOST" there with password "$PW1" is * here
    keep

New mail: echo "Subject: hi" | $bin/sdps-deliver -c $conf -f me@example.org alice@$HOST

Serving in the foreground; Ctrl-C stops.
EOF
exec "$bin/sdpsd" -c "$conf" -f
