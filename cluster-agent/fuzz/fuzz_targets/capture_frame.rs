//! Arbitrary bytes as a captured frame, from the link layer up to the DNS answer.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_agent::node::capture::{AnswerExtractor, CaptureCounters, FrameMeta, LinkType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut extractor = AnswerExtractor::new(Duration::from_secs(1), Arc::new(CaptureCounters::default()));
    for link in [LinkType::Ethernet, LinkType::RawIp, LinkType::LinuxSll] {
        let _ = extractor.handle(data, FrameMeta { link, loopback_outgoing: false }, chrono::Utc::now(), Instant::now());
    }
});
