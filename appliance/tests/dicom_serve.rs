//! `vertebrad serve` as an operator runs it: config file, state dir, a real peer, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn serve_answers_echoscu_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vertebrad.toml");
    std::fs::write(
        &config,
        r#"
        [dicom]
        bind = "127.0.0.1"
        port = 0
        ae_title = "SPINE"
        [[dicom.peers]]
        ae_title = "CT1"
        addresses = ["127.0.0.1"]
        "#,
    )
    .unwrap();
    let state = dir.path().join("state");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vertebrad"))
        .args(["--state-dir", state.to_str().unwrap(), "serve", "--config"])
        .arg(&config)
        .env_remove("VERTEBRA_DATABASE_URL")
        .env("VERTEBRA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting vertebrad serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line `{line}`"))
        .to_owned();
    let port = addr.rsplit(':').next().unwrap().to_owned();

    let echo = |aet: &str| {
        Command::new("/usr/bin/echoscu")
            .args(["-aet", aet, "-aec", "SPINE", "127.0.0.1", &port])
            .output()
            .expect("running echoscu (DCMTK)")
    };
    let ok = echo("CT1");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(!echo("OTHER").status.success());
    assert!(state.join("vertebrad.db").is_file());
    assert!(state.join("spool").is_dir());

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "vertebrad exited with {status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "vertebrad did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
