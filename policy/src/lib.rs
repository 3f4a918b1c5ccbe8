//! The vmspawn helper policy: who may ask the privileged helper for what.
//!
//! The policy is a TOML file edited by the administrator, by default
//! [`DEFAULT_POLICY_PATH`]. It is read by privileged code, so parsing never
//! panics, every problem is a [`PolicyError`] naming the file and line, and
//! every name is length- and character-checked *before* it is compared
//! (CVE-2019-13164: qemu-bridge-helper compared a truncated ACL entry with an
//! untruncated bridge name).
//!
//! Semantics: deny by default. A request is allowed only if at least one
//! `[[allow]]` rule matches the caller, the operation, the bridge (if any) and
//! the machine name prefix (if the rule has one), and no `[[deny]]` rule
//! matches. Deny wins. The first matching `[[allow]]` rule, in file order,
//! gives the [`Grant`].
//!
//! See `policy.example.toml` next to this crate for a commented example.

#![forbid(unsafe_code)]

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// Where the helper reads its policy. The helper chooses the path, never the caller.
pub const DEFAULT_POLICY_PATH: &str = "/etc/vmspawn/policy.toml";

/// Default and bounds of `[limits] max-taps-per-user`.
const DEFAULT_MAX_TAPS_PER_USER: u32 = 8;
const MAX_TAPS_PER_USER_RANGE: (u32, u32) = (1, 256);
/// Default and bounds of `[limits] max-taps-total`.
const DEFAULT_MAX_TAPS_TOTAL: u32 = 256;
const MAX_TAPS_TOTAL_RANGE: (u32, u32) = (1, 4096);
/// Usable guest CIDs: 0-2 are reserved (hypervisor, local, host), u32::MAX is VMADDR_CID_ANY.
const CID_RANGE: (u32, u32) = (3, 4_294_967_294);
/// Longest user or group name accepted (useradd's limit).
const MAX_ACCOUNT_NAME: usize = 32;
/// Longest interface name: IFNAMSIZ (16) minus the NUL.
const MAX_IFNAME: usize = 15;
/// Longest machine name machined accepts (a host name).
const MAX_MACHINE_NAME: usize = 64;
/// A policy file larger than this is refused before it is read.
const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// One privileged operation of the helper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    CreateTap,
    OpenKvm,
    OpenVhostVsock,
    RegisterMachine,
}

impl Operation {
    const ALL: [Operation; 4] = [
        Operation::CreateTap,
        Operation::OpenKvm,
        Operation::OpenVhostVsock,
        Operation::RegisterMachine,
    ];

    /// The name used in the policy file, e.g. `"create-tap"`.
    pub fn name(self) -> &'static str {
        match self {
            Operation::CreateTap => "create-tap",
            Operation::OpenKvm => "open-kvm",
            Operation::OpenVhostVsock => "open-vhost-vsock",
            Operation::RegisterMachine => "register-machine",
        }
    }

    fn from_name(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.name() == name)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who is asking. The helper resolves this from the kernel-given uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub user: String,
    /// Names of the primary and supplementary groups.
    pub groups: Vec<String>,
}

/// What is being asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub operation: Operation,
    /// The machine name, if the request concerns a named machine.
    pub machine: Option<&'a str>,
    /// The bridge a created TAP is to be attached to (create-tap only).
    pub bridge: Option<&'a str>,
}

/// What an allowed request may do, from the `[[allow]]` rule that allowed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// TAP devices this user may hold at once under this rule.
    pub max_taps: u32,
    /// Inclusive guest CID range of the rule, if it sets `vsock-cids`
    /// (always set on rules that allow open-vhost-vsock).
    pub vsock_cids: Option<(u32, u32)>,
    /// The helper must also get polkit's yes.
    pub polkit: bool,
    /// The rule that allowed the request, e.g. `/etc/vmspawn/policy.toml:12 [[allow]]`.
    pub rule: String,
}

/// Why a request was refused, in words for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub message: String,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Denial {}

fn deny(message: String) -> Denial {
    Denial { message }
}

