//! `-x/--ephemeral` and 262's console options. With a disk image: the guest writes to its
//! disk, the image on the host stays byte for byte the same, the overlay never has a name
//! (nothing is left behind, `kill -9` of vmspawn included). With a directory: the guest boots
//! a copy next to the tree (virtiofsd serves only the copy), deletes, writes and re-links in
//! it, the tree stays the same (listing, modes, owners, times, contents), and the copy is gone
//! after a power-off and after a `kill -9` of vmspawn. `--console-transport=serial` puts the
//! console on ttyS0 and `--console=headless` forwards none. All as the unprivileged user.

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

// --- --ephemeral with a directory root ----------------------------------------------------

/// Every entry under `dir` (not following symlinks): its relative path, type, mode, owner,
/// modification time and contents (or link target), sorted.
fn tree_state(dir: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let what = if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                todo.push(entry.unwrap().path());
            }
            "dir".to_string()
        } else if meta.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(&path).unwrap().display())
        } else {
            format!("{:?}", std::fs::read(&path).unwrap())
        };
        out.push(format!(
            "{} mode={:o} uid={} gid={} ino-links={} mtime={}.{} {what}",
            path.strip_prefix(dir).unwrap().display(),
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.nlink(),
            meta.mtime(),
            meta.mtime_nsec()
        ));
    }
    out.sort();
    out
}

/// A root tree of the test user for a busybox boot that stays in the initrd: files, a
/// subdirectory, a symlink, a hard link, a file of mode 0640, a directory nobody may write,
/// and a directory and a file of mode 0000 (as distribution trees have; the user may only
/// copy them in a user namespace of their own).
fn ephemeral_tree(work: &Workdir) -> std::path::PathBuf {
    let tree = work.file("tree");
    std::fs::create_dir_all(tree.join("sub/deep")).unwrap();
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::create_dir_all(tree.join("ro")).unwrap();
    std::fs::write(tree.join("five"), "5\n").unwrap();
    std::fs::write(tree.join("sub/deep/file"), vec![b'x'; 200_000]).unwrap();
    std::fs::write(tree.join("etc/hostname"), "original\n").unwrap();
    std::fs::write(tree.join("ro/x"), "x\n").unwrap();
    std::fs::write(tree.join("ro/y"), "y\n").unwrap();
    std::fs::create_dir_all(tree.join("locked")).unwrap();
    std::fs::write(tree.join("locked/inner"), "inner\n").unwrap();
    std::fs::write(tree.join("secret"), "secret\n").unwrap();
    std::os::unix::fs::symlink("five", tree.join("link")).unwrap();
    std::fs::hard_link(tree.join("five"), tree.join("hard")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str, m: u32| {
        std::fs::set_permissions(tree.join(p), std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode("etc/hostname", 0o640);
    work.chown_all();
    mode("ro", 0o555);
    mode("locked", 0);
    mode("secret", 0);
    tree
}

/// The `--ephemeral` copies next to the tree (`.#machine.tree<16 hex digits>`).
fn copies(work: &Workdir) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(&work.path)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".#machine.tree"))
        })
        .collect()
}

