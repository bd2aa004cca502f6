//! The Storage and Verification SCU: C-ECHO and C-STORE towards a remote AE, over plain TCP or
//! DICOM TLS, with every wait bounded.
//!
//! ```text
//! files ─▶ read each file's meta (SOP class, instance, transfer syntax, data-set offset)
//!       ─▶ A-ASSOCIATE-RQ: one presentation context per (SOP class, transfer syntax) pair,
//!          proposing exactly the syntax the file is stored in (dicom-ul's async client)
//!       ─▶ per file: C-STORE-RQ (dimse/store.rs) ─▶ the data set streamed from the file in
//!          PDUs of the peer's maximum length (pdu.rs) ─▶ C-STORE-RSP ─▶ status
//!       ─▶ A-RELEASE
//! ```
//!
//! Files are sent **as stored**: the bytes after the file meta group go on the wire unchanged,
//! in the transfer syntax recorded in the meta group. Nothing is transcoded, so a peer that
//! does not accept a file's syntax for its SOP class gets nothing and the file fails with
//! [`ScuError::ContextRejected`], naming the class and the syntax; an operator then changes
//! the destination's configuration, not the object.
//!
//! dicom-ul establishes and releases the association (it owns the A-ASSOCIATE exchange and
//! the TLS handshake); the DIMSE messages in between are written and read on its stream with
//! our own PDU code, which streams data sets from disk (memory: one PDU) and bounds what a
//! peer can make us read. Sockets get TCP_NODELAY once the association is up (the
//! A-ASSOCIATE-RQ is a single write, which Nagle does not delay).
//!
//! Timeouts: the TCP connection ([`ScuOptions::connect_timeout`]); connection, TLS handshake
//! and A-ASSOCIATE answer together within that plus [`ScuOptions::association_timeout`]
//! (ARTIM), which also bounds the A-RELEASE answer; every DIMSE response and PDU write
//! ([`ScuOptions::dimse_timeout`]).
//!
//! Nothing here logs patient data: logs name AE titles, addresses, UIDs and status codes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dicom_ul::ClientAssociationOptions;
use dicom_ul::association::client::AsyncClientAssociation;
use dicom_ul::pdu::{AbortRQSource, AssociationRJ, Pdu};
use tokio::io::{AsyncRead, AsyncSeekExt, AsyncWrite};

use super::dimse::status::{self, StatusClass};
use super::dimse::{CommandField, CommandSet, MAX_COMMAND_BYTES, echo, store};
use super::pdu::{self, Frame, PduReader};
use crate::config::ForwardConfig;

/// The most presentation contexts one association can carry (odd IDs 1..=255).
const MAX_CONTEXTS: usize = 128;

/// A remote AE we send to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// Its AE title (our called AE title).
    pub ae_title: String,
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether to use DICOM TLS (needs [`ScuOptions::tls`]).
    pub tls: bool,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tls = if self.tls { " (TLS)" } else { "" };
        write!(f, "{}@{}{tls}", self.ae_title, self.address())
    }
}

