//! `--ephemeral` with a disk image: the guest's writes go to a qcow2 overlay whose backing file
//! is the image, and the image itself is never written (QEMU may only read it).
//!
//! The overlay is an unnamed file (`O_TMPFILE`) on a disk-backed file system — next to the
//! image, or in `$TMPDIR` (default `/var/tmp`) — passed to QEMU as an fd (`--add-fd`,
//! `/dev/fdset/N`). It never has a name, so nothing is left behind however vmspawn or QEMU
//! end (`kill -9` included): the kernel frees it when the last fd is closed. A memory-backed
//! file system (tmpfs, ramfs) is refused: a guest that writes a lot would use up the host's
//! memory there.
//!
//! vmspawn writes the empty qcow2 itself (a header naming the backing file and its format, a
//! refcount table and block, an empty L1 table), so no `qemu-img` process is needed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::disk::ImageFormat;
use crate::error::{Error, Result};

/// What the runner creates for an ephemeral image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayPlan {
    /// The image: the overlay's backing file.
    pub backing: PathBuf,
    pub backing_format: ImageFormat,
    /// `--grow-image=` (rounded up to 4096), 0 for none: the overlay's virtual size is at
    /// least this; the image is not touched.
    pub grow_to: u64,
    /// Where the overlay may go, in order of preference.
    pub dirs: Vec<PathBuf>,
}

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// Bytes one L2 table maps: CLUSTER / 8 entries of one cluster each.
const L2_COVERAGE: u64 = (CLUSTER / 8) * CLUSTER;
/// The header length of a version 3 header without optional fields.
const HEADER_LENGTH: u32 = 104;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// QEMU refuses longer backing file names.
const BACKING_NAME_MAX: usize = 1023;

/// Pieces of a file: (offset, bytes).
pub type Pieces = Vec<(u64, Vec<u8>)>;

/// The metadata of an empty qcow2 (version 3, 64 KiB clusters, 16-bit refcounts) of
/// `virtual_size` bytes with the backing file `backing` of format `backing_format`: (offset,
/// bytes) pieces and the file's length; everything else is zero.
pub fn empty_qcow2(
    virtual_size: u64,
    backing: &[u8],
    backing_format: &str,
) -> Result<(Pieces, u64)> {
    if backing.len() > BACKING_NAME_MAX {
        return Err(Error::new(format!(
            "The image path is {} bytes long; a qcow2 overlay can name a backing file of at most \
             {BACKING_NAME_MAX} bytes. Move the image to a shorter path.",
            backing.len()
        )));
    }
    let l1_size = virtual_size.div_ceil(L2_COVERAGE);
    let l1_clusters = (l1_size * 8).div_ceil(CLUSTER).max(1);
    // Cluster 0: header; 1: refcount table; 2: refcount block; 3..: L1 table.
    let clusters = 3 + l1_clusters;
    // One refcount block of 16-bit entries covers CLUSTER / 2 clusters.
    if clusters > CLUSTER / 2 || l1_size > u64::from(u32::MAX) {
        return Err(Error::new(format!(
            "The ephemeral overlay cannot be {virtual_size} bytes large."
        )));
    }

    let mut header = Vec::with_capacity(CLUSTER as usize);
    let be32 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_be_bytes());
    let be64 = |v: &mut Vec<u8>, x: u64| v.extend_from_slice(&x.to_be_bytes());
    // Header extensions: the backing format, then the end marker; the name follows them.
    let mut extensions = Vec::new();
    be32(&mut extensions, EXT_BACKING_FORMAT);
    be32(&mut extensions, backing_format.len() as u32);
    extensions.extend_from_slice(backing_format.as_bytes());
    extensions.resize(extensions.len().next_multiple_of(8), 0);
    be32(&mut extensions, 0);
    be32(&mut extensions, 0);
    let backing_offset = u64::from(HEADER_LENGTH) + extensions.len() as u64;

    header.extend_from_slice(b"QFI\xfb");
    be32(&mut header, 3); // version
    be64(&mut header, backing_offset);
    be32(&mut header, backing.len() as u32);
    be32(&mut header, CLUSTER_BITS);
    be64(&mut header, virtual_size);
    be32(&mut header, 0); // no encryption
    be32(&mut header, l1_size as u32);
    be64(&mut header, 3 * CLUSTER); // L1 table
    be64(&mut header, CLUSTER); // refcount table
    be32(&mut header, 1); // refcount table clusters
    be32(&mut header, 0); // snapshots
    be64(&mut header, 0);
    be64(&mut header, 0); // incompatible features
    be64(&mut header, 0); // compatible features
    be64(&mut header, 0); // autoclear features
    be32(&mut header, 4); // refcount order: 16 bits
    be32(&mut header, HEADER_LENGTH);
    debug_assert_eq!(header.len(), HEADER_LENGTH as usize);
    header.extend_from_slice(&extensions);
    header.extend_from_slice(backing);

    let refcount_table = (2 * CLUSTER).to_be_bytes().to_vec();
    let refcount_block: Vec<u8> = (0..clusters).flat_map(|_| 1u16.to_be_bytes()).collect();
    Ok((
        vec![
            (0, header),
            (CLUSTER, refcount_table),
            (2 * CLUSTER, refcount_block),
        ],
        clusters * CLUSTER,
    ))
}

