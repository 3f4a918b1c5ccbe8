//! Target `decode`: arbitrary bytes as a frame of the helper protocol.
//!
//! Decoding (as a request, which the privileged helper does with untrusted input, and as a
//! response) and validating must never panic, hang or allocate beyond the frame. A frame
//! that decodes is the canonical encoding of its message: encoding it again gives the same
//! bytes, so no two frames mean the same message.

use vmspawn_proto::{Request, Response, codec, validate};

pub fn run(frame: &[u8]) {
    if let Ok(request) = codec::decode::<Request>(frame) {
        let _ = validate(&request);
        assert_eq!(
            codec::encode(&request).as_deref(),
            Ok(frame),
            "{request:?} decoded from a frame that is not its encoding"
        );
    }
    if let Ok(response) = codec::decode::<Response>(frame) {
        assert_eq!(
            codec::encode(&response).as_deref(),
            Ok(frame),
            "{response:?} decoded from a frame that is not its encoding"
        );
    }
}
