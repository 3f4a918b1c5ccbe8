//! The validated configuration: what the user asked for, with every value parsed and checked.
//! Produced by `cli::parse`, consumed by the planner. Nothing here touches the host beyond what
//! option parsing itself needs (reading --load-credential files, like systemd-vmspawn does).

use std::path::PathBuf;

use crate::disk::{DiskType, ImageFormat};
use crate::parse::Tristate;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleMode {
    Interactive,
    ReadOnly,
    Native,
    Gui,
    /// 262's `headless`: no console device at all; the guest's console output goes nowhere.
    Headless,
}

impl ConsoleMode {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "interactive" => Some(ConsoleMode::Interactive),
            "read-only" => Some(ConsoleMode::ReadOnly),
            "native" => Some(ConsoleMode::Native),
            "gui" => Some(ConsoleMode::Gui),
            "headless" => Some(ConsoleMode::Headless),
            _ => None,
        }
    }
}

/// `--console-transport=`: the device the guest's console is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleTransport {
    /// A virtio console (`hvc0`).
    Virtio,
    /// The platform's serial port (`ttyS0`, `ttyAMA0` on Arm).
    Serial,
}

/// `--system` / `--user`: which service manager and machined the VM belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeScope {
    System,
    User,
}

/// `--forward-journal-max-use=` and friends: limits for systemd-journal-remote's files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalLimits {
    pub max_use: Option<u64>,
    pub keep_free: Option<u64>,
    pub max_file_size: Option<u64>,
    pub max_files: Option<u64>,
}

impl JournalLimits {
    pub fn any(&self) -> bool {
        *self != JournalLimits::default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    None,
    Tap,
    UserMode,
}

/// `--tpm-state=`: where the vTPM keeps its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TpmState {
    Auto,
    Off,
    Path(PathBuf),
}

/// `--firmware=auto|uefi|bios|none`: which kind of firmware the VM boots with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirmwareKind {
    /// UEFI (OVMF) from pflash, with a variable store.
    Uefi,
    /// QEMU's default firmware (SeaBIOS on x86), no variable store.
    Bios,
    /// No firmware of vmspawn's choosing: QEMU loads the `--linux=` kernel itself.
    None,
}

impl FirmwareKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FirmwareKind::Uefi => "uefi",
            FirmwareKind::Bios => "bios",
            FirmwareKind::None => "none",
        }
    }
}

/// `--efi-nvram-state=`: where the UEFI variable store lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NvramState {
    /// `<image>.efinvramstate` (or `<directory>.efinvramstate`), kept across boots.
    Auto,
    /// A fresh copy of the template in the runtime directory, gone with the VM.
    Off,
    Path(PathBuf),
}

/// A credential for the guest, from --set-credential or --load-credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub id: String,
    pub data: Vec<u8>,
}

/// `--bind=` / `--bind-ro=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// `--extra-drive=[FORMAT:][DISKTYPE:]PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraDrive {
    pub path: PathBuf,
    /// None: detected from the file's header.
    pub format: Option<ImageFormat>,
    /// None: the `--image-disk-type=`.
    pub disk_type: Option<DiskType>,
}

