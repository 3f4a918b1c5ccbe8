//! Message encoding. This is the only module that names bincode, so the
//! format can be swapped (e.g. for wincode or postcard) without touching
//! callers.
//!
//! bincode 1.3.3 is used only through its `Options` API: fixed-width
//! integers, a [`MAX_FRAME`] byte limit, trailing bytes rejected, decoding
//! from a slice. When decoding a slice, bincode replaces the byte limit by
//! the slice's bounds (`internal::deserialize_seed`): a length prefix is
//! checked against the bytes left before anything is allocated. The frame
//! itself is therefore capped here, in [`decode`].

use std::fmt;

use bincode::Options;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::MAX_FRAME;

/// Why a message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The message, or a length prefix in it, exceeds [`MAX_FRAME`] bytes.
    TooLarge,
    /// The frame ended in the middle of a message.
    Truncated,
    /// The frame holds more bytes than the message.
    TrailingBytes,
    /// A `bool` byte other than 0 or 1.
    InvalidBool(u8),
    /// An `Option` tag byte other than 0 or 1.
    InvalidTag(usize),
    /// A string that is not UTF-8.
    InvalidUtf8,
    /// Anything else, such as an unknown enum variant index.
    Invalid(String),
}

/// bincode 1.3.3's wording for trailing bytes (`config::trailing`); it has
/// no dedicated error kind. A test pins this mapping.
const TRAILING_BYTES_MESSAGE: &str = "Slice had bytes remaining after deserialization";

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(MAX_FRAME as u64)
        .reject_trailing_bytes()
}

/// Encodes `msg` into one frame; fails if it would exceed [`MAX_FRAME`].
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    options().serialize(msg).map_err(CodecError::from)
}

/// Decodes exactly one message from `frame`.
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, CodecError> {
    if frame.len() > MAX_FRAME {
        return Err(CodecError::TooLarge);
    }
    options().deserialize(frame).map_err(CodecError::from)
}

impl From<bincode::Error> for CodecError {
    fn from(err: bincode::Error) -> Self {
        match *err {
            bincode::ErrorKind::SizeLimit => CodecError::TooLarge,
            bincode::ErrorKind::Io(ref e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                CodecError::Truncated
            }
            bincode::ErrorKind::InvalidBoolEncoding(byte) => CodecError::InvalidBool(byte),
            bincode::ErrorKind::InvalidTagEncoding(tag) => CodecError::InvalidTag(tag),
            bincode::ErrorKind::InvalidUtf8Encoding(_) => CodecError::InvalidUtf8,
            bincode::ErrorKind::Custom(ref m) if m == TRAILING_BYTES_MESSAGE => {
                CodecError::TrailingBytes
            }
            other => CodecError::Invalid(other.to_string()),
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::TooLarge => write!(f, "message larger than {MAX_FRAME} bytes"),
            CodecError::Truncated => f.write_str("message truncated"),
            CodecError::TrailingBytes => f.write_str("trailing bytes after message"),
            CodecError::InvalidBool(byte) => write!(f, "invalid bool byte {byte:#04x}"),
            CodecError::InvalidTag(tag) => write!(f, "invalid option tag {tag}"),
            CodecError::InvalidUtf8 => f.write_str("string is not valid UTF-8"),
            CodecError::Invalid(reason) => write!(f, "malformed message: {reason}"),
        }
    }
}

impl std::error::Error for CodecError {}
