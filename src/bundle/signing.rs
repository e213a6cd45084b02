//! Minisign-compatible Ed25519 keys and signatures (the formats of jedisct1/minisign), so
//! that the stock `minisign` verifies what we sign and we accept keys it generates.
//!
//! Public key: `base64("Ed" || key_id[8] || pk[32])`. Secret key: `base64("Ed" || kdf "Sc"|0
//! || "B2" || salt[32] || opslimit u64le || memlimit u64le || (key_id[8] || sk[64] ||
//! blake2b256("Ed" || key_id || sk)) xor scrypt(password))`. Signature: untrusted comment,
//! `base64("ED" || key_id || ed25519(blake2b512(message)))`, trusted comment, and
//! `base64(ed25519(signature || trusted_comment))`.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Blake2b512, Digest as _};
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};

use crate::error::{Error, IoContext, Result};

const SIG_ALG: &[u8; 2] = b"Ed";
const SIG_ALG_PREHASHED: &[u8; 2] = b"ED";
const KDF_SCRYPT: &[u8; 2] = b"Sc";
const KDF_NONE: &[u8; 2] = &[0, 0];
const CHK_BLAKE2B: &[u8; 2] = b"B2";
/// minisign's own scrypt cost (libsodium's "sensitive" limits): N=2^20, r=8, p=1.
const OPSLIMIT: u64 = 33_554_432;
const MEMLIMIT: u64 = 1_073_741_824;
const SECRET_KEY_LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32;
/// The bytes of `keynum || sk || chk`, the part scrypt's output encrypts.
const SEALED_LEN: usize = 8 + 64 + 32;

/// An 8-byte minisign key id, shown as minisign does (`%016X` of the little-endian u64).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KeyId([u8; 8]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

/// A public key that verifies bundle signatures.
#[derive(Clone, Debug)]
pub struct PublicKey {
    pub key_id: KeyId,
    key: VerifyingKey,
}

/// A secret key, decrypted in memory.
pub struct SecretKey {
    pub key_id: KeyId,
    signing: SigningKey,
}

/// A parsed minisign signature file.
#[derive(Clone, Debug)]
pub struct Signature {
    pub key_id: KeyId,
    prehashed: bool,
    signature: [u8; 64],
    pub trusted_comment: String,
    global_signature: [u8; 64],
}

fn bad_key(path: &str, why: &str) -> Error {
    Error::Usage(format!("{path}: not a usable minisign key: {why}"))
}

/// The base64 line after the `untrusted comment:` line of a minisign file.
fn payload_line<'a>(text: &'a str, what: &str, origin: &str) -> Result<&'a str> {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    if !first.starts_with("untrusted comment:") {
        return Err(bad_key(
            origin,
            &format!("{what} must start with `untrusted comment:`"),
        ));
    }
    lines
        .next()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| bad_key(origin, &format!("{what} has no key line")))
}

/// Reads a key file: a missing one is a usage error (exit 2), and no more than a key's
/// worth is read (a key path pointing at a device or a huge file is refused).
fn read_key_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    const LIMIT: u64 = 64 << 10;
    let file = match std::fs::File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Usage(format!(
                "{}: no such {what} file",
                path.display()
            )));
        }
        other => other.at("cannot read key file", path)?,
    };
    let mut bytes = Vec::new();
    file.take(LIMIT + 1)
        .read_to_end(&mut bytes)
        .at("cannot read key file", path)?;
    if bytes.len() as u64 > LIMIT {
        return Err(bad_key(
            &path.display().to_string(),
            &format!("too large to be a minisign {what}"),
        ));
    }
    Ok(bytes)
}

impl PublicKey {
    /// Reads a `.pub` file written by `bundle keygen` or `minisign -G`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_key_file(path, "public key")?;
        let text = String::from_utf8_lossy(&text);
        let shown = path.display().to_string();
        Self::parse(payload_line(&text, "public key", &shown)?, &shown)
    }

    /// Parses the base64 form (as passed to `minisign -P`).
    pub fn parse(b64: &str, origin: &str) -> Result<Self> {
        let raw = B64
            .decode(b64.trim())
            .map_err(|_| bad_key(origin, "public key is not base64"))?;
        if raw.len() != 42 || &raw[..2] != SIG_ALG {
            return Err(bad_key(origin, "not an Ed25519 minisign public key"));
        }
        let key = VerifyingKey::from_bytes(raw[10..42].try_into().expect("32 bytes"))
            .map_err(|_| bad_key(origin, "invalid Ed25519 public key"))?;
        Ok(PublicKey {
            key_id: KeyId(raw[2..10].try_into().expect("8 bytes")),
            key,
        })
    }

    /// The `.pub` file contents.
    pub fn to_file_string(&self) -> String {
        let mut raw = Vec::with_capacity(42);
        raw.extend_from_slice(SIG_ALG);
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "untrusted comment: minisign public key {}\n{}\n",
            self.key_id,
            B64.encode(raw)
        )
    }
}

