#!/usr/bin/env python3
"""Boots the artifacts of build.sh with plain QEMU (TCG, OVMF, virtio console), the way the
vmspawn launcher does, and checks the guest-side contracts described in README.md.

Usage: tests/images/selftest.py [--only NAME[,NAME...]] [IMAGEDIR]

IMAGEDIR defaults to the last line printed by build.sh (which needs root). The checks themselves
do not need root: they work on copies in a temporary directory. Exit status 0 if all passed.
"""
import argparse
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
VIRTIOFSD = "/usr/libexec/virtiofsd"
# vhost-user devices need guest memory that virtiofsd can map: a shared memfd as large as -m.
SHARED_MEMORY = ["-object", "memory-backend-memfd,id=mem,size=1G,share=on",
                 "-machine", "memory-backend=mem"]
HERE = os.path.dirname(os.path.abspath(__file__))


class Guest:
    """One QEMU run; output is collected and echoed with a prefix when --verbose."""

    def __init__(self, work, name, args, verbose):
        self.work, self.name, self.verbose = work, name, verbose
        self.qmp_path = os.path.join(work, f"{name}.qmp")
        self.vars = os.path.join(work, f"{name}.vars.fd")
        shutil.copyfile(OVMF_VARS, self.vars)
        cmd = [
            "qemu-system-x86_64", "-machine", "q35,smm=off", "-accel", "tcg",
            "-m", "1G", "-smp", "2", "-nographic", "-nodefaults", "-no-reboot",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={self.vars}",
            "-device", "virtio-serial-pci",
            "-chardev", "stdio,id=console,signal=off",
            "-device", "virtconsole,chardev=console",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
        ] + args
        self.start = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.out = ""
        self.rc = None

    def elapsed(self):
        return time.monotonic() - self.start

    def pump(self, timeout):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if r:
            data = self.proc.stdout.read()
            if data:
                text = data.decode(errors="replace")
                self.out += text
                if self.verbose:
                    sys.stderr.write(text)
                return True
        return False

    def wait_for(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        while pattern not in self.out:
            if time.monotonic() > deadline:
                raise AssertionError(f"timeout waiting for {pattern!r}")
            if not self.pump(0.2) and self.proc.poll() is not None:
                self.pump(0)
                if pattern in self.out:
                    break
                raise AssertionError(f"QEMU exited ({self.proc.returncode}) before {pattern!r}")
        return self.elapsed()

    def wait_exit(self, timeout):
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("timeout waiting for QEMU to exit")
            self.pump(0.2)
        while self.pump(0):
            pass
        self.rc = self.proc.returncode
        return self.elapsed()

    def type(self, text):
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def qmp(self, command):
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.qmp_path)
        f = s.makefile("rwb")
        f.readline()  # greeting
        for c in ({"execute": "qmp_capabilities"}, {"execute": command}):
            f.write((json.dumps(c) + "\n").encode())
            f.flush()
            while True:  # skip events until the reply
                reply = json.loads(f.readline())
                if "return" in reply or "error" in reply:
                    break
            if "error" in reply:
                raise AssertionError(f"QMP {c}: {reply}")
        s.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def lines(self):
        return [line.strip("\r") for line in self.out.split("\n")]

    def expect_lines(self, *wanted):
        lines = self.lines()
        for w in wanted:
            if not any(line.endswith(w) or line == w for line in lines):
                raise AssertionError(f"missing line {w!r}")

    def expect_in(self, *wanted):
        for w in wanted:
            if w not in self.out:
                raise AssertionError(f"missing {w!r}")