impl Destination {
    /// `host:port`, with brackets around an IPv6 address.
    fn address(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The host as TLS server name (without IPv6 brackets).
    fn server_name(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// How an SCU association behaves.
#[derive(Clone, Debug)]
pub struct ScuOptions {
    /// Longest wait for the TCP connection.
    pub connect_timeout: Duration,
    /// Longest wait for the A-ASSOCIATE answer and for the A-RELEASE answer (ARTIM); the
    /// connection, TLS handshake and A-ASSOCIATE exchange together get `connect_timeout`
    /// plus this.
    pub association_timeout: Duration,
    /// Longest wait for each DIMSE response, and for each write to make progress.
    pub dimse_timeout: Duration,
    /// Largest PDU we announce we can receive.
    pub max_pdu: u32,
    /// TLS client configuration for destinations with `tls` set.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for ScuOptions {
    /// The defaults of [`ForwardConfig`], without TLS.
    fn default() -> Self {
        let cfg = ForwardConfig::default();
        Self {
            connect_timeout: Duration::from_secs(cfg.connect_timeout_s),
            association_timeout: Duration::from_secs(cfg.association_timeout_s),
            dimse_timeout: Duration::from_secs(cfg.dimse_timeout_s),
            max_pdu: cfg.max_pdu_bytes,
            tls: None,
        }
    }
}

impl ScuOptions {
    /// The options `cfg` describes, loading its TLS files when configured.
    ///
    /// # Errors
    /// A message naming the TLS file that cannot be used.
    pub fn from_config(cfg: &ForwardConfig) -> Result<Self, String> {
        let tls = cfg
            .tls
            .as_ref()
            .map(super::tls::client_config)
            .transpose()?;
        Ok(Self {
            connect_timeout: Duration::from_secs(cfg.connect_timeout_s),
            association_timeout: Duration::from_secs(cfg.association_timeout_s),
            dimse_timeout: Duration::from_secs(cfg.dimse_timeout_s),
            max_pdu: cfg.max_pdu_bytes,
            tls,
        })
    }
}

/// Why an SCU operation failed. Texts name what went wrong and where, never patient data;
/// they are stored as a delivery's last error and shown to operators.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScuError {
    /// A file to send cannot be read or is not a DICOM Part 10 file.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The destination wants TLS and no `[forward.tls]` is configured.
    #[error("{0} requires TLS, but no [forward.tls] client configuration is set")]
    TlsNotConfigured(String),
    /// No connection (refused, unreachable, name not resolved, TLS handshake failed).
    #[error("cannot connect to {destination}: {reason}")]
    Connect {
        /// The destination.
        destination: String,
        /// The cause.
        reason: String,
    },
    /// The peer answered the A-ASSOCIATE-RQ with an A-ASSOCIATE-RJ.
    #[error("{destination} rejected the association ({result}): {reason}")]
    Rejected {
        /// The destination.
        destination: String,
        /// Permanent or transient.
        result: String,
        /// The reason and its source, as the standard names them.
        reason: String,
    },
    /// The peer accepted the association but none of its presentation contexts.
    #[error("{destination} accepted none of the proposed presentation contexts: {proposed}")]
    NoContextAccepted {
        /// The destination.
        destination: String,
        /// The SOP class / transfer syntax pairs proposed.
        proposed: String,
    },
    /// The peer refused the presentation context this file needs.
    #[error(
        "{destination} refused SOP class {sop_class} in transfer syntax {transfer_syntax}; \
         objects are sent only as stored (no transcoding)"
    )]
    ContextRejected {
        /// The destination.
        destination: String,
        /// The file's SOP class UID.
        sop_class: String,
        /// The file's transfer syntax UID.
        transfer_syntax: String,
    },
    /// An answer did not come in time.
    #[error("{destination}: no {what} within {after:?}")]
    Timeout {
        /// The destination.
        destination: String,
        /// What we were waiting for.
        what: &'static str,
        /// How long we waited.
        after: Duration,
    },
    /// The peer answered with a failure status.
    #[error("{destination} answered status {status:#06x}{}", comment_suffix(.comment.as_ref()))]
    Status {
        /// The destination.
        destination: String,
        /// The DIMSE status.
        status: u16,
        /// The peer's Error Comment (0000,0902), if it sent one.
        comment: Option<String>,
    },
    /// The association broke: aborted by the peer, closed, or a protocol violation.
    #[error("association with {destination} failed: {reason}")]
    Association {
        /// The destination.
        destination: String,
        /// What happened.
        reason: String,
    },
}

fn comment_suffix(comment: Option<&String>) -> String {
    comment
        .filter(|c| !c.is_empty())
        .map_or_else(String::new, |c| format!(": {c}"))
}

/// The answer to a C-ECHO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EchoOutcome {
    /// The C-ECHO-RSP status (success, or a warning).
    pub status: u16,
    /// From the TCP connection to the C-ECHO-RSP.
    pub round_trip: Duration,
}

/// What happened to one file of [`store_files`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOutcome {
    /// The file.
    pub path: PathBuf,
    /// Its SOP Instance UID (empty when the file could not be read).
    pub sop_instance_uid: String,
    /// The C-STORE-RSP status when it was stored (success or a warning), else why not.
    pub result: Result<u16, ScuError>,
}

impl StoreOutcome {
    /// Whether the peer stored the object.
    pub fn is_stored(&self) -> bool {
        self.result.is_ok()
    }
}

