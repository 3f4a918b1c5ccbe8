//! The console driven through a real pseudo-terminal: interactive input reaches the guest
//! shell, Ctrl-] three times ends the VM, read-only mode ignores input.

use std::time::Duration;

use nix::sys::termios::{LocalFlags, tcgetattr};
use vmspawn_tests::*;

const BOOT: Duration = Duration::from_secs(150);

#[test]
fn interactive_console_input_reaches_guest_and_escape_ends_vm() {
    let work = Workdir::new("console-interactive", User::Tester);
    make_gpt_image(
        &work.file("guest.raw"),
        16,
        "11111111-2222-4333-8444-555555555555",
    );
    work.chown_all();
    let mut cmd = work.vmspawn();
    cmd.env("TERM", "xterm").args(busybox_boot(false)).args([
        "-i",
        "guest.raw",
        "--background=48;2;0;0;80",
        "test.mode=shell",
    ]);
    let mut session = PtySession::start(cmd);
    session.expect("Press Ctrl-] three times within 1s to kill VM.", BOOT);
    session.expect("VMTEST: shell-ready", BOOT);
    session.settle(Duration::from_millis(500));
    session.type_bytes(b"echo $((6*7))-marker\r");
    session.expect("42-marker", Duration::from_secs(30));
    // The background tint is applied to guest output.
    assert!(
        session.output().contains("\x1b[48;2;0;0;80m"),
        "no tint in output"
    );
    let vmspawn_pid = session.child.id();
    let qemu = children_named(vmspawn_pid, QEMU_COMM);
    assert_eq!(
        qemu.len(),
        1,
        "expected one QEMU child, got {qemu:?} of {:?}",
        children_of(vmspawn_pid)
    );
    for _ in 0..3 {
        session.type_bytes(&[0x1d]);
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = session.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "output:\n{}", session.output());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !process_exists(qemu[0]),
        "QEMU still running after the escape"
    );
    // The terminal is back in canonical mode.
    let slave_side = tcgetattr(session.master()).unwrap();
    assert!(
        slave_side.local_flags.contains(LocalFlags::ICANON),
        "terminal left in raw mode"
    );
    work.assert_no_leftovers();
}

#[test]
fn read_only_console_ignores_input() {
    let work = Workdir::new("console-read-only", User::Tester);
    make_gpt_image(
        &work.file("guest.raw"),
        16,
        "11111111-2222-4333-8444-555555555556",
    );
    work.chown_all();
    let mut cmd = work.vmspawn();
    cmd.env("TERM", "xterm")
        .env("VMSPAWN_SHUTDOWN_TIMEOUT_SEC", "3")
        .args(busybox_boot(false))
        .args(["-i", "guest.raw", "--console=read-only", "test.mode=shell"]);
    let mut session = PtySession::start(cmd);
    session.expect("VMTEST: shell-ready", BOOT);
    session.settle(Duration::from_millis(500));
    session.type_bytes(b"echo $((6*7))-marker\r");
    session.settle(Duration::from_secs(4));
    assert!(
        !session.output().contains("42-marker"),
        "read-only console forwarded input:\n{}",
        session.output()
    );
    // The shell guest ignores the power button: a stop request times out and stops QEMU.
    session.signal(nix::sys::signal::Signal::SIGTERM);
    let status = session.finish(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "output:\n{}", session.output());
    assert!(
        session.output().contains("did not power off within 3 s"),
        "{}",
        session.output()
    );
    work.assert_no_leftovers();
}

#[test]
fn automatic_tint_follows_the_terminal_background() {
    let work = Workdir::new("console-tint", User::Tester);
    make_gpt_image(
        &work.file("guest.raw"),
        16,
        "11111111-2222-4333-8444-555555555557",
    );
    work.chown_all();
    let mut cmd = work.vmspawn();
    cmd.env("TERM", "xterm")
        .args(busybox_boot(false))
        .args(["-i", "guest.raw", "test.mode="]);
    let mut session = PtySession::start(cmd);
    // vmspawn asks the terminal for its background colour (OSC 11); answer "black".
    session.expect("\x1b]11;?\x1b\\", Duration::from_secs(10));
    session.type_bytes(b"\x1b]11;rgb:0000/0000/0000\x1b\\");
    session.expect("VMTEST: done", BOOT);
    let status = session.finish(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "output:\n{}", session.output());
    // Black turned into the green tint: value 20 %, saturation 75 %, hue 130°.
    assert!(
        session.output().contains("\x1b[48;2;13;51;19m"),
        "no tint derived from the reply"
    );
    work.assert_no_leftovers();
}

#[test]
fn native_console_gives_qemu_the_terminal() {
    let work = Workdir::new("console-native", User::Tester);
    make_gpt_image(
        &work.file("guest.raw"),
        16,
        "11111111-2222-4333-8444-555555555558",
    );
    work.chown_all();
    let mut cmd = work.vmspawn();
    cmd.env("TERM", "xterm").args(busybox_boot(false)).args([
        "-i",
        "guest.raw",
        "--console=native",
        "test.mode=shell",
    ]);
    let mut session = PtySession::start(cmd);
    session.expect("Press Ctrl-a x to kill VM.", BOOT);
    session.expect("VMTEST: shell-ready", BOOT);
    session.settle(Duration::from_millis(500));
    session.type_bytes(b"echo $((6*7))-marker\r");
    session.expect("42-marker", Duration::from_secs(30));
    // QEMU's own escape: Ctrl-a x quits.
    session.type_bytes(b"\x01x");
    let status = session.finish(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "output:\n{}", session.output());
    work.assert_no_leftovers();
}
