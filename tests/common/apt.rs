//! A real, signed upstream apt repository for the `debs:` tests (issue 15), and an isolated
//! stock `apt-get` that proves what such a repository (or an installed one) serves.
//!
//! [`AptRepo::build`] takes real `.deb`s from the machine's own apt sources (downloaded once
//! per target dir, see [`cached_debs`]), indexes them with `apt-ftparchive`, signs the
//! `Release` with a throwaway gpg key and serves the tree with a private [`Apache`] on
//! 127.0.0.1. No mirror address is written anywhere: `apt-get download` reads it from the
//! machine's configuration at run time.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Apache, Workspace, output_ok, require_tool, set_mode, sha256_file, show_output};

/// The suite (and codename) of a `dists/` repository.
pub const SUITE: &str = "stable";
/// The one component of a `dists/` repository.
pub const COMPONENT: &str = "main";
/// The packages an [`AptRepoOptions::default`] repository carries: `jq` with its two
/// libraries (so a resolver has a closure to find, and `libc6` stays external), and `hello`.
pub const DEFAULT_PACKAGES: &[&str] = &["hello", "jq", "libjq1", "libonig5"];

/// One `.deb` of an [`AptRepo`], as its `Packages` index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebInfo {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Path from the repository root, exactly as in `Packages`: `pool/main/j/jq/jq_….deb`,
    /// or `./jq_….deb` in a flat repository.
    pub filename: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// Which kind of key signs the repository. Both are what real repositories use (Debian's
/// and Docker's keys are RSA) and both verify with rPGP and with apt's `gpgv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgo {
    /// Fast to generate (well under 0.1 s).
    #[default]
    Ed25519,
    /// About 0.4 s to generate (two keys a build).
    Rsa3072,
}

impl KeyAlgo {
    fn gpg_name(self) -> &'static str {
        match self {
            KeyAlgo::Ed25519 => "ed25519",
            KeyAlgo::Rsa3072 => "rsa3072",
        }
    }
}

/// How to build an [`AptRepo`].
#[derive(Debug, Clone)]
pub struct AptRepoOptions {
    /// A flat repository (`deb [signed-by=…] URL ./`): `Packages*`, `Release`, `InRelease`,
    /// `Release.gpg` and the debs all in the repository root. Otherwise the usual
    /// `dists/stable/main/binary-<arch>/` and `pool/main/<prefix>/<source>/` layout.
    pub flat: bool,
    /// Package names (host architecture, no `:arch` qualifier) fetched with `apt-get
    /// download`. Default: [`DEFAULT_PACKAGES`].
    pub packages: Vec<&'static str>,
    /// `Valid-Until` a day in the past (and `Date` three days back), so that the signed
    /// `Release` has expired. Otherwise `Date` is now and `Valid-Until` a week ahead.
    pub valid_until_past: bool,
    /// Sign `InRelease` and `Release.gpg` with an unrelated key, while
    /// [`AptRepo::key_armored`] and [`AptRepo::key_binary`] still give the repository key:
    /// the signatures are well-formed but do not match the key a client is told to trust.
    pub sign_with_other_key: bool,
    /// The kind of both keys (the repository key and the other one).
    pub key_algo: KeyAlgo,
    /// Keys made in the past (gpg's faked system time) valid for one year, and the
    /// Release signed while they were valid: the signatures are good, the key has expired
    /// since (apt says EXPKEYSIG).
    pub expired_key: bool,
}

/// The faked time an [`AptRepoOptions::expired_key`] repository's keys are made at, and the
/// one its Release is signed at (both long before now, the keys valid one year).
const EXPIRED_KEY_MADE: &str = "20230101T000000";
const EXPIRED_KEY_SIGNS: &str = "20230601T000000";

impl Default for AptRepoOptions {
    fn default() -> Self {
        AptRepoOptions {
            flat: false,
            packages: DEFAULT_PACKAGES.to_vec(),
            valid_until_past: false,
            sign_with_other_key: false,
            key_algo: KeyAlgo::default(),
            expired_key: false,
        }
    }
}

