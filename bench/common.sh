# Shared by bench/smtp-in.sh and bench/smtp-out.sh (sourced, not run): messages,
# package installation, the system daemons a package may start, and the checks every
# benchmark makes before it starts its own servers.  Needs BENCH (the script's name),
# PY, TERN and ROOT set by the caller.

SMTP_SOURCE=/usr/sbin/smtp-source
SMTP_SINK=/usr/sbin/smtp-sink

say() { printf '== %s\n' "$*"; }
die() { printf '%s: %s\n' "$BENCH" "$*" >&2; exit 1; }

port25_listeners() { ss -Hltn 'sport = :25' 2>/dev/null || true; }

install_deps() {
	local need=()
	[ -x /usr/sbin/postfix ] && [ -x "$SMTP_SOURCE" ] && [ -x "$SMTP_SINK" ] || need+=(postfix)
	[ -x /usr/sbin/unbound ] || need+=(unbound)
	[ -x "$PY" ] || need+=(python3)
	command -v ss >/dev/null || need+=(iproute2)
	[ ${#need[@]} -eq 0 ] && return 0
	[ "$(id -u)" -eq 0 ] || die "missing packages (${need[*]}); run as root to install them"
	say "installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null ||
		{ apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null; } ||
		die "apt-get install ${need[*]} failed"
	# Packages may start their system service on installation (policy permitting).
	local pkg
	for pkg in postfix unbound; do
		command -v invoke-rc.d >/dev/null && invoke-rc.d "$pkg" stop >/dev/null 2>&1 || true
	done
}

# The Debian packages may start system daemons: the default Postfix instance (port 25)
# and unbound (port 53).  Stop them; the benchmarks run their own instances only.
stop_system_daemons() {
	if /usr/sbin/postfix status >/dev/null 2>&1; then
		say "stopping the system Postfix instance (default config_directory)"
		/usr/sbin/postfix stop >/dev/null 2>&1 || true
	fi
	if command -v systemctl >/dev/null && systemctl is-active --quiet unbound 2>/dev/null; then
		say "stopping the system unbound service"
		systemctl stop unbound || true
	fi
	local i
	for i in $(seq 1 50); do
		[ -z "$(port25_listeners)" ] && break
		sleep 0.2
	done
	[ -z "$(port25_listeners)" ] || die "something listens on port 25: $(port25_listeners)"
}

# Packages, no stray daemons, root, a tern binary (built when missing), Postfix's user.
bench_prepare() {
	install_deps
	stop_system_daemons
	[ "$(id -u)" -eq 0 ] || die "run as root (Postfix needs root to start; tern drops to user tern)"
	if [ ! -x "$TERN" ]; then
		say "building $TERN"
		make -C "$ROOT" build/tern >/dev/null
	fi
	[ -x "$TERN" ] || die "no tern binary at $TERN"
	id postfix >/dev/null 2>&1 || die "user postfix missing (Debian's postfix package creates it)"
}

# pid seconds: SIGTERM, wait up to seconds, then SIGKILL.
stop_pid() {
	local pid=$1 secs=$2 i
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 1 $((secs * 10))); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	echo "pid $pid did not stop in ${secs}s: SIGKILL" >&2
	kill -KILL "$pid" 2>/dev/null || true
}

freeport() { "$PY" "$LIB" freeport; }

# Stops the DNS packet watcher, after a second for packets in flight.  In the script's
# own shell (not in $(...)): it reaps the watcher.
test_dns_stop() {
	sleep 1
	stop_pid "$DNSWATCH_PID" 10
	wait "$DNSWATCH_PID" 2>/dev/null || true
	DNSWATCH_PID=""
}

# What the stopped watcher counted: a summary line, then up to ten packets (all of
# them, or with port53 as $1 only those to or from port 53; the test DNS answers the
# rest).  $2: a note after the counts.
test_dns_report() {
	"$PY" - "$WORK/dnswatch.json" "${1:-all}" "${2:-}" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("selftest=%s port53_packets=%d test_dns_packets=%d%s"
      % (r["selftest"], r["port53_out"], r["unbound_port_out"],
         " " + sys.argv[3] if sys.argv[3] else ""))
events = r["events"]
if sys.argv[2] == "port53":
    events = [e for e in events if 53 in (e["sport"], e["dport"])]
for e in events[:10]:
    print("  %(t)7.3fs %(if)s %(l4)s %(src)s:%(sport)d -> %(dst)s:%(dport)d" % e)
EOF
}

# ------------------------------------------------------------------ the test DNS
# The DNS packet watcher (every packet to or from port 53 on any interface, counted for
# the whole run) and a loopback unbound that answers from its own local data and
# nothing else (`local-zone: "." static`: it never recurses).  Arguments: the
# local-data records ("NAME TTL IN TYPE DATA").  Sets UNBOUND_PORT, DNSWATCH_PID and
# UNBOUND_PID (the caller's cleanup stops them).  Needs WORK, PY and LIB.
start_test_dns() {
	local i rr
	UNBOUND_PORT=$("$PY" "$LIB" freeport)
	"$PY" "$LIB" dnswatch "$WORK/dnswatch.json" "$UNBOUND_PORT" 2>"$WORK/dnswatch.err" &
	DNSWATCH_PID=$!
	for i in $(seq 1 50); do [ -e "$WORK/dnswatch.json.ready" ] && break; sleep 0.1; done
	[ -e "$WORK/dnswatch.json.ready" ] || die "DNS watcher did not start: $(cat "$WORK/dnswatch.err")"
	mkdir -p "$WORK/unbound"
	{
		printf 'server:\n'
		printf '\t%s\n' "interface: 127.0.0.1" "port: $UNBOUND_PORT" "do-daemonize: no" \
			"do-ip6: no" 'chroot: ""' 'username: ""' "directory: \"$WORK/unbound\"" \
			"pidfile: \"$WORK/unbound/unbound.pid\"" "use-syslog: no" \
			"logfile: \"$WORK/unbound/unbound.log\"" "verbosity: 1" \
			"access-control: 127.0.0.0/8 allow" 'module-config: "iterator"' \
			'local-zone: "." static'
		for rr in "$@"; do printf '\tlocal-data: "%s"\n' "$rr"; done
		printf 'remote-control:\n\tcontrol-enable: no\n'
	} >"$WORK/unbound/unbound.conf"
	/usr/sbin/unbound-checkconf "$WORK/unbound/unbound.conf" >/dev/null || die "bad unbound config"
	/usr/sbin/unbound -c "$WORK/unbound/unbound.conf" >"$WORK/unbound/stdout" 2>&1 &
	UNBOUND_PID=$!
}

# Waits (5 s at most) until the test DNS answers NAME TYPE; prints the answer.
test_dns_answer() {
	local i out
	for i in $(seq 1 50); do
		if out=$("$PY" "$LIB" dnsquery "$UNBOUND_PORT" "$1" "$2" 2>/dev/null); then
			printf '%s\n' "$out"
			return 0
		fi
		kill -0 "$UNBOUND_PID" 2>/dev/null ||
			die "unbound exited: $(cat "$WORK/unbound/unbound.log" "$WORK/unbound/stdout")"
		sleep 0.1
	done
	die "unbound on 127.0.0.1:$UNBOUND_PORT does not answer $1 $2"
}

# ------------------------------------------------------------------ bench/imap.sh only
# Dovecot's IMAP and POP3 servers (the peer of bench/imap.sh), in addition to what
# install_deps installs.  Stops the system instance the package may start.
install_imap_deps() {
	local need=()
	[ -x /usr/sbin/dovecot ] && [ -x /usr/lib/dovecot/imap ] || need+=(dovecot-imapd)
	[ -x /usr/lib/dovecot/pop3 ] || need+=(dovecot-pop3d)
	[ ${#need[@]} -eq 0 ] && return 0
	[ "$(id -u)" -eq 0 ] || die "missing packages (${need[*]}); run as root to install them"
	say "installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null ||
		{ apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null; } ||
		die "apt-get install ${need[*]} failed"
	command -v invoke-rc.d >/dev/null && invoke-rc.d dovecot stop >/dev/null 2>&1 || true
}

# The system Dovecot instance (base_dir /run/dovecot, ports 110/143/993/995), when the
# package started it: stopped, so that only the benchmark's own instance runs.
stop_system_dovecot() {
	local pid
	pid=$(cat /run/dovecot/master.pid 2>/dev/null || true)
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
	say "stopping the system Dovecot instance (pid $pid)"
	if command -v systemctl >/dev/null && systemctl is-active --quiet dovecot 2>/dev/null; then
		systemctl stop dovecot || true
	else
		timeout 30 /usr/sbin/dovecot stop >/dev/null 2>&1 || true
	fi
	local i
	for i in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.2
	done
	die "the system Dovecot (pid $pid) did not stop"
}
