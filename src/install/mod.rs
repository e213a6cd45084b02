//! `bundle install` (air-gapped side): one verified streaming pass over the bundle into
//! staged destinations, committed only after the whole bundle checked out (SPEC §4).
//!
//! Order of events: lock the web root → check the index signature → pre-flight (space,
//! write access) → stream, hash and stage every entry → commit (rename into place) →
//! receipt and Kubespray variables. A failure before the commit leaves every destination
//! as it was; a run killed at any point is finished by running it again.

pub mod apt_sources;
pub mod delta;
pub mod helm_repo;
pub mod kubespray;
pub mod oci_dir;
pub mod pypi;
pub mod receipt;
pub mod registry;
pub mod site_export;
pub mod web_root;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;

use crate::bundle::index::{EntryKind, IndexEntry};
use crate::bundle::media;
use crate::bundle::parity::read_with_parity;
use crate::bundle::reader::{EntryReader, EntrySink, ReadOptions, read_verified};
use crate::bundle::signing::PublicKey;
use crate::error::{Error, Result};
use crate::fetch::FetchOptions;
use crate::fs::RootDir;
use crate::progress::Reporter;
use crate::registry::RegistryClient;
use crate::registry::auth::Credentials;
use receipt::{Receipt, ReceiptFile};
use registry::{RegistryReport, RegistryTarget};
use web_root::{Layout, OCI_INDEX_PATH, Outcome, Staging, WebRootSink};

/// Where the Kubespray variables are written, relative to the web root (SPEC §6).
const VARS_PATH: &str = "kubespray-offline.yml";

pub struct InstallOptions {
    pub bundle: PathBuf,
    pub web_root: Option<PathBuf>,
    /// The URL the web root is served under (default `http://<hostname>/`).
    pub base_url: Option<String>,
    /// The site registry images are pushed into.
    pub registry: Option<RegistryOptions>,
    /// The registry charts are pushed into as OCI artifacts (`--chart-registry`).
    pub chart_registry: Option<RegistryOptions>,
    /// A plain OCI image layout to write the images into.
    pub oci_dir: Option<PathBuf>,
    /// `--wait`: read the volumes one at a time from the bundle's directory (a mount point
    /// whose medium is swapped), asking for each on a terminal.
    pub wait: bool,
}

/// `--registry HOST:PORT` and how to reach it.
pub struct RegistryOptions {
    pub host: String,
    pub keep_host: bool,
    pub plain_http: bool,
    pub credentials: Credentials,
    /// `--registry-ca` (as `ca`), timeout, retries and parallel uploads (`jobs`).
    pub net: FetchOptions,
}

/// What an install did, for people and for `--json`.
#[derive(Debug, Serialize)]
pub struct InstallReport {
    pub name: String,
    pub version: String,
    pub installed: usize,
    pub already_present: usize,
    /// Entries (and their bytes) an earlier install of this bundle verified and staged
    /// before it stopped early, taken from its staging instead of the bundle.
    pub reused_entries: usize,
    pub reused_bytes: u64,
    /// Entries (and their bytes) the reader jumped over through the seek table without
    /// decompressing them, because every destination already held them (reused, in place,
    /// or on the registry).
    pub jumped_entries: usize,
    pub jumped_bytes: u64,
    /// Entries (and their bytes) a delta left out, checked in place before anything moved.
    pub in_place_entries: usize,
    pub in_place_bytes: u64,
    pub bytes_written: u64,
    pub receipt: Option<PathBuf>,
    pub kubespray_vars: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart_registry: Option<RegistryReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oci_dir: Option<PathBuf>,
    /// Data volumes rebuilt from the parity volumes for this install.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rebuilt: Vec<PathBuf>,
}

