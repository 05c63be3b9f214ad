#!/usr/bin/env bash
# bench/smtp-in.sh: inbound SMTP benchmark, tern against Postfix, side by side in one run.
#
# Starts, all on 127.0.0.1 and free ports, under one temporary directory:
#   - a test DNS server (unbound, static zone for example.test; nothing is forwarded),
#   - Postfix: its own instance (own config, queue and data directories), accepting mail
#     for example.test and delivering it with the virtual agent into Maildir, no DNS,
#   - tern: `tern serve` with the example.test domain and the demo@example.test user.
# Then, for each server:
#   - smtp-source (from Postfix) at 1, 10 and 50 sessions, MESSAGES messages of 4 KiB
#     each, timed from its start until every message is a file in the Maildir new/;
#     the peak of the summed VmRSS of all the server's processes is sampled meanwhile;
#   - IDLE_CONNS concurrent idle plaintext connections (greeting read), RSS before/after.
# Prints the results table and writes it as Markdown to $OUT_MD.
#
# Environment (all optional):
#   TERN        tern binary (default: build/tern, built with make when missing)
#   MESSAGES    messages per run (default 2000)
#   SESSIONS    session counts (default "1 10 50")
#   ROUNDS      rounds of the whole throughput matrix; the median is reported (default 5)
#   IDLE_CONNS  idle connections per server (default 10000; 0 skips the idle test)
#   OUT_MD      Markdown output (default bench/results/smtp-in.md)
#   KEEP_WORK   1 keeps the temporary directory (logs, configs, Maildirs)
#
# Run as root on Debian: installs postfix and unbound when missing.  Bounded everywhere.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PY=/usr/bin/python3
LIB="$HERE/benchlib.py"
TERN=${TERN:-$ROOT/build/tern}
MESSAGES=${MESSAGES:-2000}
SESSIONS=${SESSIONS:-"1 10 50"}
ROUNDS=${ROUNDS:-5}
IDLE_CONNS=${IDLE_CONNS:-10000}
OUT_MD=${OUT_MD:-$HERE/results/smtp-in.md}
KEEP_WORK=${KEEP_WORK:-0}

BENCH=smtp-in.sh
# shellcheck source=bench/common.sh
. "$HERE/common.sh"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
bench_prepare

# Clients and servers get room for 10,000+ descriptors (tern raises its soft limit to
# the hard one itself; Postfix's anvil and master inherit this one).
ulimit -Hn 1048576 2>/dev/null || ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ------------------------------------------------------------------ work area, cleanup
WORK=$(mktemp -d /tmp/tern-bench.XXXXXX)
chmod 755 "$WORK"
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
TERN_PID="" PF_CONF="" UNBOUND_PID="" DNSWATCH_PID="" CHILD="" TERN_RESOLVER=""


pf_master_pid() {
	[ -n "$PF_CONF" ] && [ -s "$WORK/pf/spool/pid/master.pid" ] &&
		tr -d ' \n' <"$WORK/pf/spool/pid/master.pid" || true
}

