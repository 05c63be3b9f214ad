#!/usr/bin/env bash
# bench/imap.sh: IMAP and POP3 benchmark, tern against Dovecot, side by side in one run.
#
# Generates one Maildir (deterministic seed; realistic messages with CRLF line ends:
# mostly 2-20 KiB, some 100 KiB-1 MiB with base64 attachments, multipart/alternative,
# RFC 2047 subjects and names, several senders) and serves the same files, hard-linked,
# from both servers, all on 127.0.0.1 and free ports, under one temporary directory:
#   - a test DNS server (unbound, `local-zone: "." static`; nothing is forwarded) for
#     tern's [delivery] resolver, so that nothing of tern could ask the machine's resolver;
#   - tern: `tern serve` with imap and pop3 listeners, the Maildir at
#     DATA_DIR/mail/example.test/demo;
#   - Dovecot (Debian package): its own instance (`dovecot -F -c WORK/dovecot/dovecot.conf`,
#     own base_dir, state_dir and log), passwd-file passdb, static userdb, the Maildir at
#     WORK/dovecot/mail/example.test/demo with its index files in the default place (in
#     the Maildir), no DNS at all.
# For each mailbox size, ROUNDS rounds: both servers are stopped, the Maildirs are laid
# anew from the generated files (so nothing is indexed), both are started, and then for
# each server (the order alternates) imap_bench.py round times, each on a fresh
# connection: first SELECT (index build), warm SELECT, FETCH 1:* (FLAGS), UID FETCH 1:*
# (UID RFC822.SIZE ENVELOPE) first and warm, SEARCH FROM, SEARCH TEXT, and on mailboxes
# of at most POP3_MAX messages POP3 login + UIDL + QUIT.  After the last round of a size,
# IDLE_SESSIONS logged-in sessions with INBOX selected: RSS/PSS per session.
# Prints the results table (median ms, tern / Dovecot) and writes it as Markdown to $OUT_MD.
#
# Environment (all optional):
#   SIZES          mailbox sizes (default "10000 100000"; SMALL=1: "1000")
#   SMALL          1: a quick check with SIZES=1000, ROUNDS=1, IDLE_SESSIONS=50
#   ROUNDS         rounds per size; the median is reported (default 3)
#   IDLE_SESSIONS  idle IMAP sessions per server (default 200; 0 skips the memory rows)
#   POP3_MAX       largest mailbox the POP3 row is timed on (default 10000)
#   SEED           generator seed (default 20261127)
#   MAILDIR_CACHE  directory (on the same file system as /tmp) where the generated
#                  messages are kept and reused by later runs with the same seed
#   TERN           tern binary (default: build/tern, built with make when missing)
#   TERN_SKIP      1: Dovecot only (tests the harness while tern cannot serve IMAP)
#   OUT_MD         Markdown output (default bench/results/imap.md)
#   KEEP_WORK      1 keeps the temporary directory (logs, configs, Maildirs)
#
# Run as root on Debian: installs dovecot-imapd, dovecot-pop3d and unbound when missing.
# Bounded everywhere.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PY=/usr/bin/python3
LIB="$HERE/benchlib.py"
ILIB="$HERE/imap_bench.py"
TERN=${TERN:-$ROOT/build/tern}
SMALL=${SMALL:-0}
if [ "$SMALL" = 1 ]; then
	SIZES=${SIZES:-1000} ROUNDS=${ROUNDS:-1} IDLE_SESSIONS=${IDLE_SESSIONS:-50}
fi
SIZES=${SIZES:-"10000 100000"}
ROUNDS=${ROUNDS:-3}
IDLE_SESSIONS=${IDLE_SESSIONS:-200}
POP3_MAX=${POP3_MAX:-10000}
SEED=${SEED:-20261127}
MAILDIR_CACHE=${MAILDIR_CACHE:-}
TERN_SKIP=${TERN_SKIP:-0}
OUT_MD=${OUT_MD:-$HERE/results/imap.md}
KEEP_WORK=${KEEP_WORK:-0}
USER_ADDR=demo@example.test
PASSWORD=bench-pw-$$

