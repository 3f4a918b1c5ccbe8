#!/usr/bin/env bash
# Boots the busybox demo guest with vmspawn as a regular user, with a TAP network device that
# the privileged helper creates for that user, and an interactive console.
#
# Run as root (or with sudo): it installs the host packages, builds vmspawn, its helper and the
# demo guest, installs the helper setuid root at /usr/libexec/vmspawn/vmspawn-privhelper and,
# if there is none yet, a policy /etc/vmspawn/policy.toml allowing the demo user to create TAP
# devices. The VM then runs as $SUDO_USER (or as the account 'tester' when run as plain root),
# inside a network namespace of its own, where the host end of the TAP is 10.123.0.1.
# In the guest you get a shell after it pinged the host; leave with 'exit' (the VM powers off)
# or Ctrl-] three times.
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
cargo build --release --locked -q -p vmspawn -p vmspawn-privhelper
images=$(bash tests/images/build.sh | tail -n 1)

user=${SUDO_USER:-}
if [ -z "$user" ] || [ "$user" = root ]; then
    user=tester
fi

echo "Installing the helper setuid root: /usr/libexec/vmspawn/vmspawn-privhelper"
install -D -m 4755 -o root -g root target/release/vmspawn-privhelper /usr/libexec/vmspawn/vmspawn-privhelper
if [ ! -e /etc/vmspawn/policy.toml ]; then
    echo "Installing /etc/vmspawn/policy.toml: '$user' may create TAP devices"
    install -d -m 0755 /etc/vmspawn
    printf '[[allow]]\nusers = ["%s"]\noperations = ["create-tap"]\nmax-taps = 4\npolkit = "no"\n' "$user" \
        > /etc/vmspawn/policy.toml
    chmod 0644 /etc/vmspawn/policy.toml
fi

work=$(mktemp -d /var/tmp/vmspawn-demo.XXXXXX)
netns=vmspawn-demo-$$
cleanup() {
    ip netns del "$netns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$netns"
ip -n "$netns" link set lo up
install -m 0755 target/release/vmspawn "$work/vmspawn"
truncate -s 64M "$work/demo.raw"
printf 'label: gpt\nstart=2048, type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709, name=root\n' | sfdisk -q "$work/demo.raw"
chown -R "$user:" "$work"
chmod 0755 "$work"

# Give the host end of the TAP an address as soon as the helper has created it.
(
    for _ in $(seq 1 600); do
        tap=$(ip -n "$netns" -o link show 2>/dev/null | grep -o 'vt-[0-9a-f]*' | head -n 1 || true)
        if [ -n "$tap" ]; then
            ip -n "$netns" addr add 10.123.0.1/24 dev "$tap"
            exit 0
        fi
        sleep 0.1
    done
) &

echo "Booting the demo VM as user '$user' (software emulation unless KVM is usable by that user)..."
ip netns exec "$netns" runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$work" \
    TMPDIR="$work" TERM="${TERM:-xterm}" \
    "$work/vmspawn" -i "$work/demo.raw" \
    --linux="$images/vmlinuz" --initrd="$images/initrd-busybox.cpio.gz" \
    --cpus=2 --ram=512M --network-tap --set-credential=demo:hello \
    test.mode=net=10.123.0.2/24@10.123.0.1,shell