/// Why a policy file was refused before it was parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsafeFile {
    Symlink,
    NotRegularFile,
    NotOwnedBy {
        expected: u32,
        owner: u32,
    },
    GroupWritable,
    WorldWritable,
    TooLarge {
        size: u64,
    },
    /// The file changed between the check and the open.
    Replaced,
}

impl fmt::Display for UnsafeFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnsafeFile::Symlink => {
                write!(f, "it is a symbolic link; replace it with a regular file")
            }
            UnsafeFile::NotRegularFile => write!(f, "it is not a regular file"),
            UnsafeFile::NotOwnedBy { expected, owner } => write!(
                f,
                "it is owned by uid {owner}, not uid {expected}; run 'chown {expected} FILE'"
            ),
            UnsafeFile::GroupWritable => {
                write!(f, "it is group-writable; run 'chmod g-w FILE'")
            }
            UnsafeFile::WorldWritable => {
                write!(f, "it is world-writable; run 'chmod o-w FILE'")
            }
            UnsafeFile::TooLarge { size } => {
                write!(
                    f,
                    "it is {size} bytes, more than the {MAX_FILE_SIZE} allowed"
                )
            }
            UnsafeFile::Replaced => write!(f, "it was replaced while being opened; try again"),
        }
    }
}

/// A policy file that could not be used. Display gives a message naming the
/// file (and line) and what to fix.
#[derive(Debug)]
pub enum PolicyError {
    /// The file does not exist.
    Missing { path: PathBuf },
    /// The file exists but is not trusted; nothing was parsed.
    Unsafe { path: PathBuf, problem: UnsafeFile },
    /// The file could not be read.
    Read { path: PathBuf, error: io::Error },
    /// The file is not valid policy: bad TOML, an unknown key, a wrong type,
    /// a bad value or a contradiction.
    Invalid {
        origin: String,
        line: usize,
        message: String,
    },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::Missing { path } => write!(
                f,
                "{}: policy file does not exist; create it (owned by root, not group- or \
                 world-writable) to allow users to use the vmspawn helper",
                path.display()
            ),
            PolicyError::Unsafe { path, problem } => {
                let text = problem
                    .to_string()
                    .replace("FILE", &path.display().to_string());
                write!(f, "{}: refusing policy file: {text}", path.display())
            }
            PolicyError::Read { path, error } => {
                write!(f, "{}: cannot read policy file: {error}", path.display())
            }
            PolicyError::Invalid {
                origin,
                line,
                message,
            } => write!(f, "{origin}:{line}: {message}"),
        }
    }
}

impl std::error::Error for PolicyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PolicyError::Read { error, .. } => Some(error),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    limits: Option<Spanned<RawLimits>>,
    #[serde(default)]
    allow: Vec<Spanned<RawAllow>>,
    #[serde(default)]
    deny: Vec<Spanned<RawDeny>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    max_taps_per_user: Option<Spanned<u32>>,
    max_taps_total: Option<Spanned<u32>>,
    allow_unconfined: Option<Spanned<bool>>,
}

type Names = Option<Spanned<Vec<Spanned<String>>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAllow {
    users: Names,
    groups: Names,
    operations: Names,
    bridges: Names,
    max_taps: Option<Spanned<u32>>,
    vsock_cids: Option<Spanned<String>>,
    machine_prefix: Option<Spanned<String>>,
    polkit: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDeny {
    users: Names,
    groups: Names,
    operations: Names,
    bridges: Names,
}

// ---------------------------------------------------------------------------
// The checked policy.

/// A parsed and checked policy.
#[derive(Clone, Debug)]
pub struct Policy {
    origin: String,
    max_taps_per_user: u32,
    max_taps_total: u32,
    allow_unconfined: bool,
    allow: Vec<AllowRule>,
    deny: Vec<DenyRule>,
}

#[derive(Clone, Debug)]
struct Who {
    users: Vec<String>,
    groups: Vec<String>,
}

#[derive(Clone, Debug)]
struct AllowRule {
    line: usize,
    who: Who,
    operations: Vec<Operation>,
    bridges: Vec<String>,
    max_taps: u32,
    vsock_cids: Option<(u32, u32)>,
    machine_prefix: Option<String>,
    polkit: bool,
}

#[derive(Clone, Debug)]
struct DenyRule {
    line: usize,
    who: Who,
    /// Empty: all operations.
    operations: Vec<Operation>,
    /// None: all bridges (and requests without one).
    bridges: Option<Vec<String>>,
}

/// Turns byte offsets into line numbers and builds errors.
struct Source<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Source<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn error(&self, span: Range<usize>, message: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            origin: self.origin.to_string(),
            line: self.line(span.start),
            message: message.into(),
        }
    }
}

