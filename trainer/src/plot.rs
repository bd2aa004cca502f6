//! PNG figures without a plotting stack: line plots (loss curves, validation metrics vs step),
//! an annotated heatmap (train domain × test domain) and image panels (CT slice in grey with
//! label and lesion-heatmap overlays).
//!
//! Everything is drawn on an RGB [`Canvas`] and written with the `png` crate; text uses a
//! built-in 5 × 7 bitmap font ([`glyph`]: digits, upper-case letters — lower case is drawn
//! upper case — and the punctuation figures need), scaled by an integer factor. No font files,
//! no system libraries: figures render identically on every machine, which is what a
//! reproducible report needs. Each function returns the pixel layout it used, so tests (and
//! callers adding annotations) can map data coordinates to pixels.

use std::path::Path;

use crate::{Error, Result};

/// An RGB colour.
pub type Rgb = [u8; 3];

/// White.
pub const WHITE: Rgb = [255, 255, 255];
/// Black.
pub const BLACK: Rgb = [0, 0, 0];
/// Light grey of grid lines.
pub const GRID: Rgb = [225, 225, 225];

/// Default series colours (the ten "tab10" hues).
pub const PALETTE: [Rgb; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// Glyph width and height of the bitmap font, in font pixels.
pub const GLYPH: (usize, usize) = (5, 7);

/// The 5 × 7 bitmap of `c` (rows top to bottom, bit 4 = leftmost column); lower-case letters
/// map to upper case, unknown characters to `?`.
pub fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        ' ' => [0; 7],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '[' => [0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E],
        ']' => [0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04],
    }
}

/// An RGB raster, row-major from the top-left corner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Pixels, `y * width + x`.
    pub pixels: Vec<Rgb>,
}

impl Canvas {
    /// A canvas filled with `background`.
    pub fn new(width: usize, height: usize, background: Rgb) -> Self {
        Canvas {
            width,
            height,
            pixels: vec![background; width * height],
        }
    }

    /// The pixel at `(x, y)`, `None` outside.
    pub fn get(&self, x: usize, y: usize) -> Option<Rgb> {
        (x < self.width && y < self.height).then(|| self.pixels[y * self.width + x])
    }

    /// Sets the pixel at `(x, y)` (ignored outside).
    pub fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            self.pixels[y as usize * self.width + x as usize] = c;
        }
    }

    /// Fills the rectangle `[x0, x1) × [y0, y1)`.
    pub fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        for y in y0..y1 {
            for x in x0..x1 {
                self.set(x, y, c);
            }
        }
    }

    /// A line of `thickness` pixels (a square brush along a Bresenham path).
    pub fn line(&mut self, a: (i64, i64), b: (i64, i64), thickness: i64, c: Rgb) {
        let (mut x, mut y) = a;
        let dx = (b.0 - a.0).abs();
        let dy = -(b.1 - a.1).abs();
        let sx = if a.0 < b.0 { 1 } else { -1 };
        let sy = if a.1 < b.1 { 1 } else { -1 };
        let mut err = dx + dy;
        let lo = -(thickness - 1) / 2;
        let hi = thickness / 2;
        loop {
            self.fill_rect(x + lo, y + lo, x + hi + 1, y + hi + 1, c);
            if (x, y) == b {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Draws `text` with its top-left corner at `(x, y)`, each font pixel `scale` pixels.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: usize, c: Rgb) {
        let s = scale.max(1) as i64;
        for (k, ch) in text.chars().enumerate() {
            let g = glyph(ch);
            let x0 = x + k as i64 * (GLYPH.0 as i64 + 1) * s;
            for (row, bits) in g.iter().enumerate() {
                for col in 0..GLYPH.0 {
                    if bits >> (GLYPH.0 - 1 - col) & 1 == 1 {
                        let px = x0 + col as i64 * s;
                        let py = y + row as i64 * s;
                        self.fill_rect(px, py, px + s, py + s, c);
                    }
                }
            }
        }
    }

    /// Pixel width of `text` at `scale`.
    pub fn text_width(text: &str, scale: usize) -> usize {
        let n = text.chars().count();
        if n == 0 {
            0
        } else {
            (n * (GLYPH.0 + 1) - 1) * scale.max(1)
        }
    }

    /// Draws `other` with its top-left corner at `(x, y)`.
    pub fn blit(&mut self, other: &Canvas, x: i64, y: i64) {
        for oy in 0..other.height {
            for ox in 0..other.width {
                self.set(
                    x + ox as i64,
                    y + oy as i64,
                    other.pixels[oy * other.width + ox],
                );
            }
        }
    }

    /// Writes the canvas as an 8-bit RGB PNG.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be created or written.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let io = |e: std::io::Error| Error::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let file = std::fs::File::create(path).map_err(io)?;
        let w = std::io::BufWriter::new(file);
        let mut enc = png::Encoder::new(w, self.width as u32, self.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let png_err = |e: png::EncodingError| io(std::io::Error::other(e.to_string()));
        let mut writer = enc.write_header().map_err(png_err)?;
        let data: Vec<u8> = self.pixels.iter().flatten().copied().collect();
        writer.write_image_data(&data).map_err(png_err)?;
        writer.finish().map_err(png_err)
    }
}

/// "Nice" tick values covering `[lo, hi]`: about `n` ticks at a step of 1, 2 or 5 × 10^k.
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    };
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).floor() as i64;
    let last = (hi / step).ceil() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// A tick label: integers without decimals, otherwise up to 4 significant digits, very large
