//! What a retried attempt is rebuilt from: the first attempt's method, URI, version,
//! headers (kept inline, without a `HeaderMap` clone, in the common case) and deadline.

use bytes::Bytes;

use super::Req;
use super::body::replayable;
use crate::resilience::deadline::CallDeadline;

/// What a retry is rebuilt from. Extensions other than the deadline are not carried
/// over: only the layers below read them, and they need only [`CallDeadline`].
pub(super) struct Head {
    pub(super) method: http::Method,
    pub(super) uri: http::Uri,
    pub(super) version: http::Version,
    headers: SavedHeaders,
    pub(super) deadline: Option<CallDeadline>,
}

impl Head {
    pub(super) fn of(parts: &http::request::Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: SavedHeaders::of(&parts.headers),
            deadline: parts.extensions.get::<CallDeadline>().copied(),
        }
    }

    pub(super) fn request(&self, body: Bytes) -> Req {
        let mut req = http::Request::new(replayable(body));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.to_map();
        if let Some(deadline) = self.deadline {
            req.extensions_mut().insert(deadline);
        }
        req
    }
}

/// Request headers kept for a retry. A gRPC call carries a handful (`te`,
/// `content-type`, `authorization`, a request id, `grpc-timeout`), which are kept inline:
/// a `HeaderMap` clone costs two allocations on every call, and nearly every call is
/// never retried. More than fit are kept as a `HeaderMap` clone.
struct SavedHeaders {
    inline: [Option<(http::HeaderName, http::HeaderValue)>; INLINE_HEADERS],
    len: usize,
    map: Option<http::HeaderMap>,
}

const INLINE_HEADERS: usize = 5;

impl SavedHeaders {
    fn of(headers: &http::HeaderMap) -> Self {
        let mut saved = Self {
            inline: Default::default(),
            len: headers.len(),
            map: None,
        };
        // `len` counts every value, so repeated names fit exactly too.
        if headers.len() > INLINE_HEADERS {
            saved.map = Some(headers.clone());
            return saved;
        }
        for (slot, (name, value)) in saved.inline.iter_mut().zip(headers) {
            *slot = Some((name.clone(), value.clone()));
        }
        saved
    }

    /// The headers as they were, repeated names and their order included.
    fn to_map(&self) -> http::HeaderMap {
        if let Some(map) = &self.map {
            return map.clone();
        }
        let mut map = http::HeaderMap::with_capacity(self.len);
        for (name, value) in self.inline.iter().flatten() {
            map.append(name.clone(), value.clone());
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_headers_round_trip() {
        for n in [0usize, 1, 3, INLINE_HEADERS, INLINE_HEADERS + 1, 9] {
            let mut map = http::HeaderMap::new();
            for i in 0..n {
                // Every other header repeats a name, which must survive with its order.
                let name = if i % 2 == 1 {
                    "x-repeat"
                } else {
                    [
                        "te",
                        "content-type",
                        "authorization",
                        "x-request-id",
                        "grpc-timeout",
                    ][i / 2 % 5]
                };
                map.append(
                    http::HeaderName::from_static(name),
                    http::HeaderValue::from_str(&format!("v{i}")).unwrap(),
                );
            }
            let saved = SavedHeaders::of(&map);
            assert_eq!(saved.map.is_none(), n <= INLINE_HEADERS);
            assert_eq!(saved.to_map(), map, "{n} headers");
        }
    }
}
