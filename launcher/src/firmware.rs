//! UEFI firmware selection from QEMU firmware interop descriptors (docs/interop/firmware.json),
//! with systemd-vmspawn 259's search path, priority, masking and filters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{Config, FirmwareKind, NvramState};
use crate::error::{Error, Result};

/// The chosen firmware.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firmware {
    pub descriptor: PathBuf,
    pub code: PathBuf,
    pub code_format: String,
    pub vars_template: PathBuf,
    pub vars_format: String,
    pub secure_boot: bool,
}

#[derive(Deserialize)]
struct Descriptor {
    #[allow(dead_code)]
    description: String,
    #[serde(rename = "interface-types")]
    #[allow(dead_code)]
    interface_types: Vec<serde_json::Value>,
    mapping: Mapping,
    targets: Vec<Target>,
    features: Vec<String>,
    #[allow(dead_code)]
    tags: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Mapping {
    #[allow(dead_code)]
    device: String,
    executable: FlashFile,
    #[serde(rename = "nvram-template")]
    nvram_template: FlashFile,
}

#[derive(Deserialize)]
struct FlashFile {
    filename: PathBuf,
    format: String,
}

#[derive(Deserialize)]
struct Target {
    architecture: String,
    #[allow(dead_code)]
    machines: Vec<serde_json::Value>,
}

/// The descriptor search path, highest priority first.
pub fn search_dirs(xdg_config_home: Option<&Path>, home: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    match (xdg_config_home, home) {
        (Some(x), _) => dirs.push(x.join("qemu/firmware")),
        (None, Some(h)) => dirs.push(h.join(".config/qemu/firmware")),
        (None, None) => {}
    }
    dirs.push(PathBuf::from("/etc/qemu/firmware"));
    dirs.push(PathBuf::from("/usr/share/qemu/firmware"));
    dirs
}

/// Lists descriptor files like systemd's conf-file enumeration: `*.json` merged by file name
/// (the higher-priority directory wins), sorted by name, masked entries (symlinks to /dev/null,
/// or empty files) dropped.
pub fn list_descriptors(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut by_name: BTreeMap<std::ffi::OsString, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().ends_with(".json") || by_name.contains_key(&name) {
                continue;
            }
            by_name.insert(name, entry.path());
        }
    }
    by_name
        .into_values()
        .filter(|path| {
            let masked_link = std::fs::read_link(path).is_ok_and(|t| t == Path::new("/dev/null"));
            let usable = std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0);
            !masked_link && usable
        })
        .collect()
}

/// Parses one descriptor. Descriptors without an NVRAM template (stateless, memory, kernel
/// mappings) are not usable, as in 259.
pub fn parse_descriptor(
    path: &Path,
    content: &[u8],
) -> Result<(Firmware, Vec<String>, Vec<String>)> {
    let d: Descriptor = serde_json::from_slice(content).map_err(|e| {
        Error::new(format!(
            "Failed to parse firmware descriptor '{}': {e}",
            path.display()
        ))
    })?;
    let secure_boot = d.features.iter().any(|f| f == "secure-boot");
    let arches = d.targets.into_iter().map(|t| t.architecture).collect();
    Ok((
        Firmware {
            descriptor: path.to_path_buf(),
            code: d.mapping.executable.filename,
            code_format: d.mapping.executable.format,
            vars_template: d.mapping.nvram_template.filename,
            vars_format: d.mapping.nvram_template.format,
            secure_boot,
        },
        d.features,
        arches,
    ))
}

/// The descriptor has every included feature and no excluded one that is not also included
/// (inclusion wins, as in 262).
fn features_match(features: &[String], include: &[String], exclude: &[String]) -> bool {
    include.iter().all(|f| features.contains(f))
        && !exclude
            .iter()
            .any(|f| !include.contains(f) && features.contains(f))
}

/// Picks the first descriptor (in list order) that parses, targets `qemu_arch`, and has the
/// features `include` asks for and none of `exclude` (by default `enrolled-keys`).
pub fn select(
    descriptors: &[(PathBuf, Vec<u8>)],
    qemu_arch: &str,
    include: &[String],
    exclude: &[String],
) -> Result<Firmware> {
    select_descriptor(descriptors, qemu_arch, include, exclude).map(|(firmware, _)| firmware)
}

