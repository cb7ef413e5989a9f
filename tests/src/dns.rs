//! A DNS server on loopback whose answers the test sets: the scale-out drill points the
//! client's resolver at it (`STOCKMESH_DNS_NAMESERVER`) and changes a name's A records
//! while calls flow, as a Kubernetes headless Service does when replicas come and go.
//!
//! Messages are parsed and built with `hickory-proto` (the resolver's own codec); this
//! module only answers A/AAAA queries over UDP from a table, with a TTL of 0 so that
//! nothing caches an answer. It counts the queries it answered.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// A running fake DNS server.
pub struct FakeDns {
    pub addr: SocketAddr,
    records: Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>>,
    queries: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl FakeDns {
    /// Starts a server on an ephemeral UDP port of 127.0.0.1.
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let records: Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>> = Arc::default();
        let queries = Arc::new(AtomicUsize::new(0));
        let task = {
            let records = records.clone();
            let queries = queries.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                        return;
                    };
                    let Ok(query) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    let reply = answer(&query, &records);
                    queries.fetch_add(1, Ordering::SeqCst);
                    if let Ok(bytes) = reply.to_vec() {
                        let _ = socket.send_to(&bytes, peer).await;
                    }
                }
            })
        };
        Self {
            addr,
            records,
            queries,
            task,
        }
    }

    /// Makes `name` resolve to exactly `ips` (no records: NXDOMAIN).
    pub fn set(&self, name: &str, ips: &[Ipv4Addr]) {
        self.records.lock().unwrap().insert(key(name), ips.to_vec());
    }

    /// Queries answered so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(query: &Message, records: &Mutex<HashMap<String, Vec<Ipv4Addr>>>) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.message_type = MessageType::Response;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    let Some(q) = query.queries.first() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply;
    };
    reply.add_query(q.clone());
    let name: &Name = q.name();
    let ips = records.lock().unwrap().get(&key(&name.to_ascii())).cloned();
    match (ips, q.query_type()) {
        (None, _) => reply.metadata.response_code = ResponseCode::NXDomain,
        (Some(ips), RecordType::A) => {
            for ip in ips {
                reply.add_answer(Record::from_rdata(name.clone(), 0, RData::A(A(ip))));
            }
        }
        // A name we know, with no record of that type (AAAA): an empty NOERROR answer.
        (Some(_), _) => {}
    }
    reply
}
