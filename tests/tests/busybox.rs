//! Busybox guests booted with --linux/--initrd: what the guest sees of each option.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use vmspawn_tests::*;

const BOOT: Duration = Duration::from_secs(150);
const PARTUUID: &str = "6c0a7f3e-5b1d-4c2e-9f00-1234567890ab";

#[test]
fn busybox_guest_sees_every_option_as_unprivileged_user() {
    let work = Workdir::new("busybox-full", User::Tester);
    let disk = work.file("guest.raw");
    make_gpt_image(&disk, 64, PARTUUID);
    let extra_raw = work.write("extra1.raw", &vec![0u8; 1 << 20]);
    let extra_qcow2 = work.file("extra2.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        extra_qcow2.to_str().unwrap(),
        "8M",
    ]);
    work.write("cred.txt", b"loaded-from-file");
    work.chown_all();

    let mut cmd = work.vmspawn();
    cmd.args(busybox_boot(true))
        .args(["--cpus=2", "--ram=600M", "-i", "guest.raw", "-G", "100M"])
        .arg(format!("--extra-drive={}", extra_raw.display()))
        .arg("--extra-drive=extra2.qcow2")
        .args([
            "--set-credential=plain:hello\\nworld",
            "--load-credential=fromfile:./cred.txt",
        ])
        .args(["-s", "io.systemd.test=one", "--smbios11=two words"])
        .args([
            "test.mode=stat=/sys/firmware/acpi/tables/SRAT",
            "vmtest.extra=1",
            "quiet",
        ]);
    let out = run(cmd, BOOT);
    let lines = out.vmtest();
    out.assert_success();
    assert!(out.has("done"), "{lines:?}");
    // Without a --ram= maximum there is no memory hotplug, so QEMU builds no SRAT (disks.rs
    // checks that one with a maximum has it).
    assert!(
        out.has("stat-failed /sys/firmware/acpi/tables/SRAT"),
        "{lines:?}"
    );

    assert_eq!(field(&lines, "nproc").as_deref(), Some("2"));
    let mem: u64 = field(&lines, "memtotal_kb").unwrap().parse().unwrap();
    assert!(
        (450_000..=600 * 1024).contains(&mem),
        "MemTotal {mem} kB does not match --ram=600M"
    );

    let cmdline = field(&lines, "cmdline").unwrap();
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    assert_eq!(words[0], "console=hvc0", "{cmdline}");
    for word in [
        "test.mode=stat=/sys/firmware/acpi/tables/SRAT",
        "vmtest.extra=1",
        "quiet",
        &format!("root=PARTUUID={PARTUUID}"),
    ] {
        assert!(words.contains(&word), "'{word}' missing from {cmdline}");
    }

    let smbios: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("smbios11=").map(str::to_string))
        .collect();
    assert!(
        smbios.contains(&"io.systemd.test=one".to_string()),
        "{smbios:?}"
    );
    assert!(smbios.contains(&"two words".to_string()), "{smbios:?}");
    let credential = |name: &str| {
        let prefix = format!("io.systemd.credential.binary:{name}=");
        smbios
            .iter()
            .find_map(|s| s.strip_prefix(&prefix).map(base64_decode))
            .unwrap_or_else(|| panic!("credential {name} not passed: {smbios:?}"))
    };
    assert_eq!(credential("plain"), b"hello\nworld");
    assert_eq!(credential("fromfile"), b"loaded-from-file");

    assert!(
        lines.contains(&"disk vda size=204800 serial=guest.raw".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"disk vdb size=2048 serial=extra1.raw".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"disk vdc size=16384 serial=extra2.qcow2".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"extra-initrd=extra-initrd-ok".to_string()),
        "{lines:?}"
    );

    assert!(
        out.stderr.contains("successfully grown from 64M to 100M"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 100 << 20);
    // Growing never shrinks.
    let mut cmd = work.vmspawn();
    cmd.args(busybox_boot(false))
        .args(["-q", "-i", "guest.raw", "-G", "10M", "test.mode="]);
    let out = run(cmd, BOOT);
    out.assert_success();
    assert!(out.stderr.is_empty(), "--quiet run printed: {}", out.stderr);
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 100 << 20);
    work.assert_no_leftovers();
}

