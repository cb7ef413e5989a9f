//! Server streams translated message by message: the pump every translated stream runs
//! on (Connect's envelopes, [`crate::connect`], and REST's two formats here), and the REST
//! formats themselves.
//!
//! A REST route whose RPC is server-streaming (`GET /v1/stock:watch`,
//! `GET /v1/orders:watch`) answers, by the request's `Accept`:
//!
//! * `text/event-stream` → **Server-Sent Events**, one event per message:
//!   ```text
//!   id: <the message's event_id; the line is left out when it is empty>
//!   event: <the message's full type name, e.g. stockmesh.inventory.v1.WatchStockResponse>
//!   data: <the message as proto3 JSON, one line, default fields included>
//!   ```
//!   then, when the stream ends, `event: status` with `data: {"code":…,"message":…,
//!   "details":[]}` (the `google.rpc.Status` JSON of REST errors; code 0 when it ended
//!   cleanly). A `: ping` comment goes out every [`KEEPALIVE`] so proxies keep an idle
//!   stream open. A browser's `EventSource` reconnects by itself with `Last-Event-ID`,
//!   which the gateway puts into the request's `after_event_id`: the stream resumes after
//!   that event when the service still holds it.
//! * anything else → **newline-delimited JSON** (`application/x-ndjson`, grpc-gateway's
//!   shape): `{"result":<message>}` per line, and a last line `{"error":{"code":…,
//!   "message":…,"details":[]}}` when the stream ends with an error (nothing more when it
//!   ends cleanly).
//!
//! An error before the first message — a trailers-only answer such as UNAUTHENTICATED or
//! INVALID_ARGUMENT — is an ordinary REST error (status JSON with its HTTP status), so an
//! `EventSource` does not retry a request that cannot succeed.
//!
//! The pump never buffers more than one message; it ends the stream at the caller's
//! deadline when one was given (DEADLINE_EXCEEDED), records the final code for the access
//! log and metrics, and dropping the response (the client went away) drops the upstream
//! stream, which the upstream sees as a cancel.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, header};
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage, SerializeOptions};
use tokio::time::{Instant, Interval};
use tonic::{Code, Status};

use crate::observe::{Protocol, StatusSlot};
use crate::upstream::{Frames, Item};

/// How often an idle SSE stream gets a `: ping` comment.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// The SSE event name of the final status.
pub const STATUS_EVENT: &str = "status";

/// Turns the pieces of a stream into bytes on the wire.
pub trait Render: Send + 'static {
    /// One message (protobuf bytes of the method's output type). An error ends the stream
    /// with that status.
    fn message(&mut self, message: Bytes) -> Result<Bytes, Status>;
    /// A keep-alive, if the format has one.
    fn ping(&mut self) -> Option<Bytes> {
        None
    }
    /// The end of the stream (`status` may be OK).
    fn end(&mut self, status: &Status, trailers: &HeaderMap) -> Bytes;
}

/// How a pumped stream behaves besides rendering.
#[derive(Default)]
pub struct Options {
    /// End the stream with DEADLINE_EXCEEDED at this instant.
    pub deadline: Option<Instant>,
    /// Send [`Render::ping`] this often.
    pub keepalive: Option<Duration>,
    /// Where the final code goes (access log, metrics).
    pub slot: Option<StatusSlot>,
}

struct Pump<R> {
    frames: Frames,
    render: R,
    deadline: Option<Instant>,
    ping: Option<Interval>,
    slot: Option<StatusSlot>,
    done: bool,
}

enum Next {
    Item(Option<Item>),
    Deadline,
    Ping,
}

