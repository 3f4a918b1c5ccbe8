//! Materialisation: the per-VM private runtime directory and everything the plan lists in it
//! (credentials, SMBIOS strings, the NVRAM copy, a merged initrd), state directories, listening
//! sockets, and growing the image — before any process of the VM starts.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::plan::{GrowImage, Plan, StateDir};
use crate::sandbox::{self, SandboxRules};
use crate::spawn::FdStore;

/// The private per-VM directory. Removed with everything in it when dropped; and if vmspawn is
/// killed before that, by a small cleanup process of vmspawn's that waits for exactly that.
pub struct RuntimeDir {
    path: PathBuf,
    managed: bool,
    cleanup: Option<CleanupProcess>,
}

/// A forked copy of vmspawn, named `vmspawn-cleanup`, that holds the read end of a pipe whose
/// write end only vmspawn has. When the pipe closes — vmspawn exited, however it died — it
/// removes the runtime directory (if vmspawn has not) and exits. It keeps the signals vmspawn
/// blocked blocked, so a Ctrl-C on the terminal does not end it, and runs in the launcher's
/// own confinement.
struct CleanupProcess {
    pipe: Option<OwnedFd>,
    pid: nix::unistd::Pid,
}

impl RuntimeDir {
    /// The runtime directory, and with `copy` the (empty) top directory of an `--ephemeral`
    /// copy of the VM's directory root: the cleanup process removes the copy too, however
    /// vmspawn ends — but only once it exists, so a name that was taken is never removed.
    pub fn create(
        path: &Path,
        managed: bool,
        confinement: Option<&SandboxRules>,
        copy: Option<&crate::ephemeral_dir::CopyPlan>,
    ) -> Result<Self> {
        if managed {
            if !path.is_dir() {
                return Err(Error::new(format!(
                    "The runtime directory '{}' from $RUNTIME_DIRECTORY does not exist or is not a directory. \
                     Set RuntimeDirectory= in the unit that runs vmspawn, or unset RUNTIME_DIRECTORY.",
                    path.display()
                )));
            }
        } else if let Some(parent) = path.parent()
            && !parent.is_dir()
        {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| {
                    Error::io(
                        format!("Failed to create runtime directory '{}'", parent.display()),
                        e,
                    )
                })?;
        }
        // The cleanup process first, so no moment exists in which vmspawn could die leaving a
        // directory nobody removes.
        let rules = match (confinement, copy) {
            (Some(rules), Some(copy)) => Some(copy.cleanup_rules(rules)),
            (rules, _) => rules.cloned(),
        };
        let cleanup = CleanupProcess::start(path, managed, rules, copy.map(|c| c.copy.clone()))?;
        if !managed {
            DirBuilder::new().mode(0o700).create(path).map_err(|e| {
                Error::io(
                    format!("Failed to create runtime directory '{}'", path.display()),
                    e,
                )
            })?;
        }
        // From here on dropping it removes the directory (only its contents when managed).
        let mut dir = RuntimeDir {
            path: path.to_path_buf(),
            managed,
            cleanup: Some(cleanup),
        };
        if let Some(copy) = copy {
            crate::ephemeral_dir::create_top(copy)?;
        }
        if let Some(cleanup) = &mut dir.cleanup {
            cleanup.directory_created()?;
        }
        Ok(dir)
    }
}

