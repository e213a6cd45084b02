//! The files of the site export: every file a receipt records, hashed again from the web
//! root (never through a link), listed only if it still has the recorded sha256 and size.

use std::collections::BTreeMap;
use std::io;

use rustix::fs::FileType;

use super::{first_few, plural};
use crate::bundle::pool::map_on_every_core;
use crate::delta::SiteFile;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::fs::{
    DirCursor, RootDir, WalkError, describe_blocker, kind_of, open_file_at, split_parent, stat_at,
};
use crate::install::receipt::Receipt;
use crate::progress::Reporter;

/// Files one worker hashes in turn with one directory cursor: the paths are sorted, so a
/// chunk stays in a few directories, and a worker has one file open at a time (plus the
/// directories on its path), whatever the number of files.
const CHUNK: usize = 64;

/// The (sha256, size) the receipts record for one path (two bundles may record two).
type Versions = Vec<(Sha256Digest, u64)>;

/// What a recorded path holds now.
#[derive(Debug, Default)]
enum Found {
    /// A regular file with one of the recorded (sha256, size).
    Holds(Sha256Digest, u64),
    #[default]
    Missing,
    /// A regular file with other bytes.
    Changed,
    /// Something the export does not read: a link, a directory, a device, or a path that
    /// would lead out of the web root.
    Refused(String),
    /// There, but the operating system refused to read it.
    Unreadable(io::Error),
}

/// The recorded files that are still in place, hashed on every core. Those missing or
/// changed are left out and named on stderr; one that cannot be read is an error (exit 1),
/// since leaving it out would hide a permission problem behind a larger delta.
pub(super) fn still_in_place(
    root: &RootDir,
    receipts: &[Receipt],
    reporter: &Reporter,
) -> Result<Vec<SiteFile>> {
    // One path may be recorded by two bundles with two digests: the disk decides.
    let mut recorded: BTreeMap<&str, Versions> = BTreeMap::new();
    for file in receipts.iter().flat_map(|r| &r.files) {
        let versions = recorded.entry(file.path.as_str()).or_default();
        if !versions.contains(&(file.sha256, file.size)) {
            versions.push((file.sha256, file.size));
        }
    }
    let recorded: Vec<(&str, Versions)> = recorded.into_iter().collect();
    let largest = |versions: &[(Sha256Digest, u64)]| versions.iter().map(|v| v.1).max();
    let total = recorded
        .iter()
        .filter_map(|(_, v)| largest(v))
        .fold(0u64, u64::saturating_add);
    let bar = reporter.bytes_bar(total, "checking");
    let chunks: Vec<&[(&str, Versions)]> = recorded.chunks(CHUNK).collect();
    let found: Vec<Vec<Found>> = map_on_every_core(&chunks, |chunk| {
        let mut cursor = DirCursor::new(root.clone());
        chunk
            .iter()
            .map(|(path, versions)| {
                let found = check(&mut cursor, path, versions);
                bar.inc(largest(versions).unwrap_or(0));
                found
            })
            .collect()
    });
    bar.finish_and_clear();

    let mut files = Vec::new();
    let mut left_out = Vec::new();
    for ((path, _), found) in recorded.iter().zip(found.into_iter().flatten()) {
        match found {
            Found::Holds(sha256, size) => files.push(SiteFile {
                path: path.to_string(),
                sha256,
                size,
            }),
            Found::Missing => left_out.push(format!("{path} (missing)")),
            Found::Changed => left_out.push(format!("{path} (changed)")),
            Found::Refused(why) => left_out.push(format!("{path} ({why})")),
            Found::Unreadable(e) => {
                return Err(Error::Runtime(format!(
                    "cannot read `{path}` below the web root {}: {e}",
                    root.path().display()
                ))
                .with_hint("run the export as a user that may read the whole web root"));
            }
        }
    }
    if !left_out.is_empty() {
        let (is, was) = if left_out.len() == 1 {
            ("is", "was")
        } else {
            ("are", "were")
        };
        reporter.info(format!(
            "{} recorded in receipts {is} missing or changed and {was} left out: {}",
            plural(left_out.len(), "file", "files"),
            first_few(&left_out)
        ));
    }
    Ok(files)
}

/// Whether the regular file at `path` (reached without following a link) has one of the
/// recorded (sha256, size). A file of none of the recorded sizes is not hashed.
fn check(cursor: &mut DirCursor, path: &str, versions: &[(Sha256Digest, u64)]) -> Found {
    // A receipt is a file in the web root, which anyone able to write there can edit: its
    // paths are checked as a bundle's entry paths are.
    if crate::bundle::check_entry_path(path).is_err() {
        return Found::Refused("not a path below the web root".into());
    }
    let (parent, name) = split_parent(path);
    let dir = match cursor.existing_dir(parent) {
        Ok(Some(dir)) => dir,
        Ok(None) => return Found::Missing,
        Err(WalkError::Refused { path, what }) => {
            return Found::Refused(format!("`{path}` {what}"));
        }
        Err(WalkError::Io { source, .. }) => return Found::Unreadable(source),
    };
    let file = match open_file_at(dir, name) {
        Ok(file) => file,
        Err(e) => {
            return match stat_at(dir, name) {
                Ok(None) => Found::Missing,
                Ok(Some(st)) if kind_of(&st) != FileType::RegularFile => {
                    Found::Refused(describe_blocker(kind_of(&st)).to_string())
                }
                _ => Found::Unreadable(e),
            };
        }
    };
    let size = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return Found::Unreadable(e),
    };
    if !versions.iter().any(|(_, s)| *s == size) {
        return Found::Changed;
    }
    match Sha256Digest::of_reader(file) {
        Ok(held) => versions
            .iter()
            .find(|v| **v == held)
            .map_or(Found::Changed, |&(sha256, size)| Found::Holds(sha256, size)),
        Err(e) => Found::Unreadable(e),
    }
}

#[cfg(test)]
mod tests {
    use crate::bundle::check_entry_path;

    #[test]
    fn only_paths_below_the_root_are_read() {
        assert!(check_entry_path("files/example.org/a/b.tgz").is_ok());
        assert!(check_entry_path("charts/a-1.0.0.tgz").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "files/../../etc/passwd",
            "files/./a",
            "files//a",
            "files/a/",
            "..",
        ] {
            assert!(check_entry_path(bad).is_err(), "{bad}");
        }
    }
}
