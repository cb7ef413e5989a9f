//! `stockmesh certs`: a development CA and one certificate per mesh identity, in the
//! layout `STOCKMESH_TLS_DIR` expects (that of cert-manager Secrets): `<dir>/ca.crt`,
//! `<dir>/<identity>/tls.crt`, `<dir>/<identity>/tls.key`. See [`stockmesh::tls`].

use std::path::{Path, PathBuf};

use stockmesh::tls::{self, MESH_IDENTITIES};

/// What `certs` wrote.
#[derive(Debug)]
pub struct Written {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
}

/// Creates the CA and the certificates in `dir`. Refuses when any of those files exists,
/// unless `force` (then all are replaced, with a new CA: running services must restart,
/// since they trust the CA they loaded).
pub fn create(dir: &Path, force: bool) -> Result<Written, String> {
    let mut files = vec![tls::ca_path(dir)];
    for name in MESH_IDENTITIES {
        let (crt, key) = tls::identity_paths(dir, name);
        files.push(crt);
        files.push(key);
    }
    let existing = files.iter().filter(|f| f.exists()).count();
    if let Some(first) = files.iter().find(|f| f.exists()).filter(|_| !force) {
        return Err(format!(
            "refusing to overwrite {existing} existing file(s) in {}, e.g. {} (pass --force \
             to replace them all, with a new CA)",
            dir.display(),
            first.display()
        ));
    }
    tls::generate(dir, &MESH_IDENTITIES).map_err(|e| e.to_string())?;
    Ok(Written {
        dir: dir.to_path_buf(),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_every_identity_and_refuses_to_overwrite_unless_forced() {
        let dir = std::env::temp_dir().join(format!(
            "stockmesh-certs-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let written = create(&dir, false).unwrap();
        assert_eq!(written.files.len(), 1 + 2 * MESH_IDENTITIES.len());
        assert!(written.files.iter().all(|f| f.exists()));
        let ca = std::fs::read(tls::ca_path(&dir)).unwrap();

        let refused = create(&dir, false).unwrap_err();
        assert!(refused.contains("--force"), "{refused}");
        assert_eq!(
            std::fs::read(tls::ca_path(&dir)).unwrap(),
            ca,
            "nothing replaced"
        );

        create(&dir, true).unwrap();
        assert_ne!(std::fs::read(tls::ca_path(&dir)).unwrap(), ca, "a new CA");
        std::fs::remove_dir_all(&dir).ok();
    }
}