impl SecretKey {
    /// A fresh random key pair.
    pub fn generate() -> Result<Self> {
        let mut seed = [0u8; 32];
        let mut id = [0u8; 8];
        getrandom::getrandom(&mut seed)
            .and_then(|_| getrandom::getrandom(&mut id))
            .map_err(|e| Error::Runtime(format!("no randomness available: {e}")))?;
        Ok(SecretKey {
            key_id: KeyId(id),
            signing: SigningKey::from_bytes(&seed),
        })
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key_id: self.key_id,
            key: self.signing.verifying_key(),
        }
    }

    /// Reads a secret key file. `password` is asked for only when the key is encrypted.
    pub fn load(path: &Path, password: impl FnOnce() -> Result<String>) -> Result<Self> {
        let text = read_key_file(path, "secret key")?;
        let text = String::from_utf8_lossy(&text);
        let shown = path.display().to_string();
        let raw = B64
            .decode(payload_line(&text, "secret key", &shown)?)
            .map_err(|_| bad_key(&shown, "secret key is not base64"))?;
        if raw.len() != SECRET_KEY_LEN || &raw[..2] != SIG_ALG || &raw[4..6] != CHK_BLAKE2B {
            return Err(bad_key(&shown, "not an Ed25519 minisign secret key"));
        }
        let kdf: &[u8] = &raw[2..4];
        let mut sealed: [u8; SEALED_LEN] = raw[54..].try_into().expect("104 bytes");
        let encrypted = if kdf == KDF_SCRYPT {
            let salt = &raw[6..38];
            let ops = u64::from_le_bytes(raw[38..46].try_into().expect("8"));
            let mem = u64::from_le_bytes(raw[46..54].try_into().expect("8"));
            let stream = scrypt_stream(&password()?, salt, ops, mem, &shown)?;
            sealed.iter_mut().zip(stream).for_each(|(b, s)| *b ^= s);
            true
        } else if kdf == KDF_NONE {
            false
        } else {
            return Err(bad_key(&shown, "unknown key derivation algorithm"));
        };
        let key_id: [u8; 8] = sealed[..8].try_into().expect("8");
        let sk: [u8; 64] = sealed[8..72].try_into().expect("64");
        let checksum = &sealed[72..];
        let expected = key_checksum(&key_id, &sk);
        // `minisign -G -W` stores an all-zero checksum for an unencrypted key.
        let zero_ok = !encrypted && checksum.iter().all(|&b| b == 0);
        if checksum != expected.as_slice() && !zero_ok {
            return Err(if encrypted {
                Error::Usage(format!("{shown}: wrong password for this secret key"))
                    .with_hint("check BUNDLE_KEY_PASSWORD")
            } else {
                bad_key(&shown, "checksum mismatch (damaged key file)")
            });
        }
        let signing = SigningKey::from_keypair_bytes(&sk)
            .map_err(|_| bad_key(&shown, "secret and public halves do not match"))?;
        Ok(SecretKey {
            key_id: KeyId(key_id),
            signing,
        })
    }

    /// The secret key file contents, encrypted with scrypt when a password is given.
    pub fn to_file_string(&self, password: Option<&str>) -> Result<String> {
        let sk = self.signing.to_keypair_bytes();
        let mut sealed = Vec::with_capacity(SEALED_LEN);
        sealed.extend_from_slice(&self.key_id.0);
        sealed.extend_from_slice(&sk);
        sealed.extend_from_slice(&key_checksum(&self.key_id.0, &sk));
        let mut salt = [0u8; 32];
        let (kdf, ops, mem) = match password {
            Some(pw) => {
                getrandom::getrandom(&mut salt)
                    .map_err(|e| Error::Runtime(format!("no randomness available: {e}")))?;
                let stream = scrypt_stream(pw, &salt, OPSLIMIT, MEMLIMIT, "new key")?;
                sealed.iter_mut().zip(stream).for_each(|(b, s)| *b ^= s);
                (KDF_SCRYPT, OPSLIMIT, MEMLIMIT)
            }
            None => (KDF_NONE, 0, 0),
        };
        let mut raw = Vec::with_capacity(SECRET_KEY_LEN);
        raw.extend_from_slice(SIG_ALG);
        raw.extend_from_slice(kdf);
        raw.extend_from_slice(CHK_BLAKE2B);
        raw.extend_from_slice(&salt);
        raw.extend_from_slice(&ops.to_le_bytes());
        raw.extend_from_slice(&mem.to_le_bytes());
        raw.extend_from_slice(&sealed);
        Ok(format!(
            "untrusted comment: minisign encrypted secret key\n{}\n",
            B64.encode(raw)
        ))
    }

    /// Signs a message already hashed with BLAKE2b-512 (minisign's prehashed mode).
    pub fn sign_prehashed(&self, message_hash: &[u8; 64], trusted_comment: &str) -> Signature {
        let signature = self.signing.sign(message_hash).to_bytes();
        let mut global = Vec::with_capacity(64 + trusted_comment.len());
        global.extend_from_slice(&signature);
        global.extend_from_slice(trusted_comment.as_bytes());
        Signature {
            key_id: self.key_id,
            prehashed: true,
            signature,
            trusted_comment: trusted_comment.to_string(),
            global_signature: self.signing.sign(&global).to_bytes(),
        }
    }

    /// Signs an in-memory message.
    pub fn sign(&self, message: &[u8], trusted_comment: &str) -> Signature {
        self.sign_prehashed(&blake2b512(message), trusted_comment)
    }
}

