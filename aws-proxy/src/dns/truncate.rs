//! Cutting a UDP answer to the client's size.

use hickory_proto::{
    op::{emit_message_parts, Header, Message, Query},
    serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder},
};

const DNS_HEADER_LEN: usize = 12;

/// `response` as is when it fits the client's UDP size, else with TC set and cut to fit: the
/// records that fit and the OPT record are kept, so the client can use what it got or retry
/// over TCP.
pub(super) fn fit_udp(response: Vec<u8>, limit: usize) -> Vec<u8> {
    if response.len() <= limit {
        return response;
    }
    Message::from_vec(&response)
        .ok()
        .and_then(|message| truncate(&message, limit))
        .unwrap_or_else(|| header_and_question(&response))
}

fn truncate(message: &Message, limit: usize) -> Option<Vec<u8>> {
    let opt = match &message.edns {
        Some(edns) => {
            let mut edns = edns.clone();
            edns.set_rcode_high(message.metadata.response_code.high());
            edns.to_bytes().ok()?
        }
        None => Vec::new(),
    };
    let budget = u16::try_from(limit.checked_sub(opt.len())?).unwrap_or(u16::MAX);
    let mut metadata = message.metadata;
    metadata.truncation = true;
    let mut bytes = Vec::with_capacity(limit);
    let (header, end) = {
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(budget);
        let header = emit_message_parts(
            &metadata,
            &mut message.queries.iter(),
            &mut message.answers.iter(),
            &mut message.authorities.iter(),
            &mut message.additionals.iter(),
            None,
            None,
            &mut encoder,
        )
        .ok()?;
        (header, encoder.offset())
    };
    // A record that did not fit is rolled back by moving the offset only: drop its bytes.
    bytes.truncate(end);
    if !opt.is_empty() {
        bytes.extend_from_slice(&opt);
        let additionals = header.counts.additionals.checked_add(1)?;
        bytes[10..12].copy_from_slice(&additionals.to_be_bytes());
    }
    Some(bytes)
}

/// The last resort for an answer too big to parse and cut: its header with TC set and its
/// question, no records.
fn header_and_question(response: &[u8]) -> Vec<u8> {
    if response.len() < DNS_HEADER_LEN {
        return response.to_vec();
    }
    let mut decoder = BinDecoder::new(response);
    let end = match Header::read(&mut decoder) {
        Ok(header) if header.counts.queries == 1 && Query::read(&mut decoder).is_ok() => {
            decoder.index()
        }
        _ => DNS_HEADER_LEN,
    };
    let mut bytes = response[..end].to_vec();
    bytes[2] |= 0x02;
    let questions: u16 = if end > DNS_HEADER_LEN { 1 } else { 0 };
    bytes[4..6].copy_from_slice(&questions.to_be_bytes());
    bytes[6..12].fill(0);
    bytes
}

#[cfg(test)]
mod tests {
    use super::super::test_support::big_response;
    use super::*;

    #[test]
    fn fit_udp_cuts_to_the_limit_and_keeps_opt() {
        for edns in [false, true] {
            let full = big_response(100, edns).to_vec().unwrap();
            assert!(full.len() > 1232);
            assert_eq!(fit_udp(full.clone(), 4096), full, "fits: unchanged");
            for limit in [512, 1232] {
                let cut = fit_udp(full.clone(), limit);
                assert!(cut.len() <= limit, "{} > {limit}", cut.len());
                let message = Message::from_vec(&cut).unwrap();
                assert!(message.metadata.truncation);
                assert!(
                    !message.answers.is_empty() && message.answers.len() < 100,
                    "{}",
                    message.answers.len()
                );
                assert_eq!(message.queries.len(), 1);
                assert_eq!(message.edns.is_some(), edns);
                assert_eq!(
                    message.to_vec().unwrap().len(),
                    cut.len(),
                    "nothing after the last record"
                );
            }
        }
    }

    #[test]
    fn header_and_question_is_the_last_resort() {
        let full = big_response(100, false).to_vec().unwrap();
        let cut = header_and_question(&full);
        let message = Message::from_vec(&cut).unwrap();
        assert!(message.metadata.truncation);
        assert_eq!(message.queries.len(), 1);
        assert!(message.answers.is_empty());
        assert_eq!(header_and_question(&full[..5]), full[..5].to_vec());
    }
}
