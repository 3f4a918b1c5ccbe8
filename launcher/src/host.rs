//! Host discovery: everything the planner needs to know about this machine — the QEMU binary,
//! firmware, whether KVM is usable, swtpm, the disk images, where temporary files go. It only
//! looks; obtaining what the VM needs is `acquire`.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::disk;
use crate::error::{Error, Result};
use crate::firmware;
use crate::helper;
use crate::parse::Tristate;
use crate::plan::{DirectoryInfo, DriveInfo, HostFacts, ImageInfo, RootFacts, SwtpmFacts};
use crate::virtiofs::{BindUserFacts, VirtiofsdFacts};
use crate::vsock::VsockFacts;

/// The environment discovery reads, passed in for testability.
pub struct HostEnv<'a> {
    pub var: &'a dyn Fn(&str) -> Option<OsString>,
    pub is_root: bool,
    /// The fds socket activation passed (`kvm`, `vhost-vsock`).
    pub passed: &'a crate::activation::PassedFds,
}

/// The native architecture in QEMU's naming.
pub fn qemu_arch() -> Result<&'static str> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "x86_64",
        "x86" => "i386",
        "aarch64" => "aarch64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" | "powerpc" => "ppc",
        "loongarch64" => "loongarch64",
        "mips" | "mips64" => "mips",
        _ => return Err(Error::new("Native architecture is not supported by qemu.")),
    })
}

/// Finds an executable `name` in `$PATH`.
pub fn find_in_path(name: &str, path_var: Option<&OsString>) -> Option<PathBuf> {
    let default = OsString::from("/usr/local/bin:/usr/bin:/bin");
    let dirs = path_var.unwrap_or(&default);
    std::env::split_paths(dirs)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// A regular file with an execute bit.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_qemu(arch: &str, path_var: Option<&OsString>) -> Result<PathBuf> {
    let candidates = [
        "qemu".to_string(),
        "qemu-kvm".to_string(),
        format!("qemu-system-{arch}"),
    ];
    candidates.iter().find_map(|c| find_in_path(c, path_var)).ok_or_else(|| {
        Error::new(format!(
            "Failed to find QEMU binary: none of {} is in $PATH. Install QEMU (on Debian: apt install qemu-system-x86).",
            candidates.join(", ")
        ))
    })
}

fn find_firmware(config: &Config, arch: &str, env: &HostEnv) -> Result<firmware::Firmware> {
    if let Some(path) = &config.firmware {
        let content = std::fs::read(path).map_err(|e| {
            Error::io(
                format!("Failed to read firmware descriptor '{}'", path.display()),
                e,
            )
        })?;
        let secure_boot = config
            .firmware_features_include
            .iter()
            .any(|f| f == "secure-boot");
        return firmware::load_explicit(path, &content, secure_boot);
    }
    firmware::select(
        &read_descriptors(env),
        arch,
        &config.firmware_features_include,
        &config.firmware_features_exclude,
    )
}

/// Every descriptor of the search path, with its contents.
fn read_descriptors(env: &HostEnv) -> Vec<(PathBuf, Vec<u8>)> {
    firmware_list(env)
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|c| (p, c)))
        .collect()
}

/// `--firmware-features=list`: the features the installed descriptors name.
pub fn firmware_features(env: &HostEnv) -> Vec<String> {
    firmware::features(&read_descriptors(env))
}

/// `--firmware=describe`: the descriptor (JSON, pretty-printed) the feature wishes select.
pub fn firmware_describe(env: &HostEnv, include: &[String], exclude: &[String]) -> Result<String> {
    let (_, json) =
        firmware::select_descriptor(&read_descriptors(env), qemu_arch()?, include, exclude)?;
    serde_json::to_string_pretty(&json)
        .map_err(|e| Error::new(format!("Failed to output JSON: {e}")))
}

/// What kind of kernel `path` is (UKI, EFI-stub PE kernel, or neither), from its first bytes.
fn inspect_kernel(path: &Path) -> Result<firmware::KernelKind> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut head))
        .map_err(|e| {
            Error::io(
                format!("Failed to determine '{}' kernel image type", path.display()),
                e,
            )
        })?;
    Ok(firmware::kernel_kind(&head))
}