fn key_checksum(key_id: &[u8; 8], sk: &[u8; 64]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(SIG_ALG);
    h.update(key_id);
    h.update(sk);
    h.finalize().into()
}

/// BLAKE2b-512 of a message, the hash minisign's prehashed signatures cover.
pub fn blake2b512(message: &[u8]) -> [u8; 64] {
    Blake2b512::digest(message).into()
}

/// The BLAKE2b-512 prehash of a stream, fed as it is written, so the detached signature
/// of a whole bundle costs no second read. Uses `blake2b_simd` (AVX2): this hash runs over
/// every compressed byte and must keep up with the compressors.
pub struct Prehasher(blake2b_simd::State);

impl Default for Prehasher {
    fn default() -> Self {
        Prehasher(blake2b_simd::Params::new().hash_length(64).to_state())
    }
}

impl Prehasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    pub fn finish(self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.0.finalize().as_bytes());
        out
    }
}

/// libsodium's `crypto_pwhash_scryptsalsa208sha256` parameter choice, as minisign uses it.
fn scrypt_stream(
    password: &str,
    salt: &[u8],
    opslimit: u64,
    memlimit: u64,
    origin: &str,
) -> Result<[u8; SEALED_LEN]> {
    let opslimit = opslimit.max(32_768);
    let r: u32 = 8;
    let (n_log2, p) = if opslimit < memlimit / 32 {
        let max_n = opslimit / (u64::from(r) * 4);
        (first_log2_above(max_n / 2), 1)
    } else {
        let max_n = memlimit / (u64::from(r) * 128);
        let n_log2 = first_log2_above(max_n / 2);
        let max_rp = ((opslimit / 4) >> n_log2).min(0x3fff_ffff);
        (n_log2, (max_rp as u32 / r).max(1))
    };
    // Bounded so that a crafted key file cannot make us work for hours or exhaust memory.
    if n_log2 > 22 || p > 16 {
        return Err(bad_key(origin, "scrypt parameters are too high"));
    }
    let params = scrypt::Params::new(n_log2, r, p, 32)
        .map_err(|e| bad_key(origin, &format!("bad scrypt parameters: {e}")))?;
    let mut out = [0u8; SEALED_LEN];
    scrypt::scrypt(password.as_bytes(), salt, &params, &mut out)
        .map_err(|e| bad_key(origin, &format!("scrypt failed: {e}")))?;
    Ok(out)
}

fn first_log2_above(limit: u64) -> u8 {
    let mut n = 1u8;
    while n < 63 && (1u64 << n) <= limit {
        n += 1;
    }
    n
}

