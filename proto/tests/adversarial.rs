//! Named hostile inputs for the decoder and the validators, each rejected
//! with a specific error.

use vmspawn_proto::codec::{self, CodecError};
use vmspawn_proto::{
    ErrorKind, MAX_FRAME, Request, Response, validate, validate_ifname, validate_machine_name,
};

// Hand-built frames follow bincode's fixint layout: u32 variant index,
// u64 length before string bytes, one tag byte before an Option's value.
const CREATE_TAP: u32 = 1;

fn variant(index: u32) -> Vec<u8> {
    index.to_le_bytes().to_vec()
}

fn string(bytes: &[u8]) -> Vec<u8> {
    [&(bytes.len() as u64).to_le_bytes()[..], bytes].concat()
}

fn decode_request(frame: &[u8]) -> Result<Request, CodecError> {
    codec::decode(frame)
}

fn create_tap(machine: &str, bridge: Option<&str>) -> Request {
    Request::CreateTap {
        machine: machine.to_owned(),
        bridge: bridge.map(str::to_owned),
    }
}

// ---- codec ----

#[test]
fn hand_built_frame_matches_encoder() {
    let frame = [variant(CREATE_TAP), string(b"vm"), vec![1], string(b"br0")].concat();
    assert_eq!(
        codec::encode(&create_tap("vm", Some("br0"))).unwrap(),
        frame
    );
    assert_eq!(decode_request(&frame), Ok(create_tap("vm", Some("br0"))));
}

#[test]
fn trailing_bytes_rejected() {
    let mut frame = codec::encode(&Request::Hello {
        version: 1,
        interactive_auth: false,
    })
    .unwrap();
    frame.push(0);
    assert_eq!(decode_request(&frame), Err(CodecError::TrailingBytes));
}

#[test]
fn spoofed_uid_after_hello_rejected_as_trailing_bytes() {
    let mut frame = codec::encode(&Request::Hello {
        version: 1,
        interactive_auth: false,
    })
    .unwrap();
    frame.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(decode_request(&frame), Err(CodecError::TrailingBytes));
}

#[test]
fn every_truncation_rejected() {
    let frame = codec::encode(&Request::RegisterMachine {
        machine: "vm".to_owned(),
        uuid: Some([7; 16]),
    })
    .unwrap();
    for len in 0..frame.len() {
        assert_eq!(
            decode_request(&frame[..len]),
            Err(CodecError::Truncated),
            "{len}"
        );
    }
}

#[test]
fn empty_frame_rejected() {
    assert_eq!(decode_request(&[]), Err(CodecError::Truncated));
    assert_eq!(codec::decode::<Response>(&[]), Err(CodecError::Truncated));
}

#[test]
fn unknown_request_variant_rejected() {
    for index in [6, 99, u32::MAX] {
        match decode_request(&variant(index)) {
            Err(CodecError::Invalid(reason)) => {
                assert!(reason.contains("variant index"), "{reason}")
            }
            other => panic!("variant {index}: {other:?}"),
        }
    }
}

