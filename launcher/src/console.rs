//! Console forwarding pieces: the Ctrl-] ×3 escape detector, the background tint that marks
//! VM output, terminal raw mode, and the pseudo-terminal QEMU's console is attached to.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use nix::sys::termios::{self, SetArg, Termios};

use crate::error::{Error, Result};
use crate::sys;

/// Detects Ctrl-] pressed three times, each within a second of the previous one, with no other
/// byte in between.
pub struct EscapeDetector {
    count: u8,
    last: Option<Instant>,
}

pub const ESCAPE_BYTE: u8 = 0x1d;
const ESCAPE_WINDOW: Duration = Duration::from_secs(1);

impl Default for EscapeDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl EscapeDetector {
    pub fn new() -> Self {
        EscapeDetector {
            count: 0,
            last: None,
        }
    }

    /// Feeds one input chunk read at `now`; true when it completes the escape sequence.
    pub fn feed(&mut self, chunk: &[u8], now: Instant) -> bool {
        for &byte in chunk {
            if byte != ESCAPE_BYTE {
                self.count = 0;
                self.last = None;
                continue;
            }
            let in_time = self
                .last
                .is_some_and(|t| now.duration_since(t) <= ESCAPE_WINDOW);
            self.count = if in_time { self.count + 1 } else { 1 };
            self.last = Some(now);
            if self.count >= 3 {
                self.count = 0;
                self.last = None;
                return true;
            }
        }
        false
    }
}

/// The tint for `--background=` unset: the terminal's own background turned green-ish.
pub fn tint_from_background(r: f64, g: f64, b: f64) -> String {
    let max = r.max(g).max(b);
    let value = max.max(0.2);
    let saturation = if max > 0.5 { 0.25 } else { 0.75 };
    let hue = 130.0_f64;
    // HSV to RGB.
    let c = value * saturation;
    let x = c * (1.0 - ((hue / 60.0) % 2.0 - 1.0).abs());
    let m = value - c;
    let (r1, g1, b1) = match (hue / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let to8 = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    format!("48;2;{};{};{}", to8(r1), to8(g1), to8(b1))
}

/// Parses an OSC 11 reply `ESC ] 11 ; rgb:RRRR/GGGG/BBBB (BEL | ESC \)` into 0..1 components.
pub fn parse_osc11_reply(reply: &[u8]) -> Option<(f64, f64, f64)> {
    let text = std::str::from_utf8(reply).ok()?;
    let start = text.find("rgb:")? + 4;
    let body: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == '/')
        .collect();
    let parts: Vec<&str> = body.split('/').collect();
    if parts.len() != 3 {
        return None;
    }
    let mut out = [0f64; 3];
    for (slot, part) in out.iter_mut().zip(parts) {
        if part.is_empty() || part.len() > 4 {
            return None;
        }
        let max = (1u32 << (4 * part.len())) - 1;
        *slot = f64::from(u32::from_str_radix(part, 16).ok()?) / f64::from(max);
    }
    Some((out[0], out[1], out[2]))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TintState {
    Text,
    Escape,
    Csi,
    Osc,
    OscEscape,
}

/// Bound on a CSI sequence we inspect; longer ones pass through untouched.
const MAX_CSI: usize = 64;

/// Inserts the background colour into guest output: at the start, after every line break,
/// after terminal resets, and into SGR sequences that reset the background.
pub struct Tinter {
    sgr: String,
    started: bool,
    state: TintState,
    csi: Vec<u8>,
}

impl Tinter {
    pub fn new(sgr: String) -> Self {
        Tinter {
            sgr,
            started: false,
            state: TintState::Text,
            csi: Vec::new(),
        }
    }

    fn color(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("\x1b[{}m\x1b[K", self.sgr).as_bytes());
    }

    /// Whether an SGR parameter list resets the background without setting a new one.
    fn resets_background(params: &[u8]) -> bool {
        let tokens: Vec<&[u8]> = params.split(|&b| b == b';').collect();
        let mut reset = false;
        let mut i = 0;
        while i < tokens.len() {
            let t = tokens[i];
            match t {
                b"" | b"0" | b"00" | b"49" => reset = true,
                b"38" | b"48" | b"58" => {
                    if t == b"48" {
                        reset = false;
                    }
                    // Skip the colour sub-sequence: 5;N or 2;R;G;B.
                    match tokens.get(i + 1) {
                        Some(&b"5") => i += 2,
                        Some(&b"2") => i += 4,
                        _ => {}
                    }
                }
                t if t.len() == 2 && t[0] == b'4' && (b'0'..=b'7').contains(&t[1]) => reset = false,
                t if t.len() == 3 && t.starts_with(b"10") && (b'0'..=b'7').contains(&t[2]) => {
                    reset = false
                }
                _ => {}
            }
            i += 1;
        }
        reset
    }

    pub fn process(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if !self.started && !input.is_empty() {
            self.started = true;
            self.color(out);
        }
        for &b in input {
            match self.state {
                TintState::Text => match b {
                    0x1b => self.state = TintState::Escape,
                    b'\n' | b'\r' => {
                        out.push(b);
                        self.color(out);
                        continue;
                    }
                    _ => {}
                },
                TintState::Escape => match b {
                    b'[' => {
                        self.state = TintState::Csi;
                        self.csi.clear();
                        out.push(b);
                        continue;
                    }
                    b']' => self.state = TintState::Osc,
                    b'c' => {
                        out.push(b);
                        self.state = TintState::Text;
                        self.color(out);
                        continue;
                    }
                    _ => self.state = TintState::Text,
                },
                TintState::Csi => {
                    if (0x40..=0x7e).contains(&b) {
                        self.state = TintState::Text;
                        let over = self.csi.len() > MAX_CSI;
                        if !over {
                            out.extend_from_slice(&self.csi);
                        }
                        if b == b'm' && !over && Self::resets_background(&self.csi) {
                            out.push(b';');
                            out.extend_from_slice(self.sgr.as_bytes());
                        }
                        out.push(b);
                        if b == b'p' && self.csi == b"!" {
                            self.color(out);
                        }
                        continue;
                    }
                    if self.csi.len() <= MAX_CSI {
                        self.csi.push(b);
                        if self.csi.len() > MAX_CSI {
                            // Too long to inspect: flush what we held and pass the rest through.
                            out.extend_from_slice(&self.csi);
                        }
                    } else {
                        out.push(b);
                    }
                    continue;
                }
                TintState::Osc => match b {
                    0x07 => self.state = TintState::Text,
                    0x1b => self.state = TintState::OscEscape,
                    _ => {}
                },
                TintState::OscEscape => {
                    self.state = if b == b'\\' {
                        TintState::Text
                    } else {
                        TintState::Osc
                    }
                }
            }
            out.push(b);
        }
    }

    /// What to write when forwarding ends: back to normal colours, clear the tinted rest.
    pub fn finish(&self) -> &'static [u8] {
        if self.started { b"\x1b[0m\x1b[J" } else { b"" }
    }
}

