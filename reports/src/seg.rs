//! DICOM Segmentation (PS3.3 A.51): one BINARY segment per vertebra, and optionally a
//! FRACTIONAL segmentation with one segment per lesion-class heatmap.
//!
//! # Frames and geometry
//!
//! Frames are written the way highdicom writes them and the way OHIF and other viewers expect
//! them, because each deviation below is a known cause of SEGs displayed flipped, misplaced or
//! "out of plane" (OHIF#2833, OHIF#5085, highdicom#214, monai-deploy#96):
//!
//! - the label volume must be on the source grid ([`SourceSeries::geometry`]): same matrix,
//!   same in-plane axes, same slice order. A volume that was reoriented (e.g. to RAS or LPS
//!   for the network) is rejected with an error instead of being written flipped;
//! - every frame's Plane Orientation is the source's Image Orientation (Patient) and its Plane
//!   Position is the Image Position (Patient) of the slice it was computed on, and every frame
//!   references that slice in Derivation Image / Source Image Sequence (readers such as
//!   dcmjs/OHIF place frames by this reference and refuse frames without it);
//! - frames are ordered by segment, then by slice along the normal; empty frames are omitted
//!   (highdicom's default), also in the middle of a segment, because position and source
//!   reference, not the frame index, place each frame;
//! - Dimension Organization: Referenced Segment Number, then Image Position (Patient), whose
//!   index value is the 1-based slice number in the source series.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use vertebra_core::Geometry;
use vertebra_core::anatomy::{
    CATEGORY_ANATOMICAL_STRUCTURE, CATEGORY_MORPHOLOGICALLY_ABNORMAL_STRUCTURE, Code, LesionClass,
    Vertebra,
};
use vertebra_core::dicom_series::uid_from_key;

use crate::codes;
use crate::dataset::{DataSetExt, code_item, common_modules, item, sop_ref};
use crate::model::{AlgorithmInfo, AnalysisFindings, InstanceIdentity, LesionHeatmap};
use crate::palette;
use crate::source::{SourceSeries, dot, norm, sub};
use crate::{Error, Result};

/// Largest distance between a label slice and its source slice, mm.
const POSITION_TOLERANCE_MM: f64 = 0.01;

/// Largest difference between direction cosines or relative spacings of the label grid and the
/// source grid.
const GRID_TOLERANCE: f64 = 1e-4;

/// Highest value of a FRACTIONAL frame (Maximum Fractional Value): probability 1.
pub const MAX_FRACTIONAL_VALUE: u8 = 255;

/// Tracking UID of a vertebra's segment, shared by the SEG segment and the SR measurement
/// group of the same vertebra.
pub fn vertebra_tracking_uid(seg_sop_instance_uid: &str, vertebra: Vertebra) -> String {
    uid_from_key(&format!(
        "vertebra-reports/v1/tracking/{seg_sop_instance_uid}/{}",
        vertebra.name()
    ))
}

/// One segment's description.
struct SegmentSpec {
    label: String,
    description: String,
    category: Code,
    property: Code,
    modifier: Option<Code>,
    rgb: [u8; 3],
    tracking_id: String,
    tracking_uid: String,
}

/// One frame: its segment (1-based) and source slice (index into `source.images`).
struct Frame {
    segment: u16,
    slice: usize,
}

