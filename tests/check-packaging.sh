#!/usr/bin/env bash
# Checks the files under packaging/: the systemd units verify, the polkit policy is well-formed
# and names one action per helper operation.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
helper=${VMSPAWN_PRIVHELPER_BIN:-target/release/vmspawn-privhelper}
install -m 0755 "$helper" "$work/vmspawn-privhelper"
sed "s|/usr/libexec/vmspawn/vmspawn-privhelper|$work/vmspawn-privhelper|" \
    packaging/systemd/vmspawn-privhelper.service > "$work/vmspawn-privhelper.service"
cp packaging/systemd/vmspawn-privhelper.socket "$work/"
out=$(systemd-analyze verify "$work/vmspawn-privhelper.socket" "$work/vmspawn-privhelper.service" 2>&1 || true)
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
