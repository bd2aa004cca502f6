//! Bones of the phantom as implicit primitives: vertebrae (body, pedicles, laminae, spinous
//! and transverse processes, articular processes; the C1 ring and the C2 dens), discs, the
//! spinal canal with its contents, ribs and sternum, skull base and mandible, sacrum and
//! ilia.
//!
//! Coordinates are given in each vertebra's local frame (u left, v posterior, w cranial, mm,
//! origin at the body centre), so every part follows the curve, rotation and size of its
//! vertebra. Only vertebral bone carries a vertebra label; ribs, skull, sacrum and pelvis are
//! label 0 (as in VerSe masks, where they are not vertebrae).

use std::collections::HashMap;

use super::body::SoftProfile;
use super::shapes::{
    BodyShape, Deformation, DiscShape, Fill, Frame, LabelWrite, Primitive, Shape, V3, add, lerp,
    normalize, scale, sub,
};
use super::spine::{Column, Level, LevelKind};
use super::tissue::Tissue;
use crate::anatomy::{Region, Vertebra};

/// Cortical bone over trabecular bone, `t` mm thick.
pub(crate) fn bone(t: f64) -> Fill {
    Fill::Shell {
        outer: Tissue::CorticalBone,
        inner: Tissue::TrabecularBone,
        thickness: t,
    }
}

/// The body of a level, optionally deformed by a compression fracture.
pub(crate) fn body_primitive(
    level: &Level,
    fracture: Option<Deformation>,
    cortex: f64,
) -> Primitive {
    Primitive::new(
        level.frame,
        Shape::Body(BodyShape {
            section: level.section,
            half_h: level.height / 2.0,
            concavity: level.concavity,
            waist: 0.05,
            fracture,
        }),
        bone(cortex),
        LabelWrite::Set(level.label()),
    )
}

/// The disc between `upper` and `lower`: bounded by their facing endplate planes, moved
/// `into_upper` / `into_lower` mm into the bodies so that concave or collapsed endplates are
/// filled with disc (the bodies are painted afterwards and win wherever they are bone).
pub(crate) fn disc_primitive(
    upper: &Level,
    lower: &Level,
    into_upper: f64,
    into_lower: f64,
    fill: Fill,
    label: LabelWrite,
) -> Primitive {
    let uz = upper.frame.axes[2];
    let lz = lower.frame.axes[2];
    let top = add(
        upper.frame.origin,
        scale(uz, -(upper.height / 2.0 - into_upper)),
    );
    let bottom = add(
        lower.frame.origin,
        scale(lz, lower.height / 2.0 - into_lower),
    );
    let centre = lerp(top, bottom, 0.5);
    let ez = normalize(add(uz, lz));
    let ey0 = add(upper.frame.axes[1], lower.frame.axes[1]);
    let ey = normalize(sub(ey0, scale(ez, super::shapes::dot(ey0, ez))));
    let frame = Frame {
        origin: centre,
        axes: [super::shapes::cross(ey, ez), ey, ez],
    };
    // The endplate planes in the disc's local frame (point, outward normal).
    let local_dir = |d: V3| {
        [
            super::shapes::dot(d, frame.axes[0]),
            super::shapes::dot(d, frame.axes[1]),
            super::shapes::dot(d, frame.axes[2]),
        ]
    };
    let upper_plane = (frame.local(top), local_dir(uz));
    let lower_plane = (frame.local(bottom), scale(local_dir(lz), -1.0));
    let section = super::shapes::Section {
        a: f64::midpoint(upper.section.a, lower.section.a) * 1.02,
        b: f64::midpoint(upper.section.b, lower.section.b) * 1.02,
        p: f64::midpoint(upper.section.p, lower.section.p),
        kidney: f64::midpoint(upper.section.kidney, lower.section.kidney),
        heart: f64::midpoint(upper.section.heart, lower.section.heart),
    };
    let gap = super::shapes::norm(sub(top, bottom));
    let half_extent = gap / 2.0 + section.a.max(section.b) * 0.5 + 2.0;
    Primitive::new(
        frame,
        Shape::Disc(DiscShape {
            section,
            upper: upper_plane,
            lower: lower_plane,
            half_extent,
        }),
        fill,
        label,
    )
}