/// Builds the BINARY Segmentation of the vertebrae in `findings.labels`: one segment per entry
/// of `findings.vertebrae`, in label order (segment 1 = the most cranial vertebra found).
///
/// # Errors
///
/// [`Error::InvalidInput`] when the label grid is not the source grid, a vertebra is listed
/// twice or has no voxels, or the volume holds a label no finding describes;
/// [`Error::Empty`] when no vertebra was found (a SEG needs at least one frame).
pub fn build_seg(
    source: &SourceSeries,
    findings: &AnalysisFindings,
    algorithm: &AlgorithmInfo,
    identity: &InstanceIdentity,
) -> Result<InMemDicomObject> {
    algorithm.validate()?;
    identity.validate()?;
    check_on_source_grid(
        source,
        findings.labels.geometry(),
        findings.labels.dims(),
        "label volume",
    )?;
    let mut vertebrae: Vec<Vertebra> = findings.vertebrae.iter().map(|f| f.vertebra).collect();
    vertebrae.sort();
    if let Some(w) = vertebrae.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::InvalidInput(format!(
            "vertebra {} is listed twice",
            w[0].name()
        )));
    }
    if vertebrae.is_empty() {
        return Err(Error::Empty(
            "no vertebra was found; no segmentation to write".into(),
        ));
    }
    let [nx, ny, nz] = findings.labels.dims();
    let slice_len = nx * ny;
    let data = findings.labels.data();
    // present[k][label]: slice k holds voxels of `label`.
    let mut present = vec![[false; 256]; nz];
    for (k, slice) in data.chunks_exact(slice_len).enumerate() {
        for &v in slice {
            present[k][usize::from(v)] = true;
        }
    }
    let mut segment_of = [0u16; 256];
    for (i, v) in vertebrae.iter().enumerate() {
        segment_of[usize::from(v.label())] = i as u16 + 1;
    }
    for label in 1..256 {
        let anywhere = present.iter().any(|p| p[label]);
        if anywhere && segment_of[label] == 0 {
            return Err(Error::InvalidInput(format!(
                "the label volume holds label {label}, which no vertebra finding describes"
            )));
        }
        if !anywhere && segment_of[label] != 0 {
            return Err(Error::InvalidInput(format!(
                "vertebra {} has a finding but no voxels in the label volume",
                Vertebra::from_label(label as u8).map_or("?", Vertebra::name)
            )));
        }
    }
    let segments: Vec<SegmentSpec> = vertebrae
        .iter()
        .map(|&v| SegmentSpec {
            label: v.name().to_owned(),
            description: format!("{} vertebra", v.name()),
            category: CATEGORY_ANATOMICAL_STRUCTURE,
            property: v.snomed(),
            modifier: None,
            rgb: palette::vertebra_rgb(v),
            tracking_id: format!("Vertebra {}", v.name()),
            tracking_uid: vertebra_tracking_uid(&identity.sop_instance_uid, v),
        })
        .collect();
    let frames: Vec<Frame> = vertebrae
        .iter()
        .enumerate()
        .flat_map(|(i, v)| {
            let label = usize::from(v.label());
            present
                .iter()
                .enumerate()
                .filter(move |(_, p)| p[label])
                .map(move |(k, _)| Frame {
                    segment: i as u16 + 1,
                    slice: k,
                })
        })
        .collect();
    let pixels = pack_bits(
        frames.iter().map(|f| {
            let label = vertebrae[usize::from(f.segment) - 1].label();
            data[f.slice * slice_len..(f.slice + 1) * slice_len]
                .iter()
                .map(move |&v| v == label)
        }),
        frames.len() * slice_len,
    );
    let mut obj = seg_object(
        source,
        algorithm,
        identity,
        &segments,
        &frames,
        SegKind::Binary,
        "VERTEBRAE",
        "Vertebrae C1-L5 segmented and identified by VertebraFormer",
    )?;
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(pixels),
    ));
    Ok(obj)
}

/// Builds a FRACTIONAL (probability) Segmentation with one segment per lesion-class heatmap,
/// values scaled to 0..=[`MAX_FRACTIONAL_VALUE`]. Frames whose scaled values are all 0 are
/// omitted.
///
/// # Errors
///
/// [`Error::InvalidInput`] for a heatmap off the source grid, a class given twice or a value
/// outside [0, 1]; [`Error::Empty`] when every frame is empty.
pub fn build_fractional_seg(
    source: &SourceSeries,
    heatmaps: &[LesionHeatmap],
    algorithm: &AlgorithmInfo,
    identity: &InstanceIdentity,
) -> Result<InMemDicomObject> {
    algorithm.validate()?;
    identity.validate()?;
    let mut maps: Vec<&LesionHeatmap> = heatmaps.iter().collect();
    maps.sort_by_key(|h| h.class);
    if let Some(w) = maps.windows(2).find(|w| w[0].class == w[1].class) {
        return Err(Error::InvalidInput(format!(
            "lesion class {} has two heatmaps",
            w[0].class.key()
        )));
    }
    for h in &maps {
        check_on_source_grid(
            source,
            h.probability.geometry(),
            h.probability.dims(),
            "heatmap",
        )?;
        if let Some(v) = h
            .probability
            .data()
            .iter()
            .find(|p| !(p.is_finite() && (0.0..=1.0).contains(*p)))
        {
            return Err(Error::InvalidInput(format!(
                "heatmap {} holds {v}, not a probability in [0, 1]",
                h.class.key()
            )));
        }
    }
    let [nx, ny, nz] = source.dims();
    let slice_len = nx * ny;
    let quantised: Vec<Vec<u8>> = maps
        .iter()
        .map(|h| {
            h.probability
                .data()
                .iter()
                .map(|&p| (f64::from(p) * f64::from(MAX_FRACTIONAL_VALUE)).round() as u8)
                .collect()
        })
        .collect();
    let segments: Vec<SegmentSpec> = maps
        .iter()
        .map(|h| lesion_segment(h.class, &identity.sop_instance_uid))
        .collect();
    let mut frames = Vec::new();
    for (i, q) in quantised.iter().enumerate() {
        for k in 0..nz {
            if q[k * slice_len..(k + 1) * slice_len].iter().any(|&v| v > 0) {
                frames.push(Frame {
                    segment: i as u16 + 1,
                    slice: k,
                });
            }
        }
    }
    let mut pixels = Vec::with_capacity(frames.len() * slice_len + 1);
    for f in &frames {
        let q = &quantised[usize::from(f.segment) - 1];
        pixels.extend_from_slice(&q[f.slice * slice_len..(f.slice + 1) * slice_len]);
    }
    if pixels.len() % 2 == 1 {
        pixels.push(0);
    }
    let mut obj = seg_object(
        source,
        algorithm,
        identity,
        &segments,
        &frames,
        SegKind::Fractional,
        "LESIONS",
        "Lesion probability maps of VertebraFormer's lesion head",
    )?;
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(pixels),
    ));
    Ok(obj)
}