impl Policy {
    /// Parses and checks policy text. `origin` is the file name used in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let src = Source { text, origin };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| src.line(s.start));
            PolicyError::Invalid {
                origin: origin.to_string(),
                line,
                message: e.message().trim_end().to_string(),
            }
        })?;

        let (mut per_user, mut total) = (DEFAULT_MAX_TAPS_PER_USER, DEFAULT_MAX_TAPS_TOTAL);
        let mut per_user_span = None;
        let mut allow_unconfined = false;
        if let Some(limits) = &raw.limits {
            let limits = limits.get_ref();
            if let Some(v) = &limits.max_taps_per_user {
                per_user = in_range(&src, v, "max-taps-per-user", MAX_TAPS_PER_USER_RANGE)?;
                per_user_span = Some(v.span());
            }
            if let Some(v) = &limits.max_taps_total {
                total = in_range(&src, v, "max-taps-total", MAX_TAPS_TOTAL_RANGE)?;
            }
            if let Some(v) = &limits.allow_unconfined {
                allow_unconfined = *v.get_ref();
            }
        }
        if per_user > total {
            let span = per_user_span
                .or_else(|| raw.limits.as_ref().map(|l| l.span()))
                .unwrap_or(0..0);
            return Err(src.error(
                span,
                format!(
                    "max-taps-per-user ({per_user}) is more than max-taps-total ({total}); \
                     lower max-taps-per-user or raise max-taps-total"
                ),
            ));
        }

        let allow = raw
            .allow
            .iter()
            .map(|rule| allow_rule(&src, rule, per_user))
            .collect::<Result<Vec<_>, _>>()?;
        let deny = raw
            .deny
            .iter()
            .map(|rule| deny_rule(&src, rule))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Policy {
            origin: origin.to_string(),
            max_taps_per_user: per_user,
            max_taps_total: total,
            allow_unconfined,
            allow,
            deny,
        })
    }

    /// Reads and parses the policy at `path`. Refuses a symlink, anything but a
    /// regular file, a file not owned by root and a group- or world-writable
    /// file. A missing file is an error (and so deny for everybody).
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        load_with_owner(path, 0)
    }

    /// Total number of TAP devices the helper may have at once, all users together.
    pub fn max_taps_total(&self) -> u32 {
        self.max_taps_total
    }

    /// Default per-user TAP cap (`[limits] max-taps-per-user`).
    pub fn max_taps_per_user(&self) -> u32 {
        self.max_taps_per_user
    }

    /// `[limits] allow-unconfined`: the administrator lets the helper run where it cannot
    /// confine itself (no Landlock, or not all of it). Off by default: the helper refuses to
    /// start there.
    pub fn allow_unconfined(&self) -> bool {
        self.allow_unconfined
    }

    /// Decides a request. Deny by default; any matching `[[deny]]` wins; the
    /// first fully matching `[[allow]]` gives the grant.
    pub fn check(&self, caller: &Caller, req: &Request) -> Result<Grant, Denial> {
        self.check_with(caller, req, None)
    }

    /// [`Policy::check`] for a caller whose groups may not have been resolved completely
    /// (`groups_unresolved` says why: a lookup error, a source the helper cannot read). Then
    /// the groups it has may be missing some, so no rule that names groups can be decided:
    /// every `[[deny]]` or `[[allow]]` rule that names groups and concerns the request denies
    /// it. Rules that name only users are decided as usual.
    pub fn check_with(
        &self,
        caller: &Caller,
        req: &Request,
        groups_unresolved: Option<&str>,
    ) -> Result<Grant, Denial> {
        let op = req.operation;
        // Every name from the request is checked before any comparison.
        if !valid_account_name(&caller.user) {
            return Err(deny(format!(
                "user name {} is not a name {} accepts (1-{MAX_ACCOUNT_NAME} bytes of \
                 A-Z a-z 0-9 _ . -, not starting with '-')",
                shown_len(&caller.user),
                self.origin
            )));
        }
        // Group names that are not valid can match no rule; they are ignored.
        let groups: Vec<&str> = caller
            .groups
            .iter()
            .map(String::as_str)
            .filter(|g| valid_account_name(g))
            .collect();
        if let Some(bridge) = req.bridge {
            if op != Operation::CreateTap {
                return Err(deny(format!(
                    "a bridge can only be given with create-tap, not {op}"
                )));
            }
            if !valid_bridge_name(bridge) {
                return Err(deny(format!(
                    "bridge name {} is not valid (1-{MAX_IFNAME} bytes of A-Z a-z 0-9 _ . -, \
                     not '.' or '..')",
                    shown_len(bridge)
                )));
            }
        }
        if let Some(machine) = req.machine {
            if !valid_machine_name(machine) {
                return Err(deny(format!(
                    "machine name {} is not valid (1-{MAX_MACHINE_NAME} bytes of A-Z a-z 0-9 _ . -, \
                     not starting with '-' or '.')",
                    shown_len(machine)
                )));
            }
        }
        let is_caller = |who: &Who| {
            who.users.contains(&caller.user)
                || who.groups.iter().any(|g| groups.contains(&g.as_str()))
        };
        if let Some(why) = groups_unresolved {
            // Never fail open: a rule by group cannot be decided without all the groups.
            let deny_lines = self.deny.iter().filter(|rule| {
                !rule.who.groups.is_empty()
                    && (rule.operations.is_empty() || rule.operations.contains(&op))
                    && match (&rule.bridges, req.bridge) {
                        (None, _) => true,
                        (Some(list), Some(bridge)) => list.iter().any(|b| b == bridge),
                        (Some(_), None) => false,
                    }
            });
            let allow_lines = self
                .allow
                .iter()
                .filter(|rule| !rule.who.groups.is_empty() && rule.operations.contains(&op));
            let lines: Vec<String> = deny_lines
                .map(|rule| format!("{}:{} [[deny]]", self.origin, rule.line))
                .chain(allow_lines.map(|rule| format!("{}:{} [[allow]]", self.origin, rule.line)))
                .collect();
            if let Some(first) = lines.first() {
                return Err(deny(format!(
                    "your groups could not be resolved completely ({why}), and {first} names \
                     groups, so it denies; ask an administrator to fix group resolution or to \
                     name you in users = [...]"
                )));
            }
        }

        for rule in &self.deny {
            let op_matches = rule.operations.is_empty() || rule.operations.contains(&op);
            let bridge_matches = match (&rule.bridges, req.bridge) {
                (None, _) => true,
                (Some(list), Some(bridge)) => list.iter().any(|b| b == bridge),
                (Some(_), None) => false,
            };
            if op_matches && bridge_matches && is_caller(&rule.who) {
                return Err(deny(format!(
                    "denied by {}:{} [[deny]]",
                    self.origin, rule.line
                )));
            }
        }

        // The reason the first rule that matched caller and operation did not match.
        let mut near_miss: Option<String> = None;
        for rule in &self.allow {
            if !rule.operations.contains(&op) || !is_caller(&rule.who) {
                continue;
            }
            let at = format!("{}:{}", self.origin, rule.line);
            if let Some(bridge) = req.bridge {
                if !rule.bridges.iter().any(|b| b == bridge) {
                    near_miss
                        .get_or_insert(format!("bridge '{bridge}' is not in the bridges of {at}"));
                    continue;
                }
            }
            if let Some(prefix) = &rule.machine_prefix {
                match req.machine {
                    Some(m) if m.starts_with(prefix.as_str()) => {}
                    Some(m) => {
                        near_miss.get_or_insert(format!(
                            "machine name '{m}' does not start with '{prefix}' as {at} requires"
                        ));
                        continue;
                    }
                    None => {
                        near_miss.get_or_insert(format!(
                            "{at} requires a machine name starting with '{prefix}', and none was given"
                        ));
                        continue;
                    }
                }
            }
            return Ok(Grant {
                max_taps: rule.max_taps,
                vsock_cids: rule.vsock_cids,
                polkit: rule.polkit,
                rule: format!("{at} [[allow]]"),
            });
        }
        Err(deny(near_miss.unwrap_or_else(|| {
            let shown_groups: Vec<String> = caller
                .groups
                .iter()
                .map(|g| if valid_account_name(g) { g.clone() } else { shown(g) })
                .collect();
            format!(
                "user '{}' (groups: {}) has no [[allow]] rule for {op} in {}; an administrator can add one",
                caller.user,
                shown_groups.join(", "),
                self.origin
            )
        })))
    }
}

