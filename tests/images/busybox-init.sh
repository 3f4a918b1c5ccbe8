#!/bin/busybox sh
# /init of the vmspawn busybox test initrd (built by tests/images/build.sh).
#
# The integration tests parse the "VMTEST: " lines this prints, so the format is a contract;
# see tests/images/README.md before changing anything here.

/bin/busybox --install -s /bin
export PATH=/bin

mount -t proc proc /proc
# Kernel messages on the console would interleave with the VMTEST lines the tests parse (a
# "VMTEST: boot" once arrived glued to a clocksource message): keep only emergencies, so a
# panic still shows.
echo 1 >/proc/sys/kernel/printk
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp

say() { printf 'VMTEST: %s\n' "$*"; }

# Load the modules in order (busybox insmod does not resolve dependencies). The console may
# not work yet (console=hvc0 needs virtio_console), so failures are reported after the
# redirection below.
insmod_failed=""
while read -r mod; do
    [ -n "$mod" ] || continue
    if ! insmod "/lib/modules/$mod" 2>/dev/null; then
        name=${mod##*/}
        insmod_failed="$insmod_failed ${name%.ko}"
    fi
done </lib/modules/order

cmdline=$(cat /proc/cmdline)

# With console=hvc0 the kernel has no usable /dev/console until virtio_console has found the
# port, which happens asynchronously. Wait for it and talk to it directly.
console=""
case " $cmdline " in
    *" console=hvc"*)
        i=0
        while [ ! -c /dev/hvc0 ] && [ "$i" -lt 50 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        if [ -c /dev/hvc0 ]; then
            console=/dev/hvc0
        elif [ -c /dev/ttyS0 ]; then
            console=/dev/ttyS0
        fi
        ;;
esac
if [ -n "$console" ]; then
    exec <"$console" >"$console" 2>&1
fi

for name in $insmod_failed; do
    say "insmod-failed $name"
done

say boot
say "nproc=$(grep -c '^processor' /proc/cpuinfo)"
say "memtotal_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
say "cmdline=$cmdline"

# SMBIOS type 11 (OEM strings): the formatted area's length is the byte at offset 1; the
# strings follow it, each NUL-terminated, and an empty string ends the set.
for entry in $(ls -d /sys/firmware/dmi/entries/11-* 2>/dev/null | sort -t- -k2 -n); do
    raw=$entry/raw
    [ -r "$raw" ] || continue
    hlen=$(dd if="$raw" bs=1 skip=1 count=1 2>/dev/null | od -An -tu1 | tr -d ' \n')
    [ -n "$hlen" ] || continue
    dd if="$raw" bs=1 skip="$hlen" 2>/dev/null | tr '\0' '\n' | while IFS= read -r s; do
        [ -n "$s" ] || break
        say "smbios11=$s"
    done
done

for blk in /sys/block/vd*; do
    [ -e "$blk" ] || continue
    serial=""
    [ -r "$blk/serial" ] && serial=$(cat "$blk/serial" 2>/dev/null)
    say "disk ${blk##*/} size=$(cat "$blk/size") serial=$serial"
done

for nic in /sys/class/net/*; do
    [ -e "$nic/address" ] || continue
    [ "${nic##*/}" = lo ] && continue
    say "nic ${nic##*/} mac=$(cat "$nic/address")"
done

if [ -f /etc/vmtest-extra ]; then
    say "extra-initrd=$(cat /etc/vmtest-extra)"
fi

