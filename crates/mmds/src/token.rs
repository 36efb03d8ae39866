//! MMDS V2 session tokens: `PUT /latest/api/token` with a time to live of
//! 1 to 21600 seconds gives a random token (128 bits from the kernel's
//! random source, in hex); a token is valid until its time to live ends.
//!
//! The authority keeps the tokens it gave out, at most [`MAX_TOKENS`]: a
//! guest that asks for more pushes out expired ones first, then the ones
//! nearest their end, so that its requests cannot grow the VMM's memory.

use std::io::Read;
use std::time::{Duration, Instant};

pub const MIN_TTL_SECONDS: u32 = 1;
pub const MAX_TTL_SECONDS: u32 = 21600;
/// The most live tokens kept.
pub const MAX_TOKENS: usize = 1024;
/// Random bytes in a token.
const TOKEN_BYTES: usize = 16;
/// The length of a token (hex).
pub const TOKEN_LEN: usize = TOKEN_BYTES * 2;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("Invalid time to live value provided for token: {0}. Please provide a value between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS}.")]
    InvalidTtl(String),
    #[error("cannot read random bytes for a token")]
    Random(#[source] std::io::Error),
}

/// Checks a time to live header value.
pub fn parse_ttl(value: &str) -> Result<u32, TokenError> {
    match value.trim().parse::<u32>() {
        Ok(ttl) if (MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&ttl) => Ok(ttl),
        _ => Err(TokenError::InvalidTtl(value.trim().to_string())),
    }
}

#[derive(Debug)]
pub struct TokenAuthority {
    tokens: Vec<([u8; TOKEN_LEN], Instant)>,
    /// The host's entropy source, opened with the MMDS (at start): the
    /// thread that serves the guest's requests may not open files (its
    /// syscall filter, docs/SECURITY.md).
    entropy: std::io::Result<std::fs::File>,
}

impl Default for TokenAuthority {
    fn default() -> Self {
        TokenAuthority {
            tokens: Vec::new(),
            entropy: std::fs::File::open("/dev/urandom"),
        }
    }
}

impl TokenAuthority {
    fn random_bytes(&self) -> Result<[u8; TOKEN_BYTES], TokenError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        match &self.entropy {
            Ok(file) => {
                let mut file: &std::fs::File = file;
                file.read_exact(&mut bytes).map_err(TokenError::Random)?
            }
            Err(e) => {
                return Err(TokenError::Random(std::io::Error::new(
                    e.kind(),
                    e.to_string(),
                )))
            }
        }
        Ok(bytes)
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl TokenAuthority {
    /// A new token valid for `ttl` seconds from `now`.
    pub fn generate(&mut self, ttl: u32, now: Instant) -> Result<String, TokenError> {
        if !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&ttl) {
            return Err(TokenError::InvalidTtl(ttl.to_string()));
        }
        let bytes = self.random_bytes()?;
        let mut text = [0u8; TOKEN_LEN];
        for (i, b) in bytes.iter().enumerate() {
            text[2 * i] = b"0123456789abcdef"[usize::from(b >> 4)];
            text[2 * i + 1] = b"0123456789abcdef"[usize::from(b & 15)];
        }
        self.tokens.retain(|(_, expiry)| *expiry > now);
        if self.tokens.len() >= MAX_TOKENS {
            if let Some(i) = (0..self.tokens.len()).min_by_key(|&i| self.tokens[i].1) {
                self.tokens.swap_remove(i);
            }
        }
        let expiry = now + Duration::from_secs(u64::from(ttl));
        self.tokens.push((text, expiry));
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    /// Whether `token` was given out and has not expired at `now`.
    pub fn is_valid(&self, token: &str, now: Instant) -> bool {
        let token = token.trim().as_bytes();
        self.tokens
            .iter()
            .any(|(t, expiry)| same(t, token) && *expiry > now)
    }

    /// The tokens live at `now` and the time each has left.
    pub fn live(&self, now: Instant) -> impl Iterator<Item = (&str, Duration)> {
        self.tokens
            .iter()
            .filter(move |(_, expiry)| *expiry > now)
            .map(move |(t, expiry)| {
                // Tokens are hex text (made by `generate`, checked by `replace`).
                (std::str::from_utf8(t).unwrap_or_default(), *expiry - now)
            })
    }

    /// Replaces the tokens with `tokens` (text and expiry), at most
    /// [`MAX_TOKENS`] of them (the caller checked their form).
    pub(crate) fn replace(&mut self, mut tokens: Vec<([u8; TOKEN_LEN], Instant)>) {
        tokens.truncate(MAX_TOKENS);
        self.tokens = tokens;
    }

    /// Tokens kept (live or not yet purged).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_live_for_their_ttl() {
        let mut authority = TokenAuthority::default();
        let now = Instant::now();
        let a = authority.generate(10, now).unwrap();
        let b = authority.generate(1, now).unwrap();
        assert_eq!(a.len(), TOKEN_LEN);
        assert_ne!(a, b);
        assert!(authority.is_valid(&a, now));
        assert!(authority.is_valid(&b, now + Duration::from_millis(999)));
        assert!(!authority.is_valid(&b, now + Duration::from_secs(1)));
        assert!(authority.is_valid(&a, now + Duration::from_secs(9)));
        assert!(!authority.is_valid(&a, now + Duration::from_secs(10)));
        assert!(!authority.is_valid("", now));
        assert!(!authority.is_valid(&a[..TOKEN_LEN - 1], now));
        assert!(!authority.is_valid(&format!("{a}0"), now));
    }

    #[test]
    fn ttl_bounds() {
        assert_eq!(parse_ttl("1").unwrap(), 1);
        assert_eq!(parse_ttl(" 21600 ").unwrap(), 21600);
        for bad in ["0", "21601", "-1", "x", "", "99999999999"] {
            let e = parse_ttl(bad).unwrap_err();
            assert!(
                e.to_string()
                    .contains("Please provide a value between 1 and 21600"),
                "{e}"
            );
        }
        let mut authority = TokenAuthority::default();
        assert!(authority.generate(0, Instant::now()).is_err());
    }

    #[test]
    fn a_flood_of_tokens_stays_bounded() {
        let mut authority = TokenAuthority::default();
        let now = Instant::now();
        let first = authority.generate(5, now).unwrap();
        let long = authority.generate(100, now).unwrap();
        for _ in 0..MAX_TOKENS + 10 {
            authority.generate(50, now).unwrap();
        }
        assert_eq!(authority.len(), MAX_TOKENS);
        // The ones nearest their end went first.
        assert!(!authority.is_valid(&first, now));
        assert!(authority.is_valid(&long, now));
        // Expired ones are purged on the next one.
        authority
            .generate(1, now + Duration::from_secs(60))
            .unwrap();
        assert_eq!(authority.len(), 2);
    }
}
