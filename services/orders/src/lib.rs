//! stockmesh orders service.
