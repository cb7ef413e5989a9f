//! stockmesh gateway.
