#!/usr/bin/env python3
"""Measures virtio-fs as vmspawn sets it up (one confined, unprivileged virtiofsd per share):
guest-side throughput and small-file work over a --bind share, next to the same work on the
guest's own storage, and what each share adds to the start-up.

Workloads (run inside the busybox test initrd, as the guest's root, by a script in the share):
- seq-write: dd of SIZE MiB from /dev/zero, bs=1M, conv=fsync;
- seq-read: dd of that file to /dev/null, bs=1M, after dropping the guest's page cache;
- untar: extracting an uncompressed tarball of a synthetic source tree (FILES files in 150
  directories, sizes like C sources, about 4 KiB median; same tree every run: fixed seed),
  followed by sync; the tarball is read from guest RAM;
- walk: `du -s` over the extracted tree (a stat of every file, after dropping caches);
- rm: `rm -rf` of the tree, followed by sync.
Each runs on three targets:
- virtiofs: the --bind share (a directory on the host's /var/tmp);
- ext4: an ext4 file system on a raw image passed with --extra-drive (virtio-blk, backed by a
  sparse file in the same host directory);
- tmpfs: a tmpfs in guest RAM (no device at all: the guest's upper bound).
Guests run under TCG (--kvm=no, software emulation: KVM is not usable on the test machines), so
absolute figures are far below native; the comparison between targets is the point.

Start-up: wall time from starting vmspawn until QEMU is executed (vmspawn binds each share's
socket and starts its virtiofsd, confined, before QEMU; measured with a stub QEMU that prints
CLOCK_MONOTONIC when it runs and exits, as bench/startup.py does), and until the guest's first line
("VMTEST: boot", which the initrd prints once its modules are loaded, so the guest's probing of
the vhost-user-fs devices is included), with 0, 1 and 4 --bind shares on the same disk image.

vmspawn runs as an unprivileged user (default: `tester`, from tests/setup-host.sh), as it is
meant to be used; the script itself needs root to switch to that user and to give it the
files it prepares (in /var/tmp/vmspawn-bench-virtiofs-PID, removed at the end).

Usage: sudo python3 bench/virtiofs.py [--user NAME] [--vmspawn PATH] [--images DIR]
                                      [--size-mib N] [--files N] [--runs N] [--stub-runs N]
"""

import argparse
import io
import os
import pty
import pwd
import random
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in the busybox initrd's `sh`. /proc/uptime has only 10 ms steps; adjtimex(2) gives the
# wall clock in microseconds (busybox's date has no %N).
GUEST_SCRIPT = r"""#!/bin/sh
SIZE_MIB=$1
now() { adjtimex | awk '/tv_sec/ { s = $2 } /tv_usec/ { u = $2 } END { printf "%d.%06d", s, u }'; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
result() { echo "BENCH $1 $2 $(elapsed "$3" "$4")"; }
bench() {
    name=$1; dir=$2/vmspawn-bench
    rm -rf "$dir"; mkdir -p "$dir"
    drop
    t0=$(now); dd if=/dev/zero of="$dir/big" bs=1M count="$SIZE_MIB" conv=fsync 2>/dev/null; t1=$(now)
    result "$name" seq-write "$t0" "$t1"
    drop
    t0=$(now); dd if="$dir/big" of=/dev/null bs=1M 2>/dev/null; t1=$(now)
    result "$name" seq-read "$t0" "$t1"
    rm -f "$dir/big"
    drop
    t0=$(now); tar -xf /mnt/ram/src.tar -C "$dir" && sync; t1=$(now)
    result "$name" untar "$t0" "$t1"
    echo "BENCH $name files $(find "$dir" -type f | wc -l)"
    drop
    t0=$(now); du -s "$dir" >/dev/null; t1=$(now)
    result "$name" walk "$t0" "$t1"
    t0=$(now); rm -rf "$dir" && sync; t1=$(now)
    result "$name" rm "$t0" "$t1"
}
mkdir -p /mnt/ram /mnt/disk
mount -t tmpfs -o size=75% tmpfs /mnt/ram || echo "BENCH error tmpfs"
cp /srv/bench/src.tar /mnt/ram/src.tar || echo "BENCH error copy"
mount -t ext4 /dev/vda /mnt/disk || echo "BENCH error ext4"
bench tmpfs /mnt/ram/t
bench ext4 /mnt/disk
bench virtiofs /srv/bench
echo "BENCH end"
"""


