//! Writing an object as a DICOM Part-10 file (Explicit VR Little Endian).

use std::fs;
use std::io::Write;
use std::path::Path;

use dicom_dictionary_std::uids;
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use vertebra_core::dicom_series::uid_from_key;

use crate::{Error, Result};

/// Implementation Class UID of this writer (file meta information).
pub fn implementation_class_uid() -> String {
    uid_from_key("vertebra-reports/v1/implementation-class")
}

/// Implementation Version Name (SH, at most 16 characters).
const IMPLEMENTATION_VERSION_NAME: &str = concat!("VFREPORTS_", env!("CARGO_PKG_VERSION"));

/// Encodes `obj` as a Part-10 byte stream (preamble, file meta, data set).
///
/// # Errors
///
/// [`Error::Dicom`] when the object lacks its SOP Class/Instance UID or cannot be encoded.
pub fn to_part10_bytes(obj: &InMemDicomObject) -> Result<Vec<u8>> {
    let file = obj
        .clone()
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .implementation_class_uid(implementation_class_uid())
                .implementation_version_name(IMPLEMENTATION_VERSION_NAME),
        )
        .map_err(|e| Error::Dicom(format!("file meta information: {e}")))?;
    let mut out = Vec::new();
    file.write_all(&mut out)
        .map_err(|e| Error::Dicom(e.to_string()))?;
    Ok(out)
}

/// Writes `obj` to `path` as a Part-10 file: to a temporary name in the same directory,
/// flushed to disk, then renamed into place, so a reader never sees a partial file.
///
/// # Errors
///
/// [`Error::Dicom`] for encoding failures, [`Error::Io`] for file system failures.
pub fn write_part10(obj: &InMemDicomObject, path: &Path) -> Result<()> {
    let bytes = to_part10_bytes(obj)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".partial-{}-{name}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        file.write_all(&bytes).map_err(|e| Error::io(&tmp, e))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        // Best effort: the original error is what the caller needs to see.
        let _ = fs::remove_file(&tmp);
    }
    result
}
