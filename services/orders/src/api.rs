//! gRPC handlers of `stockmesh.orders.v1.OrderService`: thin. Each one authenticates the
//! caller, applies the role rules of API.md that need no stored data, turns the message
//! into domain input, calls [`Orders`] and maps the result. Rules that depend on the order
//! (ownership) live in the domain, which answers NOT_FOUND for other people's orders.

use stockmesh::authn::{Caller, Verifier};
use stockmesh::error::invalid_field;
use stockmesh::events::Topic;
use stockmesh::pagination::Page;
use stockmesh::proto::orders::v1::order_service_server::OrderService;
use stockmesh::proto::orders::v1::{
    CancelOrderRequest, CancelOrderResponse, CompleteOrderRequest, CompleteOrderResponse,
    CreateOrderRequest, CreateOrderResponse, GetOrderRequest, GetOrderResponse,
    GetSalesReportRequest, GetSalesReportResponse, ListOrdersRequest, ListOrdersResponse, Order,
    OrderItem, OrderStatus, SalesReportGrouping, SalesReportRow, WatchOrdersRequest,
};
use stockmesh::proto::{from_timestamp, timestamp};
use tonic::{Request, Response, Status};

use crate::entity::order::Status as Stored;
use crate::orders::{ListFilter, Orders, Viewer};
use crate::reports::{self, Grouping, Period};
use crate::saga::{NewItem, NewOrder};
use crate::store::OrderRecord;
use crate::watch;

/// Longest accepted cancel reason.
const MAX_REASON_LEN: usize = 1000;

/// The OrderService implementation.
pub struct OrderApi {
    verifier: Verifier,
    orders: Orders,
}

impl OrderApi {
    pub fn new(verifier: Verifier, orders: Orders) -> Self {
        Self { verifier, orders }
    }
}

fn viewer(caller: &Caller) -> Viewer {
    Viewer {
        user_id: caller.user_id.clone(),
        staff: caller.is_staff(),
    }
}

/// An optional timestamp field; INVALID_ARGUMENT naming `field` when out of range.
fn instant(
    field: &str,
    ts: Option<&prost_types::Timestamp>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Status> {
    ts.map(|t| from_timestamp(t).ok_or_else(|| invalid_field(field, "is out of range")))
        .transpose()
}

fn required_id(id: &str) -> Result<&str, Status> {
    let id = id.trim();
    if id.is_empty() {
        Err(invalid_field("id", "is required"))
    } else {
        Ok(id)
    }
}

/// Runs a state-changing operation in its own task, so that a client that hangs up (or
/// whose deadline passes) does not cut it half-way: tonic drops a handler's future when
/// its call is cancelled, which for a saga would leave work for the reconciler. The
/// operation finishes either way and a retry finds its outcome.
async fn to_the_end<T: Send + 'static>(
    op: impl Future<Output = crate::Result<T>> + Send + 'static,
) -> Result<T, Status> {
    // The task stays in the call's span, so the saga's upstream calls are part of the
    // caller's trace.
    match tokio::spawn(tracing::Instrument::in_current_span(op)).await {
        Ok(result) => Ok(result?),
        Err(e) => Err(stockmesh::error::internal(format!(
            "order task failed: {e}"
        ))),
    }
}

/// The status clients see: work in flight on a pending order still shows PENDING.
pub(crate) fn client_status(status: Stored) -> OrderStatus {
    match status {
        Stored::Pending | Stored::Completing | Stored::Cancelling => OrderStatus::Pending,
        Stored::Completed => OrderStatus::Completed,
        Stored::Cancelled => OrderStatus::Cancelled,
        // Never shown (the domain hides them); the closest truthful answer.
        Stored::Creating | Stored::Aborting => OrderStatus::Unspecified,
    }
}

/// Stored statuses a client-facing status filter covers.
fn stored_statuses(status: OrderStatus) -> Vec<Stored> {
    match status {
        OrderStatus::Unspecified => vec![
            Stored::Pending,
            Stored::Completing,
            Stored::Cancelling,
            Stored::Completed,
            Stored::Cancelled,
        ],
        OrderStatus::Pending => vec![Stored::Pending, Stored::Completing, Stored::Cancelling],
        OrderStatus::Completed => vec![Stored::Completed],
        OrderStatus::Cancelled => vec![Stored::Cancelled],
    }
}

