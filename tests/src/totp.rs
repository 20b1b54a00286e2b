//! TOTP codes computed here from the RFC (6238 over 4226: HMAC-SHA-1, 30 s steps, 6 digits), so
//! the tests check the server against an implementation that is not its own.

use hmac::{Hmac, Mac};

/// Decodes RFC 4648 base32 (upper case, no padding needed).
pub fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u32, Vec::new());
    for c in text.trim_end_matches('=').bytes() {
        let digit = ALPHABET
            .iter()
            .position(|a| *a == c.to_ascii_uppercase())
            .unwrap_or_else(|| panic!("not base32: {text}"));
        value = (value << 5) | u32::try_from(digit).expect("small");
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((value >> bits) & 0xff).expect("a byte"));
        }
    }
    out
}

/// The six-digit code of `secret` (base32) at `unix_secs`.
pub fn code_at(secret: &str, unix_secs: u64) -> String {
    let key = base32_decode(secret);
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(&key).expect("any key length");
    mac.update(&(unix_secs / 30).to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let bin = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    format!("{:06}", bin % 1_000_000)
}

/// The code of `secret` now.
pub fn code_now(secret: &str) -> String {
    code_at(secret, now())
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc_6238_sha1_vectors() {
        // "12345678901234567890"; appendix B's 8-digit values end in these six digits.
        let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        assert_eq!(super::code_at(secret, 59), "287082");
        assert_eq!(super::code_at(secret, 1_111_111_109), "081804");
        assert_eq!(super::code_at(secret, 2_000_000_000), "279037");
    }
}
