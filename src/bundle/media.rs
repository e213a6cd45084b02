//! Volumes read one at a time from one directory (a mount point) whose medium is swapped
//! (`--wait`, SPEC §3): before the reader opens volume N, a [`VolumeSupplier`] makes sure the
//! directory holds it, checked whole against the signed volume list.
//!
//! Two suppliers: [`InDirectory`] (no terminal: every volume must already be there, exit 1
//! naming a missing one) and [`Prompting`] (a terminal: ask for each medium and re-scan).

use std::fs::File;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use super::split::VolumeList;
use super::volumes::BundleSource;
use crate::digest::Sha256Digest;
use crate::error::{Error, IoContext, Result};

/// One volume a reader is about to open, and the signed list that describes it.
pub struct Wanted<'a> {
    pub list: &'a VolumeList,
    /// The mount point: where the volumes appear, one medium at a time.
    pub dir: &'a Path,
    /// 0-based, as in the file names (`.000` is volume 1 of N for people).
    pub number: usize,
}

impl Wanted<'_> {
    pub fn name(&self) -> &str {
        &self.list.data[self.number].0
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(self.name())
    }

    pub fn size(&self) -> u64 {
        self.list.size_of(self.number)
    }

    /// `NAME.003 (volume 4 of 9)`.
    pub fn describe(&self) -> String {
        format!(
            "{} (volume {} of {})",
            self.name(),
            self.number + 1,
            self.list.data.len()
        )
    }
}

/// Where the reader gets each volume from. `supply` is called before a volume is opened,
/// after the reader closed the one before it (a held file blocks an unmount); it returns
/// once `want.path()` holds the volume, checked, or with the error that ends the read.
pub trait VolumeSupplier: Send {
    fn supply(&mut self, want: &Wanted<'_>) -> Result<()>;

    /// A progress bar to hide while talking to the operator.
    fn attach_progress(&mut self, _bar: ProgressBar) {}
}

/// What the mount point holds when a volume is wanted.
#[derive(Debug, PartialEq)]
pub enum Found {
    /// The wanted volume, with its listed size and sha256.
    Ready,
    /// Not there; `others` are the listed volumes that are (another medium is mounted).
    Absent { others: Vec<String> },
    /// The wanted name, but not the listed size (a truncated copy, another bundle's).
    WrongSize { got: u64 },
    /// The wanted name and size, but not the listed sha256.
    WrongSha256 { got: Sha256Digest },
}

/// Looks at the mount point: size first, then the sha256 of the whole file, so the medium
/// is checked before the reader depends on it. `checking` runs before a volume is hashed.
pub fn look(want: &Wanted<'_>, checking: &mut dyn FnMut()) -> Result<Found> {
    let path = want.path();
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => {
            if meta.len() != want.size() {
                return Ok(Found::WrongSize { got: meta.len() });
            }
            checking();
            let (got, _) = File::open(&path)
                .and_then(Sha256Digest::of_reader)
                .at("cannot read", &path)?;
            Ok(if got == want.list.data[want.number].1 {
                Found::Ready
            } else {
                Found::WrongSha256 { got }
            })
        }
        _ => {
            let others = want
                .list
                .data
                .iter()
                .enumerate()
                .filter(|(n, (name, _))| *n != want.number && want.dir.join(name).is_file())
                .map(|(n, (name, _))| {
                    format!("{name} (volume {} of {})", n + 1, want.list.data.len())
                })
                .collect();
            Ok(Found::Absent { others })
        }
    }
}

/// Why a found file is not the wanted volume, for a message.
fn mismatch(want: &Wanted<'_>, found: &Found) -> Option<String> {
    match found {
        Found::WrongSize { got } => Some(format!(
            "{} is {got} bytes, the signed volume list says {} ({})",
            want.path().display(),
            want.size(),
            if *got < want.size() {
                "truncated"
            } else {
                "not this bundle's volume"
            }
        )),
        Found::WrongSha256 { got } => Some(format!(
            "{} does not match the signed volume list (sha256 {got}, listed {}): altered, or another build's volume",
            want.path().display(),
            want.list.data[want.number].1
        )),
        Found::Ready | Found::Absent { .. } => None,
    }
}

/// No terminal: every volume must already be in the directory (a script copies them all
/// into one directory); a missing one is exit 1, a wrong one exit 3, both naming it. A
/// missing one interrupts the read (an install keeps what verified so far, SPEC §6).
pub struct InDirectory;