cleanup() {
	local rc=$?
	set +e
	[ -n "$CHILD" ] && stop_pid "$CHILD" 10
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

# ------------------------------------------------------------------ test DNS (unbound)
start_test_dns "example.test. 300 IN MX 10 mx.example.test." \
	"mx.example.test. 300 IN A 127.0.0.1" "example.test. 300 IN A 127.0.0.1"
DNS_OK=$(test_dns_answer example.test MX)
say "test DNS: unbound on 127.0.0.1:$UNBOUND_PORT answers example.test MX: $DNS_OK"

# ------------------------------------------------------------------ tern
TERN_PORT=$(freeport)
mkdir -p "$WORK/tern"
cat >"$WORK/tern/tern.conf" <<EOF
[server]
hostname = bench.local
data_dir = $WORK/tern/data
log_file = $WORK/tern/tern.log
log_level = warn

[smtp]
max_connections_per_ip = 100000

[listener mx]
protocol = smtp
address = 127.0.0.1:$TERN_PORT
EOF
# tern does no DNS on the inbound path; when the binary knows [delivery] resolver, point
# it at the test DNS anyway, so that nothing of tern could ever ask the machine's resolver.
if "$TERN" config reference 2>/dev/null | grep -c '^| `resolver`' >/dev/null; then
	printf '\n[delivery]\nresolver = 127.0.0.1@%s\n' "$UNBOUND_PORT" >>"$WORK/tern/tern.conf"
	TERN_RESOLVER="[delivery] resolver = 127.0.0.1@$UNBOUND_PORT"
else
	TERN_RESOLVER="none (this tern has no resolver setting; it does no DNS inbound)"
fi
"$TERN" -c "$WORK/tern/tern.conf" check >/dev/null || die "tern check failed"
"$TERN" -c "$WORK/tern/tern.conf" domain add example.test >/dev/null
echo pw | "$TERN" -c "$WORK/tern/tern.conf" user add demo@example.test >/dev/null
"$TERN" -c "$WORK/tern/tern.conf" serve >"$WORK/tern/stdout" 2>&1 &
TERN_PID=$!
"$PY" "$LIB" wait-port "$TERN_PORT" 20 || die "tern did not start: $(tail -5 "$WORK/tern/stdout" "$WORK/tern/tern.log" 2>/dev/null)"
TERN_MAILDIR=$WORK/tern/data/mail/example.test/demo
say "tern $("$TERN" --version 2>/dev/null || echo '(no --version)') on 127.0.0.1:$TERN_PORT, pid $TERN_PID; test DNS for tern: $TERN_RESOLVER"

# ------------------------------------------------------------------ Postfix
PF_PORT=$(freeport)
PF_CONF=$WORK/pf/etc
mkdir -p "$PF_CONF" "$WORK/pf/spool" "$WORK/pf/data" "$WORK/pf/mail"
chown nobody:nogroup "$WORK/pf/mail"
chown postfix "$WORK/pf/data"
VUID=$(id -u nobody) VGID=$(getent group nogroup | cut -d: -f3)
printf 'demo@example.test example.test/demo/\n' >"$PF_CONF/vmailbox"
cat >"$PF_CONF/main.cf" <<EOF
# Generated by bench/smtp-in.sh: a private Postfix instance on 127.0.0.1:$PF_PORT.
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
mynetworks = 127.0.0.0/8
relayhost =
alias_maps =
alias_database =
local_recipient_maps =
append_dot_mydomain = no
biff = no
# Mail for example.test goes to Maildir through the virtual delivery agent.
virtual_mailbox_domains = example.test
virtual_mailbox_base = $WORK/pf/mail
virtual_mailbox_maps = texthash:$PF_CONF/vmailbox
virtual_uid_maps = static:$VUID
virtual_gid_maps = static:$VGID
# No DNS anywhere: no reverse lookup of clients, no DNS in the SMTP/LMTP clients.
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
# Benchmark clients are on loopback: no per-client connection limits (the default
# exempts mynetworks already; said here explicitly).
smtpd_client_event_limit_exceptions = 127.0.0.0/8
smtpd_client_connection_count_limit = 0
# Only for the idle-connection test: Postfix forks one smtpd per connection and needs
# minutes to reach 10,000; the default 300s would close the first ones before the end.
smtpd_timeout = 1200s
EOF
# One smtpd process per connection: allow IDLE_CONNS + margin of them (default 100).
SMTPD_MAXPROC=$(( IDLE_CONNS > 100 ? IDLE_CONNS + 500 : 100 ))
cat >"$PF_CONF/master.cf" <<EOF
# service type private unpriv chroot wakeup maxproc command
127.0.0.1:$PF_PORT inet n - n - $SMTPD_MAXPROC smtpd
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
PF_MAILDIR=$WORK/pf/mail/example.test/demo
say "Postfix $(postconf -c "$PF_CONF" -h mail_version) on 127.0.0.1:$PF_PORT, master pid $PF_PID"

# Nothing of ours may listen anywhere but 127.0.0.1; nothing at all on port 25.
OUR_PIDS=$({ "$PY" "$LIB" pids "$TERN_PID"; "$PY" "$LIB" pids "$PF_PID"; echo "$UNBOUND_PID"; } | paste -sd'|')
ss -Hltunp | grep -E "pid=($OUR_PIDS)," >"$WORK/listeners.txt" || true
if awk '{print $5}' "$WORK/listeners.txt" | grep -qv '^127\.0\.0\.1:'; then
	cat "$WORK/listeners.txt" >&2; die "a benchmark server listens outside 127.0.0.1"
fi
say "listening sockets of the servers: $(awk '{print $1 "/" $5}' "$WORK/listeners.txt" | sort -u | paste -sd' ')"
[ -z "$(port25_listeners)" ] || die "something listens on port 25: $(port25_listeners)"

# ------------------------------------------------------------------ warm-up + throughput
# A short warm-up per server creates the Maildirs and loads caches; not recorded.
for srv in tern postfix; do
	if [ $srv = tern ]; then pid=$TERN_PID port=$TERN_PORT md=$TERN_MAILDIR
	else pid=$PF_PID port=$PF_PORT md=$PF_MAILDIR; fi
	py_step run --name "$srv" --root-pid "$pid" --port "$port" --maildir "$md" \
		--sessions 5 --messages 50 --length 4096 --results "$WORK/warmup.jsonl" \
		--timeout 120 >/dev/null || die "warm-up against $srv failed: $(tail -1 "$WORK/warmup.jsonl")"
done

say "throughput: $ROUNDS round(s) x sessions {$SESSIONS} x $MESSAGES messages of 4096 bytes"
FAILED=0
for round in $(seq 1 "$ROUNDS"); do
	# Alternate which server goes first so neither always runs on a warmer machine.
	if [ $((round % 2)) -eq 1 ]; then order="tern postfix"; else order="postfix tern"; fi
	for s in $SESSIONS; do
		for srv in $order; do
			if [ $srv = tern ]; then pid=$TERN_PID port=$TERN_PORT md=$TERN_MAILDIR
			else pid=$PF_PID port=$PF_PORT md=$PF_MAILDIR; fi
			py_step run --name "$srv" --root-pid "$pid" --port "$port" \
				--maildir "$md" --sessions "$s" --messages "$MESSAGES" --length 4096 \
				--round "$round" --results "$RESULTS" --timeout 300 || FAILED=$((FAILED + 1))
			kill -0 "$TERN_PID" 2>/dev/null || die "tern (pid $TERN_PID) died"
			kill -0 "$PF_PID" 2>/dev/null || die "Postfix master (pid $PF_PID) died"
		done
	done
done

# ------------------------------------------------------------------ idle connections
if [ "$IDLE_CONNS" -gt 0 ]; then
	say "idle: $IDLE_CONNS concurrent plaintext connections per server"
	for srv in tern postfix; do
		if [ $srv = tern ]; then pid=$TERN_PID port=$TERN_PORT
		else pid=$PF_PID port=$PF_PORT; fi
		py_step idle --name "$srv" --root-pid "$pid" --port "$port" \
			--n "$IDLE_CONNS" --results "$RESULTS" --timeout 540
		kill -0 "$TERN_PID" 2>/dev/null || die "tern (pid $TERN_PID) died"
	done
fi

# ------------------------------------------------------------------ checks, report
test_dns_stop
DNS_REPORT=$(test_dns_report all "(the start-up check query and its answer are 2)")
say "DNS traffic during the run: $DNS_REPORT"

TERN_LOG_LINES=$(grep -cE 'Z (warn|error) ' "$WORK/tern/tern.log" 2>/dev/null || true)
say "tern log ($WORK/tern/tern.log): ${TERN_LOG_LINES:-0} warning/error lines"
grep -E 'Z (warn|error) ' "$WORK/tern/tern.log" 2>/dev/null | sed -E 's/^[^ ]+ //; s/\[[0-9]+\]//' | sort | uniq -c | sort -rn | head -20 || true
PF_LOG_PROBLEMS=$(grep -cE 'warning:|fatal:|panic:|error:' "$WORK/pf/maillog" 2>/dev/null || true)
say "Postfix maillog: ${PF_LOG_PROBLEMS:-0} warning/fatal lines"
grep -E 'warning:|fatal:|panic:|error:' "$WORK/pf/maillog" 2>/dev/null | sed -E 's/^.{0,40}postfix-bench/postfix-bench/' | sort | uniq -c | sort -rn | head -10 || true

mkdir -p "$(dirname "$OUT_MD")"
{
	echo "# smtp-in benchmark results"
	echo
	echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r);"
	echo "tern $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), Postfix $(postconf -d -h mail_version), load average at start: $LOAD_START."
	echo
} >"$OUT_MD.head"
"$PY" "$LIB" report "$RESULTS" "$OUT_MD.body"
{
	cat "$OUT_MD.head" "$OUT_MD.body"
	echo
	echo "DNS packets sent by the machine during the run: $(echo "$DNS_REPORT" | head -1)"
	echo "tern warning/error log lines: ${TERN_LOG_LINES:-0}; Postfix warning/fatal lines: ${PF_LOG_PROBLEMS:-0}"
	echo "Test DNS: unbound on 127.0.0.1:$UNBOUND_PORT; tern: $TERN_RESOLVER; Postfix: DNS disabled."
	[ "$FAILED" -eq 0 ] || echo "**$FAILED throughput run(s) failed** (see the per-run lines)."
} >"$OUT_MD"
rm -f "$OUT_MD.head" "$OUT_MD.body"
cp "$RESULTS" "${OUT_MD%.md}.jsonl"
cp "$WORK/tern/tern.log" "${OUT_MD%.md}.tern.log" 2>/dev/null || true
say "Markdown: $OUT_MD (raw: ${OUT_MD%.md}.jsonl)"
[ "$FAILED" -eq 0 ]
