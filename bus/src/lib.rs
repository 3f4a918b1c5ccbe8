//! A small D-Bus client: exactly what vmspawn-privhelper asks of polkit and machined on the
//! system bus, and what the launcher asks of its service manager (a transient scope unit, and
//! the scope's `RequestStop` signal). SASL EXTERNAL, `Hello`, method calls with the few
//! argument types they take (at most one fd), and their replies and errors. Blocking and thread-free: a call sends its message
//! and reads (poll, then recvmsg) until the reply to it arrives or its deadline passes,
//! skipping every other message (signals, calls to us, replies we no longer wait for) and
//! closing any fd that comes with one. Everything read is bounds-checked against the
//! message's own lengths; a message that is malformed ends the call with an error, one that
//! is too large to keep is read past without being stored, and nothing read panics.
//!
//! Wire format: the D-Bus specification's "Message Protocol" (little-endian messages out;
//! both byte orders read).
//!
//! A crate of its own so the helper and the launcher share one fuzzed parser
//! (`fuzz/src/bus.rs`, replayed by privhelper/tests/fuzz_corpus.rs).

#![deny(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{self, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType};

/// The specification's limit for one message.
const MAX_MESSAGE: usize = 128 << 20;
/// Replies larger than this are read past and fail the call (ours are a few hundred bytes).
const MAX_KEPT: usize = 1 << 20;
/// Nesting the specification allows (32 arrays and 32 structs).
const MAX_DEPTH: usize = 64;
/// Idle connections the service keeps for the next calls.
const MAX_IDLE: usize = 4;
/// How long connecting and authenticating may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const METHOD_CALL: u8 = 1;
const METHOD_RETURN: u8 = 2;
const ERROR: u8 = 3;
/// A signal's message type.
pub const SIGNAL: u8 = 4;

const FIELD_PATH: u8 = 1;
const FIELD_INTERFACE: u8 = 2;
const FIELD_MEMBER: u8 = 3;
const FIELD_ERROR_NAME: u8 = 4;
const FIELD_REPLY_SERIAL: u8 = 5;
const FIELD_DESTINATION: u8 = 6;
const FIELD_SENDER: u8 = 7;
const FIELD_SIGNATURE: u8 = 8;
const FIELD_UNIX_FDS: u8 = 9;

/// The error name of a method the peer does not have.
pub const UNKNOWN_METHOD: &str = "org.freedesktop.DBus.Error.UnknownMethod";

/// Locks `mutex`; no caller panics while holding a lock, so a poisoned one holds consistent
/// data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A value sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg<'a> {
    /// `b` (a u32 of 0 or 1 on the wire).
    Bool(bool),
    U32(u32),
    I32(i32),
    U64(u64),
    Str(&'a str),
    /// `ay`.
    Bytes(&'a [u8]),
    /// `h`: an index into the fds sent with the message.
    Fd(u32),
    Struct(Vec<Arg<'a>>),
    Variant(Box<Arg<'a>>),
    /// An array of values of the element signature given (which must match each element's).
    Array(&'static str, Vec<Arg<'a>>),
    /// A dict entry `{key value}` (only inside an array).
    Entry(Box<Arg<'a>>, Box<Arg<'a>>),
}

impl Arg<'_> {
    pub fn signature(&self) -> String {
        match self {
            Arg::Bool(_) => "b".into(),
            Arg::U32(_) => "u".into(),
            Arg::I32(_) => "i".into(),
            Arg::U64(_) => "t".into(),
            Arg::Str(_) => "s".into(),
            Arg::Bytes(_) => "ay".into(),
            Arg::Fd(_) => "h".into(),
            Arg::Struct(members) => {
                let inner: String = members.iter().map(Arg::signature).collect();
                format!("({inner})")
            }
            Arg::Variant(_) => "v".into(),
            Arg::Array(element, _) => format!("a{element}"),
            Arg::Entry(key, value) => format!("{{{}{}}}", key.signature(), value.signature()),
        }
    }
}

/// The alignment of values whose signature starts with `code`.
fn alignment(code: u8) -> usize {
    match code {
        b'y' | b'g' | b'v' => 1,
        b'n' | b'q' => 2,
        b'x' | b't' | b'd' | b'(' | b'{' | b'r' | b'e' => 8,
        _ => 4,
    }
}

/// Marshals values (little-endian), aligned relative to the start of the buffer.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn pad(&mut self, align: usize) {
        while self.buf.len() % align != 0 {
            self.buf.push(0);
        }
    }

    fn u32(&mut self, value: u32) {
        self.pad(4);
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    fn string(&mut self, value: &str) -> Result<(), String> {
        let len = u32::try_from(value.len()).map_err(|_| "a string is too long for D-Bus")?;
        if value.as_bytes().contains(&0) {
            return Err("a string for D-Bus contains NUL".into());
        }
        self.u32(len);
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(0);
        Ok(())
    }

    fn signature(&mut self, value: &str) -> Result<(), String> {
        let len = u8::try_from(value.len()).map_err(|_| "a D-Bus signature is too long")?;
        self.buf.push(len);
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(0);
        Ok(())
    }

    fn arg(&mut self, arg: &Arg<'_>) -> Result<(), String> {
        match arg {
            Arg::Bool(v) => self.u32(u32::from(*v)),
            Arg::U32(v) | Arg::Fd(v) => self.u32(*v),
            Arg::I32(v) => self.u32(u32::from_le_bytes(v.to_le_bytes())),
            Arg::U64(v) => {
                self.pad(8);
                self.buf.extend_from_slice(&v.to_le_bytes());
            }
            Arg::Str(s) => self.string(s)?,
            Arg::Bytes(bytes) => {
                let len = u32::try_from(bytes.len()).map_err(|_| "an array is too long")?;
                self.u32(len);
                self.buf.extend_from_slice(bytes);
            }
            Arg::Struct(members) => {
                self.pad(8);
                for member in members {
                    self.arg(member)?;
                }
            }
            Arg::Variant(inner) => {
                self.signature(&inner.signature())?;
                self.arg(inner)?;
            }
            Arg::Array(element, items) => {
                self.u32(0);
                let length_at = self.buf.len() - 4;
                self.pad(alignment(element.bytes().next().unwrap_or(b'y')));
                let start = self.buf.len();
                for item in items {
                    if item.signature() != *element {
                        return Err(format!(
                            "an array of '{element}' holds a '{}'",
                            item.signature()
                        ));
                    }
                    self.arg(item)?;
                }
                let len =
                    u32::try_from(self.buf.len() - start).map_err(|_| "an array is too long")?;
                self.buf[length_at..length_at + 4].copy_from_slice(&len.to_le_bytes());
            }
            Arg::Entry(key, value) => {
                self.pad(8);
                self.arg(key)?;
                self.arg(value)?;
            }
        }
        Ok(())
    }
}

/// A method call.
pub struct Call<'a> {
    pub destination: &'a str,
    pub path: &'a str,
    pub interface: &'a str,
    pub member: &'a str,
    pub args: Vec<Arg<'a>>,
}

