//! Optional key images for PACS that do not display Segmentations: a Secondary Capture image
//! (PS3.3 A.8.1, SC Image Storage, RGB) of the mid-sagittal reformat of the CT with the
//! vertebra labels, their names and the lesion centres burned in.
//!
//! # Layout
//!
//! - Plane: the sagittal plane (constant L) through the median L coordinate of the vertebra
//!   centroids (the centre of the volume when no vertebra was found).
//! - Orientation: radiological sagittal convention, superior at the top and anterior on the
//!   left: columns advance towards posterior (+P), rows towards inferior (−S); Patient
//!   Orientation `P\F`.
//! - Extent: the P and S range of the centres of the eight corner voxels of the source grid.
//! - Square pixels of size `d` = the smallest source spacing, refined by an integer factor
//!   `k = ceil(MIN_SIZE / n)` when the larger side `n` would be under [`MIN_SIZE`] pixels, or
//!   coarsened to `extent / (MAX_SIZE − 1)` when it would exceed [`MAX_SIZE`]. A side covering
//!   `e` mm has `round(e / d) + 1` pixels; pixel `(c, r)` of the reformat lies at
//!   `P = P_min + c·d`, `S = S_max − r·d`.
//! - A black banner of [`banner_height`] rows sits above the reformat with "NOT FOR
//!   DIAGNOSTIC USE"; image rows = banner + reformat rows.
//! - CT: trilinear interpolation, bone window (centre [`WINDOW_CENTER_HU`], width
//!   [`WINDOW_WIDTH_HU`]); outside the source grid black. Labels: nearest voxel, blended with
//!   the palette colour at [`LABEL_ALPHA`] (a grey plus a colour keeps the colour's hue).
//! - Each vertebra's name in its palette colour, 1 px black shadow, right-aligned just anterior
//!   (left) of the vertebra at its centroid's row; each lesion centre as an opaque cross in
//!   the lesion class colour with a black outline.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use vertebra_core::{Geometry, Volume};

use std::borrow::Cow;

use vertebra_core::anatomy::Code;

use crate::codes;
use crate::dataset::{DataSetExt, code_item, common_modules, item, sop_ref};
use crate::font::{glyph, text_width};
use crate::model::{AlgorithmInfo, AnalysisFindings, InstanceIdentity};
use crate::palette;
use crate::source::SourceSeries;
use crate::{Error, Result};

/// Smallest number of pixels of the longer side of the reformat.
pub const MIN_SIZE: usize = 256;

/// Largest number of pixels of the longer side of the reformat.
pub const MAX_SIZE: usize = 1024;

/// Bone window centre, HU.
pub const WINDOW_CENTER_HU: f64 = 500.0;

/// Bone window width, HU.
pub const WINDOW_WIDTH_HU: f64 = 2000.0;

/// Opacity of the vertebra colours over the grey CT.
pub const LABEL_ALPHA: f64 = 0.45;

/// The banner text.
pub const BANNER: &str = "NOT FOR DIAGNOSTIC USE";

/// DCM 113072 "Multiplanar reformatting" (CID 7203 Image Derivation): Derivation Code.
pub const MULTIPLANAR_REFORMATTING: Code = Code {
    scheme: Cow::Borrowed("DCM"),
    value: Cow::Borrowed("113072"),
    meaning: Cow::Borrowed("Multiplanar reformatting"),
};

/// Largest difference of direction cosines, spacings (relative) and origins (mm) between a
/// volume and the source grid.
const GRID_TOLERANCE: f64 = 1e-4;

/// Where the reformat lies: plane, pixel size and matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SagittalLayout {
    /// L coordinate of the plane, mm.
    pub l_mm: f64,
    /// P coordinate of column 0, mm.
    pub p_min_mm: f64,
    /// S coordinate of reformat row 0 (the top), mm.
    pub s_max_mm: f64,
    /// Pixel size (square), mm.
    pub pixel_mm: f64,
    /// Columns of the reformat (and of the image).
    pub columns: usize,
    /// Rows of the reformat, without the banner.
    pub rows: usize,
    /// Integer scale of the 5 × 7 font.
    pub text_scale: usize,
}

