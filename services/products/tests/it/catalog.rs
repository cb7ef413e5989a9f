//! Products: create/read, validation, uniqueness, update_mask semantics, delete and
//! BatchGetProducts.

use stockmesh::proto::products::v1 as pb;
use stockmesh::testing::Backend;
use tonic::Code;

use crate::support::{Env, expect_err, expect_invalid, unique};

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

fn valid() -> pb::CreateProductRequest {
    pb::CreateProductRequest {
        sku: unique("SKU"),
        name: unique("Widget"),
        description: "A fine widget".into(),
        price_cents: 1999,
        currency: "EUR".into(),
        supplier_id: None,
    }
}

async fn create_and_read_back(backend: Backend) {
    let env = Env::start(backend).await;
    let mut c = env.client();
    let supplier = env.supplier("Acme").await;
    let req = pb::CreateProductRequest {
        supplier_id: Some(supplier.id.clone()),
        ..valid()
    };
    let created = c
        .create_product(env.req(crate::support::Who::Operator, req.clone()))
        .await
        .expect("operator creates")
        .into_inner()
        .product
        .expect("product");
    assert!(
        uuid::Uuid::parse_str(&created.id).is_ok(),
        "id {}",
        created.id
    );
    assert_eq!(created.sku, req.sku);
    assert_eq!(created.name, req.name);
    assert_eq!(created.description, "A fine widget");
    assert_eq!(created.price_cents, 1999);
    assert_eq!(created.currency, "EUR");
    assert_eq!(created.supplier_id, supplier.id);
    assert!(created.created_at.is_some());
    assert_eq!(created.created_at, created.updated_at);

    let by_id = c
        .get_product(pb::GetProductRequest {
            id: created.id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .product;
    assert_eq!(by_id.as_ref(), Some(&created));
    let by_name = c
        .get_product_by_name(pb::GetProductByNameRequest {
            name: created.name.clone(),
        })
        .await
        .expect("get by name")
        .into_inner()
        .product;
    assert_eq!(by_name.as_ref(), Some(&created));

    // Exact name only.
    let res = c
        .get_product_by_name(pb::GetProductByNameRequest {
            name: created.name.to_uppercase(),
        })
        .await;
    expect_err(res, Code::NotFound);
    let res = c
        .get_product(pb::GetProductRequest {
            id: uuid::Uuid::now_v7().to_string(),
        })
        .await;
    expect_err(res, Code::NotFound);
    expect_invalid(c.get_product(pb::GetProductRequest::default()).await, "id");

    // Currency defaults to USD; no supplier is an empty supplier_id; names are trimmed.
    let plain = c
        .create_product(env.admin(pb::CreateProductRequest {
            currency: String::new(),
            name: "  Spaced Out  ".into(),
            ..valid()
        }))
        .await
        .expect("create")
        .into_inner()
        .product
        .expect("product");
    assert_eq!(plain.currency, "USD");
    assert_eq!(plain.supplier_id, "");
    assert_eq!(plain.name, "Spaced Out");
    env.stop().await;
}

async fn invalid_products_name_the_field(backend: Backend) {
    let env = Env::start(backend).await;
    let mut c = env.client();
    let cases: Vec<(&str, pb::CreateProductRequest)> = vec![
        (
            "sku",
            pb::CreateProductRequest {
                sku: String::new(),
                ..valid()
            },
        ),
        (
            "sku",
            pb::CreateProductRequest {
                sku: "has space".into(),
                ..valid()
            },
        ),
        (
            "sku",
            pb::CreateProductRequest {
                sku: "S".repeat(65),
                ..valid()
            },
        ),
        (
            "name",
            pb::CreateProductRequest {
                name: "   ".into(),
                ..valid()
            },
        ),
        (
            "name",
            pb::CreateProductRequest {
                name: "n".repeat(201),
                ..valid()
            },
        ),
        (
            "description",
            pb::CreateProductRequest {
                description: "d".repeat(10_001),
                ..valid()
            },
        ),
        (
            "price_cents",
            pb::CreateProductRequest {
                price_cents: -1,
                ..valid()
            },
        ),
        (
            "currency",
            pb::CreateProductRequest {
                currency: "usd".into(),
                ..valid()
            },
        ),
        (
            "currency",
            pb::CreateProductRequest {
                currency: "EURO".into(),
                ..valid()
            },
        ),
        (
            "currency",
            pb::CreateProductRequest {
                currency: "E1R".into(),
                ..valid()
            },
        ),
    ];
    for (field, req) in cases {
        expect_invalid(c.create_product(env.admin(req)).await, field);
    }

    // A well-formed supplier id that names no supplier: the catalog lacks it.
    let ghost = uuid::Uuid::now_v7().to_string();
    let msg = expect_err(
        c.create_product(env.admin(pb::CreateProductRequest {
            supplier_id: Some(ghost.clone()),
            ..valid()
        }))
        .await,
        Code::FailedPrecondition,
    );
    assert!(
        msg.starts_with("supplier_id: ") && msg.contains(&ghost),
        "{msg}"
    );

    // Nothing was stored by the refused calls.
    let listed = c
        .list_products(pb::ListProductsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(listed.products.is_empty(), "{:?}", listed.products);
    env.stop().await;
}

async fn duplicate_sku_or_name_already_exists(backend: Backend) {
    let env = Env::start(backend).await;
    let mut c = env.client();
    let first = valid();
    c.create_product(env.admin(first.clone()))
        .await
        .expect("first");

    let msg = expect_err(
        c.create_product(env.admin(pb::CreateProductRequest {
            sku: first.sku.clone(),
            ..valid()
        }))
        .await,
        Code::AlreadyExists,
    );
    assert!(msg.contains("sku") && msg.contains(&first.sku), "{msg}");

    let msg = expect_err(
        c.create_product(env.admin(pb::CreateProductRequest {
            name: first.name.clone(),
            ..valid()
        }))
        .await,
        Code::AlreadyExists,
    );
    assert!(msg.contains("name") && msg.contains(&first.name), "{msg}");

    // Surrounding whitespace does not make a different sku.
    let msg = expect_err(
        c.create_product(env.admin(pb::CreateProductRequest {
            sku: format!(" {} ", first.sku),
            ..valid()
        }))
        .await,
        Code::AlreadyExists,
    );
    assert!(msg.contains("sku"), "{msg}");

    // Renaming another product onto a taken name or sku is refused the same way.
    let other = env.product("Other", None).await;
    for (path, value) in [("name", &first.name), ("sku", &first.sku)] {
        let mut product = pb::Product {
            id: other.id.clone(),
            ..Default::default()
        };
        if path == "name" {
            product.name = value.clone();
        } else {
            product.sku = value.clone();
        }
        let msg = expect_err(
            c.update_product(env.admin(pb::UpdateProductRequest {
                product: Some(product),
                update_mask: mask(&[path]),
            }))
            .await,
            Code::AlreadyExists,
        );
        assert!(msg.contains(path), "{msg}");
    }
    env.stop().await;
}

async fn update_mask_changes_only_named_fields(backend: Backend) {
    let env = Env::start(backend).await;
    let mut c = env.client();
    let supplier = env.supplier("Acme").await;
    let original = env.product("Lamp", None).await;
    // Every field differs from the original; only the masked ones may change.
    let sent = pb::Product {
        id: original.id.clone(),
        sku: unique("CHANGED"),
        name: unique("Changed"),
        description: "changed".into(),
        price_cents: 42,
        currency: "GBP".into(),
        supplier_id: supplier.id.clone(),
        created_at: None,
        updated_at: None,
    };
    let update = |paths: &[&str]| pb::UpdateProductRequest {
        product: Some(sent.clone()),
        update_mask: mask(paths),
    };

    let updated = c
        .update_product(env.admin(update(&["price_cents", "supplierId"])))
        .await
        .expect("update")
        .into_inner()
        .product
        .expect("product");
    assert_eq!(updated.price_cents, 42);
    assert_eq!(updated.supplier_id, supplier.id);
    assert_eq!(updated.sku, original.sku);
    assert_eq!(updated.name, original.name);
    assert_eq!(updated.description, original.description);
    assert_eq!(updated.currency, original.currency);
    assert_eq!(updated.created_at, original.created_at);
    let (before, after) = (
        original.updated_at.expect("updated_at"),
        updated.updated_at.expect("updated_at"),
    );
    assert!(
        (after.seconds, after.nanos) >= (before.seconds, before.nanos),
        "updated_at went back: {before:?} → {after:?}"
    );
    // What the update returned is what is stored.
    let stored = c
        .get_product(pb::GetProductRequest {
            id: original.id.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .product;
    assert_eq!(stored.as_ref(), Some(&updated));

    // Clearing the supplier: the field is in the mask with an empty value.
    let cleared = c
        .update_product(env.admin(pb::UpdateProductRequest {
            product: Some(pb::Product {
                id: original.id.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["supplier_id"]),
        }))
        .await
        .expect("clear supplier")
        .into_inner()
        .product
        .expect("product");
    assert_eq!(cleared.supplier_id, "");
    assert_eq!(cleared.price_cents, 42);

    // "*" replaces every mutable field.
    let all = c
        .update_product(env.admin(update(&["*"])))
        .await
        .expect("update *")
        .into_inner()
        .product
        .expect("product");
    assert_eq!(
        (
            &all.sku,
            &all.name,
            &all.description,
            all.price_cents,
            &all.currency,
            &all.supplier_id
        ),
        (
            &sent.sku,
            &sent.name,
            &sent.description,
            42,
            &sent.currency,
            &sent.supplier_id
        )
    );
    assert_eq!(all.id, original.id);

    // Bad masks.
    for (paths, fragment) in [
        (&[][..], "required"),
        (&["id"][..], "\"id\""),
        (&["name", "created_at"][..], "\"created_at\""),
        (&["updatedAt"][..], "\"updatedAt\""),
        (&["colour"][..], "\"colour\""),
    ] {
        let msg = expect_err(
            c.update_product(env.admin(update(paths))).await,
            Code::InvalidArgument,
        );
        assert!(
            msg.starts_with("update_mask: ") && msg.contains(fragment),
            "{paths:?}: {msg}"
        );
    }
    expect_invalid(
        c.update_product(env.admin(pb::UpdateProductRequest {
            product: Some(sent.clone()),
            update_mask: None,
        }))
        .await,
        "update_mask",
    );
    expect_invalid(
        c.update_product(env.admin(pb::UpdateProductRequest {
            product: None,
            update_mask: mask(&["name"]),
        }))
        .await,
        "product",
    );

    // Masked fields are validated, naming their path in the request.
    for (path, product) in [
        (
            "product.price_cents",
            pb::Product {
                price_cents: -5,
                ..sent.clone()
            },
        ),
        (
            "product.currency",
            pb::Product {
                currency: "gbp".into(),
                ..sent.clone()
            },
        ),
        (
            "product.name",
            pb::Product {
                name: String::new(),
                ..sent.clone()
            },
        ),
    ] {
        let field = path.trim_start_matches("product.");
        expect_invalid(
            c.update_product(env.admin(pb::UpdateProductRequest {
                product: Some(product),
                update_mask: mask(&[field]),
            }))
            .await,
            path,
        );
    }
    let ghost = uuid::Uuid::now_v7().to_string();
    expect_err(
        c.update_product(env.admin(pb::UpdateProductRequest {
            product: Some(pb::Product {
                supplier_id: ghost,
                ..sent.clone()
            }),
            update_mask: mask(&["supplier_id"]),
        }))
        .await,
        Code::FailedPrecondition,
    );
    expect_err(
        c.update_product(env.admin(pb::UpdateProductRequest {
            product: Some(pb::Product {
                id: uuid::Uuid::now_v7().to_string(),
                ..sent.clone()
            }),
            update_mask: mask(&["name"]),
        }))
        .await,
        Code::NotFound,
    );
    expect_invalid(
        c.update_product(env.admin(pb::UpdateProductRequest {
            product: Some(pb::Product {
                id: String::new(),
                ..sent.clone()
            }),
            update_mask: mask(&["name"]),
        }))
        .await,
        "product.id",
    );
    env.stop().await;
}

async fn delete_then_gone(backend: Backend) {
    let env = Env::start(backend).await;
    let mut c = env.client();
    let p = env.product("Doomed", None).await;
    c.delete_product(env.admin(pb::DeleteProductRequest { id: p.id.clone() }))
        .await
        .expect("delete");
    expect_err(
        c.get_product(pb::GetProductRequest { id: p.id.clone() })
            .await,
        Code::NotFound,
    );
    expect_err(
        c.delete_product(env.admin(pb::DeleteProductRequest { id: p.id.clone() }))
            .await,
        Code::NotFound,
    );
    // Its sku and name are free again.
    c.create_product(env.admin(pb::CreateProductRequest {
        sku: p.sku,
        name: p.name,
        ..valid()
    }))
    .await
    .expect("sku and name reusable after delete");
    env.stop().await;
}

async fn batch_get_products(backend: Backend) {
    let env = Env::start(backend).await;
    let mut c = env.client();
    let a = env.product("A", None).await;
    let b = env.product("B", None).await;
    let d = env.product("D", None).await;

    // Request order, each product once.
    let got = c
        .batch_get_products(env.admin(pb::BatchGetProductsRequest {
            ids: vec![d.id.clone(), a.id.clone(), d.id.clone(), b.id.clone()],
        }))
        .await
        .expect("batch get")
        .into_inner()
        .products;
    let ids: Vec<&str> = got.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, [d.id.as_str(), a.id.as_str(), b.id.as_str()]);
    assert_eq!(got[1], a);

    // Missing ids fail the call and are named; present ones are not.
    let (m1, m2) = (uuid::Uuid::now_v7().to_string(), "no-such-id".to_string());
    let msg = expect_err(
        c.batch_get_products(env.admin(pb::BatchGetProductsRequest {
            ids: vec![
                a.id.clone(),
                m1.clone(),
                b.id.clone(),
                m2.clone(),
                m1.clone(),
            ],
        }))
        .await,
        Code::NotFound,
    );
    assert!(msg.contains(&m1) && msg.contains(&m2), "{msg}");
    assert!(!msg.contains(&a.id) && !msg.contains(&b.id), "{msg}");
    assert_eq!(msg.matches(&m1).count(), 1, "{msg}");

    // 1..=500 ids.
    expect_invalid(
        c.batch_get_products(env.admin(pb::BatchGetProductsRequest { ids: vec![] }))
            .await,
        "ids",
    );
    let too_many = (0..501).map(|i| format!("id-{i}")).collect();
    expect_invalid(
        c.batch_get_products(env.admin(pb::BatchGetProductsRequest { ids: too_many }))
            .await,
        "ids",
    );
    expect_invalid(
        c.batch_get_products(env.admin(pb::BatchGetProductsRequest {
            ids: vec![a.id.clone(), String::new()],
        }))
        .await,
        "ids[1]",
    );
    // Exactly 500 is fine (the same id, deduplicated, found).
    let got = c
        .batch_get_products(env.admin(pb::BatchGetProductsRequest {
            ids: vec![a.id.clone(); 500],
        }))
        .await
        .expect("500 ids")
        .into_inner()
        .products;
    assert_eq!(got, [a]);
    env.stop().await;
}

stockmesh::db_tests!(
    create_and_read_back,
    invalid_products_name_the_field,
    duplicate_sku_or_name_already_exists,
    update_mask_changes_only_named_fields,
    delete_then_gone,
    batch_get_products,
);
