#!/usr/bin/env bash
# The Debian package, for real: builds it, runs lintian (no errors, no warnings), prints the
# helper unit's `systemd-analyze security` exposure (fails above the target), checks the man
# pages render and the completions load and complete an option in bash, zsh and fish; then
# installs it with apt into a clean Debian 12 root booted with systemd as PID 1
# (systemd-nspawn, on an overlay of the cached root of build-root.sh) and there:
#   - the helper socket is enabled and listening, and a regular user (tester) boots a TCG guest
#     with --network-tap through the helper it activates; the guest pings the container;
#   - `systemctl --user start vmspawn@demo` runs a VM that `systemctl --user stop` powers off
#     (exit status 0, result success, no runtime directory or process left), its runtime files
#     in the unit's RuntimeDirectory=;
#   - tester's vmspawn --slice= --property= runs the VM in its own scope unit of the user
#     manager with those properties, and `systemctl --user stop` on the scope powers it off
#     (RequestStop, exit 0, nothing left);
#   - `apt-get remove` leaves only the conffile, `apt-get purge` nothing.
#
# Usage: tests/package/install-test.sh   (as root; VMSPAWN_TEST_IMAGES = the guest images)
set -euo pipefail
cd "$(dirname "$0")/../.."
export LC_ALL=C.UTF-8
say() { echo "package test: $*" >&2; }
fail() {
    echo "package test FAILED: $*" >&2
    exit 1
}
[ "$(id -u)" -eq 0 ] || fail "must run as root"
images=${VMSPAWN_TEST_IMAGES:?set VMSPAWN_TEST_IMAGES to the guest images (tests/images/build.sh)}
t0=$SECONDS

deb=$(bash packaging/build-deb.sh | tail -n 1)
say "built $deb ($(du -k "$deb" | cut -f1) KiB)"

# --- lintian ------------------------------------------------------------------------------
lintian_out=$(lintian --pedantic --fail-on error,warning "$deb" 2>&1 | grep -v '^running with root privileges' || true)
if echo "$lintian_out" | grep -q '^[EW]:'; then
    echo "$lintian_out" >&2
    fail "lintian reports errors or warnings (above)"
fi
say "lintian: $(echo "$lintian_out" | grep -c '^[IP]:' || true) info/pedantic tags, no errors, no warnings"

# --- systemd-analyze security of the helper's unit ----------------------------------------
exposure=$(systemd-analyze security --offline=true packaging/systemd/vmspawn-privhelper.service 2>&1 |
    sed -n 's/.*Overall exposure level for vmspawn-privhelper.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || fail "systemd-analyze security gave no exposure level"
say "systemd-analyze security: vmspawn-privhelper.service exposure $exposure (target <= 2.0)"
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || fail "the helper unit's exposure $exposure is above 2.0"

# --- man pages and completions, from the package's own files -------------------------------
files=$(mktemp -d /var/tmp/vmspawn-pkgfiles.XXXXXX)
work=
machine=vmspawn-pkgtest-$$
cleanup() {
    local status=$?
    set +e
    if [ "$status" -ne 0 ] && [ -n "${leader:-}" ]; then
        echo "--- the helper's journal in the container:" >&2
        nsenter --target "$leader" --all -- journalctl -u vmspawn-privhelper --no-pager -n 40 >&2 || true
    fi
    # SIGTERM makes nspawn power the container off; SIGKILL if that takes too long.
    local nspawn
    nspawn=$(pgrep -f -- "--machine=$machine " || true)
    if [ -n "$nspawn" ]; then
        kill -TERM $nspawn 2>/dev/null || true
        for _ in $(seq 100); do
            pgrep -f -- "--machine=$machine " >/dev/null || break
            sleep 0.2
        done
        kill -KILL $nspawn 2>/dev/null || true
        sleep 0.5
    fi
    # nspawn --keep-unit split our cgroup into payload/ and supervisor/.
    for hierarchy in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do
        for dir in payload supervisor; do
            [ -d "$hierarchy/$dir" ] && find "$hierarchy/$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
        done
    done
    if [ -n "$work" ]; then
        umount "$work/merged" 2>/dev/null || umount -l "$work/merged" 2>/dev/null || true
        rm -rf "$work"
    fi
    rm -rf "$files"
    exit "$status"
}
trap cleanup EXIT
dpkg-deb -x "$deb" "$files"
for page in "$files"/usr/share/man/man*/*.gz; do
    warnings=$(MANWIDTH=100 man --warnings -l "$page" 2>&1 >/dev/null || true)
    [ -z "$warnings" ] || fail "man $(basename "$page") renders with warnings: $warnings"
    MANWIDTH=100 man -l "$page" 2>/dev/null | grep -q . || fail "man $(basename "$page") renders empty"
done
MANWIDTH=100 man -l "$files/usr/share/man/man1/vmspawn.1.gz" 2>/dev/null | grep -q -- '--tpm-state' ||
    fail "man vmspawn does not document --tpm-state"
say "man pages render: $(cd "$files/usr/share/man" && echo man*/*.gz)"

