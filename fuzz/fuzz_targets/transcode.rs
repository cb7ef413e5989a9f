//! REST → gRPC transcoding (`transcode::request`) for every real route: path values,
//! query string and JSON body as a client sends them. Never a panic; a request that
//! transcodes frames and decodes back to the same message (`encode_frame`,
//! `decode_frame`); any bytes that decode as the route's response type serialise to
//! valid JSON (`response_json`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage};
use stockmesh_gateway::routes::{Route, Routes};
use stockmesh_gateway::transcode;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    route: u16,
    values: Vec<String>,
    query: Option<&'a str>,
    body: &'a [u8],
}

fn routes() -> &'static Vec<Route> {
    static R: OnceLock<Vec<Route>> = OnceLock::new();
    R.get_or_init(|| {
        let pool = DescriptorPool::decode(stockmesh::proto::FILE_DESCRIPTOR_SET).expect("pool");
        Routes::from_pool(&pool)
            .expect("routes")
            .iter()
            .cloned()
            .collect()
    })
}

fuzz_target!(|input: Input<'_>| {
    let routes = routes();
    let route = &routes[usize::from(input.route) % routes.len()];
    let mut values = input.values;
    values.resize(route.template.variables().len(), String::new());
    if let Ok(msg) = transcode::request(route, values, input.query, input.body) {
        assert_eq!(msg.descriptor(), route.method.input());
        let frame = transcode::encode_frame(&msg);
        let payload = transcode::decode_frame(frame).expect("one uncompressed frame");
        assert_eq!(payload.as_ref(), msg.encode_to_vec().as_slice());
        let back = DynamicMessage::decode(route.method.input(), payload).expect("decodes");
        assert_eq!(back.encode_to_vec(), msg.encode_to_vec());
    }
    if let Ok(reply) = DynamicMessage::decode(route.method.output(), input.body)
        && let Ok(json) = transcode::response_json(route, &reply)
    {
        serde_json::from_slice::<serde_json::Value>(&json).expect("valid JSON");
    }
});