/// A signed upstream apt repository served on 127.0.0.1 until dropped.
///
/// The served directory ([`AptRepo::root`]) is `<workspace>/apt-repo-N/www/debian`; the gpg
/// home and the exported keys sit beside `www`, so they are not served.
pub struct AptRepo {
    apache: Apache,
    root: PathBuf,
    gnupg: PathBuf,
    key: Key,
    other: Key,
    options: AptRepoOptions,
    arch: String,
    packages: Vec<DebInfo>,
}

/// A gpg key of the repository's private keyring, exported.
struct Key {
    fingerprint: String,
    armored: PathBuf,
    binary: PathBuf,
}

impl AptRepo {
    /// Builds the repository in a fresh directory of `ws` and starts serving it. Takes about
    /// 0.35 s with Ed25519 keys once the debs are cached (see [`cached_debs`]), about 1.2 s
    /// with RSA keys; panics when a tool is missing (`scripts/setup-test-env.sh` installs
    /// them) or the mirror is unreachable.
    pub fn build(ws: &Workspace, options: AptRepoOptions) -> AptRepo {
        for tool in [
            "apt-get",
            "apt-ftparchive",
            "dpkg-deb",
            "gpg",
            "gpgconf",
            "gzip",
            "xz",
        ] {
            require_tool(tool);
        }
        let arch = host_arch();
        let debs = cached_debs(&options.packages, &arch);

        let base = unique_dir(ws, "apt-repo");
        let root = base.join("www/debian");
        fs::create_dir_all(&root).expect("mkdir www/debian");
        set_mode(&base.join("www"), 0o755);
        set_mode(&root, 0o755);
        for deb in &debs {
            let dir = if options.flat {
                root.clone()
            } else {
                root.join(pool_dir(deb))
            };
            fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            let name = deb.file_name().expect("deb file name");
            // A copy, not a link: tests tamper with the served files, never with the cache.
            fs::copy(deb, dir.join(name))
                .unwrap_or_else(|e| panic!("copy {} into the pool: {e}", deb.display()));
        }

        let gnupg = base.join("gnupg");
        fs::create_dir(&gnupg).expect("mkdir gnupg");
        set_mode(&gnupg, 0o700);
        let keys = base.join("keys");
        fs::create_dir(&keys).expect("mkdir keys");
        let agent = GpgAgent(gnupg.clone());
        let key = gen_key(&agent, options.key_algo, options.expired_key, "repo", &keys);
        let other = gen_key(
            &agent,
            options.key_algo,
            options.expired_key,
            "other",
            &keys,
        );

        let apache = Apache::start(&base.join("www"));
        let mut repo = AptRepo {
            apache,
            root,
            gnupg,
            key,
            other,
            options,
            arch,
            packages: Vec::new(),
        };
        repo.publish_with(&agent);
        repo
    }

    /// Writes the indexes again from the debs now in the tree and signs them: `Packages`
    /// (plain, `.gz`, `.xz`), `Release`, `InRelease` and `Release.gpg`. For tests that add,
    /// replace or remove debs in [`AptRepo::root`] and want a consistent signed repository.
    pub fn publish(&mut self) {
        let agent = GpgAgent(self.gnupg.clone());
        self.publish_with(&agent);
    }

