//! Disk image inspection: format detection (raw or qcow2) and the GPT partition table, to find
//! the root (or /usr) partition of the Discoverable Partitions Specification for direct kernel boot.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

impl ImageFormat {
    pub fn as_qemu(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }

    /// `--image-format=` and the FORMAT of `--extra-drive=`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "raw" => Some(ImageFormat::Raw),
            "qcow2" => Some(ImageFormat::Qcow2),
            _ => None,
        }
    }
}

/// How a disk reaches the guest (`--image-disk-type=`, the DISKTYPE of `--extra-drive=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskType {
    VirtioBlk,
    VirtioScsi,
    Nvme,
    /// A read-only CD-ROM on the virtio-scsi controller.
    ScsiCd,
}

impl DiskType {
    pub const ALL: [DiskType; 4] = [
        DiskType::VirtioBlk,
        DiskType::VirtioScsi,
        DiskType::Nvme,
        DiskType::ScsiCd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DiskType::VirtioBlk => "virtio-blk",
            DiskType::VirtioScsi => "virtio-scsi",
            DiskType::Nvme => "nvme",
            DiskType::ScsiCd => "scsi-cd",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == text)
    }

    /// The QEMU device of a disk of this type.
    pub fn qemu_device(self) -> &'static str {
        match self {
            DiskType::VirtioBlk => "virtio-blk-pci",
            DiskType::VirtioScsi => "scsi-hd",
            DiskType::Nvme => "nvme",
            DiskType::ScsiCd => "scsi-cd",
        }
    }

    /// The device sits on the virtio-scsi controller.
    pub fn on_scsi_bus(self) -> bool {
        matches!(self, DiskType::VirtioScsi | DiskType::ScsiCd)
    }

    pub fn read_only(self) -> bool {
        self == DiskType::ScsiCd
    }

    /// The longest serial the device takes: 20 characters for virtio-blk and NVMe, 30 for SCSI.
    pub fn serial_max(self) -> usize {
        if self.on_scsi_bus() { 30 } else { 20 }
    }

    /// The serial of a disk whose file is called `filename`: the name itself when it fits, else
    /// the first `serial_max()` hex digits of its SHA-256 (as systemd-vmspawn 262 does).
    pub fn serial(self, filename: &[u8]) -> Vec<u8> {
        let max = self.serial_max();
        if filename.len() <= max {
            return filename.to_vec();
        }
        sha256(filename)
            .iter()
            .flat_map(|b| format!("{b:02x}").into_bytes())
            .take(max)
            .collect()
    }
}

/// `--extra-drive=[FORMAT:][DISKTYPE:]PATH`: the prefixes in either order, each ended by ':'. A
/// word before a ':' that is neither a format nor a disk type starts the path, so a path
/// containing ':' works as long as its first component is not a format or disk type name
/// (write `./raw:x` for a file called `raw:x`).
pub fn parse_disk_spec(arg: &[u8]) -> (Option<ImageFormat>, Option<DiskType>, &[u8]) {
    let mut format = None;
    let mut disk_type = None;
    let mut rest = arg;
    while let Some(colon) = rest.iter().position(|&b| b == b':') {
        let word = std::str::from_utf8(&rest[..colon]).unwrap_or_default();
        if let Some(f) = ImageFormat::parse(word) {
            format = Some(f);
        } else if let Some(t) = DiskType::parse(word) {
            disk_type = Some(t);
        } else {
            break;
        }
        rest = &rest[colon + 1..];
    }
    (format, disk_type, rest)
}

/// SHA-256, for the disk serials of long file names.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

const QCOW2_MAGIC: [u8; 4] = [b'Q', b'F', b'I', 0xfb];

/// Detects the format from the first bytes of the image.
pub fn detect_format(header: &[u8]) -> ImageFormat {
    if header.starts_with(&QCOW2_MAGIC) {
        ImageFormat::Qcow2
    } else {
        ImageFormat::Raw
    }
}

/// Which kind of partition a direct kernel boot mounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootKind {
    Root,
    Usr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootPartition {
    pub kind: RootKind,
    /// The partition's unique GUID, in the canonical lower-case string form.
    pub partuuid: String,
}

