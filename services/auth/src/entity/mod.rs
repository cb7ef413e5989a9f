//! sea-orm entities of the auth database: users, refresh tokens and the token signing keys.

pub mod refresh_token;
pub mod signing_key;
pub mod user;
