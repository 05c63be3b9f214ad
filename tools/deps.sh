#!/bin/sh
# Installs the Debian packages tern's build, tests and benchmarks need, when missing.
# Quiet when everything is present; run as root (or with sudo) on a bare machine.
PKGS="make gcc clang pkg-config libevent-dev libssl-dev libunbound-dev libsqlite3-dev
libcrypt-dev libinih-dev libcmocka-dev libclang-rt-14-dev openssl sqlite3 unbound swaks curl
python3 python3-pytest procps iproute2 passwd fetchmail"
# fetchmail is a real POP3 and IMAP client in the integration tests.
# postfix: its smtp-sink is a remote server in the outbound tests, and Postfix itself is
# the peer in bench/.  The package must not leave a system MTA running on port 25.
PKGS="$PKGS postfix"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "deps: installing$missing" >&2
	if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
	export DEBIAN_FRONTEND=noninteractive
	echo "postfix postfix/main_mailer_type select No configuration" |
		$SUDO debconf-set-selections 2>/dev/null || true
	# No service may start during the installation (policy-rc.d says no to all).
	policy=""
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		policy=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\nexit 101\n' | $SUDO tee $policy >/dev/null && $SUDO chmod 755 $policy
	fi
	$SUDO apt-get update -qq >&2 &&
		$SUDO apt-get install -y -qq --no-install-recommends $missing >&2
	rc=$?
	[ -n "$policy" ] && $SUDO rm -f "$policy"
	[ $rc -eq 0 ] || exit 1
	# Had a policy-rc.d of the machine let the new Postfix start, stop it: tests and
	# benchmarks run their own servers on loopback.
	case "$missing" in *postfix*)
		$SUDO /usr/sbin/postfix status >/dev/null 2>&1 && $SUDO /usr/sbin/postfix stop >/dev/null 2>&1 ;;
	esac
fi
# The unprivileged user tern's workers run as when started as root.
if [ "$(id -u)" -eq 0 ] && ! getent passwd tern >/dev/null 2>&1; then
	useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tern >&2
fi
exit 0
