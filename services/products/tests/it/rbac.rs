//! Who may call what: every ProductService RPC × {no token, bad token, customer, operator,
//! admin, service identity}, against the rules of API.md.
//!
//! Each call gets fresh fixtures (a product, an unreferenced supplier, a variable) and a
//! valid request, so an OK means "allowed and done" and any other code comes from the
//! access check. Denied deletes are also checked to have left their target in place.

use stockmesh::proto::products::v1 as pb;
use stockmesh::testing::Backend;
use tonic::Code::{self, InvalidArgument, NotFound, Ok as OK, PermissionDenied, Unauthenticated};

use crate::support::{Env, Who, unique};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    CreateProduct,
    GetProduct,
    GetProductByName,
    ListProducts,
    UpdateProduct,
    DeleteProduct,
    BatchGetProducts,
    CreateSupplier,
    GetSupplier,
    ListSuppliers,
    UpdateSupplier,
    DeleteSupplier,
    CreateVariable,
    GetVariable,
    ListVariables,
}

const UN: Code = Unauthenticated;
const PD: Code = PermissionDenied;
const PUBLIC: [Code; 6] = [OK, UN, OK, OK, OK, OK];
const STAFF: [Code; 6] = [UN, UN, PD, OK, OK, PD];

/// Expected code per caller, in the order of [`Who::ALL`]:
/// anonymous, bad token, customer, operator, admin, service.
const MATRIX: [(Rpc, [Code; 6]); 15] = [
    (Rpc::CreateProduct, STAFF),
    (Rpc::GetProduct, PUBLIC),
    (Rpc::GetProductByName, PUBLIC),
    (Rpc::ListProducts, PUBLIC),
    (Rpc::UpdateProduct, STAFF),
    (Rpc::DeleteProduct, [UN, UN, PD, PD, OK, PD]),
    (Rpc::BatchGetProducts, [UN, UN, PD, PD, OK, OK]),
    (Rpc::CreateSupplier, STAFF),
    (Rpc::GetSupplier, PUBLIC),
    (Rpc::ListSuppliers, PUBLIC),
    (Rpc::UpdateSupplier, STAFF),
    (Rpc::DeleteSupplier, STAFF),
    (Rpc::CreateVariable, STAFF),
    (Rpc::GetVariable, PUBLIC),
    (Rpc::ListVariables, PUBLIC),
];

fn code<T>(res: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match res {
        Ok(_) => OK,
        Err(s) => s.code(),
    }
}

fn mask(path: &str) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: vec![path.to_string()],
    })
}

