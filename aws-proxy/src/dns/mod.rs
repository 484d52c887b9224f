//! The amazonaws.com DNS server: answers `amazonaws.com`, `amazonaws.com.cn` and every name under
//! them with the proxy's address, and forwards every other query to the cluster's resolvers.
//!
//! Messages are `hickory-proto` types; the UDP and TCP loops are our own rather than
//! `hickory_server::Server`, because that server answers malformed packets itself (they could not
//! be counted) and only sends responses re-encoded from records, whereas forwarding here relays
//! the upstream's bytes unchanged (TTLs, every section, EDNS options) and re-encodes only when a
//! UDP answer has to be cut to the client's size.
//!
//! - `config`: the command line, the proxy's address, the upstreams from resolv.conf;
//! - `server`: the UDP and TCP loops;
//! - `responder`: one query's answer, here or from the upstreams;
//! - `upstream`: asking the upstream resolvers;
//! - `truncate`: cutting a UDP answer to the client's size;
//! - `stats`: what the server has done.

mod config;
mod responder;
mod server;
mod stats;
mod truncate;
mod upstream;

/// How a query reached us, or how we send one on.
pub use model::edge::Transport;

pub(crate) use config::parse_resolv_conf;
pub use config::{DnsArgs, DnsSetupError};
pub use server::DnsServer;
pub use stats::{DnsStats, DnsStatsSnapshot};

#[cfg(test)]
mod test_support {
    use std::net::Ipv4Addr;

    use hickory_proto::{
        op::{Edns, Message, Query, ResponseCode},
        rr::{rdata::A, Name, RData, Record, RecordType},
    };

    use super::responder::response_to;

    pub(super) fn big_response(records: u8, edns: bool) -> Message {
        let mut request = Message::query();
        request.add_query(Query::query(Name::from_ascii("big.test.").unwrap(), RecordType::A));
        if edns {
            request.set_edns(Edns::new());
        }
        let mut response = response_to(&request, ResponseCode::NoError);
        for i in 0..records {
            response.add_answer(Record::from_rdata(
                Name::from_ascii("big.test.").unwrap(),
                60,
                RData::A(A(Ipv4Addr::new(10, 0, 0, i))),
            ));
        }
        response
    }
}
