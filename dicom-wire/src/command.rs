//! DIMSE command sets (PS3.7 §9.3, §E): the group 0000 data set that starts every message.
//!
//! A command set is always Implicit VR Little Endian and may arrive split over several P-DATA
//! fragments; [`CommandSet::decode`] reads the reassembled bytes and [`CommandSet::encode`]
//! writes one. Both directions use the same codec: vertebrad's SCP decodes requests and
//! encodes responses, its SCU encodes requests and decodes responses. The services built on
//! command sets (C-ECHO, C-STORE) live in vertebrad's `dicom::dimse`.

/// Largest command set we reassemble. Real ones are a few hundred bytes; the cap keeps a peer
/// from growing a buffer without bound by never setting the "last fragment" bit.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// Command Data Set Type (0000,0800) value meaning "no data set follows".
pub const NO_DATA_SET: u16 = 0x0101;

/// Command Data Set Type (0000,0800) value we send when a data set follows (the standard
/// accepts any value other than [`NO_DATA_SET`]; 0x0001 is what pynetdicom and DCMTK send).
pub const DATA_SET_PRESENT: u16 = 0x0001;

/// The DIMSE command fields this node understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandField {
    /// C-STORE-RQ.
    CStoreRq,
    /// C-STORE-RSP.
    CStoreRsp,
    /// C-ECHO-RQ.
    CEchoRq,
    /// C-ECHO-RSP.
    CEchoRsp,
    /// Any other command (answered by aborting: we negotiated no such service).
    Other(u16),
}

impl CommandField {
    /// The wire value of (0000,0100).
    pub fn code(self) -> u16 {
        match self {
            CommandField::CStoreRq => 0x0001,
            CommandField::CStoreRsp => 0x8001,
            CommandField::CEchoRq => 0x0030,
            CommandField::CEchoRsp => 0x8030,
            CommandField::Other(c) => c,
        }
    }

    fn from_code(code: u16) -> Self {
        match code {
            0x0001 => CommandField::CStoreRq,
            0x8001 => CommandField::CStoreRsp,
            0x0030 => CommandField::CEchoRq,
            0x8030 => CommandField::CEchoRsp,
            c => CommandField::Other(c),
        }
    }
}

/// DIMSE status codes we answer with (PS3.4 Annex B.2.3, PS3.7 Annex C).
pub mod status {
    /// Success.
    pub const SUCCESS: u16 = 0x0000;
    /// Refused: Out of Resources (spool over its high-water mark, object over the size limit).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: Data Set does not match SOP Class.
    pub const DATA_SET_DOES_NOT_MATCH_SOP_CLASS: u16 = 0xA900;
    /// Error: Cannot understand (the data set could not be parsed, or its UIDs contradict the
    /// command).
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Refused: SOP Class not supported (the command's class differs from its presentation
    /// context's abstract syntax).
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Failure: processing failure (the object could not be made durable or indexed).
    pub const PROCESSING_FAILURE: u16 = 0x0110;

    /// What a status code means for the requester (PS3.7 Annex C).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum StatusClass {
        /// 0x0000: done.
        Success,
        /// Done, with a caveat: 0x0001, 0x0107, 0x0116 and 0xB000–0xBFFF (e.g. coercion of
        /// data elements, elements discarded). The object was stored.
        Warning,
        /// 0xFE00: the operation was cancelled.
        Cancel,
        /// 0xFF00, 0xFF01: more responses follow (not used by C-STORE or C-ECHO).
        Pending,
        /// Anything else: refused (0xA7xx out of resources, 0x01xx/0x02xx), error (0xA9xx,
        /// 0xCxxx) or a code the standard does not define. The object was not stored.
        Failure,
    }

    /// The class of `code`.
    pub fn class(code: u16) -> StatusClass {
        match code {
            0x0000 => StatusClass::Success,
            0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => StatusClass::Warning,
            0xFE00 => StatusClass::Cancel,
            0xFF00 | 0xFF01 => StatusClass::Pending,
            _ => StatusClass::Failure,
        }
    }
}

/// The elements of a command set that this node reads or writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandSet {
    /// Affected SOP Class UID (0000,0002).
    pub affected_sop_class_uid: Option<String>,
    /// Command Field (0000,0100).
    pub command_field: u16,
    /// Message ID (0000,0110).
    pub message_id: Option<u16>,
    /// Message ID Being Responded To (0000,0120).
    pub message_id_being_responded_to: Option<u16>,
    /// Priority (0000,0700).
    pub priority: Option<u16>,
    /// Command Data Set Type (0000,0800).
    pub data_set_type: u16,
    /// Status (0000,0900).
    pub status: Option<u16>,
    /// Error Comment (0000,0902).
    pub error_comment: Option<String>,
    /// Affected SOP Instance UID (0000,1000).
    pub affected_sop_instance_uid: Option<String>,
}

