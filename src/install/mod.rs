//! `bundle install` (air-gapped side): one verified streaming pass over the bundle into
//! staged destinations, committed only after the whole bundle checked out (SPEC §4).
//!
//! Order of events: lock the web root → check the index signature → pre-flight (space,
//! write access) → stream, hash and stage every entry → commit (rename into place) →
//! receipt and Kubespray variables. A failure before the commit leaves every destination
//! as it was; a run killed at any point is finished by running it again.

pub mod kubespray;
pub mod receipt;
pub mod web_root;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;

use crate::bundle::index::{EntryKind, IndexEntry};
use crate::bundle::reader::{EntryReader, EntrySink, ReadOptions, read_verified};
use crate::bundle::signing::PublicKey;
use crate::bundle::volumes::BundleSource;
use crate::error::{Error, Result};
use crate::fs::RootDir;
use crate::progress::Reporter;
use receipt::{Receipt, ReceiptFile};
use web_root::{Outcome, WebRootSink};

/// Where the Kubespray variables are written, relative to the web root (SPEC §6).
const VARS_PATH: &str = "kubespray-offline.yml";

pub struct InstallOptions {
    pub bundle: PathBuf,
    pub web_root: Option<PathBuf>,
    /// The URL the web root is served under (default `http://<hostname>/`).
    pub base_url: Option<String>,
}

/// What an install did, for people and for `--json`.
#[derive(Debug, Serialize)]
pub struct InstallReport {
    pub name: String,
    pub version: String,
    pub installed: usize,
    pub already_present: usize,
    pub bytes_written: u64,
    pub receipt: Option<PathBuf>,
    pub kubespray_vars: Option<PathBuf>,
}

/// Routes entries to the web-root sink once pre-flight has created it.
struct LateSink<'a>(&'a RefCell<Option<WebRootSink>>);

impl EntrySink for LateSink<'_> {
    fn accept(&mut self, entry: &IndexEntry, data: &mut EntryReader<'_>) -> Result<()> {
        match self.0.borrow_mut().as_mut() {
            Some(sink) => sink.accept(entry, data),
            None => Ok(()),
        }
    }
}

/// Opens the web root and takes an exclusive lock on the directory itself (no file is
/// created), so two installs never interleave and stale staging directories can be
/// removed safely.
fn open_and_lock(web_root: &std::path::Path) -> Result<RootDir> {
    let root = web_root::open(web_root)?;
    match root.try_lock() {
        Ok(true) => Ok(root),
        Ok(false) => Err(Error::Runtime(format!(
            "another install is running on {}",
            root.path().display()
        ))
        .with_hint("wait for it to finish")),
        Err(e) => Err(Error::Runtime(format!(
            "cannot lock the web root {} against other installs: {e}",
            root.path().display()
        ))
        .with_hint(
            "the filesystem must support flock(2); use a local filesystem for the web root",
        )),
    }
}

