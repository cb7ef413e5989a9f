//! Opaque page tokens for every List RPC.
//!
//! Lists are ordered by id (UUIDv7, so creation order) and paged by keyset: the token
//! carries the last id of the previous page, which stays correct while rows are inserted
//! or deleted between pages (an offset would skip or repeat rows). The token also carries
//! a fingerprint of the filters it was issued for, so reusing it with other filters is an
//! INVALID_ARGUMENT instead of a silently wrong page. Tokens are base64url JSON: opaque to
//! clients, debuggable by us.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::error::invalid_field;

/// Page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// Larger requests are clamped to this.
pub const MAX_PAGE_SIZE: u64 = 500;

/// A validated page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Rows to return (1..=MAX_PAGE_SIZE). Fetch `size + 1` to learn whether more exist.
    pub size: u64,
    /// Return rows strictly after this id (in the list's order); `None` for the first page.
    pub after: Option<String>,
    fingerprint: String,
}

#[derive(Serialize, Deserialize)]
struct Token {
    /// Last id of the previous page.
    a: String,
    /// Filter fingerprint.
    f: String,
}

/// A stable fingerprint of the filters of a list request (e.g. `&[name_contains, supplier_id]`).
pub fn fingerprint(filters: &[&str]) -> String {
    let mut h = Sha256::new();
    for f in filters {
        h.update((f.len() as u64).to_le_bytes());
        h.update(f.as_bytes());
    }
    hex_prefix(&h.finalize())
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Page {
    /// Validates `page_size` and `page_token` for a request with these filters.
    pub fn parse(page_size: i32, page_token: &str, filters: &[&str]) -> Result<Self, Status> {
        let size = match page_size {
            n if n < 0 => return Err(invalid_field("page_size", "must not be negative")),
            0 => DEFAULT_PAGE_SIZE,
            n => (n as u64).min(MAX_PAGE_SIZE),
        };
        let fingerprint = fingerprint(filters);
        let after = if page_token.is_empty() {
            None
        } else {
            let bad = || invalid_field("page_token", "is not a token this list issued");
            let raw = URL_SAFE_NO_PAD.decode(page_token).map_err(|_| bad())?;
            let token: Token = serde_json::from_slice(&raw).map_err(|_| bad())?;
            if token.f != fingerprint {
                return Err(invalid_field(
                    "page_token",
                    "was issued for different filters",
                ));
            }
            Some(token.a)
        };
        Ok(Self {
            size,
            after,
            fingerprint,
        })
    }

    /// Rows to fetch: one more than the page, to detect a next page.
    pub fn fetch_limit(&self) -> u64 {
        self.size + 1
    }

    /// Trims `rows` (fetched with [`Page::fetch_limit`]) to the page and returns the
    /// next page token ("" on the last page).
    pub fn finish<T>(&self, rows: &mut Vec<T>, id_of: impl Fn(&T) -> &str) -> String {
        if rows.len() as u64 <= self.size {
            return String::new();
        }
        rows.truncate(self.size as usize);
        match rows.last() {
            Some(last) => self.token_after(id_of(last)),
            None => String::new(),
        }
    }

    fn token_after(&self, id: &str) -> String {
        let token = Token {
            a: id.to_string(),
            f: self.fingerprint.clone(),
        };
        // Serialising two strings cannot fail.
        let json = serde_json::to_vec(&token).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_default_clamp_and_reject_negative() {
        assert_eq!(Page::parse(0, "", &[]).unwrap().size, 50);
        assert_eq!(Page::parse(10_000, "", &[]).unwrap().size, 500);
        let err = Page::parse(-1, "", &[]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with("page_size"));
    }

    #[test]
    fn garbage_and_foreign_tokens_are_invalid_argument() {
        let err = Page::parse(5, "not a token!", &[]).unwrap_err();
        assert!(err.message().starts_with("page_token"));
        let page = Page::parse(1, "", &["a"]).unwrap();
        let mut rows = vec!["x", "y"];
        let token = page.finish(&mut rows, |r| r);
        let err = Page::parse(1, &token, &["b"]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    proptest! {
        #[test]
        fn token_roundtrips(id in "[0-9a-f-]{1,40}", filter in ".{0,20}", size in 1i32..500) {
            let page = Page::parse(size, "", &[&filter]).unwrap();
            let token = page.token_after(&id);
            let next = Page::parse(size, &token, &[&filter]).unwrap();
            prop_assert_eq!(next.after, Some(id));
        }

        #[test]
        fn walking_pages_visits_every_row_once(n in 0usize..200, size in 1i32..30) {
            let all: Vec<String> = (0..n).map(|i| format!("{i:05}")).collect();
            let mut seen = Vec::new();
            let mut token = String::new();
            loop {
                let page = Page::parse(size, &token, &[]).unwrap();
                let mut rows: Vec<String> = all
                    .iter()
                    .filter(|r| page.after.as_ref().is_none_or(|a| *r > a))
                    .take(page.fetch_limit() as usize)
                    .cloned()
                    .collect();
                token = page.finish(&mut rows, |r| r);
                seen.extend(rows);
                if token.is_empty() { break; }
            }
            prop_assert_eq!(seen, all);
        }
    }
}
