//! Small operator commands: `vertebrad send` and `vertebrad destination add`.

use std::path::{Path, PathBuf};

use vertebrad::dicom::scu::{Destination, ScuOptions, store_files};
use vertebrad::store::{NewDestination, Store};

/// Parses `AE@HOST:PORT`.
fn parse_peer(s: &str) -> Result<Destination, String> {
    let bad = || format!("--to {s:?}: expected AE_TITLE@HOST:PORT");
    let (ae, rest) = s.split_once('@').ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if ae.is_empty() || ae.len() > 16 || host.is_empty() {
        return Err(bad());
    }
    Ok(Destination {
        ae_title: ae.to_owned(),
        host: host.to_owned(),
        port,
        tls: false,
    })
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            collect(&e, out)?;
        }
    } else if path.is_file() {
        out.push(path.to_path_buf());
    } else {
        return Err(format!("{} does not exist", path.display()));
    }
    Ok(())
}

/// `vertebrad send`.
pub async fn send(to: &str, calling_ae: &str, paths: &[PathBuf]) -> Result<(), String> {
    let dest = parse_peer(to)?;
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    if files.is_empty() {
        return Err("no files to send".into());
    }
    let started = std::time::Instant::now();
    let outcomes = store_files(&dest, calling_ae, &files, &ScuOptions::default())
        .await
        .map_err(|e| format!("cannot send to {dest}: {e}"))?;
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.is_stored()).collect();
    for f in &failed {
        if let Err(e) = &f.result {
            eprintln!("{}: {e}", f.path.display());
        }
    }
    println!(
        "sent {} of {} file(s) to {dest} in {:.1} s",
        outcomes.len() - failed.len(),
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} file(s) not stored", failed.len()))
    }
}

/// `vertebrad destination add`.
pub async fn add_destination(
    url: &str,
    name: &str,
    ae_title: &str,
    host: &str,
    port: u16,
    tls: bool,
) -> Result<(), String> {
    if ae_title.is_empty() || ae_title.len() > 16 || ae_title.contains('\\') {
        return Err(format!("AE title {ae_title:?} must be 1..=16 characters"));
    }
    let store = Store::open(url).await.map_err(|e| e.to_string())?;
    let id = store
        .add_destination(&NewDestination {
            name: name.to_owned(),
            ae_title: ae_title.to_owned(),
            host: host.to_owned(),
            port,
            tls,
            enabled: true,
        })
        .await
        .map_err(|e| e.to_string())?;
    store.close().await;
    println!(
        "destination {id} {name}: {ae_title}@{host}:{port}{}",
        if tls { " (TLS)" } else { "" }
    );
    Ok(())
}
