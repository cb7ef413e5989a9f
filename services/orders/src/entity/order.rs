//! `orders`: one row per order, including orders still being created.
//!
//! Besides the three statuses of the API, a row can be in a transitional state that
//! records work in flight, so that a crash at any point leaves a row the reconciler knows
//! how to finish. Every change of a row bumps `version`; the reconciler only takes over a
//! row whose version it has seen stay put, so it never races a saga that is still making
//! progress.

use sea_orm::entity::prelude::*;

/// Stored order status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum Status {
    /// Intent row of a CreateOrder saga: lines are being reserved. Not visible to clients.
    #[sea_orm(string_value = "CREATING")]
    Creating,
    /// A CreateOrder saga failed; its reservations are being released. Not visible.
    #[sea_orm(string_value = "ABORTING")]
    Aborting,
    /// Every line is reserved.
    #[sea_orm(string_value = "PENDING")]
    Pending,
    /// CompleteOrder claimed the order and is committing reservations (shown as PENDING).
    #[sea_orm(string_value = "COMPLETING")]
    Completing,
    /// Every reservation is committed.
    #[sea_orm(string_value = "COMPLETED")]
    Completed,
    /// CancelOrder claimed the order and is releasing reservations (shown as PENDING).
    #[sea_orm(string_value = "CANCELLING")]
    Cancelling,
    /// Every reservation is released.
    #[sea_orm(string_value = "CANCELLED")]
    Cancelled,
}

impl Status {
    /// Whether clients can see an order in this state (it exists as far as they know).
    pub fn is_visible(self) -> bool {
        !matches!(self, Status::Creating | Status::Aborting)
    }

    /// States that still have work in flight, which the reconciler finishes when idle.
    pub const UNFINISHED: [Status; 4] = [
        Status::Creating,
        Status::Aborting,
        Status::Completing,
        Status::Cancelling,
    ];
}

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "orders")]
pub struct Model {
    /// UUIDv7 text, so ordering by id is creation order (keyset pagination relies on it).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// User id of the customer. Unique together with `request_id`.
    pub customer_id: String,
    /// The caller's idempotency key.
    pub request_id: String,
    pub status: Status,
    /// Sum of quantity × unit price over the lines, fixed at creation.
    pub total_cents: i64,
    /// ISO 4217 code shared by every line.
    pub currency: String,
    /// Why the order was cancelled (or, while ABORTING, why creation failed).
    pub cancel_reason: String,
    /// Bumped by every update; optimistic lock for the reconciler's take-overs.
    pub version: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// The reconciler's lease: while in the future, the replica that set it works on the
    /// row and no other reconciler picks it (see [`crate::reconciler`]). Not a version
    /// bump: claiming does not change `version` or `updated_at`. `None`: never claimed.
    pub claimed_until: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