/// Asks `dest` whether it is there (Verification SOP class, C-ECHO).
///
/// # Errors
/// [`ScuError`] for a failed connection, a rejected association, a failure status or a
/// timeout.
pub async fn echo(
    dest: &Destination,
    calling_ae: &str,
    opts: &ScuOptions,
) -> Result<EchoOutcome, ScuError> {
    let started = Instant::now();
    let contexts = vec![(
        echo::VERIFICATION_SOP_CLASS.to_owned(),
        IMPLICIT_VR_LE.to_owned(),
    )];
    let status = match connect(dest, calling_ae, &contexts, opts).await? {
        Connection::Plain(a) => echo_on(*a, dest, opts).await?,
        Connection::Tls(a) => echo_on(*a, dest, opts).await?,
    };
    Ok(EchoOutcome {
        status,
        round_trip: started.elapsed(),
    })
}

/// Sends `files` to `dest` over one association, each in the transfer syntax it is stored
/// in, and returns one outcome per file, in order.
///
/// A file that cannot be read, or whose presentation context the peer refused, fails alone;
/// the others are still sent. When the association breaks midway, the files not yet
/// answered fail with that error.
///
/// # Errors
/// When no association could be established (connection, rejection, no context accepted,
/// timeout); then nothing was sent.
pub async fn store_files(
    dest: &Destination,
    calling_ae: &str,
    files: &[PathBuf],
    opts: &ScuOptions,
) -> Result<Vec<StoreOutcome>, ScuError> {
    let owned = files.to_vec();
    let metas = tokio::task::spawn_blocking(move || {
        owned
            .iter()
            .map(|p| read_meta(p))
            .collect::<Vec<Result<FileMeta, ScuError>>>()
    })
    .await
    .map_err(|e| ScuError::Association {
        destination: dest.to_string(),
        reason: format!("reading file headers failed: {e}"),
    })?;
    let mut contexts: Vec<(String, String)> = Vec::new();
    let mut outcomes: Vec<StoreOutcome> = Vec::with_capacity(files.len());
    let mut work: Vec<(usize, FileMeta)> = Vec::new();
    for (i, (path, meta)) in files.iter().zip(metas).enumerate() {
        let meta = meta.and_then(|m| {
            let pair = (m.sop_class.clone(), m.transfer_syntax.clone());
            if !contexts.contains(&pair) {
                if contexts.len() == MAX_CONTEXTS {
                    return Err(ScuError::File {
                        path: path.clone(),
                        reason: format!(
                            "more than {MAX_CONTEXTS} SOP class/transfer syntax pairs in one \
                             batch; send it in another association"
                        ),
                    });
                }
                contexts.push(pair);
            }
            Ok(m)
        });
        outcomes.push(StoreOutcome {
            path: path.clone(),
            sop_instance_uid: meta
                .as_ref()
                .map_or_else(|_| String::new(), |m| m.sop_instance.clone()),
            result: Err(ScuError::Association {
                destination: dest.to_string(),
                reason: "not sent".into(),
            }),
        });
        match meta {
            Ok(m) => work.push((i, m)),
            Err(e) => outcomes[i].result = Err(e),
        }
    }
    if work.is_empty() {
        return Ok(outcomes);
    }
    match connect(dest, calling_ae, &contexts, opts).await? {
        Connection::Plain(a) => store_on(*a, dest, &work, &mut outcomes, opts).await,
        Connection::Tls(a) => store_on(*a, dest, &work, &mut outcomes, opts).await,
    }
    Ok(outcomes)
}

/// Implicit VR Little Endian, the default transfer syntax (C-ECHO has no data set).
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

/// What we need from a file's meta group to send it.
#[derive(Clone, Debug)]
struct FileMeta {
    path: PathBuf,
    sop_class: String,
    sop_instance: String,
    transfer_syntax: String,
    /// Where the data set starts.
    offset: u64,
    /// Bytes of data set.
    len: u64,
}

