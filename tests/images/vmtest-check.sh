#!/bin/sh
# Check script of the debootstrapped systemd test guest (vmtest-check.service).
# The integration tests parse the "VMTEST: " lines on the console; see README.md.

cmdline=$(cat /proc/cmdline)
echo "VMTEST: cmdline=$cmdline"

if [ -n "${CREDENTIALS_DIRECTORY:-}" ] && [ -r "$CREDENTIALS_DIRECTORY/vmtest" ]; then
    echo "VMTEST: cred vmtest=$(cat "$CREDENTIALS_DIRECTORY/vmtest")"
else
    echo "VMTEST: cred vmtest=MISSING"
fi

# The TPM (tpm_tis is built into the kernel), and an NV index that survives reboots when the
# TPM's state does: vmtest.tpm=write:VALUE stores VALUE (at most 32 bytes, padded with NULs),
# vmtest.tpm=read prints it back.
tpm=$(cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null || echo none)
echo "VMTEST: tpm=$tpm"

tpm_mode=""
set -f # no globbing of kernel command-line words
for word in $cmdline; do
    case "$word" in
        vmtest.tpm=*) tpm_mode=${word#vmtest.tpm=} ;;
    esac
done
set +f

NV_INDEX=0x1500016
NV_SIZE=32
# Talk to the kernel's resource manager, not to whatever TCTI the tools would pick.
export TPM2TOOLS_TCTI=device:/dev/tpmrm0

# Prints "yes" or "no"; fails when the TPM cannot be asked.
nv_defined() {
    handles=$(tpm2_getcap handles-nv-index) || return 1
    if printf '%s\n' "$handles" | grep -qix -- "- $NV_INDEX"; then
        echo yes
    else
        echo no
    fi
}

tpm_write() {
    value=$1
    [ "${#value}" -le "$NV_SIZE" ] || return 1
    defined=$(nv_defined) || return 1
    if [ "$defined" = no ]; then
        tpm2_nvdefine "$NV_INDEX" -C o -s "$NV_SIZE" -a "ownerread|ownerwrite" >/dev/null || return 1
    fi
    { printf '%s' "$value"; head -c "$NV_SIZE" /dev/zero; } | head -c "$NV_SIZE" >/run/vmtest-nv.in
    tpm2_nvwrite "$NV_INDEX" -C o -i /run/vmtest-nv.in
}

tpm_read() {
    defined=$(nv_defined) || return 1
    if [ "$defined" = no ]; then
        echo MISSING
        return 0
    fi
    tpm2_nvread "$NV_INDEX" -C o -s "$NV_SIZE" -o /run/vmtest-nv.out || return 1
    tr -d '\000' </run/vmtest-nv.out
    echo
}

case "$tpm_mode" in
    "") ;;
    write:*)
        if [ "$tpm" = none ]; then
            echo "VMTEST: tpm-nv-failed no-tpm"
        elif tpm_write "${tpm_mode#write:}"; then
            echo "VMTEST: tpm-nv-written"
        else
            echo "VMTEST: tpm-nv-failed write"
        fi
        ;;
    read)
        if [ "$tpm" = none ]; then
            echo "VMTEST: tpm-nv-failed no-tpm"
        elif value=$(tpm_read); then
            echo "VMTEST: tpm-nv=$value"
        else
            echo "VMTEST: tpm-nv-failed read"
        fi
        ;;
    *)
        echo "VMTEST: tpm-nv-failed unknown-mode $tpm_mode"
        ;;
esac

failed=$(systemctl --failed --no-legend --plain 2>/dev/null | grep -c .)
echo "VMTEST: failed-units=$failed"
echo "VMTEST: done"

case " $cmdline " in
    *" vmtest.nopoweroff "*) ;;
    *) systemctl poweroff --no-block ;;
esac
exit 0
