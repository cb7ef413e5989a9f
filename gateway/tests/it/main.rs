//! Integration tests of the gateway: the whole mesh (auth, products, inventory, orders)
//! and the gateway started in-process on ephemeral ports, a fresh database per service
//! and test, and outside-style clients (HTTP/1.1 REST, gRPC-web, Connect and SSE, h2c
//! gRPC, Node).
//! Every test runs on SQLite and PostgreSQL.

mod abuse;
mod connect;
mod contract;
mod edge;
mod grpc;
mod lockout;
mod node;
mod reports;
mod rest;
mod sse;
mod streams;
mod support;

use abuse::*;
use connect::*;
use contract::*;
use edge::*;
use grpc::*;
use lockout::*;
use node::*;
use reports::*;
use rest::*;
use sse::*;
use streams::*;

stockmesh::db_tests!(
    rest_product_lifecycle,
    rest_list_with_query_and_page_tokens,
    rest_custom_verbs_and_orders,
    rest_error_mapping,
    rest_malformed_input,
    rest_timestamps_and_measurements,
    bad_tokens_are_refused_at_the_edge,
    rate_limits,
    cors,
    readiness_follows_upstreams,
    a_draining_gateway_is_not_ready_but_still_serves,
    operations_endpoints,
    grpc_through_the_gateway,
    grpc_web_binary_and_text,
    node_client,
    streamed_bodies_are_capped,
    streamed_bodies_are_capped_without_retry,
    metric_labels_stay_bounded,
    health_calls_are_rate_limited,
    trusted_proxies_separate_forwarded_clients,
    edge_logins_cannot_lock_out_services_or_admin,
    grpc_and_grpc_web_streams,
    streams_outlive_the_upstream_timeout,
    connect_unary_and_get,
    connect_streams,
    sse_and_ndjson_streams,
    distributed_guessing_spares_the_admins_known_clients,
    required_lists_match_invalid_argument_answers,
    signed_in_routes_answer_401_before_reading_the_body,
    report_csv_matches_json,
    csv_elsewhere_is_not_acceptable,
);
