//! The fallback DNS capture: where eBPF cannot load, an `AF_PACKET` socket reads DNS answers
//! (UDP or TCP from port 53) as they reach clients in the socket's network namespace.
//!
//! A classic BPF filter in the kernel passes only those frames, so the thread is woken for DNS
//! answers only. One answer can be seen more than once: on `lo` every packet shows up both
//! outgoing and incoming, and on a node that forwards between pods it crosses several
//! interfaces. Outgoing copies on loopback are dropped by their packet type and any other
//! repeat by its content within a short window; both are counted.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use etherparse::{IpNumber, NetSlice, SlicedPacket, TransportSlice};
use model::edge::Transport;
use model::observation::DnsAnswer;
use nix::errno::Errno;
use nix::sys::socket::LinkAddr;
use socket2::{Domain, Protocol, SockFilter, Socket, Type};

use super::dns::parse_dns_responses;

const DNS_PORT: u16 = 53;
/// Large enough for a GRO-merged TCP segment; longer frames are cut by the filter.
const SNAPLEN: usize = 256 * 1024;
const ETH_P_ALL: u16 = 0x0003;

const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;
const ARPHRD_RAWIP: u16 = 519;
const ARPHRD_NONE: u16 = 0xfffe;
const PACKET_OUTGOING: u8 = 4;

#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Capture on this interface only; all interfaces of the network namespace when `None`.
    pub interface: Option<String>,
    /// How long a copy of an answer already seen counts as a duplicate.
    pub dedup_window: Duration,
    /// How long `run` waits for a frame before it looks at its stop flag again.
    pub poll_interval: Duration,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            interface: None,
            dedup_window: Duration::from_secs(1),
            poll_interval: Duration::from_millis(200),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot open an AF_PACKET socket (needs CAP_NET_RAW): {0}")]
    Open(io::Error),
    #[error("cannot attach the DNS filter to the capture socket: {0}")]
    Filter(io::Error),
    #[error("no interface named {0:?} in this network namespace")]
    NoSuchInterface(String),
    #[error("cannot bind the capture socket to {interface:?}: {source}")]
    Bind { interface: String, source: io::Error },
    #[error("reading from the capture socket failed: {0}")]
    Read(io::Error),
}

// === Counters ===

/// Counters shared with whoever reports health and metrics.
#[derive(Debug, Default)]
pub struct CaptureCounters {
    frames_seen: AtomicU64,
    dns_answers: AtomicU64,
    malformed: AtomicU64,
    duplicates_dropped: AtomicU64,
    not_answers: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames that passed the kernel filter (DNS from port 53) and reached userspace.
    pub frames_seen: u64,
    /// Answers reported.
    pub dns_answers: u64,
    /// Frames or DNS messages that could not be parsed (truncated, fragmented, garbage).
    pub malformed: u64,
    /// Second copies of an answer already reported.
    pub duplicates_dropped: u64,
    /// DNS messages that are not answers: queries, error responses.
    pub not_answers: u64,
}

impl CaptureCounters {
    pub fn snapshot(&self) -> CaptureStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CaptureStats {
            frames_seen: get(&self.frames_seen),
            dns_answers: get(&self.dns_answers),
            malformed: get(&self.malformed),
            duplicates_dropped: get(&self.duplicates_dropped),
            not_answers: get(&self.not_answers),
        }
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

// === Frames ===

/// What a captured frame starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// An Ethernet header; on `lo` it is all zeroes but for the EtherType.
    Ethernet,
    /// No link-layer header (tun, WireGuard and other `ARPHRD_NONE`/`ARPHRD_RAWIP` devices).
    RawIp,
    /// A Linux "cooked" (SLL) header, as in captures saved with `-i any`.
    LinuxSll,
}

impl LinkType {
    /// The link type of frames read from a device of ARP hardware type `hatype`.
    pub fn from_arphrd(hatype: u16) -> Option<LinkType> {
        match hatype {
            ARPHRD_ETHER | ARPHRD_LOOPBACK => Some(LinkType::Ethernet),
            ARPHRD_NONE | ARPHRD_RAWIP => Some(LinkType::RawIp),
            _ => None,
        }
    }
}

