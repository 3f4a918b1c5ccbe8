//! UEFI firmware selection from QEMU firmware interop descriptors (docs/interop/firmware.json),
//! with systemd-vmspawn 259's search path, priority, masking and filters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::parse::Tristate;

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

/// Picks the first descriptor (in list order) that parses, has no enrolled keys, targets
/// `qemu_arch`, and matches the Secure Boot wish.
pub fn select(
    descriptors: &[(PathBuf, Vec<u8>)],
    qemu_arch: &str,
    secure_boot: Tristate,
) -> Result<Firmware> {
    for (path, content) in descriptors {
        let Ok((firmware, features, arches)) = parse_descriptor(path, content) else {
            continue;
        };
        if features.iter().any(|f| f == "enrolled-keys") || !arches.iter().any(|a| a == qemu_arch) {
            continue;
        }
        match secure_boot {
            Tristate::Yes if !firmware.secure_boot => continue,
            Tristate::No if firmware.secure_boot => continue,
            _ => {}
        }
        return Ok(firmware);
    }
    let wish = match secure_boot {
        Tristate::Yes => " with Secure Boot support",
        Tristate::No => " without Secure Boot support",
        Tristate::Auto => "",
    };
    Err(Error::new(format!(
        "Failed to find OVMF config: no UEFI firmware descriptor for {qemu_arch}{wish} in \
         ~/.config/qemu/firmware, /etc/qemu/firmware or /usr/share/qemu/firmware. \
         Install the 'ovmf' package, or pass --firmware=PATH."
    )))
}

/// Loads the descriptor given with `--firmware=PATH`; no filters apply except the explicit
/// Secure Boot request.
pub fn load_explicit(path: &Path, content: &[u8], secure_boot: Tristate) -> Result<Firmware> {
    let (firmware, _, _) = parse_descriptor(path, content)?;
    if secure_boot == Tristate::Yes && !firmware.secure_boot {
        return Err(Error::new(
            "Secure Boot requested, but supplied OVMF firmware blob doesn't support it.",
        ));
    }
    Ok(firmware)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            select(&list, "x86_64", Tristate::Auto).unwrap().code,
            Path::new("/sb.fd")
        );
        assert_eq!(
            select(&list, "x86_64", Tristate::Yes).unwrap().code,
            Path::new("/sb.fd")
        );
        let plain = select(&list, "x86_64", Tristate::No).unwrap();
        assert_eq!(plain.code, Path::new("/plain.fd"));
        assert_eq!(plain.vars_template, Path::new("/plain.fd.vars"));
        assert!(!plain.secure_boot);
        assert!(
            select(&list, "riscv64", Tristate::Auto)
                .unwrap_err()
                .to_string()
                .starts_with("Failed to find OVMF config")
        );
    }

    #[test]
    fn explicit_secure_boot_check() {
        let plain = descriptor("/plain.fd", "x86_64", &[]);
        assert!(load_explicit(Path::new("/x.json"), &plain, Tristate::Auto).is_ok());
        assert_eq!(
            load_explicit(Path::new("/x.json"), &plain, Tristate::Yes)
                .unwrap_err()
                .to_string(),
            "Secure Boot requested, but supplied OVMF firmware blob doesn't support it."
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
