//! A repository's signed `Release`: the upstream OpenPGP key (`signed-by`), the signature
//! over `InRelease` (or `Release` + `Release.gpg`) checked in Rust with rPGP, and the
//! fields this tool relies on (`Valid-Until`, the SHA256 list of the indexes). Only the
//! signed text is ever parsed.

use std::collections::BTreeMap;

use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey};
use pgp::types::KeyDetails;

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// An upstream repository's signing key, or keyring (several keys, as distributions ship
/// them), each with its subkeys.
pub struct RepoKey {
    keys: Vec<SignedPublicKey>,
    /// The primary keys' fingerprints, upper-case hex, comma-separated.
    pub fingerprint: String,
    /// Keys of the file that are revoked or expired (fingerprint and why): never accepted.
    revoked: Vec<String>,
}

const ARMOR_BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";

/// At most this many keys in one keyring.
const MAX_KEYS: usize = 64;

impl RepoKey {
    /// Reads OpenPGP public keys, ASCII-armored or binary (as `signed-by` files are).
    pub fn parse(bytes: &[u8], origin: &str) -> Result<RepoKey> {
        let bad = |e: String| {
            Error::Usage(format!("{origin}: not an OpenPGP public key: {e}"))
                .with_hint("signed-by names the repository's public key file (.asc or .gpg)")
        };
        let parsed: Vec<pgp::errors::Result<SignedPublicKey>> =
            if bytes.trim_ascii_start().starts_with(ARMOR_BEGIN.as_bytes()) {
                // One armor block per key, or several keys in one block.
                let text = std::str::from_utf8(bytes).map_err(|_| bad("not text".into()))?;
                let mut keys = Vec::new();
                for block in text.split(ARMOR_BEGIN).filter(|b| !b.trim().is_empty()) {
                    let block = format!("{ARMOR_BEGIN}{block}");
                    let (many, _) = SignedPublicKey::from_armor_many(block.as_bytes())
                        .map_err(|e| bad(e.to_string()))?;
                    keys.extend(many.take(MAX_KEYS + 1));
                    if keys.len() > MAX_KEYS {
                        break;
                    }
                }
                keys
            } else {
                SignedPublicKey::from_bytes_many(bytes)
                    .map_err(|e| bad(e.to_string()))?
                    .take(MAX_KEYS + 1)
                    .collect()
            };
        if parsed.len() > MAX_KEYS {
            return Err(bad(format!("more than {MAX_KEYS} keys")));
        }
        let mut keys = Vec::new();
        let mut revoked = Vec::new();
        for key in parsed {
            let mut key = key.map_err(|e| bad(e.to_string()))?;
            // A revoked key signs nothing this tool accepts (apt says REVKEYSIG). The
            // revocation is taken from the key file the operator trusts, unverified: at
            // worst it refuses a key.
            if !key.details.revocation_signatures.is_empty() {
                revoked.push(format!(
                    "{} (revoked)",
                    hex::encode_upper(key.fingerprint().as_bytes())
                ));
                continue;
            }
            // Nor one that has expired (apt says EXPKEYSIG): the newest self-signature's
            // key expiration time, counted from the key's creation.
            if let Some(expired_at) = expiry(&key)
                && expired_at < crate::timefmt::now_epoch()
            {
                revoked.push(format!(
                    "{} (expired {})",
                    hex::encode_upper(key.fingerprint().as_bytes()),
                    crate::timefmt::rfc3339(expired_at)
                ));
                continue;
            }
            // A subkey counts only when the primary key bound it (as gpg does); other
            // certifications on the key (keyrings carry many) are not this tool's concern.
            let primary = key.primary_key.clone();
            key.public_subkeys
                .retain(|sub| sub.verify_bindings(&primary).is_ok());
            keys.push(key);
        }
        if keys.is_empty() && revoked.is_empty() {
            return Err(bad("no key in it".into()));
        }
        let fingerprint = keys
            .iter()
            .map(|k| hex::encode_upper(k.fingerprint().as_bytes()))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(RepoKey {
            keys,
            fingerprint,
            revoked,
        })
    }

