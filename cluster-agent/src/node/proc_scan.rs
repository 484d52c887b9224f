//! Established TCP connections read from `/proc/<pid>/net/tcp{,6}`, once per network namespace.
//!
//! This finds connections that predate the agent, and is all there is when eBPF cannot load.
//! Every process in a network namespace shows the same table, so one process per namespace
//! (the lowest pid) is read; the namespace is told apart by the inode of `/proc/<pid>/ns/net`.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use model::observation::{PodHint, TcpConnection};

/// Which end of the connection this host holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The local socket connected out: `local` is the client.
    Outbound,
    /// The local socket was accepted from a listener: `remote` is the client.
    Inbound,
}

/// One established connection as seen from one network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedConnection {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub direction: Direction,
    /// Inode of the network namespace the table was read from.
    pub netns: u64,
    /// The process whose `/proc/<pid>/net` was read: some process in `netns`, not necessarily
    /// the socket's owner.
    pub pid: u32,
    /// The socket's inode (to find its owner through `/proc/<pid>/fd` when that is worth it).
    pub socket_inode: u64,
}

/// The result of one scan of `/proc`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcScan {
    pub connections: Vec<ScannedConnection>,
    /// Network namespaces whose tables were read.
    pub namespaces: usize,
    /// Lines of the tables that could not be parsed.
    pub malformed_lines: usize,
}

/// A line of `/proc/net/tcp` or `tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpTableEntry {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The kernel's TCP state number: 0x01 established, 0x0A listen, ...
    pub state: u8,
    pub uid: u32,
    pub inode: u64,
}

pub const TCP_ESTABLISHED: u8 = 0x01;
pub const TCP_LISTEN: u8 = 0x0A;

#[derive(Debug, thiserror::Error)]
pub enum ProcScanError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("malformed /proc/net/tcp line {line:?}: {reason}")]
    MalformedLine { line: String, reason: &'static str },
    #[error("{path} does not name a network namespace: {target:?}")]
    NotANetns { path: PathBuf, target: String },
}

// === Scanning ===

/// Scans every network namespace that some process under `proc_root` (normally `/proc`) lives
/// in. Processes that vanish or cannot be read during the scan are skipped.
pub fn scan(proc_root: &Path) -> Result<ProcScan, ProcScanError> {
    let mut result = ProcScan::default();
    for (netns, pid) in namespaces(proc_root)? {
        let net = proc_root.join(pid.to_string()).join("net");
        let mut entries = Vec::new();
        let mut readable = false;
        for table in ["tcp", "tcp6"] {
            // tcp6 is absent when IPv6 is disabled; a process that exits takes both with it.
            let Ok(text) = std::fs::read_to_string(net.join(table)) else { continue };
            readable = true;
            for line in table_lines(&text) {
                match parse_tcp_line(line) {
                    Ok(entry) => entries.push(entry),
                    Err(_) => result.malformed_lines += 1,
                }
            }
        }
        if readable {
            result.namespaces += 1;
            result.connections.extend(classify(&entries, netns, pid));
        }
    }
    Ok(result)
}

/// Every network namespace under `proc_root` with the lowest pid living in it.
pub fn namespaces(proc_root: &Path) -> Result<BTreeMap<u64, u32>, ProcScanError> {
    let dir = std::fs::read_dir(proc_root)
        .map_err(|source| ProcScanError::Read { path: proc_root.to_path_buf(), source })?;
    let mut pids: Vec<u32> =
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    pids.sort_unstable();
    let mut by_netns = BTreeMap::new();
    for pid in pids {
        if let Ok(netns) = netns_inode(proc_root, pid) {
            by_netns.entry(netns).or_insert(pid);
        }
    }
    Ok(by_netns)
}

