//! From slice headers to a regular stack: one orientation and pixel spacing, sorted along the
//! slice normal, without duplicates, gaps or tilt, and the [`Geometry`] of the volume.
//!
//! The geometry inverts `vertebra_core::dicom_series` (and agrees with the SEG writer's
//! `SourceSeries::geometry`): voxel x runs along the columns (row direction cosines,
//! `direction[0]`), y along the rows (column direction cosines, `direction[1]`), z along the
//! slice normal row × column (`direction[2]`); spacing is `[Pixel Spacing[1], Pixel
//! Spacing[0], (last − first position along the normal) / (n − 1)]`; the origin is the Image
//! Position (Patient) of the first slice in sorted order.

use vertebra_core::Geometry;

use super::header::ImageFile;
use super::{SeriesError, SeriesOptions};

/// Largest difference between direction cosines of two slices of one series (what scanners
/// write; the tolerance of `Geometry::validate`).
pub(crate) const ORIENTATION_TOLERANCE: f64 = 1e-4;

/// Largest angle between the slice normal and the line through the slice positions, degrees.
/// Beyond it the series is refused as a gantry-tilted acquisition.
pub(crate) const MAX_TILT_DEGREES: f64 = 0.5;

/// Slices closer than this along the normal are at the same position, mm.
pub(crate) const DUPLICATE_TOLERANCE_MM: f64 = 0.01;

/// Largest distance of a slice from the regular grid, as a fraction of the spacing.
pub(crate) const MAX_GRID_DEVIATION: f64 = 0.1;

/// One slice: frame `frame` (0-based) of file `file` (index into the scanned files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slice {
    /// Index of the file.
    pub file: usize,
    /// Frame within the file, 0-based.
    pub frame: usize,
}

/// A validated stack: slices in volume z order and the geometry.
#[derive(Debug)]
pub(crate) struct Stack {
    /// Slices sorted by position along the normal, ascending.
    pub slices: Vec<Slice>,
    /// The voxel grid's geometry.
    pub geometry: Geometry,
}

/// Describes a slice for messages: `instance 12 (path)` or `frame 7 of path`.
pub(crate) fn describe(files: &[ImageFile], s: Slice) -> String {
    let f = &files[s.file];
    if f.enhanced {
        format!("frame {} of {}", s.frame + 1, f.path.display())
    } else {
        match f.instance_number {
            Some(n) => format!("instance {n} ({})", f.path.display()),
            None => f.path.display().to_string(),
        }
    }
}