BENCH=imap.sh
# shellcheck source=bench/common.sh
. "$HERE/common.sh"

for s in $SIZES; do [[ $s =~ ^[1-9][0-9]*$ ]] || die "bad size '$s' in SIZES"; done
MAX_SIZE=$(printf '%s\n' $SIZES | sort -n | tail -1)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------------ packages, checks
[ "$(id -u)" -eq 0 ] || die "run as root (tern drops to user tern; Dovecot needs root to start)"
install_deps
install_imap_deps
stop_system_daemons
stop_system_dovecot
getent passwd tern >/dev/null 2>&1 ||
	useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tern
getent passwd dovecot >/dev/null && getent passwd dovenull >/dev/null ||
	die "users dovecot and dovenull missing (the dovecot-core package creates them)"
MAIL_UID=$(id -u tern) MAIL_GID=$(id -g tern)
if [ "$TERN_SKIP" != 1 ]; then
	if [ ! -x "$TERN" ]; then
		say "building $TERN"
		make -C "$ROOT" build/tern >/dev/null || die "make build/tern failed"
	fi
	[ -x "$TERN" ] || die "no tern binary at $TERN"
fi

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ------------------------------------------------------------------ work area, cleanup
WORK=$(mktemp -d /tmp/tern-bench-imap.XXXXXX)
chmod 755 "$WORK"
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
TERN_PID="" DC_PID="" UNBOUND_PID="" DNSWATCH_PID="" CHILD=""
TERN_VERSION="(skipped: TERN_SKIP=1)" TERN_BUILT="" TERN_SHA=""
if [ "$TERN_SKIP" != 1 ]; then
	# A private copy of the binary: a rebuild of build/tern during the run changes nothing.
	mkdir -p "$WORK/bin"
	cp "$TERN" "$WORK/bin/tern"
	TERN_BUILT=$(date -u -r "$TERN" '+%Y-%m-%d %H:%M UTC')
	TERN=$WORK/bin/tern
	TERN_SHA=$(sha256sum "$TERN" | cut -c1-12)
	TERN_VERSION=$("$TERN" --version 2>/dev/null | head -1 || echo '(no --version)')
fi


# Stops a server started here and every process of its tree (by pid, as listed before
# the stop: children that outlive their master are ended one by one).
stop_server() { # pid seconds
	local pid=$1 secs=$2 p left i
	[ -n "$pid" ] || return 0
	left=$("$PY" "$LIB" pids "$pid" 2>/dev/null || true)
	stop_pid "$pid" "$secs"
	wait "$pid" 2>/dev/null || true
	for p in $left; do
		[ "$p" = "$pid" ] && continue
		for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$p" 2>/dev/null; then
			echo "process $p ($(cat /proc/"$p"/comm 2>/dev/null)) outlived its server: stopping it" >&2
			stop_pid "$p" 5
		fi
	done
}

