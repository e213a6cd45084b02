//! Hash-pinned requirements files, as `pip-compile --generate-hashes` and
//! `uv pip compile --generate-hashes` write them: one `name==version` per requirement
//! (PEP 508, with environment markers), each followed by `--hash=sha256:…` options, with
//! `\` continuation lines and `#` comments. Every requirement must be pinned with `==` and
//! carry at least one sha256; `-i/--index-url` names the index when the manifest does not.

use std::str::FromStr;

use pep508_rs::{MarkerEnvironment, MarkerTree, Requirement, VersionOrUrl};

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// One requirement line.
#[derive(Debug, Clone)]
pub struct Pinned {
    /// 1-based line where the requirement starts.
    pub line: usize,
    /// Normalised project name.
    pub name: String,
    pub version: pep440_rs::Version,
    /// The line's sha256 hashes: any one of them identifies an accepted file.
    pub hashes: Vec<Sha256Digest>,
    marker: MarkerTree,
    /// The requirement as written (for messages).
    pub text: String,
}

impl Pinned {
    /// Whether the line applies to a target with these markers.
    pub fn applies(&self, env: &MarkerEnvironment) -> bool {
        self.marker.evaluate(env, &[])
    }
}

/// A parsed requirements file.
#[derive(Debug, Default)]
pub struct Requirements {
    pub pinned: Vec<Pinned>,
    /// `-i` / `--index-url`, if the file names one.
    pub index_url: Option<String>,
}

/// Options that only steer pip's own behaviour: accepted and ignored.
const IGNORED_OPTIONS: &[&str] = &[
    "--extra-index-url",
    "--trusted-host",
    "-f",
    "--find-links",
    "--no-binary",
    "--only-binary",
    "--prefer-binary",
    "--pre",
    "--require-hashes",
    "--no-index",
];

/// Parses `text`, read from `file` (named in errors with the line).
pub fn parse(text: &str, file: &str) -> Result<Requirements> {
    let mut out = Requirements::default();
    let mut logical: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = strip_comment(raw);
        let (start, mut joined) = pending.take().unwrap_or((n + 1, String::new()));
        match line.strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push(' ');
                pending = Some((start, joined));
            }
            None => {
                joined.push_str(line);
                logical.push((start, joined));
            }
        }
    }
    if let Some(last) = pending {
        logical.push(last);
    }
    for (line, text) in logical {
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let at = |why: String| Error::Usage(format!("{file}:{line}: {why}"));
        if text.starts_with('-') {
            let (option, value) = split_option(text);
            match option {
                "-i" | "--index-url" => out.index_url = value.map(str::to_string),
                o if IGNORED_OPTIONS.contains(&o) => {}
                "-r" | "--requirement" | "-c" | "--constraint" | "-e" | "--editable" => {
                    return Err(at(format!(
                        "`{option}` is not supported: list every requirement in this one file"
                    ))
                    .with_hint(
                        "compile the requirements into one file (pip-compile --generate-hashes)",
                    ));
                }
                o => return Err(at(format!("option `{o}` is not supported"))),
            }
            continue;
        }
        // The requirement ends where its options (`--hash`) begin.
        let (spec, options) = match text.find(" --").or_else(|| text.find("\t--")) {
            Some(i) => (text[..i].trim(), &text[i..]),
            None => (text, ""),
        };
        let mut hashes = Vec::new();
        let mut words = options.split_whitespace();
        while let Some(word) = words.next() {
            let value = match word.strip_prefix("--hash") {
                Some("") => words.next().unwrap_or(""),
                Some(rest) if rest.starts_with('=') => &rest[1..],
                _ => {
                    return Err(at(format!(
                        "option `{word}` is not supported on a requirement"
                    )));
                }
            };
            match value.split_once(':') {
                Some(("sha256", hex)) => hashes.push(
                    hex.parse::<Sha256Digest>()
                        .map_err(|e| at(format!("--hash: {e}")))?,
                ),
                Some((_, _)) => {}
                None => return Err(at(format!("--hash `{value}`: expected sha256:<hex>"))),
            }
        }
        // The PEP 508 parser descends once per parenthesis, and its marker algebra can
        // grow exponentially with the number of `and`/`or`: bound both before it runs.
        if nesting(spec) > MAX_NESTING {
            return Err(at(format!(
                "the requirement nests parentheses more than {MAX_NESTING} deep"
            )));
        }
        let connectives = spec
            .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
            .filter(|w| *w == "and" || *w == "or")
            .count();
        if connectives > MAX_CONNECTIVES {
            return Err(at(format!(
                "the requirement's markers join more than {MAX_CONNECTIVES} conditions with and/or"
            )));
        }
        let requirement = Requirement::<pep508_rs::VerbatimUrl>::from_str(spec)
            .map_err(|e| at(format!("`{spec}` is not a requirement: {e}")))?;
        let version = match &requirement.version_or_url {
            Some(VersionOrUrl::VersionSpecifier(spec))
                if spec.len() == 1 && *spec[0].operator() == pep440_rs::Operator::Equal =>
            {
                spec[0].version().clone()
            }
            _ => {
                return Err(at(format!(
                    "`{spec}` is not pinned to one version with `==`"
                ))
                .with_hint("compile the file with pip-compile --generate-hashes or uv pip compile --generate-hashes"));
            }
        };
        if hashes.is_empty() {
            return Err(at(format!(
                "`{spec}` has no --hash=sha256:…; every requirement must be pinned by hash"
            ))
            .with_hint("compile the file with pip-compile --generate-hashes or uv pip compile --generate-hashes"));
        }
        out.pinned.push(Pinned {
            line,
            name: requirement.name.to_string(),
            version,
            hashes,
            marker: requirement.marker.clone(),
            text: spec.to_string(),
        });
    }
    Ok(out)
}

