//! The DNS role against real packets: our server on loopback, a real `dnsmasq` as its upstream,
//! queries built with hickory-proto and sent over real UDP and TCP sockets (and `dig` where it
//! is installed).

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aws_proxy::dns::{DnsArgs, DnsServer};
use hickory_proto::{
    op::{Edns, Message, MessageType, Query, ResponseCode},
    rr::{
        rdata::{A, AAAA, CNAME},
        Name, RData, Record, RecordType,
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    time::timeout,
};

const ANSWER_WAIT: Duration = Duration::from_secs(5);

// === Upstream: a real dnsmasq ===

/// A dnsmasq on 127.0.0.1 and a free port, answering only from its command line; killed on drop.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
    pid_file: PathBuf,
}

impl Dnsmasq {
    /// A dnsmasq on a free port; a test fails naming the package when it is not installed.
    async fn start(records: &[String]) -> Dnsmasq {
        let program = testkit::need::command("dnsmasq", "dnsmasq-base");
        for _ in 0..5 {
            let port = free_udp_port();
            let pid_file = std::env::temp_dir()
                .join(format!("aws-proxy-dns-test-{}-{port}.pid", std::process::id()));
            let child = Command::new(&program)
                .args([
                    "--no-daemon",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                    "--listen-address=127.0.0.1",
                    // Unknown names under .test are NXDOMAIN; other unknown names are REFUSED.
                    "--local=/test/",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--pid-file={}", pid_file.display()))
                .args(records)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
            let mut dnsmasq =
                Dnsmasq { child, addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)), pid_file };
            if dnsmasq.ready().await {
                return dnsmasq;
            }
        }
        panic!("dnsmasq did not start on a free port in 5 tries");
    }

    async fn ready(&mut self) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if self.child.try_wait().expect("cannot check on dnsmasq").is_some() {
                return false; // most likely the port was taken meanwhile
            }
            let probe = query("ready.test", RecordType::A, None).to_vec().unwrap();
            if udp_exchange(self.addr, &probe, Duration::from_millis(200)).await.is_some() {
                return true;
            }
        }
        false
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|socket| socket.local_addr())
        .expect("cannot find a free UDP port")
        .port()
}

/// An upstream that never answers: a bound UDP socket nobody reads and a TCP listener nobody
/// serves, on the same port.
struct DeadUpstream {
    _udp: std::net::UdpSocket,
    _tcp: std::net::TcpListener,
    addr: SocketAddr,
}

fn dead_upstream() -> DeadUpstream {
    for _ in 0..16 {
        let udp =
            std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("cannot bind a UDP socket");
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = std::net::TcpListener::bind(addr) {
            return DeadUpstream { _udp: udp, _tcp: tcp, addr };
        }
    }
    panic!("cannot bind UDP and TCP on one loopback port");
}

// === Our server ===

fn args(proxy_address: &[&str], upstream: Vec<SocketAddr>) -> DnsArgs {
    DnsArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        proxy_address: proxy_address.iter().map(|address| address.to_string()).collect(),
        upstream,
        ttl: 30,
        upstream_timeout_ms: 2000,
        upstream_deadline_ms: 5000,
    }
}

async fn start(args: DnsArgs) -> DnsServer {
    init_logs();
    let server = DnsServer::start(&args)
        .await
        .unwrap_or_else(|error| panic!("the DNS server does not start: {error:#}"));
    assert_eq!(server.udp_addr().port(), server.tcp_addr().port(), "UDP and TCP share one port");
    assert_ne!(server.udp_addr().port(), 0);
    server
}

/// `RUST_LOG=aws_proxy=debug cargo test -p aws-proxy --test dns -- --nocapture` shows the server's logs.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

// === Queries ===

fn query(name: &str, record_type: RecordType, edns_payload: Option<u16>) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    let mut name = Name::from_ascii(name).unwrap();
    name.set_fqdn(true);
    message.add_query(Query::query(name, record_type));
    if let Some(payload) = edns_payload {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        message.set_edns(edns);
    }
    message
}