/// The wire form of an order.
pub fn to_proto(record: &OrderRecord) -> Order {
    let o = &record.order;
    Order {
        id: o.id.clone(),
        customer_id: o.customer_id.clone(),
        status: client_status(o.status) as i32,
        total_cents: o.total_cents,
        currency: o.currency.clone(),
        items: record
            .items
            .iter()
            .map(|i| OrderItem {
                product_id: i.product_id.clone(),
                product_name: i.product_name.clone(),
                quantity: i.quantity,
                unit_price_cents: i.unit_price_cents,
                warehouse_id: i.warehouse_id.clone(),
                reservation_id: i.reservation_id.clone(),
            })
            .collect(),
        cancel_reason: if o.status == Stored::Cancelled {
            o.cancel_reason.clone()
        } else {
            String::new()
        },
        request_id: o.request_id.clone(),
        created_at: Some(timestamp(o.created_at)),
        updated_at: Some(timestamp(o.updated_at)),
    }
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let caller = self.verifier.caller(&request).await?;
        let msg = request.into_inner();
        let requested = msg
            .customer_id
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty());
        let customer_id = match requested {
            Some(other) if other != caller.user_id => {
                if !caller.is_staff() {
                    return Err(Status::permission_denied(
                        "customer_id: only OPERATOR and ADMIN may order for another customer",
                    ));
                }
                other.to_string()
            }
            _ => caller.user_id.clone(),
        };
        let new = NewOrder {
            customer_id,
            request_id: msg.request_id,
            items: msg
                .items
                .into_iter()
                .map(|i| NewItem {
                    product_id: i.product_id.trim().to_string(),
                    quantity: i.quantity,
                })
                .collect(),
            latitude: msg.latitude,
            longitude: msg.longitude,
            warehouse_id: msg.warehouse_id.filter(|w| !w.trim().is_empty()),
        };
        let orders = self.orders.clone();
        let record = to_the_end(async move { orders.create(new).await }).await?;
        Ok(Response::new(CreateOrderResponse {
            order: Some(to_proto(&record)),
        }))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        let caller = self.verifier.caller(&request).await?;
        let msg = request.into_inner();
        let record = self
            .orders
            .get(&viewer(&caller), required_id(&msg.id)?)
            .await?;
        Ok(Response::new(GetOrderResponse {
            order: Some(to_proto(&record)),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let caller = self.verifier.caller(&request).await?;
        let msg = request.into_inner();
        let status = OrderStatus::try_from(msg.status)
            .map_err(|_| invalid_field("status", format!("unknown value {}", msg.status)))?;
        let wanted = msg.customer_id.trim();
        let customer_id = if caller.is_staff() {
            (!wanted.is_empty()).then(|| wanted.to_string())
        } else if wanted.is_empty() || wanted == caller.user_id {
            Some(caller.user_id.clone())
        } else {
            return Err(Status::permission_denied(
                "customer_id: customers may only list their own orders",
            ));
        };
        let page = Page::parse(
            msg.page_size,
            &msg.page_token,
            &[
                status.as_str_name(),
                customer_id.as_deref().unwrap_or_default(),
            ],
        )?;
        let filter = ListFilter {
            statuses: stored_statuses(status),
            customer_id,
        };
        let (records, next_page_token) = self.orders.list(&filter, &page).await?;
        Ok(Response::new(ListOrdersResponse {
            orders: records.iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn complete_order(
        &self,
        request: Request<CompleteOrderRequest>,
    ) -> Result<Response<CompleteOrderResponse>, Status> {
        let caller = self.verifier.caller(&request).await?;
        caller.require_staff()?;
        let msg = request.into_inner();
        let id = required_id(&msg.id)?.to_string();
        let orders = self.orders.clone();
        let record = to_the_end(async move { orders.complete(&id).await }).await?;
        Ok(Response::new(CompleteOrderResponse {
            order: Some(to_proto(&record)),
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<CancelOrderResponse>, Status> {
        let caller = self.verifier.caller(&request).await?;
        let msg = request.into_inner();
        if msg.reason.len() > MAX_REASON_LEN {
            return Err(invalid_field(
                "reason",
                format!("must be at most {MAX_REASON_LEN} bytes"),
            ));
        }
        let id = required_id(&msg.id)?.to_string();
        let (orders, viewer) = (self.orders.clone(), viewer(&caller));
        let record =
            to_the_end(async move { orders.cancel(&viewer, &id, &msg.reason).await }).await?;
        Ok(Response::new(CancelOrderResponse {
            order: Some(to_proto(&record)),
        }))
    }

    type WatchOrdersStream = watch::WatchOrdersStream;

    async fn watch_orders(
        &self,
        request: Request<WatchOrdersRequest>,
    ) -> Result<Response<Self::WatchOrdersStream>, Status> {
        let caller = self.verifier.caller(&request).await?;
        let msg = request.into_inner();
        let feed = self.orders.events().feed(Topic::OrderStatusChanged);
        Ok(Response::new(watch::open(
            &feed,
            viewer(&caller),
            caller.expires_at,
            &msg.after_event_id,
        )))
    }

    async fn get_sales_report(
        &self,
        request: Request<GetSalesReportRequest>,
    ) -> Result<Response<GetSalesReportResponse>, Status> {
        self.verifier.caller(&request).await?.require_staff()?;
        let msg = request.into_inner();
        let grouping = match SalesReportGrouping::try_from(msg.group_by) {
            Ok(SalesReportGrouping::Unspecified | SalesReportGrouping::Day) => Grouping::Day,
            Ok(SalesReportGrouping::Product) => Grouping::Product,
            Err(_) => {
                return Err(invalid_field(
                    "group_by",
                    format!("unknown value {}", msg.group_by),
                ));
            }
        };
        let period = Period::new(
            instant("start_time", msg.start_time.as_ref())?,
            instant("end_time", msg.end_time.as_ref())?,
            chrono::Utc::now(),
        )?;
        let report = reports::sales(self.orders.db(), grouping, period).await?;
        Ok(Response::new(GetSalesReportResponse {
            rows: report
                .rows
                .into_iter()
                .map(|r| SalesReportRow {
                    day: r.day,
                    product_id: r.product_id,
                    product_name: r.product_name,
                    orders: r.orders,
                    units: r.units,
                    revenue_cents: r.revenue_cents,
                })
                .collect(),
            total_orders: report.total_orders,
            total_units: report.total_units,
            total_revenue_cents: report.total_revenue_cents,
            currency: report.currency,
        }))
    }
}
