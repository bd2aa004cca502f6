//! Vertebra instances from the binary and the 26-class segmentation outputs.
//!
//! ## Algorithm
//! 1. **Foreground**: voxels whose vertebra probability (sigmoid of `vertebra_logit`) is at
//!    least [`InstanceConfig::foreground_threshold`] (0.5, the contract's decision rule).
//! 2. **Seeds**: inside the foreground, the connected components (26-connected) of each
//!    vertebra label of the label argmax (1..=25) are candidate pieces; pieces of at least
//!    [`InstanceConfig::min_seed_mm3`] become seeds, one instance each. This is what splits
//!    two touching vertebrae that the binary mask merges: their label argmaxes differ. A piece
//!    that touches the grid border is a seed whatever its size: a vertebra cut by the field
//!    of view must not be absorbed by its neighbour (if it stays below the instance minimum
//!    it is dropped in step 6).
//!    Seeds of the *same* label that overlap along the world S axis by at least half the
//!    shorter one are merged into one instance: a vertebral body and its posterior arch whose
//!    thin pedicles the network missed are one vertebra, whereas two vertebrae wrongly given
//!    the same label lie one above the other and stay apart (the decoding then relabels one).
//! 3. **Growth**: every other foreground voxel (argmax background inside the foreground, small
//!    pieces of a stray label) joins the seed it reaches first in a multi-source breadth-first
//!    flood through the foreground (26-connected; ties go to the seed queued first, i.e. the
//!    lower seed in scan order) — a geodesic nearest-seed assignment.
//! 4. **Seedless pieces**: foreground components that no seed reaches become one instance each
//!    when they have at least [`InstanceConfig::min_instance_mm3`]; smaller ones are dropped.
//! 5. **Several vertebrae in one instance**: a weak network gives several touching
//!    vertebrae one label (whole columns, in the demo model), and steps 2–3 make them one
//!    instance:
//!    - each instance whose S profile (voxels per slab along world S) drops to at most
//!      [`DISC_VALLEY_RATIO`] of the humps above and below is cut there — the disc level,
//!      where only the facet joints connect two vertebrae — and the parts are examined again
//!      (`split_at_discs`; labels play no part);
//!    - then, with at least three instances, an instance taller along world S than
//!      [`SPLIT_HEIGHT_RATIO`] × the median instance height is cut at its thinnest S
//!      cross-section in its middle half, and the part below becomes a new instance
//!      (repeated up to three times): the thoracic column, where long spinous processes fill
//!      the disc levels and no deep valley forms;
//!    - finally, two instances that touch and whose centroids lie within [`SAME_LEVEL_MM`]
//!      along world S are merged (`merge_same_level`): a body and an arch that the network
//!      gave different labels, side by side at one level (neighbouring vertebrae lie a pitch,
//!      at least ~15 mm, apart).
//! 6. **Fragments**: instances below [`InstanceConfig::min_instance_mm3`] are dropped.
//!
//! ## Thresholds (physical, so independent of the grid)
//! Seeds need 1000 mm³ (1 cm³), instances 2500 mm³. The smallest vertebra, C1, has a bone
//! volume of several cm³ and a cervical body alone ~3 cm³ (16 × 15 × 13 mm), so a whole
//! vertebra is above both, while the label noise of a network (speckles, thin rims of the
//! neighbour's label along an endplate) is far below. The instance minimum was 1000 mm³ until
//! the demo model's held-out cases showed 1.2–2.2 cm³ pieces that are no vertebra (the skull
//! base above C1, a detached process): each such piece takes a level in the anatomical-order
//! decoding and shifts every name after it. 2500 mm³ removed them (decoded ID accuracy on the
//! first five test cases 0.28 → 0.55, `docs/evaluation.md`); the cost is that a vertebra cut by
//! the field of view to less than 2.5 cm³ is not reported.

