//! Paged reads of the access graph: `limit=` and `after=` in, `next` out. A cursor is the last
//! client workload of a page, opaque to clients and checked before use.

use serde::Serialize;

use super::error::ApiError;
use super::graph::check_name;
use crate::store::{ClientCursor, PageRequest};

/// The longest `after=` taken: a cursor this server gives is under 700 characters.
const MAX_CURSOR_CHARS: usize = 1024;

/// A page's `next`, opaque to clients: the last client of the page, as URL-safe base64 of
/// `["namespace","name"]`.
pub(super) fn encode_cursor(c: &ClientCursor) -> String {
    use base64::Engine;
    let json = serde_json::to_vec(&(&c.namespace, &c.name)).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_cursor(s: &str) -> Result<ClientCursor, ApiError> {
    use base64::Engine;
    let bad = || {
        ApiError::BadRequest(
            "after= is not a `next` this server gave; start again from the first page (no after=)"
                .into(),
        )
    };
    if s.len() > MAX_CURSOR_CHARS {
        return Err(bad());
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
    let (namespace, name): (String, String) = serde_json::from_slice(&json).map_err(|_| bad())?;
    check_name("after", Some(&namespace)).map_err(|_| bad())?;
    check_name("after", Some(&name)).map_err(|_| bad())?;
    Ok(ClientCursor { namespace, name })
}

/// A page of a paged read: the body and where the next page starts.
#[derive(Serialize)]
pub(super) struct Paged<T> {
    #[serde(flatten)]
    pub body: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `limit=` and `after=` as a page to read, checked against the read's bound.
pub(super) fn page_request(
    limit: Option<usize>,
    after: Option<&str>,
    max_edges: usize,
) -> Result<Option<PageRequest>, ApiError> {
    match (limit, after) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(ApiError::BadRequest(
            "after= continues a paged read: give the same limit= as the first page".into(),
        )),
        (Some(0), _) => Err(ApiError::BadRequest("limit=0: a page holds at least one edge".into())),
        // Larger pages than one read may return are cut to that size.
        (Some(limit), after) => Ok(Some(PageRequest {
            after: after.map(decode_cursor).transpose()?,
            limit: limit.min(max_edges),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_comes_back_as_it_was_given() {
        let c = ClientCursor { namespace: "shop".into(), name: "cart\"/ü".into() };
        let page = page_request(Some(10), Some(&encode_cursor(&c)), 5).unwrap().unwrap();
        assert_eq!(page.after, Some(c));
        assert_eq!(page.limit, 5, "cut to the read's bound");
        assert!(page_request(None, None, 5).unwrap().is_none());
        assert!(page_request(None, Some("x"), 5).is_err());
        assert!(page_request(Some(0), None, 5).is_err());
        assert!(page_request(Some(1), Some("%%%"), 5).is_err());
    }
}
