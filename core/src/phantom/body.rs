//! Soft tissues around the spine, painted slice by slice before the bones: air and the patient
//! table outside the body; skin outline and subcutaneous fat; muscle walls, paraspinal and
//! psoas muscles; the neck's airway and vessels; lungs, mediastinum, heart and diaphragm in the
//! thorax; liver, kidneys, great vessels and visceral fat in the abdomen and pelvis.
//!
//! Everything is a function of the continuous level coordinate at the slice's height, so the
//! body follows the spine through its curve and the thorax grows and shrinks around the right
//! vertebrae. Typical adult dimensions: thoracic cavity about 250–280 mm wide and 180–200 mm
//! deep at T8–T10, abdominal outline about 300–350 mm × 200–250 mm; scaled by the patient's
//! habitus and fat.

use super::noise::{VALUE_NOISE_SD, value_noise};
use super::shapes::{Fill, Frame, LabelWrite, Only, Primitive, Shape, V3};
use super::spine::{Column, interp};
use super::tissue::Tissue;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Thoracic (or abdominal) cavity cross-section at a level: centre and half-axes, mm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cavity {
    pub cx: f64,
    pub cy: f64,
    pub tx: f64,
    pub ty: f64,
}

/// An axis-aligned ellipsoid organ.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Organ {
    c: V3,
    r: V3,
}

impl Organ {
    #[inline]
    fn inside(&self, p: V3, grow: f64) -> bool {
        let q = |i: usize| (p[i] - self.c[i]) / (self.r[i] + grow);
        q(0) * q(0) + q(1) * q(1) + q(2) * q(2) < 1.0
    }
}

/// Per-patient soft-tissue layout.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SoftProfile {
    fat_seed: u64,
    heart: Organ,
    liver: Organ,
    kidneys: [Organ; 2],
    /// World z of the right and left diaphragm domes.
    dome_z: [f64; 2],
    /// Table top (posterior surface of the patient + gap), world y.
    pub table_y: f64,
    table_x: f64,
    /// Bowel-gas pockets (restricted to abdominal soft tissue and fat).
    pub gas: Vec<Primitive>,
}

/// Continuous level on the standard 24-level scale (S1 = 24) whatever the lumbar count.
fn std_level(col: &Column, l: f64) -> f64 {
    let n_lumbar = if col.patient.has_l6 { 6.0 } else { 5.0 };
    let l1 = 19.0;
    let s1 = l1 + n_lumbar;
    if l <= l1 {
        l
    } else if l <= s1 {
        l1 + (l - l1) * 5.0 / n_lumbar
    } else {
        24.0 + (l - s1)
    }
}

/// Inverse of [`std_level`].
fn level_of_std(col: &Column, q: f64) -> f64 {
    let n_lumbar = if col.patient.has_l6 { 6.0 } else { 5.0 };
    if q <= 19.0 {
        q
    } else if q <= 24.0 {
        19.0 + (q - 19.0) * n_lumbar / 5.0
    } else {
        19.0 + n_lumbar + (q - 24.0)
    }
}

/// World z of continuous level `l`.
fn z_of_level(col: &Column, l: f64) -> f64 {
    col.centre_at_level(l).0[2]
}

