//! The planner: a validated `Config` plus discovered `HostFacts` in, first the `Needs` (what
//! must be acquired), then — given what was `Acquired` — a `Plan` out. Pure: no I/O, no clock,
//! no randomness. Everything the runner will do (every process of the VM with its argv, fds,
//! confinement, readiness and stop; files to create, copies, image growth, console handling)
//! is decided here, so every option has a fast golden test.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::acquire::{Acquired, KvmAccess, KvmNeed, Needs, NetworkSetup, TapFacts};
use crate::bootentry::BootEntry;
use crate::config::{Background, Config, ConsoleMode, ConsoleTransport, Credential, FirmwareKind};
use crate::disk::{DiskType, ImageFormat, RootKind, RootPartition};
use crate::error::{Error, Result};
use crate::firmware::{Firmware, KernelKind};
use crate::parse::{self, Tristate};
use crate::process::{
    EnvPlan, FdName, FdTable, Jail, Lifetime, ProcessPlan, Readiness, Role, StdioPlan, Stop,
};
use crate::register::Registrar;
use crate::sandbox::{QemuSockets, SandboxRules, SeccompTable};
use crate::virtiofs::{BindUserFacts, VirtiofsdFacts};
use crate::vsock::VsockFacts;

/// What the host looks like, as far as planning is concerned. Gathered by `host::discover`.
#[derive(Clone, Debug)]
pub struct HostFacts {
    /// The native architecture in QEMU's naming (x86_64, aarch64, ...).
    pub qemu_arch: String,
    pub qemu_binary: PathBuf,
    /// The UEFI firmware; looked up only when the VM boots with UEFI.
    pub firmware: Option<Firmware>,
    /// What the directly booted kernel (`--linux=`, or a directory's boot entry) is.
    pub kernel_kind: Option<KernelKind>,
    /// Why `<image>.efinvramstate` cannot be used, if it cannot.
    pub nvram_auto_problem: Option<String>,
    /// /dev/kvm can be opened read-write by this process.
    pub kvm_usable: bool,
    /// Socket activation passed an fd of /dev/kvm (named `kvm`).
    pub kvm_passed: bool,
    /// A privileged helper is installed (service socket or setuid binary).
    pub helper_installed: bool,
    /// This process has CAP_NET_ADMIN (QEMU can create a TAP itself).
    pub net_admin: bool,
    /// What the VM boots from: a disk image or a directory tree.
    pub root: RootFacts,
    /// One entry per `--extra-drive`, in order.
    pub extra_drives: Vec<DriveInfo>,
    /// The per-VM private directory (not yet created); all temporary files go below it.
    pub runtime_dir: PathBuf,
    /// `runtime_dir` is `$RUNTIME_DIRECTORY`: it exists, and its manager removes it.
    pub runtime_dir_managed: bool,
    /// The host's hostname, for the machine name of `-D /`.
    pub hostname: String,
    /// The VM generation ID for `-device vmgenid`.
    pub vmgenid: [u8; 16],
    /// The display server and what this QEMU offers for it; only gathered for `--console=gui`.
    pub display: Option<crate::gui::DisplayFacts>,
    /// Standard input is a terminal: polkit may ask for a password there.
    pub stdin_is_tty: bool,
    /// swtpm, when it is installed (and --tpm= is not no).
    pub swtpm: Option<SwtpmFacts>,
    /// Why `<image>.tpmstate` cannot be used, if it cannot.
    pub tpm_auto_state_problem: Option<String>,
    /// virtiofsd, when the VM has a directory root or shares.
    pub virtiofsd: Option<VirtiofsdFacts>,
    /// The `--bind-user=` users, in order.
    pub bind_users: Vec<BindUserFacts>,
    /// vmspawn's effective UID (virtiofsd runs as it).
    pub caller_uid: u32,
    /// The ways to a vsock device (when --vsock= is not no).
    pub vsock: VsockFacts,
    /// ssh-keygen, when installed (and --pass-ssh-key= is not no).
    pub ssh_keygen: Option<PathBuf>,
    /// systemd-journal-remote, when installed (looked up for --forward-journal= only).
    pub journal_remote: Option<PathBuf>,
    /// Why the --forward-journal= path cannot be written, if it cannot.
    pub journal_output_problem: Option<String>,
    /// What systemd-journal-remote can do with `--forward-journal-max-use=` and friends (only
    /// looked up when one is given).
    pub journal_remote_limits: Option<JournalRemoteLimits>,
}

/// Whether systemd-journal-remote takes the file limits as options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalRemoteLimits {
    /// `--max-use=`, `--keep-free=`, `--max-file-size=`, `--max-files=` (newer than 254).
    pub takes_options: bool,
    /// Its `--version` line ("systemd 254 (254.26-1~bpo12+1)").
    pub version: String,
}

/// The VM's root.
#[derive(Clone, Debug)]
pub enum RootFacts {
    Image(ImageInfo),
    Directory(DirectoryInfo),
}

impl RootFacts {
    pub fn path(&self) -> &Path {
        match self {
            RootFacts::Image(image) => &image.path,
            RootFacts::Directory(dir) => &dir.path,
        }
    }
}

/// `--directory=`: a tree served over virtio-fs.
#[derive(Clone, Debug)]
pub struct DirectoryInfo {
    pub path: PathBuf,
    /// The directory is a mount point (or `/`): an `--ephemeral` copy goes inside it, as in 262.
    pub is_mount_point: bool,
    /// The boot entry found in the tree; only looked up without `--linux=`.
    pub boot: Option<BootEntry>,
}

/// The virtual TPM's programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwtpmFacts {
    pub swtpm: PathBuf,
    pub swtpm_setup: Option<PathBuf>,
    /// swtpm has its own seccomp profile (`--seccomp action=kill`).
    pub seccomp: bool,
}

/// Registration with systemd-machined, once QEMU runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationPlan {
    pub via: Registrar,
    pub request: crate::register::Request,
    /// `--register=yes`: failing to register is fatal. Unset: failures are reported and the
    /// VM runs unregistered.
    pub required: bool,
}

#[derive(Clone, Debug)]
pub struct ImageInfo {
    pub path: PathBuf,
    pub format: ImageFormat,
    pub is_block_device: bool,
    /// The GPT root (or usr) partition; only looked up when a direct kernel boot needs it.
    pub root_partition: Option<RootPartition>,
}