//! Instances are numbered **cranio-caudally**: id 1 is the instance whose centroid is most
//! superior (largest LPS S coordinate). The appliance reorients every series to LPS, so this is
//! the column order for any axial scan.

use crate::anatomy::NUM_VERTEBRAE;
use crate::components::{Component, Connectivity, VoxelBox, label_binary, label_per_label};
use crate::contract::NUM_SEG_CLASSES;
use crate::metrics::check_same_grid;
use crate::{Error, Result, Volume};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Default foreground threshold on the vertebra probability.
pub const DEFAULT_FOREGROUND_THRESHOLD: f32 = 0.5;
/// Default minimum volume of a per-label piece to seed an instance, mm³.
pub const DEFAULT_MIN_SEED_MM3: f64 = 1000.0;
/// Default minimum volume of an instance, mm³.
pub const DEFAULT_MIN_INSTANCE_MM3: f64 = 2500.0;
/// Smoothing of label-vote fractions (see [`VertebraInstance::vote_probabilities`]).
pub const VOTE_SMOOTHING: f64 = 0.01;

/// Settings of [`extract_instances`]; [`Default`] gives the documented values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InstanceConfig {
    /// Vertebra probability at or above which a voxel is foreground.
    pub foreground_threshold: f32,
    /// Minimum volume (mm³) of one label's connected piece to seed an instance.
    pub min_seed_mm3: f64,
    /// Minimum volume (mm³) of a final instance.
    pub min_instance_mm3: f64,
}

impl Default for InstanceConfig {
    fn default() -> Self {
        InstanceConfig {
            foreground_threshold: DEFAULT_FOREGROUND_THRESHOLD,
            min_seed_mm3: DEFAULT_MIN_SEED_MM3,
            min_instance_mm3: DEFAULT_MIN_INSTANCE_MM3,
        }
    }
}

/// One vertebra instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VertebraInstance {
    /// Id in [`Instances::ids`], 1-based, cranio-caudal.
    pub id: u32,
    /// Number of voxels.
    pub voxel_count: usize,
    /// Volume in mm³.
    pub volume_mm3: f64,
    /// Mean voxel index `(x, y, z)`.
    pub centroid_voxel: [f64; 3],
    /// Centroid in world LPS, mm.
    pub centroid_world: [f64; 3],
    /// Bounding box of the voxel indices `(x, y, z)`, inclusive.
    pub bbox_voxels: VoxelBox,
    /// Whether the instance touches the border of the grid (a vertebra cut by the field of
    /// view: its volume and heights are not those of the whole vertebra).
    pub touches_border: bool,
    /// Voxel count per segmentation class of the label argmax (26 entries, index = class;
    /// index 0 counts foreground voxels whose argmax was background).
    pub label_histogram: Vec<u64>,
    /// The most frequent vertebra label 1..=25 (lowest on a tie), 0 if no voxel had one.
    pub majority_label: u8,
}

impl VertebraInstance {
    /// The box in the contract's voxel-edge convention, `(z, y, x)` order: voxels `a..=b`
    /// become `[a, b + 1)` — the `boxes` input of the identification head.
    pub fn edge_box_zyx(&self) -> ([f32; 3], [f32; 3]) {
        let (lo, hi) = (self.bbox_voxels.min, self.bbox_voxels.max);
        (
            [lo[2] as f32, lo[1] as f32, lo[0] as f32],
            [(hi[2] + 1) as f32, (hi[1] + 1) as f32, (hi[0] + 1) as f32],
        )
    }

