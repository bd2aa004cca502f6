//! One slice of a [`ViewerVolume`] as an RGB image and as PNG.
//!
//! Layers, bottom to top (see the module documentation of [`crate::viewer`] for orientation
//! and square pixels):
//!
//! 1. **CT** in a [`Window`]: bilinear HU, `grey = round(255 · (HU − (c − w/2)) / w)` clamped
//!    to 0–255 (the key images' mapping);
//! 2. **labels** (`overlay`): the nearest voxel's vertebra colour from the SEG palette,
//!    `round(α · colour + (1 − α) · grey)` per channel with the key images' α
//!    ([`vertebra_reports::keyimage::LABEL_ALPHA`], 0.45);
//! 3. **heatmap** (`heatmap`): bilinear heatmap value `t` in 0–1; from
//!    [`HEATMAP_THRESHOLD`] up, a black–red–yellow–white ramp ([`heatmap_rgb`]) blended at
//!    opacity `0.35 + 0.45 t`; plus a cross in the SEG palette's lesion-class colour at every
//!    lesion centre whose box the slice crosses;
//! 4. **names** (`overlay`): each vertebra's name centred on its centroid's projection, on the
//!    slices that cross the vertebra (its label's extent along the plane's normal), white with
//!    a one-pixel black outline so it reads over any colour; font scale
//!    `max(1, longest side / 256)`.
//!
//! PNG: 8-bit RGB, `png` crate with [`png::Compression::Fast`] (fdeflate): a 512² slice
//! encodes in a few milliseconds.

use rayon::prelude::*;
use serde::Serialize;
use vertebra_core::anatomy::{ALL_LESION_CLASSES, Vertebra};
use vertebra_reports::font::{GLYPH_ADVANCE, GLYPH_HEIGHT, glyph, text_width};
use vertebra_reports::keyimage::{LABEL_ALPHA, WINDOW_CENTER_HU, WINDOW_WIDTH_HU};
use vertebra_reports::palette;

use super::{ViewerError, ViewerVolume};

/// Longest side of a rendered image, in pixels; larger planes get a coarser pixel.
pub const MAX_SIDE: usize = 1024;

/// Heatmap values below this (0–1) are not drawn (10 %: noise of the lesion head).
pub const HEATMAP_THRESHOLD: f32 = 0.1;

/// A slice orientation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Plane {
    /// Transverse: constant z (superior), viewed from the feet.
    Axial,
    /// Constant x (patient left), viewed from the patient's left, anterior on the image left.
    Sagittal,
    /// Constant y (posterior), viewed from the front.
    Coronal,
}

impl Plane {
    /// The three planes in page order.
    pub const ALL: [Plane; 3] = [Plane::Axial, Plane::Sagittal, Plane::Coronal];

    /// The URL and JSON key: `axial`, `sagittal`, `coronal`.
    pub fn key(self) -> &'static str {
        match self {
            Plane::Axial => "axial",
            Plane::Sagittal => "sagittal",
            Plane::Coronal => "coronal",
        }
    }

    /// The display-grid axis the slice index runs along (0 = L, 1 = P, 2 = S).
    pub fn normal_axis(self) -> usize {
        match self {
            Plane::Axial => 2,
            Plane::Sagittal => 0,
            Plane::Coronal => 1,
        }
    }

    /// `(column axis, row axis, rows run against the axis)`: axial columns L, rows P;
    /// sagittal columns P, rows −S; coronal columns L, rows −S.
    fn in_plane(self) -> (usize, usize, bool) {
        match self {
            Plane::Axial => (0, 1, false),
            Plane::Sagittal => (1, 2, true),
            Plane::Coronal => (0, 2, true),
        }
    }
}

impl std::str::FromStr for Plane {
    type Err = ViewerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Plane::ALL
            .into_iter()
            .find(|p| p.key() == s)
            .ok_or_else(|| {
                ViewerError::Request(format!(
                    "unknown plane {s:?}: use axial, sagittal or coronal"
                ))
            })
    }
}

/// A display window (HU).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    /// Centre (level), HU.
    pub center: f64,
    /// Width, HU (> 0).
    pub width: f64,
}

