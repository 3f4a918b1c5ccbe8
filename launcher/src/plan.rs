//! The planner: a validated `Config` plus discovered `HostFacts` in, a `Plan` out. Pure: no I/O,
//! no clock, no randomness. Everything the runner will do (QEMU argv, files to create, copies,
//! image growth, console handling) is decided here, so every option has a fast golden test.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::config::{Background, Config, ConsoleMode, Network};
use crate::disk::{ImageFormat, RootKind, RootPartition};
use crate::error::{Error, Result};
use crate::firmware::Firmware;
use crate::parse::{self, Tristate};
use crate::register::Registrar;
use crate::sandbox::SandboxRules;

/// The QMP control socket is handed to QEMU as this fd number.
pub const QMP_FD: i32 = 3;
/// A TAP fd from the privileged helper is handed to QEMU as this fd number.
pub const TAP_FD: i32 = 4;
/// A /dev/kvm fd from the privileged helper is handed to QEMU as this fd number.
pub const KVM_FD: i32 = 5;

/// How the VM gets its TAP device (`--network-tap`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TapFacts {
    /// The launcher has CAP_NET_ADMIN: QEMU creates the TAP itself, named and addressed as 259 does.
    QemuCreates { ifname: String, mac: [u8; 6] },
    /// The privileged helper created `ifname`; its fd is passed to QEMU as TAP_FD.
    FromHelper { ifname: String },
}

/// What the host looks like, as far as planning is concerned. Gathered by `host::discover`.
#[derive(Clone, Debug)]
pub struct HostFacts {
    /// The native architecture in QEMU's naming (x86_64, aarch64, ...).
    pub qemu_arch: String,
    pub qemu_binary: PathBuf,
    pub firmware: Firmware,
    /// /dev/kvm can be opened read-write by this process.
    pub kvm_usable: bool,
    /// The privileged helper gave us an fd of /dev/kvm (passed to QEMU as KVM_FD).
    pub kvm_fd_from_helper: bool,
    /// Set for `--network-tap`.
    pub tap: Option<TapFacts>,
    pub image: Option<ImageInfo>,
    /// One entry per `--extra-drive`, in order.
    pub extra_drives: Vec<DriveInfo>,
    /// The per-VM private directory (not yet created); all temporary files go below it.
    pub runtime_dir: PathBuf,
    /// The host's hostname, for the machine name of `-D /`.
    pub hostname: String,
    /// The VM generation ID for `-device vmgenid`.
    pub vmgenid: [u8; 16],
    /// What a graphical console needs to reach the display server (X authority file, runtime
    /// directory with the Wayland socket); only gathered for `--console=gui`.
    pub display_paths: Vec<PathBuf>,
    /// The machined to register with, when one can be reached (`register::choose`).
    pub registrar: Option<Registrar>,
    /// Standard input is a terminal: polkit may ask for a password there.
    pub stdin_is_tty: bool,
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
    pub format: ImageFormat,
    pub is_block_device: bool,
    /// The GPT root (or usr) partition; only looked up when a direct kernel boot needs it.
    pub root_partition: Option<RootPartition>,
}

