//! systemd credentials in the configuration: a value `credential:NAME` stands for the file
//! `NAME` in `$CREDENTIALS_DIRECTORY`.
//!
//! Under systemd, secrets (the TLS private keys, their certificates) reach the daemon through
//! `LoadCredential=NAME:/etc/vertebra/tls/…`: systemd copies them, readable only by the
//! service, into a private directory it names in `$CREDENTIALS_DIRECTORY`, so the daemon's
//! user needs no read access to `/etc/vertebra/tls` and the file never lies in a path other
//! services see. The configuration names the credential, not the path:
//!
//! ```toml
//! [dicom.tls]
//! port = 2762
//! certificate = "credential:dicom-tls.crt"
//! private_key = "credential:dicom-tls.key"
//! ```
//!
//! Every string value of the configuration (any section, including ones added later) is
//! resolved this way when the file is loaded; a reference to a credential that is not there
//! is a start-up error naming the key, the credential and the directory.

use std::path::{Path, PathBuf};

use config::{Source, Value, ValueKind};

/// The prefix of a value that names a systemd credential.
pub const PREFIX: &str = "credential:";

/// The path of credential `name` in `dir` (the value of `$CREDENTIALS_DIRECTORY`).
///
/// # Errors
/// When `dir` is `None` (not started by systemd with credentials), the name is not a plain
/// file name, or the file does not exist.
pub fn credential_path(name: &str, dir: Option<&Path>) -> Result<PathBuf, String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "`{PREFIX}{name}` is not a credential name (a file name without `/`)"
        ));
    }
    let Some(dir) = dir else {
        return Err(format!(
            "`{PREFIX}{name}` needs $CREDENTIALS_DIRECTORY (set by systemd for units with \
             LoadCredential=); it is not set"
        ));
    };
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "credential `{name}` is not in {} (is LoadCredential={name}:… in the unit?)",
            dir.display()
        ))
    }
}

/// `raw` with every `credential:NAME` string replaced by its path in `dir`.
///
/// # Errors
/// A message naming the configuration key and what is wrong with its credential.
pub fn resolve(raw: config::Config, dir: Option<&Path>) -> Result<config::Config, String> {
    let table = raw
        .collect()
        .map_err(|e| format!("reading the configuration: {e}"))?;
    let mut found = Vec::new();
    for (key, value) in table {
        references(&key, value, &mut found);
    }
    if found.is_empty() {
        return Ok(raw);
    }
    let mut builder = config::Config::builder().add_source(raw);
    for (key, name) in found {
        let path = credential_path(&name, dir).map_err(|e| format!("{key}: {e}"))?;
        builder = builder
            .set_override(key.as_str(), path.to_string_lossy().into_owned())
            .map_err(|e| format!("{key}: {e}"))?;
    }
    builder
        .build()
        .map_err(|e| format!("reading the configuration: {e}"))
}

/// Collects `(key path, credential name)` for every credential reference under `value`.
fn references(key: &str, value: Value, found: &mut Vec<(String, String)>) {
    match value.kind {
        ValueKind::String(s) => {
            if let Some(name) = s.strip_prefix(PREFIX) {
                found.push((key.to_owned(), name.to_owned()));
            }
        }
        ValueKind::Table(t) => {
            for (k, v) in t {
                references(&format!("{key}.{k}"), v, found);
            }
        }
        ValueKind::Array(a) => {
            for (i, v) in a.into_iter().enumerate() {
                references(&format!("{key}[{i}]"), v, found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> config::Config {
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .unwrap()
    }

    #[test]
    fn references_resolve_to_files_in_the_credentials_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dicom-tls.key"), "k").unwrap();
        std::fs::write(dir.path().join("ca.pem"), "c").unwrap();
        let text = "[dicom.tls]\nport = 2762\nprivate_key = \"credential:dicom-tls.key\"\n\
                    certificate = \"/etc/plain.pem\"\n[x]\nlist = [\"credential:ca.pem\"]\n";
        let out = resolve(raw(text), Some(dir.path())).unwrap();
        assert_eq!(
            out.get_string("dicom.tls.private_key").unwrap(),
            dir.path().join("dicom-tls.key").to_string_lossy()
        );
        assert_eq!(
            out.get_string("dicom.tls.certificate").unwrap(),
            "/etc/plain.pem"
        );
        assert_eq!(out.get_int("dicom.tls.port").unwrap(), 2762);
        let list: Vec<String> = out.get("x.list").unwrap();
        assert_eq!(list, [dir.path().join("ca.pem").to_string_lossy()]);
    }

    #[test]
    fn missing_credentials_name_the_key_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[dicom.tls]\nprivate_key = \"credential:dicom-tls.key\"\n";
        let e = resolve(raw(text), Some(dir.path())).unwrap_err();
        assert!(e.contains("dicom.tls.private_key"), "{e}");
        assert!(e.contains("LoadCredential=dicom-tls.key"), "{e}");
        let e = resolve(raw(text), None).unwrap_err();
        assert!(e.contains("CREDENTIALS_DIRECTORY"), "{e}");
        let e = resolve(raw("a = \"credential:../etc/shadow\""), Some(dir.path())).unwrap_err();
        assert!(e.contains("not a credential name"), "{e}");
    }
}
