//! Products: create, read, list, patch, delete, batch read.

use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::LikeExpr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use stockmesh::error::is_foreign_key_violation;
use stockmesh::pagination::Page;

use super::{Catalog, new_id, now, unique_violation, validate};
use crate::entity::{product, supplier};
use crate::error::{Error, Result};

/// Most ids one BatchGetProducts may name.
pub const BATCH_GET_MAX: usize = 500;
/// Missing ids listed in a NOT_FOUND message; the rest are counted (the message travels
/// in a header, which must stay small).
const MISSING_IDS_SHOWN: usize = 20;

/// A product to create, as the client sent it (validated by [`Catalog::create_product`]).
#[derive(Debug, Clone, Default)]
pub struct NewProduct {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    /// Empty means [`validate::DEFAULT_CURRENCY`].
    pub currency: String,
    /// `None` or empty: no supplier.
    pub supplier_id: Option<String>,
}

/// Changes to a product: `Some` fields change, `None` fields stay.
#[derive(Debug, Clone, Default)]
pub struct ProductPatch {
    pub sku: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub price_cents: Option<i64>,
    pub currency: Option<String>,
    /// `Some("")` removes the supplier.
    pub supplier_id: Option<String>,
}

/// ListProducts filters; empty strings filter nothing.
#[derive(Debug, Clone, Default)]
pub struct ProductFilter {
    /// Case-insensitive substring of the name.
    pub name_contains: String,
    pub supplier_id: String,
}

impl ProductFilter {
    /// The values a page token is bound to (see [`Page::parse`]).
    pub fn fingerprint(&self) -> [&str; 3] {
        ["products", &self.name_contains, &self.supplier_id]
    }
}

/// `Some(id)` unless the id is absent or empty (both mean "no supplier").
fn supplier_ref(id: Option<String>) -> Option<String> {
    id.filter(|id| !id.is_empty())
}

impl Catalog {
    pub async fn create_product(&self, new: NewProduct) -> Result<product::Model> {
        let sku = validate::sku("sku", &new.sku)?;
        let name = validate::name("name", &new.name)?;
        let description = validate::description("description", &new.description)?;
        let price_cents = validate::price_cents("price_cents", new.price_cents)?;
        let currency = validate::currency("currency", &new.currency)?;
        let supplier_id = supplier_ref(new.supplier_id);
        if let Some(id) = &supplier_id {
            validate::id("supplier_id", id)?;
            self.require_supplier(id).await?;
        }
        let at = now();
        let row = product::ActiveModel {
            id: Set(new_id()),
            name_folded: Set(name.to_lowercase()),
            sku: Set(sku),
            name: Set(name),
            description: Set(description),
            price_cents: Set(price_cents),
            currency: Set(currency),
            supplier_id: Set(supplier_id),
            created_at: Set(at),
            updated_at: Set(at),
        };
        let written = row.clone();
        row.insert(&self.db)
            .await
            .map_err(|e| write_error(e, &written))
    }

    pub async fn get_product(&self, id: &str) -> Result<product::Model> {
        let id = validate::id("id", id)?;
        if let Some(p) = self.cache.get(id) {
            return Ok(p);
        }
        let ticket = self.cache.ticket();
        let product = product::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or_else(|| Error::NotFound(format!("product {id:?} not found")))?;
        self.cache.put(ticket, [&product]);
        Ok(product)
    }

    pub async fn get_product_by_name(&self, name: &str) -> Result<product::Model> {
        if name.is_empty() {
            return Err(Error::invalid("name", "required"));
        }
        product::Entity::find()
            .filter(product::Column::Name.eq(name))
            .one(&self.db)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no product named {name:?}")))
    }

    /// One page of products ordered by id, and the next page token ("" on the last page).
    /// `page` must have been parsed with [`ProductFilter::fingerprint`].
    pub async fn list_products(
        &self,
        filter: &ProductFilter,
        page: &Page,
    ) -> Result<(Vec<product::Model>, String)> {
        if filter.name_contains.chars().count() > validate::NAME_MAX {
            return Err(Error::invalid(
                "name_contains",
                format!("must be at most {} characters", validate::NAME_MAX),
            ));
        }
        let mut query = product::Entity::find();
        if !filter.name_contains.is_empty() {
            let pattern = format!(
                "%{}%",
                validate::escape_like(&filter.name_contains.to_lowercase())
            );
            query =
                query.filter(product::Column::NameFolded.like(LikeExpr::new(pattern).escape('\\')));
        }
        if !filter.supplier_id.is_empty() {
            query = query.filter(product::Column::SupplierId.eq(filter.supplier_id.as_str()));
        }
        if let Some(after) = &page.after {
            query = query.filter(product::Column::Id.gt(after.as_str()));
        }
        let mut rows = query
            .order_by_asc(product::Column::Id)
            .limit(page.fetch_limit())
            .all(&self.db)
            .await?;
        let next = page.finish(&mut rows, |r| &r.id);
        Ok((rows, next))
    }