impl SagittalLayout {
    /// Image `(column, row)` (banner included) of an LPS position projected onto the plane.
    pub fn pixel_of(&self, lps: [f64; 3]) -> (f64, f64) {
        (
            (lps[1] - self.p_min_mm) / self.pixel_mm,
            (self.s_max_mm - lps[2]) / self.pixel_mm + banner_height(self.text_scale) as f64,
        )
    }
}

/// Rows of the banner at font scale `scale`: the glyph height plus one glyph pixel above and
/// below.
pub fn banner_height(scale: usize) -> usize {
    9 * scale
}

/// Builds the key images of an analysis: one Secondary Capture image with the mid-sagittal
/// reformat (see the module documentation for its layout).
///
/// `ct` is the image in HU on the source grid ([`SourceSeries::geometry`]), as are
/// `findings.labels`.
///
/// # Errors
///
/// [`Error::InvalidInput`] when `ct` or the labels are not on the source grid, or the algorithm
/// or identity is invalid.
pub fn build_key_images(
    source: &SourceSeries,
    ct: &Volume<f32>,
    findings: &AnalysisFindings,
    algorithm: &AlgorithmInfo,
    identity: &InstanceIdentity,
) -> Result<Vec<InMemDicomObject>> {
    algorithm.validate()?;
    identity.validate()?;
    let geometry = source.geometry()?;
    check_grid(source, &geometry, ct.geometry(), ct.dims(), "CT volume")?;
    check_grid(
        source,
        &geometry,
        findings.labels.geometry(),
        findings.labels.dims(),
        "label volume",
    )?;
    let layout = sagittal_layout(&geometry, source.dims(), findings);
    let (pixels, slices) = render(&layout, ct, findings);
    Ok(vec![sc_object(
        source, algorithm, identity, &layout, pixels, &slices,
    )])
}

/// The layout of the mid-sagittal reformat of a grid of `dims` placed by `geometry`.
pub fn sagittal_layout(
    geometry: &Geometry,
    dims: [usize; 3],
    findings: &AnalysisFindings,
) -> SagittalLayout {
    let corners: Vec<[f64; 3]> = (0..8)
        .map(|i| {
            let c = |axis: usize| {
                if i & (1 << axis) == 0 {
                    0.0
                } else {
                    (dims[axis] - 1) as f64
                }
            };
            geometry.voxel_to_world([c(0), c(1), c(2)])
        })
        .collect();
    let range = |k: usize| {
        corners
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), c| {
                (lo.min(c[k]), hi.max(c[k]))
            })
    };
    let (l_lo, l_hi) = range(0);
    let (p_min, p_max) = range(1);
    let (s_min, s_max) = range(2);
    let mut ls: Vec<f64> = findings
        .vertebrae
        .iter()
        .map(|v| v.centroid_lps[0])
        .collect();
    ls.sort_by(f64::total_cmp);
    let l_mm = match ls.len() {
        0 => 0.5 * (l_lo + l_hi),
        n if n % 2 == 1 => ls[n / 2],
        n => 0.5 * (ls[n / 2 - 1] + ls[n / 2]),
    };
    let extent = (p_max - p_min).max(s_max - s_min);
    let mut pixel_mm = geometry
        .spacing
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let n = (extent / pixel_mm).round() as usize + 1;
    if n < MIN_SIZE {
        pixel_mm /= MIN_SIZE.div_ceil(n) as f64;
    } else if n > MAX_SIZE {
        pixel_mm = extent / (MAX_SIZE - 1) as f64;
    }
    let side = |e: f64| (e / pixel_mm).round() as usize + 1;
    let columns = side(p_max - p_min);
    let rows = side(s_max - s_min);
    SagittalLayout {
        l_mm,
        p_min_mm: p_min,
        s_max_mm: s_max,
        pixel_mm,
        columns,
        rows,
        text_scale: (columns.max(rows) / MIN_SIZE).max(1),
    }
}

