//! A report's body into an [`EdgeReport`]: synchronous, CPU-bound, run on a blocking thread.
//!
//! A gzip body is decompressed into memory up to [`IN_MEMORY_JSON_BYTES`] and parsed from
//! there (the fast path, every real report); a larger one is parsed straight from the
//! decompressor, so that a refused report (most bombs are refused within their first lists) is
//! never held whole, and an accepted one costs its parsed form, not its JSON as well.

use std::io::{self, BufReader, Read};

use chrono::{DateTime, Utc};
use model::{EdgeReport, ReportError};

use crate::http::error::ApiError;

/// Decompressed JSON up to this size is parsed from memory; more is parsed as a stream.
pub const IN_MEMORY_JSON_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

pub fn decode(
    body: &[u8],
    encoding: Encoding,
    max_decompressed: usize,
    now: DateTime<Utc>,
) -> Result<EdgeReport, ApiError> {
    match encoding {
        Encoding::Identity => EdgeReport::from_json_at(body, now).map_err(refused),
        Encoding::Gzip => gunzip_and_parse(body, max_decompressed, now),
    }
}

/// The HTTP answer to a refused report.
pub fn refused(e: ReportError) -> ApiError {
    match e {
        ReportError::Malformed(_) => ApiError::BadRequest(e.to_string()),
        ReportError::OverLimit { .. } => ApiError::PayloadTooLarge(e.to_string()),
        ReportError::UnsupportedVersion(_)
        | ReportError::TooManyEdges(_)
        | ReportError::Invalid { .. } => ApiError::Unprocessable(e.to_string()),
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "the report is larger than {limit} bytes once decompressed; send smaller reports"
    ))
}

fn not_gzip(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("the body is not valid gzip: {e}"))
}

fn gunzip_and_parse(body: &[u8], limit: usize, now: DateTime<Utc>) -> Result<EdgeReport, ApiError> {
    let mut source = Limited {
        inner: flate2::read::GzDecoder::new(body),
        left: limit as u64,
        exceeded: false,
        failed: None,
    };
    let mut head = Vec::new();
    let read = (&mut source).take(IN_MEMORY_JSON_BYTES as u64 + 1).read_to_end(&mut head);
    if let Err(e) = read {
        return Err(if source.exceeded { too_large(limit) } else { not_gzip(e) });
    }
    if head.len() <= IN_MEMORY_JSON_BYTES {
        return EdgeReport::from_json_at(&head, now).map_err(refused);
    }
    let parsed = EdgeReport::from_reader_at(
        BufReader::with_capacity(64 << 10, io::Cursor::new(head).chain(&mut source)),
        now,
    );
    match parsed {
        Ok(report) => Ok(report),
        Err(_) if source.exceeded => Err(too_large(limit)),
        Err(_) if source.failed.is_some() => Err(not_gzip(source.failed.unwrap_or_default())),
        Err(e) => Err(refused(e)),
    }
}

/// Reads at most `left` bytes, failing (and saying so) past them, and remembers a read error.
struct Limited<R> {
    inner: R,
    left: u64,
    exceeded: bool,
    failed: Option<String>,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // One byte past the limit tells a body of exactly `limit` bytes from a larger one.
        let want =
            buf.len().min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n =
            self.inner.read(&mut buf[..want]).inspect_err(|e| self.failed = Some(e.to_string()))?;
        if n as u64 > self.left {
            self.exceeded = true;
            return Err(io::Error::other("the decompressed report is over the limit"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// About 250 bytes an edge.
    fn report(edges: usize) -> Vec<u8> {
        let name = format!("frontend-{}", "x".repeat(90));
        let edge = format!(
            r#"{{"client": {{"namespace": "shop", "name": "{name}"}}, "target": {{"internet": {{"domains": ["api.example.com"]}}}},
                "first_seen": "2026-11-24T17:00:00Z", "last_seen": "2026-11-24T17:30:00Z", "connections": 1}}"#
        );
        let edges = vec![edge; edges].join(",");
        format!(r#"{{"schema_version": 1, "report_id": "6f1d3b5e-7c53-4d63-9a43-2d0c5b1b9a10", "generated_at": "2026-11-24T18:00:00Z", "edges": [{edges}]}}"#)
            .into_bytes()
    }

    /// Edges of a report over [`IN_MEMORY_JSON_BYTES`], and within the edge limit.
    const LARGE: usize = 40_000;

    fn now() -> DateTime<Utc> {
        "2026-11-25T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn small_and_streamed_reports_parse_alike() {
        let small = report(3);
        let from_memory = decode(&gzip(&small), Encoding::Gzip, 64 << 20, now()).unwrap();
        assert_eq!(from_memory, decode(&small, Encoding::Identity, 64 << 20, now()).unwrap());
        let large = report(LARGE);
        assert!(large.len() > IN_MEMORY_JSON_BYTES, "{} bytes", large.len());
        let streamed = decode(&gzip(&large), Encoding::Gzip, 64 << 20, now()).unwrap();
        assert_eq!(streamed.edges.len(), LARGE);
    }

    #[test]
    fn the_decompressed_limit_holds_on_both_paths() {
        let small = report(3);
        decode(&gzip(&small), Encoding::Gzip, small.len(), now())
            .expect("exactly the limit is fine");
        assert!(matches!(
            decode(&gzip(&small), Encoding::Gzip, small.len() - 1, now()),
            Err(ApiError::PayloadTooLarge(_))
        ));
        let large = report(LARGE);
        let limit = large.len() - 10;
        let err = decode(&gzip(&large), Encoding::Gzip, limit, now()).unwrap_err();
        assert!(
            matches!(&err, ApiError::PayloadTooLarge(m) if m.contains("decompressed")),
            "{err:?}"
        );
    }

    #[test]
    fn broken_gzip_is_a_bad_request_on_both_paths() {
        let err = decode(b"\x1f\x8b\x08\x00garbage", Encoding::Gzip, 64 << 20, now()).unwrap_err();
        assert!(matches!(&err, ApiError::BadRequest(m) if m.contains("gzip")), "{err:?}");
        let large = gzip(&report(LARGE));
        let cut = &large[..large.len() - 100];
        let err = decode(cut, Encoding::Gzip, 64 << 20, now()).unwrap_err();
        assert!(matches!(&err, ApiError::BadRequest(m) if m.contains("gzip")), "{err:?}");
    }
}
