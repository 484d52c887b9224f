//! The Kafka watcher: follows Kafka brokers' authorizer logs and feeds them to the mapper
//! ([`mapper_core::Mapper::observe_kafka_log`] reads them).
//!
//! - **Broker pods** (`--kafka-brokers NAMESPACE/POD` or `NAMESPACE/SELECTOR`): a watch per
//!   selector keeps the set of running broker pods; each is followed through the pod log
//!   endpoint (`follow=true`, `timestamps=true`). Pods running when the watcher starts are read
//!   from now on (`tailLines=0`) unless `--kafka-read-from-start`; pods that start later are
//!   read from their beginning, since all of it is new. After a disconnection the stream
//!   resumes with `sinceTime` at the start of the second of the last line counted and a
//!   [`LogCursor`] skips what was already counted; a line cut by the disconnection is never
//!   read half. Deleted pods stop being followed.
//! - **Files** (`--kafka-log-file PATH=NAMESPACE/WORKLOAD`, brokers outside the cluster): read
//!   from the end at start (from the beginning with `--kafka-read-from-start`), then polled for
//!   appends; a file replaced at its path (rotation) is finished and the new one read from its
//!   start; a file that shrank (truncation, `copytruncate`) is read again from its start.
//!   Lines are stamped with the time they are read.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use mapper_core::kafka::split_api_timestamp;
use mapper_core::{KafkaBroker, LineSplitter, LogCursor, StreamStart};
use model::WorkloadRef;
use tokio::task::JoinHandle;

use super::telemetry::Telemetry;
use super::SharedMapper;

/// Lines longer than this are dropped (an authorizer line is a few hundred bytes).
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// How often log files are checked for new lines.
pub const FILE_POLL_INTERVAL: Duration = Duration::from_millis(250);
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Which broker pods to follow: `NAMESPACE/POD` or `NAMESPACE/LABEL-SELECTOR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerSelector {
    Pod { namespace: String, name: String },
    Labels { namespace: String, selector: String },
}

impl FromStr for BrokerSelector {
    type Err = String;

    /// A pod name is a DNS subdomain; anything else after the namespace is a label selector
    /// (`app.kubernetes.io/name=kafka`, `strimzi.io/kind=Kafka,strimzi.io/name=my-cluster-kafka`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || {
            format!("{s:?}: expected NAMESPACE/POD or NAMESPACE/LABEL-SELECTOR, for example kafka/kafka-0 or kafka/app.kubernetes.io/name=kafka")
        };
        let (namespace, rest) = s.trim().split_once('/').ok_or_else(usage)?;
        if namespace.is_empty() || rest.is_empty() || !is_dns_label(namespace) {
            return Err(usage());
        }
        let is_name = rest.len() <= 253 && rest.split('.').all(is_dns_label);
        Ok(if is_name {
            BrokerSelector::Pod { namespace: namespace.to_owned(), name: rest.to_owned() }
        } else {
            BrokerSelector::Labels { namespace: namespace.to_owned(), selector: rest.to_owned() }
        })
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A broker log file and the workload it is the log of: `PATH=NAMESPACE/WORKLOAD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerLogFile {
    pub path: PathBuf,
    pub broker: WorkloadRef,
}

