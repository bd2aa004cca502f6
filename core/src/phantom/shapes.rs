//! Implicit solid primitives of the phantom: oriented frames, approximate signed distances
//! and how a primitive paints the tissue and label maps.
//!
//! Every primitive is evaluated in its own local frame and only inside its world bounding box,
//! so rasterising thousands of small primitives (processes, rib segments) costs about as much
//! as the voxels they cover. The "distances" are radial approximations of the Euclidean signed
//! distance (exact for spheres, within the aspect ratio for ellipses), which is all a cortical
//! shell of ~1 mm needs.

use super::tissue::Tissue;

/// 3-vector helpers. Kept local: the phantom is the only geometry-heavy module.
pub(crate) type V3 = [f64; 3];

pub(crate) fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

pub(crate) fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

pub(crate) fn scale(a: V3, s: f64) -> V3 {
    [a[0] * s, a[1] * s, a[2] * s]
}

pub(crate) fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(crate) fn cross(a: V3, b: V3) -> V3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub(crate) fn norm(a: V3) -> f64 {
    dot(a, a).sqrt()
}

/// `a / |a|`; the zero vector stays zero (callers never pass one for a direction).
pub(crate) fn normalize(a: V3) -> V3 {
    let n = norm(a);
    if n > 0.0 { scale(a, 1.0 / n) } else { a }
}

/// `a + t (b − a)`.
pub(crate) fn lerp(a: V3, b: V3, t: f64) -> V3 {
    add(a, scale(sub(b, a), t))
}

/// Rotates `v` about the unit axis `k` by `angle` radians (Rodrigues).
pub(crate) fn rotate(v: V3, k: V3, angle: f64) -> V3 {
    let (s, c) = angle.sin_cos();
    add(
        add(scale(v, c), scale(cross(k, v), s)),
        scale(k, dot(k, v) * (1.0 - c)),
    )
}

/// An orthonormal frame placed in LPS world space: `axes[i]` is the world direction of local
/// axis `i`. For vertebrae the axes are (left, posterior, cranial) of that vertebra.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Frame {
    pub origin: V3,
    pub axes: [V3; 3],
}

impl Frame {
    /// Local coordinates of a world point.
    #[inline]
    pub fn local(self, p: V3) -> V3 {
        let d = sub(p, self.origin);
        [
            dot(d, self.axes[0]),
            dot(d, self.axes[1]),
            dot(d, self.axes[2]),
        ]
    }

    /// World position of local coordinates.
    #[inline]
    pub fn world(self, l: V3) -> V3 {
        let mut w = self.origin;
        for i in 0..3 {
            w = add(w, scale(self.axes[i], l[i]));
        }
        w
    }

    /// A frame whose local z runs from `a` to `b` (world) and whose local y is as close as
    /// possible to `up` (world). Used for capsules: x and y are the two cross-section axes.
    pub fn along(a: V3, b: V3, up: V3) -> Frame {
        let z = normalize(sub(b, a));
        let mut y = sub(up, scale(z, dot(up, z)));
        if norm(y) < 1e-6 {
            // `up` parallel to the segment: any perpendicular will do.
            let alt = if z[0].abs() < 0.9 {
                [1.0, 0.0, 0.0]
            } else {
                [0.0, 1.0, 0.0]
            };
            y = sub(alt, scale(z, dot(alt, z)));
        }
        let y = normalize(y);
        let x = cross(y, z);
        Frame {
            origin: a,
            axes: [x, y, z],
        }
    }
}

/// Vertebral body (or disc) cross-section: a superellipse of half-axes `a` (left–right) and
/// `b` (antero-posterior) with exponent `p`, a posterior dent (`kidney`, the concave posterior
/// wall of lumbar bodies) and an anterior taper (`heart`, the heart-shaped thoracic body).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Section {
    pub a: f64,
    pub b: f64,
    pub p: f64,
    pub kidney: f64,
    pub heart: f64,
}

impl Section {
    /// Normalised radius: < 1 inside, 1 on the boundary, ≈ homogeneous of degree 1.
    #[inline]
    pub fn f(&self, u: f64, v: f64, waist: f64) -> f64 {
        let a = self.a * waist;
        let b = self.b * waist;
        // Heart: narrower towards the front (v < 0).
        let a = if v < 0.0 {
            a * (1.0 - self.heart * (-v / b).min(1.0))
        } else {
            a
        };
        let un = (u / a).abs();
        // Kidney: the posterior wall is pushed forward in the middle.
        let v = if v > 0.0 {
            v + self.kidney * b * (1.0 - un * un).max(0.0)
        } else {
            v
        };
        let vn = (v / b).abs();
        (un.powf(self.p) + vn.powf(self.p)).powf(1.0 / self.p)
    }

