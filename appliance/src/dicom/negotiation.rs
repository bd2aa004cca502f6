//! Association negotiation: who may associate, which presentation contexts we accept, and in
//! which transfer syntax.
//!
//! dicom-ul decodes and encodes the A-ASSOCIATE PDUs; the decisions are made here because
//! dicom-ul's acceptor picks the first transfer syntax in the *sender's* order and its access
//! control never sees the peer's address. Here our [`TRANSFER_SYNTAXES`] order wins, and the
//! allow-list matches calling AE title and source address together.

use std::collections::HashMap;
use std::net::IpAddr;

use dicom_ul::pdu::{
    AssociationAC, AssociationRJ, AssociationRJResult, AssociationRJServiceProviderASCEReason,
    AssociationRJServiceUserReason, AssociationRJSource, AssociationRQ, PresentationContextResult,
    PresentationContextResultReason, UserVariableItem,
};

use crate::config::{DicomConfig, PeerConfig};

/// The DICOM application context name (PS3.7 Annex A).
pub const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";

/// Verification SOP class (C-ECHO).
pub const VERIFICATION: &str = "1.2.840.10008.1.1";

/// Storage SOP classes we process (the others are stored without processing, or refused).
pub const PROCESSED_SOP_CLASSES: &[(&str, &str)] = &[
    ("1.2.840.10008.5.1.4.1.1.2", "CT Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.2.1", "Enhanced CT Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.4", "MR Image Storage"),
];

/// The prefix every Storage SOP class UID shares (PS3.4 Annex B.5).
pub const STORAGE_PREFIX: &str = "1.2.840.10008.5.1.4.1.1.";

pub use vertebra_dicom_wire::TRANSFER_SYNTAXES;

/// Implementation Class UID we announce (2.25 UUID-derived root, fixed for this product).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.302275441386437935402418135592834436146";

/// Implementation Version Name we announce.
pub const IMPLEMENTATION_VERSION: &str = "VERTEBRAD_010";

/// What one accepted presentation context carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedContext {
    /// Abstract syntax (SOP class UID).
    pub abstract_syntax: String,
    /// The transfer syntax we chose.
    pub transfer_syntax: String,
}

/// A negotiated association.
#[derive(Clone, Debug)]
pub struct Negotiated {
    /// The A-ASSOCIATE-AC to send.
    pub ac: AssociationAC,
    /// Accepted contexts by presentation context ID.
    pub contexts: HashMap<u8, AcceptedContext>,
    /// The requestor's maximum PDU length (what our P-DATA to it may carry; 0 = unlimited).
    pub peer_max_pdu: u32,
    /// Calling AE title, trimmed.
    pub calling_ae: String,
}

/// Why an association was rejected, for the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The A-ASSOCIATE-RJ to send.
    pub rj: AssociationRJ,
    /// A short reason for the audit log (no PHI: AE titles and addresses only).
    pub why: String,
}