/// or small magnitudes in exponent form.
pub fn tick_label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.1e}");
    }
    if (v - v.round()).abs() < 1e-9 * a.max(1.0) {
        return format!("{}", v.round() as i64);
    }
    let decimals = (3 - a.log10().floor() as i64).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// One series of a line plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Points `(x, y)` in drawing order; non-finite points break the line.
    pub points: Vec<(f64, f64)>,
}

/// A line plot.
#[derive(Debug, Clone, PartialEq)]
pub struct LinePlot {
    /// Title above the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Series, coloured by [`PALETTE`] in order.
    pub series: Vec<Series>,
}

/// Where a line plot was drawn: the plot area in pixels and its data ranges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlotLayout {
    /// Plot area `[left, right] × [top, bottom]` in pixels.
    pub area: (i64, i64, i64, i64),
    /// Data range along x shown by the area.
    pub x_range: (f64, f64),
    /// Data range along y.
    pub y_range: (f64, f64),
    /// Top-left corner of each legend swatch (10 × 10 pixels), in series order.
    pub legend_swatches: [(i64, i64); 10],
}

impl PlotLayout {
    /// The pixel of data point `(x, y)`.
    pub fn to_pixel(&self, x: f64, y: f64) -> (i64, i64) {
        let (l, r, t, b) = self.area;
        let fx = (x - self.x_range.0) / (self.x_range.1 - self.x_range.0);
        let fy = (y - self.y_range.0) / (self.y_range.1 - self.y_range.0);
        (
            l + (fx * (r - l) as f64).round() as i64,
            b - (fy * (b - t) as f64).round() as i64,
        )
    }
}

