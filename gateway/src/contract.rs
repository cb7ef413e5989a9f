//! The contract annotations of the protos, read from the embedded descriptor set: who may
//! call each RPC (`stockmesh.options.v1.access`), and what a service enforces on each
//! field (`google.api.field_behavior`, `stockmesh.options.v1.rules`).
//!
//! This is the one place the gateway learns them from. The edge ([`crate::edge`]) refuses
//! a call that needs a caller and carries no token before its body is read, and the
//! OpenAPI document ([`crate::openapi`]) derives `security`, `required`, `readOnly`,
//! formats and bounds from the same annotations — so the document and the edge cannot
//! disagree about which RPC is public.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, FieldDescriptor, MethodDescriptor, ReflectMessage, Value};

const ACCESS: &str = "stockmesh.options.v1.access";
const RULES: &str = "stockmesh.options.v1.rules";
const FIELD_BEHAVIOR: &str = "google.api.field_behavior";

/// Who may call an RPC (`stockmesh.options.v1.Access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone; a token, when sent, must still be valid.
    Public,
    /// Any valid token; the service may demand a role.
    SignedIn,
    /// Mesh service identities and ADMIN (the service checks which).
    Internal,
}

impl Access {
    /// Whether a call without a token is refused at the edge.
    pub fn needs_caller(self) -> bool {
        self != Access::Public
    }

    /// The access of `method`. Not annotated counts as signed in: a forgotten annotation
    /// must not open an RPC.
    pub fn of(method: &MethodDescriptor) -> Access {
        let Some(ext) = method.parent_pool().get_extension_by_name(ACCESS) else {
            return Access::SignedIn;
        };
        let options = method.options();
        if !options.has_extension(&ext) {
            return Access::SignedIn;
        }
        match options.get_extension(&ext).as_ref() {
            Value::EnumNumber(1) => Access::Public,
            Value::EnumNumber(3) => Access::Internal,
            _ => Access::SignedIn,
        }
    }
}

/// The access of every method of `pool`, by gRPC path `/pkg.Service/Method`.
pub fn access_table(pool: &DescriptorPool) -> HashMap<String, Access> {
    pool.services()
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .map(|m| {
            let path = format!("/{}/{}", m.parent_service().full_name(), m.name());
            (path, Access::of(&m))
        })
        .collect()
}

/// `google.api.FieldBehavior` values the gateway acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    Required,
    OutputOnly,
    Immutable,
}

/// The field behaviours of `field`.
pub fn behaviors(field: &FieldDescriptor) -> Vec<Behavior> {
    let Some(ext) = field.parent_pool().get_extension_by_name(FIELD_BEHAVIOR) else {
        return Vec::new();
    };
    let options = field.options();
    if !options.has_extension(&ext) {
        return Vec::new();
    }
    let value = options.get_extension(&ext);
    let numbers: Vec<i32> = match value.as_ref() {
        Value::List(items) => items.iter().filter_map(Value::as_enum_number).collect(),
        Value::EnumNumber(n) => vec![*n],
        _ => Vec::new(),
    };
    numbers
        .into_iter()
        .filter_map(|n| match n {
            2 => Some(Behavior::Required),
            3 => Some(Behavior::OutputOnly),
            5 => Some(Behavior::Immutable),
            _ => None,
        })
        .collect()
}

pub fn is_required(field: &FieldDescriptor) -> bool {
    behaviors(field).contains(&Behavior::Required)
}

pub fn is_output_only(field: &FieldDescriptor) -> bool {
    behaviors(field).contains(&Behavior::OutputOnly)
}

/// What a service enforces on a field (`stockmesh.options.v1.FieldRules`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    pub format: Option<String>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub pattern: Option<String>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub not_equal: Option<f64>,
    pub not_pattern: Option<String>,
}

/// The rules of `field`; all `None` when it has none.
pub fn rules(field: &FieldDescriptor) -> Rules {
    let Some(ext) = field.parent_pool().get_extension_by_name(RULES) else {
        return Rules::default();
    };
    let options = field.options();
    if !options.has_extension(&ext) {
        return Rules::default();
    }
    let value = options.get_extension(&ext);
    let Value::Message(m) = value.as_ref() else {
        return Rules::default();
    };
    let get = |name: &str| {
        m.descriptor()
            .get_field_by_name(name)
            .filter(|f| m.has_field(f))
            .map(|f| m.get_field(&f).into_owned())
    };
    let text = |name: &str| {
        get(name)
            .and_then(|v| v.as_str().map(str::to_string))
            .filter(|s| !s.is_empty())
    };
    let count = |name: &str| get(name).and_then(|v| v.as_u32()).map(u64::from);
    let number = |name: &str| get(name).and_then(|v| v.as_f64());
    Rules {
        format: text("format"),
        min_length: count("min_length"),
        max_length: count("max_length"),
        minimum: number("minimum"),
        maximum: number("maximum"),
        pattern: text("pattern"),
        min_items: count("min_items"),
        max_items: count("max_items"),
        not_equal: number("not_equal"),
        not_pattern: text("not_pattern"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> DescriptorPool {
        DescriptorPool::decode(stockmesh::proto::FILE_DESCRIPTOR_SET).unwrap()
    }

    #[test]
    fn every_rpc_is_annotated_and_agrees_with_its_comment() {
        let pool = pool();
        let ext = pool.get_extension_by_name(ACCESS).unwrap();
        for target in stockmesh::Target::SERVICES {
            let service = pool.get_service_by_name(target.grpc_service()).unwrap();
            for m in service.methods() {
                assert!(
                    m.options().has_extension(&ext),
                    "{} has no (stockmesh.options.v1.access)",
                    m.full_name()
                );
            }
        }
        let table = access_table(&pool);
        assert_eq!(
            table["/stockmesh.products.v1.ProductService/GetProduct"],
            Access::Public
        );
        assert_eq!(
            table["/stockmesh.products.v1.ProductService/CreateProduct"],
            Access::SignedIn
        );
        assert_eq!(
            table["/stockmesh.inventory.v1.InventoryService/Reserve"],
            Access::Internal
        );
        assert_eq!(
            table["/stockmesh.auth.v1.AuthService/Login"],
            Access::Public
        );
    }

    #[test]
    fn behaviours_and_rules_are_read() {
        let pool = pool();
        let req = pool
            .get_message_by_name("stockmesh.products.v1.CreateProductRequest")
            .unwrap();
        let sku = req.get_field_by_name("sku").unwrap();
        assert!(is_required(&sku));
        assert!(rules(&sku).pattern.unwrap().contains("{1,64}"));
        let description = req.get_field_by_name("description").unwrap();
        assert_eq!(rules(&description).max_length, Some(10000));
        let price = req.get_field_by_name("price_cents").unwrap();
        assert!(!is_required(&price));
        assert_eq!(rules(&price).minimum, Some(0.0));
        let product = pool
            .get_message_by_name("stockmesh.products.v1.Product")
            .unwrap();
        let id = product.get_field_by_name("id").unwrap();
        assert!(is_output_only(&id));
        assert_eq!(rules(&id).format.as_deref(), Some("uuid"));
        let description = product.get_field_by_name("description").unwrap();
        assert_eq!(behaviors(&description), Vec::new());
    }
}