/// Pedicle geometry of a level in local coordinates: (posterior end = pedicle–lamina
/// junction, anterior end inside the body, height of the pedicle axis). `side` is +1 left,
/// −1 right.
pub(crate) fn pedicle_axis(level: &Level, side: f64) -> (V3, V3) {
    let p = &level.post;
    let a = level.section.a;
    let wall = level.posterior_wall();
    let vcc = level.canal_centre_v();
    let w = pedicle_height(level);
    let u1 = p.canal_w / 2.0 + p.pedicle_w * 0.45;
    let v1 = vcc - p.canal_d * 0.1;
    let v0 = wall - p.pedicle_w.max(4.0);
    let u0 = (u1 - p.pedicle_angle.to_radians().tan() * (v1 - v0)).clamp(
        p.pedicle_w / 2.0 + 0.5,
        (a - p.pedicle_w / 2.0).max(p.pedicle_w / 2.0 + 0.5),
    );
    ([side * u1, v1, w], [side * u0, v0, w])
}

/// Height (local w) of the pedicles: upper part of the body, except in the neck.
fn pedicle_height(level: &Level) -> f64 {
    match level.region() {
        Region::Cervical => 0.0,
        Region::Thoracic | Region::Lumbar => level.height * 0.12,
    }
}

/// Options of the skeleton build.
pub(crate) struct SkeletonOptions<'a> {
    /// Compression fractures by vertebra.
    pub fractures: &'a HashMap<Vertebra, Deformation>,
    /// Cortical shell thickness of vertebrae, mm.
    pub cortex: f64,
}

/// Every bone primitive of the column and its surroundings, in painting order (label-0 bones
/// first, vertebrae after them so that a vertebra wins where a rib head or the sacral ala
/// touches it), followed by the canal contents that carve the canal free.
pub(crate) fn skeleton(col: &Column, opt: &SkeletonOptions) -> Vec<Primitive> {
    let mut out = Vec::new();
    let s = col.patient.size;
    let levels = &col.levels;

    // Discs between consecutive levels (none between C1 and C2, none in the fused sacrum).
    for w in levels.windows(2) {
        let (up, lo) = (&w[0], &w[1]);
        let both_free = up.disc_below > 0.0 && up.kind != LevelKind::Vertebra(Vertebra::C1);
        if !both_free {
            continue;
        }
        let deep = |l: &Level| match l.vertebra().and_then(|v| opt.fractures.get(&v)) {
            Some(_) => l.height / 2.0,
            None => l.concavity + 1.0,
        };
        out.push(disc_primitive(
            up,
            lo,
            deep(up),
            deep(lo),
            Fill::Solid(Tissue::Disc),
            LabelWrite::Set(0),
        ));
    }

    // Label-0 bones.
    ribs_and_sternum(col, &mut out);
    skull_and_mandible(col, &mut out);
    sacrum_and_pelvis(col, &mut out, opt.cortex);

    // Vertebrae, cranial to caudal.
    for level in levels {
        match level.kind {
            LevelKind::Vertebra(Vertebra::C1) => atlas(level, s, opt.cortex, &mut out),
            LevelKind::Vertebra(v) => {
                let fracture = opt.fractures.get(&v).copied();
                out.push(body_primitive(level, fracture, opt.cortex));
                if v == Vertebra::C2 {
                    let base = level.at([0.0, -s, level.height / 2.0 - 3.0]);
                    let tip = level.at([0.0, -s, level.height / 2.0 + 14.0 * s]);
                    out.push(Primitive::capsule(
                        base,
                        tip,
                        level.frame.axes[0],
                        5.0 * s,
                        5.0 * s,
                        bone(opt.cortex),
                        LabelWrite::Set(level.label()),
                    ));
                }
                posterior_elements(col, level, opt.cortex, &mut out);
            }
            LevelKind::Sacral(_) => {}
        }
    }

    canal(col, &mut out);
    out
}