    fn publish_with(&mut self, agent: &GpgAgent) {
        let release_dir = self.release_dir();
        let index_dir = if self.options.flat {
            self.root.clone()
        } else {
            release_dir.join(format!("{COMPONENT}/binary-{}", self.arch))
        };
        fs::create_dir_all(&index_dir).expect("mkdir binary-ARCH");
        for name in ["Release", "InRelease", "Release.gpg"] {
            let _ = fs::remove_file(release_dir.join(name));
        }

        // Run from the root, so that `Filename` is relative to it as apt expects.
        let scan = if self.options.flat { "." } else { "pool" };
        let packages = output_ok(
            Command::new("apt-ftparchive")
                .args(["packages", scan])
                .current_dir(&self.root),
        );
        write(&index_dir.join("Packages"), &packages);
        let plain = index_dir.join("Packages");
        let gz = output_ok(Command::new("gzip").args(["-9nc"]).arg(&plain));
        write(&index_dir.join("Packages.gz"), &gz);
        let xz = output_ok(Command::new("xz").args(["-c"]).arg(&plain));
        write(&index_dir.join("Packages.xz"), &xz);
        self.packages = parse_packages(&String::from_utf8_lossy(&packages));
        for deb in &self.packages {
            let file = self.root.join(&deb.filename);
            assert_eq!(
                sha256_file(&file),
                deb.sha256,
                "apt-ftparchive's SHA256 of {}",
                file.display()
            );
        }

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as i64;
        let day = 86_400;
        let (date, valid_until) = if self.options.valid_until_past {
            (now - 3 * day, now - day)
        } else {
            (now, now + 7 * day)
        };
        let mut release = Command::new("apt-ftparchive");
        release.current_dir(&release_dir);
        let mut field = |name: &str, value: &str| {
            release
                .arg("-o")
                .arg(format!("APT::FTPArchive::Release::{name}={value}"));
        };
        field("Origin", "airgap-bundle-test");
        field("Label", "airgap-bundle-test");
        if !self.options.flat {
            field("Suite", SUITE);
            field("Codename", SUITE);
            field("Components", COMPONENT);
        }
        field("Architectures", &self.arch);
        field("Date", &rfc2822(date));
        let text =
            String::from_utf8(output_ok(release.args(["release", "."]))).expect("Release is UTF-8");
        // apt-ftparchive can only set Valid-Until relative to now and in the future
        // (`Release::ValidTime`), so the field goes in right after `Date:` before signing.
        let release_text = text.replacen(
            "\nMD5Sum:",
            &format!("\nValid-Until: {}\nMD5Sum:", rfc2822(valid_until)),
            1,
        );
        assert!(
            release_text.contains("\nValid-Until: "),
            "no MD5Sum field in:\n{text}"
        );
        let release_file = release_dir.join("Release");
        write(&release_file, release_text.as_bytes());

        let signer = if self.options.sign_with_other_key {
            &self.other.fingerprint
        } else {
            &self.key.fingerprint
        };
        for (mode, out) in [
            ("--clearsign", "InRelease"),
            ("--detach-sign", "Release.gpg"),
        ] {
            let mut cmd = agent.gpg();
            if self.options.expired_key {
                cmd.args(["--faked-system-time", EXPIRED_KEY_SIGNS]);
            }
            output_ok(
                cmd.args([
                    "--yes",
                    "--armor",
                    "--digest-algo",
                    "SHA512",
                    "--local-user",
                ])
                .arg(signer)
                .arg(mode)
                .arg("--output")
                .arg(release_dir.join(out))
                .arg(&release_file),
            );
        }
    }

    /// `http://127.0.0.1:PORT/debian`: the repository root (no trailing slash), what a
    /// sources line or a manifest's `url` names.
    pub fn url(&self) -> String {
        self.apache.url("debian")
    }