/// The DNS payload of a frame sent from port 53, and who it goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsSegment<'a> {
    pub client_ip: IpAddr,
    pub client_port: u16,
    pub server_ip: IpAddr,
    pub transport: Transport,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("DNS answer in a fragmented IP packet")]
    Fragmented,
}

/// Finds the DNS answer in a frame: `Ok(None)` for anything not sent from port 53 (or a TCP
/// segment without data).
pub fn dns_segment(frame: &[u8], link: LinkType) -> Result<Option<DnsSegment<'_>>, FrameError> {
    let sliced = match link {
        LinkType::Ethernet => SlicedPacket::from_ethernet(frame),
        LinkType::RawIp => SlicedPacket::from_ip(frame),
        LinkType::LinuxSll => SlicedPacket::from_linux_sll(frame),
    }
    .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let (server_ip, client_ip, ip_payload) = match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => (
            IpAddr::V4(ip.header().source_addr()),
            IpAddr::V4(ip.header().destination_addr()),
            ip.payload(),
        ),
        Some(NetSlice::Ipv6(ip)) => (
            IpAddr::V6(ip.header().source_addr()),
            IpAddr::V6(ip.header().destination_addr()),
            ip.payload(),
        ),
        _ => return Ok(None),
    };
    if ip_payload.fragmented {
        // Only the first fragment carries the ports; report it if it is DNS, skip the rest.
        let from_dns = matches!(ip_payload.ip_number, IpNumber::UDP | IpNumber::TCP)
            && ip_payload
                .payload
                .first_chunk::<2>()
                .is_some_and(|p| u16::from_be_bytes(*p) == DNS_PORT);
        return if from_dns { Err(FrameError::Fragmented) } else { Ok(None) };
    }
    let (transport, source_port, client_port, payload) = match &sliced.transport {
        Some(TransportSlice::Udp(udp)) => {
            (Transport::Udp, udp.source_port(), udp.destination_port(), udp.payload())
        }
        Some(TransportSlice::Tcp(tcp)) => {
            (Transport::Tcp, tcp.source_port(), tcp.destination_port(), tcp.payload())
        }
        _ => return Ok(None),
    };
    if source_port != DNS_PORT || payload.is_empty() {
        return Ok(None);
    }
    Ok(Some(DnsSegment { client_ip, client_port, server_ip, transport, payload }))
}

/// How a frame reached the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    pub link: LinkType,
    /// The outgoing copy of a packet on a loopback device, whose incoming copy follows.
    pub loopback_outgoing: bool,
}

// === From frames to answers ===

/// Turns frames into DNS answers: parses, deduplicates, counts. Socket-free, for tests.
#[derive(Debug)]
pub struct AnswerExtractor {
    recent: RecentAnswers,
    counters: Arc<CaptureCounters>,
}

impl AnswerExtractor {
    pub fn new(dedup_window: Duration, counters: Arc<CaptureCounters>) -> Self {
        AnswerExtractor { recent: RecentAnswers::new(dedup_window), counters }
    }

    pub fn handle(
        &mut self,
        frame: &[u8],
        meta: FrameMeta,
        at: DateTime<Utc>,
        now: Instant,
    ) -> Vec<DnsAnswer> {
        let c = &self.counters;
        bump(&c.frames_seen, 1);
        if meta.loopback_outgoing {
            bump(&c.duplicates_dropped, 1);
            return Vec::new();
        }
        let segment = match dns_segment(frame, meta.link) {
            Ok(Some(segment)) => segment,
            Ok(None) => return Vec::new(),
            Err(_) => {
                bump(&c.malformed, 1);
                return Vec::new();
            }
        };
        if !self.recent.first_sighting(&segment, now) {
            bump(&c.duplicates_dropped, 1);
            return Vec::new();
        }
        match parse_dns_responses(segment.payload, segment.transport) {
            Ok(answers) if answers.is_empty() => {
                bump(&c.not_answers, 1);
                Vec::new()
            }
            Ok(answers) => {
                bump(&c.dns_answers, answers.len() as u64);
                answers.into_iter().map(|a| a.into_observation(segment.client_ip, at)).collect()
            }
            Err(_) => {
                bump(&c.malformed, 1);
                Vec::new()
            }
        }
    }
}