    /// Radial signed distance of (u, v) to the boundary (negative inside).
    #[inline]
    pub fn dist(&self, u: f64, v: f64, waist: f64) -> f64 {
        let f = self.f(u, v, waist);
        let rho = (u * u + v * v).sqrt();
        if f <= 1e-9 {
            -self.a.min(self.b)
        } else {
            rho * (1.0 - 1.0 / f)
        }
    }
}

/// How a compression fracture deforms the endplates of a body.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Deformation {
    /// Height loss fraction (0..1) at the position where the shape's loss is maximal.
    pub loss: f64,
    /// Shape of the loss over the endplate.
    pub kind: super::lesions::FractureShape,
    /// Share of the loss taken by the superior endplate (the rest by the inferior one).
    pub upper_share: f64,
}

impl Deformation {
    /// Height-loss fraction at endplate position (`s` = 0 anterior … 1 posterior wall,
    /// `r` = normalised radius 0 centre … 1 rim).
    #[inline]
    pub fn loss_at(&self, s: f64, r: f64) -> f64 {
        use super::lesions::FractureShape;
        match self.kind {
            // Full loss over the anterior 15 % of the depth, fading to none at 90 %.
            FractureShape::Wedge => self.loss * ((0.9 - s) / 0.75).clamp(0.0, 1.0),
            // Full loss in the central 30 % of the radius, none at 90 % of it.
            FractureShape::Biconcave => {
                let t = ((r - 0.3) / 0.6).clamp(0.0, 1.0);
                self.loss * (1.0 - t * t)
            }
            FractureShape::Crush => self.loss,
        }
    }
}

/// A vertebral body: [`Section`] extruded along local z between endplates at ±`half_h`,
/// with concave endplates (`concavity` mm at the centre), a waist (`waist` = relative
/// narrowing at mid-height) and an optional fracture [`Deformation`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BodyShape {
    pub section: Section,
    pub half_h: f64,
    pub concavity: f64,
    pub waist: f64,
    pub fracture: Option<Deformation>,
}

impl BodyShape {
    /// Top and bottom endplate heights at (u, v).
    #[inline]
    pub fn endplates(&self, u: f64, v: f64) -> (f64, f64) {
        let r = self.section.f(u, v, 1.0).min(1.0);
        let cup = self.concavity * (1.0 - r * r);
        let mut top = self.half_h - cup;
        let mut bottom = -self.half_h + cup;
        if let Some(d) = &self.fracture {
            let s = ((v + self.section.b) / (2.0 * self.section.b)).clamp(0.0, 1.0);
            let lost = d.loss_at(s, r) * 2.0 * self.half_h;
            top -= lost * d.upper_share;
            bottom += lost * (1.0 - d.upper_share);
        }
        (top, bottom)
    }

    #[inline]
    fn dist(&self, l: V3) -> f64 {
        let t = (l[2] / self.half_h).clamp(-1.0, 1.0);
        let waist = 1.0 - self.waist * (1.0 - t * t);
        let dxy = self.section.dist(l[0], l[1], waist);
        let (top, bottom) = self.endplates(l[0], l[1]);
        dxy.max(l[2] - top).max(bottom - l[2])
    }
}

/// An intervertebral disc: a [`Section`] cut by the two adjacent endplate planes (each given
/// by a point and its outward normal, in the disc's local frame).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DiscShape {
    pub section: Section,
    pub upper: (V3, V3),
    pub lower: (V3, V3),
    pub half_extent: f64,
}

/// The geometric part of a primitive, in its local frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Shape {
    /// Axis-aligned ellipsoid with half-axes `r`.
    Ellipsoid { r: V3 },
    /// Segment from local z = 0 to z = `len` swept by an ellipse of half-axes `rx`, `ry`, with
    /// ellipsoidal caps of half-length `min(rx, ry)`.
    Capsule { len: f64, rx: f64, ry: f64 },
    /// Vertebral body.
    Body(BodyShape),
    /// Intervertebral disc.
    Disc(DiscShape),
}