    /// Identification probabilities (25 classes, index `i` = label `i + 1`) from the label
    /// votes: `p_c = (f_c + ε) / (1 + 25 ε)` with `f_c` the fraction of the instance's
    /// vertebra-labelled voxels voting `c` and `ε` = [`VOTE_SMOOTHING`]. Fractions, not counts:
    /// neighbouring voxels' votes are strongly correlated, so 5000 voxels are not 5000
    /// independent observations, and a count-based likelihood would make every instance so
    /// confident that the anatomical-order decoding could never correct it. Uniform when no
    /// voxel carries a vertebra label.
    pub fn vote_probabilities(&self) -> Vec<f64> {
        let total: u64 = self.label_histogram.iter().skip(1).sum();
        let k = NUM_VERTEBRAE as f64;
        (1..=NUM_VERTEBRAE)
            .map(|c| {
                if total == 0 {
                    1.0 / k
                } else {
                    let f = self.label_histogram[c] as f64 / total as f64;
                    (f + VOTE_SMOOTHING) / (1.0 + k * VOTE_SMOOTHING)
                }
            })
            .collect()
    }
}

/// The instances of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct Instances {
    /// Instance id per voxel (0 = none), on the input grid.
    pub ids: Volume<u32>,
    /// The instances, `instances[i].id == i + 1`, cranio-caudal.
    pub instances: Vec<VertebraInstance>,
}

impl Instances {
    /// The instance with id `id`, if any.
    pub fn get(&self, id: u32) -> Option<&VertebraInstance> {
        (id as usize)
            .checked_sub(1)
            .and_then(|i| self.instances.get(i))
    }
}

/// Extracts vertebra instances (see the module docs).
///
/// `foreground_prob` is the vertebra probability (sigmoid of `vertebra_logit`), `label_argmax`
/// the argmax over the 26 label channels (0 = background, 1..=25 = C1..L6), both on one grid.
///
/// # Errors
/// [`Error::Geometry`] when the two volumes are on different grids; [`Error::InvalidArgument`]
/// for a label above 25, a non-finite or negative volume threshold.
pub fn extract_instances(
    foreground_prob: &Volume<f32>,
    label_argmax: &Volume<u8>,
    config: &InstanceConfig,
) -> Result<Instances> {
    check_same_grid(foreground_prob, label_argmax)?;
    for (name, v) in [
        ("min_seed_mm3", config.min_seed_mm3),
        ("min_instance_mm3", config.min_instance_mm3),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "instance extraction: {name} = {v} must be a finite volume >= 0"
            )));
        }
    }
    if let Some(bad) = label_argmax
        .data()
        .iter()
        .find(|&&l| l as usize >= NUM_SEG_CLASSES)
    {
        return Err(Error::InvalidArgument(format!(
            "label argmax {bad} is not a segmentation class (0..=25)"
        )));
    }
    let fg: Vec<bool> = foreground_prob
        .data()
        .iter()
        .map(|&p| p >= config.foreground_threshold)
        .collect();
    let seed_labels = {
        let mut v = label_argmax.clone();
        for (l, &f) in v.data_mut().iter_mut().zip(&fg) {
            if !f {
                *l = 0;
            }
        }
        v
    };
    let pieces = label_per_label(&seed_labels, Connectivity::Vertex26)?;
    let dims = foreground_prob.dims();
    let seeds: Vec<&Component> = pieces
        .components
        .iter()
        .filter(|c| c.volume_mm3 >= config.min_seed_mm3 || on_border(c, dims))
        .collect();
    // Same-label seeds that overlap along S by half the shorter one are one vertebra (a body
    // and its arch whose pedicles were missed); different vertebrae given one label by mistake
    // lie one above the other and stay apart.
    let mut root: Vec<usize> = (0..seeds.len()).collect();
    for a in 0..seeds.len() {
        for b in (a + 1)..seeds.len() {
            if seeds[a].label == seeds[b].label && same_level(seeds[a], seeds[b]) {
                let (ra, rb) = (find(&mut root, a), find(&mut root, b));
                root[ra.max(rb)] = ra.min(rb);
            }
        }
    }
    // Provisional instance per group of seed pieces: 1..=n.
    let mut seed_of_piece = vec![0u32; pieces.components.len() + 1];
    let mut group = vec![0u32; seeds.len()];
    let mut n_seeds = 0u32;
    for k in 0..seeds.len() {
        let r = find(&mut root, k);
        if group[r] == 0 {
            n_seeds += 1;
            group[r] = n_seeds;
        }
        seed_of_piece[seeds[k].id as usize] = group[r];
    }
    let mut owner = vec![0u32; fg.len()];
    for (i, &piece) in pieces.ids.data().iter().enumerate() {
        owner[i] = seed_of_piece[piece as usize];
    }
    let mut queue: VecDeque<usize> = (0..owner.len()).filter(|&i| owner[i] != 0).collect();
    let offsets = Connectivity::Vertex26.offsets();
    while let Some(i) = queue.pop_front() {
        let p = foreground_prob.coords(i);
        for o in &offsets {
            if let Some(j) = neighbour(dims, p, *o)
                && fg[j]
                && owner[j] == 0
            {
                owner[j] = owner[i];
                queue.push_back(j);
            }
        }
    }
    // Seedless foreground pieces.
    let leftover = Volume::from_vec(
        dims,
        fg.iter().zip(&owner).map(|(&f, &o)| f && o == 0).collect(),
        *foreground_prob.geometry(),
    )?;
    let rest = label_binary(&leftover, Connectivity::Vertex26)?;
    let mut next = n_seeds;
    let mut rest_owner = vec![0u32; rest.components.len() + 1];
    for c in &rest.components {
        if c.volume_mm3 >= config.min_instance_mm3 {
            next += 1;
            rest_owner[c.id as usize] = next;
        }
    }
    for (o, &r) in owner.iter_mut().zip(rest.ids.data()) {
        if r != 0 {
            *o = rest_owner[r as usize];
        }
    }
    let mut provisional = Volume::from_vec(dims, owner, *foreground_prob.geometry())?;
    let voxel_mm3 = foreground_prob.geometry().voxel_volume_mm3();
    let min_part_voxels = (config.min_instance_mm3 / voxel_mm3).ceil() as usize;
    let n = split_at_discs(&mut provisional, next as usize, min_part_voxels);
    let n = split_tall_instances(&mut provisional, n);
    merge_same_level(&mut provisional, n);
    Ok(finish(&provisional, label_argmax, n, config))
}

