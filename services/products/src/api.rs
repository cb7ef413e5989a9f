//! The gRPC handlers of `stockmesh.products.v1.ProductService`: decode, authorise, call the
//! [`Catalog`], encode. No catalog rules live here.
//!
//! Access (API.md): reads are public — but a token that is present and invalid is still
//! UNAUTHENTICATED, so a client never mistakes a broken token for an anonymous call;
//! catalog writes need OPERATOR (or ADMIN); DeleteProduct needs ADMIN; BatchGetProducts
//! needs any signed-in caller, service identities included. Authorisation runs before
//! validation, so an unauthorised caller learns nothing about the request's contents.

use std::sync::{Arc, OnceLock};

use stockmesh::authn::{Caller, Verifier};
use stockmesh::pagination::Page;
use stockmesh::proto::products::v1 as pb;
use stockmesh::proto::products::v1::product_service_server::ProductService;
use stockmesh::proto::timestamp;
use tonic::{Request, Response, Status};

use crate::catalog::{
    Catalog, NewProduct, NewSupplier, NewVariable, ProductFilter, SUPPLIERS_FINGERPRINT,
    VARIABLES_FINGERPRINT,
};
use crate::entity::{product, supplier, variable};
use crate::error::Error;
use crate::mask;

/// Where the handlers find the catalog once start-up (migrations) is done; until then
/// every ProductService call is UNAVAILABLE, matching health's NOT_SERVING.
pub type Ready = Arc<OnceLock<Catalog>>;

/// The ProductService implementation.
pub struct ProductApi {
    ready: Ready,
    verifier: Verifier,
}

impl ProductApi {
    pub fn new(ready: Ready, verifier: Verifier) -> Self {
        Self { ready, verifier }
    }

    fn catalog(&self) -> Result<&Catalog, Status> {
        self.ready
            .get()
            .ok_or_else(|| Status::unavailable("products is starting up"))
    }

    /// Public RPCs: anyone, but a bad token is refused.
    async fn public<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.verifier.optional_caller(req).await?;
        Ok(())
    }

    /// Any valid token, whatever its role.
    async fn signed_in<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        self.verifier.caller(req).await
    }

    /// OPERATOR or ADMIN.
    async fn staff<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let caller = self.verifier.caller(req).await?;
        caller.require_staff()?;
        Ok(caller)
    }

    /// ADMIN only (`require` always admits ADMIN).
    async fn admin<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let caller = self.verifier.caller(req).await?;
        caller.require(&[])?;
        Ok(caller)
    }
}

fn product_pb(m: product::Model) -> pb::Product {
    pb::Product {
        id: m.id,
        sku: m.sku,
        name: m.name,
        description: m.description,
        price_cents: m.price_cents,
        currency: m.currency,
        supplier_id: m.supplier_id.unwrap_or_default(),
        created_at: Some(timestamp(m.created_at)),
        updated_at: Some(timestamp(m.updated_at)),
    }
}

fn supplier_pb(m: supplier::Model) -> pb::Supplier {
    pb::Supplier {
        id: m.id,
        name: m.name,
        contact_email: m.contact_email,
        phone: m.phone,
        created_at: Some(timestamp(m.created_at)),
        updated_at: Some(timestamp(m.updated_at)),
    }
}

fn variable_pb(m: variable::Model) -> pb::Variable {
    pb::Variable {
        id: m.id,
        name: m.name,
        unit: m.unit,
        created_at: Some(timestamp(m.created_at)),
    }
}

