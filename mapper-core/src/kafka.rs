//! Kafka topic access from the brokers' authorizer log.
//!
//! With `log4j.logger.kafka.authorizer.logger=DEBUG` a broker logs every authorization it
//! decides (denials at INFO, grants at DEBUG), in one of these forms:
//!
//! ```text
//! [2023-03-12 13:51:55,904] INFO Principal = User:CN=myclient is Denied Operation = Describe from host = 10.244.0.27 on resource = Topic:LITERAL:mytopic for request = Metadata with resourceRefCount = 1 (kafka.authorizer.logger)
//! [2023-03-12 13:51:56,001] DEBUG Principal = User:alice is Allowed Operation = Read from host = 10.244.0.9 on resource = Topic:orders (kafka.authorizer.logger)
//! [2024-05-02 08:00:00,000] INFO Principal = User:bob is Denied operation = READ from host = 10.244.0.9 on resource = Topic:LITERAL:alpha for request = Fetch with resourceRefCount = 1 based on rule MatchingAcl(...) (kafka.authorizer.logger)
//! ```
//!
//! (`AclAuthorizer` of Kafka 2.x/3.x with ZooKeeper; `SimpleAclAuthorizer` of Kafka 1.x and
//! 2.0, without the pattern type or the request; KRaft's `StandardAuthorizer`, with the
//! operation as an enum constant and the rule that decided). [`parse_authorizer_line`] reads
//! any of them, wherever the line starts (a log4j prefix, an API timestamp, Strimzi's layout).
//!
//! Following a log through the Kubernetes API, [`LogCursor`] decides which lines after a
//! reconnection were already counted, and [`LineSplitter`] hands out complete lines only.

use std::fmt;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// Longest topic name Kafka accepts.
pub const MAX_TOPIC_NAME: usize = 249;

/// One authorization decision from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizerEntry<'a> {
    pub principal: &'a str,
    pub allowed: bool,
    /// As logged: `Read`, `DescribeConfigs`, or `READ`, `DESCRIBE_CONFIGS` (KRaft).
    pub operation: &'a str,
    /// The client's address as logged.
    pub host: &'a str,
    /// `Topic`, `Group`, `Cluster`, `TransactionalId`, `DelegationToken`, `User`.
    pub resource_type: &'a str,
    /// `LITERAL`, `PREFIXED`, `MATCH`...; `None` in the old form `Topic:name`.
    pub pattern_type: Option<&'a str>,
    pub resource_name: &'a str,
    /// The Kafka request (`Fetch`, `Produce`, `Metadata`...), when logged.
    pub request: Option<&'a str>,
}

/// Why a line that looks like an authorizer line could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    NoDecision,
    NoOperation,
    NoHost,
    NoResource,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Malformed::NoDecision => "no `is Allowed`/`is Denied` after the principal",
            Malformed::NoOperation => "no operation",
            Malformed::NoHost => "no `from host = `",
            Malformed::NoResource => "no `on resource = Type:...`",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizerLine<'a> {
    /// Any other broker log line.
    Other,
    /// A line of the authorizer logger that does not have the expected shape.
    Malformed(Malformed),
    Entry(AuthorizerEntry<'a>),
}

const AUTHORIZER_LOGGER: &str = "kafka.authorizer.logger";
const PATTERN_TYPES: [&str; 5] = ["LITERAL", "PREFIXED", "MATCH", "ANY", "UNKNOWN"];

