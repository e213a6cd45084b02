//! Debian apt repositories: the signed Release and its key, the `Packages` indexes it
//! vouches for, dependency relations with Debian version ordering, and the dependency
//! closure of the packages a manifest names.

pub mod packages;
pub mod relation;
pub mod release;
pub mod resolve;

/// Where a repository's files live: `URL/dists/SUITE/` holds the Release and indexes, or
/// `URL/SUITE` for a flat repository (`suite: ./`, `sub/`); `Filename`s are relative to
/// `URL` either way (as apt resolves them).
#[derive(Debug, Clone)]
pub struct RepoLayout {
    /// The directory holding `InRelease`.
    pub release_dir: String,
    /// What `Filename` is relative to: the repository URL.
    pub root: String,
    pub flat: bool,
    /// The release directory relative to the repository root (`dists/stable`, or empty).
    pub release_rel: String,
}

impl RepoLayout {
    pub fn of(url: &str, suite: &str) -> RepoLayout {
        let root = url.trim_end_matches('/').to_string();
        let flat = suite.ends_with('/') || suite == ".";
        let trimmed = suite.trim_matches('/').trim_start_matches("./");
        let release_rel = if flat {
            match trimmed {
                "" | "." => String::new(),
                s => s.to_string(),
            }
        } else {
            format!("dists/{trimmed}")
        };
        let release_dir = if release_rel.is_empty() {
            root.clone()
        } else {
            format!("{root}/{release_rel}")
        };
        // apt resolves a `Filename` against the URI, flat or not.
        RepoLayout {
            root,
            release_dir,
            flat,
            release_rel,
        }
    }

    /// The components whose indexes are read: those listed, else `main` (a flat
    /// repository has one index, read as `main`).
    pub fn components(&self, listed: &[String]) -> Vec<String> {
        if self.flat || listed.is_empty() {
            vec!["main".to_string()]
        } else {
            listed.to_vec()
        }
    }

    /// The directory of a component's index for `arch`, relative to the release
    /// directory (`main/binary-amd64/`, or empty when flat).
    pub fn index_dir(&self, component: &str, arch: &str) -> String {
        if self.flat {
            String::new()
        } else {
            format!("{component}/binary-{arch}/")
        }
    }
}

/// A `Filename` of an index as a safe relative path (`./` dropped), or why not.
pub fn safe_filename(filename: &str) -> Result<String, String> {
    let path = filename.trim_start_matches("./");
    crate::bundle::check_entry_path(path).map(|()| path.to_string())
}

/// No `InRelease`/`Release` is larger than this (Debian's is ~150 KiB).
pub const MAX_RELEASE_BYTES: u64 = 32 << 20;

/// A URL built from a repository's parts.
pub fn source_url(text: &str) -> crate::error::Result<crate::manifest::SourceUrl> {
    text.parse()
        .map_err(|e: String| crate::error::Error::Usage(format!("`{text}`: {e}")))
}

impl RepoLayout {
    /// The download of index `path` (relative to the release directory) that the signed
    /// Release lists as `listed`, through the manifest's mirrors.
    pub fn index_download(
        &self,
        manifest: &crate::manifest::Manifest,
        path: &str,
        listed: &release::Listed,
    ) -> crate::error::Result<crate::fetch::Download> {
        let canonical = source_url(&format!("{}/{path}", self.release_dir))?;
        Ok(crate::fetch::Download {
            from: manifest.fetch_url(&canonical)?,
            canonical,
            expected_sha256: Some(listed.sha256),
            expected_size: Some(listed.size),
            authorization: None,
            label: None,
            pinned_by: Some("the signed Release"),
        })
    }
}
