//! The privileged helper with real components: a guest of the unprivileged test user gets a
//! TAP from the helper (service mode and setuid mode) inside a network namespace the test
//! creates, reaches the host end, and the TAP goes away with the VM; two users' guests with
//! TAPs from the helper on one bridge reach each other; policy denials and a missing helper
//! give clear errors; the helper runs with no effective capability.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use vmspawn_tests::*;

const BOOT: Duration = Duration::from_secs(150);

fn policy_for(user: &str, max_taps: u32) -> String {
    format!(
        "[[allow]]\nusers = [\"{user}\"]\noperations = [\"create-tap\", \"open-kvm\"]\nmax-taps = {max_taps}\npolkit = \"no\"\n"
    )
}

fn net_guest(work: &Workdir, netns: &Netns, helper_socket: &str) -> std::process::Command {
    make_gpt_image(
        &work.file("guest.raw"),
        8,
        "77777777-2222-4333-8444-555555555555",
    );
    work.chown_all();
    let mut cmd = work.vmspawn_in_netns(netns);
    cmd.env("VMSPAWN_PRIVHELPER_SOCKET", helper_socket)
        .env("VMSPAWN_PRIVHELPER", "/nonexistent/vmspawn-privhelper")
        .args(busybox_boot(false))
        .args(["-i", "guest.raw", "--console=read-only", "-n"]);
    cmd
}

fn wait_gone(netns: &Netns, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !netns.taps().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        netns.taps().is_empty(),
        "TAP devices left behind: {:?}",
        netns.taps()
    );
}

#[test]
fn guest_reaches_the_host_through_a_tap_from_the_helper_service() {
    let netns = Netns::new("svc");
    let helper = HelperService::start(&netns, "svc", &policy_for(TEST_USER, 2));
    // Between requests the helper holds no effective capability and is confined.
    assert_eq!(helper.status("CapEff:"), "0000000000000000");
    assert_eq!(
        helper.status("CapPrm:"),
        format!("{:016x}", 1u64 << 12),
        "only CAP_NET_ADMIN may be permitted"
    );
    assert_eq!(helper.status("NoNewPrivs:"), "1");
    assert_eq!(helper.status("Seccomp:"), "2");

    let work = Workdir::new("tap-service", User::Tester);
    let mut cmd = net_guest(&work, &netns, helper.socket.to_str().unwrap());
    cmd.arg("test.mode=net=10.123.0.2/24@10.123.0.1");
    let vm = Background::start(cmd);
    let tap = netns.wait_for_tap(BOOT);
    let details = netns.ip(&["-d", "link", "show", &tap]);
    assert!(
        details.contains(&format!("user {TEST_USER}")),
        "TAP not owned by the caller: {details}"
    );
    assert!(
        details.contains("persist off"),
        "TAP must not be persistent: {details}"
    );
    netns.ip(&["addr", "add", "10.123.0.1/24", "dev", &tap]);
    let out = vm.finish(BOOT);
    out.assert_success();
    assert!(out.has("net-ok 10.123.0.1"), "{:?}", out.vmtest());
    assert_eq!(helper.status("CapEff:"), "0000000000000000");
    wait_gone(&netns, Duration::from_secs(5));
    work.assert_no_leftovers();
}

#[test]
fn policy_denial_is_explained_and_creates_nothing() {
    let netns = Netns::new("deny");
    let helper = HelperService::start(&netns, "deny", &policy_for("someone-else", 2));
    let work = Workdir::new("tap-denied", User::Tester);
    let mut cmd = net_guest(&work, &netns, helper.socket.to_str().unwrap());
    cmd.arg("test.mode=");
    let out = run(cmd, Duration::from_secs(60));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("The privileged helper refused to create a TAP device"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("'{TEST_USER}'")),
        "the denial should name the user: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("create-tap"),
        "the denial should name the operation: {}",
        out.stderr
    );
    assert!(netns.taps().is_empty());
    work.assert_no_leftovers();
}

