//! Events from the node's kernel programs: the raw records as the programs write them into their
//! ring buffers (`#[repr(C)]` mirrors of `ebpf/include/events.h`) and the domain types they
//! become. Parsing is plain, safe code over byte slices, so it is tested without a kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use bytemuck::{Pod, Zeroable};

pub const COMM_LEN: usize = 16;
pub const ADDR_LEN: usize = 16;
/// How much of a DNS answer the kernel copies; longer answers arrive truncated.
pub const DNS_MAX_PAYLOAD: usize = 512;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const TCP_EVENT_CONNECT: u8 = 1;
const TCP_EVENT_ACCEPT: u8 = 2;
const TCP_EVENT_CLOSE: u8 = 3;

// === raw records (events.h) ===

/// `struct tcp_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct RawTcpEvent {
    pub timestamp_ns: u64,
    pub cgroup_id: u64,
    pub netns_cookie: u64,
    pub netns_ino: u32,
    pub pid: u32,
    pub tid: u32,
    pub kind: u8,
    pub side: u8,
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; ADDR_LEN],
    pub daddr: [u8; ADDR_LEN],
    pub comm: [u8; COMM_LEN],
    pub _pad1: u32,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// `struct dns_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct RawDnsEvent {
    pub timestamp_ns: u64,
    pub cgroup_id: u64,
    pub netns_cookie: u64,
    pub netns_ino: u32,
    pub ifindex: u32,
    pub family: u16,
    pub protocol: u8,
    pub _pad0: u8,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; ADDR_LEN],
    pub daddr: [u8; ADDR_LEN],
    pub payload_len: u16,
    pub captured_len: u16,
    pub _pad1: u32,
    pub payload: [u8; DNS_MAX_PAYLOAD],
}

// === domain types ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpEventKind {
    /// The client side: a process's connect() completed.
    Connect,
    /// The server side: a process accepted the connection.
    Accept,
    /// A socket reported by a connect (`side` [`TcpEventKind::Connect`]) or an accept
    /// (`side` [`TcpEventKind::Accept`]) closed; the event repeats that one's process, cgroup
    /// and namespace, and carries the kernel's byte counts.
    Close {
        side: TcpSide,
        /// From the client's view: `sent` went from `src` to `dst`.
        bytes: model::Traffic,
    },
}

/// Which end of a connection a socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpSide {
    Connect,
    Accept,
}

impl TcpEventKind {
    /// The end of the connection the event's socket is.
    pub fn side(self) -> TcpSide {
        match self {
            TcpEventKind::Connect => TcpSide::Connect,
            TcpEventKind::Accept => TcpSide::Accept,
            TcpEventKind::Close { side, .. } => side,
        }
    }
}

/// One end of a TCP connection and the process there. `src` is always the connecting side and
/// `dst` the accepting side, so both ends of one connection report the same pair (as seen from
/// their own network namespaces: NAT in between makes them differ).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpEvent {
    pub kind: TcpEventKind,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The process (thread group) id.
    pub pid: u32,
    /// The thread's name.
    pub comm: String,
    /// cgroup v2 id of the process: the inode number of its cgroup directory.
    pub cgroup_id: u64,
    /// The socket's network namespace, as the inode in `/proc/<pid>/ns/net`.
    pub netns: u64,
    /// The same namespace's cookie (`SO_NETNS_COOKIE`).
    pub netns_cookie: u64,
    pub at: SystemTime,
}

/// How a [`DnsPacket`] travelled: the transport the DNS parser and `aws-proxy` use too.
pub use model::edge::Transport as DnsTransport;