impl Window {
    /// Bone: centre 500 HU, width 2000 HU — the key images' window
    /// ([`vertebra_reports::keyimage::WINDOW_CENTER_HU`]), cortical and trabecular bone and
    /// metal distinguishable.
    pub const BONE: Window = Window {
        center: WINDOW_CENTER_HU,
        width: WINDOW_WIDTH_HU,
    };

    /// Soft tissue: centre 40 HU, width 400 HU.
    pub const SOFT_TISSUE: Window = Window {
        center: 40.0,
        width: 400.0,
    };

    /// The presets by URL key, in page order: `bone`, `soft`.
    pub const PRESETS: [(&'static str, Window); 2] =
        [("bone", Window::BONE), ("soft", Window::SOFT_TISSUE)];

    /// The preset called `key`.
    ///
    /// # Errors
    /// [`ViewerError::Request`] naming the presets.
    pub fn preset(key: &str) -> Result<Window, ViewerError> {
        Window::PRESETS
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, w)| *w)
            .ok_or_else(|| {
                ViewerError::Request(format!("unknown window {key:?}: use bone or soft"))
            })
    }

    /// Grey level of `hu`: `round(255 · (hu − (c − w/2)) / w)`, clamped to 0–255.
    pub fn grey(self, hu: f32) -> u8 {
        let lo = self.center - self.width / 2.0;
        ((f64::from(hu) - lo) / self.width * 255.0)
            .round()
            .clamp(0.0, 255.0) as u8
    }
}

/// Size and placement of a plane's images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PlaneLayout {
    /// The plane.
    pub plane: Plane,
    /// Number of slices.
    pub slices: usize,
    /// Image width, pixels.
    pub width: usize,
    /// Image height, pixels.
    pub height: usize,
    /// Pixel size (square), mm.
    pub pixel_mm: f64,
    #[serde(skip)]
    columns_voxels: usize,
    #[serde(skip)]
    rows_voxels: usize,
}

impl PlaneLayout {
    /// The layout of `plane` for `volume`: pixel size the smaller in-plane spacing, or coarser
    /// when the longer side would exceed [`MAX_SIDE`].
    pub fn of(volume: &ViewerVolume, plane: Plane) -> PlaneLayout {
        let (u, v, _) = plane.in_plane();
        let dims = volume.dims();
        let spacing = volume.geometry().spacing;
        let (eu, ev) = (dims[u] as f64 * spacing[u], dims[v] as f64 * spacing[v]);
        let mut pixel_mm = spacing[u].min(spacing[v]);
        if (eu.max(ev) / pixel_mm).round() as usize > MAX_SIDE {
            pixel_mm = eu.max(ev) / MAX_SIDE as f64;
        }
        let side = |e: f64| ((e / pixel_mm).round() as usize).clamp(1, MAX_SIDE);
        PlaneLayout {
            plane,
            slices: dims[plane.normal_axis()],
            width: side(eu),
            height: side(ev),
            pixel_mm,
            columns_voxels: dims[u],
            rows_voxels: dims[v],
        }
    }

    /// Image position `(column, row)` (pixel centres at integers) of a continuous display-grid
    /// voxel coordinate projected onto the plane.
    pub fn pixel_of(&self, voxel: [f64; 3]) -> (f64, f64) {
        let (u, v, flip) = self.plane.in_plane();
        let col = (voxel[u] + 0.5) * self.width as f64 / self.columns_voxels as f64 - 0.5;
        let vv = if flip {
            (self.rows_voxels - 1) as f64 - voxel[v]
        } else {
            voxel[v]
        };
        let row = (vv + 0.5) * self.height as f64 / self.rows_voxels as f64 - 0.5;
        (col, row)
    }
}

/// An 8-bit RGB image, row-major from the top-left corner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width, pixels.
    pub width: usize,
    /// Height, pixels.
    pub height: usize,
    /// `3 · width · height` bytes.
    pub rgb: Vec<u8>,
}

impl RgbImage {
    /// The pixel at `(x, y)`.
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = 3 * (y * self.width + x);
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

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

