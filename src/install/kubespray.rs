//! `kubespray-offline.yml`: inventory group_vars that point Kubespray's downloads at the
//! installed web root. For every upstream host carried, Kubespray's whole-upstream override
//! (`dl_k8s_io_url`, `github_url`, …) is set to `{{ files_repo }}/<host>`, so Kubespray's own
//! default `*_download_url` templates resolve into the web root for any version carried.

use std::collections::BTreeSet;

use crate::error::{Error, Result};

/// Kubespray's variables that replace a whole upstream host.
pub const HOST_VARIABLES: &[(&str, &str)] = &[
    ("dl.k8s.io", "dl_k8s_io_url"),
    ("github.com", "github_url"),
    ("storage.googleapis.com", "storage_googleapis_url"),
    ("get.helm.sh", "get_helm_url"),
];

/// The `files/<host>` part of a web-root file path.
pub fn host_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("files/")?;
    rest.split('/').next().filter(|h| !h.is_empty())
}

/// Text safe inside a YAML comment line: control characters (a newline would end the
/// comment and start a key) are escaped.
fn comment_safe(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_debug().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Kubespray's image repository variables, all pointed at the site registry (what its
/// offline sample sets): images keep their upstream path below the registry.
pub const IMAGE_REPO_VARIABLES: &[&str] = &[
    "kube_image_repo",
    "gcr_image_repo",
    "github_image_repo",
    "docker_image_repo",
    "quay_image_repo",
];

/// The site registry images were pushed to.
pub struct SiteRegistry<'a> {
    /// `HOST:PORT`.
    pub host: &'a str,
    /// `https://HOST:PORT` (or `http://` for a plain-HTTP registry).
    pub url: &'a str,
}

/// An apt repository installed under `debs/<name>/` of the web root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct AptRepoOnSite {
    pub name: String,
    /// The upstream URL it was carried from (which Kubespray variable it serves).
    pub upstream: String,
    /// The sha256 of the signed Release installed (two bundles may share a repository
    /// only with the same Release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_sha256: Option<crate::digest::Sha256Digest>,
}

/// Kubespray's apt variables a carried repository sets, by what its upstream is: Docker's
/// repository also serves containerd.io, which Kubespray takes from `containerd_*`.
fn apt_variables(upstream: &str) -> &'static [&'static str] {
    let u = upstream.to_ascii_lowercase();
    let path_end = u
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string();
    let docker = u.contains("://download.docker.com/");
    match (docker, path_end.as_str()) {
        (true, "ubuntu") => &[
            "docker_ubuntu_repo_base_url",
            "containerd_ubuntu_repo_base_url",
        ],
        (true, "debian") => &[
            "docker_debian_repo_base_url",
            "containerd_debian_repo_base_url",
        ],
        // The distribution's own archive: its URL ends in /ubuntu or /debian.
        (false, "ubuntu") => &["ubuntu_repo"],
        (false, "debian") => &["debian_repo"],
        _ => &[],
    }
}

/// What the installed bundles put on the site.
#[derive(Default)]
pub struct SiteContent<'a> {
    /// Upstream hosts of the files under `files/`.
    pub hosts: BTreeSet<String>,
    pub registry: Option<SiteRegistry<'a>>,
    pub apt: Vec<AptRepoOnSite>,
    /// The web root holds a Helm repository (`charts/index.yaml`).
    pub helm_repo: bool,
    /// The registry charts were pushed to as OCI artifacts (`--chart-registry`).
    pub chart_registry: Option<&'a str>,
    /// The PEP 503 mirror's URL (`<base>/simple/`), when python packages were installed.
    pub pypi: Option<String>,
}