#[derive(Clone, Debug)]
pub struct DriveInfo {
    pub path: PathBuf,
    pub format: ImageFormat,
    pub is_block_device: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsolePlan {
    /// vmspawn forwards between its terminal and a pseudo-terminal that becomes QEMU's stdio.
    Forwarded {
        read_only: bool,
        background: Background,
    },
    /// QEMU owns the terminal (its stdio is vmspawn's).
    Native,
    /// A graphical window; stdio is inherited but unused by the guest console.
    Gui,
    /// No console at all (`--console=headless`); QEMU's stdin is /dev/null.
    Headless,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileToWrite {
    pub path: PathBuf,
    pub contents: Vec<u8>,
}

/// The SMBIOS type 11 string that passes credential `id` with `value` (any bytes).
pub fn smbios_credential(id: &str, value: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(value);
    format!("io.systemd.credential.binary:{id}={encoded}").into_bytes()
}

/// A credential whose value is a file a setup step makes (the SSH public key), written as an
/// SMBIOS credential file once the setup steps have run, before QEMU starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialFromFile {
    /// The SMBIOS file QEMU reads.
    pub path: PathBuf,
    pub id: String,
    /// The file whose contents are the value.
    pub source: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrowImage {
    pub path: PathBuf,
    /// Target size, already rounded up to a multiple of 4096.
    pub size: u64,
}

/// The UEFI variable store: a copy of the template, made for each VM or, when persistent,
/// only when the file does not exist yet (and kept after the VM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvramPlan {
    pub template: PathBuf,
    pub path: PathBuf,
    pub persistent: bool,
}

/// A directory a process keeps state in, mode 0700.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDir {
    pub path: PathBuf,
    /// What it is, for messages ("TPM state directory").
    pub what: &'static str,
    /// Outside the runtime directory and kept after the VM (created with its parents); else a
    /// directory inside the runtime directory, removed with it.
    pub persistent: bool,
}

/// A listening Unix socket vmspawn binds before the processes start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketPlan {
    pub name: FdName,
    pub path: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub machine: String,
    pub runtime_dir: PathBuf,
    /// Files (credentials, SMBIOS strings) written into the runtime directory, mode 0600.
    pub files: Vec<FileToWrite>,
    /// Credentials made from what setup steps wrote, before QEMU starts.
    pub credentials_from_files: Vec<CredentialFromFile>,
    /// The UEFI variable store (UEFI boots only).
    pub nvram: Option<NvramPlan>,
    /// (sources, destination) when several initrds are merged into one.
    pub initrd_merge: Option<(Vec<PathBuf>, PathBuf)>,
    pub grow_image: Option<GrowImage>,
    /// `--ephemeral` with an image: the overlay vmspawn creates before QEMU starts.
    pub ephemeral_overlay: Option<crate::overlay::OverlayPlan>,
    /// `--ephemeral` with a directory: the copy vmspawn makes before anything starts (the VM's
    /// root; removed at exit by the runtime directory's cleanup process).
    pub ephemeral_copy: Option<crate::ephemeral_dir::CopyPlan>,
    /// State directories, created before any process starts.
    pub state_dirs: Vec<StateDir>,
    /// Listening sockets, bound before any process starts.
    pub sockets: Vec<SocketPlan>,
    /// Every process of the VM, in start order (setup steps, sidecars, QEMU last); the
    /// long-running ones are stopped in reverse order.
    pub processes: Vec<ProcessPlan>,
    pub console: ConsolePlan,
    /// Informational lines for stderr (empty with --quiet).
    pub banner: Vec<String>,
    pub quiet: bool,
    /// Send READY=1 to the service manager as soon as QEMU runs (--notify-ready=no).
    pub ready_at_start: bool,
    /// The guest sends READY=1, STATUS= and EXIT_STATUS= over vsock (`FdName::NotifyListener`).
    pub guest_notifications: bool,
    /// The guest's vsock CID.
    pub vsock_cid: Option<u32>,
    /// vhost-user vsock: the Unix socket through which host programs reach guest ports.
    pub vsock_uds: Option<PathBuf>,
    /// The launcher's own Landlock domain while it supervises (plus its seccomp allow-list);
    /// None with $VMSPAWN_UNCONFINED.
    pub launcher_jail: Option<SandboxRules>,
    /// Printed before the VM starts (e.g. paths in $SYSTEMD_VMSPAWN_QEMU_EXTRA that QEMU will
    /// not be able to open).
    pub warnings: Vec<String>,
    /// Debug-level notes on decisions (e.g. why the VM has no TPM).
    pub notes: Vec<String>,
    pub registration: Option<RegistrationPlan>,
    /// The runtime directory is `$RUNTIME_DIRECTORY`: used as is; vmspawn removes only what
    /// it put there, never the directory.
    pub runtime_dir_managed: bool,
    /// The transient scope unit vmspawn asks its service manager for (None: --keep-unit).
    pub scope: Option<crate::scope::ScopePlan>,
}

impl Plan {
    /// The QEMU process (the planner always puts it last).
    pub fn qemu(&self) -> Option<&ProcessPlan> {
        self.processes.iter().find(|p| p.role == Role::Qemu)
    }
}

/// The QEMU fd set (`--add-fd set=`) of the ephemeral overlay (set 1 is /dev/kvm's).
pub const OVERLAY_FDSET: u32 = 2;

/// QEMU's own seccomp sandbox, with every optional restriction on.
pub const QEMU_SANDBOX: &str =
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

fn multiarch_triple(arch: &str) -> &'static str {
    match arch {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "i386" => "i386-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "riscv64" => "riscv64-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        "ppc" => "powerpc64le-linux-gnu",
        "loongarch64" => "loongarch64-linux-gnu",
        _ => "unknown-linux-gnu",
    }
}

fn push_unique(list: &mut Vec<PathBuf>, path: PathBuf) {
    if !list.contains(&path) {
        list.push(path);
    }
}

/// Absolute paths mentioned in QEMU arguments: whole words, and `key=/path` values.
fn mentioned_paths(args: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for arg in args {
        for part in arg.split(',') {
            let value = part.split_once('=').map_or(part, |(_, v)| v);
            if value.starts_with('/') {
                push_unique(&mut out, PathBuf::from(value));
            }
        }
    }
    out
}

/// sun_path holds 108 bytes, the terminating NUL included.
const SOCKET_PATH_MAX: usize = 107;

/// A Unix socket path (of `what`, for the message) must fit sun_path: an error naming it
/// instead of a bind or connect that fails later.
pub fn check_socket_path(path: &Path, what: &str) -> Result<()> {
    if path.as_os_str().len() > SOCKET_PATH_MAX {
        return Err(Error::new(format!(
            "The {what} would be '{}', longer than the {SOCKET_PATH_MAX} bytes a Unix socket path may \
             have. Set $XDG_RUNTIME_DIR (or $TMPDIR) to a shorter directory.",
            path.display()
        )));
    }
    Ok(())
}

/// /usr, and the prefix each binary is installed under (/usr/local for /usr/local/bin/x).
fn install_prefixes(binaries: &[&Path]) -> Vec<PathBuf> {
    let mut prefixes = vec![PathBuf::from("/usr")];
    for binary in binaries {
        // <prefix>/bin/x, <prefix>/libexec/x, or <prefix>/lib/<package>/x (systemd's helpers).
        let dir = binary.parent();
        let prefix = match dir.and_then(Path::parent) {
            Some(p) if p.file_name().is_some_and(|n| n == "lib") => p.parent(),
            other => other,
        };
        if let Some(prefix) = prefix {
            push_unique(&mut prefixes, prefix.to_path_buf());
        }
    }
    prefixes
}