/// The message bytes of `call` with `serial`, `fds` fds attached.
pub fn encode_call(call: &Call<'_>, serial: u32, fds: u32) -> Result<Vec<u8>, String> {
    let mut body = Writer::default();
    for arg in &call.args {
        body.arg(arg)?;
    }
    let signature: String = call.args.iter().map(Arg::signature).collect();
    let mut message = Writer::default();
    message.buf.extend_from_slice(&[b'l', METHOD_CALL, 0, 1]);
    message.u32(u32::try_from(body.buf.len()).map_err(|_| "a message is too long")?);
    message.u32(serial);
    // The header fields, a(yv), written by hand: the codes are bytes and some values are
    // object paths and signatures, which Arg does not need otherwise.
    message.u32(0);
    let length_at = message.buf.len() - 4;
    message.pad(8);
    let start = message.buf.len();
    let field = |w: &mut Writer, code: u8, kind: &str, value: &str| -> Result<(), String> {
        w.pad(8);
        w.buf.push(code);
        w.signature(kind)?;
        match kind {
            "g" => w.signature(value),
            _ => w.string(value),
        }
    };
    field(&mut message, FIELD_PATH, "o", call.path)?;
    if !call.interface.is_empty() {
        field(&mut message, FIELD_INTERFACE, "s", call.interface)?;
    }
    field(&mut message, FIELD_MEMBER, "s", call.member)?;
    field(&mut message, FIELD_DESTINATION, "s", call.destination)?;
    if !signature.is_empty() {
        field(&mut message, FIELD_SIGNATURE, "g", &signature)?;
    }
    if fds > 0 {
        message.pad(8);
        message.buf.push(FIELD_UNIX_FDS);
        message.signature("u")?;
        message.u32(fds);
    }
    let len = u32::try_from(message.buf.len() - start).map_err(|_| "a header is too long")?;
    message.buf[length_at..length_at + 4].copy_from_slice(&len.to_le_bytes());
    message.pad(8);
    message.buf.extend_from_slice(&body.buf);
    Ok(message.buf)
}

/// Reads values of one message (its byte order), aligned relative to the message start;
/// every read is checked against the end of the data.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Alignment is counted from this offset of `buf` (the body's start in the message).
    base: usize,
    big: bool,
}

type Parsed<T> = Result<T, String>;

