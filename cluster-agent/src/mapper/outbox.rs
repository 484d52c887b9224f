//! A persistent, bounded outbox of [`EdgeReport`]s on their way to the cloud.
//!
//! The mapper writes every report here before it tries to send it, and deletes it only once the
//! cloud has acknowledged it, so a cloud outage or a restart of the mapper loses nothing (mount
//! the directory from a volume). The cloud applies a `report_id` at most once, so sending a
//! report again after a lost acknowledgement is harmless.
//!
//! **Layout.** One JSON file per report, `<sequence>-<report_id>.json`, where the sequence is
//! the time of the push in Unix nanoseconds, zero-padded to 20 digits and forced to increase
//! strictly, so the names sort oldest first. A report is written to `<name>.tmp`, fsynced,
//! renamed into place and the directory fsynced: a file with the final name is always complete.
//! Files are created 0600 (reports name every workload and what it calls), and older files are
//! made so on opening. Files that cannot be read back are renamed to `*.corrupt`; reports the
//! cloud refuses for good are renamed to `*.rejected` (see [`Outbox::reject`]), and reports it
//! keeps failing on while later ones go through to `*.failed` (see
//! [`Outbox::set_aside_failed`]). All are kept for inspection, at most
//! [`OutboxLimits::max_quarantined`] of them, the oldest removed first.
//!
//! **Only the oldest report is ever sent** (the uploader drains strictly in order), so it is
//! the only one that may have been applied by the cloud without the acknowledgement reaching
//! us. That is why compaction never touches it.
//!
//! **Overflow: merge, then drop as a last resort.** The outbox is bounded by
//! [`OutboxLimits::max_reports`] and [`OutboxLimits::max_bytes`]. When a push takes it over
//! either bound, the oldest pending reports after the first are merged into one report with a
//! new id: edges with [`model::merge_edges`] (windows widen, counts add, so nothing observed is
//! lost and nothing is counted twice), `generated_at` and `exposed` from the newest of them. A
//! merge takes about half of the mergeable reports, capped at the cloud's limits on edges and
//! list entries a report and on each edge's lists, and at [`MAX_MERGED_BYTES`] of input, so
//! the result is still a report the cloud accepts.
//! A merge is crash-safe: a small journal names the merged file and the files it replaces, so
//! reopening the outbox either completes the merge or forgets it, never keeping both. Only
//! when merging cannot bring the outbox back under its bounds (reports too large or too
//! distinct to merge) is the oldest report dropped; every drop is logged at `error` level with
//! its id and edge count and counted in [`OutboxStats::dropped`]. A single report larger than
//! `max_bytes` is kept.
//!
//! The outbox assumes it is the only writer of its directory (one mapper per volume). Its
//! methods do small, synchronous file I/O.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use model::EdgeReport;
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};
use uuid::Uuid;

/// A merge reads at most this many bytes of reports, so that the merged report stays well under
/// the cloud's default body limits (16 MiB compressed, 64 MiB decompressed).
pub const MAX_MERGED_BYTES: u64 = 32 << 20;

const REPORT_SUFFIX: &str = ".json";
const TMP_SUFFIX: &str = ".tmp";
const CORRUPT_SUFFIX: &str = ".corrupt";
const REJECTED_SUFFIX: &str = ".rejected";
const FAILED_SUFFIX: &str = ".failed";
const JOURNAL: &str = "compaction.journal";

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("encoding report {report_id} as JSON: {source}")]
    Encode {
        report_id: Uuid,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = OutboxError> = std::result::Result<T, E>;

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> OutboxError {
    let path = path.to_owned();
    move |source| OutboxError::Io { action, path, source }
}

/// How large the outbox may grow before its oldest reports are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Pending reports (at least 2 is enforced).
    pub max_reports: usize,
    /// Total size of the pending report files.
    pub max_bytes: u64,
    /// `*.corrupt`, `*.rejected` and `*.failed` files kept for inspection.
    pub max_quarantined: usize,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        Self { max_reports: 1000, max_bytes: 256 << 20, max_quarantined: 100 }
    }
}