/// What a program reads to look its user up (getpwuid): ssh-keygen and swtpm_setup do.
pub const USER_DATABASE: [&str; 3] = ["/etc/passwd", "/etc/group", "/etc/nsswitch.conf"];

/// Read and execute rights for a program and the shared libraries it loads, under /usr and
/// under the prefix the program lives in (e.g. /usr/local). The common base of every
/// process's Landlock domain.
pub fn program_rules(binaries: &[&Path], arch: &str) -> SandboxRules {
    let mut rules = SandboxRules {
        scope_abstract_unix: true,
        scope_signal: true,
        ..SandboxRules::default()
    };
    let triple = multiarch_triple(arch);
    for binary in binaries {
        push_unique(&mut rules.exec, binary.to_path_buf());
    }
    for prefix in &install_prefixes(binaries) {
        push_unique(&mut rules.exec, prefix.join("lib").join(triple));
        push_unique(&mut rules.exec, prefix.join("lib64"));
    }
    for lib in [format!("/lib/{triple}"), "/lib64".into()] {
        push_unique(&mut rules.exec, PathBuf::from(lib));
    }
    push_unique(&mut rules.read, PathBuf::from("/etc/ld.so.cache"));
    rules
}

/// QEMU's Landlock domain: read access to its installation and to exactly the files this VM
/// reads, read-write access to the writable images and the runtime directory, the devices it
/// uses, and nothing else. Also the warnings for $SYSTEMD_VMSPAWN_QEMU_EXTRA paths it covers
/// not.
fn qemu_rules(
    config: &Config,
    host: &HostFacts,
    acquired: &Acquired,
    boot: Option<&KernelBoot>,
    display: Option<&crate::gui::DisplayFacts>,
    uefi: Option<(&Firmware, &NvramPlan)>,
) -> (SandboxRules, Vec<String>) {
    let mut q = program_rules(&[&host.qemu_binary], &host.qemu_arch);
    q.allow_tcp_connect = acquired.network == NetworkSetup::UserMode;
    for prefix in &install_prefixes(&[&host.qemu_binary]) {
        push_unique(&mut q.read, prefix.join("share/qemu"));
    }
    for data in [
        "/usr/share/seabios",
        "/usr/lib/ipxe",
        "/usr/share/ipxe",
        "/usr/lib/locale",
    ] {
        push_unique(&mut q.read, PathBuf::from(data));
    }
    // Exactly the files this VM reads.
    if let Some((firmware, _)) = uefi {
        push_unique(&mut q.read, firmware.code.clone());
    }
    if let Some(boot) = boot {
        push_unique(&mut q.read, boot.kernel.clone());
        if let [initrd] = boot.initrds.as_slice() {
            push_unique(&mut q.read, initrd.clone());
        }
    }
    // The entropy source of the virtio-rng device.
    push_unique(&mut q.read, PathBuf::from("/dev/urandom"));
    // QEMU probes for OFD image locks by opening /dev/null.
    q.devices.push(PathBuf::from("/dev/null"));
    if let Some(display) = display {
        crate::gui::add_rules(&mut q, display);
    }
    // Read-write: the runtime directory (NVRAM copy, credentials, merged initrd) and the disks.
    q.write.push(host.runtime_dir.clone());
    if let Some((_, nvram)) = uefi.filter(|(_, n)| n.persistent) {
        push_unique(&mut q.write, nvram.path.clone());
    }
    if let RootFacts::Image(image) = &host.root {
        // A CD-ROM, and an ephemeral VM's image (only the overlay's backing file): read-only.
        let list = if config.image_disk_type.read_only() || config.ephemeral {
            &mut q.read
        } else {
            &mut q.write
        };
        push_unique(list, image.path.clone());
    }
    for (i, drive) in host.extra_drives.iter().enumerate() {
        let list = if extra_disk_type(config, i).read_only() {
            &mut q.read
        } else {
            &mut q.write
        };
        push_unique(list, drive.path.clone());
    }
    // The files that the drive options of $SYSTEMD_VMSPAWN_QEMU_EXTRA name (a front end's own
    // drives), read-only where the option says so.
    for file in crate::qemu_extra::files(&config.qemu_extra) {
        let list = if file.read_only {
            &mut q.read
        } else {
            &mut q.write
        };
        push_unique(list, file.path);
    }
    if acquired.kvm == KvmAccess::Device {
        q.devices.push(PathBuf::from("/dev/kvm"));
    }
    // With CAP_NET_ADMIN, QEMU creates the TAP itself.
    if matches!(
        acquired.network,
        NetworkSetup::Tap(TapFacts::QemuCreates { .. })
    ) {
        q.devices.push(PathBuf::from("/dev/net/tun"));
    }

    let warnings = mentioned_paths(&config.qemu_extra)
        .into_iter()
        .filter(|p| !q.allows_read(p))
        .map(|p| {
            format!(
                "$SYSTEMD_VMSPAWN_QEMU_EXTRA refers to '{}', which QEMU cannot open: it runs confined and no \
                 Landlock rule covers that path (of the files in $SYSTEMD_VMSPAWN_QEMU_EXTRA only those named by \
                 -drive file=, -blockdev filename=, -cdrom and -hda..-hdd are allowed). Pass the file with a vmspawn \
                 option (--extra-drive=, --linux=, --initrd=, --load-credential=), or set VMSPAWN_UNCONFINED=1 to \
                 debug without confinement.",
                p.display()
            )
        })
        .collect();
    (q, warnings)
}

/// QEMU's environment: the locale and terminal type (LANG=C.UTF-8 when vmspawn has none, as
/// 259 sets it); a graphical console also needs to find the display server (`gui::env`).
fn qemu_env(display: Option<&crate::gui::DisplayFacts>, runtime_dir: &Path) -> EnvPlan {
    let pass: Vec<String> = ["LANG", "LC_ALL", "LC_CTYPE", "TERM"]
        .map(String::from)
        .to_vec();
    let mut set = vec![("LANG".into(), "C.UTF-8".into())];
    if let Some(display) = display {
        set.extend(crate::gui::env(display, runtime_dir));
    }
    EnvPlan {
        pass,
        set,
        listen_fds: Vec::new(),
    }
}

/// The launcher's domain once the VM runs: it only removes its runtime directory. It must be
/// able to stop its children, which live in other Landlock domains, so signals are not scoped
/// by Landlock (its seccomp allow-list permits signals only through its children's pidfds).
fn launcher_rules(runtime_dir: &Path, managed: bool) -> SandboxRules {
    let mut launcher = SandboxRules {
        write: vec![runtime_dir.to_path_buf()],
        scope_abstract_unix: true,
        scope_signal: false,
        ..SandboxRules::default()
    };
    // It removes its own runtime directory, but not one its service manager made.
    if let Some(parent) = runtime_dir.parent().filter(|_| !managed) {
        launcher.remove_dir.push(parent.to_path_buf());
    }
    launcher
}

fn os(s: impl AsRef<OsStr>) -> OsString {
    s.as_ref().to_os_string()
}