/// Pedicles, laminae, spinous, transverse and articular processes of a C2–L6 vertebra.
fn posterior_elements(col: &Column, level: &Level, cortex: f64, out: &mut Vec<Primitive>) {
    let s = col.patient.size;
    let p = &level.post;
    let label = LabelWrite::Set(level.label());
    let fill = bone(cortex);
    let ez = level.frame.axes[2];
    let ex = level.frame.axes[0];
    let region = level.region();
    let h = level.height;
    let vcc = level.canal_centre_v();
    let wp = pedicle_height(level);
    let lamina_t = match region {
        Region::Cervical => 3.5,
        Region::Thoracic => 5.0,
        Region::Lumbar => 6.0,
    } * s;
    let lamina_h = match region {
        Region::Cervical => 0.45,
        Region::Thoracic => 0.55,
        Region::Lumbar => 0.5,
    } * h;
    let idx = col
        .levels
        .iter()
        .position(|l| l.kind == level.kind)
        .unwrap_or(0);
    let disc_above = if idx > 0 {
        col.levels[idx - 1].disc_below.max(3.0)
    } else {
        3.0
    };
    let disc_below = level.disc_below.max(3.0);
    let lamina_mid = [
        0.0,
        vcc + p.canal_d / 2.0 + lamina_t / 2.0 + 0.5,
        wp - h * 0.12,
    ];

    for side in [1.0, -1.0] {
        let (p1, p0) = pedicle_axis(level, side);
        // Pedicle.
        out.push(Primitive::capsule(
            level.at(p0),
            level.at(p1),
            ez,
            p.pedicle_w / 2.0,
            p.pedicle_h / 2.0,
            fill,
            label,
        ));
        // Lamina, from the pedicle–lamina junction to the midline.
        let l0 = [p1[0], p1[1] + p.canal_d * 0.1, wp - p.pedicle_h * 0.1];
        out.push(Primitive::capsule(
            level.at(l0),
            level.at(lamina_mid),
            ez,
            lamina_t / 2.0,
            lamina_h / 2.0,
            fill,
            label,
        ));
        // Transverse process.
        match region {
            Region::Cervical => {
                // Anterior and posterior bars around the foramen transversarium.
                let tip = [side * p.tp_half_span, p1[1] * 0.25, wp - 1.0];
                out.push(Primitive::capsule(
                    level.at([side * level.section.a * 0.85, -level.section.b * 0.15, wp]),
                    level.at(tip),
                    ez,
                    2.0 * s,
                    2.8 * s,
                    fill,
                    label,
                ));
                out.push(Primitive::capsule(
                    level.at(p1),
                    level.at(tip),
                    ez,
                    2.2 * s,
                    3.0 * s,
                    fill,
                    label,
                ));
            }
            Region::Thoracic => {
                let tip = [side * p.tp_half_span, p1[1] + 8.0 * s, wp + 1.0];
                out.push(Primitive::capsule(
                    level.at([p1[0], p1[1] + 2.0, wp]),
                    level.at(tip),
                    ez,
                    4.0 * s,
                    4.5 * s,
                    fill,
                    label,
                ));
            }
            Region::Lumbar => {
                let tip = [side * p.tp_half_span, p1[1] + 2.0 * s, wp - 1.0];
                out.push(Primitive::capsule(
                    level.at(p1),
                    level.at(tip),
                    ez,
                    3.0 * s,
                    5.0 * s,
                    fill,
                    label,
                ));
            }
        }
        // Articular processes: superior ones reach up past the disc above, inferior ones down
        // past the disc below; the offset between them leaves a joint space of ~1.2 mm with
        // the neighbour's facing process (sagittal joints in the lumbar spine, coronal in the
        // thoracic, oblique pillars in the neck).
        let rf = match region {
            Region::Cervical => 3.5,
            Region::Thoracic => 3.2,
            Region::Lumbar => 4.2,
        } * s;
        let d = rf + 0.6;
        let base = [p1[0], p1[1] + p.canal_d * 0.12, wp];
        let (sup_off, inf_off) = match region {
            Region::Lumbar => ([side * d, -0.3 * d, 0.0], [-side * d, 0.3 * d, 0.0]),
            Region::Thoracic | Region::Cervical => ([0.0, -d, 0.0], [0.0, d, 0.0]),
        };
        let sb = add(base, sup_off);
        let st = add(sb, [0.0, 0.0, h / 2.0 - wp + disc_above + 4.0]);
        out.push(Primitive::capsule(
            level.at(sb),
            level.at(st),
            ex,
            rf,
            rf,
            fill,
            label,
        ));
        let ib = add(base, inf_off);
        let it = add(ib, [0.0, 0.0, -(h / 2.0 + wp + disc_below + 4.0)]);
        out.push(Primitive::capsule(
            level.at(ib),
            level.at(it),
            ex,
            rf,
            rf,
            fill,
            label,
        ));
    }

    // Spinous process.
    let incl = p.sp_incl.to_radians();
    let dir = [0.0, incl.cos(), -incl.sin()];
    let (sp_across, sp_up) = match region {
        Region::Cervical => (2.2 * s, 3.5 * s),
        Region::Thoracic => (2.5 * s, 4.5 * s),
        Region::Lumbar => (3.0 * s, 8.0 * s),
    };
    let v = level.vertebra();
    let bifid = matches!(
        v,
        Some(Vertebra::C2 | Vertebra::C3 | Vertebra::C4 | Vertebra::C5 | Vertebra::C6)
    );
    let tip = add(lamina_mid, scale(dir, p.sp_len));
    if bifid {
        let fork = add(lamina_mid, scale(dir, p.sp_len * 0.65));
        out.push(Primitive::capsule(
            level.at(lamina_mid),
            level.at(fork),
            ez,
            sp_across,
            sp_up,
            fill,
            label,
        ));
        for side in [1.0, -1.0] {
            out.push(Primitive::capsule(
                level.at(fork),
                level.at(add(tip, [side * 4.0 * s, 0.0, 0.0])),
                ez,
                sp_across * 0.9,
                sp_up * 0.9,
                fill,
                label,
            ));
        }
    } else {
        out.push(Primitive::capsule(
            level.at(lamina_mid),
            level.at(tip),
            ez,
            sp_across,
            sp_up,
            fill,
            label,
        ));
    }
}