/// Counts the bytes a parser consumed.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Reads the meta group of the Part 10 file at `path` (preamble, `DICM`, group 0002).
fn read_meta(path: &Path) -> Result<FileMeta, ScuError> {
    let fail = |reason: String| ScuError::File {
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let size = file
        .metadata()
        .map_err(|e| fail(format!("cannot stat: {e}")))?
        .len();
    let mut reader = Counting {
        inner: std::io::BufReader::new(file),
        read: 0,
    };
    std::io::copy(
        &mut std::io::Read::take(&mut reader, 128),
        &mut std::io::sink(),
    )
    .map_err(|e| fail(format!("cannot read: {e}")))?;
    if reader.read < 128 {
        return Err(fail(
            "not a DICOM Part 10 file (shorter than its preamble)".into(),
        ));
    }
    let meta = dicom_object::meta::FileMetaTable::from_reader(&mut reader)
        .map_err(|e| fail(format!("not a DICOM Part 10 file: {e}")))?;
    let need = |v: &str, what: &str| {
        if v.is_empty() {
            Err(fail(format!("the file meta group has no {what}")))
        } else {
            Ok(v.to_owned())
        }
    };
    let offset = reader.read;
    Ok(FileMeta {
        path: path.to_owned(),
        sop_class: need(
            meta.media_storage_sop_class_uid(),
            "Media Storage SOP Class UID",
        )?,
        sop_instance: need(
            meta.media_storage_sop_instance_uid(),
            "Media Storage SOP Instance UID",
        )?,
        transfer_syntax: need(meta.transfer_syntax(), "Transfer Syntax UID")?,
        offset,
        len: size.saturating_sub(offset),
    })
}

/// An established association, plain or TLS (boxed: the TLS state is large).
enum Connection {
    Plain(Box<AsyncClientAssociation<tokio::net::TcpStream>>),
    Tls(Box<AsyncClientAssociation<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>),
}

/// Connects, negotiates `contexts` (one transfer syntax each) and sets TCP_NODELAY.
async fn connect(
    dest: &Destination,
    calling_ae: &str,
    contexts: &[(String, String)],
    opts: &ScuOptions,
) -> Result<Connection, ScuError> {
    let timeout = opts.connect_timeout + opts.association_timeout;
    // dicom-ul's own read timeout is set past ours: when its read of the A-ASSOCIATE answer
    // fails it guesses "the peer speaks TLS" whatever the cause, so our outer timeout must be
    // the one that reports a silent peer.
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(calling_ae.to_owned())
        .called_ae_title(dest.ae_title.clone())
        .max_pdu_length(opts.max_pdu)
        .connection_timeout(opts.connect_timeout)
        .read_timeout(timeout + Duration::from_secs(1))
        .write_timeout(opts.dimse_timeout);
    for (class, ts) in contexts {
        options = options.with_presentation_context(class.clone(), vec![ts.clone()]);
    }
    let address = dest.address();
    let established = if dest.tls {
        let Some(tls) = &opts.tls else {
            return Err(ScuError::TlsNotConfigured(dest.to_string()));
        };
        let options = options
            .tls_config(tls.clone())
            .server_name(dest.server_name());
        tokio::time::timeout(timeout, options.establish_with_async_tls(&address))
            .await
            .map(|r| {
                r.map(|mut a| {
                    let _ = a.inner_stream().get_ref().0.set_nodelay(true);
                    Connection::Tls(Box::new(a))
                })
            })
    } else {
        tokio::time::timeout(timeout, options.establish_with_async(&address))
            .await
            .map(|r| {
                r.map(|mut a| {
                    let _ = a.inner_stream().set_nodelay(true);
                    Connection::Plain(Box::new(a))
                })
            })
    };
    let established = established.map_err(|_| ScuError::Timeout {
        destination: dest.to_string(),
        what: "association (A-ASSOCIATE-AC)",
        after: timeout,
    })?;
    established.map_err(|e| association_error(dest, contexts, timeout, e))
}

/// Our words for dicom-ul's association errors.
fn association_error(
    dest: &Destination,
    contexts: &[(String, String)],
    after: Duration,
    e: dicom_ul::association::Error,
) -> ScuError {
    use dicom_ul::association::Error as E;
    let destination = dest.to_string();
    match e {
        E::Rejected { association_rj, .. } => {
            let AssociationRJ { result, source } = association_rj;
            ScuError::Rejected {
                destination,
                result: format!("{result:?}").to_lowercase(),
                reason: source.to_string(),
            }
        }
        E::NoAcceptedPresentationContexts { .. } => ScuError::NoContextAccepted {
            destination,
            proposed: contexts
                .iter()
                .map(|(c, ts)| format!("{c} in {ts}"))
                .collect::<Vec<_>>()
                .join(", "),
        },
        E::Connect { source, .. } => ScuError::Connect {
            destination,
            reason: source.to_string(),
        },
        E::TlsHandshake { source, .. } => ScuError::Connect {
            destination,
            reason: format!("TLS handshake failed: {source}"),
        },
        E::TlsConnection { source, .. } => ScuError::Connect {
            destination,
            reason: format!("TLS handshake failed: {source}"),
        },
        // dicom-ul reports any unreadable A-ASSOCIATE answer this way (see `connect`).
        E::TlsNotSupported => ScuError::Association {
            destination,
            reason: "no A-ASSOCIATE answer: the peer closed the connection or sent something \
                     else (a TLS port? then set `tls` on the destination)"
                .into(),
        },
        E::Timeout { .. } => ScuError::Timeout {
            destination,
            what: "connection or A-ASSOCIATE answer",
            after,
        },
        E::Aborted { .. } => ScuError::Association {
            destination,
            reason: "the peer aborted the association request".into(),
        },
        other => ScuError::Association {
            destination,
            reason: other.to_string(),
        },
    }
}

/// C-ECHO on an established association, then release.
async fn echo_on<S>(
    mut assoc: AsyncClientAssociation<S>,
    dest: &Destination,
    opts: &ScuOptions,
) -> Result<u16, ScuError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Some(ctx) = context_for(&assoc, echo::VERIFICATION_SOP_CLASS, IMPLICIT_VR_LE) else {
        return Err(ScuError::ContextRejected {
            destination: dest.to_string(),
            sop_class: echo::VERIFICATION_SOP_CLASS.into(),
            transfer_syntax: IMPLICIT_VR_LE.into(),
        });
    };
    let peer_max = assoc.acceptor_max_pdu_length();
    let mut reader = PduReader::new(opts.max_pdu);
    let exchange = async {
        let rq = echo::request(1);
        pdu::write_command(assoc.inner_stream(), ctx, &rq.encode(), peer_max)
            .await
            .map_err(|e| broken(dest, format!("sending C-ECHO-RQ: {e}")))?;
        let rsp = read_response(assoc.inner_stream(), &mut reader, dest, opts).await?;
        check_response(&rsp, CommandField::CEchoRsp, 1, dest)
    };
    let result = exchange.await;
    finish(assoc, dest, opts, result.is_ok()).await;
    result
}