/// An RGB raster, row-major, 3 bytes per pixel.
struct Canvas {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = 3 * (y as usize * self.width + x as usize);
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    fn fill_rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
        }
    }

    /// Draws `text` with its top-left corner at `(x, y)`, glyph pixels `scale` wide.
    fn text(&mut self, x: i64, y: i64, text: &str, scale: usize, c: [u8; 3]) {
        let s = scale as i64;
        for (i, ch) in text.chars().enumerate() {
            let g = glyph(ch);
            let x0 = x + i as i64 * 6 * s;
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        self.fill_rect(x0 + col * s, y + row as i64 * s, s, s, c);
                    }
                }
            }
        }
    }

    /// Text with a black shadow one glyph pixel down and right.
    fn shadowed_text(&mut self, x: i64, y: i64, text: &str, scale: usize, c: [u8; 3]) {
        let s = scale as i64;
        self.text(x + s, y + s, text, scale, [0, 0, 0]);
        self.text(x, y, text, scale, c);
    }
}

/// Renders the image; returns the RGB bytes and the sorted source slice indices it sampled.
fn render(
    layout: &SagittalLayout,
    ct: &Volume<f32>,
    findings: &AnalysisFindings,
) -> (Vec<u8>, Vec<usize>) {
    let scale = layout.text_scale;
    let banner = banner_height(scale);
    let (width, height) = (layout.columns, layout.rows + banner);
    let mut canvas = Canvas {
        width,
        height,
        rgb: vec![0; width * height * 3],
    };
    let geometry = ct.geometry();
    let dims = ct.dims();
    let labels = findings.labels.data();
    let mut sampled = vec![false; dims[2]];
    // Label of every reformat pixel, for placing the names.
    let mut label_at = vec![0u8; layout.columns * layout.rows];
    for r in 0..layout.rows {
        for c in 0..layout.columns {
            let world = [
                layout.l_mm,
                layout.p_min_mm + c as f64 * layout.pixel_mm,
                layout.s_max_mm - r as f64 * layout.pixel_mm,
            ];
            let v = geometry.world_to_voxel(world);
            let Some(hu) = trilinear(ct, v, &mut sampled) else {
                continue;
            };
            let g = window(hu);
            let mut rgb = [g; 3];
            let idx = v.map(f64::round);
            if idx.iter().zip(dims).all(|(&x, n)| x >= 0.0 && x < n as f64) {
                let label = labels[ct.index(idx[0] as usize, idx[1] as usize, idx[2] as usize)];
                if let Some(color) = label_color(label) {
                    label_at[r * layout.columns + c] = label;
                    rgb = blend(g, color);
                }
            }
            canvas.set(c as i64, (r + banner) as i64, rgb);
        }
    }
    canvas.text(scale as i64, scale as i64, BANNER, scale, [255, 255, 255]);
    let s = scale as i64;
    for v in &findings.vertebrae {
        let (cx, cy) = layout.pixel_of(v.centroid_lps);
        let name = v.vertebra.name();
        let row = cy.round() as i64 - banner as i64;
        // Leftmost pixel of this vertebra within the text's rows, else anywhere, else the
        // centroid.
        let leftmost = |rows: std::ops::Range<i64>| {
            rows.filter(|&r| r >= 0 && (r as usize) < layout.rows)
                .filter_map(|r| {
                    let line = &label_at[r as usize * layout.columns..][..layout.columns];
                    line.iter().position(|&l| l == v.vertebra.label())
                })
                .min()
        };
        let left = leftmost(row - 4 * s..row + 4 * s)
            .or_else(|| leftmost(0..layout.rows as i64))
            .map_or(cx.round() as i64, |c| c as i64);
        let x = (left - 2 * s - text_width(name, scale) as i64).max(0);
        canvas.shadowed_text(
            x,
            cy.round() as i64 - 3 * s,
            name,
            scale,
            palette::vertebra_rgb(v.vertebra),
        );
    }
    for lesion in &findings.lesions {
        let (cx, cy) = layout.pixel_of(lesion.centre_lps);
        let (x, y) = (cx.round() as i64, cy.round() as i64);
        let arm = 3 * s + 1;
        canvas.fill_rect(x - arm - 1, y - s - 1, 2 * arm + 3, 2 * s + 3, [0, 0, 0]);
        canvas.fill_rect(x - s - 1, y - arm - 1, 2 * s + 3, 2 * arm + 3, [0, 0, 0]);
        let color = palette::lesion_rgb(lesion.class);
        canvas.fill_rect(x - arm, y - s / 2, 2 * arm + 1, s, color);
        canvas.fill_rect(x - s / 2, y - arm, s, 2 * arm + 1, color);
    }
    let slices = sampled
        .iter()
        .enumerate()
        .filter_map(|(k, &s)| s.then_some(k))
        .collect();
    (canvas.rgb, slices)
}