/// Builds `key=<escaped path>` for a QEMU option string.
fn kv_path(prefix: &str, path: &Path) -> OsString {
    let mut out = OsString::from(prefix);
    out.push(parse::escape_qemu_value(path.as_os_str()));
    out
}

fn basename(path: &Path) -> &OsStr {
    path.file_name().unwrap_or(path.as_os_str())
}

/// The virtio-scsi controller that `virtio-scsi` and `scsi-cd` disks sit on.
const SCSI_CONTROLLER: &str = "virtio-scsi-pci,id=vmspawn_scsi";

/// The disk type of the i-th `--extra-drive=`: its own DISKTYPE, else `--image-disk-type=`.
fn extra_disk_type(config: &Config, i: usize) -> DiskType {
    config
        .extra_drives
        .get(i)
        .and_then(|d| d.disk_type)
        .unwrap_or(config.image_disk_type)
}

/// The `-device` of a disk: its QEMU device, on the SCSI controller for SCSI types, `what`
/// (`drive=…` and more), and the serial made from the file name (hashed when too long).
fn disk_device(disk_type: DiskType, what: &str, path: &Path) -> OsString {
    let mut device = OsString::from(disk_type.qemu_device());
    if disk_type.on_scsi_bus() {
        device.push(",bus=vmspawn_scsi.0");
    }
    device.push(format!(",{what},serial="));
    let serial = disk_type.serial(basename(path).as_bytes());
    let serial = parse::escape_qemu_value(OsStr::from_bytes(&serial));
    device.push(&serial);
    if disk_type.on_scsi_bus() {
        // QEMU takes the device identification (VPD page 0x83, what udev's by-id names use)
        // from a serial of at most 20 characters only; a SCSI serial may have 30.
        device.push(",device_id=");
        device.push(&serial);
    }
    device
}

fn qcow2_block_device(path: &Path) -> Error {
    Error::new(format!(
        "Block device '{}' cannot be used with 'qcow2' format, only 'raw' is supported.",
        path.display()
    ))
}

/// The machine name of this VM: `machine_name`, and for an `--ephemeral` VM without `-M` a
/// random suffix (from the host's random VM generation ID, so planning stays pure), so that
/// several throw-away VMs of one image can run at once.
pub fn vm_machine_name(config: &Config, host: &HostFacts) -> Result<String> {
    let name = machine_name(config, &host.hostname)?;
    if !config.ephemeral || config.machine.is_some() {
        return Ok(name);
    }
    let suffix: String = host.vmgenid[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // A hostname has at most 64 characters: shorten the name, keep the whole suffix.
    let keep = name.len().min(64 - 17);
    Ok(format!(
        "{}-{suffix}",
        name[..keep].trim_end_matches(['-', '.'])
    ))
}

/// The machine name: `-M`, else the image file name without one trailing `.raw`.
pub fn machine_name(config: &Config, hostname: &str) -> Result<String> {
    if let Some(name) = &config.machine {
        return Ok(name.clone());
    }
    let raw = match (&config.image, &config.directory) {
        (Some(image), _) => {
            let name = basename(image).to_string_lossy().into_owned();
            name.strip_suffix(".raw")
                .map(str::to_string)
                .unwrap_or(name)
        }
        (None, Some(dir)) if dir == Path::new("/") => hostname.to_string(),
        (None, Some(dir)) => basename(dir).to_string_lossy().into_owned(),
        (None, None) => String::new(),
    };
    let cleaned = parse::hostname_cleanup(&raw);
    if !parse::is_valid_hostname(&cleaned) {
        return Err(Error::new(
            "Failed to determine machine name automatically, please use -M.",
        ));
    }
    Ok(cleaned)
}

fn machine_type(arch: &str) -> Result<&'static str> {
    Ok(match arch {
        "x86_64" | "i386" => "q35",
        "aarch64" | "arm" | "riscv64" | "riscv32" | "loongarch64" => "virt",
        "s390x" => "s390-ccw-virtio",
        "ppc" => "pseries",
        "mips" => "malta",
        _ => return Err(Error::new("Native architecture is not supported by qemu.")),
    })
}

/// The kernel's name for the platform serial port QEMU's `-serial` connects.
fn serial_console_name(arch: &str) -> &'static str {
    match arch {
        "aarch64" | "arm" => "ttyAMA0",
        "s390x" => "ttysclp0",
        "ppc" => "hvc0",
        _ => "ttyS0",
    }
}

fn has_smbios(arch: &str) -> bool {
    matches!(arch, "x86_64" | "i386" | "aarch64" | "arm")
}

/// A direct kernel boot: `--linux=` (with `--initrd=`), or the boot entry of a directory.
#[derive(Clone, Debug)]
struct KernelBoot {
    kernel: PathBuf,
    initrds: Vec<PathBuf>,
}

fn kernel_boot(config: &Config, root: &RootFacts) -> Result<Option<KernelBoot>> {
    Ok(match (&config.linux, root) {
        (Some(kernel), _) => Some(KernelBoot {
            kernel: kernel.clone(),
            initrds: config.initrds.clone(),
        }),
        (None, RootFacts::Image(_)) => None,
        (None, RootFacts::Directory(dir)) => {
            let entry = dir.boot.as_ref().ok_or_else(|| {
                Error::new(format!(
                    "Failed to locate UKI in directory type image, please specify one with --linux=. (No boot \
                     entry was found in '{}'.)",
                    dir.path.display()
                ))
            })?;
            Some(KernelBoot {
                kernel: entry.kernel.clone(),
                initrds: entry.initrds.clone(),
            })
        }
    })
}

/// The root= (or mount.usr=) of a direct kernel boot of a disk image, from its partitions.
fn derived_root(image_info: &ImageInfo, arch: &str) -> Result<String> {
    let image = &image_info.path;
    if image_info.format == ImageFormat::Qcow2 {
        return Err(Error::new(format!(
            "Cannot derive root= for a direct kernel boot from the qcow2 image '{}': its partition \
             table is not readable without QEMU. Pass root=... on the kernel command line.",
            image.display()
        )));
    }
    match &image_info.root_partition {
        Some(RootPartition {
            kind: RootKind::Root,
            partuuid,
        }) => Ok(format!("root=PARTUUID={partuuid}")),
        Some(RootPartition {
            kind: RootKind::Usr,
            partuuid,
        }) => Ok(format!("mount.usr=PARTUUID={partuuid}")),
        None => Err(Error::new(format!(
            "Cannot perform a direct kernel boot without a root or usr partition, refusing: \
             '{}' has no Discoverable Partitions root or usr partition for {arch}. \
             Pass root=... on the kernel command line.",
            image.display()
        ))),
    }
}