pub fn install(
    options: &InstallOptions,
    pubkey: &PublicKey,
    reporter: &Reporter,
) -> Result<InstallReport> {
    let source = BundleSource::open(&options.bundle)?;
    let root = match &options.web_root {
        Some(path) => {
            let root = open_and_lock(path)?;
            web_root::remove_stale_staging(&root);
            Some(root)
        }
        None => None,
    };
    let staged: RefCell<Option<WebRootSink>> = RefCell::new(None);
    let bar = reporter.bytes_bar(0, "install");
    let verified = read_verified(
        &source,
        ReadOptions {
            pubkey,
            progress: Some(&bar),
        },
        &mut |v| {
            bar.set_length(v.index.total_bytes());
            // Until the registry target lands, a bundle with images is refused whole
            // rather than installed without them.
            let images = v
                .index
                .artifacts
                .iter()
                .filter(|a| a.kind == EntryKind::Image)
                .count();
            if images > 0 {
                return Err(Error::Usage(format!(
                    "this bundle carries {images} image(s); pushing images to a registry is not in this version yet, so nothing was installed"
                ))
                .with_hint("`bundle verify` checks the images; install them with a newer `bundle`, or make a bundle without them"));
            }
            let web_entries = v
                .index
                .entries
                .iter()
                .filter(|e| web_root::is_web_entry(e))
                .count();
            match &root {
                Some(root) => {
                    let receipt = receipt::receipt_rel_path(&v.index.name, &v.index.version);
                    let found = web_root::preflight(root, &v.index, &[&receipt, VARS_PATH])?;
                    *staged.borrow_mut() = Some(WebRootSink::new(root, found.in_place)?);
                }
                None if web_entries > 0 => {
                    return Err(Error::Usage(format!(
                        "this bundle carries {web_entries} files for the web root: pass --web-root DIR (e.g. /var/www/html)"
                    )));
                }
                None => {}
            }
            Ok(())
        },
        &mut LateSink(&staged),
    )?;
    bar.finish_and_clear();

    let index = &verified.index;
    let mut report = InstallReport {
        name: index.name.clone(),
        version: index.version.clone(),
        installed: 0,
        already_present: 0,
        bytes_written: 0,
        receipt: None,
        kubespray_vars: None,
    };
    let (Some(root), Some(mut sink)) = (root, staged.into_inner()) else {
        return Ok(report);
    };
    report.bytes_written = sink.bytes_written();

    // The receipt and the variables are staged too, so that they land with the content in
    // one journalled commit (or not at all).
    let vars_path = root.path().join(VARS_PATH);
    let bundle_path =
        std::fs::canonicalize(&options.bundle).unwrap_or_else(|_| options.bundle.clone());
    let receipt = Receipt {
        name: index.name.clone(),
        version: index.version.clone(),
        bundle: bundle_path.display().to_string(),
        index_sha256: verified.index_sha256,
        manifest_sha256: index.manifest_sha256,
        signed_by: verified.signature.key_id.to_string(),
        created: index.created.clone(),
        installed_at: crate::timefmt::rfc3339(crate::timefmt::now_epoch()),
        tool: format!("airgap-bundle {}", env!("CARGO_PKG_VERSION")),
        files: sink
            .placed()
            .iter()
            .filter_map(|p| {
                let status = match p.outcome {
                    Outcome::Installed => "installed",
                    Outcome::AlreadyPresent => "present",
                    Outcome::Generated => return None,
                };
                Some(ReceiptFile {
                    path: p.path.clone(),
                    sha256: p.sha256,
                    size: p.size,
                    status: status.into(),
                })
            })
            .collect(),
        kubespray_vars: Some(vars_path.display().to_string()),
    };
    let receipt_rel = receipt::receipt_rel_path(&index.name, &index.version);
    let mut receipts: Vec<Receipt> = receipt::all_receipts(&root)
        .into_iter()
        .filter(|r| {
            (r.name.as_str(), r.version.as_str()) != (index.name.as_str(), index.version.as_str())
        })
        .collect();
    let receipt_json = receipt.to_json()?;
    receipts.push(receipt);
    receipts.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    let hosts: BTreeSet<String> = receipts
        .iter()
        .flat_map(|r| r.files.iter())
        .filter_map(|f| kubespray::host_of(&f.path).map(String::from))
        .collect();
    let bundles: Vec<String> = receipts
        .iter()
        .map(|r| format!("{} {}", r.name, r.version))
        .collect();
    let base_url = options.base_url.clone().unwrap_or_else(default_base_url);
    let vars = kubespray::render(
        &base_url,
        &hosts,
        &format!("bundles installed: {}", bundles.join(", ")),
    )?;
    sink.stage_generated(&receipt_rel, &receipt_json)?;
    if root.read_small(VARS_PATH, 16 << 20).as_deref() != Some(vars.as_bytes()) {
        sink.stage_generated(VARS_PATH, vars.as_bytes())?;
    }

    let placed = sink.commit()?;
    for p in &placed {
        match p.outcome {
            Outcome::Installed => report.installed += 1,
            Outcome::AlreadyPresent => report.already_present += 1,
            Outcome::Generated => continue,
        }
        reporter.detail(format!(
            "{} {}",
            if p.outcome == Outcome::Installed {
                "installed"
            } else {
                "present  "
            },
            p.path
        ));
    }
    report.receipt = Some(root.path().join(&receipt_rel));
    report.kubespray_vars = Some(vars_path);
    Ok(report)
}

/// `http://<hostname>/`, what nodes on the site network use by default.
fn default_base_url() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("http://{host}/")
}
