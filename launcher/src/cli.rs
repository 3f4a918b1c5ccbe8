//! The systemd-vmspawn 262 command line: every option, its syntax and its checks.
//!
//! clap does the getopt part (short/long forms, `--opt=value` and `--opt value`, unambiguous
//! prefixes, stopping at the first non-option). The values are then applied in command-line
//! order, the way systemd's own option switch does, so "last one wins" and "empty value resets"
//! behave identically.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::bail;
use crate::config::{
    Background, BindMount, Config, ConsoleMode, ConsoleTransport, Credential, ExtraDrive,
    FirmwareKind, Network, NvramState, RuntimeScope, TpmState,
};
use crate::disk::{self, DiskType, ImageFormat};
use crate::error::{Error, Result};
use crate::parse::{self, Tristate};

/// The systemd release whose command line this launcher implements.
pub const COMPAT_VERSION: &str = "262";

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    Help(String),
    Version,
    FirmwareList,
    /// `--firmware-features=list`.
    FirmwareFeaturesList,
    /// `--firmware=describe`: print the descriptor the feature wishes select.
    FirmwareDescribe {
        include: Vec<String>,
        exclude: Vec<String>,
    },
    Run(Box<Config>),
}

/// What parsing needs from the environment; passed in so parsing stays testable.
pub struct ParseEnv<'a> {
    pub cwd: &'a Path,
    pub var: &'a dyn Fn(&str) -> Option<OsString>,
}

#[derive(Clone, Copy)]
enum Kind {
    Flag,
    Value,
}

struct OptionSpec {
    id: &'static str,
    short: Option<char>,
    long: &'static str,
    aliases: &'static [&'static str],
    kind: Kind,
    value_name: &'static str,
    heading: &'static str,
    help: &'static str,
}

const fn opt(
    id: &'static str,
    short: Option<char>,
    kind: Kind,
    value_name: &'static str,
    heading: &'static str,
    help: &'static str,
) -> OptionSpec {
    OptionSpec {
        id,
        short,
        long: id,
        aliases: &[],
        kind,
        value_name,
        heading,
        help,
    }
}

const IMAGE: &str = "Image";
const HOST: &str = "Host Configuration";
const EXEC: &str = "Execution";
const IDENTITY: &str = "System Identity";
const PROPS: &str = "Properties";
const USERNS: &str = "User Namespacing";
const MOUNTS: &str = "Mounts";
const INTEGRATION: &str = "Integration";
const IO: &str = "Input/Output";
const CREDS: &str = "Credentials";
const GENERAL: &str = "Options";

use Kind::{Flag, Value};

static OPTIONS: &[OptionSpec] = &[
    opt("version", None, Flag, "", GENERAL, "Show package version"),
    opt(
        "quiet",
        Some('q'),
        Flag,
        "",
        GENERAL,
        "Do not show status information",
    ),
    opt(
        "no-pager",
        None,
        Flag,
        "",
        GENERAL,
        "Do not pipe output into a pager",
    ),
    opt(
        "no-ask-password",
        None,
        Flag,
        "",
        GENERAL,
        "Do not prompt for password",
    ),
    opt(
        "system",
        None,
        Flag,
        "",
        GENERAL,
        "Run in the system service manager scope (register with the system machined)",
    ),
    opt(
        "user",
        None,
        Flag,
        "",
        GENERAL,
        "Run in the user service manager scope (register with your own machined)",
    ),
    opt(
        "directory",
        Some('D'),
        Value,
        "PATH",
        IMAGE,
        "Root directory for the VM",
    ),
    opt(
        "ephemeral",
        Some('x'),
        Flag,
        "",
        IMAGE,
        "Run VM with snapshot of the disk image (not yet of a directory)",
    ),
    opt(
        "image",
        Some('i'),
        Value,
        "FILE|DEVICE",
        IMAGE,
        "Root file system disk image or device for the VM",
    ),
    opt(
        "image-format",
        None,
        Value,
        "FORMAT",
        IMAGE,
        "Specify disk image format (raw, qcow2; default: detected)",
    ),
    opt(
        "image-disk-type",
        None,
        Value,
        "TYPE",
        IMAGE,
        "Specify disk type (virtio-blk, virtio-scsi, nvme, scsi-cd; default: virtio-blk)",
    ),
    OptionSpec {
        aliases: &["qemu-smp"],
        ..opt(
            "cpus",
            None,
            Value,
            "CPUS",
            HOST,
            "Configure number of CPUs in guest",
        )
    },
    OptionSpec {
        aliases: &["qemu-mem"],
        ..opt(
            "ram",
            None,
            Value,
            "BYTES[:MAXBYTES[:SLOTS]]",
            HOST,
            "Configure guest's RAM size (and max/slots for hotplug)",
        )
    },
    OptionSpec {
        aliases: &["qemu-kvm"],
        ..opt(
            "kvm",
            None,
            Value,
            "BOOL",
            HOST,
            "Configure whether to use KVM or not",
        )
    },
    OptionSpec {
        aliases: &["qemu-vsock"],
        ..opt(
            "vsock",
            None,
            Value,
            "BOOL",
            HOST,
            "Configure whether to use qemu with a vsock or not",
        )
    },
    opt(
        "vsock-cid",
        None,
        Value,
        "CID",
        HOST,
        "Specify the CID to use for the guest's vsock",
    ),
    opt(
        "tpm",
        None,
        Value,
        "BOOL",
        HOST,
        "Enable use of a virtual TPM",
    ),
    opt(
        "tpm-state",
        None,
        Value,
        "off|auto|PATH",
        HOST,
        "Where to store TPM state",
    ),
    opt(
        "efi-nvram-template",
        None,
        Value,
        "PATH",
        HOST,
        "Set the path to the EFI NVRAM template file to use",
    ),
    opt(
        "efi-nvram-state",
        None,
        Value,
        "off|auto|PATH",
        HOST,
        "Where to store EFI Variable NVRAM state",
    ),
    opt(
        "linux",
        None,
        Value,
        "PATH",
        HOST,
        "Specify the linux kernel for direct kernel boot",
    ),
    opt(
        "initrd",
        None,
        Value,
        "PATH",
        HOST,
        "Specify the initrd for direct kernel boot",
    ),
    opt(
        "network-tap",
        Some('n'),
        Flag,
        "",
        HOST,
        "Create a TAP device for networking",
    ),
    opt(
        "network-user-mode",
        None,
        Flag,
        "",
        HOST,
        "Use user mode networking",
    ),
    opt(
        "secure-boot",
        None,
        Value,
        "BOOL|auto",
        HOST,
        "Enable searching for firmware supporting SecureBoot",
    ),
    opt(
        "firmware",
        None,
        Value,
        "auto|uefi|bios|none|PATH|list|describe",
        HOST,
        "Select firmware to use, or a firmware definition file (or list/describe available)",
    ),
    opt(
        "firmware-features",
        None,
        Value,
        "FEATURE,...|list",
        HOST,
        "Require/exclude specific firmware features",
    ),
    opt(
        "discard-disk",
        None,
        Value,
        "BOOL",
        HOST,
        "Control processing of discard requests",
    ),
    opt(
        "grow-image",
        Some('G'),
        Value,
        "BYTES",
        HOST,
        "Grow image file to specified size in bytes",
    ),
    opt(
        "smbios11",
        Some('s'),
        Value,
        "STRING",
        HOST,
        "Pass an arbitrary SMBIOS Type #11 string to the VM",
    ),
    opt(
        "notify-ready",
        None,
        Value,
        "BOOL",
        EXEC,
        "Wait for ready notification from the VM",
    ),
    opt(
        "machine",
        Some('M'),
        Value,
        "NAME",
        IDENTITY,
        "Set the machine name for the VM",
    ),
    opt(
        "uuid",
        None,
        Value,
        "UUID",
        IDENTITY,
        "Set a specific machine UUID for the VM",
    ),
    opt(
        "slice",
        Some('S'),
        Value,
        "SLICE",
        PROPS,
        "Place the VM in the specified slice",
    ),
    opt(
        "property",
        None,
        Value,
        "NAME=VALUE",
        PROPS,
        "Set scope unit property",
    ),
    opt(
        "register",
        None,
        Value,
        "BOOLEAN",
        PROPS,
        "Register VM as machine",
    ),
    opt(
        "coco",
        None,
        Value,
        "TYPE",
        PROPS,
        "Confidential computing (not supported by this vmspawn)",
    ),
    opt(
        "keep-unit",
        None,
        Flag,
        "",
        PROPS,
        "Do not register a scope for the machine, reuse the service unit vmspawn is running in",
    ),
    opt(
        "private-users",
        None,
        Value,
        "UIDBASE[:NUIDS]",
        USERNS,
        "Configure the UID/GID range to map into the virtiofsd namespace",
    ),
    opt(
        "bind",
        None,
        Value,
        "SOURCE[:TARGET]",
        MOUNTS,
        "Mount a file or directory from the host into the VM",
    ),
    opt(
        "bind-ro",
        None,
        Value,
        "SOURCE[:TARGET]",
        MOUNTS,
        "Mount a file or directory, but read-only",
    ),
    opt(
        "extra-drive",
        None,
        Value,
        "[FORMAT:][DISKTYPE:]PATH",
        MOUNTS,
        "Adds an additional disk to the virtual machine",
    ),
    opt(
        "bind-user",
        None,
        Value,
        "NAME",
        MOUNTS,
        "Bind user from host to virtual machine",
    ),
    opt(
        "bind-user-shell",
        None,
        Value,
        "BOOL|PATH",
        MOUNTS,
        "Configure the shell to use for --bind-user= users",
    ),
    opt(
        "bind-user-group",
        None,
        Value,
        "GROUP",
        MOUNTS,
        "Add an auxiliary group to --bind-user= users",
    ),
    opt(
        "bind-volume",
        None,
        Value,
        "PROVIDER:VOLUME",
        MOUNTS,
        "Attach a storage volume (not supported by this vmspawn)",
    ),
    opt(
        "forward-journal",
        None,
        Value,
        "FILE|DIR",
        INTEGRATION,
        "Forward the VM's journal to the host",
    ),
    opt(
        "forward-journal-max-use",
        None,
        Value,
        "BYTES",
        INTEGRATION,
        "Maximum disk space for forwarded journal",
    ),
    opt(
        "forward-journal-keep-free",
        None,
        Value,
        "BYTES",
        INTEGRATION,
        "Minimum disk space to keep free",
    ),
    opt(
        "forward-journal-max-file-size",
        None,
        Value,
        "BYTES",
        INTEGRATION,
        "Maximum size of individual journal files",
    ),
    opt(
        "forward-journal-max-files",
        None,
        Value,
        "N",
        INTEGRATION,
        "Maximum number of journal files to keep",
    ),
    opt(
        "pass-ssh-key",
        None,
        Value,
        "BOOL",
        INTEGRATION,
        "Create an SSH key to access the VM",
    ),
    opt(
        "ssh-key-type",
        None,
        Value,
        "TYPE",
        INTEGRATION,
        "Choose what type of SSH key to pass",
    ),
    opt(
        "console",
        None,
        Value,
        "MODE",
        IO,
        "Console mode (interactive, native, gui, read-only or headless)",
    ),
    opt(
        "console-transport",
        None,
        Value,
        "TRANSPORT",
        IO,
        "Console transport (virtio or serial)",
    ),
    opt("qemu-gui", None, Flag, "", IO, "Alias for --console=gui"),
    opt(
        "background",
        None,
        Value,
        "COLOR",
        IO,
        "Set ANSI color for background",
    ),
    opt(
        "set-credential",
        None,
        Value,
        "ID:VALUE",
        CREDS,
        "Pass a credential with literal value to the VM",
    ),
    opt(
        "load-credential",
        None,
        Value,
        "ID:PATH",
        CREDS,
        "Load credential for the VM from file or AF_UNIX stream socket",
    ),
];