/// Draws a line plot of `width` × `height` pixels: axes with nice ticks and tick labels, a
/// light grid, the series (2-pixel lines, [`PALETTE`] colours), axis labels, the title and a
/// legend in the top-right corner of the plot area.
///
/// # Errors
/// No finite point; a canvas smaller than 200 × 150.
pub fn line_plot(plot: &LinePlot, width: usize, height: usize) -> Result<(Canvas, PlotLayout)> {
    if width < 200 || height < 150 {
        return Err(Error::InvalidArgument(format!(
            "a line plot needs at least 200 x 150 pixels, got {width} x {height}"
        )));
    }
    let finite: Vec<(f64, f64)> = plot
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    if finite.is_empty() {
        return Err(Error::InvalidArgument(
            "a line plot needs at least one finite point".into(),
        ));
    }
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in &finite {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let xt = nice_ticks(x0, x1, 6);
    let yt = nice_ticks(y0, y1, 5);
    let x_range = (xt[0], xt[xt.len() - 1]);
    let y_range = (yt[0], yt[yt.len() - 1]);
    let scale = 2;
    let ch = (GLYPH.1 * scale) as i64;
    let y_label_w = yt
        .iter()
        .map(|v| Canvas::text_width(&tick_label(*v), scale))
        .max()
        .unwrap_or(0) as i64;
    let left = 12 + ch + 8 + y_label_w + 8;
    let right = width as i64 - 20;
    let top = 12 + ch + 12;
    let bottom = height as i64 - (12 + ch + 8 + ch + 8);
    let mut c = Canvas::new(width, height, WHITE);
    let layout0 = PlotLayout {
        area: (left, right, top, bottom),
        x_range,
        y_range,
        legend_swatches: [(0, 0); 10],
    };
    // Grid and ticks.
    for &v in &xt {
        let (px, _) = layout0.to_pixel(v, y_range.0);
        c.line((px, top), (px, bottom), 1, GRID);
        c.line((px, bottom), (px, bottom + 5), 1, BLACK);
        let t = tick_label(v);
        let w = Canvas::text_width(&t, scale) as i64;
        c.text(px - w / 2, bottom + 8, &t, scale, BLACK);
    }
    for &v in &yt {
        let (_, py) = layout0.to_pixel(x_range.0, v);
        c.line((left, py), (right, py), 1, GRID);
        c.line((left - 5, py), (left, py), 1, BLACK);
        let t = tick_label(v);
        let w = Canvas::text_width(&t, scale) as i64;
        c.text(left - 8 - w, py - ch / 2, &t, scale, BLACK);
    }
    // Axes.
    c.line((left, top), (left, bottom), 1, BLACK);
    c.line((left, bottom), (right, bottom), 1, BLACK);
    // Labels and title.
    let xw = Canvas::text_width(&plot.x_label, scale) as i64;
    c.text(
        (left + right) / 2 - xw / 2,
        height as i64 - 12 - ch,
        &plot.x_label,
        scale,
        BLACK,
    );
    vertical_text(&mut c, 12, (top + bottom) / 2, &plot.y_label, scale);
    let tw = Canvas::text_width(&plot.title, scale) as i64;
    c.text((left + right) / 2 - tw / 2, 12, &plot.title, scale, BLACK);
    // Series.
    for (k, s) in plot.series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let mut prev: Option<(i64, i64)> = None;
        for &(x, y) in &s.points {
            if !(x.is_finite() && y.is_finite()) {
                prev = None;
                continue;
            }
            let p = layout0.to_pixel(x, y);
            match prev {
                Some(q) => c.line(q, p, 2, colour),
                None => c.fill_rect(p.0, p.1, p.0 + 2, p.1 + 2, colour),
            }
            prev = Some(p);
        }
    }
    // Legend.
    let mut swatches = [(0i64, 0i64); 10];
    let names: Vec<&str> = plot.series.iter().map(|s| s.name.as_str()).collect();
    if !names.is_empty() {
        let tw = names
            .iter()
            .map(|n| Canvas::text_width(n, scale))
            .max()
            .unwrap_or(0) as i64;
        let row = ch + 6;
        let bw = 10 + 6 + tw + 16;
        let bh = row * names.len() as i64 + 8;
        let (bx, by) = (right - bw - 6, top + 6);
        c.fill_rect(bx, by, bx + bw, by + bh, WHITE);
        c.line((bx, by), (bx + bw, by), 1, BLACK);
        c.line((bx, by + bh), (bx + bw, by + bh), 1, BLACK);
        c.line((bx, by), (bx, by + bh), 1, BLACK);
        c.line((bx + bw, by), (bx + bw, by + bh), 1, BLACK);
        for (k, n) in names.iter().enumerate() {
            let sy = by + 4 + k as i64 * row + (ch - 10) / 2;
            let sx = bx + 6;
            c.fill_rect(sx, sy, sx + 10, sy + 10, PALETTE[k % PALETTE.len()]);
            if k < swatches.len() {
                swatches[k] = (sx, sy);
            }
            c.text(sx + 16, by + 4 + k as i64 * row, n, scale, BLACK);
        }
    }
    Ok((
        c,
        PlotLayout {
            legend_swatches: swatches,
            ..layout0
        },
    ))
}

/// Text rotated by 90° (reading bottom to top), centred vertically at `cy`, left edge at `x`.
fn vertical_text(c: &mut Canvas, x: i64, cy: i64, text: &str, scale: usize) {
    let w = Canvas::text_width(text, scale);
    let h = GLYPH.1 * scale;
    let mut t = Canvas::new(w.max(1), h, WHITE);
    t.text(0, 0, text, scale, BLACK);
    for ty in 0..h {
        for tx in 0..w {
            if t.pixels[ty * t.width + tx] == BLACK {
                // (tx, ty) → (x + ty, cy + w/2 − tx).
                c.set(x + ty as i64, cy + (w / 2) as i64 - tx as i64, BLACK);
            }
        }
    }
}

