#!/bin/sh
# initramfs-tools hook of the systemd test guest (installed by build.sh as
# /etc/initramfs-tools/hooks/vmtest-console). It wraps Debian's /init.
#
# vmspawn boots with console=hvc0, and virtio_console is a module in the cloud kernel, so the
# kernel finds no console when it starts /init ("Warning: unable to open an initial console")
# and runs it with file descriptors 0, 1 and 2 closed. Debian's /init does not cope with that:
# the first files it opens land on fds 0-2, and systemd-udevd (started from init-top) ends up
# without working sockets, loads no drivers, and the root device never appears. The wrapper
# gives /init a valid stdin (/dev/null) and stdout/stderr (/dev/kmsg, so its messages reach the
# console once hvc0 exists) when the kernel could not. See also initramfs-console-wait.sh.
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in
    prereqs)
        prereqs
        exit 0
        ;;
esac

[ -n "${DESTDIR:-}" ] && [ -x "$DESTDIR/init" ] || exit 1
mv "$DESTDIR/init" "$DESTDIR/init.debian"
cat >"$DESTDIR/init" <<'WRAPPER'
#!/bin/sh
# Wrapper of the vmspawn test guest, see /etc/initramfs-tools/hooks/vmtest-console.
# (Subshells, because a failed redirection of "exec" would end the shell, i.e. PID 1.)
[ -e /dev/null ] || mknod -m 0666 /dev/null c 1 3
[ -e /dev/kmsg ] || mknod -m 0600 /dev/kmsg c 1 11
if ! (exec 3<&0) 2>/dev/null || ! (exec 3>&1) 2>/dev/null || ! (exec 3>&2) 2>/dev/null; then
    exec </dev/null >/dev/kmsg 2>&1
fi
exec /init.debian "$@"
WRAPPER
chmod 0755 "$DESTDIR/init"
