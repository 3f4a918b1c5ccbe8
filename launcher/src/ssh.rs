//! SSH into the guest (`--pass-ssh-key=`, `--ssh-key-type=`), as systemd-vmspawn 259 sets it
//! up: an ephemeral key pair made by ssh-keygen in the runtime directory, its public key passed
//! as the `ssh.ephemeral-authorized_keys-all` credential, and a drop-in for the guest's
//! `sshd-vsock@.service` that accepts it. The guest's systemd-ssh-generator binds sshd to
//! vsock port 22. Hosts reach it with `ssh root@vsock/<cid>` (kernel vhost-vsock, through
//! systemd-ssh-proxy) or over vhost-user vsock with `vmspawn-vsock-proxy`. Pure planning; the
//! key files go with the runtime directory.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::config::{Config, Credential};
use crate::error::{Error, Result};
use crate::plan::{HostFacts, StateDir, USER_DATABASE, program_rules};
use crate::process::{EnvPlan, Jail, Lifetime, ProcessPlan, Role, StdioPlan};
use crate::sandbox::SeccompTable;

/// The credential that carries the public key.
pub const AUTHORIZED_KEYS_CREDENTIAL: &str = "ssh.ephemeral-authorized_keys-all";
/// 259's drop-in for distributions that ship their own sshd@.service.
const SSHD_VSOCK_DROPIN: &str = "[Service]\n\
    ExecStart=\n\
    ExecStart=-sshd -i -o 'AuthorizedKeysFile=%d/ssh.ephemeral-authorized_keys-all .ssh/authorized_keys'\n\
    ImportCredential=ssh.ephemeral-authorized_keys-all\n";
const DEFAULT_KEY_TYPE: &str = "ed25519";
/// The vsock port sshd listens on in the guest.
pub const SSH_PORT: u32 = 22;

/// What SSH adds to the plan.
pub struct SshPlan {
    pub state_dir: StateDir,
    /// ssh-keygen, a setup step.
    pub keygen: ProcessPlan,
    pub private_key: PathBuf,
    pub public_key: PathBuf,
    /// The sshd-vsock@.service drop-in (the key's credential is made from `public_key` once
    /// ssh-keygen has run).
    pub dropin: Credential,
}

/// The SSH part of the plan, or None when the VM gets no key. `has_vsock`: the VM has a vsock
/// device; by default a key is made only then, since only sshd on vsock accepts it.
pub fn plan(
    config: &Config,
    host: &HostFacts,
    machine: &str,
    has_vsock: bool,
    notes: &mut Vec<String>,
) -> Result<Option<SshPlan>> {
    let explicit = config.pass_ssh_key == Some(true);
    match config.pass_ssh_key {
        Some(false) => return Ok(None),
        None if !has_vsock => return Ok(None),
        _ => {}
    }
    let Some(keygen) = &host.ssh_keygen else {
        if explicit {
            return Err(Error::new(
                "--pass-ssh-key=yes: Failed to find ssh-keygen: there is no ssh-keygen in $PATH. Install it \
                 (on Debian: apt install openssh-client), or use --pass-ssh-key=no.",
            ));
        }
        notes.push("No SSH key: ssh-keygen is not installed (openssh-client).".into());
        return Ok(None);
    };
    let key_type = config.ssh_key_type.as_deref().unwrap_or(DEFAULT_KEY_TYPE);
    let dir = host.runtime_dir.join("ssh");
    let private_key = dir.join(format!("{machine}-{key_type}"));
    let mut public_key = private_key.clone().into_os_string();
    public_key.push(".pub");
    let public_key = PathBuf::from(public_key);

    // ssh-keygen looks its user up (for the key's comment) and writes the two key files.
    let mut rules = program_rules(&[keygen], &host.qemu_arch);
    rules.read.extend(USER_DATABASE.map(PathBuf::from));
    rules.write = vec![dir.clone()];
    rules.devices = vec![PathBuf::from("/dev/null")];
    let args: Vec<OsString> = vec![
        "-q".into(),
        "-f".into(),
        private_key.clone().into(),
        "-N".into(),
        "".into(),
        "-t".into(),
        key_type.into(),
        "-C".into(),
        format!("vmspawn@{machine}").into(),
    ];
    let keygen = ProcessPlan {
        role: Role::SshKeygen,
        name: Role::SshKeygen.describe().into(),
        binary: keygen.clone(),
        args,
        env: EnvPlan::default(),
        fds: Vec::new(),
        stdio: StdioPlan::Quiet,
        own_process_group: true,
        death_signal: libc::SIGKILL,
        jail: (!config.unconfined).then_some(Jail {
            landlock: rules,
            seccomp: SeccompTable::SshKeygen,
        }),
        lifetime: Lifetime::Setup {
            fallback_args: None,
        },
    };
    Ok(Some(SshPlan {
        state_dir: StateDir {
            path: dir,
            what: "SSH key directory",
            persistent: false,
        },
        keygen,
        private_key,
        public_key,
        dropin: Credential {
            id: "systemd.unit-dropin.sshd-vsock@.service".into(),
            data: SSHD_VSOCK_DROPIN.as_bytes().to_vec(),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dropin_is_259s() {
        let lines: Vec<&str> = SSHD_VSOCK_DROPIN.lines().collect();
        assert_eq!(
            lines,
            [
                "[Service]",
                "ExecStart=",
                "ExecStart=-sshd -i -o 'AuthorizedKeysFile=%d/ssh.ephemeral-authorized_keys-all .ssh/authorized_keys'",
                "ImportCredential=ssh.ephemeral-authorized_keys-all",
            ]
        );
        assert!(SSHD_VSOCK_DROPIN.ends_with('\n'));
    }
}
