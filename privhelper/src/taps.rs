//! The TAP devices the helper created, and the sessions they belong to.
//!
//! A regular user holding a TAP fd can make the device persistent (TUNSETPERSIST) and give it
//! to another uid (TUNSETOWNER) without any capability, so neither the device's lifetime nor
//! its sysfs `owner` says anything the helper can trust. The helper keeps its own records in a
//! root-only file, `/run/vmspawn/taps`, and those decide:
//!
//! - quotas count the records (never the `owner` field), under an flock on that file that
//!   holds across processes (the service and every setuid helper), from the count to the
//!   record of the new device;
//! - a record names the device (name and ifindex), its user, its network namespace, the
//!   helper process that holds it and the session process (the caller, vmspawn's launcher,
//!   which lives exactly as long as its VM), each as pid and start time;
//! - a device whose holder and session processes are both gone is deleted by whoever looks
//!   next (every helper start, every TAP request, the service every few seconds, a setuid
//!   helper's warden), by ifindex, after checking the name at that index is still the one it
//!   made.
//!
//! The file is an array of fixed 128-byte slots, each written with one pwrite: a helper killed
//! at any moment leaves every slot whole. Errors while reading it, and a process whose state
//! cannot be read, count as "in use": counting never fails open.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::privileges;
use crate::sys;

/// Where the records live.
pub const RUN_DIR: &str = "/run/vmspawn";
pub const RECORDS: &str = "/run/vmspawn/taps";

const SLOT: usize = 128;
/// Far more slots than `max-taps-total` can allow; a bigger file is refused.
const MAX_SLOTS: usize = 8192;

/// A process, by pid and start time (a reused pid is another process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub start: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Gone,
    /// Its state could not be read (e.g. out of fds): treated as alive.
    Unknown,
}

/// Field 3 (state) and 22 (start time) of /proc/PID/stat.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

pub fn liveness(process: Proc) -> Liveness {
    match std::fs::read_to_string(format!("/proc/{}/stat", process.pid)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            Liveness::Gone
        }
        Err(_) => Liveness::Unknown,
        Ok(stat) => match parse_stat(&stat) {
            Some((_, start)) if start != process.start => Liveness::Gone,
            Some(('Z' | 'X', _)) => Liveness::Gone,
            Some(_) => Liveness::Alive,
            None => Liveness::Unknown,
        },
    }
}

/// This process, for the records it writes.
pub fn me() -> Result<Proc, String> {
    let pid = std::process::id();
    let start = crate::process::start_time(pid)
        .ok_or("cannot read the helper's own start time from /proc")?;
    Ok(Proc { pid, start })
}

/// The network namespace of this process (device and inode of /proc/self/ns/net).
pub fn own_netns() -> Result<(u64, u64), String> {
    let meta = std::fs::metadata("/proc/self/ns/net")
        .map_err(|e| format!("cannot identify the helper's network namespace: {e}"))?;
    Ok((meta.dev(), meta.ino()))
}

/// One TAP device the helper made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub ifname: String,
    pub ifindex: i32,
    pub uid: u32,
    pub netns: (u64, u64),
    /// The helper process that created it and holds its fd until handing it over.
    pub holder: Proc,
    /// The caller's process: the device lives no longer than it.
    pub session: Proc,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let line = format!(
            "{} {} {} {} {} {} {} {} {}",
            self.ifname,
            self.ifindex,
            self.uid,
            self.netns.0,
            self.netns.1,
            self.holder.pid,
            self.holder.start,
            self.session.pid,
            self.session.start
        );
        slot_bytes(&line)
    }

    fn decode(text: &str) -> Option<Record> {
        let f: Vec<&str> = text.split_whitespace().collect();
        let [ifname, ifindex, uid, dev, ino, hpid, hstart, spid, sstart] = f[..] else {
            return None;
        };
        if !ifname.starts_with("vt-") || ifname.len() >= libc::IFNAMSIZ {
            return None;
        }
        Some(Record {
            ifname: ifname.to_string(),
            ifindex: ifindex.parse().ok()?,
            uid: uid.parse().ok()?,
            netns: (dev.parse().ok()?, ino.parse().ok()?),
            holder: Proc {
                pid: hpid.parse().ok()?,
                start: hstart.parse().ok()?,
            },
            session: Proc {
                pid: spid.parse().ok()?,
                start: sstart.parse().ok()?,
            },
        })
    }

    /// Both the helper that holds it and the caller's process are gone.
    fn stale(&self) -> bool {
        liveness(self.holder) == Liveness::Gone && liveness(self.session) == Liveness::Gone
    }
}