/// The parser, also the source of the man page and the shell completions (docgen/).
pub fn command() -> Command {
    let mut cmd = Command::new("vmspawn")
        .about("Spawn a command or OS in a virtual machine.")
        .override_usage("vmspawn [OPTIONS...] [ARGUMENTS...]")
        .disable_version_flag(true)
        .disable_help_flag(true)
        .infer_long_args(true)
        .args_override_self(true)
        .dont_delimit_trailing_values(true)
        .arg(
            Arg::new("help")
                .short('h')
                .long("help")
                .action(ArgAction::Help)
                .help("Show this help")
                .help_heading(GENERAL),
        );
    for spec in OPTIONS {
        let mut arg = Arg::new(spec.id)
            .long(spec.long)
            .help(spec.help)
            .help_heading(spec.heading);
        if let Some(short) = spec.short {
            arg = arg.short(short);
        }
        for alias in spec.aliases {
            arg = arg.visible_alias(*alias);
        }
        arg = match spec.kind {
            Flag => arg.action(ArgAction::Count),
            Value => arg
                .action(ArgAction::Append)
                .num_args(1)
                .value_name(spec.value_name)
                .allow_hyphen_values(true)
                .value_parser(clap::value_parser!(OsString)),
        };
        cmd = cmd.arg(arg);
    }
    cmd.arg(
        Arg::new("kernel-cmdline")
            .value_name("ARGUMENTS")
            .help("Extra kernel command line arguments")
            .num_args(0..)
            .trailing_var_arg(true)
            .action(ArgAction::Append)
            .value_parser(clap::value_parser!(OsString)),
    )
}

/// The `--help` text.
pub fn help_text() -> String {
    command().render_help().to_string()
}

/// One `--opt=value` occurrence, in command-line order.
struct Occurrence<'a> {
    index: usize,
    id: &'static str,
    value: &'a OsStr,
}

fn str_value<'a>(id: &str, value: &'a OsStr) -> Result<&'a str> {
    value.to_str().ok_or_else(|| {
        Error::new(format!(
            "Argument to --{id}= is not valid UTF-8: {}",
            value.to_string_lossy()
        ))
    })
}

fn bool_value(id: &str, value: &OsStr) -> Result<bool> {
    let text = str_value(id, value)?;
    parse::parse_bool(text).ok_or_else(|| {
        Error::new(format!(
            "Failed to parse boolean argument to --{id}=: {text}."
        ))
    })
}

fn tristate_value(id: &str, value: &OsStr) -> Result<Tristate> {
    let text = str_value(id, value)?;
    parse::parse_tristate(text).ok_or_else(|| {
        Error::new(format!(
            "Failed to parse boolean argument to --{id}=: {text} (expected yes, no or auto)."
        ))
    })
}

fn path_value(value: &OsStr, env: &ParseEnv) -> Option<PathBuf> {
    if value.is_empty() {
        None
    } else {
        Some(parse::absolute_path(value, env.cwd))
    }
}

