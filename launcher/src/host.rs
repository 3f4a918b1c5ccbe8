//! Host discovery: everything the planner needs to know about this machine — the QEMU binary,
//! firmware, whether KVM is usable, the disk images, where temporary files go.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::disk;
use crate::error::{Error, Result};
use crate::firmware;
use crate::helper::{self, HelperClient};
use crate::network;
use crate::parse::Tristate;
use crate::plan::{self, DriveInfo, HostFacts, ImageInfo, TapFacts};
use crate::register::{self, Registrar};

/// The environment discovery reads, passed in for testability.
pub struct HostEnv<'a> {
    pub var: &'a dyn Fn(&str) -> Option<OsString>,
    pub is_root: bool,
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
    use std::os::unix::fs::PermissionsExt;
    let default = OsString::from("/usr/local/bin:/usr/bin:/bin");
    let dirs = path_var.unwrap_or(&default);
    std::env::split_paths(dirs)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
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
        return firmware::load_explicit(path, &content, config.secure_boot);
    }
    let xdg = (env.var)("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let home = (env.var)("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let dirs = firmware::search_dirs(xdg.as_deref(), home.as_deref());
    let descriptors: Vec<(PathBuf, Vec<u8>)> = firmware::list_descriptors(&dirs)
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|c| (p, c)))
        .collect();
    firmware::select(&descriptors, arch, config.secure_boot)
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

fn kvm_usable() -> bool {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/kvm")
        .is_ok()
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let got = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if got > 0 {
            filled += got as usize;
        }
    }
    buf
}

/// Where the per-VM runtime directory goes: `$XDG_RUNTIME_DIR/systemd` for users that have one,
/// `/run/systemd` for root, else `$TMPDIR` (or /tmp).
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