# The TPM driver (tpm_tis) is built into the guest kernel. When QEMU has a TPM device, its
# ACPI table TPM2 is there; give the driver a moment to register tpm0 if it has not yet.
if [ -e /sys/firmware/acpi/tables/TPM2 ]; then
    i=0
    while [ ! -e /sys/class/tpm/tpm0/tpm_version_major ] && [ "$i" -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
fi
say "tpm=$(cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null || echo none)"

# Blocks until an ACPI power-button press. The ACPI button driver (button.ko) registers an
# input device named "Power Button"; evdev gives it a /dev/input/eventN node. The nodes are
# opened *before* "waiting-for-powerbutton" is printed, so that a press sent right after that
# line is queued in the evdev buffer and not lost.
wait_for_powerbutton() {
    fifo=/tmp/powerbutton.fifo
    rm -f "$fifo"
    mkfifo "$fifo"
    fd=3
    for dev in /sys/class/input/input*; do
        [ "$(cat "$dev/name" 2>/dev/null)" = "Power Button" ] || continue
        for ev in "$dev"/event*; do
            [ -e "$ev" ] || continue
            node=/dev/input/${ev##*/}
            [ -c "$node" ] || continue
            [ "$fd" -le 9 ] || continue
            eval "exec $fd<$node" || continue
            # One struct input_event is 24 bytes on x86-64; any event means a press.
            eval "( dd bs=24 count=1 of=/dev/null <&$fd 2>/dev/null; echo '$node' >$fifo ) &"
            fd=$((fd + 1))
        done
    done
    if [ "$fd" -eq 3 ]; then
        say "powerbutton-device-missing"
    fi
    say waiting-for-powerbutton
    read -r _ <"$fifo"
    say powerbutton-pressed
    sync
    sleep 1 # let the console send the line (see the end of this script)
    poweroff -f
    while :; do sleep 3600; done
}

modes=""
have_modes=no
root_tag=""
root_fstype=""
root_rw=rw
mount_extra=""
set -f # no globbing of kernel command-line words
for word in $cmdline; do
    case "$word" in
        test.mode=*)
            modes=${word#test.mode=}
            have_modes=yes
            ;;
        root=*) root_tag=${word#root=} ;;
        rootfstype=*) root_fstype=${word#rootfstype=} ;;
        ro) root_rw=ro ;;
        rw) root_rw=rw ;;
        # One per line; the words cannot contain spaces (see mount_extra below).
        systemd.mount-extra=*) mount_extra="$mount_extra${word#systemd.mount-extra=}
" ;;
    esac
done
modes=$(echo "$modes" | tr ',' ' ')
set +f

# Undoes the escaping of a systemd.mount-extra= field (vmspawn writes '"' as \x22 and ':' as
# \x3a, and a backslash as \\): busybox printf's %b knows \xHH and \\.
unescape() {
    printf '%b' "$1"
}

