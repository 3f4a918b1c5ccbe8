#!/bin/sh
# initramfs-tools init-bottom script of the systemd test guest (installed by build.sh as
# /etc/initramfs-tools/scripts/init-bottom/vmtest-console-wait).
#
# vmspawn boots with console=hvc0, and virtio_console is a module in the cloud kernel: until it
# has registered hvc0 (asynchronously, after the host answered on the control queue),
# /dev/console cannot be opened. initramfs-tools' init ends with
#   exec run-init ... <"${rootmnt}/dev/console" >"${rootmnt}/dev/console" 2>&1
# and if that redirection fails, init exits and the kernel panics, silently. build.sh adds
# virtio_console to the initrd's module list; this waits (at most 10 s) until it is usable.
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in
    prereqs)
        prereqs
        exit 0
        ;;
esac

i=0
while [ "$i" -lt 100 ]; do
    if (: </dev/console) 2>/dev/null; then
        exit 0
    fi
    sleep 0.1
    i=$((i + 1))
done
exit 0
