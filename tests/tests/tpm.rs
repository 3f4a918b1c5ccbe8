//! The virtual TPM (swtpm sidecar): the guest sees a TPM 2.0 by default, its state persists
//! next to the image (or where --tpm-state= says) or vanishes with the VM (--tpm-state=off),
//! a dying swtpm or a killed vmspawn leaves nothing behind, bad input gives clear errors, and
//! swtpm runs confined: an escape probe in its place is blocked everywhere.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use vmspawn_tests::*;

const BOOT: Duration = Duration::from_secs(150);
const SYSTEMD_BOOT: Duration = Duration::from_secs(300);
const PARTUUID: &str = "99999999-2222-4333-8444-555555555555";

/// A busybox guest on a fresh `guest.raw`, console read-only, with `options` and the modes.
fn busybox(work: &Workdir, mode: &str, options: &[&str]) -> Command {
    make_gpt_image(&work.file("guest.raw"), 16, PARTUUID);
    work.chown_all();
    let mut cmd = work.vmspawn();
    cmd.args(busybox_boot(false))
        .args(["-i", "guest.raw", "--console=read-only"])
        .args(options)
        .arg(format!("test.mode={mode}"));
    cmd
}

/// The `tpm=` line of the busybox guest.
fn guest_tpm(out: &Finished) -> String {
    field(&out.vmtest(), "tpm").unwrap_or_else(|| {
        panic!(
            "no tpm= line\nstdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        )
    })
}

/// Mode bits and owner of a directory, failing when it is not one.
fn dir_mode_and_owner(path: &Path) -> (u32, u32) {
    let meta = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("TPM state directory {}: {e}", path.display()));
    assert!(meta.is_dir(), "{} is not a directory", path.display());
    (meta.permissions().mode() & 0o7777, meta.uid())
}

fn expected_uid(work: &Workdir) -> u32 {
    match work.user {
        User::Tester => tester_ids().0,
        User::Root => 0,
    }
}