fn malformed(what: &str) -> String {
    format!("malformed D-Bus message ({what})")
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], pos: usize, base: usize, big: bool) -> Reader<'a> {
        Reader {
            buf,
            pos,
            base,
            big,
        }
    }

    fn align(&mut self, align: usize) -> Parsed<()> {
        let rel = self.pos.saturating_sub(self.base);
        let padded = rel.div_ceil(align) * align + self.base;
        if padded > self.buf.len() {
            return Err(malformed("padding past the end"));
        }
        self.pos = padded;
        Ok(())
    }

    fn take(&mut self, n: usize) -> Parsed<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| malformed("a value past the end"))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Parsed<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Parsed<u32> {
        self.align(4)?;
        let bytes: [u8; 4] = self.take(4)?.try_into().map_err(|_| malformed("a u32"))?;
        Ok(if self.big {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        })
    }

    pub fn bool(&mut self) -> Parsed<bool> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(malformed("a boolean that is neither 0 nor 1")),
        }
    }

    fn text(&mut self, len: usize) -> Parsed<String> {
        let bytes = self.take(len)?;
        if self.u8()? != 0 {
            return Err(malformed("a string without its NUL"));
        }
        String::from_utf8(bytes.to_vec()).map_err(|_| malformed("a string that is not UTF-8"))
    }

    pub fn string(&mut self) -> Parsed<String> {
        let len = self.u32()? as usize;
        self.text(len)
    }

    fn signature(&mut self) -> Parsed<String> {
        let len = usize::from(self.u8()?);
        self.text(len)
    }

    /// Skips one value of the single complete type `sig`.
    fn skip(&mut self, sig: &[u8], depth: usize) -> Parsed<()> {
        if depth > MAX_DEPTH {
            return Err(malformed("nested too deeply"));
        }
        let Some(&code) = sig.first() else {
            return Err(malformed("an empty type"));
        };
        match code {
            b'y' => {
                self.take(1)?;
            }
            b'n' | b'q' => {
                self.align(2)?;
                self.take(2)?;
            }
            b'b' | b'i' | b'u' | b'h' => {
                self.u32()?;
            }
            b'x' | b't' | b'd' => {
                self.align(8)?;
                self.take(8)?;
            }
            b's' | b'o' => {
                self.string()?;
            }
            b'g' => {
                self.signature()?;
            }
            b'v' => {
                let inner = self.signature()?;
                let inner = inner.as_bytes();
                if single_type_len(inner, 0)? != inner.len() {
                    return Err(malformed("a variant of more than one type"));
                }
                self.skip(inner, depth + 1)?;
            }
            b'a' => {
                let len = self.u32()? as usize;
                let element = sig
                    .get(1)
                    .copied()
                    .ok_or_else(|| malformed("an array type"))?;
                self.align(alignment(element))?;
                self.take(len)?;
            }
            b'(' | b'{' => {
                self.align(8)?;
                let end = sig.len() - 1;
                let mut at = 1;
                while at < end {
                    let len = single_type_len(&sig[at..end], depth + 1)?;
                    self.skip(&sig[at..at + len], depth + 1)?;
                    at += len;
                }
            }
            _ => return Err(malformed("an unknown type code")),
        }
        Ok(())
    }
}

/// The length of the first single complete type in `sig`.
fn single_type_len(sig: &[u8], depth: usize) -> Parsed<usize> {
    if depth > MAX_DEPTH {
        return Err(malformed("a signature nested too deeply"));
    }
    let Some(&code) = sig.first() else {
        return Err(malformed("an incomplete signature"));
    };
    match code {
        b'y' | b'b' | b'n' | b'q' | b'i' | b'u' | b'x' | b't' | b'd' | b'h' | b's' | b'o'
        | b'g' | b'v' => Ok(1),
        b'a' => Ok(1 + single_type_len(&sig[1..], depth + 1)?),
        b'(' | b'{' => {
            let close = if code == b'(' { b')' } else { b'}' };
            let mut at = 1;
            let mut members = 0;
            loop {
                match sig.get(at) {
                    None => return Err(malformed("an unclosed struct")),
                    Some(&c) if c == close => break,
                    Some(_) => {
                        at += single_type_len(&sig[at..], depth + 1)?;
                        members += 1;
                    }
                }
            }
            if members == 0 || (code == b'{' && members != 2) {
                return Err(malformed("an empty struct or a bad dict entry"));
            }
            Ok(at + 1)
        }
        _ => Err(malformed("an unknown type code in a signature")),
    }
}

/// A message read from the bus (its header fields the helper uses, and its body).
#[derive(Debug)]
pub struct Message {
    pub kind: u8,
    pub reply_serial: Option<u32>,
    /// The object path, interface, member and sender of a call or signal.
    pub path: Option<String>,
    pub interface: Option<String>,
    pub member: Option<String>,
    pub sender: Option<String>,
    pub error_name: Option<String>,
    pub signature: String,
    pub unix_fds: u32,
    big: bool,
    body: Vec<u8>,
}

impl Message {
    /// A reader of the body.
    pub fn body(&self) -> Reader<'_> {
        Reader::new(&self.body, 0, 0, self.big)
    }

    /// The first argument, if it is a string (an error's message).
    pub fn first_string(&self) -> Option<String> {
        self.signature
            .starts_with('s')
            .then(|| self.body().string().ok())
            .flatten()
    }
}

