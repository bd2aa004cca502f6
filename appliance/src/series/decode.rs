//! Pixel data of every slice, decoded in parallel straight into the volume's buffer.
//!
//! Each file is opened, decoded and dropped by one worker, so at most one data set per worker
//! thread is in memory besides the output buffer. Encapsulated syntaxes (JPEG, JPEG 2000,
//! RLE) go through dicom-pixeldata's registered decoders frame by frame; native pixel data is
//! read from the element in place, without the per-frame copy of the whole pixel data that
//! dicom-pixeldata's native path makes (quadratic for large multi-frame files). dicom-object
//! holds native values in host byte order (it swaps big-endian data sets on reading; OB bytes
//! are little endian as on the wire), so the loader assumes a little-endian host, as every
//! platform the appliance ships on is.
//!
//! Stored values become `f32` as `stored × slope + intercept` (computed in f64), where the
//! stored value is the low Bits Stored bits of each sample, sign-extended when Pixel
//! Representation is 1 — the Modality LUT of PS3.3 C.11.1 as DCMTK and pydicom apply it.

use std::path::Path;

use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use rayon::prelude::*;

use super::SeriesError;
use super::error::error_chain;
use super::header::{FrameHeader, ImageFile};
use super::stack::Slice;

/// How the stored samples are laid out (read from the data set being decoded).
#[derive(Debug, Clone, Copy)]
struct SampleFormat {
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
}

impl SampleFormat {
    fn read(obj: &InMemDicomObject, path: &Path) -> Result<Self, SeriesError> {
        let get = |tag, name: &str| -> Result<u16, SeriesError> {
            obj.element_opt(tag)
                .ok()
                .flatten()
                .and_then(|e| e.to_int::<u16>().ok())
                .ok_or_else(|| SeriesError::MissingAttribute {
                    file: path.to_owned(),
                    attribute: name.to_owned(),
                })
        };
        let samples = get(tags::SAMPLES_PER_PIXEL, "Samples per Pixel (0028,0002)")?;
        if samples != 1 {
            return Err(SeriesError::InvalidAttribute {
                file: path.to_owned(),
                attribute: "Samples per Pixel (0028,0002)".into(),
                detail: format!("{samples}: CT and MR volumes are monochrome (1 sample)"),
            });
        }
        let bits_allocated = get(tags::BITS_ALLOCATED, "Bits Allocated (0028,0100)")?;
        let bits_stored = get(tags::BITS_STORED, "Bits Stored (0028,0101)")?;
        let pixel_representation = get(
            tags::PIXEL_REPRESENTATION,
            "Pixel Representation (0028,0103)",
        )?;
        if !matches!(bits_allocated, 8 | 16 | 32)
            || bits_stored == 0
            || bits_stored > bits_allocated
        {
            return Err(SeriesError::InvalidAttribute {
                file: path.to_owned(),
                attribute: "Bits Allocated/Bits Stored (0028,0100)/(0028,0101)".into(),
                detail: format!(
                    "{bits_allocated}/{bits_stored}: 8, 16 or 32 bits allocated and at most as \
                     many stored are supported"
                ),
            });
        }
        Ok(SampleFormat {
            bits_allocated,
            bits_stored,
            signed: pixel_representation == 1,
        })
    }

    /// The value of a raw sample: its low `bits_stored` bits, sign-extended when signed.
    fn value(self, raw: u32) -> f64 {
        let unused = 32 - u32::from(self.bits_stored);
        if self.signed {
            f64::from(((raw << unused) as i32) >> unused)
        } else {
            f64::from((raw << unused) >> unused)
        }
    }
}

/// Decodes every slice into `out` (`slice_len` values per slice, slices in `slices` order).
///
/// Runs on the current rayon pool: files in parallel, and the frames of a multi-frame file in
/// parallel over one shared data set.
///
/// # Errors
///
/// The first failure met: [`SeriesError::Io`]/[`SeriesError::Decode`] for a file that cannot
/// be read or decoded, [`SeriesError::UnsupportedTransferSyntax`],
/// [`SeriesError::MixedSize`] when the pixel data does not have the header's size.
pub(crate) fn decode_into(
    files: &[ImageFile],
    slices: &[Slice],
    out: &mut [f32],
    slice_len: usize,
) -> Result<(), SeriesError> {
    debug_assert_eq!(out.len(), slices.len() * slice_len);
    let mut by_file: Vec<Vec<(usize, &mut [f32])>> = (0..files.len()).map(|_| Vec::new()).collect();
    for (chunk, s) in out.chunks_mut(slice_len).zip(slices) {
        by_file[s.file].push((s.frame, chunk));
    }
    by_file
        .into_par_iter()
        .enumerate()
        .filter(|(_, frames)| !frames.is_empty())
        .try_for_each(|(i, frames)| decode_file(&files[i], frames))
}