/// A DNS message from a server (port 53) delivered to a socket on this node, for a DNS parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsPacket {
    /// The DNS message (for TCP without its 2-byte length prefix); at most [`DNS_MAX_PAYLOAD`]
    /// bytes, so possibly cut short: see `truncated`.
    pub bytes: Vec<u8>,
    /// The message is longer than `bytes`.
    pub truncated: bool,
    pub transport: DnsTransport,
    pub server: SocketAddr,
    pub client: SocketAddr,
    /// cgroup v2 id of the receiving socket.
    pub cgroup_id: u64,
    /// The receiving socket's network namespace inode (0 if unknown).
    pub netns: u64,
    pub netns_cookie: u64,
    pub ifindex: u32,
    pub at: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Tcp(TcpEvent),
    Dns(DnsPacket),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("{record} record of {got} bytes, expected at least {expected}")]
    Short { record: &'static str, expected: usize, got: usize },
    #[error("unknown address family {0}")]
    Family(u16),
    #[error("unknown TCP event kind {0}")]
    Kind(u8),
    #[error("unknown side {0} of a TCP close event")]
    Side(u8),
    #[error("unknown transport protocol {0}")]
    Protocol(u8),
    #[error("captured length {captured} exceeds {max}")]
    CapturedLen { captured: u16, max: usize },
    #[error("TCP segment without a DNS message")]
    EmptyTcpSegment,
}

/// Turns the kernel's `CLOCK_BOOTTIME` timestamps into wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct BootClock {
    booted_at: SystemTime,
}

impl BootClock {
    pub fn new(booted_at: SystemTime) -> Self {
        Self { booted_at }
    }

    /// Reads the clocks now. Wall-clock steps after this shift the converted times.
    pub fn now() -> std::io::Result<Self> {
        let since_boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)?;
        let since_boot = Duration::new(
            since_boot.tv_sec().try_into().unwrap_or(0),
            since_boot.tv_nsec().try_into().unwrap_or(0),
        );
        Ok(Self { booted_at: SystemTime::now() - since_boot })
    }

    pub fn at(&self, timestamp_ns: u64) -> SystemTime {
        self.booted_at + Duration::from_nanos(timestamp_ns)
    }
}

// === parsing ===

fn record<T: Pod>(bytes: &[u8], name: &'static str) -> Result<T, EventError> {
    let size = std::mem::size_of::<T>();
    let bytes = bytes.get(..size).ok_or(EventError::Short {
        record: name,
        expected: size,
        got: bytes.len(),
    })?;
    Ok(bytemuck::pod_read_unaligned(bytes))
}

fn socket_addr(family: u16, addr: &[u8; ADDR_LEN], port: u16) -> Result<SocketAddr, EventError> {
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        // An IPv4 peer of a dual-stack socket shows as ::ffff:a.b.c.d; name it as IPv4.
        AF_INET6 => Ipv6Addr::from(*addr)
            .to_ipv4_mapped()
            .map_or(IpAddr::V6(Ipv6Addr::from(*addr)), IpAddr::V4),
        other => return Err(EventError::Family(other)),
    };
    Ok(SocketAddr::new(ip, port))
}

