#!/usr/bin/env bash
# bench/smtp-out.sh: outbound SMTP benchmark, tern against Postfix, side by side in one run.
#
# Starts, all on loopback and free ports, under one temporary directory:
#   - a test DNS server (unbound, static zone: dN.test MX 10 mx.dN.test, mx.dN.test A
#     127.0.0.(N+2), for N = 0 .. DOMAINS-1; nothing is forwarded),
#   - tern: `tern serve` relaying for 127.0.0.0/8, MX lookups through the test DNS,
#     delivering to port SINK_PORT of the MX hosts, retry_schedule 1h,
#   - Postfix: its own instance relaying for 127.0.0.0/8, no DNS at all: transport_maps
#     sends dN.test to smtp:[127.0.0.(N+2)]:SINK_PORT.
# Then, per round and per server (the order alternates every round), bench/benchlib.py
# outrun:
#   1. loads the queue: MESSAGES messages of 4096 bytes, MESSAGES/DOMAINS to each domain,
#      with smtp-source into the server's own SMTP listener while no sink listens, so that
#      every delivery attempt is refused and every message deferred;
#   2. waits until the queue holds exactly MESSAGES messages, all deferred;
#   3. starts one smtp-sink per domain on 127.0.0.(N+2):SINK_PORT, runs the server's
#      flush command (`tern queue flush`, `postqueue -f`) and times from there until the
#      sinks have received every message and the queue is empty (peak RSS meanwhile);
#   4. checks the count per sink (exactly MESSAGES/DOMAINS each) and the server's log
#      (one "sent" line per message, distinct queue ids), stops the sinks.
# Prints the results table and writes it as Markdown to $OUT_MD.
#
# Environment (all optional):
#   TERN        tern binary (default: build/tern, built with make when missing)
#   MESSAGES    messages per run (default 5000; a multiple of DOMAINS)
#   DOMAINS     destination domains d0.test .. (default 10, at most 50)
#   ROUNDS      rounds; the median is reported (default 3)
#   WARMUP      messages of the unrecorded warm-up run per server (default 500; 0: none)
#   OUT_MD      Markdown output (default bench/results/smtp-out.md)
#   KEEP_WORK   1 keeps the temporary directory (logs, configs)
#
# Run as root on Debian: installs postfix and unbound when missing.  Bounded everywhere.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PY=/usr/bin/python3
LIB="$HERE/benchlib.py"
TERN=${TERN:-$ROOT/build/tern}
MESSAGES=${MESSAGES:-5000}
DOMAINS=${DOMAINS:-10}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-500}
OUT_MD=${OUT_MD:-$HERE/results/smtp-out.md}
KEEP_WORK=${KEEP_WORK:-0}
FIRST_IP=2          # dN.test -> 127.0.0.(FIRST_IP + N)

BENCH=smtp-out.sh
# shellcheck source=bench/common.sh
. "$HERE/common.sh"

[ "$DOMAINS" -ge 1 ] && [ "$DOMAINS" -le 50 ] || die "DOMAINS must be 1..50"
[ $((MESSAGES % DOMAINS)) -eq 0 ] || die "MESSAGES must be a multiple of DOMAINS"
[ "$WARMUP" -eq 0 ] || [ $((WARMUP % DOMAINS)) -eq 0 ] || die "WARMUP must be a multiple of DOMAINS"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
bench_prepare
"$TERN" config reference 2>/dev/null | grep -c '^| `retry_schedule`' >/dev/null ||
	die "this tern has no outbound delivery ([delivery] retry_schedule missing)"
id nobody >/dev/null 2>&1 || die "user nobody missing (smtp-sink runs as nobody)"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
TERN_SRC=$TERN

# ------------------------------------------------------------------ work area, cleanup
WORK=$(mktemp -d /tmp/tern-bench-out.XXXXXX)
chmod 755 "$WORK"
RESULTS=$WORK/results.jsonl
SINK_PIDS=$WORK/sinks.pids
: >"$RESULTS"
TERN_PID="" PF_CONF="" UNBOUND_PID="" DNSWATCH_PID="" CHILD=""
# A private copy of the binary: a rebuild of build/tern during the run changes nothing
# (the server and the `tern queue flush` of every round are the same program).
mkdir -p "$WORK/bin"
cp "$TERN_SRC" "$WORK/bin/tern"
TERN=$WORK/bin/tern
TERN_BUILT=$(date -u -r "$TERN_SRC" '+%Y-%m-%d %H:%M UTC')
TERN_SHA=$(sha256sum "$TERN" | cut -c1-12)