/// Why a command set could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    /// The bytes end inside an element.
    #[error("command set truncated at byte {0}")]
    Truncated(usize),
    /// An element outside group 0000.
    #[error("element ({0:04X},{1:04X}) outside the command group")]
    NotCommandGroup(u16, u16),
    /// A value of the wrong size for its element.
    #[error("element (0000,{0:04X}) has length {1}, expected {2}")]
    BadLength(u16, u32, u32),
    /// (0000,0100) is missing.
    #[error("command set has no Command Field (0000,0100)")]
    NoCommandField,
}

impl CommandSet {
    /// The command this set carries.
    pub fn field(&self) -> CommandField {
        CommandField::from_code(self.command_field)
    }

    /// Whether a data set follows this command.
    pub fn has_data_set(&self) -> bool {
        self.data_set_type != NO_DATA_SET
    }

    /// Reads a command set encoded in Implicit VR Little Endian. Unknown group 0000 elements
    /// are skipped; nothing is trusted beyond the given bytes.
    ///
    /// # Errors
    /// [`CommandError`] for truncated, out-of-group or malformed elements.
    pub fn decode(bytes: &[u8]) -> Result<Self, CommandError> {
        let mut cmd = CommandSet {
            data_set_type: NO_DATA_SET,
            ..CommandSet::default()
        };
        let mut seen_field = false;
        let mut pos = 0_usize;
        while pos < bytes.len() {
            let header = bytes
                .get(pos..pos + 8)
                .ok_or(CommandError::Truncated(pos))?;
            let group = u16::from_le_bytes([header[0], header[1]]);
            let element = u16::from_le_bytes([header[2], header[3]]);
            let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if group != 0 {
                return Err(CommandError::NotCommandGroup(group, element));
            }
            let start = pos + 8;
            let end = start
                .checked_add(len as usize)
                .filter(|e| *e <= bytes.len())
                .ok_or(CommandError::Truncated(pos))?;
            let value = &bytes[start..end];
            match element {
                0x0002 => cmd.affected_sop_class_uid = Some(text(value)),
                0x0100 => {
                    cmd.command_field = us(element, value)?;
                    seen_field = true;
                }
                0x0110 => cmd.message_id = Some(us(element, value)?),
                0x0120 => cmd.message_id_being_responded_to = Some(us(element, value)?),
                0x0700 => cmd.priority = Some(us(element, value)?),
                0x0800 => cmd.data_set_type = us(element, value)?,
                0x0900 => cmd.status = Some(us(element, value)?),
                0x0902 => cmd.error_comment = Some(text(value)),
                0x1000 => cmd.affected_sop_instance_uid = Some(text(value)),
                _ => {}
            }
            pos = end;
        }
        if !seen_field {
            return Err(CommandError::NoCommandField);
        }
        Ok(cmd)
    }

    /// Writes this command set in Implicit VR Little Endian, group length first, elements in
    /// ascending tag order, UIDs padded with NUL and texts with a space to even length.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(256);
        if let Some(uid) = &self.affected_sop_class_uid {
            put_text(&mut body, 0x0002, uid, 0);
        }
        put_us(&mut body, 0x0100, self.command_field);
        if let Some(id) = self.message_id {
            put_us(&mut body, 0x0110, id);
        }
        if let Some(id) = self.message_id_being_responded_to {
            put_us(&mut body, 0x0120, id);
        }
        if let Some(p) = self.priority {
            put_us(&mut body, 0x0700, p);
        }
        put_us(&mut body, 0x0800, self.data_set_type);
        if let Some(s) = self.status {
            put_us(&mut body, 0x0900, s);
        }
        if let Some(c) = &self.error_comment {
            put_text(&mut body, 0x0902, c, b' ');
        }
        if let Some(uid) = &self.affected_sop_instance_uid {
            put_text(&mut body, 0x1000, uid, 0);
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        out.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0]);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// The response to this request: same SOP class/instance, `field`, `status`, no data set.
    #[must_use]
    pub fn response(&self, field: CommandField, status: u16, comment: Option<&str>) -> Self {
        CommandSet {
            affected_sop_class_uid: self.affected_sop_class_uid.clone(),
            command_field: field.code(),
            message_id: None,
            message_id_being_responded_to: self.message_id,
            priority: None,
            data_set_type: NO_DATA_SET,
            status: Some(status),
            // Error Comment is LO: at most 64 characters.
            error_comment: comment.map(|c| c.chars().take(64).collect()),
            affected_sop_instance_uid: self.affected_sop_instance_uid.clone(),
        }
    }
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .trim_end_matches(['\0', ' '])
        .to_owned()
}

