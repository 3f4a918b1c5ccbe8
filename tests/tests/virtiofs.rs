//! Host directories over virtio-fs (one virtiofsd sidecar per share): a debootstrapped tree
//! boots with `-D` (kernel from `--linux=`, or from the tree's boot loader entry), `--bind`
//! shares are shared both ways, `--bind-ro` shares stay read-only even after the guest
//! remounts them read-write, `--private-users` maps the guest's IDs onto the caller's,
//! `--bind-user` brings the user's records and home into the guest, every virtiofsd runs
//! confined (an escape probe in its place is blocked everywhere; the real one runs under
//! seccomp with no_new_privs in every thread), a normal power-off, a crashing virtiofsd and a
//! killed vmspawn leave nothing behind, and bad input gives clear errors.
//!
//! Most boots use the busybox initrd, which mounts the root share at /newroot and stays in the
//! initrd when the command line has `test.mode=` (see tests/images/README.md); only the tests
//! where systemd matters boot the forky tree (systemd 262) through the initrd's switch_root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use vmspawn_tests::*;

const BOOT: Duration = Duration::from_secs(150);
const SYSTEMD_BOOT: Duration = Duration::from_secs(420);
/// The guest IDs vmspawn gives the first `--bind-user=` user (systemd's MAP_UID_MIN).
const BOUND_ID: u32 = 60514;
const PARTUUID: &str = "99999999-3333-4333-8444-555555555555";

/// A token the guest cannot know from an earlier run: 24 hex digits from /dev/urandom.
fn random_token() -> String {
    let mut bytes = [0u8; 12];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut bytes,
    )
    .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A root tree for busybox boots that stay in the initrd: just a file `five` ("5").