    /// `text` with its top-left corner at `(x, y)` in glyph pixels `scale` wide.
    fn text(&mut self, x: i64, y: i64, text: &str, scale: usize, c: [u8; 3]) {
        let s = scale as i64;
        for (i, ch) in text.chars().enumerate() {
            let x0 = x + (i * GLYPH_ADVANCE) as i64 * s;
            for (row, bits) in glyph(ch).iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        self.fill_rect(x0 + col * s, y + row as i64 * s, s, s, c);
                    }
                }
            }
        }
    }

    /// White `text` centred on `(cx, cy)` with a one-pixel black outline.
    fn label(&mut self, cx: f64, cy: f64, text: &str, scale: usize) {
        let x = (cx - text_width(text, scale) as f64 / 2.0).round() as i64;
        let y = (cy - (GLYPH_HEIGHT * scale) as f64 / 2.0).round() as i64;
        for (dx, dy) in [
            (-1, -1),
            (0, -1),
            (1, -1),
            (-1, 0),
            (1, 0),
            (-1, 1),
            (0, 1),
            (1, 1),
        ] {
            self.text(x + dx, y + dy, text, scale, [0, 0, 0]);
        }
        self.text(x, y, text, scale, [255, 255, 255]);
    }
}

/// Where each output pixel along one image axis samples the volume.
struct AxisSamples {
    /// Lower neighbour, upper neighbour, weight of the upper one (bilinear).
    linear: Vec<(usize, usize, f32)>,
    /// Nearest voxel (labels).
    nearest: Vec<usize>,
}

/// Pixel `p` of `pixels` covers voxel coordinate `(p + ½) · voxels / pixels − ½` (reversed when
/// `flip`), so the image spans the plane's physical footprint exactly.
fn axis_samples(voxels: usize, pixels: usize, flip: bool) -> AxisSamples {
    let last = (voxels - 1) as f64;
    let mut linear = Vec::with_capacity(pixels);
    let mut nearest = Vec::with_capacity(pixels);
    for p in 0..pixels {
        let mut c = (p as f64 + 0.5) * voxels as f64 / pixels as f64 - 0.5;
        if flip {
            c = last - c;
        }
        let c = c.clamp(0.0, last);
        let lo = c.floor() as usize;
        let hi = (lo + 1).min(voxels - 1);
        linear.push((lo, hi, (c - lo as f64) as f32));
        nearest.push(((c + 0.5).floor() as usize).min(voxels - 1));
    }
    AxisSamples { linear, nearest }
}

/// The heatmap colour ramp at `t` in 0–1: black → red → yellow → white ("hot").
pub fn heatmap_rgb(t: f32) -> [u8; 3] {
    let ch = |x: f32| (x.clamp(0.0, 1.0) * 255.0).round() as u8;
    [ch(3.0 * t), ch(3.0 * t - 1.0), ch(3.0 * t - 2.0)]
}

fn mix(under: [u8; 3], over: [u8; 3], alpha: f64) -> [u8; 3] {
    std::array::from_fn(|i| {
        (alpha * f64::from(over[i]) + (1.0 - alpha) * f64::from(under[i]))
            .round()
            .clamp(0.0, 255.0) as u8
    })
}

/// The colour of each label value (`None`: background or not a vertebra).
fn label_colours() -> [Option<[u8; 3]>; 256] {
    std::array::from_fn(|l| Vertebra::from_label(l as u8).map(palette::vertebra_rgb))
}