pf_master_pid() {
	[ -n "$PF_CONF" ] && [ -s "$WORK/pf/spool/pid/master.pid" ] &&
		tr -d ' \n' <"$WORK/pf/spool/pid/master.pid" || true
}

cleanup() {
	local rc=$?
	set +e
	[ -n "$CHILD" ] && stop_pid "$CHILD" 15
	# smtp-sinks of an interrupted run (outrun stops them itself; this is the fallback).
	if [ -s "$SINK_PIDS" ]; then
		local p
		while read -r p; do
			[ "$(cat /proc/"$p"/comm 2>/dev/null)" = smtp-sink ] && stop_pid "$p" 5
		done <"$SINK_PIDS"
	fi
	if [ -n "$TERN_PID" ]; then
		stop_pid "$TERN_PID" 60
		wait "$TERN_PID" 2>/dev/null
	fi
	if [ -n "$PF_CONF" ]; then
		local mp
		mp=$(pf_master_pid)
		timeout 60 /usr/sbin/postfix -c "$PF_CONF" stop >/dev/null 2>&1
		[ -n "$mp" ] && stop_pid "$mp" 30
	fi
	stop_pid "$UNBOUND_PID" 10
	stop_pid "$DNSWATCH_PID" 10
	local l25
	l25=$(port25_listeners)
	[ -z "$l25" ] || echo "WARNING: something listens on port 25: $l25" >&2
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
py_step() {
	local rc=0
	"$PY" "$LIB" "$@" &
	CHILD=$!
	wait "$CHILD" || rc=$?
	CHILD=""
	return $rc
}

# ------------------------------------------------------------------ ports
# The sinks listen on 127.0.0.(FIRST_IP+N):SINK_PORT; make sure that port is free on all.
SINK_PORT=""
for try in $(seq 1 20); do
	p=$(freeport)
	if "$PY" - "$p" "$FIRST_IP" "$DOMAINS" <<'EOF'
import socket, sys
port, first, n = map(int, sys.argv[1:])
socks = []
try:
    for i in range(n):
        s = socket.socket()
        s.bind(("127.0.0.%d" % (first + i), port))
        socks.append(s)
except OSError:
    sys.exit(1)
EOF
	then SINK_PORT=$p; break; fi
done
[ -n "$SINK_PORT" ] || die "no port free on all of 127.0.0.$FIRST_IP..$((FIRST_IP + DOMAINS - 1))"
LAST_IP=$((FIRST_IP + DOMAINS - 1))

# ------------------------------------------------------------------ test DNS (unbound)
DNS_RRS=()
for n in $(seq 0 $((DOMAINS - 1))); do
	DNS_RRS+=("d$n.test. 300 IN MX 10 mx.d$n.test." "mx.d$n.test. 300 IN A 127.0.0.$((FIRST_IP + n))")
done
start_test_dns "${DNS_RRS[@]}"
DNS_OK=$(test_dns_answer d0.test MX)
DNS_LAST=$(test_dns_answer "mx.d$((DOMAINS - 1)).test" A)
say "test DNS: unbound on 127.0.0.1:$UNBOUND_PORT: d0.test $DNS_OK; mx.d$((DOMAINS - 1)).test $DNS_LAST"

# ------------------------------------------------------------------ tern
TERN_PORT=$(freeport)
mkdir -p "$WORK/tern"
cat >"$WORK/tern/tern.conf" <<EOF
[server]
hostname = bench.local
data_dir = $WORK/tern/data
log_file = $WORK/tern/tern.log

[smtp]
max_connections_per_ip = 100000
trusted_networks = 127.0.0.0/8

[listener mx]
protocol = smtp
address = 127.0.0.1:$TERN_PORT

[delivery]
resolver = 127.0.0.1@$UNBOUND_PORT
port = $SINK_PORT
retry_schedule = 1h
EOF
"$TERN" -c "$WORK/tern/tern.conf" check >/dev/null || die "tern check failed"
"$TERN" -c "$WORK/tern/tern.conf" serve >"$WORK/tern/stdout" 2>&1 &
TERN_PID=$!
"$PY" "$LIB" wait-port "$TERN_PORT" 20 || die "tern did not start: $(tail -5 "$WORK/tern/stdout" "$WORK/tern/tern.log" 2>/dev/null)"
TERN_QUEUE=$WORK/tern/data/queue
say "tern $("$TERN" --version 2>/dev/null || echo '(no --version)') ($TERN_SRC built $TERN_BUILT, sha256 $TERN_SHA) on 127.0.0.1:$TERN_PORT, pid $TERN_PID"

# ------------------------------------------------------------------ Postfix
PF_PORT=$(freeport)
PF_CONF=$WORK/pf/etc
mkdir -p "$PF_CONF" "$WORK/pf/spool" "$WORK/pf/data"
chown postfix "$WORK/pf/data"
: >"$PF_CONF/transport"
for n in $(seq 0 $((DOMAINS - 1))); do
	printf 'd%d.test smtp:[127.0.0.%d]:%d\n' "$n" $((FIRST_IP + n)) "$SINK_PORT" >>"$PF_CONF/transport"
done
cat >"$PF_CONF/main.cf" <<EOF
# Generated by bench/smtp-out.sh: a private Postfix instance on 127.0.0.1:$PF_PORT.
compatibility_level = 3.6
config_directory = $PF_CONF
queue_directory = $WORK/pf/spool
data_directory = $WORK/pf/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-bench
maillog_file_prefixes = $WORK
maillog_file = $WORK/pf/maillog
myhostname = pf.bench.local
mydomain = bench.local
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# Relay for the benchmark client on loopback (smtpd_relay_restrictions' default
# permit_mynetworks), to the destinations below.
mynetworks = 127.0.0.0/8
relayhost =
alias_maps =
alias_database =
local_recipient_maps =
append_dot_mydomain = no
biff = no
# No DNS at all: every destination has an explicit next hop (no MX lookup; an IP
# address needs no lookup either); no reverse lookup of clients.
transport_maps = texthash:$PF_CONF/transport
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
smtpd_peername_lookup = no
smtpd_client_event_limit_exceptions = 127.0.0.0/8
smtpd_client_connection_count_limit = 0
EOF
cat >"$PF_CONF/master.cf" <<EOF
# service type private unpriv chroot wakeup maxproc command
127.0.0.1:$PF_PORT inet n - n - - smtpd
pickup     unix  n - n 60   1 pickup
cleanup    unix  n - n -    0 cleanup
qmgr       unix  n - n 300  1 qmgr
rewrite    unix  - - n -    - trivial-rewrite
bounce     unix  - - n -    0 bounce
defer      unix  - - n -    0 bounce
trace      unix  - - n -    0 bounce
verify     unix  - - n -    1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -    - proxymap
proxywrite unix  - - n -    1 proxymap
smtp       unix  - - n -    - smtp
relay      unix  - - n -    - smtp
showq      unix  n - n -    - showq
error      unix  - - n -    - error
retry      unix  - - n -    - error
discard    unix  - - n -    - discard
local      unix  - n n -    - local
virtual    unix  - n n -    - virtual
lmtp       unix  - - n -    - lmtp
anvil      unix  - - n -    1 anvil
scache     unix  - - n -    1 scache
postlog    unix-dgram n - n - 1 postlogd
EOF
/usr/sbin/postfix -c "$PF_CONF" check >"$WORK/pf/check.log" 2>&1 || die "postfix check: $(cat "$WORK/pf/check.log")"
timeout 60 /usr/sbin/postfix -c "$PF_CONF" start >"$WORK/pf/start.log" 2>&1 || die "postfix start: $(cat "$WORK/pf/start.log")"
"$PY" "$LIB" wait-port "$PF_PORT" 20 || die "Postfix did not start: $(tail -5 "$WORK/pf/maillog")"
PF_PID=""
for i in $(seq 1 50); do PF_PID=$(pf_master_pid); [ -n "$PF_PID" ] && break; sleep 0.1; done
[ -n "$PF_PID" ] || die "no Postfix master pid"
say "Postfix $(postconf -c "$PF_CONF" -h mail_version) on 127.0.0.1:$PF_PORT, master pid $PF_PID"
TERN_CONC=$("$TERN" config reference | sed -n '/^## \[delivery\]/,/^## \[relay\]/p' |
	awk -F'`' '/^\| `(max_per_destination|max_connections)`/ {printf "%s=%s ", $2, $4}')
say "concurrency (defaults): tern [delivery] ${TERN_CONC}; Postfix default_destination_concurrency_limit=$(postconf -c "$PF_CONF" -h default_destination_concurrency_limit) default_process_limit=$(postconf -c "$PF_CONF" -h default_process_limit) initial_destination_concurrency=$(postconf -c "$PF_CONF" -h initial_destination_concurrency)"

# Nothing of ours may listen anywhere but loopback; nothing at all on port 25.
OUR_PIDS=$({ "$PY" "$LIB" pids "$TERN_PID"; "$PY" "$LIB" pids "$PF_PID"; echo "$UNBOUND_PID"; } | paste -sd'|')
ss -Hltunp | grep -E "pid=($OUR_PIDS)," >"$WORK/listeners.txt" || true
if awk '{print $5}' "$WORK/listeners.txt" | grep -qv '^127\.0\.0\.1:'; then
	cat "$WORK/listeners.txt" >&2; die "a benchmark server listens outside 127.0.0.1"
fi
say "listening sockets of the servers: $(awk '{print $1 "/" $5}' "$WORK/listeners.txt" | sort -u | paste -sd' ')"
[ -z "$(port25_listeners)" ] || die "something listens on port 25: $(port25_listeners)"
say "sinks: smtp-sink -c -u nobody on 127.0.0.$FIRST_IP..$LAST_IP:$SINK_PORT (one per domain, only while a flush is timed)"

# ------------------------------------------------------------------ runs
outrun() { # server messages round results
	local srv=$1 msgs=$2 round=$3 res=$4
	if [ "$srv" = tern ]; then
		py_step outrun --name tern --root-pid "$TERN_PID" --port "$TERN_PORT" \
			--queue-kind tern --queue-dir "$TERN_QUEUE" --log "$WORK/tern/tern.log" \
			--flush-cmd "$TERN -c $WORK/tern/tern.conf queue flush" \
			--messages "$msgs" --domains "$DOMAINS" --length 4096 \
			--sink-port "$SINK_PORT" --sink-first-ip "$FIRST_IP" \
			--sink-pidfile "$SINK_PIDS" --sink-errors "$WORK/sink.err" \
			--round "$round" --results "$res" --timeout 300
	else
		py_step outrun --name postfix --root-pid "$PF_PID" --port "$PF_PORT" \
			--queue-kind postfix --queue-dir "$WORK/pf/spool" --log "$WORK/pf/maillog" \
			--flush-cmd "/usr/sbin/postqueue -c $PF_CONF -f" \
			--messages "$msgs" --domains "$DOMAINS" --length 4096 \
			--sink-port "$SINK_PORT" --sink-first-ip "$FIRST_IP" \
			--sink-pidfile "$SINK_PIDS" --sink-errors "$WORK/sink.err" \
			--round "$round" --results "$res" --timeout 300
	fi
}

# After a failed run the queue may still hold its messages: empty it (through each
# server's own tools) so that the next run starts from an empty queue again.
purge_queue() { # server
	if [ "$1" = tern ]; then
		local f n=0
		for f in "$TERN_QUEUE"/*; do
			[ -f "$f" ] || continue
			"$TERN" -c "$WORK/tern/tern.conf" queue delete "$(basename "$f")" >/dev/null 2>&1 || true
			n=$((n + 1))
			[ $n -lt 100000 ] || break
		done
		say "tern: deleted $n queued message(s) after the failed run"
	else
		/usr/sbin/postsuper -c "$PF_CONF" -d ALL 2>&1 | tail -1
	fi
}

check_alive() {
	kill -0 "$TERN_PID" 2>/dev/null || die "tern (pid $TERN_PID) died"
	kill -0 "$PF_PID" 2>/dev/null || die "Postfix master (pid $PF_PID) died"
}

if [ "$WARMUP" -gt 0 ]; then
	say "warm-up: $WARMUP messages per server (not recorded)"
	for srv in tern postfix; do
		outrun "$srv" "$WARMUP" 0 "$WORK/warmup.jsonl" || die "warm-up against $srv failed: $(tail -c 600 "$WORK/warmup.jsonl")"
		check_alive
	done
fi

say "outbound: $ROUNDS round(s) x $MESSAGES messages of 4096 bytes to $DOMAINS domains"
FAILED=0
for round in $(seq 1 "$ROUNDS"); do
	if [ $((round % 2)) -eq 1 ]; then order="tern postfix"; else order="postfix tern"; fi
	for srv in $order; do
		if ! outrun "$srv" "$MESSAGES" "$round" "$RESULTS"; then
			FAILED=$((FAILED + 1))
			purge_queue "$srv"
		fi
		check_alive
	done
done

# ------------------------------------------------------------------ checks, report
test_dns_stop
DNS_REPORT=$(test_dns_report port53)
say "DNS traffic during the run: $DNS_REPORT"

TERN_LOG_LINES=$(grep -cE 'Z (warn|error) ' "$WORK/tern/tern.log" 2>/dev/null || true)
say "tern log ($WORK/tern/tern.log): ${TERN_LOG_LINES:-0} warning/error lines"
grep -E 'Z (warn|error) ' "$WORK/tern/tern.log" 2>/dev/null | sed -E 's/^[^ ]+ //; s/\[[0-9]+\]//; s/(qid|cid)=[^ ]+ //g; s/(remote|addr)=[^ ]+/\1=…/g' | sort | uniq -c | sort -rn | head -20 || true
PF_LOG_PROBLEMS=$(grep -cE 'warning:|fatal:|panic:|error:' "$WORK/pf/maillog" 2>/dev/null || true)
say "Postfix maillog: ${PF_LOG_PROBLEMS:-0} warning/fatal lines"
grep -E 'warning:|fatal:|panic:|error:' "$WORK/pf/maillog" 2>/dev/null | sed -E 's/^.{0,40}postfix-bench/postfix-bench/' | sort | uniq -c | sort -rn | head -10 || true
TERN_PROCS=$("$PY" "$LIB" pids "$TERN_PID" | wc -l)
SINK_ERRS=$(grep -vc '^$' "$WORK/sink.err" 2>/dev/null || true)
[ "${SINK_ERRS:-0}" -eq 0 ] || { say "smtp-sink stderr:"; head -5 "$WORK/sink.err"; }

mkdir -p "$(dirname "$OUT_MD")"
{
	echo "# smtp-out benchmark results"
	echo
	echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r);"
	echo "tern $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') (binary $TERN_SRC built $TERN_BUILT, sha256 $TERN_SHA), Postfix $(postconf -d -h mail_version), load average at start: $LOAD_START."
	echo
} >"$OUT_MD.head"
"$PY" "$LIB" outreport "$RESULTS" "$OUT_MD.body"
{
	cat "$OUT_MD.head" "$OUT_MD.body"
	echo
	echo "DNS packets sent by the machine during the run: $(echo "$DNS_REPORT" | head -1)"
	echo "tern warning/error log lines: ${TERN_LOG_LINES:-0}; Postfix warning/fatal lines: ${PF_LOG_PROBLEMS:-0}; smtp-sink stderr lines: ${SINK_ERRS:-0}; tern processes at the end: $TERN_PROCS"
	echo "Test DNS: unbound on 127.0.0.1:$UNBOUND_PORT; tern: MX lookups through [delivery] resolver; Postfix: no DNS (transport_maps with explicit next hops)."
	[ "$FAILED" -eq 0 ] || echo "**$FAILED run(s) failed** (see the per-run lines)."
} >"$OUT_MD"
rm -f "$OUT_MD.head" "$OUT_MD.body"
cp "$RESULTS" "${OUT_MD%.md}.jsonl"
[ -s "$WORK/warmup.jsonl" ] && cp "$WORK/warmup.jsonl" "${OUT_MD%.md}.warmup.jsonl"
cp "$WORK/tern/tern.log" "${OUT_MD%.md}.tern.log" 2>/dev/null || true
cp "$WORK/pf/maillog" "${OUT_MD%.md}.postfix.log" 2>/dev/null || true
say "Markdown: $OUT_MD (raw: ${OUT_MD%.md}.jsonl)"
[ "$FAILED" -eq 0 ]
