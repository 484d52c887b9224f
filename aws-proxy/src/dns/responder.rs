//! One query's answer: amazonaws.com names answered here, everything else through the upstreams.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        rdata::{A, AAAA, CNAME},
        DNSClass, Name, RData, Record, RecordType,
    },
    serialize::binary::{BinDecodable, BinDecoder},
};
use tracing::{debug, warn};

use super::{
    config::ProxyAddress, stats::DnsStats, truncate::fit_udp, upstream::Upstream, Transport,
};

/// The UDP payload size we advertise in our own EDNS answers and queries (DNS flag day 2020).
const OUR_UDP_PAYLOAD: u16 = 1232;

/// Answers one query: amazonaws.com names here, everything else through the upstreams.
pub(super) struct Responder {
    pub(super) proxy: ProxyAddress,
    pub(super) upstream: Upstream,
    pub(super) ttl: u32,
    /// The proxy name's answers (A and AAAA), kept for the upstream's TTL.
    pub(super) target_cache: Mutex<HashMap<RecordType, CachedAnswer>>,
    pub(super) stats: Arc<DnsStats>,
}

pub(super) struct CachedAnswer {
    code: ResponseCode,
    records: Vec<Record>,
    stored: Instant,
    expires: Instant,
}

impl Responder {
    /// The bytes to send back, or `None` to stay silent.
    pub(super) async fn handle(
        &self,
        packet: &[u8],
        src: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let request = match Message::from_vec(packet) {
            Ok(request) => request,
            Err(error) => return self.malformed(packet, src, transport, &error.to_string()),
        };
        if request.metadata.message_type != MessageType::Query {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            debug!(%src, %transport, id = request.metadata.id, "dropping a DNS response sent to the server");
            return None;
        }
        let response = self.respond(&request, packet, src, transport).await?;
        Some(match transport {
            Transport::Udp => fit_udp(response, usize::from(request.max_payload())),
            Transport::Tcp => response,
        })
    }

    async fn respond(
        &self,
        request: &Message,
        packet: &[u8],
        src: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        if request.metadata.op_code == OpCode::Query {
            if request.queries.len() > 1 {
                self.stats.formerr.fetch_add(1, Ordering::Relaxed);
                debug!(%src, %transport, id = request.metadata.id, questions = request.queries.len(), "answering a query with several questions with FORMERR");
                return encode(&response_to(request, ResponseCode::FormErr));
            }
            if let Some(query) = request
                .queries
                .first()
                .filter(|query| query.query_class() == DNSClass::IN && is_aws_name(query.name()))
            {
                return self.answer_aws(request, query).await;
            }
        }
        self.forward(request, packet, src, transport).await
    }

    async fn answer_aws(&self, request: &Message, query: &Query) -> Option<Vec<u8>> {
        let mut response = response_to(request, ResponseCode::NoError);
        let owner = query.name().clone();
        match (&self.proxy, query.query_type()) {
            (ProxyAddress::Ips { v4, .. }, RecordType::A) => {
                response.answers = v4
                    .iter()
                    .map(|ip| Record::from_rdata(owner.clone(), self.ttl, RData::A(A(*ip))))
                    .collect();
            }
            (ProxyAddress::Ips { v6, .. }, RecordType::AAAA) => {
                response.answers = v6
                    .iter()
                    .map(|ip| Record::from_rdata(owner.clone(), self.ttl, RData::AAAA(AAAA(*ip))))
                    .collect();
            }
            (ProxyAddress::Name(target), record_type @ (RecordType::A | RecordType::AAAA)) => {
                let Some((code, records)) = self.resolve_target(target, record_type).await else {
                    self.stats.servfail.fetch_add(1, Ordering::Relaxed);
                    return encode(&response_to(request, ResponseCode::ServFail));
                };
                response.metadata.response_code = code;
                response.answers = std::iter::once(Record::from_rdata(
                    owner,
                    self.ttl,
                    RData::CNAME(CNAME(target.clone())),
                ))
                .chain(records)
                .collect();
            }
            (ProxyAddress::Name(target), RecordType::CNAME) => {
                response.add_answer(Record::from_rdata(
                    owner,
                    self.ttl,
                    RData::CNAME(CNAME(target.clone())),
                ));
            }
            // NODATA: the name exists, it has no records of this type.
            _ => {}
        }
        self.stats.answered_aws.fetch_add(1, Ordering::Relaxed);
        encode(&response)
    }

