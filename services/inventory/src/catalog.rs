//! What inventory needs to know from ProductService: does a product exist, does a
//! variable exist, and (for the stock report) the products themselves. Calls go through
//! the kernel's outbound client (deadline, and whatever resilience the stack adds), never
//! with a user token: GetProduct and GetVariable are public, and BatchGetProducts, which
//! is internal, is called as the inventory *service identity*.
//!
//! BatchGetProducts fails the whole call when any id is missing, while the report wants
//! the products that do exist: a chunk answered NOT_FOUND is split in halves until the
//! missing ids stand alone, so k deleted products cost about 2·k·log2(chunk) calls more
//! (none when nothing is deleted), without relying on the wording of the error message.
//!
//! Variables are never deleted, so a variable id once confirmed is cached for the life of
//! the process and recording more readings of it needs no upstream call.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use stockmesh::client::UpstreamChannel;
use stockmesh::identity::ServiceIdentity;
use stockmesh::proto::products::v1::product_service_client::ProductServiceClient;
use stockmesh::proto::products::v1::{
    BatchGetProductsRequest, GetProductRequest, GetVariableRequest, Product,
};
use tonic::Code;

use crate::error::{Error, Result};

/// Most ids per BatchGetProducts call (ProductService's limit).
pub const BATCH_MAX: usize = 500;

pub struct Catalog {
    client: ProductServiceClient<UpstreamChannel>,
    identity: Arc<ServiceIdentity>,
    known_variables: Mutex<HashSet<String>>,
}

impl Catalog {
    pub fn new(channel: UpstreamChannel, identity: Arc<ServiceIdentity>) -> Self {
        Self {
            client: ProductServiceClient::new(channel.clone())
                .max_decoding_message_size(channel.max_message_bytes()),
            identity,
            known_variables: Mutex::new(HashSet::new()),
        }
    }

    /// The products with `ids` that exist, by id; ids the catalog does not know (deleted
    /// products) are simply absent. UNAVAILABLE when ProductService cannot answer.
    pub async fn products(&self, ids: &[String]) -> Result<HashMap<String, Product>> {
        let mut found = HashMap::with_capacity(ids.len());
        let mut todo: Vec<Vec<String>> = ids.chunks(BATCH_MAX).map(<[String]>::to_vec).collect();
        while let Some(chunk) = todo.pop() {
            let req = self
                .identity
                .request(BatchGetProductsRequest { ids: chunk.clone() })
                .await
                .map_err(|s| unavailable("products", &s))?;
            match self.client.clone().batch_get_products(req).await {
                Ok(resp) => {
                    for p in resp.into_inner().products {
                        found.insert(p.id.clone(), p);
                    }
                }
                Err(s) if s.code() == Code::NotFound => {
                    if chunk.len() > 1 {
                        let (a, b) = chunk.split_at(chunk.len() / 2);
                        todo.push(a.to_vec());
                        todo.push(b.to_vec());
                    }
                }
                Err(s) => return Err(unavailable("products", &s)),
            }
        }
        Ok(found)
    }

    /// Ok when the product exists; NOT_FOUND when ProductService says it does not;
    /// UNAVAILABLE when ProductService cannot say.
    pub async fn require_product(&self, product_id: &str) -> Result<()> {
        let result = self
            .client
            .clone()
            .get_product(GetProductRequest {
                id: product_id.to_string(),
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Err(Error::NotFound(format!(
                "product {product_id} does not exist"
            ))),
            Err(s) if s.code() == Code::InvalidArgument => Err(Error::invalid(
                "product_id",
                format!("refused by the product service: {}", s.message()),
            )),
            Err(s) => Err(unavailable("product", &s)),
        }
    }

    /// Ok when the variable exists; NOT_FOUND when ProductService says it does not;
    /// UNAVAILABLE when ProductService cannot say.
    pub async fn require_variable(&self, variable_id: &str) -> Result<()> {
        if self.is_known(variable_id) {
            return Ok(());
        }
        let result = self
            .client
            .clone()
            .get_variable(GetVariableRequest {
                id: variable_id.to_string(),
            })
            .await;
        match result {
            Ok(_) => {
                self.known_variables
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(variable_id.to_string());
                Ok(())
            }
            Err(s) if s.code() == Code::NotFound => Err(Error::NotFound(format!(
                "variable {variable_id} does not exist"
            ))),
            Err(s) if s.code() == Code::InvalidArgument => Err(Error::invalid(
                "variable_id",
                format!("refused by the product service: {}", s.message()),
            )),
            Err(s) => Err(unavailable("variable", &s)),
        }
    }

    fn is_known(&self, variable_id: &str) -> bool {
        self.known_variables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(variable_id)
    }
}

fn unavailable(what: &str, s: &tonic::Status) -> Error {
    tracing::warn!(code = ?s.code(), message = s.message(), "product service call failed");
    Error::Unavailable(format!(
        "cannot verify the {what} with the product service ({:?}: {})",
        s.code(),
        s.message()
    ))
}