/// Renders the variables file for what every bundle installed so far carried. The
/// variables are emitted by a YAML serialiser (never concatenated), so no value can add a
/// key or break the document.
pub fn render(base_url: &str, site: &SiteContent<'_>, provenance: &str) -> Result<String> {
    use serde_yaml_ng::{Mapping, Value};
    let hosts = &site.hosts;
    let registry = &site.registry;
    let base = base_url.trim_end_matches('/');
    let mut vars = Mapping::new();
    vars.insert("files_repo".into(), format!("{base}/files").into());
    // Not Kubespray's own: where the site's Helm charts are (`helm repo add offline URL`,
    // or `helm pull oci://…/charts/NAME`).
    if site.helm_repo {
        vars.insert(
            "helm_charts_repo_url".into(),
            format!("{base}/charts").into(),
        );
    }
    if let Some(host) = site.chart_registry {
        vars.insert(
            "helm_charts_oci_url".into(),
            format!("oci://{host}/charts").into(),
        );
    }
    let mut unmapped_apt = Vec::new();
    for repo in &site.apt {
        let url = format!("{base}/debs/{}", repo.name);
        // The first repository (by name) that fits a variable takes it; others are listed.
        let names: Vec<&str> = apt_variables(&repo.upstream)
            .iter()
            .copied()
            .filter(|v| !vars.contains_key(*v))
            .collect();
        if names.is_empty() {
            unmapped_apt.push(format!("{url} (from {})", repo.upstream));
        }
        for var in names {
            vars.insert((*var).into(), url.clone().into());
            if let Some(key_var) = var.strip_suffix("_base_url") {
                vars.insert(
                    format!("{key_var}_gpgkey").into(),
                    format!("{url}/key.asc").into(),
                );
            }
        }
    }
    if let Some(r) = registry {
        vars.insert("registry_host".into(), r.host.into());
        for var in IMAGE_REPO_VARIABLES {
            vars.insert((*var).into(), "{{ registry_host }}".into());
        }
        let mut mirror = Mapping::new();
        mirror.insert("host".into(), r.url.into());
        mirror.insert(
            "capabilities".into(),
            Value::Sequence(vec!["pull".into(), "resolve".into()]),
        );
        mirror.insert("skip_verify".into(), false.into());
        let mut entry = Mapping::new();
        entry.insert("prefix".into(), r.host.into());
        entry.insert(
            "mirrors".into(),
            Value::Sequence(vec![Value::Mapping(mirror)]),
        );
        vars.insert(
            "containerd_registries_mirrors".into(),
            Value::Sequence(vec![Value::Mapping(entry)]),
        );
    }
    if let Some(url) = &site.pypi {
        // Kubespray names no variable for it: for `pip install -r requirements.txt
        // --index-url {{ pypi_index_url }}` on the Ansible host (or pip.conf on the nodes).
        vars.insert("pypi_index_url".into(), url.as_str().into());
    }
    let mut unmapped = Vec::new();
    for host in hosts {
        match HOST_VARIABLES.iter().find(|(h, _)| h == host) {
            Some((_, var)) => {
                vars.insert((*var).into(), format!("{{{{ files_repo }}}}/{host}").into());
            }
            None => unmapped.push(host),
        }
    }
    let body = serde_yaml_ng::to_string(&vars)
        .map_err(|e| Error::Runtime(format!("cannot write the Kubespray variables: {e}")))?;
    let mut out = String::new();
    out.push_str("# Kubespray inventory group_vars written by airgap-bundle: copy to\n");
    out.push_str(
        "# inventory/<cluster>/group_vars/all/offline.yml (or fetch it from the web root).\n",
    );
    out.push_str(&format!("# {}\n", comment_safe(provenance)));
    if let Some(r) = registry.as_ref().filter(|r| r.url.starts_with("https://")) {
        out.push_str(&format!(
            "# Site registry {}: containerd on each node trusts its CA when the CA file is at\n\
             # /etc/containerd/certs.d/{}/ca.crt (the PEM given to install as --registry-ca).\n",
            comment_safe(r.url),
            comment_safe(r.host)
        ));
    }
    out.push_str(&body);
    if !unmapped_apt.is_empty() {
        out.push_str(
            "# apt repositories carried that no Kubespray variable names (see debs/*.sources):\n",
        );
        for line in &unmapped_apt {
            out.push_str(&format!("#   {}\n", comment_safe(line)));
        }
    }
    if !unmapped.is_empty() {
        out.push_str(
            "# Hosts carried that have no Kubespray whole-host variable; their files are at:\n",
        );
        for host in unmapped {
            out.push_str(&format!(
                "#   {{{{ files_repo }}}}/{}/...\n",
                comment_safe(host)
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_known_hosts_and_lists_others() {
        let hosts: BTreeSet<String> = ["dl.k8s.io", "github.com", "example.org:8443"]
            .into_iter()
            .map(String::from)
            .collect();
        let site = SiteContent {
            hosts,
            ..SiteContent::default()
        };
        let text = render("http://web.local/", &site, "from test").unwrap();
        let vars: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(vars["files_repo"], "http://web.local/files");
        assert_eq!(vars["dl_k8s_io_url"], "{{ files_repo }}/dl.k8s.io");
        assert_eq!(vars["github_url"], "{{ files_repo }}/github.com");
        assert!(text.contains("#   {{ files_repo }}/example.org:8443/...\n"));
        assert!(!text.contains("get_helm_url"));
        assert!(!text.contains("registry_host"));
        assert_eq!(host_of("files/dl.k8s.io/release/x"), Some("dl.k8s.io"));
    }

    #[test]
    fn notes_the_pypi_mirror_when_python_packages_are_installed() {
        let site = SiteContent {
            pypi: Some("http://web.local/simple/".into()),
            ..SiteContent::default()
        };
        let text = render("http://web.local/", &site, "from test").unwrap();
        let vars: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(vars["pypi_index_url"], "http://web.local/simple/");
        let none = render("http://web.local/", &SiteContent::default(), "t").unwrap();
        assert!(!none.contains("pypi_index_url"));
    }

    #[test]
    fn hostile_values_cannot_add_keys() {
        let hosts: BTreeSet<String> = ["evil\nfiles_repo: http://attacker/".to_string()]
            .into_iter()
            .collect();
        let site = SiteContent {
            hosts,
            apt: vec![AptRepoOnSite {
                name: "x".into(),
                upstream: "https://example.org/\nfiles_repo: evil".into(),
                release_sha256: None,
            }],
            ..SiteContent::default()
        };
        let text = render(
            "http://web.local/\"\nkube_version: x",
            &site,
            "bundles installed: a\nb: c",
        )
        .unwrap();
        let vars: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(vars.len(), 1, "{text}");
        assert_eq!(
            vars["files_repo"], "http://web.local/\"\nkube_version: x/files",
            "{text}"
        );
    }

    #[test]
    fn points_the_image_repos_and_containerd_at_the_site_registry() {
        let site = SiteContent {
            registry: Some(SiteRegistry {
                host: "registry.local:5000",
                url: "https://registry.local:5000",
            }),
            apt: vec![
                AptRepoOnSite {
                    name: "docker".into(),
                    upstream: "https://download.docker.com/linux/debian".into(),
                    release_sha256: None,
                },
                AptRepoOnSite {
                    name: "debian".into(),
                    upstream: "https://example.org/debian".into(),
                    release_sha256: None,
                },
            ],
            ..SiteContent::default()
        };
        let text = render("http://web.local/", &site, "from test").unwrap();
        let vars: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(vars["registry_host"], "registry.local:5000");
        for var in IMAGE_REPO_VARIABLES {
            assert_eq!(vars[*var], "{{ registry_host }}", "{var}");
        }
        let mirrors = &vars["containerd_registries_mirrors"][0];
        assert_eq!(mirrors["prefix"], "registry.local:5000");
        assert_eq!(mirrors["mirrors"][0]["host"], "https://registry.local:5000");
        assert!(text.contains("/etc/containerd/certs.d/registry.local:5000/ca.crt"));
        assert_eq!(vars["debian_repo"], "http://web.local/debs/debian");
        assert_eq!(
            vars["docker_debian_repo_base_url"],
            "http://web.local/debs/docker"
        );
        assert_eq!(
            vars["containerd_debian_repo_gpgkey"],
            "http://web.local/debs/docker/key.asc"
        );
    }
}
