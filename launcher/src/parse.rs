//! Value parsers with systemd's syntax: booleans, tristates, sizes, UUIDs, paths, C escapes.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// A yes/no/auto setting; `auto` is also what an empty value means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tristate {
    Yes,
    No,
    Auto,
}

pub fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

pub fn parse_tristate(value: &str) -> Option<Tristate> {
    if value.is_empty() || value.eq_ignore_ascii_case("auto") {
        return Some(Tristate::Auto);
    }
    parse_bool(value).map(|b| if b { Tristate::Yes } else { Tristate::No })
}

/// Parses a size with base-1024 suffixes (B, K, M, G, T, P, E), fractions allowed ("1.5G").
pub fn parse_size(value: &str) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() || value.starts_with('-') {
        return None;
    }
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(split);
    let factor: u64 = match suffix.trim() {
        "" | "B" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        "P" => 1 << 50,
        "E" => 1 << 60,
        _ => return None,
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() || fraction.contains('.') {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let mut total = whole.checked_mul(factor)?;
    if !fraction.is_empty() {
        // Exact decimal fraction of the unit, rounded down to whole bytes.
        let digits = fraction.len().min(18) as u32;
        let numerator: u128 = fraction[..digits as usize].parse().ok()?;
        let part = numerator * u128::from(factor) / 10u128.pow(digits);
        total = total.checked_add(u64::try_from(part).ok()?)?;
    }
    Some(total)
}

/// Parses a 128-bit ID written as 32 hex digits, with or without the UUID dashes.
pub fn parse_uuid(value: &str) -> Option<[u8; 16]> {
    let hex: String = if value.len() == 36 {
        let dashes = [8, 13, 18, 23];
        for (i, c) in value.char_indices() {
            if dashes.contains(&i) != (c == '-') {
                return None;
            }
        }
        value.chars().filter(|&c| c != '-').collect()
    } else {
        value.to_string()
    };
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

pub fn format_uuid(id: &[u8; 16]) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Makes a path absolute against `cwd` and simplifies it lexically (no symlink resolution),
/// like systemd's parse_path_argument().
pub fn absolute_path(value: &OsStr, cwd: &Path) -> PathBuf {
    let joined = if Path::new(value).is_absolute() {
        PathBuf::from(value)
    } else {
        cwd.join(value)
    };
    let mut out = PathBuf::from("/");
    for component in joined.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => out.push(".."),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Undoes C escapes (\n, \t, \\, \xNN, \NNN octal, \uXXXX, \UXXXXXXXX); `\x00` is allowed.
pub fn c_unescape(input: &str) -> Result<Vec<u8>, String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let Some(&kind) = bytes.get(i + 1) else {
            return Err("trailing backslash".into());
        };
        i += 2;
        let simple = match kind {
            b'a' => Some(7u8),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(11),
            b'\\' => Some(b'\\'),
            b'"' => Some(b'"'),
            b'\'' => Some(b'\''),
            b's' => Some(b' '),
            _ => None,
        };
        if let Some(byte) = simple {
            out.push(byte);
            continue;
        }
        let take_hex = |count: usize, at: usize| -> Result<u32, String> {
            let digits = input
                .get(at..at + count)
                .filter(|d| d.len() == count && d.chars().all(|c| c.is_ascii_hexdigit()))
                .ok_or_else(|| format!("bad escape sequence at byte {}", at - 2))?;
            u32::from_str_radix(digits, 16).map_err(|e| e.to_string())
        };
        match kind {
            b'x' => {
                out.push(take_hex(2, i)? as u8);
                i += 2;
            }
            b'u' | b'U' => {
                let count = if kind == b'u' { 4 } else { 8 };
                let code = take_hex(count, i)?;
                let c =
                    char::from_u32(code).ok_or_else(|| format!("invalid code point {code:#x}"))?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i += count;
            }
            b'0'..=b'7' => {
                let digits = input
                    .get(i - 1..i + 2)
                    .filter(|d| d.bytes().all(|c| (b'0'..=b'7').contains(&c)))
                    .ok_or_else(|| format!("bad octal escape at byte {}", i - 2))?;
                let value = u32::from_str_radix(digits, 8).map_err(|e| e.to_string())?;
                if value > 255 {
                    return Err(format!("octal escape out of range at byte {}", i - 2));
                }
                out.push(value as u8);
                i += 2;
            }
            other => return Err(format!("unknown escape sequence \\{}", other as char)),
        }
    }
    Ok(out)
}

/// Doubles every comma, so a value can sit inside a QEMU `key=value,...` option string.
pub fn escape_qemu_value(value: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(value.len());
    for &b in value.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// Splits `$SYSTEMD_VMSPAWN_QEMU_EXTRA` into words: whitespace separated, with single and double
/// quotes and C escapes (outside single quotes), the way systemd's extract_first_word() does with
/// EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE.
pub fn split_words(input: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = input.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => current.push(c),
            (_, '\\') => {
                in_word = true;
                let mut escape = String::from("\\");
                let Some(next) = chars.next() else {
                    return Err("trailing backslash".into());
                };
                escape.push(next);
                let extra = match next {
                    'x' => 2,
                    'u' => 4,
                    'U' => 8,
                    '0'..='7' => 2,
                    _ => 0,
                };
                for _ in 0..extra {
                    if let Some(c) = chars.next() {
                        escape.push(c);
                    }
                }
                let bytes = c_unescape(&escape)?;
                current.push_str(
                    &String::from_utf8(bytes)
                        .map_err(|_| "escape is not valid UTF-8".to_string())?,
                );
            }
            (_, c) => {
                in_word = true;
                current.push(c);
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}

/// Parses an Ethernet address `aa:bb:cc:dd:ee:ff` (also `-` separated).
pub fn parse_mac(value: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = value.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.is_empty() || part.len() > 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    Some(mac)
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// True for a name systemd accepts as a hostname (and so as a machine name).
pub fn is_valid_hostname(name: &str) -> bool {
    if name.is_empty() || name.len() > 64 || name == "." || name == ".." {
        return false;
    }
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) && !name.starts_with('-')
}

/// Turns an arbitrary string into a hostname: invalid characters dropped, dots collapsed,
/// length limited to 64, like systemd's hostname_cleanup().
pub fn hostname_cleanup(name: &str) -> String {
    let mut out = String::new();
    let mut last_dot = true;
    for c in name.chars() {
        if c == '.' {
            if !last_dot {
                out.push('.');
                last_dot = true;
            }
        } else if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            out.push(c);
            last_dot = false;
        }
        if out.len() >= 64 {
            break;
        }
    }
    while out.ends_with('.') {
        out.pop();
    }
    out
}

/// A credential name is a valid file name of at most 255 bytes.
pub fn is_valid_credential_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != b"."
        && name != b".."
        && !name.contains(&b'/')
        && !name.contains(&0)
}

/// Splits `ID:VALUE` at the first unescaped colon; backslash escapes are allowed in the ID.
pub fn split_credential(value: &str) -> Option<(String, &str)> {
    let mut id = String::new();
    let mut chars = value.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, next) = chars.next()?;
                id.push(next);
            }
            ':' => return Some((id, &value[i + 1..])),
            c => id.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1K"), Some(1024));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("12X"), None);
        assert_eq!(parse_size("-1M"), None);
        assert_eq!(parse_size("99999999999E"), None);
        assert_eq!(parse_size("1.2.3M"), None);
    }

    #[test]
    fn booleans_and_tristates() {
        for yes in ["yes", "true", "on", "1", "Y", "t"] {
            assert_eq!(parse_bool(yes), Some(true), "{yes}");
        }
        for no in ["no", "false", "off", "0", "n", "F"] {
            assert_eq!(parse_bool(no), Some(false), "{no}");
        }
        assert_eq!(parse_bool("maybe"), None);
        assert_eq!(parse_tristate(""), Some(Tristate::Auto));
        assert_eq!(parse_tristate("auto"), Some(Tristate::Auto));
        assert_eq!(parse_tristate("off"), Some(Tristate::No));
        assert_eq!(parse_tristate("bogus"), None);
    }

    #[test]
    fn uuids() {
        let id = parse_uuid("0123456789abcdef0123456789ABCDEF").unwrap();
        assert_eq!(format_uuid(&id), "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(parse_uuid("01234567-89ab-cdef-0123-456789abcdef"), Some(id));
        assert_eq!(parse_uuid("01234567-89abc-def-0123-456789abcdef"), None);
        assert_eq!(parse_uuid("xyz"), None);
    }

    #[test]
    fn unescaping() {
        assert_eq!(c_unescape(r"a\nb\x00c\\").unwrap(), b"a\nb\0c\\");
        assert_eq!(c_unescape(r"\101\u00e9").unwrap(), "Aé".as_bytes());
        assert!(c_unescape(r"\q").is_err());
        assert!(c_unescape("x\\").is_err());
    }

    #[test]
    fn words() {
        assert_eq!(
            split_words(r#"-device "a b" 'c\n' d\te"#).unwrap(),
            vec!["-device", "a b", r"c\n", "d\te"]
        );
        assert!(split_words("'open").is_err());
        assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn paths() {
        let cwd = Path::new("/home/u");
        assert_eq!(
            absolute_path(OsStr::new("img.raw"), cwd),
            Path::new("/home/u/img.raw")
        );
        assert_eq!(
            absolute_path(OsStr::new("./a//b/"), cwd),
            Path::new("/home/u/a/b")
        );
        assert_eq!(absolute_path(OsStr::new("/x/./y"), cwd), Path::new("/x/y"));
    }

    #[test]
    fn hostnames() {
        assert!(is_valid_hostname("debian-12"));
        assert!(!is_valid_hostname("a b"));
        assert_eq!(hostname_cleanup("my image!.v2"), "myimage.v2");
        assert_eq!(hostname_cleanup("..x.."), "x");
    }

    #[test]
    fn credentials() {
        assert_eq!(split_credential("a:b:c"), Some(("a".into(), "b:c")));
        assert_eq!(split_credential(r"a\:b:c"), Some(("a:b".into(), "c")));
        assert_eq!(split_credential("abc"), None);
        assert!(is_valid_credential_name(b"foo.bar"));
        assert!(!is_valid_credential_name(b"a/b"));
        assert!(!is_valid_credential_name(b".."));
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:00:00:AB:cd:01"),
            Some([2, 0, 0, 0xab, 0xcd, 1])
        );
        assert_eq!(parse_mac("02:00:00"), None);
        assert_eq!(format_mac(&[2, 0, 0, 0xab, 0xcd, 1]), "02:00:00:ab:cd:01");
    }

    #[test]
    fn qemu_escape() {
        assert_eq!(escape_qemu_value(OsStr::new("a,b")), OsString::from("a,,b"));
    }
}
