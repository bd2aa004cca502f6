//! The viewer page's description of a volume (`info.json`): image sizes and slice counts per
//! plane, the window presets, and the vertebra and lesion tables, every row with the slice per
//! plane to jump to. Serialised with serde; the page script (`appliance/web/static/viewer.js`)
//! is its only reader. No patient data.

use serde::Serialize;
use vertebra_core::anatomy::{ALL_LESION_CLASSES, Vertebra};
use vertebra_reports::palette;

use super::ViewerVolume;
use super::render::{Plane, PlaneLayout, Window};
use crate::engine::document::{DISCLAIMER, Heights};

/// The `schema` field's value.
pub const INFO_SCHEMA: &str = "vertebraformer.viewer/1";

/// `info.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewerInfo {
    /// [`INFO_SCHEMA`].
    pub schema: &'static str,
    /// The result document's disclaimer.
    pub disclaimer: &'static str,
    /// Axial, sagittal and coronal, in that order.
    pub planes: Vec<PlaneInfo>,
    /// Window presets, the first is the default.
    pub windows: Vec<WindowInfo>,
    /// Whether `heatmap=1` shows a heatmap (else it shows the lesion markers only).
    pub has_heatmap: bool,
    /// Vertebrae, cranio-caudal.
    pub vertebrae: Vec<VertebraRow>,
    /// Lesions, by decreasing score.
    pub lesions: Vec<LesionRow>,
}

/// One plane.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlaneInfo {
    /// `axial`, `sagittal` or `coronal`.
    pub plane: Plane,
    /// Number of slices (valid indices `0..slices`).
    pub slices: usize,
    /// Image width, pixels.
    pub width: usize,
    /// Image height, pixels.
    pub height: usize,
    /// Pixel size (square), mm.
    pub pixel_mm: f64,
    /// The slice shown first: through the centroid of the middle vertebra of the table (so
    /// that every pane opens on the spine), the middle slice when there is none.
    pub initial: usize,
    /// What the image edges face: `[left, right, top, bottom]` as patient directions
    /// (`R`, `L`, `A`, `P`, `S`, `I`).
    pub edges: [&'static str; 4],
    /// The patient direction slice indices advance towards.
    pub increasing: &'static str,
}

/// One window preset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowInfo {
    /// URL key (`bone`, `soft`).
    pub key: &'static str,
    /// Centre and width.
    #[serde(flatten)]
    pub window: Window,
}

/// The slice of each plane through a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Slices {
    /// Axial index.
    pub axial: usize,
    /// Sagittal index.
    pub sagittal: usize,
    /// Coronal index.
    pub coronal: usize,
}

/// Height ratios of a vertebral body.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HeightRatios {
    /// Anterior / posterior height (wedge).
    pub anterior_posterior: f64,
    /// Middle / posterior height (biconcave).
    pub middle_posterior: f64,
}

/// One row of the vertebra table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VertebraRow {
    /// Name (`C1` … `L6`).
    pub name: String,
    /// Label value.
    pub label: u8,
    /// SEG palette colour, `#rrggbb`.
    pub color: String,
    /// Posterior probability of the name.
    pub confidence: f64,
    /// Volume, mm³.
    pub volume_mm3: f64,
    /// Mean HU over the vertebra (source grid).
    pub mean_hu: Option<f64>,
    /// Mean HU of the eroded body core.
    pub core_mean_hu: Option<f64>,
    /// Body heights, mm.
    pub heights: Option<Heights>,
    /// Height ratios from the heights.
    pub height_ratios: Option<HeightRatios>,
    /// Largest height loss (0–1).
    pub height_loss: Option<f64>,
    /// Genant grade 0–3.
    pub genant_grade: Option<u8>,
    /// Slices through the centroid.
    pub slices: Slices,
}

/// One row of the lesion table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LesionRow {
    /// Class key.
    pub class: String,
    /// SEG palette lesion colour, `#rrggbb`.
    pub color: String,
    /// Peak probability.
    pub score: f64,
    /// Assigned vertebra.
    pub vertebra: Option<String>,
    /// Extent, mm.
    pub size_mm: [f64; 3],
    /// Slices through the centre.
    pub slices: Slices,
}

