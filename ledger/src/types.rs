//! Validated newtypes for the values that cross the boundary: parse once, at the
//! edge, so the core never handles unchecked hex or out-of-range numbers.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Position of an entry in the log (0-based).
pub type Index = u64;
/// Number of entries in a tree.
pub type TreeSize = u64;

/// Why a 32-byte hex value did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    #[error("expected 64 lowercase hex characters, got {0} characters")]
    Length(usize),
    #[error("expected lowercase hex (0-9, a-f), found {0:?}")]
    Char(char),
}

/// Parses exactly 64 lowercase hex characters into 32 bytes.
pub fn parse_hex32(s: &str) -> Result<[u8; 32], HexError> {
    if s.len() != 64 {
        return Err(HexError::Length(s.chars().count()));
    }
    if let Some(c) = s.chars().find(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(HexError::Char(c));
    }
    let mut out = [0u8; 32];
    // Infallible: length and alphabet were checked above.
    hex::decode_to_slice(s, &mut out).expect("checked hex");
    Ok(out)
}

macro_rules! hex32_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Parses 64 lowercase hex characters.
            pub fn parse(s: &str) -> Result<Self, HexError> {
                parse_hex32(s).map(Self)
            }
            /// Lowercase hex, as everywhere on the wire.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
        impl std::str::FromStr for $name {
            type Err = HexError;
            fn from_str(s: &str) -> Result<Self, HexError> {
                Self::parse(s)
            }
        }
    };
}

hex32_newtype!(
    /// RFC 6962 leaf hash: SHA-256(0x00 ‖ entry bytes).
    LeafHash
);
hex32_newtype!(
    /// BLAKE3-256 of the DSSE payload bytes: names an event, the de-duplication key.
    EventId
);
hex32_newtype!(
    /// An actor's Ed25519 public key; its hex is the DSSE `keyid`.
    KeyId
);
hex32_newtype!(
    /// BLAKE3-256 of an attachment's bytes: the blob's name.
    BlobId
);
hex32_newtype!(
    /// A Merkle tree root or interior hash (SHA-256).
    RootHash
);

impl From<tlog_tiles::Hash> for LeafHash {
    fn from(h: tlog_tiles::Hash) -> Self {
        Self(h.0)
    }
}
impl From<LeafHash> for tlog_tiles::Hash {
    fn from(h: LeafHash) -> Self {
        tlog_tiles::Hash(h.0)
    }
}
impl From<tlog_tiles::Hash> for RootHash {
    fn from(h: tlog_tiles::Hash) -> Self {
        Self(h.0)
    }
}
impl From<RootHash> for tlog_tiles::Hash {
    fn from(h: RootHash) -> Self {
        tlog_tiles::Hash(h.0)
    }
}

impl EventId {
    /// BLAKE3 of the payload bytes.
    pub fn of_payload(payload: &[u8]) -> Self {
        Self(*blake3::hash(payload).as_bytes())
    }
}

impl BlobId {
    /// BLAKE3 of the blob bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

/// A case identifier chosen by a brand: 1–128 characters of `[A-Za-z0-9._:-]`, so it
/// is safe in URLs, file names and store keys.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CaseId(String);

impl CaseId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(format!(
                "expected 1 to {} characters, got {}",
                Self::MAX_LEN,
                s.len()
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(format!("expected only A-Z a-z 0-9 . _ : -, found {c:?}"));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaseId({})", self.0)
    }
}
impl<'de> Deserialize<'de> for CaseId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex32_rejects_uppercase_and_wrong_length() {
        assert!(LeafHash::parse(&"a".repeat(64)).is_ok());
        assert_eq!(LeafHash::parse(&"A".repeat(64)), Err(HexError::Char('A')));
        assert_eq!(LeafHash::parse("abc"), Err(HexError::Length(3)));
    }

    #[test]
    fn case_id_rejects_path_characters() {
        assert!(CaseId::parse("acme-2026:0001").is_ok());
        assert!(CaseId::parse("../etc").is_err());
        assert!(CaseId::parse("").is_err());
    }
}