/// `select`, also returning the descriptor's JSON (for `--firmware=describe`).
pub fn select_descriptor(
    descriptors: &[(PathBuf, Vec<u8>)],
    qemu_arch: &str,
    include: &[String],
    exclude: &[String],
) -> Result<(Firmware, serde_json::Value)> {
    for (path, content) in descriptors {
        let Ok((firmware, features, arches)) = parse_descriptor(path, content) else {
            continue;
        };
        if !arches.iter().any(|a| a == qemu_arch) || !features_match(&features, include, exclude) {
            continue;
        }
        let json = serde_json::from_slice(content).unwrap_or(serde_json::Value::Null);
        return Ok((firmware, json));
    }
    let mut wish = Vec::new();
    if !include.is_empty() {
        wish.push(format!("with {}", include.join(", ")));
    }
    let excluded: Vec<&str> = exclude
        .iter()
        .filter(|f| !include.contains(f))
        .map(String::as_str)
        .collect();
    if !excluded.is_empty() {
        wish.push(format!("without {}", excluded.join(", ")));
    }
    let wish = if wish.is_empty() {
        String::new()
    } else {
        format!(" ({})", wish.join("; "))
    };
    Err(Error::new(format!(
        "Failed to find OVMF config: no UEFI firmware descriptor for {qemu_arch}{wish} in \
         ~/.config/qemu/firmware, /etc/qemu/firmware or /usr/share/qemu/firmware. \
         Install the 'ovmf' package, pass --firmware=PATH, or check --firmware-features= \
         (--firmware-features=list shows what the installed firmware offers)."
    )))
}

/// Every feature the descriptors that parse name, sorted, once each (`--firmware-features=list`).
pub fn features(descriptors: &[(PathBuf, Vec<u8>)]) -> Vec<String> {
    let mut all: Vec<String> = descriptors
        .iter()
        .filter_map(|(path, content)| parse_descriptor(path, content).ok())
        .flat_map(|(_, features, _)| features)
        .collect();
    all.sort();
    all.dedup();
    all
}

/// Loads the descriptor given with `--firmware=PATH`; no filters apply except the explicit
/// Secure Boot request.
pub fn load_explicit(path: &Path, content: &[u8], secure_boot: bool) -> Result<Firmware> {
    let (firmware, _, _) = parse_descriptor(path, content)?;
    if secure_boot && !firmware.secure_boot {
        return Err(Error::new(
            "Secure Boot requested, but supplied OVMF firmware blob doesn't support it.",
        ));
    }
    Ok(firmware)
}

/// What a `--linux=` kernel is, from its first bytes (the PE header and section table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelKind {
    /// A unified kernel image: a PE binary with a `.linux` section.
    Uki,
    /// Another PE binary: an EFI-stub kernel (what distributions ship).
    Pe,
    /// Not a PE binary (a bzImage without EFI stub, an Image, ...).
    Plain,
}