fn lesion_segment(class: LesionClass, sop_instance_uid: &str) -> SegmentSpec {
    let name = codes::lesion_class_code(class).meaning.into_owned();
    SegmentSpec {
        label: name.clone(),
        description: format!("{name} probability"),
        category: CATEGORY_MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        property: class.snomed(),
        modifier: class.density_modifier(),
        rgb: palette::lesion_rgb(class),
        tracking_id: format!("Lesion map {}", class.key()),
        tracking_uid: uid_from_key(&format!(
            "vertebra-reports/v1/tracking/{sop_instance_uid}/{}",
            class.key()
        )),
    }
}

/// Checks that a volume of `dims` with `geometry` is the source grid, naming the usual
/// mistakes (reoriented, flipped, resampled) in the error.
fn check_on_source_grid(
    source: &SourceSeries,
    geometry: &Geometry,
    dims: [usize; 3],
    what: &str,
) -> Result<()> {
    let src = source.geometry()?;
    let src_dims = source.dims();
    if dims != src_dims {
        return Err(Error::InvalidInput(format!(
            "{what} is {dims:?} voxels but the source grid is {src_dims:?} (columns, rows, \
             slices); resample results back to the source grid before writing"
        )));
    }
    for (axis, name) in ["x (columns)", "y (rows)", "z (slices)"].iter().enumerate() {
        let d = geometry.direction[axis];
        let s = src.direction[axis];
        if dot(d, s) < -1.0 + GRID_TOLERANCE {
            return Err(Error::InvalidInput(format!(
                "{what} axis {name} is flipped relative to the source series; writing it would \
                 display the segmentation mirrored"
            )));
        }
        if norm(sub(d, s)) > GRID_TOLERANCE {
            return Err(Error::InvalidInput(format!(
                "{what} axis {name} points along {d:?} but the source's along {s:?}: the volume \
                 is not on the source grid (reoriented?), its frames would be out of plane"
            )));
        }
        if (geometry.spacing[axis] - src.spacing[axis]).abs() > GRID_TOLERANCE * src.spacing[axis] {
            return Err(Error::InvalidInput(format!(
                "{what} spacing along {name} is {} mm, the source's {} mm",
                geometry.spacing[axis], src.spacing[axis]
            )));
        }
    }
    for (k, img) in source.images.iter().enumerate() {
        let p = geometry.voxel_to_world([0.0, 0.0, k as f64]);
        let off = norm(sub(p, img.position));
        if off > POSITION_TOLERANCE_MM {
            return Err(Error::InvalidInput(format!(
                "{what} slice {k} lies {off:.3} mm from source slice {k}; the volume is shifted \
                 relative to the source series"
            )));
        }
    }
    Ok(())
}