/// How deep a requirement's markers may nest parentheses; compilers write one or two levels.
const MAX_NESTING: usize = 32;
/// How many `and`/`or` a requirement's markers may hold; compilers write a handful.
const MAX_CONNECTIVES: usize = 24;

/// The deepest nesting of parentheses in `text`.
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for c in text.chars() {
        match c {
            '(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The line without its comment: `#` at the start or after whitespace (a `#` inside a
/// URL fragment is not a comment).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return line[..i].trim_end();
        }
    }
    line.trim_end()
}

/// `--opt=value`, `--opt value` or `-i value`.
fn split_option(text: &str) -> (&str, Option<&str>) {
    if let Some((o, v)) = text.split_once('=')
        && !o.contains(char::is_whitespace)
    {
        return (o, Some(v.trim()));
    }
    match text.split_once(char::is_whitespace) {
        Some((o, v)) => (o, Some(v.trim())),
        None => (text, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn env(python: &str) -> MarkerEnvironment {
        MarkerEnvironment::try_from(pep508_rs::MarkerEnvironmentBuilder {
            implementation_name: "cpython",
            implementation_version: &format!("{python}.0"),
            os_name: "posix",
            platform_machine: "x86_64",
            platform_python_implementation: "CPython",
            platform_release: "",
            platform_system: "Linux",
            platform_version: "",
            python_full_version: &format!("{python}.0"),
            python_version: python,
            sys_platform: "linux",
        })
        .unwrap()
    }

    #[test]
    fn reads_what_pip_compile_writes() {
        let text = format!(
            "#\n# This file is autogenerated by pip-compile with Python 3.11\n#\n\
             --index-url https://pypi.example.org/simple\n\
             --trusted-host pypi.example.org\n\n\
             Jmespath==1.0.1 \\\n    --hash=sha256:{A} \\\n    --hash=sha256:{B}\n    # via -r requirements.in\n\
             netaddr==1.3.0 --hash sha256:{A}  # inline comment\n\
             tomli==2.0.1 ; python_version < \"3.11\" \\\n    --hash=sha256:{B}\n"
        );
        let r = parse(&text, "requirements.txt").unwrap();
        assert_eq!(
            r.index_url.as_deref(),
            Some("https://pypi.example.org/simple")
        );
        assert_eq!(r.pinned.len(), 3);
        let j = &r.pinned[0];
        assert_eq!((j.line, j.name.as_str()), (7, "jmespath"));
        assert_eq!(j.version.to_string(), "1.0.1");
        assert_eq!(j.hashes.len(), 2);
        assert_eq!(r.pinned[1].line, 11);
        assert!(r.pinned[1].applies(&env("3.11")));
        assert!(!r.pinned[2].applies(&env("3.11")));
        assert!(r.pinned[2].applies(&env("3.10")));
    }

    #[test]
    fn refuses_unpinned_unhashed_and_nested_files_naming_the_line() {
        let cases = [
            ("six==1.16.0\n", "r.txt:1:", "has no --hash"),
            (
                &format!("\n\nsix>=1.0 --hash=sha256:{A}\n"),
                "r.txt:3:",
                "not pinned",
            ),
            ("-r other.txt\n", "r.txt:1:", "not supported"),
            ("six==1 --hash=sha256:zz\n", "r.txt:1:", "sha256"),
            (
                &format!("six==1 --global-option=x --hash=sha256:{A}\n"),
                "r.txt:1:",
                "not supported",
            ),
            (
                &format!("six @ https://files.example.org/six.whl --hash=sha256:{A}\n"),
                "r.txt:1:",
                "not pinned",
            ),
            (
                &format!(
                    "six==1 ; {}python_version > '3'{} --hash=sha256:{A}\n",
                    "(".repeat(100_000),
                    ")".repeat(100_000)
                ),
                "r.txt:1:",
                "parentheses",
            ),
            (
                &format!(
                    "six==1 ; {} --hash=sha256:{A}\n",
                    (0..40)
                        .map(|i| format!("(extra == 'a{i}' and extra == 'b{i}')"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
                "r.txt:1:",
                "and/or",
            ),
        ];
        for (text, at, why) in cases {
            let e = parse(text, "r.txt").unwrap_err();
            let msg = e.to_string();
            assert_eq!(e.exit_code(), 2);
            assert!(msg.starts_with(at) && msg.contains(why), "{text:?}: {msg}");
        }
    }
}