impl CleanupProcess {
    fn start(
        path: &Path,
        managed: bool,
        confinement: Option<SandboxRules>,
        copy: Option<PathBuf>,
    ) -> Result<Self> {
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::io("Failed to create a pipe for the cleanup process", e))?;
        let filter = confinement
            .as_ref()
            .map(|_| sandbox::cleanup_filter())
            .transpose()?;
        // The closure owns `read_end`: the parent's copy closes when fork_child returns.
        let write_raw = write_end.as_raw_fd();
        let pid = crate::sys::fork_child(move || {
            let _ = nix::unistd::close(write_raw);
            crate::sys::set_process_name(c"vmspawn-cleanup");
            // Nothing of the terminal: output to /dev/null, stderr kept for a failure message.
            if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
                let _ = nix::unistd::dup2(null.as_raw_fd(), libc::STDIN_FILENO);
                let _ = nix::unistd::dup2(null.as_raw_fd(), libc::STDOUT_FILENO);
            }
            // Messages: a tag byte and a u32. The end of the pipe means vmspawn is gone.
            let read = || -> Option<(u8, u32)> {
                let mut message = [0u8; 5];
                let mut got = 0;
                while got < message.len() {
                    match nix::unistd::read(read_end.as_raw_fd(), &mut message[got..]) {
                        Err(nix::errno::Errno::EINTR) => continue,
                        Ok(0) | Err(_) => return None,
                        Ok(n) => got += n,
                    }
                }
                let [tag, a, b, c, d] = message;
                Some((tag, u32::from_le_bytes([a, b, c, d])))
            };
            // A setup step's process group, killed if vmspawn dies while it runs (its own
            // children, e.g. swtpm_setup's swtpm, have no death signal).
            let mut group: Option<u32> = None;
            // Told the directory (and an --ephemeral copy) exists: confined to it (Landlock
            // rules need the path to exist) for the rest of the wait. The end of the pipe,
            // either way, means remove it; the copy only once it was made.
            let created = read().is_some_and(|(tag, _)| tag == CREATED);
            let copy = copy.as_deref().filter(|_| created);
            if created {
                if let (Some(rules), Some(filter)) = (&confinement, &filter)
                    && (sandbox::restrict_self(rules).is_err()
                        || sandbox::apply_filter(filter).is_err())
                {
                    remove_runtime_dir(path, managed);
                    copy.map(crate::ephemeral_dir::remove_copy);
                    return 1;
                }
                while let Some((tag, value)) = read() {
                    group = (tag == WATCH_GROUP).then_some(value).filter(|&g| g > 1);
                }
            }
            if let Some(pgid) = group {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            remove_runtime_dir(path, managed);
            copy.map(crate::ephemeral_dir::remove_copy);
            0
        })
        .map_err(|e| Error::io("Failed to start the cleanup process", e))?;
        Ok(CleanupProcess {
            pipe: Some(write_end),
            pid: nix::unistd::Pid::from_raw(pid),
        })
    }
}

/// Tags of the messages to the cleanup process.
const CREATED: u8 = b'c';
const WATCH_GROUP: u8 = b'g';
const UNWATCH_GROUP: u8 = b'u';

impl CleanupProcess {
    fn send(&self, tag: u8, value: u32) -> Result<()> {
        let pipe = self
            .pipe
            .as_ref()
            .ok_or_else(|| Error::new("internal error: the cleanup process's pipe is closed"))?;
        let mut message = [tag, 0, 0, 0, 0];
        message[1..].copy_from_slice(&value.to_le_bytes());
        // At most PIPE_BUF bytes: written whole.
        nix::unistd::write(pipe, &message)
            .map(drop)
            .map_err(|e| Error::io("Failed to talk to the cleanup process", e))
    }

    /// Tells the cleanup process the directory exists.
    fn directory_created(&mut self) -> Result<()> {
        self.send(CREATED, 0)
    }
}

impl RuntimeDir {
    /// While a setup step runs in process group `pgid`, the cleanup process kills that group
    /// if vmspawn dies; `None` when the step is over.
    pub fn watch_group(&self, pgid: Option<u32>) -> Result<()> {
        match &self.cleanup {
            Some(cleanup) => match pgid {
                Some(pgid) => cleanup.send(WATCH_GROUP, pgid),
                None => cleanup.send(UNWATCH_GROUP, 0),
            },
            None => Ok(()),
        }
    }
}