/// Lists the firmware descriptors for `--firmware=list`.
pub fn firmware_list(env: &HostEnv) -> Vec<PathBuf> {
    let xdg = (env.var)("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let home = (env.var)("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    firmware::list_descriptors(&firmware::search_dirs(xdg.as_deref(), home.as_deref()))
}

/// The device node exists and this process may open it read-write.
fn device_usable(path: &str) -> bool {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .is_ok()
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    crate::sys::getrandom(&mut buf);
    buf
}

/// Where the per-VM runtime directory goes: `$XDG_RUNTIME_DIR/systemd` for users that have one,
/// `/run/systemd` for root, else `$TMPDIR` (or /tmp).
/// The VM generation ID: like 259, derived from the service's `$INVOCATION_ID` when vmspawn runs
/// as a unit (so a restart of the unit is a new generation, and the same invocation keeps it),
/// random otherwise.
fn vmgenid(invocation_id: Option<&str>) -> [u8; 16] {
    match invocation_id.and_then(crate::parse::parse_uuid) {
        Some(invocation) => invocation_app_specific(&invocation),
        None => random_bytes::<16>(),
    }
}

/// systemd's `sd_id128_get_invocation_app_specific()` with vmspawn's application ID: HMAC-SHA256
/// keyed with the invocation ID over the application ID, the first 16 bytes made a v4 UUID.
fn invocation_app_specific(invocation: &[u8; 16]) -> [u8; 16] {
    use hmac::Mac;
    const VMGENID_APP_ID: [u8; 16] = [
        0xbd, 0x84, 0x6d, 0xe3, 0xe4, 0x7d, 0x4b, 0x6c, 0xa6, 0x85, 0x4a, 0x87, 0x0f, 0x3c, 0xa3,
        0xa0,
    ];
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(invocation)
        .expect("HMAC takes a key of any length");
    mac.update(&VMGENID_APP_ID);
    let digest = mac.finalize().into_bytes();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// `$RUNTIME_DIRECTORY` (a unit's `RuntimeDirectory=`; its first path if it names several):
/// the VM's runtime files go there directly, and the service manager, not vmspawn, removes the
/// directory. Only an absolute path counts.
pub fn managed_runtime_dir(var: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let value = var("RUNTIME_DIRECTORY")?;
    let first = value.to_str()?.split(':').next()?.to_string();
    let path = PathBuf::from(first);
    path.is_absolute().then_some(path)
}

fn runtime_base(env: &HostEnv) -> PathBuf {
    if let Some(xdg) = (env.var)("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        && xdg.is_absolute()
        && xdg.is_dir()
    {
        return xdg.join("systemd");
    }
    if env.is_root && Path::new("/run").is_dir() {
        return PathBuf::from("/run/systemd");
    }
    (env.var)("TMPDIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn check_readable(path: &Path, what: &str) -> Result<()> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| Error::io(format!("Failed to open {what} '{}'", path.display()), e))
}

/// What this host offers for the VM `config` describes. Only looks: nothing is created,
/// opened for the VM or asked of the privileged helper here (that is `acquire`).
pub fn discover(config: &Config, env: &HostEnv) -> Result<HostFacts> {
    let arch = qemu_arch()?;
    let path_var = (env.var)("PATH");

    let root = match (&config.image, &config.directory) {
        (Some(image), _) => RootFacts::Image(inspect_image(config, image, arch)?),
        (None, Some(directory)) => RootFacts::Directory(inspect_directory(config, directory)?),
        (None, None) => {
            return Err(Error::new(
                "No disk image or directory given. Pass the VM's disk image with --image=PATH (or -i PATH), \
                 or its root directory with --directory=PATH (or -D PATH).",
            ));
        }
    };

    if let Some(kernel) = &config.linux {
        check_readable(kernel, "kernel")?;
    }
    for initrd in &config.initrds {
        check_readable(initrd, "initrd")?;
    }
    let needs_virtiofsd = matches!(root, RootFacts::Directory(_))
        || !config.binds.is_empty()
        || !config.bind_users.is_empty();
    let caller_uid = nix::unistd::geteuid().as_raw();
    let bind_users = config
        .bind_users
        .iter()
        .map(|name| resolve_bind_user(name, caller_uid))
        .collect::<Result<Vec<_>>>()?;

    let mut extra_drives = Vec::new();
    for drive in &config.extra_drives {
        let path = &drive.path;
        std::fs::metadata(path)
            .map_err(|e| Error::io(format!("Failed to stat '{}'", path.display()), e))?;
        let (facts, _) = disk::inspect(path)?;
        extra_drives.push(DriveInfo {
            path: path.clone(),
            // An explicit FORMAT: beats the header.
            format: drive.format.unwrap_or(facts.format),
            is_block_device: facts.is_block_device,
        });
    }

    // The kernel booted directly, and with it the firmware (only UEFI is looked up).
    let kernel_kind = match (&config.linux, &root) {
        (Some(kernel), _) => Some(inspect_kernel(kernel)?),
        (None, RootFacts::Directory(DirectoryInfo { boot: Some(b), .. })) => {
            Some(inspect_kernel(&b.kernel)?)
        }
        _ => None,
    };
    let firmware_kind = firmware::resolve(config, kernel_kind, config.linux.is_some())?;
    let firmware = if firmware_kind == crate::config::FirmwareKind::Uefi {
        Some(find_firmware(config, arch, env)?)
    } else {
        None
    };
    let qemu_binary = find_qemu(arch, path_var.as_ref())?;
    // --console=gui: the display server, and whether this QEMU can show a window on it.
    let display = if config.console == crate::config::ConsoleMode::Gui {
        Some(crate::gui::discover(env.var, &qemu_binary, arch)?)
    } else {
        None
    };
    let suffix: String = random_bytes::<8>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    Ok(HostFacts {
        qemu_arch: arch.to_string(),
        qemu_binary,
        firmware,
        kernel_kind,
        nvram_auto_problem: nvram_auto_problem(root.path()),
        kvm_usable: config.kvm != Tristate::No && device_usable("/dev/kvm"),
        kvm_passed: env.passed.kvm.is_some(),
        helper_installed: helper::installed(env.var),
        net_admin: has_net_admin(),
        tpm_auto_state_problem: tpm_auto_state_problem(root.path()),
        root,
        extra_drives,
        runtime_dir: match managed_runtime_dir(env.var) {
            Some(dir) => dir,
            None => runtime_base(env).join(format!("vmspawn.{suffix}")),
        },
        runtime_dir_managed: managed_runtime_dir(env.var).is_some(),
        hostname: hostname(),
        vmgenid: vmgenid(
            (env.var)("INVOCATION_ID")
                .as_deref()
                .and_then(|v| v.to_str()),
        ),
        display,
        stdin_is_tty: nix::unistd::isatty(libc::STDIN_FILENO).unwrap_or(false),
        swtpm: if config.tpm == Tristate::No {
            None
        } else {
            find_swtpm(path_var.as_ref())
        },
        virtiofsd: if needs_virtiofsd {
            find_virtiofsd(path_var.as_ref())
        } else {
            None
        },
        bind_users,
        caller_uid,
        vsock: VsockFacts {
            passed_device: env.passed.vhost_vsock.is_some(),
            kernel_device: config.vsock != Tristate::No && device_usable("/dev/vhost-vsock"),
            kernel_device_exists: Path::new("/dev/vhost-vsock").exists(),
            vhost_user: if config.vsock == Tristate::No {
                None
            } else {
                find_in_path("vhost-device-vsock", path_var.as_ref())
            },
        },
        ssh_keygen: if config.pass_ssh_key == Some(false) {
            None
        } else {
            find_in_path("ssh-keygen", path_var.as_ref())
        },
        journal_remote_limits: match (
            config.journal_limits.any(),
            config
                .forward_journal
                .as_ref()
                .and_then(|_| find_journal_remote(path_var.as_ref())),
        ) {
            (true, Some(binary)) => Some(journal_remote_limits(&binary)),
            _ => None,
        },
        journal_remote: config
            .forward_journal
            .as_ref()
            .and_then(|_| find_journal_remote(path_var.as_ref())),
        journal_output_problem: config
            .forward_journal
            .as_deref()
            .and_then(journal_output_problem),
    })
}

fn inspect_image(config: &Config, image: &Path, arch: &str) -> Result<ImageInfo> {
    let (facts, mut file) = disk::inspect(image)?;
    // --image-format= beats the header.
    let format = config.image_format.unwrap_or(facts.format);
    let needs_root =
        config.linux.is_some() && format == disk::ImageFormat::Raw && !config.cmdline_sets_root();
    let root_partition = if needs_root {
        disk::find_root_partition(&mut file, arch).map_err(|e| {
            Error::new(format!(
                "Failed to read the partition table of '{}': {e}",
                image.display()
            ))
        })?
    } else {
        None
    };
    Ok(ImageInfo {
        path: image.to_path_buf(),
        format,
        is_block_device: facts.is_block_device,
        root_partition,
    })
}

/// A `--directory=` tree, and without `--linux=` the kernel its boot entries name.
fn inspect_directory(config: &Config, directory: &Path) -> Result<DirectoryInfo> {
    let metadata = std::fs::metadata(directory).map_err(|e| {
        Error::io(
            format!(
                "Failed to open the root directory '{}'",
                directory.display()
            ),
            e,
        )
    })?;
    if !metadata.is_dir() {
        return Err(Error::new(format!(
            "--directory={}: not a directory. Boot a disk image with --image= instead.",
            directory.display()
        )));
    }
    let boot = if config.linux.is_none() {
        let entry = crate::bootentry::discover(directory)?;
        check_readable(&entry.kernel, "kernel")?;
        for initrd in &entry.initrds {
            check_readable(initrd, "initrd")?;
        }
        Some(entry)
    } else {
        None
    };
    // Another file system than its parent's, or `/`.
    let is_mount_point = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(directory.join("..")).map_or(true, |parent| {
            parent.dev() != metadata.dev() || parent.ino() == metadata.ino()
        })
    };
    Ok(DirectoryInfo {
        path: directory.to_path_buf(),
        is_mount_point,
        boot,
    })
}

/// virtiofsd where 259 looks for it ($PATH, then /usr/libexec and /usr/lib), and which of the
/// options vmspawn may need it has (its --help lists them).
fn find_virtiofsd(path_var: Option<&OsString>) -> Option<VirtiofsdFacts> {
    let binary = find_in_path("virtiofsd", path_var).or_else(|| {
        ["/usr/libexec/virtiofsd", "/usr/lib/virtiofsd"]
            .map(PathBuf::from)
            .into_iter()
            .find(|p| is_executable(p))
    })?;
    let help = std::process::Command::new(&binary)
        .arg("--help")
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    Some(VirtiofsdFacts {
        translate: help.contains("--translate-uid"),
        readonly: help.contains("--readonly"),
        file_handles_option: help.contains("--inode-file-handles"),
        binary,
    })
}

/// A `--bind-user=` user from the host's user database, checked as 259 checks it.
fn resolve_bind_user(name: &str, caller_uid: u32) -> Result<BindUserFacts> {
    use nix::unistd::{Group, User};
    let user = User::from_name(name)
        .map_err(|e| Error::new(format!("Failed to resolve user '{name}': {}", e.desc())))?
        .ok_or_else(|| {
            Error::new(format!(
                "Failed to resolve user '{name}': No such user in the host's user database."
            ))
        })?;
    let group = Group::from_gid(user.gid).ok().flatten();
    crate::virtiofs::check_bind_user(
        name,
        user.uid.as_raw(),
        group.as_ref().map(|g| g.name.as_str()),
        caller_uid,
    )?;
    Ok(BindUserFacts {
        name: name.to_string(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        home: user.dir,
        shell: user.shell,
        hashed_password: shadow_hash(name),
    })
}

/// The user's password hash from /etc/shadow, where this process may read it (as root).
fn shadow_hash(name: &str) -> Option<String> {
    let shadow = std::fs::read_to_string("/etc/shadow").ok()?;
    shadow.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name))
            .then(|| fields.next())
            .flatten()
            .filter(|hash| !hash.is_empty())
            .map(str::to_string)
    })
}

