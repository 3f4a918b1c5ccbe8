#!/usr/bin/env bash
# Builds the Debian package: target/debian/vmspawn_<version>_amd64.deb (the path is the last
# line of stdout). Needs debhelper and dpkg-dev (apt-get install debhelper).
#
# A debian/ directory (packaging/debian) built with dpkg-buildpackage rather than cargo-deb:
# debhelper writes the maintainer scripts for the units, the tmpfiles entry and the man pages
# the way every Debian package does, lintian knows its output, and nothing has to be compiled
# before packaging can start (cargo-deb is not packaged for Debian 12 and takes minutes to
# build). The binaries are built here with the workspace's own toolchain and --locked; the man
# page and the completions are generated from the launcher's clap command (docgen/), so they
# cannot drift from the parser.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in dpkg-buildpackage dh; do
    command -v "$tool" >/dev/null || {
        echo "build-deb.sh: $tool is missing; install it with 'apt-get install debhelper dpkg-dev'" >&2
        exit 1
    }
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
changelog_version=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
if [ "$version" != "$changelog_version" ]; then
    echo "build-deb.sh: Cargo.toml says $version, packaging/debian/changelog $changelog_version" >&2
    exit 1
fi

cargo build --release --locked -p vmspawn -p vmspawn-privhelper -p vmspawn-docgen >&2

build=target/debian-build
tree=$build/vmspawn-$version
rm -rf "$build"
mkdir -p "$tree"/{bin,docs,etc,polkit,examples,completions/bash,completions/zsh,completions/fish}
cp -r packaging/debian "$tree/debian"
# The units keep their names in packaging/systemd; debhelper wants them as
# debian/<package>[.<name>].<type> (and <package>@.user.service for the user manager's).
cp packaging/systemd/vmspawn-privhelper.socket "$tree/debian/vmspawn.vmspawn-privhelper.socket"
cp packaging/systemd/vmspawn-privhelper.service "$tree/debian/vmspawn.vmspawn-privhelper.service"
cp packaging/systemd/vmspawn@.service "$tree/debian/vmspawn@.service"
cp packaging/systemd/user/vmspawn@.service "$tree/debian/vmspawn@.user.service"
cp packaging/systemd/vmspawn.tmpfile "$tree/debian/vmspawn.tmpfiles"
install -m 0755 target/release/vmspawn target/release/vmspawn-vsock-proxy \
    target/release/vmspawn-privhelper "$tree/bin/"
target/release/vmspawn-docgen README.md "$tree/docs"
cp packaging/man/*.[158] "$tree/docs/"
mv "$tree/docs/vmspawn.bash" "$tree/completions/bash/vmspawn"
mv "$tree/docs/_vmspawn" "$tree/completions/zsh/_vmspawn"
mv "$tree/docs/vmspawn.fish" "$tree/completions/fish/vmspawn.fish"
cp packaging/policy.toml "$tree/etc/policy.toml"
cp policy/policy.example.toml "$tree/examples/"
cp packaging/polkit/org.vmspawn.privhelper.policy "$tree/polkit/"
cp README.md "$tree/"

(cd "$tree" && dpkg-buildpackage -b -us -uc --no-sign) > "$build/dpkg-buildpackage.log" 2>&1 || {
    tail -n 40 "$build/dpkg-buildpackage.log" >&2
    echo "build-deb.sh: dpkg-buildpackage failed (log: $build/dpkg-buildpackage.log)" >&2
    exit 1
}
mkdir -p target/debian
deb=target/debian/vmspawn_${version}_amd64.deb
mv "$build/vmspawn_${version}_amd64.deb" "$deb"
echo "$PWD/$deb"
