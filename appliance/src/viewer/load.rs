//! A finished analysis and its source series → [`ViewerVolume`].
//!
//! Reads, from the analysis output directory the worker writes
//! (`<results>/series-<id>/`, see [`crate::worker`]): `result.json` (schema checked), the
//! label map it names (`labels.nii.gz`) and, when the document names one, the lesion heatmap
//! (`lesion_heatmap.nii.gz`); and the source image from `source` — a DICOM series directory
//! through [`crate::series::load_series`] (the engine's own loader, with every check it
//! makes) or a NIfTI file (HU), as `vertebrad analyze` accepts. The source must be the grid the
//! document describes (`input.dims`, `input.spacing_mm`): a series that changed since the
//! analysis (late instances) is refused rather than shown with misplaced labels.

use std::path::{Path, PathBuf};

use vertebra_core::Volume;

use super::{ViewerError, ViewerVolume};
use crate::engine::analyze::RESULT_FILE;
use crate::engine::document::{ResultDocument, SCHEMA, SCHEMA_VERSION};
use crate::series::{SeriesOptions, load_series};

/// Reads and checks `result.json` in `result_dir`.
///
/// # Errors
/// [`ViewerError::Result`] when it is missing, unreadable, not JSON of the schema, or of
/// another schema or version.
pub fn read_result_document(result_dir: &Path) -> Result<ResultDocument, ViewerError> {
    let path = result_dir.join(RESULT_FILE);
    let bytes = std::fs::read(&path)
        .map_err(|e| ViewerError::Result(format!("{}: {e}", path.display())))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ViewerError::Result(format!("{}: {e}", path.display())))?;
    let schema = value.get("schema").and_then(serde_json::Value::as_str);
    let version = value
        .get("schema_version")
        .and_then(serde_json::Value::as_u64);
    if schema != Some(SCHEMA) || version != Some(u64::from(SCHEMA_VERSION)) {
        return Err(ViewerError::Result(format!(
            "{}: schema {schema:?} version {version:?}; this viewer reads {SCHEMA} version \
             {SCHEMA_VERSION}",
            path.display()
        )));
    }
    serde_json::from_value(value)
        .map_err(|e| ViewerError::Result(format!("{}: {e}", path.display())))
}

/// A file named by the document, which must be a plain name inside `dir`.
fn named_file(dir: &Path, name: &str) -> Result<PathBuf, ViewerError> {
    let plain = Path::new(name)
        .file_name()
        .is_some_and(|f| f == std::ffi::OsStr::new(name));
    if !plain {
        return Err(ViewerError::Result(format!(
            "the result document names {name:?}, which is not a file name"
        )));
    }
    Ok(dir.join(name))
}

fn is_nifti(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let nii = Path::new(&name)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("nii"));
    path.is_file() && (nii || name.ends_with(".nii.gz"))
}

/// Loads the source image in HU.
fn load_source(source: &Path, options: &SeriesOptions) -> Result<Volume<f32>, ViewerError> {
    if is_nifti(source) {
        return vertebra_core::nifti::read_f32(source)
            .map_err(|e| ViewerError::Source(format!("{}: {e}", source.display())));
    }
    load_series(source, options)
        .map(|s| s.volume)
        .map_err(|e| ViewerError::Source(e.to_string()))
}