impl Drop for CleanupProcess {
    fn drop(&mut self) {
        drop(self.pipe.take());
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// Removes everything in `path` (a managed runtime directory), but not the directory.
fn remove_contents(path: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let result = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())
        } else {
            std::fs::remove_file(entry.path())
        };
        match result {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Removes the runtime directory (only its contents when `managed`). A process of the VM that
/// is still exiting may create a file in it meanwhile, so a directory that is not empty yet is
/// tried again for a moment.
fn remove_runtime_dir(path: &Path, managed: bool) {
    for attempt in 0..50 {
        let result = if managed {
            remove_contents(path)
        } else {
            std::fs::remove_dir_all(path)
        };
        match result {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if attempt == 49 => {
                eprintln!(
                    "Failed to remove runtime directory '{}': {e}",
                    path.display()
                );
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        remove_runtime_dir(&self.path, self.managed);
        drop(self.cleanup.take());
    }
}

fn create_private_file(path: &Path) -> Result<File> {
    if let Some(parent) = path.parent()
        && !parent.is_dir()
    {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| {
                Error::io(
                    format!("Failed to create directory '{}'", parent.display()),
                    e,
                )
            })?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io(format!("Failed to create '{}'", path.display()), e))
}

/// The UEFI variable store: a fresh copy of the template in the runtime directory, or a
/// persistent file that is created from the template only when it does not exist yet (a file
/// created here and not filled is removed again, so a failed copy leaves nothing behind).
fn materialise_nvram(nvram: &crate::plan::NvramPlan) -> Result<()> {
    let mut source = File::open(&nvram.template).map_err(|e| {
        Error::io(
            format!("Failed to open OVMF vars file {}", nvram.template.display()),
            e,
        )
    })?;
    let mut dest = if nvram.persistent {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&nvram.path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let metadata = std::fs::metadata(&nvram.path).map_err(|e| {
                    Error::io(
                        format!(
                            "Failed to open file for OVMF vars at {}",
                            nvram.path.display()
                        ),
                        e,
                    )
                })?;
                if !metadata.is_file() {
                    return Err(Error::new(format!(
                        "Not a regular file for OVMF variables at {}. Pass --efi-nvram-state= a \
                         file path (or off).",
                        nvram.path.display()
                    )));
                }
                return Ok(());
            }
            Err(e) => {
                return Err(Error::io(
                    format!(
                        "Failed to open file for OVMF vars at {}",
                        nvram.path.display()
                    ),
                    e,
                ));
            }
        }
    } else {
        create_private_file(&nvram.path)?
    };
    std::io::copy(&mut source, &mut dest).map_err(|e| {
        if nvram.persistent {
            let _ = std::fs::remove_file(&nvram.path);
        }
        Error::io(
            format!(
                "Failed to copy bytes from {} to {}",
                nvram.template.display(),
                nvram.path.display()
            ),
            e,
        )
    })?;
    Ok(())
}

/// Creates the files, copies and directories the plan lists, before any process starts.
pub fn materialise(plan: &Plan) -> Result<()> {
    for file in &plan.files {
        create_private_file(&file.path)?
            .write_all(&file.contents)
            .map_err(|e| Error::io(format!("Failed to write '{}'", file.path.display()), e))?;
    }
    if let Some(nvram) = &plan.nvram {
        materialise_nvram(nvram)?;
    }
    if let Some((sources, merged)) = &plan.initrd_merge {
        merge_initrds(sources, merged)?;
    }
    for dir in &plan.state_dirs {
        create_state_dir(dir)?;
    }
    if let Some(grow) = &plan.grow_image {
        grow_image(grow, plan.quiet)?;
    }
    Ok(())
}

/// Writes the credentials whose values setup steps made (the SSH public key), as SMBIOS
/// credential files.
pub fn write_credentials_from_files(plan: &Plan) -> Result<()> {
    for credential in &plan.credentials_from_files {
        let value = std::fs::read(&credential.source).map_err(|e| {
            Error::io(
                format!(
                    "Failed to read '{}' for the credential {}",
                    credential.source.display(),
                    credential.id
                ),
                e,
            )
        })?;
        create_private_file(&credential.path)?
            .write_all(&crate::plan::smbios_credential(&credential.id, &value))
            .map_err(|e| {
                Error::io(
                    format!("Failed to write '{}'", credential.path.display()),
                    e,
                )
            })?;
    }
    Ok(())
}

/// Creates a state directory, mode 0700 (a persistent one with its missing parents, as
/// `mkdir -p`), and checks that it is a directory this user can write.
fn create_state_dir(dir: &StateDir) -> Result<()> {
    use nix::unistd::{AccessFlags, access};
    let path = &dir.path;
    let failed = |why: String| {
        Error::new(format!(
            "Failed to create {} '{}': {why}",
            dir.what,
            path.display()
        ))
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) => {}
        Ok(_) => return Err(failed("it exists and is not a directory".into())),
        Err(_) => DirBuilder::new()
            .recursive(dir.persistent)
            .mode(0o700)
            .create(path)
            .map_err(|e| failed(e.to_string()))?,
    }
    access(path, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| {
        Error::new(format!(
            "The {} '{}' is not writable: {}",
            dir.what,
            path.display(),
            std::io::Error::from(e)
        ))
    })
}