/// What the outbox did on its own, for metrics.
#[derive(Debug, Default)]
pub struct OutboxStats {
    /// Unreadable files renamed to `*.corrupt`.
    pub corrupt: AtomicU64,
    /// Merges done to stay within the limits.
    pub compactions: AtomicU64,
    /// Reports folded into merged reports.
    pub merged: AtomicU64,
    /// Reports dropped because merging could not keep the outbox within its limits.
    pub dropped: AtomicU64,
    /// Edges in the dropped reports.
    pub dropped_edges: AtomicU64,
}

/// A directory of pending reports. See the module documentation.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    limits: OutboxLimits,
    last_seq: u64,
    stats: Arc<OutboxStats>,
}

/// A pending report file.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    seq: u64,
    id: Uuid,
    size: u64,
}

/// Written before a merged report appears, removed once the reports it replaces are gone.
#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    merged: String,
    replaces: Vec<String>,
}

fn parse_name(name: &str) -> Option<(u64, Uuid)> {
    let stem = name.strip_suffix(REPORT_SUFFIX)?;
    let (seq, id) = stem.split_once('-')?;
    if seq.len() != 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((seq.parse().ok()?, id.parse().ok()?))
}

fn file_name(seq: u64, id: Uuid) -> String {
    format!("{seq:020}-{id}{REPORT_SUFFIX}")
}

/// Files written by versions that left them readable by everyone (0644) become 0600.
fn make_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::symlink_metadata(path) {
            if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
                let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
            }
        }
    }
}

