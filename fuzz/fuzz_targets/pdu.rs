//! Fuzz target: a byte stream from a peer, read the way vertebrad's association loop and SCU
//! read it — PDU framing with every length checked (`PduReader`, our P-DATA split, dicom-ul's
//! decoder for the other PDUs), command fragments reassembled up to `MAX_COMMAND_BYTES`, and
//! `CommandSet::decode` on each complete command set.
//!
//! Besides "no panic, no runaway allocation", it checks two properties: every PDV range the
//! reader hands out lies inside its buffer, and a decoded command set survives our own
//! encode/decode round trip unchanged (the SCP answers with what it decoded).

#![no_main]

use dicom_ul::pdu::Pdu;
use libfuzzer_sys::fuzz_target;
use vertebra_dicom_wire::command::{CommandField, CommandSet, MAX_COMMAND_BYTES, status};
use vertebra_dicom_wire::pdu::{Frame, PduReader};

/// Our announced maximum PDU length, small so short inputs reach the "too long" path.
const MAX_PDATA: u32 = 4096;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
}

fuzz_target!(|data: &[u8]| {
    RUNTIME.with(|rt| rt.block_on(read_stream(data)));
});

async fn read_stream(mut stream: &[u8]) {
    let mut reader = PduReader::new(MAX_PDATA);
    // Command fragments of one context, as the association loop keeps them.
    let mut command: Option<(u8, Vec<u8>)> = None;
    while let Ok(frame) = reader.read(&mut stream).await {
        match frame {
            Frame::Control(pdu) => {
                // What a peer sent must encode again (we log and answer it).
                let mut out = Vec::new();
                let _ = dicom_ul::pdu::write_pdu(&mut out, &pdu);
                if matches!(pdu, Pdu::ReleaseRQ | Pdu::AbortRQ { .. }) {
                    return;
                }
            }
            Frame::PData(pdvs) => {
                for pdv in pdvs {
                    let bytes = reader.bytes(pdv.range.clone());
                    if !pdv.is_command {
                        command = None;
                        continue;
                    }
                    let (id, buf) = command.get_or_insert_with(|| (pdv.context_id, Vec::new()));
                    if *id != pdv.context_id || buf.len() + bytes.len() > MAX_COMMAND_BYTES {
                        // The association loop aborts here.
                        return;
                    }
                    buf.extend_from_slice(bytes);
                    if pdv.is_last {
                        check_command(buf);
                        command = None;
                    }
                }
            }
        }
    }
}

fn check_command(bytes: &[u8]) {
    let Ok(cmd) = CommandSet::decode(bytes) else {
        return;
    };
    let _ = cmd.field();
    let _ = cmd.has_data_set();
    assert_eq!(
        CommandSet::decode(&cmd.encode()).as_ref(),
        Ok(&cmd),
        "a decoded command set does not survive encode/decode"
    );
    let rsp = cmd.response(
        CommandField::CStoreRsp,
        status::OUT_OF_RESOURCES,
        Some("spool full"),
    );
    assert_eq!(
        CommandSet::decode(&rsp.encode()).as_ref(),
        Ok(&rsp),
        "our response does not survive encode/decode"
    );
}
