//! Reading what the loader needs from one file's header, pixel data left unread.
//!
//! A classic single-frame image (CT/MR Image Storage) gives one [`FrameHeader`] from its
//! top-level attributes. An enhanced multi-frame image (Enhanced CT/MR, Legacy Converted
//! Enhanced) gives one per frame from its functional groups: each attribute is looked up in
//! the frame's item of the Per-frame Functional Groups Sequence first, then in the Shared
//! Functional Groups Sequence, as PS3.3 C.7.6.16 defines.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTable, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

use super::SeriesError;
use super::error::error_chain;

/// SOP classes the loader accepts: cross-sectional CT and MR images, classic and enhanced.
pub(crate) const CROSS_SECTIONAL_SOP_CLASSES: [&str; 8] = [
    uids::CT_IMAGE_STORAGE,
    uids::ENHANCED_CT_IMAGE_STORAGE,
    uids::LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE,
    uids::CT_IMAGE_STORAGE_FOR_PROCESSING,
    uids::ENHANCED_CT_IMAGE_STORAGE_FOR_PROCESSING,
    uids::MR_IMAGE_STORAGE,
    uids::ENHANCED_MR_IMAGE_STORAGE,
    uids::LEGACY_CONVERTED_ENHANCED_MR_IMAGE_STORAGE,
];

/// What one frame (a slice) contributes to the volume.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FrameHeader {
    /// Image Position (Patient): LPS mm of the centre of the first pixel.
    pub position: [f64; 3],
    /// Image Orientation (Patient): row direction cosines, then column direction cosines.
    pub orientation: [f64; 6],
    /// Pixel Spacing as DICOM orders it: between rows (along y), then between columns (x).
    pub pixel_spacing: [f64; 2],
    /// Rescale Slope.
    pub slope: f64,
    /// Rescale Intercept.
    pub intercept: f64,
    /// Frame Type values of an enhanced frame (checked for LOCALIZER like Image Type).
    pub frame_type: Vec<String>,
}

/// The header of one image file.
#[derive(Debug, Clone)]
pub(crate) struct ImageFile {
    /// Path of the file.
    pub path: PathBuf,
    /// Transfer Syntax UID of the data set.
    pub transfer_syntax: String,
    /// SOP Class UID (from the data set, else the file meta information).
    pub sop_class_uid: String,
    /// SOP Instance UID (from the data set, else the file meta information).
    pub sop_instance_uid: String,
    /// Study Instance UID; empty when the file carries an empty value (anonymised data).
    pub study_instance_uid: String,
    /// Series Instance UID; empty when the file carries an empty value.
    pub series_instance_uid: String,
    /// Frame of Reference UID, when present.
    pub frame_of_reference_uid: Option<String>,
    /// Modality (0008,0060), upper case.
    pub modality: String,
    /// Image Type values.
    pub image_type: Vec<String>,
    /// Instance Number, when present and numeric.
    pub instance_number: Option<i64>,
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub columns: u16,
    /// Gantry/Detector Tilt in degrees, when given.
    pub gantry_tilt: Option<f64>,
    /// One entry per frame, in frame order.
    pub frames: Vec<FrameHeader>,
    /// Whether the frames come from functional groups (an enhanced multi-frame image).
    pub enhanced: bool,
}

/// What reading a path's header found.
#[derive(Debug)]
pub(crate) enum Scanned {
    /// An image: it has Rows and Columns.
    Image(Box<ImageFile>),
    /// Not a Part 10 DICOM file, a DICOMDIR, or an object without pixel data; ignored.
    Ignored,
}