impl VolumeSupplier for InDirectory {
    fn supply(&mut self, want: &Wanted<'_>) -> Result<()> {
        match look(want, &mut || {})? {
            Found::Ready => Ok(()),
            Found::Absent { others } => Err(Error::Interrupted(format!(
                "volume {} is missing in {}{}; insert it and run again, or run on a terminal with --wait to be asked for each medium",
                want.describe(),
                want.dir.display(),
                match others.as_slice() {
                    [] => String::new(),
                    some => format!(" (it holds {})", some.join(", ")),
                }
            ))
            .with_hint(
                "without a terminal, copy every volume into one directory beside the volume list and run again; nothing was committed",
            )),
            wrong => Err(Error::Verify(format!(
                "volume {}",
                mismatch(want, &wrong).unwrap_or_default()
            ))
            .with_hint(
                "copy this volume again from the connected side and check it with `sha256sum -c --ignore-missing NAME.volumes`",
            )),
        }
    }
}

/// A terminal: when the wanted volume is not in the directory (or is not the listed one),
/// say what is there, ask for the right medium and re-scan when the operator presses
/// Enter; `q` or the end of input aborts (exit 1, nothing committed; an interruption, so
/// an install keeps what verified so far for the next run).
pub struct Prompting<I, O> {
    input: I,
    output: O,
    bar: Option<ProgressBar>,
}

impl<I: BufRead + Send, O: Write + Send> Prompting<I, O> {
    pub fn new(input: I, output: O) -> Self {
        Prompting {
            input,
            output,
            bar: None,
        }
    }

    fn ask(&mut self, want: &Wanted<'_>) -> Result<()> {
        let out = |o: &mut O, line: String| {
            // A terminal that went away ends in the read below (end of input).
            let _ = writeln!(o, "{line}").and_then(|()| o.flush());
        };
        loop {
            let output = &mut self.output;
            let found = look(want, &mut || {
                out(output, format!("checking {} …", want.describe()))
            });
            match &found {
                Ok(Found::Ready) => return Ok(()),
                // A failing stick: another copy may do.
                Err(e) => out(&mut self.output, format!("wrong medium: {e}")),
                Ok(Found::Absent { others }) if !others.is_empty() => out(
                    &mut self.output,
                    format!(
                        "{} holds {}, not {}",
                        want.dir.display(),
                        others.join(", "),
                        want.describe()
                    ),
                ),
                Ok(Found::Absent { .. }) => {}
                Ok(wrong) => {
                    if let Some(why) = mismatch(want, wrong) {
                        out(&mut self.output, format!("wrong medium: {why}"));
                    }
                }
            }
            let _ = write!(
                self.output,
                "insert the medium holding {} into {} and press Enter (q to abort): ",
                want.describe(),
                want.dir.display()
            )
            .and_then(|()| self.output.flush());
            let mut line = String::new();
            let read = self.input.read_line(&mut line);
            let end_of_input = matches!(read, Ok(0) | Err(_));
            if end_of_input {
                // Leave the prompt's line (Ctrl-D does not).
                out(&mut self.output, String::new());
            }
            if end_of_input || line.trim().eq_ignore_ascii_case("q") {
                return Err(
                    Error::Interrupted(format!("aborted at volume {}", want.describe())).with_hint(
                        "nothing was committed; run again with the first medium inserted",
                    ),
                );
            }
        }
    }
}

impl<I: BufRead + Send, O: Write + Send> VolumeSupplier for Prompting<I, O> {
    fn supply(&mut self, want: &Wanted<'_>) -> Result<()> {
        match self.bar.clone() {
            Some(bar) => bar.suspend(|| self.ask(want)),
            None => self.ask(want),
        }
    }

    fn attach_progress(&mut self, bar: ProgressBar) {
        self.bar = Some(bar);
    }
}

/// `--wait` for this process: [`Prompting`] on stdin and stderr when both are terminals,
/// else [`InDirectory`].
pub fn supplier_for_this_process() -> Box<dyn VolumeSupplier> {
    use std::io::IsTerminal;
    if io::stdin().is_terminal() && io::stderr().is_terminal() {
        Box::new(Prompting::new(
            io::BufReader::new(io::stdin()),
            io::stderr(),
        ))
    } else {
        Box::new(InDirectory)
    }
}

/// Opens the bundle at `path` as it lies, or with `wait` (`--wait`) for its volumes to be
/// read one at a time from its directory, asked for with [`supplier_for_this_process`].
pub fn open_bundle(path: &Path, wait: bool) -> Result<BundleSource> {
    match wait {
        true => BundleSource::open_waiting(path, supplier_for_this_process()),
        false => BundleSource::open(path),
    }
}