#[test]
fn kvm_auto_falls_back_to_tcg_for_user_without_kvm_access() {
    let work = Workdir::new("kvm-auto", User::Tester);
    // The image is found by machine name (-M) in the user's machine image directory.
    let machines = work.file("home/.local/state/machines");
    std::fs::create_dir_all(&machines).unwrap();
    make_gpt_image(&machines.join("guest.raw"), 16, PARTUUID);
    work.chown_all();
    // Precondition of this test: the test user cannot open /dev/kvm.
    let (uid, gid) = tester_ids();
    let probe = std::process::Command::new("sh")
        .args(["-c", "exec 3<>/dev/kvm"])
        .uid(uid)
        .gid(gid)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(
        !probe.success(),
        "test precondition: '{TEST_USER}' must not be able to open /dev/kvm"
    );
    let mut cmd = work.vmspawn();
    cmd.env("SYSTEMD_LOG_LEVEL", "debug")
        .arg(format!("--linux={}", image("vmlinuz").display()))
        .arg(format!(
            "--initrd={}",
            image("initrd-busybox.cpio.gz").display()
        ))
        .args(["-M", "guest", "--kvm=", "test.mode="]);
    let out = run(cmd, BOOT);
    out.assert_success();
    assert!(
        out.stderr.contains(&format!(
            "Spawning VM guest on {}.",
            machines.join("guest.raw").display()
        )),
        "{}",
        out.stderr
    );
    let executing = out
        .stderr
        .lines()
        .find(|l| l.starts_with("Executing: "))
        .expect("debug log of the QEMU command line");
    assert!(executing.contains(" -accel tcg "), "{executing}");
    assert!(out.has("done"));
    work.assert_no_leftovers();
}

#[test]
fn qcow2_image_and_user_mode_network_as_root() {
    let work = Workdir::new("qcow2-root", User::Root);
    let raw = work.file("base.raw");
    make_gpt_image(&raw, 32, PARTUUID);
    qemu_img(&[
        "convert",
        "-q",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        work.file("guest.qcow2").to_str().unwrap(),
    ]);
    let mut cmd = work.vmspawn();
    cmd.env("SYSTEMD_VMSPAWN_NETWORK_MAC", "02:aa:bb:cc:dd:ee")
        .args(busybox_boot(false))
        .args([
            "-i",
            "guest.qcow2",
            "--network-user-mode",
            "--discard-disk=no",
            "root=/dev/vda1",
            "test.mode=",
        ]);
    let out = run(cmd, BOOT);
    out.assert_success();
    let lines = out.vmtest();
    // A qcow2 image reaches the guest with its virtual size (32 MiB), not the file size.
    assert!(
        lines.contains(&"disk vda size=65536 serial=guest.qcow2".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"nic eth0 mac=02:aa:bb:cc:dd:ee".to_string()),
        "{lines:?}"
    );
    work.assert_no_leftovers();
    assert!(
        std::fs::read_dir(work.file("run"))
            .unwrap()
            .flat_map(|e| std::fs::read_dir(e.unwrap().path()).into_iter().flatten())
            .next()
            .is_none(),
        "runtime directory left behind"
    );
}

#[test]
fn uefi_firmware_selection_explicit_descriptor() {
    let work = Workdir::new("firmware", User::Tester);
    make_gpt_image(&work.file("guest.raw"), 16, PARTUUID);
    let descriptor = std::fs::read_to_string("/usr/share/qemu/firmware/60-edk2-x86_64.json")
        .expect("Debian OVMF descriptor");
    work.write("fw.json", descriptor.as_bytes());
    let mut cmd = work.vmspawn();
    cmd.env("SYSTEMD_LOG_LEVEL", "debug")
        .args(busybox_boot(false))
        .args(["-i", "guest.raw", "--firmware=./fw.json", "test.mode="]);
    let out = run(cmd, BOOT);
    out.assert_success();
    let executing = out
        .stderr
        .lines()
        .find(|l| l.starts_with("Executing: "))
        .unwrap();
    assert!(executing.contains("smm=off"), "{executing}");
    assert!(!executing.contains("property=secure"), "{executing}");
    assert!(out.has("done"));
    // --secure-boot=yes with a descriptor that lacks it is refused.
    let mut cmd = work.vmspawn();
    cmd.args(busybox_boot(false)).args([
        "-i",
        "guest.raw",
        "--firmware=./fw.json",
        "--secure-boot=yes",
    ]);
    let out = run(cmd, BOOT);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr
            .contains("Secure Boot requested, but supplied OVMF firmware blob doesn't support it."),
        "{}",
        out.stderr
    );
    work.assert_no_leftovers();
}
