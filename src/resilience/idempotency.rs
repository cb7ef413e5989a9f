//! Which methods are safe to send twice: the single list retry consults, derived from the
//! protos so that a new RPC is classified the day it is added.
//!
//! A method may be repeated ([`Replay::Always`]) when it has no side effects or the same
//! effect however often it runs:
//! * its proto declares `option idempotency_level = NO_SIDE_EFFECTS` or `IDEMPOTENT`;
//! * its `google.api.http` rule is a GET;
//! * its name starts with `Get`, `List` or `BatchGet` (BatchGetProducts is a POST only
//!   because its id list is long);
//! * it is named in [`IDEMPOTENT_BY_CONTRACT`] (API.md says so, the proto cannot).
//!
//! A write whose request has a top-level string field named in [`IDEMPOTENCY_KEYS`]
//! (`request_id`, `reservation_id`) is repeated only when that key is set
//! ([`Replay::WithKey`]): the server then answers a repeat with the first result instead
//! of acting twice (Reserve with the same reservation_id never reserves twice). The key
//! is checked on the buffered request only when a retry is about to happen, so calls that
//! succeed pay nothing for it.
//!
//! Every other method ([`Replay::Never`]) is sent again only when it provably never left
//! this process (the connection could not be opened).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::LazyLock;

use bytes::Bytes;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value,
};

/// Request fields that make a write idempotent when set.
pub const IDEMPOTENCY_KEYS: [&str; 2] = ["request_id", "reservation_id"];

/// Methods idempotent by the API contract without a key field.
pub const IDEMPOTENT_BY_CONTRACT: [&str; 3] = [
    // Verifying a token changes nothing.
    "stockmesh.auth.v1.AuthService.VerifyToken",
    // Revoking a revoked token is a no-op.
    "stockmesh.auth.v1.AuthService.Logout",
    // Completing a completed order returns it unchanged.
    "stockmesh.orders.v1.OrderService.CompleteOrder",
];

/// Methods outside the stockmesh protos that are safe to repeat (by gRPC path).
const EXTRA_READS: [&str; 1] = ["/grpc.health.v1.Health/Check"];

const READ_PREFIXES: [&str; 3] = ["Get", "List", "BatchGet"];

/// Whether a method may be sent again after a failure that it may have reached the
/// server with.
#[derive(Debug, Clone)]
pub enum Replay {
    Always,
    WithKey {
        input: MessageDescriptor,
        key: FieldDescriptor,
    },
    Never,
}

impl Replay {
    /// Whether this buffered request (one uncompressed gRPC message frame) may be sent
    /// again.
    pub fn allows(&self, body: &Bytes) -> bool {
        match self {
            Replay::Always => true,
            Replay::Never => false,
            Replay::WithKey { input, key } => key_is_set(input, key, body),
        }
    }
}

fn key_is_set(input: &MessageDescriptor, key: &FieldDescriptor, body: &Bytes) -> bool {
    // gRPC framing: 1 byte compressed flag, 4 bytes big-endian length, the message.
    let Some((header, message)) = body.split_at_checked(5) else {
        return false;
    };
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if header[0] != 0 || message.len() != len {
        return false;
    }
    match DynamicMessage::decode(input.clone(), message) {
        Ok(msg) => matches!(&*msg.get_field(key), Value::String(s) if !s.is_empty()),
        Err(_) => false,
    }
}

/// What the retry layer needs to know about one method.
#[derive(Debug, Clone)]
pub struct MethodInfo {
    pub replay: Replay,
    /// One request message (so the body can be buffered and sent again).
    pub unary_request: bool,
}

/// FNV-1a: the table is looked up on every call with a short, trusted key (the path),
/// where SipHash's DoS resistance buys nothing.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Every known method by gRPC path (`/package.Service/Method`).
#[derive(Debug, Default)]
pub struct MethodTable {
    methods: HashMap<String, MethodInfo, BuildHasherDefault<Fnv>>,
}

static GLOBAL: LazyLock<MethodTable> = LazyLock::new(|| {
    MethodTable::from_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET).unwrap_or_else(|e| {
        // Cannot happen with the set build.rs writes; without a table nothing is
        // retried, which is safe.
        tracing::error!(error = %e, "cannot read the proto descriptor set: retries disabled");
        MethodTable::default()
    })
});