class Virtiofsd:
    """A virtiofsd as the current user serving DIR; QEMU arguments for tag TAG in .args."""

    def __init__(self, work, tag, directory, extra=()):
        if not os.access(VIRTIOFSD, os.X_OK):
            raise AssertionError(f"{VIRTIOFSD} missing (tests/setup-host.sh installs it)")
        self.sock = os.path.join(work, f"virtiofsd-{tag}.sock")
        self.log = open(os.path.join(work, f"virtiofsd-{tag}.log"), "wb")
        self.proc = subprocess.Popen([VIRTIOFSD, f"--socket-path={self.sock}",
                                      f"--shared-dir={directory}", "--sandbox=none"] + list(extra),
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"virtiofsd for {tag} did not start")
            time.sleep(0.05)
        self.args = ["-chardev", f"socket,id=vfs-{tag},path={self.sock}",
                     "-device", f"vhost-user-fs-pci,chardev=vfs-{tag},tag={tag}"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("imagedir", nargs="?")
    a = ap.parse_args()
    imgdir = a.imagedir
    if not imgdir:
        out = subprocess.run([os.path.join(HERE, "build.sh")], check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        imgdir = out.strip().splitlines()[-1]
    if not os.path.exists(os.path.join(imgdir, ".complete")):
        sys.exit(f"{imgdir} is not a complete image directory")
    work = tempfile.mkdtemp(prefix="vmspawn-images-selftest.")
    img = lambda n: os.path.join(imgdir, n)  # noqa: E731
    verbose = a.verbose

    # Busybox initrd followed by the extra initrd, 4-byte aligned (what vmspawn does).
    combined = os.path.join(work, "combined.initrd")
    with open(combined, "wb") as f:
        data = open(img("initrd-busybox.cpio.gz"), "rb").read()
        f.write(data + b"\0" * (-len(data) % 4))
        f.write(open(img("initrd-extra.cpio"), "rb").read())
    extra_disk = os.path.join(work, "extra.img")
    with open(extra_disk, "wb") as f:
        f.truncate(64 << 20)
    raw = os.path.join(work, "systemd.raw")
    subprocess.run(["cp", "--sparse=always", img("systemd.raw"), raw], check=True)
    partuuid = subprocess.run(["sfdisk", "--part-uuid", raw, "2"], check=True,
                              stdout=subprocess.PIPE, text=True).stdout.strip().lower()
    cred = ["-smbios", "type=11,value=io.systemd.credential:vmtest=hello"]

    def busybox(modes, extra=()):
        return ["-kernel", img("vmlinuz"), "-initrd", img("initrd-busybox.cpio.gz"),
                "-append", f"console=hvc0 quiet test.mode={modes}"] + cred + list(extra)

    def fresh_raw():
        subprocess.run(["cp", "--sparse=always", img("systemd.raw"), raw], check=True)
        return ["-drive", f"if=none,id=vmspawn,file={raw},format=raw"]

    results = []

    def case(name):
        def register(fn):
            if not a.only or name in a.only.split(","):
                t0 = time.monotonic()
                try:
                    note = fn(name)
                    results.append((name, "ok", time.monotonic() - t0, note or ""))
                except AssertionError as e:
                    results.append((name, "FAIL", time.monotonic() - t0, str(e)))
                print(f"{results[-1][1]:4} {name}: {results[-1][3]}", flush=True)
            return fn
        return register

    @case("busybox-report")
    def _(name):
        g = Guest(work, name, [
            "-kernel", img("vmlinuz"), "-initrd", combined,
            "-append", "console=hvc0 quiet test.mode=sleep=1",
            "-drive", f"if=none,id=d1,file={extra_disk},format=raw",
            "-device", "virtio-blk-pci,drive=d1,serial=extra1"] + cred, verbose)
        try:
            t = g.wait_exit(120)
        finally:
            g.kill()
        assert g.rc == 0, f"exit status {g.rc}"
        g.expect_lines("VMTEST: boot", "VMTEST: nproc=2", "VMTEST: done",
                       "VMTEST: smbios11=io.systemd.credential:vmtest=hello",
                       "VMTEST: disk vda size=131072 serial=extra1",
                       "VMTEST: extra-initrd=extra-initrd-ok")
        g.expect_in("VMTEST: memtotal_kb=", "VMTEST: cmdline=console=hvc0 quiet test.mode=sleep=1")
        assert "insmod-failed" not in g.out, "a module failed to load"
        return f"exit 0 after {t:.1f} s"

    @case("busybox-powerbutton")
    def _(name):
        g = Guest(work, name, busybox("powerbutton"), verbose)
        try:
            g.wait_for("VMTEST: waiting-for-powerbutton", 120)
            g.qmp("system_powerdown")
            t = g.wait_exit(60)
        finally:
            g.kill()
        assert g.rc == 0, f"exit status {g.rc}"
        g.expect_lines("VMTEST: powerbutton-pressed")
        return f"exit 0 after {t:.1f} s"

    @case("busybox-ignore-powerbutton")
    def _(name):
        g = Guest(work, name, busybox("ignore-powerbutton"), verbose)
        try:
            g.wait_for("VMTEST: ignoring-powerbutton", 120)
            g.qmp("system_powerdown")
            try:
                g.wait_exit(8)
                raise AssertionError("guest powered off")
            except AssertionError as e:
                if "powered off" in str(e):
                    raise
        finally:
            g.kill()
        return "still running 8 s after system_powerdown"

    @case("busybox-exit-code")
    def _(name):
        g = Guest(work, name, busybox("exit-code=3", [
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]), verbose)
        try:
            t = g.wait_exit(120)
        finally:
            g.kill()
        g.expect_lines("VMTEST: exit-code-requested")
        assert g.rc == 7, f"exit status {g.rc}, expected 7"
        return f"exit 7 after {t:.1f} s"

    @case("busybox-shell")
    def _(name):
        g = Guest(work, name, busybox("shell"), verbose)
        try:
            g.wait_for("VMTEST: shell-ready", 120)
            time.sleep(1)
            g.type("echo shell-$((6 * 7))\nexit\n")
            t = g.wait_exit(60)
        finally:
            g.kill()
        assert g.rc == 0, f"exit status {g.rc}"
        g.expect_lines("shell-42", "VMTEST: done")
        return f"exit 0 after {t:.1f} s"

    @case("systemd-uefi")
    def _(name):
        g = Guest(work, name, fresh_raw() + [
            "-device", "virtio-blk-pci,drive=vmspawn,bootindex=1",
            "-smbios", "type=11,value=io.systemd.stub.kernel-cmdline-extra=console=hvc0 vmtest.word=1",
        ] + cred, verbose)
        try:
            t_done = g.wait_for("VMTEST: done", 240)
            t = g.wait_exit(60)
        finally:
            g.kill()
        assert g.rc == 0, f"exit status {g.rc}"
        g.expect_in("VMTEST: cmdline=root=PARTLABEL=root rw quiet systemd.show_status=0 console=hvc0 vmtest.word=1",
                    "VMTEST: cred vmtest=hello", "VMTEST: failed-units=0")
        return f"done after {t_done:.1f} s, exit 0 after {t:.1f} s"

    @case("systemd-direct")
    def _(name):
        g = Guest(work, name, fresh_raw() + [
            "-device", "virtio-blk-pci,drive=vmspawn",
            "-kernel", img("vmlinuz"), "-initrd", img("initrd-debian.img"),
            "-append", f"console=hvc0 root=PARTUUID={partuuid} rw"] + cred, verbose)
        try:
            t_done = g.wait_for("VMTEST: done", 240)
            t = g.wait_exit(60)
        finally:
            g.kill()
        assert g.rc == 0, f"exit status {g.rc}"
        g.expect_in("VMTEST: cred vmtest=hello", "VMTEST: failed-units=0", f"PARTUUID={partuuid}")
        return f"done after {t_done:.1f} s, exit 0 after {t:.1f} s"

    @case("systemd-powerbutton")
    def _(name):
        g = Guest(work, name, fresh_raw() + [
            "-device", "virtio-blk-pci,drive=vmspawn",
            "-kernel", img("vmlinuz"), "-initrd", img("initrd-debian.img"),
            "-append", f"console=hvc0 root=PARTUUID={partuuid} rw quiet vmtest.nopoweroff"] + cred,
            verbose)
        try:
            g.wait_for("VMTEST: done", 240)
            time.sleep(1)
            t0 = g.elapsed()
            g.qmp("system_powerdown")
            t = g.wait_exit(60)
        finally:
            g.kill()
        assert g.rc == 0, f"exit status {g.rc}"
        return f"exit 0 {t - t0:.1f} s after system_powerdown"

    @case("busybox-virtiofs")
    def _(name):
        root = os.path.join(work, "vfs-root")
        share = os.path.join(work, "vfs-share")
        os.makedirs(root)
        os.makedirs(share)
        with open(os.path.join(root, "f"), "w") as f:
            f.write("root-file\n")
        with open(os.path.join(share, "f"), "w") as f:
            f.write("share-file\n")
        daemons = []
        try:
            daemons.append(Virtiofsd(work, "root", root))
            daemons.append(Virtiofsd(work, "mnt0", share))
            modes = ("mount-extra,cat=/newroot/f,cat=/srv/a-b/f,write=/srv/a-b/new:hi,"
                     "stat=/srv/a-b/new,mkdir=/srv/a-b/d,mkdir=/srv/a-b/d,cat=/missing")
            g = Guest(work, name, SHARED_MEMORY + daemons[0].args + daemons[1].args + [
                "-kernel", img("vmlinuz"), "-initrd", img("initrd-busybox.cpio.gz"),
                "-append", "console=hvc0 quiet root=root rootfstype=virtiofs rw "
                'systemd.mount-extra="mnt0:/srv/a\\x2db:virtiofs:rw" '
                f"test.mode={modes}"], verbose)
            try:
                t = g.wait_exit(120)
            finally:
                g.kill()
        finally:
            for d in daemons:
                d.stop()
        assert g.rc == 0, f"exit status {g.rc}"
        uid, gid = os.getuid(), os.getgid()
        g.expect_lines("VMTEST: virtiofs-root root", "VMTEST: mounted mnt0 /srv/a-b rw",
                       "VMTEST: cat /newroot/f=root-file", "VMTEST: cat /srv/a-b/f=share-file",
                       "VMTEST: write-ok /srv/a-b/new", f"VMTEST: stat /srv/a-b/new uid={uid} gid={gid}",
                       "VMTEST: mkdir-ok /srv/a-b/d", "VMTEST: mkdir-failed /srv/a-b/d",
                       "VMTEST: cat-failed /missing", "VMTEST: done")
        with open(os.path.join(share, "new")) as f:
            assert f.read() == "hi\n", "the guest's write did not reach the host"
        assert os.path.isdir(os.path.join(share, "d")), "the guest's mkdir did not reach the host"
        return f"exit 0 after {t:.1f} s"

    @case("systemd-tree")
    def _(name):
        tree = os.path.join(work, "systemd-tree")
        os.makedirs(tree)
        tar = ["tar", "-x", "-I", "zstd", "-C", tree, "-f", img("systemd-tree.tar.zst")]
        if os.getuid() == 0:
            tar[2:2] = ["-p", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"]
            extra = []
        else:
            # The files are the user's: the guest sees them as root's.
            extra = [f"--translate-uid=map:0:{os.getuid()}:1", f"--translate-gid=map:0:{os.getgid()}:1"]
        subprocess.run(tar, check=True)
        d = Virtiofsd(work, "root", tree, extra)
        try:
            g = Guest(work, name, SHARED_MEMORY + d.args + [
                "-kernel", img("vmlinuz"), "-initrd", img("initrd-busybox.cpio.gz"),
                "-append", "console=hvc0 root=root rootfstype=virtiofs rw"] + cred, verbose)
            try:
                t_done = g.wait_for("VMTEST: done", 300)
                t = g.wait_exit(60)
            finally:
                g.kill()
        finally:
            d.stop()
            shutil.rmtree(tree, ignore_errors=True)
        assert g.rc == 0, f"exit status {g.rc}"
        g.expect_lines("VMTEST: virtiofs-root root")
        g.expect_in("VMTEST: cred vmtest=hello", "VMTEST: failed-units=0")
        # The welcome line (with colour codes) names forky: "forky/sid" now, "14 (forky)" once
        # it is released.
        assert any("Welcome to" in line and "Debian GNU/Linux" in line and "forky" in line
                   for line in g.lines()), "no welcome to forky"
        return f"done after {t_done:.1f} s, exit 0 after {t:.1f} s"

    shutil.rmtree(work, ignore_errors=True)
    failed = [r for r in results if r[1] != "ok"]
    print(f"{len(results) - len(failed)}/{len(results)} passed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
