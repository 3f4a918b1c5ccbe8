#!/usr/bin/env python3
"""Measures the launcher's own cost: wall time from starting vmspawn to QEMU being executed,
and the launcher's peak RSS.

A stub `qemu-system-x86_64` placed first in $PATH prints CLOCK_MONOTONIC the moment it runs and
exits at once, so vmspawn does everything it does for a real boot (parse the command line, find
the firmware, read the image's partition table, create its runtime directory and files, copy the
UEFI variable store, build and apply the Landlock rulesets and seccomp filters, start "QEMU")
and nothing else is measured. It runs confined, as QEMU would, so it reports through the console.
Also measured: the same with VMSPAWN_UNCONFINED=1, to give the cost of confinement. These runs
use --tpm=no, so they are the launcher's own cost.

Then, when swtpm is installed, what the default virtual TPM adds before QEMU can start
(discovering swtpm, swtpm_setup, starting swtpm and waiting until it answers on its control
socket): with the default persistent state next to the image (created by the first run, reused
after), and with --tpm-state=off (a fresh transient state every run). And, when
vhost-device-vsock is installed, what vsock over it adds (starting it and waiting until its
vhost-user socket accepts a connection), what the ephemeral SSH key adds on top (the confined
ssh-keygen run), and what --forward-journal= adds (starting systemd-journal-remote).

Usage: python3 bench/startup.py [--runs N] [--vmspawn PATH]
Targets: median < 10 ms, peak RSS <= 8 MiB, confinement < 2 ms.
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
#include <time.h>
/* Stands in for QEMU: prints CLOCK_MONOTONIC at the moment it runs, on its stdout, which is the
 * console vmspawn forwards (under confinement it may not write anywhere else). */
int main(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    printf("STUB-EXEC %lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    return 0;
}
"""

