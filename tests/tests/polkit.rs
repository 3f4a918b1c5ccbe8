//! polkit with real components: a private system bus, a real polkitd with rules that allow and
//! that deny, and the helper service consulting it for a policy rule that says `polkit = "yes"`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmspawn_tests::*;

const ACTIONS: &str = "/usr/share/polkit-1/actions/org.vmspawn.privhelper.policy";
const RULES: &str = "/etc/polkit-1/rules.d/49-vmspawn-test.rules";

/// dbus-daemon (system bus, private socket) + polkitd + our actions + a rules file; all
/// removed on drop.
struct PolkitBus {
    dir: PathBuf,
    bus: Child,
    polkitd: Child,
}

impl PolkitBus {
    fn start() -> PolkitBus {
        let dir = PathBuf::from(format!("/run/vmspawn-it-{}-bus", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("system_bus_socket");
        std::fs::write(
            dir.join("system.conf"),
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig><type>system</type>\
                 <listen>unix:path={}</listen><auth>EXTERNAL</auth><policy context=\"default\"><allow user=\"*\"/>\
                 <allow own=\"*\"/><allow send_destination=\"*\" eavesdrop=\"true\"/><allow receive_sender=\"*\"/>\
                 <allow send_type=\"method_call\"/></policy></busconfig>\n",
                socket.display()
            ),
        )
        .unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        std::fs::copy(
            root.join("packaging/polkit/org.vmspawn.privhelper.policy"),
            ACTIONS,
        )
        .unwrap();
        let bus = Command::new("dbus-daemon")
            .arg(format!(
                "--config-file={}",
                dir.join("system.conf").display()
            ))
            .arg("--nofork")
            .stdout(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        assert!(
            wait_for_path(&socket, Duration::from_secs(10)),
            "dbus-daemon did not start"
        );
        let polkitd = Command::new("/usr/lib/polkit-1/polkitd")
            .arg("--no-debug")
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                format!("unix:path={}", socket.display()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start polkitd");
        let bus = PolkitBus { dir, bus, polkitd };
        // polkitd is ready once it owns its name.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !bus.polkit_ready() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            bus.polkit_ready(),
            "polkitd did not come up on the private bus"
        );
        bus
    }

    fn address(&self) -> String {
        format!("unix:path={}", self.dir.join("system_bus_socket").display())
    }

    fn polkit_ready(&self) -> bool {
        Command::new("busctl")
            .args(["--system", "status", "org.freedesktop.PolicyKit1"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.address())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Installs a rule answering `result` (YES/NO/AUTH_SELF) for the test user's create-tap,
    /// and waits until polkitd answers with it (it reloads rules when the directory changes,
    /// a little later).
    fn rule(&self, result: &str) {
        std::fs::write(
            RULES,
            format!(
                "polkit.addRule(function(action, subject) {{\n  if (action.id == \"org.vmspawn.privhelper.create-tap\" \
                 && subject.user == \"{TEST_USER}\") {{ return polkit.Result.{result}; }}\n}});\n"
            ),
        )
        .unwrap();
        // pkcheck's exit status: 0 authorized, 1 not authorized, 2 authentication required.
        let expected = match result {
            "YES" => 0,
            "NO" => 1,
            _ => 2,
        };
        let (uid, gid) = tester_ids();
        let mut subject = Command::new("sleep")
            .arg("60")
            .uid(uid)
            .gid(gid)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut answer = None;
        while answer != Some(expected) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(300));
            answer = Command::new("pkcheck")
                .args([
                    "--action-id",
                    "org.vmspawn.privhelper.create-tap",
                    "--process",
                ])
                .arg(subject.id().to_string())
                .env("DBUS_SYSTEM_BUS_ADDRESS", self.address())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .ok()
                .and_then(|s| s.code());
        }
        let _ = subject.kill();
        let _ = subject.wait();
        assert_eq!(
            answer,
            Some(expected),
            "polkitd did not load the {result} rule"
        );
    }
}

impl Drop for PolkitBus {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(RULES);
        let _ = std::fs::remove_file(ACTIONS);
        for child in [&mut self.polkitd, &mut self.bus] {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// polkitd on a private bus, a network namespace, the helper service with a rule that lets the
/// test user create TAPs if polkit agrees, and a work directory with a guest disk.
fn setup(tag: &str) -> (PolkitBus, Netns, HelperService, Workdir) {
    let polkit = PolkitBus::start();
    let netns = Netns::new(tag);
    let policy = format!(
        "[[allow]]\nusers = [\"{TEST_USER}\"]\noperations = [\"create-tap\"]\nmax-taps = 2\npolkit = \"yes\"\n"
    );
    let helper = HelperService::start_with_env(
        &netns,
        tag,
        &policy,
        &[("DBUS_SYSTEM_BUS_ADDRESS", &polkit.address())],
    );
    let work = Workdir::new(tag, User::Tester);
    make_gpt_image(
        &work.file("guest.raw"),
        8,
        "88888888-2222-4333-8444-555555555555",
    );
    work.chown_all();
    (polkit, netns, helper, work)
}

#[test]
fn polkit_rules_allow_and_deny_tap_creation() {
    let (polkit, netns, helper, work) = setup("polkit");
    let guest = || {
        let mut cmd = work.vmspawn_in_netns(&netns);
        cmd.env("VMSPAWN_PRIVHELPER_SOCKET", &helper.socket)
            .args(busybox_boot(false))
            .args(["-i", "guest.raw", "--console=read-only", "-n", "test.mode="]);
        cmd
    };

    polkit.rule("YES");
    let out = run(guest(), Duration::from_secs(150));
    out.assert_success();
    assert!(
        out.vmtest().iter().any(|l| l.starts_with("nic eth0")),
        "{:?}",
        out.vmtest()
    );

    // A caller whose process is gone by the time it asks (its connection handed to another
    // process) is not identified by a stale or reused pid: polkit's YES does not apply.
    let script = format!(
        r#"
import os, socket, struct
parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
pid = os.fork()
if pid == 0:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect("{socket}")
    socket.send_fds(child, [b"x"], [s.fileno()])
    os._exit(0)
os.waitpid(pid, 0)
_, fds, _, _ = socket.recv_fds(parent, 1, 1)
s = socket.socket(fileno=fds[0])
s.send(struct.pack("<IIB", 0, 1, 0)); s.recv(64)
name = b"gone"
s.send(struct.pack("<IQ", 1, len(name)) + name + b"\0")
r = s.recv(512)
# Response::Error (variant 5) of kind Denied (2), then the message.
print("DENIED" if r[:8] == struct.pack("<II", 5, 2) else "OTHER", r[16:].decode(errors="replace"))
"#,
        socket = helper.socket.display()
    );
    let (uid, gid) = tester_ids();
    let out = Command::new("ip")
        .args(["netns", "exec", &netns.name, "setpriv"])
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "--", "/usr/bin/python3", "-c", &script])
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    // Depending on when the caller's exit is noticed, the helper cannot identify it, or polkit
    // cannot find its process: either way a denial that names polkit, and no TAP.
    assert!(
        answer.starts_with("DENIED ") && answer.contains("polkit"),
        "an exited caller got: {answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(netns.taps().is_empty());

    polkit.rule("NO");
    let out = run(guest(), Duration::from_secs(60));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("polkit did not authorize org.vmspawn.privhelper.create-tap"),
        "{}",
        out.stderr
    );
    assert!(netns.taps().is_empty());
    // The helper's D-Bus threads are confined too.
    for task in std::fs::read_dir(format!("/proc/{}/task", helper.child.id()))
        .unwrap()
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        assert!(
            status.contains("Seccomp:\t2") && status.contains("NoNewPrivs:\t1"),
            "{status}"
        );
    }
    work.assert_no_leftovers();
}

/// The `flags` argument of each CheckAuthorization call for `action` in dbus-monitor's output.
fn check_authorization_flags(monitor: &str, action: &str) -> Vec<u32> {
    let mut flags = Vec::new();
    let mut after_action = false;
    for line in monitor.lines() {
        if line.trim() == format!("string \"{action}\"") {
            after_action = true;
        } else if after_action && let Some(value) = line.strip_prefix("   uint32 ") {
            flags.push(value.trim().parse().unwrap());
            after_action = false;
        }
    }
    flags
}

#[test]
fn polkit_interactive_authentication_follows_no_ask_password() {
    let (polkit, netns, helper, work) = setup("polkit-ask");
    // On a terminal, as a user would run it: only --no-ask-password differs.
    let guest = |extra: &[&str]| {
        let mut cmd = work.vmspawn_in_netns(&netns);
        cmd.env("VMSPAWN_PRIVHELPER_SOCKET", &helper.socket)
            .args(busybox_boot(false))
            .args(["-i", "guest.raw", "--console=read-only", "-n"])
            .args(extra)
            .arg("test.mode=");
        PtySession::start(cmd)
    };
    polkit.rule("YES");
    let mut monitor = Command::new("dbus-monitor");
    monitor.args([
        "--address",
        &polkit.address(),
        "type='method_call',member='CheckAuthorization'",
    ]);
    let monitor = Background::start(monitor);
    std::thread::sleep(Duration::from_secs(1));

    for extra in [&[][..], &["--no-ask-password"]] {
        let mut session = guest(extra);
        let status = session.finish(Duration::from_secs(150));
        assert!(status.success(), "{extra:?}: {}", session.output());
    }
    std::thread::sleep(Duration::from_millis(500));
    let calls = monitor.stdout();
    assert_eq!(
        check_authorization_flags(&calls, "org.vmspawn.privhelper.create-tap"),
        [1, 0],
        "AllowUserInteraction without, and not with, --no-ask-password:\n{calls}"
    );

    // A rule that wants the user's password: without interaction that is a clear refusal.
    polkit.rule("AUTH_SELF");
    let mut session = guest(&["--no-ask-password"]);
    let status = session.finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{}", session.output());
    assert!(
        session
            .output()
            .contains("polkit requires authentication for org.vmspawn.privhelper.create-tap"),
        "{}",
        session.output()
    );
    assert!(
        session.output().contains("--no-ask-password"),
        "{}",
        session.output()
    );
    assert!(netns.taps().is_empty());
    monitor.signal(nix::sys::signal::Signal::SIGTERM);
    let _ = monitor.finish(Duration::from_secs(10));
    work.assert_no_leftovers();
}