/// Reads one log line. Never panics, whatever the input.
pub fn parse_authorizer_line(line: &str) -> AuthorizerLine<'_> {
    let Some(start) = line.find("Principal = ") else {
        return if line.contains(AUTHORIZER_LOGGER) && !is_authorizer_note(line) {
            AuthorizerLine::Malformed(Malformed::NoDecision)
        } else {
            AuthorizerLine::Other
        };
    };
    let rest = &line[start + "Principal = ".len()..];
    // A principal (an X.500 name) may hold spaces: the first ` is Allowed|Denied <op> = ` ends it.
    let mut decision = None;
    for (at, _) in rest.match_indices(" is ") {
        let after = &rest[at + 4..];
        let (allowed, after) = match (after.strip_prefix("Allowed "), after.strip_prefix("Denied "))
        {
            (Some(after), _) => (true, after),
            (_, Some(after)) => (false, after),
            _ => continue,
        };
        if let Some(after) =
            after.strip_prefix("Operation = ").or_else(|| after.strip_prefix("operation = "))
        {
            decision = Some((&rest[..at], allowed, after));
            break;
        }
    }
    let Some((principal, allowed, rest)) = decision else {
        return AuthorizerLine::Malformed(Malformed::NoDecision);
    };
    let (operation, rest) = split_word(rest);
    if operation.is_empty() {
        return AuthorizerLine::Malformed(Malformed::NoOperation);
    }
    let Some(rest) = rest.strip_prefix(" from host = ") else {
        return AuthorizerLine::Malformed(Malformed::NoHost);
    };
    let (host, mut rest) = split_word(rest);
    if host.is_empty() {
        return AuthorizerLine::Malformed(Malformed::NoHost);
    }
    // Some authorizers add the listener: `from host = 10.0.0.1 via listener SASL_SSL on resource = ...`.
    if let Some(after) = rest.strip_prefix(" via listener ") {
        rest = split_word(after).1;
    }
    let Some(rest) = rest.strip_prefix(" on resource = ") else {
        return AuthorizerLine::Malformed(Malformed::NoResource);
    };
    // Group and transactional ids may hold spaces: the resource runs to ` for request = `, else
    // to the logger's name or the end of the line.
    let (resource, request) = match rest.find(" for request = ") {
        Some(at) => (
            &rest[..at],
            Some(split_word(&rest[at + " for request = ".len()..]).0).filter(|r| !r.is_empty()),
        ),
        None => (
            rest.find(" (kafka.authorizer.logger)").map_or(rest.trim_end(), |at| &rest[..at]),
            None,
        ),
    };
    let Some((resource_type, pattern_and_name)) = resource.split_once(':') else {
        return AuthorizerLine::Malformed(Malformed::NoResource);
    };
    if resource_type.is_empty() || !resource_type.bytes().all(|b| b.is_ascii_alphabetic()) {
        return AuthorizerLine::Malformed(Malformed::NoResource);
    }
    let (pattern_type, resource_name) = match pattern_and_name.split_once(':') {
        Some((pattern, name)) if PATTERN_TYPES.contains(&pattern) => (Some(pattern), name),
        _ => (None, pattern_and_name),
    };
    AuthorizerLine::Entry(AuthorizerEntry {
        principal,
        allowed,
        operation,
        host,
        resource_type,
        pattern_type,
        resource_name,
        request,
    })
}

/// The lines `AclAuthorizer` (Kafka 2.x/3.x) logs beside each decision, at DEBUG on the same
/// logger: they explain a decision whose `Principal = ...` line follows, so they are no access
/// of their own (reading them as one would count the access twice):
///
/// ```text
/// DEBUG principal = User:admin is a super user, allowing operation without checking acls. (kafka.authorizer.logger)
/// DEBUG operation = WRITE on resource = ResourcePattern(resourceType=TOPIC, name=orders, patternType=LITERAL) from host = 10.0.0.2 is ALLOW based on acl = User:checkout has ALLOW permission for operations: WRITE from hosts: * (kafka.authorizer.logger)
/// DEBUG No acl found for resource ResourcePattern(resourceType=CLUSTER, name=kafka-cluster, patternType=LITERAL), authorized = false (kafka.authorizer.logger)
/// ```
fn is_authorizer_note(line: &str) -> bool {
    (line.contains("principal = ") && line.contains(" is a super user, allowing operation"))
        || (line.contains("operation = ")
            && line.contains(" on resource = ")
            && line.contains(" based on acl = "))
        || line.contains("No acl found for resource ")
}

