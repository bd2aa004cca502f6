//! One association, from A-ASSOCIATE-RQ to release or abort.
//!
//! ```text
//! RQ ──negotiate──▶ AC ──▶ [ command fragments ─▶ command set ─▶ C-ECHO: respond
//!                                                             └▶ C-STORE: data fragments ─▶ spool ─▶ respond ]*
//!                                                  ──▶ A-RELEASE-RQ ─▶ RP
//!    └─▶ RJ (+ audit)                              ──▶ anything malformed, late or unexpected ─▶ A-ABORT
//! ```
//!
//! Every read is bounded in time (the idle timeout doubles as ARTIM while waiting for the
//! A-ASSOCIATE-RQ) and in size (see [`super::pdu`]). Nothing a peer sends can panic this task
//! or reach outside the spool; an aborted C-STORE leaves no file behind.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::pdu::{AbortRQServiceProviderReason, Pdu};
use tokio::io::{AsyncRead, AsyncWrite};

use super::dimse::store::Incoming;
use super::dimse::{self, CommandField, CommandSet, MAX_COMMAND_BYTES};
use super::negotiation::{self, Rejection};
use super::pdu::{self, Frame, PduError, PduReader};
use super::{Node, Peer};
use crate::store::{AuditEvent, AuditOutcome};

/// Where the message exchange stands.
enum Phase {
    /// Between messages.
    Idle,
    /// Command fragments of context `.0` received so far.
    Command(u8, Vec<u8>),
    /// A C-STORE's data set arriving on context `.0`.
    Data(u8, Box<Incoming>),
}

/// How an association ended, for the log.
#[derive(Debug)]
enum End {
    Released,
    AbortedByPeer,
    Aborted(&'static str),
    Closed,
}

/// Serves one connection until the association ends.
pub async fn serve<S>(node: Arc<Node>, mut stream: S, addr: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let idle = Duration::from_secs(node.cfg.limits.idle_timeout_s);
    let mut reader = PduReader::new(node.cfg.limits.max_pdu_bytes);
    let rq = match read_associate_rq(&mut stream, &mut reader, idle).await {
        Ok(rq) => rq,
        Err(why) => {
            tracing::info!(peer = %addr, reason = why, "connection dropped before association");
            return;
        }
    };
    let console_peers = node.console_peers().await;
    let negotiated = match negotiation::negotiate(&rq, &node.cfg, &console_peers, addr.ip()) {
        Ok(n) => n,
        Err(rejection) => {
            reject(
                &node,
                &mut stream,
                addr,
                rq.calling_ae_title.trim(),
                rejection,
            )
            .await;
            return;
        }
    };
    if pdu::write_control(&mut stream, &Pdu::AssociationAC(negotiated.ac.clone()))
        .await
        .is_err()
    {
        return;
    }
    let peer = Peer {
        calling_ae: negotiated.calling_ae.clone(),
        addr,
    };
    audit(&node, &peer.calling_ae, addr, None, AuditOutcome::Success).await;
    tracing::info!(peer = %addr, calling_ae = %peer.calling_ae, "association accepted");
    let _current = crate::metrics::global().association_started();

    let mut phase = Phase::Idle;
    let mut abort = node.abort.subscribe();
    let end = loop {
        let read = tokio::select! {
            r = tokio::time::timeout(idle, reader.read(&mut stream)) => r,
            () = async { drop(abort.wait_for(|a| *a).await) } => {
                pdu::abort(&mut stream, AbortRQServiceProviderReason::ReasonNotSpecified).await;
                break End::Aborted("daemon stopping");
            }
        };
        let frame = match read {
            Err(_) => {
                pdu::abort(
                    &mut stream,
                    AbortRQServiceProviderReason::ReasonNotSpecified,
                )
                .await;
                break End::Aborted("idle timeout");
            }
            Ok(Err(PduError::Closed)) => break End::Closed,
            Ok(Err(e)) => {
                tracing::warn!(peer = %addr, error = %e, "bad PDU");
                if let Some(reason) = e.abort_reason() {
                    pdu::abort(&mut stream, reason).await;
                }
                break End::Aborted("bad PDU");
            }
            Ok(Ok(frame)) => frame,
        };
        let pdvs = match frame {
            Frame::PData(pdvs) => pdvs,
            Frame::Control(Pdu::ReleaseRQ) => {
                let _ = pdu::write_control(&mut stream, &Pdu::ReleaseRP).await;
                break End::Released;
            }
            Frame::Control(Pdu::AbortRQ { .. }) => break End::AbortedByPeer,
            Frame::Control(_) => {
                pdu::abort(&mut stream, AbortRQServiceProviderReason::UnexpectedPdu).await;
                break End::Aborted("unexpected PDU");
            }
        };
        let mut failed = None;
        for pdv in pdvs {
            let Some(ctx) = negotiated.contexts.get(&pdv.context_id) else {
                failed = Some("fragment on a presentation context not accepted");
                break;
            };
            let bytes = reader.bytes(pdv.range.clone());
            phase = match (phase, pdv.is_command) {
                (Phase::Idle, true) => Phase::Command(pdv.context_id, bytes.to_vec()),
                (Phase::Command(id, mut buf), true) if id == pdv.context_id => {
                    if buf.len() + bytes.len() > MAX_COMMAND_BYTES {
                        failed = Some("command set too large");
                        Phase::Idle
                    } else {
                        buf.extend_from_slice(bytes);
                        Phase::Command(id, buf)
                    }
                }
                (Phase::Data(id, mut incoming), false) if id == pdv.context_id => {
                    incoming.data(&node, bytes).await;
                    Phase::Data(id, incoming)
                }
                _ => {
                    failed = Some("fragment out of sequence");
                    Phase::Idle
                }
            };
            if failed.is_some() {
                break;
            }
            if !pdv.is_last {
                continue;
            }
            phase = match phase {
                Phase::Command(id, buf) => match CommandSet::decode(&buf) {
                    Ok(cmd) => {
                        match dispatch(&node, &peer, &mut stream, &negotiated, id, ctx, cmd).await {
                            Ok(next) => next,
                            Err(why) => {
                                failed = Some(why);
                                Phase::Idle
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(peer = %addr, error = %e, "bad command set");
                        failed = Some("bad command set");
                        Phase::Idle
                    }
                },
                Phase::Data(id, incoming) => {
                    let rsp = incoming.finish(&node, &peer).await;
                    if send(&mut stream, id, &rsp, negotiated.peer_max_pdu)
                        .await
                        .is_err()
                    {
                        failed = Some("cannot send response");
                    }
                    Phase::Idle
                }
                Phase::Idle => Phase::Idle,
            };
            if failed.is_some() {
                break;
            }
        }
        if let Some(why) = failed {
            pdu::abort(
                &mut stream,
                AbortRQServiceProviderReason::UnexpectedPduParameter,
            )
            .await;
            break End::Aborted(why);
        }
    };
    // Dropping an unfinished `Incoming` removes its temporary file.
    drop(phase);
    let end = match end {
        End::Released => "released",
        End::AbortedByPeer => "aborted by the peer",
        End::Aborted(why) => why,
        End::Closed => "connection closed",
    };
    tracing::info!(peer = %addr, calling_ae = %peer.calling_ae, end, "association ended");
}

/// Acts on a complete command set; returns the next phase.
async fn dispatch<S>(
    node: &Node,
    peer: &Peer,
    stream: &mut S,
    negotiated: &negotiation::Negotiated,
    id: u8,
    ctx: &negotiation::AcceptedContext,
    cmd: CommandSet,
) -> Result<Phase, &'static str>
where
    S: AsyncWrite + Unpin,
{
    match cmd.field() {
        CommandField::CEchoRq => {
            let rsp = dimse::echo::respond(&cmd);
            send(stream, id, &rsp, negotiated.peer_max_pdu)
                .await
                .map_err(|_| "cannot send response")?;
            Ok(Phase::Idle)
        }
        CommandField::CStoreRq if cmd.has_data_set() => Ok(Phase::Data(
            id,
            Box::new(Incoming::begin(node, peer, cmd, ctx).await),
        )),
        _ => Err("unsupported or malformed DIMSE command"),
    }
}

async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    id: u8,
    rsp: &CommandSet,
    peer_max_pdu: u32,
) -> std::io::Result<()> {
    pdu::write_command(stream, id, &rsp.encode(), peer_max_pdu).await
}

/// Waits (at most `artim`) for the first PDU, which must be an A-ASSOCIATE-RQ.
async fn read_associate_rq<S>(
    stream: &mut S,
    reader: &mut PduReader,
    artim: Duration,
) -> Result<dicom_ul::pdu::AssociationRQ, &'static str>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(artim, reader.read(stream)).await {
        Err(_) => {
            pdu::abort(stream, AbortRQServiceProviderReason::ReasonNotSpecified).await;
            Err("ARTIM timeout")
        }
        Ok(Ok(Frame::Control(Pdu::AssociationRQ(rq)))) => Ok(rq),
        Ok(Ok(_)) => {
            pdu::abort(stream, AbortRQServiceProviderReason::UnexpectedPdu).await;
            Err("first PDU is not an A-ASSOCIATE-RQ")
        }
        Ok(Err(e)) => {
            if let Some(reason) = e.abort_reason() {
                pdu::abort(stream, reason).await;
            }
            Err("unreadable first PDU")
        }
    }
}