/// Fingerprints of the answers seen within the window, to drop further copies of them.
#[derive(Debug)]
struct RecentAnswers {
    window: Duration,
    hasher: RandomState,
    seen: HashMap<u64, Instant>,
    order: VecDeque<(Instant, u64)>,
}

impl RecentAnswers {
    fn new(window: Duration) -> Self {
        RecentAnswers {
            window,
            hasher: RandomState::new(),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn first_sighting(&mut self, segment: &DnsSegment<'_>, now: Instant) -> bool {
        while let Some(&(at, key)) = self.order.front() {
            if now.duration_since(at) < self.window {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&key) == Some(&at) {
                self.seen.remove(&key);
            }
        }
        let key = self.hasher.hash_one((
            segment.client_ip,
            segment.client_port,
            segment.transport == Transport::Tcp,
            segment.payload,
        ));
        if self.seen.contains_key(&key) {
            return false;
        }
        self.seen.insert(key, now);
        self.order.push_back((now, key));
        true
    }
}

// === The socket ===

/// An `AF_PACKET` socket reading DNS answers in the network namespace of the thread that
/// opened it.
pub struct DnsCapture {
    socket: Socket,
    interface_index: Option<usize>,
    extractor: AnswerExtractor,
    counters: Arc<CaptureCounters>,
    buf: Vec<u8>,
}

impl DnsCapture {
    pub fn open(config: &CaptureConfig) -> Result<Self, CaptureError> {
        let protocol = Protocol::from(i32::from(ETH_P_ALL.to_be()));
        let socket =
            Socket::new(Domain::PACKET, Type::RAW, Some(protocol)).map_err(CaptureError::Open)?;
        let filter: Vec<SockFilter> = dns_filter()
            .iter()
            .map(|&(code, jt, jf, k)| SockFilter::new(code, jt, jf, k))
            .collect();
        socket.attach_filter(&filter).map_err(CaptureError::Filter)?;

        let interface_index = match &config.interface {
            None => None,
            Some(name) => {
                let link = interface_link_addr(name)?;
                nix::sys::socket::bind(socket.as_raw_fd(), &link).map_err(|e| {
                    CaptureError::Bind { interface: name.clone(), source: io::Error::from(e) }
                })?;
                Some(link.ifindex())
            }
        };
        // Frames queued before the filter was attached may be anything: drop them.
        socket.set_nonblocking(true).map_err(CaptureError::Open)?;
        let mut scratch = [0u8; 2048];
        while nix::sys::socket::recv(
            socket.as_raw_fd(),
            &mut scratch,
            nix::sys::socket::MsgFlags::empty(),
        )
        .is_ok()
        {}
        socket.set_nonblocking(false).map_err(CaptureError::Open)?;
        socket.set_read_timeout(Some(config.poll_interval)).map_err(CaptureError::Open)?;

        let counters = Arc::new(CaptureCounters::default());
        Ok(DnsCapture {
            socket,
            interface_index,
            extractor: AnswerExtractor::new(config.dedup_window, counters.clone()),
            counters,
            buf: vec![0; SNAPLEN],
        })
    }

    pub fn counters(&self) -> Arc<CaptureCounters> {
        self.counters.clone()
    }

    /// Waits up to the poll interval for one frame and returns the answers it carried.
    pub fn next_answers(&mut self) -> Result<Vec<DnsAnswer>, CaptureError> {
        let (len, from) =
            match nix::sys::socket::recvfrom::<LinkAddr>(self.socket.as_raw_fd(), &mut self.buf) {
                Ok(received) => received,
                Err(Errno::EAGAIN | Errno::EINTR) => return Ok(Vec::new()),
                Err(e) => return Err(CaptureError::Read(io::Error::from(e))),
            };
        let meta = match from {
            Some(from) => {
                // Frames that arrived between socket() and bind() may be from other interfaces.
                if self.interface_index.is_some_and(|index| index != from.ifindex()) {
                    return Ok(Vec::new());
                }
                let Some(link) = LinkType::from_arphrd(from.hatype()) else {
                    return Ok(Vec::new());
                };
                FrameMeta {
                    link,
                    loopback_outgoing: from.hatype() == ARPHRD_LOOPBACK
                        && from.pkttype() == PACKET_OUTGOING,
                }
            }
            None => FrameMeta { link: LinkType::Ethernet, loopback_outgoing: false },
        };
        Ok(self.extractor.handle(&self.buf[..len], meta, Utc::now(), Instant::now()))
    }

    /// Reads answers until `stop` is set, handing each to `on_answer`. Blocking: run it on a
    /// thread of its own.
    pub fn run(
        mut self,
        stop: &AtomicBool,
        mut on_answer: impl FnMut(DnsAnswer),
    ) -> Result<(), CaptureError> {
        while !stop.load(Ordering::Relaxed) {
            for answer in self.next_answers()? {
                on_answer(answer);
            }
        }
        Ok(())
    }
}

/// The `AF_PACKET` address of interface `name`, as `getifaddrs` reports it (with protocol 0,
/// which `bind` takes as "keep the socket's protocol").
fn interface_link_addr(name: &str) -> Result<LinkAddr, CaptureError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| CaptureError::Bind {
        interface: name.to_string(),
        source: io::Error::from(e),
    })?;
    addrs
        .filter(|a| a.interface_name == name)
        .find_map(|a| a.address.as_ref()?.as_link_addr().copied())
        .ok_or_else(|| CaptureError::NoSuchInterface(name.to_string()))
}

