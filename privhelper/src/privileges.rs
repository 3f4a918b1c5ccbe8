//! Capabilities and identity. The helper keeps only CAP_NET_ADMIN, and only in its permitted
//! set; it raises it into the effective set just for the TAP step and drops it right after.

use std::collections::HashSet;

use caps::{CapSet, Capability};

fn fail(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Bounding, inheritable and ambient sets: nothing but CAP_NET_ADMIN can ever come back.
/// Needs CAP_SETPCAP, so it runs first, while the helper still has all capabilities.
pub fn limit_bounding_set() -> Result<(), String> {
    for cap in caps::all() {
        if cap != Capability::CAP_NET_ADMIN
            && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false)
        {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| fail("failed to limit the bounding set", e))?;
        }
    }
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| fail("failed to clear inheritable capabilities", e))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| fail("failed to clear ambient capabilities", e))
}

/// Effective: none. Permitted: CAP_NET_ADMIN, if the helper was given it at all (a container
/// may withhold it: then the helper serves everything but TAP devices).
fn keep_only_net_admin() -> Result<(), String> {
    caps::clear(None, CapSet::Effective)
        .map_err(|e| fail("failed to clear effective capabilities", e))?;
    let mut keep: HashSet<Capability> = HashSet::new();
    if caps::has_cap(None, CapSet::Permitted, Capability::CAP_NET_ADMIN).unwrap_or(false) {
        keep.insert(Capability::CAP_NET_ADMIN);
    }
    caps::set(None, CapSet::Permitted, &keep)
        .map_err(|e| fail("failed to reduce permitted capabilities", e))
}

/// Service mode: the helper runs as root under the service manager. It stays uid 0 (so it
/// owns the device nodes it opens) but without any effective capability.
pub fn drop_for_service() -> Result<(), String> {
    limit_bounding_set()?;
    keep_only_net_admin()
}

/// Setuid mode: become the calling user (real uid/gid), with the `kvm` group added so
/// /dev/kvm opens by group permission, keeping only CAP_NET_ADMIN as permitted.
pub fn drop_for_setuid(real_uid: u32, real_gid: u32) -> Result<(), String> {
    use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
    limit_bounding_set()?;
    caps::securebits::set_keepcaps(true)
        .map_err(|e| fail("failed to keep capabilities across setuid", e))?;
    let mut groups = vec![Gid::from_raw(real_gid)];
    if let Ok(Some(kvm)) = nix::unistd::Group::from_name("kvm") {
        groups.push(kvm.gid);
    }
    setgroups(&groups).map_err(|e| fail("failed to set supplementary groups", e))?;
    let gid = Gid::from_raw(real_gid);
    setresgid(gid, gid, gid).map_err(|e| fail("failed to switch to the caller's group", e))?;
    let uid = Uid::from_raw(real_uid);
    setresuid(uid, uid, uid).map_err(|e| fail("failed to switch to the caller's user", e))?;
    keep_only_net_admin()?;
    caps::securebits::set_keepcaps(false).map_err(|e| fail("failed to reset keep-capabilities", e))
}

/// Runs `step` with CAP_NET_ADMIN effective; it is dropped again whatever the outcome.
pub fn with_net_admin<T>(step: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    caps::raise(None, CapSet::Effective, Capability::CAP_NET_ADMIN).map_err(|e| {
        fail(
            "failed to raise CAP_NET_ADMIN (is the helper installed with it?)",
            e,
        )
    })?;
    let result = step();
    let dropped = caps::drop(None, CapSet::Effective, Capability::CAP_NET_ADMIN);
    if let Err(e) = dropped {
        // Never go on with a capability we could not drop.
        eprintln!(
            "vmspawn-privhelper: {}",
            fail("failed to drop CAP_NET_ADMIN", e)
        );
        std::process::abort();
    }
    result
}
