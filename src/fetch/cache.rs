//! The content-addressed download cache: `sha256/<hex>` holds complete, verified blobs;
//! `partial/<key>.part` holds interrupted downloads (with `<key>.part.validator`, the
//! `If-Range` value of the response that started them) so that the next attempt resumes;
//! `locks/<key>.part.lock` lets processes sharing the cache download a blob once.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::digest::Sha256Digest;
use crate::error::{Error, IoContext, Result};

#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// Opens (creating) a cache directory.
    pub fn open(root: &Path) -> Result<Self> {
        for sub in ["sha256", "partial", "locks"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).at("cannot create cache directory", &dir)?;
        }
        Ok(Cache {
            root: root.to_path_buf(),
        })
    }

    /// The default cache: `$XDG_CACHE_HOME/airgap-bundle` or `~/.cache/airgap-bundle`.
    pub fn default_dir() -> PathBuf {
        if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(x).join("airgap-bundle");
        }
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
        home.join(".cache").join("airgap-bundle")
    }

    /// Where a blob with this digest lives (it may not exist).
    pub fn blob_path(&self, digest: &Sha256Digest) -> PathBuf {
        self.root.join("sha256").join(digest.hex())
    }

    /// A complete blob, if cached with the expected size (content is re-hashed when used).
    pub fn lookup(&self, digest: &Sha256Digest, size: Option<u64>) -> Option<PathBuf> {
        let path = self.blob_path(digest);
        let meta = std::fs::metadata(&path).ok()?;
        if !meta.is_file() || size.is_some_and(|s| s != meta.len()) {
            return None;
        }
        Some(path)
    }

    /// The partial-download file for a key (expected digest, or a hash of the URL).
    pub fn partial_path(&self, key: &str) -> PathBuf {
        self.root.join("partial").join(format!("{key}.part"))
    }

    /// Where the `If-Range` validator of a partial download is kept: the strong ETag (or
    /// Last-Modified) of the response that started it.
    pub fn validator_path(partial: &Path) -> PathBuf {
        let mut name = partial.as_os_str().to_owned();
        name.push(".validator");
        PathBuf::from(name)
    }

    /// Takes an exclusive lock for downloading into `partial`, waiting for another process
    /// that holds it. The lock lives on a `.lock` file beside it, never on the partial file
    /// itself (which is renamed into the cache when complete); lock files stay, empty, in
    /// `locks/` (removing one would race with a process waiting on it).
    pub fn lock_partial(&self, partial: &Path) -> Result<File> {
        let mut name = partial
            .file_name()
            .map(|n| n.to_owned())
            .unwrap_or_default();
        name.push(".lock");
        let path = self.root.join("locks").join(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .at("cannot create", &path)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io("cannot lock", &path, e.into()))?;
        Ok(file)
    }

    /// Stores small in-memory content (a manifest, a generated index) at its content
    /// address; returns its path and digest.
    pub fn store_bytes(&self, bytes: &[u8]) -> Result<(PathBuf, Sha256Digest)> {
        let digest = Sha256Digest::of_bytes(bytes);
        // Always written anew (it is small): a damaged copy of the same size heals.
        let mut tmp = tempfile::Builder::new()
            .prefix(".store-")
            .tempfile_in(self.root.join("partial"))
            .at("cannot write to the cache", &self.root)?;
        std::io::Write::write_all(&mut tmp, bytes).at("cannot write to the cache", tmp.path())?;
        let dest = self.blob_path(&digest);
        tmp.persist(&dest)
            .map_err(|e| Error::io("cannot store in cache", &dest, e.error))?;
        Ok((dest, digest))
    }

    /// Moves a finished partial download to its content address.
    pub fn commit(&self, partial: &Path, digest: &Sha256Digest) -> Result<PathBuf> {
        let dest = self.blob_path(digest);
        std::fs::rename(partial, &dest).at("cannot store in cache", &dest)?;
        let _ = std::fs::remove_file(Self::validator_path(partial));
        Ok(dest)
    }
}