fn load_with_owner(path: &Path, owner: u32) -> Result<Policy, PolicyError> {
    let unsafe_file = |problem| PolicyError::Unsafe {
        path: path.to_path_buf(),
        problem,
    };
    let read_error = |error| PolicyError::Read {
        path: path.to_path_buf(),
        error,
    };
    let before = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(PolicyError::Missing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(read_error(e)),
    };
    if before.file_type().is_symlink() {
        return Err(unsafe_file(UnsafeFile::Symlink));
    }
    check_metadata(&before, owner).map_err(unsafe_file)?;
    let mut file = fs::File::open(path).map_err(read_error)?;
    // Check the opened file again and make sure it is the one checked above.
    let opened = file.metadata().map_err(read_error)?;
    if opened.dev() != before.dev() || opened.ino() != before.ino() {
        return Err(unsafe_file(UnsafeFile::Replaced));
    }
    check_metadata(&opened, owner).map_err(unsafe_file)?;
    let mut bytes = Vec::new();
    file.by_ref()
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(unsafe_file(UnsafeFile::TooLarge {
            size: bytes.len() as u64,
        }));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        read_error(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not UTF-8 (at byte {})", e.utf8_error().valid_up_to()),
        ))
    })?;
    Policy::parse(&text, &path.display().to_string())
}

