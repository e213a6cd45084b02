//! Locks plain files: streams each unpinned URL into the cache while hashing it (never in
//! memory) and records its sha256 and size.

use crate::error::Result;
use crate::fetch::{Download, Fetcher};
use crate::manifest::Manifest;
use crate::progress::Reporter;

pub fn lock_files(manifest: &mut Manifest, fetcher: &Fetcher, reporter: &Reporter) -> Result<()> {
    manifest.file_dest_paths()?;
    let todo: Vec<usize> = (0..manifest.files.len())
        .filter(|&i| manifest.files[i].sha256.is_none() || manifest.files[i].size.is_none())
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let downloads = todo
        .iter()
        .map(|&i| Download::for_file(manifest, &manifest.files[i]))
        .collect::<Result<Vec<_>>>()?;
    let known: u64 = downloads.iter().filter_map(|d| d.expected_size).sum();
    let bar = reporter.bytes_bar(known, "lock");
    let fetched = fetcher.fetch_all(&downloads, &bar)?;
    bar.finish_and_clear();
    for (&i, f) in todo.iter().zip(fetched) {
        let entry = &mut manifest.files[i];
        reporter.detail(format!(
            "locked {} sha256:{} ({} bytes)",
            entry.url, f.sha256, f.size
        ));
        entry.sha256 = Some(f.sha256);
        entry.size = Some(f.size);
    }
    Ok(())
}
