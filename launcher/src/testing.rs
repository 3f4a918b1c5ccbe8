//! Synthetic host facts and acquisition outcomes for the planner's golden tests and the
//! `cli_plan` fuzz target: a switch (`# facts:` in a golden file) per host situation. Not used
//! by vmspawn itself.

use std::path::{Path, PathBuf};

use crate::acquire::{Acquired, KvmAccess, KvmNeed, Needs, NetworkSetup, TapFacts};
use crate::bootentry::BootEntry;
use crate::config::Config;
use crate::config::Network;
use crate::disk::{ImageFormat, RootKind, RootPartition};
use crate::firmware::{Firmware, KernelKind};
use crate::plan::{DirectoryInfo, DriveInfo, HostFacts, ImageInfo, RootFacts, SwtpmFacts};
use crate::virtiofs::{BindUserFacts, VirtiofsdFacts};
use crate::vsock::{VsockAccess, VsockFacts, VsockNeed};

/// Every switch `host_facts` and `simulate_acquire` know.
/// (At most 24: the `cli_plan` fuzz target spends three bytes on them.)
pub const SWITCHES: [&str; 29] = [
    "aarch64",
    "plain-firmware",
    "kvm",
    "kvm-from-helper",
    "helper",
    "tap-by-qemu",
    "tap-from-helper",
    "qcow2",
    "block-image",
    "no-root-partition",
    "usr-partition",
    "tty",
    "swtpm",
    "swtpm-no-setup",
    "swtpm-no-seccomp",
    "tpm-state-unwritable",
    "registrar-helper",
    "registrar-user",
    "virtiofsd",
    "virtiofsd-old",
    "no-boot-entry",
    "root",
    "vhost-vsock",
    "vhost-user-vsock",
    "ssh-keygen",
    "journal-remote",
    "journal-unwritable",
    "kvm-passed",
    "vhost-vsock-passed",
];