# bash: the completion function, asked for "vmspawn --tpm-st".
bash_reply=$(bash --norc -c '
    source "$1"
    COMP_WORDS=(vmspawn --tpm-st); COMP_CWORD=1; COMP_LINE="vmspawn --tpm-st"; COMP_POINT=${#COMP_LINE}
    func=$(complete -p vmspawn | sed -n "s/.*-F \([^ ]*\).*/\1/p")
    "$func" vmspawn --tpm-st vmspawn
    printf "%s\n" "${COMPREPLY[@]}"' _ "$files/usr/share/bash-completion/completions/vmspawn")
echo "$bash_reply" | grep -qx -- '--tpm-state' || fail "bash completion of '--tpm-st' gave: $bash_reply"
# fish: complete -C does what the TAB key does.
fish_reply=$(fish --no-config -c "source $files/usr/share/fish/vendor_completions.d/vmspawn.fish; complete -C 'vmspawn --tpm-st'")
echo "$fish_reply" | grep -q -- '^--tpm-state' || fail "fish completion of '--tpm-st' gave: $fish_reply"
# zsh: an interactive shell on a pseudo-terminal (zpty), compinit with the package's function
# directory, then TAB after "vmspawn --tpm-st"; the line it completes to is echoed back.
cat > "$files/complete.zsh" <<'ZSH'
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PS1='> '; fpath=($ZDIR \$fpath); autoload -Uz compinit; compinit -u -D; setopt nobeep; print -r -- RE''ADY"
out=
for i in {1..100}; do
    zpty -r -t z chunk && out+=$chunk
    [[ $out == *READY* ]] && break
    sleep 0.1
done
zpty -w -n z $'vmspawn --tpm-st\t'
out=
for i in {1..50}; do
    zpty -r -t z chunk && out+=$chunk
    [[ $out == *tpm-state* ]] && break
    sleep 0.1
done
print -r -- "$out"
zpty -d z
ZSH
zsh_reply=$(ZDIR="$files/usr/share/zsh/vendor-completions" timeout 30 zsh -f "$files/complete.zsh" | tr -d '\033' || true)
echo "$zsh_reply" | grep -q -- '--tpm-state' || fail "zsh completion of '--tpm-st' gave: $zsh_reply"
say "completions load and complete --tpm-st to --tpm-state in bash, zsh and fish"

# --- install into a clean Debian 12 under systemd -----------------------------------------
root=$(bash tests/package/build-root.sh | tail -n 1)
work=$(mktemp -d /var/tmp/vmspawn-pkgtest.XXXXXX)
mkdir "$work/upper" "$work/work" "$work/merged"
mount -t overlay overlay -o "lowerdir=$root,upperdir=$work/upper,workdir=$work/work" "$work/merged"
cp "$deb" "$work/merged/root/"
# The guests' disk: a GPT with an empty root partition (the busybox guest boots from
# --linux/--initrd); one for the TAP guest, one as vmspawn@demo's image.
blank=$work/merged/home/tester/guest.raw
truncate -s 16M "$blank"
printf 'label: gpt\nstart=2048, type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709, name=root\n' | sfdisk -q "$blank"
mkdir -p "$work/merged/home/tester/.local/state/machines"
cp "$blank" "$work/merged/home/tester/.local/state/machines/demo.raw"
chown -R 1001:1001 "$work/merged/home/tester"
# A network namespace of its own (loopback only; the TAP lives there too), /dev/net/tun for
# the helper, the guest images read-only.
setsid systemd-nspawn --quiet --boot --console=passive --register=no --keep-unit --private-network \
    --machine="$machine" --directory="$work/merged" \
    --bind=/dev/net/tun --property="DeviceAllow=/dev/net/tun rwm" \
    --bind-ro="$images:/srv/images" \
    < /dev/null > "$work/console.log" 2>&1 &
nspawn_pid=$!

# The container's PID 1 (nspawn's child once it runs systemd).
leader=
for _ in $(seq 150); do
    for pid in $(ps -o pid= --ppid "$nspawn_pid" 2>/dev/null); do
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd ] && leader=$pid
    done
    [ -n "$leader" ] && break
    kill -0 "$nspawn_pid" 2>/dev/null || { cat "$work/console.log" >&2; fail "systemd-nspawn exited"; }
    sleep 0.2
done
[ -n "$leader" ] || { cat "$work/console.log" >&2; fail "the container's systemd did not start"; }
in_container() {
    nsenter --target "$leader" --all -- /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}
as_tester() {
    in_container runuser -u tester -- env XDG_RUNTIME_DIR=/run/user/1001 \
        DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1001/bus HOME=/home/tester "$@"
}
state=
for _ in $(seq 300); do
    state=$(in_container timeout 120 systemctl is-system-running --wait 2>/dev/null || true)
    [ -n "$state" ] && break
    sleep 0.2
done
case "$state" in
    running | degraded) ;;
    *) in_container systemctl --failed --no-pager >&2 || true; fail "the container's systemd is '$state'" ;;