/// C-STORE of every file in `work` on an established association, then release.
async fn store_on<S>(
    mut assoc: AsyncClientAssociation<S>,
    dest: &Destination,
    work: &[(usize, FileMeta)],
    outcomes: &mut [StoreOutcome],
    opts: &ScuOptions,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let peer_max = assoc.acceptor_max_pdu_length();
    let mut reader = PduReader::new(opts.max_pdu);
    let mut message_id: u16 = 0;
    let mut broken_by: Option<ScuError> = None;
    for (i, meta) in work {
        if let Some(e) = &broken_by {
            outcomes[*i].result = Err(e.clone());
            continue;
        }
        let Some(ctx) = context_for(&assoc, &meta.sop_class, &meta.transfer_syntax) else {
            outcomes[*i].result = Err(ScuError::ContextRejected {
                destination: dest.to_string(),
                sop_class: meta.sop_class.clone(),
                transfer_syntax: meta.transfer_syntax.clone(),
            });
            continue;
        };
        message_id = message_id.wrapping_add(1);
        match store_one(
            assoc.inner_stream(),
            &mut reader,
            ctx,
            peer_max,
            message_id,
            meta,
            dest,
            opts,
        )
        .await
        {
            Ok(code) => outcomes[*i].result = Ok(code),
            Err(Failed::Object(e)) => outcomes[*i].result = Err(e),
            Err(Failed::Association(e)) => {
                outcomes[*i].result = Err(e.clone());
                broken_by = Some(e);
            }
        }
    }
    finish(assoc, dest, opts, broken_by.is_none()).await;
}

/// Why one C-STORE failed: the object alone, or the association with it.
enum Failed {
    Object(ScuError),
    Association(ScuError),
}

