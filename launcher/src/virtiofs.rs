//! Host directories over virtio-fs: the root of `--directory=`, the `--bind=`/`--bind-ro=`
//! shares and the homes of `--bind-user=` users, each served by a virtiofsd of its own, as
//! systemd-vmspawn 259 plans them (tags `root` and `mnt<j>`, `systemd.mount-extra=` words, the
//! `userdb.transient.*` credentials). Unlike 259:
//! - vmspawn binds each virtiofsd's socket and passes it (`--fd=3`), and hands QEMU its own
//!   connection to it, so neither needs to create a socket;
//! - virtiofsd runs `--sandbox=none` inside vmspawn's confinement (a Landlock domain of exactly
//!   its share, read-only for `--bind-ro`, and a seccomp table), so no setuid helper or user
//!   namespace is needed; uid translation uses virtiofsd's `--translate-uid`/`--translate-gid`;
//! - `--bind-ro` is enforced on the host too (`--readonly` and the read-only Landlock rule).
//!
//! Pure planning; the runner carries it out.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, Credential};
use crate::error::{Error, Result};
use crate::plan::{HostFacts, RootFacts, SocketPlan, check_socket_path, program_rules};
use crate::process::{
    EnvPlan, FdName, FdTable, Jail, Lifetime, PassedFd, ProcessPlan, Readiness, Role, StdioPlan,
    Stop,
};
use crate::sandbox::SeccompTable;

/// How long a virtiofsd gets to exit after SIGTERM at the end (it normally exits by itself
/// when QEMU closes the connection).
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// The first guest UID/GID of a bound user (systemd's MAP_UID_MIN), and the last.
pub const BIND_USER_UID_MIN: u32 = 60514;
pub const BIND_USER_UID_MAX: u32 = 60577;
const INSTALL_HINT: &str = "Install virtiofsd 1.11 or newer (Debian 13: apt install virtiofsd; elsewhere: \
     cargo install virtiofsd, then put it in $PATH or /usr/libexec).";

/// virtiofsd as this host has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtiofsdFacts {
    pub binary: PathBuf,
    /// It has `--translate-uid`/`--translate-gid` (virtiofsd 1.11 and newer).
    pub translate: bool,
    /// It has `--readonly`.
    pub readonly: bool,
    /// It has `--inode-file-handles=` (newer ones default to `prefer`, which needs
    /// /proc/self/mountinfo and name_to_handle_at(2)).
    pub file_handles_option: bool,
}

/// A host user for `--bind-user=`, as the host's user database has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindUserFacts {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
    /// The password hash, where vmspawn can read it (only root can).
    pub hashed_password: Option<String>,
}

/// One virtio-fs share.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Share {
    /// QEMU's chardev id and the share's tag.
    id: String,
    tag: String,
    source: PathBuf,
    read_only: bool,
    /// virtiofsd's `--translate-uid`/`--translate-gid` values.
    uid_map: Vec<String>,
    gid_map: Vec<String>,
    /// For messages.
    what: String,
}

/// What the shares add to the plan.
#[derive(Default)]
pub struct VirtiofsPlan {
    pub sockets: Vec<SocketPlan>,
    pub processes: Vec<ProcessPlan>,
    /// The root share's -chardev/-device words (item 19 of 259's order).
    pub root_args: Vec<OsString>,
    /// The other shares' words (item 21).
    pub mount_args: Vec<OsString>,
    /// Words appended to the kernel command line.
    pub cmdline: Vec<String>,
    /// `userdb.transient.*` records of bound users.
    pub credentials: Vec<Credential>,
}

impl VirtiofsPlan {
    /// QEMU needs guest memory it can share with the virtiofsds.
    pub fn needs_shared_memory(&self) -> bool {
        !self.processes.is_empty()
    }
}

/// `"` and `:` as systemd's `systemd.mount-extra=` parser needs them escaped.
fn escape_mount_extra(destination: &str) -> String {
    destination.replace('"', "\\x22").replace(':', "\\x3a")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Privileged<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    hashed_password: Option<Vec<&'a str>>,
}

/// The user record of a bound user, in 259's field order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserRecord<'a> {
    user_name: &'a str,
    uid: u32,
    gid: u32,
    home_directory: String,
    service: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    shell: Option<String>,
    member_of: &'a [String],
    privileged: Privileged<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupRecord<'a> {
    group_name: &'a str,
    gid: u32,
    service: &'static str,
}

