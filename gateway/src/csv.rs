//! CSV answers of REST reads: the one convention for downloading a report.
//!
//! A REST `GET` whose response message has a repeated message field `rows` (the reports:
//! `GET /v1/reports/sales`, `GET /v1/reports/stock`) answers `text/csv` when the client's
//! `Accept` names `text/csv` at least as high as JSON: one header line of the row
//! message's proto3 JSON field names (lowerCamelCase, declaration order), then one line
//! per element of `rows`, CRLF-terminated with RFC 4180 quoting, and
//! `Content-Disposition: attachment; filename="<last path segment>.csv"`. Each cell is
//! what the JSON answer of the same request holds for that field, unquoted: 64-bit
//! integers as plain numbers, enums by name, booleans as `true`/`false`, timestamps in
//! RFC 3339, nested values as compact JSON. The other fields of the response (totals,
//! currency) are not in the CSV; the JSON answer has them.
//!
//! A request whose `Accept` names `text/csv` on a route that cannot answer it, and admits
//! nothing the route can answer, gets 406 naming what the route answers; an `Accept`
//! that also admits JSON (or SSE/NDJSON on a stream) gets that, as before. The check runs
//! before the upstream is called, so a refused request does nothing.
//!
//! Cells are not altered to defuse spreadsheet formulas (a leading `=`, `+`, `-`, `@`):
//! the CSV must equal the API's numbers, negative amounts included, and the text in the
//! reports (product and warehouse names) is written by staff.

use axum::body::Body;
use http::{HeaderMap, HeaderValue, Method, Response, header};
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, SerializeOptions,
};
use serde_json::Value as Json;

use crate::error::Error;
use crate::routes::Route;

/// The media type of a CSV answer.
pub const MEDIA_TYPE: &str = "text/csv";
/// The name of the repeated message field a CSV answer lists.
pub const ROWS: &str = "rows";

/// How a REST call of a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// As it always does (JSON, or SSE/NDJSON on a stream).
    Usual,
    /// text/csv.
    Csv,
}

/// The `rows` field of `output` when it is a repeated message field.
fn rows_field(output: &MessageDescriptor) -> Option<FieldDescriptor> {
    let field = output.get_field_by_name(ROWS)?;
    (field.is_list() && matches!(field.kind(), Kind::Message(_))).then_some(field)
}

/// Whether `route` can answer text/csv (documented as such in OpenAPI).
pub fn answers_csv(route: &Route) -> bool {
    route.http_method == Method::GET
        && !route.method.is_server_streaming()
        && route.response_body.is_none()
        && rows_field(&route.method.output()).is_some()
}

/// The OpenAPI media type object of the CSV answer of a route with `output`.
pub fn openapi_content(output: &MessageDescriptor) -> serde_json::Value {
    let header: Vec<String> = rows_field(output)
        .and_then(|f| match f.kind() {
            Kind::Message(row) => Some(row.fields().map(|f| f.json_name().to_string()).collect()),
            _ => None,
        })
        .unwrap_or_default();
    serde_json::json!({
        "schema": {
            "type": "string",
            "description": format!(
                "With `Accept: text/csv`: RFC 4180 CSV of `rows`, one header line ({}) and \
                 one line per row, each cell as in the JSON answer (64-bit integers as plain \
                 numbers, enums by name); sent as an attachment named after the path's last \
                 segment.",
                header.join(",")
            ),
        },
    })
}

/// The media types `route` answers with.
fn offered(route: &Route) -> Vec<&'static str> {
    if route.method.is_server_streaming() {
        vec!["text/event-stream", "application/x-ndjson"]
    } else if answers_csv(route) {
        vec!["application/json", MEDIA_TYPE]
    } else {
        vec!["application/json"]
    }
}

/// One media range of an `Accept` header and its quality.
#[derive(Debug, Clone, PartialEq)]
struct Range {
    essence: String,
    q: f32,
}

fn ranges(headers: &HeaderMap) -> Vec<Range> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let essence = parts.next()?.trim().to_ascii_lowercase();
            if essence.is_empty() {
                return None;
            }
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .find_map(|v| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            Some(Range { essence, q })
        })
        .collect()
}