fn check_metadata(meta: &fs::Metadata, owner: u32) -> Result<(), UnsafeFile> {
    if !meta.file_type().is_file() {
        return Err(UnsafeFile::NotRegularFile);
    }
    if meta.uid() != owner {
        return Err(UnsafeFile::NotOwnedBy {
            expected: owner,
            owner: meta.uid(),
        });
    }
    if meta.mode() & 0o002 != 0 {
        return Err(UnsafeFile::WorldWritable);
    }
    if meta.mode() & 0o020 != 0 {
        return Err(UnsafeFile::GroupWritable);
    }
    if meta.size() > MAX_FILE_SIZE {
        return Err(UnsafeFile::TooLarge { size: meta.size() });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Checking rules.

fn in_range(
    src: &Source,
    value: &Spanned<u32>,
    key: &str,
    (lo, hi): (u32, u32),
) -> Result<u32, PolicyError> {
    let v = *value.get_ref();
    if v < lo || v > hi {
        return Err(src.error(
            value.span(),
            format!("{key} = {v} is out of range; use {lo} to {hi}"),
        ));
    }
    Ok(v)
}

fn names(
    src: &Source,
    list: &Names,
    key: &str,
    valid: fn(&str) -> bool,
    rule: &str,
) -> Result<Vec<String>, PolicyError> {
    let mut out: Vec<String> = Vec::new();
    for name in list.iter().flat_map(|l| l.get_ref()) {
        let n = name.get_ref();
        if !valid(n) {
            return Err(src.error(
                name.span(),
                format!("{key}: {} is not a valid name; {rule}", shown_len(n)),
            ));
        }
        if out.contains(n) {
            return Err(src.error(name.span(), format!("{key}: '{n}' is listed twice")));
        }
        out.push(n.clone());
    }
    Ok(out)
}

const ACCOUNT_RULE: &str = "use 1-32 bytes of A-Z a-z 0-9 _ . - not starting with '-'";
const BRIDGE_RULE: &str = "use 1-15 bytes of A-Z a-z 0-9 _ . - (not '.' or '..')";

fn who(
    src: &Source,
    users: &Names,
    groups: &Names,
    header: Range<usize>,
    kind: &str,
) -> Result<Who, PolicyError> {
    let who = Who {
        users: names(src, users, "users", valid_account_name, ACCOUNT_RULE)?,
        groups: names(src, groups, "groups", valid_account_name, ACCOUNT_RULE)?,
    };
    if who.users.is_empty() && who.groups.is_empty() {
        return Err(src.error(
            header,
            format!("this {kind} rule names nobody; add users = [...] or groups = [...]"),
        ));
    }
    Ok(who)
}

fn operations(src: &Source, list: &Names) -> Result<Vec<Operation>, PolicyError> {
    let mut out = Vec::new();
    if let Some(list) = list {
        if list.get_ref().is_empty() {
            return Err(src.error(
                list.span(),
                "operations is empty; list at least one of create-tap, open-kvm, \
                 open-vhost-vsock, register-machine",
            ));
        }
        for name in list.get_ref() {
            let Some(op) = Operation::from_name(name.get_ref()) else {
                return Err(src.error(
                    name.span(),
                    format!(
                        "unknown operation {}; use create-tap, open-kvm, open-vhost-vsock or register-machine",
                        shown(name.get_ref())
                    ),
                ));
            };
            if out.contains(&op) {
                return Err(src.error(name.span(), format!("operations: '{op}' is listed twice")));
            }
            out.push(op);
        }
    }
    Ok(out)
}

fn allow_rule(
    src: &Source,
    rule: &Spanned<RawAllow>,
    per_user: u32,
) -> Result<AllowRule, PolicyError> {
    let header = rule.span();
    let raw = rule.get_ref();
    let who = who(src, &raw.users, &raw.groups, header.clone(), "[[allow]]")?;
    let operations = operations(src, &raw.operations)?;
    if operations.is_empty() {
        return Err(src.error(
            header,
            "this [[allow]] rule has no operations; add operations = [\"create-tap\", ...]",
        ));
    }
    let grants = |op| operations.contains(&op);
    let needs = |span: Range<usize>, key: &str, op: Operation| {
        src.error(
            span,
            format!("{key} is set but operations does not include {op}; add it or remove {key}"),
        )
    };

    let bridges = names(src, &raw.bridges, "bridges", valid_bridge_name, BRIDGE_RULE)?;
    if let Some(b) = &raw.bridges {
        if !grants(Operation::CreateTap) && !b.get_ref().is_empty() {
            return Err(needs(b.span(), "bridges", Operation::CreateTap));
        }
    }
    let max_taps = match &raw.max_taps {
        None => per_user,
        Some(v) => {
            if !grants(Operation::CreateTap) {
                return Err(needs(v.span(), "max-taps", Operation::CreateTap));
            }
            in_range(src, v, "max-taps", (1, per_user)).map_err(|_| {
                src.error(
                    v.span(),
                    format!(
                        "max-taps = {} is out of range; use 1 to {per_user} (max-taps-per-user)",
                        v.get_ref()
                    ),
                )
            })?
        }
    };
    let vsock_cids = match &raw.vsock_cids {
        None if grants(Operation::OpenVhostVsock) => {
            return Err(src.error(
                header,
                "this [[allow]] rule allows open-vhost-vsock but has no vsock-cids; \
                 add e.g. vsock-cids = \"10000-19999\"",
            ));
        }
        None => None,
        Some(v) => {
            if !grants(Operation::OpenVhostVsock) {
                return Err(needs(v.span(), "vsock-cids", Operation::OpenVhostVsock));
            }
            Some(cid_range(v.get_ref()).ok_or_else(|| {
                src.error(
                    v.span(),
                    format!(
                        "vsock-cids = {} is not a CID range; write \"FIRST-LAST\" with \
                         {} <= FIRST <= LAST <= {}",
                        shown(v.get_ref()),
                        CID_RANGE.0,
                        CID_RANGE.1
                    ),
                )
            })?)
        }
    };
    let machine_prefix = match &raw.machine_prefix {
        None => None,
        Some(p) if valid_machine_name(p.get_ref()) => Some(p.get_ref().clone()),
        Some(p) => {
            return Err(src.error(
                p.span(),
                format!(
                    "machine-prefix = {} is not valid; use 1-{MAX_MACHINE_NAME} bytes of \
                     A-Z a-z 0-9 _ . - not starting with '-' or '.'",
                    shown_len(p.get_ref())
                ),
            ));
        }
    };
    let polkit = match raw
        .polkit
        .as_ref()
        .map(|p| (p.get_ref().as_str(), p.span()))
    {
        None | Some(("yes", _)) => true,
        Some(("no", _)) => false,
        Some((other, span)) => {
            return Err(src.error(
                span,
                format!(
                    "polkit = {} is not valid; use \"yes\" or \"no\"",
                    shown(other)
                ),
            ));
        }
    };
    Ok(AllowRule {
        line: src.line(header.start),
        who,
        operations,
        bridges,
        max_taps,
        vsock_cids,
        machine_prefix,
        polkit,
    })
}

fn deny_rule(src: &Source, rule: &Spanned<RawDeny>) -> Result<DenyRule, PolicyError> {
    let header = rule.span();
    let raw = rule.get_ref();
    let who = who(src, &raw.users, &raw.groups, header.clone(), "[[deny]]")?;
    let operations = operations(src, &raw.operations)?;
    let bridges = match &raw.bridges {
        None => None,
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(src.error(
                    list.span(),
                    "bridges is empty, so this [[deny]] rule would deny nothing; \
                     list bridges or remove the key to deny all",
                ));
            }
            if !operations.is_empty() && !operations.contains(&Operation::CreateTap) {
                return Err(src.error(
                    list.span(),
                    "bridges is set but operations does not include create-tap; add it or remove bridges",
                ));
            }
            Some(names(
                src,
                &raw.bridges,
                "bridges",
                valid_bridge_name,
                BRIDGE_RULE,
            )?)
        }
    };
    Ok(DenyRule {
        line: src.line(header.start),
        who,
        operations,
        bridges,
    })
}