/// The install targets pre-flight set up, each taking the entries of its kinds.
#[derive(Default)]
struct Targets {
    web: Option<WebRootSink>,
    oci_dir: Option<WebRootSink>,
    /// The bundle's `oci/index.json`, merged into the one in `--oci-dir`.
    oci_index: Option<Vec<u8>>,
    /// The descriptors of the `index.json` already in `--oci-dir`.
    oci_existing: Vec<serde_json::Value>,
    /// The bundle's locked manifest (for the apt `.sources` snippets).
    locked_manifest: Option<Vec<u8>>,
    registry: Option<RegistryTarget>,
    chart_registry: Option<RegistryTarget>,
    /// The charts this bundle carries, read from their verified bytes.
    charts: Vec<helm_repo::CarriedChart>,
    /// Entries (and bytes) the reader jumped over because every target held them.
    jumped: (usize, u64),
    /// Entries (and bytes) a delta left out, found in place by pre-flight.
    in_place: (usize, u64),
}

impl EntrySink for Targets {
    /// Held when every target that takes the entry holds it: the web root or OCI directory
    /// has it in place or staged by an earlier run, each registry has the blob. Entries
    /// kept in memory (the locked manifest, OCI index and manifests) are never held.
    fn holds(&self, entry: &IndexEntry) -> bool {
        if entry.kind == EntryKind::Manifest {
            return false;
        }
        if web_root::is_web_entry(entry) {
            return self.web.as_ref().is_some_and(|w| w.holds(entry));
        }
        if !entry.kind.is_oci() || (entry.path == OCI_INDEX_PATH && self.oci_dir.is_some()) {
            return false;
        }
        let mut registries = self.registries_for(entry).peekable();
        let wanted = self.oci_dir.is_some() || registries.peek().is_some();
        wanted
            && self.oci_dir.as_ref().is_none_or(|d| d.holds(entry))
            && registries.all(|r| r.holds(entry))
    }

    fn skipped(&mut self, entry: &IndexEntry) -> Result<()> {
        self.jumped.0 += 1;
        self.jumped.1 += entry.size;
        self.held_by_targets(entry, false)
    }

    fn expected(&mut self, entry: &IndexEntry) -> Result<()> {
        self.in_place.0 += 1;
        self.in_place.1 += entry.size;
        self.held_by_targets(entry, true)
    }

    fn accept(&mut self, entry: &IndexEntry, data: &mut EntryReader<'_>) -> Result<()> {
        if entry.kind == EntryKind::Manifest {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(data, &mut bytes).map_err(|e| data.read_error(e))?;
            self.locked_manifest = Some(bytes);
            return Ok(());
        }
        if web_root::is_web_entry(entry) {
            let Some(web) = &mut self.web else {
                return Ok(());
            };
            web.accept(entry, data)?;
            return self.carry_chart(entry);
        }
        if !entry.kind.is_oci() {
            return Ok(());
        }
        if entry.path == OCI_INDEX_PATH && self.oci_dir.is_some() {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(data, &mut bytes).map_err(|e| data.read_error(e))?;
            self.oci_index = Some(bytes);
            return Ok(());
        }
        let registries: Vec<&mut RegistryTarget> = [&mut self.registry, &mut self.chart_registry]
            .into_iter()
            .filter_map(|r| r.as_mut())
            .filter(|r| r.wants(entry))
            .collect();
        match (&mut self.oci_dir, registries.as_slice()) {
            (Some(dir), []) => dir.accept(entry, data),
            (Some(dir), _) => {
                dir.accept(entry, data)?;
                if Layout::OciDir.dest(entry).is_none() {
                    return Ok(());
                }
                // The registries read the verified copy the OCI directory just staged.
                for registry in registries {
                    let Some(mut file) = dir.reopen_last()? else {
                        return Ok(());
                    };
                    let mut again = EntryReader::new(&mut file, entry, entry.path.clone());
                    registry.accept(entry, &mut again)?;
                }
                Ok(())
            }
            (None, []) => Ok(()),
            (None, [_]) => {
                let mut registries = registries;
                registries[0].accept(entry, data)
            }
            (None, _) => {
                // Both registries want it (a blob an image and a chart share): spooled to
                // an unnamed temporary file once, verified, then read by each.
                let mut spool = tempfile::tempfile().map_err(|e| {
                    Error::io("cannot create a temporary file in", std::env::temp_dir(), e)
                })?;
                std::io::copy(data, &mut spool).map_err(|e| data.read_error(e))?;
                for registry in registries {
                    std::io::Seek::rewind(&mut spool)
                        .map_err(|e| Error::io("cannot read back", std::env::temp_dir(), e))?;
                    let mut again = EntryReader::new(&mut spool, entry, entry.path.clone());
                    registry.accept(entry, &mut again)?;
                }
                Ok(())
            }
        }
    }
}

