//! RecordMeasurement / ListMeasurements: variables checked in ProductService, filters,
//! newest-first paging.

use stockmesh::proto::inventory::v1 as pb;
use stockmesh::testing::{Backend, with_token};
use tonic::Code;

use crate::common::{Env, expect_code};

stockmesh::db_tests!(measurements_are_checked_filtered_and_paged);

fn record(
    variable: &str,
    warehouse: &str,
    product: Option<&str>,
    value: f64,
) -> pb::RecordMeasurementRequest {
    pb::RecordMeasurementRequest {
        variable_id: variable.to_string(),
        warehouse_id: warehouse.to_string(),
        product_id: product.map(str::to_string),
        value,
        measured_at: None,
    }
}

async fn measurements_are_checked_filtered_and_paged(backend: Backend) {
    let env = Env::start(backend).await;
    let mut inv = env.inv();
    let temperature = env.variable("temperature").await;
    let humidity = env.variable("humidity").await;
    let cold = env.warehouse("cold", 0.0, 0.0).await;
    let warm = env.warehouse("warm", 0.0, 0.0).await;
    let product = env.product("milk").await;

    let at = prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 0,
    };
    let first = inv
        .record_measurement(with_token(
            pb::RecordMeasurementRequest {
                measured_at: Some(at),
                ..record(&temperature, &cold, Some(&product), 4.5)
            },
            &env.operator,
        ))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner()
        .measurement
        .unwrap_or_default();
    assert_eq!(first.measured_at, Some(at));
    assert_eq!(
        (first.value, first.product_id.as_str()),
        (4.5, product.as_str())
    );
    for (var, wh, value) in [
        (&temperature, &warm, 21.0),
        (&humidity, &cold, 80.0),
        (&temperature, &cold, 3.9),
    ] {
        inv.record_measurement(with_token(record(var, wh, None, value), &env.operator))
            .await
            .unwrap_or_else(|s| panic!("{s:?}"));
    }

    let msg = expect_code(
        inv.record_measurement(with_token(
            record("no-such-variable", &cold, None, 1.0),
            &env.operator,
        ))
        .await,
        Code::NotFound,
    );
    assert!(msg.contains("variable"), "{msg}");
    let msg = expect_code(
        inv.record_measurement(with_token(
            record(&temperature, "no-such-warehouse", None, 1.0),
            &env.operator,
        ))
        .await,
        Code::NotFound,
    );
    assert!(msg.contains("warehouse"), "{msg}");
    let msg = expect_code(
        inv.record_measurement(with_token(
            record(&temperature, &cold, None, f64::NAN),
            &env.operator,
        ))
        .await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("value"), "{msg}");

    let list = |page_size: i32, page_token: String, variable: &str, warehouse: &str| {
        with_token(
            pb::ListMeasurementsRequest {
                page_size,
                page_token,
                variable_id: variable.to_string(),
                warehouse_id: warehouse.to_string(),
                product_id: String::new(),
            },
            &env.customer,
        )
    };
    // Newest first.
    let all = inv
        .list_measurements(list(0, String::new(), "", ""))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner();
    let values: Vec<f64> = all.measurements.iter().map(|m| m.value).collect();
    assert_eq!(values, [3.9, 80.0, 21.0, 4.5]);
    assert!(all.next_page_token.is_empty());

    // Filters, paged one at a time.
    let mut token = String::new();
    let mut values = Vec::new();
    loop {
        let page = inv
            .list_measurements(list(1, token, &temperature, &cold))
            .await
            .unwrap_or_else(|s| panic!("{s:?}"))
            .into_inner();
        values.extend(page.measurements.iter().map(|m| m.value));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(values.len() < 10, "paging does not end");
    }
    assert_eq!(values, [3.9, 4.5]);
    // A token is bound to its filters.
    let page = inv
        .list_measurements(list(1, String::new(), &temperature, ""))
        .await
        .unwrap_or_else(|s| panic!("{s:?}"))
        .into_inner();
    expect_code(
        inv.list_measurements(list(1, page.next_page_token, &humidity, ""))
            .await,
        Code::InvalidArgument,
    );
}
