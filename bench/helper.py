#!/usr/bin/env python3
"""Round-trip cost of vmspawn-privhelper.

Service mode: the helper listens in a private network namespace; one client sends Hello, then
N CreateTap requests (each TAP is closed right after, so it vanishes) and N OpenKvm requests;
median and p99 per request. Setuid mode: a setuid copy of the helper is started over a
socketpair for every request (exec included), as the launcher does, by the user 'tester'
(tests/setup-host.sh creates it). Also prints the helper's peak RSS. Must run as root (it
creates a network namespace, a policy and a setuid binary).

Usage: python3 bench/helper.py [--requests N] [--helper PATH]
Targets: service-mode median < 1 ms, helper peak RSS <= 4 MiB.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import tempfile
import time

HELLO = struct.pack("<IIB", 0, 1, 0)  # Hello { version: 1, interactive_auth: false }
OPEN_KVM = struct.pack("<I", 2)


# Runs as the test user: N times, a socketpair, the setuid helper on it, Hello and OpenKvm;
# prints the wall times in ms as JSON.
SETUID_LOOP = r"""
import json, os, socket, struct, subprocess, sys, time
helper, n = sys.argv[1], int(sys.argv[2])
def round_trip(sock, frame):
    sock.send(frame)
    _, fds, _, _ = socket.recv_fds(sock, 4096, 4)
    for fd in fds:
        os.close(fd)
times = []
for _ in range(n):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    t0 = time.perf_counter_ns()
    child = subprocess.Popen([helper, "--serve-fd", str(theirs.fileno())], pass_fds=[theirs.fileno()])
    theirs.close()
    round_trip(ours, struct.pack("<IIB", 0, 1, 0))
    round_trip(ours, struct.pack("<I", 2))
    times.append((time.perf_counter_ns() - t0) / 1e6)
    ours.close()
    child.wait()
print(json.dumps(times))
"""


def create_tap(machine):
    name = machine.encode()
    return struct.pack("<IQ", 1, len(name)) + name + b"\0"


def round_trip(sock, frame):
    t0 = time.perf_counter_ns()
    sock.send(frame)
    data, fds, _, _ = socket.recv_fds(sock, 4096, 4)
    elapsed = time.perf_counter_ns() - t0
    for fd in fds:
        os.close(fd)
    variant = struct.unpack_from("<I", data)[0]
    if variant == 5:
        raise SystemExit(f"helper refused: {data[8:]!r}")
    return elapsed / 1e6


def summary(name, times):
    times = sorted(times)
    p99 = times[max(0, int(len(times) * 0.99) - 1)]
    print(f"{name}: median {statistics.median(times):.3f} ms, p99 {p99:.3f} ms over {len(times)} requests")


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--helper", default=os.path.join(root, "target/release/vmspawn-privhelper"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    netns = f"vmspawn-bench-{os.getpid()}"
    work = tempfile.mkdtemp(prefix="vmspawn-bench-", dir="/run")
    os.chmod(work, 0o755)
    policy = os.path.join(work, "policy.toml")
    with open(policy, "w") as f:
        f.write('[limits]\nmax-taps-per-user = 256\n[[allow]]\nusers = ["root", "tester"]\n'
                'operations = ["create-tap", "open-kvm"]\nmax-taps = 256\npolkit = "no"\n')
    sock_path = os.path.join(work, "privhelper.socket")
    subprocess.run(["ip", "netns", "add", netns], check=True)
    helper = None
    try:
        helper = subprocess.Popen(["ip", "netns", "exec", netns, args.helper, "--listen", sock_path, "--policy", policy])
        while not os.path.exists(sock_path):
            time.sleep(0.01)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        client.connect(sock_path)
        round_trip(client, HELLO)
        taps = [round_trip(client, create_tap(f"bench-{i}")) for i in range(args.requests)]
        kvm = [round_trip(client, OPEN_KVM) for _ in range(args.requests)]
        client.close()
        with open(f"/proc/{helper.pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        hwm = status["VmHWM"].split()[0]
        summary("service mode, CreateTap (TAP created, owned, up)", taps)
        summary("service mode, OpenKvm", kvm)
        print(f"helper peak RSS (service mode): {int(hwm) / 1024:.2f} MiB (target <= 4 MiB); "
              f"now {status['RssAnon'].strip()} anonymous, {status['RssFile'].strip()} of files "
              f"(the binary, the C library, NSS modules), {status['Threads'].strip()} threads")

        # Setuid mode: a fresh helper per request, exec included.
        suid = os.path.join(work, "vmspawn-privhelper")
        shutil.copy(args.helper, suid)
        os.chmod(suid, 0o4755)
        os.makedirs("/etc/vmspawn", exist_ok=True)
        saved = open("/etc/vmspawn/policy.toml").read() if os.path.exists("/etc/vmspawn/policy.toml") else None
        shutil.copy(policy, "/etc/vmspawn/policy.toml")
        try:
            # As the unprivileged test user, like a launcher would start it: the helper checks
            # that its serve fd's peer is its parent running as its real uid, so the loop runs
            # in a process of the test user that makes the socketpair itself.
            loop = subprocess.run(
                ["/usr/bin/python3", "-c", SETUID_LOOP, suid, str(min(args.requests, 200))],
                user="tester", group="tester", extra_groups=[], check=True,
                stdout=subprocess.PIPE, text=True)
            times = json.loads(loop.stdout)
            summary("setuid mode, exec + Hello + OpenKvm", times)
        finally:
            if saved is None:
                os.remove("/etc/vmspawn/policy.toml")
            else:
                open("/etc/vmspawn/policy.toml", "w").write(saved)
    finally:
        if helper:
            helper.kill()
            helper.wait()
        subprocess.run(["ip", "netns", "del", netns])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
