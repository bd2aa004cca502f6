//! The fixed display palette of our segments, as Recommended Display CIELab Values.
//!
//! Colours are chosen in sRGB (listed in `docs/reports.md`) so that neighbouring vertebrae
//! always contrast (alternating light and dark shades) and the region reads from the hue:
//! cervical blues, thoracic greens, lumbar oranges and browns. Lesion classes use saturated
//! colours absent from the vertebra palette.
//!
//! DICOM stores CIELab scaled to 16 bits (PS3.3 C.10.7.1.1): L* 0..100 → 0..65535, a* and b*
//! −128..127 → 0..65535. The sRGB → CIE XYZ (D65 white) → CIELab conversion follows the
//! formulas of David Clunie's PixelMed `ColorUtilities` (also used by highdicom), so a viewer
//! converting back shows the sRGB colour listed here.

use vertebra_core::anatomy::{LesionClass, Vertebra};

/// sRGB colour of each vertebra label 1..=25 (index = label − 1).
pub const VERTEBRA_RGB: [[u8; 3]; 25] = [
    [31, 119, 180],  // C1
    [174, 199, 232], // C2
    [23, 190, 207],  // C3
    [158, 218, 229], // C4
    [57, 59, 121],   // C5
    [107, 110, 207], // C6
    [156, 158, 222], // C7
    [44, 160, 44],   // T1
    [152, 223, 138], // T2
    [0, 109, 44],    // T3
    [116, 196, 118], // T4
    [49, 130, 84],   // T5
    [199, 233, 192], // T6
    [99, 121, 57],   // T7
    [181, 207, 107], // T8
    [140, 162, 82],  // T9
    [206, 219, 156], // T10
    [26, 152, 80],   // T11
    [166, 219, 160], // T12
    [255, 127, 14],  // L1
    [255, 187, 120], // L2
    [214, 39, 40],   // L3
    [255, 152, 150], // L4
    [140, 86, 75],   // L5
    [196, 156, 148], // L6
];

/// sRGB colour of each lesion class, in channel order (fracture, lytic, sclerotic,
/// infection/erosion).
pub const LESION_RGB: [[u8; 3]; 4] = [[255, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 0]];

/// sRGB colour of a vertebra.
pub fn vertebra_rgb(v: Vertebra) -> [u8; 3] {
    VERTEBRA_RGB[v.ordinal()]
}

/// sRGB colour of a lesion class.
pub fn lesion_rgb(c: LesionClass) -> [u8; 3] {
    LESION_RGB[c.index()]
}

/// The 16-bit DICOM CIELab encoding of an sRGB colour (Recommended Display CIELab Value).
pub fn rgb_to_dicom_lab(rgb: [u8; 3]) -> [u16; 3] {
    let lin = |c: u8| {
        let c = f64::from(c) / 255.0;
        100.0
            * if c > 0.04045 {
                ((c + 0.055) / 1.055).powf(2.4)
            } else {
                c / 12.92
            }
    };
    let (r, g, b) = (lin(rgb[0]), lin(rgb[1]), lin(rgb[2]));
    let x = r * 0.4124 + g * 0.3576 + b * 0.1805;
    let y = r * 0.2126 + g * 0.7152 + b * 0.0722;
    let z = r * 0.0193 + g * 0.1192 + b * 0.9505;
    let f = |t: f64| {
        if t >= 8.856_451_679_035_63e-3 {
            t.cbrt()
        } else {
            (841.0 / 108.0) * t + 4.0 / 29.0
        }
    };
    let (fx, fy, fz) = (f(x / 95.047), f(y / 100.0), f(z / 108.883));
    let l = 116.0 * fy - 16.0;
    let a = 500.0 * (fx - fy);
    let bb = 200.0 * (fy - fz);
    let scale = |v: f64, lo: f64, range: f64| {
        ((v - lo) * 65535.0 / range).round().clamp(0.0, 65535.0) as u16
    };
    [
        scale(l, 0.0, 100.0),
        scale(a, -128.0, 255.0),
        scale(bb, -128.0, 255.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn white_black_and_primaries_encode_like_the_standard_scale() {
        // White: L* = 100, a* = b* = 0 → (65535, 32896, 32896) (0 maps to 128 * 65535 / 255), up
        // to the 4-digit rounding of the sRGB matrix (|b*| < 0.02).
        let w = rgb_to_dicom_lab([255, 255, 255]);
        assert_eq!(w[0], 65535);
        assert!(
            (i32::from(w[1]) - 32896).abs() <= 5 && (i32::from(w[2]) - 32896).abs() <= 5,
            "{w:?}"
        );
        assert_eq!(rgb_to_dicom_lab([0, 0, 0]), [0, 32896, 32896]);
        // sRGB red is L* 53.24, a* 80.09, b* 67.20 (CIE, D65).
        let r = rgb_to_dicom_lab([255, 0, 0]);
        let l = f64::from(r[0]) * 100.0 / 65535.0;
        let a = f64::from(r[1]) * 255.0 / 65535.0 - 128.0;
        let b = f64::from(r[2]) * 255.0 / 65535.0 - 128.0;
        assert!(
            (l - 53.24).abs() < 0.05 && (a - 80.09).abs() < 0.1 && (b - 67.20).abs() < 0.1,
            "{l} {a} {b}"
        );
    }

    #[test]
    fn neighbouring_vertebrae_have_distinct_colours() {
        for w in VERTEBRA_RGB.windows(2) {
            let d: i32 = (0..3)
                .map(|i| (i32::from(w[0][i]) - i32::from(w[1][i])).abs())
                .sum();
            assert!(d > 60, "{:?} vs {:?}", w[0], w[1]);
        }
    }
}
