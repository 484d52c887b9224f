//! DNS answers as a node sees them on the wire, reduced to what the mapper needs: the name a
//! client asked for, the CNAMEs followed from it, the addresses it got and how long it may keep
//! them.
//!
//! Input comes from untrusted packets. Anything that is not a well-formed message is an `Err`
//! for the caller to count; nothing here may panic on any input (see `fuzz/`).

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use model::observation::DnsAnswer;

/// How the message travelled: over TCP every message carries a 2-byte length prefix and a
/// segment may hold several of them.
pub use model::edge::Transport;

/// The useful part of one DNS response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAnswer {
    /// The name as queried: lowercase, without the trailing dot.
    pub name: String,
    /// CNAMEs followed from `name`, in order.
    pub cnames: Vec<String>,
    /// A and AAAA addresses of the last name in the chain.
    pub addresses: Vec<IpAddr>,
    /// The smallest TTL among the records used (0 when none was).
    pub ttl_seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsParseError {
    #[error("DNS data is truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("malformed DNS message: {0}")]
    Malformed(String),
}

/// Longest CNAME chain followed; real resolvers give up well before this.
const MAX_CNAME_CHAIN: usize = 16;

/// Parses a DNS response seen on `transport`.
///
/// Returns `Ok(None)` for queries, responses with an error code, and responses without a
/// question. Over TCP, when `bytes` holds several messages, this is the first answer among them
/// (all of them must be well-formed); [`parse_dns_responses`] returns every one.
pub fn parse_dns_response(
    bytes: &[u8],
    transport: Transport,
) -> Result<Option<ParsedAnswer>, DnsParseError> {
    Ok(parse_dns_responses(bytes, transport)?.into_iter().next())
}

/// Parses every DNS message in `bytes` (one for UDP, one or more length-prefixed ones for TCP)
/// and returns the answers among them, in order.
pub fn parse_dns_responses(
    bytes: &[u8],
    transport: Transport,
) -> Result<Vec<ParsedAnswer>, DnsParseError> {
    match transport {
        Transport::Udp => Ok(parse_message(bytes)?.into_iter().collect()),
        Transport::Tcp => {
            let mut answers = Vec::new();
            for message in tcp_messages(bytes)? {
                answers.extend(parse_message(message)?);
            }
            Ok(answers)
        }
    }
}

/// Parses a DNS payload as the eBPF capture delivers it (`events::DnsPacket::bytes`): over UDP
/// one message; over TCP the segment's messages with the first one's 2-byte length prefix
/// already taken off, so that `bytes` starts with the DNS header either way.
///
/// The first message must be well-formed, as with [`parse_dns_responses`]. The length-prefixed
/// messages after it in a TCP segment (several responses on one connection, such as the A and
/// AAAA answers of a resolver that retried over TCP) are added while they are complete and
/// well-formed; the first one that is not (cut off by the capture's size limit, or continued in
/// the next segment) ends the list without losing the answers before it.
pub fn parse_dns_packet(
    bytes: &[u8],
    transport: Transport,
) -> Result<Vec<ParsedAnswer>, DnsParseError> {
    let (first, end) = parse_first_message(bytes)?;
    let mut answers: Vec<ParsedAnswer> = first.into_iter().collect();
    if transport == Transport::Tcp {
        let mut rest = bytes.get(end..).unwrap_or_default();
        while let Some((prefix, after)) = rest.split_first_chunk::<2>() {
            let len = usize::from(u16::from_be_bytes(*prefix));
            let Some(message) = after.get(..len).filter(|message| !message.is_empty()) else {
                break;
            };
            let Ok((answer, _)) = parse_first_message(message) else {
                break;
            };
            answers.extend(answer);
            rest = &after[len..];
        }
    }
    Ok(answers)
}

impl ParsedAnswer {
    /// The observation the mapper receives for this answer delivered to `client_ip` at `at`.
    pub fn into_observation(self, client_ip: IpAddr, at: DateTime<Utc>) -> DnsAnswer {
        DnsAnswer {
            client_ip,
            name: self.name,
            cnames: self.cnames,
            addresses: self.addresses,
            ttl_seconds: self.ttl_seconds,
            at,
        }
    }
}