#[test]
fn ephemeral_directory_boots_a_copy_and_the_tree_stays_unchanged() {
    let work = Workdir::new("ephemeral-dir", User::Tester);
    let tree = ephemeral_tree(&work);
    let before = tree_state(&tree);
    let listing = names(&work);

    let mut cmd = work.vmspawn();
    cmd.env("TERM", "dumb").args(busybox_boot(false)).args([
        "-x",
        "--tpm=no",
        "-D",
        "tree",
        "test.mode=shell",
    ]);
    let mut session = PtySession::start(cmd);
    session.expect("VMTEST: shell-ready", BOOT);
    // The copy exists next to the tree, and the one virtiofsd serves it, not the tree.
    let copy = copies(&work);
    assert_eq!(copy.len(), 1, "{copy:?}");
    let copy = copy[0].clone();
    let name = copy.file_name().unwrap().to_string_lossy().into_owned();
    let hex = name.strip_prefix(".#machine.tree").unwrap();
    assert!(
        hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
    assert_eq!(tree_state(&copy), before, "the copy differs from the tree");
    let virtiofsd = child_named(session.child.id(), VIRTIOFSD_COMM).expect("virtiofsd runs");
    let args = cmdline_of(virtiofsd);
    let shared = args
        .iter()
        .position(|a| a == "--shared-dir")
        .map(|i| args[i + 1].clone());
    assert_eq!(shared.as_deref(), copy.to_str(), "{args:?}");
    // A random suffix on the machine name.
    let output = session.output();
    assert!(
        output.contains("Spawning VM tree-") && output.contains(&format!("on {}.", tree.display())),
        "{output}"
    );

    // The guest deletes, writes, creates, changes modes and links in its root.
    session.settle(Duration::from_millis(500));
    session.type_bytes(
        b"cd /newroot && rm five && rm -r sub && echo guest >etc/hostname && echo new >new && \
          mkdir made && chmod 700 etc && chmod u+w ro && rm ro/x && chmod 500 ro && ln -s new newlink && \
          echo marker-$(cat hard)-$(ls | wc -l)\r",
    );
    session.expect("marker-5-9", Duration::from_secs(60));
    // The guest's changes are in the copy, none in the tree.
    assert!(copy.join("new").exists() && !copy.join("five").exists());
    assert_eq!(
        std::fs::read_to_string(copy.join("etc/hostname")).unwrap(),
        "guest\n"
    );
    assert_eq!(
        tree_state(&tree),
        before,
        "the tree changed while the VM ran"
    );
    // Out of the shell: the initrd powers off.
    session.type_bytes(b"exit\r");
    let status = session.finish(BOOT);
    assert_eq!(status.code(), Some(0), "output:\n{}", session.output());

    // The tree is as it was, the copy is gone (its unwritable directory too), nothing is left.
    assert_eq!(tree_state(&tree), before, "the tree was changed");
    assert_eq!(names(&work), listing, "left next to the tree");
    assert!(!copy.exists());
    work.assert_no_leftovers();
}

#[test]
fn no_directory_copy_left_after_kill_9_of_vmspawn() {
    let work = Workdir::new("ephemeral-dir-kill", User::Tester);
    let tree = ephemeral_tree(&work);
    let before = tree_state(&tree);
    let listing = names(&work);

    let mut cmd = work.vmspawn();
    cmd.args(busybox_boot(false)).args([
        "-x",
        "--tpm=no",
        "--console=read-only",
        "-D",
        "tree",
        "test.mode=write=/newroot/five:before-kill,sleep=600",
    ]);
    let mut vm = Background::start(cmd);
    vm.wait_for_line("write-ok /newroot/five", BOOT);
    let copy = copies(&work);
    assert_eq!(copy.len(), 1, "{copy:?}");
    assert_eq!(
        std::fs::read_to_string(copy[0].join("five")).unwrap(),
        "before-kill\n"
    );
    let vmspawn = vm.child.id();
    let children = children_of(vmspawn);
    vm.signal(Signal::SIGKILL);
    let _ = vm.finish(Duration::from_secs(30));
    // QEMU, virtiofsd and the cleanup process end; the cleanup process removes the copy.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (copy[0].exists() || children.iter().any(|&p| process_exists(p)))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let alive: Vec<_> = children
        .iter()
        .filter(|&&p| process_exists(p))
        .map(|&p| (p, comm(p)))
        .collect();
    assert!(alive.is_empty(), "outlived vmspawn: {alive:?}");
    assert!(!copy[0].exists(), "the copy is left: {}", copy[0].display());
    assert_eq!(tree_state(&tree), before, "the tree was changed");
    assert_eq!(names(&work), listing, "left next to the tree");
    work.assert_no_leftovers();
}
