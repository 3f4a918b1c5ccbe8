//! Who a caller is, from the uid the kernel gave: the user and groups the policy names
//! (through NSS, never failing open), and the user who owns a uid through `/etc/subuid` (for
//! connection limits).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

/// Where systemd's NSS module (`systemd` in nsswitch.conf) finds users, groups and
/// memberships: drop-in records, and the sockets of the services it asks. The helper reads
/// the ones that exist when it starts (Landlock); one it cannot read makes group resolution
/// incomplete.
pub const USERDB_DIRS: [&str; 6] = [
    "/etc/userdb",
    "/run/userdb",
    "/run/host/userdb",
    "/usr/local/lib/userdb",
    "/usr/lib/userdb",
    "/run/systemd/userdb",
];

pub const NSSWITCH: &str = "/etc/nsswitch.conf";
pub const SUBUID: &str = "/etc/subuid";

/// A name no account has, looked up before confinement so that every NSS module of the
/// passwd, group and initgroups databases is loaded while its library can still be mapped.
const PRELOAD_NAME: &str = "vmspawn-nss-preload";
const PRELOAD_ID: u32 = 4_294_967_293;

/// Loads every NSS module the lookups use (a lookup that no source answers goes through all
/// of them). Called before confinement: afterwards a module could not be mapped.
pub fn preload_nss() {
    let _ = User::from_uid(Uid::from_raw(0));
    let _ = Group::from_gid(Gid::from_raw(0));
    let _ = User::from_uid(Uid::from_raw(PRELOAD_ID));
    let _ = User::from_name(PRELOAD_NAME);
    let _ = Group::from_gid(Gid::from_raw(PRELOAD_ID));
    let _ = Group::from_name(PRELOAD_NAME);
    if let Ok(name) = std::ffi::CString::new(PRELOAD_NAME) {
        let _ = nix::unistd::getgrouplist(&name, Gid::from_raw(PRELOAD_ID));
    }
}

/// The sources of database `db` in nsswitch.conf text (`None` when there is no such line);
/// actions in brackets are left out.
pub fn nss_sources(text: &str, db: &str) -> Option<Vec<String>> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let (key, value) = line.split_once(':')?;
        if key.trim() != db {
            return None;
        }
        let mut sources = Vec::new();
        let mut depth = 0usize;
        let mut word = String::new();
        for c in value.chars().chain([' ']) {
            match c {
                '[' => depth += 1,
                ']' => depth = depth.saturating_sub(1),
                _ if depth > 0 => {}
                c if c.is_whitespace() => {
                    if !word.is_empty() {
                        sources.push(std::mem::take(&mut word));
                    }
                }
                c => word.push(c),
            }
        }
        Some(sources)
    })
}

/// Why group resolution cannot be complete here and now, or None. Checks each source that
/// group lookups use (the `initgroups` and `group` lines, `files` when there are none):
/// `files` needs `/etc/group` readable, `systemd` each of its user database directories that
/// exists; any other source cannot be checked, so it makes resolution incomplete.
pub fn group_sources_problem(nsswitch: &Path, userdb_dirs: &[&str]) -> Option<String> {
    let text = match std::fs::read_to_string(nsswitch) {
        Ok(text) => text,
        // glibc's default is "files".
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Some(format!("cannot read {}: {e}", nsswitch.display())),
    };
    let mut sources = Vec::new();
    for db in ["initgroups", "group"] {
        for source in nss_sources(&text, db).unwrap_or_else(|| vec!["files".into()]) {
            if !sources.contains(&source) {
                sources.push(source);
            }
        }
    }
    for source in &sources {
        match source.as_str() {
            "files" => {
                if let Err(e) = std::fs::File::open("/etc/group") {
                    return Some(format!("cannot read /etc/group: {e}"));
                }
            }
            "systemd" => {
                for dir in userdb_dirs {
                    if std::fs::symlink_metadata(dir).is_err() {
                        continue;
                    }
                    if let Err(e) = std::fs::read_dir(dir) {
                        return Some(format!(
                            "the NSS source 'systemd' reads {dir}, which the helper cannot \
                             read ({e}; it reads only what existed when it started)"
                        ));
                    }
                }
            }
            other => {
                return Some(format!(
                    "the NSS source '{other}' of {} cannot be checked by the helper",
                    nsswitch.display()
                ));
            }
        }
    }
    None
}

/// The caller for the policy, and why its groups may be incomplete (then every rule that
/// names groups denies). A uid without a user entry, or a failed user lookup, is an error
/// message for the caller.
pub fn resolve(uid: u32, gid: u32) -> Result<(vmspawn_policy::Caller, Option<String>), String> {
    let user = match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => user,
        Ok(None) => {
            return Err(format!(
                "uid {uid} has no entry in the user database (/etc/passwd or another NSS source); \
                 the policy names users and groups, so it allows nothing to an unnamed uid"
            ));
        }
        Err(e) => {
            return Err(format!(
                "the user database could not be read for uid {uid} ({e}); denied"
            ));
        }
    };
    let mut problem = group_sources_problem(Path::new(NSSWITCH), &USERDB_DIRS);
    let mut groups = Vec::new();
    match std::ffi::CString::new(user.name.clone()) {
        Err(_) => return Err("the user name contains NUL".into()),
        Ok(name) => match nix::unistd::getgrouplist(&name, Gid::from_raw(gid)) {
            Ok(gids) => {
                for g in gids {
                    match Group::from_gid(g) {
                        Ok(Some(group)) => groups.push(group.name),
                        Ok(None) => {
                            problem.get_or_insert(format!("group {g} has no name"));
                        }
                        Err(e) => {
                            problem.get_or_insert(format!("looking up group {g} failed: {e}"));
                        }
                    }
                }
            }
            Err(e) => {
                problem.get_or_insert(format!("listing the groups of {} failed: {e}", user.name));
            }
        },
    }
    Ok((
        vmspawn_policy::Caller {
            uid,
            user: user.name,
            groups,
        },
        problem,
    ))
}