/// Descriptors obtained from the privileged helper, for QEMU, and the connection that will
/// register the VM with machined once QEMU runs.
#[derive(Default)]
pub struct Resources {
    pub tap: Option<std::os::fd::OwnedFd>,
    pub kvm: Option<std::os::fd::OwnedFd>,
    pub registration: Option<register::Connection>,
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

fn machine_id() -> Result<[u8; 16]> {
    let text = std::fs::read_to_string("/etc/machine-id").map_err(|e| {
        Error::io(
            "Failed to read /etc/machine-id (needed for the TAP's MAC address)",
            e,
        )
    })?;
    crate::parse::parse_uuid(text.trim())
        .ok_or_else(|| Error::new("/etc/machine-id is not a valid machine ID"))
}

/// Gets from the privileged helper what this user lacks: the TAP for `--network-tap` and, when
/// KVM is wanted but /dev/kvm cannot be opened, an fd of it. Runs before any confinement.
fn privileged_steps(config: &Config, env: &HostEnv, facts: &mut HostFacts) -> Result<Resources> {
    let mut resources = Resources::default();
    let mut client: Option<HelperClient> = None;
    let interactive = facts.stdin_is_tty && !config.no_ask_password;
    if config.network == crate::config::Network::Tap {
        let machine = plan::machine_name(config, &facts.hostname)?;
        if has_net_admin() {
            facts.tap = Some(TapFacts::QemuCreates {
                ifname: network::tap_ifname(&machine),
                mac: network::tap_mac(&machine_id()?, &machine),
            });
        } else {
            let helper = client.insert(HelperClient::connect(
                env.var,
                "--network-tap",
                interactive,
            )?);
            let (ifname, fd) = helper.create_tap(&machine)?;
            facts.tap = Some(TapFacts::FromHelper { ifname });
            resources.tap = Some(fd);
        }
    }
    let want_kvm = match config.kvm {
        Tristate::Yes => true,
        Tristate::Auto => helper::installed(env.var),
        Tristate::No => false,
    };
    if want_kvm && !facts.kvm_usable {
        let helper = match client.as_mut() {
            Some(helper) => Ok(helper),
            None => {
                HelperClient::connect(env.var, "--kvm=yes without access to /dev/kvm", interactive)
                    .map(|c| client.insert(c))
            }
        };
        match helper.and_then(HelperClient::open_kvm) {
            Ok(fd) => {
                resources.kvm = Some(fd);
                facts.kvm_fd_from_helper = true;
            }
            // Auto falls back to software emulation; an explicit --kvm=yes must not.
            Err(e) if config.kvm == Tristate::Yes => return Err(e),
            Err(_) => {}
        }
    }
    // Connect now, while the launcher may still start the setuid helper; the registration
    // itself needs QEMU's pid and happens once it runs.
    if config.register != Some(false) {
        let required = config.register == Some(true);
        let registrar = register::choose(env.var, env.is_root, &|p: &Path| p.exists());
        let connection = match &registrar {
            None if required => {
                return Err(register::nothing_to_register_with(env.is_root, env.var));
            }
            None => None,
            Some(Registrar::Varlink(path)) => {
                Some(register::Varlink::connect(path).map(register::Connection::Varlink))
            }
            Some(Registrar::Helper) => Some(
                match client.take() {
                    Some(helper) => Ok(helper),
                    None => HelperClient::connect(env.var, "--register=yes", interactive),
                }
                .map(register::Connection::Helper),
            ),
        };
        match connection {
            Some(Ok(connection)) => {
                facts.registrar = registrar;
                resources.registration = Some(connection);
            }
            Some(Err(e)) if required => return Err(e),
            // Unset --register=: run unregistered.
            Some(Err(_)) | None => {}
        }
    }
    Ok(resources)
}

pub fn discover(config: &Config, env: &HostEnv) -> Result<(HostFacts, Resources)> {
    let mut facts = discover_facts(config, env)?;
    let resources = privileged_steps(config, env, &mut facts)?;
    Ok((facts, resources))
}

fn discover_facts(config: &Config, env: &HostEnv) -> Result<HostFacts> {
    let arch = qemu_arch()?;
    let path_var = (env.var)("PATH");

    let image = config.image.as_ref().ok_or_else(|| {
        Error::new("No disk image given. Pass the VM's disk image with --image=PATH (or -i PATH).")
    })?;
    let (facts, mut file) = disk::inspect(image)?;
    let needs_root = config.linux.is_some()
        && facts.format == disk::ImageFormat::Raw
        && !config
            .kernel_cmdline_extra
            .iter()
            .any(|w| w.starts_with("root=") || w.starts_with("mount.usr="));
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
    drop(file);

    if let Some(kernel) = &config.linux {
        check_readable(kernel, "kernel")?;
    }
    for initrd in &config.initrds {
        check_readable(initrd, "initrd")?;
    }

    let mut extra_drives = Vec::new();
    for path in &config.extra_drives {
        std::fs::metadata(path)
            .map_err(|e| Error::io(format!("Failed to stat '{}'", path.display()), e))?;
        let (facts, _) = disk::inspect(path)?;
        extra_drives.push(DriveInfo {
            format: facts.format,
            is_block_device: facts.is_block_device,
        });
    }

    let firmware = find_firmware(config, arch, env)?;
    let qemu_binary = find_qemu(arch, path_var.as_ref())?;
    let suffix: String = random_bytes::<8>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    Ok(HostFacts {
        qemu_arch: arch.to_string(),
        qemu_binary,
        firmware,
        kvm_usable: config.kvm != Tristate::No && kvm_usable(),
        kvm_fd_from_helper: false,
        tap: None,
        image: Some(ImageInfo {
            format: facts.format,
            is_block_device: facts.is_block_device,
            root_partition,
        }),
        extra_drives,
        runtime_dir: runtime_base(env).join(format!("vmspawn.{suffix}")),
        hostname: hostname(),
        vmgenid: random_bytes::<16>(),
        display_paths: if config.console == crate::config::ConsoleMode::Gui {
            display_paths(env)
        } else {
            Vec::new()
        },
        registrar: None,
        stdin_is_tty: nix::unistd::isatty(libc::STDIN_FILENO).unwrap_or(false),
    })
}

/// Without `--image=` and `--directory=`: `-M NAME` looks up a machine image by that name, as
/// `machinectl list-images` would; without `-M` the current directory would be the root, which
/// needs directory support.
pub fn resolve_image(config: &mut Config, env: &HostEnv) -> Result<()> {
    if config.image.is_some() || config.directory.is_some() {
        return Ok(());
    }
    let Some(name) = config.machine.clone() else {
        return Err(Error::new(
            "No disk image given, and booting the current directory (--directory=) is not supported yet by this \
             vmspawn. Pass the VM's disk image with --image=PATH (or -i PATH).",
        ));
    };
    let mut dirs = Vec::new();
    if !env.is_root {
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
            return Err(Error::new(format!(
                "Machine '{name}' is a directory image ({}), and booting a directory (--directory=) is not supported yet by this vmspawn.",
                dir.join(&name).display()
            )));
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

/// Files a graphical QEMU needs to reach the display server.
fn display_paths(env: &HostEnv) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(xauthority) = (env.var)("XAUTHORITY").filter(|v| !v.is_empty()) {
        paths.push(PathBuf::from(xauthority));
    } else if let Some(home) = (env.var)("HOME").filter(|v| !v.is_empty()) {
        paths.push(PathBuf::from(home).join(".Xauthority"));
    }
    if let Some(runtime) = (env.var)("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        paths.push(PathBuf::from(runtime));
    }
    paths
}
