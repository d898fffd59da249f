//! `barn backfill`: the mirror run in the foreground until every given
//! host is listed to the end and every repo on it, and every given
//! account, is imported; then a clean stop (group commits flushed, cursors
//! and the listing position saved) and a summary.
//!
//! # How it knows it is done
//! The mirror has no "backfill finished" notice, so the command polls
//! [`Mirror::progress`](barn_mirror::Mirror::progress) and the store:
//! - a whole host is settled when no listing pass is under way, one has
//!   finished (now or in an earlier run), and no import is queued or
//!   running;
//! - an account is settled when the store holds a state for it and its
//!   host has no import queued or running;
//! - a failed import waits for its retry outside the queue (`HostProgress`
//!   does not count it), so once everything is settled the store is
//!   scanned for repos of those hosts and accounts still desynchronized
//!   (marked for import). None: done. Some: their retries are waited for,
//!   until `retry_for` has passed without any import succeeding.
//!
//! # Progress
//! The bar's length is what the listings have shown so far (plus the
//! accounts) and grows page by page; its position is what is settled:
//! listed repos no longer waiting for an import. A resumed pass starts
//! with the repos listed and imported by the earlier run already counted;
//! the rate and ETA count only this run's imports.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;
use barn_mirror::{HostProgress, normalize_host};
use barn_store::SyncState;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::serve::{self, Running, Signals};

/// How often the mirror's progress is read.
const POLL: Duration = Duration::from_millis(200);
/// How often a plain progress line is printed when there is no bar.
const PLAIN_EVERY: Duration = Duration::from_secs(2);
/// How often the store may be scanned for repos left to import (it reads
/// every repo's state).
const SCAN_EVERY: Duration = Duration::from_secs(1);

/// `barn backfill`'s own settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Once only failing imports are left, how long to keep retrying them
    /// without one succeeding.
    pub retry_for: Duration,
}

/// The progress bar, drawn on stderr; hidden (draws nothing) when stderr
/// is not a terminal.
pub fn new_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    match ProgressStyle::with_template(
        // A fixed-width bar, not `wide_bar`: a line as wide as the
        // terminal is pushed onto the next line by the `^C` the terminal
        // echoes, and the final clear then misses it.
        "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} repos · {msg}",
    ) {
        Ok(style) => bar.set_style(style.progress_chars("=> ")),
        // A fixed template that parsed once parses always; the default
        // style would do anyway.
        Err(e) => tracing::debug!(error = %e, "progress bar template"),
    }
    bar
}

/// Log output to stderr that clears the bar for each line and draws it
/// again after, so that a log line never lands in the middle of it.
#[derive(Clone)]
pub struct LogWriter {
    bar: ProgressBar,
}

impl LogWriter {
    /// Logs around `bar`.
    pub fn new(bar: ProgressBar) -> LogWriter {
        LogWriter { bar }
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bar.suspend(|| std::io::stderr().write(buf))
    }