/// Decides on an A-ASSOCIATE-RQ from `peer`. The allow-list is `cfg.peers` and
/// `console_peers` (the enabled peers added in the web console).
///
/// # Errors
/// The [`Rejection`] to send: wrong protocol version or application context, unknown called
/// AE title, a peer not on the allow-list.
pub fn negotiate(
    rq: &AssociationRQ,
    cfg: &DicomConfig,
    console_peers: &[PeerConfig],
    peer: IpAddr,
) -> Result<Negotiated, Rejection> {
    let calling = rq.calling_ae_title.trim().to_owned();
    let called = rq.called_ae_title.trim();
    if rq.protocol_version & 0x0001 == 0 {
        return Err(reject(
            AssociationRJSource::ServiceProviderASCE(
                AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported,
            ),
            "protocol version not supported",
        ));
    }
    if rq.application_context_name.trim_end_matches('\0') != APPLICATION_CONTEXT {
        return Err(reject(
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::ApplicationContextNameNotSupported,
            ),
            "application context name not supported",
        ));
    }
    if cfg.check_called_ae_title && called != cfg.ae_title {
        return Err(reject(
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CalledAETitleNotRecognized,
            ),
            &format!("called AE title `{called}` is not ours"),
        ));
    }
    if !cfg.allow_any_peer
        && cfg.peer(&calling, peer).is_none()
        && !console_peers.iter().any(|p| p.admits(&calling, peer))
    {
        return Err(reject(
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CallingAETitleNotRecognized,
            ),
            &format!("calling AE title `{calling}` from {peer} is not on the allow-list"),
        ));
    }

    let mut contexts = HashMap::new();
    let mut results = Vec::with_capacity(rq.presentation_contexts.len());
    for pc in &rq.presentation_contexts {
        let abstract_syntax = trim_uid(&pc.abstract_syntax);
        let (reason, ts) = if !abstract_syntax_accepted(abstract_syntax, cfg) {
            (
                PresentationContextResultReason::AbstractSyntaxNotSupported,
                None,
            )
        } else if let Some(ts) = choose_transfer_syntax(&pc.transfer_syntaxes) {
            (PresentationContextResultReason::Acceptance, Some(ts))
        } else {
            (
                PresentationContextResultReason::TransferSyntaxesNotSupported,
                None,
            )
        };
        if let Some(ts) = ts {
            contexts.insert(
                pc.id,
                AcceptedContext {
                    abstract_syntax: abstract_syntax.to_owned(),
                    transfer_syntax: ts.to_owned(),
                },
            );
        }
        results.push(PresentationContextResult {
            id: pc.id,
            reason,
            // Not significant when rejected; the standard asks for a syntax anyway.
            transfer_syntax: ts.unwrap_or("1.2.840.10008.1.2").to_owned(),
        });
    }

    let peer_max_pdu = rq
        .user_variables
        .iter()
        .find_map(|v| match v {
            UserVariableItem::MaxLength(n) => Some(*n),
            _ => None,
        })
        .unwrap_or(dicom_ul::pdu::DEFAULT_MAX_PDU);
    let ac = AssociationAC {
        protocol_version: 1,
        calling_ae_title: rq.calling_ae_title.clone(),
        called_ae_title: rq.called_ae_title.clone(),
        application_context_name: APPLICATION_CONTEXT.to_owned(),
        presentation_contexts: results,
        user_variables: vec![
            UserVariableItem::MaxLength(cfg.limits.max_pdu_bytes),
            UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.to_owned()),
            UserVariableItem::ImplementationVersionName(IMPLEMENTATION_VERSION.to_owned()),
        ],
    };
    Ok(Negotiated {
        ac,
        contexts,
        peer_max_pdu,
        calling_ae: calling,
    })
}

/// The A-ASSOCIATE-RJ sent when all association slots are taken: transient, so the sender
/// retries later.
pub fn busy() -> Rejection {
    Rejection {
        rj: AssociationRJ {
            result: AssociationRJResult::Transient,
            source: AssociationRJSource::ServiceProviderPresentation(
                dicom_ul::pdu::AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
            ),
        },
        why: "maximum number of concurrent associations reached".into(),
    }
}

fn reject(source: AssociationRJSource, why: &str) -> Rejection {
    Rejection {
        rj: AssociationRJ {
            result: AssociationRJResult::Permanent,
            source,
        },
        why: why.chars().take(200).collect(),
    }
}

fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' '])
}

/// Whether we take presentation contexts of this SOP class.
pub fn abstract_syntax_accepted(uid: &str, cfg: &DicomConfig) -> bool {
    uid == VERIFICATION
        || is_processed(uid)
        || (cfg.accept_other_storage && uid.starts_with(STORAGE_PREFIX))
}

/// Whether instances of this SOP class are analysed (rather than only stored).
pub fn is_processed(sop_class_uid: &str) -> bool {
    PROCESSED_SOP_CLASSES
        .iter()
        .any(|(uid, _)| *uid == sop_class_uid)
}