/// One C-STORE: request, data set from the file, response.
#[allow(clippy::too_many_arguments)]
async fn store_one<S>(
    stream: &mut S,
    reader: &mut PduReader,
    ctx: u8,
    peer_max: u32,
    message_id: u16,
    meta: &FileMeta,
    dest: &Destination,
    opts: &ScuOptions,
) -> Result<u16, Failed>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let file_error = |reason: String| {
        Failed::Object(ScuError::File {
            path: meta.path.clone(),
            reason,
        })
    };
    // Open before sending anything: a file gone since its header was read fails alone.
    let mut file = tokio::fs::File::open(&meta.path)
        .await
        .map_err(|e| file_error(format!("cannot open: {e}")))?;
    file.seek(std::io::SeekFrom::Start(meta.offset))
        .await
        .map_err(|e| file_error(format!("cannot seek to the data set: {e}")))?;
    let rq = store::request(message_id, &meta.sop_class, &meta.sop_instance);
    // Once the command is out, the data set must follow in full: any failure while sending
    // leaves the association unusable. Each PDU write must finish within the DIMSE timeout
    // (a peer that stops reading stalls us no longer than that).
    let send = async {
        tokio::time::timeout(
            opts.dimse_timeout,
            pdu::write_command(stream, ctx, &rq.encode(), peer_max),
        )
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let mut file = tokio::io::BufReader::with_capacity(256 * 1024, &mut file);
        pdu::write_data(
            stream,
            ctx,
            &mut file,
            meta.len,
            peer_max,
            opts.dimse_timeout,
        )
        .await
    };
    if let Err(e) = send.await {
        let what = if e.kind() == std::io::ErrorKind::TimedOut {
            format!("the peer stopped reading for {:?}", opts.dimse_timeout)
        } else {
            e.to_string()
        };
        return Err(Failed::Association(broken(
            dest,
            format!("sending {}: {what}", meta.path.display()),
        )));
    }
    let rsp = read_response(stream, reader, dest, opts)
        .await
        .map_err(Failed::Association)?;
    match check_response(&rsp, CommandField::CStoreRsp, message_id, dest) {
        Ok(code) => Ok(code),
        Err(e @ ScuError::Status { .. }) => Err(Failed::Object(e)),
        Err(e) => Err(Failed::Association(e)),
    }
}

/// The accepted context for `class` in `ts`, if the peer accepted it.
fn context_for<S>(assoc: &AsyncClientAssociation<S>, class: &str, ts: &str) -> Option<u8> {
    let trim = |s: &str| s.trim_end_matches(['\0', ' ']).to_owned();
    assoc
        .presentation_contexts()
        .iter()
        .find(|pc| trim(&pc.abstract_syntax) == class && trim(&pc.transfer_syntax) == ts)
        .map(|pc| pc.id)
}

fn broken(dest: &Destination, reason: String) -> ScuError {
    ScuError::Association {
        destination: dest.to_string(),
        reason,
    }
}

/// Reads PDUs until a complete command set arrived, within the DIMSE timeout.
async fn read_response<S>(
    stream: &mut S,
    reader: &mut PduReader,
    dest: &Destination,
    opts: &ScuOptions,
) -> Result<CommandSet, ScuError>
where
    S: AsyncRead + Unpin,
{
    let mut command = Vec::new();
    loop {
        let frame = tokio::time::timeout(opts.dimse_timeout, reader.read(stream))
            .await
            .map_err(|_| ScuError::Timeout {
                destination: dest.to_string(),
                what: "DIMSE response",
                after: opts.dimse_timeout,
            })?
            .map_err(|e| broken(dest, format!("reading the response: {e}")))?;
        let pdvs = match frame {
            Frame::PData(pdvs) => pdvs,
            Frame::Control(Pdu::AbortRQ { source }) => {
                let by = match source {
                    AbortRQSource::ServiceUser => "the peer".to_owned(),
                    AbortRQSource::ServiceProvider(r) => format!("the peer's provider ({r:?})"),
                    AbortRQSource::Reserved => "the peer (reserved source)".to_owned(),
                };
                return Err(broken(dest, format!("aborted by {by}")));
            }
            Frame::Control(other) => {
                return Err(broken(
                    dest,
                    format!("expected a DIMSE response, got {}", pdu_name(&other)),
                ));
            }
        };
        for pdv in pdvs {
            if !pdv.is_command {
                return Err(broken(
                    dest,
                    "the peer sent a data set with its response".into(),
                ));
            }
            command.extend_from_slice(reader.bytes(pdv.range.clone()));
            if command.len() > MAX_COMMAND_BYTES {
                return Err(broken(dest, "response command set too large".into()));
            }
            if pdv.is_last {
                return CommandSet::decode(&command)
                    .map_err(|e| broken(dest, format!("unreadable response: {e}")));
            }
        }
    }
}