fn split_word(s: &str) -> (&str, &str) {
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    s.split_at(end)
}

/// The ClientIntents CRD's name for a Kafka ACL operation, as logged in either form (`Read`,
/// `READ`, `DescribeConfigs`, `DESCRIBE_CONFIGS`); `None` for operations the CRD has no
/// name for (`CreateTokens`, `DescribeTokens`, `Any`, ...).
pub fn crd_operation(logged: &str) -> Option<&'static str> {
    if logged.len() > 32 {
        return None;
    }
    let folded: String =
        logged.chars().filter(|c| *c != '_').map(|c| c.to_ascii_lowercase()).collect();
    Some(match folded.as_str() {
        "all" => "all",
        "read" => "consume",
        "write" => "produce",
        "create" => "create",
        "alter" => "alter",
        "delete" => "delete",
        "describe" => "describe",
        "clusteraction" => "ClusterAction",
        "describeconfigs" => "DescribeConfigs",
        "alterconfigs" => "AlterConfigs",
        "idempotentwrite" => "IdempotentWrite",
        _ => return None,
    })
}

/// Why an authorizer line about a topic names no topic an edge can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicRefused {
    /// A pattern (`PREFIXED`, `ANY`) or the wildcard `*` rather than a topic: Kafka only
    /// authorizes literal topics, and ClientIntents name topics one by one.
    Pattern,
    /// Not a name Kafka accepts (at most [`MAX_TOPIC_NAME`] of `[a-zA-Z0-9._-]`, not `.` or `..`).
    Illegal,
}

/// The topic an authorizer line is about (`LITERAL`, `MATCH`, or the old form without a
/// pattern type).
pub fn topic_name<'a>(entry: &AuthorizerEntry<'a>) -> Result<&'a str, TopicRefused> {
    let name = entry.resource_name;
    if matches!(entry.pattern_type, Some("PREFIXED" | "ANY" | "UNKNOWN")) || name == "*" {
        return Err(TopicRefused::Pattern);
    }
    let legal = !name.is_empty()
        && name.len() <= MAX_TOPIC_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != "..";
    if legal {
        Ok(name)
    } else {
        Err(TopicRefused::Illegal)
    }
}

/// The client address as logged (`10.0.0.5`, `0:0:0:0:0:0:0:1`, `fe80::1%eth0`, `/10.0.0.5`).
pub fn host_address(host: &str) -> Option<std::net::IpAddr> {
    let host = host.strip_prefix('/').unwrap_or(host);
    let host = host.split_once('%').map_or(host, |(address, _scope)| address);
    host.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_canonical())
}

// === LogCursor ===

/// Where a log followed through the Kubernetes API has been read to, so that a reconnection
/// (`sinceTime`, whole seconds) counts no line twice.
///
/// The API stamps every line (`timestamps=true`) with its RFC 3339 time, to the nanosecond.
/// The cursor keeps the last stamp counted and how many lines carried exactly that stamp; after
/// a reconnection from the start of that second, lines stamped earlier are skipped, and of the
/// lines stamped exactly so, as many as were counted. A line stamped earlier than one already
/// counted is taken as counted (container runtimes stamp lines in order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogCursor {
    last: Option<DateTime<Utc>>,
    counted_at_last: u64,
    /// Lines stamped `last` seen since the current stream began.
    seen_at_last: u64,
    /// Where to resume when nothing was counted yet (`None`: from the start of the log).
    floor: Option<DateTime<Utc>>,
    streams: u64,
    /// The current stream was asked for new lines only.
    new_only: bool,
}

/// How to open the next stream of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// Only lines logged from now on (`tailLines=0`).
    NewLines,
    /// From this time (`sinceTime`, whole seconds).
    Since(DateTime<Utc>),
    /// The whole log.
    Beginning,
}

impl LogCursor {
    /// A cursor for a log read from its start.
    pub fn from_start() -> Self {
        Self::default()
    }

