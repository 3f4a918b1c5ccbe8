#!/usr/bin/env python3
"""Measures what firmware costs a direct kernel boot: the busybox test guest (the kernel and
initrd in $VMSPAWN_TEST_IMAGES, TCG, 2 CPUs) from starting the command to the guest's power-off,

  - vmspawn --firmware=auto (the default: a --linux= kernel that is not a UKI boots without
    firmware, QEMU's own loader starts it),
  - vmspawn --firmware=uefi (259's way: OVMF from pflash, a fresh copy of the variable store),
  - plain QEMU with vmspawn's own arguments for the auto boot (taken from the "Executing:" line
    vmspawn logs with SYSTEMD_LOG_LEVEL=debug), minus what is vmspawn's wrapping: the QMP
    monitor socket it passes and QEMU's -sandbox.

The three are run alternately (auto, uefi, plain; N rounds), after one warm-up round, and the
medians and their ratios are printed next to the targets. The guest gets --vsock=no --tpm=no
--pass-ssh-key=no --register=no, so no sidecar is measured, and an empty raw disk with root=
on the command line (the busybox init does not mount it).

Usage: python3 bench/firmware.py [--runs N] [--vmspawn PATH] [--images DIR]
Targets: auto <= 0.6 x uefi, auto <= 1.1 x plain QEMU.
"""

import argparse
import os
import shlex
import statistics
import subprocess
import tempfile
import time


def boot(cmd, env, timeout=300):
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)
    elapsed = time.monotonic() - start
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0 or "VMTEST: done" not in out:
        raise SystemExit(f"boot failed ({proc.returncode}): {' '.join(cmd)}\n"
                         f"{proc.stderr.decode(errors='replace')}\n{out[-2000:]}")
    return elapsed, proc.stderr.decode(errors="replace")


def plain_qemu_argv(stderr):
    line = next(l for l in stderr.splitlines() if l.startswith("Executing: "))
    words = shlex.split(line[len("Executing: "):])
    argv, skip = [], False
    for i, word in enumerate(words):
        if skip:
            skip = False
            continue
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if word == "-sandbox" or (word == "-chardev" and "vmspawn-qmp" in nxt) or \
                (word == "-mon" and "vmspawn-qmp" in nxt):
            skip = True
            continue
        argv.append(word)
    return argv


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--vmspawn", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "vmspawn"))
    parser.add_argument("--images", default=os.environ.get("VMSPAWN_TEST_IMAGES"))
    args = parser.parse_args()
    if not args.images:
        raise SystemExit("set $VMSPAWN_TEST_IMAGES (or --images) to the built test guests")

    work = tempfile.mkdtemp(prefix="vmspawn-bench-fw-")
    disk = os.path.join(work, "empty.raw")
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TERM")}
    env["TMPDIR"] = work
    env["XDG_RUNTIME_DIR"] = work
    common = [args.vmspawn, "--kvm=no", "--cpus=2", "--vsock=no", "--tpm=no",
              "--pass-ssh-key=no", "--register=no", "-q", "-i", disk,
              f"--linux={os.path.join(args.images, 'vmlinuz')}",
              f"--initrd={os.path.join(args.images, 'initrd-busybox.cpio.gz')}"]
    tail = ["root=/dev/vda", "test.mode="]
    auto_cmd = common + tail
    uefi_cmd = common + ["--firmware=uefi", "--efi-nvram-state=off"] + tail

    debug_env = dict(env, SYSTEMD_LOG_LEVEL="debug")
    _, stderr = boot(auto_cmd, debug_env)  # warm-up, and the argv for plain QEMU
    plain_cmd = plain_qemu_argv(stderr)
    boot(uefi_cmd, env)
    boot(plain_cmd, env)

    times = {"auto": [], "uefi": [], "plain": []}
    for _ in range(args.runs):
        times["auto"].append(boot(auto_cmd, env)[0])
        times["uefi"].append(boot(uefi_cmd, env)[0])
        times["plain"].append(boot(plain_cmd, env)[0])

    med = {k: statistics.median(v) for k, v in times.items()}
    load = open("/proc/loadavg").read().split()[:3]
    print(f"busybox guest, TCG, 2 CPUs, boot to power-off, median of {args.runs} "
          f"(load average {' '.join(load)} at the end):")
    for name, label in [("auto", "vmspawn --firmware=auto (no firmware)"),
                        ("uefi", "vmspawn --firmware=uefi (OVMF)"),
                        ("plain", "plain QEMU, same arguments")]:
        runs = " ".join(f"{t:.2f}" for t in times[name])
        print(f"  {label:40s} {med[name]:6.2f} s   (runs: {runs})")
    ratio_uefi = med["auto"] / med["uefi"]
    ratio_plain = med["auto"] / med["plain"]
    print(f"  auto / uefi  = {ratio_uefi:.2f}   target <= 0.60   "
          f"{'met' if ratio_uefi <= 0.6 else 'MISSED'}")
    print(f"  auto / plain = {ratio_plain:.2f}   target <= 1.10   "
          f"{'met' if ratio_plain <= 1.1 else 'MISSED'}")
    print(f"  plain QEMU argv: {shlex.join(plain_cmd)}")
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
