"""Writes one large multi-frame DICOM object, streamed to disk (memory stays at one chunk).

Usage: make_multiframe.py OUT BYTES

A Multi-frame Grayscale Word Secondary Capture Image (16-bit, 512 x 512 frames, Explicit VR
Little Endian) whose Pixel Data holds BYTES rounded down to whole frames (at least one). Each
frame is filled with its own index, so a truncated or reordered copy is detectable. pydicom
writes the header; the Pixel Data element's header and its value are written here in chunks,
so a 2 GB object needs no 2 GB of RAM. Prints the file size on stdout.

Used by scripts/bench-ingest.sh (the 2 GB receive) and appliance/tests/dicom_serve.rs (the
bounded-memory test).
"""

import io
import struct
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MULTIFRAME_GRAYSCALE_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
ROWS = COLUMNS = 512
FRAME_BYTES = ROWS * COLUMNS * 2
# The Pixel Data length field is 32 bits and 0xFFFFFFFF means "undefined".
MAX_PIXEL_BYTES = 0xFFFFFFFE - (0xFFFFFFFE % FRAME_BYTES)


def header(frames):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MULTIFRAME_GRAYSCALE_WORD_SC
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MULTIFRAME_GRAYSCALE_WORD_SC
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.PatientName = "BENCH^MULTIFRAME"
    ds.PatientID = "BENCH-0001"
    ds.StudyDate = "20260101"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 1.0
    ds.Rows = ROWS
    ds.Columns = COLUMNS
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def main():
    out, want = sys.argv[1], int(sys.argv[2])
    frames = max(1, min(want, MAX_PIXEL_BYTES) // FRAME_BYTES)
    pixel_bytes = frames * FRAME_BYTES
    with open(out, "wb") as f:
        f.write(header(frames))
        # (7FE0,0010) OB/OW, explicit VR: tag, "OW", two reserved bytes, 32-bit length.
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes))
        frame = np.empty(ROWS * COLUMNS, dtype="<u2")
        for i in range(frames):
            frame.fill(i & 0xFFFF)
            f.write(frame.tobytes())
        size = f.tell()
    print(size)


if __name__ == "__main__":
    main()