/// The total length of the message whose first 16 bytes are `fixed`, and its byte order.
fn message_length(fixed: &[u8]) -> Parsed<(usize, bool)> {
    let big = match fixed.first() {
        Some(b'l') => false,
        Some(b'B') => true,
        _ => return Err(malformed("an unknown byte order")),
    };
    let mut reader = Reader::new(fixed, 4, 0, big);
    let body = reader.u32()? as usize;
    reader.u32()?;
    let fields = reader.u32()? as usize;
    let total = (16usize + fields)
        .div_ceil(8)
        .checked_mul(8)
        .and_then(|h| h.checked_add(body))
        .filter(|&t| t <= MAX_MESSAGE)
        .ok_or_else(|| malformed("longer than D-Bus allows"))?;
    Ok((total, big))
}

/// Parses one whole message.
pub fn decode(bytes: &[u8]) -> Parsed<Message> {
    let (total, big) = message_length(bytes.get(..16).ok_or_else(|| malformed("short"))?)?;
    if bytes.len() != total {
        return Err(malformed("its length"));
    }
    let mut reader = Reader::new(bytes, 1, 0, big);
    let kind = reader.u8()?;
    reader.take(2)?;
    let body_len = reader.u32()? as usize;
    reader.u32()?; // its serial
    let fields_len = reader.u32()? as usize;
    let fields_end = 16 + fields_len;
    let mut message = Message {
        kind,
        reply_serial: None,
        path: None,
        interface: None,
        member: None,
        sender: None,
        error_name: None,
        signature: String::new(),
        unix_fds: 0,
        big,
        body: Vec::new(),
    };
    let mut fields = Reader::new(&bytes[..fields_end], 16, 0, big);
    while fields.pos < fields_end {
        fields.align(8)?;
        if fields.pos >= fields_end {
            break;
        }
        let code = fields.u8()?;
        let kind = fields.signature()?;
        match (code, kind.as_str()) {
            (FIELD_REPLY_SERIAL, "u") => message.reply_serial = Some(fields.u32()?),
            (FIELD_UNIX_FDS, "u") => message.unix_fds = fields.u32()?,
            (FIELD_ERROR_NAME, "s") => message.error_name = Some(fields.string()?),
            (FIELD_PATH, "o") => message.path = Some(fields.string()?),
            (FIELD_INTERFACE, "s") => message.interface = Some(fields.string()?),
            (FIELD_MEMBER, "s") => message.member = Some(fields.string()?),
            (FIELD_SENDER, "s") => message.sender = Some(fields.string()?),
            (FIELD_SIGNATURE, "g") => message.signature = fields.signature()?,
            (
                FIELD_REPLY_SERIAL | FIELD_UNIX_FDS | FIELD_ERROR_NAME | FIELD_SIGNATURE
                | FIELD_PATH | FIELD_INTERFACE | FIELD_MEMBER | FIELD_SENDER,
                _,
            ) => {
                return Err(malformed("a header field of the wrong type"));
            }
            _ => {
                let sig = kind.as_bytes();
                if single_type_len(sig, 0)? != sig.len() {
                    return Err(malformed("a header field of more than one type"));
                }
                fields.skip(sig, 0)?;
            }
        }
    }
    let body_start = fields_end.div_ceil(8) * 8;
    message.body = bytes
        .get(body_start..body_start + body_len)
        .ok_or_else(|| malformed("its body"))?
        .to_vec();
    Ok(message)
}

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// The peer answered with an error.
    Method {
        name: String,
        message: Option<String>,
    },
    /// No answer: the connection failed, timed out or sent something malformed.
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Method {
                name,
                message: Some(message),
            } => write!(f, "{message} ({name})"),
            CallError::Method {
                name,
                message: None,
            } => write!(f, "{name}"),
            CallError::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// The socket path of a `unix:path=...` bus address (the first such entry; `%XX` escapes
/// decoded).
pub fn socket_path(address: &str) -> Result<PathBuf, String> {
    for entry in address.split(';') {
        let Some(keys) = entry.strip_prefix("unix:") else {
            continue;
        };
        for pair in keys.split(',') {
            if let Some(value) = pair.strip_prefix("path=") {
                let bytes = value.as_bytes();
                let mut path = Vec::with_capacity(bytes.len());
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i] == b'%' {
                        let hex = std::str::from_utf8(bytes.get(i + 1..i + 3).unwrap_or(&[]))
                            .ok()
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                            .ok_or_else(|| format!("bad escape in bus address '{address}'"))?;
                        path.push(hex);
                        i += 3;
                    } else {
                        path.push(bytes[i]);
                        i += 1;
                    }
                }
                let path: std::ffi::OsString = std::os::unix::ffi::OsStringExt::from_vec(path);
                return Ok(PathBuf::from(path));
            }
        }
    }
    Err(format!(
        "the bus address '{address}' has no unix:path= entry (the only kind the helper uses)"
    ))
}

fn remaining(deadline: Instant) -> Result<PollTimeout, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err("no answer on the system bus in time".into());
    }
    Ok(PollTimeout::try_from(left.max(Duration::from_millis(1))).unwrap_or(PollTimeout::MAX))
}