esac
say "container booted with systemd ($state) in $((SECONDS - t0)) s since the start"

in_container env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    "/root/$(basename "$deb")" > "$work/apt-install.log" 2>&1 ||
    { cat "$work/apt-install.log" >&2; fail "apt-get install ./$(basename "$deb") failed"; }
in_container systemctl is-enabled --quiet vmspawn-privhelper.socket || fail "the helper socket is not enabled"
in_container systemctl is-active --quiet vmspawn-privhelper.socket || fail "the helper socket is not listening"
in_container test -S /run/vmspawn/privhelper.socket || fail "no /run/vmspawn/privhelper.socket"
in_container systemctl is-active --quiet vmspawn-privhelper.service && fail "the helper service runs before anyone asked"
say "installed with apt; vmspawn-privhelper.socket enabled and listening"

# A policy that lets tester create TAP devices (the packaged one allows nothing: check that
# first).
guest=(-i /home/tester/guest.raw --kvm=no --tpm=no --register=no --console=read-only
    --linux=/srv/images/vmlinuz --initrd=/srv/images/initrd-busybox.cpio.gz)
refused=$(as_tester vmspawn "${guest[@]}" --network-tap test.mode=exit-code=0 2>&1 || true)
echo "$refused" | grep -q "policy" || fail "the packaged policy did not refuse a TAP: $refused"
in_container sh -c 'cat >> /etc/vmspawn/policy.toml' <<'POLICY'

[[allow]]
users = ["tester"]
operations = ["create-tap"]
max-taps = 2
polkit = "no"
POLICY
as_tester vmspawn "${guest[@]}" --network-tap test.mode=net=10.55.0.2/24@10.55.0.1 \
    > "$work/tap-guest.log" 2>&1 &
guest_pid=$!
tap=
for _ in $(seq 600); do
    tap=$(in_container ip -o link show 2>/dev/null | sed -n 's/^[0-9]*: \(vt-[0-9a-f]*\)[:@].*/\1/p' | head -n 1)
    [ -n "$tap" ] && break
    kill -0 "$guest_pid" 2>/dev/null || break
    sleep 0.2