/// `--background=`: the console tint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Background {
    /// Not given: derive a green tint from the terminal's own background colour.
    Auto,
    /// Given empty: no tint.
    Off,
    /// An ANSI SGR parameter string, used verbatim.
    Sgr(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub image: Option<PathBuf>,
    /// `--image-format=`; None: detected from the image's header.
    pub image_format: Option<ImageFormat>,
    /// `--image-disk-type=`, also the default of `--extra-drive=`.
    pub image_disk_type: DiskType,
    pub directory: Option<PathBuf>,
    pub machine: Option<String>,
    pub uuid: Option<[u8; 16]>,
    pub cpus: String,
    pub ram: u64,
    /// `--ram=BYTES:MAXBYTES[:SLOTS]`: the memory hotplug maximum, and its slots (0: unset).
    pub ram_max: Option<u64>,
    pub ram_slots: u32,
    pub kvm: Tristate,
    pub vsock: Tristate,
    pub vsock_cid: Option<u32>,
    pub tpm: Tristate,
    pub tpm_state: TpmState,
    pub linux: Option<PathBuf>,
    pub initrds: Vec<PathBuf>,
    pub network: Network,
    /// `--firmware=PATH`: a firmware descriptor (implies UEFI).
    pub firmware: Option<PathBuf>,
    /// `--firmware=uefi|bios|none` (a PATH means uefi); None: auto.
    pub firmware_kind: Option<FirmwareKind>,
    /// `--firmware-features=` (and `--secure-boot=`): features the firmware must have...
    pub firmware_features_include: Vec<String>,
    /// ... and must not have (unless also included). `enrolled-keys` by default.
    pub firmware_features_exclude: Vec<String>,
    /// `--efi-nvram-template=`.
    pub efi_nvram_template: Option<PathBuf>,
    /// `--efi-nvram-state=`; None when left at its default (auto).
    pub efi_nvram_state: Option<NvramState>,
    pub discard_disk: bool,
    pub secure_boot: Tristate,
    pub grow_image: u64,
    pub smbios11: Vec<String>,
    pub notify_ready: bool,
    pub slice: Option<String>,
    /// `--property=` assignments, parsed into the typed unit properties they become.
    pub properties: Vec<crate::scope::UnitProperty>,
    /// `--register=`; None when left at its default.
    pub register: Option<bool>,
    pub keep_unit: bool,
    pub private_users: Option<(u32, u32)>,
    pub binds: Vec<BindMount>,
    pub extra_drives: Vec<ExtraDrive>,
    pub bind_users: Vec<String>,
    pub bind_user_shell: Option<String>,
    pub bind_user_groups: Vec<String>,
    pub forward_journal: Option<PathBuf>,
    pub journal_limits: JournalLimits,
    /// `-x/--ephemeral`: the VM's writes to its root go to a throw-away overlay (image) or copy
    /// (directory). TPM (and NVRAM) state `auto` then means off.
    pub ephemeral: bool,
    /// `$TMPDIR`, where an ephemeral overlay goes when it cannot be next to the image.
    pub tmpdir: Option<PathBuf>,
    /// `--system`/`--user`; None: follows the UID (root: system).
    pub runtime_scope: Option<RuntimeScope>,
    /// `--pass-ssh-key=`; None when left at its default.
    pub pass_ssh_key: Option<bool>,
    pub ssh_key_type: Option<String>,
    pub console: ConsoleMode,
    pub console_transport: ConsoleTransport,
    pub background: Background,
    pub credentials: Vec<Credential>,
    pub quiet: bool,
    pub no_pager: bool,
    pub no_ask_password: bool,
    /// Everything after the first non-option argument.
    pub kernel_cmdline_extra: Vec<String>,
    /// `$SYSTEMD_VMSPAWN_QEMU_EXTRA`, split into words.
    pub qemu_extra: Vec<String>,
    /// `$SYSTEMD_VMSPAWN_NETWORK_MAC`.
    pub network_mac: Option<[u8; 6]>,
    /// `$VMSPAWN_UNCONFINED`: run QEMU and the launcher without Landlock and seccomp (debugging).
    pub unconfined: bool,
}

impl Config {
    /// Something on the command line only UEFI firmware can give: Secure Boot, a firmware
    /// feature, a firmware descriptor, an NVRAM template or state.
    pub fn wants_uefi(&self) -> Option<&'static str> {
        if self.secure_boot == Tristate::Yes {
            Some("--secure-boot=yes")
        } else if self.firmware.is_some() {
            Some("--firmware=PATH")
        } else if !self.firmware_features_include.is_empty() {
            Some("--firmware-features=")
        } else if self.efi_nvram_template.is_some() {
            Some("--efi-nvram-template=")
        } else if self.efi_nvram_state.is_some() {
            Some("--efi-nvram-state=")
        } else {
            None
        }
    }

    /// The extra kernel command line names the root (or /usr) file system itself, so a direct
    /// kernel boot needs none derived from the image.
    pub fn cmdline_sets_root(&self) -> bool {
        self.kernel_cmdline_extra
            .iter()
            .any(|w| w.starts_with("root=") || w.starts_with("mount.usr="))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            image: None,
            image_format: None,
            image_disk_type: DiskType::VirtioBlk,
            directory: None,
            machine: None,
            uuid: None,
            cpus: "1".into(),
            ram: 2 << 30,
            ram_max: None,
            ram_slots: 0,
            kvm: Tristate::Auto,
            vsock: Tristate::Auto,
            vsock_cid: None,
            tpm: Tristate::Auto,
            tpm_state: TpmState::Auto,
            linux: None,
            initrds: Vec::new(),
            network: Network::None,
            firmware: None,
            firmware_kind: None,
            firmware_features_include: Vec::new(),
            firmware_features_exclude: vec!["enrolled-keys".into()],
            efi_nvram_template: None,
            efi_nvram_state: None,
            discard_disk: true,
            secure_boot: Tristate::Auto,
            grow_image: 0,
            smbios11: Vec::new(),
            notify_ready: true,
            slice: None,
            properties: Vec::new(),
            register: None,
            keep_unit: false,
            private_users: None,
            binds: Vec::new(),
            extra_drives: Vec::new(),
            bind_users: Vec::new(),
            bind_user_shell: None,
            bind_user_groups: Vec::new(),
            forward_journal: None,
            journal_limits: JournalLimits::default(),
            ephemeral: false,
            tmpdir: None,
            runtime_scope: None,
            pass_ssh_key: None,
            ssh_key_type: None,
            console: ConsoleMode::Interactive,
            console_transport: ConsoleTransport::Virtio,
            background: Background::Auto,
            credentials: Vec::new(),
            quiet: false,
            no_pager: false,
            no_ask_password: false,
            kernel_cmdline_extra: Vec::new(),
            qemu_extra: Vec::new(),
            network_mac: None,
            unconfined: false,
        }
    }
}