/// Renders slice `index` of `plane` (see the module documentation for the layers).
///
/// # Errors
/// [`ViewerError::Request`] when `index` is not a slice of the plane.
pub fn render_rgb(
    volume: &ViewerVolume,
    plane: Plane,
    index: usize,
    window: Window,
    overlay: bool,
    heatmap: bool,
) -> Result<RgbImage, ViewerError> {
    let layout = PlaneLayout::of(volume, plane);
    if index >= layout.slices {
        return Err(ViewerError::Request(format!(
            "{} slice {index} does not exist (0..{})",
            plane.key(),
            layout.slices
        )));
    }
    let dims = volume.dims();
    let stride = [1, dims[0], dims[0] * dims[1]];
    let (u, v, flip) = plane.in_plane();
    let base = index * stride[plane.normal_axis()];
    let (su, sv) = (stride[u], stride[v]);
    let cols = axis_samples(dims[u], layout.width, false);
    let rows = axis_samples(dims[v], layout.height, flip);
    let (hu, labels) = (volume.hu(), volume.labels());
    let heat = volume.heatmap().filter(|_| heatmap);
    let colours = label_colours();
    let width = layout.width;
    let mut rgb = vec![0u8; 3 * width * layout.height];
    rgb.par_chunks_mut(3 * width)
        .enumerate()
        .for_each(|(r, line)| {
            let (v0, v1, fv) = rows.linear[r];
            let vn = rows.nearest[r];
            for (c, px) in line.chunks_exact_mut(3).enumerate() {
                let (u0, u1, fu) = cols.linear[c];
                let at = |a: usize, b: usize| base + a * su + b * sv;
                let bilinear = |f: &dyn Fn(usize) -> f32| {
                    let top = f(at(u0, v0)) * (1.0 - fu) + f(at(u1, v0)) * fu;
                    let bottom = f(at(u0, v1)) * (1.0 - fu) + f(at(u1, v1)) * fu;
                    top * (1.0 - fv) + bottom * fv
                };
                let g = window.grey(bilinear(&|i| f32::from(hu[i])));
                let mut out = [g; 3];
                if overlay && let Some(colour) = colours[labels[at(cols.nearest[c], vn)] as usize] {
                    out = mix(out, colour, LABEL_ALPHA);
                }
                if let Some(h) = heat {
                    let t = bilinear(&|i| f32::from(h[i])) / 255.0;
                    if t >= HEATMAP_THRESHOLD {
                        out = mix(out, heatmap_rgb(t), 0.35 + 0.45 * f64::from(t));
                    }
                }
                px.copy_from_slice(&out);
            }
        });
    let mut image = RgbImage {
        width,
        height: layout.height,
        rgb,
    };
    let scale = (width.max(layout.height) / 256).max(1);
    if heatmap {
        draw_lesions(&mut image, volume, &layout, index, scale);
    }
    if overlay {
        let n = plane.normal_axis();
        for vertebra in volume.vertebrae() {
            let Some(extent) = volume.label_extent(vertebra.label) else {
                continue;
            };
            if index < extent[0][n] || index > extent[1][n] {
                continue;
            }
            let (x, y) = layout.pixel_of(volume.voxel_of(vertebra.centroid_lps_mm));
            image.label(x, y, &vertebra.name, scale);
        }
    }
    Ok(image)
}

/// A cross in the lesion-class colour (black outline) at each lesion centre whose box the
/// slice crosses.
fn draw_lesions(
    image: &mut RgbImage,
    volume: &ViewerVolume,
    layout: &PlaneLayout,
    index: usize,
    scale: usize,
) {
    let n = layout.plane.normal_axis();
    let spacing = volume.geometry().spacing[n];
    let s = scale as i64;
    for lesion in volume.lesions() {
        let Some(class) = ALL_LESION_CLASSES.iter().find(|c| c.key() == lesion.class) else {
            continue;
        };
        let voxel = volume.voxel_of(lesion.centre_lps_mm);
        let half = lesion.size_mm[n] / 2.0 / spacing + 0.5;
        if (index as f64 - voxel[n]).abs() > half {
            continue;
        }
        let (cx, cy) = layout.pixel_of(voxel);
        let (x, y) = (cx.round() as i64, cy.round() as i64);
        let arm = 3 * s + 1;
        image.fill_rect(x - arm - 1, y - s - 1, 2 * arm + 3, 2 * s + 3, [0, 0, 0]);
        image.fill_rect(x - s - 1, y - arm - 1, 2 * s + 3, 2 * arm + 3, [0, 0, 0]);
        let colour = palette::lesion_rgb(*class);
        image.fill_rect(x - arm, y - s / 2, 2 * arm + 1, s.max(1), colour);
        image.fill_rect(x - s / 2, y - arm, s.max(1), 2 * arm + 1, colour);
    }
}