    // The formatter hands over one whole line: one suspension for it.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.bar.suspend(|| std::io::stderr().write_all(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Runs the backfill described by `config` to its end (or a signal).
pub async fn backfill(config: Config, bar: ProgressBar, options: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    // Before anything is started: a Ctrl-C from here on is a clean stop.
    let mut signals = Signals::new()?;
    if config.hosts.is_empty() && config.accounts.is_empty() {
        bail!(
            "nothing to back up: give --host https://pds.example.com or --account did:plc:… (or hosts / accounts in the config file)"
        );
    }
    let store = serve::open_store(&config)?;
    // A whole host barn followed before without listing it (`serve` with
    // `backfill = false`) has a stored state and no pass: the mirror lists
    // only hosts it has never seen, so this command asks for the pass.
    let mut unlisted = Vec::new();
    for host in &config.hosts {
        if let Some(hs) = store.host(host)?
            && hs.list.is_none()
            && hs.last_pass_done_ms.is_none()
        {
            unlisted.push(host.clone());
        }
    }
    let mut held_accounts = 0;
    for did in &config.accounts {
        if store.repo(did)?.is_some_and(|s| settled_repo(&s)) {
            held_accounts += 1;
        }
    }
    let running = serve::start(&config, store).await?;
    for host in &unlisted {
        running.mirror.reconcile(host, "backfill");
    }
    let mut watch = Watch::new(&config, &running, held_accounts, options.retry_for);
    if !bar.is_hidden() {
        bar.enable_steady_tick(Duration::from_millis(250));
    }

    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_plain = Instant::now();
    let mut printed = String::new();
    let mut counts = Counts::default();
    let end = loop {
        tokio::select! {
            _ = signals.recv() => break End::Interrupted,
            _ = tick.tick() => {}
        }
        let verdict = match watch.observe(&running) {
            Ok(seen) => {
                counts = seen.counts;
                show(&bar, &counts, started.elapsed());
                seen.verdict
            }
            // Stop cleanly before reporting it.
            Err(e) => break End::Failed(e),
        };
        if bar.is_hidden() && last_plain.elapsed() >= PLAIN_EVERY {
            last_plain = Instant::now();
            printed = counts.plain_line(started.elapsed());
            eprintln!("{printed}");
        }
        match verdict {
            Verdict::Working => {}
            Verdict::Done => break End::Done,
            Verdict::GaveUp { left } => break End::GaveUp { left },
        }
    };
    bar.finish_and_clear();
    // The last state always reaches the log, even a run shorter than one
    // plain-line period (but not twice).
    let last = counts.plain_line(started.elapsed());
    if bar.is_hidden() && last != printed {
        eprintln!("{last}");
    }
    serve::stop(&running).await?;

    let secs = started.elapsed().as_secs_f64();
    match end {
        End::Interrupted => {
            println!(
                "backfill interrupted: {} repos imported, {secs:.1} s; run it again to resume",
                counts.imported
            );
            Ok(())
        }
        End::Failed(e) => {
            Err(e.context("backfill stopped; what it had done is saved, run it again to resume"))
        }
        End::Done => summary(&counts, 0, &running.untracked, &options, secs),
        End::GaveUp { left } => summary(&counts, left, &running.untracked, &options, secs),
    }
}

/// The last line on stdout, and an error (exit 1) for what is left.
fn summary(
    counts: &Counts,
    left: usize,
    untracked: &[(String, String)],
    options: &Options,
    secs: f64,
) -> anyhow::Result<()> {
    println!(
        "backfill done: {} repos imported, {} failed, {secs:.1} s",
        counts.imported,
        left + untracked.len()
    );
    if !untracked.is_empty() {
        let dids: Vec<&str> = untracked.iter().map(|(d, _)| d.as_str()).collect();
        bail!(
            "{} accounts could not be tracked (did their DIDs resolve to a PDS? see the log above): {}",
            untracked.len(),
            dids.join(", ")
        );
    }
    if left > 0 {
        let what = if left == 1 { "repo" } else { "repos" };
        bail!(
            "{left} {what} could not be imported within --retry-for {}s of retries; they stay marked for import, and the next `barn backfill` or `barn serve` tries them again",
            options.retry_for.as_secs()
        );
    }
    Ok(())
}

/// Why the loop ended.
enum End {
    Done,
    GaveUp { left: usize },
    Interrupted,
    Failed(anyhow::Error),
}

/// What [`Watch::observe`] concludes.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Working,
    Done,
    /// Only failing imports are left, and `retry_for` passed without any
    /// import succeeding.
    GaveUp {
        left: usize,
    },
}

/// The figures shown.
#[derive(Debug, Default, Clone, PartialEq)]
struct Counts {
    /// Repos settled (the bar's position).
    done: u64,
    /// Repos known so far (the bar's length).
    total: u64,
    /// A listing is still paging: `total` will grow.
    listing: bool,
    queued: usize,
    running: usize,
    /// Imports that stored something (or found the account inactive or
    /// moved) in this run.
    imported: u64,
    /// Failed import attempts in this run (each is retried).
    failed_imports: u64,
    /// `listRepos` pages that failed (retried with a growing delay).
    list_errors: u64,
    /// Repos whose import failed, waiting for a retry (as of the last
    /// scan of the store, made only when nothing else is left).
    retrying: usize,
}

impl Counts {
    /// Imports per second over the run so far.
    fn rate(&self, elapsed: Duration) -> f64 {
        let secs = elapsed.as_secs_f64();
        if secs > 0.0 {
            self.imported as f64 / secs
        } else {
            0.0
        }
    }

    /// Time left for what is known at that rate, rounded up (`0s` only
    /// when nothing is left); `+` while a listing goes on (more will come),
    /// `?` before anything was imported or when only failing imports are
    /// left.
    fn eta(&self, elapsed: Duration) -> String {
        let left = self.total.saturating_sub(self.done);
        let rate = self.rate(elapsed);
        if self.queued + self.running == 0 && self.retrying > 0 && !self.listing {
            // Only failing imports left: no rate says when they succeed.
            "?".to_owned()
        } else if left == 0 && !self.listing {
            "0s".to_owned()
        } else if left > 0 && rate > 0.0 {
            let secs = (left as f64 / rate).ceil();
            let plus = if self.listing { "+" } else { "" };
            format!("{}{plus}", human(Duration::from_secs_f64(secs)))
        } else {
            "?".to_owned()
        }
    }