/// Checks a response's command and message ID and classifies its status: the code for
/// success and warnings, [`ScuError::Status`] for failures.
fn check_response(
    rsp: &CommandSet,
    expected: CommandField,
    message_id: u16,
    dest: &Destination,
) -> Result<u16, ScuError> {
    if rsp.field() != expected {
        return Err(broken(
            dest,
            format!(
                "expected command {:#06x}, got {:#06x}",
                expected.code(),
                rsp.command_field
            ),
        ));
    }
    if rsp.message_id_being_responded_to != Some(message_id) {
        return Err(broken(
            dest,
            format!(
                "response to message {:?}, expected {message_id}",
                rsp.message_id_being_responded_to
            ),
        ));
    }
    let Some(code) = rsp.status else {
        return Err(broken(dest, "response without a status".into()));
    };
    match status::class(code) {
        StatusClass::Success => Ok(code),
        StatusClass::Warning => {
            tracing::warn!(
                destination = %dest,
                status = format_args!("{code:#06x}"),
                comment = rsp.error_comment.as_deref().unwrap_or(""),
                "peer stored the object with a warning"
            );
            Ok(code)
        }
        StatusClass::Failure | StatusClass::Cancel | StatusClass::Pending => {
            Err(ScuError::Status {
                destination: dest.to_string(),
                status: code,
                comment: rsp.error_comment.clone(),
            })
        }
    }
}

/// Releases the association (or aborts it when it is broken), within ARTIM.
async fn finish<S>(
    assoc: AsyncClientAssociation<S>,
    dest: &Destination,
    opts: &ScuOptions,
    healthy: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    if healthy {
        match tokio::time::timeout(opts.association_timeout, assoc.release()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(destination = %dest, error = %e, "A-RELEASE failed"),
            Err(_) => tracing::warn!(destination = %dest, "no A-RELEASE-RP in time"),
        }
    } else {
        let _ = tokio::time::timeout(opts.association_timeout, assoc.abort()).await;
    }
}

fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::ReleaseRQ => "A-RELEASE-RQ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::AbortRQ { .. } => "A-ABORT",
        Pdu::PData { .. } => "P-DATA-TF",
        Pdu::Unknown { .. } => "an unknown PDU",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest() -> Destination {
        Destination {
            ae_title: "PACS".into(),
            host: "127.0.0.1".into(),
            port: 104,
            tls: false,
        }
    }

    #[test]
    fn responses_are_checked_and_classified() {
        let rq = store::request(4, "1.2.840.10008.5.1.4.1.1.2", "1.2.3");
        let answer =
            |code: u16, comment: Option<&str>| rq.response(CommandField::CStoreRsp, code, comment);
        assert_eq!(
            check_response(&answer(0, None), CommandField::CStoreRsp, 4, &dest()),
            Ok(0)
        );
        assert_eq!(
            check_response(&answer(0xB000, None), CommandField::CStoreRsp, 4, &dest()),
            Ok(0xB000)
        );
        let e = check_response(
            &answer(0xA700, Some("disk full")),
            CommandField::CStoreRsp,
            4,
            &dest(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "PACS@127.0.0.1:104 answered status 0xa700: disk full"
        );
        assert!(matches!(
            check_response(&answer(0, None), CommandField::CStoreRsp, 5, &dest()),
            Err(ScuError::Association { .. })
        ));
        assert!(matches!(
            check_response(&answer(0, None), CommandField::CEchoRsp, 4, &dest()),
            Err(ScuError::Association { .. })
        ));
    }

    #[test]
    fn ipv6_hosts_get_brackets() {
        let mut d = dest();
        d.host = "fd00::1".into();
        assert_eq!(d.address(), "[fd00::1]:104");
        assert_eq!(d.server_name(), "fd00::1");
        assert_eq!(dest().address(), "127.0.0.1:104");
    }

    #[test]
    fn a_file_that_is_not_part_10_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.dcm");
        std::fs::write(&path, vec![0_u8; 200]).unwrap();
        let e = read_meta(&path).unwrap_err();
        assert!(e.to_string().contains("junk.dcm"), "{e}");
        assert!(e.to_string().contains("not a DICOM Part 10 file"), "{e}");
    }
}