done
[ -n "$tap" ] || { cat "$work/tap-guest.log" >&2; fail "no TAP appeared"; }
in_container ip -d link show "$tap" | grep -Eq "user (tester|1001)( |$)" || fail "TAP $tap is not owned by tester"
in_container ip addr add 10.55.0.1/24 dev "$tap"
in_container ip link set "$tap" up
wait "$guest_pid" || { cat "$work/tap-guest.log" >&2; fail "the TAP guest failed"; }
grep -q "VMTEST: net-ok 10.55.0.1" "$work/tap-guest.log" ||
    { cat "$work/tap-guest.log" >&2; fail "the guest did not reach the container through $tap"; }
in_container systemctl is-active --quiet vmspawn-privhelper.service ||
    fail "the helper service was not started from its socket"
say "tester booted a guest with --network-tap through the socket-activated helper ($tap; ping ok)"

# tester's user bus, as the dbus-user-session package sets it up (a dbus-daemon the user
# manager socket-activates at $XDG_RUNTIME_DIR/bus): the user manager takes its controller's
# RequestStop only over a bus (the test root is minbase, without that package).
in_container sh -c 'mkdir -p /etc/systemd/user/sockets.target.wants
cat > /etc/systemd/user/dbus.socket <<EOF
[Unit]
Description=D-Bus User Message Bus Socket
[Socket]
ListenStream=%t/bus
EOF
cat > /etc/systemd/user/dbus.service <<EOF
[Unit]
Description=D-Bus User Message Bus
Requires=dbus.socket
[Service]
ExecStart=/usr/bin/dbus-daemon --session --address=systemd: --nofork --nopidfile --systemd-activation --syslog-only
EOF
ln -sf ../dbus.socket /etc/systemd/user/sockets.target.wants/dbus.socket'

# vmspawn@demo as a user unit: the image ~/.local/state/machines/demo.raw (the busybox guest
# boots from --linux/--initrd, given through VMSPAWN_OPTIONS in a drop-in).
in_container loginctl enable-linger tester
for _ in $(seq 150); do in_container test -S /run/user/1001/systemd/private && break; sleep 0.2; done
in_container test -S /run/user/1001/systemd/private || fail "tester's user manager did not start"
in_container runuser -u tester -- sh -c '
    mkdir -p ~/.config/systemd/user/vmspawn@demo.service.d
    cat > ~/.config/systemd/user/vmspawn@demo.service.d/test.conf <<EOF
[Service]
Environment="VMSPAWN_OPTIONS=--kvm=no --tpm=no --register=no --notify-ready=no --linux=/srv/images/vmlinuz --initrd=/srv/images/initrd-busybox.cpio.gz --set-credential=vmtest.demo:hello test.mode=powerbutton"
EOF'
as_tester systemctl --user daemon-reload
as_tester timeout 120 systemctl --user start vmspawn@demo || {
    as_tester journalctl --user -u vmspawn@demo --no-pager >&2 || true
    fail "systemctl --user start vmspawn@demo failed"
}
for _ in $(seq 600); do
    as_tester journalctl --user -u vmspawn@demo --no-pager -o cat 2>/dev/null | grep -q "VMTEST: waiting-for-powerbutton" && break
    sleep 0.2
done
as_tester journalctl --user -u vmspawn@demo --no-pager -o cat | grep -q "VMTEST: waiting-for-powerbutton" ||
    { as_tester journalctl --user -u vmspawn@demo --no-pager >&2; fail "the vmspawn@demo guest did not boot"; }
# Its runtime files are in the unit's RuntimeDirectory= ($RUNTIME_DIRECTORY), not in a
# directory of vmspawn's own.
rtdir=$(in_container find /run/user/1001/vmspawn.demo -mindepth 1 2>&1 || true)
echo "$rtdir" | grep -qx /run/user/1001/vmspawn.demo/credentials/vmtest.demo ||
    fail "vmspawn@demo's credential file is not in its RuntimeDirectory /run/user/1001/vmspawn.demo: $rtdir"
