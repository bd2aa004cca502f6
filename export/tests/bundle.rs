//! Bundles end to end: export → sign → verify, the CLI, and tampering (a flipped byte in
//! model.onnx or manifest.toml, a swapped signature, a wrong key, a foreign contract version),
//! each refused with the reason that names it.

mod common;

use std::path::{Path, PathBuf};

use vertebra_export::Error;
use vertebra_export::bundle::{sign_bundle, unpack_and_verify, verify_bundle};
use vertebra_export::export::{BundleOptions, pack, write_bundle};
use vertebra_export::manifest::{CONTRACT_VERSION, MAIN_GRAPH, MANIFEST, Manifest, SIGNATURE};
use vertebra_export::signing::{KeyRole, SecretKey, TrustedKeys};
use vertebra_model::VertebraFormerConfig;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    bundle: PathBuf,
    trusted: TrustedKeys,
}

/// A signed tiny bundle, its key trusted.
fn fixture(role: KeyRole) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let weights = root.join("w.safetensors");
    common::random_weights(&VertebraFormerConfig::tiny(), 9, &weights);
    let keys = root.join("keys");
    std::fs::create_dir(&keys).unwrap();
    let key = SecretKey::generate("k1", role).unwrap();
    let (secret, _) = key.write(&keys).unwrap();
    let bundle = root.join("bundle");
    let opts = BundleOptions {
        key: Some(secret),
        seed: Some(42),
        git_commit: "0123abc".into(),
        ..BundleOptions::default()
    };
    write_bundle(&weights, &bundle, &opts).unwrap();
    let trusted = TrustedKeys::from_dir(&keys).unwrap();
    Fixture {
        _dir: dir,
        root,
        bundle,
        trusted,
    }
}

fn refusal(r: Result<vertebra_export::bundle::VerifiedBundle, Error>) -> String {
    match r {
        Err(Error::Refused { reason, .. }) => reason,
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("a tampered bundle verified"),
    }
}

/// sha256 through the system's `sha256sum` (an independent implementation).
fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils)");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

#[test]
fn signed_bundle_verifies_and_records_the_contract() {
    let f = fixture(KeyRole::Release);
    let v = verify_bundle(&f.bundle, &f.trusted).unwrap();
    assert!(!v.demo && v.demo_warning().is_none());
    let manifest_bytes = std::fs::read(f.bundle.join(MANIFEST)).unwrap();
    assert_eq!(v.manifest_sha256, sha256_hex(&manifest_bytes));
    let m = &v.manifest;
    assert_eq!(m.contract_version, CONTRACT_VERSION);
    assert_eq!(m.contract, VertebraFormerConfig::tiny().contract());
    assert_eq!(m.provenance.seed, Some(42));
    assert_eq!(m.provenance.git_commit, "0123abc");
    assert_eq!(m.labels.segmentation[0], "background");
    assert_eq!(m.labels.segmentation.len(), 26);
    assert_eq!(m.files.len(), 2, "model.onnx and id_head.onnx");
    // Output names are the contract's plus the RoIAlign features.
    let outs: Vec<&str> = m.outputs.iter().map(|t| t.name.as_str()).collect();
    assert!(outs.contains(&"label_logits") && outs.contains(&"roi_features"));
    // The manifest round-trips through TOML exactly.
    let text = std::fs::read_to_string(f.bundle.join(MANIFEST)).unwrap();
    assert_eq!(&Manifest::from_toml(&text).unwrap(), m);
}

#[test]
fn tar_round_trips_deterministically() {
    let f = fixture(KeyRole::Release);
    let tar = pack(&f.bundle).unwrap();
    let first = std::fs::read(&tar).unwrap();
    std::fs::remove_file(&tar).unwrap();
    assert_eq!(std::fs::read(pack(&f.bundle).unwrap()).unwrap(), first);
    let v = unpack_and_verify(&tar, &f.root.join("unpacked"), &f.trusted).unwrap();
    assert_eq!(v.manifest.files.len(), 2);
}

#[test]
fn flipped_byte_in_model_is_refused() {
    let f = fixture(KeyRole::Release);
    flip_byte(&f.bundle.join(MAIN_GRAPH), 1000);
    let r = refusal(verify_bundle(&f.bundle, &f.trusted));
    assert!(r.contains("model.onnx: sha256 mismatch"), "{r}");
}

#[test]
fn flipped_byte_in_manifest_is_refused() {
    let f = fixture(KeyRole::Release);
    flip_byte(&f.bundle.join(MANIFEST), 40);
    let r = refusal(verify_bundle(&f.bundle, &f.trusted));
    assert!(r.contains("signature does not verify"), "{r}");
}