/// A slot: `line` padded with spaces, ending in a newline. A free slot is all spaces.
fn slot_bytes(line: &str) -> Vec<u8> {
    let mut bytes = vec![b' '; SLOT];
    let n = line.len().min(SLOT - 1);
    bytes[..n].copy_from_slice(&line.as_bytes()[..n]);
    bytes[SLOT - 1] = b'\n';
    bytes
}

/// A random TAP name: `vt-` and 12 hex digits (48 bits from getrandom), 15 bytes, so no one
/// can compute it in advance, let alone make another user's VM collide with it.
pub fn random_name() -> Result<String, String> {
    let mut bytes = [0u8; 6];
    sys::random_bytes(&mut bytes).map_err(|e| format!("getrandom failed: {e}"))?;
    Ok(format!(
        "vt-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// The records file, opened once (as root, before confinement and before a setuid helper
/// drops to the caller's uid: the fd keeps working afterwards).
pub struct Records {
    file: File,
    pub netns: (u64, u64),
    pub me: Proc,
}

/// Creates `/run/vmspawn` if needed and opens the records file in it, refusing anything not
/// owned by root or open to others.
pub fn open_records(dir: &Path, me: Proc) -> Result<Records, String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        format!("cannot use {}: {what}: {e}", dir.display())
    };
    match std::fs::create_dir(dir) {
        Ok(()) => {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(|e| fail("chmod", &e))?
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail("mkdir", &e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| fail("stat", &e))?;
    if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} must be a directory owned by root and writable by no one else",
            dir.display()
        ));
    }
    let path = dir.join("taps");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| format!("cannot open the TAP records {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    if !meta.is_file() || meta.uid() != 0 || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} must be a regular file owned by root and readable by no one else",
            path.display()
        ));
    }
    Ok(Records {
        file,
        netns: own_netns()?,
        me,
    })
}

/// The records, locked (flock) until dropped.
pub struct Locked<'a> {
    records: &'a Records,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = sys::flock(self.records.file.as_fd(), libc::LOCK_UN);
    }
}

impl Records {
    #[cfg(test)]
    pub fn from_file(file: File, me: Proc) -> Records {
        Records {
            file,
            netns: (0, 0),
            me,
        }
    }

    /// Takes the lock (waits for other helpers). Threads of one process share the file, so
    /// the caller also holds the in-process mutex.
    pub fn lock(&self) -> Result<Locked<'_>, String> {
        sys::flock(self.file.as_fd(), libc::LOCK_EX)
            .map_err(|e| format!("cannot lock the TAP records {RECORDS}: {e}"))?;
        Ok(Locked { records: self })
    }
}

