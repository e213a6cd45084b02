//! The bundle format (SPEC §3): a signed index, the locked manifest and content entries in
//! one seekable zstd tar stream. [`writer`] makes one, [`reader`] checks and streams one.

pub mod frames;
pub mod index;
pub mod media;
pub mod parity;
pub mod pool;
pub mod reader;
pub mod signing;
pub mod split;
pub mod volumes;
pub mod writer;

/// Checks that a path inside a bundle can never leave the directory it is unpacked into.
pub fn check_entry_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > 4096 {
        return Err("empty or over-long path".into());
    }
    if path.starts_with('/') {
        return Err("absolute path".into());
    }
    if path.contains(['\\', '\0']) {
        return Err("path contains a backslash or NUL".into());
    }
    if path.chars().any(char::is_control) {
        return Err("path contains a control character".into());
    }
    for part in path.split('/') {
        match part {
            "" => return Err("path has an empty component".into()),
            "." | ".." => return Err(format!("path contains `{part}`")),
            _ => {}
        }
    }
    Ok(())
}

/// The characters a bundle's `name` and `version` may use: they name the receipt file
/// and are written into generated YAML, so nothing that could end a line, a quote or a path.
pub fn check_release_name(value: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._+~-".contains(c);
    if value.is_empty() || value.len() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start with a letter or digit".into());
    }
    if let Some(bad) = value.chars().find(|&c| !ok_char(c)) {
        return Err(format!(
            "contains {bad:?}: only letters, digits and `._+~-` are allowed"
        ));
    }
    Ok(())
}

/// Finds two paths where one is a directory of the other (`files/h/download` and
/// `files/h/download/v1/tool`): both can never exist on a destination. Linear in the total
/// length of the paths, however deep (a tree of components keyed by parent and name).
pub fn find_path_clash<'a>(paths: impl IntoIterator<Item = &'a str>) -> Option<(&'a str, &'a str)> {
    #[derive(Default)]
    struct Node<'a> {
        /// The path that ends here (a file).
        file: Option<&'a str>,
        /// A path that passes through here (so this is a directory).
        below: Option<&'a str>,
    }
    let mut ids: std::collections::HashMap<(usize, &'a str), usize> =
        std::collections::HashMap::new();
    let mut nodes: Vec<Node<'a>> = vec![Node::default()];
    for path in paths {
        let mut parent = 0;
        let mut components = path.split('/').peekable();
        while let Some(name) = components.next() {
            let id = *ids.entry((parent, name)).or_insert_with(|| {
                nodes.push(Node::default());
                nodes.len() - 1
            });
            let node = &mut nodes[id];
            if components.peek().is_some() {
                if let Some(file) = node.file {
                    return Some((file, path));
                }
                node.below.get_or_insert(path);
            } else {
                if let Some(inside) = node.below {
                    return Some((path, inside));
                }
                node.file.get_or_insert(path);
            }
            parent = id;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{check_entry_path, check_release_name, find_path_clash};

    #[test]
    fn release_names_are_restricted() {
        for good in ["kubespray-offline", "2.27.0", "v1.2.3+build.1", "a~b_c"] {
            assert!(check_release_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a b",
            "a/b",
            "a\nb",
            "q\"",
            &"x".repeat(129),
        ] {
            assert!(check_release_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_clashes_are_found() {
        let paths = ["files/h/download", "files/h/download/v1/tool", "files/h/x"];
        assert_eq!(
            find_path_clash(paths.iter().copied()),
            Some(("files/h/download", "files/h/download/v1/tool"))
        );
        assert_eq!(
            find_path_clash(["files/h/a", "files/h/ab/c"].iter().copied()),
            None
        );
    }

    #[test]
    fn rejects_paths_that_escape() {
        assert!(check_entry_path("files/h/a").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/./b",
            "a\\b",
            "a/",
            "a\nb",
        ] {
            assert!(check_entry_path(bad).is_err(), "{bad}");
        }
    }
}