own=$(in_container sh -c 'ls -d /run/user/1001/systemd/vmspawn.* 2>/dev/null' || true)
[ -z "$own" ] || fail "vmspawn@demo made its own runtime directory ($own) despite \$RUNTIME_DIRECTORY"
as_tester timeout 120 systemctl --user stop vmspawn@demo
result=$(as_tester systemctl --user show vmspawn@demo -P Result)
status=$(as_tester systemctl --user show vmspawn@demo -P ExecMainStatus)
journal=$(as_tester journalctl --user -u vmspawn@demo --no-pager -o cat)
[ "$result" = success ] && [ "$status" = 0 ] ||
    { echo "$journal" >&2; fail "vmspawn@demo stopped with result '$result', status '$status'"; }
echo "$journal" | grep -q "VMTEST: powerbutton-pressed" ||
    { echo "$journal" >&2; fail "the guest was not powered off through its power button"; }
left=$(in_container sh -c 'ls -d /run/user/1001/systemd/vmspawn.* /run/user/1001/vmspawn.demo 2>/dev/null; pgrep -u tester -a qemu' || true)
[ -z "$left" ] || fail "left behind after systemctl --user stop: $left"
say "systemctl --user start/stop vmspawn@demo: booted, powered off by its power button, exit 0, nothing left; its runtime files were in \$RUNTIME_DIRECTORY: $(echo $rtdir)"

# The scope: vmspawn run by tester (here as a transient service of tester's user manager, as
# from a desktop session) with --slice= and --property= asks that manager for vmtest.scope in
# vmtest.slice, moves itself (so QEMU too) into it, and is its controller: `systemctl --user
# stop vmtest.scope` reaches vmspawn as RequestStop, and the guest is powered off through its
# power button (not SIGTERM to QEMU).
for _ in $(seq 100); do
    as_tester busctl --user call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
        org.freedesktop.DBus.Peer Ping >/dev/null 2>&1 && break
    sleep 0.2
done
as_tester busctl --user call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
    org.freedesktop.DBus.Peer Ping >/dev/null || fail "tester's user manager is not on the user bus"
as_tester systemd-run --user --quiet --wait --collect --unit=vmtest-run \
    -p StandardOutput=append:/home/tester/scope-guest.log -p StandardError=append:/home/tester/scope-guest.log \
    /usr/bin/vmspawn -i /home/tester/guest.raw -M vmtest --kvm=no --tpm=no --register=no \
    --console=read-only --ram=256M --linux=/srv/images/vmlinuz --initrd=/srv/images/initrd-busybox.cpio.gz \
    --slice=vmtest.slice --property=MemoryMax=1G --property=TasksMax=200 --property=CPUWeight=50 \
    test.mode=powerbutton > "$work/scope-run.log" 2>&1 &
run_pid=$!
guest_log() { in_container cat /home/tester/scope-guest.log 2>/dev/null || true; }
for _ in $(seq 600); do
    guest_log | grep -q "VMTEST: waiting-for-powerbutton" && break
    kill -0 "$run_pid" 2>/dev/null || break
    sleep 0.2
done
guest_log | grep -q "VMTEST: waiting-for-powerbutton" ||
    { guest_log >&2; cat "$work/scope-run.log" >&2; fail "the guest with --slice=/--property= did not boot"; }
status_out=$(as_tester systemctl --user status --no-pager vmtest.scope 2>&1 || true)
slice=$(as_tester systemctl --user show -P Slice vmtest.scope)
memory_max=$(as_tester systemctl --user show -P MemoryMax vmtest.scope)
tasks_max=$(as_tester systemctl --user show -P TasksMax vmtest.scope)
cpu_weight=$(as_tester systemctl --user show -P CPUWeight vmtest.scope)
qemu_pid=$(in_container pgrep -u tester -f qemu-system | head -n 1)
qemu_cgroup=$(in_container cat "/proc/$qemu_pid/cgroup")
[ "$slice" = vmtest.slice ] && [ "$memory_max" = 1073741824 ] && [ "$tasks_max" = 200 ] && [ "$cpu_weight" = 50 ] ||
    { echo "$status_out" >&2; fail "vmtest.scope: Slice=$slice MemoryMax=$memory_max TasksMax=$tasks_max CPUWeight=$cpu_weight"; }
