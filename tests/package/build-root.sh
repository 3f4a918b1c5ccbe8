#!/usr/bin/env bash
# Builds the clean Debian 12 root the package test installs vmspawn into: debootstrap's
# minbase with systemd (booted as PID 1 by systemd-nspawn), logind for a user manager, and the
# package's dependencies and recommendations already installed (QEMU 10 from
# bookworm-backports, as on the test host; virtiofsd is not packaged for Debian 12), so that
# `apt-get install ./vmspawn_*.deb` inside it needs no download and the test measures the
# package, not the mirror.
#
# Usage: tests/package/build-root.sh   (as root)
# The root is cached in /var/cache/vmspawn-test/pkgroot-<hash of this script>/; the path is
# the last line of stdout. The test never writes to it (it boots an overlay of it).
set -euo pipefail
export LC_ALL=C
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
key=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
root=/var/cache/vmspawn-test/pkgroot-$key
if [ -e "$root/.complete" ]; then
    echo "$root"
    exit 0
fi
say() { echo "build-root.sh: $*" >&2; }
t0=$SECONDS
rm -rf "$root" "$root.tmp"
mkdir -p "$(dirname "$root")"
say "debootstrap bookworm (minbase) into $root"
debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,libpam-systemd,iproute2,procps,ca-certificates \
    bookworm "$root.tmp" http://deb.debian.org/debian >&2
cat > "$root.tmp/etc/apt/sources.list" <<'SOURCES'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
deb http://deb.debian.org/debian bookworm-backports main
SOURCES
chroot "$root.tmp" apt-get update -q >&2
# QEMU and swtpm from backports, as on the test host; then the rest of what the package
# depends on and recommends.
chroot "$root.tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -t bookworm-backports qemu-system-x86 swtpm swtpm-tools >&2
chroot "$root.tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    ovmf systemd-journal-remote openssh-client systemd-container polkitd >&2
chroot "$root.tmp" apt-get clean
# A machine ID of its own, and a regular user like the test host's.
: > "$root.tmp/etc/machine-id"
chroot "$root.tmp" useradd -m -u 1001 -s /bin/bash tester
touch "$root.tmp/.complete"
mv -T "$root.tmp" "$root"
say "built in $((SECONDS - t0)) s"
echo "$root"
