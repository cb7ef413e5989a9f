//! Warehouse create / get / list / update: validation, unique names, paging, masks.

use std::collections::HashSet;

use prost_types::FieldMask;
use stockmesh::proto::inventory::v1 as pb;
use stockmesh::testing::{Backend, with_token};
use tonic::Code;

use crate::common::{Env, expect_code};

stockmesh::db_tests!(
    warehouses_are_validated_and_named_uniquely,
    warehouses_list_in_pages_and_update_by_mask,
);

fn create_req(name: &str, lat: f64, lon: f64, capacity: i64) -> pb::CreateWarehouseRequest {
    pb::CreateWarehouseRequest {
        name: name.to_string(),
        address: "1 Dock Road".into(),
        latitude: lat,
        longitude: lon,
        capacity,
    }
}

async fn warehouses_are_validated_and_named_uniquely(backend: Backend) {
    let env = Env::start(backend).await;
    let mut inv = env.inv();
    let created = inv
        .create_warehouse(with_token(
            create_req("  North  ", 45.5, -73.6, 1000),
            &env.operator,
        ))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner()
        .warehouse
        .unwrap_or_default();
    assert_eq!(created.name, "North");
    assert_eq!(
        (created.latitude, created.longitude, created.capacity),
        (45.5, -73.6, 1000)
    );
    assert!(created.created_at.is_some() && !created.id.is_empty());

    let fetched = inv
        .get_warehouse(with_token(
            pb::GetWarehouseRequest {
                id: created.id.clone(),
            },
            &env.customer,
        ))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner()
        .warehouse;
    assert_eq!(fetched.as_ref(), Some(&created));

    let dup = inv
        .create_warehouse(with_token(create_req("North", 0.0, 0.0, 0), &env.operator))
        .await;
    expect_code(dup, Code::AlreadyExists);

    for (req, field) in [
        (create_req("", 0.0, 0.0, 0), "name"),
        (create_req("x", 90.1, 0.0, 0), "latitude"),
        (create_req("x", f64::NAN, 0.0, 0), "latitude"),
        (create_req("x", 0.0, -180.5, 0), "longitude"),
        (create_req("x", 0.0, f64::INFINITY, 0), "longitude"),
        (create_req("x", 0.0, 0.0, -1), "capacity"),
    ] {
        let msg = expect_code(
            inv.create_warehouse(with_token(req, &env.operator)).await,
            Code::InvalidArgument,
        );
        assert!(msg.starts_with(field), "{field}: {msg}");
    }
    // Extremes are valid.
    inv.create_warehouse(with_token(
        create_req("pole", -90.0, 180.0, 0),
        &env.operator,
    ))
    .await
    .unwrap_or_else(|s| panic!("{s:?}"));

    let missing = inv
        .get_warehouse(with_token(
            pb::GetWarehouseRequest { id: "nope".into() },
            &env.customer,
        ))
        .await;
    expect_code(missing, Code::NotFound);
}

async fn warehouses_list_in_pages_and_update_by_mask(backend: Backend) {
    let env = Env::start(backend).await;
    let mut inv = env.inv();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(env.warehouse(&format!("w{i}"), i as f64, 0.0).await);
    }

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = inv
            .list_warehouses(with_token(
                pb::ListWarehousesRequest {
                    page_size: 2,
                    page_token: token.clone(),
                },
                &env.customer,
            ))
            .await
            .unwrap_or_else(|s| panic!("{s:?}"))
            .into_inner();
        assert!(page.warehouses.len() <= 2);
        seen.extend(page.warehouses.into_iter().map(|w| w.id));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "every warehouse once, in creation order");
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 5);
    let bad = inv
        .list_warehouses(with_token(
            pb::ListWarehousesRequest {
                page_size: 2,
                page_token: "garbage".into(),
            },
            &env.customer,
        ))
        .await;
    expect_code(bad, Code::InvalidArgument);

    // Only the masked field changes.
    let update = |name: &str, lat: f64, paths: &[&str]| {
        with_token(
            pb::UpdateWarehouseRequest {
                warehouse: Some(pb::Warehouse {
                    id: ids[0].clone(),
                    name: name.to_string(),
                    latitude: lat,
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: paths.iter().map(|p| p.to_string()).collect(),
                }),
            },
            &env.operator,
        )
    };
    let updated = inv
        .update_warehouse(update("renamed", 50.0, &["name"]))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner()
        .warehouse
        .unwrap_or_default();
    assert_eq!(updated.name, "renamed");
    assert_eq!(updated.latitude, 0.0, "latitude was not in the mask");
    assert_eq!(updated.address, "w0 address");
    let updated = inv
        .update_warehouse(update("ignored", 50.0, &["latitude"]))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner()
        .warehouse
        .unwrap_or_default();
    assert_eq!((updated.name.as_str(), updated.latitude), ("renamed", 50.0));

    expect_code(
        inv.update_warehouse(update("w1", 0.0, &["name"])).await,
        Code::AlreadyExists,
    );
    let msg = expect_code(
        inv.update_warehouse(update("x", 0.0, &["id"])).await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("update_mask"), "{msg}");
    // No mask: refused, never "zero every other field".
    let msg = expect_code(
        inv.update_warehouse(update("x", 0.0, &[])).await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("update_mask: required"), "{msg}");
    let msg = expect_code(
        inv.update_warehouse(update("x", 95.0, &["latitude"])).await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("latitude"), "{msg}");
}
