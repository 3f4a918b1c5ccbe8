//! `-x/--ephemeral` with a disk image, and 262's console options: the guest writes to its
//! disk, the image on the host stays byte for byte the same, the overlay never has a name
//! (nothing is left behind, `kill -9` of vmspawn included); `--console-transport=serial` puts
//! the console on ttyS0 and `--console=headless` forwards none. All as the unprivileged user.

use std::time::Duration;

use nix::sys::signal::Signal;
use vmspawn_tests::*;

const BOOT: Duration = Duration::from_secs(240);
const PARTUUID: &str = "7d1b8f4e-6c2e-4d3f-8a11-2345678901bc";

/// Every name in the work directory (recursively, relative), to compare before and after.
fn names(work: &Workdir) -> Vec<String> {
    fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                walk(&path, base, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&work.path, &work.path, &mut out);
    out.sort();
    out
}

/// A work directory of the test user with a 16 MiB GPT image `guest.raw` in it.
fn guest_disk(tag: &str) -> (Workdir, std::path::PathBuf) {
    let work = Workdir::new(tag, User::Tester);
    let disk = work.file("guest.raw");
    make_gpt_image(&disk, 16, PARTUUID);
    work.chown_all();
    (work, disk)
}

#[test]
fn ephemeral_image_stays_unchanged_and_serial_console_works() {
    let (work, disk) = guest_disk("ephemeral");
    let before = std::fs::read(&disk).unwrap();
    let listing = names(&work);

    let mut cmd = work.vmspawn();
    cmd.args(busybox_boot(false)).args([
        "-x",
        "-i",
        "guest.raw",
        "--console-transport=serial",
        "-G",
        "32M",
        "test.mode=write=/dev/vda:ephemeral-write,cat=/dev/vda",
    ]);
    let out = run(cmd, BOOT);
    out.assert_success();
    let lines = out.vmtest();
    // The guest wrote to its disk and read its write back (from the overlay)...
    assert!(out.has("write-ok /dev/vda"), "{lines:?}");
    assert!(out.has("cat /dev/vda=ephemeral-write"), "{lines:?}");
    // ... of 32 MiB (the overlay's virtual size; the image is 16 MiB).
    assert!(
        lines.iter().any(|l| l.starts_with("disk vda size=65536 ")),
        "{lines:?}"
    );
    // The console is the serial port (there is no virtio console for hvc0).
    let cmdline = lines.iter().find(|l| l.starts_with("cmdline=")).unwrap();
    assert!(cmdline.starts_with("cmdline=console=ttyS0 "), "{cmdline}");
    // A random suffix on the machine name.
    let banner = out
        .stderr
        .lines()
        .find(|l| l.contains("Spawning VM guest-"))
        .unwrap_or_else(|| panic!("no banner in {}", out.stderr));
    let suffix = banner.split("Spawning VM guest-").nth(1).unwrap();
    assert!(
        suffix.len() > 16 && suffix[..16].bytes().all(|b| b.is_ascii_hexdigit()),
        "{banner}"
    );
    // The image is untouched (not even grown), no TPM state was kept next to it, and nothing
    // is left behind.
    assert!(
        std::fs::read(&disk).unwrap() == before,
        "the image was changed"
    );
    assert_eq!(names(&work), listing);
    work.assert_no_leftovers();
}

#[test]
fn no_overlay_left_after_kill_9_of_vmspawn() {
    let (work, disk) = guest_disk("ephemeral-kill");
    let before = std::fs::read(&disk).unwrap();
    let listing = names(&work);

    let mut cmd = work.vmspawn();
    cmd.args(busybox_boot(false)).args([
        "-x",
        "-i",
        "guest.raw",
        "--tpm=no",
        "test.mode=write=/dev/vda:before-kill,sleep=600",
    ]);
    let mut vm = Background::start(cmd);
    vm.wait_for_line("write-ok /dev/vda", BOOT);
    let vmspawn = vm.child.id();
    let qemu = child_named(vmspawn, QEMU_COMM).expect("QEMU runs");
    // QEMU holds the overlay: an unnamed file next to the image.
    let overlay: Vec<String> = std::fs::read_dir(format!("/proc/{qemu}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.display().to_string())
        .filter(|t| {
            t.starts_with(&format!("{}/#", work.path.display())) && t.ends_with("(deleted)")
        })
        .collect();
    // (The two fds of its fd set, and the ones the block layer opened from them.)
    assert!(overlay.len() >= 2, "QEMU's overlay fds: {overlay:?}");
    vm.signal(Signal::SIGKILL);
    assert!(
        wait_process_exit(qemu, Duration::from_secs(30)),
        "QEMU outlived vmspawn"
    );
    let _ = vm.finish(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        std::fs::read(&disk).unwrap() == before,
        "the image was changed"
    );
    assert_eq!(
        names(&work),
        listing,
        "something was left next to the image"
    );
    work.assert_no_leftovers();
}

#[test]
fn headless_console_forwards_nothing() {
    let (work, disk) = guest_disk("console-headless");
    let mut cmd = work.vmspawn();
    cmd.args(busybox_boot(false)).args([
        "-i",
        "guest.raw",
        "--tpm=no",
        "--console=headless",
        "test.mode=write=/dev/vda:headless-ran",
    ]);
    let out = run(cmd, BOOT);
    out.assert_success();
    // Nothing of the guest's console reached vmspawn's output...
    assert!(!out.stdout.contains("VMTEST"), "stdout: {}", out.stdout);
    assert!(!out.stderr.contains("VMTEST"), "stderr: {}", out.stderr);
    // ... but the guest ran its test modes: it wrote to its disk, and powered off.
    let head = std::fs::read(&disk).unwrap();
    assert!(head.starts_with(b"headless-ran\n"), "{:?}", &head[..16]);
    work.assert_no_leftovers();
}
