//! Confinement: escape attempts from inside QEMU's domain are blocked, a real QEMU cannot open
//! files outside its rules, and every thread of the launcher and of QEMU runs under seccomp with
//! no_new_privs during a real boot.

use std::net::TcpListener;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use vmspawn_tests::*;

const BOOT: Duration = Duration::from_secs(150);

/// Runs vmspawn with the escape probe as its QEMU and returns the probe's report lines.
fn run_probe(user: User, unconfined: bool) -> (Finished, Vec<String>) {
    let work = Workdir::new(
        if unconfined {
            "probe-unconfined"
        } else {
            "probe"
        },
        user,
    );
    make_gpt_image(
        &work.file("guest.raw"),
        8,
        "44444444-2222-4333-8444-555555555555",
    );
    std::fs::create_dir_all(work.file("bin")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_escape-probe"),
        work.file("bin/qemu-system-x86_64"),
    )
    .unwrap();
    let canary = work.write("home/canary", b"secret");
    work.chown_all();

    let abstract_name = format!("vmspawn-probe-{}-{}", std::process::id(), unconfined);
    let listener =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(&abstract_name).unwrap()).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    // A process of the same user, outside vmspawn's domains.
    let mut target = std::process::Command::new("sleep");
    target.arg("120");
    if user == User::Tester {
        let (uid, gid) = tester_ids();
        target.uid(uid).gid(gid);
    }
    let mut target = target.spawn().unwrap();

    let mut cmd = work.vmspawn();
    cmd.env(
        "PATH",
        format!("{}:/usr/bin:/bin", work.file("bin").display()),
    )
    .env("PROBE_CANARY", &canary)
    .env("PROBE_WRITE_DIR", work.file("home"))
    .env("PROBE_ABSTRACT", &abstract_name)
    .env("PROBE_SIGNAL_PID", target.id().to_string())
    .env(
        "PROBE_TCP_PORT",
        tcp.local_addr().unwrap().port().to_string(),
    )
    .args(tcg())
    .arg(format!("--linux={}", image("vmlinuz").display()))
    .args(["-i", "guest.raw", "--console=read-only"]);
    if unconfined {
        cmd.env("VMSPAWN_UNCONFINED", "1");
    }
    let out = run(cmd, Duration::from_secs(60));
    let _ = target.kill();
    let _ = target.wait();
    drop(listener);
    out.assert_success();
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
        "probe did not finish: {}",
        out.stdout
    );
    assert!(
        !work.file("home/escaped").exists() || unconfined,
        "a file was written outside the runtime directory"
    );
    work.assert_no_leftovers();
    (out, lines)
}

const ESCAPES: &[&str] = &[
    "read-home-canary",
    "write-outside-runtime-dir",
    "read-etc-passwd",
    "open-dev-kvm",
    "open-dev-net-tun",
    "exec-shell",
    "connect-host-abstract-socket",
    "signal-process-outside-domain",
    "signal-launcher",
    "bind-tcp-port",
    "connect-tcp-loopback",
    "ptrace-launcher",
    "process-vm-readv",
    "load-kernel-module",
    "mount-tmpfs",
    "bpf",
    "unshare-user-namespace",
    "keyctl",
    "perf-event-open",
    "userfaultfd",
    "kexec-load",
];

const CONTROLS: &[&str] = &[
    "open-image-read-write",
    "create-file-in-runtime-dir",
    "read-kernel",
    "read-dev-urandom",
];

fn check_all_blocked(lines: &[String]) {
    for control in CONTROLS {
        assert!(
            lines.contains(&format!("{control} ok")),
            "QEMU lost a right it needs: {control}: {lines:?}"
        );
    }
    for escape in ESCAPES {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{escape} ")))
            .unwrap_or_else(|| panic!("no result for {escape}"));
        let verdict = &line[escape.len() + 1..];
        let expected: &[&str] = match *escape {
            // Landlock refuses file access and TCP with EACCES, IPC scopes with EPERM.
            "read-home-canary"
            | "write-outside-runtime-dir"
            | "read-etc-passwd"
            | "open-dev-kvm"
            | "open-dev-net-tun"
            | "exec-shell"
            | "bind-tcp-port"
            | "connect-tcp-loopback" => &["blocked EACCES"],
            _ => &["blocked EPERM"],
        };
        assert!(
            expected.contains(&verdict),
            "{escape}: {verdict} (expected {expected:?})"
        );
    }
    assert!(
        lines.contains(&"status no_new_privs=1 seccomp=2".to_string()),
        "{lines:?}"
    );
}