fn json_line<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec(value).unwrap_or_default();
    out.push(b'\n');
    out
}

/// `--bind-user-shell=`: None (no shell field), the host user's shell, or one path for all.
fn bound_shell(config: &Config, user: &BindUserFacts) -> Option<String> {
    match config.bind_user_shell.as_deref() {
        None => None,
        Some(value) => match crate::parse::parse_bool(value) {
            Some(true) => Some(user.shell.to_string_lossy().into_owned()),
            Some(false) => None,
            None => Some(value.to_string()),
        },
    }
}

/// A bound user's home: the guest ID `guest` is the host ID `host` both ways, and every other
/// guest ID becomes `host` too (259 passes other IDs through, so a guest's root would create
/// root-owned files in the user's home when root runs vmspawn).
fn only_id(guest: u32, host: u32) -> Vec<String> {
    let mut maps = Vec::new();
    if guest > 0 {
        maps.push(format!("squash-guest:0:{host}:{guest}"));
    }
    maps.push(format!("map:{guest}:{host}:1"));
    // Up to 4294967294; 4294967295 is "no ID".
    let above = u32::MAX - 1 - guest;
    if above > 0 {
        maps.push(format!("squash-guest:{}:{host}:{above}", guest + 1));
    }
    maps
}

/// The shares of this VM, in 259's order: the root, the binds, the bound users' homes.
fn shares(config: &Config, host: &HostFacts) -> Result<(Option<Share>, Vec<Share>)> {
    let unprivileged = host.caller_uid != 0;
    let root = match &host.root {
        RootFacts::Image(_) => None,
        RootFacts::Directory(dir) => {
            let map = match config.private_users {
                None => Vec::new(),
                Some((base, range)) => {
                    // Unprivileged, virtiofsd can create files only as its own user: the guest's
                    // root must be that user on the host.
                    if unprivileged && base != host.caller_uid {
                        return Err(Error::new(format!(
                            "--private-users={base}: run as a regular user (uid {uid}), vmspawn's virtiofsd can \
                             create files only as uid {uid}, so the guest's root must map to uid {uid}. Use \
                             --private-users={uid}[:RANGE] for a tree you own (as mkosi passes its owner), or run \
                             vmspawn as root.",
                            uid = host.caller_uid
                        )));
                    }
                    vec![format!("map:0:{base}:{range}")]
                }
            };
            Some(Share {
                id: "rootdir".into(),
                tag: "root".into(),
                source: dir.path.clone(),
                read_only: false,
                uid_map: map.clone(),
                gid_map: map,
                what: format!("the root directory '{}'", dir.path.display()),
            })
        }
    };
    let mut mounts = Vec::new();
    for bind in &config.binds {
        let j = mounts.len();
        mounts.push(Share {
            id: format!("mnt{j}"),
            tag: format!("mnt{j}"),
            source: bind.source.clone(),
            read_only: bind.read_only,
            uid_map: Vec::new(),
            gid_map: Vec::new(),
            what: format!(
                "the {} share '{}' (at {} in the guest)",
                if bind.read_only {
                    "--bind-ro"
                } else {
                    "--bind"
                },
                bind.source.display(),
                bind.destination
            ),
        });
    }
    for (i, user) in host.bind_users.iter().enumerate() {
        let guest = BIND_USER_UID_MIN + i as u32;
        if guest > BIND_USER_UID_MAX {
            return Err(Error::new(format!(
                "Too many --bind-user= users: at most {} can be bound.",
                BIND_USER_UID_MAX - BIND_USER_UID_MIN + 1
            )));
        }
        let j = mounts.len();
        mounts.push(Share {
            id: format!("mnt{j}"),
            tag: format!("mnt{j}"),
            source: user.home.clone(),
            read_only: false,
            uid_map: only_id(guest, user.uid),
            gid_map: only_id(guest, user.gid),
            what: format!(
                "the home of --bind-user={} ('{}')",
                user.name,
                user.home.display()
            ),
        });
    }
    Ok((root, mounts))
}

