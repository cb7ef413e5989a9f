//! Integration tests of the orders service: the real auth, products, inventory and orders
//! servers started in-process on ephemeral ports and called over gRPC as clients and
//! other services do. Every test runs on SQLite and on PostgreSQL, and ends by checking
//! that the stock books balance (reserved = units of pending orders, on hand = restocked
//! minus units of completed orders).
//!
//! `replicas` runs two orders replicas (and two inventory replicas) over one database and
//! counts, per order, the inventory calls their reconcilers make: each due order is worked
//! on exactly once.

mod access;
mod claims;
mod events;
mod expiry;
mod late_reserve;
mod lifecycle;
mod recovery;
mod replicas;
mod reports;
mod saga;
mod staging;
mod support;

use access::{
    customers_see_only_their_own_orders, list_filters_by_status_and_pages_newest_first, rbac_matrix,
};
use claims::{
    batch_cancellation_moves_only_rows_as_they_were_read,
    claims_take_a_batch_of_unclaimed_rows_and_lapse,
    concurrent_claimers_split_the_rows_and_take_none_twice,
};
use events::{
    an_order_change_and_its_event_commit_or_roll_back_together,
    order_events_carry_the_order_as_answered,
    watch_orders_ends_unauthenticated_when_the_token_expires,
    watch_orders_shows_customers_their_own_and_staff_everything,
};
use expiry::{
    completing_an_order_whose_reservation_expired_cancels_it,
    pending_orders_whose_reservations_expire_are_cancelled,
};
use late_reserve::a_reserve_answered_released_fails_its_order_and_holds_nothing;
use lifecycle::{
    complete_commits_and_cancel_releases_idempotently,
    concurrent_complete_and_cancel_have_one_winner, customers_cannot_cancel_other_peoples_orders,
};
use recovery::{
    an_open_inventory_breaker_fails_orders_before_any_write,
    interrupted_orders_are_finished_by_the_reconciler,
    inventory_down_mid_saga_fails_unavailable_and_converges,
};
use replicas::{
    a_wave_of_5000_due_orders_is_reconciled, two_replicas_reconcile_each_due_order_exactly_once,
};
use reports::{sales_per_day_and_per_product, sales_report_validation_and_roles};
use saga::{
    a_short_line_rolls_back_the_lines_before_it,
    bad_requests_are_refused_before_anything_is_reserved,
    fifty_concurrent_orders_for_twenty_units_never_oversell,
    open_orders_and_line_quantities_are_capped_per_customer,
    order_snapshots_prices_and_reserves_in_the_nearest_able_warehouse,
    replays_return_the_same_order_and_reserve_once, staff_may_order_for_a_customer,
};

stockmesh::db_tests!(
    order_snapshots_prices_and_reserves_in_the_nearest_able_warehouse,
    bad_requests_are_refused_before_anything_is_reserved,
    staff_may_order_for_a_customer,
    fifty_concurrent_orders_for_twenty_units_never_oversell,
    open_orders_and_line_quantities_are_capped_per_customer,
    replays_return_the_same_order_and_reserve_once,
    a_short_line_rolls_back_the_lines_before_it,
    inventory_down_mid_saga_fails_unavailable_and_converges,
    an_open_inventory_breaker_fails_orders_before_any_write,
    interrupted_orders_are_finished_by_the_reconciler,
    complete_commits_and_cancel_releases_idempotently,
    customers_cannot_cancel_other_peoples_orders,
    concurrent_complete_and_cancel_have_one_winner,
    rbac_matrix,
    customers_see_only_their_own_orders,
    list_filters_by_status_and_pages_newest_first,
    a_reserve_answered_released_fails_its_order_and_holds_nothing,
    pending_orders_whose_reservations_expire_are_cancelled,
    completing_an_order_whose_reservation_expired_cancels_it,
    claims_take_a_batch_of_unclaimed_rows_and_lapse,
    concurrent_claimers_split_the_rows_and_take_none_twice,
    batch_cancellation_moves_only_rows_as_they_were_read,
    two_replicas_reconcile_each_due_order_exactly_once,
    a_wave_of_5000_due_orders_is_reconciled,
    an_order_change_and_its_event_commit_or_roll_back_together,
    order_events_carry_the_order_as_answered,
    watch_orders_shows_customers_their_own_and_staff_everything,
    watch_orders_ends_unauthenticated_when_the_token_expires,
    sales_per_day_and_per_product,
    sales_report_validation_and_roles,
);