fn small_tree(work: &Workdir) -> PathBuf {
    let tree = work.file("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("five"), "5\n").unwrap();
    work.chown_all();
    tree
}

/// The busybox initrd booting `-D tree` (console read-only, no TPM), with `options` and the
/// initrd's modes `modes` (the root share is at /newroot, `mount-extra` mounts the others).
fn busybox_tree(work: &Workdir, options: &[&str], modes: &str) -> Command {
    let mut cmd = work.vmspawn();
    cmd.args(busybox_boot(false))
        .args(["--tpm=no", "--console=read-only", "-D", "tree"])
        .args(options)
        .arg(format!("test.mode={modes}"));
    cmd
}

/// Writes `contents` to `path` inside a tree, creating its parents (mode 0755 files for
/// `executable`).
fn put(path: &Path, contents: &str, executable: bool) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Nothing of vmspawn's is left after it exited: no files in $TMPDIR (its runtime directory
/// with the virtiofsd sockets; for root also in its runtime directory base), and no process
/// (QEMU, a virtiofsd, vmspawn's cleanup process, which may take a moment) with a path of the
/// work directory in its arguments, nor a virtiofsd serving one of `shares` outside it.
fn assert_nothing_left(work: &Workdir, shares: &[&Path]) {
    work.assert_no_leftovers();
    let run = work.file("run/systemd");
    if work.user == User::Root && run.exists() {
        let left: Vec<_> = std::fs::read_dir(&run).unwrap().flatten().collect();
        assert!(left.is_empty(), "runtime directory left behind: {left:?}");
    }
    let running = || {
        let mut all = processes_mentioning(&work.path.join(""));
        // Outside the work directory (a user's home) other processes of the machine may
        // mention the path: only a virtiofsd serving it counts.
        for share in shares {
            all.extend(
                processes_mentioning(share)
                    .into_iter()
                    .filter(|(_, name)| name.starts_with(VIRTIOFSD_COMM)),
            );
        }
        all
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = running();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = running();
    }
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// Waits until `pids` are gone, $TMPDIR is empty and no process mentions the work directory
/// (after a kill -9 of vmspawn, the cleanup is asynchronous: death signals, the cleanup
/// process).
fn wait_nothing_left(work: &Workdir, pids: &[u32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let gone = pids
            .iter()
            .all(|&pid| wait_process_exit(pid, Duration::ZERO));
        let tmp: Vec<_> = std::fs::read_dir(work.tmp())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        let running = processes_mentioning(&work.path.join(""));
        if gone && tmp.is_empty() && running.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            let alive: Vec<_> = pids
                .iter()
                .filter(|&&pid| !wait_process_exit(pid, Duration::ZERO))
                .map(|&pid| (pid, comm(pid)))
                .collect();
            panic!(
                "after {timeout:?}: still running {alive:?}, also {running:?}; left in $TMPDIR: {tmp:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn names(pids: &[u32]) -> Vec<(u32, String)> {
    pids.iter().map(|&p| (p, comm(p))).collect()
}

/// The virtiofsd children of `launcher` and the share (`--shared-dir`) each serves.
fn virtiofsds(launcher: u32) -> Vec<(u32, String)> {
    children_named(launcher, VIRTIOFSD_COMM)
        .into_iter()
        .map(|pid| {
            let args = cmdline_of(pid);
            let share = args
                .iter()
                .position(|a| a == "--shared-dir")
                .and_then(|i| args.get(i + 1).cloned())
                .unwrap_or_default();
            (pid, share)
        })
        .collect()
}

/// `line` comes after `anchor` in `lines`.
fn after(lines: &[String], anchor: &str, line: &str) -> bool {
    lines
        .iter()
        .position(|l| l == anchor)
        .is_some_and(|i| lines[i + 1..].iter().any(|l| l == line))
}

/// Every file under `dir` (not following symlinks) that `uid` does not own, at most 10.
fn not_owned_by(dir: &Path, uid: u32) -> Vec<(PathBuf, u32)> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.uid() != uid {
            found.push((path.clone(), meta.uid()));
            if found.len() >= 10 {
                break;
            }
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap().flatten() {
                todo.push(entry.path());
            }
        }
    }
    found
}

// --- Booting a tree with -D --------------------------------------------------------------

/// The lines of a systemd tree boot through the busybox initrd's switch_root that reached the
/// check unit (vmtest-check.service), which printed the credential `vmtest`.
fn check_systemd_boot(out: &Finished, token: &str) {
    out.assert_success();
    let lines = out.vmtest();
    assert!(
        lines.contains(&"virtiofs-root root".to_string()),
        "the initrd did not mount the root share: {lines:?}\nstderr:\n{}",
        out.stderr
    );
    assert!(
        lines.contains(&format!("cred vmtest={token}")),
        "the check unit did not run or had no credential: {lines:?}\nstdout:\n{}",
        out.stdout
    );
    assert!(lines.contains(&"done".to_string()), "{lines:?}");
    assert!(
        lines.contains(&"failed-units=0".to_string()),
        "units failed in the guest: {lines:?}\nstdout:\n{}",
        out.stdout
    );
}

#[test]
fn directory_tree_boots_with_the_kernel_of_its_boot_loader_entry() {
    let work = Workdir::new("fs-bls", User::Tester);
    let tree = systemd_tree(&work, "tree");
    // The tree's boot/ is its XBOOTLDR partition: a Type #1 entry with the kernel and two
    // initrds (the second one shows that the entry's initrds are all loaded, in order).
    for (artifact, name) in [
        ("vmlinuz", "vmlinuz"),
        ("initrd-busybox.cpio.gz", "initrd-busybox.cpio.gz"),
        ("initrd-extra.cpio", "initrd-extra.cpio"),
    ] {
        std::fs::copy(image(artifact), tree.join("boot").join(name)).unwrap();
    }
    put(
        &tree.join("boot/loader/entries/vmtest.conf"),
        "title vmtest\nlinux /vmlinuz\ninitrd /initrd-busybox.cpio.gz\ninitrd /initrd-extra.cpio\n",
        false,
    );
    work.chown_all();
    let (uid, _) = tester_ids();
    let token = random_token();
    let mut cmd = work.vmspawn();
    // Straight to the check unit (and what it needs), to keep the TCG boot short.
    cmd.args(tcg())
        .args(["--tpm=no", "--console=read-only", "-D", "tree"])
        .arg(format!("--private-users={uid}"))
        .arg(format!("--set-credential=vmtest:{token}"))
        .arg("systemd.unit=vmtest-check.service");
    let out = run(cmd, SYSTEMD_BOOT);
    check_systemd_boot(&out, &token);
    assert!(
        out.has("extra-initrd=extra-initrd-ok"),
        "the entry's second initrd was not loaded: {:?}",
        out.vmtest()
    );
    assert_nothing_left(&work, &[]);
}

// --- --bind and --bind-ro ----------------------------------------------------------------

#[test]
fn bind_share_is_written_by_the_guest_and_read_by_it() {
    let work = Workdir::new("fs-bind", User::Tester);
    small_tree(&work);
    let share = work.file("share");
    std::fs::create_dir(&share).unwrap();
    let (from_host, from_guest) = (random_token(), random_token());
    std::fs::write(share.join("from-host"), format!("{from_host}\n")).unwrap();
    work.chown_all();
    let (uid, gid) = tester_ids();
    let out = run(
        busybox_tree(
            &work,
            &["--bind=share:/srv/share"],
            &format!(
                "mount-extra,cat=/srv/share/from-host,write=/srv/share/from-guest:{from_guest},\
                 mkdir=/srv/share/made-in-guest,stat=/srv/share/from-host"
            ),
        ),
        BOOT,
    );
    out.assert_success();
    let lines = out.vmtest();
    for line in [
        "mounted mnt0 /srv/share rw".to_string(),
        format!("cat /srv/share/from-host={from_host}"),
        "write-ok /srv/share/from-guest".to_string(),
        "mkdir-ok /srv/share/made-in-guest".to_string(),
        // No ID translation for --bind: the guest sees the host's owner.
        format!("stat /srv/share/from-host uid={uid} gid={gid}"),
    ] {
        assert!(lines.contains(&line), "no '{line}' in {lines:?}");
    }
    assert_eq!(
        std::fs::read_to_string(share.join("from-guest")).unwrap(),
        format!("{from_guest}\n")
    );
    for made in ["from-guest", "made-in-guest"] {
        let meta = std::fs::metadata(share.join(made)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "owner of {made}");
    }
    assert!(share.join("made-in-guest").is_dir());
    assert_nothing_left(&work, &[]);
}

#[test]
fn bind_ro_share_stays_read_only_after_a_guest_remount() {
    let work = Workdir::new("fs-bind-ro", User::Tester);
    small_tree(&work);
    let share = work.file("ro");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("f"), "orig\n").unwrap();
    work.chown_all();
    let writes = "write=/srv/ro/f:changed,write=/srv/ro/new:x,mkdir=/srv/ro/dir";
    let out = run(
        busybox_tree(
            &work,
            &["--bind-ro=ro:/srv/ro"],
            &format!("mount-extra,{writes},remount-rw=/srv/ro,{writes},cat=/srv/ro/f"),
        ),
        BOOT,
    );
    out.assert_success();
    let lines = out.vmtest();
    assert!(
        lines.contains(&"mounted mnt0 /srv/ro ro".to_string()),
        "{lines:?}"
    );
    // The guest kernel lets its root remount the share read-write ...
    assert!(
        lines.contains(&"remount-ok /srv/ro".to_string()),
        "the remount must work for this test to mean anything: {lines:?}"
    );
    // ... but the host (virtiofsd --readonly, under a read-only Landlock rule) refuses the
    // writes, before and after.
    for line in [
        "write-failed /srv/ro/f",
        "write-failed /srv/ro/new",
        "mkdir-failed /srv/ro/dir",
    ] {
        assert!(
            lines.iter().filter(|l| *l == line).count() == 2
                && after(&lines, "remount-ok /srv/ro", line),
            "expected '{line}' before and after the remount: {lines:?}"
        );
    }
    assert!(
        lines.contains(&"cat /srv/ro/f=orig".to_string()),
        "{lines:?}"
    );
    assert_eq!(std::fs::read_to_string(share.join("f")).unwrap(), "orig\n");
    let entries: Vec<_> = std::fs::read_dir(&share)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("f")]);
    assert_nothing_left(&work, &[]);
}