/// Splits a TCP payload into its length-prefixed messages; any incomplete frame is an error.
fn tcp_messages(mut bytes: &[u8]) -> Result<Vec<&[u8]>, DnsParseError> {
    if bytes.is_empty() {
        return Err(DnsParseError::Truncated { needed: 2, available: 0 });
    }
    let mut messages = Vec::new();
    while !bytes.is_empty() {
        let Some((prefix, rest)) = bytes.split_first_chunk::<2>() else {
            return Err(DnsParseError::Truncated { needed: 2, available: bytes.len() });
        };
        let len = usize::from(u16::from_be_bytes(*prefix));
        if len == 0 {
            return Err(DnsParseError::Malformed("zero-length TCP DNS message".to_string()));
        }
        if rest.len() < len {
            return Err(DnsParseError::Truncated { needed: len, available: rest.len() });
        }
        let (message, rest) = rest.split_at(len);
        messages.push(message);
        bytes = rest;
    }
    Ok(messages)
}

fn parse_message(bytes: &[u8]) -> Result<Option<ParsedAnswer>, DnsParseError> {
    parse_first_message(bytes).map(|(answer, _)| answer)
}

/// The answer of the message at the start of `bytes` (bytes after it are not looked at), and
/// where that message ends.
fn parse_first_message(bytes: &[u8]) -> Result<(Option<ParsedAnswer>, usize), DnsParseError> {
    const HEADER_LEN: usize = 12;
    if bytes.len() < HEADER_LEN {
        return Err(DnsParseError::Truncated { needed: HEADER_LEN, available: bytes.len() });
    }
    let mut decoder = BinDecoder::new(bytes);
    let message =
        Message::read(&mut decoder).map_err(|e| DnsParseError::Malformed(e.to_string()))?;
    let end = decoder.index();
    let metadata = &message.metadata;
    if metadata.message_type != MessageType::Response
        || metadata.op_code != OpCode::Query
        || metadata.response_code != ResponseCode::NoError
    {
        return Ok((None, end));
    }
    let Some(query) = message.queries.first() else {
        return Ok((None, end));
    };
    Ok((Some(follow_answers(query.name(), &message.answers)), end))
}

/// Follows the CNAME chain from `qname` through `answers` and collects the addresses of its end.
/// Records about other names (which some servers add) are ignored.
fn follow_answers(qname: &Name, answers: &[Record]) -> ParsedAnswer {
    let answers: Vec<&Record> = answers.iter().filter(|r| r.dns_class == DNSClass::IN).collect();
    let mut ttl: Option<u32> = None;
    let mut keep_ttl = |t: u32| ttl = Some(ttl.map_or(t, |m| m.min(t)));

    let mut chain: Vec<&Name> = vec![qname];
    while chain.len() <= MAX_CNAME_CHAIN {
        let current = chain[chain.len() - 1];
        let next = answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name == *current => Some((r.ttl, &target.0)),
            _ => None,
        });
        match next {
            Some((t, target)) if !chain.contains(&target) => {
                keep_ttl(t);
                chain.push(target);
            }
            _ => break,
        }
    }

    let last = chain[chain.len() - 1];
    let mut addresses: Vec<IpAddr> = Vec::new();
    for record in answers.iter().filter(|r| r.name == *last) {
        let address = match &record.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
            _ => continue,
        };
        keep_ttl(record.ttl);
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }

    ParsedAnswer {
        name: name_text(qname),
        cnames: chain[1..].iter().map(|n| name_text(n)).collect(),
        addresses,
        ttl_seconds: ttl.unwrap_or(0),
    }
}

