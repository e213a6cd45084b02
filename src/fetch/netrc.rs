//! Credentials for plain HTTP(S) downloads (a Helm repository or a Python index behind a
//! login) from a netrc file, as curl and pip read it: `$NETRC` if set, else `~/.netrc`.
//! Secrets never live in a manifest (SPEC §2); this is where they come from instead.

use std::path::PathBuf;

use base64::Engine;

use crate::error::{Error, Result};

/// One `machine` (or the `default`) entry.
#[derive(Clone, PartialEq, Eq)]
struct Login {
    machine: Option<String>,
    login: String,
    password: String,
}

/// The parsed netrc file (never printed: it holds secrets).
#[derive(Clone, Default)]
pub struct Netrc {
    logins: Vec<Login>,
}

impl std::fmt::Debug for Netrc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Netrc({} entries)", self.logins.len())
    }
}

impl Netrc {
    /// The netrc file of this environment: `$NETRC`, else `$HOME/.netrc`. A missing file
    /// is no credentials; one named by `$NETRC` that cannot be read is an error.
    pub fn from_environment() -> Result<Netrc> {
        let (path, named) = match std::env::var_os("NETRC") {
            Some(p) if !p.is_empty() => (PathBuf::from(p), true),
            _ => match std::env::var_os("HOME") {
                Some(home) => (PathBuf::from(home).join(".netrc"), false),
                None => return Ok(Netrc::default()),
            },
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Netrc::parse(&text).map_err(|why| {
                Error::Usage(format!("{}: {why}", path.display()))
                    .with_hint("fix the netrc file (`machine HOST login USER password PASS`)")
            }),
            Err(e) if !named && e.kind() == std::io::ErrorKind::NotFound => Ok(Netrc::default()),
            Err(e) => Err(Error::io("cannot read the netrc file", path, e)),
        }
    }

    /// Parses netrc text: whitespace-separated tokens, `machine NAME`, `default`, `login`,
    /// `password`; `account` and `macdef` (with its body up to an empty line) are skipped.
    pub fn parse(text: &str) -> std::result::Result<Netrc, String> {
        let mut logins = Vec::new();
        let mut current: Option<Login> = None;
        let mut lines = text.lines();
        let mut pending: Vec<String> = Vec::new();
        let mut next_token = |pending: &mut Vec<String>| -> Option<String> {
            loop {
                if !pending.is_empty() {
                    return Some(pending.remove(0));
                }
                let line = lines.next()?;
                if line.trim_start().starts_with('#') {
                    continue;
                }
                pending.extend(line.split_whitespace().map(String::from));
                if pending.first().map(String::as_str) == Some("macdef") {
                    // A macro body runs to the next empty line.
                    pending.clear();
                    for body in lines.by_ref() {
                        if body.trim().is_empty() {
                            break;
                        }
                    }
                }
            }
        };
        while let Some(token) = next_token(&mut pending) {
            let mut value = |what: &str| {
                next_token(&mut pending).ok_or_else(|| format!("`{what}` without a value"))
            };
            match token.as_str() {
                "machine" | "default" => {
                    if let Some(done) = current.take() {
                        logins.push(done);
                    }
                    let machine = match token.as_str() {
                        "machine" => Some(value("machine")?.to_ascii_lowercase()),
                        _ => None,
                    };
                    current = Some(Login {
                        machine,
                        login: String::new(),
                        password: String::new(),
                    });
                }
                "login" | "password" | "account" => {
                    let v = value(&token)?;
                    let Some(entry) = current.as_mut() else {
                        return Err(format!("`{token}` before any `machine`"));
                    };
                    match token.as_str() {
                        "login" => entry.login = v,
                        "password" => entry.password = v,
                        _ => {}
                    }
                }
                other => return Err(format!("unexpected token `{other}`")),
            }
        }
        if let Some(done) = current.take() {
            logins.push(done);
        }
        Ok(Netrc { logins })
    }

    /// The `Authorization: Basic …` value for a URL's host: its `machine` entry, else the
    /// `default` one.
    pub fn authorization_for(&self, url: &url::Url) -> Option<String> {
        let host = url.host_str()?.to_ascii_lowercase();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let login = self
            .logins
            .iter()
            .find(|l| l.machine.as_deref() == Some(host))
            .or_else(|| self.logins.iter().find(|l| l.machine.is_none()))?;
        let pair = format!("{}:{}", login.login, login.password);
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_then_default() {
        let n = Netrc::parse(
            "# comment\nmachine charts.example.org login alice password s3cret\n\
             macdef init\ncd /\n\ndefault login anon password x\n",
        )
        .unwrap();
        let url = url::Url::parse("https://CHARTS.example.org/index.yaml").unwrap();
        assert_eq!(
            n.authorization_for(&url).unwrap(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
            )
        );
        let other = url::Url::parse("https://other.example.org/").unwrap();
        assert_eq!(
            n.authorization_for(&other).unwrap(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("anon:x")
            )
        );
    }

    #[test]
    fn malformed_is_refused() {
        assert!(Netrc::parse("login x").unwrap_err().contains("before any"));
        assert!(
            Netrc::parse("machine")
                .unwrap_err()
                .contains("without a value")
        );
        assert!(
            Netrc::parse("machine a bogus b")
                .unwrap_err()
                .contains("bogus")
        );
        assert!(Netrc::parse("").unwrap().logins.is_empty());
    }
}