// --- --private-users -----------------------------------------------------------------------

#[test]
fn private_users_maps_the_guest_ids_onto_the_users() {
    let work = Workdir::new("fs-userns", User::Tester);
    let tree = small_tree(&work);
    let (uid, gid) = tester_ids();
    // A regular user's base must be their own uid: vmspawn's virtiofsd runs as the user (no
    // setuid helper, no user namespace, no subordinate IDs), so it can create files only as
    // that uid; a guest root mapped to any other host uid could not create a file it owns.
    // So guest root = the user, guest uid N = host uid+N (files the test as root gives to
    // uid+5 show as 5).
    let five = tree.join("owned-by-five");
    std::fs::write(&five, "x\n").unwrap();
    std::os::unix::fs::chown(&five, Some(uid + 5), Some(gid + 5)).unwrap();
    let out = run(
        busybox_tree(
            &work,
            &[&format!("--private-users={uid}")],
            "stat=/newroot/owned-by-five,stat=/newroot/five,write=/newroot/made-by-root:x,\
             mkdir=/newroot/dir-by-root,stat=/newroot/made-by-root,stat=/newroot/dir-by-root",
        ),
        BOOT,
    );
    out.assert_success();
    let lines = out.vmtest();
    for line in [
        "virtiofs-root root",
        "stat /newroot/owned-by-five uid=5 gid=5",
        "stat /newroot/five uid=0 gid=0",
        "write-ok /newroot/made-by-root",
        "mkdir-ok /newroot/dir-by-root",
        "stat /newroot/made-by-root uid=0 gid=0",
        "stat /newroot/dir-by-root uid=0 gid=0",
    ] {
        assert!(
            lines.contains(&line.to_string()),
            "no '{line}' in {lines:?}"
        );
    }
    for made in ["made-by-root", "dir-by-root"] {
        let meta = std::fs::metadata(tree.join(made)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "host owner of {made}");
    }
    let meta = std::fs::metadata(&five).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid + 5, gid + 5));
    assert_nothing_left(&work, &[]);
}

#[test]
fn private_users_with_another_base_is_refused_for_a_regular_user() {
    let work = Workdir::new("fs-userns-bad", User::Tester);
    small_tree(&work);
    let (uid, _) = tester_ids();
    for base in [100000, uid + 1] {
        let option = format!("--private-users={base}");
        let out = run(busybox_tree(&work, &[&option], ""), BOOT);
        assert_eq!(out.code(), Some(1), "{option}: stderr:\n{}", out.stderr);
        for message in [
            format!("--private-users={base}: run as a regular user (uid {uid})"),
            format!("Use --private-users={uid}[:RANGE]"),
        ] {
            assert!(
                out.stderr.contains(&message),
                "{option}: expected '{message}' in:\n{}",
                out.stderr
            );
        }
        assert!(!out.stdout.contains("VMTEST"), "a VM ran: {}", out.stdout);
        assert_nothing_left(&work, &[]);
    }
}

// --- --bind-user -------------------------------------------------------------------------

/// A file in a user's home for one test, owned by the user; removed on drop.
struct HomeFile(PathBuf);

impl HomeFile {
    fn create(path: PathBuf, contents: &str, uid: u32, gid: u32) -> HomeFile {
        std::fs::write(&path, contents).unwrap();
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        HomeFile(path)
    }
}