/// Trilinear interpolation at continuous voxel `v`; `None` outside the grid (beyond half a
/// voxel from the outer centres). Marks the slices it reads in `sampled`.
fn trilinear(ct: &Volume<f32>, v: [f64; 3], sampled: &mut [bool]) -> Option<f64> {
    let dims = ct.dims();
    let mut lo = [0usize; 3];
    let mut frac = [0.0f64; 3];
    for a in 0..3 {
        let n = dims[a] as f64;
        if !(v[a] >= -0.5 && v[a] <= n - 0.5) {
            return None;
        }
        let x = v[a].clamp(0.0, n - 1.0);
        let f = x.floor().min((n - 2.0).max(0.0));
        lo[a] = f as usize;
        frac[a] = x - f;
    }
    let data = ct.data();
    let mut acc = 0.0;
    for corner in 0..8 {
        let mut w = 1.0;
        let mut idx = [0usize; 3];
        for a in 0..3 {
            let up = corner & (1 << a) != 0;
            idx[a] = (lo[a] + usize::from(up)).min(dims[a] - 1);
            w *= if up { frac[a] } else { 1.0 - frac[a] };
        }
        if w > 0.0 {
            sampled[idx[2]] = true;
            acc += w * f64::from(data[ct.index(idx[0], idx[1], idx[2])]);
        }
    }
    Some(acc)
}

/// Grey level of `hu` in the bone window.
fn window(hu: f64) -> u8 {
    let lo = WINDOW_CENTER_HU - WINDOW_WIDTH_HU / 2.0;
    ((hu - lo) / WINDOW_WIDTH_HU * 255.0)
        .round()
        .clamp(0.0, 255.0) as u8
}

fn label_color(label: u8) -> Option<[u8; 3]> {
    vertebra_core::anatomy::Vertebra::from_label(label).map(palette::vertebra_rgb)
}

fn blend(grey: u8, color: [u8; 3]) -> [u8; 3] {
    color.map(|c| {
        (LABEL_ALPHA * f64::from(c) + (1.0 - LABEL_ALPHA) * f64::from(grey))
            .round()
            .clamp(0.0, 255.0) as u8
    })
}

/// Checks that a volume is on the source grid: same dimensions, spacing, origin, directions.
fn check_grid(
    source: &SourceSeries,
    expected: &Geometry,
    actual: &Geometry,
    dims: [usize; 3],
    what: &str,
) -> Result<()> {
    if dims != source.dims() {
        return Err(Error::InvalidInput(format!(
            "{what} has dimensions {dims:?}, the source grid {:?}",
            source.dims()
        )));
    }
    let spacing_ok = expected
        .spacing
        .iter()
        .zip(actual.spacing)
        .all(|(a, b)| (a - b).abs() <= GRID_TOLERANCE * a.abs());
    let direction_ok = expected
        .direction
        .iter()
        .flatten()
        .zip(actual.direction.iter().flatten())
        .all(|(a, b)| (a - b).abs() <= GRID_TOLERANCE);
    let origin_ok = expected
        .origin
        .iter()
        .zip(actual.origin)
        .all(|(a, b)| (a - b).abs() <= 0.01);
    if spacing_ok && direction_ok && origin_ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "{what} is not on the source grid (spacing, origin or directions differ from \
             SourceSeries::geometry)"
        )))
    }
}