cleanup() {
	local rc=$?
	set +e
	[ -n "$CHILD" ] && stop_pid "$CHILD" 10
	stop_server "$TERN_PID" 60
	stop_server "$DC_PID" 30
	stop_pid "$UNBOUND_PID" 10
	stop_pid "$DNSWATCH_PID" 10
	if [ "$KEEP_WORK" = 1 ] || [ $rc -ne 0 ]; then
		echo "work directory kept: $WORK" >&2
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# Long helper steps run in the background so that a SIGTERM/SIGINT to this script
# interrupts `wait` at once; cleanup() then ends the step too.
py_step() { # script args...
	local rc=0
	"$PY" "$@" &
	CHILD=$!
	wait "$CHILD" || rc=$?
	CHILD=""
	return $rc
}

# ------------------------------------------------------------------ DNS watch, test DNS
start_test_dns "example.test. 300 IN MX 10 mx.example.test." "mx.example.test. 300 IN A 127.0.0.1"
DNS_OK=$(test_dns_answer example.test MX)
say "test DNS: unbound on 127.0.0.1:$UNBOUND_PORT answers example.test MX: $DNS_OK"

# ------------------------------------------------------------------ the messages
if [ -n "$MAILDIR_CACHE" ]; then
	SRC=$MAILDIR_CACHE
	mkdir -p "$SRC"
	[ "$(stat -c %d "$SRC")" = "$(stat -c %d "$WORK")" ] ||
		die "MAILDIR_CACHE ($SRC) is not on the file system of $WORK (hard links)"
else
	SRC=$WORK/src
fi
if [ -s "$SRC/manifest.jsonl" ] && "$PY" - "$SRC/manifest.jsonl" "$SEED" "$MAX_SIZE" <<'EOF'
import json, sys
h = json.loads(open(sys.argv[1]).readline())
sys.exit(0 if h["seed"] == int(sys.argv[2]) and h["count"] >= int(sys.argv[3]) else 1)
EOF
then
	say "reusing $(($(wc -l <"$SRC/manifest.jsonl") - 1)) generated messages in $SRC (seed $SEED)"
else
	rm -rf "$SRC/cur" "$SRC/new" "$SRC/tmp" "$SRC/manifest.jsonl"
	say "generating $MAX_SIZE messages (seed $SEED) in $SRC"
	py_step "$ILIB" gen --out "$SRC" --count "$MAX_SIZE" --seed "$SEED" || die "generating the messages failed"
fi
# The files are shared (hard links) by both servers' Maildirs, which both servers
# access as user tern (Dovecot's static userdb has tern's uid and gid).
chown -R "$MAIL_UID:$MAIL_GID" "$SRC/cur"
chmod 755 "$SRC"

# ------------------------------------------------------------------ tern
TERN_IMAP_PORT="" TERN_POP3_PORT=""
TERN_MD=$WORK/tern/data/mail/example.test/demo
if [ "$TERN_SKIP" != 1 ]; then
	TERN_IMAP_PORT=$(freeport) TERN_POP3_PORT=$(freeport)
	mkdir -p "$WORK/tern"
	cat >"$WORK/tern/tern.conf" <<EOF
[server]
hostname = bench.local
data_dir = $WORK/tern/data
log_file = $WORK/tern/tern.log
log_level = warn

[smtp]
auth_plaintext_loopback = yes

[mailbox]
max_connections_per_ip = 100000

[listener imap]
protocol = imap
address = 127.0.0.1:$TERN_IMAP_PORT

[listener pop3]
protocol = pop3
address = 127.0.0.1:$TERN_POP3_PORT

[delivery]
resolver = 127.0.0.1@$UNBOUND_PORT
EOF
	"$TERN" -c "$WORK/tern/tern.conf" check >"$WORK/tern/check.out" 2>&1 ||
		die "tern check failed: $(cat "$WORK/tern/check.out")"
	"$TERN" -c "$WORK/tern/tern.conf" domain add example.test >/dev/null
	echo "$PASSWORD" | "$TERN" -c "$WORK/tern/tern.conf" user add "$USER_ADDR" >/dev/null
fi

start_tern() {
	[ "$TERN_SKIP" != 1 ] || return 0
	"$TERN" -c "$WORK/tern/tern.conf" serve >>"$WORK/tern/stdout" 2>&1 &
	TERN_PID=$!
	"$PY" "$LIB" wait-port "$TERN_IMAP_PORT" 30 && "$PY" "$LIB" wait-port "$TERN_POP3_PORT" 10 ||
		die "tern did not start: $(tail -5 "$WORK/tern/stdout" "$WORK/tern/tern.log" 2>/dev/null)"
}

# ------------------------------------------------------------------ Dovecot
DC_IMAP_PORT=$(freeport) DC_POP3_PORT=$(freeport)
DC=$WORK/dovecot
DC_MD=$DC/mail/example.test/demo
mkdir -p "$DC/run" "$DC/state" "$DC/mail/example.test" "$DC/home/example.test/demo"
chown "$MAIL_UID:$MAIL_GID" "$DC/home/example.test/demo"
printf '%s:{PLAIN}%s\n' "$USER_ADDR" "$PASSWORD" >"$DC/passwd"
chown root:dovecot "$DC/passwd"
chmod 640 "$DC/passwd"
DC_CONN_LIMIT=$((IDLE_SESSIONS + 100))
DC_PROC_LIMIT=$((IDLE_SESSIONS > 924 ? IDLE_SESSIONS + 100 : 1024))
cat >"$DC/dovecot.conf" <<EOF
# Generated by bench/imap.sh: a private Dovecot instance on 127.0.0.1.  Everything not
# set here is Dovecot's default (mail_fsync = optimized, index files in the Maildir, one
# imap process per session, login processes in high-security mode).
instance_name = dovecot-bench
base_dir = $DC/run
state_dir = $DC/state
log_path = $DC/dovecot.log
info_log_path = $DC/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
# Set, so that nothing asks the resolver for the machine's name.
hostname = bench.local
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = $MAIL_UID
first_valid_gid = $MAIL_GID
mail_location = maildir:$DC/mail/%d/%n
namespace inbox {
  inbox = yes
  separator = /
}
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DC/passwd
}
userdb {
  driver = static
  args = uid=$MAIL_UID gid=$MAIL_GID home=$DC/home/%d/%n
}
# The idle-session test opens IDLE_SESSIONS ($IDLE_SESSIONS) sessions of one user from
# 127.0.0.1 (default limit: 10).
protocol imap {
  mail_max_userip_connections = $DC_CONN_LIMIT
}
protocol pop3 {
  mail_max_userip_connections = $DC_CONN_LIMIT
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $DC_IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $DC_POP3_PORT
  }
  inet_listener pop3s {
    port = 0
  }
}
service imap {
  process_limit = $DC_PROC_LIMIT
}
EOF
/usr/bin/doveconf -c "$DC/dovecot.conf" -n >"$DC/doveconf.out" 2>&1 || die "doveconf: $(cat "$DC/doveconf.out")"
DOVECOT_VERSION=$(/usr/sbin/dovecot --version)

