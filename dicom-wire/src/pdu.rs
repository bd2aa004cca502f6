//! PDU framing on a byte stream: read one PDU with every length checked before memory is
//! committed, write the PDUs we send.
//!
//! Association PDUs (A-ASSOCIATE-RQ/AC/RJ, A-RELEASE, A-ABORT) are decoded and encoded by
//! dicom-ul's `pdu` module. P-DATA-TF is split into its PDVs here, in place, because it is the
//! hot path and because each PDV goes straight to the command reassembler or to the spool
//! file: no per-fragment allocation, and memory per association is one buffer of at most the
//! negotiated maximum PDU length.
//!
//! A peer cannot make us allocate more than that: the 4-byte length of every PDU is compared
//! with our limit *before* the body is read, so a "4 GiB" length claim costs nothing but the
//! abort that answers it.

use std::ops::Range;

use dicom_ul::pdu::{AbortRQServiceProviderReason, AbortRQSource, Pdu};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest non-P-DATA PDU we read (an A-ASSOCIATE-RQ with 128 presentation contexts of
/// several transfer syntaxes each is a few tens of KiB).
pub const MAX_CONTROL_PDU: u32 = 256 * 1024;

/// P-DATA-TF's PDU type.
const P_DATA_TF: u8 = 0x04;

/// Why no PDU could be read.
#[derive(Debug, thiserror::Error)]
pub enum PduError {
    /// The peer closed the connection between PDUs.
    #[error("connection closed by the peer")]
    Closed,
    /// The connection failed or ended inside a PDU.
    #[error("reading a PDU: {0}")]
    Io(#[from] std::io::Error),
    /// A length field exceeds what we accept.
    #[error("PDU of type {pdu_type:#04x} claims {length} bytes, more than the limit {limit}")]
    TooLong {
        /// The PDU type.
        pdu_type: u8,
        /// The claimed length.
        length: u32,
        /// Our limit.
        limit: u32,
    },
    /// The PDU's contents are malformed.
    #[error("malformed PDU: {0}")]
    Malformed(String),
}

impl PduError {
    /// The A-ABORT that answers this error (none when the connection is gone anyway).
    pub fn abort_reason(&self) -> Option<AbortRQServiceProviderReason> {
        match self {
            PduError::Closed | PduError::Io(_) => None,
            PduError::TooLong { .. } => Some(AbortRQServiceProviderReason::InvalidPduParameter),
            PduError::Malformed(_) => Some(AbortRQServiceProviderReason::UnrecognizedPdu),
        }
    }
}

/// One PDV of a P-DATA-TF: where its bytes lie in the reader's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pdv {
    /// Presentation context ID.
    pub context_id: u8,
    /// Whether the fragment is part of a command set (else of a data set).
    pub is_command: bool,
    /// Whether it is the last fragment of its command or data set.
    pub is_last: bool,
    /// The fragment's bytes in [`PduReader::bytes`].
    pub range: Range<usize>,
}

/// What [`PduReader::read`] returns.
#[derive(Debug)]
pub enum Frame {
    /// A P-DATA-TF with its PDVs (bytes in the reader's buffer).
    PData(Vec<Pdv>),
    /// Any other PDU, decoded by dicom-ul.
    Control(Pdu),
}

/// Reads PDUs from a stream into one reusable buffer.
#[derive(Debug)]
pub struct PduReader {
    buf: Vec<u8>,
    max_pdata: u32,
}

impl PduReader {
    /// A reader accepting P-DATA-TF PDUs of at most `max_pdata` bytes (our announced maximum
    /// length).
    pub fn new(max_pdata: u32) -> Self {
        Self {
            buf: Vec::new(),
            max_pdata,
        }
    }

    /// The bytes of the last P-DATA-TF read.
    pub fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Reads the next PDU.
    ///
    /// # Errors
    /// [`PduError`]: closed, I/O, over-long or malformed.
    pub async fn read<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> Result<Frame, PduError> {
        let mut header = [0_u8; 6];
        match stream.read(&mut header[..1]).await? {
            0 => return Err(PduError::Closed),
            _ => stream.read_exact(&mut header[1..]).await?,
        };
        let pdu_type = header[0];
        let length = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        let limit = if pdu_type == P_DATA_TF {
            self.max_pdata
        } else {
            MAX_CONTROL_PDU
        };
        if length > limit {
            return Err(PduError::TooLong {
                pdu_type,
                length,
                limit,
            });
        }
        self.buf.clear();
        self.buf.extend_from_slice(&header);
        self.buf.resize(6 + length as usize, 0);
        stream.read_exact(&mut self.buf[6..]).await?;
        if pdu_type == P_DATA_TF {
            return split_pdvs(&self.buf).map(Frame::PData);
        }
        match dicom_ul::pdu::read_pdu(&self.buf[..], dicom_ul::pdu::MAXIMUM_PDU_SIZE, false) {
            Ok(Some(pdu)) => Ok(Frame::Control(pdu)),
            Ok(None) => Err(PduError::Malformed("empty PDU".into())),
            Err(e) => Err(PduError::Malformed(e.to_string())),
        }
    }
}

/// Splits a P-DATA-TF (header included) into its PDVs, checking every item length.
fn split_pdvs(pdu: &[u8]) -> Result<Vec<Pdv>, PduError> {
    let mut pdvs = Vec::new();
    let mut pos = 6;
    while pos < pdu.len() {
        let Some(h) = pdu.get(pos..pos + 6) else {
            return Err(PduError::Malformed("PDV header cut short".into()));
        };
        let item_len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if item_len < 2 {
            return Err(PduError::Malformed(format!(
                "PDV item length {item_len} is below 2"
            )));
        }
        let end = pos + 4 + item_len;
        if end > pdu.len() {
            return Err(PduError::Malformed(format!(
                "PDV item length {item_len} runs past the end of its PDU"
            )));
        }
        let control = h[5];
        pdvs.push(Pdv {
            context_id: h[4],
            is_command: control & 0x01 != 0,
            is_last: control & 0x02 != 0,
            range: pos + 6..end,
        });
        pos = end;
    }
    if pdvs.is_empty() {
        return Err(PduError::Malformed("P-DATA-TF without PDVs".into()));
    }
    Ok(pdvs)
}

/// Writes a PDU encoded by dicom-ul.
///
/// # Errors
/// Encoding or I/O errors, as text.
pub async fn write_control<S: AsyncWrite + Unpin>(
    stream: &mut S,
    pdu: &Pdu,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(512);
    dicom_ul::pdu::write_pdu(&mut out, pdu).map_err(std::io::Error::other)?;
    stream.write_all(&out).await?;
    stream.flush().await
}

/// Writes an A-ABORT from the service provider with `reason`, ignoring errors (the connection
/// is being dropped anyway).
pub async fn abort<S: AsyncWrite + Unpin>(stream: &mut S, reason: AbortRQServiceProviderReason) {
    let pdu = Pdu::AbortRQ {
        source: AbortRQSource::ServiceProvider(reason),
    };
    let _ = write_control(stream, &pdu).await;
}

/// Writes a command set as P-DATA-TF PDUs of at most `max_pdu` bytes of PDV list each.
///
/// # Errors
/// I/O errors.
pub async fn write_command<S: AsyncWrite + Unpin>(
    stream: &mut S,
    context_id: u8,
    command: &[u8],
    max_pdu: u32,
) -> std::io::Result<()> {
    // A max length of 0 means "unlimited"; keep fragments reasonable either way.
    let room = if max_pdu == 0 {
        1 << 20
    } else {
        max_pdu as usize
    };
    let chunk = room.saturating_sub(6).max(1);
    let mut out = Vec::with_capacity(command.len() + 12);
    let mut chunks = command.chunks(chunk).peekable();
    while let Some(part) = chunks.next() {
        let last = chunks.peek().is_none();
        let item_len = part.len() as u32 + 2;
        out.push(P_DATA_TF);
        out.push(0);
        out.extend_from_slice(&(item_len + 4).to_be_bytes());
        out.extend_from_slice(&item_len.to_be_bytes());
        out.push(context_id);
        out.push(if last { 0x03 } else { 0x01 });
        out.extend_from_slice(part);
    }
    stream.write_all(&out).await?;
    stream.flush().await
}

/// Largest PDV we put in one P-DATA-TF when sending a data set, whatever the peer allows: a
/// peer announcing "unlimited" (0) or gigabytes must not make us allocate that much.
pub const MAX_SENT_PDV: usize = 1 << 20;

/// Sends the next `len` bytes of `source` as the data set of one message on context
/// `context_id`: P-DATA-TF PDUs of at most `max_pdu` bytes (the peer's maximum; 0 means no
/// limit), one PDV each, the last one flagged as such. Memory stays at one PDU whatever the
/// object's size. An empty data set is sent as one empty last fragment. Each PDU must be
/// written within `stall` (a peer that stops reading cannot hold us forever).
///
/// # Errors
/// I/O errors, [`std::io::ErrorKind::UnexpectedEof`] when `source` ends before `len` bytes
/// (the file shrank while being sent), [`std::io::ErrorKind::TimedOut`] after a stall.
pub async fn write_data<S, R>(
    stream: &mut S,
    context_id: u8,
    source: &mut R,
    len: u64,
    max_pdu: u32,
    stall: std::time::Duration,
) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let room = if max_pdu == 0 {
        MAX_SENT_PDV
    } else {
        (max_pdu as usize).saturating_sub(6).clamp(1, MAX_SENT_PDV)
    };
    let first = usize::try_from(len).map_or(room, |l| l.min(room));
    let mut buf = Vec::with_capacity(first + 12);
    let mut left = len;
    loop {
        let part = usize::try_from(left).map_or(room, |l| l.min(room));
        let last = part as u64 == left;
        let item_len = part as u32 + 2;
        buf.clear();
        buf.push(P_DATA_TF);
        buf.push(0);
        buf.extend_from_slice(&(item_len + 4).to_be_bytes());
        buf.extend_from_slice(&item_len.to_be_bytes());
        buf.push(context_id);
        buf.push(if last { 0x02 } else { 0x00 });
        let start = buf.len();
        buf.resize(start + part, 0);
        source.read_exact(&mut buf[start..]).await?;
        tokio::time::timeout(stall, stream.write_all(&buf))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        left -= part as u64;
        if last {
            break;
        }
    }
    tokio::time::timeout(stall, stream.flush())
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_two_pdvs_and_rejects_lying_lengths() {
        // Two PDVs: a last command fragment "ab" on context 1 and a data fragment "xyz" on 3.
        let pdu = [
            0x04, 0, 0, 0, 0, 19, //
            0, 0, 0, 4, 1, 0x03, b'a', b'b', //
            0, 0, 0, 5, 3, 0x00, b'x', b'y', b'z',
        ];
        let pdvs = split_pdvs(&pdu).unwrap();
        assert_eq!(
            pdvs,
            vec![
                Pdv {
                    context_id: 1,
                    is_command: true,
                    is_last: true,
                    range: 12..14
                },
                Pdv {
                    context_id: 3,
                    is_command: false,
                    is_last: false,
                    range: 20..23
                },
            ]
        );
        let mut lying = pdu;
        lying[9] = 200;
        assert!(matches!(split_pdvs(&lying), Err(PduError::Malformed(_))));
        let mut tiny = pdu;
        tiny[9] = 1;
        assert!(matches!(split_pdvs(&tiny), Err(PduError::Malformed(_))));
    }

    #[tokio::test]
    async fn refuses_a_four_gib_length_before_reading_it() {
        let bytes = [0x04, 0, 0xff, 0xff, 0xff, 0xff, 0, 0];
        let mut reader = PduReader::new(16_384);
        let err = reader.read(&mut &bytes[..]).await.unwrap_err();
        assert!(
            matches!(
                err,
                PduError::TooLong {
                    length: u32::MAX,
                    ..
                }
            ),
            "{err}"
        );
        assert!(reader.buf.capacity() < 1024);
    }

    #[tokio::test]
    async fn a_command_written_in_fragments_reads_back() {
        let command: Vec<u8> = (0..=255).collect();
        let mut wire = Vec::new();
        write_command(&mut wire, 5, &command, 100).await.unwrap();
        let mut reader = PduReader::new(16_384);
        let mut stream = &wire[..];
        let mut back = Vec::new();
        loop {
            let Frame::PData(pdvs) = reader.read(&mut stream).await.unwrap() else {
                panic!("expected P-DATA");
            };
            assert_eq!(pdvs.len(), 1);
            let pdv = &pdvs[0];
            assert!(pdv.is_command && pdv.context_id == 5);
            back.extend_from_slice(reader.bytes(pdv.range.clone()));
            if pdv.is_last {
                break;
            }
        }
        assert_eq!(back, command);
        assert!(matches!(
            reader.read(&mut stream).await,
            Err(PduError::Closed)
        ));
    }

    #[tokio::test]
    async fn a_data_set_is_cut_into_pdus_within_the_peer_maximum() {
        const T: std::time::Duration = std::time::Duration::from_secs(5);
        let data: Vec<u8> = (0..25_u8).collect();
        let mut out = Vec::new();
        write_data(&mut out, 3, &mut &data[..], 25, 16, T)
            .await
            .unwrap();
        // 16-byte PDUs carry 10 data bytes each: 10 + 10 + 5, only the last flagged.
        let mut pos = 0;
        let mut got = Vec::new();
        let mut flags = Vec::new();
        while pos < out.len() {
            let len = u32::from_be_bytes(out[pos + 2..pos + 6].try_into().unwrap()) as usize;
            assert!(len <= 16, "PDU of {len} bytes");
            let pdvs = split_pdvs(&out[pos..pos + 6 + len]).unwrap();
            for p in pdvs {
                assert_eq!(p.context_id, 3);
                assert!(!p.is_command);
                flags.push(p.is_last);
                got.extend_from_slice(&out[pos..][p.range]);
            }
            pos += 6 + len;
        }
        assert_eq!(got, data);
        assert_eq!(flags, [false, false, true]);
        let mut short = Vec::new();
        let err = write_data(&mut short, 1, &mut &data[..5], 6, 16, T)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        let mut empty = Vec::new();
        write_data(&mut empty, 1, &mut &data[..0], 0, 16, T)
            .await
            .unwrap();
        assert_eq!(empty, [0x04, 0, 0, 0, 0, 6, 0, 0, 0, 2, 1, 0x02]);
    }
}