/// One authenticated connection to the bus.
pub struct Connection {
    sock: OwnedFd,
    inbuf: Vec<u8>,
    serial: u32,
    /// The bus agreed to pass fds.
    pub unix_fds: bool,
    /// Our unique bus name (from `Hello`).
    unique_name: String,
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Connection {
    /// Connects to `path` and authenticates as this process's effective uid.
    pub fn open(path: &Path) -> Result<Connection, String> {
        Connection::open_named(path, "the system bus")
    }

    /// Connects to the bus at `path`, called `what` in error messages ("the user bus").
    pub fn open_named(path: &Path, what: &str) -> Result<Connection, String> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let failed = |e: &dyn std::fmt::Display| {
            format!("failed to connect to {what} at {}: {e}", path.display())
        };
        let sock = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(|e| failed(&e))?;
        let address = socket::UnixAddr::new(path).map_err(|e| failed(&e))?;
        match socket::connect(sock.as_raw_fd(), &address) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINPROGRESS | nix::errno::Errno::EAGAIN) => {
                let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLOUT)];
                poll(&mut fds, remaining(deadline).map_err(|e| failed(&e))?)
                    .map_err(|e| failed(&e))?;
                let error = socket::getsockopt(&sock, socket::sockopt::SocketError)
                    .map_err(|e| failed(&e))?;
                if error != 0 {
                    return Err(failed(&nix::errno::Errno::from_raw(error)));
                }
            }
            Err(e) => return Err(failed(&e)),
        }
        let mut connection = Connection {
            sock,
            inbuf: Vec::new(),
            serial: 0,
            unix_fds: false,
            unique_name: String::new(),
        };
        connection.authenticate(deadline).map_err(|e| failed(&e))?;
        let hello = Call {
            destination: "org.freedesktop.DBus",
            path: "/org/freedesktop/DBus",
            interface: "org.freedesktop.DBus",
            member: "Hello",
            args: Vec::new(),
        };
        match connection.call(&hello, &[], deadline) {
            Ok(reply) if reply.signature == "s" => {
                connection.unique_name = reply.body().string().map_err(|e| failed(&e))?;
                Ok(connection)
            }
            Ok(_) => Err(failed(&"unexpected answer to Hello")),
            Err(e) => Err(failed(&e)),
        }
    }

    fn authenticate(&mut self, deadline: Instant) -> Result<(), String> {
        let uid = nix::unistd::geteuid().as_raw().to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        self.write(
            format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes(),
            &[],
            deadline,
        )?;
        let line = self.line(deadline)?;
        if !line.starts_with("OK ") {
            return Err(format!("the bus refused authentication: {line}"));
        }
        self.write(b"NEGOTIATE_UNIX_FD\r\n", &[], deadline)?;
        self.unix_fds = self.line(deadline)? == "AGREE_UNIX_FD";
        self.write(b"BEGIN\r\n", &[], deadline)
    }

    /// One line of the authentication conversation.
    fn line(&mut self, deadline: Instant) -> Result<String, String> {
        loop {
            if let Some(end) = self.inbuf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.inbuf[..end]).into_owned();
                self.inbuf.drain(..end + 2);
                return Ok(line);
            }
            if self.inbuf.len() > 512 {
                return Err("an overlong authentication line from the bus".into());
            }
            self.fill(deadline)?;
        }
    }

    fn write(&self, bytes: &[u8], fds: &[BorrowedFd<'_>], deadline: Instant) -> Result<(), String> {
        let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let mut sent = 0;
        while sent < bytes.len() {
            let rights = [ControlMessage::ScmRights(&raw)];
            let cmsgs: &[ControlMessage<'_>] = if sent == 0 && !raw.is_empty() {
                &rights
            } else {
                &[]
            };
            let iov = [std::io::IoSlice::new(&bytes[sent..])];
            match socket::sendmsg::<()>(
                self.sock.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(n) => sent += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => {
                    let mut poll_fds = [PollFd::new(self.sock.as_fd(), PollFlags::POLLOUT)];
                    match poll(&mut poll_fds, remaining(deadline)?) {
                        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => return Err(format!("writing to the system bus failed: {e}")),
                    }
                }
                Err(e) => return Err(format!("writing to the system bus failed: {e}")),
            }
        }
        Ok(())
    }

    /// Reads what the socket has (waiting until `deadline`); fds that come along are closed.
    fn fill(&mut self, deadline: Instant) -> Result<(), String> {
        let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, remaining(deadline)?) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(format!("waiting for the system bus failed: {e}")),
        }
        let mut chunk = [0u8; 8192];
        let mut space = nix::cmsg_space!([i32; 16]);
        let received = {
            let mut iov = [std::io::IoSliceMut::new(&mut chunk)];
            let message = match socket::recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(message) => message,
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return Ok(()),
                Err(e) => return Err(format!("reading from the system bus failed: {e}")),
            };
            // Nothing the helper receives carries fds: close any that came.
            if let Ok(cmsgs) = message.cmsgs() {
                for cmsg in cmsgs {
                    if let socket::ControlMessageOwned::ScmRights(fds) = cmsg {
                        for fd in fds {
                            let _ = nix::unistd::close(fd);
                        }
                    }
                }
            }
            message.bytes
        };
        if received == 0 {
            return Err("the system bus closed the connection".into());
        }
        self.inbuf.extend_from_slice(&chunk[..received]);
        Ok(())
    }

    /// The next message; one too large to keep is read past and reported as an error.
    fn read_message(&mut self, deadline: Instant) -> Result<Message, String> {
        while self.inbuf.len() < 16 {
            self.fill(deadline)?;
        }
        let (total, _) = message_length(&self.inbuf[..16])?;
        if total > MAX_KEPT {
            let mut left = total;
            loop {
                let n = left.min(self.inbuf.len());
                self.inbuf.drain(..n);
                left -= n;
                if left == 0 {
                    break;
                }
                self.fill(deadline)?;
            }
            return Err(format!(
                "a D-Bus message of {total} bytes, more than the helper reads"
            ));
        }
        while self.inbuf.len() < total {
            self.fill(deadline)?;
        }
        let message = decode(&self.inbuf[..total]);
        self.inbuf.drain(..total);
        message
    }

    /// Calls a method and waits for its reply until `deadline`.
    /// Our unique bus name, e.g. `:1.42`.
    pub fn unique_name(&self) -> &str {
        &self.unique_name
    }

    /// The next message from the bus (a signal, typically), waiting until `deadline`.
    pub fn next_message(&mut self, deadline: Instant) -> Result<Message, String> {
        self.read_message(deadline)
    }

    /// The messages that have arrived, without waiting: what one read of the socket brought
    /// (call it when poll says the socket is readable). An error means the connection is
    /// unusable (closed by the bus, or a malformed or oversized message).
    pub fn read_pending(&mut self) -> Result<Vec<Message>, String> {
        let mut chunk = [0u8; 8192];
        let received = match socket::recv(
            self.sock.as_raw_fd(),
            &mut chunk,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(0) => return Err("the bus closed the connection".into()),
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(format!("reading from the bus failed: {e}")),
        };
        self.inbuf.extend_from_slice(&chunk[..received]);
        let mut messages = Vec::new();
        while self.inbuf.len() >= 16 {
            let (total, _) = message_length(&self.inbuf[..16])?;
            if total > MAX_KEPT {
                return Err(format!(
                    "a D-Bus message of {total} bytes, more than is read"
                ));
            }
            if self.inbuf.len() < total {
                break;
            }
            let message = decode(&self.inbuf[..total]);
            self.inbuf.drain(..total);
            messages.push(message?);
        }
        Ok(messages)
    }

    pub fn call(
        &mut self,
        call: &Call<'_>,
        fds: &[BorrowedFd<'_>],
        deadline: Instant,
    ) -> Result<Message, CallError> {
        if !fds.is_empty() && !self.unix_fds {
            return Err(CallError::Failed(
                "the system bus does not pass file descriptors on this connection".into(),
            ));
        }
        self.serial = self.serial.wrapping_add(1).max(1);
        let serial = self.serial;
        let count = u32::try_from(fds.len()).map_err(|_| CallError::Failed("fds".into()))?;
        let bytes = encode_call(call, serial, count).map_err(CallError::Failed)?;
        self.write(&bytes, fds, deadline)
            .map_err(CallError::Failed)?;
        loop {
            let message = match self.read_message(deadline) {
                Ok(message) => message,
                // A message too large for us: not the reply we wait for, which is small.
                Err(e) if e.contains("more than the helper reads") => continue,
                Err(e) => return Err(CallError::Failed(e)),
            };
            if message.reply_serial != Some(serial) {
                continue;
            }
            match message.kind {
                METHOD_RETURN => return Ok(message),
                ERROR => {
                    return Err(CallError::Method {
                        name: message.error_name.clone().unwrap_or_default(),
                        message: message.first_string(),
                    });
                }
                _ => {}
            }
        }
    }
}