/// A response body that renders `frames` as they arrive; see the module docs.
pub fn pump(frames: Frames, render: impl Render, options: Options) -> Body {
    let ping = options
        .keepalive
        .map(|every| tokio::time::interval_at(Instant::now() + every, every));
    let pump = Pump {
        frames,
        render,
        deadline: options.deadline,
        ping,
        slot: options.slot,
        done: false,
    };
    Body::from_stream(futures::stream::unfold(pump, |mut p| async move {
        if p.done {
            return None;
        }
        loop {
            let next = tokio::select! {
                biased;
                item = p.frames.next() => Next::Item(item),
                () = until(p.deadline) => Next::Deadline,
                () = tick(&mut p.ping) => Next::Ping,
            };
            let (status, trailers) = match next {
                Next::Item(Some(Item::Message(m))) => match p.render.message(m) {
                    Ok(bytes) => return Some((Ok::<_, Infallible>(bytes), p)),
                    Err(status) => (status, HeaderMap::new()),
                },
                Next::Item(Some(Item::End(status, trailers))) => (status, trailers),
                Next::Item(None) => (
                    Status::internal("upstream stream ended without a status"),
                    HeaderMap::new(),
                ),
                Next::Deadline => (
                    Status::deadline_exceeded("the call's deadline passed"),
                    HeaderMap::new(),
                ),
                Next::Ping => match p.render.ping() {
                    Some(bytes) => return Some((Ok(bytes), p)),
                    None => continue,
                },
            };
            p.done = true;
            // Drops the upstream stream now (a cancel, when it had not ended).
            p.frames = Frames::ended(Status::ok(""), HeaderMap::new());
            if let Some(slot) = &p.slot {
                slot.set(status.code() as i32);
            }
            let bytes = p.render.end(&status, &trailers);
            return Some((Ok(bytes), p));
        }
    }))
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn tick(ping: &mut Option<Interval>) {
    match ping {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The two REST stream formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Sse,
    Ndjson,
}

impl Format {
    /// SSE when `Accept` names `text/event-stream`, else NDJSON.
    pub fn of(headers: &HeaderMap) -> Self {
        let wants_sse = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|e| e.trim().eq_ignore_ascii_case("text/event-stream"))
            });
        if wants_sse {
            Format::Sse
        } else {
            Format::Ndjson
        }
    }

    pub fn protocol(self) -> Protocol {
        match self {
            Format::Sse => Protocol::Sse,
            Format::Ndjson => Protocol::Ndjson,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Sse => "text/event-stream",
            Format::Ndjson => "application/x-ndjson",
        }
    }
}

/// The response of a REST server stream whose upstream answered with headers.
pub fn rest(
    format: Format,
    output: MessageDescriptor,
    frames: Frames,
    slot: Option<StatusSlot>,
) -> Response<Body> {
    let body = match format {
        Format::Sse => pump(
            frames,
            Sse::new(output),
            Options {
                keepalive: Some(KEEPALIVE),
                slot,
                ..Options::default()
            },
        ),
        Format::Ndjson => pump(
            frames,
            Ndjson { output },
            Options {
                slot,
                ..Options::default()
            },
        ),
    };
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers proxied responses unless told not to.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp.extensions_mut().insert(format.protocol());
    resp
}

/// The request field that `Last-Event-ID` fills.
pub const RESUME_FIELD: &str = "after_event_id";

/// Puts a `Last-Event-ID` header (an `EventSource` reconnecting) into the request's
/// `after_event_id`, over any value from the query string: the header is the newer.
pub fn resume_from(
    msg: &mut DynamicMessage,
    headers: &HeaderMap,
) -> Result<(), crate::error::Error> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(());
    };
    let id = value
        .to_str()
        .map_err(|_| crate::error::Error::field("Last-Event-ID", "not visible ASCII"))?
        .trim();
    if id.is_empty() {
        return Ok(());
    }
    let Some(field) = msg.descriptor().get_field_by_name(RESUME_FIELD) else {
        return Ok(());
    };
    msg.set_field(&field, prost_reflect::Value::String(id.to_string()));
    Ok(())
}

/// Proto3 JSON of one message, default fields included (like unary REST responses).
pub fn message_json(output: &MessageDescriptor, message: Bytes) -> Result<Vec<u8>, Status> {
    let msg = DynamicMessage::decode(output.clone(), message)
        .map_err(|e| Status::internal(format!("undecodable message from upstream: {e}")))?;
    to_json(&msg, &SerializeOptions::new().skip_default_fields(false))
}

pub fn to_json(msg: &DynamicMessage, options: &SerializeOptions) -> Result<Vec<u8>, Status> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::new(&mut out);
    msg.serialize_with_options(&mut ser, options)
        .map_err(|e| Status::internal(format!("cannot write JSON: {e}")))?;
    Ok(out)
}

/// The `google.rpc.Status` JSON of REST errors.
pub fn status_json(status: &Status) -> serde_json::Value {
    serde_json::json!({
        "code": status.code() as i32,
        "message": status.message(),
        "details": [],
    })
}

/// Server-Sent Events; see the module docs.
pub struct Sse {
    output: MessageDescriptor,
    event: String,
}