/// The sequential colour map of heatmaps: a piecewise-linear ramp through dark blue
/// `(68, 1, 84)`, blue `(59, 82, 139)`, teal `(33, 145, 140)`, green `(94, 201, 98)` and
/// yellow `(253, 231, 37)` (viridis anchors at 0, ¼, ½, ¾, 1); `t` is clamped to [0, 1].
pub fn colormap(t: f64) -> Rgb {
    const ANCHORS: [Rgb; 5] = [
        [68, 1, 84],
        [59, 82, 139],
        [33, 145, 140],
        [94, 201, 98],
        [253, 231, 37],
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let f = t * 4.0;
    let i = (f.floor() as usize).min(3);
    let u = f - i as f64;
    let (a, b) = (ANCHORS[i], ANCHORS[i + 1]);
    std::array::from_fn(|k| {
        (f64::from(a[k]) + u * (f64::from(b[k]) - f64::from(a[k]))).round() as u8
    })
}

/// An annotated heatmap (rows × columns, e.g. train domain × test domain).
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    /// Title.
    pub title: String,
    /// Row labels (drawn left of the rows).
    pub row_labels: Vec<String>,
    /// Column labels (drawn above the columns).
    pub col_labels: Vec<String>,
    /// Values `[row][col]`; `None` cells are light grey and unlabelled.
    pub values: Vec<Vec<Option<f64>>>,
    /// Value mapped to the low end of [`colormap`].
    pub vmin: f64,
    /// Value mapped to the high end.
    pub vmax: f64,
}

/// Where a heatmap was drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeatmapLayout {
    /// Top-left pixel of cell (0, 0).
    pub origin: (i64, i64),
    /// Cell size in pixels.
    pub cell: i64,
}

/// Draws a heatmap with each value printed in its cell (2 decimals; black on light cells,
/// white on dark ones).
///
/// # Errors
/// Ragged values, labels that do not match the values, `vmax <= vmin`.
pub fn heatmap(h: &Heatmap, cell: usize) -> Result<(Canvas, HeatmapLayout)> {
    let rows = h.values.len();
    let cols = h.col_labels.len();
    if rows == 0
        || rows != h.row_labels.len()
        || h.values.iter().any(|r| r.len() != cols)
        || h.vmax.partial_cmp(&h.vmin) != Some(std::cmp::Ordering::Greater)
    {
        return Err(Error::InvalidArgument(format!(
            "heatmap: {rows} rows for {} row labels, {cols} columns expected in every row, \
             and vmax > vmin required",
            h.row_labels.len()
        )));
    }
    let scale = 2;
    let ch = (GLYPH.1 * scale) as i64;
    let cell = cell.max(Canvas::text_width("0.00", scale) + 8) as i64;
    let row_w = h
        .row_labels
        .iter()
        .map(|l| Canvas::text_width(l, scale))
        .max()
        .unwrap_or(0) as i64;
    let col_h = h
        .col_labels
        .iter()
        .map(|l| Canvas::text_width(l, scale))
        .max()
        .unwrap_or(0) as i64;
    let ox = 12 + row_w + 8;
    let oy = 12 + ch + 12 + col_h + 8;
    let width = (ox + cell * cols as i64 + 12) as usize;
    let height = (oy + cell * rows as i64 + 12) as usize;
    let mut c = Canvas::new(
        width.max(Canvas::text_width(&h.title, scale) + 24),
        height,
        WHITE,
    );
    c.text(12, 12, &h.title, scale, BLACK);
    for (j, l) in h.col_labels.iter().enumerate() {
        let cx = ox + j as i64 * cell + cell / 2 - ch / 2;
        vertical_text(&mut c, cx, oy - 8 - col_h / 2, l, scale);
    }
    for (i, l) in h.row_labels.iter().enumerate() {
        let w = Canvas::text_width(l, scale) as i64;
        c.text(
            ox - 8 - w,
            oy + i as i64 * cell + cell / 2 - ch / 2,
            l,
            scale,
            BLACK,
        );
    }
    for (i, row) in h.values.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            let (x0, y0) = (ox + j as i64 * cell, oy + i as i64 * cell);
            let colour = v.map_or([235, 235, 235], |v| {
                colormap((v - h.vmin) / (h.vmax - h.vmin))
            });
            c.fill_rect(x0, y0, x0 + cell, y0 + cell, colour);
            if let Some(v) = v {
                let lum = 0.299 * f64::from(colour[0])
                    + 0.587 * f64::from(colour[1])
                    + 0.114 * f64::from(colour[2]);
                let ink = if lum > 128.0 { BLACK } else { WHITE };
                let t = format!("{v:.2}");
                let w = Canvas::text_width(&t, scale) as i64;
                c.text(
                    x0 + cell / 2 - w / 2,
                    y0 + cell / 2 - ch / 2,
                    &t,
                    scale,
                    ink,
                );
            }
        }
    }
    Ok((
        c,
        HeatmapLayout {
            origin: (ox, oy),
            cell,
        },
    ))
}

