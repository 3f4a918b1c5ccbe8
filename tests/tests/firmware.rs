//! Firmware selection: the default firmware-less direct kernel boot (what still reaches the
//! guest without UEFI), `--firmware=uefi` for comparison, the UEFI variable store kept across
//! boots (`--efi-nvram-state=`), `--firmware=describe` / `--firmware-features=list`, and bad
//! input.

use std::time::Duration;

use vmspawn_tests::*;

const BOOT: Duration = Duration::from_secs(150);
const SYSTEMD_BOOT: Duration = Duration::from_secs(300);
const PARTUUID: &str = "6c0a7f3e-5b1d-4c2e-9f00-1234567890ab";
const UUID: &str = "0123456789abcdef0123456789abcdef";
const UUID_DASHED: &str = "01234567-89ab-cdef-0123-456789abcdef";

/// An initrd that, appended after the busybox one, makes its `extra-initrd=` line print the
/// machine UUID the guest's firmware tables carry: `/etc/vmtest-extra` (which the busybox init
/// `cat`s) becomes a symlink to the DMI product UUID.
fn uuid_probe_initrd(work: &Workdir) -> std::path::PathBuf {
    let out = work.file("probe.cpio");
    if out.exists() {
        return out;
    }
    let tree = work.file("probe-tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::os::unix::fs::symlink(
        "/sys/class/dmi/id/product_uuid",
        tree.join("etc/vmtest-extra"),
    )
    .unwrap();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && printf 'etc\\netc/vmtest-extra\\n' | cpio --quiet -o -H newc > '{}'",
            tree.display(),
            out.display()
        ))
        .status()
        .unwrap();
    assert!(status.success(), "cpio");
    work.chown_all();
    out
}

fn executing_line(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.starts_with("Executing: "))
        .expect("debug log of the QEMU command line")
        .to_string()
}

/// Boots the busybox guest from a GPT image with a credential, an SMBIOS string, extra kernel
/// command line and a machine UUID, and checks each of them from inside the guest.
fn boot_and_check(work: &Workdir, firmware: Option<&str>) -> String {
    let probe = uuid_probe_initrd(work);
    let mut cmd = work.vmspawn();
    cmd.env("SYSTEMD_LOG_LEVEL", "debug")
        .args(busybox_boot(false))
        .arg(format!("--initrd={}", probe.display()))
        .args(["-i", "guest.raw"])
        // --efi-nvram-state= asks for UEFI: only given with --firmware=uefi.
        .args((firmware == Some("uefi")).then_some("--efi-nvram-state=off"))
        .arg(format!("--uuid={UUID}"))
        .args(["--set-credential=fwtest:no-firmware-needed"])
        .args(["-s", "io.systemd.test=fw"])
        .args(firmware.map(|f| format!("--firmware={f}")))
        .args(["test.mode=", "vmtest.fw=1"]);
    let out = run(cmd, BOOT);
    out.assert_success();
    let lines = out.vmtest();
    assert!(out.has("done"), "{lines:?}");
    let cmdline = field(&lines, "cmdline").unwrap();
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    assert_eq!(words[0], "console=hvc0", "{cmdline}");
    for word in ["vmtest.fw=1", &format!("root=PARTUUID={PARTUUID}")] {
        assert!(words.contains(&word), "'{word}' missing from {cmdline}");
    }
    let smbios: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("smbios11="))
        .collect();
    assert!(smbios.contains(&"io.systemd.test=fw"), "{smbios:?}");
    let credential = smbios
        .iter()
        .find_map(|s| s.strip_prefix("io.systemd.credential.binary:fwtest="))
        .map(base64_decode);
    assert_eq!(
        credential.as_deref(),
        Some(&b"no-firmware-needed"[..]),
        "{smbios:?}"
    );
    assert_eq!(
        field(&lines, "extra-initrd").as_deref(),
        Some(UUID_DASHED),
        "machine UUID in the guest's DMI tables: {lines:?}"
    );
    executing_line(&out.stderr)
}

