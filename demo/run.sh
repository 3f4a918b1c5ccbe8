#!/usr/bin/env bash
# Boots the busybox demo guest with vmspawn as a regular user, with a TAP network device that
# the privileged helper creates for that user, and an interactive console.
#
# Run as root (or with sudo): it installs the host packages, builds the Debian package
# (packaging/build-deb.sh) and installs it with apt, builds the demo guest and, if the packaged
# policy allows nothing yet, lets the demo user create TAP devices in /etc/vmspawn/policy.toml.
# The VM then runs as $SUDO_USER (or as the account 'tester' when run as plain root) through
# the packaged helper service, started from its socket. Where PID 1 is not systemd (containers,
# some CI machines) nothing can start that socket, so the demo runs the packaged helper binary
# itself, listening on the same socket path, for as long as the demo runs.
#
#   demo/run.sh --setuid   the same with the helper installed setuid root instead (no package)
#
# The guest pings the host end of its TAP (10.123.0.1) and gives you a shell; leave with 'exit'
# (the VM powers off) or Ctrl-] three times. The VM runs in a network namespace of its own;
# the TAP lives where the helper runs (the host's network namespace under systemd).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=package
case "${1:-}" in
    "") ;;
    --setuid) mode=setuid ;;
    *)
        echo "usage: demo/run.sh [--setuid]" >&2
        exit 2
        ;;
esac
if [ "$(id -u)" -ne 0 ]; then
    echo "demo/run.sh must run as root or with sudo (it installs packages); the VM itself runs as you." >&2
    exit 1
fi
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

bash tests/setup-host.sh >/dev/null
images=$(bash tests/images/build.sh | tail -n 1)

user=${SUDO_USER:-}
if [ -z "$user" ] || [ "$user" = root ]; then
    user=tester
fi

work=$(mktemp -d /var/tmp/vmspawn-demo.XXXXXX)
netns=vmspawn-demo-$$
helper_pid=
cleanup() {
    if [ -n "$helper_pid" ]; then
        kill "$helper_pid" 2>/dev/null || true
        wait "$helper_pid" 2>/dev/null || true
    fi
    ip netns del "$netns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$netns"
ip -n "$netns" link set lo up
# Where the TAP appears: the helper's network namespace.
tap_netns=()

if [ "$mode" = package ]; then
    deb=$(bash packaging/build-deb.sh | tail -n 1)
    echo "Installing $deb"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$deb" >/dev/null
    vmspawn=/usr/bin/vmspawn
    if [ -d /run/systemd/system ]; then
        echo "The helper runs from vmspawn-privhelper.socket (systemd)."
    else
        echo "PID 1 is not systemd: running the packaged helper on /run/vmspawn/privhelper.socket for the demo."
        install -d -m 0755 /run/vmspawn
        ip netns exec "$netns" /usr/libexec/vmspawn/vmspawn-privhelper \
            --listen /run/vmspawn/privhelper.socket --policy /etc/vmspawn/policy.toml &
        helper_pid=$!
        tap_netns=(-n "$netns")
    fi
else
    cargo build --release --locked -q -p vmspawn -p vmspawn-privhelper
    echo "Installing the helper setuid root: /usr/libexec/vmspawn/vmspawn-privhelper"
    install -D -m 4755 -o root -g root target/release/vmspawn-privhelper /usr/libexec/vmspawn/vmspawn-privhelper
    install -m 0755 target/release/vmspawn "$work/vmspawn"
    vmspawn=$work/vmspawn
    tap_netns=(-n "$netns")
fi

# The packaged policy allows nothing; a missing one likewise.
if ! grep -q '^\[\[allow\]\]' /etc/vmspawn/policy.toml 2>/dev/null; then
    echo "Allowing '$user' to create TAP devices in /etc/vmspawn/policy.toml"
    install -d -m 0755 /etc/vmspawn
    [ -e /etc/vmspawn/policy.toml ] || : > /etc/vmspawn/policy.toml
    printf '\n[[allow]]\nusers = ["%s"]\noperations = ["create-tap"]\nmax-taps = 4\npolkit = "no"\n' "$user" \
        >> /etc/vmspawn/policy.toml
    chmod 0644 /etc/vmspawn/policy.toml
fi

truncate -s 64M "$work/demo.raw"
printf 'label: gpt\nstart=2048, type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709, name=root\n' | sfdisk -q "$work/demo.raw"
chown -R "$user:" "$work"
chmod 0755 "$work"

# Give the host end of the TAP an address as soon as the helper has created it (the user's
# TAP: under systemd other VMs' may be there too).
uid=$(id -u "$user")
(
    for _ in $(seq 1 600); do
        for tap in $(ip "${tap_netns[@]}" -o link show 2>/dev/null | grep -o 'vt-[0-9a-f]*' || true); do
            if ip "${tap_netns[@]}" -d link show dev "$tap" 2>/dev/null | grep -Eq "user ($user|$uid)( |$)"; then
                ip "${tap_netns[@]}" addr add 10.123.0.1/24 dev "$tap"
                exit 0
            fi
        done
        sleep 0.1
    done
) &

echo "Booting the demo VM as user '$user' (software emulation unless KVM is usable by that user)..."
ip netns exec "$netns" runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$work" \
    TMPDIR="$work" TERM="${TERM:-xterm}" \
    "$vmspawn" -i "$work/demo.raw" \
    --linux="$images/vmlinuz" --initrd="$images/initrd-busybox.cpio.gz" \
    --cpus=2 --ram=512M --network-tap --set-credential=demo:hello \
    test.mode=net=10.123.0.2/24@10.123.0.1,shell