/// The inode of the network namespace `pid` lives in, from the `net:[<inode>]` link.
pub fn netns_inode(proc_root: &Path, pid: u32) -> Result<u64, ProcScanError> {
    let path = proc_root.join(pid.to_string()).join("ns").join("net");
    let target = std::fs::read_link(&path)
        .map_err(|source| ProcScanError::Read { path: path.clone(), source })?;
    let target = target.to_string_lossy();
    target
        .strip_prefix("net:[")
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inode| inode.parse().ok())
        .ok_or_else(|| ProcScanError::NotANetns { path, target: target.into_owned() })
}

/// Established connections of one namespace's table, each given a direction: a local address
/// that a listener in the same namespace covers was accepted, anything else connected out.
fn classify(entries: &[TcpTableEntry], netns: u64, pid: u32) -> Vec<ScannedConnection> {
    let listeners: Vec<SocketAddr> =
        entries.iter().filter(|e| e.state == TCP_LISTEN).map(|e| e.local).collect();
    let accepted_by = |local: SocketAddr| {
        listeners
            .iter()
            .any(|l| l.port() == local.port() && (l.ip().is_unspecified() || l.ip() == local.ip()))
    };
    entries
        .iter()
        .filter(|e| e.state == TCP_ESTABLISHED)
        .map(|e| ScannedConnection {
            local: e.local,
            remote: e.remote,
            direction: if accepted_by(e.local) { Direction::Inbound } else { Direction::Outbound },
            netns,
            pid,
            socket_inode: e.inode,
        })
        .collect()
}

// === Observations ===

impl ScannedConnection {
    /// The observation for the mapper. Its `pid`, `netns` and `pod` describe the connecting
    /// side, so they are only filled in for outbound connections.
    pub fn to_observation(&self, at: DateTime<Utc>, pod: Option<PodHint>) -> TcpConnection {
        let (src, dst) = match self.direction {
            Direction::Outbound => (self.local, self.remote),
            Direction::Inbound => (self.remote, self.local),
        };
        let outbound = self.direction == Direction::Outbound;
        TcpConnection {
            src_ip: src.ip(),
            src_port: src.port(),
            dst_ip: dst.ip(),
            dst_port: dst.port(),
            at,
            count: 1,
            pid: outbound.then_some(self.pid),
            netns: outbound.then_some(self.netns),
            pod: if outbound { pod } else { None },
            accepted: !outbound,
            bytes: None,
        }
    }
}

/// Observations for a scan: every outbound connection, and the inbound ones whose client is
/// not also on this node (a connection between two namespaces of the node is seen from both
/// ends; the client's end says more). `pod_of(netns, pid)` names the client's pod.
pub fn observations(
    connections: &[ScannedConnection],
    at: DateTime<Utc>,
    pod_of: impl Fn(u64, u32) -> Option<PodHint>,
) -> Vec<TcpConnection> {
    let outbound: HashSet<(SocketAddr, SocketAddr)> = connections
        .iter()
        .filter(|c| c.direction == Direction::Outbound)
        .map(|c| (c.local, c.remote))
        .collect();
    connections
        .iter()
        .filter(|c| c.direction == Direction::Outbound || !outbound.contains(&(c.remote, c.local)))
        .map(|c| {
            let pod = match c.direction {
                Direction::Outbound => pod_of(c.netns, c.pid),
                Direction::Inbound => None,
            };
            c.to_observation(at, pod)
        })
        .collect()
}

// === Parsing ===

fn table_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("sl"))
}