# mount-extra mode: mounts every systemd.mount-extra="TAG:DST:virtiofs:OPTIONS" of the command
# line (with or without the double quotes) at DST in the initrd, with OPTIONS (default rw).
mount_extra_all() {
    printf '%s' "$mount_extra" | while IFS= read -r spec; do
        spec=${spec#\"}
        spec=${spec%\"}
        tag=${spec%%:*}
        rest=${spec#*:}
        [ "$rest" != "$spec" ] || continue # no DST
        dst=${rest%%:*}
        fstype=""
        opts=""
        if [ "$dst" != "$rest" ]; then
            rest=${rest#*:}
            fstype=${rest%%:*}
            [ "$fstype" = "$rest" ] || opts=${rest#*:}
        fi
        [ "$fstype" = virtiofs ] || continue
        opts=${opts:-rw}
        dst=$(unescape "$dst")
        if mkdir -p "$dst" && mount -t virtiofs -o "$opts" "$tag" "$dst"; then
            say "mounted $tag $dst $opts"
        else
            say "mount-failed $tag $dst"
        fi
    done
}

# Root on virtiofs: the command line of a vmspawn --directory boot has
# "root=TAG rootfstype=virtiofs rw". The tag is mounted at /newroot. Without test.mode= the
# script then switches into the tree's /sbin/init; with test.mode= it stays, and the modes can
# look at /newroot. A failure is reported and the script carries on (modes, then poweroff).
if [ "$root_fstype" = virtiofs ] && [ -n "$root_tag" ]; then
    mkdir -p /newroot
    if mount -t virtiofs -o "$root_rw" "$root_tag" /newroot; then
        say "virtiofs-root $root_tag"
        if [ "$have_modes" = no ]; then
            if [ -e /newroot/sbin/init ] || [ -L /newroot/sbin/init ]; then
                # switch_root wants /newroot to be a mount point and deletes the initrd's
                # files; the API file systems go along to the new root (systemd keeps them).
                for fs in dev sys proc; do
                    if [ -d "/newroot/$fs" ]; then
                        mount --move "/$fs" "/newroot/$fs" 2>/dev/null || umount -l "/$fs"
                    else
                        umount -l "/$fs"
                    fi
                done
                exec switch_root /newroot /sbin/init
            fi
            say "virtiofs-root-failed $root_tag"
            umount /newroot 2>/dev/null
        fi
    else
        say "virtiofs-root-failed $root_tag"
    fi
fi

set -f
for mode in $modes; do
    set +f
    case "$mode" in
        shell)
            say shell-ready
            # A subshell is not a process-group leader, so setsid does not fork; -c makes
            # the console the shell's controlling terminal (job control, Ctrl-C).
            (setsid -c sh) || true
            # The shell's exit hung up the terminal (it was the session leader), which
            # invalidates our descriptors too: open the console again.
            if [ -n "$console" ]; then
                exec <"$console" >"$console" 2>&1
            else
                exec </dev/console >/dev/console 2>&1
            fi
            ;;
        powerbutton)
            wait_for_powerbutton
            ;;
        ignore-powerbutton)
            say ignoring-powerbutton
            while :; do sleep 3600; done
            ;;
        sleep=*)
            sleep "${mode#sleep=}"
            ;;
        exit-code=*)
            code=${mode#exit-code=}
            say exit-code-requested
            if [ -c /dev/port ]; then
                printf "\\$(printf %o "$code")" | dd of=/dev/port bs=1 seek=244 count=1 conv=notrunc 2>/dev/null
            else
                # The cloud kernel has no CONFIG_DEVPORT; write the port with ioperm + outb.
                /bin/vmtest-debug-exit "$code"
            fi
            # Only reached if QEMU has no isa-debug-exit device at port 0xf4.
            ;;
        net=*)
            # net=ADDRESS/PREFIX@PEER: configure eth0 and ping PEER until it answers (30 s).
            spec=${mode#net=}
            ip link set lo up
            ip link set eth0 up
            ip addr add "${spec%@*}" dev eth0
            i=0
            while ! ping -c 1 -W 1 "${spec#*@}" >/dev/null 2>&1; do
                i=$((i + 1))
                if [ "$i" -ge 30 ]; then
                    say "net-failed ${spec#*@}"
                    break
                fi
            done
            [ "$i" -lt 30 ] && say "net-ok ${spec#*@}"
            ;;
        fetch=*)
            # fetch=ADDRESS/PREFIX@HOST:PORT: configure eth0, then an HTTP GET of
            # http://HOST:PORT/ over TCP with nc, up to 30 attempts a second apart; print the
            # last line of the body. (busybox wget looks up the "http" service, which crashes
            # the static busybox without NSS modules; nc with a numeric port does not.)
            spec=${mode#fetch=}
            target=${spec#*@}
            ip link set lo up
            ip link set eth0 up
            ip addr add "${spec%@*}" dev eth0
            i=0
            body=""
            while [ "$i" -lt 30 ]; do
                response=$(printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 "${target%:*}" "${target##*:}" 2>/dev/null)
                case "$response" in
                    "HTTP/1."?" 200 "*)
                        body=$(printf '%s\n' "$response" | tr -d '\r' | tail -n 1)
                        break
                        ;;
                esac
                i=$((i + 1))
                sleep 1
            done
            if [ "$i" -lt 30 ]; then
                say "fetch-ok $target $body"
            else
                say "fetch-failed $target"
            fi
            ;;
        mount-extra)
            mount_extra_all
            ;;
        cat=*)
            # cat=PATH: the file's first line.
            path=${mode#cat=}
            if line=$(head -n 1 "$path" 2>/dev/null); then
                say "cat $path=$line"
            else
                say "cat-failed $path"
            fi
            ;;
        write=*)
            # write=PATH:TEXT (PATH has no ':'): writes TEXT and a newline to PATH.
            spec=${mode#write=}
            path=${spec%%:*}
            text=${spec#*:}
            [ "$text" != "$spec" ] || text=""
            if (echo "$text" >"$path") 2>/dev/null; then
                sync
                say "write-ok $path"
            else
                say "write-failed $path"
            fi
            ;;
        remount-rw=*)
            path=${mode#remount-rw=}
            if mount -o remount,rw "$path" 2>/dev/null; then
                say "remount-ok $path"
            else
                say "remount-failed $path"
            fi
            ;;
        stat=*)
            path=${mode#stat=}
            if ids=$(stat -c 'uid=%u gid=%g' "$path" 2>/dev/null); then
                say "stat $path $ids"
            else
                say "stat-failed $path"
            fi
            ;;
        mkdir=*)
            # mkdir=PATH: one directory (no -p: an existing PATH fails).
            path=${mode#mkdir=}
            if mkdir "$path" 2>/dev/null; then
                sync
                say "mkdir-ok $path"
            else
                say "mkdir-failed $path"
            fi
            ;;
        panic)
            sync
            echo c >/proc/sysrq-trigger
            ;;
        "") ;;
        *)
            say "unknown-mode $mode"
            ;;
    esac
done

say done
sync
# The console driver sends what was written a little later (hvc output is asynchronous):
# give it a moment, or the last lines can be lost when the power goes.
sleep 1
poweroff -f
while :; do sleep 3600; done