/// Puts a terminal into raw mode and restores it when dropped.
pub struct RawMode {
    fd: BorrowedFd<'static>,
    saved: Termios,
}

impl RawMode {
    pub fn enter(fd: BorrowedFd<'static>) -> Result<Self> {
        let saved = termios::tcgetattr(fd)
            .map_err(|e| Error::io("Failed to get terminal attributes", e))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw)
            .map_err(|e| Error::io("Failed to set terminal to raw mode", e))?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// Allocates a pseudo-terminal pair; returns (master, slave).
pub fn open_pty() -> Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::OFlag;
    use nix::pty;
    let master = pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("Failed to setup pty", e))?;
    pty::grantpt(&master).map_err(|e| Error::io("Failed to setup pty", e))?;
    pty::unlockpt(&master).map_err(|e| Error::io("Failed to setup pty", e))?;
    let name = pty::ptsname_r(&master).map_err(|e| Error::io("Failed to setup pty", e))?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&name)
        .map_err(|e| Error::io(format!("Failed to open pty {name}"), e))?;
    let master = master
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io("Failed to setup pty", e))?;
    Ok((master, OwnedFd::from(slave)))
}

/// Copies the window size of `from` (a terminal) to `to`.
pub fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    if let Some(size) = sys::window_size(from).filter(|s| s.ws_col > 0) {
        sys::set_window_size(to, &size);
    }
}

pub fn set_nonblocking(fd: BorrowedFd<'_>) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    if let Ok(flags) = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd.as_raw_fd(),
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
    }
}

/// True when colours and escape sequences should not be written to this output.
pub fn is_dumb(stdout_is_tty: bool, var: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    if !stdout_is_tty || var("NO_COLOR").is_some() {
        return true;
    }
    if var("TERM").is_none_or(|t| t == "dumb") {
        return true;
    }
    var("SYSTEMD_COLORS")
        .is_some_and(|v| crate::parse::parse_bool(&v.to_string_lossy()) == Some(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_needs_three_quick_presses() {
        let t0 = Instant::now();
        let mut d = EscapeDetector::new();
        assert!(!d.feed(&[ESCAPE_BYTE], t0));
        assert!(!d.feed(&[ESCAPE_BYTE], t0 + Duration::from_millis(500)));
        assert!(d.feed(&[ESCAPE_BYTE], t0 + Duration::from_millis(900)));
        // Too slow.
        let mut d = EscapeDetector::new();
        d.feed(&[ESCAPE_BYTE], t0);
        d.feed(&[ESCAPE_BYTE], t0 + Duration::from_millis(1500));
        assert!(!d.feed(&[ESCAPE_BYTE], t0 + Duration::from_millis(2600)));
        // Another byte in between resets.
        let mut d = EscapeDetector::new();
        assert!(!d.feed(&[ESCAPE_BYTE, ESCAPE_BYTE, b'a', ESCAPE_BYTE], t0));
        assert!(d.feed(&[ESCAPE_BYTE, ESCAPE_BYTE, ESCAPE_BYTE], t0));
    }

    #[test]
    fn tint_colours() {
        // Black terminal: value raised to 20 %, saturation 75 %.
        assert_eq!(tint_from_background(0.0, 0.0, 0.0), "48;2;13;51;19");
        // White terminal: saturation 25 %.
        assert_eq!(tint_from_background(1.0, 1.0, 1.0), "48;2;191;255;202");
        assert_eq!(
            parse_osc11_reply(b"\x1b]11;rgb:ffff/0000/8080\x1b\\"),
            Some((1.0, 0.0, 32896.0 / 65535.0))
        );
        assert_eq!(parse_osc11_reply(b"garbage"), None);
    }

    #[test]
    fn tinter_inserts_colour() {
        let mut t = Tinter::new("48;2;1;2;3".into());
        let mut out = Vec::new();
        t.process(b"a\nb\x1b[0mc\x1b[1;41md", &mut out);
        let c = "\x1b[48;2;1;2;3m\x1b[K";
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{c}a\n{c}b\x1b[0;48;2;1;2;3mc\x1b[1;41md")
        );
        // Sequences split across chunks.
        let mut out = Vec::new();
        t.process(b"\x1b[", &mut out);
        t.process(b"m\x1b]0;title\x07x", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\x1b[;48;2;1;2;3m\x1b]0;title\x07x"
        );
    }
}