start_dovecot() {
	/usr/sbin/dovecot -F -c "$DC/dovecot.conf" >>"$DC/stdout" 2>&1 &
	DC_PID=$!
	"$PY" "$LIB" wait-port "$DC_IMAP_PORT" 30 && "$PY" "$LIB" wait-port "$DC_POP3_PORT" 10 ||
		die "Dovecot did not start: $(tail -5 "$DC/stdout" "$DC/dovecot.log" 2>/dev/null)"
}

stop_servers() {
	stop_server "$TERN_PID" 60
	TERN_PID=""
	stop_server "$DC_PID" 30
	DC_PID=""
}

# Both Maildirs laid anew from the generated files: hard links, nothing indexed.
reset_maildirs() { # size
	local md
	for md in $([ "$TERN_SKIP" = 1 ] || echo "$TERN_MD") "$DC_MD"; do
		rm -rf "$md"
		mkdir -p "$(dirname "$md")"
		py_step "$ILIB" layout --src "$SRC" --size "$1" --dest "$md" --expect "$WORK/expect-$1.json" ||
			die "laying out $md failed"
		chown "$MAIL_UID:$MAIL_GID" "$md" "$md/cur" "$md/new" "$md/tmp"
	done
	[ "$TERN_SKIP" = 1 ] || chown "$MAIL_UID:$MAIL_GID" "$WORK/tern/data/mail" "$(dirname "$TERN_MD")"
}

