//! `--ephemeral` with a directory root: the VM boots a throw-away copy of the tree, which
//! vmspawn makes before anything starts and removes at exit, and the original is never served.
//!
//! As in 262 the copy is a hidden sibling of the directory, `.#machine.<name><16 hex digits>`
//! (inside the directory, `.#machine.<16 hex digits>`, when the directory is a mount point).
//! Unlike 262 it is never a btrfs subvolume snapshot (an unprivileged user could not always
//! delete one): the files are copied with copy_file_range(2), which shares the data blocks
//! (reflink) on btrfs and XFS and copies them elsewhere. The copy keeps modes, symlinks, hard
//! links, FIFOs, timestamps, the owners where the caller may set them (root: all; a regular
//! user: files that are theirs, or the group when they are in it), extended attributes where
//! the caller may set them (`user.*` and ACLs for a regular user; not on symlinks), and device
//! nodes only for root. A regular user copies in a user namespace of their own (mapping only
//! their IDs), so their mode-0000 entries are copied too. Sockets are not copied, and mounts inside the tree become empty
//! directories (the copy stays on one file system). A memory-backed file system (tmpfs,
//! ramfs) is refused: the copy, and everything the VM writes to it, would use the host's
//! memory.
//!
//! The runtime directory's cleanup process removes the copy whenever vmspawn ends, `kill -9`
//! included (see `runtime::RuntimeDir::create`).

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

use crate::error::{Error, Result};
use crate::plan::{DirectoryInfo, HostFacts, RootFacts};
use crate::sandbox::SandboxRules;

/// The copy of an ephemeral VM's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyPlan {
    /// The directory `-D` names.
    pub source: PathBuf,
    /// The copy the VM boots: virtiofsd serves it, and it is removed at exit.
    pub copy: PathBuf,
}

/// The prefix of the copy's name, as 262's.
const PREFIX: &str = ".#machine.";
/// A file name has at most 255 bytes.
const NAME_MAX: usize = 255;

/// The copy `--ephemeral` makes of the VM's directory root (None for other VMs); `random` gives
/// its name's 16 hex digits.
pub fn plan(config: &crate::config::Config, host: &HostFacts) -> Result<Option<CopyPlan>> {
    let RootFacts::Directory(dir) = &host.root else {
        return Ok(None);
    };
    if !config.ephemeral {
        return Ok(None);
    }
    let hex: String = host.vmgenid[8..]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    CopyPlan::new(&dir.path, dir.is_mount_point, &hex).map(Some)
}

impl CopyPlan {
    pub fn new(source: &Path, is_mount_point: bool, hex: &str) -> Result<CopyPlan> {
        let parent = source.parent().filter(|_| !is_mount_point);
        let copy = match (parent, source.file_name()) {
            (Some(parent), Some(name)) => {
                // Shortened so that the name fits (the random digits are kept whole).
                let keep = NAME_MAX - PREFIX.len() - hex.len();
                let name = &name.as_bytes()[..name.len().min(keep)];
                let mut file = OsString::from(PREFIX);
                file.push(OsString::from_vec(name.to_vec()));
                file.push(hex);
                parent.join(file)
            }
            // A mount point (or /): inside it, as 262 does.
            _ => source.join(format!("{PREFIX}{hex}")),
        };
        Ok(CopyPlan {
            source: source.to_path_buf(),
            copy,
        })
    }

    /// The directory that holds the copy.
    pub fn holder(&self) -> &Path {
        self.copy.parent().unwrap_or(Path::new("/"))
    }

    /// The host facts with the copy as the VM's root (its boot entry's files in the copy too),
    /// so everything the plan derives from the root — virtiofsd's share, the Landlock rules,
    /// the kernel QEMU loads — names the copy.
    pub fn host_facts(&self, host: &HostFacts) -> HostFacts {
        let mut host = host.clone();
        if let RootFacts::Directory(dir) = &host.root {
            let moved = |path: &Path| match path.strip_prefix(&self.source) {
                Ok(rest) => self.copy.join(rest),
                Err(_) => path.to_path_buf(),
            };
            host.root = RootFacts::Directory(DirectoryInfo {
                path: self.copy.clone(),
                is_mount_point: false,
                boot: dir.boot.as_ref().map(|b| crate::bootentry::BootEntry {
                    source: moved(&b.source),
                    kernel: moved(&b.kernel),
                    initrds: b.initrds.iter().map(|i| moved(i)).collect(),
                }),
            });
        }
        host
    }