/// Parses the command line (without argv[0]).
pub fn parse(args: &[OsString], env: &ParseEnv) -> Result<Action> {
    let argv = std::iter::once(OsString::from("vmspawn")).chain(args.iter().cloned());
    let matches = match command().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            return Ok(Action::Help(help_text()));
        }
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            return Err(Error::new(format!(
                "{first}\nTry 'vmspawn --help' for the list of options."
            )));
        }
    };
    apply(&matches, env)
}

fn last_index(matches: &ArgMatches, id: &str) -> Option<usize> {
    if matches.get_count(id) == 0 {
        return None;
    }
    matches.indices_of(id).and_then(|i| i.max())
}

fn apply(matches: &ArgMatches, env: &ParseEnv) -> Result<Action> {
    if matches.get_count("version") > 0 {
        return Ok(Action::Version);
    }

    let mut occurrences = Vec::new();
    for spec in OPTIONS.iter().filter(|s| matches!(s.kind, Value)) {
        let (Some(indices), Some(values)) = (
            matches.indices_of(spec.id),
            matches.get_many::<OsString>(spec.id),
        ) else {
            continue;
        };
        for (index, value) in indices.zip(values) {
            occurrences.push(Occurrence {
                index,
                id: spec.id,
                value: value.as_os_str(),
            });
        }
    }
    occurrences.sort_by_key(|o| o.index);

    let mut c = Config {
        quiet: matches.get_count("quiet") > 0,
        no_pager: matches.get_count("no-pager") > 0,
        no_ask_password: matches.get_count("no-ask-password") > 0,
        keep_unit: matches.get_count("keep-unit") > 0,
        ephemeral: matches.get_count("ephemeral") > 0,
        ..Config::default()
    };
    // The last of --system and --user wins.
    c.runtime_scope = match (last_index(matches, "system"), last_index(matches, "user")) {
        (None, None) => None,
        (Some(_), None) => Some(RuntimeScope::System),
        (None, Some(_)) => Some(RuntimeScope::User),
        (Some(system), Some(user)) if system > user => Some(RuntimeScope::System),
        (Some(_), Some(_)) => Some(RuntimeScope::User),
    };
    // The last of -n/--network-tap and --network-user-mode wins.
    c.network = match (
        last_index(matches, "network-tap"),
        last_index(matches, "network-user-mode"),
    ) {
        (None, None) => Network::None,
        (Some(_), None) => Network::Tap,
        (None, Some(_)) => Network::UserMode,
        (Some(tap), Some(user)) => {
            if tap > user {
                Network::Tap
            } else {
                Network::UserMode
            }
        }
    };
    let gui_alias = last_index(matches, "qemu-gui");
    let mut describe = false;
    let mut console_index = None;
    let mut credential_ids = HashSet::new();

    for o in &occurrences {
        let v = o.value;
        match o.id {
            "directory" => c.directory = path_value(v, env),
            "image" => c.image = path_value(v, env),
            "image-format" => {
                let text = str_value(o.id, v)?;
                c.image_format = Some(ImageFormat::parse(text).ok_or_else(|| {
                    Error::new(format!(
                        "Invalid image format: {text} (expected 'raw' or 'qcow2')"
                    ))
                })?);
            }
            "image-disk-type" => {
                let text = str_value(o.id, v)?;
                c.image_disk_type = DiskType::parse(text).ok_or_else(|| {
                    Error::new(format!(
                        "Invalid image disk type: {text} (expected one of {})",
                        disk_type_names()
                    ))
                })?;
            }
            "cpus" => c.cpus = str_value(o.id, v)?.to_string(),
            "ram" => (c.ram, c.ram_max, c.ram_slots) = parse_ram(str_value(o.id, v)?)?,
            "kvm" => c.kvm = tristate_value(o.id, v)?,
            "vsock" => c.vsock = tristate_value(o.id, v)?,
            "vsock-cid" => {
                let text = str_value(o.id, v)?;
                c.vsock_cid = if text.is_empty() {
                    None
                } else {
                    let cid: u32 = match text {
                        "hypervisor" => 0,
                        "local" => 1,
                        "host" => 2,
                        n => n.parse().map_err(|_| {
                            Error::new(format!("Failed to parse --vsock-cid: {text}"))
                        })?,
                    };
                    if cid <= 2 || cid == u32::MAX {
                        bail!("Specified CID is not regular, refusing: {cid}");
                    }
                    Some(cid)
                };
            }
            "tpm" => c.tpm = tristate_value(o.id, v)?,
            "tpm-state" => {
                let text = str_value(o.id, v)?;
                c.tpm_state = if text.starts_with('/') || text.starts_with("./") {
                    TpmState::Path(parse::absolute_path(v, env.cwd))
                } else if text.is_empty() {
                    TpmState::Off
                } else if text == "auto" {
                    TpmState::Auto
                } else {
                    match parse::parse_bool(text) {
                        Some(true) => TpmState::Auto,
                        Some(false) => TpmState::Off,
                        None => bail!("Failed to parse --tpm-state= parameter: {text}"),
                    }
                };
            }
            "linux" => c.linux = path_value(v, env),
            "initrd" => {
                if let Some(p) = path_value(v, env) {
                    c.initrds.push(p);
                }
            }
            "secure-boot" => {
                c.secure_boot = tristate_value(o.id, v)?;
                // As in 262: a secure-boot feature wish, replacing earlier ones.
                let feature = "secure-boot".to_string();
                c.firmware_features_include.retain(|f| *f != feature);
                c.firmware_features_exclude.retain(|f| *f != feature);
                match c.secure_boot {
                    Tristate::Yes => c.firmware_features_include.push(feature),
                    Tristate::No => c.firmware_features_exclude.push(feature),
                    Tristate::Auto => {}
                }
            }
            "firmware" => {
                let bytes = v.as_bytes();
                describe = false;
                c.firmware = None;
                c.firmware_kind = None;
                match bytes {
                    b"" | b"auto" => {}
                    b"list" => return Ok(Action::FirmwareList),
                    // Printed once every option is parsed, so --firmware-features= counts.
                    b"describe" => describe = true,
                    b"uefi" => c.firmware_kind = Some(FirmwareKind::Uefi),
                    b"bios" => c.firmware_kind = Some(FirmwareKind::Bios),
                    b"none" => c.firmware_kind = Some(FirmwareKind::None),
                    _ if bytes.starts_with(b"/") || bytes.starts_with(b"./") => {
                        c.firmware = Some(parse::absolute_path(v, env.cwd));
                        c.firmware_kind = Some(FirmwareKind::Uefi);
                    }
                    _ => bail!(
                        "Expected one of 'auto', 'uefi', 'bios', 'none', 'list', 'describe', or an \
                         absolute path or path starting with './', got: {}",
                        v.to_string_lossy()
                    ),
                }
            }
            "firmware-features" => {
                let text = str_value(o.id, v)?;
                match text {
                    "" => {
                        c.firmware_features_include.clear();
                        c.firmware_features_exclude.clear();
                    }
                    "list" => return Ok(Action::FirmwareFeaturesList),
                    _ => {
                        for feature in text.split(',') {
                            let (list, name) = match feature.strip_prefix('~') {
                                Some(name) => (&mut c.firmware_features_exclude, name),
                                None => (&mut c.firmware_features_include, feature),
                            };
                            if name.is_empty()
                                || !name
                                    .bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                            {
                                bail!(
                                    "Invalid firmware feature '{feature}' in --firmware-features={text}: \
                                     expected names like secure-boot or ~enrolled-keys, separated by ','. \
                                     --firmware-features=list shows the installed firmware's features."
                                );
                            }
                            if !list.iter().any(|f| f == name) {
                                list.push(name.to_string());
                            }
                        }
                    }
                }
            }
            "efi-nvram-template" => {
                let bytes = v.as_bytes();
                c.efi_nvram_template = if bytes.is_empty() {
                    None
                } else if bytes.starts_with(b"/") || bytes.starts_with(b"./") {
                    Some(parse::absolute_path(v, env.cwd))
                } else {
                    bail!(
                        "--efi-nvram-template={}: Absolute path or path starting with './' required.",
                        v.to_string_lossy()
                    );
                };
            }
            "efi-nvram-state" => {
                let text = str_value(o.id, v)?;
                c.efi_nvram_state = Some(if text.starts_with('/') || text.starts_with("./") {
                    NvramState::Path(parse::absolute_path(v, env.cwd))
                } else if text.is_empty() {
                    NvramState::Off
                } else if text == "auto" {
                    NvramState::Auto
                } else {
                    match parse::parse_bool(text) {
                        Some(true) => NvramState::Auto,
                        Some(false) => NvramState::Off,
                        None => bail!(
                            "Path in --efi-nvram-state= parameter must be absolute or start with './': {text}"
                        ),
                    }
                });
            }
            "discard-disk" => c.discard_disk = bool_value(o.id, v)?,
            "grow-image" => {
                let text = str_value(o.id, v)?;
                c.grow_image = if text.is_empty() {
                    0
                } else {
                    parse::parse_size(text).ok_or_else(|| {
                        Error::new(format!("Failed to parse --grow-image= parameter: {text}"))
                    })?
                };
            }
            "smbios11" => {
                let text = v.to_str().ok_or_else(|| {
                    Error::new(format!(
                        "SMBIOS Type 11 string is not UTF-8 clean, refusing: {}",
                        v.to_string_lossy()
                    ))
                })?;
                if text.is_empty() {
                    c.smbios11.clear();
                } else {
                    c.smbios11.push(text.to_string());
                }
            }
            "notify-ready" => c.notify_ready = bool_value(o.id, v)?,
            "machine" => {
                let text = str_value(o.id, v)?;
                c.machine = if text.is_empty() {
                    None
                } else if parse::is_valid_hostname(text) {
                    Some(text.to_string())
                } else {
                    bail!("Invalid machine name: {text}");
                };
            }
            "uuid" => {
                let text = str_value(o.id, v)?;
                let id = parse::parse_uuid(text)
                    .ok_or_else(|| Error::new(format!("Invalid UUID: {text}")))?;
                if id == [0; 16] {
                    bail!("Machine UUID may not be all zeroes.");
                }
                c.uuid = Some(id);
            }
            "slice" => {
                let text = str_value(o.id, v)?;
                c.slice = Some(mangle_slice(text)?);
            }
            "property" => {
                let text = str_value(o.id, v)?;
                c.properties.push(crate::scope::parse_property(text)?);
            }
            "register" => {
                // 262's "auto": register where a machined is reachable (the unset default).
                c.register = match str_value(o.id, v)? {
                    "auto" => None,
                    _ => Some(bool_value(o.id, v)?),
                }
            }
            "coco" => {
                return Err(Error::new(format!(
                    "--coco={}: confidential computing (TDX/SEV-SNP guests) is not supported by \
                     this vmspawn. Use systemd-vmspawn 262 on a host with TDX or SEV-SNP support.",
                    v.to_string_lossy()
                )));
            }
            "bind-volume" => {
                return Err(Error::new(format!(
                    "--bind-volume={}: storage volume providers are not supported by this vmspawn. \
                     Pass the volume as --extra-drive=PATH, or share a directory with --bind=.",
                    v.to_string_lossy()
                )));
            }
            "private-users" => c.private_users = Some(parse_private_users(str_value(o.id, v)?)?),
            "bind" | "bind-ro" => c.binds.push(parse_bind(v, o.id == "bind-ro", env)?),
            "extra-drive" => {
                if let Some(drive) = parse_extra_drive(v, env)? {
                    c.extra_drives.push(drive);
                }
            }
            "bind-user" => {
                let text = str_value(o.id, v)?;
                if !is_valid_user_name(text) {
                    bail!("Invalid user name to bind: {text}");
                }
                if !c.bind_users.iter().any(|u| u == text) {
                    c.bind_users.push(text.to_string());
                }
            }
            "bind-user-shell" => {
                let text = str_value(o.id, v)?;
                let valid = parse::parse_bool(text).is_some()
                    || (text.starts_with('/')
                        && parse::absolute_path(v, env.cwd) == Path::new(text));
                if !valid {
                    bail!("Invalid user shell to bind: {text}");
                }
                c.bind_user_shell = Some(text.to_string());
            }
            "bind-user-group" => {
                let text = str_value(o.id, v)?;
                if !is_valid_user_name(text) {
                    bail!("Invalid bind user auxiliary group name: {text}");
                }
                if !c.bind_user_groups.iter().any(|g| g == text) {
                    c.bind_user_groups.push(text.to_string());
                }
            }
            "forward-journal" => c.forward_journal = path_value(v, env),
            "forward-journal-max-use"
            | "forward-journal-keep-free"
            | "forward-journal-max-file-size"
            | "forward-journal-max-files" => {
                let text = str_value(o.id, v)?;
                let value = if text.is_empty() {
                    None
                } else if o.id == "forward-journal-max-files" {
                    Some(text.parse::<u64>().map_err(|_| {
                        Error::new(format!(
                            "Failed to parse --{}= value: {text} (expected a number of files)",
                            o.id
                        ))
                    })?)
                } else {
                    Some(parse::parse_size(text).ok_or_else(|| {
                        Error::new(format!(
                            "Failed to parse --{}= value: {text} (expected a size such as 64M)",
                            o.id
                        ))
                    })?)
                };
                let limits = &mut c.journal_limits;
                *match o.id {
                    "forward-journal-max-use" => &mut limits.max_use,
                    "forward-journal-keep-free" => &mut limits.keep_free,
                    "forward-journal-max-file-size" => &mut limits.max_file_size,
                    _ => &mut limits.max_files,
                } = value;
            }
            "pass-ssh-key" => c.pass_ssh_key = Some(bool_value(o.id, v)?),
            "ssh-key-type" => {
                let text = str_value(o.id, v)?;
                if text.is_empty()
                    || !text
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b"\"'\\`$".contains(&b))
                {
                    bail!("Invalid value for --arg-ssh-key-type=: {text}");
                }
                c.ssh_key_type = Some(text.to_string());
            }
            "console" => {
                let text = str_value(o.id, v)?;
                c.console = ConsoleMode::parse(text).ok_or_else(|| {
                    Error::new(format!("Failed to parse specified console mode: {text}"))
                })?;
                console_index = Some(o.index);
            }
            "console-transport" => {
                c.console_transport = match str_value(o.id, v)? {
                    "virtio" => ConsoleTransport::Virtio,
                    "serial" => ConsoleTransport::Serial,
                    text => bail!(
                        "Failed to parse specified console transport: {text} (expected virtio or serial)"
                    ),
                };
            }
            "background" => {
                let text = str_value(o.id, v)?;
                c.background = if text.is_empty() {
                    Background::Off
                } else if text.bytes().all(|b| b.is_ascii_digit() || b == b';') {
                    Background::Sgr(text.to_string())
                } else {
                    bail!("Invalid --background= argument: {text}");
                };
            }
            "set-credential" | "load-credential" => {
                let text = str_value(o.id, v)?;
                let (id, source) = parse::split_credential(text)
                    .ok_or_else(|| Error::new(format!("Missing value for --{}=: {text}", o.id)))?;
                if !parse::is_valid_credential_name(id.as_bytes()) {
                    bail!("Credential name is not valid: {id}");
                }
                if !credential_ids.insert(id.clone()) {
                    bail!("Duplicated credential '{id}', refusing.");
                }
                let data = if o.id == "set-credential" {
                    parse::c_unescape(source).map_err(|e| {
                        Error::new(format!(
                            "Failed to unescape credential value '{source}': {e}"
                        ))
                    })?
                } else {
                    load_credential(&id, source, env)?
                };
                c.credentials.push(Credential { id, data });
            }
            other => unreachable!("option --{other} has no handler"),
        }
    }
    if let Some(gui) = gui_alias
        && console_index.is_none_or(|i| gui > i)
    {
        c.console = ConsoleMode::Gui;
    }

    if let Some(words) = matches.get_many::<OsString>("kernel-cmdline") {
        for word in words {
            c.kernel_cmdline_extra.push(
                word.to_str()
                    .ok_or_else(|| {
                        Error::new(format!(
                            "Kernel command line argument is not UTF-8: {}",
                            word.to_string_lossy()
                        ))
                    })?
                    .to_string(),
            );
        }
    }

    if let Some(mac) = (env.var)("SYSTEMD_VMSPAWN_NETWORK_MAC").filter(|m| !m.is_empty()) {
        let text = mac.to_string_lossy();
        let parsed = parse::parse_mac(&text).ok_or_else(|| {
            Error::new(format!(
                "Failed to parse provided MAC address via environment variable: {text}"
            ))
        })?;
        c.network_mac = (parsed != [0; 6]).then_some(parsed);
    }
    if let Some(extra) = (env.var)("SYSTEMD_VMSPAWN_QEMU_EXTRA") {
        let text = extra
            .to_str()
            .ok_or_else(|| Error::new("$SYSTEMD_VMSPAWN_QEMU_EXTRA is not valid UTF-8"))?;
        c.qemu_extra = parse::split_words(text)
            .map_err(|e| Error::new(format!("Failed to parse $SYSTEMD_VMSPAWN_QEMU_EXTRA: {e}")))?;
    }

    if let Some(value) = (env.var)("VMSPAWN_UNCONFINED").filter(|v| !v.is_empty()) {
        let text = value.to_string_lossy();
        c.unconfined = parse::parse_bool(&text).ok_or_else(|| {
            Error::new(format!(
                "Failed to parse $VMSPAWN_UNCONFINED: {text} (expected a boolean)"
            ))
        })?;
    }

    if describe {
        return Ok(Action::FirmwareDescribe {
            include: c.firmware_features_include,
            exclude: c.firmware_features_exclude,
        });
    }
    if c.bind_user_shell.is_some() && c.bind_users.is_empty() {
        bail!("Cannot use --bind-user-shell= without --bind-user=");
    }
    if !c.bind_user_groups.is_empty() && c.bind_users.is_empty() {
        bail!("Cannot use --bind-user-group= without --bind-user=");
    }
    if !c.initrds.is_empty() && c.linux.is_none() {
        bail!("Option --initrd= cannot be used without --linux=.");
    }
    if c.image.is_some() && c.directory.is_some() {
        bail!(
            "--directory= and --image= cannot be used together: the VM boots either a directory tree or a disk image."
        );
    }
    if c.private_users.is_some() && c.image.is_some() {
        bail!(
            "--private-users= maps the UIDs of a --directory= root and has no effect with --image=. Drop it."
        );
    }
    if c.ram_max.is_some_and(|max| max < c.ram) {
        bail!("Maximum RAM size must be greater than or equal to initial RAM size");
    }
    if c.ram_slots > 0 && c.ram_max.is_none() {
        bail!("Memory hotplug slots require a maximum RAM size");
    }
    if c.journal_limits.any() && c.forward_journal.is_none() {
        bail!(
            "--forward-journal-max-use=/--forward-journal-keep-free=/--forward-journal-max-file-size=/\
             --forward-journal-max-files= require --forward-journal=."
        );
    }
    if c.keep_unit && (c.slice.is_some() || !c.properties.is_empty()) {
        bail!(
            "--slice=/--property= configure the scope unit vmspawn creates for the VM, and with \
             --keep-unit it creates none. Drop --keep-unit, or set them on the unit vmspawn runs in."
        );
    }
    if c.ephemeral {
        if !c.extra_drives.is_empty() {
            bail!(
                "Cannot use --ephemeral with --extra-drive=: an extra drive would still be written to. \
                 Drop --ephemeral, or drop the --extra-drive= options."
            );
        }
        // As 262: state kept next to the image ("auto") would outlive a throw-away VM.
        if c.tpm_state == TpmState::Auto {
            c.tpm_state = TpmState::Off;
        }
        c.tmpdir = (env.var)("TMPDIR")
            .filter(|d| !d.is_empty())
            .map(|d| parse::absolute_path(&d, env.cwd));
    }
    Ok(Action::Run(Box::new(c)))
}

