//! The `outbox` table: events written in the transaction of the change they describe,
//! waiting for the relay to publish them.
//!
//! Rows are claimed with a lease (`claimed_until`) rather than held in a transaction
//! while the bus is asked, the same way the orders reconciler claims due orders: one
//! statement `WITH picked AS MATERIALIZED (SELECT seq … ORDER BY seq LIMIT n FOR UPDATE
//! SKIP LOCKED) UPDATE outbox SET claimed_until = … WHERE seq IN picked RETURNING *`. On
//! PostgreSQL a row another replica is claiming is skipped, and a claimed row is not
//! picked again until its lease lapses (the replica died mid-publish); SQLite runs the
//! statement under its single write lock. Published rows are deleted, so the table holds
//! only what is still due.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::{
    Alias, CommonTableExpression, Expr, LockBehavior, LockType, Query, SelectStatement, WithClause,
};
use sea_orm::{ConnectionTrait, DbErr, QueryOrder, QuerySelect, QueryTrait, Set};
use sea_orm_migration::prelude::{
    ColumnDef, MigrationName, MigrationTrait, SchemaManager, Table, async_trait,
};

use super::{Event, Topic};

/// One outbox row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    /// Insertion order: the relay publishes in it.
    #[sea_orm(primary_key)]
    pub seq: i64,
    #[sea_orm(unique)]
    pub event_id: String,
    /// [`Topic::subject`] (without the bus prefix).
    pub topic: String,
    pub payload: Vec<u8>,
    pub created_at: DateTime<Utc>,
    /// A relay holds the row until then; NULL or past: free to claim.
    pub claimed_until: Option<DateTime<Utc>>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The event of this row; `None` for a topic this build does not know (a row written
    /// by a newer release), which the relay leaves in place.
    pub fn event(&self) -> Option<Event> {
        Some(Event {
            id: self.event_id.clone(),
            topic: Topic::from_subject(&self.topic)?,
            payload: self.payload.clone().into(),
        })
    }
}

/// Inserts `event` into the `outbox` table through `conn` — call it with the transaction
/// of the change the event describes, so both commit or roll back together.
pub async fn append<C: ConnectionTrait>(conn: &C, event: &Event) -> Result<(), DbErr> {
    let row = ActiveModel {
        event_id: Set(event.id.clone()),
        topic: Set(event.topic.subject().to_string()),
        payload: Set(event.payload.to_vec()),
        created_at: Set(Utc::now()),
        claimed_until: Set(None),
        ..Default::default()
    };
    Entity::insert(row).exec_without_returning(conn).await?;
    Ok(())
}

/// Claims up to `limit` unclaimed rows (or rows whose claim lapsed at `now`) in `seq`
/// order, holding them until `until`; returns them in `seq` order.
pub async fn claim(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    let pick = Entity::find()
        .select_only()
        .column(Column::Seq)
        .filter(
            sea_orm::Condition::any()
                .add(Column::ClaimedUntil.is_null())
                .add(Column::ClaimedUntil.lte(now)),
        )
        .order_by_asc(Column::Seq)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .into_query();
    let mut cte = CommonTableExpression::new();
    cte.table_name(Alias::new(PICKED))
        .column(Column::Seq)
        .query(pick)
        .materialized(true);
    let picked: SelectStatement = Query::select()
        .column(Column::Seq)
        .from(Alias::new(PICKED))
        .to_owned();
    let mut update = Entity::update_many()
        .col_expr(Column::ClaimedUntil, Expr::value(until))
        .filter(Column::Seq.in_subquery(picked))
        .into_query();
    update.returning_all();
    let stmt = db
        .get_database_backend()
        .build(&update.with(WithClause::new().cte(cte).to_owned()));
    let mut rows = Entity::find().from_raw_sql(stmt).all(db).await?;
    // RETURNING gives no order.
    rows.sort_by_key(|r| r.seq);
    Ok(rows)
}

/// Name of the common table expression holding the rows a claim picked.
const PICKED: &str = "picked";

/// Deletes the published rows `seqs`.
pub async fn delete(db: &impl ConnectionTrait, seqs: &[i64]) -> Result<u64, DbErr> {
    if seqs.is_empty() {
        return Ok(0);
    }
    let res = Entity::delete_many()
        .filter(Column::Seq.is_in(seqs.iter().copied()))
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}

/// Gives back rows `seqs` claimed until `held_until` (a failed publish), so that the next
/// round, of this replica or another, claims them at once. A row whose claim lapsed and
/// was taken by someone else is left alone.
pub async fn unclaim(
    db: &impl ConnectionTrait,
    seqs: &[i64],
    held_until: DateTime<Utc>,
) -> Result<(), DbErr> {
    if seqs.is_empty() {
        return Ok(());
    }
    Entity::update_many()
        .col_expr(
            Column::ClaimedUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(Column::Seq.is_in(seqs.iter().copied()))
        .filter(Column::ClaimedUntil.eq(held_until))
        .exec(db)
        .await?;
    Ok(())
}

/// Rows waiting (claimed or not).
pub async fn pending(db: &impl ConnectionTrait) -> Result<u64, DbErr> {
    Entity::find().count(db).await
}

/// Creates the `outbox` table (SQLite and PostgreSQL). Each service that publishes adds
/// `Box::new(stockmesh::events::OutboxMigration)` as the LAST entry of its Migrator.
pub struct OutboxMigration;

impl MigrationName for OutboxMigration {
    fn name(&self) -> &str {
        "m20260301_000001_stockmesh_outbox"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for OutboxMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Entity)
                    .col(
                        ColumnDef::new(Column::Seq)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Column::EventId)
                            .text()
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Column::Topic).text().not_null())
                    .col(ColumnDef::new(Column::Payload).blob().not_null())
                    .col(
                        ColumnDef::new(Column::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Column::ClaimedUntil)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Entity).take()).await
    }
}
