//! stockmesh auth service.
