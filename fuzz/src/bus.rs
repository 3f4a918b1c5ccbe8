//! Target `bus`: arbitrary bytes as one message from the system bus, through the helper's
//! D-Bus client (`privhelper/src/bus.rs`), which reads polkit's and machined's replies as
//! root.
//!
//! `bus::decode` must never panic, and neither may reading a body it returned with the
//! `Reader` (following the message's signature as the helper reads replies, as strings only
//! and as booleans only) or `Message::first_string`. A message that decodes is exactly as
//! long as its header says: without its last byte it is an error. Last, the input (if it is
//! UTF-8) as the string argument of a method call: `encode_call` refuses it only for a NUL,
//! and the call decodes to that string again.

use vmspawn_privhelper::bus::{self, Arg, Call, Message};

const METHOD_CALL: u8 = 1;

pub fn run(data: &[u8]) {
    if let Ok(message) = bus::decode(data) {
        assert!(
            bus::decode(&data[..data.len() - 1]).is_err(),
            "{message:?} decoded without its last byte"
        );
        walk(&message);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        round_trip(text);
    }
}

/// Reads the body every way the `Reader` offers; errors end a walk.
fn walk(message: &Message) {
    // Following the signature: the helper's replies are strings, object paths and
    // booleans, at the top level or in a struct (polkit's `(bba{ss})`).
    let mut body = message.body();
    for code in message.signature.bytes() {
        let read = match code {
            b'(' | b')' | b'{' | b'}' => continue,
            b's' | b'o' => body.string().map(drop),
            b'b' => body.bool().map(drop),
            _ => break,
        };
        if read.is_err() {
            break;
        }
    }
    // Each value read takes at least 4 bytes, so these end at the end of the body.
    let mut body = message.body();
    while body.string().is_ok() {}
    let mut body = message.body();
    while body.bool().is_ok() {}
    let first = message.first_string();
    if message.signature.starts_with('s') {
        assert_eq!(first, message.body().string().ok(), "{message:?}");
    } else {
        assert_eq!(first, None, "{message:?}");
    }
}

fn round_trip(text: &str) {
    let call = Call {
        destination: "org.freedesktop.machine1",
        path: "/org/freedesktop/machine1",
        interface: "org.freedesktop.machine1.Manager",
        member: "UnregisterMachine",
        args: vec![Arg::Str(text)],
    };
    match bus::encode_call(&call, 1, 0) {
        Ok(bytes) => {
            let message = bus::decode(&bytes)
                .unwrap_or_else(|e| panic!("the call with {text:?} does not decode: {e}"));
            assert_eq!(message.kind, METHOD_CALL);
            assert_eq!(message.signature, "s");
            assert_eq!(message.first_string().as_deref(), Some(text));
        }
        Err(e) => assert!(text.contains('\0'), "{text:?} refused: {e}"),
    }
}
