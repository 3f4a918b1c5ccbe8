//! Bad input: a clear error, exit status 1, and nothing left behind. All run as the
//! unprivileged test user.

use std::time::Duration;

use vmspawn_tests::*;

/// The cases of one test: each runs, and every failure is collected, so that the first one
/// does not hide the others; `finish` reports them all.
struct Cases<'a> {
    work: &'a Workdir,
    ran: usize,
    failures: Vec<String>,
}

impl<'a> Cases<'a> {
    fn new(work: &'a Workdir) -> Cases<'a> {
        Cases {
            work,
            ran: 0,
            failures: Vec::new(),
        }
    }

    /// vmspawn with `args` and `env` must exit with status 1, print `message` on stderr and
    /// leave nothing in $TMPDIR.
    fn fails(&mut self, args: &[&str], env: &[(&str, &str)], message: &str) {
        self.ran += 1;
        let mut cmd = self.work.vmspawn();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = run(cmd, Duration::from_secs(60));
        let mut problems = Vec::new();
        if out.code() != Some(1) {
            problems.push(format!("exit status {:?}, expected 1", out.code()));
        }
        if !out.stderr.contains(message) {
            problems.push(format!("expected '{message}' on stderr"));
        }
        let left: Vec<_> = std::fs::read_dir(self.work.tmp())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        if !left.is_empty() {
            problems.push(format!("left behind in $TMPDIR: {left:?}"));
            // So that the next case starts clean.
            for path in &left {
                let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
            }
        }
        if !problems.is_empty() {
            self.failures.push(format!(
                "{args:?} {env:?}: {}\n    stderr: {}",
                problems.join("; "),
                out.stderr.trim_end().replace('\n', "\n    ")
            ));
        }
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} cases failed:\n{}",
            self.failures.len(),
            self.ran,
            self.failures.join("\n")
        );
    }
}

