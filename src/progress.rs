//! How a command talks while it works: `indicatif` bars on a terminal, nothing in pipes or
//! CI or with `--quiet`, detail lines with `-v`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Output settings shared by every command.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reporter {
    pub quiet: bool,
    pub verbose: bool,
    /// Bars are drawn only when stderr is a terminal and not quiet.
    pub bars: bool,
}

impl Reporter {
    pub fn new(quiet: bool, verbose: bool) -> Self {
        Reporter {
            quiet,
            verbose: verbose && !quiet,
            bars: !quiet && std::io::stderr().is_terminal(),
        }
    }

    /// A silent reporter (library callers, tests).
    pub fn silent() -> Self {
        Reporter::default()
    }

    /// A byte-counting bar with rate and ETA; hidden unless bars are on.
    pub fn bytes_bar(&self, total: u64, message: &str) -> ProgressBar {
        if !self.bars {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(message.to_string());
        bar
    }

    /// A line for `-v`.
    pub fn detail(&self, line: impl AsRef<str>) {
        if self.verbose {
            eprintln!("{}", line.as_ref());
        }
    }

    /// A line shown unless `--quiet`.
    pub fn info(&self, line: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", line.as_ref());
        }
    }
}

/// A reader that advances a progress bar by the bytes it yields.
pub struct ProgressReader<'a, R> {
    pub inner: R,
    pub bar: Option<&'a ProgressBar>,
}

impl<R: std::io::Read> std::io::Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(bar) = self.bar {
            bar.inc(n as u64);
        }
        Ok(n)
    }
}
