//! Bad input: a clear error, exit status 1, and nothing left behind. All run as the
//! unprivileged test user.

use std::time::Duration;

use vmspawn_tests::*;

fn fails(work: &Workdir, args: &[&str], env: &[(&str, &str)], message: &str) {
    let mut cmd = work.vmspawn();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(cmd, Duration::from_secs(60));
    assert_eq!(out.code(), Some(1), "{args:?}: stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains(message),
        "{args:?}: expected '{message}' in:\n{}",
        out.stderr
    );
    work.assert_no_leftovers();
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
    let missing_image = format!(
        "Failed to open image '{}': No such file or directory",
        work.file("missing.raw").display()
    );

    fails(
        &work,
        &["--kvm=no", "-i", "missing.raw"],
        &[],
        &missing_image,
    );
    fails(
        &work,
        &["-i", "guest.raw", &initrd],
        &[],
        "Option --initrd= cannot be used without --linux=.",
    );
    fails(
        &work,
        &["-i", "guest.raw", "--ram=12X"],
        &[],
        "Failed to parse --ram=12X",
    );
    fails(
        &work,
        &["-i", "guest.raw", "--ram=0"],
        &[],
        "Failed to parse --ram=0",
    );
    fails(
        &work,
        &["-i", "guest.raw", "-G", "5Q"],
        &[],
        "Failed to parse --grow-image= parameter: 5Q",
    );
    fails(
        &work,
        &["-i", "guest.raw", "--firmware=/nonexistent/fw.json"],
        &[],
        "Failed to read firmware descriptor '/nonexistent/fw.json'",
    );
    fails(
        &work,
        &["-i", "guest.raw", "--firmware=fw.json"],
        &[],
        "Absolute path or path starting with './' required.",
    );
    fails(
        &work,
        &["--kvm=no", "-i", "guest.raw"],
        &[("PATH", "/nonexistent")],
        "Failed to find QEMU binary",
    );
    fails(
        &work,
        &["-i", "guest.raw", "--linux=/nonexistent/vmlinuz"],
        &[],
        "Failed to open kernel '/nonexistent/vmlinuz'",
    );
    fails(
        &work,
        &["-i", "blank.raw", &kernel],
        &[],
        "no GUID partition table",
    );
    fails(
        &work,
        &["-i", "guest.raw", "--network-tap"],
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
    fails(
        &work,
        &["-i", "guest.raw", "--vsock=yes"],
        &[],
        "is not supported yet",
    );
    fails(
        &work,
        &["-i", "guest.raw", "--tpm-state=bogus"],
        &[],
        "Failed to parse --tpm-state= parameter: bogus",
    );
    fails(&work, &["-i", "guest.raw", "--bogus"], &[], "--bogus");
    fails(
        &work,
        &["-i", "guest.raw", "--kvm=perhaps"],
        &[],
        "Failed to parse boolean argument to --kvm=: perhaps",
    );
    fails(
        &work,
        &["-i", "guest.raw", "--set-credential=nocolon"],
        &[],
        "Missing value for --set-credential=: nocolon",
    );
    fails(
        &work,
        &["-i", "guest.raw"],
        &[("SYSTEMD_VMSPAWN_NETWORK_MAC", "zz")],
        "Failed to parse provided MAC address via environment variable",
    );
    fails(
        &work,
        &["-i", "guest.raw"],
        &[("SYSTEMD_VMSPAWN_QEMU_EXTRA", "'unterminated")],
        "Failed to parse $SYSTEMD_VMSPAWN_QEMU_EXTRA",
    );
    fails(
        &work,
        &["--kvm=no", "-i", "pipe.raw"],
        &[],
        "Expected regular file or block device, not '",
    );
    fails(&work, &[], &[], "No disk image given");
    // QEMU itself refuses to start.
    fails(
        &work,
        &["--kvm=no", "-i", "guest.raw", &kernel, "root=/dev/vda"],
        &[("SYSTEMD_VMSPAWN_QEMU_EXTRA", "-device no-such-device")],
        "QEMU exited with status 1",
    );
    fails(
        &work,
        &["-M", "nosuchmachine"],
        &[],
        "No image for machine 'nosuchmachine'.",
    );
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
    assert_eq!((first[0], first[2]), ("vmspawn", "(259)"), "{}", out.stdout);

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
