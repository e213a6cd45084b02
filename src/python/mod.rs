//! Python distributions for a PEP 503 mirror: file names, index pages (PEP 691 JSON and
//! PEP 503 HTML), the target interpreter's wheel tags and hash-pinned requirements files.
//! `lock` resolves through these; `install` writes its `simple/` tree with [`index`] too.

pub mod filename;
pub mod index;
pub mod requirements;
pub mod tags;

use crate::error::{Error, Result};

/// A project name normalised per PEP 503 (`Ruamel.YAML` → `ruamel-yaml`): the directory
/// name under `simple/`, and how two spellings of one project are compared.
pub fn normalize(name: &str) -> Result<String> {
    pep508_rs::PackageName::new(name.to_string())
        .map(|n| n.to_string())
        .map_err(|e| Error::Usage(format!("`{name}` is not a Python project name: {e}")))
}

/// A version as PEP 440 reads it (`1.0` equals `1.0.0`).
pub fn version(text: &str) -> Result<pep440_rs::Version> {
    text.parse()
        .map_err(|e| Error::Usage(format!("`{text}` is not a PEP 440 version: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_normalise_per_pep_503() {
        assert_eq!(super::normalize("Ruamel.YAML").unwrap(), "ruamel-yaml");
        assert_eq!(
            super::normalize("zope__interface").unwrap(),
            "zope-interface"
        );
        assert!(super::normalize("bad name").is_err());
        assert_eq!(
            super::version("1.0").unwrap(),
            super::version("1.0.0").unwrap()
        );
    }
}