impl Signature {
    /// Parses a `.minisig` file's text. Anything malformed is a verification failure.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let bad = |why: &str| Error::Verify(format!("{origin}: malformed signature: {why}"));
        let mut lines = text.lines();
        if !lines
            .next()
            .unwrap_or_default()
            .starts_with("untrusted comment:")
        {
            return Err(bad("missing `untrusted comment:` line"));
        }
        let sig = B64
            .decode(lines.next().unwrap_or_default().trim())
            .map_err(|_| bad("signature line is not base64"))?;
        let trusted_comment = lines
            .next()
            .and_then(|l| l.strip_prefix("trusted comment: "))
            .ok_or_else(|| bad("missing `trusted comment:` line"))?
            .to_string();
        let global = B64
            .decode(lines.next().unwrap_or_default().trim())
            .map_err(|_| bad("global signature is not base64"))?;
        if sig.len() != 74 || global.len() != 64 {
            return Err(bad("wrong length"));
        }
        let prehashed = match &sig[..2] {
            a if a == SIG_ALG_PREHASHED => true,
            a if a == SIG_ALG => false,
            _ => return Err(bad("unknown signature algorithm")),
        };
        Ok(Signature {
            key_id: KeyId(sig[2..10].try_into().expect("8")),
            prehashed,
            signature: sig[10..74].try_into().expect("64"),
            trusted_comment,
            global_signature: global.try_into().expect("64"),
        })
    }

    /// Checks this signature over `message` with `key`, and its trusted comment.
    pub fn verify(&self, key: &PublicKey, message: &[u8], what: &str) -> Result<()> {
        if self.prehashed {
            self.verify_prehashed(key, &blake2b512(message), what)
        } else {
            self.check(key, message, what)
        }
    }

    /// Checks a prehashed signature given the message's BLAKE2b-512.
    pub fn verify_prehashed(
        &self,
        key: &PublicKey,
        message_hash: &[u8; 64],
        what: &str,
    ) -> Result<()> {
        if !self.prehashed {
            return Err(Error::Verify(format!(
                "{what}: legacy (non-prehashed) signature on a large file"
            )));
        }
        self.check(key, message_hash, what)
    }

    fn check(&self, key: &PublicKey, signed: &[u8], what: &str) -> Result<()> {
        if self.key_id != key.key_id {
            return Err(Error::Verify(format!(
                "{what} is signed by key {}, but the trusted public key is {}",
                self.key_id, key.key_id
            ))
            .with_hint("check --pubkey; a bundle re-signed with another key is rejected"));
        }
        let sig = ed25519_dalek::Signature::from_bytes(&self.signature);
        key.key.verify(signed, &sig).map_err(|_| {
            Error::Verify(format!(
                "{what}: signature does not match (the signed data was changed)"
            ))
        })?;
        let mut global = Vec::with_capacity(64 + self.trusted_comment.len());
        global.extend_from_slice(&self.signature);
        global.extend_from_slice(self.trusted_comment.as_bytes());
        key.key
            .verify(
                &global,
                &ed25519_dalek::Signature::from_bytes(&self.global_signature),
            )
            .map_err(|_| Error::Verify(format!("{what}: trusted comment signature does not match")))
    }

    /// The `.minisig` text.
    pub fn to_file_string(&self, untrusted_comment: &str) -> String {
        let mut raw = Vec::with_capacity(74);
        raw.extend_from_slice(if self.prehashed {
            SIG_ALG_PREHASHED
        } else {
            SIG_ALG
        });
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(&self.signature);
        format!(
            "untrusted comment: {untrusted_comment}\n{}\ntrusted comment: {}\n{}\n",
            B64.encode(raw),
            self.trusted_comment,
            B64.encode(self.global_signature)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_roundtrip_through_text() {
        let sk = SecretKey::generate().unwrap();
        let pk = PublicKey::parse(
            sk.public_key().to_file_string().lines().nth(1).unwrap(),
            "t",
        )
        .unwrap();
        let sig = sk.sign(b"hello", "timestamp:0");
        let parsed = Signature::parse(&sig.to_file_string("x"), "t").unwrap();
        parsed.verify(&pk, b"hello", "msg").unwrap();
        let err = parsed.verify(&pk, b"hellO", "msg").unwrap_err();
        assert_eq!(err.exit_code(), 3);
        let other = SecretKey::generate().unwrap().public_key();
        assert!(
            parsed
                .verify(&other, b"hello", "msg")
                .unwrap_err()
                .to_string()
                .contains("signed by key")
        );
    }

    #[test]
    fn streaming_prehash_matches_one_shot() {
        let data = vec![42u8; 300_000];
        let mut p = Prehasher::default();
        p.update(&data[..1000]);
        p.update(&data[1000..]);
        assert_eq!(p.finish(), blake2b512(&data));
    }

    #[test]
    fn libsodium_parameter_choice_matches_minisign() {
        // minisign's limits give N = 2^20, r = 8, p = 1 (1 GiB).
        let max_n = MEMLIMIT / (8 * 128);
        assert_eq!(first_log2_above(max_n / 2), 20);
    }
}