    /// The suite a client names: `stable`, or `./` for a flat repository.
    pub fn suite(&self) -> &'static str {
        if self.options.flat { "./" } else { SUITE }
    }

    /// The host architecture the debs (and `binary-<arch>`) are for, e.g. `amd64`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// A one-line `sources.list` entry for this repository that trusts only `key`:
    /// `deb [signed-by=KEY] URL stable main`, or `deb [signed-by=KEY] URL ./` when flat.
    pub fn sources_line(&self, key: &Path) -> String {
        let components = if self.options.flat { "" } else { " main" };
        format!(
            "deb [signed-by={}] {} {}{components}\n",
            key.display(),
            self.url(),
            self.suite()
        )
    }

    /// The repository key's public key, ASCII-armored (`.asc`).
    pub fn key_armored(&self) -> PathBuf {
        self.key.armored.clone()
    }

    /// The repository key's public key, binary (`.gpg`).
    pub fn key_binary(&self) -> PathBuf {
        self.key.binary.clone()
    }

    /// An unrelated public key, ASCII-armored: the key that signs with
    /// `sign_with_other_key`, and a wrong `signed-by` otherwise.
    pub fn other_key_armored(&self) -> PathBuf {
        self.other.armored.clone()
    }

    /// The same unrelated public key, binary.
    pub fn other_key_binary(&self) -> PathBuf {
        self.other.binary.clone()
    }

    /// The repository key's fingerprint (uppercase hex); apt and gpg name a key by its last
    /// 16 digits.
    pub fn key_fingerprint(&self) -> &str {
        &self.key.fingerprint
    }

    /// The repository key as it is once revoked (gpg's own revocation certificate made at
    /// key generation, imported into a copy of the key home), ASCII-armored at `out`.
    pub fn export_revoked_key(&self, out: &Path) {
        let home = self.gnupg.with_extension("revoked");
        let _ = fs::remove_dir_all(&home);
        fs::create_dir(&home).unwrap();
        set_mode(&home, 0o700);
        for entry in fs::read_dir(&self.gnupg).unwrap().flatten() {
            let path = entry.path();
            if path.is_file() {
                fs::copy(&path, home.join(entry.file_name())).unwrap();
            }
        }
        fs::create_dir_all(home.join("openpgp-revocs.d")).unwrap();
        let cert = fs::read_to_string(
            self.gnupg
                .join("openpgp-revocs.d")
                .join(format!("{}.rev", self.key.fingerprint)),
        )
        .expect("gpg's revocation certificate");
        // gpg escapes the armor with a leading ':' so that it is not imported by accident.
        let cert = cert.replace(
            ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
        );
        let cert_path = home.join("revoke.asc");
        fs::write(&cert_path, cert).unwrap();
        let agent = GpgAgent(home.clone());
        output_ok(agent.gpg().arg("--import").arg(&cert_path));
        let exported = output_ok(
            agent
                .gpg()
                .args(["--armor", "--export", &self.key.fingerprint]),
        );
        fs::write(out, exported).unwrap();
    }

    /// The unrelated key's fingerprint (uppercase hex).
    pub fn other_key_fingerprint(&self) -> &str {
        &self.other.fingerprint
    }

    /// Every deb as the `Packages` index lists it, in index order.
    pub fn packages(&self) -> Vec<DebInfo> {
        self.packages.clone()
    }

    /// The listed deb named `name`; panics if there is none.
    #[track_caller]
    pub fn package(&self, name: &str) -> DebInfo {
        self.packages
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no package {name} in the fixture repo"))
            .clone()
    }

    /// The served directory, the repository root (`…/www/debian`). Tests tamper here.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `Release`, `InRelease` and `Release.gpg` are: `dists/stable`, or the root when
    /// flat.
    pub fn release_dir(&self) -> PathBuf {
        if self.options.flat {
            self.root.clone()
        } else {
            self.root.join("dists").join(SUITE)
        }
    }

    /// The file `Packages` (uncompressed; `.gz` and `.xz` beside it).
    pub fn packages_index(&self) -> PathBuf {
        if self.options.flat {
            self.root.join("Packages")
        } else {
            self.release_dir()
                .join(format!("{COMPONENT}/binary-{}/Packages", self.arch))
        }
    }

    /// The Apache serving the repository (its access log shows what a client fetched).
    pub fn apache(&self) -> &Apache {
        &self.apache
    }
}

/// Runs gpg in one private home and stops that home's `gpg-agent` when dropped, so that no
/// agent outlives the build (even when it panics).
struct GpgAgent(PathBuf);