fn comm(raw: &[u8; COMM_LEN]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

impl TcpEvent {
    pub fn parse(bytes: &[u8], clock: &BootClock) -> Result<Self, EventError> {
        let raw: RawTcpEvent = record(bytes, "tcp_event")?;
        let kind = match raw.kind {
            TCP_EVENT_CONNECT => TcpEventKind::Connect,
            TCP_EVENT_ACCEPT => TcpEventKind::Accept,
            TCP_EVENT_CLOSE => TcpEventKind::Close {
                side: match raw.side {
                    TCP_EVENT_CONNECT => TcpSide::Connect,
                    TCP_EVENT_ACCEPT => TcpSide::Accept,
                    other => return Err(EventError::Side(other)),
                },
                bytes: model::Traffic { sent: raw.bytes_sent, received: raw.bytes_received },
            },
            other => return Err(EventError::Kind(other)),
        };
        Ok(TcpEvent {
            kind,
            src: socket_addr(raw.family, &raw.saddr, raw.sport)?,
            dst: socket_addr(raw.family, &raw.daddr, raw.dport)?,
            pid: raw.pid,
            comm: comm(&raw.comm),
            cgroup_id: raw.cgroup_id,
            netns: raw.netns_ino.into(),
            netns_cookie: raw.netns_cookie,
            at: clock.at(raw.timestamp_ns),
        })
    }
}

impl DnsPacket {
    pub fn parse(bytes: &[u8], clock: &BootClock) -> Result<Self, EventError> {
        let raw: RawDnsEvent = record(bytes, "dns_event")?;
        let captured = usize::from(raw.captured_len);
        let payload = raw
            .payload
            .get(..captured)
            .ok_or(EventError::CapturedLen { captured: raw.captured_len, max: DNS_MAX_PAYLOAD })?;
        let payload_len = usize::from(raw.payload_len);
        let (transport, bytes, truncated) = match raw.protocol {
            IPPROTO_UDP => (DnsTransport::Udp, payload, captured < payload_len),
            // DNS over TCP prefixes each message with its length. A response split over several
            // segments yields only its first part here (flagged truncated); the rest is not
            // reassembled.
            IPPROTO_TCP => {
                let (prefix, message) =
                    payload.split_at_checked(2).ok_or(EventError::EmptyTcpSegment)?;
                if message.is_empty() {
                    return Err(EventError::EmptyTcpSegment);
                }
                let message_len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
                (DnsTransport::Tcp, message, message.len() < message_len)
            }
            other => return Err(EventError::Protocol(other)),
        };
        Ok(DnsPacket {
            bytes: bytes.to_vec(),
            truncated,
            transport,
            server: socket_addr(raw.family, &raw.saddr, raw.sport)?,
            client: socket_addr(raw.family, &raw.daddr, raw.dport)?,
            cgroup_id: raw.cgroup_id,
            netns: raw.netns_ino.into(),
            netns_cookie: raw.netns_cookie,
            ifindex: raw.ifindex,
            at: clock.at(raw.timestamp_ns),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of, size_of_val};
    use std::path::PathBuf;
    use std::process::Command;

    use super::*;

    /// (C expression, Rust value) pairs for every size and offset of both records.
    macro_rules! layout {
        ($c_struct:literal, $rust:ty, [$($field:ident),* $(,)?]) => {{
            let zero = <$rust as Zeroable>::zeroed();
            let mut rows = vec![(format!("sizeof(struct {})", $c_struct), size_of::<$rust>())];
            $(
                rows.push((format!("offsetof(struct {}, {})", $c_struct, stringify!($field)), offset_of!($rust, $field)));
                rows.push((format!("sizeof(((struct {} *)0)->{})", $c_struct, stringify!($field)), size_of_val(&zero.$field)));
            )*
            rows
        }};
    }

    fn rust_layout() -> Vec<(String, usize)> {
        let mut rows = layout!(
            "tcp_event",
            RawTcpEvent,
            [
                timestamp_ns,
                cgroup_id,
                netns_cookie,
                netns_ino,
                pid,
                tid,
                kind,
                side,
                family,
                sport,
                dport,
                saddr,
                daddr,
                comm,
                _pad1,
                bytes_sent,
                bytes_received
            ]
        );
        rows.extend(layout!(
            "dns_event",
            RawDnsEvent,
            [
                timestamp_ns,
                cgroup_id,
                netns_cookie,
                netns_ino,
                ifindex,
                family,
                protocol,
                _pad0,
                sport,
                dport,
                saddr,
                daddr,
                payload_len,
                captured_len,
                _pad1,
                payload
            ]
        ));
        rows
    }

    /// Compiles a C program that prints each row's expression with the host C compiler.
    fn c_layout(rows: &[(String, usize)]) -> Vec<usize> {
        let include = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ebpf/include");
        let dir = std::env::temp_dir().join(format!("events-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut source = String::from(
            "#include <stddef.h>\n#include <stdio.h>\n#include \"events.h\"\nint main(void) {\n",
        );
        for (expr, _) in rows {
            source.push_str(&format!("    printf(\"%zu\\n\", (size_t)({expr}));\n"));
        }
        source.push_str("    return 0;\n}\n");
        std::fs::write(dir.join("layout.c"), source).unwrap();
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
        let status = Command::new(&cc)
            .arg("-I")
            .arg(&include)
            .arg(dir.join("layout.c"))
            .arg("-o")
            .arg(dir.join("layout"))
            .status()
            .unwrap_or_else(|e| panic!("the layout test needs a C compiler ({cc}): {e}"));
        assert!(
            status.success(),
            "compiling the layout program against {} failed",
            include.display()
        );
        let output = Command::new(dir.join("layout")).output().unwrap();
        std::fs::remove_dir_all(&dir).ok();
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| line.parse().unwrap())
            .collect()
    }

    #[test]
    fn records_match_the_c_header() {
        let rows = rust_layout();
        let c = c_layout(&rows);
        assert_eq!(c.len(), rows.len());
        let mismatches: Vec<String> = rows
            .iter()
            .zip(&c)
            .filter(|((_, rust), c)| rust != *c)
            .map(|((expr, rust), c)| format!("{expr}: C {c}, Rust {rust}"))
            .collect();
        assert!(
            mismatches.is_empty(),
            "events.rs and events.h disagree:\n{}",
            mismatches.join("\n")
        );
    }

    fn clock() -> BootClock {
        BootClock::new(SystemTime::UNIX_EPOCH)
    }

    fn addr16(bytes: &[u8]) -> [u8; ADDR_LEN] {
        let mut addr = [0; ADDR_LEN];
        addr[..bytes.len()].copy_from_slice(bytes);
        addr
    }

    fn tcp_raw() -> RawTcpEvent {
        let mut comm = [0; COMM_LEN];
        comm[..4].copy_from_slice(b"curl");
        RawTcpEvent {
            timestamp_ns: 1_500_000_000,
            cgroup_id: 7,
            netns_cookie: 9,
            netns_ino: 4026531840,
            pid: 42,
            tid: 43,
            kind: TCP_EVENT_CONNECT,
            family: AF_INET,
            sport: 40000,
            dport: 443,
            saddr: addr16(&[10, 0, 0, 1]),
            daddr: addr16(&[10, 0, 0, 2]),
            comm,
            ..Zeroable::zeroed()
        }
    }

    #[test]
    fn parses_an_ipv4_connect() {
        let event = TcpEvent::parse(bytemuck::bytes_of(&tcp_raw()), &clock()).unwrap();
        assert_eq!(
            event,
            TcpEvent {
                kind: TcpEventKind::Connect,
                src: "10.0.0.1:40000".parse().unwrap(),
                dst: "10.0.0.2:443".parse().unwrap(),
                pid: 42,
                comm: "curl".into(),
                cgroup_id: 7,
                netns: 4026531840,
                netns_cookie: 9,
                at: SystemTime::UNIX_EPOCH + Duration::from_millis(1500),
            }
        );
    }

    #[test]
    fn parses_an_ipv6_accept_and_names_mapped_ipv4_as_ipv4() {
        let mut raw = tcp_raw();
        raw.kind = TCP_EVENT_ACCEPT;
        raw.family = AF_INET6;
        raw.saddr = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
        raw.daddr = "::ffff:10.0.0.2".parse::<Ipv6Addr>().unwrap().octets();
        raw.comm = [b'x'; COMM_LEN];
        let event = TcpEvent::parse(bytemuck::bytes_of(&raw), &clock()).unwrap();
        assert_eq!(event.kind, TcpEventKind::Accept);
        assert_eq!(event.src, "[fd00::1]:40000".parse().unwrap());
        assert_eq!(event.dst, "10.0.0.2:443".parse().unwrap());
        assert_eq!(event.comm, "x".repeat(COMM_LEN));
    }

    #[test]
    fn rejects_bad_tcp_records_without_panicking() {
        let raw = tcp_raw();
        let bytes = bytemuck::bytes_of(&raw);
        assert!(matches!(TcpEvent::parse(&bytes[..50], &clock()), Err(EventError::Short { .. })));
        assert!(matches!(TcpEvent::parse(&[], &clock()), Err(EventError::Short { .. })));
        let mut bad = raw;
        bad.family = 1;
        assert_eq!(TcpEvent::parse(bytemuck::bytes_of(&bad), &clock()), Err(EventError::Family(1)));
        let mut bad = raw;
        bad.kind = 9;
        assert_eq!(TcpEvent::parse(bytemuck::bytes_of(&bad), &clock()), Err(EventError::Kind(9)));
        let mut bad = raw;
        bad.kind = TCP_EVENT_CLOSE;
        bad.side = 7;
        assert_eq!(TcpEvent::parse(bytemuck::bytes_of(&bad), &clock()), Err(EventError::Side(7)));
    }

    #[test]
    fn parses_a_close_with_its_side_and_bytes() {
        let mut raw = tcp_raw();
        raw.kind = TCP_EVENT_CLOSE;
        raw.side = TCP_EVENT_ACCEPT;
        raw.bytes_sent = 5_000_000;
        raw.bytes_received = u64::MAX;
        let event = TcpEvent::parse(bytemuck::bytes_of(&raw), &clock()).unwrap();
        assert_eq!(
            event.kind,
            TcpEventKind::Close {
                side: TcpSide::Accept,
                bytes: model::Traffic { sent: 5_000_000, received: u64::MAX }
            }
        );
        assert_eq!(event.kind.side(), TcpSide::Accept);
        assert_eq!(
            (event.src, event.dst),
            ("10.0.0.1:40000".parse().unwrap(), "10.0.0.2:443".parse().unwrap())
        );
    }

    fn dns_raw(protocol: u8, payload: &[u8], payload_len: u16) -> RawDnsEvent {
        let mut raw = RawDnsEvent {
            timestamp_ns: 5,
            cgroup_id: 1,
            netns_ino: 3,
            ifindex: 2,
            family: AF_INET,
            protocol,
            sport: 53,
            dport: 5353,
            saddr: addr16(&[10, 96, 0, 10]),
            daddr: addr16(&[10, 1, 2, 3]),
            payload_len,
            captured_len: payload.len() as u16,
            ..Zeroable::zeroed()
        };
        raw.payload[..payload.len()].copy_from_slice(payload);
        raw
    }

    #[test]
    fn parses_dns_over_udp_and_tcp() {
        let udp =
            DnsPacket::parse(bytemuck::bytes_of(&dns_raw(IPPROTO_UDP, b"message", 7)), &clock())
                .unwrap();
        assert_eq!(
            (udp.bytes.as_slice(), udp.truncated, udp.transport),
            (&b"message"[..], false, DnsTransport::Udp)
        );
        assert_eq!(udp.server, "10.96.0.10:53".parse().unwrap());
        assert_eq!(udp.client, "10.1.2.3:5353".parse().unwrap());
        assert_eq!((udp.cgroup_id, udp.netns, udp.ifindex), (1, 3, 2));

        let tcp = DnsPacket::parse(
            bytemuck::bytes_of(&dns_raw(IPPROTO_TCP, b"\x00\x07message", 9)),
            &clock(),
        )
        .unwrap();
        assert_eq!(
            (tcp.bytes.as_slice(), tcp.truncated, tcp.transport),
            (&b"message"[..], false, DnsTransport::Tcp)
        );

        let long = [0xab; DNS_MAX_PAYLOAD];
        let cut =
            DnsPacket::parse(bytemuck::bytes_of(&dns_raw(IPPROTO_UDP, &long, 1200)), &clock())
                .unwrap();
        assert!(cut.truncated);
        assert_eq!(cut.bytes.len(), DNS_MAX_PAYLOAD);
    }

    #[test]
    fn rejects_bad_dns_records_without_panicking() {
        let parse = |raw: RawDnsEvent| DnsPacket::parse(bytemuck::bytes_of(&raw), &clock());
        assert_eq!(parse(dns_raw(IPPROTO_TCP, b"\x00\x07", 2)), Err(EventError::EmptyTcpSegment));
        assert_eq!(parse(dns_raw(IPPROTO_TCP, b"\x00", 1)), Err(EventError::EmptyTcpSegment));
        assert_eq!(parse(dns_raw(1, b"x", 1)), Err(EventError::Protocol(1)));
        let mut bad = dns_raw(IPPROTO_UDP, b"x", 1);
        bad.captured_len = 600;
        assert!(matches!(parse(bad), Err(EventError::CapturedLen { .. })));
        assert!(matches!(DnsPacket::parse(&[0; 100], &clock()), Err(EventError::Short { .. })));
    }
}
