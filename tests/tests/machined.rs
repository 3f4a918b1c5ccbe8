//! Registration with a real systemd-machined. The host has no systemd as PID 1, so the test
//! boots a systemd-nspawn container (the host's /usr, a copy of its /etc) whose systemd runs a
//! real machined and system bus; vmspawn-privhelper serves inside it, and the test user boots
//! a VM there with `--register=yes`. Also: a user's attempts to get their shell, PID 1, a
//! grandchild, a child that is not QEMU or a forked copy of itself registered are refused,
//! and a registration ends with the connection that made it.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vmspawn_tests::*;

const SOCKET: &str = "/run/vmspawn/privhelper.socket";
const POLICY: &str = "[[allow]]\nusers = [\"tester\"]\noperations = [\"register-machine\"]\nmachine-prefix = \"it-\"\npolkit = \"no\"\n";

struct Container {
    root: PathBuf,
    nspawn: Child,
    leader: u32,
}

fn copy_executable(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl Container {
    fn start(tag: &str) -> Container {
        let root = PathBuf::from(format!("/var/tmp/vmspawn-it-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in [
            "usr", "tmp", "var/tmp", "run", "proc", "sys", "dev", "root", "home",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            std::os::unix::fs::symlink(target, root.join(link)).unwrap();
        }
        let copied = Command::new("cp")
            .args(["-a", "/etc"])
            .arg(root.join("etc"))
            .status()
            .unwrap();
        assert!(copied.success());
        let etc = root.join("etc");
        std::fs::write(etc.join("fstab"), "").unwrap();
        let _ = std::fs::remove_file(etc.join("machine-id"));
        let _ = std::fs::remove_file(etc.join("os-release"));
        std::fs::copy("/usr/lib/os-release", etc.join("os-release")).unwrap();
        // None of the host's own services.
        for wants in ["multi-user.target.wants", "timers.target.wants"] {
            let _ = std::fs::remove_dir_all(etc.join("systemd/system").join(wants));
        }
        std::fs::create_dir_all(etc.join("vmspawn")).unwrap();
        std::fs::write(etc.join("vmspawn/policy.toml"), POLICY).unwrap();
        std::fs::set_permissions(
            etc.join("vmspawn/policy.toml"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();

        let opt = root.join("opt/vmspawn");
        std::fs::create_dir_all(&opt).unwrap();
        copy_executable(vmspawn_bin(), &opt.join("vmspawn"));
        copy_executable(&privhelper_bin(), &opt.join("vmspawn-privhelper"));
        copy_executable(
            Path::new(env!("CARGO_BIN_EXE_helper-probe")),
            &opt.join("helper-probe"),
        );
        std::fs::set_permissions(root.join("opt"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = root.join("home/tester");
        std::fs::create_dir_all(&home).unwrap();
        make_gpt_image(
            &home.join("guest.raw"),
            8,
            "77777777-2222-4333-8444-555555555555",
        );
        let (uid, gid) = tester_ids();
        for path in [home.clone(), home.join("guest.raw")] {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        }

        let log = std::fs::File::create(root.join("console.log")).unwrap();
        let nspawn = Command::new("systemd-nspawn")
            .args(["--keep-unit", "--register=no", "-M"])
            .arg(format!("it{}{tag}", std::process::id()))
            .arg("-D")
            .arg(&root)
            .arg("--bind-ro=/usr")
            .arg(format!("--bind-ro={}", images().display()))
            .args(["-b", "--console=passive"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start systemd-nspawn");
        let mut container = Container {
            root,
            nspawn,
            leader: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // The leader is the container's PID 1: nspawn's child once it runs systemd.
        while container.leader == 0 && Instant::now() < deadline {
            container.leader = children_of(container.nspawn.id())
                .into_iter()
                .find(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|c| c.trim() == "systemd")
                })
                .unwrap_or(0);
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(container.leader != 0, "{}", container.console());
        let mut state = String::new();
        while !matches!(state.as_str(), "running" | "degraded") && Instant::now() < deadline {
            let out =
                container.exec(&["timeout", "30", "systemctl", "is-system-running", "--wait"]);
            state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state.is_empty() {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        assert!(
            state == "running" || state == "degraded",
            "container state {state}: {}",
            container.console()
        );
        container
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.root.join("console.log")).unwrap_or_default()
    }

    /// Runs a command in the container (all its namespaces), as root.
    fn exec(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-a"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `command` run in the container as the test user through `systemd-run` (so it sits in
    /// a unit, as machined wants), which waits for it and passes its output and status on.
    fn as_tester<S: AsRef<std::ffi::OsStr>>(&self, extra: &[&str], command: &[S]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.leader.to_string(), "-a"])
            .args(["systemd-run", "--wait", "--pipe", "--quiet", "--uid=tester"])
            .args(["-p", "WorkingDirectory=/home/tester"])
            .args(extra)
            .args(command)
            .stdin(Stdio::null());
        cmd
    }

    fn run_as_tester(&self, extra: &[&str], command: &[&str]) -> Output {
        self.as_tester(extra, command).output().unwrap()
    }

    fn machines(&self) -> String {
        self.exec_ok(&[
            "busctl",
            "call",
            "org.freedesktop.machine1",
            "/org/freedesktop/machine1",
            "org.freedesktop.machine1.Manager",
            "ListMachines",
        ])
    }

    fn has_machine(&self, name: &str) -> bool {
        self.machines().contains(&format!("\"{name}\" \"vm\""))
    }

    fn wait_machine(&self, name: &str, present: bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.has_machine(name) == present {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    fn machine_property(&self, name: &str, property: &str) -> String {
        let path = format!(
            "/org/freedesktop/machine1/machine/{}",
            name.replace('-', "_2d")
        );
        self.exec_ok(&[
            "busctl",
            "get-property",
            "org.freedesktop.machine1",
            &path,
            "org.freedesktop.machine1.Machine",
            property,
        ])
        .trim()
        .to_string()
    }

    /// The helper as packaged: the socket and service units from packaging/systemd (only the
    /// binary's path is changed, by a drop-in), started by socket activation.
    fn start_helper_service(&self) {
        let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd");
        let system = self.root.join("etc/systemd/system");
        for unit in ["vmspawn-privhelper.socket", "vmspawn-privhelper.service"] {
            std::fs::copy(units.join(unit), system.join(unit)).unwrap();
        }
        let dropin = system.join("vmspawn-privhelper.service.d");
        std::fs::create_dir_all(&dropin).unwrap();
        std::fs::write(
            dropin.join("path.conf"),
            "[Service]\nExecStart=\nExecStart=/opt/vmspawn/vmspawn-privhelper --policy /etc/vmspawn/policy.toml\n",
        )
        .unwrap();
        self.exec_ok(&["systemctl", "daemon-reload"]);
        self.exec_ok(&["systemctl", "start", "vmspawn-privhelper.socket"]);
        assert!(
            self.exec(&["test", "-S", SOCKET]).status.success(),
            "the helper socket is missing"
        );
    }

    /// The helper service's log, for failure messages.
    fn helper_log(&self) -> String {
        let out = self.exec(&["journalctl", "-u", "vmspawn-privhelper", "--no-pager"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.exec(&["systemctl", "poweroff"]);
        if wait_deadline(&mut self.nspawn, Duration::from_secs(20)).is_none() {
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
        let _ = std::fs::remove_dir_all(&self.root);
        // nspawn --keep-unit split our cgroup into these (the container's systemd made more
        // cgroups below payload/).
        for hierarchy in [
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup/systemd",
            "/sys/fs/cgroup",
        ] {
            for dir in ["payload", "supervisor"] {
                remove_cgroup(&Path::new(hierarchy).join(dir));
            }
        }
    }
}

/// Removes an empty cgroup and the ones below it (deepest first).
fn remove_cgroup(path: &Path) {
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&entry.path());
        }
    }
    let _ = std::fs::remove_dir(path);
}

fn vm_command(name: &str, seconds: u32) -> Vec<String> {
    let mut command = vec!["/opt/vmspawn/vmspawn".to_string()];
    command.extend(
        busybox_boot(false)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned()),
    );
    command.extend(
        [
            "-i",
            "guest.raw",
            "-M",
            name,
            "--register=yes",
            "--console=read-only",
        ]
        .map(String::from),
    );
    command.push(format!("test.mode=sleep={seconds}"));
    command
}

/// Boots a VM as the test user with `--register=yes` (with `extra` systemd-run options), and
/// checks while it runs that machined lists it, led by QEMU running as the user; afterwards
/// that vmspawn succeeded and the machine is gone.
fn boot_registered(container: &Container, name: &str, extra: &[&str]) {
    let vm = Background::start(container.as_tester(extra, &vm_command(name, 12)));
    assert!(
        container.wait_machine(name, true, Duration::from_secs(60)),
        "{name} was not registered; vmspawn said: {}{}\nhelper service: {}",
        vm.stdout(),
        vm.stderr(),
        container.helper_log()
    );
    assert_eq!(container.machine_property(name, "Class"), "s \"vm\"");
    assert_eq!(container.machine_property(name, "Service"), "s \"vmspawn\"");
    let leader = container.machine_property(name, "Leader");
    let leader = leader.strip_prefix("u ").expect("Leader is a u32");
    let comm = container.exec_ok(&["cat", &format!("/proc/{leader}/comm")]);
    assert_eq!(comm.trim(), "qemu-system-x86", "the leader is QEMU");
    let owner = container.exec_ok(&["stat", "-c", "%U", &format!("/proc/{leader}")]);
    assert_eq!(owner.trim(), TEST_USER, "QEMU runs as the user");
    let out = vm.finish(Duration::from_secs(150));
    out.assert_success();
    assert!(
        container.wait_machine(name, false, Duration::from_secs(10)),
        "{name} is still registered after vmspawn exited"
    );
}

#[test]
fn registers_with_a_real_machined_and_refuses_spoofed_leaders() {
    let container = Container::start("machined");
    container.start_helper_service();

    // Through the helper service.
    boot_registered(&container, "it-service", &[]);
    // The helper tries RegisterMachineEx (the leader as a pidfd) first, and machined before
    // 259 answers it with UnknownMethod: then it registers by pid.
    let version = container.exec_ok(&["systemctl", "--version"]);
    let version: u32 = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("systemctl --version: {version}"));
    let fell_back = container
        .helper_log()
        .contains("systemd-machined has no RegisterMachineEx");
    println!(
        "machined of systemd {version}: registered by {}",
        if fell_back { "pid" } else { "pidfd" }
    );
    assert_eq!(fell_back, version < 259, "{}", container.helper_log());

    // A user's attempts to register processes other than its own VM process.
    let probe = |action: &str, machine: &str, via_shell: bool| -> String {
        let probe = format!("/opt/vmspawn/helper-probe {SOCKET} {action} {machine}");
        let out = if via_shell {
            // The probe's parent is then the user's shell, not systemd.
            container.run_as_tester(&[], &["/bin/sh", "-c", &format!("{probe}; true")])
        } else {
            container.run_as_tester(&[], &probe.split(' ').collect::<Vec<_>>())
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            !container.has_machine(machine),
            "{action}: {machine} got registered"
        );
        text
    };
    let cases = [
        ("register-parent", "it-shell", true, "is not your child"),
        ("register-self", "it-self", false, "is not your child"),
        (
            "register-pid1",
            "it-init",
            false,
            "runs as uid 0, not as you",
        ),
        (
            "register-grandchild",
            "it-grand",
            false,
            "is not your child",
        ),
        (
            "register-child",
            "it-sleep",
            false,
            "runs 'sleep', which is not QEMU",
        ),
        (
            "register-fork",
            "it-fork",
            false,
            "has not started a program since you forked it",
        ),
        (
            "register-child-and-exit",
            "not-prefixed",
            false,
            "does not start with 'it-'",
        ),
    ];
    let mut failures = Vec::new();
    for (action, machine, via_shell, expected) in cases {
        let answer = probe(action, machine, via_shell);
        if answer.contains("Denied") && answer.contains(expected) {
            println!("case {action}: refused as expected");
        } else {
            failures.push(format!("{action}: {answer}"));
        }
    }
    // Leftover children of the probes.
    let _ = container.exec(&["pkill", "-u", TEST_USER, "-x", "sleep"]);
    let _ = container.exec(&["pkill", "-u", TEST_USER, "-x", "helper-probe"]);
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A registration ends with its connection: the probe registers its child, then exits
    // without unregistering. Its unit stays (RemainAfterExit, KillMode=process), so the child
    // keeps running in it and machined itself has no reason to drop the machine.
    container.exec_ok(&[
        "systemd-run",
        "--unit=it-orphan",
        "--uid=tester",
        "-p",
        "RemainAfterExit=yes",
        "-p",
        "KillMode=process",
        "/bin/sh",
        "-c",
        &format!(
            "/opt/vmspawn/helper-probe {SOCKET} register-child-and-exit it-orphan > /home/tester/orphan.out 2>&1"
        ),
    ]);
    let out_file = container.root.join("home/tester/orphan.out");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut output = String::new();
    while !output.contains("ANSWER") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        output = std::fs::read_to_string(&out_file).unwrap_or_default();
    }
    assert!(output.contains("ANSWER Registered"), "{output}");
    let child = output
        .lines()
        .find_map(|l| l.strip_prefix("CHILD "))
        .expect("child pid")
        .trim()
        .to_string();
    assert!(
        container.wait_machine("it-orphan", false, Duration::from_secs(10)),
        "it-orphan outlived the connection that registered it"
    );
    assert!(
        container
            .exec(&["test", "-d", &format!("/proc/{child}")])
            .status
            .success(),
        "the orphaned leader should still run (so machined did not drop it by itself)"
    );
    let _ = container.exec(&["systemctl", "stop", "it-orphan"]);
    let _ = container.exec(&[
        "pkill",
        "-u",
        TEST_USER,
        "-f",
        "qemu-system-x86_64 -machine none",
    ]);

    // Through the setuid helper (the service stopped): the same registration.
    container.exec_ok(&[
        "systemctl",
        "stop",
        "vmspawn-privhelper.socket",
        "vmspawn-privhelper.service",
    ]);
    let setuid = container.root.join("opt/vmspawn/setuid-helper");
    copy_executable(&privhelper_bin(), &setuid);
    std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    boot_registered(
        &container,
        "it-setuid",
        &["-E", "VMSPAWN_PRIVHELPER=/opt/vmspawn/setuid-helper"],
    );
}

/// A stand-in for a user's own machined (systemd 258 and later run one per user; this host's
/// 254 does not): a varlink server on `$XDG_RUNTIME_DIR/systemd/machine/io.systemd.Machine`
/// that passes on each call, with the name of the leader's process at the time of a Register.
/// It answers Register with `register_error`, if given.
fn fake_user_machined(
    socket: &Path,
    register_error: Option<&'static str>,
) -> std::sync::mpsc::Receiver<(serde_json::Value, String)> {
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    let (uid, gid) = tester_ids();
    std::os::unix::fs::chown(socket, Some(uid), Some(gid)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            loop {
                let mut message = Vec::new();
                if reader.read_until(0, &mut message).unwrap_or(0) == 0 {
                    break;
                }
                message.pop();
                let call: serde_json::Value = serde_json::from_slice(&message).unwrap();
                let leader_comm = call["parameters"]["leader"]
                    .as_u64()
                    .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok())
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                let reply = match (call["method"].as_str(), register_error) {
                    (Some("io.systemd.Machine.Register"), Some(error)) => {
                        serde_json::json!({ "error": error, "parameters": {} })
                    }
                    _ => serde_json::json!({ "parameters": {} }),
                };
                let _ = tx.send((call, leader_comm));
                let mut reply = serde_json::to_vec(&reply).unwrap();
                reply.push(0);
                if writer.write_all(&reply).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

#[test]
fn registers_with_the_users_own_machined_over_varlink() {
    let work = Workdir::new("user-machined", User::Tester);
    make_gpt_image(
        &work.file("guest.raw"),
        8,
        "77777777-2222-4333-8444-666666666666",
    );
    let runtime = work.file("xdg");
    std::fs::create_dir_all(runtime.join("systemd/machine")).unwrap();
    work.chown_all();
    let socket = runtime.join("systemd/machine/io.systemd.Machine");
    let guest = |name: &str, extra: &[&str]| {
        let mut cmd = work.vmspawn();
        cmd.env("XDG_RUNTIME_DIR", &runtime)
            .args(busybox_boot(false))
            .args(["-i", "guest.raw", "--console=read-only", "-M", name])
            .arg("--uuid=0123456789abcdef0123456789abcdef")
            .args(extra)
            .arg("test.mode=");
        cmd
    };

    let calls = fake_user_machined(&socket, None);
    let out = run(guest("mine", &[]), Duration::from_secs(150));
    out.assert_success();
    let (register, leader) = calls.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(register["method"], "io.systemd.Machine.Register");
    let expected = serde_json::json!({
        "name": "mine",
        "class": "vm",
        "service": "vmspawn",
        "id": "0123456789abcdef0123456789abcdef",
        "allocateUnit": true,
        "allowInteractiveAuthentication": false,
    });
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(&register["parameters"][key], value, "{key} in {register}");
    }
    assert_eq!(leader, "qemu-system-x86", "the leader is QEMU: {register}");
    let (unregister, _) = calls.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(unregister["method"], "io.systemd.Machine.Unregister");
    assert_eq!(unregister["parameters"]["name"], "mine");

    // --system: the system machined only, which a regular user reaches through the helper
    // (none here), never the user's own machined, which is not called.
    let mut cmd = guest("system", &["--system", "--register=yes"]);
    cmd.env(
        "VMSPAWN_PRIVHELPER_SOCKET",
        "/nonexistent/privhelper.socket",
    )
    .env("VMSPAWN_PRIVHELPER", "/nonexistent/vmspawn-privhelper");
    let out = run(cmd, Duration::from_secs(60));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("--system registers with the system machined"),
        "{}",
        out.stderr
    );
    assert!(
        calls.recv_timeout(Duration::from_millis(500)).is_err(),
        "--system called the user's machined"
    );
    std::fs::remove_file(&socket).unwrap();

    // machined refuses: with --register=yes vmspawn fails, and stops QEMU.
    let calls = fake_user_machined(&socket, Some("io.systemd.Machine.MachineExists"));
    let out = run(guest("taken", &["--register=yes"]), Duration::from_secs(60));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("Failed to register machine: io.systemd.Machine.MachineExists"),
        "{}",
        out.stderr
    );
    assert!(calls.recv_timeout(Duration::from_secs(5)).is_ok());
    std::fs::remove_file(&socket).unwrap();

    // Left unset, --register= tolerates the refusal: the VM runs unregistered. (--user: the
    // user's own machined, as the UID would choose.)
    let calls = fake_user_machined(&socket, Some("io.systemd.Machine.MachineExists"));
    run(guest("taken", &["--user"]), Duration::from_secs(150)).assert_success();
    let (register, _) = calls.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(register["method"], "io.systemd.Machine.Register");
    work.assert_no_leftovers();
}
