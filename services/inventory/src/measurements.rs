//! Measurements: readings of a ProductService variable (temperature, humidity…) taken in
//! a warehouse, optionally about one product. Listed newest first (by id, which is a
//! UUIDv7 and so follows recording order).

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use stockmesh::pagination::Page;

use crate::catalog::Catalog;
use crate::entity::measurement;
use crate::error::{Error, Result};
use crate::stock::require_key;
use crate::txn::now;
use crate::warehouses;

/// A RecordMeasurement request, decoded.
#[derive(Debug, Clone)]
pub struct NewMeasurement {
    pub variable_id: String,
    pub warehouse_id: String,
    pub product_id: Option<String>,
    pub value: f64,
    /// `None`: now.
    pub measured_at: Option<DateTime<Utc>>,
}

/// Filters of ListMeasurements; empty strings mean "any".
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub variable_id: String,
    pub warehouse_id: String,
    pub product_id: String,
}

impl Filters {
    /// What the page token is bound to.
    pub fn fingerprint(&self) -> [&str; 3] {
        [&self.variable_id, &self.warehouse_id, &self.product_id]
    }
}

pub async fn record(
    db: &DatabaseConnection,
    catalog: &Catalog,
    m: NewMeasurement,
) -> Result<measurement::Model> {
    require_key("variable_id", &m.variable_id)?;
    require_key("warehouse_id", &m.warehouse_id)?;
    let product_id = match m.product_id {
        Some(p) if !p.is_empty() => {
            require_key("product_id", &p)?;
            Some(p)
        }
        _ => None,
    };
    if !m.value.is_finite() {
        return Err(Error::invalid("value", "must be a finite number"));
    }
    warehouses::find(db, &m.warehouse_id).await?;
    catalog.require_variable(&m.variable_id).await?;
    let at = now();
    let row = measurement::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        variable_id: Set(m.variable_id),
        warehouse_id: Set(m.warehouse_id),
        product_id: Set(product_id),
        value: Set(m.value),
        // Microseconds, as PostgreSQL stores them, so both backends answer alike.
        measured_at: Set(m.measured_at.map_or(at, |t| t.trunc_subsecs(6))),
        created_at: Set(at),
    };
    Ok(row.insert(db).await?)
}

/// One page of readings, newest first, and the next page token.
pub async fn list(
    db: &DatabaseConnection,
    filters: &Filters,
    page: &Page,
) -> Result<(Vec<measurement::Model>, String)> {
    let mut query = measurement::Entity::find()
        .order_by_desc(measurement::Column::Id)
        .limit(page.fetch_limit());
    if !filters.variable_id.is_empty() {
        query = query.filter(measurement::Column::VariableId.eq(filters.variable_id.as_str()));
    }
    if !filters.warehouse_id.is_empty() {
        query = query.filter(measurement::Column::WarehouseId.eq(filters.warehouse_id.as_str()));
    }
    if !filters.product_id.is_empty() {
        query = query.filter(measurement::Column::ProductId.eq(filters.product_id.as_str()));
    }
    if let Some(after) = &page.after {
        query = query.filter(measurement::Column::Id.lt(after.as_str()));
    }
    let mut rows = query.all(db).await?;
    let next = page.finish(&mut rows, |m| &m.id);
    Ok((rows, next))
}