check_listeners() {
	local pids
	pids=$({ [ -z "$TERN_PID" ] || "$PY" "$LIB" pids "$TERN_PID"; "$PY" "$LIB" pids "$DC_PID"; echo "$UNBOUND_PID"; } | paste -sd'|')
	ss -Hltunp | grep -E "pid=($pids)," >"$WORK/listeners.txt" || true
	if awk '{print $5}' "$WORK/listeners.txt" | grep -qv '^127\.0\.0\.1:'; then
		cat "$WORK/listeners.txt" >&2; die "a benchmark server listens outside 127.0.0.1"
	fi
	say "listening sockets of the servers: $(awk '{print $1 "/" $5}' "$WORK/listeners.txt" | sort -u | paste -sd' ')"
}

# ------------------------------------------------------------------ the rounds
FAILED=0
FIRST=1
for size in $SIZES; do
	POP3_ARGS=()
	for round in $(seq 1 "$ROUNDS"); do
		stop_servers
		reset_maildirs "$size"
		start_tern
		start_dovecot
		if [ $FIRST = 1 ]; then
			FIRST=0
			say "tern $TERN_VERSION: imap 127.0.0.1:${TERN_IMAP_PORT:--}, pop3 127.0.0.1:${TERN_POP3_PORT:--}, pid ${TERN_PID:--}"
			say "Dovecot $DOVECOT_VERSION: imap 127.0.0.1:$DC_IMAP_PORT, pop3 127.0.0.1:$DC_POP3_PORT, pid $DC_PID"
			check_listeners
		fi
		say "$size messages, round $round of $ROUNDS ($("$PY" -c 'import json,sys; e=json.load(open(sys.argv[1])); print("%d bytes, %d FROM hits, %d TEXT hits expected" % (e["bytes"], e["from_hits"], e["text_hits"]))' "$WORK/expect-$size.json"))"
		if [ $((round % 2)) -eq 1 ]; then order="tern dovecot"; else order="dovecot tern"; fi
		for srv in $order; do
			if [ $srv = tern ]; then
				[ "$TERN_SKIP" != 1 ] || continue
				iport=$TERN_IMAP_PORT pport=$TERN_POP3_PORT
			else
				iport=$DC_IMAP_PORT pport=$DC_POP3_PORT
			fi
			[ "$size" -le "$POP3_MAX" ] || pport=0
			py_step "$ILIB" round --name $srv --port "$iport" --pop3-port "$pport" \
				--user "$USER_ADDR" --password "$PASSWORD" --size "$size" --round "$round" \
				--expect "$WORK/expect-$size.json" --results "$RESULTS" || FAILED=$((FAILED + 1))
			[ -z "$TERN_PID" ] || kill -0 "$TERN_PID" 2>/dev/null || die "tern (pid $TERN_PID) died: $(tail -5 "$WORK/tern/tern.log")"
			kill -0 "$DC_PID" 2>/dev/null || die "Dovecot (pid $DC_PID) died: $(tail -5 "$DC/dovecot.log")"
		done
	done
	if [ "$IDLE_SESSIONS" -gt 0 ]; then
		say "$size messages: $IDLE_SESSIONS idle IMAP sessions per server (LOGIN, SELECT INBOX)"
		for srv in tern dovecot; do
			if [ $srv = tern ]; then
				[ "$TERN_SKIP" != 1 ] || continue
				pid=$TERN_PID iport=$TERN_IMAP_PORT
			else
				pid=$DC_PID iport=$DC_IMAP_PORT
			fi
			py_step "$ILIB" idle --name $srv --root-pid "$pid" --port "$iport" --user "$USER_ADDR" \
				--password "$PASSWORD" --size "$size" --n "$IDLE_SESSIONS" --results "$RESULTS" ||
				FAILED=$((FAILED + 1))
		done
	fi
done
stop_servers

# ------------------------------------------------------------------ checks, report
test_dns_stop
DNS_REPORT=$(test_dns_report all "(the start-up check query and its answer are 2)")
say "DNS traffic during the run: $DNS_REPORT"