impl Shape {
    /// Approximate signed distance (mm, negative inside) at local point `l`.
    #[inline]
    pub fn dist(&self, l: V3) -> f64 {
        match self {
            Shape::Ellipsoid { r } => {
                let n =
                    ((l[0] / r[0]).powi(2) + (l[1] / r[1]).powi(2) + (l[2] / r[2]).powi(2)).sqrt();
                radial(norm(l), n, r[0].min(r[1]).min(r[2]))
            }
            Shape::Capsule { len, rx, ry } => {
                let rz = rx.min(*ry);
                let dz = l[2] - l[2].clamp(0.0, *len);
                let n = ((l[0] / rx).powi(2) + (l[1] / ry).powi(2) + (dz / rz).powi(2)).sqrt();
                radial((l[0] * l[0] + l[1] * l[1] + dz * dz).sqrt(), n, rz)
            }
            Shape::Body(b) => b.dist(l),
            Shape::Disc(d) => {
                let dxy = d.section.dist(l[0], l[1], 1.0);
                let du = dot(sub(l, d.upper.0), d.upper.1);
                let dl = dot(sub(l, d.lower.0), d.lower.1);
                dxy.max(du).max(dl)
            }
        }
    }

    /// Local bounding box `[min, max]`.
    pub fn local_bounds(&self) -> [V3; 2] {
        match self {
            Shape::Ellipsoid { r } => [scale(*r, -1.0), *r],
            Shape::Capsule { len, rx, ry } => {
                let rz = rx.min(*ry);
                [[-rx, -ry, -rz], [*rx, *ry, len + rz]]
            }
            Shape::Body(b) => {
                let (a, bb) = (b.section.a, b.section.b);
                [[-a, -bb, -b.half_h], [a, bb, b.half_h]]
            }
            Shape::Disc(d) => {
                let (a, b, h) = (d.section.a, d.section.b, d.half_extent);
                [[-a, -b, -h], [a, b, h]]
            }
        }
    }
}

/// Radial distance from the normalised radius `n` at distance `rho` from the centre.
#[inline]
fn radial(rho: f64, n: f64, rmin: f64) -> f64 {
    if n <= 1e-9 {
        -rmin
    } else {
        rho * (1.0 - 1.0 / n)
    }
}

/// What a primitive paints where it is inside.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Fill {
    /// One tissue throughout.
    Solid(Tissue),
    /// `outer` in a shell of `thickness` mm under the surface, `inner` deeper (cortex over
    /// trabecular bone, skull tables over diploë).
    Shell {
        outer: Tissue,
        inner: Tissue,
        thickness: f64,
    },
}

/// What happens to the label map.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LabelWrite {
    /// Overwrite with this label (0 for non-vertebral structures).
    Set(u8),
    /// Leave the label alone (lesions and implants inside a vertebra stay that vertebra).
    Keep,
}

/// Restricts a primitive to voxels that already hold one of `labels` (bit `l` for label `l`)
/// and one of `tissues` (bit `t` for `Tissue as u8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Only {
    pub labels: u32,
    pub tissues: u32,
}

impl Only {
    /// Bit mask of a set of tissues.
    pub fn tissue_mask(tissues: &[Tissue]) -> u32 {
        tissues.iter().fold(0, |m, t| m | (1u32 << (*t as u32)))
    }

    /// Bit mask of a set of labels.
    pub fn label_mask(labels: &[u8]) -> u32 {
        labels.iter().fold(0, |m, l| m | (1u32 << u32::from(*l)))
    }

    #[inline]
    pub fn allows(self, label: u8, tissue: u8) -> bool {
        self.labels & (1 << label) != 0 && self.tissues & (1 << tissue) != 0
    }
}

/// One solid of the scene: shape in a frame, and how it paints.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Primitive {
    pub frame: Frame,
    pub shape: Shape,
    pub fill: Fill,
    pub label: LabelWrite,
    pub only: Option<Only>,
    /// World bounding box `[min, max]`, derived from the shape and frame.
    pub bounds: [V3; 2],
}

impl Primitive {
    /// A primitive that overwrites tissue and label.
    pub fn new(frame: Frame, shape: Shape, fill: Fill, label: LabelWrite) -> Self {
        let bounds = world_bounds(&frame, &shape);
        Primitive {
            frame,
            shape,
            fill,
            label,
            only: None,
            bounds,
        }
    }

    /// Restricts painting to voxels allowed by `only`.
    pub fn only(mut self, only: Only) -> Self {
        self.only = Some(only);
        self
    }