impl Drop for HomeFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One systemd boot of a directory root with the kernel from --linux, for the root's ownership
/// and for --bind-user.
#[test]
fn bound_user_records_and_home_reach_a_systemd_guest() {
    let work = Workdir::new("fs-binduser", User::Tester);
    let tree = systemd_tree(&work, "tree");
    let user = nix::unistd::User::from_name(TEST_USER).unwrap().unwrap();
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    let token = random_token();
    let name = format!("vmspawn-it-{}-home-file", std::process::id());
    let home_file = HomeFile::create(user.dir.join(&name), &format!("{token}\n"), uid, gid);
    let guest_home = format!("/run/vmhost/home/{TEST_USER}");
    // The unit prints the records as PID 1 received them, then what the guest's userdb
    // (userdbctl) and NSS (getent, stat) make of them once systemd-userdb-load-credentials
    // has loaded them.
    put(
        &tree.join("usr/local/bin/vmtest-bind-user"),
        &format!(
            r#"#!/bin/sh
for kind in user group; do
    f=/run/credentials/@system/userdb.transient.$kind.{TEST_USER}
    if [ -r "$f" ]; then
        echo "VMTEST: userdb-$kind $(tr -d '\n' <"$f")"
    else
        echo "VMTEST: userdb-$kind MISSING"
    fi
    echo "VMTEST: userdbctl-$kind $(userdbctl --json=short $kind {TEST_USER} 2>&1 | tr -d '\n')"
done
echo "VMTEST: getent-passwd $(getent passwd {TEST_USER} 2>&1)"
echo "VMTEST: getent-group $(getent group {TEST_USER} 2>&1)"
echo "VMTEST: home-mount $(findmnt -n -o SOURCE,FSTYPE {guest_home} | tr -s ' ' ' ')"
echo "VMTEST: home-file $(cat {guest_home}/{name} 2>&1)"
echo "VMTEST: home-owner $(stat -c %u:%g {guest_home}/{name} 2>&1)"
echo "VMTEST: home-owner-name $(stat -c %U:%G {guest_home}/{name} 2>&1)"
"#
        ),
        true,
    );
    put(
        &tree.join("etc/systemd/system/vmtest-bind-user.service"),
        &format!(
            "[Unit]\nDescription=vmspawn test: the bound user\nRequiresMountsFor={guest_home}\n\
             After=systemd-userdb-load-credentials.service\n\n\
             [Service]\nType=oneshot\nExecStart=/usr/local/bin/vmtest-bind-user\n\
             StandardOutput=journal+console\nStandardError=journal+console\n"
        ),
        false,
    );
    put(
        &tree.join("etc/systemd/system/vmtest-check.service.d/bind-user.conf"),
        "[Unit]\nWants=vmtest-bind-user.service\nAfter=vmtest-bind-user.service\n",
        false,
    );
    work.chown_all();
    let credential = random_token();
    let mut cmd = work.vmspawn();
    cmd.args(busybox_boot(false))
        .args(["--tpm=no", "--console=read-only", "-D", "tree"])
        .arg(format!("--private-users={uid}"))
        .arg(format!("--bind-user={TEST_USER}"))
        .args(["--bind-user-shell=yes", "--bind-user-group=vmtestgrp"])
        .arg(format!("--set-credential=vmtest:{credential}"))
        .arg("systemd.unit=vmtest-check.service");
    let out = run(cmd, SYSTEMD_BOOT);
    // A directory root booted with the kernel from --linux (this boot also checks that).
    check_systemd_boot(&out, &credential);
    // systemd wrote to its root (journal, random seed, ...): all of it is the user's.
    assert!(
        tree.join("var/lib/systemd/random-seed").exists(),
        "the guest's systemd did not write to its root"
    );
    let foreign = not_owned_by(&tree, uid);
    assert!(foreign.is_empty(), "files not owned by {uid}: {foreign:?}");
    let lines = out.vmtest();
    let json = |key: &str| -> serde_json::Value {
        let line = field_after(&lines, &format!("{key} "))
            .unwrap_or_else(|| panic!("no {key} line: {lines:?}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{key} is not JSON ({e}): {line}"))
    };
    let shell = user.shell.to_str().unwrap();
    let user_record = json("userdb-user");
    assert_eq!(user_record["userName"], TEST_USER, "{user_record}");
    assert_eq!(user_record["uid"], BOUND_ID, "{user_record}");
    assert_eq!(user_record["gid"], BOUND_ID, "{user_record}");
    assert_eq!(user_record["homeDirectory"], guest_home, "{user_record}");
    assert_eq!(
        user_record["shell"], shell,
        "--bind-user-shell=yes: the host user's shell: {user_record}"
    );
    assert_eq!(
        user_record["memberOf"],
        serde_json::json!(["vmtestgrp"]),
        "{user_record}"
    );
    // A regular user cannot read /etc/shadow: no password hash.
    assert!(
        user_record["privileged"]["hashedPassword"].is_null(),
        "{user_record}"
    );
    let group_record = json("userdb-group");
    assert_eq!(group_record["groupName"], TEST_USER, "{group_record}");
    assert_eq!(group_record["gid"], BOUND_ID, "{group_record}");
    // The guest's userdb has the user and the group, from vmspawn's records (the tree's
    // /etc/passwd and /etc/group do not know them).
    let user_lookup = json("userdbctl-user");
    for (field, value) in [
        ("userName", serde_json::json!(TEST_USER)),
        ("uid", serde_json::json!(BOUND_ID)),
        ("gid", serde_json::json!(BOUND_ID)),
        ("homeDirectory", serde_json::json!(guest_home)),
        ("shell", serde_json::json!(shell)),
        ("service", serde_json::json!("io.systemd.NSpawn")),
    ] {
        assert_eq!(user_lookup[field], value, "userdbctl user: {user_lookup}");
    }
    let group_lookup = json("userdbctl-group");
    for (field, value) in [
        ("groupName", serde_json::json!(TEST_USER)),
        ("gid", serde_json::json!(BOUND_ID)),
        ("service", serde_json::json!("io.systemd.NSpawn")),
    ] {
        assert_eq!(
            group_lookup[field], value,
            "userdbctl group: {group_lookup}"
        );
    }
    // ... and so has NSS, which every other program asks.
    let entry = |key: &str| -> Vec<String> {
        field_after(&lines, &format!("{key} "))
            .unwrap_or_else(|| panic!("no {key} line: {lines:?}"))
            .split(':')
            .map(str::to_string)
            .collect()
    };
    let passwd = entry("getent-passwd");
    assert!(
        passwd.len() == 7
            && passwd[0] == TEST_USER
            && passwd[2] == BOUND_ID.to_string()
            && passwd[3] == BOUND_ID.to_string()
            && passwd[5] == guest_home
            && passwd[6] == shell,
        "getent passwd: {passwd:?}"
    );
    let group = entry("getent-group");
    assert!(
        group.len() == 4 && group[0] == TEST_USER && group[2] == BOUND_ID.to_string(),
        "getent group: {group:?}"
    );
    for line in [
        "home-mount mnt0 virtiofs".to_string(),
        format!("home-file {token}"),
        // The home's owner is the bound user's guest IDs, by number and by name.
        format!("home-owner {BOUND_ID}:{BOUND_ID}"),
        format!("home-owner-name {TEST_USER}:{TEST_USER}"),
    ] {
        assert!(lines.contains(&line), "no '{line}' in {lines:?}");
    }
    assert_eq!(
        std::fs::read_to_string(&home_file.0).unwrap(),
        format!("{token}\n")
    );
    assert_nothing_left(&work, &[&user.dir]);
}

