#!/usr/bin/env python3
"""Measures the launcher's own cost: wall time from starting vmspawn to QEMU being executed,
and the launcher's peak RSS.

A stub `qemu-system-x86_64` placed first in $PATH records CLOCK_MONOTONIC the moment it runs,
and vmspawn's peak RSS so far (VmHWM of its parent; the rusage of a child would count the
forking Python process's pages), then exits at once, so vmspawn does everything it does for a real boot (parse the command line,
find the firmware, read the image's partition table, create its runtime directory and files,
copy the UEFI variable store, start "QEMU") and nothing else is measured.

Usage: python3 bench/startup.py [--runs N] [--vmspawn PATH]
Targets: median < 10 ms, peak RSS <= 8 MiB.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

STUB_C = r"""
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <stdlib.h>
#include <unistd.h>
int main(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* vmspawn's peak RSS so far (VmHWM): everything it did to set up the VM. */
    char path[64], line[256];
    long hwm = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)getppid());
    FILE *status = fopen(path, "r");
    while (status && fgets(line, sizeof line, status))
        if (strncmp(line, "VmHWM:", 6) == 0)
            hwm = atol(line + 6);
    if (status) fclose(status);
    const char *out = getenv("STUB_TIMESTAMP_FILE");
    FILE *f = out ? fopen(out, "w") : NULL;
    if (f) { fprintf(f, "%lld %ld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, hwm); fclose(f); }
    return 0;
}
"""


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--vmspawn", default=os.path.join(root, "target/release/vmspawn"))
    args = parser.parse_args()
    if not os.path.exists(args.vmspawn):
        raise SystemExit(f"{args.vmspawn} not found: build it with 'cargo build --release -p vmspawn'")

    with tempfile.TemporaryDirectory() as work:
        bindir = os.path.join(work, "bin")
        os.mkdir(bindir)
        stub = os.path.join(bindir, "qemu-system-x86_64")
        src = os.path.join(work, "stub.c")
        with open(src, "w") as f:
            f.write(STUB_C)
        subprocess.run(["gcc", "-O2", "-static", "-o", stub, src], check=True)
        image = os.path.join(work, "guest.raw")
        with open(image, "wb") as f:
            f.truncate(64 << 20)
        subprocess.run(["sfdisk", "--quiet", image], check=True, input=b"label: gpt\nstart=2048, type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709\n", stdout=subprocess.DEVNULL)
        kernel = os.path.join(work, "vmlinuz")
        with open(kernel, "wb") as f:
            f.write(b"\0" * 4096)
        stamp = os.path.join(work, "stamp")
        tmp = os.path.join(work, "tmp")
        os.mkdir(tmp)
        env = {
            "PATH": bindir + ":/usr/bin:/bin",
            "HOME": work,
            "TMPDIR": tmp,
            "STUB_TIMESTAMP_FILE": stamp,
        }
        cmd = [args.vmspawn, "--kvm=no", "-q", "--console=read-only", "-i", image, "--linux", kernel,
               "--set-credential=a:b", "-s", "x=y", "quiet"]
        times = []
        rss = []
        for _ in range(args.runs + 2):
            t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            proc.wait()
            if proc.returncode != 0:
                raise SystemExit(f"vmspawn failed with {proc.returncode}: {' '.join(cmd)}")
            with open(stamp) as f:
                t1, hwm_kib = (int(x) for x in f.read().split())
            times.append((t1 - t0) / 1e6)
            rss.append(hwm_kib / 1024)
            if os.listdir(tmp):
                raise SystemExit(f"vmspawn left files behind: {os.listdir(tmp)}")
        times = times[2:]  # warm-up runs
        rss = rss[2:]
        times.sort()
        p90 = times[int(len(times) * 0.9) - 1]
        print(f"vmspawn start-up to QEMU exec over {len(times)} runs: median {statistics.median(times):.2f} ms, "
              f"min {times[0]:.2f} ms, p90 {p90:.2f} ms (target < 10 ms)")
        print(f"vmspawn peak RSS: max {max(rss):.2f} MiB, median {statistics.median(rss):.2f} MiB (target <= 8 MiB)")


if __name__ == "__main__":
    main()