/// C1: anterior arch, lateral masses, posterior arch and transverse processes around the dens
/// axis (the local origin), with the foramina transversaria left open.
fn atlas(level: &Level, s: f64, cortex: f64, out: &mut Vec<Primitive>) {
    let label = LabelWrite::Set(level.label());
    let fill = bone(cortex);
    let ez = level.frame.axes[2];
    let arc = |cu: f64, cv: f64, ru: f64, rv: f64, from: f64, to: f64, n: usize| -> Vec<V3> {
        (0..=n)
            .map(|k| {
                let t = (from + (to - from) * k as f64 / n as f64).to_radians();
                level.at([cu + ru * t.cos(), cv + rv * t.sin(), 0.0])
            })
            .collect()
    };
    // Anterior arch in front of the dens (dens axis at v = −1, radius 5).
    let front = arc(0.0, -s, 12.0 * s, 10.0 * s, 200.0, 340.0, 6);
    for w in front.windows(2) {
        out.push(Primitive::capsule(
            w[0],
            w[1],
            ez,
            3.0 * s,
            5.0 * s,
            fill,
            label,
        ));
    }
    // Posterior arch round the canal.
    let back = arc(0.0, 8.0 * s, 14.0 * s, 22.0 * s, 0.0, 180.0, 10);
    for w in back.windows(2) {
        out.push(Primitive::capsule(
            w[0],
            w[1],
            ez,
            3.5 * s,
            4.5 * s,
            fill,
            label,
        ));
    }
    for side in [1.0, -1.0] {
        // Lateral mass.
        let lm = Frame {
            origin: level.at([side * 14.0 * s, 2.0 * s, 0.0]),
            axes: level.frame.axes,
        };
        out.push(Primitive::new(
            lm,
            Shape::Ellipsoid {
                r: [6.5 * s, 9.0 * s, 8.0 * s],
            },
            fill,
            label,
        ));
        // Transverse process: two bars around the foramen transversarium.
        let tip = level.at([side * level.post.tp_half_span, 3.0 * s, -1.0]);
        out.push(Primitive::capsule(
            level.at([side * 17.0 * s, -3.0 * s, 0.0]),
            tip,
            ez,
            2.5 * s,
            4.0 * s,
            fill,
            label,
        ));
        out.push(Primitive::capsule(
            level.at([side * 17.0 * s, 8.0 * s, 0.0]),
            tip,
            ez,
            2.5 * s,
            4.0 * s,
            fill,
            label,
        ));
    }
}