/// The rest of the first line that starts with `prefix`.
fn field_after(lines: &[String], prefix: &str) -> Option<String> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
}

#[test]
fn bind_user_of_root_or_of_another_user_is_refused() {
    let work = Workdir::new("fs-binduser-bad", User::Tester);
    small_tree(&work);
    let others = TempUsers::create("vmsfsu", 1);
    let other = others.names[0].clone();
    let cases = [
        (
            "root".to_string(),
            vec!["Mapping 'root' user not supported".to_string()],
        ),
        (
            other.clone(),
            vec![
                format!("--bind-user={other}: run as a regular user"),
                "vmspawn can bind only your own user".to_string(),
            ],
        ),
        (
            "vmspawn-no-such-user".to_string(),
            vec!["Failed to resolve user 'vmspawn-no-such-user'".to_string()],
        ),
    ];
    for (name, messages) in cases {
        let option = format!("--bind-user={name}");
        let out = run(busybox_tree(&work, &[&option], ""), BOOT);
        assert_eq!(out.code(), Some(1), "{option}: stderr:\n{}", out.stderr);
        for message in &messages {
            assert!(
                out.stderr.contains(message.as_str()),
                "{option}: expected '{message}' in:\n{}",
                out.stderr
            );
        }
        assert!(!out.stdout.contains("VMTEST"), "a VM ran: {}", out.stdout);
        assert_nothing_left(&work, &[]);
    }
}

/// Run by root, a bound user's home still only gets the user's files: whatever ID the guest
/// creates them as (its root here) is the user's on the host (259 passes other IDs through,
/// so the guest's root would own files in the user's home).
#[test]
fn bind_user_run_by_root_creates_only_the_users_files_in_the_home() {
    let work = Workdir::new("fs-binduser-root", User::Root);
    small_tree(&work);
    let (uid, gid) = tester_ids();
    let home = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .unwrap()
        .unwrap()
        .dir;
    let name = format!("vmspawn-rootprobe-{}", random_token());
    let guest = format!("/run/vmhost/home/tester/{name}");
    let out = run(
        busybox_tree(
            &work,
            &["--bind-user=tester"],
            &format!("mount-extra,write={guest}:x,mkdir={guest}.d,stat={guest}"),
        ),
        BOOT,
    );
    let created = [home.join(&name), home.join(format!("{name}.d"))];
    let owners: Vec<(PathBuf, Option<(u32, u32)>)> = created
        .iter()
        .map(|p| {
            use std::os::unix::fs::MetadataExt;
            (
                p.clone(),
                std::fs::metadata(p).ok().map(|m| (m.uid(), m.gid())),
            )
        })
        .collect();
    for path in &created {
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_dir(path);
    }
    out.assert_success();
    let lines = out.vmtest();
    assert!(lines.contains(&format!("write-ok {guest}")), "{lines:?}");
    assert!(
        lines.contains(&format!("stat {guest} uid={BOUND_ID} gid={BOUND_ID}")),
        "{lines:?}"
    );
    for (path, owner) in owners {
        assert_eq!(
            owner,
            Some((uid, gid)),
            "{} (created by the guest's root) must be the bound user's",
            path.display()
        );
    }
    assert_nothing_left(&work, &[]);
}

// --- Confinement -------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Share {
    /// The root directory (`-D tree`), read-write.
    Root,
    /// A `--bind-ro` share of a VM booted from a disk image.
    ReadOnly,
}