impl Locked<'_> {
    /// The helper's process and network namespace, for the records it writes.
    pub fn identity(&self) -> (Proc, (u64, u64)) {
        (self.records.me, self.records.netns)
    }

    /// Every slot: its record, or None when free. Any unreadable slot is an error.
    pub fn read(&self) -> Result<Vec<Option<Record>>, String> {
        let len = self
            .records
            .file
            .metadata()
            .map_err(|e| format!("cannot read the TAP records {RECORDS}: {e}"))?
            .len() as usize;
        if len % SLOT != 0 || len / SLOT > MAX_SLOTS {
            return Err(format!(
                "the TAP records {RECORDS} are damaged ({len} bytes); an administrator can \
                 remove the file once no vmspawn VM runs"
            ));
        }
        let mut bytes = vec![0u8; len];
        self.records
            .file
            .read_exact_at(&mut bytes, 0)
            .map_err(|e| format!("cannot read the TAP records {RECORDS}: {e}"))?;
        bytes
            .chunks(SLOT)
            .enumerate()
            .map(|(i, slot)| {
                let text = std::str::from_utf8(slot).ok().filter(|t| t.ends_with('\n'));
                match text.map(str::trim) {
                    Some("") => Ok(None),
                    Some(t) => Record::decode(t).map(Some).ok_or(()),
                    None => Err(()),
                }
                .map_err(|()| format!("the TAP records {RECORDS} are damaged (slot {i})"))
            })
            .collect()
    }

    fn write_slot(&self, index: usize, record: Option<&Record>) -> Result<(), String> {
        let bytes = record.map_or_else(|| slot_bytes(""), Record::encode);
        self.records
            .file
            .write_all_at(&bytes, (index * SLOT) as u64)
            .map_err(|e| format!("cannot write the TAP records {RECORDS}: {e}"))
    }

    /// Records a new device in a free slot (or a new one at the end).
    pub fn add(&self, record: &Record) -> Result<(), String> {
        let slots = self.read()?;
        let index = slots
            .iter()
            .position(Option::is_none)
            .unwrap_or(slots.len());
        if index >= MAX_SLOTS {
            return Err(format!("the TAP records {RECORDS} are full"));
        }
        self.write_slot(index, Some(record))
    }

    /// Deletes `record`'s device (if it is still there and still the device of that name)
    /// and frees its slot. A device that cannot be deleted keeps its record.
    fn retire(&self, index: usize, record: &Record) -> Result<(), String> {
        if record.netns == self.records.netns {
            delete_device(record)?;
        }
        // A record of another network namespace whose holder and session are gone: its
        // holder's warden or service deleted it there; nothing here can reach it.
        self.write_slot(index, None)
    }

    /// Deletes the devices whose holder and session are both gone, and forgets devices of
    /// this network namespace that are gone already (a non-persistent TAP goes with its last
    /// fd; ifindexes are not reused).
    pub fn reconcile(&self) -> Result<(), String> {
        for (index, slot) in self.read()?.into_iter().enumerate() {
            let Some(record) = slot else { continue };
            let result = if record.stale() {
                self.retire(index, &record)
            } else if record.netns == self.records.netns && device_gone(&record) {
                self.write_slot(index, None)
            } else {
                Ok(())
            };
            if let Err(e) = result {
                eprintln!("vmspawn-privhelper: {e}");
            }
        }
        Ok(())
    }

    /// Deletes the devices `holder` made for sessions that are now gone (or all of them).
    pub fn end_session(&self, holder: Proc, only_gone_sessions: bool) -> Result<(), String> {
        for (index, slot) in self.read()?.into_iter().enumerate() {
            let Some(record) = slot else { continue };
            let mine = record.holder == holder && record.netns == self.records.netns;
            let over = !only_gone_sessions || liveness(record.session) == Liveness::Gone;
            if mine && over {
                self.retire(index, &record)?;
            }
        }
        Ok(())
    }

    /// Deletes one device this helper holds.
    pub fn remove(&self, ifname: &str, ifindex: i32) -> Result<(), String> {
        for (index, slot) in self.read()?.into_iter().enumerate() {
            if let Some(record) = slot.filter(|r| {
                r.ifname == ifname && r.ifindex == ifindex && r.holder == self.records.me
            }) {
                return self.retire(index, &record);
            }
        }
        Ok(())
    }

    /// Records held by `holder`.
    pub fn held_by(&self, holder: Proc) -> Result<usize, String> {
        Ok(self
            .read()?
            .iter()
            .flatten()
            .filter(|r| r.holder == holder)
            .count())
    }

    /// (all devices, devices of `uid`), from the records.
    pub fn count(&self, uid: u32) -> Result<(u32, u32), String> {
        let records = self.read()?;
        let total = records.iter().flatten().count() as u32;
        let mine = records.iter().flatten().filter(|r| r.uid == uid).count() as u32;
        Ok((total, mine))
    }
}

/// Whether the device of `record` is certainly gone (no interface at its index, or one of
/// another name). Any error: not gone.
fn device_gone(record: &Record) -> bool {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType};
    let Ok(control) = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    match sys::if_name(control.as_fd(), record.ifindex) {
        Ok(name) => name != record.ifname,
        Err(e) => e.raw_os_error() == Some(libc::ENODEV),
    }
}