fn disk_type_names() -> String {
    DiskType::ALL.map(DiskType::name).join(", ")
}

/// `--ram=BYTES[:MAXBYTES[:SLOTS]]`: the initial size, the hotplug maximum (empty: none) and the
/// number of hotplug slots (empty: 1 with a maximum).
fn parse_ram(text: &str) -> Result<(u64, Option<u64>, u32)> {
    let invalid = || Error::new(format!("Failed to parse --ram={text}: Invalid argument"));
    let mut words = text.split(':');
    let ram = words.next().unwrap_or_default();
    let max = words.next().unwrap_or_default();
    let slots = words.next().unwrap_or_default();
    if words.next().is_some() {
        bail!("Unexpected trailing data in --ram={text}");
    }
    let ram = parse::parse_size(ram)
        .filter(|&n| n > 0)
        .ok_or_else(invalid)?;
    let max = if max.is_empty() {
        None
    } else {
        Some(parse::parse_size(max).ok_or_else(invalid)?)
    };
    let slots = if slots.is_empty() {
        0
    } else {
        slots
            .parse::<u32>()
            .ok()
            .filter(|_| slots.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(invalid)?
    };
    Ok((ram, max, slots))
}

/// `--extra-drive=[FORMAT:][DISKTYPE:]PATH` (see `disk::parse_disk_spec`). Empty: nothing.
fn parse_extra_drive(value: &OsStr, env: &ParseEnv) -> Result<Option<ExtraDrive>> {
    if value.is_empty() {
        return Ok(None);
    }
    // Only the prefixes need to be text; the path may be any bytes.
    let (format, disk_type, path) = disk::parse_disk_spec(value.as_bytes());
    if path.is_empty() {
        bail!(
            "Failed to parse --extra-drive= argument '{}': no path after the FORMAT:/DISKTYPE: prefix. \
             Expected [FORMAT:][DISKTYPE:]PATH, FORMAT one of raw, qcow2, DISKTYPE one of {}.",
            value.to_string_lossy(),
            disk_type_names()
        );
    }
    Ok(Some(ExtraDrive {
        path: parse::absolute_path(OsStr::from_bytes(path), env.cwd),
        format,
        disk_type,
    }))
}

fn mangle_slice(text: &str) -> Result<String> {
    let name = if text.ends_with(".slice") {
        text.to_string()
    } else {
        format!("{text}.slice")
    };
    let stem = &name[..name.len() - ".slice".len()];
    let valid = !stem.is_empty()
        && name.len() <= 255
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.\\".contains(&b));
    if !valid {
        bail!("Failed to turn '{text}' into unit name: Invalid argument");
    }
    Ok(name)
}

fn parse_private_users(text: &str) -> Result<(u32, u32)> {
    let (base, range) = match text.split_once(':') {
        Some((b, r)) => {
            let range: u32 = r.parse().map_err(|_| {
                Error::new(format!(
                    "Failed to parse UID range \"{r}\": Invalid argument"
                ))
            })?;
            (b, range)
        }
        None => (text, 65536),
    };
    let base: u32 = base
        .parse()
        .map_err(|_| Error::new(format!("Failed to parse UID \"{base}\": Invalid argument")))?;
    if base == u32::MAX || range == 0 || u64::from(base) + u64::from(range) > u64::from(u32::MAX) {
        bail!("UID range cannot be empty or go beyond 4294967295.");
    }
    Ok((base, range))
}

fn parse_bind(value: &OsStr, read_only: bool, env: &ParseEnv) -> Result<BindMount> {
    let name = if read_only { "--bind-ro" } else { "--bind" };
    let fail = |why: &str| {
        Error::new(format!(
            "Failed to parse {name}= argument {}: {why}",
            value.to_string_lossy()
        ))
    };
    let text = value.to_str().ok_or_else(|| fail("not valid UTF-8"))?;
    let mut source = String::new();
    let mut destination = None;
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, next)) => source.push(next),
                None => return Err(fail("trailing backslash")),
            },
            ':' => {
                destination = Some(text[i + 1..].to_string());
                break;
            }
            c => source.push(c),
        }
    }
    if source.is_empty() {
        return Err(fail("Invalid argument"));
    }
    let absolute = parse::absolute_path(OsStr::new(&source), env.cwd);
    match std::fs::metadata(&absolute) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(fail("Not a directory")),
        Err(e) => return Err(fail(&e.to_string())),
    }
    let destination = destination.unwrap_or(source);
    if !destination.starts_with('/') {
        return Err(fail(
            "Invalid argument (the target must be an absolute path)",
        ));
    }
    Ok(BindMount {
        source: absolute,
        destination,
        read_only,
    })
}

