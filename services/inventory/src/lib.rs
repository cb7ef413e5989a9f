//! stockmesh inventory service.
