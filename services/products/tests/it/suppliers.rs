//! Suppliers (CRUD, validation, in-use protection) and variables.

use stockmesh::proto::products::v1 as pb;
use stockmesh::testing::Backend;
use tonic::Code;

use crate::support::{Env, Who, expect_err, expect_invalid, unique};

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

async fn supplier_lifecycle(backend: Backend) {
    let env = Env::start(backend).await;
    let mut c = env.client();
    let created = c
        .create_supplier(env.req(
            Who::Operator,
            pb::CreateSupplierRequest {
                name: " Acme Corp ".into(),
                contact_email: "sales@acme.example".into(),
                phone: "+1 (555) 010-0100".into(),
            },
        ))
        .await
        .expect("create")
        .into_inner()
        .supplier
        .expect("supplier");
    assert_eq!(created.name, "Acme Corp");
    assert_eq!(created.contact_email, "sales@acme.example");
    assert_eq!(created.phone, "+1 (555) 010-0100");
    assert_eq!(created.created_at, created.updated_at);

    let got = c
        .get_supplier(pb::GetSupplierRequest {
            id: created.id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .supplier;
    assert_eq!(got.as_ref(), Some(&created));

    // Only the masked field changes; an empty email in the mask clears it.
    let updated = c
        .update_supplier(env.admin(pb::UpdateSupplierRequest {
            supplier: Some(pb::Supplier {
                id: created.id.clone(),
                name: "ignored".into(),
                contact_email: String::new(),
                phone: "020 7946 0000".into(),
                ..Default::default()
            }),
            update_mask: mask(&["phone", "contactEmail"]),
        }))
        .await
        .expect("update")
        .into_inner()
        .supplier
        .expect("supplier");
    assert_eq!(updated.name, "Acme Corp");
    assert_eq!(updated.phone, "020 7946 0000");
    assert_eq!(updated.contact_email, "");
    assert_eq!(updated.created_at, created.created_at);

    let res = c
        .update_supplier(env.admin(pb::UpdateSupplierRequest {
            supplier: Some(pb::Supplier {
                id: created.id.clone(),
                ..Default::default()
            }),
            update_mask: None,
        }))
        .await;
    expect_invalid(res, "update_mask");
    let msg = expect_err(
        c.update_supplier(env.admin(pb::UpdateSupplierRequest {
            supplier: Some(pb::Supplier {
                id: created.id.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["created_at"]),
        }))
        .await,
        Code::InvalidArgument,
    );
    assert!(msg.contains("created_at"), "{msg}");
    expect_invalid(
        c.update_supplier(env.admin(pb::UpdateSupplierRequest {
            supplier: Some(pb::Supplier {
                id: created.id.clone(),
                contact_email: "not-an-email".into(),
                ..Default::default()
            }),
            update_mask: mask(&["contact_email"]),
        }))
        .await,
        "supplier.contact_email",
    );
    expect_err(
        c.update_supplier(env.admin(pb::UpdateSupplierRequest {
            supplier: Some(pb::Supplier {
                id: uuid::Uuid::now_v7().to_string(),
                phone: "12345".into(),
                ..Default::default()
            }),
            update_mask: mask(&["phone"]),
        }))
        .await,
        Code::NotFound,
    );

    c.delete_supplier(env.req(
        Who::Operator,
        pb::DeleteSupplierRequest {
            id: created.id.clone(),
        },
    ))
    .await
    .expect("delete");
    expect_err(
        c.get_supplier(pb::GetSupplierRequest {
            id: created.id.clone(),
        })
        .await,
        Code::NotFound,
    );
    expect_err(
        c.delete_supplier(env.admin(pb::DeleteSupplierRequest { id: created.id }))
            .await,
        Code::NotFound,
    );
    env.stop().await;
}

async fn invalid_suppliers_name_the_field(backend: Backend) {
    let env = Env::start(backend).await;
    let mut c = env.client();
    let valid = || pb::CreateSupplierRequest {
        name: unique("Acme"),
        contact_email: "a@b.example".into(),
        phone: "12345".into(),
    };
    for (field, req) in [
        (
            "name",
            pb::CreateSupplierRequest {
                name: " ".into(),
                ..valid()
            },
        ),
        (
            "contact_email",
            pb::CreateSupplierRequest {
                contact_email: "nobody".into(),
                ..valid()
            },
        ),
        (
            "contact_email",
            pb::CreateSupplierRequest {
                contact_email: "a@b".into(),
                ..valid()
            },
        ),
        (
            "contact_email",
            pb::CreateSupplierRequest {
                contact_email: "a b@c.de".into(),
                ..valid()
            },
        ),
        (
            "phone",
            pb::CreateSupplierRequest {
                phone: "call me".into(),
                ..valid()
            },
        ),
        (
            "phone",
            pb::CreateSupplierRequest {
                phone: "12".into(),
                ..valid()
            },
        ),
    ] {
        expect_invalid(c.create_supplier(env.admin(req)).await, field);
    }
    // Email and phone are optional.
    c.create_supplier(env.admin(pb::CreateSupplierRequest {
        name: unique("Bare"),
        ..Default::default()
    }))
    .await
    .expect("name alone is enough");
    expect_invalid(
        c.get_supplier(pb::GetSupplierRequest::default()).await,
        "id",
    );
    env.stop().await;
}

async fn supplier_in_use_cannot_be_deleted(backend: Backend) {
    let env = Env::start(backend).await;
    let mut c = env.client();
    let supplier = env.supplier("Busy").await;
    let product = env.product("Thing", Some(&supplier.id)).await;

    let msg = expect_err(
        c.delete_supplier(env.admin(pb::DeleteSupplierRequest {
            id: supplier.id.clone(),
        }))
        .await,
        Code::FailedPrecondition,
    );
    assert!(msg.contains(&supplier.id), "{msg}");
    c.get_supplier(pb::GetSupplierRequest {
        id: supplier.id.clone(),
    })
    .await
    .expect("still there");

    // Once no product references it, it can go.
    c.update_product(env.admin(pb::UpdateProductRequest {
        product: Some(pb::Product {
            id: product.id.clone(),
            ..Default::default()
        }),
        update_mask: mask(&["supplier_id"]),
    }))
    .await
    .expect("detach supplier");
    c.delete_supplier(env.admin(pb::DeleteSupplierRequest {
        id: supplier.id.clone(),
    }))
    .await
    .expect("delete unused supplier");
    env.stop().await;
}

async fn variables(backend: Backend) {
    let env = Env::start(backend).await;
    let mut c = env.client();
    let created = c
        .create_variable(env.req(
            Who::Operator,
            pb::CreateVariableRequest {
                name: "temperature".into(),
                unit: "°C".into(),
            },
        ))
        .await
        .expect("create")
        .into_inner()
        .variable
        .expect("variable");
    assert_eq!(
        (created.name.as_str(), created.unit.as_str()),
        ("temperature", "°C")
    );
    assert!(created.created_at.is_some());

    let got = c
        .get_variable(pb::GetVariableRequest {
            id: created.id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .variable;
    assert_eq!(got.as_ref(), Some(&created));
    expect_err(
        c.get_variable(pb::GetVariableRequest {
            id: uuid::Uuid::now_v7().to_string(),
        })
        .await,
        Code::NotFound,
    );

    let msg = expect_err(
        c.create_variable(env.admin(pb::CreateVariableRequest {
            name: " temperature ".into(),
            unit: "K".into(),
        }))
        .await,
        Code::AlreadyExists,
    );
    assert!(msg.contains("name") && msg.contains("temperature"), "{msg}");
    expect_invalid(
        c.create_variable(env.admin(pb::CreateVariableRequest {
            name: String::new(),
            unit: "K".into(),
        }))
        .await,
        "name",
    );
    expect_invalid(
        c.create_variable(env.admin(pb::CreateVariableRequest {
            name: "pressure".into(),
            unit: "u".repeat(33),
        }))
        .await,
        "unit",
    );
    // Dimensionless quantities have no unit.
    c.create_variable(env.admin(pb::CreateVariableRequest {
        name: "count".into(),
        unit: String::new(),
    }))
    .await
    .expect("unit is optional");
    env.stop().await;
}

stockmesh::db_tests!(
    supplier_lifecycle,
    invalid_suppliers_name_the_field,
    supplier_in_use_cannot_be_deleted,
    variables,
);
