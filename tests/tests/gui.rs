//! `--console=gui` in a real window: an X server (Xvfb) of the test user, a busybox guest whose
//! console shows in QEMU's GTK window (found with xdotool, its title naming the machine), text
//! the guest prints checked in a screenshot, a command typed into the window with xdotool whose
//! effect the host sees (a marker on the guest's disk), and QEMU's quit key (what closing the
//! window does) ending the VM cleanly. Then the same with QEMU's GTK module missing: a clear
//! error naming the package, a non-zero exit and nothing left behind.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmspawn_tests::*;

const BOOT: Duration = Duration::from_secs(240);
const MACHINE: &str = "gui-test";

/// An Xvfb of the test user, with an X authority file, listening only on its path socket
/// (`-nolisten local`: no abstract socket, so QEMU's abstract Unix sockets stay scoped).
struct Xvfb {
    child: Child,
    display: String,
    xauthority: PathBuf,
}

impl Xvfb {
    fn start(work: &Workdir) -> Xvfb {
        let number = (90..200)
            .find(|n| {
                !Path::new(&format!("/tmp/.X{n}-lock")).exists()
                    && !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            })
            .expect("a free X display number");
        let display = format!(":{number}");
        let xauthority = work.file("home/.Xauthority");
        let cookie: String = std::fs::read("/proc/sys/kernel/random/uuid")
            .map(|u| String::from_utf8_lossy(&u).replace(['-', '\n'], ""))
            .unwrap();
        let (uid, gid) = tester_ids();
        let status = Command::new("xauth")
            .args(["-q", "-f"])
            .arg(&xauthority)
            .args(["add", &display, ".", &cookie])
            .uid(uid)
            .gid(gid)
            .status()
            .expect("run xauth (tests/setup-host.sh installs it)");
        assert!(status.success(), "xauth add");
        let child = Command::new("Xvfb")
            .arg(&display)
            .arg("-auth")
            .arg(&xauthority)
            .args(["-nolisten", "tcp", "-nolisten", "local"])
            .args(["-screen", "0", "1024x768x24"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .uid(uid)
            .gid(gid)
            .spawn()
            .expect("start Xvfb (tests/setup-host.sh installs xvfb)");
        let x = Xvfb {
            child,
            display,
            xauthority,
        };
        assert!(
            wait_for_path(
                Path::new(&format!("/tmp/.X11-unix/X{number}")),
                Duration::from_secs(20)
            ),
            "Xvfb did not create its socket"
        );
        x
    }

    /// An X client command (xdotool, xwd) as the test user, on this display.
    fn client(&self, program: &str) -> Command {
        let (uid, gid) = tester_ids();
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("DISPLAY", &self.display)
            .env("XAUTHORITY", &self.xauthority)
            .stdin(Stdio::null())
            .uid(uid)
            .gid(gid);
        cmd
    }

    fn xdotool(&self, args: &[&str]) -> String {
        let out = self.client("xdotool").args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// SIGTERM, so that Xvfb removes its socket and lock file; SIGKILL if it has not gone in 5 s.
impl Drop for Xvfb {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A screenshot: whether each pixel is lit (the console's text colour, not its black).
struct Shot {
    width: usize,
    height: usize,
    lit: Vec<bool>,
}

/// Parses an XWD image (ZPixmap, 24/32 bits per pixel) as `xwd` writes it.
fn parse_xwd(data: &[u8]) -> Shot {
    let field = |i: usize| u32::from_be_bytes(data[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
    let (header_size, format, width, height) = (field(0), field(2), field(4), field(5));
    let (byte_order, bits_per_pixel, bytes_per_line, ncolors) =
        (field(7), field(11), field(12), field(19));
    assert_eq!(format, 2, "XWD: not a ZPixmap");
    assert_eq!(bits_per_pixel, 32, "XWD: {bits_per_pixel} bits per pixel");
    let pixels = &data[header_size + ncolors * 12..];
    let mut lit = Vec::with_capacity(width * height);
    for y in 0..height {
        for x in 0..width {
            let at = y * bytes_per_line + x * 4;
            let px: [u8; 4] = pixels[at..at + 4].try_into().unwrap();
            let v = if byte_order == 0 {
                u32::from_le_bytes(px)
            } else {
                u32::from_be_bytes(px)
            };
            let (r, g, b) = ((v >> 16) & 255, (v >> 8) & 255, v & 255);
            lit.push(r + g + b > 3 * 64);
        }
    }
    Shot { width, height, lit }
}

/// Where the row of console cells `pattern` (true: a reverse-video space, every pixel of its
/// cell lit; false: a plain space, none lit) appears in the screenshot, whatever the console
/// font's cell size (4 to 16 pixels wide, at least 6 high).
fn find_cells(shot: &Shot, pattern: &[bool]) -> Option<(usize, usize)> {
    let lit = |x: usize, y: usize| shot.lit[y * shot.width + x];
    let row_matches = |x0: usize, y: usize, w: usize| {
        x0 + pattern.len() * w <= shot.width
            && pattern
                .iter()
                .enumerate()
                .all(|(i, &on)| (0..w).all(|dx| lit(x0 + i * w + dx, y) == on))
            // The row ends there (a lit cell would make it a longer one).
            && (x0 == 0 || !lit(x0 - 1, y))
    };
    for y in 0..shot.height {
        for x0 in 0..shot.width {
            if !lit(x0, y) || (x0 > 0 && lit(x0 - 1, y)) {
                continue;
            }
            for w in 4..=16 {
                if !row_matches(x0, y, w) {
                    continue;
                }
                let h = (y..shot.height)
                    .take_while(|&yy| row_matches(x0, yy, w))
                    .count();
                if h >= 6 {
                    return Some((x0, y));
                }
            }
        }
    }
    None
}

#[test]
fn gui_console_shows_the_guest_in_a_window_and_takes_typed_input() {
    let work = Workdir::new("gui", User::Tester);
    let x = Xvfb::start(&work);
    // The guest's disk, where the typed command leaves its marker.
    let disk = work.write("guest.raw", &vec![0u8; 1 << 20]);

    let mut cmd = work.vmspawn();
    cmd.env("DISPLAY", &x.display)
        .env("XAUTHORITY", &x.xauthority)
        .args(busybox_boot(false))
        .args([
            "--tpm=no",
            "--vsock=no",
            "--console=gui",
            "-M",
            MACHINE,
            "-i",
            "guest.raw",
        ])
        .args(["test.mode=shell", "root=none"]);
    let mut vm = Background::start(cmd);

    // QEMU's window, its title naming the machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    let window = loop {
        let found = x.xdotool(&["search", "--name", &format!("\\({MACHINE}\\)")]);
        if let Some(id) = found.lines().next() {
            break id.trim().to_string();
        }
        if let Some(status) = vm.child.try_wait().unwrap() {
            panic!(
                "vmspawn exited ({status}) before QEMU's window showed\nstderr:\n{}",
                vm.stderr()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no window titled '({MACHINE})' within 60 s\nstderr:\n{}",
            vm.stderr()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let title = x.xdotool(&["getwindowname", &window]);
    assert!(
        title.trim().starts_with(&format!("QEMU ({MACHINE})")),
        "window title {title:?}"
    );

    // The guest prints a row of reverse-video and plain spaces on its framebuffer console and
    // writes a marker to its disk when the command typed into the window runs. Typed again
    // every round until the row shows (the first rounds may come before the shell reads).
    let cells = "1101110100111";
    let pattern: Vec<bool> = cells.bytes().map(|b| b == b'1').collect();
    let row: String = cells
        .split_inclusive('0')
        .map(|part| {
            let on = part.trim_end_matches('0').len();
            let off = part.len() - on;
            format!("\\033[7m{}\\033[0m{}", " ".repeat(on), " ".repeat(off))
        })
        .collect();
    let command = format!("printf '{row}\\n'; echo GUI-TYPED-OK >/dev/vda; sync");
    let start = Instant::now();
    let mut found = None;
    let mut rounds = 0;
    while start.elapsed() < BOOT {
        std::thread::sleep(Duration::from_secs(10));
        if let Some(status) = vm.child.try_wait().unwrap() {
            panic!(
                "vmspawn exited ({status}) while the guest booted\nstderr:\n{}",
                vm.stderr()
            );
        }
        let shot = x
            .client("xwd")
            .args(["-silent", "-id", &window])
            .output()
            .unwrap();
        assert!(shot.status.success(), "xwd failed");
        let shot = parse_xwd(&shot.stdout);
        if let Some(at) = find_cells(&shot, &pattern) {
            found = Some((at, shot.width, shot.height));
            break;
        }
        x.xdotool(&["windowfocus", "--sync", &window]);
        // A round typed while the guest still booted may have lost its start and left the
        // shell inside an open quote: Ctrl+C discards that line.
        x.xdotool(&["key", "ctrl+c"]);
        x.xdotool(&["type", "--delay", "20", &command]);
        x.xdotool(&["key", "Return"]);
        rounds += 1;
    }
    let ((x0, y0), width, height) = found.unwrap_or_else(|| {
        let last = "/var/tmp/vmspawn-it-gui-last-screenshot.xwd";
        if let Ok(shot) = x.client("xwd").args(["-silent", "-id", &window]).output() {
            let _ = std::fs::write(last, shot.stdout);
        }
        panic!(
            "the guest's console row never showed in the {MACHINE} window ({rounds} rounds typed; the \
             last screenshot is in {last})\nstderr:\n{}",
            vm.stderr()
        )
    });
    eprintln!(
        "gui: the row showed at {x0},{y0} of the {width}x{height} window after {:.1} s ({rounds} rounds typed)",
        start.elapsed().as_secs_f64()
    );
    let written = std::fs::read(&disk).unwrap();
    assert!(
        written.starts_with(b"GUI-TYPED-OK\n"),
        "the typed command did not reach the guest's disk: {:?}",
        String::from_utf8_lossy(&written[..32])
    );

    // Ctrl+Alt+Q is QEMU's GTK "Quit", the function closing the window calls: the VM ends and
    // vmspawn exits 0, leaving nothing behind.
    x.xdotool(&["windowfocus", "--sync", &window]);
    x.xdotool(&["key", "ctrl+alt+q"]);
    let out = vm.finish(Duration::from_secs(60));
    out.assert_success();
    work.assert_no_leftovers();
    assert!(
        x.xdotool(&["search", "--name", &format!("\\({MACHINE}\\)")])
            .trim()
            .is_empty(),
        "QEMU's window outlived the VM"
    );

    // The same without QEMU's GTK module (a private mount namespace in which QEMU's module
    // directory lacks ui-gtk.so): an error naming the package, exit 1, nothing left behind.
    let modules = Path::new("/usr/lib/x86_64-linux-gnu/qemu");
    let without = work.file("modules-without-gtk");
    std::fs::create_dir_all(&without).unwrap();
    for entry in std::fs::read_dir(modules).unwrap().flatten() {
        if entry.file_name() != "ui-gtk.so" {
            std::fs::copy(entry.path(), without.join(entry.file_name())).unwrap();
        }
    }
    let (uid, gid) = tester_ids();
    let mut cmd = Command::new("unshare");
    cmd.env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", work.file("home"))
        .env("TMPDIR", work.tmp())
        .env("LANG", "C.UTF-8")
        .env("DISPLAY", &x.display)
        .env("XAUTHORITY", &x.xauthority)
        .current_dir(&work.path)
        .stdin(Stdio::null())
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$2" && u=$3 g=$4 && shift 4 && exec setpriv --reuid="$u" --regid="$g" --clear-groups -- "$@""#)
        .arg("sh")
        .arg(&without)
        .arg(modules)
        .arg(uid.to_string())
        .arg(gid.to_string())
        .arg(vmspawn_bin())
        .args(busybox_boot(false))
        .args(["--tpm=no", "--console=gui", "-M", MACHINE, "-i", "guest.raw", "root=none"]);
    let out = run(cmd, Duration::from_secs(60));
    assert_eq!(out.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains("has no GTK display")
            && out.stderr.contains("apt install qemu-system-gui"),
        "stderr:\n{}",
        out.stderr
    );
    work.assert_no_leftovers();
}
