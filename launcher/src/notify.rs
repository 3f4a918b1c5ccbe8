//! sd_notify(3) to the service manager that started us, if any.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// A socket to `$NOTIFY_SOCKET`, made before the launcher confines itself (its seccomp
/// allow-list has no `socket()`); without one, sending does nothing.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    pub fn new(socket: Option<&std::ffi::OsStr>) -> Notifier {
        let target = socket.filter(|s| !s.is_empty()).and_then(|socket| {
            let sender = UnixDatagram::unbound().ok()?;
            let bytes = std::os::unix::ffi::OsStrExt::as_bytes(socket);
            let address = match bytes.strip_prefix(b"@") {
                Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name),
                None => SocketAddr::from_pathname(std::path::Path::new(socket)),
            };
            Some((sender, address.ok()?))
        });
        Notifier { target }
    }

    pub fn send(&self, message: &str) {
        if let Some((sender, address)) = &self.target {
            let _ = sender.send_to_addr(message.as_bytes(), address);
        }
    }
}