/// Runs vmspawn with the escape probe as virtiofsd (first in $PATH) and the real QEMU, with
/// one share; returns the probe's report lines. The probe exits after its report without
/// serving the vhost-user socket, so QEMU (or vmspawn) fails the VM.
fn run_virtiofsd_probe(user: User, share: Share, unconfined: bool) -> Vec<String> {
    let name = format!(
        "fs-probe-{}{}{}",
        if user == User::Root { "root" } else { "user" },
        if share == Share::ReadOnly { "-ro" } else { "" },
        if unconfined { "-unconf" } else { "" }
    );
    let work = Workdir::new(&name, user);
    let bin = work.file("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_escape-probe"), bin.join("virtiofsd")).unwrap();
    let dir = match share {
        Share::Root => work.file("tree"),
        Share::ReadOnly => {
            make_gpt_image(&work.file("guest.raw"), 16, PARTUUID);
            work.file("ro")
        }
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("inside"), "inside\n").unwrap();
    // Next to the share, outside its rules: the canary, and a world-readable file of another
    // user (only the confinement keeps it from a process of the user).
    work.write("canary", b"secret");
    work.chown_all();
    let other = work.file("other-user");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("file"), "other\n").unwrap();
    for path in [&other, &other.join("file")] {
        std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
    }
    std::fs::set_permissions(other.join("file"), std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut cmd = work.vmspawn();
    cmd.env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("VMSPAWN_TEST_MARKER", "must-not-reach-virtiofsd")
        .args(busybox_boot(false))
        .args(["--tpm=no", "--console=read-only"]);
    match share {
        Share::Root => cmd.args(["-D", "tree"]),
        Share::ReadOnly => cmd.args(["-i", "guest.raw", "--bind-ro=ro:/srv/ro"]),
    };
    cmd.arg("test.mode=");
    if unconfined {
        cmd.env("VMSPAWN_UNCONFINED", "1");
    }
    let out = run(cmd, Duration::from_secs(90));
    assert_eq!(
        out.code(),
        Some(1),
        "the VM cannot run without its virtiofsd\nstderr:\n{}",
        out.stderr
    );
    let lines: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| {
            l.trim_end_matches('\r')
                .strip_prefix("PROBE ")
                .map(str::to_string)
        })
        .collect();
    assert!(
        lines.contains(&"end".to_string()),
        "the probe did not run as virtiofsd or did not finish:\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let share_line = format!(
        "share {} {}",
        dir.display(),
        if share == Share::ReadOnly {
            "read-only"
        } else {
            "read-write"
        }
    );
    assert!(lines.contains(&share_line), "{share_line}: {lines:?}");
    assert!(
        !work.file("escaped").exists() || unconfined,
        "a file was written outside the share"
    );
    assert_eq!(std::fs::read(work.file("canary")).unwrap(), b"secret");
    let uid = match user {
        User::Tester => tester_ids().0,
        User::Root => 0,
    };
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("status uid={uid} "))),
        "virtiofsd must run as the calling user: {lines:?}"
    );
    assert_nothing_left(&work, &[]);
    lines
}

/// What the probe tries as virtiofsd; all of it must be blocked.
const VIRTIOFSD_ESCAPES: &[&str] = &[
    "read-canary",
    "write-outside-share",
    "read-other-users-file",
    "read-etc-passwd",
    "read-etc-shadow",
    "read-root-home",
    "read-launcher-environ",
    "exec-shell",
    "unix-socket",
    "inet-socket",
    "socketpair",
    "connect",
    "bind",
    "listen",
    "ptrace-launcher",
    "process-vm-readv",
    "clone-new-user",
    "clone3-new-user",
    "unshare-user-namespace",
    "unshare-mount-namespace",
    "unshare-network-namespace",
];

fn verdict<'a>(lines: &'a [String], attempt: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{attempt} ")))
        .unwrap_or_else(|| panic!("no result for {attempt}: {lines:?}"))
}

fn check_virtiofsd_blocked(lines: &[String], share: Share) {
    for control in ["read-file-in-share", "unshare-fs"] {
        assert_eq!(
            verdict(lines, control),
            "ok",
            "virtiofsd lost a right it needs: {lines:?}"
        );
    }
    let mut escapes = VIRTIOFSD_ESCAPES.to_vec();
    match share {
        Share::Root => assert_eq!(verdict(lines, "create-file-in-share"), "ok", "{lines:?}"),
        Share::ReadOnly => escapes.push("write-in-read-only-share"),
    }
    for escape in escapes {
        let verdict = verdict(lines, escape);
        // Landlock refuses with EACCES (EPERM for ptrace across domains); vmspawn's seccomp
        // deny-list with EPERM (ENOSYS for clone3, so that libc falls back to clone), or
        // kills the thread (SIGSYS).
        assert!(
            ["blocked EACCES", "blocked EPERM", "blocked SIGSYS"].contains(&verdict)
                || (escape == "clone3-new-user" && verdict == "blocked ENOSYS"),
            "{escape}: {verdict}\n{lines:?}"
        );
    }
    assert!(
        lines.contains(&"environment []".to_string()),
        "virtiofsd's environment must be empty: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("status ") && l.ends_with(" no_new_privs=1 seccomp=2")),
        "{lines:?}"
    );
}

#[test]
fn escape_attempts_from_virtiofsds_domain_are_blocked_as_user() {
    let lines = run_virtiofsd_probe(User::Tester, Share::Root, false);
    check_virtiofsd_blocked(&lines, Share::Root);
}

#[test]
fn escape_attempts_from_a_read_only_shares_virtiofsd_are_blocked() {
    let lines = run_virtiofsd_probe(User::Tester, Share::ReadOnly, false);
    check_virtiofsd_blocked(&lines, Share::ReadOnly);
}

#[test]
fn escape_attempts_from_virtiofsds_domain_are_blocked_as_root() {
    // Root passes every file-mode check: what blocks it is the confinement.
    let lines = run_virtiofsd_probe(User::Root, Share::Root, false);
    check_virtiofsd_blocked(&lines, Share::Root);
}