/// What the VM needs acquired before it can be planned in full: the TAP, KVM, registration.
pub fn needs(config: &Config, host: &HostFacts) -> Result<Needs> {
    let kvm = match config.kvm {
        Tristate::No => KvmNeed::Off,
        _ if host.kvm_passed => KvmNeed::Passed,
        _ if host.kvm_usable => KvmNeed::Device,
        Tristate::Yes => KvmNeed::FromHelper { required: true },
        Tristate::Auto if host.helper_installed => KvmNeed::FromHelper { required: false },
        Tristate::Auto => KvmNeed::Off,
    };
    Ok(Needs {
        machine: vm_machine_name(config, host)?,
        network: config.network,
        kvm,
        registration: match config.register {
            Some(false) => None,
            Some(true) => Some(true),
            None => Some(false),
        },
        interactive_auth: host.stdin_is_tty && !config.no_ask_password,
        vsock: crate::vsock::needs(config, host)?,
        forward_journal: config.forward_journal.is_some(),
        runtime_scope: config.runtime_scope,
    })
}

pub fn plan(config: &Config, host: &HostFacts, acquired: &Acquired) -> Result<Plan> {
    let arch = host.qemu_arch.as_str();
    let x86 = matches!(arch, "x86_64" | "i386");
    let machine = vm_machine_name(config, host)?;
    // The directory as given (for the banner and the state file names); with --ephemeral the
    // VM boots a copy of it, so from here on the host facts name the copy as its root.
    let root = host.root.path();
    let ephemeral_copy = crate::ephemeral_dir::plan(config, host)?;
    let copied_host;
    let host = match &ephemeral_copy {
        Some(copy) => {
            copied_host = copy.host_facts(host);
            &copied_host
        }
        None => host,
    };
    let rd = &host.runtime_dir;
    let boot = kernel_boot(config, &host.root)?;
    let mut args: Vec<OsString> = Vec::new();
    let mut fds = FdTable::default();
    let mut files = Vec::new();
    let firmware_kind = crate::firmware::resolve(config, host.kernel_kind, config.linux.is_some())?;
    let firmware = match (firmware_kind, &host.firmware) {
        (FirmwareKind::Uefi, Some(firmware)) => Some(firmware),
        (FirmwareKind::Uefi, None) => {
            return Err(Error::new(
                "Failed to find OVMF config: no UEFI firmware was found. Install the 'ovmf' package, or pass --firmware=PATH.",
            ));
        }
        _ => None,
    };
    let nvram = firmware.map(|firmware| {
        let (path, persistent) =
            crate::firmware::nvram_state(config, root, rd, host.nvram_auto_problem.as_deref());
        NvramPlan {
            template: config
                .efi_nvram_template
                .clone()
                .unwrap_or_else(|| firmware.vars_template.clone()),
            path,
            persistent,
        }
    });
    let confined = !config.unconfined;
    // QMP first, so its fd is 3 whatever else QEMU gets.
    let qmp_fd = fds.add(FdName::Qmp);
    // The directory root and shares, each served by a virtiofsd.
    let virtiofs = crate::virtiofs::plan(config, host, &mut fds)?;
    // The vsock device, and where the guest's notifications arrive.
    let vsock = crate::vsock::plan(config, host, &machine, acquired.vsock, &mut fds)?;
    let mut notes = Vec::new();
    if let (Some(nvram), Some(problem)) = (&nvram, &host.nvram_auto_problem)
        && !nvram.persistent
        && config.efi_nvram_state.is_none()
    {
        notes.push(format!(
            "The UEFI variable store is not kept across boots: {problem}. (Pass --efi-nvram-state=PATH to keep it elsewhere.)"
        ));
    }
    // The ephemeral SSH key, and journal-remote for the guest's journal.
    let ssh = crate::ssh::plan(config, host, &machine, vsock.cid.is_some(), &mut notes)?;
    let journal = crate::journal::plan(config, host, &vsock)?;
    let shared_memory = virtiofs.needs_shared_memory() || vsock.needs_shared_memory;
    let memory_size = format!("{}M", config.ram.div_ceil(1 << 20));
    // Memory hotplug: the maximum and its slots (one unless given).
    let mut memory_opt = memory_size.clone();
    if let Some(max) = config.ram_max {
        memory_opt.push_str(&format!(
            ",slots={},maxmem={}M",
            config.ram_slots.max(1),
            max.div_ceil(1 << 20)
        ));
    }

    // -machine
    let mut machine_opt = format!("type={}", machine_type(arch)?);
    if x86 {
        machine_opt.push_str(if firmware.is_some_and(|f| f.secure_boot) {
            ",smm=on"
        } else {
            ",smm=off"
        });
    }
    if shared_memory {
        machine_opt.push_str(",memory-backend=mem");
    }
    if x86 {
        machine_opt.push_str(",hpet=off");
    }
    args.extend([os("-machine"), os(machine_opt)]);
    args.extend([os("-smp"), os(&config.cpus)]);
    args.extend([os("-m"), os(&memory_opt)]);
    args.extend([
        os("-object"),
        os("rng-random,filename=/dev/urandom,id=rng0"),
        os("-device"),
        os("virtio-rng-pci,rng=rng0,id=rng-device0"),
        os("-device"),
        os("virtio-balloon,free-page-reporting=on"),
    ]);
    if let Some(uuid) = &config.uuid {
        args.extend([os("-uuid"), os(parse::format_uuid(uuid))]);
    }
    if x86 {
        args.extend([
            os("-device"),
            os(format!(
                "vmgenid,guid={}",
                parse::format_uuid(&host.vmgenid)
            )),
        ]);
    }

    // Networking: exactly one -nic.
    match &acquired.network {
        NetworkSetup::None => args.extend([os("-nic"), os("none")]),
        NetworkSetup::UserMode => {
            let mut nic = String::from("user,model=virtio-net-pci");
            if let Some(mac) = &config.network_mac {
                nic.push_str(&format!(",mac={}", parse::format_mac(mac)));
            }
            args.extend([os("-nic"), os(nic)]);
        }
        NetworkSetup::Tap(tap) => match tap {
            TapFacts::QemuCreates { ifname, mac } => {
                let mac = config.network_mac.unwrap_or(*mac);
                args.extend([
                    os("-nic"),
                    os(format!(
                        "tap,ifname={ifname},script=no,downscript=no,model=virtio-net-pci,mac={}",
                        parse::format_mac(&mac)
                    )),
                ]);
            }
            // The guest's MAC is derived as 259 does on every path, so two users' VMs on one
            // bridge do not share QEMU's default MAC.
            TapFacts::FromHelper { mac, .. } => {
                let mac = config.network_mac.unwrap_or(*mac);
                args.extend([
                    os("-nic"),
                    os(format!(
                        "tap,fd={},model=virtio-net-pci,mac={}",
                        fds.add(FdName::Tap),
                        parse::format_mac(&mac)
                    )),
                ]);
            }
        },
    }

    // Guest memory the vhost-user processes (virtiofsd, vhost-device-vsock) can map.
    if shared_memory {
        args.extend([
            os("-object"),
            os(format!(
                "memory-backend-memfd,id=mem,size={memory_size},share=on"
            )),
        ]);
    }

    // Accelerator.
    match acquired.kvm {
        KvmAccess::Fd => args.extend([
            os("--add-fd"),
            os(format!("fd={},set=1,opaque=/dev/kvm", fds.add(FdName::Kvm))),
            os("-accel"),
            os("kvm,device=/dev/fdset/1"),
        ]),
        KvmAccess::Device => args.extend([os("-accel"), os("kvm")]),
        KvmAccess::Off => args.extend([os("-accel"), os("tcg")]),
    }
    args.extend(vsock.qemu_args.iter().cloned());
    if confined {
        args.extend([os("-sandbox"), os(QEMU_SANDBOX)]);
    }
    args.extend([
        os("-cpu"),
        os(if arch == "x86_64" {
            "max,hv_relaxed,hv-vapic,hv-time"
        } else {
            "max"
        }),
    ]);

    // Console: the chardev, then the device the guest's console is on (a virtio console, or
    // with --console-transport=serial the platform's serial port).
    let serial = config.console_transport == ConsoleTransport::Serial;
    let console_device = |args: &mut Vec<OsString>| {
        if serial {
            args.extend(["-serial", "chardev:console"].map(os));
        } else {
            args.extend(
                [
                    "-device",
                    "virtio-serial-pci,id=vmspawn-virtio-serial-pci",
                    "-device",
                    "virtconsole,chardev=console",
                ]
                .map(os),
            );
        }
    };
    let console = match config.console {
        ConsoleMode::Interactive | ConsoleMode::ReadOnly => {
            args.extend(["-nographic", "-nodefaults"].map(os));
            if serial {
                args.extend(["-chardev", "stdio,id=console,signal=off"].map(os));
                console_device(&mut args);
            } else {
                args.extend(
                    [
                        "-device",
                        "virtio-serial-pci,id=vmspawn-virtio-serial-pci",
                        "-chardev",
                        "stdio,id=console,signal=off",
                        "-device",
                        "virtconsole,chardev=console",
                    ]
                    .map(os),
                );
            }
            ConsolePlan::Forwarded {
                read_only: config.console == ConsoleMode::ReadOnly,
                background: config.background.clone(),
            }
        }
        ConsoleMode::Native => {
            args.extend(
                [
                    "-nographic",
                    "-nodefaults",
                    "-chardev",
                    "stdio,mux=on,id=console,signal=off",
                ]
                .map(os),
            );
            console_device(&mut args);
            args.extend(["-mon", "console"].map(os));
            ConsolePlan::Native
        }
        ConsoleMode::Gui => {
            let display = host.display.as_ref().ok_or_else(|| {
                Error::new("--console=gui: the display server was not looked up (internal error).")
            })?;
            args.extend(crate::gui::qemu_args(&machine, display, arch));
            ConsolePlan::Gui
        }
        // As 262: no display and no console device; the guest's console output goes nowhere.
        ConsoleMode::Headless => {
            args.extend(["-nographic", "-nodefaults"].map(os));
            ConsolePlan::Headless
        }
    };

    // UEFI firmware: read-only code, a writable variable store. Without it (--firmware=none or
    // bios), QEMU's own firmware and loader start the kernel: no pflash, no NVRAM.
    if let (Some(firmware), Some(nvram)) = (firmware, &nvram) {
        args.push(os("-drive"));
        let mut code = OsString::from(format!(
            "if=pflash,format={},readonly=on,",
            firmware.code_format
        ));
        code.push(kv_path("file=", &firmware.code));
        args.push(code);
        if firmware.secure_boot && x86 {
            args.extend([
                os("-global"),
                os("ICH9-LPC.disable_s3=1"),
                os("-global"),
                os("driver=cfi.pflash01,property=secure,value=on"),
            ]);
        }
        args.push(os("-drive"));
        let mut vars = kv_path("file=", &nvram.path);
        vars.push(format!(",if=pflash,format={}", firmware.vars_format));
        args.push(vars);
    }

    // Kernel, and the root= a direct kernel boot of the image needs.
    let mut cmdline = config.kernel_cmdline_extra.clone();
    if let Some(boot) = &boot {
        args.extend([os("-kernel"), os(&boot.kernel)]);
    }
    let mut grow_image = None;
    let mut scsi_controller = false;
    let mut ephemeral_overlay = None;
    match &host.root {
        RootFacts::Image(image_info) => {
            let image = &image_info.path;
            if boot.is_some() && !config.cmdline_sets_root() {
                cmdline.push(derived_root(image_info, arch)?);
            }
            if image_info.format == ImageFormat::Qcow2 && image_info.is_block_device {
                return Err(qcow2_block_device(image));
            }
            if config.grow_image > 0 && image_info.format == ImageFormat::Qcow2 {
                return Err(Error::new(format!(
                    "--grow-image= only works on raw images, but '{}' is qcow2. Use 'qemu-img resize' instead.",
                    image.display()
                )));
            }
            if config.grow_image > 0 && image_info.is_block_device {
                return Err(Error::new(format!(
                    "--grow-image= needs a regular image file, but '{}' is a block device.",
                    image.display()
                )));
            }
            let disk_type = config.image_disk_type;
            let discard = if config.discard_disk && !disk_type.read_only() {
                "on"
            } else {
                "off"
            };
            let read_only = if disk_type.read_only() {
                ",readonly=on"
            } else {
                ""
            };
            if config.ephemeral {
                // The guest writes to a qcow2 overlay vmspawn creates unnamed (O_TMPFILE) and
                // passes as an fd, backed by the image, which QEMU may only read.
                let fd = fds.add(FdName::EphemeralOverlay);
                let read_only_fd = fds.add(FdName::EphemeralOverlayReadOnly);
                args.extend([
                    os("--add-fd"),
                    os(format!(
                        "fd={fd},set={OVERLAY_FDSET},opaque=ephemeral-overlay"
                    )),
                    os("--add-fd"),
                    os(format!(
                        "fd={read_only_fd},set={OVERLAY_FDSET},opaque=ephemeral-overlay-ro"
                    )),
                    os("-drive"),
                    os(format!(
                        "if=none,id=vmspawn,file=/dev/fdset/{OVERLAY_FDSET},format=qcow2,\
                         cache.no-flush=on,discard={discard}{read_only}"
                    )),
                ]);
                let grow_to = (config.grow_image > 0)
                    .then(|| config.grow_image.checked_next_multiple_of(4096))
                    .map(|size| {
                        size.ok_or_else(|| Error::new("Specified file size too large, refusing."))
                    })
                    .transpose()?
                    .unwrap_or(0);
                let mut dirs = Vec::new();
                if let Some(parent) = image.parent().filter(|_| !image_info.is_block_device) {
                    dirs.push(parent.to_path_buf());
                }
                let tmpdir = config
                    .tmpdir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/var/tmp"));
                if !dirs.contains(&tmpdir) {
                    dirs.push(tmpdir);
                }
                ephemeral_overlay = Some(crate::overlay::OverlayPlan {
                    backing: image.clone(),
                    backing_format: image_info.format,
                    grow_to,
                    dirs,
                });
            } else {
                let mut drive = kv_path("if=none,id=vmspawn,file=", image);
                drive.push(format!(
                    ",format={},discard={discard}{read_only}",
                    image_info.format.as_qemu(),
                ));
                args.extend([os("-drive"), drive]);
            }
            if disk_type.read_only() {
                // The root file system of a CD-ROM can only be mounted read-only.
                cmdline.push("ro".into());
            }
            if disk_type.on_scsi_bus() {
                args.extend([os("-device"), os(SCSI_CONTROLLER)]);
                scsi_controller = true;
            }
            args.extend([
                os("-device"),
                disk_device(disk_type, "drive=vmspawn,bootindex=1", image),
            ]);
            grow_image = (config.grow_image > 0 && !config.ephemeral)
                .then(|| config.grow_image.checked_next_multiple_of(4096))
                .map(|size| {
                    size.map(|size| GrowImage {
                        path: image.clone(),
                        size,
                    })
                    .ok_or_else(|| Error::new("Specified file size too large, refusing."))
                })
                .transpose()?;
        }
        RootFacts::Directory(_) => {
            if config.grow_image > 0 {
                return Err(Error::new(format!(
                    "--grow-image= grows a disk image, but the VM boots the directory '{}'. Drop --grow-image=.",
                    root.display()
                )));
            }
            args.extend(virtiofs.root_args.iter().cloned());
        }
    }

    // Extra drives.
    for (i, info) in host.extra_drives.iter().enumerate() {
        let path = &info.path;
        let disk_type = extra_disk_type(config, i);
        let file_driver = if info.is_block_device {
            if info.format == ImageFormat::Qcow2 {
                return Err(qcow2_block_device(path));
            }
            "host_device"
        } else {
            "file"
        };
        let mut blockdev = OsString::from(format!(
            "driver={},{}cache.direct=off,cache.no-flush=on,file.driver={file_driver},",
            info.format.as_qemu(),
            if disk_type.read_only() {
                "read-only=on,"
            } else {
                ""
            }
        ));
        blockdev.push(kv_path("file.filename=", path));
        blockdev.push(format!(",node-name=vmspawn_extra_{i}"));
        args.extend([os("-blockdev"), blockdev]);
        if disk_type.on_scsi_bus() && !scsi_controller {
            args.extend([os("-device"), os(SCSI_CONTROLLER)]);
            scsi_controller = true;
        }
        let device = disk_device(disk_type, &format!("drive=vmspawn_extra_{i}"), path);
        args.extend([os("-device"), device]);
    }

    // The --bind shares and the bound users' homes.
    args.extend(virtiofs.mount_args.iter().cloned());
    cmdline.extend(virtiofs.cmdline.iter().cloned());

    // Kernel command line: console=hvc0 (or the serial port) first (not for gui or headless),
    // then -append or SMBIOS strings.
    if !matches!(config.console, ConsoleMode::Gui | ConsoleMode::Headless) {
        let device = if serial {
            serial_console_name(arch)
        } else {
            "hvc0"
        };
        cmdline.insert(0, format!("console={device}"));
    }
    let smbios_file = |path: &Path| kv_path("type=11,path=", path);
    if !cmdline.is_empty() {
        let joined = cmdline.join(" ");
        if boot.is_some() {
            args.extend([os("-append"), os(joined)]);
        } else if has_smbios(arch) {
            for key in [
                "io.systemd.stub.kernel-cmdline-extra",
                "io.systemd.boot.kernel-cmdline-extra",
            ] {
                let path = rd.join(key);
                files.push(FileToWrite {
                    path: path.clone(),
                    contents: format!("{key}={joined}").into_bytes(),
                });
                args.extend([os("-smbios"), smbios_file(&path)]);
            }
        } else {
            return Err(Error::new(
                "Cannot append extra args to the kernel command line: the native architecture has no SMBIOS. \
                 Use --linux= for a direct kernel boot.",
            ));
        }
    }

    // --smbios11 strings.
    if !config.smbios11.is_empty() && !has_smbios(arch) {
        return Err(Error::new(
            "Cannot issue SMBIOS Type #11 strings, native architecture doesn't support SMBIOS.",
        ));
    }
    for (i, text) in config.smbios11.iter().enumerate() {
        let path = rd.join(format!("smbios11-{i}"));
        files.push(FileToWrite {
            path: path.clone(),
            contents: text.as_bytes().to_vec(),
        });
        args.extend([os("-smbios"), smbios_file(&path)]);
    }

    // The virtual TPM: swtpm_setup and swtpm before QEMU, QEMU on swtpm's control socket.
    let tpm = crate::tpm::plan(config, host, &machine, &mut fds)?;
    if let Some(tpm) = &tpm {
        args.extend(tpm.qemu_args.iter().cloned());
    }

    // Initrds: one is passed as is, several are merged into one file.
    let mut initrd_merge = None;
    match boot.as_ref().map_or(&[][..], |b| b.initrds.as_slice()) {
        [] => {}
        [one] => args.extend([os("-initrd"), os(one)]),
        several => {
            let merged = rd.join("initrd.merged");
            args.extend([os("-initrd"), os(&merged)]);
            initrd_merge = Some((several.to_vec(), merged));
        }
    }

    // Credentials, as SMBIOS type 11 strings read from files, in 259's order: the user's,
    // the bound users', the journal's, then SSH's (its key once ssh-keygen has made it).
    let key_credential = ssh.as_ref().map(|ssh| CredentialFromFile {
        path: rd
            .join("credentials")
            .join(crate::ssh::AUTHORIZED_KEYS_CREDENTIAL),
        id: crate::ssh::AUTHORIZED_KEYS_CREDENTIAL.into(),
        source: ssh.public_key.clone(),
    });
    // (id, value); None: the key, written once ssh-keygen has made it.
    let mut credentials: Vec<(&str, Option<&Credential>)> = config
        .credentials
        .iter()
        .chain(&virtiofs.credentials)
        .chain(journal.as_ref().map(|j| &j.credential))
        .map(|c| (c.id.as_str(), Some(c)))
        .collect();
    if let Some(ssh) = &ssh {
        credentials.push((crate::ssh::AUTHORIZED_KEYS_CREDENTIAL, None));
        credentials.push((ssh.dropin.id.as_str(), Some(&ssh.dropin)));
    }
    if !credentials.is_empty() && !has_smbios(arch) {
        return Err(Error::new(
            "Cannot pass credentials: the native architecture has no SMBIOS.",
        ));
    }
    for (i, (id, credential)) in credentials.iter().enumerate() {
        if credentials[..i].iter().any(|(other, _)| other == id) {
            return Err(Error::new(format!(
                "Duplicated credential '{id}', refusing."
            )));
        }
        let path = rd.join("credentials").join(id);
        if let Some(credential) = credential {
            files.push(FileToWrite {
                path: path.clone(),
                contents: smbios_credential(id, &credential.data),
            });
        }
        args.extend([os("-smbios"), smbios_file(&path)]);
    }

    // Where the guest's service manager sends READY=1 and EXIT_STATUS= (a credential, so only
    // where there is SMBIOS; the device itself works anywhere).
    let notify_credential = vsock
        .notify_credential
        .as_ref()
        .filter(|_| has_smbios(arch));
    if let Some(credential) = notify_credential {
        args.extend([os("-smbios"), os(format!("type=11,value={credential}"))]);
    }

    // QMP over an inherited socket, used for a graceful power-off.
    args.extend([
        os("-chardev"),
        os(format!("socket,id=vmspawn-qmp,fd={qmp_fd}")),
        os("-mon"),
        os("chardev=vmspawn-qmp,mode=control"),
    ]);

    args.extend(config.qemu_extra.iter().map(os));

    let mut banner = Vec::new();
    if !config.quiet && config.console != ConsoleMode::Gui {
        banner.push(format!(
            "\u{2591} Spawning VM {machine} on {}.",
            root.display()
        ));
        match config.console {
            ConsoleMode::Interactive => {
                banner.push("\u{2591} Press Ctrl-] three times within 1s to kill VM.".into())
            }
            ConsoleMode::Native => banner.push("\u{2591} Press Ctrl-a x to kill VM.".into()),
            _ => {}
        }
    }
    // How to log in (259 says nothing; the guest's /run/issue.d does, once it has booted).
    let ssh_address = match (&ssh, &vsock.uds, vsock.cid) {
        (None, _, _) | (_, None, None) => None,
        (Some(_), Some(uds), _) => Some(format!("vsock-mux/{}", uds.display())),
        (Some(_), None, Some(cid)) => Some(format!("vsock/{cid}")),
    };
    if let (false, Some(ssh), Some(address)) = (config.quiet, &ssh, &ssh_address) {
        let proxy = match &vsock.uds {
            Some(uds) => format!(
                " -o ProxyCommand='vmspawn-vsock-proxy {} {}'",
                uds.display(),
                crate::ssh::SSH_PORT
            ),
            None => String::new(),
        };
        let host = if vsock.uds.is_some() {
            machine.as_str()
        } else {
            address
        };
        banner.push(format!(
            "\u{2591} SSH: ssh -i {}{proxy} root@{host}",
            ssh.private_key.display()
        ));
    }

    let gui = config.console == ConsoleMode::Gui;
    let display = host.display.as_ref().filter(|_| gui);
    let (qemu_landlock, warnings) = qemu_rules(
        config,
        host,
        acquired,
        boot.as_ref(),
        display,
        firmware.zip(nvram.as_ref()),
    );
    let qemu = ProcessPlan {
        role: Role::Qemu,
        name: Role::Qemu.describe().into(),
        binary: host.qemu_binary.clone(),
        args,
        env: qemu_env(display, rd),
        fds: fds.into_vec(),
        stdio: match console {
            ConsolePlan::Forwarded { .. } => StdioPlan::Console,
            ConsolePlan::Native | ConsolePlan::Gui => StdioPlan::Terminal,
            ConsolePlan::Headless => StdioPlan::NoInput,
        },
        // Unless QEMU reads our terminal itself (native console), a Ctrl-C on the terminal
        // reaches only vmspawn, which turns it into a graceful power-off.
        own_process_group: console != ConsolePlan::Native,
        death_signal: libc::SIGTERM,
        jail: confined.then_some(Jail {
            landlock: qemu_landlock,
            seccomp: SeccompTable::Qemu(QemuSockets {
                inet: acquired.network == NetworkSetup::UserMode,
                unix: gui,
            }),
        }),
        lifetime: Lifetime::Vm {
            readiness: Readiness::Started,
            stop: Stop::PowerButton,
        },
    };

    let registration = match (config.register, &acquired.registrar) {
        (Some(false), _) | (None, None) => None,
        (Some(true), None) => {
            return Err(Error::new(
                "--register=yes: no systemd-machined can be reached to register the VM with. Use \
                 --register=no to run without registration.",
            ));
        }
        (required, Some(via)) => Some(RegistrationPlan {
            via: via.clone(),
            request: crate::register::Request {
                machine: machine.clone(),
                uuid: config.uuid,
                allocate_unit: !config.keep_unit,
                interactive_auth: host.stdin_is_tty && !config.no_ask_password,
                // A vhost-user CID is only the guest's own idea: no host program reaches it
                // over AF_VSOCK, so machined is not told it.
                vsock_cid: vsock.cid.filter(|_| vsock.uds.is_none()),
                ssh: ssh_address
                    .clone()
                    .zip(ssh.as_ref().map(|s| s.private_key.clone())),
                root_directory: match &host.root {
                    RootFacts::Directory(dir) => Some(dir.path.clone()),
                    RootFacts::Image(_) => None,
                },
            },
            required: required == Some(true),
        }),
    };

    let mut state_dirs = Vec::new();
    if display.is_some() {
        state_dirs.push(StateDir {
            path: crate::gui::home_dir(rd),
            what: "QEMU's private home and cache directory (GTK, fontconfig)",
            persistent: false,
        });
    }
    let mut sockets = Vec::new();
    let mut processes = Vec::new();
    let mut credentials_from_files = Vec::new();
    if let Some(ssh) = ssh {
        state_dirs.push(ssh.state_dir);
        processes.push(ssh.keygen);
        credentials_from_files.extend(key_credential);
    }
    match tpm {
        Some(tpm) => {
            state_dirs.extend(tpm.state_dirs);
            sockets.push(tpm.socket);
            processes.extend(tpm.processes);
        }
        None => notes.extend(crate::tpm::why_none(config, host)),
    }
    state_dirs.extend(vsock.state_dirs);
    sockets.extend(vsock.sockets);
    processes.extend(vsock.processes);
    sockets.extend(virtiofs.sockets);
    processes.extend(virtiofs.processes);
    if let Some(journal) = journal {
        state_dirs.extend(journal.state_dir);
        sockets.extend(journal.socket);
        processes.push(journal.process);
    }
    processes.push(qemu);
    let scope = crate::scope::plan(config, &machine, host.caller_uid == 0);
    Ok(Plan {
        machine,
        runtime_dir: rd.clone(),
        files,
        credentials_from_files,
        nvram,
        initrd_merge,
        grow_image,
        ephemeral_overlay,
        ephemeral_copy,
        state_dirs,
        sockets,
        processes,
        console,
        banner,
        quiet: config.quiet,
        ready_at_start: !config.notify_ready,
        guest_notifications: notify_credential.is_some(),
        vsock_cid: vsock.cid,
        vsock_uds: vsock.uds.clone(),
        launcher_jail: confined.then(|| launcher_rules(rd, host.runtime_dir_managed)),
        warnings: if confined { warnings } else { Vec::new() },
        notes,
        registration,
        runtime_dir_managed: host.runtime_dir_managed,
        scope,
    })
}

/// Renders an argv for logs and golden files: words joined by spaces, quoted when needed.
pub fn render_argv(binary: &Path, args: &[OsString]) -> String {
    std::iter::once(binary.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(|w| {
            let s = String::from_utf8_lossy(w.as_bytes()).into_owned();
            if !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=,./:+@%".contains(&b))
            {
                s
            } else {
                format!("'{}'", s.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
