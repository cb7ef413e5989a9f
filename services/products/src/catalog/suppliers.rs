//! Suppliers: create, read, list, patch, delete (refused while products reference them).

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use stockmesh::error::is_foreign_key_violation;
use stockmesh::pagination::Page;

use super::{Catalog, new_id, now, validate};
use crate::entity::supplier;
use crate::error::{Error, Result};

/// A supplier to create, as the client sent it.
#[derive(Debug, Clone, Default)]
pub struct NewSupplier {
    pub name: String,
    /// Empty when unknown.
    pub contact_email: String,
    /// Empty when unknown.
    pub phone: String,
}

/// Changes to a supplier: `Some` fields change (`Some("")` clears email or phone).
#[derive(Debug, Clone, Default)]
pub struct SupplierPatch {
    pub name: Option<String>,
    pub contact_email: Option<String>,
    pub phone: Option<String>,
}

/// The values a ListSuppliers page token is bound to.
pub const SUPPLIERS_FINGERPRINT: [&str; 1] = ["suppliers"];

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("supplier {id:?} not found"))
}

impl Catalog {
    pub async fn create_supplier(&self, new: NewSupplier) -> Result<supplier::Model> {
        let at = now();
        let row = supplier::ActiveModel {
            id: Set(new_id()),
            name: Set(validate::name("name", &new.name)?),
            contact_email: Set(validate::email("contact_email", &new.contact_email)?),
            phone: Set(validate::phone("phone", &new.phone)?),
            created_at: Set(at),
            updated_at: Set(at),
        };
        Ok(row.insert(&self.db).await?)
    }

    pub async fn get_supplier(&self, id: &str) -> Result<supplier::Model> {
        let id = validate::id("id", id)?;
        supplier::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// One page of suppliers ordered by id; `page` parsed with [`SUPPLIERS_FINGERPRINT`].
    pub async fn list_suppliers(&self, page: &Page) -> Result<(Vec<supplier::Model>, String)> {
        let mut query = supplier::Entity::find();
        if let Some(after) = &page.after {
            query = query.filter(supplier::Column::Id.gt(after.as_str()));
        }
        let mut rows = query
            .order_by_asc(supplier::Column::Id)
            .limit(page.fetch_limit())
            .all(&self.db)
            .await?;
        let next = page.finish(&mut rows, |r| &r.id);
        Ok((rows, next))
    }

    pub async fn update_supplier(&self, id: &str, patch: SupplierPatch) -> Result<supplier::Model> {
        let id = validate::id("supplier.id", id)?;
        let mut row = supplier::ActiveModel {
            id: sea_orm::ActiveValue::Unchanged(id.to_string()),
            ..Default::default()
        };
        if let Some(name) = patch.name {
            row.name = Set(validate::name("supplier.name", &name)?);
        }
        if let Some(email) = patch.contact_email {
            row.contact_email = Set(validate::email("supplier.contact_email", &email)?);
        }
        if let Some(phone) = patch.phone {
            row.phone = Set(validate::phone("supplier.phone", &phone)?);
        }
        row.updated_at = Set(now());
        match row.update(&self.db).await {
            Ok(model) => Ok(model),
            Err(DbErr::RecordNotUpdated) => Err(not_found(id)),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes supplier `id`; FAILED_PRECONDITION while any product references it (the
    /// foreign key refuses the delete, so this holds even against concurrent writes).
    pub async fn delete_supplier(&self, id: &str) -> Result<()> {
        let id = validate::id("id", id)?;
        match supplier::Entity::delete_by_id(id).exec(&self.db).await {
            Ok(done) if done.rows_affected == 0 => Err(not_found(id)),
            Ok(_) => Ok(()),
            Err(e) if is_foreign_key_violation(&e) => Err(Error::FailedPrecondition(format!(
                "supplier {id:?} is still referenced by products; remove it from them first"
            ))),
            Err(e) => Err(e.into()),
        }
    }
}