/// Connection limits count a uid against the user who owns it through /etc/subuid (a
/// user's containers run as uids of their range). Re-read when the file changes.
#[derive(Default)]
pub struct SubuidOwners {
    stamp: Option<(u64, u64, i64, i64, u64)>,
    /// (first uid, count, owner key).
    ranges: Vec<(u64, u64, u64)>,
    warned: bool,
}

/// The key a range with an owner that has no uid counts under: one key per range.
const UNRESOLVED_OWNER: u64 = 1 << 32;

/// Ranges of /etc/subuid text: `owner:first:count`, the owner a name or a uid.
pub fn parse_subuid(text: &str, uid_of: impl Fn(&str) -> Option<u32>) -> Vec<(u64, u64, u64)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let mut fields = line.split(':');
            let (owner, first, count) = (fields.next()?, fields.next()?, fields.next()?);
            let first: u64 = first.trim().parse().ok()?;
            let count: u64 = count.trim().parse().ok()?;
            if count == 0 || first > u64::from(u32::MAX) {
                return None;
            }
            let owner = owner.trim();
            let key = owner
                .parse::<u32>()
                .ok()
                .or_else(|| uid_of(owner))
                .map_or(UNRESOLVED_OWNER | first, u64::from);
            Some((first, count, key))
        })
        .collect()
}

/// The owner key of `uid` among `ranges`: the owner of the first range holding it, else the
/// uid itself.
pub fn owner_key(ranges: &[(u64, u64, u64)], uid: u32) -> u64 {
    let uid = u64::from(uid);
    ranges
        .iter()
        .find(|(first, count, _)| uid >= *first && uid - first < *count)
        .map_or(uid, |(_, _, key)| *key)
}

impl SubuidOwners {
    pub fn owner_of(&mut self, uid: u32) -> u64 {
        self.refresh();
        owner_key(&self.ranges, uid)
    }

    fn refresh(&mut self) {
        let meta = match std::fs::metadata(SUBUID) {
            Ok(meta) => meta,
            Err(_) => {
                self.ranges.clear();
                self.stamp = None;
                return;
            }
        };
        let stamp = (
            meta.dev(),
            meta.ino(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.size(),
        );
        if self.stamp == Some(stamp) {
            return;
        }
        let mut text = String::new();
        let read = std::fs::File::open(SUBUID).and_then(|f| {
            std::io::Read::read_to_string(&mut std::io::Read::take(f, 1 << 20), &mut text)
        });
        match read {
            Ok(_) => {
                self.ranges = parse_subuid(&text, |name| {
                    User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())
                });
                self.stamp = Some(stamp);
                self.warned = false;
            }
            Err(e) if !self.warned => {
                eprintln!(
                    "vmspawn-privhelper: cannot read {SUBUID} ({e}); connections of subordinate \
                     uids count as their own users"
                );
                self.warned = true;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsswitch_lines() {
        let text = "# comment\npasswd: files systemd\ngroup:  files [NOTFOUND=return] sss # x\n\
                    initgroups: files [ SUCCESS=merge ] systemd\n";
        assert_eq!(
            nss_sources(text, "group"),
            Some(vec!["files".to_string(), "sss".to_string()])
        );
        assert_eq!(
            nss_sources(text, "initgroups"),
            Some(vec!["files".to_string(), "systemd".to_string()])
        );
        assert_eq!(nss_sources(text, "hosts"), None);
    }

    #[test]
    fn unknown_and_unreadable_sources_are_problems() {
        let dir = std::env::temp_dir().join(format!("vmspawn-nss-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("nsswitch.conf");
        let check = |text: &str, dirs: &[&str]| {
            std::fs::write(&conf, text).unwrap();
            group_sources_problem(&conf, dirs)
        };
        assert_eq!(check("group: files\n", &[]), None);
        assert_eq!(check("passwd: files\n", &[]), None, "default: files");
        assert_eq!(
            check("group: files systemd\n", &["/nonexistent-userdb"]),
            None
        );
        let ldap = check("group: files ldap\n", &[]).unwrap();
        assert!(ldap.contains("'ldap'"), "{ldap}");
        let init = check("group: files\ninitgroups: files sss\n", &[]).unwrap();
        assert!(init.contains("'sss'"), "{init}");
        // A userdb directory that exists but cannot be listed (here: it is a file).
        let file = dir.join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let systemd = check("group: files systemd\n", &[file.to_str().unwrap()]).unwrap();
        assert!(systemd.contains("'systemd'"), "{systemd}");
        assert!(group_sources_problem(&dir.join("none"), &[]).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn subuid_owners() {
        let text = "tester:100000:65536\n# c\n\nbad line\n1002:200000:10\nghost:300000:5\n\
                    zero:400000:0\n";
        let ranges = parse_subuid(text, |name| (name == "tester").then_some(1001));
        assert_eq!(owner_key(&ranges, 100000), 1001);
        assert_eq!(owner_key(&ranges, 165535), 1001);
        assert_eq!(owner_key(&ranges, 165536), 165536);
        assert_eq!(owner_key(&ranges, 200009), 1002);
        assert_eq!(owner_key(&ranges, 1001), 1001);
        // An owner without a uid: the range counts as one user of its own.
        assert_eq!(owner_key(&ranges, 300000), owner_key(&ranges, 300004));
        assert_ne!(owner_key(&ranges, 300000), 300000);
        assert_eq!(owner_key(&ranges, 400000), 400000);
    }
}