/// The size the guest sees of the image: a raw file's (or block device's) length, a qcow2
/// image's virtual size.
fn virtual_size(path: &Path, format: ImageFormat) -> Result<u64> {
    let failed = |e: std::io::Error| Error::io(format!("Failed to read '{}'", path.display()), e);
    let mut file = File::open(path).map_err(failed)?;
    match format {
        ImageFormat::Raw => file.seek(SeekFrom::End(0)).map_err(failed),
        ImageFormat::Qcow2 => {
            let mut header = [0u8; 32];
            file.read_exact(&mut header).map_err(failed)?;
            Ok(u64::from_be_bytes(header[24..32].try_into().unwrap()))
        }
    }
}

/// Why `file` cannot hold the overlay: it is on a memory-backed file system.
pub(crate) fn memory_backed(file: &File) -> Option<&'static str> {
    use nix::sys::statfs::{FsType, TMPFS_MAGIC, fstatfs};
    /// linux/magic.h; nix has no constant for it.
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);
    match fstatfs(file).ok()?.filesystem_type() {
        t if t == TMPFS_MAGIC => Some("tmpfs"),
        t if t == RAMFS_MAGIC => Some("ramfs"),
        _ => None,
    }
}

/// An unnamed file in the first of `dirs` that is writable and disk-backed.
fn unnamed_file(dirs: &[PathBuf]) -> Result<File> {
    let mut refused = Vec::new();
    for dir in dirs {
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .open(dir);
        match opened {
            Ok(file) => match memory_backed(&file) {
                None => return Ok(file),
                Some(fs) => refused.push(format!(
                    "{} is on a memory-backed file system ({fs})",
                    dir.display()
                )),
            },
            Err(e) => refused.push(format!("{}: {e}", dir.display())),
        }
    }
    Err(Error::new(format!(
        "Cannot create the --ephemeral overlay (the file that takes the VM's writes while it runs): {}. \
         vmspawn never puts it on a memory-backed file system (tmpfs, ramfs), where a guest that writes \
         a lot would use up the host's memory. Set $TMPDIR to a directory on a disk-backed file system \
         that you can write to.",
        refused.join("; ")
    )))
}

