//! The deb822 `.sources` snippet written beside each carried apt repository
//! (`debs/<repo>.sources`): the repository's URL on the web root, its suite, components and
//! architectures, the upstream key inline in `Signed-By` (apt 2.3 and later: Debian 12,
//! Ubuntu 22.04), and `Check-Valid-Until: no` where the upstream Release expires, since an
//! offline mirror outlives `Valid-Until`. Never `Trusted: yes`.

use super::kubespray::AptRepoOnSite;
use crate::error::{Error, Result};
use crate::manifest::Manifest;

/// The carried apt repositories of a bundle's locked manifest: the `(path below the web
/// root, bytes)` of each one's snippet, and what the receipt records of each.
pub struct AptOnSite {
    pub snippets: Vec<(String, Vec<u8>)>,
    pub repos: Vec<AptRepoOnSite>,
}

pub fn snippets(locked_manifest: &[u8], base_url: &str) -> Result<AptOnSite> {
    let text = std::str::from_utf8(locked_manifest)
        .map_err(|_| Error::Verify("the bundle's locked manifest is not UTF-8".into()))?;
    let manifest: Manifest = serde_yaml_ng::from_str(text)
        .map_err(|e| Error::Verify(format!("the bundle's locked manifest does not parse: {e}")))?;
    let base = base_url.trim_end_matches('/');
    let mut out = Vec::new();
    let mut repos = Vec::new();
    for repo in &manifest.debs {
        repos.push(AptRepoOnSite {
            name: repo.name.clone(),
            upstream: repo.url.to_string(),
            release_sha256: repo.release.as_ref().map(|r| r.sha256),
        });
        let dir = repo.dir()?;
        let flat = crate::apt::RepoLayout::of(repo.url.as_str(), &repo.suite).flat;
        let mut s = String::new();
        s.push_str(&format!(
            "# apt source for the repository `{}` carried by bundle {} {} (airgap-bundle).\n\
             # Copy to /etc/apt/sources.list.d/{}.sources on each node. The metadata is\n\
             # upstream's, byte for byte: apt checks it with the upstream key below.\n",
            repo.name, manifest.name, manifest.version, repo.name
        ));
        s.push_str("Types: deb\n");
        s.push_str(&format!("URIs: {base}/{dir}\n"));
        s.push_str(&format!("Suites: {}\n", repo.suite));
        if !flat {
            let components = if repo.components.is_empty() {
                "main".to_string()
            } else {
                repo.components.join(" ")
            };
            s.push_str(&format!("Components: {components}\n"));
        }
        let arches = repo.arches(&manifest.platforms);
        s.push_str(&format!("Architectures: {}\n", arches.join(" ")));
        if repo
            .release
            .as_ref()
            .is_some_and(|r| r.valid_until.is_some())
            || repo.check_valid_until == Some(false)
        {
            s.push_str("Check-Valid-Until: no\n");
        }
        s.push_str("Signed-By:\n");
        for line in repo.signed_by.as_deref().unwrap_or_default().lines() {
            if line.trim().is_empty() {
                s.push_str(" .\n");
            } else {
                s.push_str(&format!(" {line}\n"));
            }
        }
        out.push((format!("{dir}.sources"), s.into_bytes()));
    }
    Ok(AptOnSite {
        snippets: out,
        repos,
    })
}