impl FromStr for BrokerLogFile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || {
            format!("{s:?}: expected PATH=NAMESPACE/WORKLOAD, for example /var/log/kafka/server.log=data/kafka-vm")
        };
        let (path, workload) = s.rsplit_once('=').ok_or_else(usage)?;
        let (namespace, name) = workload.trim().split_once('/').ok_or_else(usage)?;
        if path.is_empty()
            || !is_dns_label(namespace)
            || name.is_empty()
            || !name.split('.').all(is_dns_label)
        {
            return Err(usage());
        }
        Ok(BrokerLogFile {
            path: PathBuf::from(path),
            broker: WorkloadRef::new(namespace, name, None),
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct KafkaConfig {
    pub brokers: Vec<BrokerSelector>,
    pub files: Vec<BrokerLogFile>,
    /// Read what the logs already hold when the watcher starts, not only what comes after.
    pub read_from_start: bool,
    /// The broker container; default: the one named `kafka`, else the pod's first.
    pub container: Option<String>,
}

impl KafkaConfig {
    pub fn is_empty(&self) -> bool {
        self.brokers.is_empty() && self.files.is_empty()
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Starts a follower for every broker selector and log file; they run until the process ends.
pub fn spawn(
    client: kube::Client,
    mapper: SharedMapper,
    telemetry: Arc<Telemetry>,
    config: KafkaConfig,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for selector in config.brokers.clone() {
        let (client, mapper, telemetry, config) =
            (client.clone(), mapper.clone(), telemetry.clone(), config.clone());
        tasks.push(tokio::spawn(watch_brokers(client, selector, mapper, telemetry, config)));
    }
    for file in config.files.clone() {
        tasks.push(tokio::spawn(follow_file(
            file,
            config.read_from_start,
            mapper.clone(),
            telemetry.clone(),
        )));
    }
    tasks
}

/// Resolving hosts needs the inventory: nothing is read before every watch has listed.
async fn until_ready(telemetry: &Telemetry) {
    while !telemetry.listed() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// === Broker pods ===

/// A broker pod being followed; dropping it stops the follower.
struct Followed {
    uid: String,
    task: JoinHandle<()>,
    telemetry: Arc<Telemetry>,
}

impl Followed {
    fn new(uid: String, task: JoinHandle<()>, telemetry: Arc<Telemetry>) -> Self {
        telemetry.kafka.streams.fetch_add(1, Ordering::Relaxed);
        Self { uid, task, telemetry }
    }
}

impl Drop for Followed {
    fn drop(&mut self) {
        self.task.abort();
        self.telemetry.kafka.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn watch_brokers(
    client: kube::Client,
    selector: BrokerSelector,
    mapper: SharedMapper,
    telemetry: Arc<Telemetry>,
    config: KafkaConfig,
) {
    until_ready(&telemetry).await;
    let (namespace, watch_config) = match &selector {
        BrokerSelector::Pod { namespace, name } => {
            (namespace, watcher::Config::default().fields(&format!("metadata.name={name}")))
        }
        BrokerSelector::Labels { namespace, selector } => {
            (namespace, watcher::Config::default().labels(selector))
        }
    };
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let mut stream = watcher::watcher(api.clone(), watch_config).default_backoff().boxed();
    let mut followed: HashMap<String, Followed> = HashMap::new();
    // Pods running at the first list are read from now on; pods that start later from their start.
    let mut listed_once = false;
    let mut initial = Vec::new();
    let follow = |pod: &Pod, from_start: bool, followed: &mut HashMap<String, Followed>| {
        let (Some(name), Some(uid)) = (pod.metadata.name.clone(), pod.metadata.uid.clone()) else {
            return;
        };
        if followed.get(&name).is_some_and(|f| f.uid == uid) || !is_running(pod) {
            return;
        }
        let Some(container) = container_of(pod, config.container.as_deref()) else {
            tracing::warn!(pod = %name, container = ?config.container, "the broker pod has no such container; not followed");
            return;
        };
        tracing::info!(%namespace, pod = %name, %container, from_start, "following the broker's authorizer log");
        let broker = BrokerFollower {
            api: api.clone(),
            pod: name.clone(),
            container,
            namespace: namespace.clone(),
            mapper: mapper.clone(),
            telemetry: telemetry.clone(),
        };
        let cursor = if from_start { LogCursor::from_start() } else { LogCursor::from(Utc::now()) };
        followed
            .insert(name, Followed::new(uid, tokio::spawn(broker.run(cursor)), telemetry.clone()));
    };
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => initial.clear(),
            Ok(Event::InitApply(pod)) => initial.push(pod),
            Ok(Event::InitDone) => {
                let present: HashMap<&str, &str> = initial
                    .iter()
                    .filter(|p| is_running(p))
                    .filter_map(|p| Some((p.metadata.name.as_deref()?, p.metadata.uid.as_deref()?)))
                    .collect();
                followed.retain(|name, f| present.get(name.as_str()) == Some(&f.uid.as_str()));
                for pod in &initial {
                    follow(pod, listed_once || config.read_from_start, &mut followed);
                }
                listed_once = true;
                initial.clear();
            }
            Ok(Event::Apply(pod)) if is_running(&pod) => follow(&pod, true, &mut followed),
            Ok(Event::Apply(pod) | Event::Delete(pod)) => {
                if let Some(name) = pod.metadata.name.as_deref() {
                    if followed.remove(name).is_some() {
                        tracing::info!(%namespace, pod = %name, "broker pod gone; no longer followed");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(?selector, error = %e, "watching Kafka broker pods failed; retrying with backoff")
            }
        }
    }
}

fn is_running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn container_of(pod: &Pod, wanted: Option<&str>) -> Option<String> {
    let containers = &pod.spec.as_ref()?.containers;
    match wanted {
        Some(wanted) => containers.iter().find(|c| c.name == wanted),
        None => containers.iter().find(|c| c.name == "kafka").or_else(|| containers.first()),
    }
    .map(|c| c.name.clone())
}

struct BrokerFollower {
    api: Api<Pod>,
    namespace: String,
    pod: String,
    container: String,
    mapper: SharedMapper,
    telemetry: Arc<Telemetry>,
}

impl BrokerFollower {
    async fn run(self, mut cursor: LogCursor) {
        // The broker's workload comes from the index: wait until its pod watch has the pod.
        while self.mapper.lock().index.pod_workload(&self.namespace, &self.pod).is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let broker = KafkaBroker::Pod { namespace: self.namespace.clone(), name: self.pod.clone() };
        let stats = &self.telemetry.kafka;
        let mut first = true;
        let mut failures: u32 = 0;
        loop {
            let mut params = LogParams {
                follow: true,
                timestamps: true,
                container: Some(self.container.clone()),
                ..LogParams::default()
            };
            match cursor.begin_stream() {
                StreamStart::NewLines => params.tail_lines = Some(0),
                StreamStart::Since(since) => {
                    params.since_time = Some(
                        k8s_openapi::jiff::Timestamp::from_second(since.timestamp())
                            .expect("a time the API stamped is representable"),
                    )
                }
                StreamStart::Beginning => {}
            }
            if !std::mem::replace(&mut first, false) {
                bump(&stats.reconnects);
            }
            match self.api.log_stream(&self.pod, &params).await {
                Ok(reader) => {
                    failures = 0;
                    if let Err(e) = self.read(Box::pin(reader), &broker, &mut cursor).await {
                        tracing::debug!(pod = %self.pod, error = %e, "broker log stream failed; resuming");
                    }
                    tokio::time::sleep(RECONNECT_DELAY).await;
                }
                Err(e) => {
                    bump(&stats.errors);
                    failures = failures.saturating_add(1);
                    let delay =
                        (RECONNECT_DELAY * 2u32.saturating_pow(failures.min(8))).min(MAX_BACKOFF);
                    tracing::warn!(pod = %self.pod, error = %e, retry_in = ?delay, "cannot read the broker's log");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Reads one stream to its end, feeding complete, new lines to the mapper.
    async fn read(
        &self,
        reader: impl futures::AsyncBufRead + Unpin,
        broker: &KafkaBroker,
        cursor: &mut LogCursor,
    ) -> std::io::Result<()> {
        let stats = &self.telemetry.kafka;
        let mut reader = reader;
        let mut splitter = LineSplitter::new(MAX_LINE_BYTES);
        let overlong = |splitter: &LineSplitter, reported: &mut u64| {
            stats.overlong_lines.fetch_add(splitter.overlong() - *reported, Ordering::Relaxed);
            *reported = splitter.overlong();
        };
        let mut reported = 0;
        let result = loop {
            let chunk = match reader.fill_buf().await {
                Ok([]) => break Ok(()),
                Ok(chunk) => chunk,
                Err(e) => break Err(e),
            };
            let mut lines: Vec<(DateTime<Utc>, String)> = Vec::new();
            let read = chunk.len();
            splitter.push(chunk, |line| match split_api_timestamp(line) {
                Some((at, rest)) if cursor.admit(at) => lines.push((at, rest.to_owned())),
                Some(_) => bump(&stats.replayed_lines),
                None => lines.push((Utc::now(), line.to_owned())),
            });
            reader.consume_unpin(read);
            overlong(&splitter, &mut reported);
            if !lines.is_empty() {
                let mut mapper = self.mapper.lock();
                mapper.observe_kafka_log(
                    broker,
                    lines.iter().map(|(at, line)| (*at, line.as_str())),
                    Utc::now(),
                );
            }
        };
        if splitter.finish() {
            bump(&stats.cut_lines);
        }
        result
    }
}

// === Files ===

async fn follow_file(
    file: BrokerLogFile,
    from_start: bool,
    mapper: SharedMapper,
    telemetry: Arc<Telemetry>,
) {
    until_ready(&telemetry).await;
    tracing::info!(path = %file.path.display(), broker = %file.broker, from_start, "following a Kafka log file");
    let broker = KafkaBroker::Workload(file.broker.clone());
    let mut tail = FileTail::new(file.path.clone(), from_start, telemetry.clone());
    let mut warned = false;
    let mut opened = false;
    loop {
        let (back, result) = tokio::task::spawn_blocking(move || {
            let result = tail.poll();
            (tail, result)
        })
        .await
        .expect("the file reader does not panic");
        tail = back;
        if !opened && tail.file.is_some() {
            opened = true;
            telemetry.kafka.streams.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            Ok(lines) if !lines.is_empty() => {
                warned = false;
                let now = Utc::now();
                mapper.lock().observe_kafka_log(
                    &broker,
                    lines.iter().map(|l| (now, l.as_str())),
                    now,
                );
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                bump(&telemetry.kafka.errors);
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!(path = %file.path.display(), error = %e, "cannot read the Kafka log file; retrying");
                }
            }
        }
        tokio::time::sleep(FILE_POLL_INTERVAL).await;
    }
}

/// A log file followed across appends, rotations and truncations.
struct FileTail {
    path: PathBuf,
    file: Option<File>,
    /// (device, inode) of the open file.
    identity: (u64, u64),
    offset: u64,
    splitter: LineSplitter,
    /// Started at the end of a file in the middle of a line: its rest is no line.
    skip_partial: bool,
    /// The first open reads from the start (else from the end); later ones always do.
    from_start: bool,
    telemetry: Arc<Telemetry>,
}

/// At most this much is read per poll, so a huge backlog is fed in steps.
const MAX_READ_PER_POLL: u64 = 4 << 20;

impl FileTail {
    fn new(path: PathBuf, from_start: bool, telemetry: Arc<Telemetry>) -> Self {
        Self {
            path,
            file: None,
            identity: (0, 0),
            offset: 0,
            splitter: LineSplitter::new(MAX_LINE_BYTES),
            skip_partial: false,
            from_start,
            telemetry,
        }
    }

    /// The complete lines added since the last poll.
    fn poll(&mut self) -> std::io::Result<Vec<String>> {
        let mut lines = Vec::new();
        let at_path = match std::fs::metadata(&self.path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if self.file.is_some()
            && at_path.as_ref().map(|m| (m.dev(), m.ino())) != Some(self.identity)
        {
            // Rotated (or removed): finish the old file, then take the new one from its start.
            self.read_available(&mut lines)?;
            self.splitter.finish();
            self.file = None;
            self.from_start = true;
            bump(&self.telemetry.kafka.file_rotations);
        }
        if self.file.is_none() {
            if at_path.is_none() {
                // Not there (yet): whatever appears at the path later is new.
                self.from_start = true;
                return Ok(lines);
            }
            let mut file = File::open(&self.path)?;
            let meta = file.metadata()?;
            self.identity = (meta.dev(), meta.ino());
            self.offset = if self.from_start { 0 } else { meta.len() };
            self.skip_partial = false;
            if self.offset > 0 {
                let mut last = [0u8];
                file.seek(SeekFrom::Start(self.offset - 1))?;
                file.read_exact(&mut last)?;
                self.skip_partial = last[0] != b'\n';
            }
            file.seek(SeekFrom::Start(self.offset))?;
            self.file = Some(file);
            self.from_start = true;
        }
        let length = self.file.as_ref().map(File::metadata).transpose()?.map_or(0, |m| m.len());
        if length < self.offset {
            // Truncated in place: what is there now was written since.
            if let Some(file) = self.file.as_mut() {
                file.seek(SeekFrom::Start(0))?;
            }
            self.offset = 0;
            self.splitter.finish();
            self.skip_partial = false;
            bump(&self.telemetry.kafka.file_truncations);
        }
        self.read_available(&mut lines)?;
        Ok(lines)
    }

    fn read_available(&mut self, lines: &mut Vec<String>) -> std::io::Result<()> {
        let Some(file) = self.file.as_mut() else { return Ok(()) };
        let mut buffer = vec![0u8; 64 * 1024];
        let mut read_now = 0;
        while read_now < MAX_READ_PER_POLL {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            self.offset += n as u64;
            read_now += n as u64;
            let mut chunk = &buffer[..n];
            if self.skip_partial {
                match chunk.iter().position(|b| *b == b'\n') {
                    Some(end) => {
                        self.skip_partial = false;
                        chunk = &chunk[end + 1..];
                    }
                    None => continue,
                }
            }
            let before = self.splitter.overlong();
            self.splitter.push(chunk, |line| lines.push(line.to_owned()));
            self.telemetry
                .kafka
                .overlong_lines
                .fetch_add(self.splitter.overlong() - before, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_selectors_tell_pod_names_from_label_selectors() {
        assert_eq!(
            "kafka/kafka-0".parse(),
            Ok(BrokerSelector::Pod { namespace: "kafka".into(), name: "kafka-0".into() })
        );
        assert_eq!(
            "kafka/app.kubernetes.io/name=kafka".parse(),
            Ok(BrokerSelector::Labels {
                namespace: "kafka".into(),
                selector: "app.kubernetes.io/name=kafka".into()
            })
        );
        assert_eq!(
            "kafka/strimzi.io/kind=Kafka,strimzi.io/name=my-cluster-kafka"
                .parse::<BrokerSelector>()
                .map(|s| matches!(s, BrokerSelector::Labels { .. })),
            Ok(true)
        );
        assert_eq!(
            "kafka/broker".parse(),
            Ok(BrokerSelector::Pod { namespace: "kafka".into(), name: "broker".into() })
        );
        assert!("kafka-0".parse::<BrokerSelector>().is_err());
        assert!("/kafka-0".parse::<BrokerSelector>().is_err());
        assert!("Kafka/kafka-0".parse::<BrokerSelector>().is_err());
    }

    #[test]
    fn log_files_name_their_broker_workload() {
        let file: BrokerLogFile = "/var/log/kafka/server.log=data/kafka-vm".parse().unwrap();
        assert_eq!(
            file,
            BrokerLogFile {
                path: "/var/log/kafka/server.log".into(),
                broker: WorkloadRef::new("data", "kafka-vm", None)
            }
        );
        let odd: BrokerLogFile = "/logs/a=b/server.log=data/kafka".parse().unwrap();
        assert_eq!(odd.path, PathBuf::from("/logs/a=b/server.log"));
        assert!("/var/log/kafka/server.log".parse::<BrokerLogFile>().is_err());
        assert!("/var/log/kafka/server.log=kafka-vm".parse::<BrokerLogFile>().is_err());
        assert!("=data/kafka".parse::<BrokerLogFile>().is_err());
    }
}