# Starts vmspawn from a tiny static process and reports the peak RSS of vmspawn (and of the stub
# it reaps). A fork from Python would count the Python interpreter's pages as vmspawn's.
MEASURE_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    pid_t pid = fork();
    if (pid == 0) { execv(argv[2], argv + 2); _exit(127); }
    int status; struct rusage ru;
    wait4(pid, &status, 0, &ru);
    FILE *f = fopen(argv[1], "w");
    fprintf(f, "%lld %ld %d\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, ru.ru_maxrss,
            WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    fclose(f);
    return 0;
}
"""


def measure(measure_bin, cmd, env, work, runs):
    result_file = os.path.join(work, "result")
    tmp = env["TMPDIR"]
    times, rss = [], []
    for _ in range(runs + 2):
        proc = subprocess.run([measure_bin, result_file] + cmd, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
        with open(result_file) as f:
            t0, maxrss_kib, code = (int(x) for x in f.read().split())
        if code != 0:
            raise SystemExit(f"vmspawn failed with {code}: {proc.stderr.decode()}")
        stamps = [line.split()[1] for line in proc.stdout.decode().splitlines() if line.startswith("STUB-EXEC ")]
        if not stamps:
            raise SystemExit(f"the stub QEMU did not run: {proc.stdout.decode()} {proc.stderr.decode()}")
        times.append((int(stamps[0]) - t0) / 1e6)
        rss.append(maxrss_kib / 1024)
        if os.listdir(tmp):
            raise SystemExit(f"vmspawn left files behind: {os.listdir(tmp)}")
    return sorted(times[2:]), rss[2:]  # the first two runs warm caches


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
        tmp = os.path.join(work, "tmp")
        os.mkdir(tmp)
        measure_bin = os.path.join(work, "measure")
        with open(os.path.join(work, "measure.c"), "w") as f:
            f.write(MEASURE_C)
        subprocess.run(["gcc", "-O2", "-static", "-o", measure_bin, os.path.join(work, "measure.c")], check=True)
        env = {"PATH": bindir + ":/usr/bin:/bin", "HOME": work, "TMPDIR": tmp}
        base = [args.vmspawn, "--kvm=no", "-q", "--console=read-only", "-i", image, "--linux", kernel,
                "--set-credential=a:b", "-s", "x=y"]
        # The launcher's own cost: no sidecars (the TPM and vsock cases below add them).
        base_no_vsock = base + ["--vsock=no"]
        cmd = base_no_vsock + ["--tpm=no", "quiet"]
        confined_times, confined_rss = measure(measure_bin, cmd, env, work, args.runs)
        unconfined_times, _ = measure(measure_bin, cmd, dict(env, VMSPAWN_UNCONFINED="1"), work, args.runs)

        def summary(times):
            p90 = times[int(len(times) * 0.9) - 1]
            return f"median {statistics.median(times):.2f} ms, min {times[0]:.2f} ms, p90 {p90:.2f} ms"

        print(f"vmspawn start-up to QEMU exec, confined, over {len(confined_times)} runs: "
              f"{summary(confined_times)} (target < 10 ms)")
        print(f"vmspawn start-up to QEMU exec, VMSPAWN_UNCONFINED=1: {summary(unconfined_times)}")
        cost = statistics.median(confined_times) - statistics.median(unconfined_times)
        print(f"confinement cost (Landlock rulesets + seccomp filters), difference of medians: {cost:.2f} ms (target < 2 ms)")
        print(f"vmspawn peak RSS: max {max(confined_rss):.2f} MiB, median {statistics.median(confined_rss):.2f} MiB "
              f"(target <= 8 MiB)")

        if shutil.which("swtpm") and shutil.which("swtpm_setup"):
            tpm_times, _ = measure(measure_bin, base_no_vsock + ["--tpm=yes", "quiet"], env, work, args.runs)
            off_times, _ = measure(measure_bin, base_no_vsock + ["--tpm=yes", "--tpm-state=off", "quiet"], env, work,
                                   args.runs)
            own = statistics.median(confined_times)
            print(f"with the default TPM (state next to the image exists): start-up to QEMU exec "
                  f"{summary(tpm_times)}; the TPM adds {statistics.median(tpm_times) - own:.2f} ms")
            print(f"with --tpm-state=off (a new state each run, as a first boot creates it): {summary(off_times)}; "
                  f"the TPM adds {statistics.median(off_times) - own:.2f} ms")
        else:
            print("swtpm is not installed: no TPM figures (apt install swtpm swtpm-tools)")

        vhost_user = shutil.which("vhost-device-vsock")
        if vhost_user:
            vsock_env = dict(env, PATH=env["PATH"] + ":" + os.path.dirname(vhost_user))
            vsock = base + ["--tpm=no", "--vsock=yes"]
            vsock_times, _ = measure(measure_bin, vsock + ["--pass-ssh-key=no", "quiet"], vsock_env, work,
                                     args.runs)
            print(f"with vsock over vhost-device-vsock (no /dev/vhost-vsock), --pass-ssh-key=no: start-up to QEMU "
                  f"exec {summary(vsock_times)}; the sidecar adds "
                  f"{statistics.median(vsock_times) - statistics.median(confined_times):.2f} ms")
            if shutil.which("ssh-keygen"):
                ssh_times, _ = measure(measure_bin, vsock + ["quiet"], vsock_env, work, args.runs)
                print(f"with vsock and the default --pass-ssh-key=yes: {summary(ssh_times)}; ssh-keygen adds "
                      f"{statistics.median(ssh_times) - statistics.median(vsock_times):.2f} ms")
            journal_remote = "/usr/lib/systemd/systemd-journal-remote"
            if os.access(journal_remote, os.X_OK):
                journal = os.path.join(work, "journal")
                journal_times, _ = measure(
                    measure_bin, vsock + ["--pass-ssh-key=no", f"--forward-journal={journal}", "quiet"],
                    vsock_env, work, args.runs)
                print(f"with vsock and --forward-journal=DIR: {summary(journal_times)}; systemd-journal-remote adds "
                      f"{statistics.median(journal_times) - statistics.median(vsock_times):.2f} ms")
        else:
            print("vhost-device-vsock is not installed: no vsock figures (cargo install vhost-device-vsock)")


if __name__ == "__main__":
    main()