/// A new file only its owner can read: reports name every workload and what it calls.
fn private_file(path: &Path) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Outbox {
    /// Opens (creating it if needed) the outbox in `dir` with the default limits.
    pub fn open(dir: impl AsRef<Path>) -> Result<Outbox> {
        Self::open_with(dir, OutboxLimits::default())
    }

    /// Opens the outbox in `dir`: finishes or forgets an interrupted merge and removes
    /// half-written files left by a crash.
    pub fn open_with(dir: impl AsRef<Path>, limits: OutboxLimits) -> Result<Outbox> {
        let dir = dir.as_ref().to_owned();
        fs::create_dir_all(&dir).map_err(io_err("creating the outbox directory", &dir))?;
        let limits = OutboxLimits { max_reports: limits.max_reports.max(2), ..limits };
        let mut outbox = Outbox { dir, limits, last_seq: 0, stats: Arc::default() };
        outbox.recover()?;
        let entries = outbox.scan()?;
        outbox.last_seq = entries.iter().map(|e| e.seq).max().unwrap_or(0);
        let bytes: u64 = entries.iter().map(|e| e.size).sum();
        info!(dir = %outbox.dir.display(), pending = entries.len(), bytes, "outbox opened");
        Ok(outbox)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn limits(&self) -> OutboxLimits {
        self.limits
    }

    pub fn stats(&self) -> Arc<OutboxStats> {
        self.stats.clone()
    }

    /// Stores `report` durably. Once this returns `Ok`, the report survives a crash. If the
    /// outbox is then over its limits, its oldest reports are merged (see the module
    /// documentation); a failure to do so is logged, not returned, since the report is safe.
    pub fn push(&mut self, report: &EdgeReport) -> Result<()> {
        let bytes = serde_json::to_vec(report)
            .map_err(|source| OutboxError::Encode { report_id: report.report_id, source })?;
        let seq = now_nanos().max(self.last_seq + 1);
        let name = file_name(seq, report.report_id);
        self.write_atomic(&name, &bytes)?;
        self.last_seq = seq;
        debug!(report_id = %report.report_id, edges = report.edges.len(), bytes = bytes.len(), file = %name, "report stored in the outbox");
        if let Err(e) = self.enforce_limits() {
            warn!(error = %e, "could not bring the outbox back within its limits; will try again on the next push");
        }
        Ok(())
    }

    /// Every pending report, oldest first. Unreadable files are renamed to `*.corrupt` (with a
    /// warning) and skipped.
    pub fn pending(&self) -> Result<Vec<EdgeReport>> {
        let mut reports = Vec::new();
        for entry in self.scan()? {
            if let Some(report) = self.read_or_quarantine(&entry) {
                reports.push(report);
            }
        }
        Ok(reports)
    }

    /// The oldest readable pending report, quarantining unreadable ones on the way.
    pub fn oldest(&self) -> Result<Option<EdgeReport>> {
        for entry in self.scan()? {
            if let Some(report) = self.read_or_quarantine(&entry) {
                return Ok(Some(report));
            }
        }
        Ok(None)
    }

    /// How many reports are pending (unreadable files included until they are read).
    pub fn len(&self) -> Result<usize> {
        Ok(self.scan()?.len())
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes the report once the cloud has acknowledged it. Acknowledging a report that is
    /// not (or no longer) pending is not an error.
    pub fn ack(&mut self, report_id: Uuid) -> Result<()> {
        let mut removed = false;
        for entry in self.scan()?.into_iter().filter(|e| e.id == report_id) {
            let path = self.dir.join(&entry.name);
            match fs::remove_file(&path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing acknowledged report", &path)(e)),
            }
        }
        if removed {
            self.sync_dir();
        }
        Ok(())
    }

    /// Sets aside a report the cloud refused for good (renamed to `*.rejected`), so that it
    /// cannot block the reports behind it.
    pub fn reject(&mut self, report_id: Uuid, reason: &str) -> Result<()> {
        for entry in self.scan()?.into_iter().filter(|e| e.id == report_id) {
            error!(report_id = %report_id, file = %entry.name, reason, "the cloud rejected the report; set aside as *.rejected and skipped");
            self.quarantine(&entry.name, REJECTED_SUFFIX)?;
        }
        Ok(())
    }

    /// The readable pending report right after `report_id` (which stays where it is).
    pub fn next_after(&self, report_id: Uuid) -> Result<Option<EdgeReport>> {
        let entries = self.scan()?;
        let Some(at) = entries.iter().position(|e| e.id == report_id) else { return Ok(None) };
        Ok(entries[at + 1..].iter().find_map(|entry| self.read_or_quarantine(entry)))
    }

    /// Sets aside a report the cloud keeps failing on (renamed to `*.failed`), so that it
    /// cannot block the reports behind it. Kept for inspection; renamed back to `.json`, it is
    /// sent again.
    pub fn set_aside_failed(&mut self, report_id: Uuid) -> Result<()> {
        for entry in self.scan()?.into_iter().filter(|e| e.id == report_id) {
            self.quarantine(&entry.name, FAILED_SUFFIX)?;
        }
        Ok(())
    }

    // === internals ===

    /// Pending report files, oldest first. Stray `*.json` files with names this outbox does not
    /// write are quarantined.
    fn scan(&self) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        let listing = fs::read_dir(&self.dir).map_err(io_err("listing the outbox", &self.dir))?;
        for item in listing {
            let item = item.map_err(io_err("listing the outbox", &self.dir))?;
            let Ok(name) = item.file_name().into_string() else { continue };
            if !name.ends_with(REPORT_SUFFIX) {
                continue;
            }
            let Some((seq, id)) = parse_name(&name) else {
                warn!(file = %name, "file in the outbox is not named <sequence>-<report id>.json; set aside as *.corrupt");
                self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                let _ = self.quarantine(&name, CORRUPT_SUFFIX);
                continue;
            };
            let size = match item.metadata() {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => 0,
            };
            entries.push(Entry { name, seq, id, size });
        }
        entries.sort_by(|a, b| (a.seq, &a.name).cmp(&(b.seq, &b.name)));
        Ok(entries)
    }

    fn read(&self, entry: &Entry) -> Result<EdgeReport, String> {
        let bytes =
            fs::read(self.dir.join(&entry.name)).map_err(|e| format!("cannot read it: {e}"))?;
        let report: EdgeReport =
            serde_json::from_slice(&bytes).map_err(|e| format!("not a report: {e}"))?;
        if report.report_id != entry.id {
            return Err(format!(
                "its name says report {} but it holds report {}",
                entry.id, report.report_id
            ));
        }
        Ok(report)
    }

    fn read_or_quarantine(&self, entry: &Entry) -> Option<EdgeReport> {
        match self.read(entry) {
            Ok(report) => Some(report),
            Err(problem) => {
                warn!(file = %entry.name, problem, "unreadable report in the outbox; set aside as *.corrupt and skipped");
                self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.quarantine(&entry.name, CORRUPT_SUFFIX) {
                    warn!(file = %entry.name, error = %e, "could not set the unreadable report aside");
                }
                None
            }
        }
    }

    /// Renames `name` to `name<suffix>` and prunes the oldest quarantined files over the limit.
    fn quarantine(&self, name: &str, suffix: &str) -> Result<()> {
        let from = self.dir.join(name);
        let to = self.dir.join(format!("{name}{suffix}"));
        match fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("setting aside", &from)(e)),
        }
        self.prune_quarantined();
        self.sync_dir();
        Ok(())
    }

    fn prune_quarantined(&self) {
        let Ok(listing) = fs::read_dir(&self.dir) else { return };
        let mut names: Vec<String> = listing
            .filter_map(|item| item.ok()?.file_name().into_string().ok())
            .filter(|n| {
                n.ends_with(CORRUPT_SUFFIX)
                    || n.ends_with(REJECTED_SUFFIX)
                    || n.ends_with(FAILED_SUFFIX)
            })
            .collect();
        if names.len() <= self.limits.max_quarantined {
            return;
        }
        names.sort();
        let excess = names.len() - self.limits.max_quarantined;
        for name in &names[..excess] {
            debug!(file = %name, "removing an old set-aside report");
            let _ = fs::remove_file(self.dir.join(name));
        }
    }

    /// Writes `name` so that it either exists complete or not at all.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        let path = self.dir.join(name);
        let written = (|| {
            let mut file = private_file(&tmp).map_err(io_err("creating", &tmp))?;
            file.write_all(bytes).map_err(io_err("writing", &tmp))?;
            file.sync_all().map_err(io_err("syncing", &tmp))?;
            fs::rename(&tmp, &path).map_err(io_err("renaming into place", &path))
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        // The file is in place; failing to sync the directory only weakens durability on power loss.
        self.sync_dir();
        Ok(())
    }

    fn sync_dir(&self) {
        #[cfg(unix)]
        if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            warn!(dir = %self.dir.display(), error = %e, "could not sync the outbox directory");
        }
    }

    fn remove(&self, name: &str) -> Result<()> {
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Completes or forgets a merge interrupted by a crash, and removes half-written files.
    fn recover(&mut self) -> Result<()> {
        let journal_path = self.dir.join(JOURNAL);
        match fs::read(&journal_path) {
            Ok(bytes) => {
                match serde_json::from_slice::<Journal>(&bytes) {
                    Ok(journal) if self.dir.join(&journal.merged).exists() => {
                        info!(merged = %journal.merged, replaced = journal.replaces.len(), "completing an interrupted outbox merge");
                        for name in &journal.replaces {
                            self.remove(name)?;
                        }
                    }
                    Ok(journal) => {
                        info!(merged = %journal.merged, "forgetting an outbox merge that did not complete; its reports are intact")
                    }
                    // The journal is written atomically, so this is someone else's file.
                    Err(e) => warn!(error = %e, "ignoring an unreadable outbox merge journal"),
                }
                self.sync_dir();
                self.remove(JOURNAL)?;
                self.sync_dir();
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("reading", &journal_path)(e)),
        }
        let listing = fs::read_dir(&self.dir).map_err(io_err("listing the outbox", &self.dir))?;
        for item in listing.flatten() {
            if let Ok(name) = item.file_name().into_string() {
                if name.ends_with(TMP_SUFFIX) {
                    debug!(file = %name, "removing a half-written file");
                    self.remove(&name)?;
                } else {
                    make_private(&item.path());
                }
            }
        }
        Ok(())
    }
}

mod compact;
#[cfg(test)]
mod tests;