#[test]
fn firmware_less_direct_boot_carries_everything_as_unprivileged_user() {
    let work = Workdir::new("fw-none", User::Tester);
    make_gpt_image(&work.file("guest.raw"), 16, PARTUUID);
    work.chown_all();

    // The default for a --linux= kernel that is not a UKI (Debian's is an EFI-stub PE kernel):
    // no firmware of vmspawn's, no variable store.
    let executing = boot_and_check(&work, None);
    assert!(!executing.contains("pflash"), "{executing}");
    assert!(!executing.contains("OVMF"), "{executing}");
    assert!(executing.contains("smm=off"), "{executing}");
    // --firmware=none says the same explicitly.
    let explicit = boot_and_check(&work, Some("none"));
    assert!(!explicit.contains("pflash"), "{explicit}");

    // --firmware=uefi: 259's way, through OVMF, with the same result in the guest.
    let uefi = boot_and_check(&work, Some("uefi"));
    assert!(uefi.contains("if=pflash"), "{uefi}");
    assert!(uefi.contains("OVMF"), "{uefi}");
    // --efi-nvram-state=off: the variable store was a copy in the runtime directory only.
    assert!(!work.file("guest.raw.efinvramstate").exists());
    work.assert_no_leftovers();
}

/// The systemd guest through UEFI twice with the default `--efi-nvram-state=auto`: boot 1
/// writes an EFI variable (efivarfs), boot 2 reads it back from `<image>.efinvramstate`.
#[test]
fn efi_nvram_state_keeps_a_variable_across_uefi_boots() {
    let work = Workdir::new("fw-nvram", User::Tester);
    work.copy_image("systemd.raw", "debian.raw");
    let state = work.file("debian.raw.efinvramstate");
    // Run by systemd-run-generator (systemd.run=) from the system credential: write the
    // variable if it is missing (efivarfs takes attributes and data in one write, hence the
    // file and cat; efivarfs files cannot seek, hence the pipe), print what it holds.
    let var = "/sys/firmware/efi/efivars/VmspawnTest-3f0a2b51-7c1e-4d2a-9b55-0c6f1e2d3a4b";
    let script = format!(
        "#!/bin/sh\n\
         mountpoint -q /sys/firmware/efi/efivars || mount -t efivarfs efivarfs /sys/firmware/efi/efivars\n\
         if [ ! -e {var} ]; then printf '\\007\\000\\000\\000%s' \"$1\" > /run/vmtestfw.bin; cat /run/vmtestfw.bin > {var} 2>/dev/console; echo \"VMTEST: efivar-written\" > /dev/console; fi\n\
         echo \"VMTEST: efivar=$(cat {var} | tail -c +5)\" > /dev/console\n"
    );
    let boot = |marker: &str| {
        let mut cmd = work.vmspawn();
        cmd.args(tcg())
            .args(["--cpus=2", "--ram=1G", "-i", "debian.raw"])
            .arg(format!(
                "--set-credential=vmtestfw:{}",
                script.replace('\\', "\\\\")
            ))
            .arg(format!(
                "systemd.run=\"/bin/sh /run/credentials/@system/vmtestfw {marker}\""
            ))
            .arg("systemd.run_success_action=poweroff");
        run(cmd, SYSTEMD_BOOT)
    };
    let first = boot("first-boot");
    first.assert_success();
    assert!(first.has("efivar-written"), "{:?}", first.vmtest());
    assert!(first.has("efivar=first-boot"), "{:?}", first.vmtest());
    assert!(state.is_file(), "no {}", state.display());
    let second = boot("second-boot");
    second.assert_success();
    assert!(!second.has("efivar-written"), "{:?}", second.vmtest());
    assert!(second.has("efivar=first-boot"), "{:?}", second.vmtest());
    work.assert_no_leftovers();
}