/// The quality `ranges` give `media_type`: that of the most specific range matching it
/// (exact, then `type/*`, then `*/*`); 0 when none does.
fn quality(ranges: &[Range], media_type: &str) -> f32 {
    let major = media_type.split('/').next().unwrap_or("");
    let wildcard = format!("{major}/*");
    [media_type, wildcard.as_str(), "*/*"]
        .iter()
        .find_map(|want| ranges.iter().find(|r| r.essence == *want).map(|r| r.q))
        .unwrap_or(0.0)
}

/// Decides how a REST call of `route` answers, from its `Accept` header (see the module
/// docs). Only an `Accept` that names `text/csv` itself changes anything.
pub fn negotiate(route: &Route, headers: &HeaderMap) -> Result<Answer, Error> {
    let ranges = ranges(headers);
    let csv_q = ranges
        .iter()
        .find(|r| r.essence == MEDIA_TYPE)
        .map_or(0.0, |r| r.q);
    if csv_q <= 0.0 {
        return Ok(Answer::Usual);
    }
    let offered = offered(route);
    let best_other = offered
        .iter()
        .filter(|t| **t != MEDIA_TYPE)
        .map(|t| quality(&ranges, t))
        .fold(0.0_f32, f32::max);
    if answers_csv(route) && csv_q >= best_other {
        return Ok(Answer::Csv);
    }
    if best_other > 0.0 {
        return Ok(Answer::Usual);
    }
    Err(Error::NotAcceptable(format!(
        "{} answers {}; text/csv is answered only by GET routes whose response lists `rows` \
         (the reports)",
        route.label,
        offered.join(" or ")
    )))
}

/// The CSV answer for `msg` (the response of a route that [`answers_csv`]), named after
/// the last segment of the request `path`.
pub fn response(msg: &DynamicMessage, path: &str) -> Result<Response<Body>, Error> {
    let body = render(msg)?;
    let mut resp = Response::new(Body::from(body));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
    );
    let disposition = format!("attachment; filename=\"{}.csv\"", file_stem(path));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// The last path segment, with anything but `[A-Za-z0-9._-]` replaced by `_`.
fn file_stem(path: &str) -> String {
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let stem: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() {
        "report".into()
    } else {
        stem
    }
}

/// The CSV text of `msg`'s `rows`.
pub fn render(msg: &DynamicMessage) -> Result<Vec<u8>, Error> {
    let internal = |why: String| Error::Status(stockmesh::error::internal(why));
    let field = rows_field(&msg.descriptor())
        .ok_or_else(|| internal(format!("{} has no rows", msg.descriptor().full_name())))?;
    let Kind::Message(row_type) = field.kind() else {
        return Err(internal("rows is not a message field".into()));
    };
    let names: Vec<String> = row_type
        .fields()
        .map(|f| f.json_name().to_string())
        .collect();
    let mut out = String::with_capacity(256);
    line(&mut out, names.iter().map(String::as_str));
    // The same options as the JSON answer, so each cell is that answer's value.
    let options = SerializeOptions::new().skip_default_fields(false);
    let value = msg.get_field(&field);
    for row in value.as_list().unwrap_or_default() {
        let Some(row) = row.as_message() else {
            continue;
        };
        let mut json = serde_json::Serializer::new(Vec::new());
        row.serialize_with_options(&mut json, &options)
            .map_err(|e| internal(format!("row: {e}")))?;
        let json: Json = serde_json::from_slice(&json.into_inner())
            .map_err(|e| internal(format!("row: {e}")))?;
        let cells: Vec<String> = names.iter().map(|n| cell(json.get(n))).collect();
        line(&mut out, cells.iter().map(String::as_str));
    }
    Ok(out.into_bytes())
}

fn cell(value: Option<&Json>) -> String {
    match value {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(s)) => s.clone(),
        Some(Json::Bool(b)) => b.to_string(),
        Some(Json::Number(n)) => n.to_string(),
        Some(other) => other.to_string(),
    }
}