    /// The keys, ASCII-armored (what a lock carries, so that it is self-contained).
    pub fn armored(&self) -> Result<String> {
        self.keys
            .iter()
            .map(|k| {
                k.to_armored_string(Default::default()).map_err(|e| {
                    Error::Runtime(format!("cannot armor key {}: {e}", self.fingerprint))
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(|blocks| blocks.join(""))
    }

    /// Whether a primary key or one of its subkeys made `signature` over `data`.
    fn made(&self, signature: &pgp::packet::Signature, data: &[u8]) -> bool {
        self.keys.iter().any(|key| {
            signature.verify(key, data).is_ok()
                || key
                    .public_subkeys
                    .iter()
                    .any(|sub| signature.verify(sub, data).is_ok())
        })
    }
}

/// When a key expires (Unix seconds), from its newest self-signature that says.
fn expiry(key: &SignedPublicKey) -> Option<u64> {
    let newest = key
        .details
        .users
        .iter()
        .flat_map(|u| u.signatures.iter())
        .chain(key.details.direct_signatures.iter())
        .filter(|s| s.created().is_some())
        .max_by_key(|s| s.created().map(|t| t.as_secs()))?;
    let lifetime = newest.key_expiration_time()?.as_secs();
    if lifetime == 0 {
        return None;
    }
    Some(u64::from(key.primary_key.created_at().as_secs()) + u64::from(lifetime))
}

/// The text of an `InRelease` file once its signature checked out with `key`.
pub fn verify_inrelease(bytes: &[u8], key: &RepoKey, origin: &str) -> Result<String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::Verify(format!("{origin}: not a text file")))?;
    let (message, _) = CleartextSignedMessage::from_string(text)
        .map_err(|e| Error::Verify(format!("{origin}: not a signed InRelease: {e}")))?;
    let signed = message.signed_text();
    if !message
        .signatures()
        .iter()
        .any(|s| key.made(s, signed.as_bytes()))
    {
        return Err(not_signed_by(origin, key));
    }
    Ok(signed.replace("\r\n", "\n"))
}

/// Checks a detached `Release.gpg` over `Release`.
pub fn verify_detached(
    release: &[u8],
    signature: &[u8],
    key: &RepoKey,
    origin: &str,
) -> Result<()> {
    let parsed = if signature
        .trim_ascii_start()
        .starts_with(b"-----BEGIN PGP SIGNATURE")
    {
        DetachedSignature::from_armor_single(signature).map(|(s, _)| s)
    } else {
        DetachedSignature::from_bytes(signature)
    }
    .map_err(|e| Error::Verify(format!("{origin}.gpg: not an OpenPGP signature: {e}")))?;
    if key.made(&parsed.signature, release) {
        Ok(())
    } else {
        Err(not_signed_by(origin, key))
    }
}

fn not_signed_by(origin: &str, key: &RepoKey) -> Error {
    let revoked = if key.revoked.is_empty() {
        String::new()
    } else {
        format!("; not used: {}", key.revoked.join(", "))
    };
    Error::Verify(format!(
        "{origin}: the signature is not by the signed-by key {}{revoked}",
        key.fingerprint
    ))
    .with_hint("check that signed-by names this repository's current key")
}

/// One index file the Release vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub sha256: Sha256Digest,
    pub size: u64,
}

/// The fields of a signed Release this tool uses.
#[derive(Debug, Clone)]
pub struct Release {
    /// `Valid-Until`, in Unix seconds.
    pub valid_until: Option<u64>,
    /// `SHA256`: relative path → digest and size.
    pub sha256: BTreeMap<String, Listed>,
    pub origin: Option<String>,
    pub suite: Option<String>,
}

impl Release {
    /// Parses the signed text of a Release; `now` (Unix seconds) checks `Valid-Until`
    /// (`None`: not checked, for a snapshot mirror).
    pub fn parse(text: &str, origin: &str, now: Option<u64>) -> Result<Release> {
        let bad = |why: String| Error::Verify(format!("{origin}: {why}"));
        let paragraph = deb822_fast::borrowed::iter_paragraphs_borrowed(text)
            .next()
            .ok_or_else(|| bad("an empty Release".into()))?
            .map_err(|e| bad(format!("malformed: {e:?}")))?;
        let single = |name: &str| paragraph.get_single(name).map(str::to_string);
        let valid_until = match paragraph.get_single("Valid-Until") {
            Some(v) => {
                Some(parse_date(v).ok_or_else(|| bad(format!("Valid-Until `{v}` is not a date")))?)
            }
            None => None,
        };
        if let (Some(until), Some(now)) = (valid_until, now)
            && until < now
        {
            return Err(bad(format!(
                "the Release expired at {} (Valid-Until)",
                crate::timefmt::rfc3339(until)
            ))
            .with_hint("the mirror has stopped updating: use a current mirror and lock again, or set `check-valid-until: false` on the repository for a snapshot mirror"));
        }
        let mut sha256 = BTreeMap::new();
        if let Some(lines) = paragraph.get("SHA256") {
            for line in lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
                let mut parts = line.split_whitespace();
                let (Some(digest), Some(size), Some(path), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad(format!("malformed SHA256 line `{line}`")));
                };
                let sha256_digest: Sha256Digest = digest
                    .parse()
                    .map_err(|e: String| bad(format!("SHA256 line `{line}`: {e}")))?;
                let size: u64 = size
                    .parse()
                    .map_err(|_| bad(format!("SHA256 line `{line}`: bad size")))?;
                sha256.insert(
                    path.to_string(),
                    Listed {
                        sha256: sha256_digest,
                        size,
                    },
                );
            }
        }
        if sha256.is_empty() {
            return Err(bad(
                "the Release lists no SHA256 sums (this tool needs them to check the indexes)"
                    .into(),
            ));
        }
        Ok(Release {
            valid_until,
            sha256,
            origin: single("Origin"),
            suite: single("Suite"),
        })
    }
}