/// Sends an A-ASSOCIATE-RJ and records it in the audit log.
pub(crate) async fn reject<S: AsyncWrite + Unpin>(
    node: &Node,
    stream: &mut S,
    addr: SocketAddr,
    calling_ae: &str,
    rejection: Rejection,
) {
    tracing::warn!(peer = %addr, calling_ae, reason = %rejection.why, "association rejected");
    crate::metrics::global().association_rejected();
    // Recorded before the peer hears of it: the audit log never lags what peers saw.
    audit(
        node,
        calling_ae,
        addr,
        Some(rejection.why),
        AuditOutcome::Denied,
    )
    .await;
    let _ = pdu::write_control(stream, &Pdu::AssociationRJ(rejection.rj)).await;
}

/// Reads the A-ASSOCIATE-RQ of a connection that arrived while every slot was taken and
/// answers it with a transient rejection.
pub(crate) async fn reject_busy<S>(node: Arc<Node>, mut stream: S, addr: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let idle = Duration::from_secs(node.cfg.limits.idle_timeout_s);
    let mut reader = PduReader::new(node.cfg.limits.max_pdu_bytes);
    if let Ok(rq) = read_associate_rq(&mut stream, &mut reader, idle).await {
        let calling = rq.calling_ae_title.trim().to_owned();
        reject(&node, &mut stream, addr, &calling, negotiation::busy()).await;
    }
}

async fn audit(
    node: &Node,
    calling_ae: &str,
    addr: SocketAddr,
    why: Option<String>,
    outcome: AuditOutcome,
) {
    let event = AuditEvent {
        actor: calling_ae.chars().take(16).collect(),
        action: "dicom.associate".into(),
        target: why,
        peer_addr: Some(addr.to_string()),
        outcome,
    };
    if let Err(e) = node.store.append_audit(&event).await {
        tracing::error!(error = %e, "cannot write the audit log");
    }
}
