//! Variables: measurable quantities (name, unit) that inventory records readings of.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use stockmesh::pagination::Page;

use super::{Catalog, new_id, now, unique_violation, validate};
use crate::entity::variable;
use crate::error::{Error, Result};

/// A variable to create, as the client sent it.
#[derive(Debug, Clone, Default)]
pub struct NewVariable {
    pub name: String,
    pub unit: String,
}

/// The values a ListVariables page token is bound to.
pub const VARIABLES_FINGERPRINT: [&str; 1] = ["variables"];

impl Catalog {
    pub async fn create_variable(&self, new: NewVariable) -> Result<variable::Model> {
        let name = validate::name("name", &new.name)?;
        let row = variable::ActiveModel {
            id: Set(new_id()),
            name: Set(name.clone()),
            unit: Set(validate::unit("unit", &new.unit)?),
            created_at: Set(now()),
        };
        row.insert(&self.db).await.map_err(|e| {
            if unique_violation(&e, "variables", &["name"]).is_some() {
                Error::AlreadyExists {
                    what: "variable",
                    field: "name",
                    value: name,
                }
            } else {
                e.into()
            }
        })
    }

    pub async fn get_variable(&self, id: &str) -> Result<variable::Model> {
        let id = validate::id("id", id)?;
        variable::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or_else(|| Error::NotFound(format!("variable {id:?} not found")))
    }

    /// One page of variables ordered by id; `page` parsed with [`VARIABLES_FINGERPRINT`].
    pub async fn list_variables(&self, page: &Page) -> Result<(Vec<variable::Model>, String)> {
        let mut query = variable::Entity::find();
        if let Some(after) = &page.after {
            query = query.filter(variable::Column::Id.gt(after.as_str()));
        }
        let mut rows = query
            .order_by_asc(variable::Column::Id)
            .limit(page.fetch_limit())
            .all(&self.db)
            .await?;
        let next = page.finish(&mut rows, |r| &r.id);
        Ok((rows, next))
    }
}