# Stands in for QEMU in the start-up measurement (as bench/startup.py does): prints
# CLOCK_MONOTONIC the moment it runs, on its stdout (the console vmspawn forwards), and exits.
STUB_C = r"""
#include <stdio.h>
#include <time.h>
int main(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    printf("STUB-EXEC %lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    return 0;
}
"""


def die(message):
    raise SystemExit(f"bench/virtiofs.py: {message}")


def images_dir(explicit):
    if explicit:
        return explicit
    if os.environ.get("VMSPAWN_TEST_IMAGES"):
        return os.environ["VMSPAWN_TEST_IMAGES"]
    out = subprocess.run(["bash", os.path.join(ROOT, "tests/images/build.sh")],
                         stdout=subprocess.PIPE, check=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def make_source_tree_tar(path, files, seed=20261202):
    """An uncompressed tar of a synthetic source tree: `files` files in 150 directories,
    log-normal sizes (median about 4 KiB, capped at 256 KiB), text content."""
    rng = random.Random(seed)
    words = [b"static", b"int", b"return", b"struct", b"const", b"void", b"if", b"else",
             b"for", b"while", b"char", b"size_t", b"{", b"}", b"(", b")", b";", b"\n"]
    total = 0
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name in ["src"] + [f"src/dir{d:03d}" for d in range(150)]:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = 1700000000
            tar.addfile(info)
        for i in range(files):
            size = min(int(rng.lognormvariate(8.3, 1.0)), 256 << 10)
            chunk = b" ".join(rng.choice(words) for _ in range(64)) + b"\n"
            data = (chunk * (size // len(chunk) + 1))[:size]
            info = tarfile.TarInfo(f"src/dir{i % 150:03d}/file{i:05d}.c")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(data))
            total += len(data)
    return total


def as_user(user, cmd):
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
            "--"] + cmd


def user_env(work):
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": work,
        "TMPDIR": os.path.join(work, "tmp"),
        "LANG": "C.UTF-8",
    }


def chown_tree(path, user):
    subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", path], check=True)


def run_workload(args, user, images, work):
    tree = os.path.join(work, "tree")
    share = os.path.join(work, "share")
    os.makedirs(tree, exist_ok=True)
    os.makedirs(share, exist_ok=True)
    with open(os.path.join(share, "run.sh"), "w") as f:
        f.write(GUEST_SCRIPT)
    os.chmod(os.path.join(share, "run.sh"), 0o755)
    tar_bytes = make_source_tree_tar(os.path.join(share, "src.tar"), args.files)
    disk = os.path.join(work, "disk.ext4")
    with open(disk, "wb") as f:
        f.truncate(2 << 30)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                    disk], check=True)
    chown_tree(work, user)
    cmd = as_user(user, [
        args.vmspawn, "--kvm=no", "--tpm=no", "--ram=2G", "--console=interactive",
        "-D", tree, "--bind=" + share + ":/srv/bench", "--extra-drive=" + disk,
        f"--linux={images}/vmlinuz", f"--initrd={images}/initrd-busybox.cpio.gz",
        "test.mode=mount-extra,shell",
    ])
    # On a pseudo-terminal: the initrd's `shell` mode runs sh on the console, and we type.
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(work)
        os.execvpe(cmd[0], cmd, user_env(work))
    output = b""
    typed = False
    deadline = time.monotonic() + args.timeout
    while True:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            die("the workload VM did not finish in time; output:\n" + output.decode(errors="replace"))
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            if args.verbose:
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
        if not typed and b"VMTEST: shell-ready" in output:
            time.sleep(0.5)
            os.write(fd, f"sh /srv/bench/run.sh {args.size_mib}; exit\n".encode())
            typed = True
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace").replace("\r", "")
    results = {}
    files = {}
    for line in text.splitlines():
        m = re.search(r"BENCH (\S+) (\S+) ([0-9.]+)$", line)
        if m:
            if m.group(2) == "files":
                files[m.group(1)] = int(m.group(3))
            else:
                results[(m.group(1), m.group(2))] = float(m.group(3))
        elif "BENCH error" in line:
            die(f"guest setup failed: {line}")
    if "BENCH end" not in text:
        die(f"the guest script did not finish (status {status}); output:\n{text}")
    return results, files, tar_bytes