    /// The confinement of the cleanup process, which removes the copy: `base` (the launcher's)
    /// plus the copy, and removing empty directories in the directory that holds it (Landlock
    /// checks a removal on the parent).
    pub fn cleanup_rules(&self, base: &SandboxRules) -> SandboxRules {
        let mut rules = base.clone();
        rules.write.push(self.copy.clone());
        rules.remove_dir.push(self.holder().to_path_buf());
        rules
    }
}

/// Creates the (empty, mode 0700) top directory of the copy; refuses a memory-backed file
/// system. Fails if the name exists: nothing of someone else's is ever taken over.
pub fn create_top(plan: &CopyPlan) -> Result<()> {
    let holder = plan.holder();
    let opened = File::open(holder).map_err(|e| {
        Error::io(
            format!(
                "Failed to open '{}', where the --ephemeral copy of '{}' goes",
                holder.display(),
                plan.source.display()
            ),
            e,
        )
    })?;
    if let Some(fs) = crate::overlay::memory_backed(&opened) {
        return Err(Error::new(format!(
            "Cannot make the --ephemeral copy of '{}': '{}', where it goes, is on a memory-backed file \
             system ({fs}), where the copy of the tree and everything the VM writes to it would use up \
             the host's memory. Move the tree to a disk-backed file system, or boot it without --ephemeral.",
            plan.source.display(),
            holder.display()
        )));
    }
    DirBuilder::new()
        .mode(0o700)
        .create(&plan.copy)
        .map_err(|e| {
            Error::io(
                format!(
                    "Failed to create the --ephemeral copy '{}' of '{}' (vmspawn makes it next to the \
                     directory, so you need to be able to create files in '{}')",
                    plan.copy.display(),
                    plan.source.display(),
                    holder.display()
                ),
                e,
            )
        })
}

/// What the copy could not keep, for a warning.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub files: u64,
    /// Files whose owner (or group) is not the original's: only root may give files away.
    pub owners_not_kept: u64,
    /// Extended attributes the caller may not set (`trusted.*`, `security.*`).
    pub xattrs_not_kept: u64,
    /// Device nodes (only root can create them) and sockets.
    pub skipped: Vec<PathBuf>,
    /// Mount points inside the tree, copied as empty directories.
    pub mounts: Vec<PathBuf>,
}

impl Report {
    /// Warning lines (none when everything was kept).
    pub fn warnings(&self, plan: &CopyPlan) -> Vec<String> {
        let mut out = Vec::new();
        let some = |paths: &[PathBuf]| {
            let mut list: Vec<String> = paths
                .iter()
                .take(3)
                .map(|p| format!("'{}'", p.display()))
                .collect();
            if paths.len() > 3 {
                list.push(format!("and {} more", paths.len() - 3));
            }
            list.join(", ")
        };
        if self.owners_not_kept > 0 {
            out.push(format!(
                "--ephemeral: {} files and directories in the copy of '{}' belong to you instead of their \
                 owners (only root can create files owned by others).",
                self.owners_not_kept,
                plan.source.display()
            ));
        }
        if self.xattrs_not_kept > 0 {
            out.push(format!(
                "--ephemeral: {} extended attributes (trusted.*, security.*) of files in '{}' are not in the \
                 copy (only root may set them).",
                self.xattrs_not_kept,
                plan.source.display()
            ));
        }
        if !self.skipped.is_empty() {
            out.push(format!(
                "--ephemeral: not copied: {} (device nodes, which only root can create, and sockets).",
                some(&self.skipped)
            ));
        }
        if !self.mounts.is_empty() {
            out.push(format!(
                "--ephemeral: mounts inside the tree are empty directories in the copy: {}.",
                some(&self.mounts)
            ));
        }
        out
    }
}

struct Copier<'a> {
    plan: &'a CopyPlan,
    /// The source's file system: the copy does not descend into others.
    dev: u64,
    /// Files with more than one name: (device, inode) → the first copy.
    links: HashMap<(u64, u64), PathBuf>,
    /// Root on the host: it may set `security.*` and `trusted.*` attributes (in a user
    /// namespace, security.capability would become a namespaced capability).
    privileged: bool,
    report: Report,
}