fn name_text(name: &Name) -> String {
    let mut text = name.to_ascii().to_ascii_lowercase();
    if text.ends_with('.') {
        text.pop();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::str::FromStr;

    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::RecordType;

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn response(qname: &str, qtype: RecordType, answers: Vec<Record>) -> Message {
        let mut message = Message::response(0x4242, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.metadata.recursion_available = true;
        message.add_query(Query::query(name(qname), qtype));
        message.add_answers(answers);
        message
    }

    fn a(owner: &str, ttl: u32, ip: [u8; 4]) -> Record {
        Record::from_rdata(name(owner), ttl, RData::A(A(Ipv4Addr::from(ip))))
    }

    fn aaaa(owner: &str, ttl: u32, ip: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(Ipv6Addr::from_str(ip).unwrap())))
    }

    fn cname(owner: &str, ttl: u32, target: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
    }

    fn tcp_framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            out.extend_from_slice(&u16::try_from(m.len()).unwrap().to_be_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    fn udp(bytes: &[u8]) -> ParsedAnswer {
        parse_dns_response(bytes, Transport::Udp).expect("parses").expect("is an answer")
    }

    // === Messages built with hickory-proto ===

    #[test]
    fn a_and_aaaa_answer_with_mixed_case_name() {
        let wire = response(
            "Shop.Example.COM.",
            RecordType::A,
            vec![
                a("shop.example.com.", 300, [10, 0, 0, 9]),
                aaaa("SHOP.example.com.", 120, "fd00::9"),
            ],
        )
        .to_vec()
        .unwrap();
        let answer = udp(&wire);
        assert_eq!(
            answer,
            ParsedAnswer {
                name: "shop.example.com".into(),
                cnames: vec![],
                addresses: vec!["10.0.0.9".parse().unwrap(), "fd00::9".parse().unwrap()],
                ttl_seconds: 120,
            }
        );
    }

    #[test]
    fn cname_chain_is_followed_in_order_and_strays_are_ignored() {
        let wire = response(
            "www.shop.test.",
            RecordType::A,
            vec![
                cname("www.shop.test.", 600, "edge.cdn.test."),
                a("unrelated.test.", 5, [192, 0, 2, 1]),
                cname("edge.cdn.test.", 60, "pop7.cdn.test."),
                a("pop7.cdn.test.", 30, [203, 0, 113, 7]),
                a("pop7.cdn.test.", 90, [203, 0, 113, 8]),
            ],
        )
        .to_vec()
        .unwrap();
        let answer = udp(&wire);
        assert_eq!(answer.name, "www.shop.test");
        assert_eq!(answer.cnames, vec!["edge.cdn.test", "pop7.cdn.test"]);
        assert_eq!(
            answer.addresses,
            vec![IpAddr::from([203, 0, 113, 7]), IpAddr::from([203, 0, 113, 8])]
        );
        assert_eq!(answer.ttl_seconds, 30);
    }

    #[test]
    fn a_cname_loop_ends_without_addresses() {
        let wire = response(
            "a.loop.test.",
            RecordType::A,
            vec![
                cname("a.loop.test.", 10, "b.loop.test."),
                cname("b.loop.test.", 10, "a.loop.test."),
            ],
        )
        .to_vec()
        .unwrap();
        let answer = udp(&wire);
        assert_eq!(answer.cnames, vec!["b.loop.test"]);
        assert!(answer.addresses.is_empty());
    }

    #[test]
    fn queries_and_error_responses_are_not_answers() {
        let mut query = Message::query();
        query.add_query(Query::query(name("shop.test."), RecordType::A));
        assert_eq!(parse_dns_response(&query.to_vec().unwrap(), Transport::Udp), Ok(None));

        let mut nxdomain = response("missing.test.", RecordType::A, vec![]);
        nxdomain.metadata.response_code = ResponseCode::NXDomain;
        assert_eq!(parse_dns_response(&nxdomain.to_vec().unwrap(), Transport::Udp), Ok(None));

        let mut servfail =
            response("broken.test.", RecordType::A, vec![a("broken.test.", 1, [1, 2, 3, 4])]);
        servfail.metadata.response_code = ResponseCode::ServFail;
        assert_eq!(parse_dns_response(&servfail.to_vec().unwrap(), Transport::Udp), Ok(None));
    }

    #[test]
    fn an_empty_noerror_response_is_an_answer_without_addresses() {
        let wire = response("nodata.test.", RecordType::AAAA, vec![]).to_vec().unwrap();
        assert_eq!(
            udp(&wire),
            ParsedAnswer {
                name: "nodata.test".into(),
                cnames: vec![],
                addresses: vec![],
                ttl_seconds: 0
            }
        );
    }

    #[test]
    fn tcp_segments_hold_one_or_more_length_prefixed_messages() {
        let first = response("one.test.", RecordType::A, vec![a("one.test.", 10, [10, 0, 0, 1])])
            .to_vec()
            .unwrap();
        let second =
            response("two.test.", RecordType::AAAA, vec![aaaa("two.test.", 20, "fd00::2")])
                .to_vec()
                .unwrap();

        let single = parse_dns_response(&tcp_framed(&[&first]), Transport::Tcp).unwrap().unwrap();
        assert_eq!(single.name, "one.test");

        let both = parse_dns_responses(&tcp_framed(&[&first, &second]), Transport::Tcp).unwrap();
        assert_eq!(
            both.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
            ["one.test", "two.test"]
        );

        // Unframed bytes are not a TCP message, and a framed one is not a UDP one.
        assert!(parse_dns_response(&first, Transport::Tcp).is_err());
        assert!(parse_dns_response(&tcp_framed(&[&first]), Transport::Udp).is_err());
        assert!(matches!(
            parse_dns_response(&[0, 0], Transport::Tcp),
            Err(DnsParseError::Malformed(_))
        ));
    }

    /// What the eBPF capture hands over: the TCP length prefix of the segment's first message is
    /// already gone (`events::DnsPacket`), so the payload starts with a DNS header either way.
    #[test]
    fn captured_packets_start_with_the_first_message() {
        let first = response("one.test.", RecordType::A, vec![a("one.test.", 10, [10, 0, 0, 1])])
            .to_vec()
            .unwrap();
        let second =
            response("two.test.", RecordType::AAAA, vec![aaaa("two.test.", 20, "fd00::2")])
                .to_vec()
                .unwrap();
        let names = |answers: Vec<ParsedAnswer>| -> Vec<String> {
            answers.into_iter().map(|answer| answer.name).collect()
        };
        // As the capture delivers it: the first message unframed, the next ones framed.
        let segment = [first.as_slice(), &tcp_framed(&[&second])].concat();

        assert_eq!(names(parse_dns_packet(&first, Transport::Udp).unwrap()), ["one.test"]);
        assert_eq!(names(parse_dns_packet(&first, Transport::Tcp).unwrap()), ["one.test"]);
        assert_eq!(
            names(parse_dns_packet(&segment, Transport::Tcp).unwrap()),
            ["one.test", "two.test"]
        );
        // The old reading, one unframed message, kept only the first answer of the segment.
        assert_eq!(names(parse_dns_responses(&segment, Transport::Udp).unwrap()), ["one.test"]);
        // A datagram is one message, whatever follows it.
        assert_eq!(names(parse_dns_packet(&segment, Transport::Udp).unwrap()), ["one.test"]);

        // A later message cut short, or not a DNS message, ends the list; the answers before stay.
        for end in [first.len() + 1, first.len() + 2, segment.len() - 1] {
            assert_eq!(
                names(parse_dns_packet(&segment[..end], Transport::Tcp).unwrap()),
                ["one.test"],
                "cut at {end}"
            );
        }
        let garbage = [first.as_slice(), &[0, 3, 1, 2, 3], &tcp_framed(&[&second])].concat();
        assert_eq!(names(parse_dns_packet(&garbage, Transport::Tcp).unwrap()), ["one.test"]);
        let zero_length = [first.as_slice(), &[0, 0], &tcp_framed(&[&second])].concat();
        assert_eq!(names(parse_dns_packet(&zero_length, Transport::Tcp).unwrap()), ["one.test"]);

        // The first message itself must be whole, as before.
        assert!(parse_dns_packet(&first[..first.len() - 1], Transport::Tcp).is_err());
        assert!(parse_dns_packet(&tcp_framed(&[&first]), Transport::Tcp).is_err());
        assert!(matches!(
            parse_dns_packet(&first[..5], Transport::Udp),
            Err(DnsParseError::Truncated { needed: 12, available: 5 })
        ));
    }

    #[test]
    fn into_observation_keeps_every_field() {
        let parsed = ParsedAnswer {
            name: "shop.test".into(),
            cnames: vec!["x.test".into()],
            addresses: vec!["10.0.0.1".parse().unwrap()],
            ttl_seconds: 7,
        };
        let at = DateTime::parse_from_rfc3339("2026-11-24T18:00:00Z").unwrap().with_timezone(&Utc);
        let client: IpAddr = "10.201.0.2".parse().unwrap();
        assert_eq!(
            parsed.clone().into_observation(client, at),
            DnsAnswer {
                client_ip: client,
                name: parsed.name,
                cnames: parsed.cnames,
                addresses: parsed.addresses,
                ttl_seconds: 7,
                at
            }
        );
    }

    // === Hand-written wire bytes ===

    /// `www.example.com A?` answered with `www.example.com CNAME cdn.example.com` and
    /// `cdn.example.com A 93.184.216.34`, every name after the question compressed.
    const CNAME_WITH_POINTERS: &[u8] = &[
        0x12, 0x34, 0x81, 0x80, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x00, // header: response, RD+RA, NOERROR, 1 question, 2 answers
        3, b'w', b'w', b'w', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm',
        0, // qname at 12, "example.com" at 16
        0x00, 0x01, 0x00, 0x01, // A, IN
        0xc0, 0x0c, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3c, 0x00,
        0x06, // -> www.example.com CNAME IN ttl 60, rdlen 6
        3, b'c', b'd', b'n', 0xc0, 0x10, // cdn + -> example.com, at offset 45 (0x2d)
        0xc0, 0x2d, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x1e, 0x00,
        0x04, // -> cdn.example.com A IN ttl 30, rdlen 4
        93, 184, 216, 34,
    ];

    /// `V6.Test AAAA?` answered with `2001:db8::1`, owner compressed to the question.
    const AAAA_ANSWER: &[u8] = &[
        0xab, 0xcd, 0x85, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, // response, AA+RD, NOERROR
        2, b'V', b'6', 4, b'T', b'e', b's', b't', 0, 0x00, 0x1c, 0x00,
        0x01, // V6.Test AAAA IN
        0xc0, 0x0c, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x0e, 0x10, 0x00,
        0x10, // AAAA IN ttl 3600, rdlen 16
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
    ];

    /// The question name is a compression pointer to itself.
    const SELF_POINTER: &[u8] = &[
        0x00, 0x01, 0x81, 0x80, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x0c, 0x00,
        0x01, 0x00, 0x01,
    ];

    /// The answer's owner points to a label followed by a pointer back to the owner.
    const POINTER_CYCLE: &[u8] = &[
        0x00, 0x02, 0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, // 1 question, 1 answer
        1, b'x', 0, 0x00, 0x01, 0x00, 0x01, // x. A IN (ends at 19)
        0xc0, 0x15, // at 19: owner -> 21
        1, b'y', 0xc0, 0x13, // at 21: "y" then -> 19, which points back here
        0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x04, 1, 1, 1, 1,
    ];

    #[test]
    fn compression_pointers_in_owner_and_rdata() {
        let answer = udp(CNAME_WITH_POINTERS);
        assert_eq!(
            answer,
            ParsedAnswer {
                name: "www.example.com".into(),
                cnames: vec!["cdn.example.com".into()],
                addresses: vec![IpAddr::from([93, 184, 216, 34])],
                ttl_seconds: 30
            }
        );
    }

    #[test]
    fn hand_written_aaaa() {
        let answer = udp(AAAA_ANSWER);
        assert_eq!(answer.name, "v6.test");
        assert_eq!(answer.addresses, vec!["2001:db8::1".parse::<IpAddr>().unwrap()]);
        assert_eq!(answer.ttl_seconds, 3600);
    }

    #[test]
    fn pointer_loops_are_errors() {
        assert!(matches!(
            parse_dns_response(SELF_POINTER, Transport::Udp),
            Err(DnsParseError::Malformed(_))
        ));
        assert!(matches!(
            parse_dns_response(POINTER_CYCLE, Transport::Udp),
            Err(DnsParseError::Malformed(_))
        ));
        assert!(parse_dns_response(&tcp_framed(&[SELF_POINTER]), Transport::Tcp).is_err());
    }

    fn valid_messages() -> Vec<Vec<u8>> {
        vec![
            CNAME_WITH_POINTERS.to_vec(),
            AAAA_ANSWER.to_vec(),
            response(
                "www.shop.test.",
                RecordType::A,
                vec![
                    cname("www.shop.test.", 600, "edge.cdn.test."),
                    a("edge.cdn.test.", 30, [203, 0, 113, 7]),
                ],
            )
            .to_vec()
            .unwrap(),
            response(
                "shop.test.",
                RecordType::AAAA,
                vec![
                    aaaa("shop.test.", 120, "fd00:201::9"),
                    aaaa("shop.test.", 120, "fd00:201::10"),
                ],
            )
            .to_vec()
            .unwrap(),
        ]
    }

    #[test]
    fn every_truncation_is_an_error() {
        for wire in valid_messages() {
            assert!(parse_dns_response(&wire, Transport::Udp).unwrap().is_some());
            for end in 0..wire.len() {
                let result = parse_dns_response(&wire[..end], Transport::Udp);
                assert!(
                    result.is_err(),
                    "UDP message cut at {end} of {} parsed: {result:?}",
                    wire.len()
                );
            }
            let framed = tcp_framed(&[&wire]);
            for end in 0..framed.len() {
                let result = parse_dns_response(&framed[..end], Transport::Tcp);
                assert!(
                    result.is_err(),
                    "TCP message cut at {end} of {} parsed: {result:?}",
                    framed.len()
                );
            }
        }
    }

    // === Deterministic fuzzing, for CI where cargo-fuzz does not run ===

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn mutate(rng: &mut XorShift, packet: &mut Vec<u8>) {
        for _ in 0..=rng.below(4) {
            let at = rng.below(packet.len());
            match rng.below(7) {
                0 if !packet.is_empty() => packet[at] ^= 1 << rng.below(8),
                1 if !packet.is_empty() => packet[at] = rng.next() as u8,
                2 => packet.insert(at, rng.next() as u8),
                3 if !packet.is_empty() => drop(packet.remove(at)),
                4 => packet.truncate(at),
                // A compression pointer to anywhere, the classic way to confuse a name decoder.
                5 if packet.len() > at + 1 => {
                    packet[at] = 0xc0 | (rng.next() as u8 & 0x3f);
                    packet[at + 1] = rng.next() as u8;
                }
                _ => {
                    let len = rng.below(16).min(packet.len() - at);
                    let chunk = packet[at..at + len].to_vec();
                    let to = rng.below(packet.len());
                    packet.splice(to..to, chunk);
                }
            }
        }
    }

    #[test]
    fn mutated_packets_never_panic() {
        let seeds = valid_messages();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let (mut ok, mut err) = (0u32, 0u32);
        for i in 0..100_000 {
            // Odd rounds mutate a TCP stream, framing included.
            let (mut packet, transport) = match i % 2 {
                0 => (seeds[i / 2 % seeds.len()].clone(), Transport::Udp),
                _ => (
                    tcp_framed(&[&seeds[i / 2 % seeds.len()], &seeds[(i / 2 + 1) % seeds.len()]]),
                    Transport::Tcp,
                ),
            };
            mutate(&mut rng, &mut packet);
            match parse_dns_responses(&packet, transport) {
                Ok(_) => ok += 1,
                Err(_) => err += 1,
            }
        }
        // Both outcomes must occur, or the mutations are not exercising the parser.
        assert!(ok > 1_000 && err > 1_000, "ok {ok}, err {err}");
    }
}
