//! Property tests: every message survives encode/decode, and no input
//! makes the decoder or the validators panic.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;
use vmspawn_proto::{
    ErrorKind, MAX_FRAME, ProtoError, Request, Response, codec, validate, validate_ifname,
    validate_machine_name,
};

/// Any Unicode, including NUL and control characters.
fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..80).prop_map(String::from_iter)
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u32>(), any::<bool>()).prop_map(|(version, interactive_auth)| Request::Hello {
            version,
            interactive_auth
        }),
        (text(), option::of(text()))
            .prop_map(|(machine, bridge)| Request::CreateTap { machine, bridge }),
        Just(Request::OpenKvm),
        (text(), option::of(any::<u32>()))
            .prop_map(|(machine, cid)| Request::OpenVhostVsock { machine, cid }),
        (text(), option::of(any::<[u8; 16]>()))
            .prop_map(|(machine, uuid)| Request::RegisterMachine { machine, uuid }),
        text().prop_map(|machine| Request::UnregisterMachine { machine }),
    ]
}

fn error_kind() -> impl Strategy<Value = ErrorKind> {
    prop_oneof![
        Just(ErrorKind::VersionMismatch),
        Just(ErrorKind::InvalidRequest),
        Just(ErrorKind::Denied),
        Just(ErrorKind::QuotaExceeded),
        Just(ErrorKind::Unsupported),
        Just(ErrorKind::Failed),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        any::<u32>().prop_map(|version| Response::Hello { version }),
        text().prop_map(|ifname| Response::Tap { ifname }),
        Just(Response::Device),
        Just(Response::Registered),
        Just(Response::Unregistered),
        any::<u32>().prop_map(|cid| Response::VsockDevice { cid }),
        (error_kind(), text())
            .prop_map(|(kind, message)| Response::Error(ProtoError { kind, message })),
    ]
}

proptest! {
    #[test]
    fn request_round_trips(req in request()) {
        let frame = codec::encode(&req).unwrap();
        prop_assert!(frame.len() <= MAX_FRAME);
        prop_assert_eq!(codec::decode::<Request>(&frame).unwrap(), req);
    }

    #[test]
    fn response_round_trips(resp in response()) {
        let frame = codec::encode(&resp).unwrap();
        prop_assert!(frame.len() <= MAX_FRAME);
        prop_assert_eq!(codec::decode::<Response>(&frame).unwrap(), resp);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..=MAX_FRAME + 16)) {
        if let Ok(req) = codec::decode::<Request>(&bytes) {
            let _ = validate(&req);
        }
        let _ = codec::decode::<Response>(&bytes);
    }

    /// Corrupting one byte of a valid frame never panics, and whatever still
    /// decodes re-encodes to the very same bytes: every message has exactly
    /// one encoding.
    #[test]
    fn corrupted_frames_never_panic_and_stay_canonical(
        req in request(), at in any::<Index>(), byte in any::<u8>()
    ) {
        let mut frame = codec::encode(&req).unwrap();
        let at = at.index(frame.len());
        frame[at] = byte;
        if let Ok(decoded) = codec::decode::<Request>(&frame) {
            let _ = validate(&decoded);
            prop_assert_eq!(codec::encode(&decoded).unwrap(), frame);
        }
    }

    #[test]
    fn well_formed_machine_names_pass(
        name in "[A-Za-z0-9_-]{1,12}(\\.[A-Za-z0-9_-]{1,12}){0,3}"
    ) {
        prop_assert_eq!(validate_machine_name(&name), Ok(()));
    }

    #[test]
    fn well_formed_ifnames_pass(name in "[A-Za-z0-9_-][A-Za-z0-9_.-]{0,14}") {
        prop_assert_eq!(validate_ifname(&name), Ok(()));
    }

    /// Whatever a validator accepts is short, plain ASCII and path-safe.
    #[test]
    fn accepted_names_are_safe(
        name in prop_oneof![text(), "[a-z0-9_./ \\x00\\té-]{0,20}"]
    ) {
        let plain = |max: usize| {
            !name.is_empty()
                && name.len() <= max
                && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
        };
        if validate_machine_name(&name).is_ok() {
            prop_assert!(plain(64) && !name.contains("..") && !name.starts_with('.'));
        }
        if validate_ifname(&name).is_ok() {
            prop_assert!(plain(15) && name != "." && name != "..");
        }
    }
}
