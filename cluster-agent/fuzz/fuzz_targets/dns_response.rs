//! Arbitrary bytes as a DNS message seen on the wire: the parser may reject them, never panic.
#![no_main]

use cluster_agent::node::dns::{parse_dns_response, parse_dns_responses, Transport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for transport in [Transport::Udp, Transport::Tcp] {
        let all = parse_dns_responses(data, transport);
        let first = parse_dns_response(data, transport);
        assert_eq!(all.map(|answers| answers.into_iter().next()), first);
    }
});
