//! Code generated from `proto/` by `build.rs`, one module per protobuf package, and the
//! encoded FileDescriptorSet (with imports, source info and custom options) that reflection
//! serves and the gateway reads `google.api.http` rules from.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// `stockmesh.auth.v1`
pub mod auth {
    pub mod v1 {
        tonic::include_proto!("stockmesh.auth.v1");
    }
}

/// `stockmesh.products.v1`
pub mod products {
    pub mod v1 {
        tonic::include_proto!("stockmesh.products.v1");
    }
}

/// `stockmesh.inventory.v1`
pub mod inventory {
    pub mod v1 {
        tonic::include_proto!("stockmesh.inventory.v1");
    }
}

/// `stockmesh.orders.v1`
pub mod orders {
    pub mod v1 {
        tonic::include_proto!("stockmesh.orders.v1");
    }
}

/// Every stockmesh proto file and its imports (including `google/api/*.proto`), encoded as
/// a `google.protobuf.FileDescriptorSet` with source info.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/stockmesh_descriptor.bin"));

/// Converts a `chrono` instant to a protobuf `Timestamp`.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// Converts a protobuf `Timestamp` to a `chrono` instant; `None` when out of range.
pub fn from_timestamp(ts: &prost_types::Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    let nanos = u32::try_from(ts.nanos).ok()?;
    chrono::DateTime::from_timestamp(ts.seconds, nanos)
}
