"""DICOM whole-slide images written at test time (pydicom): one tiled, uncompressed VOLUME
instance per series, as OpenSlide reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MPP = 0.5


def write_series(path: Path, rgb: np.ndarray, series_uid: str, study_uid: str, frame_uid: str,
                 tile: int = 128, image_type: str = "VOLUME") -> Path:
    """Write ``rgb`` (H x W x 3 uint8) as one TILED_FULL instance of series ``series_uid``."""
    h, w, _ = rgb.shape
    rows, cols = -(-h // tile), -(-w // tile)
    frames = []
    for r in range(rows):
        for c in range(cols):
            f = np.full((tile, tile, 3), 255, np.uint8)
            part = rgb[r*tile:(r+1)*tile, c*tile:(c+1)*tile]
            f[:part.shape[0], :part.shape[1]] = part
            frames.append(f.tobytes())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset(); ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID; ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid; ds.SeriesInstanceUID = series_uid; ds.FrameOfReferenceUID = frame_uid
    ds.Modality = "SM"; ds.ImageType = ["ORIGINAL", "PRIMARY", image_type, "NONE"]
    ds.PatientName = "Test"; ds.PatientID = "1"; ds.ContainerIdentifier = "1"
    ds.Manufacturer = "test"; ds.SeriesNumber = 1; ds.InstanceNumber = 1
    ds.Rows = tile; ds.Columns = tile; ds.NumberOfFrames = len(frames)
    ds.TotalPixelMatrixColumns = w; ds.TotalPixelMatrixRows = h
    ds.TotalPixelMatrixFocalPlanes = 1; ds.NumberOfOpticalPaths = 1
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.SamplesPerPixel = 3; ds.PhotometricInterpretation = "RGB"; ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8; ds.BitsStored = 8; ds.HighBit = 7; ds.PixelRepresentation = 0
    ds.ImagedVolumeWidth = w * MPP / 1000; ds.ImagedVolumeHeight = h * MPP / 1000; ds.ImagedVolumeDepth = 0.001
    pm = Dataset(); pm.PixelSpacing = [MPP / 1000, MPP / 1000]; pm.SliceThickness = 0.001
    sfg = Dataset(); sfg.PixelMeasuresSequence = Sequence([pm])
    ds.SharedFunctionalGroupsSequence = Sequence([sfg])
    op = Dataset(); op.OpticalPathIdentifier = "1"
    ds.OpticalPathSequence = Sequence([op])
    ds.PixelData = b"".join(frames)
    ds.save_as(path, enforce_file_format=True)
    return path


def two_series_folder(folder: Path, rgb: np.ndarray) -> list[Path]:
    """Two slides (two series of one study) from two crops of ``rgb``, side by side in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    study, frame = generate_uid(), generate_uid()
    crops = (rgb[:512, :512], rgb[-512:, -512:])
    return [write_series(folder / f"series-{k}.dcm", crop, generate_uid(), study, frame) for k, crop in enumerate(crops)]

