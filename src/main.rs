//! The `bundle` command line: parses arguments, picks the output mode, runs one library
//! operation and maps its error to SPEC §5's exit codes. Nothing else lives here.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use airgap_bundle::bundle::media::open_bundle;
use airgap_bundle::bundle::parity::read_with_parity;
use airgap_bundle::bundle::reader::{DiscardSink, ReadOptions, read_verified};
use airgap_bundle::bundle::signing::{PublicKey, SecretKey};
use airgap_bundle::create::{CreateOptions, create};
use airgap_bundle::fetch::{Cache, FetchOptions, Fetcher};
use airgap_bundle::fs::write_atomically;
use airgap_bundle::inspect::{human_bytes, inspect};
use airgap_bundle::install::site_export::export_site;
use airgap_bundle::install::{InstallOptions, RegistryOptions, install};
use airgap_bundle::progress::Reporter;
use airgap_bundle::registry::RegistryClient;
use airgap_bundle::registry::auth::{Credentials, password_from_env};
use airgap_bundle::{Error, Result, lock, manifest};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bundle",
    version,
    about = "Carry a Kubernetes site's artifacts across an air gap in one signed bundle"
)]
struct Cli {
    /// Print nothing but errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Print a line per artifact.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Print the command's report as JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a minisign-format Ed25519 key pair: PREFIX.key (secret) and PREFIX.pub.
    Keygen {
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
        /// Store the secret key unencrypted (otherwise BUNDLE_KEY_PASSWORD or a prompt).
        #[arg(long)]
        no_password: bool,
        /// Overwrite existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Resolve a manifest into a locked one (every artifact pinned by sha256). Online.
    Lock {
        manifest: PathBuf,
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Download, verify, pack and sign a locked manifest into one bundle. Online.
    Create {
        locked: PathBuf,
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
        /// Secret key (minisign format); BUNDLE_KEY_PASSWORD unlocks an encrypted one.
        #[arg(long)]
        key: PathBuf,
        /// Split into volumes of at most SIZE bytes (K, M, G, T: powers of 1024; `4G`
        /// fits FAT32), with a signed volume list for checking each stick on its own.
        #[arg(long, value_name = "SIZE")]
        split_size: Option<String>,
        /// Also write N Reed–Solomon parity volumes (`.p00`, …, each at most SIZE bytes):
        /// `verify` and `install` rebuild up to N missing or damaged volumes from them.
        #[arg(long, value_name = "N", requires = "split_size", value_parser = clap::value_parser!(u16).range(1..=255))]
        parity: Option<u16>,
        /// Also write this binary beside the bundle as `bundle`, with its own detached
        /// signature `bundle.minisig`, for the offline side to check with stock minisign.
        #[arg(long)]
        include_tool: bool,
        /// Compression threads (default: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Make a delta: leave out every file, blob, deb, chart and wheel that OLD holds
        /// with the same sha256. OLD is a site export (`bundle receipt export`), an earlier
        /// bundle, or its index.json.
        #[arg(long, value_name = "OLD")]
        base: Option<PathBuf>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// What an installed site holds (air-gapped side).
    Receipt {
        #[command(subcommand)]
        command: ReceiptCommand,
    },
    /// Check a bundle's signature and every byte. Offline; writes nothing.
    Verify {
        bundle: PathBuf,
        #[arg(long)]
        pubkey: PathBuf,
        #[command(flatten)]
        media: WaitArg,
    },
    /// Show what a bundle holds and who signed it.
    Inspect {
        bundle: PathBuf,
        #[command(flatten)]
        media: WaitArg,
    },
    /// Verify a bundle and install it: files into the web root, images into the site
    /// registry (air-gapped side).
    Install {
        bundle: PathBuf,
        #[arg(long)]
        pubkey: PathBuf,
        /// The Apache document root (Kubespray's files_repo lives under files/).
        #[arg(long)]
        web_root: Option<PathBuf>,
        /// URL the web root is served under, used in kubespray-offline.yml.
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
        /// The site registry to push the images into (Kubespray's registry_host).
        #[arg(long, value_name = "HOST:PORT")]
        registry: Option<String>,
        /// Push the bundle's Helm charts as OCI artifacts into this registry
        /// (`helm pull oci://HOST:PORT/charts/NAME`); the registry flags apply to it too.
        #[arg(long, value_name = "HOST:PORT")]
        chart_registry: Option<String>,
        /// Keep the upstream host as the first path segment of image names.
        #[arg(long)]
        keep_host: bool,
        /// Also (or instead) write the images as a plain OCI image layout into DIR.
        #[arg(long, value_name = "DIR")]
        oci_dir: Option<PathBuf>,
        #[command(flatten)]
        registry_access: RegistryAccessArgs,
        #[command(flatten)]
        media: WaitArg,
    },
}

#[derive(Subcommand)]
enum ReceiptCommand {
    /// Write what the site holds (installed bundles, every carried file's sha256, the
    /// registry blobs still there) as a small JSON document, for `create --base` on the
    /// connected side.
    Export {
        /// The web root the bundles were installed into.
        #[arg(long)]
        web_root: PathBuf,
        /// A site registry the bundles pushed images into (repeatable); its blobs and
        /// manifests are checked with HEAD.
        #[arg(long, value_name = "HOST:PORT")]
        registry: Vec<String>,
        #[command(flatten)]
        registry_access: RegistryAccessArgs,
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
    },
}

/// How to reach a site registry (install and receipt export).
#[derive(Args)]
struct RegistryAccessArgs {
    /// Registry login; the password comes from BUNDLE_REGISTRY_PASSWORD (otherwise
    /// the docker/podman auth file is used).
    #[arg(long, value_name = "USER")]
    registry_user: Option<String>,
    /// CA certificate(s) (PEM) the registry's TLS certificate is checked against.
    #[arg(long, value_name = "PEM")]
    registry_ca: Option<PathBuf>,
    /// Speak plain HTTP to the registry (for a loopback registry).
    #[arg(long)]
    plain_http: bool,
    /// Parallel requests.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    jobs: u64,
    /// Retries per registry request after the first attempt.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Seconds without a byte from the registry before a request counts as failed.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86400))]
    timeout: u64,
}

impl RegistryAccessArgs {
    /// The options for reaching registry `host` (`keep_host` only matters to install).
    fn options(&self, host: &str, keep_host: bool) -> Result<RegistryOptions> {
        let host = registry_host(host)?;
        let mut credentials = Credentials::from_auth_files()?;
        if let Some(user) = &self.registry_user {
            credentials = credentials.with_login(&host, password_from_env(user)?);
        }
        Ok(RegistryOptions {
            host,
            keep_host,
            plain_http: self.plain_http,
            credentials,
            net: FetchOptions {
                cache_dir: PathBuf::new(),
                jobs: self.jobs as usize,
                ca: self.registry_ca.clone(),
                retries: self.retries,
                timeout: std::time::Duration::from_secs(self.timeout),
            },
        })
    }

    /// Registry flags without a registry are a usage error (`needs` names the flags that
    /// give one).
    fn check_used(&self, has_registry: bool, needs: &str) -> Result<()> {
        for (given, flag) in [
            (self.registry_user.is_some(), "--registry-user"),
            (self.registry_ca.is_some(), "--registry-ca"),
        ] {
            if given && !has_registry {
                return Err(Error::Usage(format!("{flag} needs {needs}")));
            }
        }
        Ok(())
    }
}

#[derive(Args)]
struct WaitArg {
    /// Read the volumes one at a time from the bundle's directory, a mount point whose
    /// medium is swapped: on a terminal, ask for each medium in turn. The signed volume
    /// list (NAME.volumes + .minisig) must be in that directory at the start.
    #[arg(long)]
    wait: bool,
}

#[derive(Args)]
struct NetArgs {
    /// Parallel downloads.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Download cache (default ~/.cache/airgap-bundle).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Extra CA certificates (PEM) to trust besides the system roots.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Speak plain HTTP to registries (for a loopback registry).
    #[arg(long)]
    plain_http: bool,
    /// Retries per download after the first attempt.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Seconds without a byte from a server before the attempt counts as failed (retried).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86400))]
    timeout: u64,
}

impl NetArgs {
    fn options(&self) -> FetchOptions {
        FetchOptions {
            cache_dir: self.cache.clone().unwrap_or_else(Cache::default_dir),
            jobs: self.jobs,
            ca: self.ca.clone(),
            retries: self.retries,
            timeout: std::time::Duration::from_secs(self.timeout),
        }
    }
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "error: internal error: {info}\nhint: this is a bug in airgap-bundle; please report it"
        );
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let reporter = Reporter::new(cli.quiet || cli.json, cli.verbose);
    // A verification failure of a bundle (not of an upstream download) means "do not
    // install it".
    let reads_a_bundle = matches!(
        cli.command,
        Command::Verify { .. } | Command::Install { .. } | Command::Inspect { .. }
    );
    match run(cli.command, cli.json, &reporter) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            match e.hint() {
                Some(hint) => eprintln!("hint: {hint}"),
                None if e.exit_code() == 3 && reads_a_bundle => eprintln!(
                    "hint: do not install this bundle: get a fresh copy from its source and check it \
                     with `minisign -Vm BUNDLE -p PUBKEY` (the publisher's key)"
                ),
                None => {}
            }
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Writes a report to stdout; a closed pipe (`bundle inspect x | head`) is not an error.
fn print_out(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::Runtime(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// Streams a report as JSON to stdout (never held whole in memory).
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = serde_json::to_writer_pretty(&mut out, value)
        .map_err(std::io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::Runtime(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

fn run(command: Command, json: bool, reporter: &Reporter) -> Result<()> {
    match command {
        Command::Keygen {
            out,
            no_password,
            force,
        } => keygen(&out, no_password, force, reporter),
        Command::Lock {
            manifest,
            output,
            net,
        } => {
            let loaded = manifest::load(&manifest)?;
            let fetcher = Fetcher::new(&net.options())?;
            // Auth files are read only when there is a registry to talk to.
            let credentials = if loaded.manifest.images.is_empty() {
                Credentials::default()
            } else {
                Credentials::from_auth_files()?
            };
            let registry = RegistryClient::new(&net.options(), net.plain_http, credentials)?;
            let locked = lock::lock_manifest(&loaded, &fetcher, &registry, reporter)?;
            write_atomically(&output, locked.to_yaml()?.as_bytes(), 0o644)?;
            reporter.info(format!(
                "locked {} files, {} images, {} debs and {} charts into {}",
                locked.files.len(),
                locked.images.len(),
                locked.debs.iter().map(|r| r.packages.len()).sum::<usize>(),
                locked.charts.len(),
                output.display()
            ));
            Ok(())
        }
        Command::Create {
            locked,
            output,
            key,
            split_size,
            parity,
            include_tool,
            threads,
            base,
            net,
        } => {
            let split = split_size
                .as_deref()
                .map(airgap_bundle::bundle::split::parse_size)
                .transpose()
                .map_err(|e| Error::Usage(format!("--split-size {e}")))?
                .map(|size| {
                    airgap_bundle::bundle::split::Split::new(size, parity.map_or(0, usize::from))
                })
                .transpose()
                .map_err(Error::Usage)?;
            let secret = SecretKey::load(&key, key_password)?;
            let options = CreateOptions {
                locked,
                out: output,
                fetch: net.options(),
                threads,
                plain_http: net.plain_http,
                split,
                include_tool,
                base,
            };
            let written = create(&options, &secret, reporter)?;
            let (in_place_entries, in_place_bytes) = written.index.in_place();
            if json {
                print_json(&serde_json::json!({
                    "in_place_entries": in_place_entries,
                    "in_place_bytes": in_place_bytes,
                    "bundle": written.path,
                    "signature": written.signature_path,
                    "bytes": written.bytes,
                    "entries": written.index.entries.len(),
                    "content_bytes": written.index.total_bytes(),
                    "frames": written.frames.len(),
                    "volumes": written.volumes.iter().map(|(p, n)| serde_json::json!({"path": p, "bytes": n})).collect::<Vec<_>>(),
                    "parity_volumes": written.parity_volumes.iter().map(|(p, n)| serde_json::json!({"path": p, "bytes": n})).collect::<Vec<_>>(),
                    "volume_list": written.volume_list,
                    "tool": written.tool.as_ref().map(|(t, _)| t),
                    "tool_signature": written.tool.as_ref().map(|(_, s)| s),
                }))?;
            }
            match &written.volume_list {
                None => reporter.info(format!(
                    "wrote {} ({}, {} entries, {} frames) and {}",
                    written.path.display(),
                    human_bytes(written.bytes),
                    written.index.entries.len(),
                    written.frames.len(),
                    written.signature_path.display()
                )),
                Some(list) => {
                    reporter.info(format!(
                        "wrote {} volumes {}.000 … .{:03} ({}, {} entries, {} frames), {} (the whole) and {} (+ .minisig)",
                        written.volumes.len(),
                        written.path.display(),
                        written.volumes.len().saturating_sub(1),
                        human_bytes(written.bytes),
                        written.index.entries.len(),
                        written.frames.len(),
                        written.signature_path.display(),
                        list.display()
                    ));
                    if let (Some((first, _)), Some((last, _))) = (
                        written.parity_volumes.first(),
                        written.parity_volumes.last(),
                    ) {
                        reporter.info(format!(
                            "wrote {} parity volume{} {} … {}: verify and install rebuild up to {} missing or damaged volumes from them",
                            written.parity_volumes.len(),
                            if written.parity_volumes.len() == 1 { "" } else { "s" },
                            first.display(),
                            last.display(),
                            written.parity_volumes.len()
                        ));
                    }
                    reporter.info(format!(
                        "check each stick with: minisign -Vm {} -p site.pub && sha256sum -c --ignore-missing {}",
                        list.display(),
                        list.display()
                    ));
                }
            }
            if written.index.base.is_some() {
                reporter.info(format!(
                    "delta: {in_place_entries} entries ({}) the base holds were left out; the install checks they are in place",
                    human_bytes(in_place_bytes)
                ));
            }
            if let Some((tool, sig)) = &written.tool {
                reporter.info(format!(
                    "wrote {} and {}: check it on the offline side with `minisign -Vm {} -p site.pub`",
                    tool.display(),
                    sig.display(),
                    tool.display()
                ));
            }
            Ok(())
        }
        Command::Verify {
            bundle,
            pubkey,
            media,
        } => {
            let key = PublicKey::load(&pubkey)?;
            let source = open_bundle(&bundle, media.wait)?;
            let (verified, rebuilt) = read_with_parity(&source, &key, reporter, |source| {
                let bar = reporter.bytes_bar(0, "verify");
                let verified = read_verified(
                    source,
                    ReadOptions {
                        pubkey: &key,
                        progress: Some(&bar),
                    },
                    &mut |v| {
                        bar.set_length(v.index.total_bytes());
                        Ok(())
                    },
                    &mut DiscardSink,
                )?;
                bar.finish_and_clear();
                Ok(verified)
            })?;
            let index = &verified.index;
            let (in_place_entries, in_place_bytes) = index.in_place();
            if json {
                print_json(&serde_json::json!({
                    "verified": true,
                    "name": index.name,
                    "version": index.version,
                    "key_id": verified.signature.key_id.to_string(),
                    "index_sha256": verified.index_sha256,
                    "entries": index.entries.len(),
                    "bytes": index.total_bytes(),
                    "in_place_entries": in_place_entries,
                    "in_place_bytes": in_place_bytes,
                    "rebuilt": rebuilt,
                }))?;
            }
            let carried = match index.base {
                None => format!(
                    "all {} entries ({})",
                    index.entries.len(),
                    human_bytes(index.total_bytes())
                ),
                Some(_) => format!(
                    "all {} carried entries ({}) of this delta ({} more, {}, are expected in place at the site)",
                    index.entries.len() - in_place_entries,
                    human_bytes(index.total_bytes() - in_place_bytes),
                    in_place_entries,
                    human_bytes(in_place_bytes)
                ),
            };
            reporter.info(format!(
                "OK: {} {} — signature by key {} and {carried} verified{}",
                index.name,
                index.version,
                verified.signature.key_id,
                match rebuilt.len() {
                    0 => String::new(),
                    1 => " (1 volume rebuilt from parity)".into(),
                    n => format!(" ({n} volumes rebuilt from parity)"),
                }
            ));
            Ok(())
        }
        Command::Install {
            bundle,
            pubkey,
            web_root,
            base_url,
            registry,
            chart_registry,
            keep_host,
            oci_dir,
            registry_access,
            media,
        } => {
            let key = PublicKey::load(&pubkey)?;
            registry_access.check_used(
                registry.is_some() || chart_registry.is_some(),
                "--registry or --chart-registry",
            )?;
            let registry = registry
                .as_deref()
                .map(|h| registry_access.options(h, keep_host))
                .transpose()?;
            let chart_registry = chart_registry
                .as_deref()
                .map(|h| registry_access.options(h, keep_host))
                .transpose()?;
            let options = InstallOptions {
                bundle,
                web_root,
                base_url,
                registry,
                chart_registry,
                oci_dir,
                wait: media.wait,
            };
            let report = install(&options, &key, reporter)?;
            if json {
                print_json(&report)?;
            }
            if report.receipt.is_some() {
                reporter.info(format!(
                    "installed {} {}: {} files written ({}), {} already present",
                    report.name,
                    report.version,
                    report.installed,
                    human_bytes(report.bytes_written),
                    report.already_present
                ));
            } else {
                reporter.info(format!("installed {} {}", report.name, report.version));
            }
            if report.in_place_entries > 0 {
                reporter.info(format!(
                    "delta: {} entries ({}) it left out were found in place and kept",
                    report.in_place_entries,
                    human_bytes(report.in_place_bytes)
                ));
            }
            if report.reused_entries > 0 {
                reporter.info(format!(
                    "resumed: {} entries ({}) verified and staged by an earlier install that stopped early were reused",
                    report.reused_entries,
                    human_bytes(report.reused_bytes)
                ));
            }
            if report.jumped_entries > 0 {
                reporter.info(format!(
                    "{} entries ({}) already held by every destination were jumped over without decompressing",
                    report.jumped_entries,
                    human_bytes(report.jumped_bytes)
                ));
            }
            for (r, what) in [
                (&report.registry, "images"),
                (&report.chart_registry, "charts"),
            ] {
                let Some(r) = r else { continue };
                let tagged = r.images.iter().filter(|i| i.status == "pushed").count();
                reporter.info(format!(
                    "registry {}: {} {what} ({} tagged now, {} already there); {} blobs pushed ({}), {} mounted, {} already there",
                    r.host,
                    r.images.len(),
                    tagged,
                    r.images.len() - tagged,
                    r.blobs_pushed,
                    human_bytes(r.bytes_pushed),
                    r.blobs_mounted,
                    r.blobs_present
                ));
                if r.blobs_pushed == 0 && r.blobs_mounted == 0 && r.manifests_pushed == 0 {
                    reporter.info(format!(
                        "registry {}: every one of the {what} was already there; nothing was pushed",
                        r.host
                    ));
                }
            }
            if let Some(dir) = &report.oci_dir {
                reporter.info(format!("OCI layout: {}", dir.display()));
            }
            if let Some(vars) = &report.kubespray_vars {
                reporter.info(format!("Kubespray variables: {}", vars.display()));
            }
            Ok(())
        }
        Command::Receipt {
            command:
                ReceiptCommand::Export {
                    web_root,
                    registry,
                    registry_access,
                    output,
                },
        } => {
            registry_access.check_used(!registry.is_empty(), "--registry")?;
            let registries = registry
                .iter()
                .map(|h| registry_access.options(h, false))
                .collect::<Result<Vec<_>>>()?;
            let exported = export_site(&web_root, &registries, reporter)?;
            write_atomically(&output, &exported.to_json(), 0o644)?;
            if json {
                print_json(&exported)?;
            }
            reporter.info(format!(
                "wrote {}: {} bundle(s), {} files, {} registry blob(s)",
                output.display(),
                exported.bundles.len(),
                exported.files.len(),
                exported
                    .registries
                    .iter()
                    .map(|r| r.blobs.len())
                    .sum::<usize>()
            ));
            Ok(())
        }
        Command::Inspect { bundle, media } => {
            let report = inspect(&open_bundle(&bundle, media.wait)?)?;
            if json {
                print_json(&report)
            } else {
                print_out(&report.to_text())
            }
        }
    }
}

/// `--registry HOST[:PORT]`: a host and optional port, nothing else (no scheme, no path).
fn registry_host(given: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::Usage(format!("--registry {given}: {why}"))
            .with_hint("give the registry as HOST:PORT, e.g. registry.local:5000")
    };
    if given.contains("://") {
        return Err(bad(
            "give HOST:PORT without a scheme (use --plain-http for http)",
        ));
    }
    let parsed = url::Url::parse(&format!("https://{given}/")).map_err(|e| bad(&e.to_string()))?;
    let host = parsed.host_str().ok_or_else(|| bad("no host"))?;
    let expected = match parsed.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    // (`Url` drops an explicit :443, the https default.)
    let given = given.to_ascii_lowercase();
    if expected != given && format!("{expected}:443") != given {
        return Err(bad("not a HOST:PORT"));
    }
    Ok(given)
}

/// The secret key's password: `BUNDLE_KEY_PASSWORD`, else a prompt on a terminal.
fn key_password() -> Result<String> {
    if let Ok(pw) = std::env::var("BUNDLE_KEY_PASSWORD") {
        return Ok(pw);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "the secret key is encrypted: set BUNDLE_KEY_PASSWORD (no terminal to prompt on)"
                .into(),
        ));
    }
    rpassword::prompt_password("Password for the secret key: ")
        .map_err(|e| Error::Runtime(format!("cannot read the password: {e}")))
}

fn keygen(prefix: &Path, no_password: bool, force: bool, reporter: &Reporter) -> Result<()> {
    let key_path = PathBuf::from(format!("{}.key", prefix.display()));
    let pub_path = PathBuf::from(format!("{}.pub", prefix.display()));
    for p in [&key_path, &pub_path] {
        if p.exists() && !force {
            return Err(Error::Usage(format!(
                "{} already exists; pass --force to overwrite",
                p.display()
            )));
        }
    }
    let password = if no_password {
        None
    } else if let Ok(pw) = std::env::var("BUNDLE_KEY_PASSWORD") {
        Some(pw)
    } else if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password("Password for the new secret key: ")
            .map_err(|e| Error::Runtime(format!("cannot read the password: {e}")))?;
        let b = rpassword::prompt_password("Password (again): ")
            .map_err(|e| Error::Runtime(format!("cannot read the password: {e}")))?;
        if a != b {
            return Err(Error::Usage("the passwords differ".into()));
        }
        Some(a)
    } else {
        return Err(Error::Usage(
            "no password: set BUNDLE_KEY_PASSWORD, or pass --no-password for an unencrypted key"
                .into(),
        ));
    };
    let secret = SecretKey::generate()?;
    let text = secret.to_file_string(password.as_deref())?;
    write_atomically(&key_path, text.as_bytes(), 0o600)?;
    write_atomically(
        &pub_path,
        secret.public_key().to_file_string().as_bytes(),
        0o644,
    )?;
    reporter.info(format!(
        "key {} written: {} (secret, keep it off the air-gapped side) and {} (public)",
        secret.key_id,
        key_path.display(),
        pub_path.display()
    ));
    Ok(())
}