/// The Secondary Capture object around the rendered pixels.
fn sc_object(
    source: &SourceSeries,
    algorithm: &AlgorithmInfo,
    identity: &InstanceIdentity,
    layout: &SagittalLayout,
    mut pixels: Vec<u8>,
    slices: &[usize],
) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    common_modules(
        &mut obj,
        uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
        "OT",
        "VertebraFormer key images (not for diagnostic use)",
        source,
        algorithm,
        identity,
    );
    // General Series: Body Part Examined (Type 3) tells that the image shows an unpaired
    // part, so Laterality (Type 2C, for paired parts) stays absent.
    obj.str(tags::BODY_PART_EXAMINED, VR::CS, "SPINE");
    // General Image.
    obj.strs(tags::IMAGE_TYPE, VR::CS, &["DERIVED", "SECONDARY"]);
    obj.strs(tags::PATIENT_ORIENTATION, VR::CS, &["P", "F"]);
    obj.str(tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
    obj.str(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    obj.str(
        tags::DERIVATION_DESCRIPTION,
        VR::ST,
        "Mid-sagittal reformat, bone window, vertebra labels and lesion centres burned in; \
         not for diagnostic use",
    );
    obj.seq(
        tags::DERIVATION_CODE_SEQUENCE,
        vec![code_item(&MULTIPLANAR_REFORMATTING)],
    );
    obj.seq(
        tags::SOURCE_IMAGE_SEQUENCE,
        slices
            .iter()
            .map(|&k| {
                let img = &source.images[k];
                let mut r = sop_ref(&img.sop_class_uid, &img.sop_instance_uid);
                r.seq(
                    tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                    vec![code_item(&codes::SOURCE_IMAGE_FOR_PROCESSING)],
                );
                r
            })
            .collect(),
    );
    // SC Equipment.
    obj.str(tags::CONVERSION_TYPE, VR::CS, "WSD");
    obj.str(
        tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER,
        VR::LO,
        &algorithm.manufacturer,
    );
    obj.str(
        tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER_MODEL_NAME,
        VR::LO,
        &algorithm.device_model,
    );
    obj.strs(
        tags::SECONDARY_CAPTURE_DEVICE_SOFTWARE_VERSIONS,
        VR::LO,
        &[&algorithm.software_version],
    );
    // SC Image.
    obj.str(
        tags::DATE_OF_SECONDARY_CAPTURE,
        VR::DA,
        &identity.content_date,
    );
    obj.str(
        tags::TIME_OF_SECONDARY_CAPTURE,
        VR::TM,
        &identity.content_time,
    );
    // Common Instance Reference: the source series.
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
                slices
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
    // Image Pixel.
    obj.us(tags::SAMPLES_PER_PIXEL, &[3]);
    obj.str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
    obj.us(tags::PLANAR_CONFIGURATION, &[0]);
    obj.us(
        tags::ROWS,
        &[(layout.rows + banner_height(layout.text_scale)) as u16],
    );
    obj.us(tags::COLUMNS, &[layout.columns as u16]);
    obj.us(tags::BITS_ALLOCATED, &[8]);
    obj.us(tags::BITS_STORED, &[8]);
    obj.us(tags::HIGH_BIT, &[7]);
    obj.us(tags::PIXEL_REPRESENTATION, &[0]);
    if pixels.len() % 2 == 1 {
        pixels.push(0);
    }
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(pixels),
    ));
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bone_window_maps_its_ends_to_black_and_white() {
        assert_eq!(window(-500.0), 0);
        assert_eq!(window(1500.0), 255);
        assert_eq!(window(500.0), 128);
        assert_eq!(window(-1000.0), 0);
    }

    #[test]
    fn blending_a_grey_keeps_the_colour_ordering() {
        // 0.45 * 255 + 0.55 * 100 = 169.75 → 170; 0.45 * 127 + 55 = 112.15 → 112; 55 → 55.
        assert_eq!(blend(100, [255, 127, 0]), [170, 112, 55]);
    }

    #[test]
    fn text_is_drawn_from_the_glyph_bits() {
        let mut c = Canvas {
            width: 12,
            height: 7,
            rgb: vec![0; 12 * 7 * 3],
        };
        c.text(0, 0, "L1", 1, [255, 255, 255]);
        let at = |x: usize, y: usize| c.rgb[3 * (y * 12 + x)];
        // 'L': column 0 set on every row, row 6 full; '1' starts at x = 6, row 0 = 0x04 → x 8.
        assert_eq!(at(0, 3), 255);
        assert_eq!(at(1, 3), 0);
        assert_eq!(at(4, 6), 255);
        assert_eq!(at(8, 0), 255);
        assert_eq!(at(7, 0), 0);
        assert_eq!(text_width("L1", 1), 11);
    }
}