/// A persistent swtpm state directory: mode 0700, owned by the user, holding swtpm's state.
fn assert_state_dir(work: &Workdir, state: &Path) {
    let (mode, uid) = dir_mode_and_owner(state);
    assert_eq!(mode, 0o700, "mode of {}: {mode:o}", state.display());
    assert_eq!(uid, expected_uid(work), "owner of {}", state.display());
    assert!(
        state.join("tpm2-00.permall").is_file(),
        "no tpm2-00.permall in {}: {:?}",
        state.display(),
        std::fs::read_dir(state).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
}

/// The `.tpmstate` directories next to the image (in the work directory).
fn tpmstate_dirs(work: &Workdir) -> Vec<PathBuf> {
    std::fs::read_dir(&work.path)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tpmstate"))
        .collect()
}

/// Nothing of vmspawn's is left after it exited: no files in $TMPDIR (nor, for root, in its
/// runtime directory base), and no process (QEMU, swtpm, vmspawn's cleanup process, which
/// may take a moment to notice that vmspawn is gone) with a path of the work directory in its
/// arguments.
fn assert_nothing_left(work: &Workdir) {
    work.assert_no_leftovers();
    let run = work.file("run/systemd");
    if work.user == User::Root && run.exists() {
        let left: Vec<_> = std::fs::read_dir(&run).unwrap().flatten().collect();
        assert!(left.is_empty(), "runtime directory left behind: {left:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut running = processes_mentioning(&work.path.join(""));
    while !running.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        running = processes_mentioning(&work.path.join(""));
    }
    assert!(running.is_empty(), "processes left behind: {running:?}");
}

/// Waits until nothing of vmspawn's is left (for the cases where the cleanup is asynchronous:
/// parent-death signals, the cleanup process).
fn wait_nothing_left(work: &Workdir, pids: &[u32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let gone = pids
            .iter()
            .all(|&pid| wait_process_exit(pid, Duration::ZERO));
        let tmp_empty = std::fs::read_dir(work.tmp()).unwrap().next().is_none();
        let running = processes_mentioning(&work.path.join(""));
        if gone && tmp_empty && running.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            let alive: Vec<_> = pids
                .iter()
                .filter(|&&pid| !wait_process_exit(pid, Duration::ZERO))
                .map(|&pid| (pid, comm(pid)))
                .collect();
            panic!(
                "after {timeout:?}: still running {alive:?}, also {running:?}; left in $TMPDIR: {:?}",
                std::fs::read_dir(work.tmp())
                    .unwrap()
                    .flatten()
                    .map(|e| e.path())
                    .collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A private bin directory with QEMU (a symlink to the real one) and nothing else.
fn bin_with_qemu_only(work: &Workdir) -> PathBuf {
    let bin = work.file("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(
        "/usr/bin/qemu-system-x86_64",
        bin.join("qemu-system-x86_64"),
    )
    .unwrap();
    work.chown_all();
    bin
}

#[test]
fn guest_has_a_tpm_by_default_with_state_next_to_the_image() {
    let work = Workdir::new("tpm-default", User::Tester);
    let out = run(busybox(&work, "", &[]), BOOT);
    out.assert_success();
    assert!(out.has("done"), "{:?}", out.vmtest());
    assert_eq!(guest_tpm(&out), "2", "{:?}", out.vmtest());
    let state = work.file("guest.raw.tpmstate");
    assert_state_dir(&work, &state);
    assert_eq!(tpmstate_dirs(&work), vec![state.clone()]);
    assert_nothing_left(&work);

    // The next boot uses the existing state (swtpm_setup --not-overwrite), which stays.
    let mut cmd = work.vmspawn();
    cmd.args(busybox_boot(false))
        .args(["-i", "guest.raw", "--console=read-only", "test.mode="]);
    let out = run(cmd, BOOT);
    out.assert_success();
    assert_eq!(guest_tpm(&out), "2", "{:?}", out.vmtest());
    assert_state_dir(&work, &state);
    assert_eq!(tpmstate_dirs(&work), vec![state.clone()]);
    assert_nothing_left(&work);
}

#[test]
fn tpm_no_gives_the_guest_no_tpm_and_creates_no_state() {
    let work = Workdir::new("tpm-no", User::Tester);
    let out = run(busybox(&work, "", &["--tpm=no"]), BOOT);
    out.assert_success();
    assert!(out.has("done"), "{:?}", out.vmtest());
    assert_eq!(guest_tpm(&out), "none", "{:?}", out.vmtest());
    assert!(
        tpmstate_dirs(&work).is_empty(),
        "{:?}",
        tpmstate_dirs(&work)
    );
    assert_nothing_left(&work);
}

#[test]
fn tpm_auto_without_swtpm_quietly_boots_without_a_tpm() {
    let work = Workdir::new("tpm-auto-missing", User::Tester);
    let bin = bin_with_qemu_only(&work);
    let mut cmd = busybox(&work, "", &[]);
    cmd.env("PATH", &bin);
    let out = run(cmd, BOOT);
    out.assert_success();
    assert_eq!(guest_tpm(&out), "none", "{:?}", out.vmtest());
    assert!(
        !out.stderr.contains("swtpm") && !out.stderr.contains("TPM"),
        "auto mode without swtpm should be silent: {}",
        out.stderr
    );
    assert!(
        tpmstate_dirs(&work).is_empty(),
        "{:?}",
        tpmstate_dirs(&work)
    );
    assert_nothing_left(&work);
}

#[test]
fn tpm_state_off_is_transient() {
    let work = Workdir::new("tpm-state-off", User::Tester);
    let out = run(busybox(&work, "", &["--tpm-state=off"]), BOOT);
    out.assert_success();
    assert!(out.has("done"), "{:?}", out.vmtest());
    assert_eq!(guest_tpm(&out), "2", "{:?}", out.vmtest());
    assert!(
        tpmstate_dirs(&work).is_empty(),
        "{:?}",
        tpmstate_dirs(&work)
    );
    // The transient state lived in the runtime directory under $TMPDIR, and went with it.
    assert_nothing_left(&work);
}

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

fn systemd_guest(work: &Workdir, tpm_state: &str, tpm_word: &str) -> Finished {
    let mut cmd = work.vmspawn();
    cmd.args(tcg())
        .args(["--cpus=2", "--ram=1G", "-i", "debian.raw"])
        .arg(format!("--linux={}", image("vmlinuz").display()))
        .arg(format!("--initrd={}", image("initrd-debian.img").display()))
        .arg(format!("--tpm-state={tpm_state}"))
        .arg(format!("vmtest.tpm={tpm_word}"));
    let out = run(cmd, SYSTEMD_BOOT);
    out.assert_success();
    let lines = out.vmtest();
    assert!(lines.contains(&"done".to_string()), "{lines:?}");
    assert!(lines.contains(&"tpm=2".to_string()), "{lines:?}");
    out
}

#[test]
fn tpm_state_persists_across_boots_of_the_systemd_guest() {
    let work = Workdir::new("tpm-persist", User::Tester);
    work.copy_image("systemd.raw", "debian.raw");
    let state = work.file("state");
    let state_arg = state.display().to_string();
    let token = random_token();

    let out = systemd_guest(&work, &state_arg, &format!("write:{token}"));
    assert!(out.has("tpm-nv-written"), "{:?}", out.vmtest());
    assert_state_dir(&work, &state);
    assert_nothing_left(&work);

    let out = systemd_guest(&work, &state_arg, "read");
    assert!(
        out.has(&format!("tpm-nv={token}")),
        "the NV index did not survive: {:?}",
        out.vmtest()
    );
    assert_state_dir(&work, &state);
    assert_nothing_left(&work);

    // A fresh, transient TPM does not have it.
    let out = systemd_guest(&work, "off", "read");
    assert!(out.has("tpm-nv=MISSING"), "{:?}", out.vmtest());
    assert!(
        tpmstate_dirs(&work).is_empty(),
        "{:?}",
        tpmstate_dirs(&work)
    );
    assert_nothing_left(&work);
}

#[test]
fn swtpm_runs_as_the_user_confined_with_a_clean_environment() {
    let work = Workdir::new("tpm-sidecar", User::Tester);
    let mut cmd = busybox(&work, "sleep=5", &[]);
    cmd.env("VMSPAWN_TEST_MARKER", "must-not-reach-swtpm");
    let mut vm = Background::start(cmd);
    vm.wait_for_line("boot", BOOT);
    let launcher = vm.child.id();
    let children = children_of(launcher);
    let swtpm = children_named(launcher, SWTPM_COMM);
    let qemu = children_named(launcher, QEMU_COMM);
    assert_eq!(swtpm.len(), 1, "children: {:?}", names(&children));
    assert_eq!(qemu.len(), 1, "children: {:?}", names(&children));
    for child in &children {
        let name = comm(*child);
        assert!(
            [QEMU_COMM, SWTPM_COMM, CLEANUP_COMM, VSOCK_COMM]
                .iter()
                .any(|known| name.starts_with(known)),
            "unexpected child of vmspawn: {child} {name}"
        );
    }
    let swtpm = swtpm[0];
    let status = std::fs::read_to_string(format!("/proc/{swtpm}/status")).unwrap();
    let status_field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let uid = tester_ids().0.to_string();
    assert_eq!(
        status_field("Uid:").split_whitespace().collect::<Vec<_>>(),
        vec![uid.as_str(); 4],
        "swtpm must run as the user"
    );
    assert_eq!(status_field("NoNewPrivs:"), "1", "{status}");
    assert_eq!(status_field("Seccomp:"), "2", "{status}");
    assert_eq!(status_field("CapEff:"), "0000000000000000", "{status}");
    let environ = std::fs::read(format!("/proc/{swtpm}/environ")).unwrap();
    let environ: Vec<String> = environ
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    for inherited in [
        "VMSPAWN_TEST_MARKER=must-not-reach-swtpm".to_string(),
        format!("HOME={}", work.file("home").display()),
        format!("TMPDIR={}", work.tmp().display()),
    ] {
        assert!(
            !environ.contains(&inherited),
            "swtpm inherited {inherited}: {environ:?}"
        );
    }
    let exe = std::fs::read_link(format!("/proc/{swtpm}/exe")).unwrap();
    assert_eq!(exe, Path::new("/usr/bin/swtpm"));
    let out = vm.finish(BOOT);
    out.assert_success();
    assert_eq!(guest_tpm(&out), "2");
    assert!(
        wait_process_exit(swtpm, Duration::from_secs(5)),
        "swtpm outlived vmspawn"
    );
    assert_nothing_left(&work);
}

fn names(pids: &[u32]) -> Vec<(u32, String)> {
    pids.iter().map(|&p| (p, comm(p))).collect()
}

#[test]
fn swtpm_killed_during_a_boot_is_an_error() {
    let work = Workdir::new("tpm-swtpm-killed", User::Tester);
    let mut vm = Background::start(busybox(&work, "sleep=120", &[]));
    vm.wait_for_line("boot", BOOT);
    let launcher = vm.child.id();
    let swtpm = child_named(launcher, SWTPM_COMM)
        .unwrap_or_else(|| panic!("no swtpm child: {:?}", names(&children_of(launcher))));
    let qemu = children_named(launcher, QEMU_COMM);
    assert_eq!(qemu.len(), 1, "{:?}", names(&children_of(launcher)));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(swtpm as i32), Signal::SIGKILL).unwrap();
    let out = vm.finish(Duration::from_secs(30));
    assert_eq!(out.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains("swtpm") && l.contains("killed by SIGKILL")),
        "{}",
        out.stderr
    );
    assert!(
        wait_process_exit(qemu[0], Duration::from_secs(10)),
        "QEMU kept running after swtpm died"
    );
    assert_nothing_left(&work);
    // The persistent state is never removed.
    assert_state_dir(&work, &work.file("guest.raw.tpmstate"));
}

#[test]
fn swtpm_and_qemu_do_not_outlive_a_killed_launcher() {
    let work = Workdir::new("tpm-launcher-killed", User::Tester);
    // With --tpm-state=off the TPM state is in the runtime directory, which must go too.
    let mut vm = Background::start(busybox(&work, "sleep=120", &["--tpm-state=off"]));
    vm.wait_for_line("boot", BOOT);
    let launcher = vm.child.id();
    let children = children_of(launcher);
    let swtpm = children_named(launcher, SWTPM_COMM);
    let qemu = children_named(launcher, QEMU_COMM);
    assert_eq!(swtpm.len(), 1, "{:?}", names(&children));
    assert_eq!(qemu.len(), 1, "{:?}", names(&children));
    assert!(
        std::fs::read_dir(work.tmp()).unwrap().next().is_some(),
        "no runtime directory in $TMPDIR during the boot"
    );
    vm.signal(Signal::SIGKILL);
    let _ = vm.finish(Duration::from_secs(10));
    // Every child: QEMU, swtpm and the cleanup process.
    wait_nothing_left(&work, &children, Duration::from_secs(15));
    assert!(
        tpmstate_dirs(&work).is_empty(),
        "{:?}",
        tpmstate_dirs(&work)
    );
}

/// vmspawn fails with exit status 1 and a message containing every one of `messages`, and
/// leaves nothing behind.
fn fails(work: &Workdir, args: &[&str], path: Option<&Path>, messages: &[&str]) -> Finished {
    let mut cmd = work.vmspawn();
    cmd.args(busybox_boot(false))
        .args(["-i", "guest.raw", "--console=read-only"])
        .args(args)
        .arg("test.mode=");
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    let out = run(cmd, BOOT);
    assert_eq!(out.code(), Some(1), "{args:?}: stderr:\n{}", out.stderr);
    for message in messages {
        assert!(
            out.stderr.contains(message),
            "{args:?}: expected '{message}' in:\n{}",
            out.stderr
        );
    }
    assert_nothing_left(work);
    out
}

#[test]
fn bad_tpm_input_gives_clear_errors_and_leaves_nothing() {
    let work = Workdir::new("tpm-errors", User::Tester);
    make_gpt_image(&work.file("guest.raw"), 16, PARTUUID);
    let bin = bin_with_qemu_only(&work);
    let file = work.write("state-file", b"not a directory");
    let read_only = work.file("read-only-state");
    std::fs::create_dir(&read_only).unwrap();
    work.chown_all();
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o500)).unwrap();
    // A directory of root's, 0755, inside the work directory: the user cannot create in it.
    let root_dir = work.file("root-owned");
    std::fs::create_dir(&root_dir).unwrap();
    std::fs::set_permissions(&root_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(owner(&root_dir), 0);

    // --tpm=yes without swtpm.
    fails(
        &work,
        &["--tpm=yes"],
        Some(&bin),
        &[
            "Failed to find swtpm binary",
            "apt install swtpm swtpm-tools",
        ],
    );
    assert!(
        tpmstate_dirs(&work).is_empty(),
        "{:?}",
        tpmstate_dirs(&work)
    );

    // Explicit state paths that cannot be used fail, with --tpm=auto (the default) and yes.
    for tpm in [None, Some("--tpm=yes")] {
        let with = |state: &Path| -> Vec<String> {
            let mut args = vec![format!("--tpm-state={}", state.display())];
            args.extend(tpm.map(str::to_string));
            args
        };
        let args = with(&file);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(
            &work,
            &args,
            None,
            &["TPM state directory", "is not a directory"],
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");

        let inside_root_dir = root_dir.join("state");
        let args = with(&inside_root_dir);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(
            &work,
            &args,
            None,
            &["TPM state directory", "Permission denied"],
        );
        assert!(!inside_root_dir.exists());

        let args = with(&read_only);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(
            &work,
            &args,
            None,
            &["TPM state directory", "Permission denied"],
        );
        assert_eq!(std::fs::read_dir(&read_only).unwrap().count(), 0);
        assert_eq!(dir_mode_and_owner(&read_only).0, 0o500);
    }
    assert!(
        tpmstate_dirs(&work).is_empty(),
        "{:?}",
        tpmstate_dirs(&work)
    );
}

/// Runs vmspawn with the escape probe as swtpm (and swtpm_setup) and the real QEMU; returns
/// the probe's report lines.
fn run_swtpm_probe(user: User, unconfined: bool) -> Vec<String> {
    let work = Workdir::new(
        match (user, unconfined) {
            (User::Tester, false) => "tpm-probe",
            (User::Tester, true) => "tpm-probe-unconfined",
            (User::Root, _) => "tpm-probe-root",
        },
        user,
    );
    make_gpt_image(&work.file("guest.raw"), 16, PARTUUID);
    let bin = work.file("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["swtpm", "swtpm_setup"] {
        std::fs::copy(env!("CARGO_BIN_EXE_escape-probe"), bin.join(name)).unwrap();
    }
    // The probe finds the canary next to the state directory, outside swtpm's rules.
    work.write("canary", b"secret");
    let state = work.file("state");
    work.chown_all();

    let mut cmd = work.vmspawn();
    cmd.env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("VMSPAWN_TEST_MARKER", "must-not-reach-swtpm")
        .args(busybox_boot(false))
        .args(["-i", "guest.raw", "--console=read-only", "--tpm=yes"])
        .arg(format!("--tpm-state={}", state.display()))
        .arg("test.mode=");
    if unconfined {
        cmd.env("VMSPAWN_UNCONFINED", "1");
    }
    let out = run(cmd, Duration::from_secs(60));
    assert_eq!(out.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains("swtpm") && l.contains("before it was ready")),
        "{}",
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
        "the probe did not run as swtpm or did not finish:\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        !work.file("escaped").exists() || unconfined,
        "a file was written outside the TPM state directory"
    );
    assert!(
        state.join("probe-scratch").exists(),
        "the probe did not write into the state directory"
    );
    assert_eq!(std::fs::read(work.file("canary")).unwrap(), b"secret");
    let status = format!("status uid={} ", expected_uid(&work));
    assert!(
        lines.iter().any(|l| l.starts_with(&status)),
        "swtpm must run as the calling user: {lines:?}"
    );
    let environment = lines
        .iter()
        .find(|l| l.starts_with("environment "))
        .unwrap_or_else(|| panic!("{lines:?}"));
    for inherited in ["VMSPAWN_TEST_MARKER", "HOME", "TMPDIR"] {
        assert!(
            !environment
                .trim_start_matches("environment [")
                .trim_end_matches(']')
                .split(',')
                .any(|name| name == inherited),
            "swtpm inherited {inherited}: {environment}"
        );
    }
    assert_nothing_left(&work);
    lines
}

const SWTPM_ESCAPES: &[&str] = &[
    "read-canary",
    "write-outside-state-dir",
    "read-etc-passwd",
    "read-etc-shadow",
    "read-root-home",
    "read-launcher-environ",
    "exec-shell",
    "ptrace-launcher",
];

fn check_swtpm_blocked(lines: &[String]) {
    assert!(
        lines.contains(&"create-file-in-state-dir ok".to_string()),
        "swtpm lost a right it needs: {lines:?}"
    );
    for escape in SWTPM_ESCAPES {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{escape} ")))
            .unwrap_or_else(|| panic!("no result for {escape}: {lines:?}"));
        let verdict = &line[escape.len() + 1..];
        // Landlock refuses with EACCES (EPERM for ptrace across domains); the seccomp
        // deny-list with EPERM, or kills the thread (SIGSYS).
        assert!(
            ["blocked EACCES", "blocked EPERM", "blocked SIGSYS"].contains(&verdict),
            "{escape}: {verdict}"
        );
    }
}

#[test]
fn escape_attempts_from_swtpms_domain_are_blocked_as_user() {
    let lines = run_swtpm_probe(User::Tester, false);
    check_swtpm_blocked(&lines);
}

#[test]
fn escape_attempts_from_swtpms_domain_are_blocked_as_root() {
    // Root passes every file-mode check: what blocks it is the confinement.
    let lines = run_swtpm_probe(User::Root, false);
    check_swtpm_blocked(&lines);
}

#[test]
fn the_swtpm_probe_detects_escapes_when_unconfined() {
    let lines = run_swtpm_probe(User::Tester, true);
    for escape in [
        "read-canary",
        "write-outside-state-dir",
        "read-etc-passwd",
        "exec-shell",
    ] {
        assert!(
            lines.contains(&format!("{escape} ESCAPED")),
            "{escape}: {lines:?}"
        );
    }
    assert!(
        lines.contains(&"create-file-in-state-dir ok".to_string()),
        "{lines:?}"
    );
}