/// The first of [`TRANSFER_SYNTAXES`] (our order) that the sender offered.
pub fn choose_transfer_syntax(offered: &[String]) -> Option<&'static str> {
    TRANSFER_SYNTAXES
        .iter()
        .map(|(uid, _)| *uid)
        .find(|ours| offered.iter().any(|o| trim_uid(o) == *ours))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::PresentationContextProposed;

    fn rq(calling: &str, called: &str, contexts: &[(&str, &[&str])]) -> AssociationRQ {
        AssociationRQ {
            protocol_version: 1,
            calling_ae_title: calling.into(),
            called_ae_title: called.into(),
            application_context_name: APPLICATION_CONTEXT.into(),
            presentation_contexts: contexts
                .iter()
                .enumerate()
                .map(|(i, (a, ts))| PresentationContextProposed {
                    id: (2 * i + 1) as u8,
                    abstract_syntax: (*a).into(),
                    transfer_syntaxes: ts.iter().map(|t| (*t).to_string()).collect(),
                })
                .collect(),
            user_variables: vec![UserVariableItem::MaxLength(16_384)],
        }
    }

    fn cfg() -> DicomConfig {
        crate::config::Config::from_toml(
            r#"
            [dicom]
            ae_title = "SPINE"
            [[dicom.peers]]
            ae_title = "CT1"
            addresses = ["10.0.0.0/8"]
            "#,
        )
        .unwrap()
        .dicom
    }

    const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
    const LOCALIZER_SC: &str = "1.2.840.10008.5.1.4.1.1.7";
    const FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";

    #[test]
    fn our_transfer_syntax_order_wins_over_the_senders() {
        let offered = [
            "1.2.840.10008.1.2",
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2.4.90",
        ];
        let n = negotiate(
            &rq("CT1", "SPINE", &[(CT, &offered)]),
            &cfg(),
            &[],
            "10.1.1.1".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(n.contexts[&1].transfer_syntax, "1.2.840.10008.1.2.4.90");
        assert_eq!(n.peer_max_pdu, 16_384);
        // Lossy is chosen only when nothing lossless is offered.
        assert_eq!(
            choose_transfer_syntax(&["1.2.840.10008.1.2.4.50".into(), "1.2.840.10008.1.2".into()]),
            Some("1.2.840.10008.1.2")
        );
        assert_eq!(
            choose_transfer_syntax(&["1.2.840.10008.1.2.4.100".into()]),
            None
        );
    }

    #[test]
    fn contexts_are_refused_with_the_right_reason() {
        use PresentationContextResultReason as R;
        let mut c = cfg();
        c.accept_other_storage = false;
        let n = negotiate(
            &rq(
                "CT1",
                "SPINE",
                &[
                    (CT, &["1.2.840.10008.1.2.4.100"]),
                    (LOCALIZER_SC, &["1.2.840.10008.1.2"]),
                    (FIND, &["1.2.840.10008.1.2"]),
                    (VERIFICATION, &["1.2.840.10008.1.2"]),
                ],
            ),
            &c,
            &[],
            "10.1.1.1".parse().unwrap(),
        )
        .unwrap();
        let reasons: Vec<_> =
            n.ac.presentation_contexts
                .iter()
                .map(|r| r.reason.clone())
                .collect();
        assert_eq!(
            reasons,
            [
                R::TransferSyntaxesNotSupported,
                R::AbstractSyntaxNotSupported,
                R::AbstractSyntaxNotSupported,
                R::Acceptance
            ]
        );
        c.accept_other_storage = true;
        assert!(abstract_syntax_accepted(LOCALIZER_SC, &c));
        assert!(!abstract_syntax_accepted(FIND, &c));
    }

    #[test]
    fn unknown_peers_and_wrong_called_titles_are_rejected_with_their_reason() {
        let ctx: &[(&str, &[&str])] = &[(VERIFICATION, &["1.2.840.10008.1.2"])];
        let ip: IpAddr = "10.1.1.1".parse().unwrap();
        let source = |r: Result<Negotiated, Rejection>| r.unwrap_err().rj.source;
        assert_eq!(
            source(negotiate(&rq("CT2", "SPINE", ctx), &cfg(), &[], ip)),
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CallingAETitleNotRecognized
            )
        );
        assert_eq!(
            source(negotiate(
                &rq("CT1", "SPINE", ctx),
                &cfg(),
                &[],
                "192.168.0.1".parse().unwrap()
            )),
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CallingAETitleNotRecognized
            )
        );
        assert_eq!(
            source(negotiate(&rq("CT1", "OTHER", ctx), &cfg(), &[], ip)),
            AssociationRJSource::ServiceUser(
                AssociationRJServiceUserReason::CalledAETitleNotRecognized
            )
        );
        let rej = negotiate(&rq("CT2", "SPINE", ctx), &cfg(), &[], ip).unwrap_err();
        assert_eq!(rej.rj.result, AssociationRJResult::Permanent);
        assert_eq!(busy().rj.result, AssociationRJResult::Transient);
    }

    #[test]
    fn console_peers_join_the_configured_allow_list() {
        let ctx: &[(&str, &[&str])] = &[(VERIFICATION, &["1.2.840.10008.1.2"])];
        let console = [PeerConfig {
            ae_title: "CT2".into(),
            addresses: vec!["10.1.0.0/16".into()],
            stable_after_s: None,
        }];
        let ok = |ip: &str| {
            negotiate(
                &rq("CT2", "SPINE", ctx),
                &cfg(),
                &console,
                ip.parse().unwrap(),
            )
        };
        assert!(ok("10.1.9.9").is_ok());
        assert!(ok("10.2.0.1").is_err(), "outside the console peer's block");
        // The configured peer still passes with a console list present.
        assert!(
            negotiate(
                &rq("CT1", "SPINE", ctx),
                &cfg(),
                &console,
                "10.1.1.1".parse().unwrap()
            )
            .is_ok()
        );
    }
}