impl MethodTable {
    /// The table of the stockmesh protos.
    pub fn global() -> &'static MethodTable {
        &GLOBAL
    }

    /// Builds the table from an encoded `FileDescriptorSet`.
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<Self, prost_reflect::DescriptorError> {
        let pool = DescriptorPool::decode(bytes)?;
        let http = pool.get_extension_by_name("google.api.http");
        let mut methods = HashMap::default();
        for service in pool.services() {
            for method in service.methods() {
                let path = format!("/{}/{}", service.full_name(), method.name());
                let options = method.options();
                let declared = options.has_field_by_name("idempotency_level")
                    && options
                        .get_field_by_name("idempotency_level")
                        .and_then(|v| v.as_enum_number())
                        // NO_SIDE_EFFECTS = 1, IDEMPOTENT = 2
                        .is_some_and(|n| n == 1 || n == 2);
                let is_get = http.as_ref().is_some_and(|ext| {
                    options.has_extension(ext)
                        && options
                            .get_extension(ext)
                            .as_message()
                            .is_some_and(|rule| rule.has_field_by_name("get"))
                });
                let named_read = READ_PREFIXES.iter().any(|p| method.name().starts_with(p));
                let by_contract = IDEMPOTENT_BY_CONTRACT.contains(&method.full_name());
                let input = method.input();
                let key = IDEMPOTENCY_KEYS.iter().find_map(|name| {
                    input
                        .get_field_by_name(name)
                        .filter(|f| f.kind() == Kind::String && !f.is_list())
                });
                let replay = if declared || is_get || named_read || by_contract {
                    Replay::Always
                } else if let Some(key) = key {
                    Replay::WithKey { input, key }
                } else {
                    Replay::Never
                };
                methods.insert(
                    path,
                    MethodInfo {
                        replay,
                        unary_request: !method.is_client_streaming(),
                    },
                );
            }
        }
        for path in EXTRA_READS {
            methods.insert(
                path.to_string(),
                MethodInfo {
                    replay: Replay::Always,
                    unary_request: true,
                },
            );
        }
        Ok(Self { methods })
    }

    /// The method at a gRPC path; `None` for paths outside the table (never retried).
    pub fn get(&self, path: &str) -> Option<&MethodInfo> {
        self.methods.get(path)
    }

    /// Every method and how it may be replayed, sorted by path (for docs and tests).
    pub fn describe(&self) -> Vec<(String, &'static str)> {
        let mut out: Vec<_> = self
            .methods
            .iter()
            .map(|(path, info)| {
                let how = match info.replay {
                    Replay::Always => "always",
                    Replay::WithKey { .. } => "with key",
                    Replay::Never => "never",
                };
                (path.clone(), how)
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn how(path: &str) -> &'static str {
        let table = MethodTable::global();
        table
            .describe()
            .into_iter()
            .find(|(p, _)| p == path)
            .map(|(_, h)| h)
            .unwrap_or("missing")
    }

    #[test]
    fn reads_are_always_replayable() {
        for m in [
            "/stockmesh.products.v1.ProductService/GetProduct",
            "/stockmesh.products.v1.ProductService/ListProducts",
            "/stockmesh.products.v1.ProductService/BatchGetProducts",
            "/stockmesh.auth.v1.AuthService/GetJwks",
            "/stockmesh.auth.v1.AuthService/VerifyToken",
            "/stockmesh.inventory.v1.InventoryService/GetStock",
            "/stockmesh.inventory.v1.InventoryService/GetReservation",
            "/grpc.health.v1.Health/Check",
        ] {
            assert_eq!(how(m), "always", "{m}");
        }
    }

    #[test]
    fn keyed_writes_need_their_key() {
        for m in [
            "/stockmesh.inventory.v1.InventoryService/Reserve",
            "/stockmesh.inventory.v1.InventoryService/CommitReservation",
            "/stockmesh.inventory.v1.InventoryService/ReleaseReservation",
            "/stockmesh.inventory.v1.InventoryService/Restock",
            "/stockmesh.inventory.v1.InventoryService/AdjustStock",
            "/stockmesh.orders.v1.OrderService/CreateOrder",
        ] {
            assert_eq!(how(m), "with key", "{m}");
        }
    }

    #[test]
    fn other_writes_are_never_replayed() {
        for m in [
            "/stockmesh.products.v1.ProductService/CreateProduct",
            "/stockmesh.products.v1.ProductService/DeleteProduct",
            "/stockmesh.auth.v1.AuthService/Login",
            "/stockmesh.auth.v1.AuthService/Refresh",
            "/stockmesh.orders.v1.OrderService/CancelOrder",
        ] {
            assert_eq!(how(m), "never", "{m}");
        }
    }

    fn frame(msg: &impl Message) -> Bytes {
        let body = msg.encode_to_vec();
        let mut out = vec![0u8];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        Bytes::from(out)
    }

    #[test]
    fn the_key_is_read_from_the_buffered_request() {
        use crate::proto::inventory::v1::ReserveRequest;
        let info = MethodTable::global()
            .get("/stockmesh.inventory.v1.InventoryService/Reserve")
            .unwrap();
        let with = ReserveRequest {
            reservation_id: "r-1".into(),
            quantity: 2,
            ..Default::default()
        };
        let without = ReserveRequest {
            quantity: 2,
            ..Default::default()
        };
        assert!(info.replay.allows(&frame(&with)));
        assert!(!info.replay.allows(&frame(&without)));
        // Compressed or truncated frames are never guessed at.
        let mut compressed = frame(&with).to_vec();
        compressed[0] = 1;
        assert!(!info.replay.allows(&Bytes::from(compressed)));
        assert!(!info.replay.allows(&Bytes::from_static(b"\0\0\0")));
    }
}