fn failed(path: &Path, e: std::io::Error) -> Error {
    let hint = if e.kind() == ErrorKind::PermissionDenied {
        " vmspawn copies the tree with your permissions, so you must be able to read all of it (run \
         vmspawn as root for a tree with files only root can read)."
    } else {
        ""
    };
    Error::new(format!(
        "Failed to copy '{}' for the --ephemeral copy: {e}.{hint}",
        path.display()
    ))
}

fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| ErrorKind::InvalidInput.into())
}

impl Copier<'_> {
    fn copy_dir(&mut self, src: &Path, dst: &Path, top: bool) -> Result<()> {
        let entries = fs::read_dir(src).map_err(|e| failed(src, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| failed(src, e))?;
            let name = entry.file_name();
            if top
                && self.plan.copy.parent() == Some(src)
                && Some(name.as_os_str()) == self.plan.copy.file_name()
            {
                continue; // the copy itself, inside a mount point
            }
            let from = entry.path();
            let to = dst.join(&name);
            let meta = fs::symlink_metadata(&from).map_err(|e| failed(&from, e))?;
            self.copy_entry(&from, &to, &meta)?;
        }
        Ok(())
    }

    fn copy_entry(&mut self, from: &Path, to: &Path, meta: &fs::Metadata) -> Result<()> {
        let kind = meta.file_type();
        let made = |e| failed(from, e);
        if kind.is_dir() {
            DirBuilder::new().mode(0o700).create(to).map_err(made)?;
            if meta.dev() == self.dev {
                self.copy_dir(from, to, false)?;
            } else {
                self.report.mounts.push(from.to_path_buf());
            }
        } else if kind.is_file() {
            self.report.files += 1;
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                    return fs::hard_link(first, to).map_err(made);
                }
                self.links
                    .insert((meta.dev(), meta.ino()), to.to_path_buf());
            }
            let mut input = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(from)
                .map_err(made)?;
            let mut output = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(to)
                .map_err(made)?;
            // copy_file_range(2): a reflink where the file system can.
            std::io::copy(&mut input, &mut output).map_err(made)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(from).map_err(made)?;
            std::os::unix::fs::symlink(target, to).map_err(made)?;
        } else {
            use std::os::unix::fs::FileTypeExt;
            let sflag = if kind.is_fifo() {
                SFlag::S_IFIFO
            } else if kind.is_char_device() {
                SFlag::S_IFCHR
            } else if kind.is_block_device() {
                SFlag::S_IFBLK
            } else {
                self.report.skipped.push(from.to_path_buf());
                return Ok(());
            };
            let rdev = if kind.is_fifo() { 0 } else { meta.rdev() };
            match nix::sys::stat::mknod(to, sflag, Mode::from_bits_truncate(0o600), rdev) {
                Ok(()) => {}
                Err(nix::errno::Errno::EPERM) => {
                    self.report.skipped.push(from.to_path_buf());
                    return Ok(());
                }
                Err(e) => return Err(made(e.into())),
            }
        }
        self.keep_metadata(from, to, meta)
    }

    /// Owner, extended attributes, mode, timestamps (a directory's after its contents).
    fn keep_metadata(&mut self, from: &Path, to: &Path, meta: &fs::Metadata) -> Result<()> {
        let symlink = meta.file_type().is_symlink();
        let chown = |uid: Option<u32>, gid: Option<u32>| {
            nix::unistd::fchownat(
                None,
                to,
                uid.map(Uid::from_raw),
                gid.map(Gid::from_raw),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
        };
        if chown(Some(meta.uid()), Some(meta.gid())).is_err() {
            // A regular user keeps at least a group they are in.
            let _ = chown(None, Some(meta.gid()));
            self.report.owners_not_kept += 1;
        }
        if !symlink {
            self.keep_xattrs(from, to)?;
            fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(|e| failed(from, e))?;
        }
        let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
        let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
        nix::sys::stat::utimensat(None, to, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| failed(from, e.into()))
    }

    fn keep_xattrs(&mut self, from: &Path, to: &Path) -> Result<()> {
        let (source, dest) = match (c_path(from), c_path(to)) {
            (Ok(s), Ok(d)) => (s, d),
            _ => return Ok(()),
        };
        let names = match crate::sys::list_xattrs(&source) {
            Ok(names) => names,
            // A file system without extended attributes.
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
            Err(e) => return Err(failed(from, e)),
        };
        for name in names {
            let bytes = name.as_bytes();
            if !self.privileged
                && (bytes.starts_with(b"security.") || bytes.starts_with(b"trusted."))
            {
                self.report.xattrs_not_kept += 1;
                continue;
            }
            let value = match crate::sys::get_xattr(&source, &name) {
                Ok(value) => value,
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
                Err(_) => {
                    self.report.xattrs_not_kept += 1;
                    continue;
                }
            };
            if crate::sys::set_xattr(&dest, &name, &value).is_err() {
                self.report.xattrs_not_kept += 1;
            }
        }
        Ok(())
    }
}