impl Targets {
    /// Every target that takes `entry` records it as held: jumped over (`in_place` false)
    /// or left out of the delta (true; a registry mounts it where it is missing).
    fn held_by_targets(&mut self, entry: &IndexEntry, in_place: bool) -> Result<()> {
        if web_root::is_web_entry(entry) {
            if let Some(web) = &mut self.web {
                web.skipped(entry)?;
            }
            return self.carry_chart(entry);
        }
        if let Some(dir) = &mut self.oci_dir {
            dir.skipped(entry)?;
        }
        for registry in [&mut self.registry, &mut self.chart_registry]
            .into_iter()
            .flatten()
            .filter(|r| r.wants(entry))
        {
            match in_place {
                true => registry.expected(entry)?,
                false => registry.skipped(entry)?,
            }
        }
        Ok(())
    }

    /// The install stopped early: the staging sinks keep what verified.
    fn keep_verified(&mut self) {
        for sink in [&mut self.web, &mut self.oci_dir].into_iter().flatten() {
            sink.keep_verified();
        }
    }

    /// The registries that take `entry`.
    fn registries_for(&self, entry: &IndexEntry) -> impl Iterator<Item = &RegistryTarget> {
        [&self.registry, &self.chart_registry]
            .into_iter()
            .flatten()
            .filter(move |r| r.wants(entry))
    }

    /// Reads a chart's metadata from its held copy (staged earlier, or in place).
    fn carry_chart(&mut self, entry: &IndexEntry) -> Result<()> {
        if entry.kind == EntryKind::Chart
            && let Some(web) = &mut self.web
            && let Some(tgz) = web.reopen_last()?
        {
            self.charts.push(helm_repo::carried_chart(entry, tgz)?);
        }
        Ok(())
    }
}

/// Routes entries to the targets once pre-flight has set them up.
struct LateSink<'a>(&'a RefCell<Targets>);

impl EntrySink for LateSink<'_> {
    fn accept(&mut self, entry: &IndexEntry, data: &mut EntryReader<'_>) -> Result<()> {
        self.0.borrow_mut().accept(entry, data)
    }

    fn holds(&self, entry: &IndexEntry) -> bool {
        self.0.borrow().holds(entry)
    }

    fn skipped(&mut self, entry: &IndexEntry) -> Result<()> {
        self.0.borrow_mut().skipped(entry)
    }

    fn expected(&mut self, entry: &IndexEntry) -> Result<()> {
        self.0.borrow_mut().expected(entry)
    }
}

