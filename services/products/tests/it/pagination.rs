//! Keyset pagination: walking every page visits every matching row exactly once, in
//! creation order; tokens are bound to their filters; name filters are case-insensitive
//! substrings in which `%` and `_` are plain characters.

use std::collections::HashSet;

use stockmesh::proto::products::v1 as pb;
use stockmesh::testing::Backend;
use tonic::Code;

use crate::support::{Env, expect_err, expect_invalid};

/// Walks every page of ListProducts with `filter`; returns the ids in order and how many
/// pages it took.
async fn walk_products(env: &Env, filter: &pb::ListProductsRequest) -> (Vec<String>, usize) {
    let mut c = env.client();
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut token = String::new();
    loop {
        let page = c
            .list_products(pb::ListProductsRequest {
                page_token: token.clone(),
                ..filter.clone()
            })
            .await
            .expect("list page")
            .into_inner();
        pages += 1;
        assert!(
            page.products.len() <= filter.page_size as usize,
            "page larger than page_size"
        );
        ids.extend(page.products.into_iter().map(|p| p.id));
        if page.next_page_token.is_empty() {
            return (ids, pages);
        }
        assert!(pages < 100, "pagination does not end");
        token = page.next_page_token;
    }
}

async fn products_pages_visit_every_row_once(backend: Backend) {
    let env = Env::start(backend).await;
    let acme = env.supplier("Acme").await;
    // 23 products: every third a "Gadget" from Acme, the rest "Widget"s without supplier.
    let mut all = Vec::new();
    let mut gadgets = Vec::new();
    for i in 0..23 {
        let p = if i % 3 == 0 {
            let p = env.product("Gadget", Some(&acme.id)).await;
            gadgets.push(p.id.clone());
            p
        } else {
            env.product("Widget", None).await
        };
        all.push(p.id);
    }

    let unfiltered = pb::ListProductsRequest {
        page_size: 5,
        ..Default::default()
    };
    let (ids, pages) = walk_products(&env, &unfiltered).await;
    assert_eq!(ids, all, "every product once, in creation order");
    assert_eq!(pages, 5);

    // Case-insensitive substring filter.
    let by_name = pb::ListProductsRequest {
        page_size: 5,
        name_contains: "gADGe".into(),
        ..Default::default()
    };
    let (ids, pages) = walk_products(&env, &by_name).await;
    assert_eq!(ids, gadgets);
    assert_eq!(gadgets.len(), 8);
    assert_eq!(pages, 2);

    let by_supplier = pb::ListProductsRequest {
        page_size: 3,
        supplier_id: acme.id.clone(),
        ..Default::default()
    };
    let (ids, _) = walk_products(&env, &by_supplier).await;
    assert_eq!(ids, gadgets);

    // Both filters at once; a filter that matches nothing.
    let both = pb::ListProductsRequest {
        page_size: 50,
        supplier_id: acme.id.clone(),
        name_contains: "widget".into(),
        ..Default::default()
    };
    assert_eq!(walk_products(&env, &both).await, (vec![], 1));

    // Page size: default 50 covers all 23; an exact multiple ends with an empty token.
    let (ids, pages) = walk_products(
        &env,
        &pb::ListProductsRequest {
            page_size: 23,
            ..Default::default()
        },
    )
    .await;
    assert_eq!((ids.len(), pages), (23, 1));
    let mut c = env.client();
    let first = c
        .list_products(pb::ListProductsRequest::default())
        .await
        .expect("default page")
        .into_inner();
    assert_eq!(first.products.len(), 23);
    assert!(first.next_page_token.is_empty());
    expect_invalid(
        c.list_products(pb::ListProductsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await,
        "page_size",
    );
    env.stop().await;
}

async fn page_tokens_are_bound_to_their_filters(backend: Backend) {
    let env = Env::start(backend).await;
    for _ in 0..4 {
        env.product("Widget", None).await;
    }
    let mut c = env.client();
    let first = c
        .list_products(pb::ListProductsRequest {
            page_size: 2,
            name_contains: "widget".into(),
            ..Default::default()
        })
        .await
        .expect("first page")
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    let token = first.next_page_token;

    for other in [
        pb::ListProductsRequest {
            name_contains: "gadget".into(),
            ..Default::default()
        },
        pb::ListProductsRequest::default(),
        pb::ListProductsRequest {
            name_contains: "widget".into(),
            supplier_id: "x".into(),
            ..Default::default()
        },
    ] {
        expect_invalid(
            c.list_products(pb::ListProductsRequest {
                page_size: 2,
                page_token: token.clone(),
                ..other
            })
            .await,
            "page_token",
        );
    }
    // A products token means nothing to the suppliers list, and garbage is refused.
    expect_invalid(
        c.list_suppliers(pb::ListSuppliersRequest {
            page_size: 2,
            page_token: token.clone(),
        })
        .await,
        "page_token",
    );
    expect_invalid(
        c.list_products(pb::ListProductsRequest {
            page_token: "garbage!".into(),
            ..Default::default()
        })
        .await,
        "page_token",
    );
    // With the same filters the token still works (and the page size may change).
    let second = c
        .list_products(pb::ListProductsRequest {
            page_size: 10,
            page_token: token,
            name_contains: "widget".into(),
            ..Default::default()
        })
        .await
        .expect("second page")
        .into_inner();
    assert_eq!(second.products.len(), 2);
    env.stop().await;
}

async fn name_filter_treats_like_wildcards_literally(backend: Backend) {
    let env = Env::start(backend).await;
    let mut c = env.client();
    let names = [
        "100% Cotton",
        "1000 Cottons",
        "snake_case",
        "snakeXcase",
        r"back\slash",
    ];
    for name in names {
        c.create_product(env.admin(pb::CreateProductRequest {
            sku: crate::support::unique("SKU"),
            name: name.into(),
            ..Default::default()
        }))
        .await
        .expect("create");
    }
    for (needle, expected) in [
        ("0%", vec!["100% Cotton"]),
        ("%", vec!["100% Cotton"]),
        ("_", vec!["snake_case"]),
        (r"\", vec![r"back\slash"]),
        ("COTTON", vec!["100% Cotton", "1000 Cottons"]),
        ("É", vec![]),
    ] {
        let got: HashSet<String> = c
            .list_products(pb::ListProductsRequest {
                name_contains: needle.into(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .products
            .into_iter()
            .map(|p| p.name)
            .collect();
        let expected: HashSet<String> = expected.into_iter().map(String::from).collect();
        assert_eq!(got, expected, "name_contains {needle:?}");
    }

    // Case-insensitive beyond ASCII, the same on both backends.
    c.create_product(env.admin(pb::CreateProductRequest {
        sku: crate::support::unique("SKU"),
        name: "Crème Brûlée".into(),
        ..Default::default()
    }))
    .await
    .expect("create");
    let got = c
        .list_products(pb::ListProductsRequest {
            name_contains: "CRÈME BRÛ".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .products;
    assert_eq!(got.len(), 1, "{got:?}");
    env.stop().await;
}

async fn suppliers_and_variables_pages(backend: Backend) {
    let env = Env::start(backend).await;
    let mut suppliers = Vec::new();
    let mut variables = Vec::new();
    for _ in 0..7 {
        suppliers.push(env.supplier("S").await.id);
        variables.push(env.variable("V").await.id);
    }
    let mut c = env.client();

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_suppliers(pb::ListSuppliersRequest {
                page_size: 3,
                page_token: token,
            })
            .await
            .expect("suppliers page")
            .into_inner();
        assert!(page.suppliers.len() <= 3);
        seen.extend(page.suppliers.into_iter().map(|s| s.id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, suppliers);

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_variables(pb::ListVariablesRequest {
                page_size: 2,
                page_token: token,
            })
            .await
            .expect("variables page")
            .into_inner();
        assert!(page.variables.len() <= 2);
        seen.extend(page.variables.into_iter().map(|v| v.id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, variables);

    // A variables token is not a suppliers token.
    let page = c
        .list_variables(pb::ListVariablesRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .expect("variables")
        .into_inner();
    let msg = expect_err(
        c.list_suppliers(pb::ListSuppliersRequest {
            page_size: 2,
            page_token: page.next_page_token,
        })
        .await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("page_token"), "{msg}");
    env.stop().await;
}

stockmesh::db_tests!(
    products_pages_visit_every_row_once,
    page_tokens_are_bound_to_their_filters,
    name_filter_treats_like_wildcards_literally,
    suppliers_and_variables_pages,
);
