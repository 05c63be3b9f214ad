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
