//! C-STORE (Storage, PS3.4 Annex B): stream the data set into the spool, make it durable,
//! index it, and only then answer Success.
//!
//! The life of one C-STORE:
//!
//! 1. [`Incoming::begin`] on the command set: check the UIDs and the spool's high-water mark,
//!    open a temporary file and write the Part 10 header (file meta from the command and the
//!    presentation context's transfer syntax).
//! 2. [`Incoming::data`] for every data fragment: appended (and hashed) as it arrives, so
//!    memory stays at one PDU whatever the object's size; over `max_object_bytes` the file is
//!    dropped and the rest of the object is read and discarded.
//! 3. [`Incoming::finish`] on the last fragment: fsync, read the header back (study, series,
//!    modality, and a check that it is the instance the command announced), rename into the
//!    spool under hashed UIDs, fsync the directories, index in the store, note the series
//!    for completion — and return the response. **Success is only returned after all of
//!    that.** Any failure returns a failure status; objects that cannot be understood are
//!    kept in the quarantine.
//!
//! A second copy of an instance (same SOP Instance UID) replaces the first file atomically
//! and re-indexes to the same row: stored once, answered Success.
//!
//! For the SCU direction ([`crate::dicom::scu`]) this file builds the C-STORE-RQ
//! ([`request`]); the C-STORE-RSP it gets back is read with [`CommandSet::decode`].

use std::time::{SystemTime, UNIX_EPOCH};

use vertebra_dicom_wire::ingest::{FileMeta, InstanceHeader, part10_header};

use super::{CommandField, CommandSet, status};
use crate::dicom::negotiation::{self, AcceptedContext};
use crate::dicom::spool::{SpoolWriter, Written};
use crate::dicom::{Node, Peer};
use crate::store::{NewInstance, NewSeries, NewStudy};

/// Priority (0000,0700) MEDIUM, what we send with every C-STORE-RQ.
pub const PRIORITY_MEDIUM: u16 = 0x0000;

/// The C-STORE-RQ an SCU sends for one instance: message `message_id`, priority medium, a
/// data set following.
pub fn request(message_id: u16, sop_class_uid: &str, sop_instance_uid: &str) -> CommandSet {
    CommandSet {
        affected_sop_class_uid: Some(sop_class_uid.to_owned()),
        command_field: CommandField::CStoreRq.code(),
        message_id: Some(message_id),
        priority: Some(PRIORITY_MEDIUM),
        data_set_type: super::DATA_SET_PRESENT,
        affected_sop_instance_uid: Some(sop_instance_uid.to_owned()),
        ..CommandSet::default()
    }
}

/// A C-STORE whose data set is arriving.
#[derive(Debug)]
pub struct Incoming {
    rq: CommandSet,
    transfer_syntax: String,
    sink: Sink,
    header_len: u64,
}

#[derive(Debug)]
enum Sink {
    /// Appending to the spool file (boxed: the writer is large, the other variant tiny).
    Writing(Box<SpoolWriter>),
    /// Reading and dropping the data set; answer with this status once it ends.
    Discarding(u16, &'static str),
}

impl Incoming {
    /// Starts receiving the data set announced by C-STORE-RQ `rq` on context `ctx`.
    pub async fn begin(node: &Node, peer: &Peer, rq: CommandSet, ctx: &AcceptedContext) -> Self {
        let discard = |rq, status, why| Incoming {
            rq,
            transfer_syntax: ctx.transfer_syntax.clone(),
            sink: Sink::Discarding(status, why),
            header_len: 0,
        };
        let (Some(class), Some(instance)) = (
            rq.affected_sop_class_uid.clone(),
            rq.affected_sop_instance_uid.clone(),
        ) else {
            return discard(rq, status::CANNOT_UNDERSTAND, "missing affected SOP UIDs");
        };
        if class != ctx.abstract_syntax {
            return discard(
                rq,
                status::SOP_CLASS_NOT_SUPPORTED,
                "SOP class differs from the presentation context",
            );
        }
        match node.spool.over_high_water() {
            Ok(false) => {}
            Ok(true) => {
                tracing::warn!("spool above its high-water mark: refusing C-STORE");
                return discard(rq, status::OUT_OF_RESOURCES, "spool full");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot check the spool's free space");
                return discard(rq, status::OUT_OF_RESOURCES, "spool unavailable");
            }
        }
        let header = part10_header(&FileMeta {
            sop_class_uid: &class,
            sop_instance_uid: &instance,
            transfer_syntax: &ctx.transfer_syntax,
            implementation_class_uid: negotiation::IMPLEMENTATION_CLASS_UID,
            implementation_version_name: negotiation::IMPLEMENTATION_VERSION,
            source_ae_title: &peer.calling_ae,
        });
        let header = match header {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot build file meta information");
                return discard(rq, status::CANNOT_UNDERSTAND, "bad UIDs in command");
            }
        };
        match node.spool.create(&header).await {
            Ok(w) => Incoming {
                rq,
                transfer_syntax: ctx.transfer_syntax.clone(),
                header_len: header.len() as u64,
                sink: Sink::Writing(Box::new(w)),
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot create a spool file");
                discard(rq, status::OUT_OF_RESOURCES, "spool unavailable")
            }
        }
    }