#[test]
fn quota_limits_taps_per_user() {
    let netns = Netns::new("quota");
    let helper = HelperService::start(&netns, "quota", &policy_for(TEST_USER, 1));
    let work = Workdir::new("tap-quota", User::Tester);
    let mut first = net_guest(&work, &netns, helper.socket.to_str().unwrap());
    first.args(["-M", "first", "test.mode=sleep=60"]);
    let vm = Background::start(first);
    netns.wait_for_tap(BOOT);
    let mut second = work.vmspawn_in_netns(&netns);
    second
        .env("VMSPAWN_PRIVHELPER_SOCKET", &helper.socket)
        .args(busybox_boot(false))
        .args([
            "-i",
            "guest.raw",
            "-M",
            "second",
            "--console=read-only",
            "-n",
            "test.mode=",
        ]);
    let out = run(second, Duration::from_secs(60));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("the limit of 1"), "{}", out.stderr);
    assert_eq!(netns.taps().len(), 1);
    vm.signal(Signal::SIGKILL);
    let _ = vm.finish(Duration::from_secs(20));
    wait_gone(&netns, Duration::from_secs(10));
}

#[test]
fn missing_helper_is_a_clear_error() {
    let netns = Netns::new("none");
    let work = Workdir::new("tap-no-helper", User::Tester);
    let mut cmd = net_guest(&work, &netns, "/nonexistent/privhelper.socket");
    cmd.arg("test.mode=");
    let out = run(cmd, Duration::from_secs(60));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("--network-tap needs the privileged helper, but no helper service listens on /nonexistent/privhelper.socket"),
        "{}",
        out.stderr
    );
    work.assert_no_leftovers();
}

#[test]
fn setuid_helper_tap_vanishes_when_the_launcher_is_killed() {
    let netns = Netns::new("suid");
    let helper = SetuidHelper::install(&policy_for(TEST_USER, 2));
    let work = Workdir::new("tap-setuid", User::Tester);
    let mut cmd = net_guest(&work, &netns, "/nonexistent/privhelper.socket");
    // A poisoned environment must not reach or affect the setuid helper.
    cmd.env("VMSPAWN_PRIVHELPER", &helper.binary)
        .env("LD_PRELOAD", "/nonexistent/evil.so")
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/evil")
        .arg("test.mode=sleep=60");
    let mut vm = Background::start(cmd);
    let tap = netns.wait_for_tap(BOOT);
    let details = netns.ip(&["-d", "link", "show", &tap]);
    assert!(details.contains(&format!("user {TEST_USER}")), "{details}");
    vm.wait_for_line("boot", BOOT);
    let qemu = children_named(vm.child.id(), QEMU_COMM);
    assert_eq!(qemu.len(), 1, "{:?}", children_of(vm.child.id()));
    vm.signal(Signal::SIGKILL);
    let _ = vm.finish(Duration::from_secs(10));
    // QEMU follows the launcher (parent-death signal), and the TAP goes with the last fd.
    wait_gone(&netns, Duration::from_secs(10));
    assert!(
        qemu.iter()
            .all(|&pid| wait_process_exit(pid, Duration::from_secs(10))),
        "QEMU survived"
    );
}

/// The guest's MAC address (`nic eth0 mac=...`).
fn guest_mac(out: &Finished) -> String {
    out.vmtest()
        .iter()
        .find_map(|l| l.strip_prefix("nic eth0 mac="))
        .unwrap_or_else(|| panic!("the guest reported no eth0: {:?}", out.vmtest()))
        .to_string()
}

