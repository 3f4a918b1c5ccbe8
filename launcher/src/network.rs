//! TAP naming and MAC derivation, bit-exact with systemd-vmspawn 259 (SipHash-2-4 with fixed
//! keys), for the case where QEMU creates the TAP itself (the launcher has CAP_NET_ADMIN).

use std::hash::Hasher;

use siphasher::sip::SipHasher24;

const IFNAME_KEY: [u8; 16] = [
    0xe1, 0x90, 0xa4, 0x04, 0xa8, 0xef, 0x4b, 0x51, 0x8c, 0xcc, 0xc3, 0x3a, 0x9f, 0x11, 0xfc, 0xa2,
];
const MAC_KEY: [u8; 16] = [
    0x01, 0xd0, 0xc6, 0x4c, 0x2b, 0xdf, 0x24, 0xfb, 0xc0, 0xf8, 0xb2, 0x09, 0x7d, 0x59, 0xb2, 0x93,
];
const IFNAMSIZ: usize = 16;

fn siphash(key: &[u8; 16], data: &[u8]) -> u64 {
    let mut hasher = SipHasher24::new_with_key(key);
    hasher.write(data);
    hasher.finish()
}

/// `vt-<machine>`, shortened to 15 bytes with a hash suffix when longer.
pub fn tap_ifname(machine: &str) -> String {
    let full = format!("vt-{machine}");
    if full.len() < IFNAMSIZ {
        return full;
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let h = siphash(&IFNAME_KEY, full.as_bytes());
    let mut short: String = full.chars().take(11).collect();
    for shift in [18, 12, 6, 0] {
        short.push(ALPHABET[((h >> shift) & 63) as usize] as char);
    }
    short
}

/// The TAP's MAC: SipHash of the host's machine ID and the machine name, made locally
/// administered and unicast.
pub fn tap_mac(machine_id: &[u8; 16], machine: &str) -> [u8; 6] {
    let mut data = machine_id.to_vec();
    data.extend_from_slice(machine.as_bytes());
    let bytes = siphash(&MAC_KEY, &data).to_le_bytes();
    let mut mac = [bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]];
    mac[0] &= 0xfe;
    mac[0] |= 0x02;
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_unchanged_long_names_hashed() {
        assert_eq!(tap_ifname("debian"), "vt-debian");
        let long = tap_ifname("a-very-long-machine-name");
        assert_eq!(long.len(), 15);
        assert!(long.starts_with("vt-a-very-l"));
        assert_eq!(long, tap_ifname("a-very-long-machine-name"));
    }

    #[test]
    fn mac_is_local_unicast_and_stable() {
        let mac = tap_mac(&[7; 16], "debian");
        assert_eq!(mac[0] & 0x03, 0x02);
        assert_eq!(mac, tap_mac(&[7; 16], "debian"));
        assert_ne!(mac, tap_mac(&[7; 16], "debian2"));
    }
}
