//! Element lengths checked against the bytes actually present, before dicom-rs reads a file.
//!
//! dicom-rs (0.10) reserves and zero-fills an element's *claimed* length before reading its
//! value. A received object of a few hundred bytes whose Patient's Name claims 3 GiB would so
//! make the ingest header parse — and later the series loader — allocate 3 GiB (found by the
//! `dataset` fuzz target). [`check_part10`] walks the element structure first, reading only
//! headers and skipping values, and refuses a file in which any length runs past the end of
//! the file, of its sequence or of its item, or whose sequences nest deeper than
//! [`MAX_DEPTH`]. It also refuses a binary value whose length is not a multiple of its VR's
//! value size (an AT of 6 bytes, a US of 3): dicom-rs reads the whole values of such an element
//! but counts the full length, leaves the stream misaligned and then takes value bytes for the
//! next element's length (found by fuzzing too). After the check passes, no single allocation
//! dicom-rs makes for a value can exceed the file's own size (itself bounded by the node's
//! `max_object_bytes`).
//!
//! It understands what vertebrad accepts: Implicit and Explicit VR Little Endian, Deflated
//! Explicit VR Little Endian (walked through the inflater, discarding values) and the
//! encapsulated syntaxes (Explicit VR Little Endian with a fragment sequence in Pixel Data).

use std::io::{Read, Seek, SeekFrom};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

/// Deepest sequence nesting accepted (real objects stay below 6; the enhanced multi-frame
/// functional groups need 3).
pub const MAX_DEPTH: u32 = 16;

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: u16 = 0xE000;
const ITEM_END: u16 = 0xE00D;
const SEQUENCE_END: u16 = 0xE0DD;
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

/// Checks the structure of a Part 10 file (preamble, "DICM", file meta, data set) as
/// described in the module documentation. Leaves the reader at an unspecified position.
///
/// # Errors
/// A reason fit for a DIMSE Error Comment.
pub fn check_part10<R: Read + Seek>(mut file: R) -> Result<(), &'static str> {
    let len = file
        .seek(SeekFrom::End(0))
        .map_err(|_| "file cannot be read")?;
    file.seek(SeekFrom::Start(0))
        .map_err(|_| "file cannot be read")?;
    let mut head = [0_u8; 132];
    file.read_exact(&mut head)
        .map_err(|_| "file shorter than a Part 10 header")?;
    if &head[128..] != b"DICM" {
        return Err("no DICM prefix");
    }
    let mut src = Source {
        input: Input::Plain(file),
        pos: 132,
        len: Some(len),
    };
    let transfer_syntax = src.file_meta()?;
    let explicit = match transfer_syntax.as_str() {
        IMPLICIT_VR_LE => false,
        EXPLICIT_VR_BE => return Err("big endian data sets are not accepted"),
        _ => true,
    };
    if transfer_syntax == DEFLATED {
        let Input::Plain(file) = src.input else {
            unreachable!("the input starts plain")
        };
        src = Source {
            input: Input::Deflated(Box::new(flate2::read::DeflateDecoder::new(
                std::io::BufReader::new(file),
            ))),
            pos: 0,
            len: None,
        };
    }
    src.data_set(explicit, None, 0)
}

enum Input<R: Read + Seek> {
    Plain(R),
    Deflated(Box<flate2::read::DeflateDecoder<std::io::BufReader<R>>>),
}

struct Source<R: Read + Seek> {
    input: Input<R>,
    /// Bytes consumed so far (of the file, or of the inflated stream).
    pos: u64,
    /// Total bytes, when known (not for a deflated stream).
    len: Option<u64>,
}

/// How a data set ended.
#[derive(PartialEq, Eq)]
enum End {
    /// The end of the file (top level only).
    Eof,
    /// Its defined length was used up.
    Length,
    /// An item delimiter.
    ItemDelimiter,
}

