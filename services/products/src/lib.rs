//! stockmesh products service.