/// The host the switches describe, for the VM `config` asks for (its image or directory, extra
/// drives and bound users at the paths and names it gives). A directory has the boot entry
/// `boot/loader/entries/vmtest.conf` (kernel and one initrd) unless `no-boot-entry`; bound user
/// N has UID and GID 1000+N and the home /home/<name>; vmspawn runs as UID 1000 unless `root`.
/// `vhost-vsock`: /dev/vhost-vsock can be opened; `vhost-user-vsock`: vhost-device-vsock is
/// installed; with a helper /dev/vhost-vsock exists, and the helper hands out fds of it (CID
/// 10042 unless one is asked for) only with `helper`. UEFI firmware is always installed (with
/// Secure Boot unless `plain-firmware`); `tpm-state-unwritable` also makes
/// `<image>.efinvramstate` unusable (both live in the image's directory).
pub fn host_facts(switches: &[&str], config: &Config) -> HostFacts {
    let extra_drives = &config.extra_drives;
    let has = |s: &str| switches.contains(&s);
    let secure_boot = !has("plain-firmware");
    HostFacts {
        qemu_arch: if has("aarch64") {
            "aarch64".into()
        } else {
            "x86_64".into()
        },
        qemu_binary: PathBuf::from("/usr/bin/qemu-system-x86_64"),
        // A `--linux=` kernel named *.efi is a UKI, any other an EFI-stub (PE) kernel, as
        // distributions ship them; a directory's boot entry names a PE kernel.
        kernel_kind: match (&config.linux, &config.directory) {
            (Some(k), _) if k.extension().is_some_and(|e| e == "efi") => Some(KernelKind::Uki),
            (Some(_), _) => Some(KernelKind::Pe),
            (None, Some(_)) if !has("no-boot-entry") => Some(KernelKind::Pe),
            (None, _) => None,
        },
        nvram_auto_problem: has("tpm-state-unwritable").then(|| {
            "'/home/user/d.raw.efinvramstate' cannot be created in '/home/user': Permission denied"
                .to_string()
        }),
        firmware: Some(Firmware {
            descriptor: PathBuf::from("/usr/share/qemu/firmware/50-edk2-x86_64-secure.json"),
            code: PathBuf::from(if secure_boot {
                "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
            } else {
                "/usr/share/OVMF/OVMF_CODE_4M.fd"
            }),
            code_format: "raw".into(),
            vars_template: PathBuf::from("/usr/share/OVMF/OVMF_VARS_4M.fd"),
            vars_format: "raw".into(),
            secure_boot,
        }),
        kvm_usable: has("kvm"),
        kvm_passed: has("kvm-passed"),
        helper_installed: has("kvm-from-helper") || has("helper"),
        net_admin: has("tap-by-qemu"),
        root: match (&config.image, &config.directory) {
            (None, Some(dir)) => RootFacts::Directory(DirectoryInfo {
                path: dir.clone(),
                is_mount_point: dir == Path::new("/"),
                boot: (config.linux.is_none() && !has("no-boot-entry")).then(|| BootEntry {
                    source: dir.join("boot/loader/entries/vmtest.conf"),
                    kernel: dir.join("boot/vmlinuz"),
                    initrds: vec![dir.join("boot/initrd.img")],
                }),
            }),
            (image, _) => {
                let mut facts = image_facts(&has, image.as_deref());
                facts.format = config.image_format.unwrap_or(facts.format);
                RootFacts::Image(facts)
            }
        },
        extra_drives: extra_drives
            .iter()
            .map(|d| DriveInfo {
                path: d.path.clone(),
                format: d
                    .format
                    .unwrap_or(if d.path.extension().is_some_and(|e| e == "qcow2") {
                        ImageFormat::Qcow2
                    } else {
                        ImageFormat::Raw
                    }),
                is_block_device: d.path.starts_with("/dev"),
            })
            .collect(),
        runtime_dir: PathBuf::from("/run/user/1000/systemd/vmspawn.0123456789abcdef"),
        runtime_dir_managed: false,
        hostname: "buildhost".into(),
        vmgenid: *b"\x11\x22\x33\x44\x55\x66\x47\x88\x99\xaa\xbb\xcc\xdd\xee\xff\x00",
        // The X server :0 with its path socket (no abstract one) and the user's X authority
        // file; the QEMU has the GTK display, the devices and qemu-vdagent.
        display: (config.console == crate::config::ConsoleMode::Gui).then(|| {
            crate::gui::DisplayFacts {
                server: crate::gui::DisplayServer::X11 {
                    display: ":0".into(),
                    socket: PathBuf::from("/tmp/.X11-unix/X0"),
                    xauthority: Some(PathBuf::from("/home/user/.Xauthority")),
                    abstract_socket: false,
                },
                agent: Some(crate::gui::AgentChannel::QemuVdagent),
                module_dir: None,
            }
        }),
        stdin_is_tty: has("tty"),
        swtpm: (has("swtpm") || has("swtpm-no-setup") || has("swtpm-no-seccomp")).then(|| {
            SwtpmFacts {
                swtpm: PathBuf::from("/usr/bin/swtpm"),
                swtpm_setup: (!has("swtpm-no-setup"))
                    .then(|| PathBuf::from("/usr/bin/swtpm_setup")),
                seccomp: !has("swtpm-no-seccomp"),
            }
        }),
        tpm_auto_state_problem: has("tpm-state-unwritable").then(|| {
            "'/home/user/d.raw.tpmstate' cannot be created in '/home/user': Permission denied"
                .to_string()
        }),
        virtiofsd: (has("virtiofsd") || has("virtiofsd-old")).then(|| VirtiofsdFacts {
            binary: PathBuf::from("/usr/libexec/virtiofsd"),
            translate: !has("virtiofsd-old"),
            readonly: !has("virtiofsd-old"),
            file_handles_option: !has("virtiofsd-old"),
        }),
        bind_users: config
            .bind_users
            .iter()
            .enumerate()
            .map(|(i, name)| BindUserFacts {
                name: name.clone(),
                uid: 1000 + i as u32,
                gid: 1000 + i as u32,
                home: PathBuf::from("/home").join(name),
                shell: PathBuf::from("/bin/bash"),
                hashed_password: None,
            })
            .collect(),
        caller_uid: if has("root") { 0 } else { 1000 },
        vsock: VsockFacts {
            passed_device: has("vhost-vsock-passed"),
            kernel_device: has("vhost-vsock"),
            // A host with a helper has the device (only root may open it).
            kernel_device_exists: has("vhost-vsock") || has("helper") || has("kvm-from-helper"),
            vhost_user: has("vhost-user-vsock")
                .then(|| PathBuf::from("/usr/local/bin/vhost-device-vsock")),
        },
        ssh_keygen: (has("ssh-keygen") && config.pass_ssh_key != Some(false))
            .then(|| PathBuf::from("/usr/bin/ssh-keygen")),
        journal_remote: (has("journal-remote") && config.forward_journal.is_some())
            .then(|| PathBuf::from("/usr/lib/systemd/systemd-journal-remote")),
        // The journal-remote of Debian 12 (systemd 254): limits only in journal-remote.conf.
        journal_remote_limits: (config.journal_limits.any() && has("journal-remote")).then(|| {
            crate::plan::JournalRemoteLimits {
                takes_options: false,
                version: "systemd 254 (254.26-1~bpo12+1)".into(),
            }
        }),
        journal_output_problem: has("journal-unwritable")
            .then(|| "'/home/user' is not writable: Permission denied".to_string()),
    }
}