impl Sse {
    pub fn new(output: MessageDescriptor) -> Self {
        let event = output.full_name().to_string();
        Self { output, event }
    }
}

impl Render for Sse {
    fn message(&mut self, message: Bytes) -> Result<Bytes, Status> {
        let msg = DynamicMessage::decode(self.output.clone(), message)
            .map_err(|e| Status::internal(format!("undecodable message from upstream: {e}")))?;
        let json = to_json(&msg, &SerializeOptions::new().skip_default_fields(false))?;
        let mut out = Vec::with_capacity(json.len() + self.event.len() + 64);
        if let Some(id) = msg.get_field_by_name("event_id")
            && let Some(id) = id.as_str()
            && !id.is_empty()
            // An id with a line break would split the event.
            && !id.contains(['\n', '\r'])
        {
            out.extend_from_slice(b"id: ");
            out.extend_from_slice(id.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(self.event.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        // Compact serde_json output has no raw line breaks: one data line.
        out.extend_from_slice(&json);
        out.extend_from_slice(b"\n\n");
        Ok(Bytes::from(out))
    }

    fn ping(&mut self) -> Option<Bytes> {
        Some(Bytes::from_static(b": ping\n\n"))
    }

    fn end(&mut self, status: &Status, _: &HeaderMap) -> Bytes {
        Bytes::from(format!(
            "event: {STATUS_EVENT}\ndata: {}\n\n",
            status_json(status)
        ))
    }
}

/// Newline-delimited JSON; see the module docs.
pub struct Ndjson {
    output: MessageDescriptor,
}

impl Render for Ndjson {
    fn message(&mut self, message: Bytes) -> Result<Bytes, Status> {
        let json = message_json(&self.output, message)?;
        let mut out = Vec::with_capacity(json.len() + 12);
        out.extend_from_slice(b"{\"result\":");
        out.extend_from_slice(&json);
        out.extend_from_slice(b"}\n");
        Ok(Bytes::from(out))
    }

    fn end(&mut self, status: &Status, _: &HeaderMap) -> Bytes {
        if status.code() == Code::Ok {
            return Bytes::new();
        }
        let line = serde_json::json!({ "error": status_json(status) });
        Bytes::from(format!("{line}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::BodyExt;
    use prost::Message;
    use prost_reflect::DescriptorPool;
    use stockmesh::proto::inventory::v1 as pb;

    fn output() -> MessageDescriptor {
        DescriptorPool::decode(stockmesh::proto::FILE_DESCRIPTOR_SET)
            .unwrap()
            .get_message_by_name("stockmesh.inventory.v1.WatchStockResponse")
            .unwrap()
    }

    fn prefixed(msg: &impl Message) -> Bytes {
        let mut v = vec![0];
        v.extend_from_slice(&(msg.encoded_len() as u32).to_be_bytes());
        v.extend_from_slice(&msg.encode_to_vec());
        Bytes::from(v)
    }

    fn response(id: &str, event_id: &str, available: i64) -> pb::WatchStockResponse {
        pb::WatchStockResponse {
            stock: Some(pb::Stock {
                product_id: id.into(),
                total_available: available,
                ..Default::default()
            }),
            event_id: event_id.into(),
            cause: 0,
        }
    }

    /// A reply body: these data frames, then trailers with `code` — or, with `hang`, no
    /// end at all.
    fn frames(data: Vec<Bytes>, code: Option<Code>) -> Frames {
        let mut items: Vec<Result<Frame<Bytes>, Status>> =
            data.into_iter().map(|d| Ok(Frame::data(d))).collect();
        if let Some(code) = code {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", HeaderValue::from(code as i32));
            t.insert("grpc-message", HeaderValue::from_static("bye"));
            items.push(Ok(Frame::trailers(t)));
        }
        let ended = code.is_some();
        let stream = futures::stream::iter(items).chain(futures::stream::unfold(
            ended,
            |ended| async move {
                if ended {
                    None
                } else {
                    std::future::pending::<Option<(Result<Frame<Bytes>, Status>, bool)>>().await
                }
            },
        ));
        Frames::new(tonic::body::Body::new(http_body_util::StreamBody::new(
            stream,
        )))
    }

    use futures::StreamExt;

    async fn text(body: Body) -> String {
        String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn sse_events_have_ids_types_and_a_final_status() {
        let data = vec![
            prefixed(&response("p1", "", 3)),
            prefixed(&response("p1", "018f-e1", 2)),
        ];
        let slot = StatusSlot::new();
        let resp = rest(
            Format::Sse,
            output(),
            frames(data, Some(Code::Unavailable)),
            Some(slot.clone()),
        );
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
        let text = text(resp.into_body()).await;
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 3, "{text}");
        assert!(!events[0].contains("id:"), "{}", events[0]);
        assert!(
            events[0].starts_with("event: stockmesh.inventory.v1.WatchStockResponse\ndata: {"),
            "{}",
            events[0]
        );
        assert!(
            events[1].starts_with("id: 018f-e1\nevent: "),
            "{}",
            events[1]
        );
        let data: serde_json::Value =
            serde_json::from_str(events[1].split("data: ").nth(1).unwrap()).unwrap();
        assert_eq!(data["stock"]["totalAvailable"], "2");
        assert_eq!(data["eventId"], "018f-e1");
        // Defaults are present, as in unary REST.
        assert_eq!(data["cause"], "STOCK_CHANGE_CAUSE_UNSPECIFIED");
        assert_eq!(
            events[2],
            "event: status\ndata: {\"code\":14,\"details\":[],\"message\":\"bye\"}"
        );
        assert_eq!(slot.get(), Some(Code::Unavailable as i32));
    }

    #[tokio::test]
    async fn ndjson_lines_and_the_error_line() {
        let data = vec![prefixed(&response("p1", "e1", 1))];
        let resp = rest(
            Format::Ndjson,
            output(),
            frames(data.clone(), Some(Code::ResourceExhausted)),
            None,
        );
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/x-ndjson");
        let text = text(resp.into_body()).await;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["result"]["eventId"], "e1");
        assert_eq!(lines[1]["error"]["code"], 8);
        assert_eq!(lines[1]["error"]["message"], "bye");
        // A clean end adds nothing.
        let resp = rest(Format::Ndjson, output(), frames(data, Some(Code::Ok)), None);
        assert_eq!(text_lines(resp.into_body()).await, 1);
    }

    async fn text_lines(body: Body) -> usize {
        text(body).await.lines().count()
    }

    #[tokio::test(start_paused = true)]
    async fn idle_sse_streams_get_pings_and_deadlines_end_streams() {
        let resp = rest(Format::Sse, output(), frames(vec![], None), None);
        let mut body = resp.into_body().into_data_stream();
        let started = Instant::now();
        let first = body.next().await.unwrap().unwrap();
        assert_eq!(first.as_ref(), b": ping\n\n");
        assert!(started.elapsed() >= KEEPALIVE);
        let second = body.next().await.unwrap().unwrap();
        assert_eq!(second.as_ref(), b": ping\n\n");

        let slot = StatusSlot::new();
        let body = pump(
            frames(vec![prefixed(&response("p", "e", 1))], None),
            Ndjson { output: output() },
            Options {
                deadline: Some(Instant::now() + Duration::from_millis(300)),
                slot: Some(slot.clone()),
                ..Options::default()
            },
        );
        let text = text(body).await;
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("\"code\":4"), "{text}");
        assert_eq!(slot.get(), Some(Code::DeadlineExceeded as i32));
    }

    #[test]
    fn last_event_id_fills_after_event_id() {
        let input = DescriptorPool::decode(stockmesh::proto::FILE_DESCRIPTOR_SET)
            .unwrap()
            .get_message_by_name("stockmesh.inventory.v1.WatchStockRequest")
            .unwrap();
        let mut msg = DynamicMessage::new(input.clone());
        msg.set_field_by_name("after_event_id", prost_reflect::Value::String("old".into()));
        let mut h = HeaderMap::new();
        resume_from(&mut msg, &h).unwrap();
        assert_eq!(
            msg.get_field_by_name("after_event_id").unwrap().as_str(),
            Some("old")
        );
        h.insert("last-event-id", HeaderValue::from_static(" 018f-77 "));
        resume_from(&mut msg, &h).unwrap();
        assert_eq!(
            msg.get_field_by_name("after_event_id").unwrap().as_str(),
            Some("018f-77")
        );
    }

    #[test]
    fn accept_picks_the_format() {
        let mut h = HeaderMap::new();
        assert_eq!(Format::of(&h), Format::Ndjson);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, Text/Event-Stream;q=0.9"),
        );
        assert_eq!(Format::of(&h), Format::Sse);
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert_eq!(Format::of(&h), Format::Ndjson);
    }
}
