//! Registry credentials and the authentication challenge (distribution's token flow):
//! where a username and password come from, and how a `WWW-Authenticate` header is read.

use std::collections::HashMap;
use std::path::PathBuf;

use base64::Engine as _;
use serde::Deserialize;

use crate::error::{Error, Result};

/// A username and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a password.
        write!(f, "Login({})", self.username)
    }
}

/// Where credentials come from: an explicit login bound to one registry (`--registry-user`
/// with `BUNDLE_REGISTRY_PASSWORD`), then the docker/podman auth files. A login is only
/// ever sent to the registry it belongs to, and only when that registry asks for it.
#[derive(Debug, Default, Clone)]
pub struct Credentials {
    explicit: Option<(String, Login)>,
    files: HashMap<String, Login>,
}

/// `auths` of a docker `config.json` or a containers `auth.json`.
#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl Credentials {
    /// Reads the auth files named by the environment (`$REGISTRY_AUTH_FILE`,
    /// `$XDG_RUNTIME_DIR/containers/auth.json`, `$DOCKER_CONFIG/config.json` or
    /// `~/.docker/config.json`; the first that names a registry wins). A file that is
    /// present but unreadable or malformed is an error naming it.
    pub fn from_auth_files() -> Result<Self> {
        let mut creds = Credentials::default();
        for path in auth_file_paths() {
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("cannot read registry auth file", &path, e)),
            };
            let file: AuthFile = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Usage(format!("{}: not a registry auth file: {e}", path.display()))
            })?;
            for (key, entry) in file.auths {
                if let Some(login) = entry.login() {
                    creds.files.entry(normalise_host(&key)).or_insert(login);
                }
            }
        }
        Ok(creds)
    }

    /// Adds an explicit login for `registry` (it takes precedence over the files).
    pub fn with_login(mut self, registry: &str, login: Login) -> Self {
        self.explicit = Some((normalise_host(registry), login));
        self
    }

    /// The login for `registry`, if any.
    pub fn for_registry(&self, registry: &str) -> Option<&Login> {
        let host = normalise_host(registry);
        match &self.explicit {
            Some((h, login)) if *h == host => Some(login),
            _ => self.files.get(&host),
        }
    }
}

impl AuthEntry {
    fn login(self) -> Option<Login> {
        if let (Some(username), Some(password)) = (self.username, self.password) {
            return Some(Login { username, password });
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(self.auth?.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (username, password) = text.split_once(':')?;
        Some(Login {
            username: username.to_string(),
            password: password.to_string(),
        })
    }
}

fn auth_file_paths() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut paths = Vec::new();
    paths.extend(env("REGISTRY_AUTH_FILE"));
    if let Some(run) = env("XDG_RUNTIME_DIR") {
        paths.push(run.join("containers/auth.json"));
    }
    match env("DOCKER_CONFIG") {
        Some(dir) => paths.push(dir.join("config.json")),
        None => paths.extend(env("HOME").map(|h| h.join(".docker/config.json"))),
    }
    paths
}

/// `https://index.docker.io/v1/`, `registry-1.docker.io` and `docker.io` are one registry;
/// auth files may name a registry with a scheme or a path.
pub fn normalise_host(key: &str) -> String {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses `Basic realm="…"` or `Bearer realm="…",service="…",scope="…"`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        let mut fields: HashMap<String, String> = HashMap::new();
        let mut rest = params.trim();
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=')?;
            let after = after.trim_start();
            let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            } else {
                after.split_once(',').unwrap_or((after, ""))
            };
            fields.insert(key.trim().to_ascii_lowercase(), value.to_string());
            rest = next.trim_start_matches([',', ' ']);
        }
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => Some(Challenge::Bearer {
                realm: fields.remove("realm")?,
                service: fields.remove("service"),
                scope: fields.remove("scope"),
            }),
            _ => None,
        }
    }
}

/// The password for an explicit login: `BUNDLE_REGISTRY_PASSWORD`, required with
/// `--registry-user`.
pub fn password_from_env(user: &str) -> Result<Login> {
    match std::env::var("BUNDLE_REGISTRY_PASSWORD") {
        Ok(password) => Ok(Login {
            username: user.to_string(),
            password,
        }),
        Err(_) => Err(Error::Usage(format!(
            "--registry-user {user}: set the password in BUNDLE_REGISTRY_PASSWORD"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.example.org/token",service="registry.example.org",scope="repository:a/b:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.org/token".into(),
                service: Some("registry.example.org".into()),
                scope: Some("repository:a/b:pull".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
    }

    #[test]
    fn hosts_normalise_like_docker() {
        assert_eq!(normalise_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalise_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(normalise_host("Quay.io"), "quay.io");
    }

    #[test]
    fn auth_entries_decode() {
        let entry = AuthEntry {
            auth: Some(base64::engine::general_purpose::STANDARD.encode("u:p:q")),
            username: None,
            password: None,
        };
        assert_eq!(
            entry.login(),
            Some(Login {
                username: "u".into(),
                password: "p:q".into()
            })
        );
    }
}