/// Opens the web root (or OCI directory) and takes an exclusive lock on the directory
/// itself (no file is created), so two installs never interleave and stale staging
/// directories can be removed safely.
fn open_and_lock(web_root: &std::path::Path, layout: Layout) -> Result<RootDir> {
    let root = web_root::open(web_root, layout)?;
    match root.try_lock() {
        Ok(true) => Ok(root),
        Ok(false) => Err(Error::Runtime(format!(
            "another install is running on {}",
            root.path().display()
        ))
        .with_hint("wait for it to finish")),
        Err(e) => Err(Error::Runtime(format!(
            "cannot lock the {} {} against other installs: {e}",
            root.role(),
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
    let source = media::open_bundle(&options.bundle, options.wait)?;
    let root = match &options.web_root {
        Some(path) => Some(open_and_lock(path, Layout::WebRoot)?),
        None => None,
    };
    let oci_root = match &options.oci_dir {
        Some(path)
            if root
                .as_ref()
                .is_some_and(|r| std::fs::canonicalize(path).is_ok_and(|p| p == r.path())) =>
        {
            return Err(Error::Usage(format!(
                "--oci-dir {} is the web root: give the OCI layout its own directory (it may be below the web root)",
                path.display()
            )));
        }
        Some(path) => {
            std::fs::create_dir_all(path)
                .map_err(|e| Error::io("cannot create the OCI directory", path.clone(), e))?;
            Some(open_and_lock(path, Layout::OciDir)?)
        }
        None => None,
    };
    // One verifying pass into fresh targets; with parity it may run a second time on
    // rebuilt volumes (the first attempt's targets, dropped, remove their staging).
    let ((targets, verified), rebuilt) = read_with_parity(&source, pubkey, reporter, |source| {
        let targets = RefCell::new(Targets::default());
        let bar = reporter.bytes_bar(0, "install");
        let verified = read_verified(
            source,
            ReadOptions {
                pubkey,
                progress: Some(&bar),
            },
            &mut |v| {
                bar.set_length(v.index.total_bytes());
                let mut t = targets.borrow_mut();
                // What a delta expects in place and the destinations do not hold.
                let mut missing: Vec<String> = Vec::new();
                // The receipts of the bundles installed before, read once for pre-flight.
                let receipts = root.as_ref().map(receipt::all_receipts).unwrap_or_default();
                let images = registry_images(v, options, oci_root.is_some())?;
                let mut web_entries: std::collections::BTreeMap<&str, usize> = Default::default();
                for e in v.index.entries.iter().filter(|e| web_root::is_web_entry(e)) {
                    let what = match e.kind {
                        EntryKind::Chart => "Helm chart",
                        EntryKind::Python => "Python package",
                        EntryKind::Deb | EntryKind::AptIndex => "apt repository file",
                        _ => "file",
                    };
                    *web_entries.entry(what).or_default() += 1;
                }
                match &root {
                    Some(root) => {
                        let receipt = receipt::receipt_rel_path(&v.index.name, &v.index.version);
                        // The apt `.sources` snippets, beside each carried repository.
                        let snippets: Vec<String> = v
                            .index
                            .artifacts
                            .iter()
                            .filter(|a| a.kind == EntryKind::AptIndex)
                            .map(|a| format!("{}.sources", a.dest))
                            .collect();
                        check_shared_apt_repos(root, &receipts, &v.index)?;
                        missing.extend(delta::missing_receipts(&receipts, &v.index));
                        let pypi_pages = pypi::generated_paths(&v.index)?;
                        let mut generated: Vec<&str> = vec![&receipt, VARS_PATH];
                        if v.index.entries.iter().any(|e| e.kind == EntryKind::Chart) {
                            generated.push(helm_repo::INDEX_PATH);
                        }
                        generated.extend(snippets.iter().map(String::as_str));
                        generated.extend(pypi_pages.iter().map(String::as_str));
                        let staging =
                            Staging::open(root, Layout::WebRoot, &v.index, &v.index_sha256)?;
                        let found = web_root::preflight(
                            root,
                            &v.index,
                            Layout::WebRoot,
                            &generated,
                            &staging,
                        )?;
                        missing.extend(
                            web_root::missing_in_place(&v.index, Layout::WebRoot, &found)
                                .map(|p| format!("{p} (not in the web root with its sha256)")),
                        );
                        if generated.contains(&helm_repo::INDEX_PATH) {
                            helm_repo::existing_index(root)?;
                        }
                        pypi::check_existing(root, &v.index)?;
                        t.web = Some(WebRootSink::new(
                            root,
                            Layout::WebRoot,
                            found.in_place,
                            &v.index,
                            staging,
                        )?);
                    }
                    None if !web_entries.is_empty() => {
                        let listed: Vec<String> = web_entries
                            .iter()
                            .map(|(what, n)| format!("{n} {what}{}", if *n == 1 { "" } else { "s" }))
                            .collect();
                        return Err(Error::Usage(format!(
                            "this bundle carries {} for the web root: pass --web-root DIR (e.g. /var/www/html); nothing was installed",
                            listed.join(", ")
                        )));
                    }
                    None => {}
                }
                if let Some(oci_root) = &oci_root {
                    let staging = Staging::open(oci_root, Layout::OciDir, &v.index, &v.index_sha256)?;
                    let found = web_root::preflight(
                        oci_root,
                        &v.index,
                        Layout::OciDir,
                        &["index.json"],
                        &staging,
                    )?;
                    missing.extend(
                        web_root::missing_in_place(&v.index, Layout::OciDir, &found).map(|p| {
                            format!("{p} (not in the OCI directory {})", oci_root.path().display())
                        }),
                    );
                    t.oci_existing = oci_dir::existing_index(oci_root)?;
                    t.oci_dir = Some(WebRootSink::new(
                        oci_root,
                        Layout::OciDir,
                        found.in_place,
                        &v.index,
                        staging,
                    )?);
                }
                // Repositories earlier installs pushed to each registry, from the receipts.
                let pushed_before = |host: &str| receipt::pushed_repositories(&receipts, host);
                if let (Some(images), Some(r)) = (images, &options.registry) {
                    let client = RegistryClient::new(&r.net, r.plain_http, r.credentials.clone())?;
                    t.registry = Some(RegistryTarget::preflight(
                        client,
                        &r.host,
                        &v.index,
                        images,
                        r.net.jobs,
                        &pushed_before(&r.host),
                    )?);
                }
                if let Some(r) = &options.chart_registry {
                    let charts = registry::plan_charts(&v.index)?;
                    if charts.is_empty() {
                        return Err(Error::Usage(
                            "--chart-registry: this bundle carries no charts; nothing was installed"
                                .into(),
                        ));
                    }
                    let client = RegistryClient::new(&r.net, r.plain_http, r.credentials.clone())?;
                    t.chart_registry = Some(RegistryTarget::preflight(
                        client,
                        &r.host,
                        &v.index,
                        charts,
                        r.net.jobs,
                        &pushed_before(&r.host),
                    )?);
                }
                for registry in [&t.registry, &t.chart_registry].into_iter().flatten() {
                    missing.extend(registry.missing_in_place(&v.index));
                }
                delta::refuse_if_missing(&v.index, missing)?;
                let t = &mut *t;
                for sink in [&mut t.web, &mut t.oci_dir].into_iter().flatten() {
                    sink.take_over();
                }
                Ok(())
            },
            &mut LateSink(&targets),
        )
        .map_err(|e| {
            if !e.is_interrupted() {
                return e;
            }
            targets.borrow_mut().keep_verified();
            e.with_hint(
                "nothing was installed; what verified so far is kept: run the same install again \
                 (with the missing volume in place) and it goes on from there",
            )
        })?;
        bar.finish_and_clear();
        Ok((targets.into_inner(), verified))
    })?;

    let Targets {
        web,
        oci_dir,
        oci_index,
        oci_existing,
        locked_manifest,
        registry,
        chart_registry,
        charts,
        jumped,
        in_place,
    } = targets;
    let index = &verified.index;
    let (reused_entries, reused_bytes) = [&web, &oci_dir]
        .into_iter()
        .flatten()
        .map(|sink| sink.reused())
        .fold((0, 0), |(n, b), (m, c)| (n + m, b + c));
    let mut report = InstallReport {
        name: index.name.clone(),
        version: index.version.clone(),
        installed: 0,
        already_present: 0,
        reused_entries,
        reused_bytes,
        jumped_entries: jumped.0,
        jumped_bytes: jumped.1,
        in_place_entries: in_place.0,
        in_place_bytes: in_place.1,
        bytes_written: 0,
        receipt: None,
        kubespray_vars: None,
        registry: None,
        chart_registry: None,
        oci_dir: None,
        rebuilt,
    };
    // Tags first (the registries can put them back), then the directories.
    let mut registries = Registries {
        images: registry,
        charts: chart_registry,
    };
    if let (Some(target), Some(r)) = (registries.images.as_mut(), &options.registry) {
        report.registry = Some(target.push_tags(r.plain_http, reporter)?);
    }
    if let (Some(target), Some(r)) = (registries.charts.as_mut(), &options.chart_registry) {
        match target.push_tags(r.plain_http, reporter) {
            Ok(pushed) => report.chart_registry = Some(pushed),
            Err(e) => return Err(registries.undo_tags(e)),
        }
    }
    let undo_tags = |registries: &mut Registries, e: Error| registries.undo_tags(e);
    if let (Some(mut sink), Some(oci_root)) = (oci_dir, &oci_root) {
        let merged = oci_dir::merged_index(oci_existing, oci_index.as_deref().unwrap_or(b"{}"))?;
        let staged = sink.stage_generated("index.json", &merged);
        if let Err(e) = staged.and_then(|()| sink.commit()) {
            return Err(undo_tags(&mut registries, e));
        }
        report.oci_dir = Some(oci_root.path().to_path_buf());
    }
    let (Some(root), Some(sink)) = (root, web) else {
        return Ok(report);
    };
    let carries_debs = verified
        .index
        .artifacts
        .iter()
        .any(|a| a.kind == EntryKind::AptIndex);
    let apt = match &locked_manifest {
        Some(bytes) if carries_debs => apt_sources::snippets(bytes, &web_base_url(options))?,
        _ => apt_sources::AptOnSite {
            snippets: Vec::new(),
            repos: Vec::new(),
        },
    };
    let site = SiteUpdates {
        apt,
        charts,
        locked_manifest,
    };
    match commit_web_root(options, &root, sink, &verified, site, &mut report, reporter) {
        Ok(()) => Ok(report),
        Err(e) => Err(undo_tags(&mut registries, e)),
    }
}

/// The registry targets of an install, undone together when a later step fails.
struct Registries {
    images: Option<RegistryTarget>,
    charts: Option<RegistryTarget>,
}

impl Registries {
    /// Puts back every tag this install moved (charts first, the reverse of the pushes).
    fn undo_tags(&mut self, e: Error) -> Error {
        let e = match &mut self.charts {
            Some(target) => target.undo_tags(e),
            None => e,
        };
        match &mut self.images {
            Some(target) => target.undo_tags(e),
            None => e,
        }
    }
}

/// Pre-flight: a carried apt repository may replace one another bundle (by name) installed
/// only with the same signed Release; otherwise its indexes would hide that bundle's
/// packages from apt (exit 1, naming both). A newer version of the same bundle may.
fn check_shared_apt_repos(
    root: &RootDir,
    receipts: &[Receipt],
    index: &crate::bundle::index::Index,
) -> Result<()> {
    for artifact in index
        .artifacts
        .iter()
        .filter(|a| a.kind == EntryKind::AptIndex)
    {
        let Some(name) = artifact.dest.strip_prefix("debs/") else {
            continue;
        };
        for other in receipts.iter().filter(|r| r.name != index.name) {
            if let Some(repo) = other.apt_repos.iter().find(|r| r.name == name)
                && repo.release_sha256.is_some()
                && repo.release_sha256 != artifact.sha256
            {
                return Err(Error::Runtime(format!(
                    "{}: debs/{name} holds the repository `{name}` of bundle {} {}; this bundle carries another Release of it, which would hide that bundle's packages from apt; nothing was installed",
                    root.path().display(),
                    other.name,
                    other.version
                ))
                .with_hint("give the repository another name in this bundle's manifest (debs[].name), or carry the same Release"));
            }
        }
    }
    Ok(())
}

/// The images the registry target pushes, named and checked for clashes; `None` when
/// the bundle has none. Without a registry (or `--oci-dir`) a bundle with images is
/// refused whole rather than installed without them.
fn registry_images(
    v: &crate::bundle::reader::VerifiedIndex,
    options: &InstallOptions,
    has_oci_dir: bool,
) -> Result<Option<Vec<registry::PlannedImage>>> {
    let count = v
        .index
        .artifacts
        .iter()
        .filter(|a| a.kind == EntryKind::Image)
        .count();
    if count == 0 {
        return Ok(None);
    }
    match &options.registry {
        Some(r) => Ok(Some(registry::plan(&v.index, r.keep_host)?)),
        None if has_oci_dir => Ok(None),
        None => Err(Error::Usage(format!(
            "this bundle carries {count} image(s): pass --registry HOST:PORT (the site registry) or --oci-dir DIR; nothing was installed"
        ))),
    }
}

/// What the web root's commit regenerates beside the content: apt `.sources` snippets and
/// the Helm repository's index.
struct SiteUpdates {
    apt: apt_sources::AptOnSite,
    charts: Vec<helm_repo::CarriedChart>,
    /// The bundle's locked manifest (the PEP 503 pages' `requires-python` and metadata).
    locked_manifest: Option<Vec<u8>>,
}

/// Stages the receipt and the Kubespray variables beside the content and commits the web
/// root.
fn commit_web_root(
    options: &InstallOptions,
    root: &RootDir,
    mut sink: WebRootSink,
    verified: &crate::bundle::reader::VerifiedIndex,
    site_updates: SiteUpdates,
    report: &mut InstallReport,
    reporter: &Reporter,
) -> Result<()> {
    let SiteUpdates {
        apt,
        charts,
        locked_manifest,
    } = site_updates;
    let index = &verified.index;
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
        registry: report.registry.clone(),
        chart_registry: report.chart_registry.clone(),
        apt_repos: apt.repos.clone(),
    };
    let receipt_rel = receipt::receipt_rel_path(&index.name, &index.version);
    let mut receipts: Vec<Receipt> = receipt::all_receipts(root)
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
    // The registry of this install, else the one the latest install pushed to.
    let site_registry = report
        .registry
        .as_ref()
        .map(|r| (r.host.clone(), r.url.clone()))
        .or_else(|| {
            receipts
                .iter()
                .filter_map(|r| Some((&r.installed_at, r.registry.as_ref()?)))
                .max_by(|a, b| a.0.cmp(b.0))
                .map(|(_, r)| (r.host.clone(), r.url.clone()))
        });
    // The chart registry of this install, else the one the latest install pushed to.
    let chart_registry_host = receipts
        .iter()
        .filter_map(|r| Some((&r.installed_at, r.chart_registry.as_ref()?)))
        .max_by(|a, b| a.0.cmp(b.0))
        .map(|(_, r)| r.host.clone());
    let bundles: Vec<String> = receipts
        .iter()
        .map(|r| format!("{} {}", r.name, r.version))
        .collect();
    let base_url = web_base_url(options);
    let mut apt_repos: Vec<kubespray::AptRepoOnSite> = receipts
        .iter()
        .flat_map(|r| r.apt_repos.iter().cloned())
        .collect();
    apt_repos.sort();
    apt_repos.dedup_by(|a, b| a.name == b.name);
    let site = kubespray::SiteContent {
        hosts,
        registry: site_registry
            .as_ref()
            .map(|(host, url)| kubespray::SiteRegistry { host, url }),
        apt: apt_repos,
        helm_repo: receipts
            .iter()
            .flat_map(|r| r.files.iter())
            .any(|f| f.path == helm_repo::INDEX_PATH || f.path.starts_with("charts/")),
        chart_registry: chart_registry_host.as_deref(),
        pypi: receipts
            .iter()
            .flat_map(|r| r.files.iter())
            .any(|f| f.path.starts_with("python/"))
            .then(|| pypi::index_url(&base_url)),
    };
    let vars = kubespray::render(
        &base_url,
        &site,
        &format!("bundles installed: {}", bundles.join(", ")),
    )?;
    for (path, bytes) in &apt.snippets {
        sink.stage_generated(path, bytes)?;
    }
    if let Some(bytes) = helm_repo::index_update(root, &charts, &index.created)? {
        sink.stage_generated(helm_repo::INDEX_PATH, &bytes)?;
    }
    // The PEP 503 pages, merged with the web root's, land with the content.
    for (path, bytes) in pypi::pages(root, index, locked_manifest.as_deref(), &base_url)? {
        sink.stage_generated(&path, &bytes)?;
    }
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
    Ok(())
}

/// The URL the web root is served under: `--base-url`, else `http://<hostname>/`.
fn web_base_url(options: &InstallOptions) -> String {
    options.base_url.clone().unwrap_or_else(default_base_url)
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