fn is_valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with(|c: char| c.is_ascii_digit() || c == '-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn load_credential(id: &str, source: &str, env: &ParseEnv) -> Result<Vec<u8>> {
    let read_failed =
        |e: &dyn std::fmt::Display| Error::new(format!("Failed to read credential '{id}': {e}"));
    let path = if source.contains('/') {
        parse::absolute_path(OsStr::new(source), env.cwd)
    } else if parse::is_valid_credential_name(source.as_bytes()) {
        let dir = (env.var)("CREDENTIALS_DIRECTORY")
            .filter(|d| !d.is_empty())
            .ok_or_else(|| {
                Error::new(format!(
                    "Credential not available (no credentials passed at all): {source}"
                ))
            })?;
        Path::new(&dir).join(source)
    } else {
        bail!(
            "Credential source appears to be neither a valid path nor a credential name: {source}"
        );
    };
    let meta = std::fs::metadata(&path).map_err(|e| read_failed(&e))?;
    let source: Box<dyn Read> = if meta.file_type().is_socket() {
        let stream = std::os::unix::net::UnixStream::connect(&path).map_err(|e| read_failed(&e))?;
        stream.shutdown(std::net::Shutdown::Write).ok();
        Box::new(stream)
    } else {
        Box::new(std::fs::File::open(&path).map_err(|e| read_failed(&e))?)
    };
    // As systemd: a credential is at most CREDENTIAL_SIZE_MAX (so /dev/zero cannot eat memory).
    let mut data = Vec::new();
    source
        .take(CREDENTIAL_SIZE_MAX + 1)
        .read_to_end(&mut data)
        .map_err(|e| read_failed(&e))?;
    if data.len() as u64 > CREDENTIAL_SIZE_MAX {
        return Err(read_failed(&format!(
            "larger than {} bytes",
            CREDENTIAL_SIZE_MAX
        )));
    }
    Ok(data)
}

