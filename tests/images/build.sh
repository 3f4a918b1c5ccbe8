#!/usr/bin/env bash
# Builds the guest artifacts the vmspawn integration tests boot.
#
# Usage: tests/images/build.sh [OUTDIR]
#
# Default OUTDIR: /var/cache/vmspawn-test/<key>, where <key> is the first 16 hex digits of the
# SHA-256 over the contents of every file in tests/images/ (sorted by path; not __pycache__/)
# followed by the guest kernel version. If OUTDIR/.complete exists nothing is rebuilt. The path
# of OUTDIR is always the last line of stdout; progress goes to stderr. Must run as root.
#
# See README.md in this directory for the artifacts and the guest-side contracts.
set -euo pipefail
umask 022
export LC_ALL=C
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

IMAGES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_ROOT=/var/cache/vmspawn-test
SUITE=bookworm
GUEST_PACKAGES=systemd,systemd-sysv,udev,dbus,kmod,initramfs-tools,zstd,tpm2-tools
UKI_CMDLINE="root=PARTLABEL=root rw quiet systemd.show_status=0"
# The Debian tree for --directory (root on virtiofs) boots: forky, for a systemd (262) that
# reads the userdb.transient.* credentials of --bind-user (257, trixie's, does not). This
# debootstrap has no forky script; forky is laid out like sid, so it uses sid's.
TREE_SUITE=forky
TREE_SCRIPT=/usr/share/debootstrap/scripts/sid
TREE_PACKAGES=systemd,systemd-sysv,udev,dbus,kmod,openssh-server,libnss-systemd,systemd-userdbd,iproute2
ESP_TYPE=c12a7328-f81f-11d2-ba4b-00a0c93ec93b
ROOT_TYPE=4f68bce3-e8cd-4db1-96e7-fbcaf984b709
ESP_SECTORS=131072 # 64 MiB
EFI_DIR=/usr/lib/systemd/boot/efi

# Modules of the busybox initrd, relative to /lib/modules/$KVER/kernel, without ".ko", in load
# order (busybox insmod resolves no dependencies: virtio_ring must precede virtio, ...).
# The last two are for the power-button mode: the ACPI button driver creates the
# "Power Button" input device and evdev gives it a /dev/input/eventN node.
BUSYBOX_MODULES=(
    drivers/virtio/virtio_ring
    drivers/virtio/virtio
    drivers/virtio/virtio_pci_legacy_dev
    drivers/virtio/virtio_pci_modern_dev
    drivers/virtio/virtio_pci
    drivers/firmware/qemu_fw_cfg
    fs/fuse/fuse
    fs/fuse/virtiofs
    net/core/failover
    drivers/net/net_failover
    drivers/net/virtio_net
    drivers/block/virtio_blk
    drivers/char/virtio_console
    drivers/input/evdev
    drivers/acpi/button
)

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() {
    printf 'build.sh: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    echo "usage: $0 [OUTDIR]" >&2
    exit 2
}

case "${1:-}" in
    -h | --help) usage ;;