/// The supplier a [`BundleSource`] opened with `--wait` shares with its
/// readers, and the error that stopped a read (kept whole, with its exit code, since it
/// crosses the decoder and tar layers as a plain I/O error).
pub(super) struct Media {
    supplier: Box<dyn VolumeSupplier>,
    list: VolumeList,
    dir: PathBuf,
    failure: Option<Error>,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Media {
    pub(super) fn new(supplier: Box<dyn VolumeSupplier>, list: VolumeList, dir: PathBuf) -> Self {
        Media {
            supplier,
            list,
            dir,
            failure: None,
        }
    }

    /// Asks for volume `number`; a failure is kept for [`Media::take_failure`].
    pub(super) fn supply(&mut self, number: usize) -> io::Result<()> {
        let want = Wanted {
            list: &self.list,
            dir: &self.dir,
            number,
        };
        self.supplier.supply(&want).map_err(|e| {
            let text = e.to_string();
            self.failure = Some(e);
            io::Error::other(text)
        })
    }

    pub(super) fn attach_progress(&mut self, bar: ProgressBar) {
        self.supplier.attach_progress(bar);
    }

    pub(super) fn take_failure(&mut self) -> Option<Error> {
        self.failure.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::split::volume_list;

    /// A list of three volumes of 4, 4 and 2 bytes over `0123456789` (parsed, and as its
    /// text), and the volumes.
    fn three() -> (VolumeList, String, Vec<(String, Vec<u8>)>) {
        let vols: Vec<(String, Vec<u8>)> = [&b"0123"[..], b"4567", b"89"]
            .iter()
            .enumerate()
            .map(|(n, b)| (format!("b.{n:03}"), b.to_vec()))
            .collect();
        let listed: Vec<(String, Sha256Digest, u64)> = vols
            .iter()
            .map(|(n, b)| (n.clone(), Sha256Digest::of_bytes(b), b.len() as u64))
            .collect();
        let text = volume_list(4, &listed, &[], 0, None);
        (VolumeList::parse(&text).unwrap(), text, vols)
    }

    /// [`three`]'s list and volumes, and an empty directory for them.
    fn three_in_a_directory() -> (VolumeList, Vec<(String, Vec<u8>)>, tempfile::TempDir) {
        let (list, _, vols) = three();
        (list, vols, tempfile::tempdir().unwrap())
    }

    /// Asks for volume `number` of `list` in `dir`.
    fn wanted<'a>(list: &'a VolumeList, dir: &'a tempfile::TempDir, number: usize) -> Wanted<'a> {
        Wanted {
            list,
            dir: dir.path(),
            number,
        }
    }

    /// Plays the operator: on each request, takes the previous volume out of the mount
    /// point and puts the wanted one in, noting whether the reader still held the previous
    /// one open.
    struct Swapper {
        stash: PathBuf,
        log: std::sync::Arc<std::sync::Mutex<Vec<(usize, bool)>>>,
    }

    /// Whether this process has `path` open.
    fn held_open(path: &Path) -> bool {
        let path = path.canonicalize().unwrap();
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p == path))
    }

    impl VolumeSupplier for Swapper {
        fn supply(&mut self, want: &Wanted<'_>) -> Result<()> {
            let mut held = false;
            if want.number > 0 {
                let before = want.dir.join(&want.list.data[want.number - 1].0);
                held = held_open(&before);
                std::fs::remove_file(before).unwrap();
            }
            std::fs::copy(self.stash.join(want.name()), want.path()).unwrap();
            self.log.lock().unwrap().push((want.number, held));
            InDirectory.supply(want)
        }
    }

    #[test]
    fn a_waiting_source_asks_for_each_volume_in_order_with_the_last_one_closed() {
        use std::io::Read;
        let (list, text, vols) = three();
        let stash = tempfile::tempdir().unwrap();
        let mount = tempfile::tempdir().unwrap();
        for (name, bytes) in &vols {
            std::fs::write(stash.path().join(name), bytes).unwrap();
        }
        std::fs::write(mount.path().join("b.volumes"), text).unwrap();
        assert_eq!(list.data.len(), 3);
        let log = std::sync::Arc::default();
        let supplier = Swapper {
            stash: stash.path().to_path_buf(),
            log: std::sync::Arc::clone(&log),
        };
        // The mount point is empty but for the list: nothing is asked for at open.
        let source =
            BundleSource::open_waiting(&mount.path().join("b"), Box::new(supplier)).unwrap();
        assert!(source.in_order_only());
        assert!(log.lock().unwrap().is_empty());
        let mut all = Vec::new();
        let mut reader = source.reader().unwrap();
        let mut buf = [0u8; 3];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        assert_eq!(all, b"0123456789");
        assert_eq!(
            *log.lock().unwrap(),
            vec![(0, false), (1, false), (2, false)]
        );
        // Every volume was hashed whole while it streamed: none is read again.
        source
            .check_listed_bundle(&Sha256Digest::of_bytes(b"any"))
            .unwrap();
        // Without a list there is nothing to wait against.
        std::fs::remove_file(mount.path().join("b.volumes")).unwrap();
        let e =
            BundleSource::open_waiting(&mount.path().join("b"), Box::new(InDirectory)).unwrap_err();
        assert!(e.to_string().contains("b.volumes is not there"), "{e}");
    }