/// Fills the copy (whose top directory `create_top` made) from the source; returns warnings
/// about what it could not keep.
///
/// A regular user copies in a child process in a user namespace of its own that maps only
/// their UID and GID (to 0): there it may read, and give its modes back to, the entries of the
/// tree that are theirs but that they could not read otherwise (mode 0000 directories and files,
/// as distribution trees have). Where user namespaces are not available, vmspawn copies with
/// the user's plain permissions.
pub fn fill(plan: &CopyPlan) -> Result<Vec<String>> {
    let privileged = nix::unistd::geteuid().is_root();
    if !privileged && let Some(result) = fill_in_user_namespace(plan) {
        return result;
    }
    fill_here(plan, privileged).map(|report| report.warnings(plan))
}

fn fill_here(plan: &CopyPlan, privileged: bool) -> Result<Report> {
    let meta = fs::metadata(&plan.source).map_err(|e| failed(&plan.source, e))?;
    let mut copier = Copier {
        plan,
        dev: meta.dev(),
        links: HashMap::new(),
        privileged,
        report: Report::default(),
    };
    copier.copy_dir(&plan.source, &plan.copy, true)?;
    copier.keep_metadata(&plan.source, &plan.copy, &meta)?;
    Ok(copier.report)
}

/// Runs `fill_here` in a child in a new user namespace that maps the caller's IDs to 0; None
/// when no user namespace can be made (then the caller copies itself).
fn fill_in_user_namespace(plan: &CopyPlan) -> Option<Result<Vec<String>>> {
    use std::io::{Read, Write};
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    let parent = nix::unistd::getpid();
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
    let read_raw = std::os::fd::AsRawFd::as_raw_fd(&read_end);
    // The closure owns `write_end`: the parent's copy closes when fork_child returns.
    let pid = crate::sys::fork_child(move || {
        let _ = nix::unistd::close(read_raw);
        let mut out = File::from(write_end);
        // The copy stops when vmspawn dies (the cleanup process then removes it).
        if nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_err()
            || nix::unistd::getppid() != parent
        {
            return 1;
        }
        let mapped = crate::sys::unshare_user_namespace()
            .and_then(|()| fs::write("/proc/self/setgroups", "deny"))
            .and_then(|()| fs::write("/proc/self/uid_map", format!("0 {uid} 1")))
            .and_then(|()| fs::write("/proc/self/gid_map", format!("0 {gid} 1")));
        let message = match mapped {
            Err(_) => "U".to_string(),
            Ok(()) => match fill_here(plan, false) {
                Ok(report) => format!("O{}", report.warnings(plan).join("\n")),
                Err(e) => format!("E{e}"),
            },
        };
        let _ = out.write_all(message.as_bytes());
        0
    });
    let pid = match pid {
        Ok(pid) => nix::unistd::Pid::from_raw(pid),
        Err(e) => return Some(Err(Error::io("Failed to start the --ephemeral copy", e))),
    };
    let mut message = String::new();
    let read = File::from(read_end).read_to_string(&mut message);
    let status = nix::sys::wait::waitpid(pid, None);
    if let Some(rest) = message.strip_prefix('O') {
        return Some(Ok(rest.lines().map(str::to_string).collect()));
    }
    if let Some(rest) = message.strip_prefix('E') {
        return Some(Err(Error::new(rest.to_string())));
    }
    if message == "U" {
        return None;
    }
    Some(Err(Error::new(format!(
        "The process making the --ephemeral copy of '{}' failed ({status:?}, {read:?}).",
        plan.source.display()
    ))))
}