def startup_command(args, images, work, shares, kernel=None):
    cmd = [args.vmspawn, "--kvm=no", "--tpm=no", "--console=read-only",
           f"--linux={kernel or images + '/vmlinuz'}", f"--initrd={images}/initrd-busybox.cpio.gz",
           "-i", os.path.join(work, "boot.raw")]
    for i in range(shares):
        cmd.append(f"--bind={work}/s{i}:/srv/s{i}")
    cmd.append("test.mode=")
    return cmd


def stub_startup_once(args, user, images, work, shares):
    """Milliseconds from starting vmspawn (through setpriv) to the stub QEMU's exec."""
    env = dict(user_env(work), PATH=os.path.join(work, "stub") + ":/usr/bin:/bin")
    t0 = time.monotonic_ns()
    proc = subprocess.run(as_user(user, startup_command(args, images, work, shares)), env=env,
                          cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=60)
    stamps = [line.split()[1] for line in proc.stdout.decode(errors="replace").splitlines()
              if line.startswith("STUB-EXEC ")]
    if not stamps:
        die(f"the stub QEMU did not run ({proc.returncode}): {proc.stderr.decode()}")
    if os.listdir(os.path.join(work, "tmp")):
        die(f"vmspawn left files behind: {os.listdir(os.path.join(work, 'tmp'))}")
    return (int(stamps[0]) - t0) / 1e6


