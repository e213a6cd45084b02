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

/// Where a distribution file goes in the bundle and on the web root: `python/<file>`.
/// The name must be one plain file name (it comes from an index or a URL).
pub fn bundle_path(filename: &str) -> Result<String> {
    let path = format!("python/{filename}");
    if filename.is_empty() || filename.contains(['/', '\\']) || filename.starts_with('.') {
        return Err(Error::Usage(format!(
            "python file name `{}` cannot be stored safely",
            filename.escape_debug()
        )));
    }
    crate::bundle::check_entry_path(&path).map_err(|why| {
        Error::Usage(format!(
            "python file name `{}` cannot be stored safely: {why}",
            filename.escape_debug()
        ))
    })?;
    Ok(path)
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
            super::bundle_path("a-1.0.tar.gz").unwrap(),
            "python/a-1.0.tar.gz"
        );
        for bad in ["", "..", "a/b.whl", ".hidden", "a\\b"] {
            assert!(super::bundle_path(bad).is_err(), "{bad}");
        }
        assert_eq!(
            super::version("1.0").unwrap(),
            super::version("1.0.0").unwrap()
        );
    }
}
