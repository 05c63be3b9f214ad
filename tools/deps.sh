#!/bin/sh
# Installs the Debian packages tern's build, tests and benchmarks need, when missing.
# Quiet when everything is present; run as root (or with sudo) on a bare machine.
PKGS="make gcc clang pkg-config libevent-dev libssl-dev libunbound-dev libsqlite3-dev
libcrypt-dev libinih-dev libcmocka-dev libclang-rt-14-dev openssl sqlite3 unbound swaks curl
python3 python3-pytest procps iproute2 passwd"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "deps: installing$missing" >&2
	if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq >&2 || exit 1
	$SUDO apt-get install -y -qq --no-install-recommends $missing >&2 || exit 1
fi
# The unprivileged user tern's workers run as when started as root.
if [ "$(id -u)" -eq 0 ] && ! getent passwd tern >/dev/null 2>&1; then
	useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tern >&2
fi
exit 0