/// Touching instances whose centroids lie closer than this along world S (mm) are one
/// vertebra: less than half the smallest vertebral pitch (~15 mm, cervical body plus disc).
pub const SAME_LEVEL_MM: f64 = 7.0;

/// Merges touching instances at one level (step 5 of the module docs): a network that gives a
/// vertebra's body one label and its arch another seeds two instances side by side, with
/// centroids a few mm apart along S, whereas neighbouring vertebrae lie a pitch apart.
fn merge_same_level(ids: &mut Volume<u32>, n: usize) {
    let g = *ids.geometry();
    let dims = ids.dims();
    let mut count = vec![0usize; n + 1];
    let mut sum_s = vec![0f64; n + 1];
    let mut touching = std::collections::BTreeSet::new();
    for (i, &a) in ids.data().iter().enumerate() {
        if a == 0 {
            continue;
        }
        let p = ids.coords(i);
        count[a as usize] += 1;
        sum_s[a as usize] += g.voxel_to_world([p[0] as f64, p[1] as f64, p[2] as f64])[2];
        for o in [[1, 0, 0], [0, 1, 0], [0, 0, 1]] {
            if let Some(j) = neighbour(dims, p, o) {
                let b = ids.data()[j];
                if b != 0 && b != a {
                    touching.insert((a.min(b) as usize, a.max(b) as usize));
                }
            }
        }
    }
    let s = |o: usize| sum_s[o] / count[o].max(1) as f64;
    let mut root: Vec<usize> = (0..=n).collect();
    for &(a, b) in &touching {
        if (s(a) - s(b)).abs() < SAME_LEVEL_MM {
            let (ra, rb) = (find(&mut root, a), find(&mut root, b));
            root[ra.max(rb)] = ra.min(rb);
        }
    }
    let target: Vec<u32> = (0..=n).map(|o| find(&mut root, o) as u32).collect();
    for id in ids.data_mut() {
        *id = target[*id as usize];
    }
}