    /// The line printed every few seconds when there is no bar.
    fn plain_line(&self, elapsed: Duration) -> String {
        let plus = if self.listing { "+" } else { "" };
        let mut line = format!(
            "backfill: {}/{}{plus} repos done/listed, {} running, {} queued, {} failed",
            self.done, self.total, self.running, self.queued, self.failed_imports
        );
        if self.retrying > 0 {
            line.push_str(&format!(", {} to retry", self.retrying));
        }
        if self.list_errors > 0 {
            line.push_str(&format!(", {} listRepos errors", self.list_errors));
        }
        line.push_str(&format!(
            ", {:.1} repos/s, ETA {}",
            self.rate(elapsed),
            self.eta(elapsed)
        ));
        line
    }

    /// The bar's message: what its position and length do not say. The
    /// ETA is ours rather than indicatif's, which knows neither that the
    /// length still grows nor when nothing is known yet.
    fn message(&self, elapsed: Duration) -> String {
        let mut msg = String::new();
        if self.listing {
            msg.push_str(&format!("listed {}+ · ", self.total));
        }
        msg.push_str(&format!(
            "{} running · {} queued · {} failed",
            self.running, self.queued, self.failed_imports
        ));
        if self.retrying > 0 {
            msg.push_str(&format!(" · {} to retry", self.retrying));
        }
        if self.list_errors > 0 {
            msg.push_str(&format!(" · {} listRepos errors", self.list_errors));
        }
        msg.push_str(&format!(
            " · {:.1} repos/s · ETA {}",
            self.rate(elapsed),
            self.eta(elapsed)
        ));
        msg
    }
}

fn show(bar: &ProgressBar, counts: &Counts, elapsed: Duration) {
    if counts.total == 0 {
        // A length of 0 draws a full bar; no length draws an empty one.
        bar.unset_length();
    } else {
        bar.set_length(counts.total);
    }
    bar.set_position(counts.done);
    bar.set_message(counts.message(elapsed));
}

/// `3s`, `4m05s`, `2h07m`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A repo with nothing left to import: synchronized, and a head stored or
/// the host's word that the account is not active (nothing to fetch).
fn settled_repo(s: &barn_store::RepoState) -> bool {
    s.sync == SyncState::Synchronized && (s.head.is_some() || !s.active)
}

/// One reading of the mirror's progress.
struct Observed {
    counts: Counts,
    verdict: Verdict,
}

/// What is known of one whole host across polls.
#[derive(Debug, Default)]
struct Seen {
    /// The most the host's pass has listed.
    listed: u64,
    /// Repos already settled when the host first reported (a resumed
    /// pass); `None` until then.
    base: Option<u64>,
}

/// Follows the mirror's progress towards the end of the backfill.
struct Watch {
    whole: Vec<String>,
    accounts: Vec<String>,
    /// Accounts already held when the run started.
    held_accounts: u64,
    seen: HashMap<String, Seen>,
    retry_for: Duration,
    last_scan: Option<Instant>,
    /// Repos still marked for import at the last scan.
    retrying: usize,
    /// When the imports or listed counts last grew, and their values.
    moved: (Instant, (u64, u64)),
}

impl Watch {
    fn new(config: &Config, running: &Running, held_accounts: u64, retry_for: Duration) -> Watch {
        let accounts = config
            .accounts
            .iter()
            .filter(|d| !running.untracked.iter().any(|(u, _)| u == *d))
            .cloned()
            .collect();
        Watch {
            whole: config.hosts.clone(),
            accounts,
            held_accounts,
            seen: HashMap::new(),
            retry_for,
            last_scan: None,
            retrying: 0,
            moved: (Instant::now(), (0, 0)),
        }
    }

