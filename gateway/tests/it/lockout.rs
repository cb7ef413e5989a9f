//! The lockout attack from the edge: anonymous wrong-password Logins for the service
//! identities and for the admin must not stop order taking nor lock the admin out for
//! anyone but the attacker.

use http::Method;
use serde_json::json;
use stockmesh::Target;
use stockmesh::identity::service_email;
use stockmesh::testing::{Backend, TestMesh};

use crate::support::{Env, unique};

const ATTACKER: &str = "203.0.113.7";

/// One REST login as `client` (an `X-Forwarded-For` the gateway trusts here).
async fn login_as(env: &Env, client: &str, email: &str, password: &str) -> (u16, String) {
    let body = json!({"email": email, "password": password}).to_string();
    let resp = env
        .send(
            Method::POST,
            "/v1/auth/login",
            &[
                ("content-type", "application/json"),
                ("x-forwarded-for", client),
            ],
            body,
        )
        .await;
    let token = resp.json()["accessToken"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (resp.status.as_u16(), token)
}

/// A round of the attack: a wrong password for every service identity and the admin.
async fn attack(env: &Env) -> Vec<(String, u16)> {
    let mut answers = Vec::new();
    for email in [
        service_email(Target::Orders),
        service_email(Target::Inventory),
        service_email(Target::Gateway),
        TestMesh::ADMIN_EMAIL.to_string(),
    ] {
        let (status, _) = login_as(env, ATTACKER, &email, "wrong-password").await;
        answers.push((email, status));
    }
    answers
}

/// Service tokens last 2 s (renewed every second) while an attacker keeps sending wrong
/// passwords for every service account and the admin: every order still goes through,
/// the service emails are refused by Login without being counted, and only the
/// attacker's own client is throttled on the admin account.
pub async fn edge_logins_cannot_lock_out_services_or_admin(backend: Backend) {
    let env = Env::start_tweaked(
        backend,
        |c| {
            c.auth.access_token_ttl_secs = 2;
            c.auth.login_burst = 3;
            c.auth.login_per_minute = 1;
        },
        |c| {
            c.gateway.trusted_proxies = vec!["127.0.0.1".into()];
            // The attack must reach auth, not stop at the gateway's own limit.
            c.gateway.rate_limit_rps = 0;
        },
    )
    .await;
    // Access tokens last 2 s here: sign in again rather than use the one from start-up.
    let admin = env
        .login(TestMesh::ADMIN_EMAIL, TestMesh::ADMIN_PASSWORD)
        .await;
    let pid = env
        .rest(
            Method::POST,
            "/v1/products",
            Some(&admin),
            Some(json!({"sku": unique("SKU"), "name": unique("Lamp"), "priceCents": "2500"})),
        )
        .await
        .ok()["product"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let warehouse = env
        .rest(
            Method::POST,
            "/v1/warehouses",
            Some(&admin),
            Some(json!({"name": unique("Depot"), "address": "1 Road", "latitude": 48.1, "longitude": 11.5})),
        )
        .await
        .ok()["warehouse"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    env.rest(
        Method::POST,
        &format!("/v1/stock/{pid}:restock"),
        Some(&admin),
        Some(json!({"warehouseId": warehouse, "quantity": "100", "requestId": unique("restock")})),
    )
    .await
    .ok();
    let customer_email = format!("{}@example.com", unique("buyer"));
    env.rest(
        Method::POST,
        "/v1/auth/register",
        None,
        Some(json!({"email": customer_email, "password": "correct-horse-battery", "displayName": "Buyer"})),
    )
    .await
    .ok();

    // Ten rounds of attack, so the admin's (email, attacker) pair is far over its burst.
    for _ in 0..10 {
        for (email, status) in attack(&env).await {
            if email == TestMesh::ADMIN_EMAIL {
                assert!(status == 401 || status == 429, "{email}: {status}");
            } else {
                assert_eq!(status, 400, "{email}: Login refuses service identities");
            }
        }
    }
    let (status, _) = login_as(
        &env,
        ATTACKER,
        TestMesh::ADMIN_EMAIL,
        TestMesh::ADMIN_PASSWORD,
    )
    .await;
    assert_eq!(
        status, 429,
        "the attacker's own client is locked, right password or not"
    );

    // Orders over four token lifetimes, the attack going on between them.
    let mut placed = 0;
    for round in 0..8 {
        attack(&env).await;
        let (status, customer) = login_as(
            &env,
            "198.51.100.20",
            &customer_email,
            "correct-horse-battery",
        )
        .await;
        assert_eq!(status, 200, "round {round}: the customer signs in");
        let order = env
            .rest(
                Method::POST,
                "/v1/orders",
                Some(&customer),
                Some(json!({
                    "requestId": unique("order"),
                    "items": [{"productId": pid, "quantity": 1}],
                })),
            )
            .await;
        assert_eq!(
            order.status.as_u16(),
            200,
            "round {round}: {:?}",
            order.json()
        );
        placed += 1;
        // Not synchronisation: time must pass for the 2 s service tokens to expire.
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    }
    assert_eq!(placed, 8);

    // The admin, from anywhere but the attacker's address, still signs in.
    let (status, token) = login_as(
        &env,
        "198.51.100.30",
        TestMesh::ADMIN_EMAIL,
        TestMesh::ADMIN_PASSWORD,
    )
    .await;
    assert_eq!(status, 200);
    assert!(!token.is_empty());
}

/// Many attacker addresses together exhaust the admin account's per-email cap: clients
/// that never signed in as the admin must then wait, but the admin's own machine — one
/// that signed in before — still gets in with the right password.
pub async fn distributed_guessing_spares_the_admins_known_clients(backend: Backend) {
    let env = Env::start_tweaked(
        backend,
        |c| {
            c.auth.login_burst = 2;
            c.auth.login_per_minute = 1;
        },
        |c| {
            c.gateway.trusted_proxies = vec!["127.0.0.1".into()];
            c.gateway.rate_limit_rps = 0;
        },
    )
    .await;
    const HOME: &str = "198.51.100.30";
    let (status, _) = login_as(&env, HOME, TestMesh::ADMIN_EMAIL, TestMesh::ADMIN_PASSWORD).await;
    assert_eq!(
        status, 200,
        "the admin signs in from home before the attack"
    );

    // 40 addresses × 2 wrong passwords: twice the account's cap of 2 × 10.
    let mut refused = 0;
    for host in 1..=40 {
        let attacker = format!("203.0.113.{host}");
        for _ in 0..2 {
            let (status, _) =
                login_as(&env, &attacker, TestMesh::ADMIN_EMAIL, "wrong-password").await;
            assert!(status == 401 || status == 429, "{attacker}: {status}");
            refused += u32::from(status == 429);
        }
    }
    assert!(
        refused >= 55,
        "the per-email cap held: {refused} of 80 throttled"
    );

    let (status, _) = login_as(
        &env,
        "198.51.100.99",
        TestMesh::ADMIN_EMAIL,
        TestMesh::ADMIN_PASSWORD,
    )
    .await;
    assert_eq!(
        status, 429,
        "a client never seen waits while the account is under attack"
    );
    let (status, token) =
        login_as(&env, HOME, TestMesh::ADMIN_EMAIL, TestMesh::ADMIN_PASSWORD).await;
    assert_eq!(status, 200, "the admin's known client still signs in");
    assert!(!token.is_empty());
}