fn image_facts(has: &dyn Fn(&str) -> bool, image: Option<&Path>) -> ImageInfo {
    ImageInfo {
        path: image.map_or_else(|| PathBuf::from("/none"), Path::to_path_buf),
        format: if has("qcow2") {
            ImageFormat::Qcow2
        } else {
            ImageFormat::Raw
        },
        is_block_device: has("block-image"),
        root_partition: if has("no-root-partition") {
            None
        } else if has("usr-partition") {
            Some(RootPartition {
                kind: RootKind::Usr,
                partuuid: "0fc63daf-8483-4772-8e79-3d69d8477de4".into(),
            })
        } else {
            Some(RootPartition {
                kind: RootKind::Root,
                partuuid: "4f68bce3-0000-4000-8000-000000000001".into(),
            })
        },
    }
}

/// Acquisition as the switches say it went: the TAP and KVM fd from the helper, the machined
/// reached; an error where the real acquisition would fail.
pub fn simulate_acquire(needs: &Needs, switches: &[&str]) -> Result<Acquired, String> {
    let has = |s: &str| switches.contains(&s);
    let network = match needs.network {
        Network::None => NetworkSetup::None,
        Network::UserMode => NetworkSetup::UserMode,
        Network::Tap if has("tap-by-qemu") => NetworkSetup::Tap(TapFacts::QemuCreates {
            ifname: "vt-d".into(),
            mac: [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc],
        }),
        Network::Tap if has("tap-from-helper") => NetworkSetup::Tap(TapFacts::FromHelper {
            ifname: "vt-0123abcd".into(),
            mac: [0x22, 0x34, 0x56, 0x78, 0x9a, 0xbc],
        }),
        Network::Tap => return Err("acquisition: no TAP (no helper)".into()),
    };
    let kvm = match needs.kvm {
        KvmNeed::Off => KvmAccess::Off,
        KvmNeed::Passed => KvmAccess::Fd,
        KvmNeed::Device => KvmAccess::Device,
        KvmNeed::FromHelper { .. } if has("kvm-from-helper") => KvmAccess::Fd,
        KvmNeed::FromHelper { required: true } => {
            return Err("acquisition: no /dev/kvm fd (no helper)".into());
        }
        KvmNeed::FromHelper { required: false } => KvmAccess::Off,
    };
    // The choice itself is the launcher's (a regular user with $XDG_RUNTIME_DIR=/run/user/1000);
    // the switches say which machined can be reached.
    let registrar = needs.registration.and_then(|_| {
        let var = |name: &str| {
            (name == "XDG_RUNTIME_DIR").then(|| std::ffi::OsString::from("/run/user/1000"))
        };
        let exists = |p: &Path| {
            (has("registrar-helper") && p == Path::new(crate::helper::DEFAULT_SOCKET))
                || (has("registrar-user")
                    && p == Path::new("/run/user/1000/systemd/machine/io.systemd.Machine"))
        };
        crate::register::choose(&var, false, needs.runtime_scope, &exists)
    });
    let notify_port = 0x4000_0001;
    let journal_port = needs.forward_journal.then_some(0x4000_0002);
    let vsock = match &needs.vsock {
        VsockNeed::Off => VsockAccess::Off,
        VsockNeed::VhostUser => VsockAccess::VhostUser,
        VsockNeed::Kernel { cid } => VsockAccess::Kernel {
            cid: cid.unwrap_or_else(|| crate::vsock::cid_candidate(&needs.machine, 0)),
            notify_port,
            journal_port,
        },
        VsockNeed::FromHelper { cid, .. } if has("helper") => VsockAccess::Kernel {
            cid: cid.unwrap_or(10042),
            notify_port,
            journal_port,
        },
        VsockNeed::FromHelper {
            fallback_vhost_user: true,
            ..
        } => VsockAccess::VhostUser,
        VsockNeed::FromHelper { required: true, .. } => {
            return Err("acquisition: the helper refused open-vhost-vsock".into());
        }
        VsockNeed::FromHelper { .. } => VsockAccess::Off,
    };
    Ok(Acquired {
        network,
        kvm,
        registrar,
        vsock,
    })
}
