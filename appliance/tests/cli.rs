//! The `vertebrad` binary's store commands, driven as an operator would.

use std::process::{Command, Output};

use sqlx::Connection;

fn vertebrad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vertebrad"))
        .args(args)
        .env_remove("VERTEBRA_DATABASE_URL")
        .env_remove("VERTEBRA_STATE_DIR")
        .output()
        .expect("running vertebrad")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_the_migrate_command() {
    let out = vertebrad(&["--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("migrate"));
    let out = vertebrad(&["migrate", "--help"]);
    assert!(text(&out.stdout).contains("--database"));
}

#[test]
fn migrate_creates_the_embedded_database_in_the_state_dir_and_is_repeatable() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for _ in 0..2 {
        let out = vertebrad(&["migrate", "--state-dir", state.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("0001 initial"), "{stdout}");
        assert!(stdout.contains("0002 web console"), "{stdout}");
        assert!(stdout.contains("0003 dicom peers"), "{stdout}");
        assert!(stdout.contains("schema at version 3 (Sqlite)"), "{stdout}");
    }
    assert!(state.join("vertebrad.db").is_file());
}

#[tokio::test]
async fn migrate_refuses_a_database_from_a_newer_release() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/v.db", dir.path().display());
    assert!(vertebrad(&["migrate", "--database", &url]).status.success());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'future', 1, X'00', 1)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let out = vertebrad(&["migrate", "--database", &url]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("[9999]") && stderr.contains("newer"),
        "{stderr}"
    );
}

#[test]
fn an_unsupported_url_is_refused_without_echoing_credentials() {
    let out = vertebrad(&["migrate", "--database", "mysql://admin:s3cret@db/vertebra"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unsupported database URL scheme `mysql`"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}