    /// Appends one data fragment.
    pub async fn data(&mut self, node: &Node, bytes: &[u8]) {
        let Sink::Writing(w) = &mut self.sink else {
            return;
        };
        let body = w.len() - self.header_len;
        if body + bytes.len() as u64 > node.cfg.limits.max_object_bytes {
            tracing::warn!(
                limit = node.cfg.limits.max_object_bytes,
                "object exceeds the size limit: discarding it"
            );
            self.sink = Sink::Discarding(status::OUT_OF_RESOURCES, "object too large");
            return;
        }
        if let Err(e) = w.write(bytes).await {
            tracing::error!(error = %e, "writing to the spool failed");
            self.sink = Sink::Discarding(status::OUT_OF_RESOURCES, "spool write failed");
        }
    }

    /// Completes the C-STORE after the last fragment and returns the C-STORE-RSP.
    pub async fn finish(self, node: &Node, peer: &Peer) -> CommandSet {
        let (code, comment) = match self.sink {
            Sink::Discarding(code, why) => (code, Some(why)),
            Sink::Writing(w) => {
                match commit(node, peer, &self.rq, &self.transfer_syntax, *w).await {
                    Ok(()) => (status::SUCCESS, None),
                    Err((code, why)) => (code, Some(why)),
                }
            }
        };
        self.rq.response(CommandField::CStoreRsp, code, comment)
    }
}

