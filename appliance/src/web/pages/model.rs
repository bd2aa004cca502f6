//! The model: the bundle the engine runs (name, signature, provider, manifest metrics), the
//! bundle it will load at the next start, the history of uploaded bundles, upload of a new
//! signed bundle (verified exactly as the engine verifies it, refused with the reason) and
//! roll-back. A new or rolled-back bundle takes effect when `vertebrad serve` restarts.

use std::path::{Path as FsPath, PathBuf};

use axum::extract::{Extension, Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use tokio::io::AsyncWriteExt as _;
use vertebra_export::bundle::unpack_and_verify;
use vertebra_export::signing::TrustedKeys;

use super::{csrf_field, layout, utc};
use crate::store::{AuditOutcome, InstalledBundle, Role};
use crate::web::AppState;
use crate::web::auth::{self, CurrentUser, ExpectedCsrf};
use crate::web::status::EngineStatus;

/// Where uploaded bundles are unpacked (under the state directory).
pub const BUNDLES_DIR: &str = "bundles";

/// `GET /model`.
pub async fn page(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
) -> Response {
    let history = match state.store.list_bundles().await {
        Ok(h) => h,
        Err(e) => return super::store_error(&e),
    };
    let next = history.iter().find(|b| b.active);
    let snap = state.status.snapshot();
    let body = html! {
        h1 { "Model" }
        h2 { "Running now" }
        @match &snap.engine {
            EngineStatus::Loading => p.warn { "The engine is loading." },
            EngineStatus::Unavailable(why) => div.banner.error { "No model is running: " (why) },
            EngineStatus::Loaded(e) => {
                @if e.demo { div.banner.warn { "This is a DEMO model signed with the demo key: not a released model, not for patient care." } }
                table {
                    tr { th { "Name" } td { (e.model_name) } }
                    tr { th { "Version" } td { (e.created_utc) " (source " (e.git_commit) ")" } }
                    tr { th { "Bundle" } td { (e.bundle_dir.display()) } }
                    tr { th { "Signature" } td { span.ok { "verified" } " — key " (e.key_name) } }
                    tr { th { "Manifest SHA-256" } td { code { (e.manifest_sha256) } } }
                    tr { th { "Execution provider" } td { (e.provider) } }
                    @for p in &e.provider_log { tr { th { "Not used" } td.muted { (p) } } }
                }
                @if !e.metrics.is_empty() {
                    h2 { "Metrics recorded in the manifest" }
                    table { @for (k, v) in &e.metrics { tr { th { (k) } td.num { (format!("{v:.4}")) } } } }
                }
                details { summary { "Manifest" } pre.manifest { (e.manifest_text) } }
            }
        }
        h2 { "At the next start" }
        p {
            @match next {
                Some(b) => { "Uploaded bundle " strong { (b.name) } " (" (b.version) "), installed " (utc(b.installed_at_ms)) " by " (b.installed_by) "." }
                None => { "The bundle of the configuration file: " code { (state.config.inference.bundle.display()) } "." }
            }
            " Bundles change when vertebrad restarts."
        }
        @if user.has(Role::Admin) {
            h2 { "Upload a signed bundle" }
            p.muted { "A bundle .tar as made by " code { "vertebra-export bundle" } "; it is verified against the trusted keys in "
                code { (state.config.inference.trusted_keys.display()) } " before it is installed." }
            form method="post" action="/model/upload" enctype="multipart/form-data" {
                (csrf_field(&user))
                input type="file" name="bundle" accept=".tar,application/x-tar" required;
                " " button type="submit" { "Upload and verify" }
            }
        }
        h2 { "History" }
        table {
            tr { th { "#" } th { "Name" } th { "Version" } th { "Key" } th { "Installed (UTC)" } th { "By" } th { "" } }
            @for b in &history {
                tr {
                    td { (b.id) } td { (b.name) @if b.demo { " " span.warn { "demo" } } } td { (b.version) } td { (b.key_name) }
                    td { (utc(b.installed_at_ms)) } td { (b.installed_by) }
                    td { @if b.active { strong { "next start" } } @else if user.has(Role::Admin) {
                        form.inline method="post" action=(format!("/model/{}/activate", b.id)) data-confirm="Use this bundle from the next start?" {
                            (csrf_field(&user)) button.plain type="submit" { "Roll back to this" }
                        }
                    } }
                }
            }
            @if history.is_empty() { tr { td.muted colspan="7" { "No bundle uploaded through the console." } } }
        }
        @if user.has(Role::Admin) && next.is_some() {
            form method="post" action="/model/configured" data-confirm="Use the configuration file's bundle from the next start?" {
                (csrf_field(&user)) button.plain type="submit" { "Use the configured bundle instead" }
            }
        }
    };
    layout("Model", Some(&user), &body).into_response()
}

/// Removes a file or directory left by a refused upload.
fn remove(path: &FsPath) {
    let _ = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
}

/// Verifies an uploaded tar into `staging` exactly as the engine would load it.
fn verify(
    tar: &FsPath,
    staging: &FsPath,
    trusted_dir: &FsPath,
) -> Result<vertebra_export::bundle::VerifiedBundle, String> {
    let trusted = TrustedKeys::from_dir(trusted_dir).map_err(|e| {
        format!(
            "cannot read the trusted keys in {}: {e}",
            trusted_dir.display()
        )
    })?;
    let bundle = unpack_and_verify(tar, staging, &trusted).map_err(|e| e.to_string())?;
    crate::engine::check_bundle(&bundle).map_err(|e| e.to_string())?;
    Ok(bundle)
}

/// `POST /model/upload`.
pub async fn upload(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
    mut multipart: Multipart,
) -> Response {
    let peer = auth::peer(&ext);
    if let Err(r) = auth::verify_multipart_csrf(&mut multipart, ext.get::<ExpectedCsrf>()).await {
        return r;
    }
    let dir = state.state_dir.join(BUNDLES_DIR);
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        tracing::error!("cannot create {}: {e}", dir.display());
        return super::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Cannot create the bundle directory.",
        );
    }
    let token = &auth::new_token()[..16];
    let tar = dir.join(format!("incoming-{token}.tar"));
    let staging = dir.join(format!("staging-{token}"));
    let refuse = |reason: String| {
        let state = state.clone();
        let user = user.clone();
        let peer = peer.clone();
        let tar = tar.clone();
        let staging = staging.clone();
        async move {
            remove(&tar);
            remove(&staging);
            auth::audit(
                &state,
                &user.user.username,
                "model.upload",
                Some(format!("refused: {reason}")),
                &peer,
                AuditOutcome::Failure,
            )
            .await;
            super::invalid(
                &user,
                "Bundle refused",
                &format!("The bundle was refused: {reason}"),
                "/model",
            )
        }
    };
    let mut field = match multipart.next_field().await {
        Ok(Some(f)) if f.name() == Some("bundle") => f,
        Ok(_) => return refuse("the form holds no bundle file".into()).await,
        Err(e) => return refuse(format!("the upload failed: {e}")).await,
    };
    let mut out = match tokio::fs::File::create(&tar).await {
        Ok(f) => f,
        Err(e) => return refuse(format!("cannot store the upload: {e}")).await,
    };
    let mut size = 0u64;
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                size += chunk.len() as u64;
                if let Err(e) = out.write_all(&chunk).await {
                    return refuse(format!("cannot store the upload: {e}")).await;
                }
            }
            Ok(None) => break,
            Err(e) => {
                return refuse(format!(
                    "the upload failed or exceeds web.max_bundle_upload_mib: {e}"
                ))
                .await;
            }
        }
    }
    if let Err(e) = out.sync_all().await {
        return refuse(format!("cannot store the upload: {e}")).await;
    }
    drop(out);
    if size == 0 {
        return refuse("the file is empty".into()).await;
    }
    let trusted_dir = state.config.inference.trusted_keys.clone();
    let (t, s) = (tar.clone(), staging.clone());
    let verified = tokio::task::spawn_blocking(move || verify(&t, &s, &trusted_dir)).await;
    let bundle = match verified {
        Ok(Ok(b)) => b,
        Ok(Err(reason)) => return refuse(reason).await,
        Err(e) => return refuse(format!("verification crashed: {e}")).await,
    };
    let final_dir: PathBuf = dir.join(format!(
        "{}-{}",
        &bundle.manifest_sha256[..16],
        state.store.now()
    ));
    if let Err(e) = std::fs::rename(&staging, &final_dir) {
        return refuse(format!("cannot install the bundle: {e}")).await;
    }
    remove(&tar);
    let installed = InstalledBundle {
        id: 0,
        dir: final_dir.to_string_lossy().into_owned(),
        name: bundle.manifest.model.name.clone(),
        version: format!(
            "{} ({})",
            bundle.manifest.provenance.created_utc, bundle.manifest.provenance.git_commit
        ),
        manifest_sha256: bundle.manifest_sha256.clone(),
        key_name: bundle.key_name.clone(),
        demo: bundle.demo,
        installed_at_ms: 0,
        installed_by: user.user.username.clone(),
        active: true,
    };
    match state.store.add_bundle(&installed).await {
        Ok(id) => {
            auth::audit(
                &state,
                &user.user.username,
                "model.upload",
                Some(format!(
                    "bundle {id} {} sha256 {}",
                    installed.name, installed.manifest_sha256
                )),
                &peer,
                AuditOutcome::Success,
            )
            .await;
            let body = html! {
                h1 { "Bundle installed" }
                div.banner.info { "The bundle " strong { (installed.name) } " passed verification (signed by " (installed.key_name) ") and will be loaded when vertebrad restarts." }
                @if installed.demo { div.banner.warn { "It is signed with the DEMO key: not a released model." } }
                p { a href="/model" { "Back to the model page" } }
            };
            layout("Bundle installed", Some(&user), &body).into_response()
        }
        Err(e) => {
            remove(&final_dir);
            super::store_error(&e)
        }
    }
}