impl<R: Read + Seek> Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> Result<(), &'static str> {
        let r = match &mut self.input {
            Input::Plain(f) => f.read_exact(buf),
            Input::Deflated(d) => d.read_exact(buf),
        };
        r.map_err(|_| "data set ends inside an element header")?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// Reads 4 bytes, or `None` at a clean end of input.
    fn read_tag(&mut self) -> Result<Option<Tag>, &'static str> {
        let mut b = [0_u8; 4];
        let mut got = 0;
        while got < 4 {
            let n = match &mut self.input {
                Input::Plain(f) => f.read(&mut b[got..]),
                Input::Deflated(d) => d.read(&mut b[got..]),
            }
            .map_err(|_| "data set cannot be read")?;
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err("data set ends inside an element header")
                };
            }
            got += n;
        }
        self.pos += 4;
        Ok(Some(Tag(
            u16::from_le_bytes([b[0], b[1]]),
            u16::from_le_bytes([b[2], b[3]]),
        )))
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        let mut b = [0_u8; 2];
        self.read(&mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        let mut b = [0_u8; 4];
        self.read(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Skips a value of `n` bytes that must lie before `end` and inside the input.
    fn skip(&mut self, n: u32, end: Option<u64>) -> Result<(), &'static str> {
        let to = self.pos + u64::from(n);
        if end.is_some_and(|e| to > e) {
            return Err("element length runs past its sequence or item");
        }
        match (&mut self.input, self.len) {
            (Input::Plain(f), Some(len)) => {
                if to > len {
                    return Err("element length runs past the end of the object");
                }
                f.seek(SeekFrom::Start(to))
                    .map_err(|_| "data set cannot be read")?;
            }
            (Input::Plain(f), None) => skip_by_reading(f, n)?,
            (Input::Deflated(d), _) => skip_by_reading(d, n)?,
        }
        self.pos = to;
        Ok(())
    }

    /// The file meta group (always Explicit VR Little Endian): returns the transfer syntax.
    ///
    /// The group ends where dicom-rs ends it: its first element must be the File Meta
    /// Information Group Length (0002,0000, UL), and elements are read until that many bytes
    /// are used up (the element that crosses the mark is read whole). Whatever follows is the
    /// data set, even if it holds group 0002 tags: reading those as file meta, as an earlier
    /// version did by peeking at the group, let a 13-byte data set pass whose (0002,0800)
    /// element dicom-rs then read in Implicit VR with a 235 MB length (found by fuzzing).
    fn file_meta(&mut self) -> Result<String, &'static str> {
        let tag = self.read_tag()?.ok_or("file meta cut short")?;
        let vr = self.vr()?;
        if tag != Tag(0x0002, 0x0000) || vr != VR::UL || self.u16()? != 4 {
            return Err("file meta does not start with its group length");
        }
        let group_length = self.u32()?;
        let end = self.pos + u64::from(group_length);
        let mut transfer_syntax = None;
        while self.pos < end {
            let tag = self.read_tag()?.ok_or("file meta cut short")?;
            let vr = self.vr()?;
            let len = self.explicit_length(vr)?;
            if len == UNDEFINED {
                return Err("undefined length in the file meta");
            }
            if tag == Tag(0x0002, 0x0010) {
                if len > 64 {
                    return Err("transfer syntax UID too long");
                }
                let mut v = vec![0_u8; len as usize];
                self.read(&mut v)?;
                transfer_syntax = Some(
                    String::from_utf8_lossy(&v)
                        .trim_end_matches(['\0', ' '])
                        .to_owned(),
                );
            } else {
                self.skip(len, None)?;
            }
        }
        transfer_syntax.ok_or("no transfer syntax in the file meta")
    }

    fn vr(&mut self) -> Result<VR, &'static str> {
        let mut b = [0_u8; 2];
        self.read(&mut b)?;
        VR::from_binary(b).ok_or("unknown value representation")
    }

    /// The length field after an explicit VR.
    fn explicit_length(&mut self, vr: VR) -> Result<u32, &'static str> {
        use VR::{OB, OD, OF, OL, OV, OW, SQ, SV, UC, UN, UR, UT, UV};
        if matches!(
            vr,
            OB | OD | OF | OL | OV | OW | SQ | SV | UC | UN | UR | UT | UV
        ) {
            self.u16()?;
            self.u32()
        } else {
            self.u16().map(u32::from)
        }
    }

    /// Walks a data set until `end` (a defined length), an item delimiter (an undefined-length
    /// item) or the end of input (the top level, `end` = None, depth 0).
    fn data_set(
        &mut self,
        explicit: bool,
        end: Option<u64>,
        depth: u32,
    ) -> Result<(), &'static str> {
        let how = self.elements(explicit, end, depth)?;
        match (how, end, depth) {
            (End::Length, Some(_), _) | (End::Eof, None, 0) => Ok(()),
            (End::ItemDelimiter, None, d) if d > 0 => Ok(()),
            (End::Eof, ..) => Err("data set ends inside a sequence"),
            _ => Err("misplaced item delimiter"),
        }
    }

    fn elements(
        &mut self,
        explicit: bool,
        end: Option<u64>,
        depth: u32,
    ) -> Result<End, &'static str> {
        loop {
            if let Some(e) = end {
                if self.pos == e {
                    return Ok(End::Length);
                }
                if self.pos > e {
                    return Err("element runs past its item");
                }
            }
            let Some(tag) = self.read_tag()? else {
                return Ok(End::Eof);
            };
            if tag.0 == 0xFFFE {
                let len = self.u32()?;
                return match tag.1 {
                    ITEM_END if len == 0 => Ok(End::ItemDelimiter),
                    _ => Err("item tag inside a data set"),
                };
            }
            let (vr, len) = if explicit {
                let vr = self.vr()?;
                (Some(vr), self.explicit_length(vr)?)
            } else {
                (None, self.u32()?)
            };
            let effective = vr.or_else(|| dictionary_vr(tag));
            let sequence = effective == Some(VR::SQ);
            if len != UNDEFINED
                && effective
                    .and_then(value_size)
                    .is_some_and(|size| len % size != 0)
            {
                return Err("value length is not a multiple of its VR's value size");
            }
            if len == UNDEFINED {
                if tag == Tag(0x7FE0, 0x0010) || matches!(vr, Some(VR::OB | VR::OW)) {
                    self.fragments(end)?;
                } else if sequence || matches!(vr, None | Some(VR::UN)) {
                    // An undefined-length UN is a sequence encoded in Implicit VR LE.
                    let items_explicit = explicit && vr != Some(VR::UN);
                    self.sequence(items_explicit, None, end, depth)?;
                } else {
                    return Err("undefined length on an element that is not a sequence");
                }
            } else if sequence {
                let to = self.pos + u64::from(len);
                if end.is_some_and(|e| to > e) || self.len.is_some_and(|l| to > l) {
                    return Err("sequence length runs past its container");
                }
                self.sequence(explicit, Some(to), end, depth)?;
            } else {
                self.skip(len, end)?;
            }
        }
    }

    /// The items of a sequence ending at `own_end` (defined length) or at a sequence
    /// delimiter; `outer` is the end of the enclosing data set, if defined.
    fn sequence(
        &mut self,
        explicit: bool,
        own_end: Option<u64>,
        outer: Option<u64>,
        depth: u32,
    ) -> Result<(), &'static str> {
        if depth >= MAX_DEPTH {
            return Err("sequences nested too deep");
        }
        let bound = own_end.or(outer);
        loop {
            if own_end == Some(self.pos) {
                return Ok(());
            }
            let tag = self.read_tag()?.ok_or("data set ends inside a sequence")?;
            let len = self.u32()?;
            match (tag, len) {
                (Tag(0xFFFE, ITEM), UNDEFINED) => self.data_set(explicit, None, depth + 1)?,
                (Tag(0xFFFE, ITEM), len) => {
                    let to = self.pos + u64::from(len);
                    if bound.is_some_and(|e| to > e) || self.len.is_some_and(|l| to > l) {
                        return Err("item length runs past its sequence");
                    }
                    self.data_set(explicit, Some(to), depth + 1)?;
                }
                (Tag(0xFFFE, SEQUENCE_END), 0) if own_end.is_none() => return Ok(()),
                _ => return Err("sequence holds something other than items"),
            }
            if bound.is_some_and(|e| self.pos > e) {
                return Err("item runs past its sequence");
            }
        }
    }

    /// Encapsulated pixel data: defined-length fragment items up to a sequence delimiter.
    fn fragments(&mut self, outer: Option<u64>) -> Result<(), &'static str> {
        loop {
            let tag = self
                .read_tag()?
                .ok_or("data set ends inside encapsulated pixel data")?;
            let len = self.u32()?;
            match (tag, len) {
                (Tag(0xFFFE, ITEM), UNDEFINED) => {
                    return Err("pixel data fragment of undefined length");
                }
                (Tag(0xFFFE, ITEM), len) => self.skip(len, outer)?,
                (Tag(0xFFFE, SEQUENCE_END), 0) => return Ok(()),
                _ => return Err("encapsulated pixel data holds something other than items"),
            }
        }
    }
}

