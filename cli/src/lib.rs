//! cli lib