/// `POST /model/{id}/activate`: roll back (or forward) to a bundle of the history.
pub async fn activate(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
    Path(id): Path<i64>,
) -> Response {
    let peer = auth::peer(&ext);
    match state.store.activate_bundle(id).await {
        Ok(true) => {
            auth::audit(
                &state,
                &user.user.username,
                "model.activate",
                Some(format!("bundle {id}")),
                &peer,
                AuditOutcome::Success,
            )
            .await;
            Redirect::to("/model").into_response()
        }
        Ok(false) => super::error_page(StatusCode::NOT_FOUND, "No such bundle."),
        Err(e) => super::store_error(&e),
    }
}

/// `POST /model/configured`: back to the configuration file's bundle at the next start.
pub async fn use_configured(
    State(state): State<AppState>,
    Extension(user): Extension<CurrentUser>,
    ext: axum::http::Extensions,
) -> Response {
    let peer = auth::peer(&ext);
    match state.store.deactivate_bundles().await {
        Ok(()) => {
            auth::audit(
                &state,
                &user.user.username,
                "model.activate",
                Some("configured bundle".into()),
                &peer,
                AuditOutcome::Success,
            )
            .await;
            Redirect::to("/model").into_response()
        }
        Err(e) => super::store_error(&e),
    }
}

/// The bundle directory `vertebrad serve` should load: the active uploaded one, if any and
/// still present; else `None` (the configuration's).
///
/// # Errors
/// The store's error.
pub async fn active_bundle_dir(
    store: &crate::store::Store,
) -> Result<Option<PathBuf>, crate::store::Error> {
    Ok(store.active_bundle().await?.map(|b| PathBuf::from(b.dir)).filter(|d| {
        let ok = d.is_dir();
        if !ok {
            tracing::error!(dir = %d.display(), "the active uploaded bundle is missing; using the configured bundle");
        }
        ok
    }))
}
