//! What inventory needs to know from ProductService: does a product exist, does a
//! variable exist. Calls go through the kernel's outbound client (deadline, and whatever
//! resilience the stack adds), without a user token: both RPCs are public.
//!
//! Variables are never deleted, so a variable id once confirmed is cached for the life of
//! the process and recording more readings of it needs no upstream call.

use std::collections::HashSet;
use std::sync::Mutex;

use stockmesh::client::UpstreamChannel;
use stockmesh::proto::products::v1::product_service_client::ProductServiceClient;
use stockmesh::proto::products::v1::{GetProductRequest, GetVariableRequest};
use tonic::Code;

use crate::error::{Error, Result};

pub struct Catalog {
    client: ProductServiceClient<UpstreamChannel>,
    known_variables: Mutex<HashSet<String>>,
}

impl Catalog {
    pub fn new(channel: UpstreamChannel) -> Self {
        Self {
            client: ProductServiceClient::new(channel.clone())
                .max_decoding_message_size(channel.max_message_bytes()),
            known_variables: Mutex::new(HashSet::new()),
        }
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