/// The virtio-fs part of the plan (empty when the VM has no share). `qemu_fds` is QEMU's fd
/// table, which gets a connection per share.
pub fn plan(config: &Config, host: &HostFacts, qemu_fds: &mut FdTable) -> Result<VirtiofsPlan> {
    let (root, mounts) = shares(config, host)?;
    if root.is_none() && mounts.is_empty() {
        return Ok(VirtiofsPlan::default());
    }
    let Some(virtiofsd) = &host.virtiofsd else {
        return Err(Error::new(format!(
            "Failed to find virtiofsd binary: it is needed for {} and is neither in $PATH nor \
             /usr/libexec/virtiofsd nor /usr/lib/virtiofsd. {INSTALL_HINT}",
            root.as_ref()
                .or(mounts.first())
                .map_or(String::new(), |s| s.what.clone())
        )));
    };
    let mut out = VirtiofsPlan::default();
    let confined = !config.unconfined;
    let arch = host.qemu_arch.as_str();
    for (index, share) in root.iter().chain(mounts.iter()).enumerate() {
        let index = index as u16;
        if (!share.uid_map.is_empty() || !share.gid_map.is_empty()) && !virtiofsd.translate {
            return Err(Error::new(format!(
                "{} needs uid translation (--translate-uid), which '{}' does not have. {INSTALL_HINT}",
                share.what,
                virtiofsd.binary.display()
            )));
        }
        let socket = socket_path(&host.runtime_dir, &share.tag);
        check_socket_path(
            &socket,
            &format!("socket of the virtiofsd for {}", share.what),
        )?;
        let listener = FdName::VirtiofsListener(index);
        let connection = FdName::VirtiofsConnection(index);
        let fd = 3;
        let mut args: Vec<OsString> = vec![
            format!("--fd={fd}").into(),
            "--shared-dir".into(),
            share.source.clone().into(),
            "--xattr".into(),
            "--no-announce-submounts".into(),
            // vmspawn's Landlock domain and seccomp table confine it instead (a namespace
            // sandbox needs mount(2), which Landlock forbids; chroot needs a capability).
            "--sandbox=none".into(),
            "--log-level=error".into(),
        ];
        if virtiofsd.file_handles_option {
            // O_PATH fds for inodes: file handles need what its confinement denies.
            args.push("--inode-file-handles=never".into());
        }
        if share.read_only && virtiofsd.readonly {
            args.push("--readonly".into());
        }
        for (option, maps) in [
            ("--translate-uid", &share.uid_map),
            ("--translate-gid", &share.gid_map),
        ] {
            for map in maps {
                args.push(option.into());
                args.push(map.into());
            }
        }
        let mut rules = program_rules(&[&virtiofsd.binary], arch);
        if share.read_only {
            rules.read.push(share.source.clone());
        } else {
            rules.write.push(share.source.clone());
        }
        // It raises its fd limit up to the kernel's maximum.
        rules.read.push(PathBuf::from("/proc/sys/fs/nr_open"));
        out.processes.push(ProcessPlan {
            role: Role::Virtiofsd,
            name: format!("virtiofsd serving {}", share.what),
            binary: virtiofsd.binary.clone(),
            args,
            env: EnvPlan::default(),
            fds: vec![PassedFd {
                name: listener,
                number: fd,
            }],
            stdio: StdioPlan::NoInput,
            own_process_group: true,
            death_signal: libc::SIGTERM,
            jail: confined.then_some(Jail {
                landlock: rules,
                seccomp: SeccompTable::Virtiofsd,
            }),
            lifetime: Lifetime::Vm {
                readiness: Readiness::Connect {
                    socket: socket.clone(),
                    connection,
                },
                stop: Stop::Signal {
                    signal: libc::SIGTERM,
                    grace: STOP_GRACE,
                },
            },
        });
        out.sockets.push(SocketPlan {
            name: listener,
            path: socket,
        });
        let qemu_fd = qemu_fds.add(connection);
        let words: [OsString; 4] = [
            "-chardev".into(),
            format!("socket,id={},fd={qemu_fd}", share.id).into(),
            "-device".into(),
            format!(
                "vhost-user-fs-pci,queue-size=1024,chardev={},tag={}",
                share.id, share.tag
            )
            .into(),
        ];
        if share.tag == "root" {
            out.root_args.extend(words);
        } else {
            out.mount_args.extend(words);
        }
    }
    if root.is_some() {
        out.cmdline.push("root=root rootfstype=virtiofs rw".into());
    }
    let destinations = config
        .binds
        .iter()
        .map(|b| (b.destination.clone(), b.read_only))
        .chain(
            host.bind_users
                .iter()
                .map(|u| (format!("/run/vmhost/home/{}", u.name), false)),
        );
    for (share, (destination, read_only)) in mounts.iter().zip(destinations) {
        out.cmdline.push(format!(
            "systemd.mount-extra=\"{}:{}:virtiofs:{}\"",
            share.tag,
            escape_mount_extra(&destination),
            if read_only { "ro" } else { "rw" }
        ));
    }
    for (i, user) in host.bind_users.iter().enumerate() {
        let id = BIND_USER_UID_MIN + i as u32;
        let record = UserRecord {
            user_name: &user.name,
            uid: id,
            gid: id,
            home_directory: format!("/run/vmhost/home/{}", user.name),
            service: "io.systemd.NSpawn",
            shell: bound_shell(config, user),
            member_of: &config.bind_user_groups,
            privileged: Privileged {
                hashed_password: user.hashed_password.as_deref().map(|h| vec![h]),
            },
        };
        let group = GroupRecord {
            group_name: &user.name,
            gid: id,
            service: "io.systemd.NSpawn",
        };
        out.credentials.push(Credential {
            id: format!("userdb.transient.user.{}", user.name),
            data: json_line(&record),
        });
        out.credentials.push(Credential {
            id: format!("userdb.transient.group.{}", user.name),
            data: json_line(&group),
        });
    }
    Ok(out)
}

