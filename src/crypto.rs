//! Tokens for spokes and clients: generation, hashing and comparison.
//!
//! A token is a readable prefix naming its kind (`alk_spoke_` or
//! `alk_client_`) followed by 256 random bits from the operating system,
//! base64url-encoded. Only its hash is stored.
//!
//! **Why SHA-256 and not a password hash (argon2, bcrypt).** Slow, salted
//! hashes exist to make guessing low-entropy passwords expensive. These tokens
//! carry 256 bits of randomness, so guessing is hopeless at any hash speed, and
//! a fast, unsalted hash lets the store find a principal by an indexed lookup
//! of the hash instead of testing every row. SHA-256 is a standard,
//! collision-resistant choice for that. After the lookup the hashes are still
//! compared in constant time ([`verify`]), so no timing difference depends on
//! how much of a hash matched.
//!
//! This module knows nothing about the database or the wire.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Which kind of principal a token authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A spoke: authenticates on `/v1/spokes/connect`.
    Spoke,
    /// A client: authenticates on `/v1/clients/connect`. Both kinds
    /// authenticate on the HTTP API, as the principal they name.
    Client,
}

impl TokenKind {
    /// The readable prefix every token of this kind starts with.
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Spoke => "alk_spoke_",
            TokenKind::Client => "alk_client_",
        }
    }
}

/// A bearer token in clear text. Its `Debug` and `Display` never print the
/// secret part; call [`Token::expose`] where the token must be shown once.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token received from a peer.
    pub fn new(text: impl Into<String>) -> Self {
        Token(text.into())
    }

    /// Generates a fresh token of `kind` with 256 random bits.
    pub fn generate(kind: TokenKind) -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Token(format!("{}{body}", kind.prefix()))
    }

    /// The kind named by the token's prefix, if it has a known one.
    pub fn kind(&self) -> Option<TokenKind> {
        [TokenKind::Spoke, TokenKind::Client]
            .into_iter()
            .find(|k| self.0.starts_with(k.prefix()))
    }

    /// The clear text, for the one place it is shown to an operator.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash that is stored in place of the token.
    pub fn hash(&self) -> TokenHash {
        let digest = Sha256::digest(self.0.as_bytes());
        TokenHash(format!("sha256:{}", hex(&digest)))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefix = self.kind().map(TokenKind::prefix).unwrap_or("");
        write!(f, "{prefix}[redacted]")
    }
}

/// The stored form of a token: `sha256:` and 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHash(pub String);

/// Compares a presented token with a stored hash in constant time.
pub fn verify(token: &Token, stored: &str) -> bool {
    let computed = token.hash();
    computed.0.as_bytes().ct_eq(stored.as_bytes()).into()
}

/// SHA-256 of `bytes` in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// A random identifier such as `reg_3f9a...` (128 random bits, hex).
pub fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    format!("{prefix}{}", hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_their_kind_and_256_bits() {
        let t = Token::generate(TokenKind::Spoke);
        assert_eq!(t.kind(), Some(TokenKind::Spoke));
        let body = &t.expose()[TokenKind::Spoke.prefix().len()..];
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .unwrap();
        assert_eq!(decoded.len(), 32);
        assert_ne!(t, Token::generate(TokenKind::Spoke));
    }

    #[test]
    fn verify_accepts_the_token_and_refuses_others() {
        let t = Token::generate(TokenKind::Client);
        let stored = t.hash().0;
        assert!(stored.starts_with("sha256:") && stored.len() == 7 + 64);
        assert!(verify(&t, &stored));
        assert!(!verify(&Token::generate(TokenKind::Client), &stored));
        assert!(!verify(&t, "sha256:00"));
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let t = Token::generate(TokenKind::Client);
        let secret = &t.expose()[TokenKind::Client.prefix().len()..];
        assert!(!format!("{t:?} {t}").contains(secret));
    }
}