/// Makes `rpc` as `who` with fresh fixtures; returns the status code.
async fn call(env: &Env, rpc: Rpc, who: Who) -> Code {
    let product = env.product("rbac", None).await;
    let supplier = env.supplier("rbac").await;
    let variable = env.variable("rbac").await;
    let mut c = env.client();
    let got = match rpc {
        Rpc::CreateProduct => code(
            c.create_product(env.req(
                who,
                pb::CreateProductRequest {
                    sku: unique("SKU"),
                    name: unique("new"),
                    price_cents: 1,
                    ..Default::default()
                },
            ))
            .await,
        ),
        Rpc::GetProduct => code(
            c.get_product(env.req(
                who,
                pb::GetProductRequest {
                    id: product.id.clone(),
                },
            ))
            .await,
        ),
        Rpc::GetProductByName => code(
            c.get_product_by_name(env.req(
                who,
                pb::GetProductByNameRequest {
                    name: product.name.clone(),
                },
            ))
            .await,
        ),
        Rpc::ListProducts => code(
            c.list_products(env.req(who, pb::ListProductsRequest::default()))
                .await,
        ),
        Rpc::UpdateProduct => code(
            c.update_product(env.req(
                who,
                pb::UpdateProductRequest {
                    product: Some(pb::Product {
                        id: product.id.clone(),
                        price_cents: 99,
                        ..Default::default()
                    }),
                    update_mask: mask("price_cents"),
                },
            ))
            .await,
        ),
        Rpc::DeleteProduct => code(
            c.delete_product(env.req(
                who,
                pb::DeleteProductRequest {
                    id: product.id.clone(),
                },
            ))
            .await,
        ),
        Rpc::BatchGetProducts => code(
            c.batch_get_products(env.req(
                who,
                pb::BatchGetProductsRequest {
                    ids: vec![product.id.clone()],
                },
            ))
            .await,
        ),
        Rpc::CreateSupplier => code(
            c.create_supplier(env.req(
                who,
                pb::CreateSupplierRequest {
                    name: unique("supplier"),
                    ..Default::default()
                },
            ))
            .await,
        ),
        Rpc::GetSupplier => code(
            c.get_supplier(env.req(
                who,
                pb::GetSupplierRequest {
                    id: supplier.id.clone(),
                },
            ))
            .await,
        ),
        Rpc::ListSuppliers => code(
            c.list_suppliers(env.req(who, pb::ListSuppliersRequest::default()))
                .await,
        ),
        Rpc::UpdateSupplier => code(
            c.update_supplier(env.req(
                who,
                pb::UpdateSupplierRequest {
                    supplier: Some(pb::Supplier {
                        id: supplier.id.clone(),
                        phone: "+44 20 7946 0000".into(),
                        ..Default::default()
                    }),
                    update_mask: mask("phone"),
                },
            ))
            .await,
        ),
        Rpc::DeleteSupplier => code(
            c.delete_supplier(env.req(
                who,
                pb::DeleteSupplierRequest {
                    id: supplier.id.clone(),
                },
            ))
            .await,
        ),
        Rpc::CreateVariable => code(
            c.create_variable(env.req(
                who,
                pb::CreateVariableRequest {
                    name: unique("humidity"),
                    unit: "%".into(),
                },
            ))
            .await,
        ),
        Rpc::GetVariable => code(
            c.get_variable(env.req(
                who,
                pb::GetVariableRequest {
                    id: variable.id.clone(),
                },
            ))
            .await,
        ),
        Rpc::ListVariables => code(
            c.list_variables(env.req(who, pb::ListVariablesRequest::default()))
                .await,
        ),
    };

    // A delete happened exactly when it was allowed.
    let after = match rpc {
        Rpc::DeleteProduct => Some(code(
            c.get_product(env.admin(pb::GetProductRequest { id: product.id }))
                .await,
        )),
        Rpc::DeleteSupplier => Some(code(
            c.get_supplier(env.admin(pb::GetSupplierRequest { id: supplier.id }))
                .await,
        )),
        _ => None,
    };
    if let Some(after) = after {
        let expected = if got == OK { NotFound } else { OK };
        assert_eq!(after, expected, "{rpc:?} as {who:?} returned {got:?}");
    }
    got
}

async fn every_rpc_for_every_caller(backend: Backend) {
    let env = Env::start(backend).await;
    let mut failures = Vec::new();
    for (rpc, expected) in MATRIX {
        for (who, want) in Who::ALL.into_iter().zip(expected) {
            let got = call(&env, rpc, who).await;
            if got != want {
                failures.push(format!(
                    "{rpc:?} as {who:?}: expected {want:?}, got {got:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "RBAC mismatches:\n{}",
        failures.join("\n")
    );
    env.stop().await;
}

/// Authorisation is decided before the request is looked at: a customer sending an
/// invalid write learns PERMISSION_DENIED, not what is wrong with the request.
async fn authorisation_comes_before_validation(backend: Backend) {
    let env = Env::start(backend).await;
    let mut c = env.client();
    let bad = pb::CreateProductRequest {
        price_cents: -1,
        ..Default::default()
    };
    let res = c.create_product(env.req(Who::Customer, bad.clone())).await;
    assert_eq!(code(res), PD);
    let res = c.create_product(env.req(Who::Anonymous, bad.clone())).await;
    assert_eq!(code(res), UN);
    let res = c.create_product(env.req(Who::Operator, bad)).await;
    assert_eq!(code(res), InvalidArgument);
    env.stop().await;
}

stockmesh::db_tests!(
    every_rpc_for_every_caller,
    authorisation_comes_before_validation
);