impl GpgAgent {
    fn gpg(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", &self.0)
            .args(["--batch", "--quiet", "--no-tty"])
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for GpgAgent {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &self.0)
            .args(["--kill", "gpg-agent"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A signing-only key `<name>@example.org` without passphrase, exported to
/// `keys/<name>.asc` and `keys/<name>.gpg`.
fn gen_key(agent: &GpgAgent, algo: KeyAlgo, expired: bool, name: &str, keys: &Path) -> Key {
    let email = format!("{name}@example.org");
    let mut cmd = agent.gpg();
    if expired {
        cmd.args(["--faked-system-time", EXPIRED_KEY_MADE]);
    }
    output_ok(
        cmd.args(["--passphrase", "", "--quick-gen-key"])
            .arg(format!("test {name} key <{email}>"))
            .args([
                algo.gpg_name(),
                "sign",
                if expired { "1y" } else { "never" },
            ]),
    );
    let listing = output_ok(
        agent
            .gpg()
            .args(["--with-colons", "--list-keys"])
            .arg(&email),
    );
    let fingerprint = String::from_utf8_lossy(&listing)
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .and_then(|rest| rest.split(':').find(|f| !f.is_empty()))
        .unwrap_or_else(|| panic!("no fingerprint for {email} in gpg's listing"))
        .to_string();
    let armored = keys.join(format!("{name}.asc"));
    let binary = keys.join(format!("{name}.gpg"));
    for (out, armor) in [(&armored, true), (&binary, false)] {
        let mut cmd = agent.gpg();
        if armor {
            cmd.arg("--armor");
        }
        output_ok(
            cmd.args(["--yes", "--output"])
                .arg(out)
                .args(["--export", &fingerprint]),
        );
    }
    Key {
        fingerprint,
        armored,
        binary,
    }
}

/// `pool/main/<prefix>/<source>` for a deb, Debian's way: the prefix is the source's first
/// letter, or its first four for `lib*` sources (`pool/main/libo/libonig`).
fn pool_dir(deb: &Path) -> PathBuf {
    let fields = output_ok(
        Command::new("dpkg-deb")
            .arg("--field")
            .arg(deb)
            .args(["Package", "Source"]),
    );
    let fields = String::from_utf8_lossy(&fields);
    let field = |name: &str| {
        fields
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
    };
    // `Source: jq (1.6-2.1)` names a source version too; only the name counts.
    let source = field("Source")
        .or_else(|| field("Package"))
        .unwrap_or_else(|| panic!("{} has no Package field", deb.display()));
    let prefix = if source.starts_with("lib") && source.len() > 3 {
        &source[..4]
    } else {
        &source[..1]
    };
    PathBuf::from(format!("pool/{COMPONENT}/{prefix}/{source}"))
}

/// The paragraphs of a `Packages` index, the fields a lock pins.
fn parse_packages(text: &str) -> Vec<DebInfo> {
    text.split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|para| {
            let field = |name: &str| {
                para.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
                    .unwrap_or_else(|| panic!("no {name} in Packages paragraph:\n{para}"))
                    .trim()
                    .to_string()
            };
            DebInfo {
                name: field("Package"),
                version: field("Version"),
                arch: field("Architecture"),
                filename: field("Filename"),
                size: field("Size").parse().expect("Size is a number"),
                sha256: field("SHA256"),
            }
        })
        .collect()
}

/// `Sat, 28 Nov 2026 13:00:00 UTC`, the date format of `Release` files.
fn rfc2822(epoch: i64) -> String {
    let out = output_ok(
        Command::new("date")
            .args(["-u", "+%a, %d %b %Y %H:%M:%S UTC", "-d"])
            .arg(format!("@{epoch}"))
            .env("LC_ALL", "C"),
    );
    String::from_utf8_lossy(&out).trim().to_string()
}

fn host_arch() -> String {
    let out = output_ok(Command::new("dpkg").arg("--print-architecture"));
    String::from_utf8_lossy(&out).trim().to_string()
}

fn write(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `<ws>/<prefix>-N` for the first N not yet taken, created with mode 0755.
fn unique_dir(ws: &Workspace, prefix: &str) -> PathBuf {
    for n in 1.. {
        let dir = ws.path(format!("{prefix}-{n}"));
        match fs::create_dir(&dir) {
            Ok(()) => {
                set_mode(&dir, 0o755);
                return dir;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("mkdir {}: {e}", dir.display()),
        }
    }
    unreachable!()
}

// ---------------------------------------------------------------------------
// The deb cache
// ---------------------------------------------------------------------------

/// The `.deb` of each of `names` for `arch`, downloaded with `apt-get download` from the
/// machine's configured apt sources the first time and kept in
/// `$CARGO_TARGET_TMPDIR/apt-debs/<arch>/<name>/` afterwards, so that a test run (and the
/// next one) downloads each package once. A file lock makes parallel tests wait for one
/// download instead of racing. Never modify the returned files: copy them.
pub fn cached_debs(names: &[&str], arch: &str) -> Vec<PathBuf> {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("apt-debs")
        .join(arch);
    fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("mkdir {}: {e}", cache.display()));
    let lock_path = cache.join(".lock");
    let lock = fs::File::create(&lock_path)
        .unwrap_or_else(|e| panic!("create {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", lock_path.display()));

    for name in names {
        assert!(
            !name.contains(':') && !name.contains('='),
            "package {name:?}: give a plain name (host architecture, candidate version)"
        );
    }
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !cache.join(n).is_dir())
        .collect();
    if !missing.is_empty() {
        let partial = cache.join(".partial");
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir(&partial).expect("mkdir .partial");
        download_from_mirror(&missing, &partial);
        for entry in fs::read_dir(&partial).expect("read .partial") {
            let deb = entry.expect("dir entry").path();
            let name = String::from_utf8_lossy(&output_ok(
                Command::new("dpkg-deb")
                    .arg("--field")
                    .arg(&deb)
                    .arg("Package"),
            ))
            .trim()
            .to_string();
            let dir = cache.join(&name);
            fs::create_dir_all(&dir).expect("mkdir cache entry");
            fs::rename(&deb, dir.join(deb.file_name().unwrap())).expect("move deb into cache");
        }
        let _ = fs::remove_dir_all(&partial);
    }

    names
        .iter()
        .map(|name| {
            let dir = cache.join(name);
            let debs: Vec<PathBuf> = fs::read_dir(&dir)
                .unwrap_or_else(|e| {
                    panic!(
                        "apt-get download gave no deb for {name} ({}: {e})",
                        dir.display()
                    )
                })
                .map(|e| e.expect("dir entry").path())
                .filter(|p| p.extension().is_some_and(|x| x == "deb"))
                .collect();
            assert_eq!(debs.len(), 1, "one deb in {}: {debs:?}", dir.display());
            debs.into_iter().next().unwrap()
        })
        .collect()
}

/// `apt-get download NAMES` into `dir`, with the machine's own apt configuration. Lists that
/// are missing or stale (no candidate, or a 404 for a superseded version) get one `apt-get
/// update` and a second try; a mirror that cannot be reached fails the test saying so.
fn download_from_mirror(names: &[&str], dir: &Path) {
    let download = || {
        Command::new("apt-get")
            .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
            .args(names)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("spawn apt-get download")
    };
    let mut out = download();
    if !out.status.success() && !mirror_unreachable(&out) {
        let update = Command::new("apt-get")
            .args(["-q", "update"])
            .stdin(Stdio::null())
            .output()
            .expect("spawn apt-get update");
        if !update.status.success() && mirror_unreachable(&update) {
            out = update;
        } else {
            out = download();
        }
    }
    if out.status.success() {
        return;
    }
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if mirror_unreachable(&out) {
        panic!(
            "the apt fixture needs real debs ({}) from this machine's configured Debian \
             mirror (/etc/apt/sources.list*), and that mirror is unreachable; apt-get said:\n{said}",
            names.join(" ")
        );
    }
    panic!(
        "apt-get download {} failed (after an apt-get update):\n{said}",
        names.join(" ")
    );
}

fn mirror_unreachable(out: &Output) -> bool {
    let text = String::from_utf8_lossy(&out.stderr);
    [
        "Could not resolve",
        "Temporary failure resolving",
        "Could not connect",
        "Unable to connect",
        "Connection failed",
        "Connection timed out",
        "No route to host",
        "Network is unreachable",
    ]
    .iter()
    .any(|s| text.contains(s))
}

// ---------------------------------------------------------------------------
// An isolated apt client
// ---------------------------------------------------------------------------

/// A stock `apt-get` that sees only the sources given to it and keeps its lists and cache
/// in its own directory of the workspace: its own `APT_CONFIG` keeps out the host's
/// `apt.conf.d` (which may turn off `Check-Valid-Until`, add a proxy, …), sources, trusted
/// keys and preferences; it never locks or writes the host's apt state; and it checks
/// signatures with apt's defaults (nothing is `trusted=yes` unless a test writes it).
pub struct AptClient {
    dir: PathBuf,
}

impl AptClient {
    /// A client whose only source is `sources`, written as `sources.list.d/<file_name>`:
    /// one-line style when `file_name` ends in `.list`, deb822 when it ends in `.sources`
    /// (e.g. the snippet `install` writes).
    pub fn new(ws: &Workspace, file_name: &str, sources: &str) -> AptClient {
        require_tool("apt-get");
        let dir = unique_dir(ws, "apt-client");
        for sub in [
            "apt.conf.d",
            "sources.list.d",
            "lists/partial",
            "cache/archives/partial",
            "trusted.gpg.d",
            "preferences.d",
        ] {
            fs::create_dir_all(dir.join(sub)).expect("mkdir apt client dir");
        }
        write(
            &dir.join("sources.list.d").join(file_name),
            sources.as_bytes(),
        );
        let d = dir.display();
        let conf = format!(
            "\
Dir::Etc::Main \"/dev/null\";
Dir::Etc::Parts \"{d}/apt.conf.d\";
Dir::Etc::SourceList \"/dev/null\";
Dir::Etc::SourceParts \"{d}/sources.list.d\";
Dir::Etc::Trusted \"{d}/trusted.gpg\";
Dir::Etc::TrustedParts \"{d}/trusted.gpg.d\";
Dir::Etc::Preferences \"/dev/null\";
Dir::Etc::PreferencesParts \"{d}/preferences.d\";
Dir::State::Lists \"{d}/lists\";
Dir::Cache \"{d}/cache\";
Debug::NoLocking \"1\";
APT::Sandbox::User \"root\";
Acquire::http::Proxy \"DIRECT\";
Acquire::Retries \"0\";
"
        );
        write(&dir.join("apt.conf"), conf.as_bytes());
        AptClient { dir }
    }

    /// `apt-get -q ARGS` in `cwd` with the client's own configuration; the output whatever
    /// the exit code.
    pub fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        Command::new("apt-get")
            .arg("-q")
            .args(args)
            .current_dir(cwd)
            .env("APT_CONFIG", self.dir.join("apt.conf"))
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .expect("spawn apt-get")
    }

    /// `apt-get update`.
    pub fn update(&self) -> Output {
        self.run(&self.dir, &["update"])
    }

    /// `apt-get update`, which must succeed without a warning or error (a signature apt
    /// could not check is only a warning when an older index is still around).
    #[track_caller]
    pub fn update_ok(&self) {
        let out = self.update();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("W:") && !err.contains("E:"),
            "apt-get update failed or warned\n{}",
            show_output(&out)
        );
    }

    /// `apt-get update`, which must fail (exit 100); all it printed, to check the reason.
    #[track_caller]
    pub fn update_refused(&self) -> String {
        let out = self.update();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "apt-get update succeeded, expected a refusal\n{}",
            show_output(&out)
        );
        text
    }

    /// `apt-get download PKGS` into `into` (created); the downloaded files, sorted.
    #[track_caller]
    pub fn download_ok(&self, into: &Path, pkgs: &[&str]) -> Vec<PathBuf> {
        fs::create_dir_all(into).expect("mkdir download dir");
        let mut args = vec!["download"];
        args.extend_from_slice(pkgs);
        let out = self.run(into, &args);
        assert!(
            out.status.success(),
            "apt-get download {pkgs:?} failed\n{}",
            show_output(&out)
        );
        let mut files: Vec<PathBuf> = fs::read_dir(into)
            .expect("read download dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        files.sort();
        files
    }

    /// The client's own directory (sources, lists, cache).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
