//! Who may do what: the RBAC matrix of every OrderService RPC, ownership on GetOrder and
//! ListOrders, list filters and pagination.

use stockmesh::proto::orders::v1 as pb;
use stockmesh::testing::{Backend, with_token};
use tonic::{Code, Request, Status};

use crate::support::{Env, Who, as_who, expect_code, order_req, status_of};

/// What a call by `who` must end with: `Ok(())` or the error code.
fn check(rpc: &str, who: Who, got: Result<(), Status>, want: Result<(), Code>) {
    match (got, want) {
        (Ok(()), Ok(())) => {}
        (Err(s), Err(code)) if s.code() == code => {}
        (got, want) => panic!("{rpc} as {who:?}: expected {want:?}, got {got:?}"),
    }
}

pub async fn rbac_matrix(backend: Backend) {
    let env = Env::start(backend).await;
    let widget = env.product("widget", 100, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 100).await;
    let (envr, widget_id) = (&env, widget.as_str());
    let customers_order = || async move {
        envr.create(
            &envr.customer.token,
            &uuid::Uuid::new_v4().to_string(),
            &[(widget_id, 1)],
        )
        .await
        .unwrap()
        .id
    };
    use Code::{NotFound, PermissionDenied, Unauthenticated};

    for who in Who::ALL {
        let expect = match who {
            Who::Anonymous => Err(Unauthenticated),
            _ => Ok(()),
        };
        let got = env
            .orders()
            .create_order(as_who(
                &env,
                who,
                order_req(&format!("rbac-{who:?}"), &[(&widget, 1)]),
            ))
            .await
            .map(|_| ());
        check("CreateOrder", who, got, expect);

        let id = customers_order().await;
        let expect = match who {
            Who::Anonymous => Err(Unauthenticated),
            // Not theirs: indistinguishable from absent.
            Who::Service => Err(NotFound),
            _ => Ok(()),
        };
        let got = env
            .orders()
            .get_order(as_who(&env, who, pb::GetOrderRequest { id: id.clone() }))
            .await
            .map(|_| ());
        check("GetOrder", who, got, expect);

        let expect = match who {
            Who::Anonymous => Err(Unauthenticated),
            _ => Ok(()),
        };
        let got = env
            .orders()
            .list_orders(as_who(&env, who, pb::ListOrdersRequest::default()))
            .await
            .map(|_| ());
        check("ListOrders", who, got, expect);

        let expect = match who {
            Who::Anonymous => Err(Unauthenticated),
            Who::Customer | Who::Service => Err(PermissionDenied),
            Who::Operator | Who::Admin => Ok(()),
        };
        let got = env
            .orders()
            .complete_order(as_who(
                &env,
                who,
                pb::CompleteOrderRequest { id: id.clone() },
            ))
            .await
            .map(|_| ());
        check("CompleteOrder", who, got, expect);

        let id = customers_order().await;
        let expect = match who {
            Who::Anonymous => Err(Unauthenticated),
            Who::Service => Err(NotFound),
            Who::Customer | Who::Operator | Who::Admin => Ok(()),
        };
        let got = env
            .orders()
            .cancel_order(as_who(
                &env,
                who,
                pb::CancelOrderRequest {
                    id,
                    reason: String::new(),
                },
            ))
            .await
            .map(|_| ());
        check("CancelOrder", who, got, expect);
    }

    // A token that is not a valid access token, and a malformed header.
    let bad = env
        .orders()
        .list_orders(with_token(pb::ListOrdersRequest::default(), "not-a-jwt"))
        .await;
    expect_code(bad, Unauthenticated);
    let mut req = Request::new(pb::ListOrdersRequest::default());
    req.metadata_mut()
        .insert("authorization", "Basic abc".parse().unwrap());
    expect_code(env.orders().list_orders(req).await, Unauthenticated);
    env.assert_books_balance().await;
}