esac
[ $# -le 1 ] || usage

# --- Guest kernel ---------------------------------------------------------------------------
KERNEL=$(find /boot -maxdepth 1 -name 'vmlinuz-*-cloud-amd64' -printf '%f\n' | sort -V | tail -n 1)
[ -n "$KERNEL" ] || die "no /boot/vmlinuz-*-cloud-amd64; install linux-image-cloud-amd64 (tests/setup-host.sh)"
KVER=${KERNEL#vmlinuz-}
KERNEL=/boot/$KERNEL
MODDIR=/lib/modules/$KVER
[ -d "$MODDIR/kernel" ] || die "kernel modules of $KVER missing in $MODDIR"

# --- Cache key and output directory ---------------------------------------------------------
cache_key() {
    local f
    {
        while IFS= read -r -d '' f; do
            cat "$f"
        done < <(find "$IMAGES_DIR" -name __pycache__ -prune -o -type f -print0 | sort -z)
        printf '%s' "$KVER"
    } | sha256sum | cut -c1-16
}
KEY=$(cache_key)

if [ $# -eq 1 ]; then
    [ -n "$1" ] || usage
    OUTDIR=$(realpath -m -- "$1")
    DEFAULT_OUTDIR=no
else
    OUTDIR=$CACHE_ROOT/$KEY
    DEFAULT_OUTDIR=yes
fi
[ "$OUTDIR" != / ] || die "refusing to use / as OUTDIR"

if [ -e "$OUTDIR/.complete" ]; then
    echo "$OUTDIR"
    exit 0
fi

# Everything below builds, which needs root (the cached path above works for anyone).
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot and device nodes need it)"

# --- Tools ----------------------------------------------------------------------------------
missing=()
for cmd in busybox debootstrap chroot cpio gzip sfdisk mke2fs mkfs.vfat mmd mcopy objcopy \
    objdump readelf as ld modinfo flock sha256sum truncate dd du realpath tar zstd; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
[ ${#missing[@]} -eq 0 ] || die "missing tools: ${missing[*]} (run tests/setup-host.sh)"
for f in "$EFI_DIR/systemd-bootx64.efi" "$EFI_DIR/linuxx64.efi.stub"; do
    [ -r "$f" ] || die "$f missing; install systemd-boot-efi from bookworm-backports (tests/setup-host.sh)"
done
BUSYBOX=$(command -v busybox)
if readelf -l "$BUSYBOX" 2>/dev/null | grep -q 'INTERP'; then
    die "$BUSYBOX is dynamically linked; install busybox-static"
fi

# --- Locking, stale directories -------------------------------------------------------------
PARENT=$(dirname "$OUTDIR")
NAME=$(basename "$OUTDIR")
if [ "$DEFAULT_OUTDIR" = yes ]; then
    install -d -m 0755 "$CACHE_ROOT"
else
    mkdir -p "$PARENT"
fi
exec 9>"$PARENT/.vmspawn-images.lock"
flock 9

# rm -rf that first unmounts anything below the path (debootstrap mounts /proc and /sys in
# its target and may leave them behind when it fails) and never crosses file systems.
safe_rm() {
    local path=$1 mnt
    [ -e "$path" ] || return 0
    path=$(realpath -- "$path")
    while read -r mnt; do
        umount -l "$mnt" 2>/dev/null || true
    done < <(awk -v p="$path/" 'index($5 "/", p) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
    if awk -v p="$path/" 'index($5 "/", p) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
        die "cannot unmount file systems below $path; remove it by hand"
    fi
    rm -rf --one-file-system -- "$path"
}

# Another build may have finished while we waited for the lock.
if [ -e "$OUTDIR/.complete" ]; then
    echo "$OUTDIR"
    exit 0
fi

# Leftovers of interrupted builds (we hold the lock, so no build is running).
for d in "$PARENT/.$NAME.tmp."*; do
    [ -e "$d" ] || continue
    log "removing leftover $d"
    safe_rm "$d"
done
if [ "$DEFAULT_OUTDIR" = yes ]; then
    for d in "$CACHE_ROOT"/* "$CACHE_ROOT"/.*.tmp.*; do
        [ -d "$d" ] || continue
        base=$(basename "$d")
        [ "$base" != "$KEY" ] || continue
        if [[ $base =~ ^[0-9a-f]{16}$ || $base =~ ^\.[0-9a-f]{16}\.tmp\.[0-9]+$ ]]; then
            log "removing stale cache $d"
            safe_rm "$d"
        fi
    done
fi
if [ -e "$OUTDIR" ]; then
    if [ -d "$OUTDIR" ] && [ -z "$(ls -A "$OUTDIR")" ]; then
        rmdir "$OUTDIR"
    elif [ -f "$OUTDIR/KVER" ] || [ -f "$OUTDIR/initrd-busybox.cpio.gz" ]; then
        log "removing incomplete $OUTDIR"
        safe_rm "$OUTDIR"
    else
        die "$OUTDIR exists and is not a (complete) vmspawn image directory"
    fi
fi

TMP=$PARENT/.$NAME.tmp.$$
WORK=$TMP/.work
cleanup() {
    local rc=$?
    if [ -n "${TMP:-}" ] && [ -e "$TMP" ]; then
        safe_rm "$TMP" || true
    fi
    [ $rc -eq 0 ] || log "FAILED (exit status $rc)"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$WORK"

START=$SECONDS
log "building guest images for kernel $KVER into $OUTDIR"

# --- 1. Kernel ------------------------------------------------------------------------------
cp "$KERNEL" "$TMP/vmlinuz"
printf '%s\n' "$KVER" >"$TMP/KVER"

# --- 2. Busybox initrd ----------------------------------------------------------------------
build_busybox_initrd() {
    local tree=$WORK/busybox m src ext dep loaded=" " name
    mkdir -p "$tree"/{bin,dev,proc,sys,mnt,tmp,etc,lib/modules}
    cp "$BUSYBOX" "$tree/bin/busybox"
    install -m 0755 "$IMAGES_DIR/busybox-init.sh" "$tree/init"
    as -o "$WORK/vmtest-debug-exit.o" "$IMAGES_DIR/vmtest-debug-exit.S"
    ld -static -nostdlib -s -o "$tree/bin/vmtest-debug-exit" "$WORK/vmtest-debug-exit.o"
    mknod -m 0600 "$tree/dev/console" c 5 1
    : >"$tree/lib/modules/order"

    for m in "${BUSYBOX_MODULES[@]}"; do
        name=$(basename "$m" | tr - _)
        if grep -qxE "kernel/$m\.ko(\.(xz|zst|gz))?" "$MODDIR/modules.builtin"; then
            log "module $m is built in, not included"
            loaded+="$name "
            continue
        fi
        src=""
        for ext in ko ko.xz ko.zst ko.gz; do
            if [ -f "$MODDIR/kernel/$m.$ext" ]; then
                src=$MODDIR/kernel/$m.$ext
                break
            fi
        done
        [ -n "$src" ] || die "module $m of $KVER neither built in nor in $MODDIR/kernel"
        # busybox insmod cannot resolve dependencies: check the list order now.
        for dep in $(modinfo -F depends "$src" | tr ',' ' '); do
            dep=$(tr - _ <<<"$dep")
            [[ $loaded == *" $dep "* ]] || die "module $m needs $dep, which is not loaded before it"
        done
        mkdir -p "$tree/lib/modules/$(dirname "$m")"
        case "$src" in
            *.ko) cp "$src" "$tree/lib/modules/$m.ko" ;;
            *.xz) xz -dc "$src" >"$tree/lib/modules/$m.ko" ;;
            *.zst) zstd -qdc "$src" >"$tree/lib/modules/$m.ko" ;;
            *.gz) gzip -dc "$src" >"$tree/lib/modules/$m.ko" ;;
        esac
        echo "$m.ko" >>"$tree/lib/modules/order"
        loaded+="$name "
    done

    (cd "$tree" && find . | sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9n >"$TMP/initrd-busybox.cpio.gz"
}
log "busybox initrd"
build_busybox_initrd

# --- 3. Extra initrd ------------------------------------------------------------------------
mkdir -p "$WORK/extra/etc"
echo extra-initrd-ok >"$WORK/extra/etc/vmtest-extra"
(cd "$WORK/extra" && printf 'etc\netc/vmtest-extra\n' | cpio -o -H newc -R 0:0 --quiet) >"$TMP/initrd-extra.cpio"

# --- 4. Debian systemd guest ----------------------------------------------------------------
mirror() {
    local m=${VMSPAWN_TEST_MIRROR:-}
    if [ -z "$m" ] && [ -r /etc/apt/sources.list.d/debian.sources ]; then
        m=$(awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$m" ] && [ -r /etc/apt/sources.list ]; then
        m=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

ROOTFS=$WORK/rootfs
MIRROR=$(mirror)
log "debootstrap $SUITE from $MIRROR (takes a minute or two)"
t0=$SECONDS
if ! debootstrap --variant=minbase --include="$GUEST_PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1; then
    tail -n 40 "$WORK/debootstrap.log" >&2
    die "debootstrap failed (log above)"
fi
log "debootstrap took $((SECONDS - t0)) s"

configure_rootfs() {
    # Guest kernel modules, so udev can load virtio_net, vsock, fuse, evdev, button, ...
    mkdir -p "$ROOTFS/usr/lib/modules"
    cp -a "$MODDIR" "$ROOTFS/usr/lib/modules/"
    rm -f "$ROOTFS/usr/lib/modules/$KVER/build" "$ROOTFS/usr/lib/modules/$KVER/source"
    chroot "$ROOTFS" depmod -a "$KVER"

    echo vmtest >"$ROOTFS/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tvmtest\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
        >"$ROOTFS/etc/hosts"
    chroot "$ROOTFS" passwd -q -d root >/dev/null
    : >"$ROOTFS/etc/fstab"
    rm -f "$ROOTFS/etc/resolv.conf"

    install -m 0755 "$IMAGES_DIR/vmtest-check.sh" "$ROOTFS/usr/local/bin/vmtest-check"
    install -m 0644 "$IMAGES_DIR/vmtest-check.service" "$ROOTFS/etc/systemd/system/vmtest-check.service"
    chroot "$ROOTFS" systemctl enable vmtest-check.service >/dev/null 2>&1
    [ -L "$ROOTFS/etc/systemd/system/multi-user.target.wants/vmtest-check.service" ] ||
        die "enabling vmtest-check.service failed"

    # The Debian initrd for this guest, made with the guest's own initramfs-tools and udev
    # (the host may use another generator, e.g. tiny-initramfs, which understands neither
    # root=PARTLABEL= nor root=PARTUUID=). MODULES=most covers virtio-blk/-scsi, nvme, ...
    # console=hvc0 needs care in the initrd: see initramfs-console-hook.sh and
    # initramfs-console-wait.sh; virtio_console is loaded early.
    mkdir -p "$ROOTFS/etc/initramfs-tools/conf.d"
    printf 'MODULES=most\nCOMPRESS=zstd\nRESUME=none\n' >"$ROOTFS/etc/initramfs-tools/conf.d/vmtest"
    echo virtio_console >>"$ROOTFS/etc/initramfs-tools/modules"
    install -D -m 0755 "$IMAGES_DIR/initramfs-console-wait.sh" \
        "$ROOTFS/etc/initramfs-tools/scripts/init-bottom/vmtest-console-wait"
    install -D -m 0755 "$IMAGES_DIR/initramfs-console-hook.sh" \
        "$ROOTFS/etc/initramfs-tools/hooks/vmtest-console"
    install -D -m 0755 "$IMAGES_DIR/initramfs-root-case.sh" \
        "$ROOTFS/etc/initramfs-tools/scripts/init-top/vmtest-root-case"
    if [ -r "/boot/config-$KVER" ]; then
        cp "/boot/config-$KVER" "$ROOTFS/boot/"
    fi
    if ! chroot "$ROOTFS" mkinitramfs -o /tmp/initrd.img "$KVER" >"$WORK/mkinitramfs.log" 2>&1; then
        cat "$WORK/mkinitramfs.log" >&2
        die "mkinitramfs in the guest tree failed"
    fi
    mv "$ROOTFS/tmp/initrd.img" "$WORK/initrd.img"
    rm -f "$ROOTFS/boot/config-$KVER"

    # Trim what the guest does not need.
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
        "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* "$ROOTFS"/tmp/*
}
log "configuring the guest tree"
configure_rootfs
install -m 0644 "$WORK/initrd.img" "$TMP/initrd-debian.img"

# Builds a UKI from the systemd stub with objcopy (there is no ukify in bookworm). The new
# sections go after the stub's last one, 4 KiB-aligned, as ukify places them; the VMAs are
# absolute (they include the stub's ImageBase, which is not 0 for the 254 stub).
build_uki() {
    local out=$1 stub=$EFI_DIR/linuxx64.efi.stub end=0 vma size sec file args=()
    while read -r size vma; do
        if ((0x$vma + 0x$size > end)); then
            end=$((0x$vma + 0x$size))
        fi
    done < <(objdump -h "$stub" | awk '$1 ~ /^[0-9]+$/ { print $3, $4 }')
    ((end > 0)) || die "cannot read the sections of $stub"
    printf '%s' "$UKI_CMDLINE" >"$WORK/uki-cmdline"
    cp "$ROOTFS/usr/lib/os-release" "$WORK/uki-osrel"
    for sec in osrel:"$WORK/uki-osrel" cmdline:"$WORK/uki-cmdline" \
        initrd:"$WORK/initrd.img" linux:"$KERNEL"; do
        file=${sec#*:}
        sec=.${sec%%:*}
        vma=$(((end + 4095) / 4096 * 4096))
        args+=(--add-section "$sec=$file" --change-section-vma "$(printf '%s=0x%x' "$sec" "$vma")")
        end=$((vma + $(stat -c %s "$file")))
    done
    objcopy "${args[@]}" "$stub" "$out"
}

build_disk_image() {
    local img=$1 rootfs_mib root_mib start size esp
    rootfs_mib=$(du -s --block-size=1M "$ROOTFS" | cut -f1)
    root_mib=$((rootfs_mib * 13 / 10 + 200))
    rm -f "$img"
    # 1 MiB before the ESP, ESP, root, 1 MiB for the backup GPT.
    truncate -s $((1 + ESP_SECTORS / 2048 + root_mib + 1))M "$img"
    sfdisk -q "$img" >/dev/null <<EOF
label: gpt
unit: sectors
start=2048, size=$ESP_SECTORS, type=$ESP_TYPE, name="esp"
start=$((2048 + ESP_SECTORS)), type=$ROOT_TYPE, name="root"
EOF
    read -r start size < <(sfdisk -d "$img" | awk -F'[=,]' '/name="root"/ { gsub(/ /, ""); print $2, $4 }')
    [ -n "$start" ] && [ -n "$size" ] || die "cannot read the root partition of $img"
    mke2fs -q -F -t ext4 -L root -d "$ROOTFS" -E offset=$((start * 512)) "$img" $((size / 2))k

    esp=$WORK/esp.img
    rm -f "$esp"
    mkfs.vfat -n ESP -C "$esp" $((ESP_SECTORS / 2)) >/dev/null
    build_uki "$WORK/vmtest.efi"
    printf 'timeout 0\n' >"$WORK/loader.conf"
    mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/EFI/Linux ::/loader
    mcopy -i "$esp" "$EFI_DIR/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
    mcopy -i "$esp" "$WORK/vmtest.efi" ::/EFI/Linux/vmtest.efi
    mcopy -i "$esp" "$WORK/loader.conf" ::/loader/loader.conf
    dd if="$esp" of="$img" bs=512 seek=2048 conv=notrunc,sparse status=none
}
log "disk image"
build_disk_image "$TMP/systemd.raw"
safe_rm "$ROOTFS"

# --- 5. Debian systemd tree (root on virtiofs) ----------------------------------------------
TREE=$WORK/tree
log "debootstrap $TREE_SUITE from $MIRROR"
t0=$SECONDS
if ! debootstrap --variant=minbase --include="$TREE_PACKAGES" "$TREE_SUITE" "$TREE" "$MIRROR" \
    "$TREE_SCRIPT" >"$WORK/debootstrap-tree.log" 2>&1; then
    tail -n 40 "$WORK/debootstrap-tree.log" >&2
    die "debootstrap of $TREE_SUITE failed (log above)"
fi
log "debootstrap $TREE_SUITE took $((SECONDS - t0)) s"

configure_tree() {
    local unit
    mkdir -p "$TREE/usr/lib/modules"
    cp -a "$MODDIR" "$TREE/usr/lib/modules/"
    rm -f "$TREE/usr/lib/modules/$KVER/build" "$TREE/usr/lib/modules/$KVER/source"
    chroot "$TREE" depmod -a "$KVER"

    echo vmtest >"$TREE/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tvmtest\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
        >"$TREE/etc/hosts"
    chroot "$TREE" passwd -q -d root >/dev/null
    : >"$TREE/etc/fstab"
    rm -f "$TREE/etc/resolv.conf"
    # Like the bookworm guest: one fixed machine ID, so no first-boot setup runs.
    if [ ! -s "$TREE/etc/machine-id" ] || grep -qx uninitialized "$TREE/etc/machine-id"; then
        rm -f "$TREE/etc/machine-id"
        chroot "$TREE" systemd-machine-id-setup >/dev/null 2>&1 ||
            die "systemd-machine-id-setup in the $TREE_SUITE tree failed"
    fi

    install -m 0755 "$IMAGES_DIR/vmtest-check.sh" "$TREE/usr/local/bin/vmtest-check"
    install -m 0644 "$IMAGES_DIR/vmtest-check.service" "$TREE/etc/systemd/system/vmtest-check.service"
    for unit in vmtest-check.service ssh.service; do
        chroot "$TREE" systemctl enable "$unit" >/dev/null 2>&1
        [ -L "$TREE/etc/systemd/system/multi-user.target.wants/$unit" ] ||
            die "enabling $unit in the $TREE_SUITE tree failed"
    done
    # Debian ships it disabled, and only it turns --bind-user's userdb.transient.*
    # credentials into records the guest's userdb and NSS serve.
    unit=systemd-userdb-load-credentials.service
    chroot "$TREE" systemctl enable "$unit" >/dev/null 2>&1
    [ -L "$TREE/etc/systemd/system/sysinit.target.wants/$unit" ] ||
        die "enabling $unit in the $TREE_SUITE tree failed"

    # The guest gets /dev as devtmpfs (the initrd moves its own there), and an unprivileged
    # user cannot create the device nodes debootstrap left: keep /dev empty.
    find "$TREE/dev" -mindepth 1 -xdev -delete
    rm -rf "$TREE"/var/cache/apt/archives/*.deb "$TREE"/var/lib/apt/lists/* \
        "$TREE"/var/log/*.log "$TREE"/var/log/apt/* "$TREE"/tmp/*
}
log "configuring the $TREE_SUITE tree"
configure_tree
TREE_SYSTEMD=$(chroot "$TREE" dpkg-query -W -f='${Version}' systemd)
# The --bind-user tests need userdb.transient.* support (258 and later).
[ "${TREE_SYSTEMD%%[!0-9]*}" -ge 258 ] || die "the $TREE_SUITE tree has systemd $TREE_SYSTEMD, older than 258"
printf '%s\n' "$TREE_SYSTEMD" >"$TMP/systemd-tree-version"
log "$TREE_SUITE tree: systemd $TREE_SYSTEMD, $(du -s --block-size=1M "$TREE" | cut -f1) MiB"
t0=$SECONDS
tar --numeric-owner --xattrs --xattrs-include='*' --acls -C "$TREE" -I 'zstd -T0 -q' \
    -cf "$TMP/systemd-tree.tar.zst" .
log "systemd-tree.tar.zst: $(du --block-size=1M "$TMP/systemd-tree.tar.zst" | cut -f1) MiB in $((SECONDS - t0)) s"

# --- Finish ---------------------------------------------------------------------------------
safe_rm "$WORK"
find "$TMP" -type d -exec chmod 0755 {} +
find "$TMP" -type f -exec chmod 0644 {} +
: >"$TMP/.complete"
chmod 0644 "$TMP/.complete"
mv -T "$TMP" "$OUTDIR"
TMP=""
log "done in $((SECONDS - START)) s"
echo "$OUTDIR"