fn hex(c: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

impl ViewerInfo {
    /// The description of `volume`.
    pub fn of(volume: &ViewerVolume) -> ViewerInfo {
        let slices = |lps: [f64; 3]| Slices {
            axial: volume.slice_of(Plane::Axial, lps),
            sagittal: volume.slice_of(Plane::Sagittal, lps),
            coronal: volume.slice_of(Plane::Coronal, lps),
        };
        let middle = volume
            .vertebrae()
            .get(volume.vertebrae().len() / 2)
            .map(|v| v.centroid_lps_mm);
        let planes = Plane::ALL
            .into_iter()
            .map(|plane| {
                let l = PlaneLayout::of(volume, plane);
                let (edges, increasing) = match plane {
                    Plane::Axial => (["R", "L", "A", "P"], "S"),
                    Plane::Sagittal => (["A", "P", "S", "I"], "L"),
                    Plane::Coronal => (["R", "L", "S", "I"], "P"),
                };
                PlaneInfo {
                    plane,
                    slices: l.slices,
                    width: l.width,
                    height: l.height,
                    pixel_mm: l.pixel_mm,
                    initial: middle.map_or(l.slices / 2, |c| volume.slice_of(plane, c)),
                    edges,
                    increasing,
                }
            })
            .collect();
        let vertebrae = volume
            .vertebrae()
            .iter()
            .map(|v| VertebraRow {
                name: v.name.clone(),
                label: v.label,
                color: Vertebra::from_label(v.label)
                    .map_or_else(|| "#ffffff".into(), |x| hex(palette::vertebra_rgb(x))),
                confidence: v.confidence,
                volume_mm3: v.volume_mm3,
                mean_hu: v.mean_hu,
                core_mean_hu: v.core_mean_hu,
                heights: v.heights,
                height_ratios: v
                    .heights
                    .filter(|h| h.posterior_mm > 0.0)
                    .map(|h| HeightRatios {
                        anterior_posterior: h.anterior_mm / h.posterior_mm,
                        middle_posterior: h.middle_mm / h.posterior_mm,
                    }),
                height_loss: v.height_loss,
                genant_grade: v.genant_grade,
                slices: slices(v.centroid_lps_mm),
            })
            .collect();
        let lesions = volume
            .lesions()
            .iter()
            .map(|l| LesionRow {
                class: l.class.clone(),
                color: ALL_LESION_CLASSES
                    .iter()
                    .find(|c| c.key() == l.class)
                    .map_or_else(|| "#ffffff".into(), |c| hex(palette::lesion_rgb(*c))),
                score: l.score,
                vertebra: l.vertebra.clone(),
                size_mm: l.size_mm,
                slices: slices(l.centre_lps_mm),
            })
            .collect();
        ViewerInfo {
            schema: INFO_SCHEMA,
            disclaimer: DISCLAIMER,
            planes,
            windows: Window::PRESETS
                .iter()
                .map(|&(key, window)| WindowInfo { key, window })
                .collect(),
            has_heatmap: volume.has_heatmap(),
            vertebrae,
            lesions,
        }
    }

    /// The JSON bytes served as `info.json`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the viewer description always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viewer::test_support;

    #[test]
    fn info_describes_planes_and_rows_with_their_slices() {
        let vol = test_support::volume();
        let info = ViewerInfo::of(vol);
        let json: serde_json::Value = serde_json::from_slice(&info.to_json()).unwrap();
        assert_eq!(json["schema"], INFO_SCHEMA);
        let [nx, ny, nz] = vol.dims();
        let planes = json["planes"].as_array().unwrap();
        assert_eq!(planes[0]["plane"], "axial");
        assert_eq!(planes[0]["slices"], nz);
        assert_eq!(planes[1]["slices"], nx);
        assert_eq!(planes[2]["slices"], ny);
        assert_eq!(planes[0]["width"], nx);
        assert_eq!(planes[1]["edges"], serde_json::json!(["A", "P", "S", "I"]));
        assert_eq!(
            json["windows"][0],
            serde_json::json!({"key": "bone", "center": 500.0, "width": 2000.0})
        );
        assert_eq!(json["has_heatmap"], true);
        let rows = json["vertebrae"].as_array().unwrap();
        assert_eq!(rows.len(), vol.vertebrae().len());
        for (row, v) in rows.iter().zip(vol.vertebrae()) {
            assert_eq!(row["name"], v.name.as_str());
            let voxel = vol.voxel_of(v.centroid_lps_mm);
            assert_eq!(row["slices"]["axial"], voxel[2].round() as usize);
            assert_eq!(row["slices"]["sagittal"], voxel[0].round() as usize);
            assert_eq!(row["slices"]["coronal"], voxel[1].round() as usize);
            let c = palette::vertebra_rgb(Vertebra::from_label(v.label).unwrap());
            assert_eq!(
                row["color"],
                format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
            );
            assert_eq!(row["genant_grade"], 0);
        }
        assert_eq!(
            json["lesions"].as_array().unwrap().len(),
            vol.lesions().len()
        );
        assert!(json["lesions"][0]["slices"]["axial"].is_u64());
        let middle = &rows[rows.len() / 2]["slices"];
        for (plane, key) in planes.iter().zip(["axial", "sagittal", "coronal"]) {
            assert_eq!(plane["initial"], middle[key], "{key}");
        }
    }

    #[test]
    fn height_ratios_come_from_the_heights() {
        let mut vol = test_support::volume().clone();
        vol.vertebrae[0].heights = Some(Heights {
            anterior_mm: 15.0,
            middle_mm: 18.0,
            posterior_mm: 20.0,
        });
        let info = ViewerInfo::of(&vol);
        assert_eq!(
            info.vertebrae[0].height_ratios,
            Some(HeightRatios {
                anterior_posterior: 0.75,
                middle_posterior: 0.9
            })
        );
        assert_eq!(info.vertebrae[1].height_ratios, None);
    }
}