/// Discoverable Partitions type GUIDs (root, usr) per architecture.
pub fn dps_types(arch: &str) -> Option<(&'static str, &'static str)> {
    Some(match arch {
        "x86_64" => (
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
            "8484680c-9521-48c6-9c11-b0720656f69e",
        ),
        "aarch64" => (
            "b921b045-1df0-41c3-af44-4c6f280d3fae",
            "b0e01050-ee5f-4390-949a-9101b17104e9",
        ),
        "x86" => (
            "44479540-f297-41b2-9af7-d131d5f0458a",
            "75250d76-8cc6-458e-bd66-bd47cc81a812",
        ),
        "arm" => (
            "69dad710-2ce4-4e3c-b16c-21a1d49abed3",
            "7d0359a3-02b3-4f0a-865c-654403e70625",
        ),
        "riscv64" => (
            "72ec70a6-cf74-40e6-bd49-4bda08e8f224",
            "beaec34b-8442-439b-a40b-984381ed097d",
        ),
        "s390x" => (
            "5eead9a9-fe09-4a1e-a1d7-520d00531306",
            "8a4f5770-50aa-4ed3-874a-99b710db6fea",
        ),
        "ppc64le" => (
            "c31c45e6-3f39-412e-80fb-4809c4980599",
            "ee2b9983-21e8-4153-86d9-b6901a54d1ce",
        ),
        "loongarch64" => (
            "77055800-792c-4f94-b39a-98c91b762bb6",
            "e611c702-575c-4cbe-9a46-434fa0bf7e3f",
        ),
        _ => return None,
    })
}

/// GPT GUIDs are stored mixed-endian: the first three fields little-endian.
fn guid_to_string(raw: &[u8]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        raw[3],
        raw[2],
        raw[1],
        raw[0],
        raw[5],
        raw[4],
        raw[7],
        raw[6],
        raw[8],
        raw[9],
        raw[10],
        raw[11],
        raw[12],
        raw[13],
        raw[14],
        raw[15]
    )
}

const GPT_MAX_ENTRIES: u32 = 1024;

/// Reads the GPT of a raw image and returns the first root partition for `arch`, else the first
/// usr partition. `Ok(None)` when the table has neither; an error when there is no valid GPT.
pub fn find_root_partition<R: Read + Seek>(
    disk: &mut R,
    arch: &str,
) -> Result<Option<RootPartition>> {
    let Some((root_type, usr_type)) = dps_types(arch) else {
        return Ok(None);
    };
    // The primary header sits in LBA 1. Try the common sector sizes.
    for sector in [512u64, 4096] {
        let mut header = [0u8; 92];
        if disk.seek(SeekFrom::Start(sector)).is_err() || disk.read_exact(&mut header).is_err() {
            continue;
        }
        if &header[0..8] != b"EFI PART" {
            continue;
        }
        let entries_lba = u64::from_le_bytes(header[72..80].try_into().unwrap_or_default());
        let entry_count = u32::from_le_bytes(header[80..84].try_into().unwrap_or_default());
        let entry_size = u32::from_le_bytes(header[84..88].try_into().unwrap_or_default());
        if entry_count == 0 || entry_count > GPT_MAX_ENTRIES || !(128..=4096).contains(&entry_size)
        {
            return Err(Error::new(
                "invalid GPT header (implausible partition entry count or size)",
            ));
        }
        let mut table = vec![0u8; (entry_count * entry_size) as usize];
        disk.seek(SeekFrom::Start(entries_lba.saturating_mul(sector)))
            .and_then(|_| disk.read_exact(&mut table))
            .map_err(|e| Error::io("failed to read the GPT partition entries", e))?;
        let mut usr = None;
        for entry in table.chunks_exact(entry_size as usize) {
            let type_guid = guid_to_string(&entry[0..16]);
            let unique = guid_to_string(&entry[16..32]);
            if type_guid == root_type {
                return Ok(Some(RootPartition {
                    kind: RootKind::Root,
                    partuuid: unique,
                }));
            }
            if type_guid == usr_type && usr.is_none() {
                usr = Some(RootPartition {
                    kind: RootKind::Usr,
                    partuuid: unique,
                });
            }
        }
        return Ok(usr);
    }
    Err(Error::new("no GUID partition table (GPT) found"))
}

/// Facts about a disk image the planner needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFacts {
    pub format: ImageFormat,
    pub is_block_device: bool,
    pub size: u64,
}

