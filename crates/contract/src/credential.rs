//! Plugin and admin credentials: random bearer tokens, and their SHA-256 digests in the
//! `sha256:HEX` form that tokens files and pushed directory snapshots carry. Only digests
//! leave the process that made a token.

use sha2::{Digest, Sha256};

/// Random token text: 64 hex digits from the operating system's random source.
pub fn generate_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// The SHA-256 digest of a token.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// `sha256:HEX` of a token, as written in tokens files.
pub fn digest_line(token: &str) -> String {
    format_digest(&digest(token))
}

/// `sha256:HEX` of a digest.
pub fn format_digest(digest: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(digest))
}

/// Parses `sha256:HEX` (64 hex digits) into a digest.
pub fn parse_digest(s: &str) -> Result<[u8; 32], String> {
    let text = s
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("{s:?} must start with sha256: (store digests, not tokens)"))?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|_| "a sha256 digest has 64 hex digits")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn digests_round_trip_and_refuse_non_digests() {
        let line = digest_line("secret");
        assert_eq!(parse_digest(&line).unwrap(), digest("secret"));
        assert!(parse_digest("secret").is_err());
        assert!(parse_digest(&format!("sha256:+{}", "0".repeat(63))).is_err());
        assert!(parse_digest(&format!("sha256:{}", "0".repeat(62))).is_err());
        assert!(parse_digest(&format!("sha256:{}", "g".repeat(64))).is_err());
    }
}