/// Opens one file in full, decodes the requested frames into their chunks, drops the file.
fn decode_file(file: &ImageFile, frames: Vec<(usize, &mut [f32])>) -> Result<(), SeriesError> {
    let path = file.path.as_path();
    let obj = OpenFileOptions::new().open_file(path).map_err(|e| {
        SeriesError::decode(
            path,
            format!("cannot read the data set: {}", error_chain(&e)),
        )
    })?;
    // The header scan already checked it; a file replaced since must not slip through.
    super::header::check_transfer_syntax(path, obj.meta().transfer_syntax())?;
    let format = SampleFormat::read(&obj, path)?;
    let pixels = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .ok_or_else(|| SeriesError::MissingAttribute {
            file: path.to_owned(),
            attribute: "Pixel Data (7FE0,0010)".into(),
        })?;
    let n_frames = file.frames.len();
    let frame_len = usize::from(file.rows) * usize::from(file.columns);
    match pixels.value() {
        Value::Primitive(p) => {
            // Zero-copy for byte and word values: dicom-object holds them in native order.
            let bytes = p.to_bytes();
            let width = usize::from(format.bits_allocated / 8);
            if bytes.len() < frame_len * n_frames * width {
                return Err(SeriesError::decode(
                    path,
                    format!(
                        "native Pixel Data holds {} bytes, fewer than {} rows × {} columns × \
                         {n_frames} frame(s) of {} bits",
                        bytes.len(),
                        file.rows,
                        file.columns,
                        format.bits_allocated
                    ),
                ));
            }
            frames.into_par_iter().for_each(|(frame, chunk)| {
                let start = frame * frame_len * width;
                let frame_bytes = &bytes[start..start + frame_len * width];
                convert(frame_bytes, format, &file.frames[frame], chunk);
            });
            Ok(())
        }
        Value::PixelSequence(_) => frames
            .into_par_iter()
            .try_for_each(|(frame, chunk)| decode_encapsulated(&obj, file, format, frame, chunk)),
        Value::Sequence(_) => Err(SeriesError::decode(
            path,
            "Pixel Data (7FE0,0010) is a sequence, not pixel data",
        )),
    }
}

/// Decodes one frame of encapsulated pixel data with the registered decoder.
fn decode_encapsulated(
    obj: &FileDicomObject<InMemDicomObject>,
    file: &ImageFile,
    format: SampleFormat,
    frame: usize,
    chunk: &mut [f32],
) -> Result<(), SeriesError> {
    let path = file.path.as_path();
    let decoded = obj.decode_pixel_data_frame(frame as u32).map_err(|e| {
        SeriesError::decode(path, format!("frame {}: {}", frame + 1, error_chain(&e)))
    })?;
    if (decoded.rows(), decoded.columns()) != (u32::from(file.rows), u32::from(file.columns)) {
        return Err(SeriesError::MixedSize {
            file: path.to_owned(),
            detail: format!(
                "decoded frame {} is {} × {} pixels, the header says {} × {}",
                frame + 1,
                decoded.rows(),
                decoded.columns(),
                file.rows,
                file.columns
            ),
        });
    }
    if decoded.samples_per_pixel() != 1 || decoded.bits_allocated() != format.bits_allocated {
        return Err(SeriesError::decode(
            path,
            format!(
                "decoded frame {} has {} sample(s) of {} bits, expected 1 of {}",
                frame + 1,
                decoded.samples_per_pixel(),
                decoded.bits_allocated(),
                format.bits_allocated
            ),
        ));
    }
    let bytes = decoded
        .frame_data(0)
        .map_err(|e| SeriesError::decode(path, format!("frame {}: {e}", frame + 1)))?;
    let width = usize::from(format.bits_allocated / 8);
    if bytes.len() < chunk.len() * width {
        return Err(SeriesError::decode(
            path,
            format!("frame {} decoded to too few bytes", frame + 1),
        ));
    }
    convert(bytes, format, &file.frames[frame], chunk);
    Ok(())
}

/// Converts one frame of samples (native byte order, `bits_allocated / 8` bytes each) into
/// `value × slope + intercept`, computed in f64 and stored as f32.
fn convert(bytes: &[u8], format: SampleFormat, h: &FrameHeader, chunk: &mut [f32]) {
    let width = usize::from(format.bits_allocated / 8);
    for (v, b) in chunk.iter_mut().zip(bytes.chunks_exact(width)) {
        let raw = match width {
            1 => u32::from(b[0]),
            2 => u32::from(u16::from_ne_bytes([b[0], b[1]])),
            _ => u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        };
        *v = (format.value(raw) * h.slope + h.intercept) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_bits_are_masked_and_sign_extended() {
        let signed12 = SampleFormat {
            bits_allocated: 16,
            bits_stored: 12,
            signed: true,
        };
        assert_eq!(signed12.value(0x0FFF), -1.0);
        assert_eq!(signed12.value(0x07FF), 2047.0);
        assert_eq!(signed12.value(0xF800), -2048.0);
        let unsigned12 = SampleFormat {
            signed: false,
            ..signed12
        };
        assert_eq!(unsigned12.value(0xF123), 0x123 as f64);
        let signed16 = SampleFormat {
            bits_allocated: 16,
            bits_stored: 16,
            signed: true,
        };
        assert_eq!(signed16.value(u32::from(-1024_i16 as u16)), -1024.0);
    }
}
