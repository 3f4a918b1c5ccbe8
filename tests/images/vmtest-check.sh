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

failed=$(systemctl --failed --no-legend --plain 2>/dev/null | grep -c .)
echo "VMTEST: failed-units=$failed"
echo "VMTEST: done"

case " $cmdline " in
    *" vmtest.nopoweroff "*) ;;
    *) systemctl poweroff --no-block ;;
esac
exit 0
