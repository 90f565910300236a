//! Hashes (blake3), public keys and signatures (ed25519), and key files.
//! Keys and hashes print and serialize as lowercase hex.

use std::fmt;
use std::path::Path;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

macro_rules! hex_newtype {
    ($name:ident, $len:expr, $doc:expr) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Parses lowercase or uppercase hex of the exact length.
            pub fn from_hex(s: &str) -> Result<Self> {
                let v = hex::decode(s.trim())
                    .map_err(|e| Error::decode(stringify!($name), format!("bad hex: {e}")))?;
                let a: [u8; $len] = v.try_into().map_err(|v: Vec<u8>| {
                    Error::decode(
                        stringify!($name),
                        format!("{} bytes of hex, need {}", v.len(), $len),
                    )
                })?;
                Ok($name(a))
            }
            /// Lowercase hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Short form keeps log lines and error messages readable.
                if f.alternate() {
                    write!(f, "{}", self.to_hex())
                } else {
                    write!(f, "{}", &self.to_hex()[..16])
                }
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..16])
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::from_hex(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_newtype!(Hash32, 32, "A 32-byte blake3 digest.");
hex_newtype!(
    PublicKey,
    32,
    "An ed25519 public key: an account, a candidate, a delegate."
);
hex_newtype!(Signature, 64, "An ed25519 signature.");

impl Hash32 {
    /// The all-zero hash, used only as a placeholder before genesis.
    pub const ZERO: Hash32 = Hash32([0; 32]);
}

/// blake3 of `domain` followed by `data`; every hash in the ledger is domain
/// separated so that a digest of one kind can never be passed off as another.
pub fn hash_domain(domain: &[u8], data: &[u8]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(domain);
    h.update(data);
    Hash32(*h.finalize().as_bytes())
}

/// Plain blake3 of `data` (content digests, document hashes).
pub fn hash(data: &[u8]) -> Hash32 {
    Hash32(*blake3::hash(data).as_bytes())
}

impl PublicKey {
    /// Verifies an ed25519 signature strictly (rejects small-order keys and
    /// non-canonical signatures, so a signature cannot be mutated).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        let Ok(vk) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        vk.verify_strict(msg, &sig).is_ok()
    }
}

/// A signing key pair (a node's, a delegate's, or an account's).
#[derive(Clone)]
pub struct Keypair {
    inner: SigningKey,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.public())
    }
}

impl Keypair {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        Self {
            inner: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }
    /// A key derived from a seed: deterministic, for tests and simulations only.
    pub fn from_seed(seed: &[u8]) -> Self {
        Self {
            inner: SigningKey::from_bytes(blake3::hash(seed).as_bytes()),
        }
    }
    /// The key from its 32-byte secret.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self {
            inner: SigningKey::from_bytes(&secret),
        }
    }
    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.inner.verifying_key().to_bytes())
    }
    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.inner.sign(msg).to_bytes())
    }

    /// Writes the key as JSON `{"public": hex, "secret": hex}` with mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        let kf = KeyFile {
            public: self.public(),
            secret: hex::encode(self.inner.to_bytes()),
        };
        let err = |e: String| Error::KeyFile {
            path: path.display().to_string(),
            reason: e,
        };
        let text = serde_json::to_string_pretty(&kf).map_err(|e| err(e.to_string()))?;
        std::fs::write(path, text).map_err(|e| err(e.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| err(e.to_string()))?;
        }
        Ok(())
    }

    /// Reads a key written by [`Keypair::save`]; checks that the public key
    /// in the file matches the secret.
    pub fn load(path: &Path) -> Result<Self> {
        let err = |e: String| Error::KeyFile {
            path: path.display().to_string(),
            reason: e,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let kf: KeyFile = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let secret: [u8; 32] = hex::decode(kf.secret.trim())
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| err("secret is not 32 bytes of hex".into()))?;
        let kp = Keypair::from_secret(secret);
        if kp.public() != kf.public {
            return Err(err("public key does not match the secret".into()));
        }
        Ok(kp)
    }
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    public: PublicKey,
    secret: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_verifies_only_for_the_signed_message_and_key() {
        let k = Keypair::from_seed(b"a");
        let s = k.sign(b"hello");
        assert!(k.public().verify(b"hello", &s));
        assert!(!k.public().verify(b"hellp", &s));
        assert!(!Keypair::from_seed(b"b").public().verify(b"hello", &s));
    }

    #[test]
    fn key_file_round_trips_and_rejects_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.json");
        let k = Keypair::generate();
        k.save(&p).unwrap();
        assert_eq!(Keypair::load(&p).unwrap().public(), k.public());
        let text = std::fs::read_to_string(&p).unwrap().replace(
            &k.public().to_hex(),
            &Keypair::from_seed(b"x").public().to_hex(),
        );
        std::fs::write(&p, text).unwrap();
        assert!(matches!(Keypair::load(&p), Err(Error::KeyFile { .. })));
    }

    #[test]
    fn hex_round_trip_and_bad_length() {
        let h = hash(b"x");
        assert_eq!(Hash32::from_hex(&h.to_hex()).unwrap(), h);
        assert!(Hash32::from_hex("abcd").is_err());
    }
}