    /// A capsule from world point `a` to `b`; `r_up` is the half-axis along the direction
    /// closest to `up`, `r_across` the other one.
    pub fn capsule(
        a: V3,
        b: V3,
        up: V3,
        r_across: f64,
        r_up: f64,
        fill: Fill,
        label: LabelWrite,
    ) -> Self {
        let frame = Frame::along(a, b, up);
        let len = norm(sub(b, a));
        Primitive::new(
            frame,
            Shape::Capsule {
                len,
                rx: r_across,
                ry: r_up,
            },
            fill,
            label,
        )
    }

    /// The tissue this primitive paints at signed distance `d` (< 0).
    #[inline]
    pub fn tissue_at(&self, d: f64) -> Tissue {
        match self.fill {
            Fill::Solid(t) => t,
            Fill::Shell {
                outer,
                inner,
                thickness,
            } => {
                if d > -thickness {
                    outer
                } else {
                    inner
                }
            }
        }
    }

    /// Whether world point `p` is inside.
    pub fn contains(&self, p: V3) -> bool {
        self.shape.dist(self.frame.local(p)) < 0.0
    }
}

/// World AABB of a shape: the 8 corners of its local box, transformed.
fn world_bounds(frame: &Frame, shape: &Shape) -> [V3; 2] {
    let [lo, hi] = shape.local_bounds();
    let mut min = [f64::INFINITY; 3];
    let mut max = [f64::NEG_INFINITY; 3];
    for c in 0..8 {
        let l = [
            if c & 1 == 0 { lo[0] } else { hi[0] },
            if c & 2 == 0 { lo[1] } else { hi[1] },
            if c & 4 == 0 { lo[2] } else { hi[2] },
        ];
        let w = frame.world(l);
        for i in 0..3 {
            min[i] = min[i].min(w[i]);
            max[i] = max[i].max(w[i]);
        }
    }
    [min, max]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_handedness() {
        let f = Frame::along([1.0, 2.0, 3.0], [4.0, -2.0, 10.0], [0.0, 0.0, 1.0]);
        let p = [5.0, 7.0, -1.0];
        let q = f.world(f.local(p));
        assert!(norm(sub(p, q)) < 1e-9);
        let c = cross(f.axes[0], f.axes[1]);
        assert!(norm(sub(c, f.axes[2])) < 1e-9);
    }

    #[test]
    fn sphere_distance_is_exact() {
        let s = Shape::Ellipsoid { r: [5.0; 3] };
        assert!((s.dist([0.0, 3.0, 4.0]) - 0.0).abs() < 1e-9);
        assert!((s.dist([0.0, 0.0, 7.0]) - 2.0).abs() < 1e-9);
        assert!((s.dist([0.0, 0.0, 1.0]) + 4.0).abs() < 1e-9);
    }

    #[test]
    fn capsule_covers_its_segment_only() {
        let p = Primitive::capsule(
            [0.0; 3],
            [10.0, 0.0, 0.0],
            [0.0, 0.0, 1.0],
            1.0,
            2.0,
            Fill::Solid(Tissue::Muscle),
            LabelWrite::Set(0),
        );
        assert!(p.contains([5.0, 0.0, 1.5]));
        assert!(!p.contains([5.0, 1.5, 0.0]));
        assert!(!p.contains([11.5, 0.0, 0.0]));
        assert!(p.bounds[0][0] <= -1.0 && p.bounds[1][0] >= 11.0);
    }

    #[test]
    fn body_fracture_lowers_the_anterior_endplate() {
        let section = Section {
            a: 20.0,
            b: 15.0,
            p: 2.5,
            kidney: 0.1,
            heart: 0.0,
        };
        let intact = BodyShape {
            section,
            half_h: 12.0,
            concavity: 0.0,
            waist: 0.0,
            fracture: None,
        };
        let wedge = BodyShape {
            fracture: Some(Deformation {
                loss: 0.5,
                kind: super::super::lesions::FractureShape::Wedge,
                upper_share: 1.0,
            }),
            ..intact
        };
        let (top, bottom) = intact.endplates(0.0, -14.0);
        let (ftop, fbottom) = wedge.endplates(0.0, -14.0);
        assert!((top - bottom - 24.0).abs() < 1e-9);
        assert!(((ftop - fbottom) / (top - bottom) - 0.5).abs() < 1e-9);
        // The posterior wall keeps its height.
        let (ptop, pbottom) = wedge.endplates(0.0, 14.0);
        assert!((ptop - pbottom - 24.0).abs() < 1e-9);
    }
}