/// The largest credential systemd accepts (1 MiB).
const CREDENTIAL_SIZE_MAX: u64 = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Action> {
        let env = |_: &str| None;
        parse(
            &args.iter().map(OsString::from).collect::<Vec<_>>(),
            &ParseEnv {
                cwd: Path::new("/home/u"),
                var: &env,
            },
        )
    }

    fn config(args: &[&str]) -> Config {
        match run(args) {
            Ok(Action::Run(c)) => *c,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn error(args: &[&str]) -> String {
        match run(args) {
            Err(e) => e.to_string(),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn disk_and_memory_options() {
        use crate::config::ExtraDrive;
        let c = config(&[
            "-i",
            "a.iso",
            "--image-format=raw",
            "--image-disk-type=scsi-cd",
            "--extra-drive=b.raw",
            "--extra-drive=qcow2:nvme:/x/c.qcow2",
            "--extra-drive=virtio-scsi:raw:d",
            "--extra-drive=dir:with:colons",
            "--extra-drive=",
            "--ram=1G:4G:8",
        ]);
        assert_eq!(c.image_format, Some(ImageFormat::Raw));
        assert_eq!(c.image_disk_type, DiskType::ScsiCd);
        let drive = |path: &str, format, disk_type| ExtraDrive {
            path: path.into(),
            format,
            disk_type,
        };
        assert_eq!(
            c.extra_drives,
            vec![
                drive("/home/u/b.raw", None, None),
                drive("/x/c.qcow2", Some(ImageFormat::Qcow2), Some(DiskType::Nvme)),
                drive(
                    "/home/u/d",
                    Some(ImageFormat::Raw),
                    Some(DiskType::VirtioScsi)
                ),
                drive("/home/u/dir:with:colons", None, None),
            ]
        );
        assert_eq!((c.ram, c.ram_max, c.ram_slots), (1 << 30, Some(4 << 30), 8));
        let c = config(&["--ram=512M:2G", "--image-format=qcow2"]);
        assert_eq!(
            (c.ram, c.ram_max, c.ram_slots),
            (512 << 20, Some(2 << 30), 0)
        );
        assert_eq!(c.image_format, Some(ImageFormat::Qcow2));
        let c = config(&["--ram=1G:4G:8", "--ram=2G"]);
        assert_eq!((c.ram, c.ram_max, c.ram_slots), (2 << 30, None, 0));
        assert_eq!(c.image_disk_type, DiskType::VirtioBlk);

        for (args, message) in [
            (&["--image-format=vmdk"][..], "Invalid image format: vmdk"),
            (&["--image-format="], "Invalid image format: "),
            (&["--image-disk-type=ide"], "Invalid image disk type: ide"),
            (
                &["--ram=2G:1G"],
                "Maximum RAM size must be greater than or equal to initial RAM size",
            ),
            (
                &["--ram=1G::4"],
                "Memory hotplug slots require a maximum RAM size",
            ),
            (
                &["--ram=1G:2G:4:5"],
                "Unexpected trailing data in --ram=1G:2G:4:5",
            ),
            (
                &["--ram=1G:lots"],
                "Failed to parse --ram=1G:lots: Invalid argument",
            ),
            (
                &["--ram=1G:2G:x"],
                "Failed to parse --ram=1G:2G:x: Invalid argument",
            ),
            (
                &["--ram=1G:2G:-1"],
                "Failed to parse --ram=1G:2G:-1: Invalid argument",
            ),
            (
                &["--ram=:2G"],
                "Failed to parse --ram=:2G: Invalid argument",
            ),
            (
                &["--extra-drive=qcow2:"],
                "Failed to parse --extra-drive= argument 'qcow2:': no path",
            ),
            (
                &["--extra-drive=raw:scsi-cd:"],
                "Failed to parse --extra-drive= argument 'raw:scsi-cd:'",
            ),
        ] {
            let e = error(args);
            assert!(e.starts_with(message), "{args:?}: {e}");
        }
        assert!(
            error(&["--image-disk-type=ide"]).contains("virtio-blk, virtio-scsi, nvme, scsi-cd")
        );
    }

    #[test]
    fn syntax_forms() {
        let c = config(&[
            "-i",
            "a.raw",
            "--cpus=2",
            "--ram",
            "1G",
            "-s",
            "x",
            "--smbios11=y",
            "--kvm",
            "",
            "--qemu-vsock=no",
        ]);
        assert_eq!(c.image.as_deref(), Some(Path::new("/home/u/a.raw")));
        assert_eq!(c.cpus, "2");
        assert_eq!(c.ram, 1 << 30);
        assert_eq!(c.smbios11, vec!["x", "y"]);
        assert_eq!(c.kvm, Tristate::Auto);
        assert_eq!(c.vsock, Tristate::No);
    }

    #[test]
    fn stops_at_first_non_option() {
        let c = config(&["-i", "a.raw", "quiet", "--cpus=4", "-q"]);
        assert_eq!(c.kernel_cmdline_extra, vec!["quiet", "--cpus=4", "-q"]);
        assert_eq!(c.cpus, "1");
        assert!(!c.quiet);
    }

    #[test]
    fn last_wins_and_empty_resets() {
        let c = config(&[
            "-i", "a", "--cpus=2", "--cpus=3", "-s", "x", "-s", "", "-s", "z", "-M", "foo", "-M",
            "",
        ]);
        assert_eq!(c.cpus, "3");
        assert_eq!(c.smbios11, vec!["z"]);
        assert_eq!(c.machine, None);
        let c = config(&["--network-user-mode", "--discard-disk=off"]);
        assert_eq!(c.network, Network::UserMode);
        assert!(!c.discard_disk);
    }

    #[test]
    fn network_order() {
        assert_eq!(
            config(&["-n", "--network-user-mode", "-n"]).network,
            Network::Tap
        );
        assert_eq!(
            config(&["-n", "--network-user-mode"]).network,
            Network::UserMode
        );
    }

    #[test]
    fn prefixes_and_bundles() {
        let c = config(&["--cp=3", "-qi", "y.raw"]);
        assert!(c.quiet);
        assert_eq!(c.cpus, "3");
        assert_eq!(c.image.as_deref(), Some(Path::new("/home/u/y.raw")));
        // --ima is a prefix of --image, --image-format and --image-disk-type (as in 262).
        assert!(error(&["--ima=x.raw"]).contains("--ima"));
    }

    #[test]
    fn errors() {
        assert_eq!(
            error(&["--ram=12X"]),
            "Failed to parse --ram=12X: Invalid argument"
        );
        assert_eq!(
            error(&["--kvm=maybe"]),
            "Failed to parse boolean argument to --kvm=: maybe (expected yes, no or auto)."
        );
        assert_eq!(
            error(&["--initrd=x"]),
            "Option --initrd= cannot be used without --linux=."
        );
        assert_eq!(
            error(&["--uuid=00000000000000000000000000000000"]),
            "Machine UUID may not be all zeroes."
        );
        assert_eq!(
            error(&["--firmware=relative.json"]),
            "Expected one of 'auto', 'uefi', 'bios', 'none', 'list', 'describe', or an absolute \
             path or path starting with './', got: relative.json"
        );
        assert_eq!(
            error(&["--firmware=efi"]),
            "Expected one of 'auto', 'uefi', 'bios', 'none', 'list', 'describe', or an absolute \
             path or path starting with './', got: efi"
        );
        assert!(
            error(&["--firmware-features=secure-boot,,x"])
                .starts_with("Invalid firmware feature '' in --firmware-features=secure-boot,,x")
        );
        assert!(error(&["--firmware-features=~"]).starts_with("Invalid firmware feature '~'"));
        assert_eq!(
            error(&["--efi-nvram-template=vars.fd"]),
            "--efi-nvram-template=vars.fd: Absolute path or path starting with './' required."
        );
        assert_eq!(
            error(&["--efi-nvram-state=vars.fd"]),
            "Path in --efi-nvram-state= parameter must be absolute or start with './': vars.fd"
        );
        assert_eq!(
            error(&["--vsock-cid=2"]),
            "Specified CID is not regular, refusing: 2"
        );
        assert_eq!(error(&["-M", "a b"]), "Invalid machine name: a b");
        assert_eq!(
            error(&["--console=tty"]),
            "Failed to parse specified console mode: tty"
        );
        assert_eq!(
            error(&["--set-credential=x"]),
            "Missing value for --set-credential=: x"
        );
        assert_eq!(
            error(&["--set-credential=a:1", "--set-credential=a:2"]),
            "Duplicated credential 'a', refusing."
        );
        assert_eq!(
            error(&["--bind-user-group=wheel"]),
            "Cannot use --bind-user-group= without --bind-user="
        );
        assert!(error(&["--bogus"]).contains("--bogus"));
        assert!(
            error(&["--image"]).contains("value is required"),
            "{}",
            error(&["--image"])
        );
        assert!(error(&["--vtpm=yes"]).contains("--vtpm"));
    }

    #[test]
    fn slice_and_properties() {
        use crate::scope::PropValue;
        let c = config(&[
            "--slice=vmtest",
            "--property=MemoryMax=1G",
            "--property=CPUQuota=25%",
        ]);
        assert_eq!(c.slice.as_deref(), Some("vmtest.slice"));
        assert_eq!(c.properties.len(), 2);
        assert_eq!(c.properties[0].value, PropValue::U64(1 << 30));
        assert_eq!(c.properties[1].name, "CPUQuotaPerSecUSec");
        let e = error(&["--property=DeviceAllow=/dev/kvm rw"]);
        assert!(
            e.contains("DeviceAllow") && e.contains("Supported: MemoryMax"),
            "{e}"
        );
        assert!(error(&["--property=CPUWeight"]).contains("expected NAME=VALUE"));
        assert!(error(&["--slice=a/b"]).contains("Failed to turn 'a/b' into unit name"));
        for args in [
            &["--keep-unit", "--slice=foo"][..],
            &["--property=TasksMax=10", "--keep-unit"],
        ] {
            let e = error(args);
            assert!(
                e.contains("with --keep-unit it creates none"),
                "{args:?}: {e}"
            );
        }
    }

    #[test]
    fn unimplemented_features_fail_clearly() {
        for (args, what) in [
            (&["--coco=tdx"][..], "confidential computing"),
            (&["--bind-volume=lvm:vol0"], "storage volume providers"),
        ] {
            let e = error(args);
            assert!(
                e.contains(what) && e.contains("not supported"),
                "{args:?}: {e}"
            );
        }
        assert_eq!(
            config(&["--register=yes", "--register=auto"]).register,
            None
        );
        assert_eq!(
            config(&["--register=auto", "--register=no"]).register,
            Some(false)
        );
        // Defaults and explicit "off" are fine.
        config(&[
            "--register=no",
            "--register=yes",
            "--tpm=no",
            "--tpm=yes",
            "--tpm-state=./state",
            "--vsock=auto",
            "--pass-ssh-key=no",
            "--pass-ssh-key=yes",
            "--ssh-key-type=rsa",
            "--forward-journal=/tmp/j",
            "--tpm=",
            "--keep-unit",
        ]);
    }

    #[test]
    fn options_of_262() {
        use crate::config::{ConsoleTransport, RuntimeScope};
        let c = config(&["-x", "-i", "a.raw", "--console=headless"]);
        assert!(c.ephemeral);
        assert_eq!(c.console, ConsoleMode::Headless);
        // An ephemeral VM keeps no TPM state next to the image.
        assert_eq!(c.tpm_state, TpmState::Off);
        assert_eq!(
            config(&["-x", "--tpm-state=/s"]).tpm_state,
            TpmState::Path("/s".into())
        );
        assert_eq!(config(&[]).console_transport, ConsoleTransport::Virtio);
        assert_eq!(
            config(&["--console-transport=serial"]).console_transport,
            ConsoleTransport::Serial
        );
        assert_eq!(
            error(&["--console-transport=usb"]),
            "Failed to parse specified console transport: usb (expected virtio or serial)"
        );
        assert_eq!(config(&[]).runtime_scope, None);
        assert_eq!(
            config(&["--user", "--system"]).runtime_scope,
            Some(RuntimeScope::System)
        );
        assert_eq!(
            config(&["--system", "--user"]).runtime_scope,
            Some(RuntimeScope::User)
        );
        let c = config(&[
            "--forward-journal=/j",
            "--forward-journal-max-use=1G",
            "--forward-journal-keep-free=10M",
            "--forward-journal-max-file-size=64K",
            "--forward-journal-max-files=5",
        ]);
        assert_eq!(c.journal_limits.max_use, Some(1 << 30));
        assert_eq!(c.journal_limits.keep_free, Some(10 << 20));
        assert_eq!(c.journal_limits.max_file_size, Some(64 << 10));
        assert_eq!(c.journal_limits.max_files, Some(5));
        // An empty value resets a limit.
        let c = config(&[
            "--forward-journal=/j",
            "--forward-journal-max-files=5",
            "--forward-journal-max-files=",
        ]);
        assert!(!c.journal_limits.any());
        for (args, text) in [
            (
                &["--forward-journal-max-use=1G"][..],
                "require --forward-journal=.",
            ),
            (
                &["--forward-journal=/j", "--forward-journal-max-files=many"],
                "Failed to parse --forward-journal-max-files= value: many",
            ),
            (
                &["--forward-journal=/j", "--forward-journal-max-use=lots"],
                "Failed to parse --forward-journal-max-use= value: lots",
            ),
            (
                &["-x", "-i", "a.raw", "--extra-drive=b.raw"],
                "Cannot use --ephemeral with --extra-drive=",
            ),
        ] {
            let e = error(args);
            assert!(e.contains(text), "{args:?}: {e}");
        }
    }

    #[test]
    fn ephemeral_reads_tmpdir() {
        let env = |name: &str| (name == "TMPDIR").then(|| OsString::from("scratch"));
        let parsed = |args: &[&str]| {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            match parse(
                &args,
                &ParseEnv {
                    cwd: Path::new("/home/u"),
                    var: &env,
                },
            ) {
                Ok(Action::Run(c)) => c.tmpdir,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(
            parsed(&["-x", "-i", "a.raw"]),
            Some(PathBuf::from("/home/u/scratch"))
        );
        assert_eq!(parsed(&["-i", "a.raw"]), None);
    }

    #[test]
    fn credentials_unescape() {
        let c = config(&["--set-credential=foo:a\\nb\\x00c"]);
        assert_eq!(c.credentials[0].data, b"a\nb\0c");
    }

    #[test]
    fn load_credential_is_bounded() {
        let e = error(&["--load-credential=big:/dev/zero"]);
        assert!(e.contains("larger than 1048576 bytes"), "{e}");
    }

    #[test]
    fn load_credential_sources() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file.txt"), b"from-file").unwrap();
        std::fs::create_dir(dir.path().join("creds")).unwrap();
        std::fs::write(dir.path().join("creds/passed"), b"from-directory").unwrap();
        let socket_path = dir.path().join("cred.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
        let server = std::thread::spawn(move || {
            use std::io::Write;
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(b"from-socket").unwrap();
        });
        let creds_dir = dir.path().join("creds");
        let env = move |name: &str| {
            (name == "CREDENTIALS_DIRECTORY").then(|| creds_dir.clone().into_os_string())
        };
        let args: Vec<OsString> = [
            "--load-credential=a:./file.txt",
            "--load-credential=b:passed",
            "--load-credential=c:./cred.sock",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let Ok(Action::Run(c)) = parse(
            &args,
            &ParseEnv {
                cwd: dir.path(),
                var: &env,
            },
        ) else {
            panic!("parse failed")
        };
        server.join().unwrap();
        let data: Vec<&[u8]> = c.credentials.iter().map(|c| c.data.as_slice()).collect();
        assert_eq!(
            data,
            vec![&b"from-file"[..], b"from-directory", b"from-socket"]
        );
        // Without $CREDENTIALS_DIRECTORY a bare name cannot be resolved.
        let none = |_: &str| None;
        let err = parse(
            &[OsString::from("--load-credential=b:passed")],
            &ParseEnv {
                cwd: dir.path(),
                var: &none,
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Credential not available (no credentials passed at all): passed"
        );
        let err = parse(
            &[OsString::from("--load-credential=x:./missing")],
            &ParseEnv {
                cwd: dir.path(),
                var: &none,
            },
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Failed to read credential 'x': No such file"),
            "{err}"
        );
    }

    #[test]
    fn gui_alias() {
        assert_eq!(config(&["--qemu-gui"]).console, ConsoleMode::Gui);
        assert_eq!(
            config(&["--qemu-gui", "--console=native"]).console,
            ConsoleMode::Native
        );
        assert_eq!(
            config(&["--console=native", "--qemu-gui"]).console,
            ConsoleMode::Gui
        );
    }

    #[test]
    fn special_actions() {
        assert!(matches!(
            run(&["--version", "--bogus-later"]),
            Err(_) | Ok(Action::Version)
        ));
        assert!(matches!(
            run(&["--firmware=list"]),
            Ok(Action::FirmwareList)
        ));
        assert!(matches!(
            run(&["--firmware-features=list"]),
            Ok(Action::FirmwareFeaturesList)
        ));
        // describe is answered after parsing, with the feature wishes of the whole line.
        match run(&[
            "--firmware=describe",
            "--secure-boot=yes",
            "--firmware-features=~secure-boot,tdx",
        ]) {
            Ok(Action::FirmwareDescribe { include, exclude }) => {
                assert_eq!(include, ["secure-boot", "tdx"]);
                assert_eq!(exclude, ["enrolled-keys", "secure-boot"]);
            }
            other => panic!("{other:?}"),
        }
        // A later --firmware= replaces describe.
        assert!(matches!(
            run(&["--firmware=describe", "--firmware=uefi", "-i", "x.raw"]),
            Ok(Action::Run(_))
        ));
        assert!(matches!(run(&["-h"]), Ok(Action::Help(_))));
        let help = help_text();
        for spec in OPTIONS {
            assert!(
                help.contains(&format!("--{}", spec.long)),
                "help lacks --{}",
                spec.long
            );
        }
    }
}