/// The system bus, shared by the helper's threads. Each call uses a connection of its own
/// (an idle one, or in the service a new one), so a call waiting for polkit holds up no
/// other. A setuid helper keeps the one connection it made while it was root (so the bus
/// knows it as root) and never makes another.
pub struct Bus {
    path: PathBuf,
    reconnect: bool,
    /// The bus agreed to pass fds (on the first connection).
    pub unix_fds: bool,
    idle: Mutex<Vec<Connection>>,
}

impl Bus {
    /// Connects now (so a missing bus is reported at start).
    pub fn connect(address: &str, reconnect: bool) -> Result<Bus, String> {
        let path = socket_path(address)?;
        let first = Connection::open(&path)?;
        Ok(Bus {
            path,
            reconnect,
            unix_fds: first.unix_fds,
            idle: Mutex::new(vec![first]),
        })
    }

    /// Calls a method, waiting at most `timeout`.
    pub fn call(
        &self,
        call: &Call<'_>,
        fds: &[BorrowedFd<'_>],
        timeout: Duration,
    ) -> Result<Message, CallError> {
        let idle = lock(&self.idle).pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None if self.reconnect => Connection::open(&self.path).map_err(CallError::Failed)?,
            None => {
                return Err(CallError::Failed(
                    "the helper's connection to the system bus was lost or is busy".into(),
                ));
            }
        };
        let result = connection.call(call, fds, Instant::now() + timeout);
        // A connection whose call failed may be mid-message: it is not used again.
        if !matches!(result, Err(CallError::Failed(_))) {
            let mut idle = lock(&self.idle);
            if idle.len() < MAX_IDLE {
                idle.push(connection);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(args: Vec<Arg<'_>>) -> Vec<u8> {
        let mut w = Writer::default();
        for arg in &args {
            w.arg(arg).unwrap();
        }
        w.buf
    }

    #[test]
    fn signatures() {
        let subject = Arg::Struct(vec![
            Arg::Str("unix-process"),
            Arg::Array(
                "{sv}",
                vec![Arg::Entry(
                    Box::new(Arg::Str("uid")),
                    Box::new(Arg::Variant(Box::new(Arg::I32(1001)))),
                )],
            ),
        ]);
        assert_eq!(subject.signature(), "(sa{sv})");
        assert_eq!(Arg::Bytes(&[]).signature(), "ay");
        assert_eq!(Arg::Fd(0).signature(), "h");
        assert_eq!(Arg::Bool(false).signature(), "b");
        assert_eq!(body_of(vec![Arg::Bool(true)]), vec![1, 0, 0, 0]);
        assert_eq!(single_type_len(b"a{sv}s", 0).unwrap(), 5);
        assert_eq!(single_type_len(b"(bba{ss})", 0).unwrap(), 9);
        for bad in [&b"("[..], b"()", b"{s}", b"a", b"z", b"{sss}"] {
            assert!(single_type_len(bad, 0).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signals_read_without_waiting() {
        let call = Call {
            destination: ":1.7",
            path: "/org/freedesktop/systemd1/unit/vm_2escope",
            interface: "org.freedesktop.systemd1.Scope",
            member: "RequestStop",
            args: vec![Arg::Bool(true)],
        };
        let mut signal = encode_call(&call, 9, 0).unwrap();
        signal[1] = SIGNAL;
        let message = decode(&signal).unwrap();
        assert_eq!(message.kind, SIGNAL);
        assert_eq!(message.path.as_deref(), Some(call.path));
        assert_eq!(message.interface.as_deref(), Some(call.interface));
        assert_eq!(message.member.as_deref(), Some("RequestStop"));
        assert_eq!(message.signature, "b");
        assert!(message.body().bool().unwrap());

        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut connection = Connection {
            sock: OwnedFd::from(ours),
            inbuf: Vec::new(),
            serial: 0,
            unix_fds: false,
            unique_name: ":1.7".into(),
        };
        assert!(connection.read_pending().unwrap().is_empty());
        // One and a half messages: one now, the rest when its remainder arrives.
        use std::io::Write as _;
        let mut theirs = theirs;
        theirs.write_all(&signal).unwrap();
        theirs.write_all(&signal[..20]).unwrap();
        let got = connection.read_pending().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].member.as_deref(), Some("RequestStop"));
        theirs.write_all(&signal[20..]).unwrap();
        assert_eq!(connection.read_pending().unwrap().len(), 1);
        drop(theirs);
        assert!(connection.read_pending().unwrap_err().contains("closed"));
    }

    #[test]
    fn layout_of_basic_values() {
        // u32 1, string "ab", u64 at the next 8-byte boundary, an empty array of u64 (its
        // padding comes even when it is empty), a variant of i32.
        let bytes = body_of(vec![
            Arg::U32(1),
            Arg::Str("ab"),
            Arg::U64(2),
            Arg::Array("t", vec![]),
            Arg::Variant(Box::new(Arg::I32(-1))),
        ]);
        let expected: Vec<u8> = [
            &[1, 0, 0, 0][..],
            &[2, 0, 0, 0, b'a', b'b', 0, 0],
            &[0; 4],
            &[2, 0, 0, 0, 0, 0, 0, 0],
            &[0, 0, 0, 0, 0, 0, 0, 0],
            &[1, b'i', 0, 0],
            &[0xff; 4],
        ]
        .concat();
        // The array's length (0) sits at offset 24; its elements would start at 32.
        assert_eq!(bytes, expected);
    }

    #[test]
    fn arrays_check_their_elements() {
        let mut w = Writer::default();
        let err = w.arg(&Arg::Array("s", vec![Arg::U32(1)])).err().unwrap();
        assert!(err.contains("holds a 'u'"), "{err}");
        assert!(Writer::default().arg(&Arg::Str("a\0b")).is_err());
    }

    #[test]
    fn a_call_decodes_to_what_was_encoded() {
        let call = Call {
            destination: "org.freedesktop.machine1",
            path: "/org/freedesktop/machine1",
            interface: "org.freedesktop.machine1.Manager",
            member: "UnregisterMachine",
            args: vec![Arg::Str("vm")],
        };
        let bytes = encode_call(&call, 7, 0).unwrap();
        assert_eq!(&bytes[..4], &[b'l', METHOD_CALL, 0, 1]);
        let message = decode(&bytes).unwrap();
        assert_eq!(message.kind, METHOD_CALL);
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 7);
        assert_eq!(message.signature, "s");
        assert_eq!(message.unix_fds, 0);
        assert_eq!(message.first_string().as_deref(), Some("vm"));
        // The body starts 8-aligned, right after the padded header fields.
        let fields = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        assert_eq!(bytes.len(), (16 + fields).div_ceil(8) * 8 + 4 + 2 + 1);
    }

    /// A reply as a bus would send it (little- or big-endian).
    fn reply(big: bool, kind: u8, reply_serial: u32, signature: &str, body: &[u8]) -> Vec<u8> {
        let u32b = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut fields = Vec::new();
        fields.extend_from_slice(&[FIELD_REPLY_SERIAL, 1, b'u', 0]);
        fields.extend_from_slice(&u32b(reply_serial));
        // An unknown field (code 42, a struct of a string and an array) to be skipped.
        fields.extend_from_slice(&[42, 5, b'(', b's', b'a', b'y', b')', 0]);
        fields.extend_from_slice(&u32b(1));
        fields.extend_from_slice(&[b'x', 0, 0, 0]);
        fields.extend_from_slice(&u32b(3));
        fields.extend_from_slice(&[1, 2, 3]);
        if !signature.is_empty() {
            while (16 + fields.len()) % 8 != 0 {
                fields.push(0);
            }
            fields.extend_from_slice(&[FIELD_SIGNATURE, 1, b'g', 0]);
            fields.push(signature.len() as u8);
            fields.extend_from_slice(signature.as_bytes());
            fields.push(0);
        }
        let mut out = vec![if big { b'B' } else { b'l' }, kind, 0, 1];
        out.extend_from_slice(&u32b(body.len() as u32));
        out.extend_from_slice(&u32b(99));
        out.extend_from_slice(&u32b(fields.len() as u32));
        out.extend_from_slice(&fields);
        while out.len() % 8 != 0 {
            out.push(0);
        }
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn replies_in_both_byte_orders() {
        // polkit's (bba{ss}): true, false, an empty dict.
        let le = reply(
            false,
            METHOD_RETURN,
            5,
            "(bba{ss})",
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        let message = decode(&le).unwrap();
        assert_eq!(message.reply_serial, Some(5));
        assert_eq!(message.signature, "(bba{ss})");
        let mut body = message.body();
        assert!(body.bool().unwrap());
        assert!(!body.bool().unwrap());
        let be = reply(true, ERROR, 6, "s", &[0, 0, 0, 2, b'n', b'o', 0]);
        let message = decode(&be).unwrap();
        assert_eq!(message.kind, ERROR);
        assert_eq!(message.reply_serial, Some(6));
        assert_eq!(message.first_string().as_deref(), Some("no"));
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        let good = reply(
            false,
            METHOD_RETURN,
            5,
            "(bba{ss})",
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        // Every truncation, and every single-byte change at every offset.
        for len in 0..good.len() {
            let _ = decode(&good[..len]);
        }
        for at in 0..good.len() {
            for value in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] = value;
                if let Ok(message) = decode(&bad) {
                    let mut body = message.body();
                    let _ = body.bool();
                    let _ = message.first_string();
                }
            }
        }
        // A pseudo-random stream (xorshift), in many lengths.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 96) as usize;
            let mut bytes: Vec<u8> = (0..len)
                .map(|i| (state.rotate_left(i as u32 % 64) & 0xff) as u8)
                .collect();
            if let Some(first) = bytes.first_mut() {
                *first = b'l';
            }
            let _ = decode(&bytes);
        }
        // Deep nesting is refused, not recursed into without bound.
        let deep = format!("{}y{}", "(".repeat(100), ")".repeat(100));
        assert!(single_type_len(deep.as_bytes(), 0).is_err());
        // A length near u32::MAX.
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(message_length(&huge[..16]).is_err());
    }

    #[test]
    fn bus_addresses() {
        assert_eq!(
            socket_path("unix:path=/run/dbus/system_bus_socket").unwrap(),
            PathBuf::from("/run/dbus/system_bus_socket")
        );
        assert_eq!(
            socket_path("unix:abstract=x;unix:guid=1,path=/tmp/a%20b").unwrap(),
            PathBuf::from("/tmp/a b")
        );
        assert!(socket_path("tcp:host=localhost,port=1").is_err());
        assert!(socket_path("unix:path=/x%zz").is_err());
    }
}