fn smoothstep(x: f64) -> f64 {
    let t = x.clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Outline and layer parameters of one slice.
struct Slice {
    z: f64,
    q: f64,
    spine: V3,
    a: f64,
    b: f64,
    cav: Cavity,
    torso: f64,
    out_c: [f64; 2],
    out_r: [f64; 2],
    fat: [f64; 3],
    erector: [f64; 4],
    psoas_r: f64,
}

impl SoftProfile {
    /// Draws the patient's organ layout. Uses only `rng` and the column.
    pub fn new(col: &Column, rng: &mut ChaCha8Rng) -> SoftProfile {
        let s = col.patient.size;
        let fat_seed: u64 = rng.random();
        let at = |q: f64| level_of_std(col, q);
        let cav_mid = Self::cavity_static(col, at(14.5));
        let heart = Organ {
            c: [
                cav_mid.cx + 20.0 * s,
                cav_mid.cy - cav_mid.ty * 0.3,
                z_of_level(col, at(14.5)),
            ],
            r: [55.0 * s, 45.0 * s, 50.0 * s],
        };
        let cav_liver = Self::cavity_static(col, at(17.5));
        let liver = Organ {
            c: [
                cav_liver.cx - cav_liver.tx * 0.45,
                cav_liver.cy - cav_liver.ty * 0.05,
                z_of_level(col, at(17.8)),
            ],
            r: [cav_liver.tx * 0.6, cav_liver.ty * 0.85, 80.0 * s],
        };
        let kidney = |side: f64, q: f64| {
            let (c, _, b) = col.centre_at_level(at(q));
            Organ {
                c: [c[0] + side * 72.0 * s, c[1] + b * 0.3, c[2]],
                r: [25.0 * s, 22.0 * s, 52.0 * s],
            }
        };
        let kidneys = [kidney(1.0, 19.3), kidney(-1.0, 19.9)];
        let dome_z = [
            z_of_level(col, at(15.6)) + rng.random_range(-8.0..8.0),
            z_of_level(col, at(16.3)) + rng.random_range(-8.0..8.0),
        ];
        // The table is flat: it touches the most posterior skin point of the whole patient.
        let mut back_max = f64::NEG_INFINITY;
        let last = (col.levels.len() - 1) as f64;
        let mut l = 0.0;
        while l <= last {
            let sl = Self::slice_static(col, z_of_level(col, l));
            back_max = back_max.max(sl.out_c[1] + sl.out_r[1]);
            l += 0.25;
        }
        let table_y = back_max + 1.0;
        let table_x =
            col.levels.iter().map(|l| l.frame.origin[0]).sum::<f64>() / col.levels.len() as f64;
        // Bowel gas in the abdomen and pelvis, in front of the psoas.
        let n_gas = rng.random_range(4..12);
        let mut gas = Vec::with_capacity(n_gas);
        for _ in 0..n_gas {
            let q = rng.random_range(19.5..26.0);
            let cav = Self::cavity_static(col, at(q));
            let c = [
                cav.cx + rng.random_range(-0.7..0.7) * cav.tx,
                cav.cy + rng.random_range(-0.8..0.1) * cav.ty,
                z_of_level(col, at(q)),
            ];
            let r = [
                rng.random_range(5.0..18.0),
                rng.random_range(5.0..14.0),
                rng.random_range(5.0..25.0),
            ];
            gas.push(
                Primitive::new(
                    Frame {
                        origin: c,
                        axes: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                    },
                    Shape::Ellipsoid { r },
                    Fill::Solid(Tissue::Air),
                    LabelWrite::Set(0),
                )
                .only(Only {
                    labels: Only::label_mask(&[0]),
                    tissues: Only::tissue_mask(&[Tissue::SoftTissue, Tissue::Fat]),
                }),
            );
        }
        SoftProfile {
            fat_seed,
            heart,
            liver,
            kidneys,
            dome_z,
            table_y,
            table_x,
            gas,
        }
    }

    /// The cavity at continuous level `l` (used for ribs and the sternum too).
    pub fn cavity_at_level(col: &Column, l: f64) -> Cavity {
        Self::cavity_static(col, l)
    }

    fn cavity_static(col: &Column, l: f64) -> Cavity {
        let (c, _, b) = col.centre_at_level(l);
        let q = std_level(col, l);
        let g = col.patient.size * col.patient.habitus.sqrt();
        let tx = interp(
            &[
                (6.5, 0.0),
                (7.0, 40.0),
                (8.0, 72.0),
                (10.0, 100.0),
                (13.0, 122.0),
                (16.0, 132.0),
                (19.0, 130.0),
                (23.0, 128.0),
                (24.5, 132.0),
                (28.0, 115.0),
            ],
            q,
        ) * g;
        let ty = interp(
            &[
                (6.5, 0.0),
                (7.0, 32.0),
                (8.0, 52.0),
                (10.0, 72.0),
                (13.0, 88.0),
                (16.0, 98.0),
                (19.0, 95.0),
                (23.0, 88.0),
                (24.5, 82.0),
                (28.0, 70.0),
            ],
            q,
        ) * g;
        // Posterior edge of the cavity relative to the body centre, in body half-depths: in
        // the thorax the lungs reach back beside the spine to the costotransverse joints.
        let back_k = interp(&[(17.0, 1.8), (20.0, 0.3), (24.0, 0.6)], q);
        Cavity {
            cx: c[0],
            cy: c[1] + back_k * b - ty,
            tx,
            ty,
        }
    }

    fn slice_static(col: &Column, z: f64) -> Slice {
        let l = col.level_at_z(z);
        let q = std_level(col, l);
        let (spine, a, b) = col.centre_at_level(l);
        let li = (l.round().max(0.0) as usize).min(col.levels.len() - 1);
        let post = &col.levels[li].post;
        let s = col.patient.size;
        let hab = col.patient.habitus;
        let fatk = col.patient.fat;
        let cav = Self::cavity_static(col, l);
        let torso = smoothstep((q - 6.0) / 2.0);
        let fat_neck = 5.0 * fatk;
        let fat = [
            interp(&[(7.0, 8.0), (18.0, 12.0), (21.0, 20.0), (25.0, 22.0)], q) * fatk,
            interp(&[(7.0, 10.0), (18.0, 12.0), (21.0, 22.0), (25.0, 20.0)], q) * fatk,
            interp(&[(7.0, 7.0), (18.0, 9.0), (21.0, 14.0), (25.0, 16.0)], q) * fatk,
        ];
        let wall = interp(&[(18.0, 12.0), (23.0, 12.0), (25.0, 22.0)], q) * s;
        let es_rx = interp(
            &[
                (0.0, 18.0),
                (6.0, 20.0),
                (8.0, 14.0),
                (14.0, 15.0),
                (18.0, 20.0),
                (21.0, 27.0),
                (24.0, 26.0),
                (27.0, 18.0),
            ],
            q,
        ) * s;
        let es_ry = interp(
            &[
                (0.0, 22.0),
                (6.0, 22.0),
                (8.0, 16.0),
                (14.0, 18.0),
                (18.0, 24.0),
                (21.0, 30.0),
                (24.0, 28.0),
                (27.0, 15.0),
            ],
            q,
        ) * s;
        let es_cx = post.canal_w / 2.0 + es_rx * 0.85;
        let es_cy = spine[1] + b + post.canal_d * 0.6 + es_ry * 0.85;
        // Neck outline.
        let n_half = 52.0 * s * hab + fat_neck;
        let n_front = spine[1] - b - 45.0 * s - fat_neck;
        let n_back = spine[1] + b + post.canal_d + 48.0 * s + fat_neck;
        // Torso outline.
        let t_half = cav.tx + wall + fat[0] * hab;
        let t_front = cav.cy - cav.ty - wall - fat[1] * hab;
        let t_back = (es_cy + es_ry + 4.0).max(cav.cy + cav.ty + wall) + fat[2] * hab;
        let half = n_half + (t_half.max(n_half) - n_half) * torso;
        let front = n_front + (t_front.min(n_front) - n_front) * torso;
        let back = n_back + (t_back.max(n_back) - n_back) * torso;
        let fat = [
            fat_neck + (fat[0] * hab - fat_neck) * torso,
            fat_neck + (fat[1] * hab - fat_neck) * torso,
            fat_neck + (fat[2] * hab - fat_neck) * torso,
        ];
        let psoas_r = interp(
            &[
                (18.6, 0.0),
                (19.0, 6.0),
                (20.0, 10.0),
                (22.0, 17.0),
                (24.0, 22.0),
                (26.0, 24.0),
            ],
            q,
        ) * s;
        Slice {
            z,
            q,
            spine,
            a,
            b,
            cav,
            torso,
            out_c: [spine[0], f64::midpoint(front, back)],
            out_r: [half, (back - front) / 2.0],
            fat,
            erector: [es_cx, es_cy, es_rx, es_ry],
            psoas_r,
        }
    }

    /// World y of the centre of the body outline at height `z` (for placing the FOV).
    pub fn outline_centre_y(col: &Column, z: f64) -> f64 {
        Self::slice_static(col, z).out_c[1]
    }

    /// Paints one axial slice at world height `z`. `xs` and `ys` are the world x of each
    /// column and world y of each row; `out` is the slice (x fastest).
    pub fn paint_slice(&self, col: &Column, z: f64, xs: &[f64], ys: &[f64], out: &mut [u8]) {
        let sl = Self::slice_static(col, z);
        let nx = xs.len();
        for (j, &y) in ys.iter().enumerate() {
            let row = &mut out[j * nx..(j + 1) * nx];
            for (i, &x) in xs.iter().enumerate() {
                row[i] = self.tissue_at(col, &sl, x, y) as u8;
            }
        }
    }

    /// Visceral/intermuscular fat texture: unit-variance smooth noise.
    #[inline]
    fn fat_noise(&self, p: V3, cell: f64) -> f64 {
        value_noise(self.fat_seed, p, cell) / VALUE_NOISE_SD
    }

    fn tissue_at(&self, col: &Column, sl: &Slice, x: f64, y: f64) -> Tissue {
        let s = col.patient.size;
        let p = [x, y, sl.z];
        // Outside the body: air and the table.
        let dx = x - sl.out_c[0];
        let dy = y - sl.out_c[1];
        let e = 2.4;
        let f = ((dx / sl.out_r[0]).abs().powf(e) + (dy / sl.out_r[1]).abs().powf(e)).powf(1.0 / e);
        if f >= 1.0 {
            let ty = y - self.table_y;
            if (x - self.table_x).abs() < 240.0 && (0.0..33.0).contains(&ty) {
                return if (3.0..30.0).contains(&ty) {
                    Tissue::Air
                } else {
                    Tissue::Table
                };
            }
            return Tissue::Air;
        }
        let rho = (dx * dx + dy * dy).sqrt();
        let depth = rho * (1.0 / f - 1.0);
        let ny = if rho > 0.0 { dy / rho } else { 0.0 };
        let fat_here = if ny < 0.0 {
            sl.fat[0] + (sl.fat[1] - sl.fat[0]) * (-ny)
        } else {
            sl.fat[0] + (sl.fat[2] - sl.fat[0]) * ny
        };
        if depth < fat_here {
            return Tissue::Fat;
        }
        let sx = x - sl.spine[0];
        let sy = y - sl.spine[1];
        // Airway: pharynx in the neck, trachea down to the carina (T4/T5).
        if (-1.0..11.5).contains(&sl.q) {
            let (ry, rx, off) = if sl.q < 5.0 {
                (7.0 * s, 11.0 * s, 12.0 * s)
            } else {
                (8.0 * s, 8.0 * s, 18.0 * s)
            };
            let ay = sy + sl.b + off + ry;
            if (sx / rx).powi(2) + (ay / ry).powi(2) < 1.0 {
                return Tissue::Air;
            }
        }
        if sl.torso < 0.5 {
            // Neck: muscle, with fat-wrapped carotid sheaths.
            if sl.q > 0.5 {
                for side in [1.0, -1.0] {
                    let vx = sx - side * 28.0 * s;
                    let vy = sy + sl.b + 8.0 * s;
                    let r2 = vx * vx + vy * vy;
                    if r2 < (4.5 * s).powi(2) {
                        return Tissue::SoftTissue;
                    }
                    if r2 < (9.0 * s).powi(2) {
                        return Tissue::Fat;
                    }
                }
            }
            return self.muscle_or_marbling(p);
        }
        // Erector spinae (paraspinal) muscles.
        let [ecx, ecy, erx, ery] = sl.erector;
        for side in [1.0, -1.0] {
            let u = (sx - side * ecx) / erx;
            let v = (y - ecy) / ery;
            if u * u + v * v < 1.0 {
                return Tissue::Muscle;
            }
        }
        let c = sl.cav;
        let cu = (x - c.cx) / c.tx.max(1e-6);
        let cv = (y - c.cy) / c.ty.max(1e-6);
        let in_cavity = c.tx > 1.0 && cu * cu + cv * cv < 1.0;
        if !in_cavity {
            return self.muscle_or_marbling(p);
        }
        // Paravertebral soft tissue sleeve round the vertebral body and the arch.
        let pu = sx / (sl.a + 7.0 * s);
        let pv = (sy - 0.5 * sl.b) / (1.5 * sl.b + 7.0 * s);
        if pu * pu + pv * pv < 1.0 {
            return Tissue::SoftTissue;
        }
        // Psoas.
        if sl.psoas_r > 0.5 {
            for side in [1.0, -1.0] {
                let u = sx - side * (sl.a + sl.psoas_r * 0.7);
                let v = sy + sl.b * 0.05;
                if u * u + v * v < sl.psoas_r * sl.psoas_r {
                    return Tissue::Muscle;
                }
            }
        }
        let side = usize::from(x > c.cx);
        let rim = cu * cu + cv * cv;
        let diaphragm = self.dome_z[side] - 55.0 * s * rim;
        if sl.q < 20.5 && sl.z > diaphragm {
            // Thorax above the diaphragm: mediastinum, heart, aorta, lungs.
            if sl.q > 9.5 {
                let ax = sx - (sl.a + 9.0 * s);
                let ay = sy + sl.b * 0.2;
                if ax * ax + ay * ay < (11.0 * s).powi(2) {
                    return Tissue::SoftTissue;
                }
            }
            if self.heart.inside(p, 0.0) {
                return Tissue::SoftTissue;
            }
            // Mediastinum: a rounded column from the front of the spine to the sternum.
            let med_half = if sl.q < 11.0 { 20.0 } else { 26.0 } * s;
            let front = c.cy - c.ty;
            let back = sl.spine[1] - sl.b * 0.5;
            let mu = (sx - 3.0 * s) / med_half;
            let mv = (y - f64::midpoint(front, back)) / ((back - front) / 2.0).max(1.0);
            if mu * mu + mv * mv < 1.0 {
                return if self.fat_noise(p, 12.0) > 0.2 {
                    Tissue::Fat
                } else {
                    Tissue::SoftTissue
                };
            }
            if self.heart.inside(p, 8.0 * s) {
                return Tissue::Fat;
            }
            return Tissue::Lung;
        }
        // Abdomen and pelvis.
        for k in &self.kidneys {
            if k.inside(p, 0.0) {
                return Tissue::SoftTissue;
            }
            if k.inside(p, 9.0 * s) {
                return Tissue::Fat;
            }
        }
        if (18.0..23.5).contains(&sl.q) {
            // Aorta (left-anterior of the bodies) in its fat sleeve; IVC on the right.
            let ax = sx - 8.0 * s;
            let ay = sy + sl.b + 13.0 * s;
            let r2 = ax * ax + ay * ay;
            if r2 < (10.0 * s).powi(2) {
                return Tissue::SoftTissue;
            }
            if r2 < (14.0 * s).powi(2) {
                return Tissue::Fat;
            }
            let ix = sx + 24.0 * s;
            let iy = sy + sl.b + 11.0 * s;
            if ix * ix + iy * iy < (11.0 * s).powi(2) {
                return Tissue::SoftTissue;
            }
        }
        if self.liver.inside(p, 0.0) {
            return Tissue::SoftTissue;
        }
        let threshold = probit(1.0 - col.patient.visceral_fat);
        let n = (self.fat_noise(p, 11.0) + 0.5 * self.fat_noise([p[1], p[2], p[0]], 4.0)) / 1.118;
        if n > threshold {
            Tissue::Fat
        } else {
            Tissue::SoftTissue
        }
    }

    /// Muscle with a little intermuscular fat.
    #[inline]
    fn muscle_or_marbling(&self, p: V3) -> Tissue {
        if self.fat_noise([p[0] + 1000.0, p[1], p[2]], 7.0) > 1.9 {
            Tissue::Fat
        } else {
            Tissue::Muscle
        }
    }
}

/// Standard-normal quantile (logistic approximation, ±0.02 in the range used here).
fn probit(p: f64) -> f64 {
    let p = p.clamp(1e-4, 1.0 - 1e-4);
    (p / (1.0 - p)).ln() / 1.702
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anatomy::Vertebra;
    use rand::SeedableRng;

    #[test]
    fn lungs_in_the_thorax_not_in_the_abdomen() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let col = super::super::spine::build_column(&mut rng, false);
        let soft = SoftProfile::new(&col, &mut rng);
        let count = |v: Vertebra, t: Tissue| {
            let c = col.level(v).unwrap().frame.origin;
            let xs: Vec<f64> = (0..160)
                .map(|i| c[0] - 200.0 + 2.5 * f64::from(i))
                .collect();
            let ys: Vec<f64> = (0..160)
                .map(|i| c[1] - 250.0 + 2.5 * f64::from(i))
                .collect();
            let mut out = vec![0u8; xs.len() * ys.len()];
            soft.paint_slice(&col, c[2], &xs, &ys, &mut out);
            out.iter()
                .map(|&x| usize::from(x == t as u8))
                .sum::<usize>()
        };
        assert!(count(Vertebra::T6, Tissue::Lung) > 2000);
        assert_eq!(count(Vertebra::L3, Tissue::Lung), 0);
        assert_eq!(count(Vertebra::C4, Tissue::Lung), 0);
        assert!(count(Vertebra::L3, Tissue::Fat) > 300);
        assert!(count(Vertebra::L3, Tissue::Muscle) > 300);
        assert!(count(Vertebra::C4, Tissue::Air) > 0);
    }
}
