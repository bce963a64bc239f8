"""The peer of examples/bench_export.rs: highdicom builds the same two heavy result objects
(binary SEG of both heads, uint16 Parametric Map of the heatmap) from the same analysed T2,
heatmap NIfTI and analysis JSON, and writes them; prints one JSON line of timings.

usage: bench_export_twin.py T2_DIR ANALYSIS_JSON HEATMAP_NIFTI OUT_DIR RUNS

Only construction and writing are timed (reading the inputs is not). highdicom is the
reference implementation the project's objects are checked against (tests/fixtures/
pacs_check.py); this is a speed comparison, not a second check.
"""

import json
import pathlib
import statistics
import sys
import time

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code


def main():
    t2_dir, analysis_path, heat_path, out_dir = map(pathlib.Path, sys.argv[1:5])
    runs = int(sys.argv[5])
    analysis = json.loads(analysis_path.read_text())
    src = []
    for p in t2_dir.rglob("*"):
        if p.is_file():
            try:
                ds = pydicom.dcmread(p)
            except Exception:
                continue
            if ds.get("SeriesInstanceUID") == analysis["series_instance_uid"]:
                # highdicom copies these type 2 attributes; the phantom leaves some out.
                for attr in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                             "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                             "ReferringPhysicianName"):
                    if attr not in ds:
                        setattr(ds, attr, "")
                src.append(ds)
    iop = np.array(src[0].ImageOrientationPatient, dtype=float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    src.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, float))))
    n, rows, cols = len(src), src[0].Rows, src[0].Columns
    dr, dc = (float(v) for v in src[0].PixelSpacing)

    # Voxel centres in LPS mm, (frames, rows, columns, 3).
    origins = np.array([d.ImagePositionPatient for d in src], float)
    r = np.arange(rows)[:, None, None] * dr * col
    c = np.arange(cols)[None, :, None] * dc * row
    lps = origins[:, None, None, :] + (r + c)[None]
    mask = np.zeros((n, rows, cols), np.uint8)
    for number, head in enumerate(analysis["heads"], start=1):
        lo, hi = np.array(head["bbox_lps_mm"][0]), np.array(head["bbox_lps_mm"][1])
        centre, radius = (lo + hi) / 2, (hi - lo).min() / 2
        mask[np.linalg.norm(lps - centre, axis=-1) <= radius] = number

    heat = np.asarray(nib.load(heat_path).dataobj, dtype=np.float64)
    heat16 = np.round(np.transpose(np.clip(heat, 0, 1), (2, 1, 0)) * 65535).astype(np.uint16)

    algo = hd.AlgorithmIdentificationSequence(
        name="onfh-edge", family=codes.cid7162.ArtificialIntelligence, version="0.1.0"
    )
    common = dict(
        manufacturer="onfh-edge",
        manufacturer_model_name="onfh-edge",
        software_versions="0.1.0",
        device_serial_number="EDGE-0001",
    )

    def segment(number, label, side):
        d = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=codes.SCT.FemoralHead,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
            tracking_uid=hd.UID(),
            tracking_id=label,
        )
        d.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept.from_code(side)
        ]
        return d

    gradcam = Code("GRADCAM", "99ONFH", "Grad-CAM saliency")
    rwvm = hd.pm.RealWorldValueMapping(
        lut_label="GRADCAM",
        lut_explanation="Grad-CAM saliency 0..1",
        unit=codes.UCUM.NoUnits,
        value_range=(0, 65535),
        slope=1 / 65535,
        intercept=0,
        quantity_definition=gradcam,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        seg = hd.seg.Segmentation(
            source_images=src,
            pixel_array=mask,
            segmentation_type="BINARY",
            segment_descriptions=[
                segment(1, "Right femoral head", codes.SCT.Right),
                segment(2, "Left femoral head", codes.SCT.Left),
            ],
            series_instance_uid=hd.UID(),
            series_number=9901,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            **common,
        )
        seg.save_as(out_dir / "seg.dcm")
        pm = hd.pm.ParametricMap(
            source_images=src,
            pixel_array=heat16,
            series_instance_uid=hd.UID(),
            series_number=9902,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[rwvm],
            voi_lut_transformations=[
                hd.VOILUTTransformation(window_center=32767, window_width=65535)
            ],
            content_label="GRADCAM",
            **common,
        )
        pm.save_as(out_dir / "pm.dcm")
        times.append((time.perf_counter() - t) * 1000)
    print(json.dumps({"seg_pm_ms": statistics.median(times), "runs": runs}))


if __name__ == "__main__":
    main()
