//! sd_notify(3) to the service manager that started us, if any.
//!
//! Sends never block: a manager that stops reading (its queue holds only
//! net.unix.max_dgram_qlen datagrams, 10 by default) must not freeze the supervisor, which
//! also handles the stop signal and the console. What cannot be sent yet is merged into one
//! pending message (later assignments win, so READY=1 is never lost and STATUS= is the
//! newest) and retried by `flush`.

use std::cell::RefCell;
use std::io::ErrorKind;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// A socket to `$NOTIFY_SOCKET`, made before the launcher confines itself (its seccomp
/// allow-list has no `socket()`); without one, sending does nothing.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    pending: RefCell<Option<String>>,
}

/// How often the supervisor retries a pending message.
pub const RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

impl Notifier {
    pub fn new(socket: Option<&std::ffi::OsStr>) -> Notifier {
        let target = socket.filter(|s| !s.is_empty()).and_then(|socket| {
            let sender = UnixDatagram::unbound().ok()?;
            sender.set_nonblocking(true).ok()?;
            let bytes = std::os::unix::ffi::OsStrExt::as_bytes(socket);
            let address = match bytes.strip_prefix(b"@") {
                Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name),
                None => SocketAddr::from_pathname(std::path::Path::new(socket)),
            };
            Some((sender, address.ok()?))
        });
        Notifier {
            target,
            pending: RefCell::new(None),
        }
    }

    /// Sends `message` now, or after what is pending, merged with it.
    pub fn send(&self, message: &str) {
        if self.target.is_none() {
            return;
        }
        let pending = self.pending.borrow_mut().take();
        let merged = match pending {
            Some(earlier) => merge(&earlier, message),
            None => message.to_string(),
        };
        self.try_send(merged);
    }

    /// Retries the pending message, if any.
    pub fn flush(&self) {
        // Taken first: try_send puts it back if it still does not fit.
        let pending = self.pending.borrow_mut().take();
        if let Some(message) = pending {
            self.try_send(message);
        }
    }

    pub fn has_pending(&self) -> bool {
        self.pending.borrow().is_some()
    }

    fn try_send(&self, message: String) {
        let Some((sender, address)) = &self.target else {
            return;
        };
        match sender.send_to_addr(message.as_bytes(), address) {
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                *self.pending.borrow_mut() = Some(message);
            }
            // Sent, or the manager is gone: nothing to retry.
            _ => {}
        }
    }
}

/// Two sd_notify messages as one: the assignments of both, in first-seen order, each with
/// its latest value.
fn merge(earlier: &str, later: &str) -> String {
    let mut assignments: Vec<(&str, &str)> = Vec::new();
    for line in earlier.lines().chain(later.lines()) {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        match assignments.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => assignments.push((key, value)),
        }
    }
    assignments
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn merged_messages_keep_readiness_and_the_newest_status() {
        assert_eq!(
            merge("STATUS=VM started.\nX_VMSPAWN_LEADER_PID=7", "READY=1"),
            "STATUS=VM started.\nX_VMSPAWN_LEADER_PID=7\nREADY=1"
        );
        assert_eq!(
            merge("STATUS=VM running: a\nREADY=1", "STATUS=VM running: b"),
            "STATUS=VM running: b\nREADY=1"
        );
    }

    /// A manager that does not read: sends return at once, and what did not fit arrives,
    /// merged, once it reads again.
    #[test]
    fn a_manager_that_does_not_read_does_not_block_sending() {
        let dir = std::env::temp_dir().join(format!("vmspawn-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let manager = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(Some(path.as_os_str()));
        let started = Instant::now();
        for i in 0..200 {
            notifier.send(&format!("STATUS=step {i}"));
            if i == 100 {
                notifier.send("READY=1");
            }
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(notifier.has_pending());
        // Retrying while the queue is still full keeps the message pending.
        notifier.flush();
        assert!(notifier.has_pending());

        manager.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        let mut received = Vec::new();
        let mut drain = |received: &mut Vec<String>| {
            while let Ok(n) = manager.recv(&mut buf) {
                received.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        };
        drain(&mut received);
        notifier.flush();
        assert!(!notifier.has_pending());
        drain(&mut received);
        let last = received.last().unwrap();
        assert_eq!(last, "STATUS=step 199\nREADY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
