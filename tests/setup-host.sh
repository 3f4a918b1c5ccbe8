#!/usr/bin/env bash
# Installs everything the vmspawn test suite and demo need on a Debian 12 host. Idempotent.
# Must run as root.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-host.sh: must run as root (it installs packages and creates the test user)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# bookworm-backports carries QEMU 10 and the systemd 254 EFI stub (which honours the SMBIOS
# kernel-cmdline-extra string). swtpm (the virtual TPM, 0.7.1 from bookworm) is installed with
# the same target release: it pulls in udev, which must come from backports too, because the
# host's systemd is the 254 backport (from bookworm, udev conflicts with its libudev1).
# Reuse the mirror of the existing deb822 source.
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    cat > /etc/apt/sources.list.d/bpo.sources <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

stamp=/var/lib/vmspawn-test-setup.stamp
want="v7"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends \
        -t bookworm-backports qemu-system-x86 qemu-utils systemd-boot-efi swtpm swtpm-tools
    apt-get install -y -q --no-install-recommends \
        ovmf busybox-static linux-image-cloud-amd64 debootstrap \
        dosfstools mtools fdisk cpio zstd gzip strace g++ iputils-ping binutils e2fsprogs \
        python3 util-linux procps iproute2 ca-certificates \
        libcap-ng-dev libseccomp-dev pkg-config dbus polkitd
    # systemd-nspawn and systemd-machined, for the registration tests; the same version as
    # the installed systemd (bookworm's or the backport).
    apt-get install -y -q --no-install-recommends \
        "systemd-container=$(dpkg-query -W -f='${Version}' systemd)"
    echo "$want" > "$stamp"
fi

if ! id tester >/dev/null 2>&1; then
    useradd -m -s /bin/bash tester
fi

# Rust toolchain components used by the checks.
if command -v rustup >/dev/null 2>&1; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