/// Spinal canal contents along the whole column: epidural fat in the canal, the thecal sac
/// (CSF) and the cord (ending at the conus around L1/L2), continuing 25 mm up into the
/// foramen magnum. Painted after the bones, so it carves the canal free.
fn canal(col: &Column, out: &mut Vec<Primitive>) {
    let s = col.patient.size;
    let levels = &col.levels;
    let conus = col
        .index_of(Vertebra::L1)
        .map_or(levels.len() as f64, |i| i as f64 + 0.6);
    // Canal centre and half-axes (lateral, AP) of each level.
    let centre = |l: &Level| -> (V3, f64, f64) {
        let v = match l.kind {
            LevelKind::Vertebra(Vertebra::C1) => 15.0 * s,
            _ => l.canal_centre_v(),
        };
        (
            l.at([0.0, v, 0.0]),
            l.post.canal_w / 2.0,
            l.post.canal_d / 2.0,
        )
    };
    let mut pts: Vec<(V3, f64, f64, f64, V3)> = Vec::new(); // centre, rl, rap, level index, lateral axis
    let first = &levels[0];
    let (c0, rl0, rap0) = centre(first);
    pts.push((
        add(c0, scale(first.frame.axes[2], 25.0 * s)),
        rl0 * 0.9,
        rap0 * 0.9,
        -1.0,
        first.frame.axes[0],
    ));
    for (i, l) in levels.iter().enumerate() {
        if matches!(l.kind, LevelKind::Sacral(k) if k > 3) {
            break;
        }
        let (c, rl, rap) = centre(l);
        pts.push((c, rl, rap, i as f64, l.frame.axes[0]));
    }
    for w in pts.windows(2) {
        let ((a, rla, rapa, ia, ax), (b, rlb, rapb, ib, _)) = (w[0], w[1]);
        let rl = f64::midpoint(rla, rlb);
        let rap = f64::midpoint(rapa, rapb);
        let sacral = matches!(
            levels.get(ib as usize).map(|l| l.kind),
            Some(LevelKind::Sacral(_))
        );
        out.push(Primitive::capsule(
            a,
            b,
            ax,
            rap,
            rl,
            Fill::Solid(Tissue::Fat),
            LabelWrite::Set(0),
        ));
        if !sacral || matches!(levels[ib as usize].kind, LevelKind::Sacral(1)) {
            out.push(Primitive::capsule(
                a,
                b,
                ax,
                rap * 0.78,
                rl * 0.8,
                Fill::Solid(Tissue::Csf),
                LabelWrite::Set(0),
            ));
        }
        let mid = f64::midpoint(ia, ib);
        if mid < conus {
            let region_scale = if mid < 7.0 { 1.0 } else { 0.8 };
            let taper = if ib > conus { 0.6 } else { 1.0 };
            out.push(Primitive::capsule(
                a,
                if ib > conus {
                    lerp(a, b, conus - ia)
                } else {
                    b
                },
                ax,
                4.0 * s * taper,
                6.0 * s * region_scale * taper,
                Fill::Solid(Tissue::Cord),
                LabelWrite::Set(0),
            ));
        }
    }
}