/// An RFC 2822 date as Release files write it (`Sat, 09 Nov 2024 10:15:26 UTC`), in Unix
/// seconds.
pub fn parse_date(text: &str) -> Option<u64> {
    let text = text.trim();
    let text = text.split_once(", ").map_or(text, |(_, rest)| rest);
    let mut parts = text.split_whitespace();
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let (h, m, s): (u64, u64, u64) = (
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
    );
    let offset: i64 = match parts.next().unwrap_or("UTC") {
        "UTC" | "GMT" | "Z" | "+0000" | "-0000" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let hh: i64 = z[1..3].parse().ok()?;
            let mm: i64 = z[3..5].parse().ok()?;
            sign * (hh * 3600 + mm * 60)
        }
        _ => return None,
    };
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = crate::timefmt::days_from_civil(year, month, day as i64);
    let secs = days * 86400 + (h * 3600 + m * 60 + s) as i64 - offset;
    u64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_as_release_files_write_them() {
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(
            parse_date("Sat, 09 Nov 2024 10:15:26 UTC"),
            Some(1731147326)
        );
        assert_eq!(
            parse_date("Sat, 09 Nov 2024 11:15:26 +0100"),
            Some(1731147326)
        );
        assert_eq!(parse_date("9 Nov 2024 10:15:26"), Some(1731147326));
        assert_eq!(parse_date("Sat, 09 Foo 2024 10:15:26 UTC"), None);
    }

    #[test]
    fn release_fields_and_expiry() {
        let text = "Origin: Test\nSuite: stable\nValid-Until: Sat, 09 Nov 2024 10:15:26 UTC\nSHA256:\n 0000000000000000000000000000000000000000000000000000000000000000 12 main/binary-amd64/Packages\n";
        let r = Release::parse(text, "t", Some(1_700_000_000)).unwrap();
        assert_eq!(r.suite.as_deref(), Some("stable"));
        assert_eq!(r.sha256["main/binary-amd64/Packages"].size, 12);
        assert!(Release::parse(text, "t", None).is_ok());
        let e = Release::parse(text, "t", Some(1_800_000_000)).unwrap_err();
        assert_eq!(e.exit_code(), 3);
        assert!(e.to_string().contains("expired"), "{e}");
        assert!(Release::parse("Suite: x\n", "t", Some(0)).is_err());
    }
}