/// A minimum of an instance's S profile at most this fraction of the lower of the highest
/// cross-sections above and below it is a disc level (see [`split_at_discs`]).
pub const DISC_VALLEY_RATIO: f64 = 0.4;
/// The humps on the two sides of a cut are both vertebrae only when the lower peak is at
/// least this fraction of the higher: a lumbar vertebra's arch and spinous process hang below
/// its body as a small hump of their own (at 1 mm) that must stay with it.
pub const PEAK_BALANCE: f64 = 0.35;
/// Each part of a split is at least this tall along world S, mm (a cervical body is ~12 mm).
pub const MIN_SPLIT_PART_MM: f64 = 8.0;
/// At most this many cuts per case (a whole column C1–L6 has 24 discs).
const MAX_SPLITS: usize = 32;

/// Splits instances that hold several vertebrae at their disc levels (step 5 of the module
/// docs); returns the new number of provisional ids.
///
/// An instance's **S profile** is its voxel count per slab of one voxel spacing along world S.
/// One vertebra has one hump (body, arch and processes); vertebrae that the label argmax merged
/// are joined across each disc only by the facet joints, so their profile drops at every disc.
/// The instance is cut at the slab where `count / min(peak above, peak below)` is smallest
/// when that ratio is at most [`DISC_VALLEY_RATIO`], the two peaks are balanced
/// ([`PEAK_BALANCE`]), both parts are at least [`MIN_SPLIT_PART_MM`] tall and at least
/// `min_part_voxels`; the lower part becomes a new
/// instance and both parts are examined again. Nothing here depends on the labels or on the
/// other instances, so a column the network labelled as one vertebra is split as well as one
/// where it merged two.
fn split_at_discs(ids: &mut Volume<u32>, mut n: usize, min_part_voxels: usize) -> usize {
    let g = *ids.geometry();
    let bin = g.spacing.iter().copied().fold(0.0, f64::max);
    let s_of: Vec<f64> = (0..ids.len())
        .map(|i| {
            let c = ids.coords(i);
            g.voxel_to_world([c[0] as f64, c[1] as f64, c[2] as f64])[2]
        })
        .collect();
    let min_bins = (MIN_SPLIT_PART_MM / bin).ceil() as usize;
    let mut queue: Vec<usize> = (1..=n).collect();
    let mut splits = 0;
    while let Some(o) = queue.pop() {
        if splits == MAX_SPLITS {
            break;
        }
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for (&id, &s) in ids.data().iter().zip(&s_of) {
            if id as usize == o {
                lo = lo.min(s);
                hi = hi.max(s);
            }
        }
        if !lo.is_finite() {
            continue;
        }
        let bins = ((hi - lo) / bin).round() as usize + 1;
        let bin_of = |s: f64| (((s - lo) / bin).round() as usize).min(bins - 1);
        let mut count = vec![0usize; bins];
        for (&id, &s) in ids.data().iter().zip(&s_of) {
            if id as usize == o {
                count[bin_of(s)] += 1;
            }
        }
        if bins < 2 * min_bins + 1 {
            continue;
        }
        // Running maxima from each end and cumulative counts below each slab.
        let mut peak_below = vec![0usize; bins];
        let mut below = vec![0usize; bins + 1];
        for b in 0..bins {
            peak_below[b] = count[b].max(if b > 0 { peak_below[b - 1] } else { 0 });
            below[b + 1] = below[b] + count[b];
        }
        let mut peak_above = vec![0usize; bins];
        for b in (0..bins).rev() {
            peak_above[b] = count[b].max(if b + 1 < bins { peak_above[b + 1] } else { 0 });
        }
        let total = below[bins];
        let best = (min_bins..bins - min_bins)
            .filter(|&b| below[b] >= min_part_voxels && total - below[b] >= min_part_voxels)
            .filter(|&b| {
                let (p, q) = (peak_below[b - 1], peak_above[b + 1]);
                p.min(q) as f64 >= PEAK_BALANCE * p.max(q) as f64
            })
            .map(|b| {
                let peak = peak_below[b - 1].min(peak_above[b + 1]);
                (count[b] as f64 / peak.max(1) as f64, b)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let Some((ratio, cut)) = best else {
            continue;
        };
        if ratio > DISC_VALLEY_RATIO {
            continue;
        }
        n += 1;
        splits += 1;
        let new = n as u32;
        for (id, &s) in ids.data_mut().iter_mut().zip(&s_of) {
            if *id as usize == o && bin_of(s) < cut {
                *id = new;
            }
        }
        queue.push(o);
        queue.push(n);
    }
    n
}

/// Instances taller than this multiple of the median instance height are two vertebrae.
pub const SPLIT_HEIGHT_RATIO: f64 = 1.6;

/// Splits instances that are two vertebrae (step 5 of the module docs); returns the new
/// number of provisional ids.
fn split_tall_instances(ids: &mut Volume<u32>, mut n: usize) -> usize {
    let g = *ids.geometry();
    let s_of = |i: usize, v: &Volume<u32>| {
        let c = v.coords(i);
        g.voxel_to_world([c[0] as f64, c[1] as f64, c[2] as f64])[2]
    };
    let bin = g.spacing.iter().copied().fold(0.0, f64::max);
    for _ in 0..3 {
        let mut lo = vec![f64::INFINITY; n + 1];
        let mut hi = vec![f64::NEG_INFINITY; n + 1];
        for (i, &o) in ids.data().iter().enumerate() {
            if o != 0 {
                let s = s_of(i, ids);
                lo[o as usize] = lo[o as usize].min(s);
                hi[o as usize] = hi[o as usize].max(s);
            }
        }
        let mut heights: Vec<f64> = (1..=n)
            .filter(|&o| lo[o].is_finite())
            .map(|o| hi[o] - lo[o] + bin)
            .collect();
        if heights.len() < 3 {
            return n;
        }
        heights.sort_by(f64::total_cmp);
        let median = heights[heights.len() / 2];
        let tall: Vec<usize> = (1..=n)
            .filter(|&o| lo[o].is_finite() && hi[o] - lo[o] + bin > SPLIT_HEIGHT_RATIO * median)
            .collect();
        if tall.is_empty() {
            return n;
        }
        for o in tall {
            let h = hi[o] - lo[o] + bin;
            let bins = ((hi[o] - lo[o]) / bin).round() as usize + 1;
            let mut count = vec![0usize; bins];
            for (i, &id) in ids.data().iter().enumerate() {
                if id as usize == o {
                    let b = (((s_of(i, ids) - lo[o]) / bin).round() as usize).min(bins - 1);
                    count[b] += 1;
                }
            }
            // The thinnest cross-section in the middle half: the disc between the two.
            let from = ((0.25 * h) / bin).floor() as usize;
            let to = (((0.75 * h) / bin).ceil() as usize).min(bins - 1);
            let Some(cut) = (from..=to).min_by_key(|&b| (count[b], b)) else {
                continue;
            };
            n += 1;
            let new = n as u32;
            for i in 0..ids.len() {
                if ids.data()[i] as usize == o {
                    let b = ((s_of(i, ids) - lo[o]) / bin).round() as usize;
                    if b < cut {
                        ids.data_mut()[i] = new;
                    }
                }
            }
        }
    }
    n
}

/// Whether a piece touches the border of the grid.
fn on_border(c: &Component, dims: [usize; 3]) -> bool {
    (0..3).any(|a| c.bbox_voxels.min[a] == 0 || c.bbox_voxels.max[a] + 1 == dims[a])
}

/// Whether two pieces overlap along the world S axis by at least half the shorter extent.
fn same_level(a: &Component, b: &Component) -> bool {
    let (a0, a1) = (a.bbox_world.min[2], a.bbox_world.max[2]);
    let (b0, b1) = (b.bbox_world.min[2], b.bbox_world.max[2]);
    let overlap = a1.min(b1) - a0.max(b0);
    overlap > 0.0 && overlap >= 0.5 * (a1 - a0).min(b1 - b0)
}

/// Union-find root with path halving.
fn find(root: &mut [usize], mut i: usize) -> usize {
    while root[i] != i {
        root[i] = root[root[i]];
        i = root[i];
    }
    i
}

/// Linear index of `p + o`, or `None` outside the grid.
#[inline]
fn neighbour(dims: [usize; 3], p: [usize; 3], o: [isize; 3]) -> Option<usize> {
    let mut q = [0usize; 3];
    for a in 0..3 {
        let v = p[a].checked_add_signed(o[a])?;
        if v >= dims[a] {
            return None;
        }
        q[a] = v;
    }
    Some(q[0] + dims[0] * (q[1] + dims[1] * q[2]))
}

/// Statistics, fragment removal and cranio-caudal renumbering.
fn finish(
    provisional: &Volume<u32>,
    label_argmax: &Volume<u8>,
    n: usize,
    config: &InstanceConfig,
) -> Instances {
    let g = *provisional.geometry();
    let dims = provisional.dims();
    let mut count = vec![0usize; n + 1];
    let mut sum = vec![[0f64; 3]; n + 1];
    let mut lo = vec![[usize::MAX; 3]; n + 1];
    let mut hi = vec![[0usize; 3]; n + 1];
    let mut hist = vec![vec![0u64; NUM_SEG_CLASSES]; n + 1];
    for (i, (&o, &l)) in provisional
        .data()
        .iter()
        .zip(label_argmax.data())
        .enumerate()
    {
        if o == 0 {
            continue;
        }
        let o = o as usize;
        let p = provisional.coords(i);
        count[o] += 1;
        for a in 0..3 {
            sum[o][a] += p[a] as f64;
            lo[o][a] = lo[o][a].min(p[a]);
            hi[o][a] = hi[o][a].max(p[a]);
        }
        hist[o][l as usize] += 1;
    }
    let voxel_mm3 = g.voxel_volume_mm3();
    let mut kept: Vec<VertebraInstance> = (1..=n)
        .filter(|&o| count[o] > 0 && count[o] as f64 * voxel_mm3 >= config.min_instance_mm3)
        .map(|o| {
            let centroid_voxel = sum[o].map(|s| s / count[o] as f64);
            let majority_label = (1..NUM_SEG_CLASSES)
                .filter(|&c| hist[o][c] > 0)
                .max_by(|&a, &b| hist[o][a].cmp(&hist[o][b]).then(b.cmp(&a)))
                .map_or(0, |c| c as u8);
            VertebraInstance {
                id: o as u32,
                voxel_count: count[o],
                volume_mm3: count[o] as f64 * voxel_mm3,
                centroid_voxel,
                centroid_world: g.voxel_to_world(centroid_voxel),
                bbox_voxels: VoxelBox {
                    min: lo[o],
                    max: hi[o],
                },
                touches_border: (0..3).any(|a| lo[o][a] == 0 || hi[o][a] + 1 == dims[a]),
                label_histogram: hist[o].clone(),
                majority_label,
            }
        })
        .collect();
    // Cranio-caudal: most superior (largest S) first; ties by provisional id.
    kept.sort_by(|a, b| {
        b.centroid_world[2]
            .total_cmp(&a.centroid_world[2])
            .then(a.id.cmp(&b.id))
    });
    let mut renumber = vec![0u32; n + 1];
    for (i, inst) in kept.iter_mut().enumerate() {
        renumber[inst.id as usize] = i as u32 + 1;
        inst.id = i as u32 + 1;
    }
    let ids = provisional.map(|&o| renumber[o as usize]);
    Instances {
        ids,
        instances: kept,
    }
}
