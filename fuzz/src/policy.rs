//! Target `policy`: arbitrary bytes as the administrator's policy file.
//!
//! `Policy::parse` (TOML, then every check of the policy crate) must never panic; neither may
//! formatting its error. A policy that parses is asked a fixed set of questions (callers
//! valid and not, every operation, machine and bridge names valid and not), and its answers
//! must keep the promises the policy crate documents.

use vmspawn_policy::{Caller, Operation, Policy, Request};

const ORIGIN: &str = "/etc/vmspawn/policy.toml";

const OPERATIONS: [Operation; 4] = [
    Operation::CreateTap,
    Operation::OpenKvm,
    Operation::OpenVhostVsock,
    Operation::RegisterMachine,
];

/// Names that appear in the seed policies, and some that no policy may accept.
const USERS: [(&str, &[&str]); 5] = [
    ("alice", &["alice", "vmusers"]),
    ("bob", &["bob", "vmusers", "contractors"]),
    ("mallory", &["vmusers"]),
    ("root", &["root", "-bad", "g\u{0}x"]),
    ("-alice", &["vmusers"]),
];
const MACHINES: [Option<&str>; 3] = [None, Some("alice-vm"), Some("-vm")];
const BRIDGES: [Option<&str>; 3] = [None, Some("br0"), Some("br-admin")];

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let policy = match Policy::parse(&text, ORIGIN) {
        Ok(policy) => policy,
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with(ORIGIN),
                "error without origin: {message}"
            );
            return;
        }
    };
    let (per_user, total) = (policy.max_taps_per_user(), policy.max_taps_total());
    assert!(
        (1..=256).contains(&per_user),
        "max-taps-per-user {per_user}"
    );
    assert!((1..=4096).contains(&total), "max-taps-total {total}");
    assert!(
        per_user <= total,
        "max-taps-per-user {per_user} > total {total}"
    );
    for (user, groups) in USERS {
        let caller = Caller {
            uid: 1000,
            user: user.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        for operation in OPERATIONS {
            for machine in MACHINES {
                for bridge in BRIDGES {
                    let request = Request {
                        operation,
                        machine,
                        bridge,
                    };
                    match policy.check(&caller, &request) {
                        Ok(grant) => {
                            assert!(user != "-alice", "granted to an invalid user name");
                            assert!(machine != Some("-vm"), "granted for an invalid machine");
                            assert!(
                                bridge.is_none() || operation == Operation::CreateTap,
                                "granted a bridge for {operation}"
                            );
                            assert!((1..=per_user).contains(&grant.max_taps), "{grant:?}");
                            if operation == Operation::OpenVhostVsock {
                                assert!(grant.vsock_cids.is_some(), "{grant:?}");
                            }
                            if let Some((first, last)) = grant.vsock_cids {
                                assert!(3 <= first && first <= last && last < u32::MAX);
                            }
                            assert!(grant.rule.starts_with(ORIGIN), "{grant:?}");
                        }
                        Err(denial) => {
                            let _ = denial.to_string();
                        }
                    }
                }
            }
        }
    }
}