#[test]
fn escape_attempts_from_qemus_domain_are_blocked_as_user() {
    let (_, lines) = run_probe(User::Tester, false);
    check_all_blocked(&lines);
}

#[test]
fn escape_attempts_from_qemus_domain_are_blocked_as_root() {
    // Root passes every permission check Landlock and seccomp do not make: this shows the
    // blocks come from the confinement, not from file modes.
    let (_, lines) = run_probe(User::Root, false);
    check_all_blocked(&lines);
}

#[test]
fn the_probe_detects_escapes_when_unconfined() {
    let (out, lines) = run_probe(User::Tester, true);
    assert!(
        out.stderr.contains("VMSPAWN_UNCONFINED is set"),
        "{}",
        out.stderr
    );
    for escape in [
        "read-home-canary",
        "write-outside-runtime-dir",
        "exec-shell",
        "connect-host-abstract-socket",
        "signal-launcher",
        "bind-tcp-port",
        "ptrace-launcher",
        "unshare-user-namespace",
    ] {
        assert!(
            lines.contains(&format!("{escape} ESCAPED")),
            "{escape}: {lines:?}"
        );
    }
    assert!(
        lines.contains(&"status no_new_privs=0 seccomp=0".to_string()),
        "{lines:?}"
    );
}

#[test]
fn real_qemu_cannot_open_a_file_outside_its_rules() {
    let work = Workdir::new("qemu-canary", User::Tester);
    make_gpt_image(
        &work.file("guest.raw"),
        8,
        "55555555-2222-4333-8444-555555555555",
    );
    let canary = work.write("home/canary.raw", &vec![0u8; 1 << 20]);
    work.chown_all();
    let mut cmd = work.vmspawn();
    cmd.env(
        "SYSTEMD_VMSPAWN_QEMU_EXTRA",
        format!(
            "-drive file={},format=raw,if=none,id=canary",
            canary.display()
        ),
    )
    .args(busybox_boot(false))
    .args(["-i", "guest.raw", "test.mode="]);
    let out = run(cmd, BOOT);
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    let path = canary.display().to_string();
    assert!(
        out.stderr.contains(&format!(
            "$SYSTEMD_VMSPAWN_QEMU_EXTRA refers to '{path}', which QEMU cannot open"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("Could not open '{path}': Permission denied")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("QEMU runs confined (Landlock and seccomp)"),
        "{}",
        out.stderr
    );
    work.assert_no_leftovers();
}

fn thread_status(pid: u32) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_default()
        };
        out.push((
            task.file_name().to_string_lossy().into_owned(),
            field("Seccomp:"),
            field("NoNewPrivs:"),
        ));
    }
    out
}

#[test]
fn every_thread_of_launcher_and_qemu_is_confined_during_a_boot() {
    let work = Workdir::new("threads", User::Tester);
    make_gpt_image(
        &work.file("guest.raw"),
        8,
        "66666666-2222-4333-8444-555555555555",
    );
    work.chown_all();
    let mut cmd = work.vmspawn();
    cmd.args(busybox_boot(false)).args([
        "--cpus=2",
        "-i",
        "guest.raw",
        "--console=read-only",
        "test.mode=sleep=8",
    ]);
    let mut vm = Background::start(cmd);
    vm.wait_for_line("boot", BOOT);
    let launcher = vm.child.id();
    // vmspawn's children: QEMU, and the TPM sidecar and the cleanup process.
    let qemu = children_named(launcher, QEMU_COMM);
    assert_eq!(qemu.len(), 1, "{qemu:?} of {:?}", children_of(launcher));
    let launcher_threads = thread_status(launcher);
    let qemu_threads = thread_status(qemu[0]);
    assert!(
        qemu_threads.len() >= 3,
        "expected QEMU's vCPU and I/O threads: {qemu_threads:?}"
    );
    for (tid, seccomp, nnp) in launcher_threads.iter().chain(&qemu_threads) {
        assert_eq!(
            (seccomp.as_str(), nnp.as_str()),
            ("2", "1"),
            "thread {tid} is not confined"
        );
    }
    let exe = std::fs::read_link(format!("/proc/{}/exe", qemu[0])).unwrap();
    assert!(exe.starts_with(Path::new("/usr/bin")), "{}", exe.display());
    let out = vm.finish(BOOT);
    out.assert_success();
    work.assert_no_leftovers();
}
