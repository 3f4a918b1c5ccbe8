//! Disk types, image formats, memory hotplug and a front end's own drive, seen from inside a
//! busybox guest booted as the unprivileged test user.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vmspawn_tests::*;

const BOOT: Duration = Duration::from_secs(180);
const PARTUUID: &str = "7d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6";

/// The SCSI modules the busybox initrd lacks, in load order (busybox insmod resolves no
/// dependencies). NVMe is built into the guest kernel.
const SCSI_MODULES: [&str; 6] = [
    "drivers/scsi/scsi_common",
    "drivers/scsi/scsi_mod",
    "drivers/scsi/virtio_scsi",
    "drivers/scsi/sd_mod",
    "drivers/cdrom/cdrom",
    "drivers/scsi/sr_mod",
];

/// A second initrd that adds the SCSI modules of the guest kernel to the busybox initrd: its
/// `lib/modules/order` (the busybox one plus these) replaces the first initrd's when the
/// kernel unpacks both.
fn scsi_initrd(work: &Workdir) -> PathBuf {
    let kver = std::fs::read_to_string(image("KVER")).unwrap();
    let kver = kver.trim();
    let tree = work.file("scsi-initrd");
    let order = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zcat '{}' | cpio -i --quiet --to-stdout lib/modules/order",
            image("initrd-busybox.cpio.gz").display()
        ))
        .output()
        .unwrap();
    assert!(
        order.status.success(),
        "reading the busybox initrd's module order"
    );
    let mut order = String::from_utf8(order.stdout).unwrap();
    assert!(order.contains("virtio_pci.ko"), "{order}");
    for module in SCSI_MODULES {
        let dest = tree.join("lib/modules").join(format!("{module}.ko"));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let source = Path::new("/lib/modules").join(kver).join("kernel");
        let plain = source.join(format!("{module}.ko"));
        let status = if plain.exists() {
            Command::new("cp").arg(&plain).arg(&dest).status().unwrap()
        } else {
            // Compressed modules (the guest's kernel may ship them so).
            let packed = ["xz", "zst", "gz"]
                .iter()
                .map(|ext| source.join(format!("{module}.ko.{ext}")))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("module {module} of {kver} not found"));
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "xz -dcf '{0}' > '{1}' 2>/dev/null || zstd -qdcf '{0}' > '{1}'",
                    packed.display(),
                    dest.display()
                ))
                .status()
                .unwrap()
        };
        assert!(status.success(), "copying {module}");
        order.push_str(&format!("{module}.ko\n"));
    }
    std::fs::write(tree.join("lib/modules/order"), order).unwrap();
    let cpio = work.file("scsi.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . | cpio -o -H newc --quiet > '{}'",
            tree.display(),
            cpio.display()
        ))
        .status()
        .unwrap();
    assert!(status.success(), "packing the SCSI initrd");
    cpio
}

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(data)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// The guest's `cat PATH=LINE` report of a file, if it read one.
fn cat(lines: &[String], path: &str) -> Option<String> {
    let prefix = format!("cat {path}=");
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

/// One boot covers: the image as a read-only SCSI CD-ROM (`ro` on the kernel command line,
/// writes refused), an NVMe extra drive whose long name becomes a hashed serial, a qcow2
/// extra drive (explicit format, a name without .qcow2, a hashed serial) on virtio-scsi that
/// the guest writes, memory hotplug (the ACPI SRAT QEMU builds for it, the initial size in
/// MemTotal), and a front end's drive passed as `-blockdev … file.filename=` in
/// $SYSTEMD_VMSPAWN_QEMU_EXTRA, which QEMU may open under confinement and the guest writes
/// (both checked from the host).
#[test]
fn disk_types_formats_memory_hotplug_and_frontend_drive() {
    let work = Workdir::new("disks", User::Tester);
    make_gpt_image(&work.file("guest.raw"), 16, PARTUUID);
    let nvme_name = "an-nvme-drive-with-a-long-name.raw";
    work.write(nvme_name, &vec![0u8; 1 << 20]);
    // 33 bytes: longer than the 30 a SCSI serial may have.
    let data_name = "a-qcow2-disk-with-a-long-name.img";
    let data = work.file(data_name);
    qemu_img(&["create", "-q", "-f", "qcow2", data.to_str().unwrap(), "8M"]);
    let frontend = work.write("frontend.raw", &vec![0u8; 1 << 20]);
    let scsi = scsi_initrd(&work);
    work.chown_all();
    let image_before = std::fs::read(work.file("guest.raw")).unwrap();

    let extra = format!(
        "-blockdev driver=raw,node-name=frontend,file.driver=file,file.filename={},\
         file.locking=off,cache.direct=on,cache.no-flush=yes \
         -device virtio-blk-pci,drive=frontend,serial=frontend",
        frontend.display()
    );
    let modes = [
        "sleep=5",
        "cat=/sys/block/sr0/ro",
        "cat=/sys/block/sda/ro",
        "cat=/sys/class/nvme/nvme0/serial",
        "cat=/sys/block/sda/device/vpd_pg80",
        "cat=/sys/block/sr0/device/type",
        "stat=/sys/firmware/acpi/tables/SRAT",
        "write=/dev/sr0:must-fail",
        "write=/dev/sda:qcow2-was-here",
        "write=/dev/vda:frontend-was-here",
    ];
    let mut cmd = work.vmspawn();
    cmd.env("SYSTEMD_VMSPAWN_QEMU_EXTRA", &extra)
        .args(busybox_boot(false))
        .arg(format!("--initrd={}", scsi.display()))
        .args([
            "-i",
            "guest.raw",
            "--image-disk-type=scsi-cd",
            "--ram=256M:1G:4",
        ])
        .arg(format!("--extra-drive=nvme:{nvme_name}"))
        .arg(format!("--extra-drive=qcow2:virtio-scsi:{data_name}"))
        .arg(format!("test.mode={}", modes.join(",")));
    let out = run(cmd, BOOT);
    let lines = out.vmtest();
    out.assert_success();
    assert!(out.has("done"), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("insmod-failed")),
        "{lines:?}"
    );
    // The front end's drive reached the guest: no "cannot open" warning, and it is the only
    // virtio-blk disk.
    assert!(
        !out.stderr.contains("which QEMU cannot open"),
        "{}",
        out.stderr
    );
    assert!(
        lines.contains(&"disk vda size=2048 serial=frontend".to_string()),
        "{lines:?}"
    );

    // The image is a read-only CD-ROM and the kernel mounts its root read-only.
    let cmdline = field(&lines, "cmdline").unwrap();
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    assert!(words.contains(&"ro"), "{cmdline}");
    assert!(
        words.contains(&format!("root=PARTUUID={PARTUUID}").as_str()),
        "{cmdline}"
    );
    assert_eq!(cat(&lines, "/sys/block/sr0/ro").as_deref(), Some("1"));
    assert!(out.has("write-failed /dev/sr0"), "{lines:?}");
    // SCSI peripheral type 5: a CD-ROM (the kernel reads no VPD serial page of one).
    assert_eq!(
        cat(&lines, "/sys/block/sr0/device/type").as_deref(),
        Some("5")
    );

    // NVMe: the 34-byte name is longer than the 20 an NVMe serial holds.
    let hashed = &sha256_hex(nvme_name.as_bytes())[..20];
    assert_eq!(
        cat(&lines, "/sys/class/nvme/nvme0/serial").as_deref(),
        Some(hashed),
        "{lines:?}"
    );

    // virtio-scsi disk from a qcow2 file: writable, its serial the hashed file name.
    assert_eq!(cat(&lines, "/sys/block/sda/ro").as_deref(), Some("0"));
    let sda_serial = cat(&lines, "/sys/block/sda/device/vpd_pg80").unwrap_or_default();
    let hashed = &sha256_hex(data_name.as_bytes())[..30];
    assert!(sda_serial.ends_with(hashed), "{lines:?}");
    assert!(out.has("write-ok /dev/sda"), "{lines:?}");
    let head = work.file("data-head.raw");
    qemu_img(&[
        "dd",
        "-f",
        "qcow2",
        "-O",
        "raw",
        "bs=512",
        "count=1",
        &format!("if={}", data.display()),
        &format!("of={}", head.display()),
    ]);
    let written = std::fs::read(&head).unwrap();
    assert!(
        written.starts_with(b"qcow2-was-here\n"),
        "{:?}",
        &written[..32]
    );

    // Memory hotplug: QEMU describes the hotplug range in an SRAT; the guest starts with the
    // initial size.
    assert!(
        out.has("stat /sys/firmware/acpi/tables/SRAT uid=0 gid=0"),
        "{lines:?}"
    );
    let mem: u64 = field(&lines, "memtotal_kb").unwrap().parse().unwrap();
    assert!(
        (100_000..=256 * 1024).contains(&mem),
        "MemTotal {mem} kB does not match the initial 256M of --ram=256M:1G:4"
    );

    // The front end's drive was written by the guest, checked from the host.
    assert!(out.has("write-ok /dev/vda"), "{lines:?}");
    let written = std::fs::read(&frontend).unwrap();
    assert!(
        written.starts_with(b"frontend-was-here\n"),
        "{:?}",
        &written[..32]
    );
    // The image behind the CD-ROM is unchanged by the boot.
    assert!(std::fs::read(work.file("guest.raw")).unwrap() == image_before);
    work.assert_no_leftovers();
}