/// RTM_DELLINK for `record.ifindex`, after checking the interface at that index still has the
/// name the helper gave it. A device that is gone already is fine.
fn delete_device(record: &Record) -> Result<(), String> {
    use nix::sys::socket::{
        self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
    };
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        format!("cannot delete TAP {} ({what}): {e}", record.ifname)
    };
    let control = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| fail("control socket", &e))?;
    match sys::if_name(control.as_fd(), record.ifindex) {
        Ok(name) if name == record.ifname => {}
        // Renamed (only root can): no longer the device the helper made.
        Ok(_) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
        Err(e) => return Err(fail("look-up", &e)),
    }
    let netlink = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(|e| fail("netlink socket", &e))?;
    // struct nlmsghdr (16 bytes) + struct ifinfomsg (16 bytes).
    let mut message = Vec::with_capacity(32);
    message.extend_from_slice(&32u32.to_ne_bytes());
    message.extend_from_slice(&libc::RTM_DELLINK.to_ne_bytes());
    message.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    message.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    message.extend_from_slice(&record.ifindex.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    let mut answer = [0u8; 256];
    let received = privileges::with_net_admin(|| {
        socket::sendto(
            std::os::fd::AsRawFd::as_raw_fd(&netlink),
            &message,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .map_err(|e| fail("send", &e))?;
        socket::recv(
            std::os::fd::AsRawFd::as_raw_fd(&netlink),
            &mut answer,
            MsgFlags::empty(),
        )
        .map_err(|e| fail("receive", &e))
    })?;
    // NLMSG_ERROR carries an errno (0: done) right after the header.
    let kind = answer.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let errno = answer
        .get(16..20)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    match (received >= 20, kind, errno) {
        (true, Some(2), Some(0)) => Ok(()),
        (true, Some(2), Some(e)) if -e == libc::ENODEV => Ok(()),
        (true, Some(2), Some(e)) => Err(fail("RTM_DELLINK", &io::Error::from_raw_os_error(-e))),
        _ => Err(fail("RTM_DELLINK", &"unexpected answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ifname: &str, uid: u32, holder: Proc, session: Proc) -> Record {
        Record {
            ifname: ifname.into(),
            ifindex: 7,
            uid,
            netns: (1, 2),
            holder,
            session,
        }
    }

    fn temp_records() -> Records {
        let path = std::env::temp_dir().join(format!("privhelper-taps-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        Records::from_file(file, me().unwrap())
    }

    #[test]
    fn records_round_trip_and_count_by_uid() {
        let records = temp_records();
        let locked = records.lock().unwrap();
        let alive = me().unwrap();
        locked
            .add(&record("vt-000000000001", 1001, alive, alive))
            .unwrap();
        locked
            .add(&record("vt-000000000002", 1002, alive, alive))
            .unwrap();
        locked
            .add(&record("vt-000000000003", 1001, alive, alive))
            .unwrap();
        assert_eq!(locked.count(1001).unwrap(), (3, 2));
        assert_eq!(locked.count(1002).unwrap(), (3, 1));
        assert_eq!(locked.held_by(alive).unwrap(), 3);
        // A freed slot is reused; the others keep their places.
        locked.write_slot(1, None).unwrap();
        assert_eq!(locked.count(1002).unwrap(), (2, 0));
        locked
            .add(&record("vt-000000000004", 1003, alive, alive))
            .unwrap();
        let slots = locked.read().unwrap();
        assert_eq!(slots.len(), 3);
        assert_eq!(slots[1].as_ref().unwrap().ifname, "vt-000000000004");
    }

    #[test]
    fn a_damaged_file_is_an_error_not_zero() {
        let records = temp_records();
        records.file.write_all_at(b"garbage", 0).unwrap();
        let locked = records.lock().unwrap();
        assert!(locked.count(1001).unwrap_err().contains("damaged"));
        records.file.set_len(SLOT as u64).unwrap();
        assert!(locked.count(1001).unwrap_err().contains("damaged"));
    }

    #[test]
    fn stale_needs_both_holder_and_session_gone() {
        let alive = me().unwrap();
        let gone = Proc {
            pid: alive.pid,
            start: alive.start + 1,
        };
        assert!(!record("vt-a", 1, alive, gone).stale());
        assert!(!record("vt-a", 1, gone, alive).stale());
        assert!(record("vt-a", 1, gone, gone).stale());
        let no_such = Proc {
            pid: u32::MAX - 1,
            start: 1,
        };
        assert_eq!(liveness(no_such), Liveness::Gone);
        assert_eq!(liveness(alive), Liveness::Alive);
    }

    #[test]
    fn random_names_fit_and_differ() {
        let a = random_name().unwrap();
        let b = random_name().unwrap();
        assert_eq!(a.len(), 15);
        assert!(a.len() < libc::IFNAMSIZ);
        assert!(a.starts_with("vt-") && a[3..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
