//! `kubespray-offline.yml`: inventory group_vars that point Kubespray's downloads at the
//! installed web root. For every upstream host carried, Kubespray's whole-upstream override
//! (`dl_k8s_io_url`, `github_url`, …) is set to `{{ files_repo }}/<host>`, so Kubespray's own
//! default `*_download_url` templates resolve into the web root for any version carried.

use std::collections::BTreeSet;

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

/// Renders the variables file for the hosts carried by every bundle installed so far.
pub fn render(base_url: &str, hosts: &BTreeSet<String>, provenance: &str) -> String {
    let base = base_url.trim_end_matches('/');
    let mut out = String::new();
    out.push_str("# Kubespray inventory group_vars written by airgap-bundle: copy to\n");
    out.push_str(
        "# inventory/<cluster>/group_vars/all/offline.yml (or fetch it from the web root).\n",
    );
    out.push_str(&format!("# {provenance}\n"));
    out.push_str(&format!("files_repo: \"{base}/files\"\n"));
    let mut unmapped = Vec::new();
    for host in hosts {
        match HOST_VARIABLES.iter().find(|(h, _)| h == host) {
            Some((_, var)) => out.push_str(&format!("{var}: \"{{{{ files_repo }}}}/{host}\"\n")),
            None => unmapped.push(host),
        }
    }
    if !unmapped.is_empty() {
        out.push_str(
            "# Hosts carried that have no Kubespray whole-host variable; their files are at:\n",
        );
        for host in unmapped {
            out.push_str(&format!("#   {{{{ files_repo }}}}/{host}/...\n"));
        }
    }
    out
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
        let text = render("http://web.local/", &hosts, "from test");
        assert!(text.contains("files_repo: \"http://web.local/files\"\n"));
        assert!(text.contains("dl_k8s_io_url: \"{{ files_repo }}/dl.k8s.io\"\n"));
        assert!(text.contains("github_url: \"{{ files_repo }}/github.com\"\n"));
        assert!(text.contains("#   {{ files_repo }}/example.org:8443/...\n"));
        assert!(!text.contains("get_helm_url"));
        assert_eq!(host_of("files/dl.k8s.io/release/x"), Some("dl.k8s.io"));
    }
}