TERN_LOG_LINES=0
if [ "$TERN_SKIP" != 1 ]; then
	TERN_LOG_LINES=$(grep -cE 'Z (warn|error) ' "$WORK/tern/tern.log" 2>/dev/null || true)
	say "tern log ($WORK/tern/tern.log): ${TERN_LOG_LINES:-0} warning/error lines"
	grep -E 'Z (warn|error) ' "$WORK/tern/tern.log" 2>/dev/null | sed -E 's/^[^ ]+ //; s/\[[0-9]+\]//' | sort | uniq -c | sort -rn | head -20 || true
fi
DC_LOG_PROBLEMS=$(grep -iE 'warning:|error:|fatal:|panic:' "$DC/dovecot.log" 2>/dev/null | grep -cv 'master: Warning: Killed with signal 15' || true)
say "Dovecot log: ${DC_LOG_PROBLEMS:-0} warning/error lines (not counting the master's 'Killed with signal 15' of each stop by this script)"
grep -iE 'warning:|error:|fatal:|panic:' "$DC/dovecot.log" 2>/dev/null | grep -v 'master: Warning: Killed with signal 15' | sed -E 's/^.{0,20}[0-9]{2}:[0-9]{2}:[0-9]{2} //' | sort | uniq -c | sort -rn | head -10 || true

mkdir -p "$(dirname "$OUT_MD")"
{
	echo "# imap benchmark results"
	echo
	echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r);"
	echo "tern $TERN_VERSION${TERN_SHA:+ (binary built $TERN_BUILT, sha256 $TERN_SHA)}, Dovecot $DOVECOT_VERSION, load average at start: $LOAD_START."
	echo "Mailboxes: $SIZES messages (seed $SEED), $ROUNDS round(s), $IDLE_SESSIONS idle sessions; the same files (hard links) in both servers' Maildirs."
	echo
} >"$OUT_MD.head"
"$PY" "$ILIB" report "$RESULTS" "$OUT_MD.body"
{
	cat "$OUT_MD.head" "$OUT_MD.body"
	echo
	for size in $SIZES; do
		echo "Mailbox of $size messages: $("$PY" -c 'import json,sys; e=json.load(open(sys.argv[1])); print("%.1f MiB, largest %d bytes; %d text/plain, %d multipart/alternative, %d multipart/mixed (%d of 20-100 KiB, %d of 100 KiB-1 MiB); %d \\Seen; SEARCH FROM matches %d, SEARCH TEXT %d" % (e["bytes"]/1048576, e["max_size"], e["shapes"]["text"], e["shapes"]["alternative"], e["shapes"]["mixed"], e["medium"], e["large"], e["seen"], e["from_hits"], e["text_hits"]))' "$WORK/expect-$size.json")."
		echo
	done
	echo "DNS packets sent by the machine during the run: $(echo "$DNS_REPORT" | head -1)"
	echo "tern warning/error log lines: ${TERN_LOG_LINES:-0}; Dovecot warning/error lines: ${DC_LOG_PROBLEMS:-0}."
	echo "Test DNS: unbound on 127.0.0.1:$UNBOUND_PORT; tern: [delivery] resolver = 127.0.0.1@$UNBOUND_PORT; Dovecot: hostname set, no DNS lookups configured."
	[ "$TERN_SKIP" != 1 ] || echo "**tern was skipped (TERN_SKIP=1): Dovecot only.**"
	[ "$FAILED" -eq 0 ] || echo "**$FAILED step(s) failed** (see the per-round lines and warnings)."
} >"$OUT_MD"
rm -f "$OUT_MD.head" "$OUT_MD.body"
cp "$RESULTS" "${OUT_MD%.md}.jsonl"
[ "$TERN_SKIP" = 1 ] || cp "$WORK/tern/tern.log" "${OUT_MD%.md}.tern.log" 2>/dev/null || true
cp "$DC/dovecot.log" "${OUT_MD%.md}.dovecot.log" 2>/dev/null || true
say "Markdown: $OUT_MD (raw: ${OUT_MD%.md}.jsonl)"
[ "$FAILED" -eq 0 ]