/// Reads the header of `path` (up to Pixel Data).
///
/// # Errors
///
/// [`SeriesError::UnsupportedTransferSyntax`] for a transfer syntax whose pixel data this
/// build cannot decode, [`SeriesError::Decode`] for a Part 10 file that does not parse,
/// [`SeriesError::MissingAttribute`] / [`SeriesError::InvalidAttribute`] for unusable image
/// attributes, [`SeriesError::Io`] when the file cannot be read.
pub(crate) fn scan(path: &Path) -> Result<Scanned, SeriesError> {
    let obj = match OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
    {
        Ok(obj) => obj,
        Err(e) => return classify_open_failure(path, &error_chain(&e)),
    };
    let meta = obj.meta();
    if meta.media_storage_sop_class_uid() == uids::MEDIA_STORAGE_DIRECTORY_STORAGE {
        return Ok(Scanned::Ignored);
    }
    let transfer_syntax = meta.transfer_syntax().to_owned();
    check_transfer_syntax(path, &transfer_syntax)?;
    if obj.element_opt(tags::ROWS).ok().flatten().is_none() {
        return Ok(Scanned::Ignored);
    }
    let r = Reader { obj: &obj, path };
    if transfer_syntax == uids::JPEG_EXTENDED12_BIT {
        // Registered as decodable, but jpeg-decoder reads 8-bit streams only: refuse 12-bit
        // data up front by name rather than fail inside the decoder.
        let bits = r.u16(tags::BITS_STORED, "Bits Stored (0028,0101)")?;
        if bits > 8 {
            return Err(SeriesError::UnsupportedTransferSyntax {
                file: path.to_owned(),
                uid: transfer_syntax,
                name: format!(
                    "JPEG Extended (Process 2 & 4) with {bits} bits stored: the pure-Rust JPEG \
                     decoder reads 8-bit streams only"
                ),
            });
        }
    }
    let sop_class_uid = r
        .text(tags::SOP_CLASS_UID)
        .unwrap_or_else(|| trim(meta.media_storage_sop_class_uid()));
    let sop_instance_uid = r
        .text(tags::SOP_INSTANCE_UID)
        .unwrap_or_else(|| trim(meta.media_storage_sop_instance_uid()));
    if sop_instance_uid.is_empty() {
        return Err(r.missing("SOP Instance UID (0008,0018)"));
    }
    let modality = r
        .text(tags::MODALITY)
        .ok_or_else(|| r.missing("Modality (0008,0060)"))?
        .to_ascii_uppercase();
    let rows = r.u16(tags::ROWS, "Rows (0028,0010)")?;
    let columns = r.u16(tags::COLUMNS, "Columns (0028,0011)")?;
    if rows == 0 || columns == 0 {
        return Err(r.invalid("Rows/Columns", format!("{rows} × {columns} pixels")));
    }
    let number_of_frames = match r.text(tags::NUMBER_OF_FRAMES) {
        None => 1,
        Some(s) => s.parse::<u32>().map_err(|_| {
            r.invalid(
                "Number of Frames (0028,0008)",
                format!("{s:?} is not a number"),
            )
        })?,
    };
    if number_of_frames == 0 {
        return Err(r.invalid("Number of Frames (0028,0008)", "0 frames".into()));
    }
    // Rescale is Type 1 in the CT Image module; MR images may omit it (identity).
    let rescale_required = modality == "CT";
    let per_frame = r.items(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    let (frames, enhanced) = if let Some(per_frame) = per_frame {
        let shared = r
            .items(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
            .and_then(|items| items.first());
        if per_frame.len() != number_of_frames as usize {
            return Err(r.invalid(
                "Per-frame Functional Groups Sequence (5200,9230)",
                format!(
                    "{} items for {number_of_frames} frames (Number of Frames)",
                    per_frame.len()
                ),
            ));
        }
        let frames = per_frame
            .iter()
            .enumerate()
            .map(|(i, item)| r.enhanced_frame(item, shared, i, rescale_required))
            .collect::<Result<Vec<_>, _>>()?;
        (frames, true)
    } else {
        if number_of_frames != 1 {
            return Err(r.invalid(
                "Number of Frames (0028,0008)",
                format!(
                    "{number_of_frames} frames without functional groups: only single-frame \
                     images and enhanced multi-frame images (per-frame functional groups) \
                     describe the position of every frame"
                ),
            ));
        }
        (vec![r.classic_frame(rescale_required)?], false)
    };
    Ok(Scanned::Image(Box::new(ImageFile {
        path: path.to_owned(),
        transfer_syntax,
        sop_class_uid,
        sop_instance_uid,
        study_instance_uid: r.text(tags::STUDY_INSTANCE_UID).unwrap_or_default(),
        series_instance_uid: r.text(tags::SERIES_INSTANCE_UID).unwrap_or_default(),
        frame_of_reference_uid: r.text(tags::FRAME_OF_REFERENCE_UID),
        modality,
        image_type: Reader::strings(r.obj, tags::IMAGE_TYPE),
        instance_number: r
            .text(tags::INSTANCE_NUMBER)
            .and_then(|s| s.parse::<i64>().ok()),
        rows,
        columns,
        gantry_tilt: Reader::floats_in(r.obj, tags::GANTRY_DETECTOR_TILT)
            .and_then(|v| v.first().copied()),
        frames,
        enhanced,
    })))
}

/// Fails unless this build decodes the pixel data of `uid`.
///
/// # Errors
///
/// [`SeriesError::UnsupportedTransferSyntax`] with the syntax's registered name, or
/// "unknown transfer syntax" for a UID the registry does not know.
pub(crate) fn check_transfer_syntax(path: &Path, uid: &str) -> Result<(), SeriesError> {
    let uid = uid.trim_end_matches(['\0', ' ']);
    match TransferSyntaxRegistry.get(uid) {
        Some(ts) if ts.can_decode_all() => Ok(()),
        found => Err(SeriesError::UnsupportedTransferSyntax {
            file: path.to_owned(),
            uid: uid.to_owned(),
            name: found.map_or_else(
                || "unknown transfer syntax".to_owned(),
                |ts| ts.name().to_owned(),
            ),
        }),
    }
}

/// Decides what a file that dicom-object could not open is: not DICOM at all (ignored), a
/// transfer syntax the registry cannot read, or a damaged DICOM file.
fn classify_open_failure(path: &Path, error: &str) -> Result<Scanned, SeriesError> {
    let mut file = BufReader::new(File::open(path).map_err(|e| SeriesError::io(path, e))?);
    let mut head = [0_u8; 132];
    if file.read_exact(&mut head).is_err() || &head[128..] != b"DICM" {
        return Ok(Scanned::Ignored);
    }
    // The meta reader expects the magic code first.
    if let Ok(meta) = FileMetaTable::from_reader((&head[128..]).chain(file)) {
        if meta.media_storage_sop_class_uid() == uids::MEDIA_STORAGE_DIRECTORY_STORAGE {
            return Ok(Scanned::Ignored);
        }
        check_transfer_syntax(path, meta.transfer_syntax())?;
    }
    Err(SeriesError::decode(
        path,
        format!("damaged DICOM file: {error}"),
    ))
}

/// Trims DICOM padding (trailing NUL and space).
fn trim(s: &str) -> String {
    s.trim_end_matches(['\0', ' ']).trim_start().to_owned()
}

/// Attribute access with errors that name the file and the attribute.
struct Reader<'a> {
    obj: &'a InMemDicomObject,
    path: &'a Path,
}

impl Reader<'_> {
    fn missing(&self, attribute: &str) -> SeriesError {
        SeriesError::MissingAttribute {
            file: self.path.to_owned(),
            attribute: attribute.to_owned(),
        }
    }

    fn invalid(&self, attribute: &str, detail: String) -> SeriesError {
        SeriesError::InvalidAttribute {
            file: self.path.to_owned(),
            attribute: attribute.to_owned(),
            detail,
        }
    }

    /// A non-empty trimmed string value of the top-level data set.
    fn text(&self, tag: Tag) -> Option<String> {
        Self::text_in(self.obj, tag)
    }

    fn text_in(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
        let e = obj.element_opt(tag).ok().flatten()?;
        let s = trim(&e.to_str().ok()?);
        (!s.is_empty()).then_some(s)
    }

    fn strings(obj: &InMemDicomObject, tag: Tag) -> Vec<String> {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_multi_str().ok())
            .map(|v| v.iter().map(|s| trim(s).to_ascii_uppercase()).collect())
            .unwrap_or_default()
    }

    fn floats_in(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
        obj.element_opt(tag).ok().flatten()?.to_multi_float64().ok()
    }

    fn u16(&self, tag: Tag, name: &str) -> Result<u16, SeriesError> {
        let e = self
            .obj
            .element_opt(tag)
            .ok()
            .flatten()
            .ok_or_else(|| self.missing(name))?;
        e.to_int::<u16>()
            .map_err(|_| self.invalid(name, "not an unsigned 16-bit number".into()))
    }

    fn items(&self, tag: Tag) -> Option<&[InMemDicomObject]> {
        self.obj.element_opt(tag).ok().flatten()?.items()
    }

    /// `n` finite numbers of `tag` in `obj`, or `None` when the attribute is absent/empty.
    fn numbers<const N: usize>(
        &self,
        obj: &InMemDicomObject,
        tag: Tag,
        name: &str,
    ) -> Result<Option<[f64; N]>, SeriesError> {
        let Some(e) = obj.element_opt(tag).ok().flatten() else {
            return Ok(None);
        };
        if e.to_str()
            .is_ok_and(|s| s.trim_matches(['\0', ' ']).is_empty())
        {
            return Ok(None);
        }
        let v =
            Self::floats_in(obj, tag).ok_or_else(|| self.invalid(name, "not numeric".into()))?;
        if v.len() != N || v.iter().any(|x| !x.is_finite()) {
            return Err(self.invalid(
                name,
                format!("{} value(s), {N} finite numbers expected", v.len()),
            ));
        }
        Ok(Some(std::array::from_fn(|i| v[i])))
    }

    /// Rescale slope and intercept from `obj`: both, neither (identity unless `required`),
    /// never one alone.
    fn rescale(
        &self,
        obj: Option<&InMemDicomObject>,
        required: bool,
    ) -> Result<(f64, f64), SeriesError> {
        let (slope, intercept) = match obj {
            Some(o) => (
                self.numbers::<1>(o, tags::RESCALE_SLOPE, "Rescale Slope (0028,1053)")?,
                self.numbers::<1>(o, tags::RESCALE_INTERCEPT, "Rescale Intercept (0028,1052)")?,
            ),
            None => (None, None),
        };
        match (slope, intercept) {
            (Some([s]), Some([i])) => {
                if s == 0.0 {
                    return Err(self.invalid("Rescale Slope (0028,1053)", "is 0".into()));
                }
                Ok((s, i))
            }
            (None, None) if !required => Ok((1.0, 0.0)),
            (None, _) => Err(self.missing("Rescale Slope (0028,1053)")),
            (_, None) => Err(self.missing("Rescale Intercept (0028,1052)")),
        }
    }

    fn classic_frame(&self, rescale_required: bool) -> Result<FrameHeader, SeriesError> {
        let obj = self.obj;
        let position = self
            .numbers::<3>(
                obj,
                tags::IMAGE_POSITION_PATIENT,
                "Image Position (Patient) (0020,0032)",
            )?
            .ok_or_else(|| self.missing("Image Position (Patient) (0020,0032)"))?;
        let orientation = self
            .numbers::<6>(
                obj,
                tags::IMAGE_ORIENTATION_PATIENT,
                "Image Orientation (Patient) (0020,0037)",
            )?
            .ok_or_else(|| self.missing("Image Orientation (Patient) (0020,0037)"))?;
        let pixel_spacing = self
            .numbers::<2>(obj, tags::PIXEL_SPACING, "Pixel Spacing (0028,0030)")?
            .ok_or_else(|| self.missing("Pixel Spacing (0028,0030)"))?;
        let (slope, intercept) = self.rescale(Some(obj), rescale_required)?;
        Ok(FrameHeader {
            position,
            orientation,
            pixel_spacing,
            slope,
            intercept,
            frame_type: Vec::new(),
        })
    }

    /// The first item of functional group `seq` for a frame: per-frame item first, then the
    /// shared one.
    fn group<'o>(
        per_frame: &'o InMemDicomObject,
        shared: Option<&'o InMemDicomObject>,
        seq: Tag,
    ) -> Option<&'o InMemDicomObject> {
        let first = |o: &'o InMemDicomObject| {
            o.element_opt(seq)
                .ok()
                .flatten()
                .and_then(|e| e.items())
                .and_then(|items| items.first())
        };
        first(per_frame).or_else(|| shared.and_then(first))
    }

    /// The functional group `seq` of frame `frame` (1-based), which must hold `tag`.
    #[allow(clippy::too_many_arguments)]
    fn need<'o>(
        &self,
        per_frame: &'o InMemDicomObject,
        shared: Option<&'o InMemDicomObject>,
        frame: usize,
        seq: Tag,
        seq_name: &str,
        tag: Tag,
        name: &str,
    ) -> Result<&'o InMemDicomObject, SeriesError> {
        let g = Self::group(per_frame, shared, seq)
            .ok_or_else(|| self.missing(&format!("{seq_name} of frame {frame}")))?;
        if g.element_opt(tag).ok().flatten().is_none() {
            return Err(self.missing(&format!("{name} in {seq_name} of frame {frame}")));
        }
        Ok(g)
    }

    fn enhanced_frame(
        &self,
        per_frame: &InMemDicomObject,
        shared: Option<&InMemDicomObject>,
        index: usize,
        rescale_required: bool,
    ) -> Result<FrameHeader, SeriesError> {
        let frame = index + 1;
        let pos_group = self.need(
            per_frame,
            shared,
            frame,
            tags::PLANE_POSITION_SEQUENCE,
            "Plane Position Sequence (0020,9113)",
            tags::IMAGE_POSITION_PATIENT,
            "Image Position (Patient)",
        )?;
        let orient_group = self.need(
            per_frame,
            shared,
            frame,
            tags::PLANE_ORIENTATION_SEQUENCE,
            "Plane Orientation Sequence (0020,9116)",
            tags::IMAGE_ORIENTATION_PATIENT,
            "Image Orientation (Patient)",
        )?;
        let measures = self.need(
            per_frame,
            shared,
            frame,
            tags::PIXEL_MEASURES_SEQUENCE,
            "Pixel Measures Sequence (0028,9110)",
            tags::PIXEL_SPACING,
            "Pixel Spacing",
        )?;
        let position = self
            .numbers::<3>(
                pos_group,
                tags::IMAGE_POSITION_PATIENT,
                "Image Position (Patient) (0020,0032)",
            )?
            .ok_or_else(|| self.missing(&format!("Image Position (Patient) of frame {frame}")))?;
        let orientation = self
            .numbers::<6>(
                orient_group,
                tags::IMAGE_ORIENTATION_PATIENT,
                "Image Orientation (Patient) (0020,0037)",
            )?
            .ok_or_else(|| {
                self.missing(&format!("Image Orientation (Patient) of frame {frame}"))
            })?;
        let pixel_spacing = self
            .numbers::<2>(measures, tags::PIXEL_SPACING, "Pixel Spacing (0028,0030)")?
            .ok_or_else(|| self.missing(&format!("Pixel Spacing of frame {frame}")))?;
        let transformation =
            Self::group(per_frame, shared, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE);
        // Some writers put the rescale at the top level even in enhanced images.
        let (slope, intercept) = match transformation {
            Some(t) => self.rescale(Some(t), rescale_required)?,
            None => self.rescale(Some(self.obj), rescale_required)?,
        };
        let frame_type = [
            tags::CT_IMAGE_FRAME_TYPE_SEQUENCE,
            tags::MR_IMAGE_FRAME_TYPE_SEQUENCE,
        ]
        .into_iter()
        .find_map(|seq| Self::group(per_frame, shared, seq))
        .map(|g| Self::strings(g, tags::FRAME_TYPE))
        .unwrap_or_default();
        Ok(FrameHeader {
            position,
            orientation,
            pixel_spacing,
            slope,
            intercept,
            frame_type,
        })
    }
}