/// Whether this process has CAP_NET_ADMIN in its effective set.
fn has_net_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string()))
        })
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|caps| caps & (1 << 12/* CAP_NET_ADMIN */) != 0)
}

/// swtpm and swtpm_setup in $PATH, and whether this swtpm has its own seccomp profile.
fn find_swtpm(path_var: Option<&OsString>) -> Option<SwtpmFacts> {
    let swtpm = find_in_path("swtpm", path_var)?;
    // `--print-capabilities` lists "cmdarg-seccomp" on builds with a seccomp profile.
    let seccomp = std::process::Command::new(&swtpm)
        .args(["socket", "--print-capabilities"])
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("\"cmdarg-seccomp\""));
    Some(SwtpmFacts {
        swtpm,
        swtpm_setup: find_in_path("swtpm_setup", path_var),
        seccomp,
    })
}

/// Why the default UEFI variable store next to the image (`<image>.efinvramstate`) cannot be
/// used, if it cannot: it must be a regular file we can write, or be creatable.
fn nvram_auto_problem(root: &Path) -> Option<String> {
    use nix::unistd::{AccessFlags, access};
    let state = firmware::auto_nvram_state(root);
    match std::fs::metadata(&state) {
        Ok(m) if !m.is_file() => Some(format!("'{}' is not a regular file", state.display())),
        Ok(_) => access(&state, AccessFlags::W_OK | AccessFlags::R_OK)
            .err()
            .map(|e| format!("'{}' is not writable: {}", state.display(), e.desc())),
        Err(_) => {
            let parent = state.parent().unwrap_or(Path::new("/"));
            access(parent, AccessFlags::W_OK | AccessFlags::X_OK)
                .err()
                .map(|e| {
                    format!(
                        "'{}' cannot be created in '{}': {}",
                        state.display(),
                        parent.display(),
                        e.desc()
                    )
                })
        }
    }
}