#[test]
fn the_virtiofsd_probe_detects_escapes_when_unconfined() {
    let lines = run_virtiofsd_probe(User::Tester, Share::Root, true);
    for escape in [
        "read-canary",
        "write-outside-share",
        "read-other-users-file",
        "read-etc-passwd",
        "exec-shell",
        "unix-socket",
        "socketpair",
        "unshare-user-namespace",
    ] {
        assert_eq!(verdict(&lines, escape), "ESCAPED", "{lines:?}");
    }
    // The calls themselves went through (and failed on their invalid arguments).
    assert_eq!(verdict(&lines, "connect"), "blocked EBADF", "{lines:?}");
    assert_eq!(verdict(&lines, "create-file-in-share"), "ok", "{lines:?}");
}

// --- The real virtiofsd: confinement and cleanup ------------------------------------------

#[test]
fn every_virtiofsd_runs_confined_and_all_are_gone_after_a_power_off() {
    let work = Workdir::new("fs-threads", User::Tester);
    small_tree(&work);
    let share = work.file("share");
    std::fs::create_dir(&share).unwrap();
    work.chown_all();
    let mut cmd = busybox_tree(
        &work,
        &["--bind-ro=share:/srv/share"],
        "mount-extra,sleep=8",
    );
    cmd.env("VMSPAWN_TEST_MARKER", "must-not-reach-virtiofsd");
    let mut vm = Background::start(cmd);
    vm.wait_for_line("mounted mnt0 /srv/share ro", BOOT);
    let launcher = vm.child.id();
    let servers = virtiofsds(launcher);
    let mut shares: Vec<_> = servers.iter().map(|(_, s)| PathBuf::from(s)).collect();
    shares.sort();
    assert_eq!(
        shares,
        vec![share.clone(), work.file("tree")],
        "one virtiofsd per share: {:?}",
        names(&children_of(launcher))
    );
    let uid = tester_ids().0.to_string();
    for (pid, share) in &servers {
        let seccomp = thread_status_field(*pid, "Seccomp:");
        let nnp = thread_status_field(*pid, "NoNewPrivs:");
        assert!(
            seccomp.len() >= 2,
            "expected virtiofsd's worker threads: {seccomp:?}"
        );
        for (tid, value) in seccomp.iter().chain(&nnp) {
            assert!(
                value == "2" || value == "1",
                "virtiofsd {pid} ({share}) thread {tid}: {value}"
            );
        }
        assert!(
            seccomp.iter().all(|(_, v)| v == "2") && nnp.iter().all(|(_, v)| v == "1"),
            "virtiofsd {pid} ({share}): Seccomp {seccomp:?}, NoNewPrivs {nnp:?}"
        );
        for (tid, uids) in thread_status_field(*pid, "Uid:") {
            assert_eq!(
                uids.split_whitespace().collect::<Vec<_>>(),
                vec![uid.as_str(); 4],
                "virtiofsd {pid} thread {tid} must run as the user"
            );
        }
        for (tid, caps) in thread_status_field(*pid, "CapEff:") {
            assert_eq!(caps, "0000000000000000", "virtiofsd {pid} thread {tid}");
        }
        assert_eq!(
            environ_of(*pid),
            Vec::<String>::new(),
            "environment of {pid}"
        );
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(exe, Path::new("/usr/libexec/virtiofsd"));
    }
    let pids: Vec<u32> = servers.iter().map(|(p, _)| *p).collect();
    let out = vm.finish(BOOT);
    out.assert_success();
    assert!(out.has("done"), "{:?}", out.vmtest());
    assert!(
        survivors(&pids, Duration::from_secs(5)).is_empty(),
        "a virtiofsd outlived vmspawn"
    );
    assert_nothing_left(&work, &[]);
}

/// A busybox guest of a small tree with the `--bind` share `share` mounted at /srv/share,
/// sleeping for two minutes once it is mounted.
fn running_with_a_share(work: &Workdir) -> (PathBuf, Background) {
    small_tree(work);
    let share = work.file("share");
    std::fs::create_dir(&share).unwrap();
    work.chown_all();
    let mut vm = Background::start(busybox_tree(
        work,
        &["--bind=share:/srv/share"],
        "mount-extra,sleep=120",
    ));
    vm.wait_for_line("mounted mnt0 /srv/share rw", BOOT);
    (share, vm)
}

#[test]
fn a_crashing_virtiofsd_stops_the_vm_with_an_error_naming_its_share() {
    let work = Workdir::new("fs-crash", User::Tester);
    let (share, vm) = running_with_a_share(&work);
    let launcher = vm.child.id();
    let qemu = children_named(launcher, QEMU_COMM);
    assert_eq!(qemu.len(), 1, "{:?}", names(&children_of(launcher)));
    let servers = virtiofsds(launcher);
    assert_eq!(servers.len(), 2, "{servers:?}");
    let (victim, _) = servers
        .iter()
        .find(|(_, s)| Path::new(s) == share)
        .unwrap_or_else(|| panic!("no virtiofsd serves {}: {servers:?}", share.display()));
    let started = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(*victim as i32), Signal::SIGKILL).unwrap();
    let out = vm.finish(Duration::from_secs(60));
    assert_ne!(out.code(), Some(0), "stderr:\n{}", out.stderr);
    assert!(
        !out.has("done"),
        "the guest ran on after its share's server died: {:?}",
        out.vmtest()
    );
    let named = format!("the --bind share '{}'", share.display());
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains(&named) && l.contains("killed by SIGKILL")),
        "expected an error naming {named} and SIGKILL:\n{}",
        out.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the VM took {:?} to stop",
        started.elapsed()
    );
    assert!(
        wait_process_exit(qemu[0], Duration::from_secs(10)),
        "QEMU kept running after the virtiofsd died"
    );
    assert_nothing_left(&work, &[]);
}