    fn observe(&mut self, running: &Running) -> anyhow::Result<Observed> {
        let progress = running.mirror.progress();
        let by_host: HashMap<&str, &HostProgress> =
            progress.iter().map(|p| (p.host.as_str(), p)).collect();
        let mut c = Counts::default();
        for p in &progress {
            c.queued += p.queued;
            c.running += p.importing;
            c.imported += p.imports_done.saturating_sub(p.imports_failed);
            c.failed_imports += p.imports_failed;
        }
        let list_errors = counter_by_host(&running.registry, "barn_mirror_list_failures_total");
        let stopped = counter_by_host(&running.registry, "barn_mirror_host_task_failures_total");

        let mut settled = true;
        let mut base = self.held_accounts;
        let mut listed = 0;
        let mut waited_hosts: Vec<String> = Vec::new();
        for host in &self.whole {
            waited_hosts.push(host.clone());
            let seen = self.seen.entry(host.clone()).or_default();
            let Some(p) = by_host.get(host.as_str()) else {
                settled = false;
                continue;
            };
            if let Some(pass) = &p.pass {
                seen.listed = seen.listed.max(pass.listed);
                c.listing = true;
            }
            // The task's first report: what it shows settled then was
            // settled by an earlier run.
            let reported =
                p.pass.is_some() || p.last_pass_done_ms.is_some() || p.queued + p.importing > 0;
            if seen.base.is_none() && reported {
                let pending = (p.queued + p.importing) as u64;
                let imported = p.imports_done.saturating_sub(p.imports_failed);
                seen.base = Some(seen.listed.saturating_sub(pending + imported));
            }
            base += seen.base.unwrap_or(0);
            listed += seen.listed;
            settled &= p.pass.is_none()
                && p.queued == 0
                && p.importing == 0
                && p.last_pass_done_ms.is_some();
        }
        for did in &self.accounts {
            match running.store.repo(did)? {
                None => settled = false,
                Some(s) => {
                    let host = normalize_host(&s.host);
                    if let Some(p) = by_host.get(host.as_str()) {
                        settled &= p.queued == 0 && p.importing == 0;
                    }
                    waited_hosts.push(host);
                }
            }
        }
        c.list_errors = waited_hosts.iter().filter_map(|h| list_errors.get(h)).sum();
        if let Some(host) = waited_hosts.iter().find(|h| stopped.contains_key(*h)) {
            bail!("the task following {host} stopped on an error (see the log above)");
        }
        if (c.imported, listed) != self.moved.1 {
            self.moved = (Instant::now(), (c.imported, listed));
        }
        let verdict = self.verdict(running, settled)?;
        c.retrying = self.retrying;
        c.done = base + c.imported;
        // A failed import waiting for its retry is in neither the queue
        // nor (when the listing was not seen) the listed count.
        let pending = (c.queued + c.running).max(c.retrying) as u64;
        c.total = (listed + self.accounts.len() as u64).max(c.done + pending);
        if verdict == Verdict::Done {
            // Everything listed is settled: the bar ends full.
            c.total = c.done;
        }
        Ok(Observed { counts: c, verdict })
    }

    /// Done, still working, or only failing imports left for too long.
    /// The clock for giving up runs from the last import that succeeded
    /// (or listing page), not from when the host last looked idle: a
    /// failing repo being retried makes the host busy for a moment on
    /// every retry.
    fn verdict(&mut self, running: &Running, settled: bool) -> anyhow::Result<Verdict> {
        if !settled || self.last_scan.is_some_and(|t| t.elapsed() < SCAN_EVERY) {
            return Ok(Verdict::Working);
        }
        self.last_scan = Some(Instant::now());
        let left = self.left_to_import(running)?;
        self.retrying = left;
        if left == 0 {
            Ok(Verdict::Done)
        } else if self.moved.0.elapsed() >= self.retry_for {
            Ok(Verdict::GaveUp { left })
        } else {
            Ok(Verdict::Working)
        }
    }

    /// Repos of the waited-for hosts and accounts still marked for import.
    fn left_to_import(&self, running: &Running) -> anyhow::Result<usize> {
        let mut left = 0;
        for (did, s) in running.store.repos()? {
            if s.sync != SyncState::Desynchronized {
                continue;
            }
            if self.accounts.contains(&did) || self.whole.contains(&normalize_host(&s.host)) {
                left += 1;
            }
        }
        Ok(left)
    }
}

/// A counter's value per `host` label, summed over its other labels.
fn counter_by_host(registry: &prometheus::Registry, name: &str) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        for m in family.get_metric() {
            if let Some(host) = m.get_label().iter().find(|l| l.name() == "host") {
                *out.entry(host.value().to_owned()).or_default() +=
                    m.get_counter().get_value() as u64;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(human(Duration::from_secs(2)), "2s");
        assert_eq!(human(Duration::from_secs(245)), "4m05s");
        assert_eq!(human(Duration::from_secs(7620)), "2h07m");
    }

    #[test]
    fn the_plain_line_says_what_the_bar_shows() {
        let c = Counts {
            done: 37,
            total: 60,
            listing: true,
            queued: 3,
            running: 4,
            imported: 37,
            failed_imports: 0,
            list_errors: 0,
            retrying: 0,
        };
        assert_eq!(
            c.plain_line(Duration::from_secs(10)),
            "backfill: 37/60+ repos done/listed, 4 running, 3 queued, 0 failed, 3.7 repos/s, ETA 7s+"
        );
        let stuck = Counts {
            done: 0,
            total: 0,
            listing: true,
            list_errors: 5,
            ..Counts::default()
        };
        assert_eq!(
            stuck.plain_line(Duration::from_secs(30)),
            "backfill: 0/0+ repos done/listed, 0 running, 0 queued, 0 failed, 5 listRepos errors, 0.0 repos/s, ETA ?"
        );
        assert_eq!(
            c.message(Duration::from_secs(10)),
            "listed 60+ · 4 running · 3 queued · 0 failed · 3.7 repos/s · ETA 7s+"
        );
    }
}
