#!/bin/sh
# initramfs-tools init-top script of the systemd test guest (installed by build.sh as
# /etc/initramfs-tools/scripts/init-top/vmtest-root-case).
#
# The kernel compares root=PARTUUID= case-insensitively, but initramfs-tools resolves root=
# with "blkid -t", which compares exactly, and blkid reports lower case. Lower-case the hex
# digits of root=PARTUUID=/UUID= so that an upper-case UUID (as sfdisk prints them) works too.
# klibc has no tr or sed, hence the loop. init sources /conf/param.conf after each script.
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in
    prereqs)
        prereqs
        exit 0
        ;;
esac

case "$ROOT" in
    PARTUUID=* | UUID=*) ;;
    *) exit 0 ;;
esac
rest=$ROOT
out=""
while [ -n "$rest" ]; do
    c=${rest%"${rest#?}"}
    rest=${rest#?}
    case "$c" in
        A) c=a ;;
        B) c=b ;;
        C) c=c ;;
        D) c=d ;;
        E) c=e ;;
        F) c=f ;;
    esac
    out=$out$c
done
# Keep the key itself (PARTUUID=/UUID=) as it was.
key=${ROOT%%=*}
out=$key=${out#*=}
if [ "$out" != "$ROOT" ]; then
    echo "ROOT=\"$out\"" >>/conf/param.conf
fi
exit 0