/// Parses one line of `/proc/net/tcp` or `/proc/net/tcp6`. Addresses are printed as 32-bit
/// words in the kernel's byte order; IPv4-mapped IPv6 addresses are returned as IPv4.
pub fn parse_tcp_line(line: &str) -> Result<TcpTableEntry, ProcScanError> {
    let bad = |reason| ProcScanError::MalformedLine { line: line.to_string(), reason };
    let mut fields = line.split_whitespace();
    let _slot = fields.next().filter(|s| s.ends_with(':')).ok_or_else(|| bad("no slot number"))?;
    let local =
        fields.next().and_then(parse_socket_addr).ok_or_else(|| bad("bad local address"))?;
    let remote =
        fields.next().and_then(parse_socket_addr).ok_or_else(|| bad("bad remote address"))?;
    let state = fields
        .next()
        .and_then(|s| u8::from_str_radix(s, 16).ok())
        .ok_or_else(|| bad("bad state"))?;
    // tx_queue:rx_queue, tr:tm->when, retrnsmt
    let mut fields = fields.skip(3);
    let uid = fields.next().and_then(|s| s.parse().ok()).ok_or_else(|| bad("bad uid"))?;
    let _timeout = fields.next().ok_or_else(|| bad("no timeout"))?;
    let inode = fields.next().and_then(|s| s.parse().ok()).ok_or_else(|| bad("bad inode"))?;
    Ok(TcpTableEntry { local, remote, state, uid, inode })
}