/// The overlay colour of vertebra label `l` (1..=25): evenly spaced hues (golden-angle
/// steps, full saturation) so that neighbouring levels differ; black for 0.
pub fn label_colour(l: u8) -> Rgb {
    if l == 0 {
        return BLACK;
    }
    let h = (f64::from(l) * 137.508) % 360.0;
    let x = 1.0 - ((h / 60.0) % 2.0 - 1.0).abs();
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (1.0, x, 0.0),
        1 => (x, 1.0, 0.0),
        2 => (0.0, 1.0, x),
        3 => (0.0, x, 1.0),
        4 => (x, 0.0, 1.0),
        _ => (1.0, 0.0, x),
    };
    [r, g, b].map(|v: f64| (v * 255.0).round() as u8)
}

/// One image panel: a 2-D slice (row-major, top row first) with optional overlays.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePanel<'a> {
    /// Width of the slice in pixels (before scaling).
    pub width: usize,
    /// Height of the slice.
    pub height: usize,
    /// Intensities (HU for CT).
    pub image: &'a [f32],
    /// Grey window `(lo, hi)`: `lo` → black, `hi` → white.
    pub window: (f32, f32),
    /// Label map drawn in [`label_colour`] with opacity `label_alpha`.
    pub labels: Option<&'a [u8]>,
    /// Opacity of the labels, 0..=1.
    pub label_alpha: f32,
    /// Lesion heatmap in [0, 1], drawn red with opacity `heat · heat_alpha`.
    pub heat: Option<&'a [f32]>,
    /// Maximum opacity of the heatmap.
    pub heat_alpha: f32,
    /// Integer magnification.
    pub scale: usize,
}

fn mix(a: Rgb, b: Rgb, alpha: f32) -> Rgb {
    let t = alpha.clamp(0.0, 1.0);
    std::array::from_fn(|k| (f32::from(a[k]) * (1.0 - t) + f32::from(b[k]) * t).round() as u8)
}

/// The grey level of `v` in `window`: `round(255 (v − lo) / (hi − lo))`, clamped.
pub fn grey(v: f32, window: (f32, f32)) -> u8 {
    let t = ((v - window.0) / (window.1 - window.0)).clamp(0.0, 1.0);
    (t * 255.0).round() as u8
}

/// Renders an image panel: grey slice, then the label overlay, then the red heatmap overlay,
/// each pixel magnified `scale` times.
///
/// # Errors
/// Buffers whose length is not `width × height`; an empty window.
pub fn image_panel(p: &ImagePanel<'_>) -> Result<Canvas> {
    let n = p.width * p.height;
    let bad = p.image.len() != n
        || p.labels.is_some_and(|l| l.len() != n)
        || p.heat.is_some_and(|h| h.len() != n)
        || p.window.1.partial_cmp(&p.window.0) != Some(std::cmp::Ordering::Greater);
    if bad || n == 0 {
        return Err(Error::InvalidArgument(format!(
            "image panel: every buffer must have {} x {} values and the window must be \
             increasing",
            p.width, p.height
        )));
    }
    let s = p.scale.max(1);
    let mut c = Canvas::new(p.width * s, p.height * s, BLACK);
    for y in 0..p.height {
        for x in 0..p.width {
            let i = y * p.width + x;
            let g = grey(p.image[i], p.window);
            let mut col = [g, g, g];
            if let Some(l) = p.labels
                && l[i] != 0
            {
                col = mix(col, label_colour(l[i]), p.label_alpha);
            }
            if let Some(h) = p.heat {
                col = mix(col, [255, 0, 0], h[i].clamp(0.0, 1.0) * p.heat_alpha);
            }
            c.fill_rect(
                (x * s) as i64,
                (y * s) as i64,
                ((x + 1) * s) as i64,
                ((y + 1) * s) as i64,
                col,
            );
        }
    }
    Ok(c)
}