type Failure = (u16, &'static str);

async fn commit(
    node: &Node,
    peer: &Peer,
    rq: &CommandSet,
    transfer_syntax: &str,
    writer: SpoolWriter,
) -> Result<(), Failure> {
    let written = writer.finish().await.map_err(|e| {
        tracing::error!(error = %e, "fsync of a spool file failed");
        (status::OUT_OF_RESOURCES, "spool write failed")
    })?;
    let path = written.path.clone();
    let header = tokio::task::spawn_blocking(move || read_header(&path))
        .await
        .map_err(|_| (status::PROCESSING_FAILURE, "header reader failed"))?;
    let header = match header {
        Ok(h) => h,
        Err(why) => return Err(quarantine(node, written, status::CANNOT_UNDERSTAND, why).await),
    };
    if rq.affected_sop_instance_uid.as_deref() != Some(header.sop_instance_uid.as_str()) {
        return Err(quarantine(
            node,
            written,
            status::CANNOT_UNDERSTAND,
            "SOP Instance UID differs from the command",
        )
        .await);
    }
    // Some anonymisers blank (0008,0016); the command (and so our file meta) names the
    // class then. A class that is present must agree with the command.
    let sop_class_uid = match (
        header.sop_class_uid.as_deref(),
        rq.affected_sop_class_uid.as_deref(),
    ) {
        (None, Some(command)) => command.to_owned(),
        (Some(ours), Some(command)) if ours == command => command.to_owned(),
        _ => {
            return Err(quarantine(
                node,
                written,
                status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                "SOP Class UID differs from the command",
            )
            .await);
        }
    };

    let dest = node.spool.final_path(
        &header.study_uid,
        &header.series_uid,
        &header.sop_instance_uid,
    );
    let size = written.size;
    let sha256 = written.sha256.clone();
    // Same instance from two associations at once: serialise rename + index so the index
    // always describes the file that is on disk.
    let _guard = node.commit_lock(&header.sop_instance_uid).await;
    let duplicate = node.spool.commit(written, &dest).await.map_err(|e| {
        tracing::error!(error = %e, "committing a spool file failed");
        (status::OUT_OF_RESOURCES, "spool commit failed")
    })?;
    let received_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let series_uid = header.series_uid.clone();
    let processed = negotiation::is_processed(&sop_class_uid);
    let instance = NewInstance {
        study: NewStudy {
            study_uid: header.study_uid,
            patient_name: header.patient_name,
            patient_id: header.patient_id,
            study_date: header.study_date,
        },
        series: NewSeries {
            series_uid: header.series_uid,
            modality: header.modality.unwrap_or_else(|| "OT".into()),
        },
        sop_instance_uid: header.sop_instance_uid,
        sop_class_uid,
        transfer_syntax: transfer_syntax.to_owned(),
        spool_path: dest.to_string_lossy().into_owned(),
        size_bytes: size,
        sha256,
        received_at_ms,
        calling_ae: peer.calling_ae.clone(),
        peer_addr: peer.addr.to_string(),
    };
    let ids = node.store.index_instance(&instance).await.map_err(|e| {
        // The file stays in the spool under its final name: a resend re-indexes it.
        tracing::error!(error = %e, "indexing a received instance failed");
        (status::PROCESSING_FAILURE, "indexing failed")
    })?;
    crate::metrics::global().instance_stored(size);
    if duplicate {
        tracing::info!(
            instance_id = ids.instance_id,
            "duplicate instance stored once"
        );
    }
    if processed {
        node.tracker.note(
            &series_uid,
            ids.series_id,
            received_at_ms,
            node.stable_after(&peer.calling_ae),
        );
    }
    Ok(())
}

async fn quarantine(node: &Node, written: Written, code: u16, why: &'static str) -> Failure {
    match node.spool.quarantine(written).await {
        Ok(p) => tracing::warn!(reason = why, path = %p.display(), "object quarantined"),
        Err(e) => tracing::error!(error = %e, "quarantining an object failed"),
    }
    (code, why)
}

/// Reads the header of a spooled Part 10 file (see [`InstanceHeader::read`]).
fn read_header(path: &std::path::Path) -> Result<InstanceHeader, &'static str> {
    let file = std::fs::File::open(path).map_err(|_| "spooled file cannot be read")?;
    InstanceHeader::read(std::io::BufReader::new(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_store_request_byte_for_byte() {
        // PS3.7 Table 9.3-1, written out by hand: CT Image Storage, message 1, medium priority.
        let mut expected: Vec<u8> = vec![0, 0, 0, 0, 4, 0, 0, 0, 0x58, 0, 0, 0];
        expected.extend_from_slice(&[0, 0, 0x02, 0, 26, 0, 0, 0]);
        expected.extend_from_slice(b"1.2.840.10008.5.1.4.1.1.2\0");
        expected.extend_from_slice(&[0, 0, 0x00, 0x01, 2, 0, 0, 0, 0x01, 0x00]);
        expected.extend_from_slice(&[0, 0, 0x10, 0x01, 2, 0, 0, 0, 0x01, 0x00]);
        expected.extend_from_slice(&[0, 0, 0x00, 0x07, 2, 0, 0, 0, 0x00, 0x00]);
        expected.extend_from_slice(&[0, 0, 0x00, 0x08, 2, 0, 0, 0, 0x01, 0x00]);
        expected.extend_from_slice(&[0, 0, 0x00, 0x10, 6, 0, 0, 0]);
        expected.extend_from_slice(b"1.2.3\0");
        let rq = request(1, "1.2.840.10008.5.1.4.1.1.2", "1.2.3");
        assert_eq!(rq.encode(), expected);
        let back = CommandSet::decode(&expected).unwrap();
        assert_eq!(back, rq);
        assert!(back.has_data_set());
    }

    #[test]
    fn decodes_a_store_response_with_a_warning_and_a_comment() {
        // A C-STORE-RSP as a peer answers a coerced object: status 0xB000, error comment.
        let mut rsp: Vec<u8> = Vec::new();
        let mut body: Vec<u8> = Vec::new();
        body.extend_from_slice(&[0, 0, 0x02, 0, 26, 0, 0, 0]);
        body.extend_from_slice(b"1.2.840.10008.5.1.4.1.1.2\0");
        body.extend_from_slice(&[0, 0, 0x00, 0x01, 2, 0, 0, 0, 0x01, 0x80]);
        body.extend_from_slice(&[0, 0, 0x20, 0x01, 2, 0, 0, 0, 0x05, 0x00]);
        body.extend_from_slice(&[0, 0, 0x00, 0x08, 2, 0, 0, 0, 0x01, 0x01]);
        body.extend_from_slice(&[0, 0, 0x00, 0x09, 2, 0, 0, 0, 0x00, 0xB0]);
        body.extend_from_slice(&[0, 0, 0x02, 0x09, 8, 0, 0, 0]);
        body.extend_from_slice(b"coerced ");
        body.extend_from_slice(&[0, 0, 0x00, 0x10, 6, 0, 0, 0]);
        body.extend_from_slice(b"1.2.3\0");
        rsp.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0]);
        rsp.extend_from_slice(&(body.len() as u32).to_le_bytes());
        rsp.extend_from_slice(&body);
        let cmd = CommandSet::decode(&rsp).unwrap();
        assert_eq!(cmd.field(), CommandField::CStoreRsp);
        assert_eq!(cmd.message_id_being_responded_to, Some(5));
        assert_eq!(cmd.status, Some(0xB000));
        assert_eq!(cmd.error_comment.as_deref(), Some("coerced"));
        assert_eq!(cmd.affected_sop_instance_uid.as_deref(), Some("1.2.3"));
        assert!(!cmd.has_data_set());
    }
}