/// Why the default TPM state directory next to the image (`<image>.tpmstate`) cannot be used,
/// if it cannot: it must be a directory we can write, or be creatable.
fn tpm_auto_state_problem(image: &Path) -> Option<String> {
    use nix::unistd::{AccessFlags, access};
    let state = crate::tpm::auto_state_dir(image);
    let writable = |p: &Path| access(p, AccessFlags::W_OK | AccessFlags::X_OK);
    match std::fs::metadata(&state) {
        Ok(m) if !m.is_dir() => Some(format!("'{}' is not a directory", state.display())),
        Ok(_) => writable(&state)
            .err()
            .map(|e| format!("'{}' is not writable: {}", state.display(), e.desc())),
        Err(_) => {
            let parent = state.parent().unwrap_or(Path::new("/"));
            writable(parent).err().map(|e| {
                format!(
                    "'{}' cannot be created in '{}': {}",
                    state.display(),
                    parent.display(),
                    e.desc()
                )
            })
        }
    }
}

/// Why `--forward-journal=PATH` cannot be written, if it cannot: a `*.journal` file must be a
/// writable file or creatable in an existing directory; a directory must be writable or
/// creatable below its nearest existing ancestor.
fn journal_output_problem(path: &Path) -> Option<String> {
    use nix::unistd::{AccessFlags, access};
    let single = crate::journal::is_single_file(path);
    let writable = |p: &Path| access(p, AccessFlags::W_OK | AccessFlags::X_OK);
    let denied = |p: &Path, e: nix::errno::Errno| {
        Some(format!("'{}' is not writable: {}", p.display(), e.desc()))
    };
    match std::fs::metadata(path) {
        Ok(m) if single && !m.is_file() => Some(format!(
            "'{}' exists and is not a regular file",
            path.display()
        )),
        Ok(_) if single => access(path, AccessFlags::W_OK)
            .err()
            .and_then(|e| denied(path, e)),
        Ok(m) if !m.is_dir() => Some(format!(
            "'{}' exists and is not a directory (a path ending in .journal names one file)",
            path.display()
        )),
        Ok(_) => writable(path).err().and_then(|e| denied(path, e)),
        Err(_) => {
            let mut parent = path.parent();
            while let Some(p) = parent {
                match std::fs::metadata(p) {
                    Ok(m) if m.is_dir() => {
                        return writable(p).err().and_then(|e| denied(p, e));
                    }
                    Ok(_) => return Some(format!("'{}' is not a directory", p.display())),
                    Err(_) if single => {
                        return Some(format!("the directory '{}' does not exist", p.display()));
                    }
                    Err(_) => parent = p.parent(),
                }
            }
            None
        }
    }
}