    /// Applies `patch` to product `id`. Only the named columns are written, so concurrent
    /// patches of different fields do not undo each other.
    pub async fn update_product(&self, id: &str, patch: ProductPatch) -> Result<product::Model> {
        let id = validate::id("product.id", id)?;
        let mut row = product::ActiveModel {
            id: sea_orm::ActiveValue::Unchanged(id.to_string()),
            ..Default::default()
        };
        if let Some(sku) = patch.sku {
            row.sku = Set(validate::sku("product.sku", &sku)?);
        }
        if let Some(name) = patch.name {
            let name = validate::name("product.name", &name)?;
            row.name_folded = Set(name.to_lowercase());
            row.name = Set(name);
        }
        if let Some(description) = patch.description {
            row.description = Set(validate::description("product.description", &description)?);
        }
        if let Some(price) = patch.price_cents {
            row.price_cents = Set(validate::price_cents("product.price_cents", price)?);
        }
        if let Some(currency) = patch.currency {
            row.currency = Set(validate::currency("product.currency", &currency)?);
        }
        if let Some(supplier_id) = patch.supplier_id {
            let supplier_id = supplier_ref(Some(supplier_id));
            if let Some(sid) = &supplier_id {
                validate::id("product.supplier_id", sid)?;
                self.require_supplier(sid).await?;
            }
            row.supplier_id = Set(supplier_id);
        }
        row.updated_at = Set(now());
        let written = row.clone();
        let result = row.update(&self.db).await;
        self.cache.invalidate(id);
        match result {
            Ok(model) => Ok(model),
            Err(DbErr::RecordNotUpdated) => {
                Err(Error::NotFound(format!("product {id:?} not found")))
            }
            Err(e) => Err(write_error(e, &written)),
        }
    }

    pub async fn delete_product(&self, id: &str) -> Result<()> {
        let id = validate::id("id", id)?;
        let done = product::Entity::delete_by_id(id).exec(&self.db).await;
        self.cache.invalidate(id);
        if done?.rows_affected == 0 {
            return Err(Error::NotFound(format!("product {id:?} not found")));
        }
        Ok(())
    }

    /// The products with `ids`, once each, in the order of their first mention. Any id
    /// that does not exist fails the whole call with NOT_FOUND naming the missing ids.
    pub async fn batch_get_products(&self, ids: &[String]) -> Result<Vec<product::Model>> {
        if ids.is_empty() {
            return Err(Error::invalid("ids", "at least one id is required"));
        }
        if ids.len() > BATCH_GET_MAX {
            return Err(Error::invalid(
                "ids",
                format!("at most {BATCH_GET_MAX} ids per call; got {}", ids.len()),
            ));
        }
        let mut seen = HashSet::with_capacity(ids.len());
        let mut wanted = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            validate::id(&format!("ids[{i}]"), id)?;
            if seen.insert(id.as_str()) {
                wanted.push(id.as_str());
            }
        }
        let mut found: HashMap<String, product::Model> = HashMap::with_capacity(wanted.len());
        let mut unknown = Vec::new();
        for id in &wanted {
            match self.cache.get(id) {
                Some(p) => {
                    found.insert(p.id.clone(), p);
                }
                None => unknown.push(*id),
            }
        }
        if !unknown.is_empty() {
            let ticket = self.cache.ticket();
            let read = product::Entity::find()
                .filter(product::Column::Id.is_in(unknown))
                .all(&self.db)
                .await?;
            self.cache.put(ticket, &read);
            found.extend(read.into_iter().map(|p| (p.id.clone(), p)));
        }
        let mut products = Vec::with_capacity(wanted.len());
        let mut missing = Vec::new();
        for id in wanted {
            match found.remove(id) {
                Some(p) => products.push(p),
                None => missing.push(id),
            }
        }
        if !missing.is_empty() {
            return Err(Error::NotFound(missing_message(&missing)));
        }
        Ok(products)
    }

    /// FAILED_PRECONDITION unless supplier `id` exists. The foreign key still guards the
    /// race with a concurrent delete; this gives the common case a clear message.
    async fn require_supplier(&self, id: &str) -> Result<()> {
        let n = supplier::Entity::find_by_id(id).count(&self.db).await?;
        if n == 0 {
            return Err(unknown_supplier(id));
        }
        Ok(())
    }
}

fn unknown_supplier(id: &str) -> Error {
    Error::FailedPrecondition(format!("supplier_id: no supplier with id {id:?}"))
}

/// Translates a refused product write into the domain's error.
fn write_error(err: DbErr, row: &product::ActiveModel) -> Error {
    if let Some(field) = unique_violation(&err, "products", &["sku", "name"]) {
        let value = match field {
            "sku" => row.sku.try_as_ref(),
            _ => row.name.try_as_ref(),
        };
        return Error::AlreadyExists {
            what: "product",
            field,
            value: value.cloned().unwrap_or_default(),
        };
    }
    if is_foreign_key_violation(&err) {
        let id = row.supplier_id.try_as_ref().cloned().flatten();
        return unknown_supplier(id.as_deref().unwrap_or_default());
    }
    Error::Db(err)
}

fn missing_message(missing: &[&str]) -> String {
    let shown: Vec<String> = missing
        .iter()
        .take(MISSING_IDS_SHOWN)
        .map(|id| format!("{id:?}"))
        .collect();
    let mut msg = format!("products not found: {}", shown.join(", "));
    if missing.len() > MISSING_IDS_SHOWN {
        msg.push_str(&format!(" and {} more", missing.len() - MISSING_IDS_SHOWN));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ids_are_listed_then_counted() {
        assert_eq!(
            missing_message(&["a", "b"]),
            r#"products not found: "a", "b""#
        );
        let many: Vec<String> = (0..25).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let msg = missing_message(&refs);
        assert!(msg.ends_with("\"19\" and 5 more"), "{msg}");
    }
}