/// Packs frames of booleans into the BINARY pixel data: frames follow each other without
/// padding, bit `i % 8` of byte `i / 8` holds pixel `i` (PS3.5 8.1.1), the whole padded to an
/// even length.
fn pack_bits<F, I>(frames: F, total: usize) -> Vec<u8>
where
    F: Iterator<Item = I>,
    I: Iterator<Item = bool>,
{
    let mut out = vec![0u8; total.div_ceil(8).next_multiple_of(2)];
    let mut i = 0usize;
    for frame in frames {
        for bit in frame {
            if bit {
                out[i / 8] |= 1 << (i % 8);
            }
            i += 1;
        }
    }
    debug_assert_eq!(i, total);
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SegKind {
    Binary,
    Fractional,
}

/// Everything but the pixel data.
#[allow(clippy::too_many_arguments)]
fn seg_object(
    source: &SourceSeries,
    algorithm: &AlgorithmInfo,
    identity: &InstanceIdentity,
    segments: &[SegmentSpec],
    frames: &[Frame],
    kind: SegKind,
    content_label: &str,
    content_description: &str,
) -> Result<InMemDicomObject> {
    if frames.is_empty() {
        return Err(Error::Empty(
            "every frame is empty; no segmentation to write".into(),
        ));
    }
    let geometry = source.geometry()?;
    let mut obj = InMemDicomObject::new_empty();
    let description = match kind {
        SegKind::Binary => "VertebraFormer vertebra segmentation",
        SegKind::Fractional => "VertebraFormer lesion probability maps",
    };
    common_modules(
        &mut obj,
        uids::SEGMENTATION_STORAGE,
        "SEG",
        description,
        source,
        algorithm,
        identity,
    );
    obj.strs(tags::IMAGE_TYPE, VR::CS, &["DERIVED", "PRIMARY"]);
    // Frame of Reference.
    obj.str(
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &source.frame_of_reference_uid,
    );
    obj.str(tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    // Segmentation Image.
    obj.str(tags::CONTENT_LABEL, VR::CS, content_label);
    obj.str(tags::CONTENT_DESCRIPTION, VR::LO, content_description);
    obj.str(tags::CONTENT_CREATOR_NAME, VR::PN, "");
    let bits = match kind {
        SegKind::Binary => {
            obj.str(tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
            1
        }
        SegKind::Fractional => {
            obj.str(tags::SEGMENTATION_TYPE, VR::CS, "FRACTIONAL");
            obj.str(tags::SEGMENTATION_FRACTIONAL_TYPE, VR::CS, "PROBABILITY");
            obj.us(
                tags::MAXIMUM_FRACTIONAL_VALUE,
                &[u16::from(MAX_FRACTIONAL_VALUE)],
            );
            8
        }
    };
    // Image Pixel.
    obj.us(tags::SAMPLES_PER_PIXEL, &[1]);
    obj.str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    obj.us(tags::ROWS, &[source.rows]);
    obj.us(tags::COLUMNS, &[source.columns]);
    obj.us(tags::BITS_ALLOCATED, &[bits]);
    obj.us(tags::BITS_STORED, &[bits]);
    obj.us(tags::HIGH_BIT, &[bits - 1]);
    obj.us(tags::PIXEL_REPRESENTATION, &[0]);
    obj.str(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    obj.str(tags::NUMBER_OF_FRAMES, VR::IS, &frames.len().to_string());
    // Segment Sequence.
    let segment_items = segments
        .iter()
        .enumerate()
        .map(|(i, s)| segment_item(i as u16 + 1, s, algorithm))
        .collect();
    obj.seq(tags::SEGMENT_SEQUENCE, segment_items);
    // Multi-frame Dimension.
    let dim_org_uid = uid_from_key(&format!(
        "vertebra-reports/v1/dimension-organization/{}",
        identity.sop_instance_uid
    ));
    obj.seq(
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![item(|i| {
            i.str(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_org_uid);
        })],
    );
    let dim_index = |pointer: dicom_core::Tag, group: dicom_core::Tag, label: &str| {
        item(|i| {
            i.put(DataElement::new(
                tags::DIMENSION_INDEX_POINTER,
                VR::AT,
                PrimitiveValue::Tags([pointer].into_iter().collect()),
            ));
            i.put(DataElement::new(
                tags::FUNCTIONAL_GROUP_POINTER,
                VR::AT,
                PrimitiveValue::Tags([group].into_iter().collect()),
            ));
            i.str(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_org_uid);
            i.str(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
        })
    };
    obj.seq(
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            dim_index(
                tags::REFERENCED_SEGMENT_NUMBER,
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                "Segment Number",
            ),
            dim_index(
                tags::IMAGE_POSITION_PATIENT,
                tags::PLANE_POSITION_SEQUENCE,
                "Image Position Patient",
            ),
        ],
    );
    // Shared functional groups: pixel measures and plane orientation.
    let thickness = source.slice_thickness.unwrap_or(geometry.spacing[2]);
    let shared = item(|i| {
        i.seq(
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![item(|m| {
                m.ds(tags::PIXEL_SPACING, &source.pixel_spacing);
                m.ds(tags::SLICE_THICKNESS, &[thickness]);
                m.ds(tags::SPACING_BETWEEN_SLICES, &[geometry.spacing[2]]);
            })],
        );
        i.seq(
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![item(|m| {
                m.ds(tags::IMAGE_ORIENTATION_PATIENT, &source.orientation);
            })],
        );
    });
    obj.seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]);
    // Per-frame functional groups.
    let per_frame = frames
        .iter()
        .map(|f| {
            let img = &source.images[f.slice];
            item(|i| {
                i.seq(
                    tags::DERIVATION_IMAGE_SEQUENCE,
                    vec![item(|d| {
                        d.code_seq(
                            tags::DERIVATION_CODE_SEQUENCE,
                            &codes::SEGMENTATION_DERIVATION,
                        );
                        let mut src = sop_ref(&img.sop_class_uid, &img.sop_instance_uid);
                        src.code_seq(
                            tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                            &codes::SOURCE_IMAGE_FOR_PROCESSING,
                        );
                        src.str(tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES");
                        d.seq(tags::SOURCE_IMAGE_SEQUENCE, vec![src]);
                    })],
                );
                i.seq(
                    tags::FRAME_CONTENT_SEQUENCE,
                    vec![item(|c| {
                        c.put(DataElement::new(
                            tags::DIMENSION_INDEX_VALUES,
                            VR::UL,
                            PrimitiveValue::U32(
                                [u32::from(f.segment), f.slice as u32 + 1]
                                    .into_iter()
                                    .collect(),
                            ),
                        ));
                    })],
                );
                i.seq(
                    tags::PLANE_POSITION_SEQUENCE,
                    vec![item(|p| p.ds(tags::IMAGE_POSITION_PATIENT, &img.position))],
                );
                i.seq(
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    vec![item(|s| {
                        s.us(tags::REFERENCED_SEGMENT_NUMBER, &[f.segment]);
                    })],
                );
            })
        })
        .collect();
    obj.seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame);
    // Common Instance Reference: exactly the source instances the frames reference.
    let mut referenced: Vec<usize> = frames.iter().map(|f| f.slice).collect();
    referenced.sort_unstable();
    referenced.dedup();
    obj.seq(
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![item(|s| {
            s.str(
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                &source.series_instance_uid,
            );
            s.seq(
                tags::REFERENCED_INSTANCE_SEQUENCE,
                referenced
                    .iter()
                    .map(|&k| {
                        sop_ref(
                            &source.images[k].sop_class_uid,
                            &source.images[k].sop_instance_uid,
                        )
                    })
                    .collect(),
            );
        })],
    );
    Ok(obj)
}

fn segment_item(number: u16, s: &SegmentSpec, algorithm: &AlgorithmInfo) -> InMemDicomObject {
    item(|i| {
        i.us(tags::SEGMENT_NUMBER, &[number]);
        i.str(tags::SEGMENT_LABEL, VR::LO, &s.label);
        i.str(tags::SEGMENT_DESCRIPTION, VR::ST, &s.description);
        i.str(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC");
        i.str(tags::SEGMENT_ALGORITHM_NAME, VR::LO, &algorithm.bundle_name);
        i.seq(
            tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
            vec![item(|a| {
                a.code_seq(
                    tags::ALGORITHM_FAMILY_CODE_SEQUENCE,
                    &codes::ARTIFICIAL_INTELLIGENCE,
                );
                a.str(tags::ALGORITHM_NAME, VR::LO, &algorithm.bundle_name);
                a.str(tags::ALGORITHM_VERSION, VR::LO, &algorithm.bundle_version);
            })],
        );
        i.code_seq(tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE, &s.category);
        let mut property = code_item(&s.property);
        if let Some(m) = &s.modifier {
            property.code_seq(tags::SEGMENTED_PROPERTY_TYPE_MODIFIER_CODE_SEQUENCE, m);
        }
        i.seq(tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, vec![property]);
        i.us(
            tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE,
            &palette::rgb_to_dicom_lab(s.rgb),
        );
        i.str(tags::TRACKING_ID, VR::UT, &s.tracking_id);
        i.str(tags::TRACKING_UID, VR::UI, &s.tracking_uid);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_packed_little_endian_across_frame_boundaries() {
        // Two frames of 5 pixels: 10110 and 01001 → bits 0,2,3 then 6,9.
        let f1 = [true, false, true, true, false];
        let f2 = [false, true, false, false, true];
        let out = pack_bits([f1.iter().copied(), f2.iter().copied()].into_iter(), 10);
        assert_eq!(out, vec![0b0100_1101, 0b0000_0010]);
        // 9 pixels need 2 bytes; 17 need 3, padded to 4.
        assert_eq!(
            pack_bits(std::iter::once([true; 17].into_iter()), 17).len(),
            4
        );
    }
}
