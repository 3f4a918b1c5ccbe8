#!/usr/bin/env python3
"""Time from vmspawn's start to the guest's READY=1 over vsock, for the Debian forky test guest
booted from its directory tree (`-D`, through the busybox initrd's switch_root, TCG), and the
same boot without vsock, timed to the same point on the console (the check unit's
`VMTEST: done`, which runs once the default target is reached), as the user `tester`.

vsock here is vhost-device-vsock (this host has no /dev/vhost-vsock); the guest's service
manager sends its notifications over it, so the difference between the two boots is what the
channel costs a boot. The start-up cost of the sidecar itself is printed by bench/startup.py.

Usage: sudo python3 bench/vsock.py [--runs N] [--vmspawn PATH] [--images DIR]
"""

import argparse
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time


def boot(vmspawn, work, images, tree, uid, gid, vsock):
    notify_path = os.path.join(work, "notify.sock")
    if os.path.exists(notify_path):
        os.unlink(notify_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    os.chmod(notify_path, 0o777)
    listener.settimeout(0.2)
    ready = []
    stop = threading.Event()

    def receive(start):
        while not stop.is_set():
            try:
                data = listener.recv(65536)
            except socket.timeout:
                continue
            if b"READY=1" in data and not ready:
                ready.append(time.monotonic() - start)

    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": os.path.join(work, "tmp"),
           "NOTIFY_SOCKET": notify_path, "LANG": "C.UTF-8"}
    cmd = [vmspawn, "--kvm=no", "--tpm=no", f"--vsock={'yes' if vsock else 'no'}", "--console=read-only",
           f"--linux={images}/vmlinuz", f"--initrd={images}/initrd-busybox.cpio.gz", "-D", tree,
           f"--private-users={uid}", "--set-credential=vmtest:bench", "vmtest.nopoweroff"]
    start = time.monotonic()
    thread = threading.Thread(target=receive, args=(start,), daemon=True)
    thread.start()
    proc = subprocess.Popen(cmd, env=env, cwd=work, user=uid, group=gid, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    done = None
    for line in proc.stdout:
        if b"VMTEST: done" in line and done is None:
            done = time.monotonic() - start
            break
    # READY=1 follows the check unit once the last boot job is done.
    deadline = time.monotonic() + (120 if vsock else 0)
    while vsock and not ready and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.terminate()  # the power button: the guest powers off
    try:
        proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    stop.set()
    thread.join()
    listener.close()
    return done, (ready[0] if ready else None)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--vmspawn", default=os.path.join(root, "target/release/vmspawn"))
    parser.add_argument("--images", default=None)
    args = parser.parse_args()
    images = args.images or subprocess.run(["bash", os.path.join(root, "tests/images/build.sh")], check=True,
                                           capture_output=True, text=True).stdout.strip().splitlines()[-1]
    user = pwd.getpwnam("tester")
    with tempfile.TemporaryDirectory(dir="/var/tmp") as work:
        os.chmod(work, 0o755)
        os.mkdir(os.path.join(work, "tmp"))
        vmspawn = os.path.join(work, "vmspawn")
        shutil.copy(args.vmspawn, vmspawn)
        tree = os.path.join(work, "tree")
        os.mkdir(tree)
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-I", "zstd", "-xpf",
                        os.path.join(images, "systemd-tree.tar.zst"), "-C", tree], check=True)
        for stamp in ("etc/.updated", "var/.updated"):
            open(os.path.join(tree, stamp), "w").close()
        subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", work], check=True)
        # One boot first: the first boot of a tree does one-time work (machine ID, keys).
        boot(vmspawn, work, images, tree, user.pw_uid, user.pw_gid, True)
        results = {True: [], False: []}
        for _ in range(args.runs):
            for vsock in (True, False):
                results[vsock].append(boot(vmspawn, work, images, tree, user.pw_uid, user.pw_gid, vsock))
        for vsock in (True, False):
            done = [d for d, _ in results[vsock] if d is not None]
            ready = [r for _, r in results[vsock] if r is not None]
            label = "with vsock (vhost-device-vsock)" if vsock else "without vsock"
            line = f"{label}: start to 'VMTEST: done' median {statistics.median(done):.1f} s" if done else \
                f"{label}: no 'VMTEST: done'"
            if vsock:
                line += (f"; start to READY=1 median {statistics.median(ready):.1f} s" if ready
                         else "; no READY=1 arrived")
            else:
                line += "; no READY=1 without vsock (as in systemd-vmspawn)"
            print(line + f" ({len(results[vsock])} boots, TCG)")


if __name__ == "__main__":
    main()
