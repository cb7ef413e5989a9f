//! Warehouses: validated create, read, list and masked update.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use stockmesh::pagination::Page;

use crate::entity::warehouse;
use crate::error::{Error, Result};
use crate::txn::now;

/// Longest accepted name and address.
const MAX_NAME: usize = 200;
const MAX_ADDRESS: usize = 1000;

/// The settable fields of a warehouse.
#[derive(Debug, Clone)]
pub struct WarehouseFields {
    pub name: String,
    pub address: String,
    pub latitude: f64,
    pub longitude: f64,
    pub capacity: i64,
}

/// Fields an update may name in its mask.
const MUTABLE: [&str; 5] = ["name", "address", "latitude", "longitude", "capacity"];

pub async fn create(db: &DatabaseConnection, fields: WarehouseFields) -> Result<warehouse::Model> {
    let fields = validate(fields)?;
    let at = now();
    let model = warehouse::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        name: Set(fields.name.clone()),
        address: Set(fields.address),
        latitude: Set(fields.latitude),
        longitude: Set(fields.longitude),
        capacity: Set(fields.capacity),
        created_at: Set(at),
        updated_at: Set(at),
    };
    model
        .insert(db)
        .await
        .map_err(|e| name_taken(e, &fields.name))
}

pub async fn get(db: &DatabaseConnection, id: &str) -> Result<warehouse::Model> {
    if id.is_empty() {
        return Err(Error::invalid("id", "is required"));
    }
    find(db, id).await
}

/// The warehouse `id`, or NOT_FOUND naming it.
pub async fn find(db: &impl sea_orm::ConnectionTrait, id: &str) -> Result<warehouse::Model> {
    warehouse::Entity::find_by_id(id.to_string())
        .one(db)
        .await?
        .ok_or_else(|| Error::NotFound(format!("warehouse {id} does not exist")))
}

/// One page of warehouses in id order, and the next page token.
pub async fn list(db: &DatabaseConnection, page: &Page) -> Result<(Vec<warehouse::Model>, String)> {
    let mut query = warehouse::Entity::find()
        .order_by_asc(warehouse::Column::Id)
        .limit(page.fetch_limit());
    if let Some(after) = &page.after {
        query = query.filter(warehouse::Column::Id.gt(after.as_str()));
    }
    let mut rows = query.all(db).await?;
    let next = page.finish(&mut rows, |w| &w.id);
    Ok((rows, next))
}

/// Applies the fields named in `mask`. An empty mask is refused (as for products): treating
/// it as "every field" would silently zero the coordinates of a partial update and reroute
/// orders. `*` names every mutable field. (REST PATCH without a mask gets one from the
/// gateway, built from the fields present in the body.)
pub async fn update(
    db: &DatabaseConnection,
    id: &str,
    fields: WarehouseFields,
    mask: &[String],
) -> Result<warehouse::Model> {
    if id.is_empty() {
        return Err(Error::invalid("warehouse.id", "is required"));
    }
    let paths: Vec<&str> = if mask.is_empty() {
        return Err(Error::invalid(
            "update_mask",
            format!(
                "required; name the fields to change ({})",
                MUTABLE.join(", ")
            ),
        ));
    } else if mask.iter().any(|p| p == "*") {
        MUTABLE.to_vec()
    } else {
        mask.iter().map(String::as_str).collect()
    };
    for p in &paths {
        if !MUTABLE.contains(p) {
            return Err(Error::invalid(
                "update_mask",
                format!(
                    "unknown or immutable field {p:?}; allowed: {}",
                    MUTABLE.join(", ")
                ),
            ));
        }
    }
    let current = find(db, id).await?;
    let merged = WarehouseFields {
        name: pick(&paths, "name", fields.name, current.name.clone()),
        address: pick(&paths, "address", fields.address, current.address.clone()),
        latitude: pick(&paths, "latitude", fields.latitude, current.latitude),
        longitude: pick(&paths, "longitude", fields.longitude, current.longitude),
        capacity: pick(&paths, "capacity", fields.capacity, current.capacity),
    };
    let merged = validate(merged)?;
    let mut model = current.into_active_model();
    model.name = Set(merged.name.clone());
    model.address = Set(merged.address);
    model.latitude = Set(merged.latitude);
    model.longitude = Set(merged.longitude);
    model.capacity = Set(merged.capacity);
    model.updated_at = Set(now());
    model
        .update(db)
        .await
        .map_err(|e| name_taken(e, &merged.name))
}

fn pick<T>(paths: &[&str], name: &str, new: T, old: T) -> T {
    if paths.contains(&name) { new } else { old }
}

fn name_taken(e: sea_orm::DbErr, name: &str) -> Error {
    if stockmesh::error::is_unique_violation(&e) {
        Error::AlreadyExists(format!("a warehouse named {name:?} already exists"))
    } else {
        Error::Db(e)
    }
}

/// Trims text fields and checks ranges.
pub fn validate(mut f: WarehouseFields) -> Result<WarehouseFields> {
    f.name = f.name.trim().to_string();
    f.address = f.address.trim().to_string();
    if f.name.is_empty() {
        return Err(Error::invalid("name", "is required"));
    }
    if f.name.chars().count() > MAX_NAME {
        return Err(Error::invalid(
            "name",
            format!("at most {MAX_NAME} characters"),
        ));
    }
    if f.address.chars().count() > MAX_ADDRESS {
        return Err(Error::invalid(
            "address",
            format!("at most {MAX_ADDRESS} characters"),
        ));
    }
    if !f.latitude.is_finite() || !(-90.0..=90.0).contains(&f.latitude) {
        return Err(Error::invalid("latitude", "must be between -90 and 90"));
    }
    if !f.longitude.is_finite() || !(-180.0..=180.0).contains(&f.longitude) {
        return Err(Error::invalid("longitude", "must be between -180 and 180"));
    }
    if f.capacity < 0 {
        return Err(Error::invalid(
            "capacity",
            "must be ≥ 0 (0 means unbounded)",
        ));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> WarehouseFields {
        WarehouseFields {
            name: " North ".into(),
            address: "1 Road".into(),
            latitude: 45.0,
            longitude: -73.0,
            capacity: 0,
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(
            validate(fields()).map(|f| f.name).ok(),
            Some("North".into())
        );
        type Break = fn(&mut WarehouseFields);
        let cases: [(Break, &str); 6] = [
            (|f| f.name = "  ".into(), "name"),
            (|f| f.latitude = 90.5, "latitude"),
            (|f| f.latitude = f64::NAN, "latitude"),
            (|f| f.longitude = -180.01, "longitude"),
            (|f| f.longitude = f64::INFINITY, "longitude"),
            (|f| f.capacity = -1, "capacity"),
        ];
        for (break_it, field) in cases {
            let mut f = fields();
            break_it(&mut f);
            match validate(f) {
                Err(Error::Invalid { field: got, .. }) => assert_eq!(got, field),
                other => panic!("expected invalid {field}, got {other:?}"),
            }
        }
    }
}