/// Removes the copy (never following a symlink in it); directories the VM made unwritable are
/// made writable first. Only unlinkat(2) and fchmodat(2), which the cleanup process's seccomp
/// allow-list has (not unlink, rmdir or chmod).
pub fn remove(path: &Path) -> std::io::Result<()> {
    use nix::unistd::UnlinkatFlags;
    let gone = |r: nix::Result<()>| match r {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(std::io::Error::from(e)),
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return gone(nix::unistd::unlinkat(
            None,
            path,
            UnlinkatFlags::NoRemoveDir,
        ));
    }
    if meta.mode() & 0o700 != 0o700 {
        let _ = nix::sys::stat::fchmodat(
            None,
            path,
            Mode::from_bits_truncate((meta.mode() & 0o7777) | 0o700),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        );
    }
    for entry in fs::read_dir(path)? {
        remove(&entry?.path())?;
    }
    gone(nix::unistd::unlinkat(None, path, UnlinkatFlags::RemoveDir))
}

/// Removes the copy, trying again for a moment while a process of the VM that is still exiting
/// (virtiofsd, after a `kill -9` of vmspawn) may write to it.
pub fn remove_copy(path: &Path) {
    for attempt in 0..50 {
        match remove(path) {
            Ok(()) => return,
            Err(e) if attempt == 49 => {
                eprintln!(
                    "Failed to remove the --ephemeral copy '{}': {e}. Remove it yourself.",
                    path.display()
                );
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn disk_dir() -> tempfile::TempDir {
        // The target directory is on disk where /tmp may be tmpfs.
        tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")).unwrap()
    }

    /// path → (kind, mode, size, mtime, contents or link target), for every entry under `dir`.
    fn listing(dir: &Path) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(path) = todo.pop() {
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            let what = if meta.is_dir() {
                for e in fs::read_dir(&path).unwrap() {
                    todo.push(e.unwrap().path());
                }
                "dir".to_string()
            } else if meta.file_type().is_symlink() {
                format!("link {}", fs::read_link(&path).unwrap().display())
            } else if meta.file_type().is_fifo() {
                "fifo".to_string()
            } else if meta.file_type().is_socket() {
                "socket".to_string()
            } else {
                format!("file {:?}", fs::read(&path).unwrap())
            };
            out.push((
                rel,
                format!(
                    "{what} mode={:o} uid={} mtime={}.{}",
                    meta.mode(),
                    meta.uid(),
                    meta.mtime(),
                    meta.mtime_nsec()
                ),
            ));
        }
        out.sort();
        out
    }

    #[test]
    fn names_follow_262() {
        let p = CopyPlan::new(Path::new("/srv/tree"), false, "0123456789abcdef").unwrap();
        assert_eq!(p.copy, Path::new("/srv/.#machine.tree0123456789abcdef"));
        let p = CopyPlan::new(Path::new("/mnt/root"), true, "0123456789abcdef").unwrap();
        assert_eq!(p.copy, Path::new("/mnt/root/.#machine.0123456789abcdef"));
        let p = CopyPlan::new(Path::new("/"), false, "0123456789abcdef").unwrap();
        assert_eq!(p.copy, Path::new("/.#machine.0123456789abcdef"));
        let long = format!("/srv/{}", "x".repeat(300));
        let p = CopyPlan::new(Path::new(&long), false, "0123456789abcdef").unwrap();
        let name = p.copy.file_name().unwrap().as_bytes();
        assert_eq!(name.len(), 255);
        assert!(name.ends_with(b"0123456789abcdef"));
    }

    #[test]
    fn copy_keeps_the_tree_and_remove_takes_it_away() {
        let dir = disk_dir();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("etc/sub")).unwrap();
        fs::write(tree.join("etc/hostname"), b"guest\n").unwrap();
        fs::write(tree.join("etc/sub/big"), vec![7u8; 300_000]).unwrap();
        fs::set_permissions(tree.join("etc/hostname"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::hard_link(tree.join("etc/hostname"), tree.join("hard")).unwrap();
        std::os::unix::fs::symlink("etc/hostname", tree.join("link")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", tree.join("dangling")).unwrap();
        nix::unistd::mkfifo(&tree.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(tree.join("sock")).unwrap();
        // A directory nobody may write (as /proc and /sys of a debootstrapped tree).
        fs::create_dir(tree.join("proc")).unwrap();
        fs::write(tree.join("proc/x"), b"x").unwrap();
        fs::set_permissions(tree.join("proc"), fs::Permissions::from_mode(0o555)).unwrap();
        let _ = crate::sys::set_xattr(
            &c_path(&tree.join("etc/hostname")).unwrap(),
            c"user.vmspawn-test",
            b"kept",
        );
        let xattr_supported = crate::sys::get_xattr(
            &c_path(&tree.join("etc/hostname")).unwrap(),
            c"user.vmspawn-test",
        )
        .is_ok();
        let old = TimeSpec::new(1_000_000_000, 123_456_789);
        nix::sys::stat::utimensat(
            None,
            &tree.join("etc"),
            &old,
            &old,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        let plan = CopyPlan::new(&tree, false, "00112233445566ff").unwrap();

        create_top(&plan).unwrap();
        let report = fill_here(&plan, true).unwrap();
        let mut expected = listing(&tree);
        expected.retain(|(name, _)| name != "sock");
        assert_eq!(listing(&plan.copy), expected);
        assert_eq!(report.skipped, vec![tree.join("sock")]);
        assert_eq!(report.owners_not_kept, 0);
        let copied = fs::metadata(plan.copy.join("hard")).unwrap();
        assert_eq!(
            copied.ino(),
            fs::metadata(plan.copy.join("etc/hostname")).unwrap().ino()
        );
        assert_ne!(copied.ino(), fs::metadata(tree.join("hard")).unwrap().ino());
        if xattr_supported {
            assert_eq!(
                crate::sys::get_xattr(
                    &c_path(&plan.copy.join("etc/hostname")).unwrap(),
                    c"user.vmspawn-test"
                )
                .unwrap(),
                b"kept"
            );
        }
        // The copy's name is taken: a second copy with it is refused.
        assert!(create_top(&plan).is_err());

        remove(&plan.copy).unwrap();
        assert!(!plan.copy.exists());
        assert!(tree.join("proc/x").exists());
        fs::set_permissions(tree.join("proc"), fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn the_cleanup_process_filter_allows_removing_a_copy() {
        // The cleanup process removes copies under its seccomp allow-list, which kills it on
        // any other call (unlink, rmdir, chmod).
        let dir = disk_dir();
        let copy = dir.path().join("copy");
        fs::create_dir_all(copy.join("ro/deep")).unwrap();
        fs::write(copy.join("ro/deep/f"), b"f").unwrap();
        std::os::unix::fs::symlink("/", copy.join("ro/link")).unwrap();
        fs::set_permissions(copy.join("ro"), fs::Permissions::from_mode(0o500)).unwrap();
        let filter = crate::sandbox::cleanup_filter().unwrap();
        let pid = crate::sys::fork_child(|| {
            if crate::sandbox::apply_filter(&filter).is_err() {
                return 2;
            }
            match remove(&copy) {
                Ok(()) => 0,
                Err(_) => 1,
            }
        })
        .unwrap();
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        assert!(
            matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
            "{status:?}"
        );
        assert!(!copy.exists());
    }

    #[test]
    fn a_mount_point_copy_skips_itself() {
        let dir = disk_dir();
        let tree = dir.path().join("tree");
        fs::create_dir(&tree).unwrap();
        fs::write(tree.join("a"), b"a").unwrap();
        let plan = CopyPlan::new(&tree, true, "0000000000000001").unwrap();
        create_top(&plan).unwrap();
        fill(&plan).unwrap();
        let names: Vec<_> = fs::read_dir(&plan.copy)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("a")]);
        remove(&plan.copy).unwrap();
    }

    #[test]
    fn refuses_memory_backed_file_systems() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let tree = tempfile::tempdir_in(shm).unwrap();
        let plan = CopyPlan::new(tree.path(), false, "0000000000000002").unwrap();
        let e = create_top(&plan).unwrap_err().to_string();
        assert!(
            e.contains("is on a memory-backed file system (tmpfs)"),
            "{e}"
        );
        assert!(!plan.copy.exists());
    }
}