async fn udp_exchange(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("cannot bind a UDP socket");
    socket.send_to(packet, server).await.expect("cannot send a UDP query");
    let mut buf = vec![0; 65535];
    let (len, _) =
        timeout(wait, socket.recv_from(&mut buf)).await.ok()?.expect("UDP receive failed");
    buf.truncate(len);
    Some(buf)
}

async fn tcp_send(stream: &mut TcpStream, packet: &[u8]) {
    let mut frame = u16::try_from(packet.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(packet);
    stream.write_all(&frame).await.expect("cannot send a TCP query");
}

async fn tcp_receive(stream: &mut TcpStream) -> Vec<u8> {
    let read = async {
        let len = stream.read_u16().await?;
        let mut message = vec![0; usize::from(len)];
        stream.read_exact(&mut message).await?;
        std::io::Result::Ok(message)
    };
    timeout(ANSWER_WAIT, read).await.expect("no TCP answer in time").expect("TCP read failed")
}

async fn tcp_exchange(server: SocketAddr, packet: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(server).await.expect("cannot connect over TCP");
    tcp_send(&mut stream, packet).await;
    tcp_receive(&mut stream).await
}

/// Sends `request` over UDP and checks the answer belongs to it.
async fn ask_udp(server: SocketAddr, request: &Message) -> Message {
    let reply = udp_exchange(server, &request.to_vec().unwrap(), ANSWER_WAIT)
        .await
        .unwrap_or_else(|| panic!("no UDP answer for {:?}", request.queries));
    parse_reply(request, &reply)
}

async fn ask_tcp(server: SocketAddr, request: &Message) -> Message {
    let reply = tcp_exchange(server, &request.to_vec().unwrap()).await;
    parse_reply(request, &reply)
}

fn parse_reply(request: &Message, reply: &[u8]) -> Message {
    let reply = Message::from_vec(reply)
        .unwrap_or_else(|error| panic!("unparsable answer for {:?}: {error}", request.queries));
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    assert_eq!(reply.metadata.id, request.metadata.id, "the answer carries the query's ID");
    assert_eq!(reply.queries.len(), 1, "the answer echoes the question");
    assert!(
        reply.queries[0].name().eq_case(request.queries[0].name()),
        "the question is echoed as asked: {} vs {}",
        reply.queries[0].name(),
        request.queries[0].name()
    );
    assert_eq!(reply.queries[0].query_type(), request.queries[0].query_type());
    reply
}

fn a(record: &Record) -> Option<Ipv4Addr> {
    match &record.data {
        RData::A(A(ip)) => Some(*ip),
        _ => None,
    }
}

fn aaaa(record: &Record) -> Option<Ipv6Addr> {
    match &record.data {
        RData::AAAA(AAAA(ip)) => Some(*ip),
        _ => None,
    }
}

fn cname(record: &Record) -> Option<String> {
    match &record.data {
        RData::CNAME(CNAME(name)) => Some(name.to_ascii()),
        _ => None,
    }
}

fn host_records(name: &str, count: u16) -> Vec<String> {
    (1..=count).map(|i| format!("--host-record={name},10.0.{}.{}", i / 250, i % 250 + 1)).collect()
}

// === AWS names ===

#[tokio::test]
async fn aws_names_get_the_proxy_ips() {
    // Answers for AWS names are made here: an upstream that never answers does not matter.
    let dead = dead_upstream();
    let server = start(args(&["10.1.2.3", "fd00::53", "10.1.2.4"], vec![dead.addr])).await;
    let addr = server.udp_addr();

    for name in [
        "s3.us-east-1.amazonaws.com",
        "AMAZONAWS.COM",
        "sqs.cn-north-1.amazonaws.com.cn",
        "Dynamodb.EU-West-1.AmazonAWS.com.",
    ] {
        let request = query(name, RecordType::A, None);
        let reply = ask_udp(addr, &request).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(!reply.metadata.authoritative, "{name}: AA is not set");
        assert!(reply.metadata.recursion_available, "{name}: RA is set");
        assert!(reply.metadata.recursion_desired, "{name}: RD is echoed");
        assert!(!reply.metadata.truncation);
        assert_eq!(
            reply.answers.iter().filter_map(a).collect::<Vec<_>>(),
            [Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::new(10, 1, 2, 4)],
            "{name}"
        );
        assert!(
            reply
                .answers
                .iter()
                .all(|record| record.ttl == 30 && record.name.eq_case(request.queries[0].name())),
            "{name}: {:?}",
            reply.answers
        );

        let reply = ask_udp(addr, &query(name, RecordType::AAAA, Some(1232))).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            reply.answers.iter().filter_map(aaaa).collect::<Vec<_>>(),
            ["fd00::53".parse::<Ipv6Addr>().unwrap()],
            "{name}"
        );
        assert!(reply.edns.is_some(), "{name}: an EDNS query gets an EDNS answer");
    }

    // Other types: the name exists, without records of that type.
    for record_type in [RecordType::TXT, RecordType::MX, RecordType::CNAME] {
        let reply = ask_udp(addr, &query("s3.amazonaws.com", record_type, None)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{record_type}");
        assert!(reply.answers.is_empty(), "{record_type}: {:?}", reply.answers);
    }

    let mut no_recursion = query("s3.amazonaws.com", RecordType::A, None);
    no_recursion.metadata.recursion_desired = false;
    let reply = ask_udp(addr, &no_recursion).await;
    assert!(!reply.metadata.recursion_desired, "RD is echoed when clear too");
    assert_eq!(reply.answers.len(), 2);

    let reply =
        ask_tcp(server.tcp_addr(), &query("kms.us-west-2.amazonaws.com", RecordType::A, None))
            .await;
    assert_eq!(reply.answers.iter().filter_map(a).count(), 2, "TCP answers too");

    let stats = server.stats();
    assert_eq!(stats.answered_aws, 13, "{stats:?}");
    assert_eq!(
        (stats.forwarded, stats.servfail, stats.formerr, stats.dropped),
        (0, 0, 0, 0),
        "{stats:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_family_without_proxy_ips_is_nodata() {
    let dead = dead_upstream();
    let mut args = args(&["10.1.2.3"], vec![dead.addr]);
    args.ttl = 7;
    let server = start(args).await;

    let reply =
        ask_udp(server.udp_addr(), &query("s3.amazonaws.com", RecordType::AAAA, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty(), "{:?}", reply.answers);

    let reply = ask_udp(server.udp_addr(), &query("s3.amazonaws.com", RecordType::A, None)).await;
    assert_eq!(
        reply.answers.iter().map(|record| (a(record), record.ttl)).collect::<Vec<_>>(),
        [(Some(Ipv4Addr::new(10, 1, 2, 3)), 7)],
        "--dns-ttl applies"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_proxy_name_is_a_cname_with_its_upstream_addresses() {
    let dnsmasq =
        Dnsmasq::start(&["--host-record=aws-proxy.svc.test,10.96.0.10,fd00::10,60".to_owned()])
            .await;
    let server = start(args(&["aws-proxy.svc.test"], vec![dnsmasq.addr])).await;
    let addr = server.udp_addr();

    let request = query("s3.us-east-1.amazonaws.com", RecordType::A, None);
    let reply = ask_udp(addr, &request).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(!reply.metadata.authoritative);
    let [alias, address] = reply.answers.as_slice() else {
        panic!("expected a CNAME and an A: {:?}", reply.answers);
    };
    assert!(alias.name.eq_case(request.queries[0].name()));
    assert_eq!(cname(alias).as_deref(), Some("aws-proxy.svc.test."));
    assert_eq!(alias.ttl, 30);
    assert_eq!(address.name.to_ascii(), "aws-proxy.svc.test.");
    assert_eq!(a(address), Some(Ipv4Addr::new(10, 96, 0, 10)));
    assert!(
        address.ttl <= 60 && address.ttl >= 55,
        "the upstream's TTL, counting down: {}",
        address.ttl
    );

    let reply = ask_tcp(
        server.tcp_addr(),
        &query("sqs.cn-north-1.amazonaws.com.cn", RecordType::AAAA, None),
    )
    .await;
    assert_eq!(reply.answers.iter().filter_map(cname).collect::<Vec<_>>(), ["aws-proxy.svc.test."]);
    assert_eq!(
        reply.answers.iter().filter_map(aaaa).collect::<Vec<_>>(),
        ["fd00::10".parse::<Ipv6Addr>().unwrap()]
    );

    let reply = ask_udp(addr, &query("s3.amazonaws.com", RecordType::TXT, None)).await;
    assert!(reply.answers.is_empty(), "other types stay NODATA: {:?}", reply.answers);

    // Cached for its TTL: the answer outlives the upstream.
    drop(dnsmasq);
    let reply = ask_udp(addr, &query("ec2.amazonaws.com", RecordType::A, None)).await;
    assert_eq!(
        reply.answers.iter().filter_map(a).collect::<Vec<_>>(),
        [Ipv4Addr::new(10, 96, 0, 10)],
        "answered from the cache"
    );

    let stats = server.stats();
    assert_eq!((stats.answered_aws, stats.servfail), (4, 0), "{stats:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_proxy_name_that_does_not_exist_gives_nxdomain_after_the_cname() {
    let dnsmasq = Dnsmasq::start(&[]).await;
    let server = start(args(&["missing.svc.test."], vec![dnsmasq.addr])).await;
    let reply = ask_udp(server.udp_addr(), &query("s3.amazonaws.com", RecordType::A, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(reply.answers.iter().filter_map(cname).collect::<Vec<_>>(), ["missing.svc.test."]);
    server.shutdown().await;
}

// === Forwarding ===

#[tokio::test]
async fn other_names_are_forwarded_as_the_upstream_answers_them() {
    let dnsmasq = Dnsmasq::start(&[
        "--host-record=ttl.test,192.0.2.8,300".to_owned(),
        "--address=/example.test/192.0.2.7".to_owned(),
        "--cname=alias.test,ttl.test".to_owned(),
        "--txt-record=txt.test,hello world".to_owned(),
    ])
    .await;
    let server = start(args(&["10.1.2.3"], vec![dnsmasq.addr])).await;
    let addr = server.udp_addr();

    let reply = ask_udp(addr, &query("ttl.test", RecordType::A, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        reply.answers.iter().map(|record| (a(record), record.ttl)).collect::<Vec<_>>(),
        [(Some(Ipv4Addr::new(192, 0, 2, 8)), 300)],
        "the upstream's TTL is kept"
    );
    assert!(reply.metadata.authoritative, "dnsmasq's AA flag is relayed");

    let reply = ask_udp(addr, &query("nope.test", RecordType::A, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    let reply = ask_udp(addr, &query("nope.invalid", RecordType::A, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    // Looks like AWS, is not under amazonaws.com: the upstream decides.
    let reply = ask_udp(addr, &query("amazonaws.com.test", RecordType::A, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    let reply = ask_udp(addr, &query("notamazonaws.com", RecordType::A, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);

    let reply = ask_udp(addr, &query("alias.test", RecordType::A, None)).await;
    assert_eq!(reply.answers.iter().filter_map(cname).collect::<Vec<_>>(), ["ttl.test."]);
    assert_eq!(
        reply.answers.iter().filter_map(a).collect::<Vec<_>>(),
        [Ipv4Addr::new(192, 0, 2, 8)]
    );

    let reply = ask_tcp(server.tcp_addr(), &query("foo.example.test", RecordType::A, None)).await;
    assert_eq!(
        reply.answers.iter().filter_map(a).collect::<Vec<_>>(),
        [Ipv4Addr::new(192, 0, 2, 7)],
        "forwarded over TCP"
    );

    // Byte for byte what the upstream says, but for the ID.
    for (name, record_type, edns) in [
        ("txt.test", RecordType::TXT, Some(1232)),
        ("example.test", RecordType::AAAA, None),
        ("alias.test", RecordType::A, Some(4096)),
    ] {
        let request = query(name, record_type, edns).to_vec().unwrap();
        let direct =
            udp_exchange(dnsmasq.addr, &request, ANSWER_WAIT).await.expect("dnsmasq answers");
        let relayed = udp_exchange(addr, &request, ANSWER_WAIT).await.expect("our server answers");
        assert_eq!(relayed, direct, "{name} {record_type}");
    }

    let stats = server.stats();
    assert_eq!((stats.forwarded, stats.answered_aws, stats.servfail), (10, 0, 0), "{stats:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn truncated_answers_go_over_tcp() {
    let dnsmasq = Dnsmasq::start(&host_records("big.test", 100)).await;
    let server = start(args(&["10.1.2.3"], vec![dnsmasq.addr])).await;

    // The premise: dnsmasq's UDP answer is cut even for a client taking 4096 bytes.
    let direct = Message::from_vec(
        &udp_exchange(
            dnsmasq.addr,
            &query("big.test", RecordType::A, Some(4096)).to_vec().unwrap(),
            ANSWER_WAIT,
        )
        .await
        .unwrap(),
    )
    .unwrap();
    assert!(
        direct.metadata.truncation && direct.answers.len() < 100,
        "dnsmasq should truncate 100 A records over UDP"
    );

    // Our server asked again over TCP, and the whole answer fits the client's 4096 bytes.
    let reply = ask_udp(server.udp_addr(), &query("big.test", RecordType::A, Some(4096))).await;
    assert!(!reply.metadata.truncation);
    assert_eq!(reply.answers.len(), 100);

    // A client without EDNS takes 512 bytes: TC, then the client retries over TCP and gets all.
    let request = query("big.test", RecordType::A, None);
    let cut = udp_exchange(server.udp_addr(), &request.to_vec().unwrap(), ANSWER_WAIT)
        .await
        .expect("an answer");
    assert!(cut.len() <= 512, "{} bytes over UDP for a client without EDNS", cut.len());
    let cut = parse_reply(&request, &cut);
    assert!(cut.metadata.truncation, "TC tells the client to retry over TCP");
    assert!(cut.answers.len() < 100);
    let full = ask_tcp(server.tcp_addr(), &request).await;
    assert!(!full.metadata.truncation);
    assert_eq!(full.answers.len(), 100);

    // A client taking 1232 bytes gets at most that.
    let request = query("big.test", RecordType::A, Some(1232));
    let cut = udp_exchange(server.udp_addr(), &request.to_vec().unwrap(), ANSWER_WAIT)
        .await
        .expect("an answer");
    assert!(cut.len() <= 1232, "{} bytes", cut.len());
    let cut = parse_reply(&request, &cut);
    assert!(cut.metadata.truncation);
    assert!(cut.edns.is_some(), "the OPT record survives the cut");
    server.shutdown().await;
}

#[tokio::test]
async fn a_dead_upstream_gives_servfail_within_the_deadline() {
    let dead = dead_upstream();
    let mut args = args(&["aws-proxy.svc.test"], vec![dead.addr]);
    args.upstream_timeout_ms = 300;
    args.upstream_deadline_ms = 1000;
    let bound = Duration::from_millis(1000 + 1500);
    let server = start(args).await;

    let started = Instant::now();
    let reply = ask_udp(server.udp_addr(), &query("ttl.test", RecordType::A, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < bound, "UDP SERVFAIL after {:?}", started.elapsed());

    let started = Instant::now();
    let reply = ask_tcp(server.tcp_addr(), &query("ttl.test", RecordType::A, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < bound, "TCP SERVFAIL after {:?}", started.elapsed());

    // The proxy's name cannot be resolved either.
    let started = Instant::now();
    let reply = ask_udp(server.udp_addr(), &query("s3.amazonaws.com", RecordType::A, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < bound, "SERVFAIL after {:?}", started.elapsed());

    let stats = server.stats();
    assert_eq!((stats.servfail, stats.forwarded, stats.answered_aws), (3, 0, 0), "{stats:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn upstreams_are_tried_in_order() {
    let dnsmasq = Dnsmasq::start(&["--host-record=ttl.test,192.0.2.8,300".to_owned()]).await;
    let dead = dead_upstream();
    let mut args = args(&["10.1.2.3"], vec![dead.addr, dnsmasq.addr]);
    args.upstream_timeout_ms = 300;
    args.upstream_deadline_ms = 3000;
    let server = start(args).await;

    let started = Instant::now();
    let reply = ask_udp(server.udp_addr(), &query("ttl.test", RecordType::A, None)).await;
    assert_eq!(
        reply.answers.iter().filter_map(a).collect::<Vec<_>>(),
        [Ipv4Addr::new(192, 0, 2, 8)],
        "the second upstream answers"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "the first upstream had its try: {:?}",
        started.elapsed()
    );
    let reply = ask_tcp(server.tcp_addr(), &query("ttl.test", RecordType::A, None)).await;
    assert_eq!(
        reply.answers.iter().filter_map(a).collect::<Vec<_>>(),
        [Ipv4Addr::new(192, 0, 2, 8)],
        "over TCP too"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_declining_upstream_hands_over_to_the_next() {
    let first = Dnsmasq::start(&[]).await;
    let second = Dnsmasq::start(&["--address=/second.example/192.0.2.9".to_owned()]).await;
    let server = start(args(&["10.1.2.3"], vec![first.addr, second.addr])).await;

    // The first refuses names outside .test; the second knows this one.
    let reply = ask_udp(server.udp_addr(), &query("www.second.example", RecordType::A, None)).await;
    assert_eq!(
        reply.answers.iter().filter_map(a).collect::<Vec<_>>(),
        [Ipv4Addr::new(192, 0, 2, 9)]
    );
    // When every upstream declines, the client hears it as the upstreams said it.
    let reply = ask_udp(server.udp_addr(), &query("nobody.example", RecordType::A, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    // NXDOMAIN is an answer, not a failure: no second opinion.
    let reply =
        ask_udp(server.udp_addr(), &query("second.example.test", RecordType::A, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    server.shutdown().await;
}

#[tokio::test]
async fn one_tcp_connection_carries_several_queries() {
    let dead = dead_upstream();
    let server = start(args(&["10.1.2.3", "fd00::53"], vec![dead.addr])).await;
    let requests = [
        query("s3.amazonaws.com", RecordType::A, None),
        query("sqs.amazonaws.com", RecordType::AAAA, None),
        query("sts.amazonaws.com", RecordType::TXT, None),
    ];

    let mut stream = TcpStream::connect(server.tcp_addr()).await.unwrap();
    for request in &requests {
        tcp_send(&mut stream, &request.to_vec().unwrap()).await;
    }
    let mut answered = Vec::new();
    for _ in &requests {
        let reply = Message::from_vec(&tcp_receive(&mut stream).await).unwrap();
        let request = requests
            .iter()
            .find(|request| request.metadata.id == reply.metadata.id)
            .expect("an answer to one of our queries");
        answered.push((
            parse_reply(request, &reply.to_vec().unwrap()).queries[0].query_type().to_string(),
            reply.answers.len(),
        ));
    }
    answered.sort();
    assert_eq!(answered, [("A".to_owned(), 1), ("AAAA".to_owned(), 1), ("TXT".to_owned(), 0)]);
    server.shutdown().await;
}

// === Malformed packets ===

#[tokio::test]
async fn malformed_packets_get_formerr_or_silence() {
    let dead = dead_upstream();
    let server = start(args(&["10.1.2.3"], vec![dead.addr])).await;
    let addr = server.udp_addr();
    let silence = Duration::from_millis(500);

    assert_eq!(
        udp_exchange(addr, b"\x12\x34\x01", silence).await,
        None,
        "too short for a header: no answer"
    );

    let valid = query("s3.amazonaws.com", RecordType::A, None).to_vec().unwrap();
    // Header and half the question.
    let mut cut = valid[..20].to_vec();
    cut[..2].copy_from_slice(&0x1234u16.to_be_bytes());
    let reply = Message::from_vec(
        &udp_exchange(addr, &cut, ANSWER_WAIT).await.expect("FORMERR for a cut question"),
    )
    .unwrap();
    assert_eq!((reply.metadata.id, reply.metadata.response_code), (0x1234, ResponseCode::FormErr));

    // A whole question, but the header promises an answer record that is not there.
    let mut lying = valid.clone();
    lying[6..8].copy_from_slice(&1u16.to_be_bytes());
    let reply = Message::from_vec(
        &udp_exchange(addr, &lying, ANSWER_WAIT).await.expect("FORMERR for a missing record"),
    )
    .unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(
        reply.queries.first().map(|query| query.name().to_ascii()).as_deref(),
        Some("s3.amazonaws.com."),
        "the intact question is echoed"
    );

    // A response sent to us is not answered (no loops between servers).
    let mut response = valid.clone();
    response[2] |= 0x80;
    assert_eq!(udp_exchange(addr, &response, silence).await, None, "a response gets no answer");

    let garbage: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
    let _ = udp_exchange(addr, &garbage, silence).await;

    // TCP: a malformed message, then a good one on the same connection.
    let mut stream = TcpStream::connect(server.tcp_addr()).await.unwrap();
    tcp_send(&mut stream, &cut).await;
    let reply = Message::from_vec(&tcp_receive(&mut stream).await).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    tcp_send(&mut stream, &valid).await;
    let reply = Message::from_vec(&tcp_receive(&mut stream).await).unwrap();
    assert_eq!(
        reply.answers.iter().filter_map(a).collect::<Vec<_>>(),
        [Ipv4Addr::new(10, 1, 2, 3)],
        "the connection still serves"
    );

    // And UDP still serves.
    let reply = ask_udp(addr, &query("s3.amazonaws.com", RecordType::A, None)).await;
    assert_eq!(reply.answers.len(), 1);

    let stats = server.stats();
    assert!(stats.formerr >= 3, "{stats:?}");
    assert!(stats.dropped >= 2, "{stats:?}");
    assert_eq!(stats.answered_aws, 2, "{stats:?}");
    server.shutdown().await;
}

// === Life cycle ===

#[tokio::test]
async fn shutdown_stops_serving() {
    let dead = dead_upstream();
    let server = start(args(&["10.1.2.3"], vec![dead.addr])).await;
    let (udp_addr, tcp_addr) = (server.udp_addr(), server.tcp_addr());
    assert_eq!(
        ask_udp(udp_addr, &query("s3.amazonaws.com", RecordType::A, None)).await.answers.len(),
        1
    );

    timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown takes at most the upstream deadline");
    assert!(TcpStream::connect(tcp_addr).await.is_err(), "nothing listens on TCP any more");
    UdpSocket::bind(udp_addr).await.expect("the UDP port is free again");
    TcpListener::bind(tcp_addr).await.expect("the TCP port is free again");
}

#[tokio::test]
async fn start_errors_say_what_to_do() {
    let dead = dead_upstream();
    for (proxy, expected) in [
        (&["10.1.2.3", "proxy.svc"][..], "either IPs or one DNS name"),
        (&["s3.amazonaws.com"][..], "give the proxy Service's name or IPs"),
    ] {
        let error =
            DnsServer::start(&args(proxy, vec![dead.addr])).await.err().expect("start fails");
        assert!(error.to_string().contains(expected), "{error}");
    }

    // The port is taken (our own dead upstream holds it).
    let mut taken = args(&["10.1.2.3"], vec!["127.0.0.1:1".parse().unwrap()]);
    taken.listen = dead.addr;
    let error = DnsServer::start(&taken).await.err().expect("start fails on a taken port");
    assert!(error.to_string().contains("already in use"), "{error}");
}

// === dig ===

#[tokio::test]
async fn dig_sees_the_same() {
    testkit::need::command("dig", "dnsutils");
    let dnsmasq = Dnsmasq::start(
        &[host_records("big.test", 100), vec!["--host-record=ttl.test,192.0.2.8,300".to_owned()]]
            .concat(),
    )
    .await;
    let server = start(args(&["10.1.2.3", "fd00::53"], vec![dnsmasq.addr])).await;
    let port = server.udp_addr().port();
    assert_eq!(dig(port, &["+short", "s3.us-east-1.amazonaws.com", "A"]).await.trim(), "10.1.2.3");
    assert_eq!(dig(port, &["+short", "+tcp", "AMAZONAWS.COM", "AAAA"]).await.trim(), "fd00::53");
    assert!(dig(port, &["ttl.test", "A"]).await.contains("300\tIN\tA\t192.0.2.8"));
    // dig sees TC over UDP without EDNS and retries over TCP by itself.
    assert_eq!(dig(port, &["+short", "+noedns", "big.test", "A"]).await.lines().count(), 100);
    server.shutdown().await;
}

/// Runs dig against our server without blocking the runtime the server runs on.
async fn dig(port: u16, extra: &[&str]) -> String {
    let output = tokio::process::Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+time=5", "+tries=1"])
        .args(extra)
        .output()
        .await
        .expect("dig runs");
    assert!(
        output.status.success(),
        "dig {extra:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}