/// A directory on tmpfs (/dev/shm) with a copy of the test's guest image, owned by the test
/// user.
fn tempfile_in_shm(work: &Workdir) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(format!("/dev/shm/vmspawn-it-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(work.file("guest.raw"), dir.join("guest.raw")).unwrap();
    let (uid, gid) = tester_ids();
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    std::os::unix::fs::chown(dir.join("guest.raw"), Some(uid), Some(gid)).unwrap();
    dir
}

#[test]
fn bad_input_gives_clear_errors_and_leaves_nothing() {
    let work = Workdir::new("errors", User::Tester);
    make_gpt_image(
        &work.file("guest.raw"),
        8,
        "33333333-2222-4333-8444-555555555555",
    );
    work.write("blank.raw", &vec![0u8; 1 << 20]);
    // A FIFO must be refused, not block vmspawn while it opens it.
    assert!(
        std::process::Command::new("mkfifo")
            .arg(work.file("pipe.raw"))
            .status()
            .unwrap()
            .success()
    );
    work.chown_all();
    let kernel = format!("--linux={}", image("vmlinuz").display());
    let initrd = format!("--initrd={}", image("initrd-busybox.cpio.gz").display());
    let mut cases = Cases::new(&work);
    let missing_image = format!(
        "Failed to open image '{}': No such file or directory",
        work.file("missing.raw").display()
    );

    cases.fails(&["--kvm=no", "-i", "missing.raw"], &[], &missing_image);
    cases.fails(
        &["-i", "guest.raw", &initrd],
        &[],
        "Option --initrd= cannot be used without --linux=.",
    );
    cases.fails(
        &["-i", "guest.raw", "--ram=12X"],
        &[],
        "Failed to parse --ram=12X",
    );
    cases.fails(
        &["-i", "guest.raw", "--ram=0"],
        &[],
        "Failed to parse --ram=0",
    );
    cases.fails(
        &["-i", "guest.raw", "-G", "5Q"],
        &[],
        "Failed to parse --grow-image= parameter: 5Q",
    );
    cases.fails(
        &["-i", "guest.raw", "--firmware=/nonexistent/fw.json"],
        &[],
        "Failed to read firmware descriptor '/nonexistent/fw.json'",
    );
    cases.fails(
        &["-i", "guest.raw", "--firmware=fw.json"],
        &[],
        "Expected one of 'auto', 'uefi', 'bios', 'none', 'list', 'describe', or an absolute path or path starting with './', got: fw.json",
    );
    cases.fails(
        &["--kvm=no", "-i", "guest.raw"],
        &[("PATH", "/nonexistent")],
        "Failed to find QEMU binary",
    );
    cases.fails(
        &["-i", "guest.raw", "--linux=/nonexistent/vmlinuz"],
        &[],
        "Failed to open kernel '/nonexistent/vmlinuz'",
    );
    cases.fails(
        &["-i", "blank.raw", &kernel],
        &[],
        "no GUID partition table",
    );
    cases.fails(&["-i", "guest.raw", "--network-tap"],
        &[
            (
                "VMSPAWN_PRIVHELPER_SOCKET",
                "/nonexistent/privhelper.socket",
            ),
            ("VMSPAWN_PRIVHELPER", "/nonexistent/vmspawn-privhelper"),
        ],
        "--network-tap needs the privileged helper, but no helper service listens on /nonexistent/privhelper.socket",
    );
    // (--tpm=yes works now; tests/tests/tpm.rs has its errors.)
    // No /dev/vhost-vsock here, no helper, and vhost-device-vsock not in $PATH.
    cases.fails(
        &["-i", "guest.raw", "--vsock=yes"],
        &[("PATH", "/usr/bin:/bin")],
        "--vsock=yes: there is no way to give this VM a vsock device",
    );
    cases.fails(
        &["-i", "guest.raw", "--slice=vm"],
        &[],
        "Failed to allocate the scope unit guest.scope (your user service manager): ",
    );
    cases.fails(
        &["-i", "guest.raw", "--vsock=no", "--forward-journal=journal"],
        &[],
        "--forward-journal= needs a vsock device",
    );
    cases.fails(
        &["-i", "guest.raw", "--tpm-state=bogus"],
        &[],
        "Failed to parse --tpm-state= parameter: bogus",
    );
    cases.fails(&["-i", "guest.raw", "--bogus"], &[], "--bogus");
    cases.fails(
        &["-i", "guest.raw", "--kvm=perhaps"],
        &[],
        "Failed to parse boolean argument to --kvm=: perhaps",
    );
    cases.fails(
        &["-i", "guest.raw", "--set-credential=nocolon"],
        &[],
        "Missing value for --set-credential=: nocolon",
    );
    cases.fails(
        &["-i", "guest.raw"],
        &[("SYSTEMD_VMSPAWN_NETWORK_MAC", "zz")],
        "Failed to parse provided MAC address via environment variable",
    );
    cases.fails(
        &["-i", "guest.raw"],
        &[("SYSTEMD_VMSPAWN_QEMU_EXTRA", "'unterminated")],
        "Failed to parse $SYSTEMD_VMSPAWN_QEMU_EXTRA",
    );
    cases.fails(
        &["--kvm=no", "-i", "pipe.raw"],
        &[],
        "Expected regular file or block device, not '",
    );
    // Neither -i nor -D: the current directory is the root (as in 259), and it has no boot
    // entry.
    cases.fails(
        &[],
        &[],
        "Failed to locate UKI in directory type image, please specify one with --linux=.",
    );
    // QEMU itself refuses to start.
    cases.fails(
        &["--kvm=no", "-i", "guest.raw", &kernel, "root=/dev/vda"],
        &[("SYSTEMD_VMSPAWN_QEMU_EXTRA", "-device no-such-device")],
        "QEMU exited with status 1",
    );
    cases.fails(
        &["-M", "nosuchmachine"],
        &[],
        "No image for machine 'nosuchmachine'.",
    );
    // 262's options. --ephemeral: no extra drives, never an overlay on tmpfs (the image's
    // own directory is skipped when it is memory-backed, $TMPDIR is then tried and refused),
    // never a directory's copy on tmpfs.
    cases.fails(
        &["-x", "-i", "guest.raw", "--extra-drive=blank.raw"],
        &[],
        "Cannot use --ephemeral with --extra-drive=",
    );
    let shm = tempfile_in_shm(&work);
    let shm_image = shm.join("guest.raw");
    cases.fails(
        &["--kvm=no", "-x", "-i", shm_image.to_str().unwrap(), &kernel, "root=/dev/vda"],
        &[("TMPDIR", shm.to_str().unwrap())],
        &format!(
            "Cannot create the --ephemeral overlay (the file that takes the VM's writes while it runs): \
             {0} is on a memory-backed file system (tmpfs)",
            shm.display()
        ),
    );
    // --ephemeral with a directory: its copy goes next to it, never on tmpfs.
    let shm_tree = shm.join("tree");
    std::fs::create_dir(&shm_tree).unwrap();
    std::fs::write(shm_tree.join("five"), "5\n").unwrap();
    let (uid, gid) = tester_ids();
    std::os::unix::fs::chown(&shm_tree, Some(uid), Some(gid)).unwrap();
    cases.fails(
        &["--kvm=no", "-x", "-D", shm_tree.to_str().unwrap(), &kernel],
        &[],
        &format!(
            "Cannot make the --ephemeral copy of '{}': '{}', where it goes, is on a memory-backed \
             file system (tmpfs)",
            shm_tree.display(),
            shm.display()
        ),
    );
    let mut shm_left: Vec<_> = std::fs::read_dir(&shm)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    shm_left.sort();
    assert_eq!(
        shm_left,
        vec![
            std::ffi::OsString::from("guest.raw"),
            std::ffi::OsString::from("tree")
        ],
        "left in {}",
        shm.display()
    );
    let _ = std::fs::remove_dir_all(&shm);
    cases.fails(
        &["-i", "guest.raw", "--console-transport=usb"],
        &[],
        "Failed to parse specified console transport: usb",
    );
    cases.fails(
        &["-i", "guest.raw", "--forward-journal-max-file-size=64K"],
        &[],
        "require --forward-journal=.",
    );
    // This host's systemd-journal-remote (254) takes no limits as options.
    cases.fails(
        &[
            "--kvm=no",
            "-i",
            "guest.raw",
            "--forward-journal=journal",
            "--forward-journal-max-file-size=64K",
        ],
        &[],
        "has no such options: it reads them only from /etc/systemd/journal-remote.conf",
    );
    // --user: only the user's own machined, never the helper; there is none here.
    cases.fails(
        &["--kvm=no", "-i", "guest.raw", "--user", "--register=yes"],
        &[],
        "--user registers only with your own machined",
    );
    // --system: the system machined, which a regular user reaches only through the helper.
    cases.fails(
        &["--kvm=no", "-i", "guest.raw", "--system", "--register=yes"],
        &[
            (
                "VMSPAWN_PRIVHELPER_SOCKET",
                "/nonexistent/privhelper.socket",
            ),
            ("VMSPAWN_PRIVHELPER", "/nonexistent/vmspawn-privhelper"),
        ],
        "--system registers with the system machined, which a regular user reaches only through \
         vmspawn-privhelper",
    );
    // --system looks only at the system's machine images, not at ~/.local/state/machines.
    let home = work.path.join("home");
    cases.fails(
        &["--system", "-M", "nosuchmachine"],
        &[("HOME", home.to_str().unwrap())],
        "Looked for nosuchmachine.raw in /etc/machines,",
    );
    cases.fails(
        &["-M", "nosuchmachine"],
        &[("HOME", home.to_str().unwrap())],
        &format!(
            "Looked for nosuchmachine.raw in {}/.local/state/machines,",
            home.display()
        ),
    );
    // --console=gui without a usable display server.
    let gui = [
        "--kvm=no",
        "-i",
        "guest.raw",
        "--console=gui",
        &kernel,
        "root=/dev/vda",
    ];
    cases.fails(
        &gui,
        &[],
        "--console=gui needs a graphical session, but neither $WAYLAND_DISPLAY nor $DISPLAY is set.",
    );
    cases.fails(
        &gui,
        &[("DISPLAY", "otherhost:0")],
        "$DISPLAY is 'otherhost:0', which is not a local X11 display",
    );
    cases.fails(
        &gui,
        &[("DISPLAY", ":987")],
        "there is no X11 socket '/tmp/.X11-unix/X987'",
    );
    cases.fails(
        &gui,
        &[
            ("WAYLAND_DISPLAY", "wayland-9"),
            ("XDG_RUNTIME_DIR", "/nonexistent"),
        ],
        "there is no Wayland socket at '/nonexistent/wayland-9'",
    );
    // The scope unit: --slice=/--property= need a manager to ask; bad properties are refused.
    let guest = ["-i", "guest.raw", "--kvm=no", "--tpm=no", &kernel, &initrd];
    let with = |extra: &[&'static str]| -> Vec<String> {
        guest
            .iter()
            .map(|s| s.to_string())
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let args = with(&["--slice=vmtest", "--property=MemoryMax=1G"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cases.fails(
        &args,
        &[("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")],
        "Failed to allocate the scope unit guest.scope (your user service manager): there is no bus at /nonexistent/bus",
    );
    for (extra, message) in [
        (
            &["--property=DeviceAllow=/dev/kvm rw"][..],
            "does not support the property 'DeviceAllow'. Supported: MemoryMax,",
        ),
        (
            &["--property=MemoryMax=50%"],
            "percentages are not supported by this vmspawn",
        ),
        (
            &["--property=CPUQuota=lots"],
            "expected a percentage above 0",
        ),
        (
            &["--keep-unit", "--slice=vmtest"],
            "with --keep-unit it creates none",
        ),
    ] {
        let args = with(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cases.fails(&args, &[], message);
    }
    let args = with(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cases.fails(
        &args,
        &[("RUNTIME_DIRECTORY", "/nonexistent/vmspawn.rt")],
        "The runtime directory '/nonexistent/vmspawn.rt' from $RUNTIME_DIRECTORY does not exist",
    );
    cases.finish();
}

#[test]
fn disk_and_memory_options_bad_input() {
    let work = Workdir::new("errors-disks", User::Tester);
    make_gpt_image(
        &work.file("guest.raw"),
        8,
        "44444444-2222-4333-8444-555555555555",
    );
    work.chown_all();
    let mut cases = Cases::new(&work);
    for (args, message) in [
        (&["--image-format=vmdk"][..], "Invalid image format: vmdk"),
        (&["--image-disk-type=ide"], "Invalid image disk type: ide"),
        (
            &["--extra-drive=qcow2:nvme:"],
            "Failed to parse --extra-drive= argument 'qcow2:nvme:': no path",
        ),
        (&["--extra-drive=nvme:missing.raw"], "Failed to stat '"),
        (
            &["--ram=2G:1G"],
            "Maximum RAM size must be greater than or equal to initial RAM size",
        ),
        (
            &["--ram=1G::4"],
            "Memory hotplug slots require a maximum RAM size",
        ),
        (
            &["--ram=1G:2G:3:4"],
            "Unexpected trailing data in --ram=1G:2G:3:4",
        ),
        (&["--ram=1G:2G:many"], "Failed to parse --ram=1G:2G:many"),
        (
            &["--image-format=qcow2", "-G", "1G"],
            "--grow-image= only works on raw images",
        ),
    ] {
        let mut all = vec!["--kvm=no", "-i", "guest.raw"];
        all.extend_from_slice(args);
        cases.fails(&all, &[], message);
    }
    cases.finish();
}

#[test]
fn informational_commands() {
    let work = Workdir::new("info", User::Tester);
    let mut cmd = work.vmspawn();
    cmd.arg("--version");
    let out = run(cmd, Duration::from_secs(10));
    assert_eq!(out.code(), Some(0));
    let first: Vec<&str> = out
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!((first[0], first[2]), ("vmspawn", "(262)"), "{}", out.stdout);

    let mut cmd = work.vmspawn();
    cmd.args(["--help", "--bogus-after-help"]);
    let out = run(cmd, Duration::from_secs(10));
    out.assert_success();
    for option in [
        "--image",
        "--linux",
        "--initrd",
        "--network-tap",
        "--bind-user-group",
        "--load-credential",
        "--smbios11",
    ] {
        assert!(out.stdout.contains(option), "--help lacks {option}");
    }

    let mut cmd = work.vmspawn();
    cmd.arg("--firmware=list");
    let out = run(cmd, Duration::from_secs(10));
    assert_eq!(out.code(), Some(0));
    assert!(
        out.stdout
            .lines()
            .any(|l| l == "/usr/share/qemu/firmware/60-edk2-x86_64.json"),
        "{}",
        out.stdout
    );
    work.assert_no_leftovers();
}
