//! vmspawn-vsock-proxy: connects standard input and output to a port of a guest whose vsock
//! device is vhost-device-vsock (vmspawn's vsock where the host has no /dev/vhost-vsock).
//! Its host side is a Unix socket that takes `CONNECT <port>\n`, answers `OK <host port>\n`,
//! and then carries the connection. Meant as ssh's ProxyCommand:
//!
//!   ssh -i KEY -o ProxyCommand='vmspawn-vsock-proxy SOCKET 22' root@NAME
//!
//! SOCKET may also be written `vsock-mux/SOCKET`, the host name systemd-ssh-proxy uses for
//! such sockets (vmspawn registers it as the machine's sshAddress).

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: vmspawn-vsock-proxy SOCKET|vsock-mux/SOCKET [PORT]\n\
    Connects stdin and stdout to guest port PORT (default 22) through the vhost-user vsock \
    socket SOCKET of a VM vmspawn runs (its path is in vmspawn's 'SSH:' line and in the \
    machine's sshAddress).";
/// The longest answer line accepted ("OK 4294967295\n" is 14 bytes).
const ANSWER_MAX: usize = 64;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmspawn-vsock-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let (socket, port) = match args.as_slice() {
        [socket] => (socket.as_str(), 22),
        [socket, port] => (
            socket.as_str(),
            port.parse::<u32>()
                .map_err(|_| format!("invalid port '{port}'\n{USAGE}"))?,
        ),
        _ => return Err(USAGE.into()),
    };
    if socket == "-h" || socket == "--help" {
        println!("{USAGE}");
        return Ok(());
    }
    let socket = socket.strip_prefix("vsock-mux/").unwrap_or(socket);
    let stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot connect to '{socket}': {e} (is the VM running, and is this its vsock socket?)"
        )
    })?;
    handshake(&stream, port)?;
    let mut to_guest = stream
        .try_clone()
        .map_err(|e| format!("cannot duplicate the connection: {e}"))?;
    // stdin → guest in a thread; guest → stdout here. The proxy ends when the guest side does.
    std::thread::spawn(move || {
        let _ = relay(&mut std::io::stdin().lock(), &mut to_guest);
        let _ = to_guest.shutdown(Shutdown::Write);
    });
    let mut from_guest = &stream;
    relay(&mut from_guest, &mut std::io::stdout().lock())
        .map_err(|e| format!("connection to guest port {port} failed: {e}"))
}

/// Copies until EOF, writing each read at once. (Not std::io::copy: between a pipe and this
/// socket it splices, and ssh's key exchange over vhost-device-vsock then stalls.)
fn relay(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buffer[..n])?;
        to.flush()?;
    }
}

/// `CONNECT <port>\n`, then one answer line that must be `OK <host port>`.
fn handshake(mut stream: &UnixStream, port: u32) -> Result<(), String> {
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(|e| format!("cannot send the CONNECT request: {e}"))?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| e.to_string())?;
    // Byte by byte: whatever follows the line belongs to the connection.
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => {
                return Err(format!(
                    "guest port {port} refused the connection (nothing listens there yet, or the \
                     guest has no vsock driver)"
                ));
            }
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if answer.len() < ANSWER_MAX => answer.push(byte[0]),
            Ok(_) => return Err("the vsock socket sent an overlong answer".into()),
            Err(e) => return Err(format!("no answer to CONNECT {port}: {e}")),
        }
    }
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&answer);
    if !answer.starts_with("OK ") {
        return Err(format!(
            "CONNECT {port} was answered '{answer}', not 'OK <port>'"
        ));
    }
    Ok(())
}