/// Panels side by side with a title above each (the qualitative figure: CT, ground truth,
/// prediction, lesion heatmap), 10 pixels apart on white.
pub fn panel_row(panels: &[(String, Canvas)]) -> Canvas {
    let scale = 2;
    let ch = GLYPH.1 * scale;
    let gap = 10;
    let width = panels.iter().map(|p| p.1.width).sum::<usize>() + gap * (panels.len() + 1);
    let height = panels.iter().map(|p| p.1.height).max().unwrap_or(0) + ch + 3 * gap;
    let mut c = Canvas::new(width, height, WHITE);
    let mut x = gap;
    for (title, p) in panels {
        c.text(x as i64, gap as i64, title, scale, BLACK);
        c.blit(p, x as i64, (2 * gap + ch) as i64);
        x += p.width + gap;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a PNG file: (width, height, RGB bytes).
    fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
        let f = std::io::BufReader::new(std::fs::File::open(path).unwrap());
        let mut r = png::Decoder::new(f).read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn px(rgb: &[u8], width: u32, x: i64, y: i64) -> Rgb {
        let i = (y as usize * width as usize + x as usize) * 3;
        [rgb[i], rgb[i + 1], rgb[i + 2]]
    }

    #[test]
    fn glyphs_render_at_scale() {
        let mut c = Canvas::new(12, 14, WHITE);
        c.text(0, 0, "1", 2, BLACK);
        // "1" row 0 is 0x04: only column 2 → pixels x 4..6 of rows 0..2.
        assert_eq!(c.get(4, 0), Some(BLACK));
        assert_eq!(c.get(5, 1), Some(BLACK));
        assert_eq!(c.get(2, 0), Some(WHITE));
        // Row 6 is 0x0E: columns 1..=3 → x 2..8 at y 12..14.
        assert_eq!(c.get(2, 12), Some(BLACK));
        assert_eq!(c.get(7, 13), Some(BLACK));
        assert_eq!(c.get(8, 13), Some(WHITE));
        assert_eq!(Canvas::text_width("ab", 1), 11);
        assert_eq!(glyph('a'), glyph('A'));
        assert_eq!(glyph('~'), glyph('?'));
    }

    #[test]
    fn ticks_and_labels() {
        assert_eq!(
            nice_ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 3.0 * 0.2, 0.8, 1.0]
        );
        assert_eq!(
            nice_ticks(3.0, 97.0, 5),
            vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        );
        assert_eq!(tick_label(20.0), "20");
        assert_eq!(tick_label(3.0 * 0.2), "0.6");
        assert_eq!(tick_label(0.125), "0.125");
        assert_eq!(tick_label(2.5e-5), "2.5e-5");
    }

    #[test]
    fn line_plot_png_has_series_and_legend_where_the_layout_says() {
        let plot = LinePlot {
            title: "Loss".into(),
            x_label: "step".into(),
            y_label: "loss".into(),
            series: vec![
                Series {
                    name: "train".into(),
                    points: (0..=10).map(|i| (f64::from(i) * 10.0, 1.0)).collect(),
                },
                Series {
                    name: "validation".into(),
                    points: vec![(0.0, 0.2), (100.0, 0.2)],
                },
            ],
        };
        let (c, layout) = line_plot(&plot, 640, 400).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.png");
        c.save_png(&path).unwrap();
        let (w, h, rgb) = decode(&path);
        assert_eq!((w, h), (640, 400));
        assert_eq!(layout.x_range, (0.0, 100.0));
        assert_eq!(layout.y_range, (0.2, 1.0));
        // Series 1 (y = 1, the top of the range) at x = 30 and series 2 at x = 50 (left of the
        // legend box).
        let (x, y) = layout.to_pixel(30.0, 1.0);
        assert_eq!(px(&rgb, w, x, y), PALETTE[0]);
        let (x, y) = layout.to_pixel(50.0, 0.2);
        assert_eq!(px(&rgb, w, x, y), PALETTE[1]);
        assert_eq!(
            px(&rgb, w, x, y + 1),
            PALETTE[1],
            "the 2-pixel brush covers y..=y+1"
        );
        // Legend swatches.
        for k in 0..2 {
            let (sx, sy) = layout.legend_swatches[k];
            assert_eq!(px(&rgb, w, sx + 5, sy + 5), PALETTE[k]);
        }
        // Axis line at the left edge of the area and white background far outside.
        let (l, _, t, b) = layout.area;
        assert_eq!(px(&rgb, w, l, (t + b) / 2), BLACK);
        assert_eq!(px(&rgb, w, 639, 0), WHITE);
        // Tick label "0" under the x axis: some black pixel in its box.
        let (x0, _) = layout.to_pixel(0.0, 0.2);
        let found =
            (b + 8..b + 8 + 14).any(|yy| (x0 - 6..x0 + 6).any(|xx| px(&rgb, w, xx, yy) == BLACK));
        assert!(found, "tick label below x = 0");
    }

    #[test]
    fn heatmap_cells_have_the_colormap_colour() {
        assert_eq!(colormap(0.0), [68, 1, 84]);
        assert_eq!(colormap(1.0), [253, 231, 37]);
        // Halfway between the 2nd and 3rd anchors: t = 0.375.
        assert_eq!(colormap(0.375), [46, 114, 140]);
        let h = Heatmap {
            title: "Dice train x test".into(),
            row_labels: vec!["a".into(), "b".into()],
            col_labels: vec!["a".into(), "b".into(), "c".into()],
            values: vec![
                vec![Some(0.9), Some(0.5), Some(0.1)],
                vec![Some(0.7), None, Some(1.0)],
            ],
            vmin: 0.0,
            vmax: 1.0,
        };
        let (c, l) = heatmap(&h, 60).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heat.png");
        c.save_png(&path).unwrap();
        let (w, hh, rgb) = decode(&path);
        assert_eq!((w as usize, hh as usize), (c.width, c.height));
        let corner = |r: i64, col: i64| {
            px(
                &rgb,
                w,
                l.origin.0 + col * l.cell + 2,
                l.origin.1 + r * l.cell + 2,
            )
        };
        assert_eq!(corner(0, 0), colormap(0.9));
        assert_eq!(corner(0, 2), colormap(0.1));
        assert_eq!(corner(1, 1), [235, 235, 235]);
        // The value is printed: dark ink on the light (0.9) cell near its centre.
        let (cx, cy) = (l.origin.0 + l.cell / 2, l.origin.1 + l.cell / 2);
        let ink = (cy - 7..cy + 7).any(|y| (cx - 20..cx + 20).any(|x| px(&rgb, w, x, y) == BLACK));
        assert!(ink);
        assert!(heatmap(&Heatmap { vmax: 0.0, ..h }, 60).is_err());
    }

    #[test]
    fn image_panel_blends_labels_and_heat() {
        // 2 × 1 slice: HU 0 (grey 128) with label 1 at alpha 0.5; HU 1000 (white) with heat
        // 0.5 at max opacity 0.8 → red at 0.4.
        let img = [0.0f32, 1000.0];
        let labels = [1u8, 0];
        let heat = [0.0f32, 0.5];
        let p = ImagePanel {
            width: 2,
            height: 1,
            image: &img,
            window: (-1000.0, 1000.0),
            labels: Some(&labels),
            label_alpha: 0.5,
            heat: Some(&heat),
            heat_alpha: 0.8,
            scale: 3,
        };
        let c = image_panel(&p).unwrap();
        assert_eq!((c.width, c.height), (6, 3));
        assert_eq!(grey(0.0, (-1000.0, 1000.0)), 128);
        let lc = label_colour(1);
        let want: Rgb =
            std::array::from_fn(|k| f32::midpoint(128.0, f32::from(lc[k])).round() as u8);
        assert_eq!(c.get(0, 0), Some(want));
        assert_eq!(c.get(2, 2), Some(want));
        // 255 · 0.6 + 255 · 0.4 = 255 for red; 255 · 0.6 = 153 for green and blue.
        assert_eq!(c.get(3, 0), Some([255, 153, 153]));
        let row = panel_row(&[("CT".into(), c.clone()), ("GT".into(), c)]);
        assert_eq!(row.width, 6 + 6 + 30);
        assert!(image_panel(&ImagePanel { width: 3, ..p }).is_err());
    }
}