    /// The upstream's answer records for the proxy's name (its CNAME chain and addresses) and the
    /// response code, from the cache while their TTL lasts; `None` when the upstream fails.
    async fn resolve_target(
        &self,
        target: &Name,
        record_type: RecordType,
    ) -> Option<(ResponseCode, Vec<Record>)> {
        if let Some(hit) = self.cached_target(record_type) {
            return Some(hit);
        }
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(target.clone(), record_type));
        let mut edns = Edns::new();
        edns.set_max_payload(OUR_UDP_PAYLOAD);
        query.set_edns(edns);
        let reply = self
            .upstream
            .exchange(&query.to_vec().ok()?, query.queries.first(), Transport::Udp)
            .await?;
        let reply = match Message::from_vec(&reply) {
            Ok(reply) => reply,
            Err(error) => {
                debug!(%target, %error, "cannot parse the upstream's answer for the proxy's name");
                return None;
            }
        };
        let code = reply.metadata.response_code;
        if !matches!(code, ResponseCode::NoError | ResponseCode::NXDomain) {
            debug!(%target, %code, "the upstream cannot resolve the proxy's name");
            return None;
        }
        // Negative answers are kept for the SOA's TTL (RFC 2308), or ours when there is none.
        let ttl = match reply.answers.iter().map(|record| record.ttl).min() {
            Some(ttl) => ttl,
            None => reply
                .authorities
                .iter()
                .filter(|record| record.record_type() == RecordType::SOA)
                .map(|record| record.ttl)
                .min()
                .unwrap_or(self.ttl),
        };
        let stored = Instant::now();
        let entry = CachedAnswer {
            code,
            records: reply.answers.clone(),
            stored,
            expires: stored + Duration::from_secs(u64::from(ttl)),
        };
        self.target_cache.lock().unwrap_or_else(PoisonError::into_inner).insert(record_type, entry);
        Some((code, reply.answers))
    }

    fn cached_target(&self, record_type: RecordType) -> Option<(ResponseCode, Vec<Record>)> {
        let cache = self.target_cache.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = cache.get(&record_type)?;
        let now = Instant::now();
        if now >= entry.expires {
            return None;
        }
        let age = u32::try_from(now.duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        let records = entry
            .records
            .iter()
            .map(|record| {
                let mut record = record.clone();
                record.ttl = record.ttl.saturating_sub(age);
                record
            })
            .collect();
        Some((entry.code, records))
    }

    async fn forward(
        &self,
        request: &Message,
        packet: &[u8],
        src: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        match self.upstream.exchange(packet, request.queries.first(), transport).await {
            Some(mut reply) => {
                self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                reply[..2].copy_from_slice(&request.metadata.id.to_be_bytes());
                Some(reply)
            }
            None => {
                self.stats.servfail.fetch_add(1, Ordering::Relaxed);
                let query = request.queries.first();
                debug!(%src, %transport, name = ?query.map(|query| query.name().to_string()), query_type = ?query.map(Query::query_type), "no upstream answered, answering SERVFAIL");
                encode(&response_to(request, ResponseCode::ServFail))
            }
        }
    }

    /// FORMERR when the packet has a query header to answer, else silence.
    fn malformed(
        &self,
        packet: &[u8],
        src: SocketAddr,
        transport: Transport,
        error: &str,
    ) -> Option<Vec<u8>> {
        let mut decoder = BinDecoder::new(packet);
        let header = match Header::read(&mut decoder) {
            Ok(header) if header.metadata.message_type == MessageType::Query => header,
            _ => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                debug!(%src, %transport, len = packet.len(), %error, "dropping a packet that is not a DNS query");
                return None;
            }
        };
        self.stats.formerr.fetch_add(1, Ordering::Relaxed);
        debug!(%src, %transport, id = header.metadata.id, len = packet.len(), %error, "answering a malformed DNS query with FORMERR");
        let mut response =
            Message::error_msg(header.metadata.id, header.metadata.op_code, ResponseCode::FormErr);
        response.metadata.recursion_desired = header.metadata.recursion_desired;
        response.metadata.checking_disabled = header.metadata.checking_disabled;
        response.metadata.recursion_available = true;
        // Echo the question when it is intact, so the client can match the answer.
        if header.counts.queries == 1 {
            if let Ok(query) = Query::read(&mut decoder) {
                response.add_query(query);
            }
        }
        encode(&response)
    }
}

fn is_aws_name(name: &Name) -> bool {
    crate::is_aws_host(&name.to_ascii())
}

/// The start of our own answer: same ID, opcode, question, RD and CD; RA set, AA not.
pub(super) fn response_to(request: &Message, code: ResponseCode) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.checking_disabled = request.metadata.checking_disabled;
    response.metadata.recursion_available = true;
    response.metadata.response_code = code;
    response.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(OUR_UDP_PAYLOAD);
        response.set_edns(edns);
    }
    response
}

fn encode(message: &Message) -> Option<Vec<u8>> {
    match message.to_vec() {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            warn!(id = message.metadata.id, %error, "cannot encode a DNS response");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// Mutated and cut queries never panic the parsing and FORMERR paths.
    #[tokio::test]
    async fn mangled_queries_do_not_panic() {
        let responder = Responder {
            proxy: ProxyAddress::Ips { v4: vec![Ipv4Addr::new(10, 0, 0, 1)], v6: vec![] },
            // No upstreams: forwards fail at once with SERVFAIL.
            upstream: Upstream {
                addrs: vec![],
                attempt_timeout: Duration::from_millis(1),
                deadline: Duration::from_millis(1),
            },
            ttl: 30,
            target_cache: Mutex::default(),
            stats: Arc::new(DnsStats::default()),
        };
        let mut query = Message::query();
        query
            .add_query(Query::query(Name::from_ascii("s3.amazonaws.com.").unwrap(), RecordType::A));
        query.set_edns(Edns::new());
        let query = query.to_vec().unwrap();
        let src: SocketAddr = "127.0.0.1:5300".parse().unwrap();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for len in 0..query.len() {
            let _ = responder.handle(&query[..len], src, Transport::Udp).await;
        }
        for _ in 0..5000 {
            let mut packet = query.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() % packet.len() as u64) as usize;
                packet[at] = next() as u8;
            }
            let _ = responder.handle(&packet, src, Transport::Udp).await;
        }
    }
}