/// Binds the listening sockets the plan lists; their fds go into `fds` for the processes that
/// serve them.
pub fn bind_sockets(plan: &Plan, fds: &mut FdStore) -> Result<()> {
    for socket in &plan.sockets {
        let listener = UnixListener::bind(&socket.path).map_err(|e| {
            Error::io(
                format!("Failed to bind socket '{}'", socket.path.display()),
                e,
            )
        })?;
        fds.insert(socket.name, OwnedFd::from(listener));
    }
    Ok(())
}

/// Concatenates initrds, each starting at a 4-byte aligned offset (the kernel's cpio rule).
fn merge_initrds(sources: &[PathBuf], merged: &Path) -> Result<()> {
    let mut out = create_private_file(merged)?;
    let mut offset: u64 = 0;
    for source in sources {
        let padding = offset.next_multiple_of(4) - offset;
        out.write_all(&[0u8; 4][..padding as usize])
            .map_err(|e| Error::io(format!("Failed to write '{}'", merged.display()), e))?;
        offset += padding;
        let mut input = File::open(source)
            .map_err(|e| Error::io(format!("Failed to open initrd '{}'", source.display()), e))?;
        offset += std::io::copy(&mut input, &mut out).map_err(|e| {
            Error::io(
                format!(
                    "Failed to copy initrd '{}' into '{}'",
                    source.display(),
                    merged.display()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// Human-readable size like systemd's FORMAT_BYTES: "2G", "1.5G", "512M".
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 6] = [
        ("E", 1 << 60),
        ("P", 1 << 50),
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (suffix, factor) in UNITS {
        if bytes >= factor {
            let whole = bytes / factor;
            let tenth = (bytes % factor) * 10 / factor;
            return if tenth == 0 {
                format!("{whole}{suffix}")
            } else {
                format!("{whole}.{tenth}{suffix}")
            };
        }
    }
    format!("{bytes}B")
}

pub fn grow_image(grow: &GrowImage, quiet: bool) -> Result<()> {
    let path = &grow.path;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(format!("Failed to open image file '{}'", path.display()), e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("Failed to stat '{}'", path.display()), e))?;
    if !meta.is_file() {
        return Err(Error::new(format!(
            "Failed to open image file '{}': not a regular file",
            path.display()
        )));
    }
    if meta.len() >= grow.size {
        return Ok(());
    }
    let (from, to) = (format_bytes(meta.len()), format_bytes(grow.size));
    file.set_len(grow.size).map_err(|e| {
        Error::io(
            format!(
                "Failed to grow image file '{}' from {from} to {to}",
                path.display()
            ),
            e,
        )
    })?;
    file.sync_all().map_err(|e| {
        Error::io(
            format!(
                "Failed to sync image file '{}' after growing to {to}",
                path.display()
            ),
            e,
        )
    })?;
    if !quiet {
        eprintln!(
            "Image file '{}' successfully grown from {from} to {to}.",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_formatting() {
        assert_eq!(format_bytes(2 << 30), "2G");
        assert_eq!(format_bytes(3 << 29), "1.5G");
        assert_eq!(format_bytes(4096), "4K");
        assert_eq!(format_bytes(100), "100B");
    }

    #[test]
    fn initrd_merge_aligns_to_four_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, b"12345").unwrap();
        std::fs::write(&b, b"xy").unwrap();
        let merged = dir.path().join("m");
        merge_initrds(&[a, b], &merged).unwrap();
        assert_eq!(std::fs::read(&merged).unwrap(), b"12345\0\0\0xy");
    }

    #[test]
    fn grow_rounds_and_never_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        std::fs::write(&img, vec![0u8; 10000]).unwrap();
        grow_image(
            &GrowImage {
                path: img.clone(),
                size: 8192,
            },
            true,
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&img).unwrap().len(), 10000);
        grow_image(
            &GrowImage {
                path: img.clone(),
                size: 16384,
            },
            true,
        )
        .unwrap();
        assert_eq!(std::fs::metadata(&img).unwrap().len(), 16384);
    }
}