/// Appends one CSV record (RFC 4180: quoted when it holds a comma, quote, CR or LF; quotes
/// doubled; CRLF at the end).
fn line<'a>(out: &mut String, cells: impl Iterator<Item = &'a str>) {
    for (i, c) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if c.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&c.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(c);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use prost_reflect::{DescriptorPool, Value};

    use super::*;
    use crate::routes::{Lookup, Routes};

    fn routes() -> (DescriptorPool, Routes) {
        let pool = DescriptorPool::decode(stockmesh::proto::FILE_DESCRIPTOR_SET).unwrap();
        let routes = Routes::from_pool(&pool).unwrap();
        (pool, routes)
    }

    fn route<'a>(routes: &'a Routes, method: Method, path: &str) -> &'a Route {
        match routes.find(&method, path) {
            Lookup::Found(r, _) => r,
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn only_report_reads_answer_csv() {
        let (_, routes) = routes();
        let mut csv: Vec<&str> = routes
            .iter()
            .filter(|r| answers_csv(r))
            .map(|r| r.label.as_str())
            .collect();
        csv.sort();
        assert_eq!(csv, ["GET /v1/reports/sales", "GET /v1/reports/stock"]);
    }

    #[test]
    fn negotiation() {
        let (_, routes) = routes();
        let sales = route(&routes, Method::GET, "/v1/reports/sales");
        let products = route(&routes, Method::GET, "/v1/products");
        let watch = route(&routes, Method::GET, "/v1/stock:watch");
        let n = |r: &Route, a: &str| negotiate(r, &accept(a));
        for a in [
            "text/csv",
            "text/csv, application/json",
            "application/json;q=0.5, text/csv",
        ] {
            assert_eq!(n(sales, a).unwrap(), Answer::Csv, "{a}");
        }
        for a in [
            "application/json",
            "*/*",
            "text/*",
            "text/csv;q=0.5, application/json",
        ] {
            assert_eq!(n(sales, a).unwrap(), Answer::Usual, "{a}");
        }
        assert_eq!(negotiate(sales, &HeaderMap::new()).unwrap(), Answer::Usual);
        assert_eq!(n(products, "text/csv, */*;q=0.1").unwrap(), Answer::Usual);
        assert_eq!(
            n(watch, "text/csv, text/event-stream").unwrap(),
            Answer::Usual
        );
        for (r, a) in [
            (products, "text/csv"),
            (watch, "text/csv"),
            (products, "text/csv, application/json;q=0"),
        ] {
            let e = n(r, a).unwrap_err();
            assert_eq!(e.http_status(), http::StatusCode::NOT_ACCEPTABLE, "{a}");
            assert!(e.to_string().contains(&r.label), "{e}");
        }
        assert!(
            n(products, "text/csv")
                .unwrap_err()
                .to_string()
                .contains("application/json")
        );
    }

    #[test]
    fn rows_as_rfc4180_with_json_names() {
        let (pool, _) = routes();
        let resp = pool
            .get_message_by_name("stockmesh.orders.v1.GetSalesReportResponse")
            .unwrap();
        let row_type = pool
            .get_message_by_name("stockmesh.orders.v1.SalesReportRow")
            .unwrap();
        let mut row = DynamicMessage::new(row_type);
        row.set_field_by_name("product_id", Value::String("p,1".into()));
        row.set_field_by_name("product_name", Value::String("say \"hi\"\nthere".into()));
        row.set_field_by_name("revenue_cents", Value::I64(-12345678901));
        let mut msg = DynamicMessage::new(resp);
        msg.set_field_by_name("rows", Value::List(vec![Value::Message(row)]));
        msg.set_field_by_name("total_orders", Value::I64(7));
        let text = String::from_utf8(render(&msg).unwrap()).unwrap();
        assert_eq!(
            text,
            "day,productId,productName,orders,units,revenueCents\r\n\
             ,\"p,1\",\"say \"\"hi\"\"\nthere\",0,0,-12345678901\r\n"
        );
    }

    #[test]
    fn openapi_documents_csv_on_the_reports_only() {
        let (pool, routes) = routes();
        let doc = crate::openapi::document(&pool, &routes);
        let ok = |path: &str| doc["paths"][path]["get"]["responses"]["200"]["content"].clone();
        let sales = ok("/v1/reports/sales");
        assert!(sales["application/json"].is_object(), "{sales}");
        let described = sales[MEDIA_TYPE]["schema"]["description"].as_str().unwrap();
        assert!(
            described.contains("day,productId,productName,orders,units,revenueCents"),
            "{described}"
        );
        assert!(ok("/v1/reports/stock")[MEDIA_TYPE].is_object());
        assert!(ok("/v1/products")[MEDIA_TYPE].is_null());
    }

    #[test]
    fn file_names() {
        assert_eq!(file_stem("/v1/reports/sales"), "sales");
        assert_eq!(file_stem("/v1/reports/stock/"), "stock");
        assert_eq!(file_stem("/v1/x/a b\"c"), "a_b_c");
        assert_eq!(file_stem("/"), "report");
    }
}