    /// A cursor for a log followed from `now` on (the lines already there are not counted): the
    /// first stream asks for no old lines (`tailLines=0`), so all it brings is new whatever its
    /// stamps say (the node's clock may differ); if it ends before a line came, the next one
    /// resumes from `now` and lines stamped earlier are skipped.
    pub fn from(now: DateTime<Utc>) -> Self {
        Self { floor: Some(now), ..Self::default() }
    }

    /// Whether anything was counted yet.
    pub fn is_fresh(&self) -> bool {
        self.last.is_none()
    }

    /// How to open the next stream (call it for every attempt).
    pub fn begin_stream(&mut self) -> StreamStart {
        self.seen_at_last = 0;
        let start = match self.resume_from() {
            Some(_) if self.streams == 0 && self.last.is_none() => StreamStart::NewLines,
            Some(since) => StreamStart::Since(since),
            None => StreamStart::Beginning,
        };
        self.streams = self.streams.saturating_add(1);
        self.new_only = start == StreamStart::NewLines;
        start
    }

    /// The `sinceTime` to resume from: the start of the second of the last line counted (the
    /// API rounds `sinceTime` to whole seconds; rounding up would lose lines).
    pub fn resume_from(&self) -> Option<DateTime<Utc>> {
        let at = self.last.or(self.floor)?;
        Some(at.duration_trunc(TimeDelta::seconds(1)).unwrap_or(at))
    }

    /// A complete line stamped `at`: whether it is new, in which case it is now counted.
    pub fn admit(&mut self, at: DateTime<Utc>) -> bool {
        let Some(last) = self.last else {
            if !self.new_only && self.floor.is_some_and(|floor| at < floor) {
                return false;
            }
            self.last = Some(at);
            self.counted_at_last = 1;
            self.seen_at_last = 1;
            return true;
        };
        if at < last {
            return false;
        }
        if at > last {
            self.last = Some(at);
            self.counted_at_last = 1;
            self.seen_at_last = 1;
            return true;
        }
        self.seen_at_last = self.seen_at_last.saturating_add(1);
        if self.seen_at_last <= self.counted_at_last {
            return false;
        }
        self.counted_at_last = self.seen_at_last;
        true
    }
}

/// Splits `2023-03-12T13:51:55.904123456Z rest` (the API's `timestamps=true` prefix, RFC 3339
/// with up to nine fractional digits) into the time and the rest.
pub fn split_api_timestamp(line: &str) -> Option<(DateTime<Utc>, &str)> {
    let (stamp, rest) = line.split_once(' ')?;
    if stamp.len() > 40 {
        return None;
    }
    let at = DateTime::parse_from_rfc3339(stamp).ok()?.with_timezone(&Utc);
    Some((at, rest))
}

// === LineSplitter ===

/// Turns a byte stream into complete lines. A line still open when the stream ends (cut by a
/// disconnection) is dropped by [`LineSplitter::finish`], never handed out half. Lines longer
/// than the limit are dropped whole and counted.
#[derive(Debug)]
pub struct LineSplitter {
    buffer: Vec<u8>,
    max_line: usize,
    /// Inside a line already too long: drop bytes up to its end.
    discarding: bool,
    overlong: u64,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> Self {
        Self { buffer: Vec::new(), max_line, discarding: false, overlong: 0 }
    }