// === The kernel filter ===

mod bpf {
    pub const LD_W_ABS: u16 = 0x20;
    pub const LD_H_IND: u16 = 0x48;
    pub const LD_B_IND: u16 = 0x50;
    pub const LDX_IMM: u16 = 0x01;
    pub const ALU_AND_K: u16 = 0x54;
    pub const ALU_LSH_K: u16 = 0x64;
    pub const ALU_ADD_X: u16 = 0x0c;
    pub const TAX: u16 = 0x07;
    pub const JA: u16 = 0x05;
    pub const JEQ_K: u16 = 0x15;
    pub const JSET_K: u16 = 0x45;
    pub const RET_K: u16 = 0x06;
    /// Kernel "ancillary" loads: `SKF_AD_OFF + SKF_AD_*`.
    pub const AD_PROTOCOL: u32 = 0xffff_f000;
    pub const AD_HATYPE: u32 = 0xffff_f000 + 28;
}

/// Classic BPF that accepts IPv4/IPv6 UDP or TCP from port 53 (IPv4: first fragments only;
/// IPv6: without extension headers) on Ethernet, loopback and raw-IP devices.
///
/// As `(code, jt, jf, k)`: jumps are relative to the next instruction.
fn dns_filter() -> Vec<(u16, u8, u8, u32)> {
    use bpf::*;
    const ACCEPT: u8 = 28;
    const DROP: u8 = 29;
    // The offset of a jump at instruction `at` to instruction `target`.
    let to = |at: u8, target: u8| target - at - 1;
    let program = vec![
        (LD_W_ABS, 0, 0, AD_HATYPE),                                // 0
        (JEQ_K, to(1, 5), 0, u32::from(ARPHRD_ETHER)),              // 1
        (JEQ_K, to(2, 5), 0, u32::from(ARPHRD_LOOPBACK)),           // 2
        (JEQ_K, to(3, 7), 0, u32::from(ARPHRD_NONE)),               // 3
        (JEQ_K, to(4, 7), to(4, DROP), u32::from(ARPHRD_RAWIP)),    // 4
        (LDX_IMM, 0, 0, 14),                                        // 5: X = network header offset
        (JA, 0, 0, 1),                                              // 6
        (LDX_IMM, 0, 0, 0),                                         // 7
        (LD_W_ABS, 0, 0, AD_PROTOCOL),                              // 8
        (JEQ_K, to(9, 11), 0, 0x0800),                              // 9
        (JEQ_K, to(10, 23), to(10, DROP), 0x86dd),                  // 10
        (LD_B_IND, 0, 0, 9),                                        // 11: IPv4 protocol
        (JEQ_K, to(12, 14), 0, 17),                                 // 12
        (JEQ_K, 0, to(13, DROP), 6),                                // 13
        (LD_H_IND, 0, 0, 6),                                        // 14: flags + fragment offset
        (JSET_K, to(15, DROP), 0, 0x1fff),                          // 15
        (LD_B_IND, 0, 0, 0),                                        // 16: version + IHL
        (ALU_AND_K, 0, 0, 0x0f),                                    // 17
        (ALU_LSH_K, 0, 0, 2),                                       // 18
        (ALU_ADD_X, 0, 0, 0),                                       // 19
        (TAX, 0, 0, 0),      // 20: X = transport header offset
        (LD_H_IND, 0, 0, 0), // 21: source port
        (JEQ_K, to(22, ACCEPT), to(22, DROP), u32::from(DNS_PORT)), // 22
        (LD_B_IND, 0, 0, 6), // 23: IPv6 next header
        (JEQ_K, to(24, 26), 0, 17), // 24
        (JEQ_K, 0, to(25, DROP), 6), // 25
        (LD_H_IND, 0, 0, 40), // 26: source port
        (JEQ_K, to(27, ACCEPT), to(27, DROP), u32::from(DNS_PORT)), // 27
        (RET_K, 0, 0, SNAPLEN as u32), // 28: ACCEPT
        (RET_K, 0, 0, 0),    // 29: DROP
    ];
    debug_assert_eq!(program.len(), usize::from(DROP) + 1);
    program
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use etherparse::PacketBuilder;
    use hickory_proto::op::{Message, OpCode, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;

    const CLIENT4: [u8; 4] = [10, 201, 0, 2];
    const SERVER4: [u8; 4] = [10, 201, 0, 1];

    fn answer(qname: &str, ip: [u8; 4]) -> Vec<u8> {
        let name = Name::from_ascii(qname).unwrap();
        let mut m = Message::response(7, OpCode::Query);
        m.add_query(Query::query(name.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(name, 60, RData::A(A(Ipv4Addr::from(ip)))));
        m.to_vec().unwrap()
    }

    fn udp4_frame(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(SERVER4, CLIENT4, 64)
            .udp(sport, dport);
        let mut frame = Vec::new();
        builder.write(&mut frame, payload).unwrap();
        frame
    }

    fn udp6_frame(payload: &[u8]) -> Vec<u8> {
        let server: Ipv6Addr = "fd00:201::1".parse().unwrap();
        let client: Ipv6Addr = "fd00:201::2".parse().unwrap();
        let builder = PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv6(server.octets(), client.octets(), 64)
            .udp(53, 41000);
        let mut frame = Vec::new();
        builder.write(&mut frame, payload).unwrap();
        frame
    }

    fn tcp4_frame(sport: u16, payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([0; 6], [0; 6])
            .ipv4(SERVER4, CLIENT4, 64)
            .tcp(sport, 41000, 1, 65535)
            .ack(1)
            .psh();
        let mut frame = Vec::new();
        builder.write(&mut frame, payload).unwrap();
        frame
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = (message.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(message);
        out
    }

    const ETHER: FrameMeta = FrameMeta { link: LinkType::Ethernet, loopback_outgoing: false };

    #[test]
    fn dns_segments_over_udp_tcp_ipv4_ipv6_and_raw_ip() {
        let dns = answer("shop.test.", [10, 201, 0, 9]);
        let udp = udp4_frame(53, 41000, &dns);
        let segment = dns_segment(&udp, LinkType::Ethernet).unwrap().unwrap();
        assert_eq!(segment.client_ip, IpAddr::from(CLIENT4));
        assert_eq!(segment.server_ip, IpAddr::from(SERVER4));
        assert_eq!(
            (segment.client_port, segment.transport, segment.payload),
            (41000, Transport::Udp, dns.as_slice())
        );

        let v6 = udp6_frame(&dns);
        assert_eq!(
            dns_segment(&v6, LinkType::Ethernet).unwrap().unwrap().client_ip,
            "fd00:201::2".parse::<IpAddr>().unwrap()
        );

        let tcp = tcp4_frame(53, &framed(&dns));
        let segment = dns_segment(&tcp, LinkType::Ethernet).unwrap().unwrap();
        assert_eq!(segment.transport, Transport::Tcp);

        // The same packet without its Ethernet header, as a tun or WireGuard device gives it.
        assert_eq!(
            dns_segment(&udp[14..], LinkType::RawIp).unwrap().unwrap().payload,
            dns.as_slice()
        );
    }

    #[test]
    fn frames_that_are_not_dns_answers() {
        let dns = answer("shop.test.", [10, 201, 0, 9]);
        // A query going to port 53, a TCP ACK without data, ARP-ish garbage EtherType.
        assert_eq!(dns_segment(&udp4_frame(41000, 53, &dns), LinkType::Ethernet), Ok(None));
        assert_eq!(dns_segment(&tcp4_frame(53, &[]), LinkType::Ethernet), Ok(None));
        let mut other = udp4_frame(53, 41000, &dns);
        other[12..14].copy_from_slice(&[0x88, 0xb5]);
        assert_eq!(dns_segment(&other, LinkType::Ethernet), Ok(None));
        // Cut inside the IP header.
        assert!(dns_segment(&udp4_frame(53, 41000, &dns)[..20], LinkType::Ethernet).is_err());
    }

    #[test]
    fn first_fragments_of_dns_answers_are_errors() {
        let dns = answer("big.test.", [10, 0, 0, 1]);
        let mut frame = udp4_frame(53, 41000, &dns);
        frame[14 + 6] |= 0x20; // more fragments
        assert_eq!(dns_segment(&frame, LinkType::Ethernet), Err(FrameError::Fragmented));
    }

    #[test]
    fn extractor_reports_each_answer_once_and_counts() {
        let counters = Arc::new(CaptureCounters::default());
        let mut extractor = AnswerExtractor::new(Duration::from_secs(1), counters.clone());
        let at = Utc::now();
        let t0 = Instant::now();
        let frame = udp4_frame(53, 41000, &answer("shop.test.", [10, 201, 0, 9]));

        // The loopback pair: the outgoing copy is dropped by type.
        assert!(extractor
            .handle(&frame, FrameMeta { link: LinkType::Ethernet, loopback_outgoing: true }, at, t0)
            .is_empty());
        let answers = extractor.handle(&frame, ETHER, at, t0);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].name, "shop.test");
        assert_eq!(answers[0].client_ip, IpAddr::from(CLIENT4));
        assert_eq!(answers[0].addresses, vec![IpAddr::from([10, 201, 0, 9])]);
        // The same answer seen again on another interface (other MACs, same IP packet).
        let mut elsewhere = frame.clone();
        elsewhere[..12].copy_from_slice(&[9; 12]);
        assert!(extractor.handle(&elsewhere, ETHER, at, t0 + Duration::from_millis(5)).is_empty());
        // After the window it is a new answer (a client asking again with the same id and port).
        assert_eq!(extractor.handle(&frame, ETHER, at, t0 + Duration::from_secs(2)).len(), 1);
        // Garbage from port 53, and a query-shaped message from port 53.
        assert!(extractor.handle(&udp4_frame(53, 41000, &[1, 2, 3]), ETHER, at, t0).is_empty());
        let mut query = Message::query();
        query.add_query(Query::query(Name::from_ascii("q.test.").unwrap(), RecordType::A));
        assert!(extractor
            .handle(&udp4_frame(53, 41000, &query.to_vec().unwrap()), ETHER, at, t0)
            .is_empty());

        assert_eq!(
            counters.snapshot(),
            CaptureStats {
                frames_seen: 6,
                dns_answers: 2,
                malformed: 1,
                duplicates_dropped: 2,
                not_answers: 1
            }
        );
    }

    #[test]
    fn old_fingerprints_expire() {
        let mut recent = RecentAnswers::new(Duration::from_millis(100));
        let t0 = Instant::now();
        for i in 0..1000u16 {
            let payload = i.to_be_bytes();
            let segment = DnsSegment {
                client_ip: IpAddr::from(CLIENT4),
                client_port: i,
                server_ip: IpAddr::from(SERVER4),
                transport: Transport::Udp,
                payload: &payload,
            };
            assert!(recent.first_sighting(&segment, t0 + Duration::from_millis(u64::from(i))));
        }
        assert!(recent.seen.len() <= 101, "{} fingerprints kept", recent.seen.len());
    }

    // === The kernel filter, run by a small classic BPF interpreter ===

    fn run_filter(frame: &[u8], hatype: u16, protocol: u16) -> u32 {
        use bpf::*;
        let program = dns_filter();
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let load = |at: u32, size: usize| -> Option<u32> {
            let bytes = frame.get(at as usize..at as usize + size)?;
            Some(bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
        };
        loop {
            let (code, jt, jf, k) = program[pc];
            pc += 1;
            match code {
                LD_W_ABS => {
                    a = match k {
                        AD_HATYPE => u32::from(hatype),
                        AD_PROTOCOL => u32::from(protocol),
                        _ => panic!("unexpected absolute load {k:#x}"),
                    }
                }
                LD_B_IND | LD_H_IND => match load(x + k, if code == LD_B_IND { 1 } else { 2 }) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LDX_IMM => x = k,
                ALU_AND_K => a &= k,
                ALU_LSH_K => a <<= k,
                ALU_ADD_X => a = a.wrapping_add(x),
                TAX => x = a,
                JA => pc += k as usize,
                JEQ_K => pc += usize::from(if a == k { jt } else { jf }),
                JSET_K => pc += usize::from(if a & k != 0 { jt } else { jf }),
                RET_K => return k,
                _ => panic!("unexpected opcode {code:#x}"),
            }
        }
    }

    #[test]
    fn the_kernel_filter_passes_dns_answers_only() {
        let dns = answer("shop.test.", [10, 201, 0, 9]);
        let accept = SNAPLEN as u32;
        let udp4 = udp4_frame(53, 41000, &dns);
        assert_eq!(run_filter(&udp4, ARPHRD_ETHER, 0x0800), accept);
        assert_eq!(run_filter(&udp4, ARPHRD_LOOPBACK, 0x0800), accept);
        assert_eq!(run_filter(&udp4[14..], ARPHRD_NONE, 0x0800), accept);
        assert_eq!(run_filter(&udp4[14..], ARPHRD_RAWIP, 0x0800), accept);
        assert_eq!(run_filter(&udp6_frame(&dns), ARPHRD_ETHER, 0x86dd), accept);
        assert_eq!(run_filter(&tcp4_frame(53, &framed(&dns)), ARPHRD_ETHER, 0x0800), accept);

        // An IPv4 header with options moves the ports.
        let mut with_options = udp4[..14].to_vec();
        with_options.extend_from_slice(&udp4[14..34]);
        with_options[14] = 0x46;
        let total = u16::from_be_bytes([with_options[16], with_options[17]]) + 4;
        with_options[16..18].copy_from_slice(&total.to_be_bytes());
        with_options.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        with_options.extend_from_slice(&udp4[34..]);
        assert_eq!(run_filter(&with_options, ARPHRD_ETHER, 0x0800), accept);
        assert_eq!(
            dns_segment(&with_options, LinkType::Ethernet).unwrap().unwrap().payload,
            dns.as_slice()
        );

        assert_eq!(
            run_filter(&udp4_frame(41000, 53, &dns), ARPHRD_ETHER, 0x0800),
            0,
            "query to port 53"
        );
        assert_eq!(run_filter(&udp4_frame(53, 41000, &dns), ARPHRD_ETHER, 0x0806), 0, "not IP");
        assert_eq!(run_filter(&udp4, 24, 0x0800), 0, "unknown link type");
        let mut icmp = udp4.clone();
        icmp[14 + 9] = 1;
        assert_eq!(run_filter(&icmp, ARPHRD_ETHER, 0x0800), 0, "ICMP");
        let mut later_fragment = udp4.clone();
        later_fragment[14 + 7] = 0x10;
        assert_eq!(run_filter(&later_fragment, ARPHRD_ETHER, 0x0800), 0, "non-first fragment");
        assert_eq!(run_filter(&udp4[..30], ARPHRD_ETHER, 0x0800), 0, "cut short");
    }
}
