//! A `Packages` index (deb822 paragraphs, one per binary package), read with
//! `deb822-fast`, checked against the signed Release before it is read, and decompressed
//! within a bound (`.xz` with `lzma-rs`, `.gz` with `flate2`).

use std::io::Read;

use debversion::Version;

use super::relation::{self, Alternatives};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// No uncompressed `Packages` is larger than this (Debian's main is ~100 MiB): a hostile
/// index cannot make `lock` use unbounded memory.
pub const MAX_PACKAGES_BYTES: u64 = 1 << 30;

/// A name provided by a package (`Provides: mail-transport-agent, foo (= 1.0)`).
#[derive(Debug, Clone)]
pub struct Provided {
    pub name: String,
    pub version: Option<Version>,
}

/// One binary package of an index.
#[derive(Debug, Clone)]
pub struct BinaryPackage {
    pub name: String,
    pub version: Version,
    pub arch: String,
    pub multi_arch: Option<String>,
    pub priority: Option<String>,
    /// `Essential: yes`.
    pub essential: bool,
    pub pre_depends: Vec<Alternatives>,
    pub depends: Vec<Alternatives>,
    pub provides: Vec<Provided>,
    /// Path relative to the repository root (`pool/main/j/jq/jq_1.6-2.1_amd64.deb`).
    pub filename: String,
    pub size: u64,
    pub sha256: Sha256Digest,
    /// Index of the repository (in the manifest) that carries it.
    pub repo: usize,
}

/// Decompresses an index by its file name's extension, at most [`MAX_PACKAGES_BYTES`].
pub fn decompress(path: &str, bytes: &[u8], origin: &str) -> Result<String> {
    let mut out = Vec::new();
    let result = if path.ends_with(".xz") {
        let mut limited = LimitedWriter(&mut out);
        lzma_rs::xz_decompress(&mut std::io::BufReader::new(bytes), &mut limited)
            .map_err(|e| e.to_string())
    } else if path.ends_with(".gz") {
        flate2::read::GzDecoder::new(bytes)
            .take(MAX_PACKAGES_BYTES + 1)
            .read_to_end(&mut out)
            .map(|_| ())
            .map_err(|e| e.to_string())
    } else {
        out.extend_from_slice(bytes);
        Ok(())
    };
    result.map_err(|e| Error::Verify(format!("{origin}: cannot decompress: {e}")))?;
    if out.len() as u64 > MAX_PACKAGES_BYTES {
        return Err(Error::Verify(format!(
            "{origin}: decompresses to more than {MAX_PACKAGES_BYTES} bytes"
        )));
    }
    String::from_utf8(out).map_err(|_| Error::Verify(format!("{origin}: not UTF-8 text")))
}

/// A writer that refuses to grow past [`MAX_PACKAGES_BYTES`].
struct LimitedWriter<'a>(&'a mut Vec<u8>);

impl std::io::Write for LimitedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() as u64 + buf.len() as u64 > MAX_PACKAGES_BYTES {
            return Err(std::io::Error::other("the index is too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Parses the binary packages of an index. A paragraph without the fields a package needs
/// (name, version, architecture, file name, size, SHA256) is an error naming it.
pub fn parse(text: &str, repo: usize, origin: &str) -> Result<Vec<BinaryPackage>> {
    let mut out = Vec::new();
    for (n, p) in deb822_fast::borrowed::iter_paragraphs_borrowed(text).enumerate() {
        let p = p.map_err(|e| {
            Error::Verify(format!(
                "{origin}: paragraph #{} is malformed: {e:?}",
                n + 1
            ))
        })?;
        let name = p.get_single("Package").unwrap_or_default();
        let bad =
            |why: String| Error::Verify(format!("{origin}: package #{} `{name}`: {why}", n + 1));
        let field = |f: &str| {
            p.get_single(f)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| bad(format!("no {f}")))
        };
        let relations = |f: &str| -> Result<Vec<Alternatives>> {
            match p.get_field(f) {
                Some(v) => relation::parse(&v.join()).map_err(|e| bad(format!("{f}: {e}"))),
                None => Ok(Vec::new()),
            }
        };
        let version: Version = field("Version")?
            .parse()
            .map_err(|e| bad(format!("bad Version: {e:?}")))?;
        let provides = relations("Provides")?
            .into_iter()
            .flatten()
            .map(|r| Provided {
                name: r.name,
                version: r.constraint.map(|(_, v)| v),
            })
            .collect();
        out.push(BinaryPackage {
            name: field("Package")?.to_string(),
            version,
            arch: field("Architecture")?.to_string(),
            multi_arch: p.get_single("Multi-Arch").map(|v| v.trim().to_string()),
            priority: p.get_single("Priority").map(|v| v.trim().to_string()),
            essential: p.get_single("Essential").is_some_and(|v| v.trim() == "yes"),
            pre_depends: relations("Pre-Depends")?,
            depends: relations("Depends")?,
            provides,
            filename: super::safe_filename(field("Filename")?)
                .map_err(|e| bad(format!("Filename: {e}")))?,
            size: field("Size")?.parse().map_err(|_| bad("bad Size".into()))?,
            sha256: field("SHA256")?
                .parse()
                .map_err(|e: String| bad(format!("SHA256: {e}")))?,
            repo,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_packages_paragraphs() {
        let text = "Package: jq\nVersion: 1.6-2.1\nArchitecture: amd64\nPriority: optional\nDepends: libjq1 (= 1.6-2.1), libc6 (>= 2.34)\nFilename: pool/main/j/jq/jq_1.6-2.1_amd64.deb\nSize: 64\nSHA256: 3e0b7e8e1c4c4f2f0f5d3a5b6a2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c\nDescription: x\n more\n\nPackage: mawk\nVersion: 1.3.4\nArchitecture: amd64\nProvides: awk\nFilename: pool/m/mawk.deb\nSize: 1\nSHA256: 3e0b7e8e1c4c4f2f0f5d3a5b6a2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c\n";
        let pkgs = parse(text, 0, "t").unwrap();
        assert_eq!(pkgs.len(), 2);
        assert_eq!(pkgs[0].depends.len(), 2);
        assert_eq!(pkgs[1].provides[0].name, "awk");
        let e = parse("Package: x\nVersion: 1\n", 0, "t").unwrap_err();
        assert!(e.to_string().contains("`x`"), "{e}");
    }
}