/// qcow2 needs a regular file (as in 262): a loop device with a qcow2 image in it is refused
/// as the image and as an extra drive, before anything is started or created.
#[test]
fn qcow2_on_a_block_device_is_refused() {
    let work = Workdir::new("disks-blockdev", User::Root);
    make_gpt_image(&work.file("guest.raw"), 8, PARTUUID);
    let backing = work.file("qcow2-in-a-loop.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        backing.to_str().unwrap(),
        "8M",
    ]);
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&backing)
        .output()
        .unwrap();
    assert!(out.status.success(), "losetup: {:?}", out);
    let device = String::from_utf8(out.stdout).unwrap().trim().to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _detach = Detach(device.clone());
    let message = format!(
        "Block device '{device}' cannot be used with 'qcow2' format, only 'raw' is supported."
    );
    for args in [
        vec![
            "--kvm=no".to_string(),
            format!("--image={device}"),
            "--image-format=qcow2".into(),
        ],
        vec![
            "--kvm=no".to_string(),
            "-i".into(),
            "guest.raw".into(),
            format!("--extra-drive=qcow2:{device}"),
        ],
        // Detected from the header, too.
        vec![
            "--kvm=no".to_string(),
            "-i".into(),
            "guest.raw".into(),
            format!("--extra-drive={device}"),
        ],
    ] {
        let mut cmd = work.vmspawn();
        cmd.args(&args);
        let out = run(cmd, Duration::from_secs(60));
        assert_eq!(out.code(), Some(1), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(&message), "{args:?}: {}", out.stderr);
        work.assert_no_leftovers();
    }
}

