#!/usr/bin/env bash
# Boots the busybox demo guest with vmspawn as a regular user, with an interactive console.
# Run as root (or with sudo): it installs the host packages, builds vmspawn and the demo guest,
# then starts the VM as $SUDO_USER (or as the account 'tester' when run as plain root).
# In the guest you get a shell; leave with 'exit' (the VM powers off) or Ctrl-] three times.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "demo/run.sh must run as root or with sudo (it installs packages); the VM itself runs as you." >&2
    exit 1
fi
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

bash tests/setup-host.sh >/dev/null
cargo build --release --locked -q -p vmspawn
images=$(bash tests/images/build.sh | tail -n 1)

user=${SUDO_USER:-}
if [ -z "$user" ] || [ "$user" = root ]; then
    user=tester
fi

work=$(mktemp -d /var/tmp/vmspawn-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
install -m 0755 target/release/vmspawn "$work/vmspawn"
truncate -s 64M "$work/demo.raw"
printf 'label: gpt\nstart=2048, type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709, name=root\n' | sfdisk -q "$work/demo.raw"
chown -R "$user:" "$work"
chmod 0755 "$work"

echo "Booting the demo VM as user '$user' (software emulation unless KVM is usable by that user)..."
runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$work" TMPDIR="$work" TERM="${TERM:-xterm}" \
    "$work/vmspawn" -i "$work/demo.raw" \
    --linux="$images/vmlinuz" --initrd="$images/initrd-busybox.cpio.gz" \
    --cpus=2 --ram=512M --network-user-mode --set-credential=demo:hello \
    test.mode=shell