/// Ribs 1–12 on both sides (head at the body, tubercle at the transverse-process tip, shaft
/// round the thoracic cavity, descending anteriorly) and the sternum.
fn ribs_and_sternum(col: &Column, out: &mut Vec<Primitive>) {
    let s = col.patient.size;
    let up = [0.0, 0.0, 1.0];
    let fill = bone(1.0);
    for (k, v) in (Vertebra::T1 as u8..=Vertebra::T12 as u8).enumerate() {
        let Some(v) = Vertebra::from_label(v) else {
            continue;
        };
        let Some(li) = col.index_of(v) else { continue };
        let level = &col.levels[li];
        let rib = k + 1;
        let h = level.height;
        let head_w = if (2..=9).contains(&rib) {
            0.45 * h
        } else {
            0.2 * h
        };
        let cav = SoftProfile::cavity_at_level(col, li as f64);
        let step = level.height + level.disc_below;
        let (end_deg, drop): (f64, f64) = match rib {
            1 => (150.0, 0.8 * step),
            2..=7 => (165.0, 2.6 * step),
            8..=10 => (150.0, 2.8 * step),
            11 => (105.0, 1.5 * step),
            _ => (75.0, 1.0 * step),
        };
        let (rr_across, rr_up) = if rib == 1 {
            (5.0 * s, 3.0 * s)
        } else {
            (2.8 * s, 5.5 * s)
        };
        for side in [1.0, -1.0] {
            let head = level.at([side * level.section.a * 0.95, level.section.b * 0.2, head_w]);
            let tb_local = [
                side * level.post.tp_half_span * 0.95,
                level.canal_centre_v() + 4.0 * s,
                pedicle_height(level),
            ];
            let tubercle = level.at(tb_local);
            // Angle of the tubercle seen from the cavity centre; 0 = straight back.
            let th0 = (side * (tubercle[0] - cav.cx))
                .max(1.0)
                .atan2(tubercle[1] - cav.cy);
            let th1 = end_deg.to_radians();
            let mut pts = vec![head, tubercle];
            let n = 14;
            for j in 0..=n {
                let t = j as f64 / n as f64;
                let th = th0 + (th1 - th0) * t;
                let rx = cav.tx + rr_across + 1.0;
                let ry = cav.ty + rr_across + 1.0;
                let z = tubercle[2] - drop * t.powf(1.3);
                pts.push([cav.cx + side * rx * th.sin(), cav.cy + ry * th.cos(), z]);
            }
            for w in pts.windows(2) {
                if super::shapes::norm(sub(w[1], w[0])) < 0.5 {
                    continue;
                }
                out.push(Primitive::capsule(
                    w[0],
                    w[1],
                    up,
                    rr_across,
                    rr_up,
                    fill,
                    LabelWrite::Set(0),
                ));
            }
        }
    }
    // Sternum from the T2 to the T9 level, at the front of the cavity.
    let (Some(a), Some(b)) = (col.index_of(Vertebra::T2), col.index_of(Vertebra::T9)) else {
        return;
    };
    let mut prev: Option<V3> = None;
    for i in a..=b {
        let cav = SoftProfile::cavity_at_level(col, i as f64);
        let z = col.levels[i].frame.origin[2] - 15.0 * s;
        let p = [cav.cx, cav.cy - cav.ty - 7.0 * s, z];
        if let Some(q) = prev {
            let half_w = if i <= a + 1 { 22.0 } else { 13.0 } * s;
            out.push(Primitive::capsule(
                q,
                p,
                [1.0, 0.0, 0.0],
                5.0 * s,
                half_w,
                bone(1.2),
                LabelWrite::Set(0),
            ));
        }
        prev = Some(p);
    }
}