#[test]
fn two_users_vms_on_one_bridge_ping_each_other() {
    const BRIDGE: &str = "vmbr0";
    let others = TempUsers::create("vmspbr", 1);
    let second = others.names[0].clone();
    let netns = Netns::new("bridge");
    netns.ip(&["link", "add", BRIDGE, "type", "bridge"]);
    netns.ip(&["link", "set", BRIDGE, "up"]);
    let policy = format!(
        "[[allow]]\nusers = [\"{TEST_USER}\", \"{second}\"]\noperations = [\"create-tap\"]\n\
         bridges = [\"{BRIDGE}\"]\nmax-taps = 1\npolkit = \"no\"\n"
    );
    // The test user's VM gets its TAP from the service, the second user's from the setuid
    // helper: both modes, one bridge.
    let helper = HelperService::start(&netns, "bridge", &policy);
    let setuid = SetuidHelper::install(&policy);

    let work = Workdir::new("bridge-a", User::Tester);
    let mut first = net_guest(&work, &netns, helper.socket.to_str().unwrap());
    first.env("VMSPAWN_PRIVHELPER_BRIDGE", BRIDGE).args([
        "-M",
        "bridge-a",
        "test.mode=net=10.77.0.2/24@10.77.0.3,sleep=10",
    ]);

    let (uid, gid) = TempUsers::ids(&second);
    let dir = PathBuf::from(format!(
        "/var/tmp/vmspawn-it-{}-bridge-b",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["tmp", "home"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    make_gpt_image(
        &dir.join("guest.raw"),
        8,
        "77777777-2222-4333-8444-666666666666",
    );
    let chown = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(chown.success());
    let mut other = vmspawn_as(uid, gid, &dir, Some(&netns));
    other
        .env(
            "VMSPAWN_PRIVHELPER_SOCKET",
            "/nonexistent/privhelper.socket",
        )
        .env("VMSPAWN_PRIVHELPER", &setuid.binary)
        .env("VMSPAWN_PRIVHELPER_BRIDGE", BRIDGE)
        .args(busybox_boot(false))
        .args([
            "-i",
            "guest.raw",
            "--console=read-only",
            "-n",
            "-M",
            "bridge-b",
        ])
        .arg("test.mode=net=10.77.0.3/24@10.77.0.2,sleep=10");

    let a = Background::start(first);
    let b = Background::start(other);
    // Both TAPs, each owned by its user, are ports of the bridge with a 0xFE MAC.
    let deadline = Instant::now() + BOOT;
    while netns.taps().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let taps = netns.taps();
    assert_eq!(taps.len(), 2, "{taps:?}\n{}\n{}", a.stderr(), b.stderr());
    let mut owners = Vec::new();
    for tap in &taps {
        let details = netns.ip(&["-d", "link", "show", tap]);
        assert!(details.contains(&format!("master {BRIDGE}")), "{details}");
        assert!(details.contains("link/ether fe:"), "{details}");
        owners.push(
            details
                .split_whitespace()
                .skip_while(|w| *w != "user")
                .nth(1)
                .unwrap_or_default()
                .to_string(),
        );
    }
    owners.sort();
    let mut expected = vec![TEST_USER.to_string(), second.clone()];
    expected.sort();
    assert_eq!(owners, expected, "each user holds one TAP");

    let (a, b) = (a.finish(BOOT), b.finish(BOOT));
    a.assert_success();
    b.assert_success();
    assert!(a.has("net-ok 10.77.0.3"), "{:?}", a.vmtest());
    assert!(b.has("net-ok 10.77.0.2"), "{:?}", b.vmtest());
    let (mac_a, mac_b) = (guest_mac(&a), guest_mac(&b));
    println!("guest MACs: {mac_a} ({TEST_USER}), {mac_b} ({second})");
    assert_ne!(mac_a, mac_b, "two VMs on one bridge must not share a MAC");
    for mac in [&mac_a, &mac_b] {
        assert_ne!(mac, "52:54:00:12:34:56", "QEMU's default MAC");
    }
    wait_gone(&netns, Duration::from_secs(10));
    work.assert_no_leftovers();
    let left: Vec<_> = std::fs::read_dir(dir.join("tmp"))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "{second}'s vmspawn left {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