#[test]
fn swapped_signature_is_refused() {
    // The signature of another bundle by the same (trusted) key.
    let f = fixture(KeyRole::Release);
    let other = f.root.join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(
        other.join(MANIFEST),
        "bundle_format = 1\ncontract_version = 1\n",
    )
    .unwrap();
    let key = SecretKey::read(&f.root.join("keys/k1.key")).unwrap();
    sign_bundle(&other, &key).unwrap();
    std::fs::copy(other.join(SIGNATURE), f.bundle.join(SIGNATURE)).unwrap();
    let r = refusal(verify_bundle(&f.bundle, &f.trusted));
    assert!(r.contains("signature does not verify"), "{r}");
}

#[test]
fn wrong_key_is_refused() {
    let f = fixture(KeyRole::Release);
    let rogue = SecretKey::generate("rogue", KeyRole::Release).unwrap();
    sign_bundle(&f.bundle, &rogue).unwrap();
    let r = refusal(verify_bundle(&f.bundle, &f.trusted));
    assert!(
        r.contains("signed by unknown key") && r.contains(&rogue.public().id),
        "{r}"
    );
    assert!(refusal(verify_bundle(&f.bundle, &TrustedKeys::default())).contains("trusted: none"));
}

#[test]
fn foreign_contract_version_is_refused_even_when_signed() {
    let f = fixture(KeyRole::Release);
    let path = f.bundle.join(MANIFEST);
    let text = std::fs::read_to_string(&path).unwrap();
    let changed = text.replacen(
        &format!("contract_version = {CONTRACT_VERSION}"),
        &format!("contract_version = {}", CONTRACT_VERSION + 1),
        1,
    );
    assert_ne!(changed, text);
    std::fs::write(&path, changed).unwrap();
    sign_bundle(
        &f.bundle,
        &SecretKey::read(&f.root.join("keys/k1.key")).unwrap(),
    )
    .unwrap();
    let r = refusal(verify_bundle(&f.bundle, &f.trusted));
    assert!(r.contains("contract version mismatch"), "{r}");
}

#[test]
fn unlisted_file_is_refused() {
    let f = fixture(KeyRole::Release);
    std::fs::write(f.bundle.join("extra.onnx"), b"x").unwrap();
    let r = refusal(verify_bundle(&f.bundle, &f.trusted));
    assert!(r.contains("unexpected file \"extra.onnx\""), "{r}");
}

#[test]
fn demo_key_verifies_but_is_flagged() {
    let f = fixture(KeyRole::Demo);
    let v = verify_bundle(&f.bundle, &f.trusted).unwrap();
    assert!(v.demo);
    assert!(v.demo_warning().unwrap().contains("DEMO key"));
}

#[test]
fn cli_keygen_export_verify() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    common::random_weights(&VertebraFormerConfig::tiny(), 10, &weights);
    let bin = env!("CARGO_BIN_EXE_vertebra-export");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let keys = dir.path().join("keys");
    let p = |x: &Path| x.to_str().unwrap().to_owned();
    let (ok, log) = cli(&["keygen", "--name", "demo", "--out-dir", &p(&keys), "--demo"]);
    assert!(ok, "{log}");
    let bundle = dir.path().join("b");
    let (ok, log) = cli(&[
        "export",
        "--weights",
        &p(&weights),
        "--out",
        &p(&bundle),
        "--key",
        &p(&keys.join("demo.key")),
        "--tar",
    ]);
    assert!(ok, "{log}");
    let pubs = dir.path().join("trusted");
    std::fs::create_dir(&pubs).unwrap();
    std::fs::copy(keys.join("demo.pub"), pubs.join("demo.pub")).unwrap();
    for target in [bundle.clone(), dir.path().join("b.tar")] {
        let (ok, log) = cli(&[
            "verify",
            "--bundle",
            &p(&target),
            "--trusted-keys",
            &p(&pubs),
        ]);
        assert!(
            ok && log.contains("OK:") && log.contains("DEMO key"),
            "{log}"
        );
    }
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".verify-")
        })
        .count();
    assert_eq!(leftovers, 0, "verify left its unpacked copy behind");
    flip_byte(&bundle.join(MAIN_GRAPH), 10);
    let (ok, log) = cli(&[
        "verify",
        "--bundle",
        &p(&bundle),
        "--trusted-keys",
        &p(&pubs),
    ]);
    assert!(!ok && log.contains("sha256 mismatch"), "{log}");
}