/// Reads the PE header of `data` (the kernel's first 64 KiB are plenty).
pub fn kernel_kind(data: &[u8]) -> KernelKind {
    let u16_at = |at: usize| {
        data.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if !data.starts_with(b"MZ") {
        return KernelKind::Plain;
    }
    let Some(pe) = u32_at(0x3c).map(|o| o as usize) else {
        return KernelKind::Plain;
    };
    if data.get(pe..pe + 4) != Some(b"PE\0\0") {
        return KernelKind::Plain;
    }
    let (Some(sections), Some(optional_size)) = (u16_at(pe + 6), u16_at(pe + 20)) else {
        return KernelKind::Pe;
    };
    let table = pe + 24 + optional_size as usize;
    let has_linux = (0..sections as usize).any(|i| {
        data.get(table + i * 40..table + i * 40 + 8)
            .is_some_and(|name| name == b".linux\0\0")
    });
    if has_linux {
        KernelKind::Uki
    } else {
        KernelKind::Pe
    }
}

/// The firmware a VM boots with. `kernel` is the kind of the kernel it boots directly
/// (`--linux=`, or a directory's boot entry when `from_linux` is false), if any.
///
/// `--firmware=auto` (the default): UEFI for a disk image's own boot loader, a UKI, a boot
/// entry of a directory, a graphical console, and whenever the command line asks for something
/// only UEFI gives (`Config::wants_uefi`); otherwise a `--linux=` kernel is booted without
/// firmware.
pub fn resolve(
    config: &Config,
    kernel: Option<KernelKind>,
    from_linux: bool,
) -> Result<FirmwareKind> {
    let linux = || {
        config
            .linux
            .as_deref()
            .map_or_else(String::new, |p| p.display().to_string())
    };
    let Some(kind) = config.firmware_kind else {
        return Ok(match kernel {
            Some(KernelKind::Uki) | None => FirmwareKind::Uefi,
            Some(_) if !from_linux || config.wants_uefi().is_some() => FirmwareKind::Uefi,
            // A window shows the guest's console through the firmware's framebuffer (efifb)
            // until the guest loads a display driver of its own; without firmware a kernel
            // whose initrd has none (Debian's cloud kernel with a small initrd) leaves the
            // window black. So a graphical console keeps UEFI unless told otherwise.
            Some(_) if config.console == crate::config::ConsoleMode::Gui => FirmwareKind::Uefi,
            Some(_) => FirmwareKind::None,
        });
    };
    if kind != FirmwareKind::Uefi {
        if kernel == Some(KernelKind::Uki) {
            return Err(Error::new(format!(
                "Booting a UKI requires --firmware=uefi. ('{}' is a unified kernel image; drop \
                 --firmware={} or use --firmware=uefi.)",
                linux(),
                kind.as_str()
            )));
        }
        if kind == FirmwareKind::None && kernel.is_none() {
            return Err(Error::new(
                "--firmware=none requires --linux= to be specified. (Without firmware nothing \
                 loads a boot loader from the image; pass --linux=KERNEL, or use --firmware=uefi \
                 or --firmware=bios.)",
            ));
        }
        if let Some(option) = config.wants_uefi() {
            return Err(Error::new(format!(
                "{option} needs UEFI firmware, but --firmware={} was given. Drop one of them, \
                 or use --firmware=uefi.",
                kind.as_str()
            )));
        }
    } else if kernel == Some(KernelKind::Plain) && from_linux {
        return Err(Error::new(format!(
            "Kernel image '{}' is not a PE binary, --firmware=uefi (or a firmware path) is not \
             supported. (UEFI firmware can only start an EFI-stub kernel; drop --firmware= to \
             boot it without firmware.)",
            linux()
        )));
    }
    Ok(kind)
}

/// Where the UEFI variable store lives: `Some((path, persistent))`; a non-persistent store is
/// a fresh copy in the runtime directory. The one place `--efi-nvram-state=auto` is resolved
/// (`<image>.efinvramstate`, or next to a directory); `auto_problem` says why that file cannot
/// be used, in which case the VM gets a fresh copy (as an unusable `<image>.tpmstate` means no
/// TPM state).
pub fn nvram_state(
    config: &Config,
    root: &Path,
    runtime_dir: &Path,
    auto_problem: Option<&str>,
) -> (PathBuf, bool) {
    match config.efi_nvram_state.as_ref().unwrap_or(&NvramState::Auto) {
        NvramState::Path(path) => (path.clone(), true),
        // A throw-away (--ephemeral) VM keeps no state next to its image, as in 262.
        NvramState::Auto if auto_problem.is_none() && !config.ephemeral => {
            (auto_nvram_state(root), true)
        }
        NvramState::Auto | NvramState::Off => (runtime_dir.join("ovmf-vars.fd"), false),
    }
}

/// `<image>.efinvramstate`: the variable store `--efi-nvram-state=auto` keeps next to the image.
pub fn auto_nvram_state(root: &Path) -> PathBuf {
    let mut name = root.as_os_str().to_os_string();
    name.push(".efinvramstate");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Tristate;

    pub fn descriptor(code: &str, arch: &str, features: &[&str]) -> Vec<u8> {
        serde_json::json!({
            "description": "test",
            "interface-types": ["uefi"],
            "mapping": {
                "device": "flash",
                "executable": {"filename": code, "format": "raw"},
                "nvram-template": {"filename": format!("{code}.vars"), "format": "raw"}
            },
            "targets": [{"architecture": arch, "machines": ["pc-q35-*"]}],
            "features": features,
            "tags": []
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn selection_rules() {
        let list = vec![
            (PathBuf::from("/d/10-broken.json"), b"{}".to_vec()),
            (
                PathBuf::from("/d/20-arm.json"),
                descriptor("/arm.fd", "aarch64", &[]),
            ),
            (
                PathBuf::from("/d/30-ms.json"),
                descriptor("/ms.fd", "x86_64", &["secure-boot", "enrolled-keys"]),
            ),
            (
                PathBuf::from("/d/40-sb.json"),
                descriptor("/sb.fd", "x86_64", &["secure-boot"]),
            ),
            (
                PathBuf::from("/d/50-plain.json"),
                descriptor("/plain.fd", "x86_64", &[]),
            ),
        ];
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let default_exclude = v(&["enrolled-keys"]);
        assert_eq!(
            select(&list, "x86_64", &[], &default_exclude).unwrap().code,
            Path::new("/sb.fd")
        );
        assert_eq!(
            select(&list, "x86_64", &v(&["secure-boot"]), &default_exclude)
                .unwrap()
                .code,
            Path::new("/sb.fd")
        );
        // Without the default exclusion the enrolled-keys firmware comes first; an included
        // feature wins over its exclusion.
        assert_eq!(
            select(&list, "x86_64", &[], &[]).unwrap().code,
            Path::new("/ms.fd")
        );
        assert_eq!(
            select(&list, "x86_64", &v(&["enrolled-keys"]), &default_exclude)
                .unwrap()
                .code,
            Path::new("/ms.fd")
        );
        assert_eq!(features(&list), v(&["enrolled-keys", "secure-boot"]));
        let plain = select(&list, "x86_64", &[], &v(&["secure-boot", "enrolled-keys"])).unwrap();
        assert_eq!(plain.code, Path::new("/plain.fd"));
        assert_eq!(plain.vars_template, Path::new("/plain.fd.vars"));
        assert!(!plain.secure_boot);
        assert!(
            select(&list, "riscv64", &[], &default_exclude)
                .unwrap_err()
                .to_string()
                .starts_with("Failed to find OVMF config")
        );
    }

    #[test]
    fn explicit_secure_boot_check() {
        let plain = descriptor("/plain.fd", "x86_64", &[]);
        assert!(load_explicit(Path::new("/x.json"), &plain, false).is_ok());
        assert_eq!(
            load_explicit(Path::new("/x.json"), &plain, true)
                .unwrap_err()
                .to_string(),
            "Secure Boot requested, but supplied OVMF firmware blob doesn't support it."
        );
    }

    /// A PE header with the given section names (a minimal one: MZ, e_lfanew, PE signature,
    /// file header, no optional header).
    fn pe(sections: &[&[u8; 8]]) -> Vec<u8> {
        let mut data = vec![0u8; 0x80];
        data[0..2].copy_from_slice(b"MZ");
        data[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        data[0x40..0x44].copy_from_slice(b"PE\0\0");
        data[0x46..0x48].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        data.truncate(0x40 + 24);
        for name in sections {
            let mut section = [0u8; 40];
            section[..8].copy_from_slice(*name);
            data.extend_from_slice(&section);
        }
        data
    }

    #[test]
    fn kernel_kinds() {
        assert_eq!(kernel_kind(b"\x7fELF"), KernelKind::Plain);
        assert_eq!(kernel_kind(b"MZ"), KernelKind::Plain);
        assert_eq!(kernel_kind(&pe(&[b".text\0\0\0"])), KernelKind::Pe);
        assert_eq!(
            kernel_kind(&pe(&[b".osrel\0\0", b".linux\0\0"])),
            KernelKind::Uki
        );
    }

    #[test]
    fn firmware_resolution() {
        use crate::config::{Config, FirmwareKind as F};
        let base = Config {
            linux: Some(PathBuf::from("/k")),
            ..Config::default()
        };
        let with = |f: &dyn Fn(&mut Config)| {
            let mut c = base.clone();
            f(&mut c);
            c
        };
        let ok = |c: &Config, k| resolve(c, k, true).unwrap();
        let err = |c: &Config, k| resolve(c, k, true).unwrap_err().to_string();
        // auto
        assert_eq!(ok(&base, Some(KernelKind::Pe)), F::None);
        assert_eq!(ok(&base, Some(KernelKind::Plain)), F::None);
        assert_eq!(ok(&base, Some(KernelKind::Uki)), F::Uefi);
        assert_eq!(
            resolve(&base, Some(KernelKind::Pe), false).unwrap(),
            F::Uefi
        );
        assert_eq!(ok(&Config::default(), None), F::Uefi);
        let sb = with(&|c| c.secure_boot = Tristate::Yes);
        assert_eq!(ok(&sb, Some(KernelKind::Pe)), F::Uefi);
        let nvram = with(&|c| c.efi_nvram_state = Some(NvramState::Off));
        assert_eq!(ok(&nvram, Some(KernelKind::Pe)), F::Uefi);
        // A graphical console keeps the firmware's framebuffer, unless told otherwise.
        let gui = with(&|c| c.console = crate::config::ConsoleMode::Gui);
        assert_eq!(ok(&gui, Some(KernelKind::Pe)), F::Uefi);
        let gui_none = with(&|c| {
            c.console = crate::config::ConsoleMode::Gui;
            c.firmware_kind = Some(F::None);
        });
        assert_eq!(ok(&gui_none, Some(KernelKind::Pe)), F::None);
        // explicit
        let none = with(&|c| c.firmware_kind = Some(F::None));
        assert!(
            err(&none, Some(KernelKind::Uki))
                .starts_with("Booting a UKI requires --firmware=uefi.")
        );
        assert!(
            resolve(
                &Config {
                    firmware_kind: Some(F::None),
                    ..Config::default()
                },
                None,
                true
            )
            .unwrap_err()
            .to_string()
            .starts_with("--firmware=none requires --linux= to be specified.")
        );
        let none_sb = with(&|c| {
            c.firmware_kind = Some(F::None);
            c.secure_boot = Tristate::Yes;
        });
        assert!(
            err(&none_sb, Some(KernelKind::Pe))
                .starts_with("--secure-boot=yes needs UEFI firmware")
        );
        let uefi = with(&|c| c.firmware_kind = Some(F::Uefi));
        assert_eq!(ok(&uefi, Some(KernelKind::Pe)), F::Uefi);
        assert!(
            err(&uefi, Some(KernelKind::Plain)).starts_with("Kernel image '/k' is not a PE binary")
        );
        let bios = with(&|c| c.firmware_kind = Some(F::Bios));
        assert_eq!(ok(&bios, Some(KernelKind::Pe)), F::Bios);
        assert_eq!(
            resolve(
                &Config {
                    firmware_kind: Some(F::Bios),
                    ..Config::default()
                },
                None,
                true
            )
            .unwrap(),
            F::Bios
        );
    }

    #[test]
    fn nvram_state_resolution() {
        let root = Path::new("/img/d.raw");
        let rd = Path::new("/run/vm");
        let mut c = Config::default();
        assert_eq!(
            nvram_state(&c, root, rd, None),
            (PathBuf::from("/img/d.raw.efinvramstate"), true)
        );
        assert_eq!(
            nvram_state(&c, root, rd, Some("no")),
            (PathBuf::from("/run/vm/ovmf-vars.fd"), false)
        );
        // --ephemeral: auto means off.
        c.ephemeral = true;
        assert_eq!(
            nvram_state(&c, root, rd, None),
            (PathBuf::from("/run/vm/ovmf-vars.fd"), false)
        );
        c.ephemeral = false;
        c.efi_nvram_state = Some(NvramState::Off);
        assert_eq!(
            nvram_state(&c, root, rd, None),
            (PathBuf::from("/run/vm/ovmf-vars.fd"), false)
        );
        c.efi_nvram_state = Some(NvramState::Path(PathBuf::from("/s/vars")));
        assert_eq!(
            nvram_state(&c, root, rd, Some("no")),
            (PathBuf::from("/s/vars"), true)
        );
    }

    #[test]
    fn listing_priority_and_masking() {
        let tmp = tempfile::tempdir().unwrap();
        let high = tmp.path().join("high");
        let low = tmp.path().join("low");
        std::fs::create_dir_all(&high).unwrap();
        std::fs::create_dir_all(&low).unwrap();
        std::fs::write(low.join("50-a.json"), b"{}").unwrap();
        std::fs::write(high.join("50-a.json"), b"{}").unwrap();
        std::fs::write(low.join("10-b.json"), b"{}").unwrap();
        std::fs::write(low.join("60-masked.json"), b"{}").unwrap();
        std::os::unix::fs::symlink("/dev/null", high.join("60-masked.json")).unwrap();
        std::fs::write(low.join("readme.txt"), b"x").unwrap();
        let found = list_descriptors(&[high.clone(), low.clone()]);
        assert_eq!(found, vec![low.join("10-b.json"), high.join("50-a.json")]);
    }
}