#[test]
fn unknown_error_kind_variant_rejected() {
    const ERROR: u32 = 5;
    let frame = [variant(ERROR), variant(99), string(b"x")].concat();
    match codec::decode::<Response>(&frame) {
        Err(CodecError::Invalid(reason)) => assert!(reason.contains("variant index"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_option_tag_byte_rejected() {
    for tag in [2u8, 0xff] {
        let frame = [
            variant(CREATE_TAP),
            string(b"vm"),
            vec![tag],
            string(b"br0"),
        ]
        .concat();
        assert_eq!(
            decode_request(&frame),
            Err(CodecError::InvalidTag(tag.into()))
        );
    }
}

#[test]
fn invalid_bool_byte_rejected() {
    assert_eq!(codec::decode::<bool>(&[2]), Err(CodecError::InvalidBool(2)));
}

// bincode 1.3.3 checks a length prefix against the bytes left in the slice
// before it allocates or copies anything, so a huge prefix is a clean
// `Truncated`; `decode` refuses frames over MAX_FRAME up front.

#[test]
fn string_length_u64_max_rejected_without_allocating() {
    let frame = [
        variant(CREATE_TAP),
        u64::MAX.to_le_bytes().to_vec(),
        vec![b'a'; 8],
    ]
    .concat();
    assert_eq!(decode_request(&frame), Err(CodecError::Truncated));
}

#[test]
fn string_length_u32_max_rejected() {
    let frame = [
        variant(CREATE_TAP),
        u64::from(u32::MAX).to_le_bytes().to_vec(),
    ]
    .concat();
    assert_eq!(decode_request(&frame), Err(CodecError::Truncated));
}

#[test]
fn string_length_4097_rejected() {
    // Within a full-size frame the prefix promises more than is there...
    let mut frame = [variant(CREATE_TAP), 4097u64.to_le_bytes().to_vec()].concat();
    frame.resize(MAX_FRAME, b'a');
    assert_eq!(decode_request(&frame), Err(CodecError::Truncated));
    // ...and a frame that really holds 4097 bytes of string is too large.
    frame.resize(12 + 4097 + 1, b'a');
    assert_eq!(decode_request(&frame), Err(CodecError::TooLarge));
}

#[test]
fn string_length_beyond_frame_is_truncated() {
    let frame = [
        variant(CREATE_TAP),
        1000u64.to_le_bytes().to_vec(),
        vec![b'a'; 10],
    ]
    .concat();
    assert_eq!(decode_request(&frame), Err(CodecError::Truncated));
}

#[test]
fn invalid_utf8_rejected() {
    let frame = [variant(CREATE_TAP), string(&[0xff, 0xfe]), vec![0]].concat();
    assert_eq!(decode_request(&frame), Err(CodecError::InvalidUtf8));
}

#[test]
fn frame_over_max_frame_rejected() {
    let frame = vec![0; MAX_FRAME + 1];
    assert_eq!(decode_request(&frame), Err(CodecError::TooLarge));
}

#[test]
fn encode_limit_is_max_frame() {
    // variant (4) + length (8) + machine + None tag (1) = machine + 13 bytes.
    let fits = create_tap(&"a".repeat(MAX_FRAME - 13), None);
    let frame = codec::encode(&fits).unwrap();
    assert_eq!(frame.len(), MAX_FRAME);
    assert_eq!(decode_request(&frame), Ok(fits));

    let too_big = create_tap(&"a".repeat(MAX_FRAME - 12), None);
    assert_eq!(codec::encode(&too_big), Err(CodecError::TooLarge));
}

// ---- names ----

const BAD_MACHINE_NAMES: &[&str] = &[
    "",
    ".",
    "..",
    ".vm",
    "vm.",
    "a..b",
    "../etc",
    "a/b",
    "/",
    "a\0b",
    "\0",
    "a b",
    " vm",
    "vm\t",
    "vm\n",
    "mäschine",
    "vm\u{202e}",
    "vm:1",
    "vm@host",
    "$(id)",
];

#[test]
fn machine_names_accepted() {
    for name in [
        "vm",
        "a",
        "vm-1",
        "my_vm",
        "vm.example.org",
        "0",
        "-",
        &"a".repeat(64),
    ] {
        assert_eq!(validate_machine_name(name), Ok(()), "{name:?}");
    }
}

#[test]
fn bad_machine_names_rejected() {
    for name in BAD_MACHINE_NAMES {
        assert!(validate_machine_name(name).is_err(), "{name:?}");
    }
}

#[test]
fn machine_name_length_limits() {
    assert_eq!(validate_machine_name(&"a".repeat(64)), Ok(()));
    for len in [0, 65, 4096] {
        let err = validate_machine_name(&"a".repeat(len)).unwrap_err();
        assert_eq!(
            err,
            format!("machine name must be 1 to 64 bytes long, got {len}")
        );
    }
}

#[test]
fn ifnames_accepted() {
    for name in [
        "br0",
        "virbr0",
        "br-lan",
        "br_0",
        "vlan.10",
        "a",
        "...",
        &"b".repeat(15),
    ] {
        assert_eq!(validate_ifname(name), Ok(()), "{name:?}");
    }
}

#[test]
fn bad_ifnames_rejected() {
    for name in [
        "", ".", "..", "br/0", "/", "br 0", "br\0", "br\n", "brü", "br:0", "*", "eth%d",
    ] {
        assert!(validate_ifname(name).is_err(), "{name:?}");
    }
}

/// CVE-2019-13164 class: IFNAMSIZ is 16, so at most 15 bytes.
#[test]
fn ifname_length_limits_15_16_17_4096() {
    assert_eq!(validate_ifname(&"b".repeat(15)), Ok(()));
    for len in [16, 17, 4096] {
        let err = validate_ifname(&"b".repeat(len)).unwrap_err();
        assert_eq!(
            err,
            format!("interface name must be 1 to 15 bytes long, got {len}")
        );
    }
}

#[test]
fn length_is_checked_before_content() {
    let long_with_nul = format!("{}\0", "b".repeat(4095));
    assert!(
        validate_ifname(&long_with_nul)
            .unwrap_err()
            .contains("1 to 15 bytes")
    );
    assert!(
        validate_machine_name(&long_with_nul)
            .unwrap_err()
            .contains("1 to 64 bytes")
    );
}

#[test]
fn validate_names_the_bad_field() {
    let err = validate(&create_tap("vm", Some(&"b".repeat(16)))).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert!(err.message.starts_with("bridge: "), "{err}");

    for req in [
        create_tap("a/b", Some("br0")),
        Request::RegisterMachine {
            machine: "..".to_owned(),
            uuid: None,
        },
        Request::UnregisterMachine {
            machine: String::new(),
        },
    ] {
        let err = validate(&req).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidRequest);
        assert!(err.message.starts_with("machine: "), "{err}");
    }
}

#[test]
fn validate_accepts_good_requests() {
    for req in [
        Request::Hello {
            version: 1,
            interactive_auth: false,
        },
        create_tap("vm", None),
        create_tap("vm.1", Some("br0")),
        Request::OpenKvm,
        Request::OpenVhostVsock {
            machine: "vm".to_owned(),
            cid: Some(3),
        },
        Request::RegisterMachine {
            machine: "vm".to_owned(),
            uuid: Some([1; 16]),
        },
        Request::UnregisterMachine {
            machine: "vm".to_owned(),
        },
    ] {
        assert_eq!(validate(&req), Ok(()), "{req:?}");
    }
}

#[test]
fn errors_do_not_echo_untrusted_names() {
    let err = validate(&create_tap("evil\u{1b}[31m", None)).unwrap_err();
    assert!(!err.message.contains("evil"), "{err}");
    assert_eq!(
        err.to_string(),
        "invalid request: machine: machine name has a byte 0x1b at offset 4 that is not allowed"
    );
}

#[test]
fn vsock_cids_must_be_regular() {
    for cid in [0, 1, 2, u32::MAX] {
        let err = validate(&Request::OpenVhostVsock {
            machine: "vm".to_owned(),
            cid: Some(cid),
        })
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidRequest);
        assert!(err.message.starts_with("cid: "), "{}", err.message);
    }
    for cid in [None, Some(3), Some(u32::MAX - 1)] {
        validate(&Request::OpenVhostVsock {
            machine: "vm".to_owned(),
            cid,
        })
        .unwrap();
    }
}