fn parse_socket_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(hex_word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&hex_word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            let v6 = Ipv6Addr::from(bytes);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Four address bytes printed by the kernel as one native-endian 32-bit word.
fn hex_word(hex: &str) -> Option<[u8; 4]> {
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    // Lines from this machine's /proc/net/tcp and tcp6: a listener on [::]:8123 (dual stack)
    // with connections to it over 127.0.0.1 and ::1, and a listener on 127.0.0.1:8124.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1678 1 00000000d7d7bd2d 100 0 0 10 0
   1: 0100007F:1FBC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 170787 1 0000000036fc199d 100 0 0 10 0
   2: 0100007F:BD0C 0100007F:1FBC 01 00000000:00000000 00:00000000 00000000     0        0 170788 2 000000000a92e52a 20 0 0 10 -1
   3: 0100007F:A950 0100007F:1FBB 01 00000000:00000000 00:00000000 00000000     0        0 170783 2 00000000f023f2c2 20 0 0 10 -1
   4: 0100007F:1FBC 0100007F:BD0C 01 00000000:00000000 00:00000000 00000000     0        0 170789 1 00000000960dd617 20 0 0 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1FBB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 170782 1 00000000a2633159 100 0 0 10 0
   1: 00000000000000000000000001000000:1FBB 00000000000000000000000001000000:8A52 01 00000000:00000000 00:00000000 00000000     0        0 170786 1 00000000891e4582 20 0 0 10 -1
   2: 0000000000000000FFFF00000100007F:1FBB 0000000000000000FFFF00000100007F:A950 01 00000000:00000000 00:00000000 00000000     0        0 170784 1 00000000df9e420f 20 0 0 10 -1
   3: 00000000000000000000000001000000:8A52 00000000000000000000000001000000:1FBB 01 00000000:00000000 00:00000000 00000000  1000        0 170785 2 0000000041692294 20 0 0 10 -1
";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn entries(text: &str) -> Vec<TcpTableEntry> {
        table_lines(text).map(|l| parse_tcp_line(l).unwrap()).collect()
    }

    #[test]
    fn ipv4_lines() {
        let e = entries(TCP);
        assert_eq!(e.len(), 5);
        assert_eq!(
            e[0],
            TcpTableEntry {
                local: addr("0.0.0.0:2024"),
                remote: addr("0.0.0.0:0"),
                state: TCP_LISTEN,
                uid: 0,
                inode: 1678
            }
        );
        assert_eq!(e[2].local, addr("127.0.0.1:48396"));
        assert_eq!(e[2].remote, addr("127.0.0.1:8124"));
        assert_eq!(e[2].state, TCP_ESTABLISHED);
        assert_eq!(e[2].inode, 170788);
    }

    #[test]
    fn ipv6_lines_including_ipv4_mapped() {
        let e = entries(TCP6);
        assert_eq!(e[0].local, addr("[::]:8123"));
        assert_eq!(e[1].local, addr("[::1]:8123"));
        assert_eq!(e[1].remote, addr("[::1]:35410"));
        // ::ffff:127.0.0.1 is reported as the IPv4 address it stands for.
        assert_eq!(e[2].local, addr("127.0.0.1:8123"));
        assert_eq!(e[2].remote, addr("127.0.0.1:43344"));
        assert_eq!(e[3].uid, 1000);
    }

    #[test]
    fn ipv6_words_are_in_kernel_byte_order() {
        let e = parse_tcp_line("   0: B80D0120000000000000000001000000:0050 0000000000000000FFFF00000A00C90A:01BB 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 20 0 0 10 -1")
            .unwrap();
        assert_eq!(e.local, addr("[2001:db8::1]:80"));
        assert_eq!(e.remote, addr("10.201.0.10:443"));
    }

    #[test]
    fn malformed_lines_are_errors() {
        for line in [
            "",
            "   0: 0100007F:1FBC",
            "   0: 0100007:1FBC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1",
            "   0: 0100007G:1FBC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1",
            "   0: 0100007F:1FBC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 x 1",
            "   0: 0100007F:11FBC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1",
            "   0: +100007F:1FBC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1",
        ] {
            assert!(parse_tcp_line(line).is_err(), "{line:?} parsed");
        }
    }

    #[test]
    fn direction_comes_from_the_listeners_of_the_same_namespace() {
        let mut all = entries(TCP);
        all.extend(entries(TCP6));
        let conns = classify(&all, 7, 42);
        let find = |local: &str, remote: &str| {
            conns
                .iter()
                .find(|c| c.local == addr(local) && c.remote == addr(remote))
                .unwrap()
                .direction
        };
        assert_eq!(find("127.0.0.1:48396", "127.0.0.1:8124"), Direction::Outbound);
        assert_eq!(find("127.0.0.1:8124", "127.0.0.1:48396"), Direction::Inbound);
        assert_eq!(find("127.0.0.1:43344", "127.0.0.1:8123"), Direction::Outbound);
        // Accepted by the dual-stack [::]:8123 listener.
        assert_eq!(find("127.0.0.1:8123", "127.0.0.1:43344"), Direction::Inbound);
        assert_eq!(find("[::1]:8123", "[::1]:35410"), Direction::Inbound);
        assert_eq!(find("[::1]:35410", "[::1]:8123"), Direction::Outbound);
        assert!(conns.iter().all(|c| c.netns == 7 && c.pid == 42));
        assert_eq!(conns.len(), 6);
    }

    #[test]
    fn a_listener_on_another_address_does_not_make_a_connection_inbound() {
        let lines = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0201C90A:1F90 0101C90A:0035 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 0 0 10 -1";
        let conns = classify(&entries(lines), 1, 1);
        assert_eq!(conns.len(), 1);
        assert_eq!(conns[0].direction, Direction::Outbound);
        assert_eq!(conns[0].local, addr("10.201.1.2:8080"));
    }

    // === A fake /proc ===

    struct FakeProc(PathBuf);

    impl FakeProc {
        fn new(tag: &str) -> Self {
            let root = std::env::temp_dir().join(format!("proc-scan-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            FakeProc(root)
        }

        fn process(&self, pid: u32, netns: u64, tables: Option<(&str, &str)>) {
            let dir = self.0.join(pid.to_string());
            std::fs::create_dir_all(dir.join("ns")).unwrap();
            symlink(format!("net:[{netns}]"), dir.join("ns/net")).unwrap();
            if let Some((tcp, tcp6)) = tables {
                std::fs::create_dir_all(dir.join("net")).unwrap();
                std::fs::write(dir.join("net/tcp"), tcp).unwrap();
                std::fs::write(dir.join("net/tcp6"), tcp6).unwrap();
            }
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

    #[test]
    fn each_namespace_is_read_once_through_its_lowest_pid() {
        let proc = FakeProc::new("once");
        // Namespace 100: a client in 10.201.0.2 connected to 10.201.0.1:80 (namespace 200).
        let client = format!("{HEADER}   0: 0200C90A:D431 0100C90A:0050 01 00000000:00000000 00:00000000 00000000     0        0 11 1 0 20 0 0 10 -1\n");
        let server = format!(
            "{HEADER}   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20 1 0 100 0 0 10 0
   1: 0100C90A:0050 0200C90A:D431 01 00000000:00000000 00:00000000 00000000     0        0 21 1 0 20 0 0 10 -1
   2: 0100C90A:0050 0500000A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 22 1 0 20 0 0 10 -1
   3: garbage
"
        );
        proc.process(31, 100, Some((&client, HEADER)));
        proc.process(30, 100, Some((&client, HEADER)));
        proc.process(40, 200, Some((&server, HEADER)));
        proc.process(41, 200, None);
        // A process that went away between listing and reading: its link dangles, no tables.
        proc.process(50, 300, None);
        std::fs::create_dir_all(proc.0.join("self")).unwrap();

        let result = scan(&proc.0).unwrap();
        assert_eq!(result.namespaces, 2);
        assert_eq!(result.malformed_lines, 1);
        let mut conns = result.connections.clone();
        conns.sort_by_key(|c| c.socket_inode);
        assert_eq!(
            conns,
            vec![
                ScannedConnection {
                    local: addr("10.201.0.2:54321"),
                    remote: addr("10.201.0.1:80"),
                    direction: Direction::Outbound,
                    netns: 100,
                    pid: 30,
                    socket_inode: 11
                },
                ScannedConnection {
                    local: addr("10.201.0.1:80"),
                    remote: addr("10.201.0.2:54321"),
                    direction: Direction::Inbound,
                    netns: 200,
                    pid: 40,
                    socket_inode: 21
                },
                ScannedConnection {
                    local: addr("10.201.0.1:80"),
                    remote: addr("10.0.0.5:40000"),
                    direction: Direction::Inbound,
                    netns: 200,
                    pid: 40,
                    socket_inode: 22
                },
            ]
        );

        let at = Utc::now();
        let pod = |netns: u64, _pid: u32| {
            (netns == 100).then(|| PodHint {
                uid: Some("client-uid".into()),
                namespace: None,
                name: None,
            })
        };
        let mut obs = observations(&result.connections, at, pod);
        obs.sort_by_key(|o| o.src_port);
        assert_eq!(
            obs.len(),
            2,
            "the in-node connection is reported once, from the client: {obs:?}"
        );
        assert_eq!(obs[0].src_ip, addr("10.0.0.5:1").ip());
        assert_eq!((obs[0].dst_ip, obs[0].dst_port), (addr("10.201.0.1:1").ip(), 80));
        assert_eq!((obs[0].pid, obs[0].netns, obs[0].pod.clone()), (None, None, None));
        assert_eq!((obs[1].src_ip, obs[1].src_port), (addr("10.201.0.2:1").ip(), 54321));
        assert_eq!((obs[1].pid, obs[1].netns), (Some(30), Some(100)));
        assert_eq!(obs[1].pod.as_ref().unwrap().uid.as_deref(), Some("client-uid"));
    }

    #[test]
    fn a_missing_proc_root_is_an_error() {
        assert!(matches!(scan(Path::new("/nonexistent/proc")), Err(ProcScanError::Read { .. })));
    }

    #[test]
    fn netns_links_are_parsed() {
        let proc = FakeProc::new("links");
        proc.process(7, 4026531840, None);
        let dir = proc.0.join("8/ns");
        std::fs::create_dir_all(&dir).unwrap();
        symlink("mnt:[4026531841]", dir.join("net")).unwrap();
        assert_eq!(netns_inode(&proc.0, 7).unwrap(), 4026531840);
        assert!(matches!(netns_inode(&proc.0, 8), Err(ProcScanError::NotANetns { .. })));
        assert!(netns_inode(&proc.0, 9).is_err());
    }
}