#[test]
fn firmware_list_describe_and_features() {
    let work = Workdir::new("fw-describe", User::Tester);
    let mut cmd = work.vmspawn();
    cmd.arg("--firmware-features=list");
    let out = run(cmd, Duration::from_secs(10));
    out.assert_success();
    let features: Vec<&str> = out.stdout.lines().collect();
    assert!(features.contains(&"secure-boot"), "{features:?}");
    assert!(features.contains(&"enrolled-keys"), "{features:?}");

    // describe takes the feature wishes of the whole command line into account.
    let describe = |extra: &[&str]| {
        let mut cmd = work.vmspawn();
        cmd.arg("--firmware=describe").args(extra);
        run(cmd, Duration::from_secs(10))
    };
    let out = describe(&["--firmware-features=secure-boot"]);
    out.assert_success();
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let features = json["features"].as_array().expect("features");
    assert!(features.iter().any(|f| f == "secure-boot"), "{json}");
    assert!(!features.iter().any(|f| f == "enrolled-keys"), "{json}");
    let out = describe(&["--secure-boot=no"]);
    out.assert_success();
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert!(
        !json["features"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "secure-boot"),
        "{json}"
    );
    let out = describe(&["--firmware-features=no-such-feature"]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.starts_with("Failed to find OVMF config"),
        "{}",
        out.stderr
    );
    work.assert_no_leftovers();
}

/// A minimal PE file with the sections of a UKI.
fn fake_uki() -> Vec<u8> {
    let mut data = vec![0u8; 0x40 + 24];
    data[0..2].copy_from_slice(b"MZ");
    data[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    data[0x40..0x44].copy_from_slice(b"PE\0\0");
    data[0x46..0x48].copy_from_slice(&2u16.to_le_bytes());
    for name in [b".osrel\0\0", b".linux\0\0"] {
        let mut section = [0u8; 40];
        section[..8].copy_from_slice(name);
        data.extend_from_slice(&section);
    }
    data
}

#[test]
fn bad_firmware_input_fails_clearly_and_leaves_nothing() {
    let work = Workdir::new("fw-errors", User::Tester);
    make_gpt_image(&work.file("guest.raw"), 16, PARTUUID);
    work.write("uki.efi", &fake_uki());
    work.write("notpe", b"\x7fELF not a PE kernel");
    let kernel = format!("--linux={}", image("vmlinuz").display());
    let cases: &[(&[&str], &str)] = &[
        (
            &["-i", "guest.raw", "--firmware=none"],
            "--firmware=none requires --linux= to be specified.",
        ),
        (
            &["-i", "guest.raw", "--linux=./uki.efi", "--firmware=none"],
            "Booting a UKI requires --firmware=uefi.",
        ),
        (
            &["-i", "guest.raw", "--linux=./uki.efi", "--firmware=bios"],
            "Booting a UKI requires --firmware=uefi.",
        ),
        (
            &[
                "-i",
                "guest.raw",
                &kernel,
                "--firmware=none",
                "--secure-boot=yes",
            ],
            "--secure-boot=yes needs UEFI firmware, but --firmware=none was given.",
        ),
        (
            &[
                "-i",
                "guest.raw",
                &kernel,
                "--firmware=bios",
                "--efi-nvram-state=./v.fd",
            ],
            "--efi-nvram-state= needs UEFI firmware, but --firmware=bios was given.",
        ),
        (
            &["-i", "guest.raw", "--linux=./notpe", "--firmware=uefi"],
            "is not a PE binary, --firmware=uefi (or a firmware path) is not supported.",
        ),
        (
            &["-i", "guest.raw", "--firmware=efi"],
            "Expected one of 'auto', 'uefi', 'bios', 'none', 'list', 'describe', or an absolute path or path starting with './', got: efi",
        ),
        (
            &["-i", "guest.raw", "--firmware-features=secure-boot,"],
            "Invalid firmware feature '' in --firmware-features=secure-boot,",
        ),
        (
            &["-i", "guest.raw", "--efi-nvram-state=vars.fd"],
            "Path in --efi-nvram-state= parameter must be absolute or start with './': vars.fd",
        ),
        (
            &[
                "-i",
                "guest.raw",
                "--efi-nvram-template=/nonexistent/vars.fd",
                "--kvm=no",
            ],
            "Failed to open OVMF vars file /nonexistent/vars.fd",
        ),
    ];
    for (args, message) in cases {
        let mut cmd = work.vmspawn();
        cmd.args(*args);
        let out = run(cmd, Duration::from_secs(30));
        assert_eq!(out.code(), Some(1), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(message),
            "{args:?}: expected '{message}' in: {}",
            out.stderr
        );
        work.assert_no_leftovers();
        for left in ["guest.raw.efinvramstate", "v.fd"] {
            assert!(!work.file(left).exists(), "{args:?} left {left} behind");
        }
    }
}
