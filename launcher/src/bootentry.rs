//! Boot Loader Specification entries of a directory tree, for `--directory=` without
//! `--linux=`, found the way `bootctl list` finds them (and systemd-vmspawn 259 uses them): the
//! tree's `efi/` is taken as the ESP and its `boot/` as XBOOTLDR; Type #1 entries are
//! `loader/entries/*.conf`, Type #2 entries (UKIs) `EFI/Linux/*.efi`; EFI variables are not
//! consulted. The choice: the `default` of `loader.conf` if it names an entry, else the first
//! UKI, else the first Type #1 entry, in bootctl's order.

use std::cmp::Ordering;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// The kernel (and initrds) a directory boots with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootEntry {
    /// The entry's file, for messages.
    pub source: PathBuf,
    pub kernel: PathBuf,
    /// A Type #1 entry's `initrd` lines, in order; none for a UKI.
    pub initrds: Vec<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Candidate {
    /// The file name, as bootctl names entries.
    id: String,
    uki: bool,
    sort_key: Option<String>,
    machine_id: Option<String>,
    version: Option<String>,
    entry: BootEntry,
}

/// Compares like systemd's `strverscmp_improved`, simplified: runs of digits compare as
/// numbers, everything else byte-wise.
fn version_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let na = std::str::from_utf8(&a[..da])
                    .unwrap_or("")
                    .trim_start_matches('0');
                let nb = std::str::from_utf8(&b[..db])
                    .unwrap_or("")
                    .trim_start_matches('0');
                let order = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if order != Ordering::Equal {
                    return order;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

/// bootctl's order: entries with a sort key first (by sort key, machine ID, newest version),
/// then by file name, newest version first.
fn entry_order(a: &Candidate, b: &Candidate) -> Ordering {
    let by_key = b.sort_key.is_some().cmp(&a.sort_key.is_some());
    if by_key != Ordering::Equal {
        return by_key;
    }
    if let (Some(ka), Some(kb)) = (&a.sort_key, &b.sort_key) {
        let order = ka
            .cmp(kb)
            .then_with(|| a.machine_id.cmp(&b.machine_id))
            .then_with(|| {
                version_cmp(
                    b.version.as_deref().unwrap_or(""),
                    a.version.as_deref().unwrap_or(""),
                )
            });
        if order != Ordering::Equal {
            return order;
        }
    }
    version_cmp(&b.id, &a.id)
}

/// A path of an entry, relative to the root of the partition the entry is on. `..` is refused:
/// an entry names files on its own partition.
fn entry_path(root: &Path, value: &str, entry: &Path) -> Result<PathBuf> {
    let relative = Path::new(value.trim_start_matches('/'));
    if relative.as_os_str().is_empty()
        || relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(Error::new(format!(
            "Boot entry '{}' names the file '{value}', which is not a path inside its partition.",
            entry.display()
        )));
    }
    Ok(root.join(relative))
}

/// Parses a Type #1 entry (`key value` lines).
fn parse_type1(root: &Path, path: &Path, text: &str) -> Result<Option<Candidate>> {
    let mut candidate = Candidate {
        id: file_name(path),
        uki: false,
        sort_key: None,
        machine_id: None,
        version: None,
        entry: BootEntry {
            source: path.to_path_buf(),
            kernel: PathBuf::new(),
            initrds: Vec::new(),
        },
    };
    let mut kernel = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once(|c: char| c.is_ascii_whitespace())
            .map(|(k, v)| (k, v.trim()))
            .unwrap_or((line, ""));
        match key {
            "linux" => kernel = Some(entry_path(root, value, path)?),
            "initrd" => {
                for word in value.split_ascii_whitespace() {
                    candidate.entry.initrds.push(entry_path(root, word, path)?);
                }
            }
            "sort-key" => candidate.sort_key = Some(value.to_string()),
            "machine-id" => candidate.machine_id = Some(value.to_string()),
            "version" => candidate.version = Some(value.to_string()),
            _ => {}
        }
    }
    // An entry without a kernel (e.g. one that only chain-loads an EFI program) cannot be
    // booted directly.
    let Some(kernel) = kernel else {
        return Ok(None);
    };
    candidate.entry.kernel = kernel;
    Ok(Some(candidate))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The regular files in `dir` whose names end in `suffix`, sorted by name.
fn files_with_suffix(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::io(
                format!("Failed to read boot entries in '{}'", dir.display()),
                e,
            ));
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix) && !n.starts_with('.'))
                && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// `default` of `loader/loader.conf` (of the ESP, else XBOOTLDR), a glob pattern.
fn default_pattern(roots: &[PathBuf]) -> Option<String> {
    roots.iter().find_map(|root| {
        let text = std::fs::read_to_string(root.join("loader/loader.conf")).ok()?;
        text.lines().find_map(|line| {
            let line = line.trim();
            let (key, value) = line.split_once(|c: char| c.is_ascii_whitespace())?;
            (key == "default").then(|| value.trim().to_string())
        })
    })
}

