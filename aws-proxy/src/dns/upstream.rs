//! Asking the upstream resolvers: each in turn, UDP then TCP when the answer is truncated, within
//! a deadline.

use std::{
    future::Future,
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Header, Message, MessageType, Query, ResponseCode},
    serialize::binary::{BinDecodable, BinDecoder},
};
use tokio::{
    net::{TcpStream, UdpSocket},
    time::timeout,
};
use tracing::debug;

use super::{
    server::{read_frame, write_frame},
    Transport,
};

/// The resolvers everything but amazonaws.com goes to.
pub(super) struct Upstream {
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) attempt_timeout: Duration,
    pub(super) deadline: Duration,
}

impl Upstream {
    /// Sends `query` (its bytes as they are, under a fresh ID) to each upstream in turn until
    /// one answers, and returns that answer's bytes (still under the fresh ID). A UDP answer with
    /// TC is asked again over TCP. SERVFAIL, REFUSED and NOTIMP move on to the next upstream but
    /// are returned when no other does better. `None` when nothing answered within the deadline.
    pub(super) async fn exchange(
        &self,
        query: &[u8],
        question: Option<&Query>,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let deadline = Instant::now() + self.deadline;
        let mut query = query.to_vec();
        let mut fallback = None;
        for (index, &upstream) in self.addrs.iter().enumerate() {
            let id = random_id();
            query[..2].copy_from_slice(&id.to_be_bytes());
            let Some(reply) =
                self.attempt(upstream, &query, id, question, transport, deadline).await
            else {
                continue;
            };
            let code = response_code(&reply);
            if matches!(code, ResponseCode::ServFail | ResponseCode::Refused | ResponseCode::NotImp)
                && index + 1 < self.addrs.len()
            {
                debug!(%upstream, %code, "upstream declined, trying the next one");
                fallback = Some(reply);
                continue;
            }
            return Some(reply);
        }
        fallback
    }

    async fn attempt(
        &self,
        upstream: SocketAddr,
        query: &[u8],
        id: u16,
        question: Option<&Query>,
        transport: Transport,
        deadline: Instant,
    ) -> Option<Vec<u8>> {
        let reply = self
            .bounded(
                upstream,
                transport,
                deadline,
                exchange_once(upstream, query, id, question, transport),
            )
            .await?;
        if transport == Transport::Udp && is_truncated(&reply) {
            debug!(%upstream, "upstream UDP answer is truncated, asking again over TCP");
            // The truncated answer still tells the client to retry over TCP itself.
            let full = self
                .bounded(
                    upstream,
                    Transport::Tcp,
                    deadline,
                    exchange_once(upstream, query, id, question, Transport::Tcp),
                )
                .await;
            return full.or(Some(reply));
        }
        Some(reply)
    }

    /// Runs one exchange within the per-attempt timeout and what is left of the deadline.
    async fn bounded(
        &self,
        upstream: SocketAddr,
        transport: Transport,
        deadline: Instant,
        exchange: impl Future<Output = io::Result<Vec<u8>>>,
    ) -> Option<Vec<u8>> {
        let limit = self.attempt_timeout.min(deadline.saturating_duration_since(Instant::now()));
        if limit.is_zero() {
            return None;
        }
        match timeout(limit, exchange).await {
            Ok(Ok(reply)) => Some(reply),
            Ok(Err(error)) => {
                debug!(%upstream, %transport, %error, "upstream exchange failed");
                None
            }
            Err(_) => {
                debug!(%upstream, %transport, timeout_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX), "upstream did not answer in time");
                None
            }
        }
    }
}

async fn exchange_once(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
    question: Option<&Query>,
    transport: Transport,
) -> io::Result<Vec<u8>> {
    match transport {
        Transport::Udp => {
            let local: SocketAddr = match upstream {
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let socket = UdpSocket::bind(local).await?;
            socket.connect(upstream).await?;
            socket.send(query).await?;
            let mut buf = vec![0; usize::from(u16::MAX)];
            loop {
                let len = socket.recv(&mut buf).await?;
                if is_reply_to(&buf[..len], id, question) {
                    buf.truncate(len);
                    return Ok(buf);
                }
                debug!(%upstream, len, "ignoring a UDP packet that does not answer our query");
            }
        }
        Transport::Tcp => {
            let mut stream = TcpStream::connect(upstream).await?;
            stream.set_nodelay(true)?;
            write_frame(&mut stream, query).await?;
            let reply = read_frame(&mut stream).await?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream closed the connection without answering",
                )
            })?;
            if !is_reply_to(&reply, id, question) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "upstream TCP answer does not match the query",
                ));
            }
            Ok(reply)
        }
    }
}

/// hickory-proto draws query IDs from a CSPRNG; borrowing it saves a `rand` dependency.
fn random_id() -> u16 {
    Message::query().metadata.id
}

/// A response with our ID and, when we asked one, the same question (any case).
fn is_reply_to(reply: &[u8], id: u16, question: Option<&Query>) -> bool {
    let mut decoder = BinDecoder::new(reply);
    let Ok(header) = Header::read(&mut decoder) else {
        return false;
    };
    if header.metadata.id != id || header.metadata.message_type != MessageType::Response {
        return false;
    }
    let Some(question) = question else {
        return true;
    };
    header.counts.queries == 1
        && Query::read(&mut decoder).is_ok_and(|echoed| {
            echoed.name() == question.name()
                && echoed.query_type() == question.query_type()
                && echoed.query_class() == question.query_class()
        })
}

fn is_truncated(reply: &[u8]) -> bool {
    reply.get(2).is_some_and(|flags| flags & 0x02 != 0)
}

fn response_code(reply: &[u8]) -> ResponseCode {
    ResponseCode::from_low(reply.get(3).map_or(0, |flags| flags & 0x0f))
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::{Name, RecordType};

    use super::super::test_support::big_response;
    use super::*;

    #[test]
    fn replies_match_id_and_question() {
        let response = big_response(1, false);
        let bytes = response.to_vec().unwrap();
        let id = response.metadata.id;
        let question = response.queries[0].clone();
        assert!(is_reply_to(&bytes, id, Some(&question)));
        assert!(is_reply_to(&bytes, id, None));
        assert!(!is_reply_to(&bytes, id.wrapping_add(1), Some(&question)));
        let other = Query::query(Name::from_ascii("BIG.test.").unwrap(), RecordType::AAAA);
        assert!(!is_reply_to(&bytes, id, Some(&other)));
        let same_in_other_case =
            Query::query(Name::from_ascii("BIG.TEST.").unwrap(), RecordType::A);
        assert!(is_reply_to(&bytes, id, Some(&same_in_other_case)));
        assert!(!is_reply_to(&bytes[..11], id, None));
    }
}
