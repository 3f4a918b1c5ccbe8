//! Building blocks for vmspawn's seccomp filters: argument conditions, and compiling a list of
//! `(name, number, argument rules)` entries into a BPF program. The lists themselves stay with
//! the launcher and the helper, which know what they need.
//!
//! The conditions are built from constants, so the `expect`s below cannot fire on input.

use std::collections::BTreeMap;

pub use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompRule,
};

/// An allow- or deny-list entry: the call's name (for messages), its number, and the argument
/// rules any of which must match (none: any arguments).
pub type Entry = (&'static str, i64, Vec<SeccompRule>);

#[cfg(target_arch = "x86_64")]
pub const ARCH: seccompiler::TargetArch = seccompiler::TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
pub const ARCH: seccompiler::TargetArch = seccompiler::TargetArch::aarch64;

/// Argument `arg` (64 bits) compared with `value` by `op`.
pub fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).expect("valid seccomp condition")
}

/// Argument `arg` (its low 32 bits, e.g. an int or flags) compared with `value` by `op`.
pub fn cond32(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).expect("valid seccomp condition")
}

/// A rule that matches when all `conditions` hold.
pub fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conditions).expect("valid seccomp rule")
}

/// Rules that match when argument `arg` is one of `values`.
pub fn one_of(arg: u8, values: &[u64]) -> Vec<SeccompRule> {
    values
        .iter()
        .map(|&v| rule(vec![cond(arg, SeccompCmpOp::Eq, v)]))
        .collect()
}

/// For mmap and mprotect: no PROT_EXEC in argument 2, so no new executable memory.
pub fn no_exec_prot() -> Vec<SeccompRule> {
    vec![rule(vec![cond(
        2,
        SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
        0,
    )])]
}

/// Compiles `entries` (several entries for one call add up): `matched` for the calls they
/// list (with matching arguments), `mismatch` for everything else.
pub fn compile(
    entries: Vec<Entry>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr, arg_rules) in entries {
        rules.entry(nr).or_default().extend(arg_rules);
    }
    seccompiler::SeccompFilter::new(rules, mismatch, matched, ARCH).and_then(BpfProgram::try_from)
}

/// An allow-list: the calls in `entries` are allowed, anything else kills the process.
pub fn allow_list(entries: Vec<Entry>) -> Result<BpfProgram, BackendError> {
    compile(entries, SeccompAction::KillProcess, SeccompAction::Allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_for_one_call_add_up() {
        let split = allow_list(vec![
            ("kill", libc::SYS_kill, one_of(1, &[9])),
            ("kill", libc::SYS_kill, one_of(1, &[15])),
            ("mmap", libc::SYS_mmap, no_exec_prot()),
            ("read", libc::SYS_read, Vec::new()),
        ])
        .unwrap();
        // Two entries for kill compile to exactly what one entry with both rules does...
        let merged = allow_list(vec![
            ("kill", libc::SYS_kill, one_of(1, &[9, 15])),
            ("mmap", libc::SYS_mmap, no_exec_prot()),
            ("read", libc::SYS_read, Vec::new()),
        ])
        .unwrap();
        assert_eq!(split, merged);
        // ... and the second entry is not lost: without it the program differs.
        let first_only = allow_list(vec![
            ("kill", libc::SYS_kill, one_of(1, &[9])),
            ("mmap", libc::SYS_mmap, no_exec_prot()),
            ("read", libc::SYS_read, Vec::new()),
        ])
        .unwrap();
        assert_ne!(split, first_only);
    }
}