/// Loads a finished analysis (`result_dir`) and its source image (`source`: DICOM series
/// directory or NIfTI file) as a [`ViewerVolume`]. Blocking (reads and decodes the whole
/// series): call it from a blocking thread, normally through
/// [`super::ViewerCache::get_or_load`].
///
/// # Errors
/// [`ViewerError::Result`] for a missing or foreign result, [`ViewerError::Source`] when the
/// series cannot be loaded, [`ViewerError::Grid`] when it is not the analysed grid.
pub fn load_result(
    result_dir: &Path,
    source: &Path,
    options: &SeriesOptions,
) -> Result<ViewerVolume, ViewerError> {
    let document = read_result_document(result_dir)?;
    let read_u8 = |name: &str| -> Result<Volume<u8>, ViewerError> {
        let path = named_file(result_dir, name)?;
        vertebra_core::nifti::read_labels::<u8>(&path)
            .map_err(|e| ViewerError::Result(format!("{}: {e}", path.display())))
    };
    let labels = read_u8(&document.files.label_map)?;
    let heatmap = document
        .files
        .lesion_heatmap
        .as_deref()
        .map(read_u8)
        .transpose()?;
    let hu = load_source(source, options)?;
    let spacing_ok = hu
        .geometry()
        .spacing
        .iter()
        .zip(document.input.spacing_mm)
        .all(|(a, b)| (a - b).abs() <= 1e-3 * a.abs());
    if hu.dims() != document.input.dims || !spacing_ok {
        return Err(ViewerError::Grid(format!(
            "the source series is now {:?} voxels of {:?} mm but was analysed as {:?} of {:?} \
             mm (did it change since?)",
            hu.dims(),
            hu.geometry().spacing,
            document.input.dims,
            document.input.spacing_mm
        )));
    }
    ViewerVolume::new(
        &hu,
        &labels,
        heatmap.as_ref(),
        document.vertebrae,
        document.lesions,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::analyze::LESION_HEATMAP_FILE;
    use crate::viewer::test_support;
    use vertebra_core::nifti::{WriteOptions, write_f32, write_labels};

    /// A result directory as `vertebrad analyze` writes it, from the test phantom: source NIfTI,
    /// labels, heatmap and a document in the current schema.
    fn write_result(dir: &Path, heatmap: bool) -> PathBuf {
        let p = test_support::phantom();
        let source = dir.join("source.nii.gz");
        write_f32(&source, &p.ct, &WriteOptions::default()).unwrap();
        write_labels(
            dir.join("labels.nii.gz"),
            &p.labels,
            &WriteOptions::default(),
        )
        .unwrap();
        if heatmap {
            let h = p.labels.map(|&l| if l > 0 { 200u8 } else { 0 });
            write_labels(dir.join(LESION_HEATMAP_FILE), &h, &WriteOptions::default()).unwrap();
        }
        let (vertebrae, lesions) = test_support::findings(p);
        let document = serde_json::json!({
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "disclaimer": "x",
            "software_version": "0",
            "model": {"name": "m", "manifest_sha256": "0", "signed_by": "k", "demo": true,
                      "precision": "fp32", "execution_provider": "cpu"},
            "input": {"kind": "nifti", "modality": "CT", "study_instance_uid": null,
                      "series_instance_uid": null, "instances": 1, "dims": p.ct.dims(),
                      "spacing_mm": p.ct.geometry().spacing, "transfer_syntaxes": [],
                      "prepared_dims": [1, 1, 1]},
            "localization": null,
            "windows": 1,
            "id_source": "head",
            "order_decoded": true,
            "vertebrae": vertebrae,
            "lesions": lesions,
            "timings_s": crate::engine::document::Timings::default(),
            "files": {"label_map": "labels.nii.gz",
                      "lesion_heatmap": if heatmap { Some(LESION_HEATMAP_FILE) } else { None },
                      "seg": null, "sr": null},
            "warnings": []
        });
        std::fs::write(dir.join(RESULT_FILE), document.to_string()).unwrap();
        source
    }

    #[test]
    fn a_result_directory_loads_with_its_heatmap_and_findings() {
        let dir = tempfile::tempdir().unwrap();
        let source = write_result(dir.path(), true);
        let vol = load_result(dir.path(), &source, &SeriesOptions::default()).unwrap();
        let p = test_support::phantom();
        assert_eq!(vol.dims(), p.ct.dims());
        assert!(vol.has_heatmap());
        assert_eq!(vol.vertebrae().len(), p.centroids.len());
        assert_eq!(vol.lesions().len(), p.lesions.len());
        // Same voxels as the in-memory construction (NIfTI round trip keeps the grid).
        let direct = test_support::volume();
        assert_eq!(vol.labels(), direct.labels());
        assert_eq!(vol.hu(), direct.hu());
        assert_eq!(
            vol.heatmap()
                .unwrap()
                .iter()
                .map(|&h| usize::from(h == 200))
                .sum::<usize>(),
            p.labels.data().iter().filter(|&&l| l > 0).count()
        );
    }

    #[test]
    fn an_older_document_without_heatmap_loads_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let source = write_result(dir.path(), false);
        let text = std::fs::read_to_string(dir.path().join(RESULT_FILE)).unwrap();
        let text = text.replace("\"lesion_heatmap\":null,", "");
        assert!(!text.contains("lesion_heatmap"));
        std::fs::write(dir.path().join(RESULT_FILE), text).unwrap();
        let vol = load_result(dir.path(), &source, &SeriesOptions::default()).unwrap();
        assert!(!vol.has_heatmap());
    }

    #[test]
    fn foreign_documents_changed_series_and_odd_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let source = write_result(dir.path(), false);
        let path = dir.path().join(RESULT_FILE);
        let good = std::fs::read_to_string(&path).unwrap();
        let opts = SeriesOptions::default();

        std::fs::write(
            &path,
            good.replace("\"schema_version\":1", "\"schema_version\":99"),
        )
        .unwrap();
        let e = load_result(dir.path(), &source, &opts).unwrap_err();
        assert!(e.to_string().contains("version Some(99)"), "{e}");

        std::fs::write(&path, good.replace("labels.nii.gz", "../labels.nii.gz")).unwrap();
        let e = load_result(dir.path(), &source, &opts).unwrap_err();
        assert!(e.to_string().contains("not a file name"), "{e}");

        let p = test_support::phantom();
        let [nx, ny, nz] = p.ct.dims();
        std::fs::write(
            &path,
            good.replace(
                &format!("\"dims\":[{nx},{ny},{nz}]"),
                &format!("\"dims\":[{nx},{ny},{}]", nz + 1),
            ),
        )
        .unwrap();
        let e = load_result(dir.path(), &source, &opts).unwrap_err();
        assert!(matches!(e, ViewerError::Grid(_)), "{e}");

        std::fs::remove_file(&path).unwrap();
        let e = load_result(dir.path(), &source, &opts).unwrap_err();
        assert!(matches!(e, ViewerError::Result(_)), "{e}");

        std::fs::write(&path, &good).unwrap();
        let e = load_result(dir.path(), &dir.path().join("nowhere"), &opts).unwrap_err();
        assert!(matches!(e, ViewerError::Source(_)), "{e}");
    }
}
