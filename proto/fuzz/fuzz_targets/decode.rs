//! Arbitrary bytes as a request frame: decoding and validation must never
//! panic, hang or allocate beyond the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmspawn_proto::{Request, codec, validate};

fuzz_target!(|frame: &[u8]| {
    if let Ok(request) = codec::decode::<Request>(frame) {
        let _ = validate(&request);
    }
});