/// Checks a `--bind-user=` user as 259 does, and that a regular user binds only themself.
pub fn check_bind_user(
    name: &str,
    uid: u32,
    group_name: Option<&str>,
    caller_uid: u32,
) -> Result<()> {
    if uid == 0 || name == "root" {
        return Err(Error::new("Mapping 'root' user not supported, sorry."));
    }
    if uid == 65534 || name == "nobody" {
        return Err(Error::new("Mapping 'nobody' user not supported, sorry."));
    }
    if group_name != Some(name) {
        return Err(Error::new(format!(
            "Sorry, mapping users without private groups is currently not supported: the primary group of \
             '{name}' is {}.",
            group_name.map_or("unknown".to_string(), |g| format!("'{g}'"))
        )));
    }
    if caller_uid != 0 && caller_uid != uid {
        return Err(Error::new(format!(
            "--bind-user={name}: run as a regular user (uid {caller_uid}), vmspawn can bind only your own user: \
             its virtiofsd runs as you and could not act as '{name}' on the host. Run vmspawn as root to bind \
             other users."
        )));
    }
    Ok(())
}

/// Where the vhost-user socket of the share tagged `tag` is bound.
fn socket_path(runtime_dir: &Path, tag: &str) -> PathBuf {
    runtime_dir.join(format!("virtiofs-{tag}.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_extra_escapes() {
        assert_eq!(escape_mount_extra("/srv/a:b\"c"), "/srv/a\\x3ab\\x22c");
    }

    #[test]
    fn bound_users_own_everything_the_guest_creates_in_their_home() {
        assert_eq!(
            only_id(60514, 1001),
            [
                "squash-guest:0:1001:60514",
                "map:60514:1001:1",
                "squash-guest:60515:1001:4294906780"
            ]
        );
        // The ranges end right before 4294967295.
        assert_eq!(60515u64 + 4294906780, u64::from(u32::MAX));
    }

    #[test]
    fn bind_user_checks() {
        assert!(check_bind_user("root", 0, Some("root"), 0).is_err());
        assert!(check_bind_user("nobody", 65534, Some("nogroup"), 0).is_err());
        let e = check_bind_user("alice", 1000, Some("users"), 0).unwrap_err();
        assert!(e.to_string().contains("private groups"), "{e}");
        assert!(check_bind_user("alice", 1000, Some("alice"), 0).is_ok());
        assert!(check_bind_user("alice", 1000, Some("alice"), 1000).is_ok());
        assert!(check_bind_user("alice", 1000, Some("alice"), 1001).is_err());
    }
}