#[test]
fn virtiofsds_and_qemu_do_not_outlive_a_killed_launcher() {
    let work = Workdir::new("fs-killed", User::Tester);
    let (_share, vm) = running_with_a_share(&work);
    let launcher = vm.child.id();
    let children = children_of(launcher);
    assert_eq!(virtiofsds(launcher).len(), 2, "{:?}", names(&children));
    assert_eq!(
        children_named(launcher, QEMU_COMM).len(),
        1,
        "{:?}",
        names(&children)
    );
    let sockets: Vec<_> = std::fs::read_dir(work.tmp())
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("virtiofs-") && n.ends_with(".sock"))
        .collect();
    assert_eq!(
        sockets.len(),
        2,
        "the virtiofsd sockets in the runtime directory: {sockets:?}"
    );
    vm.signal(Signal::SIGKILL);
    let _ = vm.finish(Duration::from_secs(10));
    // Every child: QEMU, the virtiofsds and the cleanup process; and the sockets with the
    // runtime directory.
    wait_nothing_left(&work, &children, Duration::from_secs(15));
}

// --- Bad input -----------------------------------------------------------------------------

/// vmspawn fails with exit status 1 and a message containing every one of `messages`, starts
/// no VM and leaves nothing behind (no virtiofsd, no runtime directory).
fn fails(work: &Workdir, args: &[&str], messages: &[&str]) {
    let mut cmd = work.vmspawn();
    cmd.args(tcg())
        .args(["--tpm=no", "--console=read-only"])
        .args(args)
        .arg("test.mode=");
    let out = run(cmd, BOOT);
    assert_eq!(out.code(), Some(1), "{args:?}: stderr:\n{}", out.stderr);
    for message in messages {
        assert!(
            out.stderr.contains(message),
            "{args:?}: expected '{message}' in:\n{}",
            out.stderr
        );
    }
    assert!(!out.stdout.contains("VMTEST"), "{args:?}: a VM ran");
    assert_nothing_left(work, &[]);
}

#[test]
fn bad_directory_and_bind_input_gives_clear_errors_and_leaves_nothing() {
    let work = Workdir::new("fs-errors", User::Tester);
    let tree = small_tree(&work);
    work.write("file", b"not a directory");
    std::fs::create_dir(work.file("relative")).unwrap();
    work.chown_all();
    let linux = format!("--linux={}", image("vmlinuz").display());
    let initrd = format!("--initrd={}", image("initrd-busybox.cpio.gz").display());
    let with_kernel = |extra: &[&str]| -> Vec<String> {
        let mut args = vec![linux.clone(), initrd.clone(), "-D".into(), "tree".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            with_kernel(&["--bind=missing:/srv/x"]),
            vec![
                "Failed to parse --bind= argument missing:/srv/x",
                "No such file or directory",
            ],
        ),
        (
            with_kernel(&["--bind-ro=file:/srv/x"]),
            vec![
                "Failed to parse --bind-ro= argument file:/srv/x",
                "Not a directory",
            ],
        ),
        (
            with_kernel(&["--bind=relative"]),
            vec![
                "Failed to parse --bind= argument relative",
                "the target must be an absolute path",
            ],
        ),
        (
            vec![linux.clone(), "-D".into(), "file".into()],
            vec!["--directory=", "not a directory"],
        ),
        (
            vec![linux.clone(), "-D".into(), "missing".into()],
            vec![
                "Failed to open the root directory",
                "No such file or directory",
            ],
        ),
        (
            vec!["-D".into(), "tree".into()],
            vec![
                "Failed to locate UKI in directory type image, please specify one with --linux=",
                "Failed to discover any boot entries in",
            ],
        ),
    ];
    for (args, messages) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&work, &args, messages);
    }
    // A runtime directory too deep for the sockets' paths (sun_path holds 108 bytes).
    let deep = work.file(&format!("{}/tmp", "d".repeat(70)));
    std::fs::create_dir_all(&deep).unwrap();
    work.chown_all();
    let mut cmd = work.vmspawn();
    cmd.env("TMPDIR", &deep)
        .args(tcg())
        .args([
            "--tpm=no",
            "--console=read-only",
            &linux,
            &initrd,
            "-D",
            "tree",
        ])
        .arg("test.mode=");
    let out = run(cmd, BOOT);
    assert_eq!(out.code(), Some(1), "stderr:\n{}", out.stderr);
    for message in [
        "The socket of the virtiofsd for the root directory",
        "longer than the 107 bytes a Unix socket path may have",
        "Set $XDG_RUNTIME_DIR (or $TMPDIR) to a shorter directory",
    ] {
        assert!(
            out.stderr.contains(message),
            "expected '{message}' in:\n{}",
            out.stderr
        );
    }
    assert_eq!(
        std::fs::read_dir(&deep).unwrap().count(),
        0,
        "left in {}",
        deep.display()
    );
    assert_nothing_left(&work, &[]);
    // Nothing was written into the tree.
    let entries: Vec<_> = std::fs::read_dir(&tree)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("five")]);
}