#[tonic::async_trait]
impl ProductService for ProductApi {
    async fn create_product(
        &self,
        req: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::CreateProductResponse>, Status> {
        let caller = self.staff(&req).await?;
        let r = req.into_inner();
        let product = self
            .catalog()?
            .create_product(NewProduct {
                sku: r.sku,
                name: r.name,
                description: r.description,
                price_cents: r.price_cents,
                currency: r.currency,
                supplier_id: r.supplier_id,
            })
            .await?;
        tracing::info!(product = %product.id, sku = %product.sku, by = %caller.email, "product created");
        Ok(Response::new(pb::CreateProductResponse {
            product: Some(product_pb(product)),
        }))
    }

    async fn get_product(
        &self,
        req: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        self.public(&req).await?;
        let product = self.catalog()?.get_product(&req.get_ref().id).await?;
        Ok(Response::new(pb::GetProductResponse {
            product: Some(product_pb(product)),
        }))
    }

    async fn get_product_by_name(
        &self,
        req: Request<pb::GetProductByNameRequest>,
    ) -> Result<Response<pb::GetProductByNameResponse>, Status> {
        self.public(&req).await?;
        let product = self
            .catalog()?
            .get_product_by_name(&req.get_ref().name)
            .await?;
        Ok(Response::new(pb::GetProductByNameResponse {
            product: Some(product_pb(product)),
        }))
    }

    async fn list_products(
        &self,
        req: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        self.public(&req).await?;
        let r = req.into_inner();
        let filter = ProductFilter {
            name_contains: r.name_contains,
            supplier_id: r.supplier_id,
        };
        let page = Page::parse(r.page_size, &r.page_token, &filter.fingerprint())?;
        let (rows, next_page_token) = self.catalog()?.list_products(&filter, &page).await?;
        Ok(Response::new(pb::ListProductsResponse {
            products: rows.into_iter().map(product_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_product(
        &self,
        req: Request<pb::UpdateProductRequest>,
    ) -> Result<Response<pb::UpdateProductResponse>, Status> {
        let caller = self.staff(&req).await?;
        let r = req.into_inner();
        let sent = r
            .product
            .ok_or_else(|| Error::invalid("product", "required"))?;
        let patch = mask::product_patch(&sent, r.update_mask.as_ref())?;
        let product = self.catalog()?.update_product(&sent.id, patch).await?;
        tracing::info!(product = %product.id, by = %caller.email, "product updated");
        Ok(Response::new(pb::UpdateProductResponse {
            product: Some(product_pb(product)),
        }))
    }

    async fn delete_product(
        &self,
        req: Request<pb::DeleteProductRequest>,
    ) -> Result<Response<pb::DeleteProductResponse>, Status> {
        let caller = self.admin(&req).await?;
        let id = &req.get_ref().id;
        self.catalog()?.delete_product(id).await?;
        tracing::info!(product = %id, by = %caller.email, "product deleted");
        Ok(Response::new(pb::DeleteProductResponse {}))
    }

    async fn batch_get_products(
        &self,
        req: Request<pb::BatchGetProductsRequest>,
    ) -> Result<Response<pb::BatchGetProductsResponse>, Status> {
        // Internal (issue 3): the orders saga's price snapshot; services and ADMIN only.
        self.signed_in(&req).await?.require_service()?;
        stockmesh::tls::require_mesh_caller(&req)?;
        let products = self
            .catalog()?
            .batch_get_products(&req.get_ref().ids)
            .await?;
        Ok(Response::new(pb::BatchGetProductsResponse {
            products: products.into_iter().map(product_pb).collect(),
        }))
    }

    async fn create_supplier(
        &self,
        req: Request<pb::CreateSupplierRequest>,
    ) -> Result<Response<pb::CreateSupplierResponse>, Status> {
        let caller = self.staff(&req).await?;
        let r = req.into_inner();
        let supplier = self
            .catalog()?
            .create_supplier(NewSupplier {
                name: r.name,
                contact_email: r.contact_email,
                phone: r.phone,
            })
            .await?;
        tracing::info!(supplier = %supplier.id, by = %caller.email, "supplier created");
        Ok(Response::new(pb::CreateSupplierResponse {
            supplier: Some(supplier_pb(supplier)),
        }))
    }

    async fn get_supplier(
        &self,
        req: Request<pb::GetSupplierRequest>,
    ) -> Result<Response<pb::GetSupplierResponse>, Status> {
        self.public(&req).await?;
        let supplier = self.catalog()?.get_supplier(&req.get_ref().id).await?;
        Ok(Response::new(pb::GetSupplierResponse {
            supplier: Some(supplier_pb(supplier)),
        }))
    }

    async fn list_suppliers(
        &self,
        req: Request<pb::ListSuppliersRequest>,
    ) -> Result<Response<pb::ListSuppliersResponse>, Status> {
        self.public(&req).await?;
        let r = req.get_ref();
        let page = Page::parse(r.page_size, &r.page_token, &SUPPLIERS_FINGERPRINT)?;
        let (rows, next_page_token) = self.catalog()?.list_suppliers(&page).await?;
        Ok(Response::new(pb::ListSuppliersResponse {
            suppliers: rows.into_iter().map(supplier_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_supplier(
        &self,
        req: Request<pb::UpdateSupplierRequest>,
    ) -> Result<Response<pb::UpdateSupplierResponse>, Status> {
        let caller = self.staff(&req).await?;
        let r = req.into_inner();
        let sent = r
            .supplier
            .ok_or_else(|| Error::invalid("supplier", "required"))?;
        let patch = mask::supplier_patch(&sent, r.update_mask.as_ref())?;
        let supplier = self.catalog()?.update_supplier(&sent.id, patch).await?;
        tracing::info!(supplier = %supplier.id, by = %caller.email, "supplier updated");
        Ok(Response::new(pb::UpdateSupplierResponse {
            supplier: Some(supplier_pb(supplier)),
        }))
    }

    async fn delete_supplier(
        &self,
        req: Request<pb::DeleteSupplierRequest>,
    ) -> Result<Response<pb::DeleteSupplierResponse>, Status> {
        let caller = self.staff(&req).await?;
        let id = &req.get_ref().id;
        self.catalog()?.delete_supplier(id).await?;
        tracing::info!(supplier = %id, by = %caller.email, "supplier deleted");
        Ok(Response::new(pb::DeleteSupplierResponse {}))
    }

    async fn create_variable(
        &self,
        req: Request<pb::CreateVariableRequest>,
    ) -> Result<Response<pb::CreateVariableResponse>, Status> {
        let caller = self.staff(&req).await?;
        let r = req.into_inner();
        let variable = self
            .catalog()?
            .create_variable(NewVariable {
                name: r.name,
                unit: r.unit,
            })
            .await?;
        tracing::info!(variable = %variable.id, by = %caller.email, "variable created");
        Ok(Response::new(pb::CreateVariableResponse {
            variable: Some(variable_pb(variable)),
        }))
    }

    async fn get_variable(
        &self,
        req: Request<pb::GetVariableRequest>,
    ) -> Result<Response<pb::GetVariableResponse>, Status> {
        self.public(&req).await?;
        let variable = self.catalog()?.get_variable(&req.get_ref().id).await?;
        Ok(Response::new(pb::GetVariableResponse {
            variable: Some(variable_pb(variable)),
        }))
    }

    async fn list_variables(
        &self,
        req: Request<pb::ListVariablesRequest>,
    ) -> Result<Response<pb::ListVariablesResponse>, Status> {
        self.public(&req).await?;
        let r = req.get_ref();
        let page = Page::parse(r.page_size, &r.page_token, &VARIABLES_FINGERPRINT)?;
        let (rows, next_page_token) = self.catalog()?.list_variables(&page).await?;
        Ok(Response::new(pb::ListVariablesResponse {
            variables: rows.into_iter().map(variable_pb).collect(),
            next_page_token,
        }))
    }
}
