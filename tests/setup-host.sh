#!/usr/bin/env bash
# Installs everything the vmspawn test suite and demo need on a Debian 12 host. Idempotent.
# Must run as root.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-host.sh: must run as root (it installs packages and creates the test user)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
setup_start=$SECONDS
say() { printf 'setup-host.sh: %s\n' "$*"; }

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
want="v9-pkg"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    t0=$SECONDS
    apt-get update -q
    apt-get install -y -q --no-install-recommends \
        -t bookworm-backports qemu-system-x86 qemu-utils systemd-boot-efi swtpm swtpm-tools
    apt-get install -y -q --no-install-recommends \
        ovmf busybox-static linux-image-cloud-amd64 debootstrap \
        dosfstools mtools fdisk cpio zstd gzip strace g++ iputils-ping binutils e2fsprogs \
        python3 util-linux procps iproute2 ca-certificates openssh-client \
        libcap-ng-dev libseccomp-dev pkg-config dbus polkitd \
        debhelper lintian man-db zsh fish
    # systemd-nspawn and systemd-machined, for the registration tests, and
    # systemd-journal-remote (for --forward-journal); the same version as the installed
    # systemd (bookworm's or the backport).
    systemd_version=$(dpkg-query -W -f='${Version}' systemd)
    apt-get install -y -q --no-install-recommends \
        "systemd-container=$systemd_version" "systemd-journal-remote=$systemd_version"
    echo "$want" > "$stamp"
    say "packages installed in $((SECONDS - t0)) s"
fi

# --console=gui (tests/tests/gui.rs): QEMU's GTK display module (the same backport as QEMU), an
# X server (Xvfb) and its authority tool, xdotool to find and type into QEMU's window, and xwd
# (x11-apps) for screenshots. A stamp of its own, so it stays independent of the list above.
gui_stamp=/var/lib/vmspawn-test-setup-gui.stamp
if [ "$(cat "$gui_stamp" 2>/dev/null)" != "v1" ]; then
    t0=$SECONDS
    apt-get update -q
    apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-gui
    apt-get install -y -q --no-install-recommends xvfb xauth xdotool x11-apps
    echo v1 > "$gui_stamp"
    say "gui packages installed in $((SECONDS - t0)) s"
fi

if ! id tester >/dev/null 2>&1; then
    useradd -m -s /bin/bash tester
fi

# Rust toolchain components used by the checks.
if command -v rustup >/dev/null 2>&1; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

# --- Tools built with cargo (neither is packaged for bookworm) -------------------------------
# Each crate version is built once into /var/cache/vmspawn-test/tools/<crate>-<version>/ (outside
# the clone; a machine that has it does not rebuild) and copied to where the tests expect it:
# virtiofsd to /usr/libexec/virtiofsd, which is deliberately not on $PATH (systemd-vmspawn and
# vmspawn look it up on $PATH, then in /usr/libexec and /usr/lib, and the tests rely on the
# /usr/libexec lookup), vhost-device-vsock to /usr/local/bin. These are the newest versions on
# crates.io (2026-12); both build with the stable toolchain (virtiofsd needs libcap-ng-dev,
# libseccomp-dev and pkg-config, installed above). The first build takes about 60 + 40 s.
VIRTIOFSD_VERSION=1.14.0
VHOST_DEVICE_VSOCK_VERSION=0.3.0
TOOLS_CACHE=/var/cache/vmspawn-test/tools

find_cargo() {
    local c
    for c in "$(command -v cargo 2>/dev/null || true)" "${HOME:-/root}/.cargo/bin/cargo" /root/.cargo/bin/cargo; do
        if [ -n "$c" ] && [ -x "$c" ]; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

# cargo_tool CRATE VERSION BINARY DESTINATION
cargo_tool() {
    local crate=$1 version=$2 bin=$3 dest=$4 root cargo build t0
    root=$TOOLS_CACHE/$crate-$version
    if [ ! -x "$root/bin/$bin" ]; then
        cargo=$(find_cargo) || {
            echo "setup-host.sh: cargo not found (needed to build $crate $version); install Rust with rustup" >&2
            exit 1
        }
        install -d -m 0755 "$TOOLS_CACHE"
        # Build into a scratch root and target directory, then rename: an interrupted build
        # leaves no half-installed cache entry.
        build=$(mktemp -d /var/tmp/vmspawn-tool-build.XXXXXX)
        trap 'rm -rf "$build"' EXIT
        say "building $crate $version with cargo (takes a minute or two)"
        t0=$SECONDS
        if ! CARGO_TARGET_DIR=$build/target "$cargo" install --locked --quiet \
            --root "$build/root" --version "=$version" "$crate" >"$build/cargo.log" 2>&1; then
            tail -n 40 "$build/cargo.log" >&2
            echo "setup-host.sh: building $crate $version failed (log above)" >&2
            exit 1
        fi
        rm -rf "$root"
        chmod -R u=rwX,go=rX "$build/root"
        mv -T "$build/root" "$root"
        rm -rf "$build"
        trap - EXIT
        say "built $crate $version in $((SECONDS - t0)) s"
    fi
    if ! cmp -s "$root/bin/$bin" "$dest"; then
        install -D -m 0755 "$root/bin/$bin" "$dest"
        say "installed $dest ($crate $version)"
    fi
}
cargo_tool virtiofsd "$VIRTIOFSD_VERSION" virtiofsd /usr/libexec/virtiofsd
cargo_tool vhost-device-vsock "$VHOST_DEVICE_VSOCK_VERSION" vhost-device-vsock /usr/local/bin/vhost-device-vsock

say "done in $((SECONDS - setup_start)) s"
