//! Spinal instrumentation: bilateral pedicle screws in consecutive vertebrae, joined by a rod
//! on each side, painted as [`Tissue::Metal`]. The scanner domain adds the streaks
//! ([`super::domain::apply_appearance`]); here only the metal voxels are placed.
//!
//! Screws follow the pedicle axis from a dorsal entry point at the pedicle–lamina junction to
//! about 55 % of the body depth, as in a standard free-hand trajectory. Diameters are typical
//! implant sizes: 6.5 mm lumbar, 5.0 mm thoracic, 3.5 mm cervical (lateral-mass size); rods
//! 5.5 mm.

use super::rasterize::Fov;
use super::shapes::{Fill, Frame, LabelWrite, Primitive, Shape, V3, add, normalize, scale, sub};
use super::skeleton::{body_primitive, pedicle_axis};
use super::spine::{Column, Level};
use super::tissue::Tissue;
use crate::anatomy::{Region, Vertebra};
use serde::{Deserialize, Serialize};

/// Side of the patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Patient left (+x in LPS).
    Left,
    /// Patient right.
    Right,
}

/// One pedicle screw, for ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Screw {
    /// Instrumented vertebra.
    pub vertebra: Vertebra,
    /// Side.
    pub side: Side,
    /// Entry point (world LPS, mm).
    pub entry: [f64; 3],
    /// Tip (world LPS, mm).
    pub tip: [f64; 3],
    /// Thread diameter, mm.
    pub diameter_mm: f64,
}

/// Screws and rods for `levels` consecutive vertebrae (C3 and below) whose bodies lie in the
/// FOV, the caudal-most such block (instrumentation is commonest in the lumbar spine). Fewer
/// levels are instrumented when fewer are imaged; none when no eligible vertebra is.
pub(crate) fn instrument(col: &Column, fov: &Fov, levels: usize) -> (Vec<Primitive>, Vec<Screw>) {
    let eligible: Vec<&Level> = col
        .levels
        .iter()
        .filter(|l| {
            l.vertebra().is_some_and(|v| v >= Vertebra::C3) && {
                let b = body_primitive(l, None, 1.0).bounds;
                (0..3).all(|i| b[0][i] >= fov.min[i] && b[1][i] <= fov.max[i])
            }
        })
        .collect();
    let n = levels.min(eligible.len());
    let chosen = &eligible[eligible.len() - n..];
    let mut prims = Vec::new();
    let mut screws = Vec::new();
    let mut heads: [Vec<V3>; 2] = [Vec::new(), Vec::new()];
    let metal = Fill::Solid(Tissue::Metal);
    for level in chosen {
        let Some(v) = level.vertebra() else { continue };
        let diameter = match level.region() {
            Region::Lumbar => 6.5,
            Region::Thoracic => 5.0,
            Region::Cervical => 3.5,
        };
        for (k, side) in [(0usize, 1.0), (1, -1.0)] {
            let (p1, p0) = pedicle_axis(level, side);
            let dir_l = normalize(sub(p0, p1));
            let entry_l = add(p1, scale(dir_l, -(level.post.canal_d * 0.25)));
            let target_v = -0.55 * level.section.b;
            let t = (entry_l[1] - target_v) / (-dir_l[1]).max(0.2);
            let tip_l = add(entry_l, scale(dir_l, t));
            let entry = level.at(entry_l);
            let tip = level.at(tip_l);
            let dir = normalize(sub(tip, entry));
            prims.push(Primitive::capsule(
                entry,
                tip,
                level.frame.axes[2],
                diameter / 2.0,
                diameter / 2.0,
                metal,
                LabelWrite::Keep,
            ));
            let head = add(entry, scale(dir, -7.0));
            prims.push(Primitive::new(
                Frame {
                    origin: head,
                    axes: Frame::along(head, entry, level.frame.axes[2]).axes,
                },
                Shape::Ellipsoid { r: [5.5, 5.5, 6.5] },
                metal,
                LabelWrite::Keep,
            ));
            heads[k].push(head);
            screws.push(Screw {
                vertebra: v,
                side: if side > 0.0 { Side::Left } else { Side::Right },
                entry,
                tip,
                diameter_mm: diameter,
            });
        }
    }
    for side_heads in &heads {
        for w in side_heads.windows(2) {
            prims.push(Primitive::capsule(
                w[0],
                w[1],
                [1.0, 0.0, 0.0],
                2.75,
                2.75,
                metal,
                LabelWrite::Keep,
            ));
        }
    }
    (prims, screws)
}