fn us(element: u16, value: &[u8]) -> Result<u16, CommandError> {
    match value {
        [a, b] => Ok(u16::from_le_bytes([*a, *b])),
        _ => Err(CommandError::BadLength(element, value.len() as u32, 2)),
    }
}

fn put_us(out: &mut Vec<u8>, element: u16, value: u16) {
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&2_u32.to_le_bytes());
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_text(out: &mut Vec<u8>, element: u16, value: &str, pad: u8) {
    let mut bytes = value.as_bytes().to_vec();
    if bytes.len() % 2 == 1 {
        bytes.push(pad);
    }
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A C-ECHO-RQ as DCMTK's echoscu sends it, written out by hand from PS3.7 Table 9.3-12.
    const ECHO_RQ: &[u8] = &[
        0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x38, 0x00, 0x00,
        0x00, // group length 56
        0x00, 0x00, 0x02, 0x00, 0x12, 0x00, 0x00, 0x00, // (0000,0002) len 18
        b'1', b'.', b'2', b'.', b'8', b'4', b'0', b'.', b'1', b'0', b'0', b'0', b'8', b'.', b'1',
        b'.', b'1', 0x00, // "1.2.840.10008.1.1\0"
        0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x30, 0x00, // (0000,0100) = 0x0030
        0x00, 0x00, 0x10, 0x01, 0x02, 0x00, 0x00, 0x00, 0x07, 0x00, // (0000,0110) = 7
        0x00, 0x00, 0x00, 0x08, 0x02, 0x00, 0x00, 0x00, 0x01, 0x01, // (0000,0800) = 0x0101
    ];

    #[test]
    fn decodes_a_hand_written_echo_request() {
        let cmd = CommandSet::decode(ECHO_RQ).unwrap();
        assert_eq!(cmd.field(), CommandField::CEchoRq);
        assert_eq!(cmd.message_id, Some(7));
        assert_eq!(
            cmd.affected_sop_class_uid.as_deref(),
            Some("1.2.840.10008.1.1")
        );
        assert!(!cmd.has_data_set());
    }

    #[test]
    fn encodes_the_echo_response_byte_for_byte() {
        let rq = CommandSet::decode(ECHO_RQ).unwrap();
        let rsp = rq
            .response(CommandField::CEchoRsp, status::SUCCESS, None)
            .encode();
        let expected: &[u8] = &[
            0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x42, 0x00, 0x00, 0x00, // 66
            0x00, 0x00, 0x02, 0x00, 0x12, 0x00, 0x00, 0x00, b'1', b'.', b'2', b'.', b'8', b'4',
            b'0', b'.', b'1', b'0', b'0', b'0', b'8', b'.', b'1', b'.', b'1', 0x00, //
            0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x30, 0x80, // 0x8030
            0x00, 0x00, 0x20, 0x01, 0x02, 0x00, 0x00, 0x00, 0x07, 0x00, // responding to 7
            0x00, 0x00, 0x00, 0x08, 0x02, 0x00, 0x00, 0x00, 0x01, 0x01, // no data set
            0x00, 0x00, 0x00, 0x09, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, // status 0
        ];
        assert_eq!(rsp, expected);
    }

    #[test]
    fn status_codes_fall_into_their_standard_classes() {
        use status::{StatusClass, class};
        assert_eq!(class(0x0000), StatusClass::Success);
        for w in [0x0001, 0x0107, 0x0116, 0xB000, 0xB007, 0xBFFF] {
            assert_eq!(class(w), StatusClass::Warning, "{w:#06x}");
        }
        for f in [
            0xA700, 0xA7FF, 0xA900, 0xC000, 0xCFFF, 0x0110, 0x0122, 0x0211, 0x0124,
        ] {
            assert_eq!(class(f), StatusClass::Failure, "{f:#06x}");
        }
        assert_eq!(class(0xFE00), StatusClass::Cancel);
        assert_eq!(class(0xFF00), StatusClass::Pending);
    }

    #[test]
    fn refuses_truncated_and_foreign_elements() {
        assert_eq!(
            CommandSet::decode(&ECHO_RQ[..ECHO_RQ.len() - 1]),
            Err(CommandError::Truncated(58))
        );
        let mut huge = ECHO_RQ.to_vec();
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            CommandSet::decode(&huge),
            Err(CommandError::Truncated(_))
        ));
        let foreign = [0x08, 0x00, 0x18, 0x00, 0, 0, 0, 0];
        assert_eq!(
            CommandSet::decode(&foreign),
            Err(CommandError::NotCommandGroup(8, 0x18))
        );
        assert_eq!(
            CommandSet::decode(&ECHO_RQ[..12]),
            Err(CommandError::NoCommandField)
        );
    }
}