/// The serials as udev names them in `/dev/disk/by-id` (the systemd guest; the busybox
/// initrd has no udev): a virtio-scsi disk whose long name is hashed to 30 hex digits, an
/// NVMe drive hashed to 20, a SCSI CD-ROM and a virtio-blk disk with their plain names.
#[test]
fn disk_serials_in_dev_disk_by_id_of_a_systemd_guest() {
    let work = Workdir::new("disks-by-id", User::Tester);
    work.copy_image("systemd.raw", "debian.raw");
    let scsi_name = "a-virtio-scsi-disk-with-a-long-name.raw";
    let nvme_name = "an-nvme-drive-with-a-long-name.raw";
    work.write(scsi_name, &vec![0u8; 1 << 20]);
    work.write(nvme_name, &vec![0u8; 1 << 20]);
    work.write("cd.iso", &vec![0u8; 1 << 20]);
    work.write("plain.raw", &vec![0u8; 1 << 20]);
    // No '$': the command becomes a unit's ExecStart=, where systemd expands variables itself.
    let list =
        "udevadm settle -t 60; ls /dev/disk/by-id | xargs -n 1 echo VMTEST: by-id >/dev/console";
    let mut cmd = work.vmspawn();
    cmd.args(tcg())
        .args(["--cpus=2", "--ram=1G", "-i", "debian.raw"])
        .arg(format!("--linux={}", image("vmlinuz").display()))
        .arg(format!("--initrd={}", image("initrd-debian.img").display()))
        .arg(format!("--extra-drive=virtio-scsi:{scsi_name}"))
        .arg(format!("--extra-drive=nvme:{nvme_name}"))
        .args(["--extra-drive=scsi-cd:cd.iso", "--extra-drive=plain.raw"])
        .arg("vmtest.nopoweroff")
        .arg(format!("systemd.run=\"/bin/sh -c '{list}'\""))
        .arg("systemd.run_success_action=poweroff");
    let out = run(cmd, Duration::from_secs(400));
    out.assert_success();
    let by_id: Vec<String> = out
        .vmtest()
        .iter()
        .filter_map(|l| l.strip_prefix("by-id ").map(str::to_string))
        .collect();
    let scsi_serial = &sha256_hex(scsi_name.as_bytes())[..30];
    let nvme_serial = &sha256_hex(nvme_name.as_bytes())[..20];
    for (what, wanted) in [
        (
            "virtio-scsi disk",
            format!("scsi-0QEMU_QEMU_HARDDISK_{scsi_serial}"),
        ),
        ("NVMe drive", format!("nvme-QEMU_NVMe_Ctrl_{nvme_serial}")),
        ("SCSI CD-ROM", "scsi-0QEMU_QEMU_CD-ROM_cd.iso".to_string()),
        ("virtio-blk disk", "virtio-plain.raw".to_string()),
        ("image", "virtio-debian.raw".to_string()),
    ] {
        assert!(
            by_id.iter().any(|l| l == &wanted),
            "{what}: {wanted} not in /dev/disk/by-id: {by_id:?}\n{:?}",
            out.vmtest()
        );
    }
    work.assert_no_leftovers();
}