pub fn inspect(path: &Path) -> Result<(ImageFacts, File)> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    // O_NONBLOCK: opening a FIFO must not hang before the type check below refuses it.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(format!("Failed to open image '{}'", path.display()), e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("Failed to stat '{}'", path.display()), e))?;
    let is_block_device = meta.file_type().is_block_device();
    if !meta.is_file() && !is_block_device {
        return Err(Error::new(format!(
            "Expected regular file or block device, not '{}'.",
            path.display()
        )));
    }
    let mut header = [0u8; 4];
    let got = file
        .read(&mut header)
        .map_err(|e| Error::io(format!("Failed to read '{}'", path.display()), e))?;
    let size = if is_block_device {
        file.seek(SeekFrom::End(0)).unwrap_or(0)
    } else {
        meta.len()
    };
    Ok((
        ImageFacts {
            format: detect_format(&header[..got]),
            is_block_device,
            size,
        },
        file,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn guid_bytes(s: &str) -> [u8; 16] {
        let hex: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&s.replace('-', "")[i..i + 1], 16).unwrap())
            .collect();
        let b: Vec<u8> = hex.chunks(2).map(|p| p[0] << 4 | p[1]).collect();
        [
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ]
    }

    pub fn make_gpt(parts: &[(&str, &str)]) -> Vec<u8> {
        let mut disk = vec![0u8; 512 * 40];
        disk[512..520].copy_from_slice(b"EFI PART");
        disk[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        disk[512 + 80..512 + 84].copy_from_slice(&128u32.to_le_bytes());
        disk[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        for (i, (ty, uuid)) in parts.iter().enumerate() {
            let at = 1024 + i * 128;
            disk[at..at + 16].copy_from_slice(&guid_bytes(ty));
            disk[at + 16..at + 32].copy_from_slice(&guid_bytes(uuid));
        }
        disk
    }

    #[test]
    fn finds_root_then_usr() {
        let esp = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
        let root = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
        let usr = "8484680c-9521-48c6-9c11-b0720656f69e";
        let disk = make_gpt(&[
            (esp, "11111111-2222-3333-4444-555555555555"),
            (root, "aabbccdd-0011-2233-4455-66778899aabb"),
        ]);
        let found = find_root_partition(&mut Cursor::new(disk), "x86_64")
            .unwrap()
            .unwrap();
        assert_eq!(
            found,
            RootPartition {
                kind: RootKind::Root,
                partuuid: "aabbccdd-0011-2233-4455-66778899aabb".into()
            }
        );
        let disk = make_gpt(&[(usr, "01234567-89ab-cdef-0123-456789abcdef")]);
        let found = find_root_partition(&mut Cursor::new(disk), "x86_64")
            .unwrap()
            .unwrap();
        assert_eq!(found.kind, RootKind::Usr);
        let disk = make_gpt(&[(esp, "11111111-2222-3333-4444-555555555555")]);
        assert_eq!(
            find_root_partition(&mut Cursor::new(disk), "x86_64").unwrap(),
            None
        );
        assert!(find_root_partition(&mut Cursor::new(vec![0u8; 4096]), "x86_64").is_err());
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha256_matches_the_standard_vectors() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        // Two blocks of padding (55..=63 bytes of message).
        assert_eq!(
            hex(&sha256(&[b'a'; 64])),
            "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"
        );
    }

    #[test]
    fn serials_are_hashed_when_too_long() {
        let short = b"guest.raw";
        for t in DiskType::ALL {
            assert_eq!(t.serial(short), short.to_vec());
        }
        let name = b"a-disk-image-with-a-long-name.raw"; // 33 bytes
        let full = hex(&sha256(name));
        assert_eq!(DiskType::VirtioBlk.serial(name), &full.as_bytes()[..20]);
        assert_eq!(DiskType::Nvme.serial(name), &full.as_bytes()[..20]);
        assert_eq!(DiskType::VirtioScsi.serial(name), &full.as_bytes()[..30]);
        assert_eq!(DiskType::ScsiCd.serial(name), &full.as_bytes()[..30]);
        // 21..=30 bytes: hashed for virtio-blk and NVMe, kept for SCSI.
        let mid = b"twenty-five-bytes-name.xx";
        assert_eq!(DiskType::VirtioScsi.serial(mid), mid.to_vec());
        assert_eq!(DiskType::VirtioBlk.serial(mid).len(), 20);
    }

    #[test]
    fn disk_specs() {
        use DiskType::*;
        use ImageFormat::*;
        assert_eq!(parse_disk_spec(b"/a/b.raw"), (None, None, &b"/a/b.raw"[..]));
        assert_eq!(
            parse_disk_spec(b"qcow2:/a"),
            (Some(Qcow2), None, &b"/a"[..])
        );
        assert_eq!(parse_disk_spec(b"nvme:/a"), (None, Some(Nvme), &b"/a"[..]));
        assert_eq!(
            parse_disk_spec(b"raw:scsi-cd:/a"),
            (Some(Raw), Some(ScsiCd), &b"/a"[..])
        );
        assert_eq!(
            parse_disk_spec(b"virtio-scsi:qcow2:x"),
            (Some(Qcow2), Some(VirtioScsi), &b"x"[..])
        );
        // An unknown word before ':' is part of the path.
        assert_eq!(parse_disk_spec(b"foo:bar"), (None, None, &b"foo:bar"[..]));
        assert_eq!(
            parse_disk_spec(b"qcow2:a:b"),
            (Some(Qcow2), None, &b"a:b"[..])
        );
        // A name without ':' is a path even if it is a format name.
        assert_eq!(parse_disk_spec(b"qcow2"), (None, None, &b"qcow2"[..]));
        assert_eq!(parse_disk_spec(b"nvme:"), (None, Some(Nvme), &b""[..]));
    }

    #[test]
    fn formats() {
        assert_eq!(detect_format(b"QFI\xfb\0\0\0\x03"), ImageFormat::Qcow2);
        assert_eq!(detect_format(b"\0\0\0\0"), ImageFormat::Raw);
        assert_eq!(detect_format(b""), ImageFormat::Raw);
    }
}