pub async fn customers_see_only_their_own_orders(backend: Backend) {
    let env = Env::start(backend).await;
    let widget = env.product("widget", 100, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 100).await;
    let (c, o) = (&env.customer, &env.other);

    let mine = env.create(&c.token, "m1", &[(&widget, 1)]).await.unwrap();
    let theirs = env.create(&o.token, "t1", &[(&widget, 1)]).await.unwrap();

    // Get: own yes, someone else's is NOT_FOUND (as if absent); staff see both.
    assert_eq!(env.get(&c.token, &mine.id).await.unwrap().id, mine.id);
    expect_code(env.get(&c.token, &theirs.id).await, Code::NotFound);
    expect_code(env.get(&c.token, "no-such-order").await, Code::NotFound);
    expect_code(env.get(&c.token, "").await, Code::InvalidArgument);
    for staff in [&env.operator.token, &env.admin.token] {
        assert_eq!(env.get(staff, &theirs.id).await.unwrap().id, theirs.id);
    }

    // List: own only; naming oneself is fine, naming someone else is refused.
    let page = env
        .list(&c.token, pb::ListOrdersRequest::default())
        .await
        .unwrap();
    let ids: Vec<&str> = page.orders.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, vec![mine.id.as_str()]);
    let page = env
        .list(
            &c.token,
            pb::ListOrdersRequest {
                customer_id: c.id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.orders.len(), 1);
    expect_code(
        env.list(
            &c.token,
            pb::ListOrdersRequest {
                customer_id: o.id.clone(),
                ..Default::default()
            },
        )
        .await,
        Code::PermissionDenied,
    );

    // Staff: everyone's, or one customer's.
    let all = env
        .list(&env.operator.token, pb::ListOrdersRequest::default())
        .await
        .unwrap();
    assert_eq!(all.orders.len(), 2);
    let only = env
        .list(
            &env.operator.token,
            pb::ListOrdersRequest {
                customer_id: o.id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ids: Vec<&str> = only.orders.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, vec![theirs.id.as_str()]);
    env.assert_books_balance().await;
}

pub async fn list_filters_by_status_and_pages_newest_first(backend: Backend) {
    let env = Env::start(backend).await;
    let widget = env.product("widget", 100, "USD").await;
    let w = env.warehouse("w", 0.0, 0.0).await;
    env.restock(&widget, &w, 100).await;
    let c = env.customer.token.clone();
    let op = env.operator.token.clone();

    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            env.create(&c, &format!("p{i}"), &[(&widget, 1)])
                .await
                .unwrap(),
        );
    }
    env.complete(&op, &created[1].id).await.unwrap();
    env.cancel(&c, &created[2].id, "no").await.unwrap();
    env.cancel(&c, &created[3].id, "no").await.unwrap();

    // Page through everything two at a time: newest first, each order once.
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = env
            .list(
                &c,
                pb::ListOrdersRequest {
                    page_size: 2,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(page.orders.len() <= 2);
        seen.extend(page.orders.into_iter().map(|o| o.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let newest_first: Vec<String> = created.iter().rev().map(|o| o.id.clone()).collect();
    assert_eq!(seen, newest_first);

    let envr = &env;
    let by_status = |status: pb::OrderStatus, token: String| {
        let env = envr;
        async move {
            env.list(
                &token,
                pb::ListOrdersRequest {
                    status: status as i32,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .orders
        }
    };
    let pending = by_status(pb::OrderStatus::Pending, c.clone()).await;
    assert_eq!(pending.len(), 4);
    assert!(
        pending
            .iter()
            .all(|o| status_of(o) == pb::OrderStatus::Pending)
    );
    let completed = by_status(pb::OrderStatus::Completed, op.clone()).await;
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0].id, created[1].id);
    let cancelled = by_status(pb::OrderStatus::Cancelled, op.clone()).await;
    assert_eq!(cancelled.len(), 2);
    assert!(cancelled.iter().all(|o| o.cancel_reason == "no"));

    // A token only works with the filters it was issued for; bad values are named.
    let first = env
        .list(
            &op,
            pb::ListOrdersRequest {
                page_size: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!first.next_page_token.is_empty());
    let msg = expect_code(
        env.list(
            &op,
            pb::ListOrdersRequest {
                page_size: 1,
                page_token: first.next_page_token,
                status: pb::OrderStatus::Completed as i32,
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("page_token"), "{msg}");
    let msg = expect_code(
        env.list(
            &op,
            pb::ListOrdersRequest {
                status: 42,
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("status"), "{msg}");
    let msg = expect_code(
        env.list(
            &op,
            pb::ListOrdersRequest {
                page_size: -1,
                ..Default::default()
            },
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(msg.starts_with("page_size"), "{msg}");
    env.assert_books_balance().await;
}