/// Shell-style glob with `*` and `?` (what `loader.conf` patterns use).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], text) || (!text.is_empty() && glob_match(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => glob_match(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// Chooses among the candidates as 259 does.
fn choose(mut candidates: Vec<Candidate>, default: Option<&str>) -> Option<BootEntry> {
    candidates.sort_by(entry_order);
    if let Some(pattern) = default
        && let Some(found) = candidates.iter().find(|c| {
            glob_match(pattern.as_bytes(), c.id.as_bytes())
                || c.id
                    .strip_suffix(".conf")
                    .is_some_and(|id| glob_match(pattern.as_bytes(), id.as_bytes()))
        })
    {
        return Some(found.entry.clone());
    }
    candidates
        .iter()
        .find(|c| c.uki)
        .or_else(|| candidates.first())
        .map(|c| c.entry.clone())
}

/// The boot entry of the tree at `tree`.
pub fn discover(tree: &Path) -> Result<BootEntry> {
    let roots: Vec<PathBuf> = ["efi", "boot"]
        .iter()
        .map(|d| tree.join(d))
        .filter(|p| p.is_dir())
        .collect();
    let mut candidates = Vec::new();
    for root in &roots {
        for path in files_with_suffix(&root.join("loader/entries"), ".conf")? {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::io(format!("Failed to read boot entry '{}'", path.display()), e)
            })?;
            candidates.extend(parse_type1(root, &path, &text)?);
        }
        for path in files_with_suffix(&root.join("EFI/Linux"), ".efi")? {
            candidates.push(Candidate {
                id: file_name(&path),
                uki: true,
                sort_key: None,
                machine_id: None,
                version: None,
                entry: BootEntry {
                    source: path.clone(),
                    kernel: path,
                    initrds: Vec::new(),
                },
            });
        }
    }
    choose(candidates, default_pattern(&roots).as_deref()).ok_or_else(|| {
        Error::new(format!(
            "Failed to locate UKI in directory type image, please specify one with --linux=. (Failed to discover \
             any boot entries in '{}': no loader/entries/*.conf and no EFI/Linux/*.efi below its efi/ or boot/.)",
            tree.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(version_cmp("6.10", "6.9"), Ordering::Greater);
        assert_eq!(version_cmp("a-2.conf", "a-10.conf"), Ordering::Less);
        assert_eq!(version_cmp("x", "x"), Ordering::Equal);
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"debian-*", b"debian-6.1.conf"));
        assert!(glob_match(b"?ebian*", b"debian"));
        assert!(!glob_match(b"fedora-*", b"debian-6.1.conf"));
    }

    #[test]
    fn type1_entry_with_initrds() {
        let tree = tempfile::tempdir().unwrap();
        write(
            &tree.path().join("boot/loader/entries/debian-6.1.conf"),
            "title Debian\nlinux /vmlinuz-6.1\ninitrd /initrd-6.1\ninitrd /extra.cpio\noptions quiet\n",
        );
        let entry = discover(tree.path()).unwrap();
        assert_eq!(entry.kernel, tree.path().join("boot/vmlinuz-6.1"));
        assert_eq!(
            entry.initrds,
            vec![
                tree.path().join("boot/initrd-6.1"),
                tree.path().join("boot/extra.cpio")
            ]
        );
    }

    #[test]
    fn newest_type1_first_and_uki_preferred() {
        let tree = tempfile::tempdir().unwrap();
        write(
            &tree.path().join("boot/loader/entries/d-6.9.conf"),
            "linux /k-6.9\n",
        );
        write(
            &tree.path().join("boot/loader/entries/d-6.10.conf"),
            "linux /k-6.10\n",
        );
        assert_eq!(
            discover(tree.path()).unwrap().kernel,
            tree.path().join("boot/k-6.10")
        );
        write(&tree.path().join("efi/EFI/Linux/u.efi"), "MZ");
        let entry = discover(tree.path()).unwrap();
        assert_eq!(entry.kernel, tree.path().join("efi/EFI/Linux/u.efi"));
        assert!(entry.initrds.is_empty());
        // loader.conf's default wins.
        write(
            &tree.path().join("efi/loader/loader.conf"),
            "timeout 3\ndefault d-6.9*\n",
        );
        assert_eq!(
            discover(tree.path()).unwrap().kernel,
            tree.path().join("boot/k-6.9")
        );
    }

    #[test]
    fn no_entries_and_escaping_paths_are_errors() {
        let tree = tempfile::tempdir().unwrap();
        let e = discover(tree.path()).unwrap_err().to_string();
        assert!(e.contains("please specify one with --linux="), "{e}");
        write(
            &tree.path().join("boot/loader/entries/x.conf"),
            "linux /../../etc/shadow\n",
        );
        let e = discover(tree.path()).unwrap_err().to_string();
        assert!(e.contains("not a path inside its partition"), "{e}");
    }
}