/// Encodes an image as 8-bit RGB PNG with fast compression.
///
/// # Errors
/// [`ViewerError::Encode`] (only for an inconsistent image).
pub fn encode_png(image: &RgbImage) -> Result<Vec<u8>, ViewerError> {
    let err = |e: png::EncodingError| ViewerError::Encode(e.to_string());
    let mut out = Vec::with_capacity(image.rgb.len() / 3);
    let mut encoder = png::Encoder::new(&mut out, image.width as u32, image.height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().map_err(err)?;
    writer.write_image_data(&image.rgb).map_err(err)?;
    writer.finish().map_err(err)?;
    Ok(out)
}

/// Renders slice `index` of `plane` as PNG: [`render_rgb`] then [`encode_png`].
///
/// # Errors
/// As [`render_rgb`] and [`encode_png`].
pub fn render_slice(
    volume: &ViewerVolume,
    plane: Plane,
    index: usize,
    window: Window,
    overlay: bool,
    heatmap: bool,
) -> Result<Vec<u8>, ViewerError> {
    encode_png(&render_rgb(volume, plane, index, window, overlay, heatmap)?)
}

/// A slice on the display grid's own voxels, unwindowed and unresampled: what a client-side
/// renderer would fetch instead of a PNG (used by the benchmark to compare the two).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSlice {
    /// Voxels along the image columns.
    pub width: usize,
    /// Voxels along the image rows.
    pub height: usize,
    /// HU, row-major in display order.
    pub hu: Vec<i16>,
    /// Labels, row-major in display order.
    pub labels: Vec<u8>,
}

impl RawSlice {
    /// The wire form: width and height (u32 little endian), HU (i16 little endian), labels.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 3 * self.hu.len());
        out.extend((self.width as u32).to_le_bytes());
        out.extend((self.height as u32).to_le_bytes());
        for v in &self.hu {
            out.extend(v.to_le_bytes());
        }
        out.extend(&self.labels);
        out
    }
}