/// Creates the overlay and returns a read-write and a read-only fd of it (for QEMU).
pub fn create(plan: &OverlayPlan) -> Result<(OwnedFd, OwnedFd)> {
    let size = virtual_size(&plan.backing, plan.backing_format)?.max(plan.grow_to);
    let (pieces, length) = empty_qcow2(
        size,
        plan.backing.as_os_str().as_bytes(),
        plan.backing_format.as_qemu(),
    )?;
    let mut file = unnamed_file(&plan.dirs)?;
    let failed = |e: std::io::Error| Error::io("Failed to write the --ephemeral overlay", e);
    file.set_len(length).map_err(failed)?;
    for (offset, bytes) in pieces {
        file.seek(SeekFrom::Start(offset)).map_err(failed)?;
        file.write_all(&bytes).map_err(failed)?;
    }
    file.rewind().map_err(failed)?;
    // An unnamed file can be opened again through /proc.
    let read_only = File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|e| Error::io("Failed to open the --ephemeral overlay read-only", e))?;
    Ok((OwnedFd::from(file), OwnedFd::from(read_only)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn plan_in(dir: &Path, backing: &Path, format: ImageFormat, grow_to: u64) -> OverlayPlan {
        OverlayPlan {
            backing: backing.to_path_buf(),
            backing_format: format,
            grow_to,
            dirs: vec![dir.to_path_buf()],
        }
    }

    fn disk_dir() -> tempfile::TempDir {
        // The target directory is on disk where /tmp may be tmpfs.
        tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")).unwrap()
    }

    /// `qemu-img info` of the overlay behind `fd` (None where qemu-img is not installed).
    fn qemu_img(args: &[&str], fd: &OwnedFd) -> Option<String> {
        let path = format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd());
        let out = Command::new("qemu-img")
            .args(args)
            .arg(&path)
            .output()
            .ok()?;
        assert!(
            out.status.success(),
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn overlay_is_a_valid_unnamed_qcow2() {
        let dir = disk_dir();
        let image = dir.path().join("image.raw");
        std::fs::write(&image, vec![7u8; 3 << 20]).unwrap();
        let (fd, _) = create(&plan_in(dir.path(), &image, ImageFormat::Raw, 0)).unwrap();
        // Unnamed: the directory holds only the image.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        if let Some(info) = qemu_img(&["info", "--output=json", "-U"], &fd) {
            assert!(info.contains("\"virtual-size\": 3145728"), "{info}");
            assert!(
                info.contains("\"backing-filename-format\": \"raw\""),
                "{info}"
            );
            assert!(info.contains(image.to_str().unwrap()), "{info}");
            qemu_img(&["check", "-U"], &fd);
        }
    }

    #[test]
    fn grow_sets_the_virtual_size_only() {
        let dir = disk_dir();
        let image = dir.path().join("image.raw");
        std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
        let (fd, _) = create(&plan_in(dir.path(), &image, ImageFormat::Raw, 5 << 30)).unwrap();
        assert_eq!(std::fs::metadata(&image).unwrap().len(), 1 << 20);
        if let Some(info) = qemu_img(&["info", "--output=json", "-U"], &fd) {
            assert!(info.contains("\"virtual-size\": 5368709120"), "{info}");
            qemu_img(&["check", "-U"], &fd);
        }
    }

    #[test]
    fn large_images_get_a_multi_cluster_l1_table() {
        // 8 TiB: 16384 L1 entries, two clusters.
        let (pieces, length) = empty_qcow2(8 << 40, b"/x.raw", "raw").unwrap();
        assert_eq!(length, 5 * CLUSTER);
        let block = &pieces[2].1;
        assert_eq!(block.len(), 10);
    }

    #[test]
    fn refuses_memory_backed_directories() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let dir = disk_dir();
        let image = dir.path().join("image.raw");
        std::fs::write(&image, b"x").unwrap();
        let e = create(&plan_in(shm, &image, ImageFormat::Raw, 0)).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("/dev/shm is on a memory-backed file system (tmpfs)"),
            "{e}"
        );
        assert!(e.contains("$TMPDIR"), "{e}");
        // The next directory is used when the first one is refused.
        let mut plan = plan_in(shm, &image, ImageFormat::Raw, 0);
        plan.dirs.push(dir.path().to_path_buf());
        create(&plan).unwrap();
    }
}