/// Skull (outer table, diploë, inner table, brain) resting on C1, and the mandible in front of
/// C2–C3. The canal painted later opens the foramen magnum.
fn skull_and_mandible(col: &Column, out: &mut Vec<Primitive>) {
    let s = col.patient.size;
    let c1 = &col.levels[0];
    let r = [70.0 * s, 88.0 * s, 80.0 * s];
    let centre = add(c1.at([0.0, -10.0 * s, 0.0]), [0.0, 0.0, 10.0 * s + r[2]]);
    let frame = Frame {
        origin: centre,
        axes: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    };
    let grow = |d: f64| [r[0] + d, r[1] + d, r[2] + d];
    out.push(Primitive::new(
        frame,
        Shape::Ellipsoid { r: grow(6.0) },
        Fill::Solid(Tissue::Muscle),
        LabelWrite::Set(0),
    ));
    out.push(Primitive::new(
        frame,
        Shape::Ellipsoid { r },
        bone(2.0),
        LabelWrite::Set(0),
    ));
    out.push(Primitive::new(
        frame,
        Shape::Ellipsoid { r: grow(-7.0) },
        Fill::Shell {
            outer: Tissue::CorticalBone,
            inner: Tissue::SoftTissue,
            thickness: 1.5,
        },
        LabelWrite::Set(0),
    ));
    // Mandible: rami behind, body curving forward to the chin.
    let Some(c2) = col.level(Vertebra::C2) else {
        return;
    };
    let o = c2.frame.origin;
    let pt = |x: f64, y: f64, z: f64| add(o, [x * s, y * s, z * s]);
    for side in [1.0, -1.0] {
        let chain = [
            pt(side * 48.0, -15.0, 25.0),
            pt(side * 46.0, -22.0, -8.0),
            pt(side * 36.0, -52.0, -16.0),
            pt(side * 18.0, -74.0, -20.0),
            pt(0.0, -82.0, -20.0),
        ];
        for (j, w) in chain.windows(2).enumerate() {
            let r_up = if j == 0 { 6.0 } else { 9.0 } * s;
            out.push(Primitive::capsule(
                w[0],
                w[1],
                [0.0, 0.0, 1.0],
                4.5 * s,
                r_up,
                bone(1.5),
                LabelWrite::Set(0),
            ));
        }
    }
}

/// Sacrum (fused S1–S5 bodies, alae, dorsal plate) and the two iliac wings meeting the alae
/// at the sacroiliac joints.
fn sacrum_and_pelvis(col: &Column, out: &mut Vec<Primitive>, cortex: f64) {
    let s = col.patient.size;
    let label = LabelWrite::Set(0);
    let mut s1: Option<&Level> = None;
    for l in &col.levels {
        let LevelKind::Sacral(k) = l.kind else {
            continue;
        };
        if k == 1 {
            s1 = Some(l);
        }
        // Fused bodies: extend each body into its neighbours so they join.
        let mut fused = l.clone();
        fused.height += 4.0;
        out.push(body_primitive(&fused, None, cortex));
        // Ala / lateral mass.
        let shrink = 1.0 - 0.18 * f64::from(k - 1);
        for side in [1.0, -1.0] {
            let frame = Frame {
                origin: l.at([side * (l.section.a + 12.0 * s * shrink), 4.0 * s, 0.0]),
                axes: l.frame.axes,
            };
            out.push(Primitive::new(
                frame,
                Shape::Ellipsoid {
                    r: [16.0 * s * shrink, 13.0 * s * shrink, l.height * 0.6],
                },
                bone(cortex),
                label,
            ));
        }
        // Dorsal plate roofing the sacral canal.
        let vcc = l.canal_centre_v();
        let half = l.post.canal_w / 2.0 + 6.0 * s;
        let v = vcc + l.post.canal_d / 2.0 + 2.5 * s;
        out.push(Primitive::capsule(
            l.at([-half, v, 0.0]),
            l.at([half, v, 0.0]),
            l.frame.axes[2],
            3.0 * s,
            l.height / 2.0 + 1.0,
            bone(cortex),
            label,
        ));
    }
    let Some(s1) = s1 else { return };
    let wide = 0.9 + 0.2 * col.patient.pelvis_width;
    for side in [1.0, -1.0] {
        let si = s1.at([side * (s1.section.a + 24.0 * s), 8.0 * s, 12.0 * s]);
        let asis = s1.at([side * (s1.section.a + 95.0 * s * wide), -55.0 * s, 22.0 * s]);
        let long = normalize(sub(asis, si));
        let tall = s1.frame.axes[2];
        let tall = normalize(sub(tall, scale(long, super::shapes::dot(tall, long))));
        let thick = super::shapes::cross(long, tall);
        let half_len = super::shapes::norm(sub(asis, si)) / 2.0 + 10.0 * s;
        let frame = Frame {
            origin: add(lerp(si, asis, 0.5), scale(tall, 5.0 * s)),
            axes: [thick, long, tall],
        };
        out.push(Primitive::new(
            frame,
            Shape::Ellipsoid {
                r: [7.0 * s, half_len, 55.0 * s],
            },
            bone(1.5),
            label,
        ));
    }
}
