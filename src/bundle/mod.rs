//! The bundle format (SPEC §3): a signed index, the locked manifest and content entries in
//! one seekable zstd tar stream. [`writer`] makes one, [`reader`] checks and streams one.

pub mod frames;
pub mod index;
pub mod pool;
pub mod reader;
pub mod signing;
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
    for part in path.split('/') {
        match part {
            "" => return Err("path has an empty component".into()),
            "." | ".." => return Err(format!("path contains `{part}`")),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_entry_path;

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
        ] {
            assert!(check_entry_path(bad).is_err(), "{bad}");
        }
    }
}