/// Extracts slice `index` of `plane` on the display grid's voxels, in display order.
///
/// # Errors
/// [`ViewerError::Request`] when `index` is not a slice of the plane.
pub fn raw_slice(
    volume: &ViewerVolume,
    plane: Plane,
    index: usize,
) -> Result<RawSlice, ViewerError> {
    let dims = volume.dims();
    let n = plane.normal_axis();
    if index >= dims[n] {
        return Err(ViewerError::Request(format!(
            "{} slice {index} does not exist (0..{})",
            plane.key(),
            dims[n]
        )));
    }
    let stride = [1, dims[0], dims[0] * dims[1]];
    let (u, v, flip) = plane.in_plane();
    let (width, height) = (dims[u], dims[v]);
    let mut hu = Vec::with_capacity(width * height);
    let mut labels = Vec::with_capacity(width * height);
    for r in 0..height {
        let b = if flip { height - 1 - r } else { r };
        for a in 0..width {
            let i = index * stride[n] + a * stride[u] + b * stride[v];
            hu.push(volume.hu()[i]);
            labels.push(volume.labels()[i]);
        }
    }
    Ok(RawSlice {
        width,
        height,
        hu,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viewer::test_support;
    use vertebra_core::{Geometry, Volume};

    /// An 8 × 6 × 4 volume (spacing 1 × 1 × 2 mm), HU −1000, with bright markers.
    fn markers() -> ViewerVolume {
        let g = Geometry::axis_aligned([1.0, 1.0, 2.0], [0.0; 3]);
        let mut hu = Volume::filled([8, 6, 4], -1000.0f32, g).unwrap();
        // Patient left (x = 7), anterior (y = 0), superior (z = 3): a corner marker.
        let i = hu.index(7, 0, 3);
        hu.data_mut()[i] = 2000.0;
        let labels = hu.map(|_| 0u8);
        ViewerVolume::new(&hu, &labels, None, Vec::new(), Vec::new()).unwrap()
    }

    fn bright(img: &RgbImage) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for y in 0..img.height {
            for x in 0..img.width {
                if img.pixel(x, y)[0] > 128 {
                    out.push((x, y));
                }
            }
        }
        out
    }

    #[test]
    fn orientation_is_radiological() {
        let vol = markers();
        let w = Window::BONE;
        // Axial slice z = 3: 8 × 6 pixels; patient left on the image right, anterior on top.
        let axial = render_rgb(&vol, Plane::Axial, 3, w, false, false).unwrap();
        assert_eq!((axial.width, axial.height), (8, 6));
        assert_eq!(bright(&axial), vec![(7, 0)]);
        // Sagittal slice x = 7: columns P (y), rows from superior; 1 mm pixels over 6 × 8 mm.
        let sag = render_rgb(&vol, Plane::Sagittal, 7, w, false, false).unwrap();
        assert_eq!((sag.width, sag.height), (6, 8));
        let b = bright(&sag);
        assert!(b.contains(&(0, 0)), "{b:?}");
        assert!(b.iter().all(|&(x, y)| x == 0 && y <= 1), "{b:?}");
        // Coronal slice y = 0: patient left on the image right, superior on top.
        let cor = render_rgb(&vol, Plane::Coronal, 0, w, false, false).unwrap();
        assert_eq!((cor.width, cor.height), (8, 8));
        let b = bright(&cor);
        assert!(b.contains(&(7, 0)), "{b:?}");
        assert!(b.iter().all(|&(x, y)| x == 7 && y <= 1), "{b:?}");
        // Elsewhere nothing is bright.
        let other = render_rgb(&vol, Plane::Axial, 0, w, false, false).unwrap();
        assert!(bright(&other).is_empty());
    }

    #[test]
    fn pixels_are_square_in_millimetres() {
        let vol = markers();
        for plane in Plane::ALL {
            let l = PlaneLayout::of(&vol, plane);
            let (u, v, _) = plane.in_plane();
            let (su, sv) = (vol.geometry().spacing[u], vol.geometry().spacing[v]);
            let (eu, ev) = (vol.dims()[u] as f64 * su, vol.dims()[v] as f64 * sv);
            assert_eq!(l.pixel_mm, su.min(sv));
            assert!((l.width as f64 * l.pixel_mm - eu).abs() <= l.pixel_mm / 2.0);
            assert!((l.height as f64 * l.pixel_mm - ev).abs() <= l.pixel_mm / 2.0);
        }
        // The phantom: 0.7 mm in plane, 1.25 mm slices: sagittal rows are stretched 1.25/0.7.
        let p = test_support::volume();
        let l = PlaneLayout::of(p, Plane::Sagittal);
        let [_, ny, nz] = p.dims();
        let s = p.geometry().spacing;
        assert_eq!(l.width, ny);
        assert_eq!(l.height, (nz as f64 * s[2] / s[1]).round() as usize);
        assert!(l.height > nz);
    }

    #[test]
    fn large_planes_are_capped() {
        let g = Geometry::axis_aligned([0.5, 0.5, 3.0], [0.0; 3]);
        let hu = Volume::filled([4, 3000, 2], 0.0f32, g).unwrap();
        let vol = ViewerVolume::new(&hu, &hu.map(|_| 0u8), None, vec![], vec![]).unwrap();
        let l = PlaneLayout::of(&vol, Plane::Sagittal);
        assert_eq!(l.width, MAX_SIDE);
        assert_eq!(l.pixel_mm, 1500.0 / MAX_SIDE as f64);
        assert_eq!(l.height, (6.0 / l.pixel_mm).round() as usize);
    }

    #[test]
    fn window_presets_map_hu() {
        let b = Window::BONE;
        assert_eq!((b.center, b.width), (500.0, 2000.0));
        assert_eq!(b.grey(-500.0), 0);
        assert_eq!(b.grey(1500.0), 255);
        assert_eq!(b.grey(500.0), 128);
        assert_eq!(b.grey(-1000.0), 0);
        let s = Window::preset("soft").unwrap();
        assert_eq!((s.center, s.width), (40.0, 400.0));
        assert_eq!(s.grey(-160.0), 0);
        assert_eq!(s.grey(240.0), 255);
        // 40 HU: (40 + 160) / 400 · 255 = 127.5 → 128; fat (−100 HU): 60 / 400 · 255 = 38.25.
        assert_eq!(s.grey(40.0), 128);
        assert_eq!(s.grey(-100.0), 38);
        assert_eq!(Window::preset("bone").unwrap(), Window::BONE);
        assert!(Window::preset("lung").is_err());
        assert_eq!("coronal".parse::<Plane>().unwrap(), Plane::Coronal);
        assert!("oblique".parse::<Plane>().is_err());
    }

    #[test]
    fn overlay_blends_the_seg_palette_colour() {
        let vol = test_support::volume();
        let l1 = vol.vertebrae().iter().find(|v| v.name == "L1").unwrap();
        let k = vol.slice_of(Plane::Axial, l1.centroid_lps_mm);
        let plain = render_rgb(vol, Plane::Axial, k, Window::BONE, false, false).unwrap();
        let over = render_rgb(vol, Plane::Axial, k, Window::BONE, true, false).unwrap();
        let colour = palette::vertebra_rgb(Vertebra::L1);
        let layout = PlaneLayout::of(vol, Plane::Axial);
        // Every pixel whose nearest voxel is L1 and that no name covers is the palette colour
        // blended with the plain grey; count them.
        let [nx, ny, _] = vol.dims();
        let names: Vec<(f64, f64)> = vol
            .vertebrae()
            .iter()
            .map(|v| layout.pixel_of(vol.voxel_of(v.centroid_lps_mm)))
            .collect();
        let mut checked = 0;
        for y in 0..ny {
            for x in 0..nx {
                let under_a_name = names
                    .iter()
                    .any(|(cx, cy)| (x as f64 - cx).abs() < 20.0 && (y as f64 - cy).abs() < 12.0);
                if vol.labels()[k * nx * ny + y * nx + x] != Vertebra::L1.label() || under_a_name {
                    continue;
                }
                let g = plain.pixel(x, y);
                assert_eq!(g[0], g[1]);
                assert_eq!(over.pixel(x, y), mix(g, colour, LABEL_ALPHA), "({x}, {y})");
                checked += 1;
            }
        }
        assert!(checked > 100, "{checked} L1 pixels checked");
        // Background stays grey.
        assert_eq!(over.pixel(0, 0), plain.pixel(0, 0));
    }

    #[test]
    fn names_are_drawn_at_the_centroid_on_slices_crossing_the_vertebra() {
        let vol = test_support::volume();
        for plane in Plane::ALL {
            let layout = PlaneLayout::of(vol, plane);
            for v in vol.vertebrae() {
                let k = vol.slice_of(plane, v.centroid_lps_mm);
                let img = render_rgb(vol, plane, k, Window::BONE, true, false).unwrap();
                let (cx, cy) = layout.pixel_of(vol.voxel_of(v.centroid_lps_mm));
                let scale = (layout.width.max(layout.height) / 256).max(1);
                let half_w = text_width(&v.name, scale) as f64 / 2.0 + 2.0;
                let half_h = (GLYPH_HEIGHT * scale) as f64 / 2.0 + 2.0;
                let mut white = Vec::new();
                for y in 0..img.height {
                    for x in 0..img.width {
                        if img.pixel(x, y) == [255, 255, 255] {
                            white.push((x as f64, y as f64));
                        }
                    }
                }
                let near = white
                    .iter()
                    .filter(|(x, y)| (x - cx).abs() <= half_w && (y - cy).abs() <= half_h)
                    .count();
                assert!(
                    near >= 10,
                    "{} on {:?} slice {k}: {near} white pixels near ({cx:.1}, {cy:.1})",
                    v.name,
                    plane
                );
                // Without the overlay the name is not drawn.
                let off = render_rgb(vol, plane, k, Window::BONE, false, false).unwrap();
                let near_off = (0..img.height)
                    .flat_map(|y| (0..img.width).map(move |x| (x, y)))
                    .filter(|&(x, y)| {
                        off.pixel(x, y) == [255, 255, 255]
                            && (x as f64 - cx).abs() <= half_w
                            && (y as f64 - cy).abs() <= half_h
                    })
                    .count();
                assert!(near_off < near, "{} on {plane:?}", v.name);
            }
        }
    }

    #[test]
    fn names_appear_only_on_slices_crossing_the_vertebra() {
        // A 40 × 40 × 6 volume (1 mm) with an L1 label cube at z = 2..=3.
        let g = Geometry::axis_aligned([1.0; 3], [0.0; 3]);
        let hu = Volume::filled([40, 40, 6], 0.0f32, g).unwrap();
        let mut labels = hu.map(|_| 0u8);
        for z in 2..=3 {
            for y in 10..30 {
                for x in 10..30 {
                    let i = labels.index(x, y, z);
                    labels.data_mut()[i] = Vertebra::L1.label();
                }
            }
        }
        let (mut rows, _) = test_support::findings(test_support::phantom());
        rows.truncate(1);
        rows[0].name = "L1".into();
        rows[0].label = Vertebra::L1.label();
        rows[0].centroid_lps_mm = [19.5, 19.5, 2.5];
        let vol = ViewerVolume::new(&hu, &labels, None, rows, Vec::new()).unwrap();
        let white = |k: usize| {
            let img = render_rgb(&vol, Plane::Axial, k, Window::SOFT_TISSUE, true, false).unwrap();
            img.rgb
                .chunks_exact(3)
                .filter(|p| p == &[255, 255, 255])
                .count()
        };
        assert_eq!(white(1), 0);
        assert_eq!(white(4), 0);
        assert!(white(2) >= 10);
        assert_eq!(white(2), white(3));
    }

    #[test]
    fn heatmap_and_lesion_markers_are_drawn_only_when_asked() {
        let vol = test_support::volume();
        let lesion = vol.lesions().first().expect("the phantom has lesions");
        let k = vol.slice_of(Plane::Axial, lesion.centre_lps_mm);
        let off = render_rgb(vol, Plane::Axial, k, Window::BONE, false, false).unwrap();
        let on = render_rgb(vol, Plane::Axial, k, Window::BONE, false, true).unwrap();
        let layout = PlaneLayout::of(vol, Plane::Axial);
        let (cx, cy) = layout.pixel_of(vol.voxel_of(lesion.centre_lps_mm));
        let class = ALL_LESION_CLASSES
            .iter()
            .find(|c| c.key() == lesion.class)
            .unwrap();
        // The marker's centre pixel has the lesion colour.
        assert_eq!(
            on.pixel(cx.round() as usize, cy.round() as usize),
            palette::lesion_rgb(*class)
        );
        // The heatmap (255 inside the box) tints pixels away from the cross.
        let changed = (0..on.height)
            .flat_map(|y| (0..on.width).map(move |x| (x, y)))
            .filter(|&(x, y)| on.pixel(x, y) != off.pixel(x, y))
            .count();
        assert!(changed > 60, "{changed}");
        assert_eq!(heatmap_rgb(1.0), [255, 255, 255]);
        assert_eq!(heatmap_rgb(0.5), [255, 128, 0]);
        assert_eq!(heatmap_rgb(0.0), [0, 0, 0]);
    }

    #[test]
    fn png_decodes_to_the_layout_size() {
        let vol = test_support::volume();
        for plane in Plane::ALL {
            let layout = PlaneLayout::of(vol, plane);
            let k = layout.slices / 2;
            let bytes = render_slice(vol, plane, k, Window::BONE, true, true).unwrap();
            let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
            let mut reader = decoder.read_info().unwrap();
            let mut buf = vec![0; reader.output_buffer_size().unwrap()];
            let info = reader.next_frame(&mut buf).unwrap();
            assert_eq!(
                (info.width as usize, info.height as usize),
                (layout.width, layout.height)
            );
            assert_eq!(info.color_type, png::ColorType::Rgb);
            let direct = render_rgb(vol, plane, k, Window::BONE, true, true).unwrap();
            assert_eq!(&buf[..info.buffer_size()], &direct.rgb[..]);
        }
        let err = render_slice(
            vol,
            Plane::Axial,
            vol.slices(Plane::Axial),
            Window::BONE,
            true,
            false,
        )
        .unwrap_err();
        assert!(matches!(err, ViewerError::Request(_)), "{err}");
    }

    #[test]
    fn raw_slices_follow_the_display_order() {
        let vol = markers();
        let s = raw_slice(&vol, Plane::Sagittal, 7).unwrap();
        assert_eq!((s.width, s.height), (6, 4));
        // Superior first: the marker (y = 0, z = 3) is at row 0, column 0.
        assert_eq!(s.hu[0], 2000);
        assert_eq!(s.to_bytes().len(), 8 + 3 * 24);
        assert!(raw_slice(&vol, Plane::Coronal, 6).is_err());
    }
}