#[derive(Clone, Debug)]
pub struct DriveInfo {
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileToWrite {
    pub path: PathBuf,
    pub contents: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrowImage {
    pub path: PathBuf,
    /// Target size, already rounded up to a multiple of 4096.
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub machine: String,
    pub runtime_dir: PathBuf,
    pub qemu_binary: PathBuf,
    pub qemu_args: Vec<OsString>,
    /// Files (credentials, SMBIOS strings) written into the runtime directory, mode 0600.
    pub files: Vec<FileToWrite>,
    /// (template, per-VM copy) for the UEFI variable store.
    pub nvram_copy: (PathBuf, PathBuf),
    /// (sources, destination) when several initrds are merged into one.
    pub initrd_merge: Option<(Vec<PathBuf>, PathBuf)>,
    pub grow_image: Option<GrowImage>,
    pub console: ConsolePlan,
    /// Informational lines for stderr (empty with --quiet).
    pub banner: Vec<String>,
    pub quiet: bool,
    /// Send READY=1 to the service manager as soon as QEMU runs (--notify-ready=no).
    pub ready_at_start: bool,
    /// Landlock and seccomp confinement; None with $VMSPAWN_UNCONFINED.
    pub confinement: Option<Confinement>,
    pub registration: Option<RegistrationPlan>,
}

/// Who may touch what once the VM runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confinement {
    /// QEMU's Landlock domain (plus the seccomp deny-list and QEMU's own -sandbox).
    pub qemu: SandboxRules,
    /// The launcher's domain while it supervises (plus its seccomp allow-list).
    pub launcher: SandboxRules,
    /// Paths in $SYSTEMD_VMSPAWN_QEMU_EXTRA that QEMU will not be able to open.
    pub warnings: Vec<String>,
}

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

/// The confinement for this VM: QEMU gets read access to its installation and to exactly the
/// files this VM reads, read-write access to the writable images and the runtime directory, the
/// devices it uses, and nothing else; the launcher keeps only its runtime directory.
fn confinement(config: &Config, host: &HostFacts, use_kvm: bool, gui: bool) -> Confinement {
    let rd = &host.runtime_dir;
    let mut q = SandboxRules {
        allow_tcp_connect: config.network == Network::UserMode,
        allow_tcp_bind: false,
        scope_abstract_unix: !gui,
        scope_signal: true,
        ..SandboxRules::default()
    };
    // The QEMU installation: the binary, the shared libraries and QEMU's data files, under /usr
    // and under the prefix QEMU lives in (e.g. /usr/local).
    q.exec.push(host.qemu_binary.clone());
    let triple = multiarch_triple(&host.qemu_arch);
    let mut prefixes = vec![PathBuf::from("/usr")];
    if let Some(prefix) = host.qemu_binary.parent().and_then(Path::parent) {
        push_unique(&mut prefixes, prefix.to_path_buf());
    }
    for prefix in &prefixes {
        push_unique(&mut q.exec, prefix.join("lib").join(triple));
        push_unique(&mut q.exec, prefix.join("lib64"));
        push_unique(&mut q.read, prefix.join("share/qemu"));
    }
    for lib in [format!("/lib/{triple}"), "/lib64".into()] {
        push_unique(&mut q.exec, PathBuf::from(lib));
    }
    for data in [
        "/usr/share/seabios",
        "/usr/lib/ipxe",
        "/usr/share/ipxe",
        "/usr/lib/locale",
        "/etc/ld.so.cache",
    ] {
        push_unique(&mut q.read, PathBuf::from(data));
    }
    // Exactly the files this VM reads.
    push_unique(&mut q.read, host.firmware.code.clone());
    if let Some(kernel) = &config.linux {
        push_unique(&mut q.read, kernel.clone());
    }
    if let [initrd] = config.initrds.as_slice() {
        push_unique(&mut q.read, initrd.clone());
    }
    // The entropy source of the virtio-rng device.
    push_unique(&mut q.read, PathBuf::from("/dev/urandom"));
    // QEMU probes for OFD image locks by opening /dev/null.
    q.devices.push(PathBuf::from("/dev/null"));
    if gui {
        for path in ["/usr", "/etc", "/tmp/.X11-unix"] {
            push_unique(&mut q.read, PathBuf::from(path));
        }
        for path in &host.display_paths {
            push_unique(&mut q.read, path.clone());
        }
    }
    // Read-write: the runtime directory (NVRAM copy, credentials, merged initrd) and the disks.
    q.write.push(rd.clone());
    if let Some(image) = &config.image {
        push_unique(&mut q.write, image.clone());
    }
    for drive in &config.extra_drives {
        push_unique(&mut q.write, drive.clone());
    }
    if use_kvm {
        q.devices.push(PathBuf::from("/dev/kvm"));
    }
    // With CAP_NET_ADMIN, QEMU creates the TAP itself.
    if matches!(host.tap, Some(TapFacts::QemuCreates { .. })) {
        q.devices.push(PathBuf::from("/dev/net/tun"));
    }

    let warnings = mentioned_paths(&config.qemu_extra)
        .into_iter()
        .filter(|p| !q.allows_read(p))
        .map(|p| {
            format!(
                "$SYSTEMD_VMSPAWN_QEMU_EXTRA refers to '{}', which QEMU cannot open: it runs confined and no \
                 Landlock rule covers that path. Pass the file with a vmspawn option (--extra-drive=, --linux=, \
                 --initrd=, --load-credential=), or set VMSPAWN_UNCONFINED=1 to debug without confinement.",
                p.display()
            )
        })
        .collect();

    // The launcher, once QEMU runs, only removes its runtime directory; it must be able to
    // signal QEMU, which lives in a different Landlock domain, so signals are not scoped.
    let mut launcher = SandboxRules {
        write: vec![rd.clone()],
        scope_abstract_unix: true,
        scope_signal: false,
        ..SandboxRules::default()
    };
    if let Some(parent) = rd.parent() {
        launcher.remove_dir.push(parent.to_path_buf());
    }
    Confinement {
        qemu: q,
        launcher,
        warnings,
    }
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

fn has_smbios(arch: &str) -> bool {
    matches!(arch, "x86_64" | "i386" | "aarch64" | "arm")
}

pub fn plan(config: &Config, host: &HostFacts) -> Result<Plan> {
    let arch = host.qemu_arch.as_str();
    let x86 = matches!(arch, "x86_64" | "i386");
    let machine = machine_name(config, &host.hostname)?;
    let image = config.image.as_ref().ok_or_else(|| {
        Error::new("No disk image given. Pass the VM's disk image with --image=PATH (or -i PATH).")
    })?;
    let image_info = host
        .image
        .as_ref()
        .ok_or_else(|| Error::new("internal error: image facts missing"))?;
    let rd = &host.runtime_dir;
    let mut args: Vec<OsString> = Vec::new();
    let mut files = Vec::new();
    let firmware = &host.firmware;

    // -machine
    let mut machine_opt = format!("type={}", machine_type(arch)?);
    if x86 {
        machine_opt.push_str(if firmware.secure_boot {
            ",smm=on"
        } else {
            ",smm=off"
        });
        machine_opt.push_str(",hpet=off");
    }
    args.extend([os("-machine"), os(machine_opt)]);
    args.extend([os("-smp"), os(&config.cpus)]);
    args.extend([os("-m"), os(format!("{}M", config.ram.div_ceil(1 << 20)))]);
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
    match config.network {
        Network::None => args.extend([os("-nic"), os("none")]),
        Network::UserMode => {
            let mut nic = String::from("user,model=virtio-net-pci");
            if let Some(mac) = &config.network_mac {
                nic.push_str(&format!(",mac={}", parse::format_mac(mac)));
            }
            args.extend([os("-nic"), os(nic)]);
        }
        Network::Tap => match &host.tap {
            Some(TapFacts::QemuCreates { ifname, mac }) => {
                let mac = config.network_mac.unwrap_or(*mac);
                args.extend([
                    os("-nic"),
                    os(format!(
                        "tap,ifname={ifname},script=no,downscript=no,model=virtio-net-pci,mac={}",
                        parse::format_mac(&mac)
                    )),
                ]);
            }
            Some(TapFacts::FromHelper { .. }) => {
                let mut nic = format!("tap,fd={TAP_FD},model=virtio-net-pci");
                if let Some(mac) = &config.network_mac {
                    nic.push_str(&format!(",mac={}", parse::format_mac(mac)));
                }
                args.extend([os("-nic"), os(nic)]);
            }
            None => {
                return Err(Error::new(
                    "internal error: TAP facts missing for --network-tap",
                ));
            }
        },
    }

    // Accelerator.
    let use_kvm = match config.kvm {
        Tristate::Yes => true,
        Tristate::No => false,
        Tristate::Auto => host.kvm_usable || host.kvm_fd_from_helper,
    };
    if use_kvm && host.kvm_fd_from_helper {
        args.extend([
            os("--add-fd"),
            os(format!("fd={KVM_FD},set=1,opaque=/dev/kvm")),
            os("-accel"),
            os("kvm,device=/dev/fdset/1"),
        ]);
    } else {
        args.extend([os("-accel"), os(if use_kvm { "kvm" } else { "tcg" })]);
    }
    if !config.unconfined {
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

    // Console.
    let console = match config.console {
        ConsoleMode::Interactive | ConsoleMode::ReadOnly => {
            args.extend(
                [
                    "-nographic",
                    "-nodefaults",
                    "-device",
                    "virtio-serial-pci,id=vmspawn-virtio-serial-pci",
                    "-chardev",
                    "stdio,id=console,signal=off",
                    "-device",
                    "virtconsole,chardev=console",
                ]
                .map(os),
            );
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
                    "-device",
                    "virtio-serial-pci,id=vmspawn-virtio-serial-pci",
                    "-device",
                    "virtconsole,chardev=console",
                    "-mon",
                    "console",
                ]
                .map(os),
            );
            ConsolePlan::Native
        }
        ConsoleMode::Gui => {
            args.extend(
                [
                    "-vga",
                    "virtio",
                    "-device",
                    "virtio-serial",
                    "-chardev",
                    "spicevmc,id=vdagent,debug=0,name=vdagent",
                    "-device",
                    "virtserialport,chardev=vdagent,name=org.qemu.guest_agent.0",
                ]
                .map(os),
            );
            ConsolePlan::Gui
        }
    };

    // Firmware: read-only code, a private writable copy of the variable store.
    let vars_copy = rd.join("ovmf-vars.fd");
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
    let mut vars = kv_path("file=", &vars_copy);
    vars.push(format!(",if=pflash,format={}", firmware.vars_format));
    args.push(vars);

    // Kernel, and the root= a direct kernel boot of the image needs.
    let mut cmdline = config.kernel_cmdline_extra.clone();
    if let Some(kernel) = &config.linux {
        args.extend([os("-kernel"), os(kernel)]);
        let has_root = cmdline
            .iter()
            .any(|w| w.starts_with("root=") || w.starts_with("mount.usr="));
        if !has_root {
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
                }) => cmdline.push(format!("root=PARTUUID={partuuid}")),
                Some(RootPartition {
                    kind: RootKind::Usr,
                    partuuid,
                }) => cmdline.push(format!("mount.usr=PARTUUID={partuuid}")),
                None => {
                    return Err(Error::new(format!(
                        "Cannot perform a direct kernel boot without a root or usr partition, refusing: \
                         '{}' has no Discoverable Partitions root or usr partition for {arch}. \
                         Pass root=... on the kernel command line.",
                        image.display()
                    )));
                }
            }
        }
    }

    // The image.
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
    let mut drive = kv_path("if=none,id=vmspawn,file=", image);
    drive.push(format!(
        ",format={},discard={}",
        image_info.format.as_qemu(),
        if config.discard_disk { "on" } else { "off" }
    ));
    args.extend([os("-drive"), drive]);
    let mut device = OsString::from("virtio-blk-pci,drive=vmspawn,bootindex=1,serial=");
    device.push(parse::escape_qemu_value(basename(image)));
    args.extend([os("-device"), device]);
    let grow_image = (config.grow_image > 0)
        .then(|| config.grow_image.checked_next_multiple_of(4096))
        .map(|size| {
            size.map(|size| GrowImage {
                path: image.clone(),
                size,
            })
            .ok_or_else(|| Error::new("Specified file size too large, refusing."))
        })
        .transpose()?;

    // Extra drives.
    if config.extra_drives.len() != host.extra_drives.len() {
        return Err(Error::new("internal error: extra drive facts missing"));
    }
    for (i, (path, info)) in config
        .extra_drives
        .iter()
        .zip(&host.extra_drives)
        .enumerate()
    {
        let file_driver = if info.is_block_device {
            "host_device"
        } else {
            "file"
        };
        let mut blockdev = OsString::from(format!(
            "driver={},cache.direct=off,cache.no-flush=on,file.driver={file_driver},",
            info.format.as_qemu()
        ));
        blockdev.push(kv_path("file.filename=", path));
        blockdev.push(format!(",node-name=vmspawn_extra_{i}"));
        let mut device = OsString::from(format!("virtio-blk-pci,drive=vmspawn_extra_{i},serial="));
        device.push(parse::escape_qemu_value(basename(path)));
        args.extend([os("-blockdev"), blockdev, os("-device"), device]);
    }

    // Kernel command line: console=hvc0 first (not for gui), then -append or SMBIOS strings.
    if config.console != ConsoleMode::Gui {
        cmdline.insert(0, "console=hvc0".into());
    }
    let smbios_file = |path: &Path| kv_path("type=11,path=", path);
    if !cmdline.is_empty() {
        let joined = cmdline.join(" ");
        if config.linux.is_some() {
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

    // Initrds: one is passed as is, several are merged into one file.
    let mut initrd_merge = None;
    match config.initrds.as_slice() {
        [] => {}
        [one] => args.extend([os("-initrd"), os(one)]),
        several => {
            let merged = rd.join("initrd.merged");
            args.extend([os("-initrd"), os(&merged)]);
            initrd_merge = Some((several.to_vec(), merged));
        }
    }

    // Credentials, as SMBIOS type 11 strings read from files.
    if !config.credentials.is_empty() && !has_smbios(arch) {
        return Err(Error::new(
            "Cannot pass credentials: the native architecture has no SMBIOS.",
        ));
    }
    for credential in &config.credentials {
        let path = rd.join("credentials").join(&credential.id);
        let encoded = base64::engine::general_purpose::STANDARD.encode(&credential.data);
        files.push(FileToWrite {
            path: path.clone(),
            contents: format!("io.systemd.credential.binary:{}={encoded}", credential.id)
                .into_bytes(),
        });
        args.extend([os("-smbios"), smbios_file(&path)]);
    }

    // QMP over an inherited socket, used for a graceful power-off.
    args.extend([
        os("-chardev"),
        os(format!("socket,id=vmspawn-qmp,fd={QMP_FD}")),
        os("-mon"),
        os("chardev=vmspawn-qmp,mode=control"),
    ]);

    args.extend(config.qemu_extra.iter().map(os));

    let mut banner = Vec::new();
    if !config.quiet && config.console != ConsoleMode::Gui {
        banner.push(format!(
            "\u{2591} Spawning VM {machine} on {}.",
            image.display()
        ));
        match config.console {
            ConsoleMode::Interactive => {
                banner.push("\u{2591} Press Ctrl-] three times within 1s to kill VM.".into())
            }
            ConsoleMode::Native => banner.push("\u{2591} Press Ctrl-a x to kill VM.".into()),
            _ => {}
        }
    }

    // With an fd from the helper QEMU needs no path rule for /dev/kvm.
    let kvm_by_path = use_kvm && !host.kvm_fd_from_helper;
    let confinement = (!config.unconfined).then(|| {
        confinement(
            config,
            host,
            kvm_by_path,
            config.console == ConsoleMode::Gui,
        )
    });

    let registration = match (config.register, &host.registrar) {
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
            },
            required: required == Some(true),
        }),
    };
    Ok(Plan {
        machine,
        runtime_dir: rd.clone(),
        qemu_binary: host.qemu_binary.clone(),
        qemu_args: args,
        files,
        nvram_copy: (firmware.vars_template.clone(), vars_copy),
        initrd_merge,
        grow_image,
        console,
        banner,
        quiet: config.quiet,
        ready_at_start: !config.notify_ready,
        confinement,
        registration,
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
