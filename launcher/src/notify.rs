//! sd_notify(3) to the service manager that started us, if any.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `message` to `$NOTIFY_SOCKET`; silently does nothing without one.
pub fn notify(socket: Option<&std::ffi::OsStr>, message: &str) {
    let Some(socket) = socket.filter(|s| !s.is_empty()) else {
        return;
    };
    let Ok(sender) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(socket);
    let address = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        SocketAddr::from_abstract_name(abstract_name)
    } else {
        SocketAddr::from_pathname(std::path::Path::new(socket))
    };
    if let Ok(address) = address {
        let _ = sender.send_to_addr(message.as_bytes(), &address);
    }
}
