//! `google.protobuf.FieldMask` handling for the Update RPCs: which fields of the sent
//! resource the client means to change.
//!
//! Rules (AIP-134, minus nested paths): the mask is required (an update without one would
//! be a full overwrite, which clients rarely mean); `*` names every mutable field; paths
//! are accepted in snake_case (`price_cents`, as in the proto) or lowerCamelCase
//! (`priceCents`, as in the JSON mapping); `id` and the timestamps are output-only, and
//! naming one, or an unknown field, is INVALID_ARGUMENT naming the path.

use prost_types::FieldMask;
use stockmesh::proto::products::v1::{Product, Supplier};

use crate::catalog::{ProductPatch, SupplierPatch};
use crate::error::{Error, Result};

const PRODUCT_FIELDS: &[&str] = &[
    "sku",
    "name",
    "description",
    "price_cents",
    "currency",
    "supplier_id",
];
const SUPPLIER_FIELDS: &[&str] = &["name", "contact_email", "phone"];
const OUTPUT_ONLY: &[&str] = &["id", "created_at", "updated_at"];

/// `priceCents` → `price_cents`; snake_case passes unchanged.
fn snake_case(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for c in path.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The mutable fields `mask` names, each once, as spelled in `mutable`.
pub fn resolve(mask: Option<&FieldMask>, mutable: &[&'static str]) -> Result<Vec<&'static str>> {
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        return Err(Error::invalid("update_mask", "required"));
    }
    let mut fields = Vec::new();
    for path in paths {
        let path = path.trim();
        if path == "*" {
            return Ok(mutable.to_vec());
        }
        let field = snake_case(path);
        if let Some(known) = mutable.iter().find(|f| **f == field) {
            if !fields.contains(known) {
                fields.push(*known);
            }
        } else if OUTPUT_ONLY.contains(&field.as_str()) {
            return Err(Error::invalid(
                "update_mask",
                format!("{path:?} cannot be changed"),
            ));
        } else {
            return Err(Error::invalid(
                "update_mask",
                format!("unknown field {path:?}; allowed: {}", mutable.join(", ")),
            ));
        }
    }
    Ok(fields)
}

/// The patch that applies the fields of `product` named by `mask`.
pub fn product_patch(product: &Product, mask: Option<&FieldMask>) -> Result<ProductPatch> {
    let mut patch = ProductPatch::default();
    for field in resolve(mask, PRODUCT_FIELDS)? {
        match field {
            "sku" => patch.sku = Some(product.sku.clone()),
            "name" => patch.name = Some(product.name.clone()),
            "description" => patch.description = Some(product.description.clone()),
            "price_cents" => patch.price_cents = Some(product.price_cents),
            "currency" => patch.currency = Some(product.currency.clone()),
            _ => patch.supplier_id = Some(product.supplier_id.clone()),
        }
    }
    Ok(patch)
}

/// The patch that applies the fields of `supplier` named by `mask`.
pub fn supplier_patch(supplier: &Supplier, mask: Option<&FieldMask>) -> Result<SupplierPatch> {
    let mut patch = SupplierPatch::default();
    for field in resolve(mask, SUPPLIER_FIELDS)? {
        match field {
            "name" => patch.name = Some(supplier.name.clone()),
            "contact_email" => patch.contact_email = Some(supplier.contact_email.clone()),
            _ => patch.phone = Some(supplier.phone.clone()),
        }
    }
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(paths: &[&str]) -> FieldMask {
        FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn err(paths: &[&str]) -> String {
        resolve(Some(&mask(paths)), PRODUCT_FIELDS)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn required() {
        assert_eq!(
            resolve(None, PRODUCT_FIELDS).unwrap_err().to_string(),
            "update_mask: required"
        );
        assert_eq!(err(&[]), "update_mask: required");
    }

    #[test]
    fn snake_and_camel_case_dedupe_and_star() {
        let fields = resolve(
            Some(&mask(&["price_cents", "priceCents", "supplierId"])),
            PRODUCT_FIELDS,
        )
        .unwrap();
        assert_eq!(fields, ["price_cents", "supplier_id"]);
        assert_eq!(
            resolve(Some(&mask(&["*"])), PRODUCT_FIELDS).unwrap(),
            PRODUCT_FIELDS
        );
    }

    #[test]
    fn output_only_and_unknown_paths_are_named() {
        assert_eq!(
            err(&["name", "id"]),
            "update_mask: \"id\" cannot be changed"
        );
        assert_eq!(
            err(&["createdAt"]),
            "update_mask: \"createdAt\" cannot be changed"
        );
        assert!(err(&["colour"]).starts_with("update_mask: unknown field \"colour\""));
    }

    #[test]
    fn patch_takes_only_masked_fields() {
        let product = Product {
            name: "New".into(),
            sku: "IGNORED".into(),
            price_cents: 5,
            ..Default::default()
        };
        let patch = product_patch(&product, Some(&mask(&["name", "price_cents"]))).unwrap();
        assert_eq!(patch.name.as_deref(), Some("New"));
        assert_eq!(patch.price_cents, Some(5));
        assert!(patch.sku.is_none() && patch.currency.is_none() && patch.supplier_id.is_none());
    }
}