/// The VR dicom-rs gives `tag` in an implicit-VR data set, where it is unambiguous.
fn dictionary_vr(tag: Tag) -> Option<VR> {
    match StandardDataDictionary.by_tag(tag)?.vr() {
        VirtualVr::Exact(vr) => Some(vr),
        VirtualVr::Xs => Some(VR::US),
        _ => None,
    }
}

/// Size of one value of a binary VR.
fn value_size(vr: VR) -> Option<u32> {
    use VR::{AT, FD, FL, OD, OF, OL, OV, OW, SL, SS, SV, UL, US, UV};
    match vr {
        SS | US | OW => Some(2),
        AT | FL | SL | UL | OF | OL => Some(4),
        FD | SV | UV | OD | OV => Some(8),
        _ => None,
    }
}

fn skip_by_reading(r: &mut impl Read, n: u32) -> Result<(), &'static str> {
    let copied = std::io::copy(&mut r.take(u64::from(n)), &mut std::io::sink())
        .map_err(|_| "data set cannot be read")?;
    if copied < u64::from(n) {
        return Err("element length runs past the end of the object");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::ingest::{FileMeta, InstanceHeader, part10_header};

    /// A spooled file as the `dataset` fuzz target builds it: our header for the transfer
    /// syntax the first byte picks, then the data set.
    fn spooled(input: &[u8]) -> Vec<u8> {
        let mut file = part10_header(&FileMeta {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2",
            sop_instance_uid: "2.25.1",
            transfer_syntax: crate::transfer_syntax_by_index(input[0]),
            implementation_class_uid: "2.25.302275441386437935402418135592834436146",
            implementation_version_name: "VERTEBRAD_010",
            source_ae_title: "FUZZ",
        })
        .unwrap();
        file.extend_from_slice(&input[1..]);
        file
    }

    /// Found by the `dataset` fuzz target (with `-malloc_limit_mb=200`): an RLE data set of
    /// 546 bytes with an AT element of 6 bytes. dicom-rs read one tag, skipped nothing, took
    /// the next bytes ("2.0.") as a length and allocated 775 MB for it.
    #[test]
    fn fuzz_found_misaligning_value_length_is_refused() {
        let file = spooled(include_bytes!(
            "../testdata/fuzz/dataset-odd-at-length-misaligns-parser.bin"
        ));
        let why = "value length is not a multiple of its VR's value size";
        assert_eq!(check_part10(Cursor::new(&file)), Err(why));
        assert_eq!(InstanceHeader::read(Cursor::new(&file)), Err(why));
    }

    /// Found by the `dataset` fuzz target: a 1.7 kB implicit-VR data set whose Modality
    /// claims 128 MiB (and one whose group length claims 808 MB). dicom-rs allocated and
    /// zero-filled the claim before failing to read it: 70 such objects in flight would have
    /// cost 9 GiB. Now refused before dicom-rs sees them.
    #[test]
    fn fuzz_found_length_claims_are_refused_before_parsing() {
        for input in [
            &include_bytes!("../testdata/fuzz/dataset-modality-claims-128mib.bin")[..],
            &include_bytes!("../testdata/fuzz/dataset-group-length-claims-808mb.bin")[..],
        ] {
            let file = spooled(input);
            assert_eq!(
                check_part10(Cursor::new(&file)),
                Err("element length runs past the end of the object")
            );
            assert_eq!(
                InstanceHeader::read(Cursor::new(&file)),
                Err("element length runs past the end of the object")
            );
        }
    }

    /// Found by the `dataset` fuzz target in a clean-clone CI run (`-malloc_limit_mb=128`): a
    /// 13-byte Implicit VR data set holding one group 0002 element. The check read it as part
    /// of our file meta (Explicit VR: OB, length 0), dicom-rs as the data set's first element
    /// (Implicit VR: length 0x0E00424F) and allocated 235 MB for it. The meta now ends where
    /// its group length says, as in dicom-rs, and the claim is caught.
    #[test]
    fn fuzz_found_file_meta_tag_in_the_data_set_is_walked_as_dicom_rs_reads_it() {
        let input =
            include_bytes!("../testdata/fuzz/dataset-meta-tag-in-data-set-claims-235mb.bin");
        let file = spooled(input);
        let why = "element length runs past the end of the object";
        assert_eq!(check_part10(Cursor::new(&file)), Err(why));
        assert_eq!(InstanceHeader::read(Cursor::new(&file)), Err(why));

        // A group 0002 element with an honest length inside an Implicit VR data set passes
        // the check, as dicom-rs reads it.
        let mut honest = vec![0_u8];
        honest.extend_from_slice(&[0x02, 0x00, 0x00, 0x08, 2, 0, 0, 0, b'O', b'K']);
        assert_eq!(check_part10(Cursor::new(spooled(&honest))), Ok(()));
    }

    /// The file meta must start with its group length, like dicom-rs requires, and a group
    /// length past the end of the file is refused.
    #[test]
    fn file_meta_is_delimited_by_its_group_length() {
        let mut file = spooled(&[1]);
        // Preamble and "DICM" are 132 bytes; then (0002,0000) UL 4 <value>.
        assert_eq!(&file[132..138], &[0x02, 0x00, 0x00, 0x00, b'U', b'L']);
        let mut no_length = file.clone();
        no_length[134] = 0x01;
        assert_eq!(
            check_part10(Cursor::new(&no_length)),
            Err("file meta does not start with its group length")
        );
        file[140..144].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(check_part10(Cursor::new(&file)).is_err());
    }

    /// The fuzz seeds (an 8x8 CT in Implicit, Explicit and Deflated Explicit VR LE and in RLE
    /// Lossless with encapsulated pixel data) pass the check and read back.
    #[test]
    fn well_formed_objects_in_every_encoding_pass() {
        for input in [
            &include_bytes!("../../fuzz/seeds/dataset/ct-8x8-implicit-le.bin")[..],
            &include_bytes!("../../fuzz/seeds/dataset/ct-8x8-explicit-le.bin")[..],
            &include_bytes!("../../fuzz/seeds/dataset/ct-8x8-deflated.bin")[..],
            &include_bytes!("../../fuzz/seeds/dataset/ct-8x8-rle.bin")[..],
        ] {
            let file = spooled(input);
            assert_eq!(check_part10(Cursor::new(&file)), Ok(()));
            let h = InstanceHeader::read(Cursor::new(&file)).unwrap();
            assert_eq!(h.modality.as_deref(), Some("CT"));
        }
    }

    /// Real vendor JPEG 2000 CT files (../shared/data/real), with their own file meta.
    #[test]
    fn the_real_jpeg2000_series_passes() {
        let dir = "/work/shared/data/real/totalsegmentator-example-dicom";
        let files: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!files.is_empty());
        for f in files {
            let file = std::fs::File::open(&f).unwrap();
            assert_eq!(check_part10(file), Ok(()), "{}", f.display());
        }
    }

    /// Explicit VR LE element with a 2-byte length.
    fn short(out: &mut Vec<u8>, group: u16, elem: u16, vr: [u8; 2], value: &[u8]) {
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&elem.to_le_bytes());
        out.extend_from_slice(&vr);
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
    }

    /// Explicit VR LE header with a 4-byte length (SQ, OB, UN, ...).
    fn long(out: &mut Vec<u8>, group: u16, elem: u16, vr: [u8; 2], len: u32) {
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&elem.to_le_bytes());
        out.extend_from_slice(&vr);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&len.to_le_bytes());
    }

    fn item(out: &mut Vec<u8>, elem: u16, len: u32) {
        out.extend_from_slice(&0xFFFE_u16.to_le_bytes());
        out.extend_from_slice(&elem.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }

    fn explicit_file(data_set: &[u8]) -> Vec<u8> {
        let mut input = vec![1_u8];
        input.extend_from_slice(data_set);
        spooled(&input)
    }

    #[test]
    fn sequences_are_walked_and_their_lies_caught() {
        // A defined-length sequence holding one undefined-length item, then a short element.
        let mut inner = Vec::new();
        short(&mut inner, 0x0008, 0x0100, *b"SH", b"T-1234");
        let mut ok = Vec::new();
        long(&mut ok, 0x0008, 0x1110, *b"SQ", 8 + inner.len() as u32 + 8);
        item(&mut ok, ITEM, UNDEFINED);
        ok.extend_from_slice(&inner);
        item(&mut ok, ITEM_END, 0);
        short(&mut ok, 0x0008, 0x0060, *b"CS", b"CT");
        assert_eq!(check_part10(Cursor::new(explicit_file(&ok))), Ok(()));

        // The same with an item claiming more than its sequence holds.
        let mut lying = Vec::new();
        long(&mut lying, 0x0008, 0x1110, *b"SQ", 8 + inner.len() as u32);
        item(&mut lying, ITEM, inner.len() as u32 + 100);
        lying.extend_from_slice(&inner);
        assert_eq!(
            check_part10(Cursor::new(explicit_file(&lying))),
            Err("item length runs past its sequence")
        );

        // An undefined-length sequence that never ends.
        let mut open = Vec::new();
        long(&mut open, 0x0008, 0x1110, *b"SQ", UNDEFINED);
        item(&mut open, ITEM, UNDEFINED);
        open.extend_from_slice(&inner);
        assert_eq!(
            check_part10(Cursor::new(explicit_file(&open))),
            Err("data set ends inside a sequence")
        );

        // Nesting deeper than MAX_DEPTH.
        let mut deep = Vec::new();
        for _ in 0..=MAX_DEPTH {
            long(&mut deep, 0x0008, 0x1110, *b"SQ", UNDEFINED);
            item(&mut deep, ITEM, UNDEFINED);
        }
        assert_eq!(
            check_part10(Cursor::new(explicit_file(&deep))),
            Err("sequences nested too deep")
        );

        // A 3 GiB claim on a private OB element in a 40-byte data set.
        let mut claim = Vec::new();
        short(&mut claim, 0x0008, 0x0060, *b"CS", b"CT");
        long(&mut claim, 0x0009, 0x1001, *b"OB", 3 << 30);
        claim.extend_from_slice(&[0; 16]);
        assert_eq!(
            check_part10(Cursor::new(explicit_file(&claim))),
            Err("element length runs past the end of the object")
        );

        // Encapsulated pixel data: fragments must stay inside the object.
        let mut frags = Vec::new();
        long(&mut frags, 0x7FE0, 0x0010, *b"OB", UNDEFINED);
        item(&mut frags, ITEM, 0);
        item(&mut frags, ITEM, 4);
        frags.extend_from_slice(&[1, 2, 3, 4]);
        let mut complete = frags.clone();
        item(&mut complete, SEQUENCE_END, 0);
        assert_eq!(check_part10(Cursor::new(explicit_file(&complete))), Ok(()));
        item(&mut frags, ITEM, 1 << 20);
        assert_eq!(
            check_part10(Cursor::new(explicit_file(&frags))),
            Err("element length runs past the end of the object")
        );
    }
}