/// Checks the slices and sorts them into a stack; pushes non-fatal findings to `warnings`.
///
/// The checks run in this order, and the first failure is returned: orientation and spacing
/// agree ([`SeriesError::MixedOrientation`], [`SeriesError::MixedSize`]), enough slices
/// ([`SeriesError::TooFewSlices`]), no two at one position
/// ([`SeriesError::DuplicatePosition`]), stacked along the normal
/// ([`SeriesError::GantryTilt`]), no gap ([`SeriesError::MissingSlices`]), on a regular grid
/// ([`SeriesError::IrregularSpacing`]).
pub(crate) fn build(
    files: &[ImageFile],
    mut slices: Vec<Slice>,
    opts: &SeriesOptions,
    warnings: &mut Vec<String>,
) -> Result<Stack, SeriesError> {
    let frame = |s: Slice| &files[s.file].frames[s.frame];
    let first = slices[0];
    let f0 = frame(first);
    let [row, col, normal] = orthonormal_axes(files, first)?;
    for &s in &slices[1..] {
        let h = frame(s);
        if h.orientation
            .iter()
            .zip(&f0.orientation)
            .any(|(a, b)| (a - b).abs() > ORIENTATION_TOLERANCE)
        {
            return Err(SeriesError::MixedOrientation {
                file: files[s.file].path.clone(),
                found: h.orientation,
                expected: f0.orientation,
            });
        }
        if h.pixel_spacing
            .iter()
            .zip(&f0.pixel_spacing)
            .any(|(a, b)| (a - b).abs() > 1e-6 * a.abs().max(1.0))
        {
            return Err(SeriesError::MixedSize {
                file: files[s.file].path.clone(),
                detail: format!(
                    "Pixel Spacing {:?} mm differs from {:?} mm of {}",
                    h.pixel_spacing,
                    f0.pixel_spacing,
                    describe(files, first)
                ),
            });
        }
    }
    if slices.len() < opts.min_slices {
        return Err(SeriesError::TooFewSlices {
            found: slices.len(),
            min: opts.min_slices,
        });
    }

    let along = |s: Slice| dot(frame(s).position, normal);
    slices.sort_by(|a, b| along(*a).total_cmp(&along(*b)));
    for w in slices.windows(2) {
        if along(w[1]) - along(w[0]) < DUPLICATE_TOLERANCE_MM {
            return Err(SeriesError::DuplicatePosition {
                at_mm: along(w[0]),
                first: files[w[0].file].path.clone(),
                second: files[w[1].file].path.clone(),
            });
        }
    }

    let n = slices.len();
    let origin = frame(slices[0]).position;
    // Tilt: the angle between the normal and the line from the first slice to each other.
    let mut tilt_deg: f64 = 0.0;
    for &s in &slices[1..] {
        let v = sub(frame(s).position, origin);
        let a = dot(v, normal);
        let lateral = norm(sub(v, scale(normal, a)));
        tilt_deg = tilt_deg.max(lateral.atan2(a).to_degrees());
    }
    if tilt_deg > MAX_TILT_DEGREES {
        return Err(SeriesError::GantryTilt { degrees: tilt_deg });
    }
    if tilt_deg > 0.05 {
        warnings.push(format!(
            "slices are stacked {tilt_deg:.3}° off their normal (accepted up to \
             {MAX_TILT_DEGREES}°); the volume places them on the normal"
        ));
    }
    let gantry = files
        .iter()
        .filter_map(|f| f.gantry_tilt)
        .fold(0.0_f64, |m, t| m.max(t.abs()));
    if gantry > 0.0 {
        warnings.push(format!(
            "Gantry/Detector Tilt (0018,1120) is {gantry}° but the slice positions are \
             perpendicular to the slices (within {MAX_TILT_DEGREES}°), so the images were \
             reconstructed without tilt"
        ));
    }

    let spacing_z = if n > 1 {
        let gaps: Vec<f64> = slices
            .windows(2)
            .map(|w| along(w[1]) - along(w[0]))
            .collect();
        let median = median(&gaps);
        for (k, gap) in gaps.iter().enumerate() {
            if *gap > opts.max_gap_factor * median {
                return Err(SeriesError::MissingSlices {
                    gap_mm: *gap,
                    median_mm: median,
                    max_factor: opts.max_gap_factor,
                    after: describe(files, slices[k]),
                });
            }
        }
        let spacing = (along(slices[n - 1]) - along(slices[0])) / (n - 1) as f64;
        let deviation = slices
            .iter()
            .enumerate()
            .map(|(k, &s)| (along(s) - along(slices[0]) - spacing * k as f64).abs())
            .fold(0.0, f64::max);
        if deviation > MAX_GRID_DEVIATION * spacing {
            return Err(SeriesError::IrregularSpacing {
                deviation_mm: deviation,
                spacing_mm: spacing,
            });
        }
        if deviation > 0.01 {
            warnings.push(format!(
                "slice positions deviate up to {deviation:.3} mm from the regular grid of \
                 spacing {spacing:.4} mm"
            ));
        }
        spacing
    } else {
        warnings.push(
            "a single slice: the slice spacing is unknown, 1 mm assumed along the normal".into(),
        );
        1.0
    };

    let geometry = Geometry {
        spacing: [f0.pixel_spacing[1], f0.pixel_spacing[0], spacing_z],
        origin,
        direction: [row, col, normal],
    };
    geometry
        .validate()
        .map_err(|e| SeriesError::InvalidAttribute {
            file: files[first.file].path.clone(),
            attribute: "Pixel Spacing (0028,0030)".into(),
            detail: e.to_string(),
        })?;
    Ok(Stack { slices, geometry })
}

/// Row and column direction of a slice, re-orthonormalised (scanners write cosines rounded to
/// a few digits), and their normal row × column, in this order.
fn orthonormal_axes(files: &[ImageFile], s: Slice) -> Result<[[f64; 3]; 3], SeriesError> {
    let o = files[s.file].frames[s.frame].orientation;
    let (r, c) = ([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
    let invalid = |detail: String| SeriesError::InvalidAttribute {
        file: files[s.file].path.clone(),
        attribute: "Image Orientation (Patient) (0020,0037)".into(),
        detail,
    };
    if (norm(r) - 1.0).abs() > 1e-3 || (norm(c) - 1.0).abs() > 1e-3 || dot(r, c).abs() > 1e-3 {
        return Err(invalid(format!(
            "{o:?} are not two orthogonal unit vectors"
        )));
    }
    let row = scale(r, 1.0 / norm(r));
    let c = sub(c, scale(row, dot(c, row)));
    let col = scale(c, 1.0 / norm(c));
    Ok([row, col, cross(row, col)])
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        f64::midpoint(v[m - 1], v[m])
    }
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn scale(a: [f64; 3], s: f64) -> [f64; 3] {
    [a[0] * s, a[1] * s, a[2] * s]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