/// systemd-journal-remote: systemd's libexec directory first, then $PATH (259's order).
/// Whether systemd-journal-remote takes `--max-use=` and the other limits as options (it says
/// so in its `--help`), and its version line, for messages. Only asked when limits are given.
fn journal_remote_limits(binary: &Path) -> crate::plan::JournalRemoteLimits {
    let output = |arg: &str| {
        std::process::Command::new(binary)
            .arg(arg)
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    crate::plan::JournalRemoteLimits {
        takes_options: output("--help").contains("--max-use"),
        version: output("--version")
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
    }
}

fn find_journal_remote(path_var: Option<&OsString>) -> Option<PathBuf> {
    let libexec = PathBuf::from("/usr/lib/systemd/systemd-journal-remote");
    if is_executable(&libexec) {
        return Some(libexec);
    }
    find_in_path("systemd-journal-remote", path_var)
}

/// Without `--image=` and `--directory=`: `-M NAME` looks up a machine image (a raw file or a
/// directory) by that name, as `machinectl list-images` would; without `-M` the current
/// directory is the root.
pub fn resolve_image(config: &mut Config, env: &HostEnv) -> Result<()> {
    if config.image.is_some() || config.directory.is_some() {
        return Ok(());
    }
    let Some(name) = config.machine.clone() else {
        // As 259: the current directory is the root.
        let cwd = std::env::current_dir()
            .map_err(|e| Error::io("Failed to determine current directory", e))?;
        config.directory = Some(cwd);
        return Ok(());
    };
    let mut dirs = Vec::new();
    // As 262: the user's own images too in the user scope, only the system's with --system.
    if crate::register::effective_scope(config.runtime_scope, env.is_root)
        == crate::config::RuntimeScope::User
    {
        if let Some(home) = (env.var)("HOME").filter(|h| !h.is_empty()) {
            dirs.push(PathBuf::from(home).join(".local/state/machines"));
        }
    }
    dirs.extend(
        [
            "/etc/machines",
            "/run/machines",
            "/var/lib/machines",
            "/usr/local/lib/machines",
            "/usr/lib/machines",
        ]
        .map(PathBuf::from),
    );
    for dir in &dirs {
        let raw = dir.join(format!("{name}.raw"));
        if raw.is_file() {
            config.image = Some(raw);
            return Ok(());
        }
        if dir.join(&name).is_dir() {
            config.directory = Some(dir.join(&name));
            return Ok(());
        }
    }
    Err(Error::new(format!(
        "No image for machine '{name}'. Looked for {name}.raw in {}; or pass --image=PATH.",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmgenid_follows_the_invocation_id() {
        // Reference value from systemd itself: `systemd-id128 machine-id
        // --app-specific=bd846de3e47d4b6ca6854a870f3ca3a0` on a host whose machine ID is the
        // key below (the same derivation as for the invocation ID).
        let key = crate::parse::parse_uuid("3d1219c7c4c5404aaa1f6d2a48adfda4").unwrap();
        let want = crate::parse::parse_uuid("e2c3b604575f439caf7dbac49ad3d471").unwrap();
        assert_eq!(invocation_app_specific(&key), want);
        assert_eq!(vmgenid(Some("3d1219c7c4c5404aaa1f6d2a48adfda4")), want);
        // Without (or with a malformed) invocation ID: random, so two runs differ.
        assert_ne!(vmgenid(None), vmgenid(None));
        assert_ne!(vmgenid(Some("not-an-id")), want);
    }
}
