#!/usr/bin/env bash
# Checks the files under packaging/: the systemd units verify, the polkit policy is well-formed
# and names one action per helper operation. (tests/package/install-test.sh builds and installs
# the Debian package.)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
helper=${VMSPAWN_PRIVHELPER_BIN:-target/release/vmspawn-privhelper}
install -m 0755 "$helper" "$work/vmspawn-privhelper"
sed "s|/usr/libexec/vmspawn/vmspawn-privhelper|$work/vmspawn-privhelper|" \
    packaging/systemd/vmspawn-privhelper.service > "$work/vmspawn-privhelper.service"
cp packaging/systemd/vmspawn-privhelper.socket "$work/"
# The VM templates, as an instance each (verify wants a unit name, not a template), with the
# launcher where they expect it.
launcher=${VMSPAWN_BIN:-target/release/vmspawn}
install -m 0755 "$launcher" "$work/vmspawn"
mkdir "$work/user"
sed "s|/usr/bin/vmspawn|$work/vmspawn|" packaging/systemd/vmspawn@.service > "$work/vmspawn@check.service"
sed "s|/usr/bin/vmspawn|$work/vmspawn|" packaging/systemd/user/vmspawn@.service > "$work/user/vmspawn@check.service"
# (--man=no: the man pages are the package's, not installed here.)
out=$(systemd-analyze verify --man=no "$work/vmspawn-privhelper.socket" \
    "$work/vmspawn-privhelper.service" "$work/vmspawn@check.service" 2>&1 || true)
mkdir -m 0700 "$work/xdg"
out+=$(XDG_RUNTIME_DIR=$work/xdg systemd-analyze verify --man=no --user \
    "$work/user/vmspawn@check.service" 2>&1 || true)
if [ -n "$out" ]; then
    echo "systemd-analyze verify complained:" >&2
    echo "$out" >&2
    exit 1
fi
python3 - <<'PY'
import xml.etree.ElementTree as ET
actions = {a.get("id") for a in ET.parse("packaging/polkit/org.vmspawn.privhelper.policy").getroot().iter("action")}
want = {f"org.vmspawn.privhelper.{op}" for op in ["create-tap", "attach-bridge", "open-kvm", "open-vhost-vsock", "register-machine"]}
assert actions == want, f"polkit actions {sorted(actions)} != {sorted(want)}"
PY
echo "packaging: units verify, polkit policy has $(grep -c '<action ' packaging/polkit/org.vmspawn.privhelper.policy) actions"