echo "$qemu_cgroup" | grep -q "/vmtest.slice/vmtest.scope$" || fail "QEMU is not in vmtest.scope: $qemu_cgroup"
echo "$status_out" | grep -q "qemu-system" && echo "$status_out" | grep -q "vmtest.slice" ||
    { echo "$status_out" >&2; fail "systemctl --user status vmtest.scope shows no QEMU in vmtest.slice"; }
as_tester timeout 120 systemctl --user stop vmtest.scope || fail "systemctl --user stop vmtest.scope failed"
run_status=0
wait "$run_pid" || run_status=$?
log=$(guest_log)
[ "$run_status" -eq 0 ] ||
    { echo "$log" >&2; cat "$work/scope-run.log" >&2; fail "vmspawn in vmtest.scope exited with $run_status after systemctl stop"; }
echo "$log" | grep -q "asked vmspawn to stop the VM (RequestStop)" ||
    { echo "$log" >&2; fail "vmspawn did not get RequestStop from systemctl --user stop vmtest.scope"; }
echo "$log" | grep -q "VMTEST: powerbutton-pressed" ||
    { echo "$log" >&2; fail "the guest in vmtest.scope was not powered off through its power button"; }
if echo "$log" | grep -q "terminating on signal"; then
    echo "$log" >&2
    fail "QEMU in vmtest.scope got a signal instead of system_powerdown"
fi
left=$(in_container sh -c 'pgrep -u tester -a qemu; pgrep -u tester -a vmspawn; ls -d /run/user/1001/systemd/vmspawn.* 2>/dev/null' || true)
scope_state=$(as_tester systemctl --user show -P ActiveState vmtest.scope 2>/dev/null || true)
[ -z "$left" ] && [ "$scope_state" = inactive ] ||
    fail "left behind after systemctl --user stop vmtest.scope ($scope_state): $left"
say "vmspawn --slice=vmtest.slice --property=MemoryMax=1G,TasksMax=200,CPUWeight=50: QEMU in vmtest.slice/vmtest.scope with those limits; systemctl --user stop vmtest.scope -> RequestStop -> power button, exit 0, nothing left"

# --- remove, then purge ---------------------------------------------------------------------
# What the package ships (files and links; directories are shared with other packages).
listed=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $6 }')
in_container env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q vmspawn > "$work/apt-remove.log" 2>&1 ||
    { cat "$work/apt-remove.log" >&2; fail "apt-get remove vmspawn failed"; }
leftover() {
    local path
    for path in $listed; do
        if in_container test -e "$path" -o -L "$path"; then echo "$path"; fi
    done
    in_container sh -c 'ls -d /run/vmspawn /etc/systemd/system/*/vmspawn* /etc/systemd/user/*/vmspawn* 2>/dev/null' || true
    # (exits 1 when no unit matches)
    { in_container systemctl list-unit-files --no-legend 'vmspawn*' || true; } | awk '{ print "unit " $1 }'
}
left=$(leftover)
[ "$left" = /etc/vmspawn/policy.toml ] ||
    fail "after apt-get remove, expected only the conffile, found: $(printf '%q ' $left)"
in_container env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q vmspawn > "$work/apt-purge.log" 2>&1 ||
    { cat "$work/apt-purge.log" >&2; fail "apt-get purge vmspawn failed"; }
left=$(leftover; in_container sh -c 'ls -d /etc/vmspawn /var/lib/systemd/deb-systemd-helper-enabled/*vmspawn* 2>/dev/null' || true)
[ -z "$left" ] || fail "after apt-get purge, found: $left"
say "apt-get remove left only /etc/vmspawn/policy.toml; purge left nothing"
say "passed in $((SECONDS - t0)) s"
