//! A debootstrapped systemd guest in a GPT image, booted through UEFI (systemd-boot + UKI from
//! the image's ESP) and by direct kernel boot with the root= that vmspawn derives.

use std::time::Duration;

use vmspawn_tests::*;

const BOOT: Duration = Duration::from_secs(300);

fn check(out: &Finished, credential: &str, word: &str) {
    out.assert_success();
    let lines = out.vmtest();
    assert!(
        lines.contains(&format!("cred vmtest={credential}")),
        "{lines:?}"
    );
    let cmdline = field(&lines, "cmdline").expect("cmdline line");
    assert!(
        cmdline.split_whitespace().any(|w| w == word),
        "'{word}' not in {cmdline}"
    );
    assert!(
        cmdline.split_whitespace().any(|w| w == "console=hvc0"),
        "{cmdline}"
    );
    assert!(lines.contains(&"done".to_string()), "{lines:?}");
}

#[test]
fn systemd_guest_boots_through_uefi_as_unprivileged_user() {
    let work = Workdir::new("systemd-uefi", User::Tester);
    work.copy_image("systemd.raw", "debian.raw");
    let mut cmd = work.vmspawn();
    cmd.args(tcg()).args([
        "--cpus=2",
        "--ram=1G",
        "-i",
        "debian.raw",
        "--set-credential=vmtest:hello-uefi",
        "vmtest.word=uefi",
    ]);
    let out = run(cmd, BOOT);
    check(&out, "hello-uefi", "vmtest.word=uefi");
    work.assert_no_leftovers();
}

#[test]
fn systemd_guest_direct_kernel_boot_derives_root_as_unprivileged_user() {
    let work = Workdir::new("systemd-direct", User::Tester);
    work.copy_image("systemd.raw", "debian.raw");
    let mut cmd = work.vmspawn();
    cmd.args(tcg())
        .args(["--cpus=2", "--ram=1G", "-i", "debian.raw"])
        .arg(format!("--linux={}", image("vmlinuz").display()))
        .arg(format!("--initrd={}", image("initrd-debian.img").display()))
        .args(["--set-credential=vmtest:hello-direct", "vmtest.word=direct"]);
    let out = run(cmd, BOOT);
    check(&out, "hello-direct", "vmtest.word=direct");
    // root= names the image's root partition, by its partition UUID.
    let partuuid = gpt_partition_uuid(&work.file("debian.raw"), "root");
    let cmdline = field(&out.vmtest(), "cmdline").unwrap();
    let expected = format!("root=PARTUUID={partuuid}");
    assert!(
        cmdline.split_whitespace().any(|w| w == expected),
        "'{expected}' not in {cmdline}"
    );
    work.assert_no_leftovers();
}