// ---------------------------------------------------------------------------
// Names. Each check bounds the length first.

fn name_chars(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_account_name(name: &str) -> bool {
    (1..=MAX_ACCOUNT_NAME).contains(&name.len()) && !name.starts_with('-') && name_chars(name)
}

fn valid_bridge_name(name: &str) -> bool {
    (1..=MAX_IFNAME).contains(&name.len()) && name != "." && name != ".." && name_chars(name)
}

fn valid_machine_name(name: &str) -> bool {
    (1..=MAX_MACHINE_NAME).contains(&name.len())
        && !name.starts_with('-')
        && !name.starts_with('.')
        && name_chars(name)
}

/// Parses "FIRST-LAST" (decimal digits only) into an inclusive, ordered range of usable CIDs.
fn cid_range(text: &str) -> Option<(u32, u32)> {
    let (a, b) = text.split_once('-')?;
    let num = |s: &str| -> Option<u32> {
        if s.is_empty() || s.len() > 10 || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (a, b) = (num(a)?, num(b)?);
    (CID_RANGE.0 <= a && a <= b && b <= CID_RANGE.1).then_some((a, b))
}

/// A name from a file or request, quoted and made safe to print: control
/// characters escaped, long names cut.
fn shown(name: &str) -> String {
    const SHOW: usize = 40;
    let text: String = name
        .chars()
        .take(SHOW)
        .flat_map(char::escape_debug)
        .collect();
    if name.chars().count() > SHOW {
        format!("'{text}...'")
    } else {
        format!("'{text}'")
    }
}

/// Like [`shown`], with the length in bytes (for names refused for their length).
fn shown_len(name: &str) -> String {
    format!("{} ({} bytes)", shown(name), name.len())
}

#[cfg(test)]
mod tests;