def boot_once(args, user, images, work, shares):
    """Seconds from starting vmspawn to the guest's "VMTEST: boot" (a real boot)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(as_user(user, startup_command(args, images, work, shares)),
                            env=user_env(work), cwd=work, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    boot = None
    for line in proc.stdout:
        if boot is None and b"VMTEST: boot" in line:
            boot = time.monotonic() - t0
    code = proc.wait(timeout=args.timeout)
    if code != 0 or boot is None:
        die(f"boot with {shares} shares failed ({code}): {proc.stderr.read().decode()}")
    return boot


def measure_startup(args, user, images, work):
    for i in range(4):
        os.makedirs(os.path.join(work, f"s{i}"), exist_ok=True)
    # A tiny GPT image all these VMs boot from (the busybox initrd does not need its
    # contents), so that only the shares differ.
    raw = os.path.join(work, "boot.raw")
    with open(raw, "wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["sfdisk", "--quiet", raw], input=b"label: gpt\nstart=2048, "
                   b"type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709, name=root\n", check=True)
    stub_dir = os.path.join(work, "stub")
    os.makedirs(stub_dir)
    with open(os.path.join(work, "stub.c"), "w") as f:
        f.write(STUB_C)
    subprocess.run(["gcc", "-O2", "-static", "-o", os.path.join(stub_dir, "qemu-system-x86_64"),
                    os.path.join(work, "stub.c")], check=True)
    chown_tree(work, user)
    results = {}
    for shares in (0, 1, 4):
        # The first two runs warm caches.
        stub = [stub_startup_once(args, user, images, work, shares) for _ in range(args.stub_runs + 2)][2:]
        boots = [boot_once(args, user, images, work, shares) for _ in range(args.runs)]
        results[shares] = (statistics.median(stub), min(stub), statistics.median(boots))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--user", default="tester", help="run vmspawn as this user")
    parser.add_argument("--vmspawn", default=os.path.join(ROOT, "target/release/vmspawn"))
    parser.add_argument("--images", help="test images (default $VMSPAWN_TEST_IMAGES or build.sh)")
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3, help="real boots per start-up figure")
    parser.add_argument("--stub-runs", type=int, default=20, help="stub-QEMU runs per start-up figure")
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--verbose", action="store_true", help="show the workload VM's console")
    args = parser.parse_args()
    if os.geteuid() != 0:
        die("run as root (sudo): it runs vmspawn as --user and prepares files for them")
    user = pwd.getpwnam(args.user)
    images = images_dir(args.images)
    if not os.access(args.vmspawn, os.X_OK):
        die(f"no vmspawn at {args.vmspawn} (cargo build --release -p vmspawn)")
    # The user must be able to execute it: copy it to a world-readable place.
    work = f"/var/tmp/vmspawn-bench-virtiofs-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "bin"))
    os.chmod(work, 0o755)
    shutil.copy(args.vmspawn, os.path.join(work, "bin/vmspawn"))
    args.vmspawn = os.path.join(work, "bin/vmspawn")
    try:
        with open("/usr/libexec/virtiofsd", "rb"):
            pass
        version = subprocess.run(["/usr/libexec/virtiofsd", "--version"], stdout=subprocess.PIPE,
                                 text=True).stdout.strip()
    except OSError:
        version = "virtiofsd from $PATH"
    print(f"vmspawn {args.vmspawn}, {version}, guests under TCG, vmspawn as {args.user}")

    wl = os.path.join(work, "workload")
    os.makedirs(os.path.join(wl, "tmp"))
    t = time.monotonic()
    results, files, tar_bytes = run_workload(args, user, images, wl)
    print(f"\nWorkloads (one VM, {time.monotonic() - t:.0f} s): {args.size_mib} MiB sequential, "
          f"untar of {args.files} files ({tar_bytes / (1 << 20):.1f} MiB of data)")
    print(f"{'target':<10} {'seq write':>12} {'seq read':>12} {'untar':>16} {'walk (du -s)':>14} {'rm -rf':>10}")
    for target, label in (("virtiofs", "virtiofs"), ("ext4", "ext4/blk"), ("tmpfs", "tmpfs")):
        def get(name):
            return results.get((target, name))
        w, r, u, walk, rm = (get(n) for n in ("seq-write", "seq-read", "untar", "walk", "rm"))
        n = files.get(target, 0)
        print(f"{label:<10} {args.size_mib / w:>7.1f} MiB/s {args.size_mib / r:>7.1f} MiB/s "
              f"{u:>6.2f} s {n / u:>5.0f}/s {walk:>12.2f} s {rm:>8.2f} s")
        if n != args.files:
            print(f"  warning: {target} extracted {n} files, expected {args.files}")
    print("  virtiofs: the --bind share (host directory on /var/tmp); ext4/blk: ext4 on a raw "
          "--extra-drive image (virtio-blk) in the same host directory; tmpfs: guest RAM.")

    su = os.path.join(work, "startup")
    os.makedirs(os.path.join(su, "tmp"))
    startup = measure_startup(args, user, images, su)
    print(f"\nStart-up with 0, 1 and 4 --bind shares (same disk image, -i):")
    print(f"  to QEMU exec: vmspawn started -> a stub QEMU runs, median (min) of {args.stub_runs} runs")
    print(f"  to boot: vmspawn started -> the real guest prints \"VMTEST: boot\", median of {args.runs} boots")
    base_q, _, base_b = startup[0]
    for shares in (0, 1, 4):
        q, qmin, b = startup[shares]
        extra = "" if shares == 0 else (f"   ({q - base_q:+.1f} ms to QEMU, {b - base_b:+.2f} s to boot)")
        print(f"  {shares} share{'s' if shares != 1 else ' '}: {q:6.1f} ms ({qmin:.1f}) to QEMU exec, "
              f"{b:6.2f} s to boot{extra}")
    print("  Each share: vmspawn binds its socket and starts its virtiofsd (confined) before QEMU; "
          "with any share it also runs `virtiofsd --help` once to learn its options, and QEMU gets "
          "its guest memory as a shared memfd.")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
