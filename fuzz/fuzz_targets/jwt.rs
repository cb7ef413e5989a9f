//! Access-token parsing (`stockmesh::authn`): `authorization` header values through
//! [`bearer`], then tokens through [`Verifier::verify`] — garbage, and three
//! base64url parts whose JSON the fuzzer shapes, so header and claims parsing are reached.
//! Never a panic, and never an accepted token (nothing here holds the private key).
#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use stockmesh::authn::{Jwk, Verifier, bearer};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// Raw bytes of an `authorization` header.
    header: &'a [u8],
    /// A token as sent.
    raw: &'a str,
    /// JOSE header, claims and signature, base64url-encoded into a token.
    parts: (&'a [u8], &'a [u8], &'a [u8]),
}

/// A verifier that knows one real Ed25519 public key under `kid` "k1" (RFC 8037's
/// example key), as every service knows auth's.
fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        Verifier::with_keys(&[Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
            kid: "k1".into(),
            alg: "EdDSA".into(),
            r#use: "sig".into(),
        }])
        .expect("the example key is valid")
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|input: Input<'_>| {
    let v = verifier();
    let mut md = tonic::metadata::MetadataMap::new();
    if let Ok(value) = tonic::metadata::MetadataValue::try_from(input.header) {
        md.insert("authorization", value);
        if let Ok(Some(token)) = bearer(&md) {
            assert!(!token.is_empty());
            assert!(runtime().block_on(v.verify(token)).is_err());
        }
    }
    assert!(runtime().block_on(v.verify(input.raw)).is_err());
    let (h, c, s) = input.parts;
    let token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(h),
        URL_SAFE_NO_PAD.encode(c),
        URL_SAFE_NO_PAD.encode(s)
    );
    assert!(runtime().block_on(v.verify(&token)).is_err());
});