    /// Adds bytes; calls `line` with every line they complete (without `\n` or `\r\n`).
    pub fn push(&mut self, mut bytes: &[u8], mut line: impl FnMut(&str)) {
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            let (head, tail) = (&bytes[..end], &bytes[end + 1..]);
            bytes = tail;
            if std::mem::take(&mut self.discarding)
                || self.buffer.len() + head.len() > self.max_line
            {
                self.buffer.clear();
                self.overlong = self.overlong.saturating_add(1);
                continue;
            }
            self.buffer.extend_from_slice(head);
            let complete = std::mem::take(&mut self.buffer);
            let complete = complete.strip_suffix(b"\r").unwrap_or(&complete);
            line(&String::from_utf8_lossy(complete));
        }
        if self.discarding {
            return;
        }
        if self.buffer.len() + bytes.len() > self.max_line {
            self.buffer.clear();
            self.discarding = true;
        } else {
            self.buffer.extend_from_slice(bytes);
        }
    }

    /// The stream ended: drops an unfinished line; returns whether there was one.
    pub fn finish(&mut self) -> bool {
        let partial = !self.buffer.is_empty() || self.discarding;
        self.buffer.clear();
        self.discarding = false;
        partial
    }

    /// Lines dropped for being longer than the limit.
    pub fn overlong(&self) -> u64 {
        self.overlong
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: &str) -> AuthorizerEntry<'_> {
        match parse_authorizer_line(line) {
            AuthorizerLine::Entry(e) => e,
            other => panic!("{line:?} should parse, got {other:?}"),
        }
    }

    #[test]
    fn every_authorizer_form_parses() {
        let acl = entry("[2023-03-12 13:51:55,904] INFO Principal = User:2.5.4.45=#1320,CN=myclient.otterize-tutorial-kafka-mtls,O=SPIRE,C=US is Denied Operation = Describe from host = 10.244.0.27 on resource = Topic:LITERAL:mytopic for request = Metadata with resourceRefCount = 1 (kafka.authorizer.logger)");
        assert_eq!(
            acl,
            AuthorizerEntry {
                principal:
                    "User:2.5.4.45=#1320,CN=myclient.otterize-tutorial-kafka-mtls,O=SPIRE,C=US",
                allowed: false,
                operation: "Describe",
                host: "10.244.0.27",
                resource_type: "Topic",
                pattern_type: Some("LITERAL"),
                resource_name: "mytopic",
                request: Some("Metadata"),
            }
        );
        let old = entry("[2019-01-01 00:00:00,000] DEBUG Principal = User:alice is Allowed Operation = Read from host = 10.0.0.9 on resource = Topic:orders (kafka.authorizer.logger)");
        assert_eq!(
            (old.allowed, old.operation, old.pattern_type, old.resource_name, old.request),
            (true, "Read", None, "orders", None)
        );
        let kraft = entry("[2024-05-02 08:00:00,000] INFO Principal = User:bob is Denied operation = READ from host = 127.0.0.1 on resource = Topic:LITERAL:alpha for request = Fetch with resourceRefCount = 1 based on rule MatchingAcl(acl=StandardAcl[resourceType=TOPIC, resourceName=alp, patternType=PREFIXED, principal=User:bob, host=*, operation=READ, permissionType=DENY]) (kafka.authorizer.logger)");
        assert_eq!(
            (kraft.operation, kraft.resource_name, kraft.request),
            ("READ", "alpha", Some("Fetch"))
        );
        let listener = entry("Principal = User:test is Allowed Operation = Read from host = 127.0.0.1 via listener security-9095 on resource = Topic:LITERAL:baz for request = FETCH with resourceRefCount = 0");
        assert_eq!((listener.host, listener.resource_name), ("127.0.0.1", "baz"));
        let spaced = entry("2023-03-12 13:51:55,904 INFO Principal = User:CN=my client,O=Acme is Allowed Operation = Read from host = 10.0.0.1 on resource = Group:LITERAL:my group for request = OffsetFetch with resourceRefCount = 1 (kafka.authorizer.logger) [data-plane-kafka-request-handler-3]");
        assert_eq!(
            (spaced.principal, spaced.resource_type, spaced.resource_name),
            ("User:CN=my client,O=Acme", "Group", "my group")
        );
        let prefixed = entry("INFO Principal = User:a is Allowed Operation = Write from host = 10.0.0.1 on resource = Topic:PREFIXED:orders- for request = Produce with resourceRefCount = 1 (kafka.authorizer.logger)");
        assert_eq!((prefixed.pattern_type, prefixed.resource_name), (Some("PREFIXED"), "orders-"));
        assert_eq!(topic_name(&prefixed), Err(TopicRefused::Pattern));
    }

    #[test]
    fn other_lines_and_broken_authorizer_lines_are_told_apart() {
        assert_eq!(parse_authorizer_line("[2023-03-12 13:51:55,904] INFO [KafkaServer id=0] started (kafka.server.KafkaServer)"), AuthorizerLine::Other);
        assert_eq!(parse_authorizer_line(""), AuthorizerLine::Other);
        assert_eq!(
            parse_authorizer_line("[x] INFO garbage (kafka.authorizer.logger)"),
            AuthorizerLine::Malformed(Malformed::NoDecision)
        );
        assert_eq!(
            parse_authorizer_line("Principal = User:a is Maybe Operation = Read"),
            AuthorizerLine::Malformed(Malformed::NoDecision)
        );
        assert_eq!(
            parse_authorizer_line("Principal = User:a is Allowed Operation = "),
            AuthorizerLine::Malformed(Malformed::NoOperation)
        );
        assert_eq!(
            parse_authorizer_line(
                "Principal = User:a is Allowed Operation = Read on resource = Topic:x"
            ),
            AuthorizerLine::Malformed(Malformed::NoHost)
        );
        assert_eq!(
            parse_authorizer_line("Principal = User:a is Allowed Operation = Read from host = 1.2.3.4 on resource = nothing"),
            AuthorizerLine::Malformed(Malformed::NoResource)
        );
        assert_eq!(
            parse_authorizer_line(
                "Principal = User:a is Allowed Operation = Read from host = 1.2.3.4 on resource ="
            ),
            AuthorizerLine::Malformed(Malformed::NoResource)
        );
    }

    #[test]
    fn acl_authorizers_notes_beside_its_decisions_are_no_accesses() {
        // Written by a real Kafka 3.9.1 broker (AclAuthorizer with ZooKeeper) for the decisions
        // of the super user and of a client allowed by an ACL; each was read as an unreadable
        // authorizer line before.
        for note in [
            "[2026-12-06 00:42:02,782] DEBUG principal = User:admin is a super user, allowing operation without checking acls. (kafka.authorizer.logger)",
            "[2026-12-06 00:42:28,219] DEBUG No acl found for resource ResourcePattern(resourceType=CLUSTER, name=kafka-cluster, patternType=LITERAL), authorized = false (kafka.authorizer.logger)",
            "[2026-12-06 00:42:29,134] DEBUG operation = WRITE on resource = ResourcePattern(resourceType=TOPIC, name=orders, patternType=LITERAL) from host = 127.0.0.1 is ALLOW based on acl = User:checkout has ALLOW permission for operations: WRITE from hosts: * (kafka.authorizer.logger)",
        ] {
            assert_eq!(parse_authorizer_line(note), AuthorizerLine::Other, "{note}");
        }
        // The decision each explains is still read.
        let decision = entry("[2026-12-06 00:42:29,134] DEBUG Principal = User:checkout is Allowed Operation = Write from host = 127.0.0.1 on resource = Topic:LITERAL:orders for request = Produce with resourceRefCount = 1 (kafka.authorizer.logger)");
        assert_eq!((decision.operation, decision.resource_name), ("Write", "orders"));
        // Anything else on the logger without a decision is still unreadable.
        assert_eq!(
            parse_authorizer_line(
                "[x] DEBUG principal = User:a is somebody (kafka.authorizer.logger)"
            ),
            AuthorizerLine::Malformed(Malformed::NoDecision)
        );
    }

    #[test]
    fn operations_map_to_the_crd_names_in_both_spellings() {
        for (logged, crd) in [
            ("Read", "consume"),
            ("READ", "consume"),
            ("Write", "produce"),
            ("Create", "create"),
            ("Delete", "delete"),
            ("Alter", "alter"),
            ("Describe", "describe"),
            ("ClusterAction", "ClusterAction"),
            ("CLUSTER_ACTION", "ClusterAction"),
            ("DescribeConfigs", "DescribeConfigs"),
            ("DESCRIBE_CONFIGS", "DescribeConfigs"),
            ("AlterConfigs", "AlterConfigs"),
            ("IdempotentWrite", "IdempotentWrite"),
            ("IDEMPOTENT_WRITE", "IdempotentWrite"),
            ("All", "all"),
        ] {
            assert_eq!(crd_operation(logged), Some(crd), "{logged}");
        }
        for unknown in ["CreateTokens", "DESCRIBE_TOKENS", "Any", "Unknown", "", "Frobnicate"] {
            assert_eq!(crd_operation(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn topic_names_follow_kafkas_rules() {
        fn with<'a>(name: &'a str, pattern: Option<&'static str>) -> Result<&'a str, TopicRefused> {
            let e = AuthorizerEntry {
                principal: "",
                allowed: true,
                operation: "Read",
                host: "",
                resource_type: "Topic",
                pattern_type: pattern,
                resource_name: name,
                request: None,
            };
            topic_name(&e)
        }
        let longest = "t".repeat(MAX_TOPIC_NAME);
        assert_eq!(with(&longest, Some("LITERAL")), Ok(longest.as_str()));
        assert_eq!(with(&format!("{longest}x"), Some("LITERAL")), Err(TopicRefused::Illegal));
        assert_eq!(with("a b", None), Err(TopicRefused::Illegal));
        assert_eq!(with("", None), Err(TopicRefused::Illegal));
        assert_eq!(with("..", None), Err(TopicRefused::Illegal));
        assert_eq!(with("*", Some("LITERAL")), Err(TopicRefused::Pattern));
        assert_eq!(with("orders", Some("ANY")), Err(TopicRefused::Pattern));
        assert_eq!(with("__consumer_offsets", Some("MATCH")), Ok("__consumer_offsets"));
        assert_eq!(with("audit.log_v2-eu", None), Ok("audit.log_v2-eu"));
        assert_eq!(host_address("0:0:0:0:0:0:0:1"), Some("::1".parse().unwrap()));
        assert_eq!(host_address("/10.0.0.5"), Some("10.0.0.5".parse().unwrap()));
        assert_eq!(host_address("fe80::1%eth0"), Some("fe80::1".parse().unwrap()));
        assert_eq!(host_address("kafka-client"), None);
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_resumed_stream_counts_no_line_twice() {
        let mut cursor = LogCursor::from_start();
        assert_eq!(cursor.begin_stream(), StreamStart::Beginning);
        let first =
            ["2026-01-01T10:00:00.5Z", "2026-01-01T10:00:01.25Z", "2026-01-01T10:00:01.25Z"];
        assert!(first.iter().all(|s| cursor.admit(t(s))));
        assert_eq!(
            cursor.resume_from(),
            Some(t("2026-01-01T10:00:01Z")),
            "truncated, never rounded up"
        );

        // The API replays the whole second, then new lines, one of them with the same stamp.
        assert_eq!(cursor.begin_stream(), StreamStart::Since(t("2026-01-01T10:00:01Z")));
        let replay = [
            "2026-01-01T10:00:01.25Z",
            "2026-01-01T10:00:01.25Z",
            "2026-01-01T10:00:01.25Z",
            "2026-01-01T10:00:01.9Z",
        ];
        let admitted: Vec<bool> = replay.iter().map(|s| cursor.admit(t(s))).collect();
        assert_eq!(admitted, vec![false, false, true, true]);
        assert!(!cursor.admit(t("2026-01-01T10:00:00.7Z")), "older than what was counted");
    }

    #[test]
    fn a_cursor_from_now_takes_new_lines_then_resumes_from_now() {
        let start = t("2026-01-01T10:00:00.5Z");
        let mut cursor = LogCursor::from(start);
        assert!(cursor.is_fresh());
        assert_eq!(cursor.begin_stream(), StreamStart::NewLines);
        assert!(
            cursor.admit(t("2026-01-01T10:00:00.2Z")),
            "the first stream carries only new lines, whatever their stamps"
        );

        let mut cursor = LogCursor::from(start);
        cursor.begin_stream();
        // That stream ended before any line: resume from the start, skipping older lines.
        assert_eq!(cursor.begin_stream(), StreamStart::Since(t("2026-01-01T10:00:00Z")));
        assert!(!cursor.admit(t("2026-01-01T10:00:00.2Z")));
        assert!(cursor.admit(start));
        assert!(!cursor.is_fresh());
    }

    #[test]
    fn api_timestamps_split_off_with_any_precision() {
        let (at, rest) =
            split_api_timestamp("2023-03-12T13:51:55.904123456Z [2023-03-12 13:51:55,904] INFO x")
                .unwrap();
        assert_eq!(at, t("2023-03-12T13:51:55.904123456Z"));
        assert_eq!(rest, "[2023-03-12 13:51:55,904] INFO x");
        assert_eq!(
            split_api_timestamp("2023-03-12T13:51:55Z x").unwrap().0,
            t("2023-03-12T13:51:55Z")
        );
        assert!(split_api_timestamp("[2023-03-12 13:51:55,904] INFO x").is_none());
        assert!(split_api_timestamp("nospace").is_none());
    }

    #[test]
    fn only_complete_lines_come_out() {
        let mut splitter = LineSplitter::new(16);
        let mut lines = Vec::new();
        splitter.push(b"one\r\ntw", |l| lines.push(l.to_owned()));
        splitter.push(b"o\nthree", |l| lines.push(l.to_owned()));
        assert_eq!(lines, vec!["one", "two"]);
        assert!(splitter.finish(), "`three` was cut");
        splitter.push(b"four\n", |l| lines.push(l.to_owned()));
        assert_eq!(lines, vec!["one", "two", "four"]);
        splitter.push(b"0123456789abcdef-too-long", |l| lines.push(l.to_owned()));
        splitter.push(b"-still\nfive\n", |l| lines.push(l.to_owned()));
        splitter.push(b"0123456789abcdefg\n", |l| lines.push(l.to_owned()));
        assert_eq!(lines, vec!["one", "two", "four", "five"]);
        assert_eq!(splitter.overlong(), 2);
        assert!(!splitter.finish());
    }

    /// Mutations of real lines (a fixed-seed generator, so failures reproduce) never panic and
    /// never yield a topic Kafka would refuse.
    #[test]
    fn mutated_lines_never_panic() {
        let seeds = [
            "[2023-03-12 13:51:55,904] INFO Principal = User:CN=myclient is Denied Operation = Describe from host = 10.244.0.27 on resource = Topic:LITERAL:mytopic for request = Metadata with resourceRefCount = 1 (kafka.authorizer.logger)",
            "2023-03-12T13:51:55.904Z [2023-03-12 13:51:55,904] DEBUG Principal = User:a is Allowed operation = IDEMPOTENT_WRITE from host = fe80::1%eth0 via listener X on resource = Topic:orders (kafka.authorizer.logger)",
        ];
        let alphabet = " :=()[]%/*.-_,AaZz09é\u{0}\tPrincipal is Allowed Denied Operation from host on resource for request";
        let mut entries = 0;
        for line in crate::tests::mutations(&seeds, alphabet, 20_000, 6, 0x9E37_79B9_7F4A_7C15) {
            if let AuthorizerLine::Entry(e) = parse_authorizer_line(&line) {
                entries += 1;
                let _ = crd_operation(e.operation);
                let _ = host_address(e.host);
                if let Ok(topic) = topic_name(&e) {
                    assert!(
                        topic.len() <= MAX_TOPIC_NAME && !topic.contains(' '),
                        "{topic:?} from {line:?}"
                    );
                }
            }
            let _ = split_api_timestamp(&line);
        }
        assert!(entries > 1_000, "most mutations keep the line readable ({entries})");
    }
}