    #[test]
    fn look_checks_size_then_sha256_and_names_other_volumes() {
        let (list, vols, dir) = three_in_a_directory();
        let want = wanted(&list, &dir, 1);
        let mut hashed = 0;
        std::fs::write(dir.path().join("b.000"), &vols[0].1).unwrap();
        assert_eq!(
            look(&want, &mut || hashed += 1).unwrap(),
            Found::Absent {
                others: vec!["b.000 (volume 1 of 3)".into()]
            }
        );
        std::fs::write(dir.path().join("b.001"), b"456").unwrap();
        assert_eq!(
            look(&want, &mut || hashed += 1).unwrap(),
            Found::WrongSize { got: 3 }
        );
        assert_eq!(hashed, 0, "a wrong size is found without reading");
        std::fs::write(dir.path().join("b.001"), b"4568").unwrap();
        assert!(matches!(
            look(&want, &mut || hashed += 1).unwrap(),
            Found::WrongSha256 { .. }
        ));
        std::fs::write(dir.path().join("b.001"), &vols[1].1).unwrap();
        assert_eq!(look(&want, &mut || hashed += 1).unwrap(), Found::Ready);
        assert_eq!(hashed, 2);
        assert_eq!(std::fs::read(want.path()).unwrap(), b"4567");
    }

    #[test]
    fn without_a_terminal_a_missing_volume_is_exit_1_and_a_wrong_one_exit_3() {
        let (list, vols, dir) = three_in_a_directory();
        let want = wanted(&list, &dir, 2);
        let e = InDirectory.supply(&want).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.is_interrupted());
        assert!(
            e.to_string().contains("b.002 (volume 3 of 3) is missing"),
            "{e}"
        );
        std::fs::write(dir.path().join("b.002"), b"98").unwrap();
        let e = InDirectory.supply(&want).unwrap_err();
        assert_eq!(e.exit_code(), 3);
        assert!(e.to_string().contains("b.002"), "{e}");
        std::fs::write(dir.path().join("b.002"), &vols[2].1).unwrap();
        InDirectory.supply(&want).unwrap();
    }

    #[test]
    fn the_prompt_repeats_until_the_right_medium_and_q_aborts() {
        let (list, vols, dir) = three_in_a_directory();
        let want = wanted(&list, &dir, 1);
        // The operator presses Enter with the wrong medium in, then q.
        std::fs::write(dir.path().join("b.000"), &vols[0].1).unwrap();
        let mut asked = Prompting::new(&b"\nq\n"[..], Vec::new());
        let e = asked.supply(&want).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.is_interrupted());
        assert!(e.to_string().contains("aborted at volume b.001"), "{e}");
        let said = String::from_utf8(asked.output).unwrap();
        assert_eq!(
            said.matches("insert the medium holding b.001").count(),
            2,
            "{said}"
        );
        assert!(
            said.contains("holds b.000 (volume 1 of 3), not b.001"),
            "{said}"
        );
        // The end of input aborts too.
        let mut eof = Prompting::new(&b""[..], Vec::new());
        assert!(
            eof.supply(&want)
                .unwrap_err()
                .to_string()
                .contains("aborted")
        );
        // An altered copy is named; the right one is taken without asking.
        std::fs::write(dir.path().join("b.001"), b"4566").unwrap();
        let mut asked = Prompting::new(&b"q\n"[..], Vec::new());
        asked.supply(&want).unwrap_err();
        let said = String::from_utf8(asked.output).unwrap();
        assert!(said.contains("wrong medium:"), "{said}");
        assert!(
            said.contains("does not match the signed volume list"),
            "{said}"
        );
        std::fs::write(dir.path().join("b.001"), &vols[1].1).unwrap();
        let mut asked = Prompting::new(&b""[..], Vec::new());
        asked.supply(&want).unwrap();
        assert!(!String::from_utf8(asked.output).unwrap().contains("insert"));
    }
}
