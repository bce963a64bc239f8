"""PyTorch CPU twin of `onfh-edge analyze`'s networks, for the side-by-side benchmark
(examples/bench_analyze.rs runs this with the same weights, input and thread count).

    python3 reference/bench_twin.py INPUTS.safetensors --threads N --runs R

INPUTS holds `volume` (1, 1, D, H, W) — the detector's input — and `crops` (2, 1, d, h, w),
the two head crops. Times detect + 2 x (stage + Grad-CAM) in eager mode, f32, and prints
one JSON object: median and all times (ms), peak RSS (MiB), and the outputs (detector
head tensor, stage probabilities, heatmaps' sums) for the equality check.
"""
import argparse
import json
import os
import resource
import sys
import time

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from twin import load_model  # noqa: E402


def run(det, stg, volume, crops):
    with torch.no_grad():
        raw = det(volume)
    probs, cams = [], []
    for i in range(crops.shape[0]):
        c = crops[i : i + 1]
        with torch.no_grad():
            f = stg.features(c)
        f = f.detach().requires_grad_(True)
        logits = stg.classify(f)
        p = torch.softmax(logits, dim=1)
        k = int(p.argmax())
        logits[0, k].backward()
        alpha = f.grad.mean(dim=(2, 3, 4), keepdim=True)
        cam = torch.relu((alpha * f).sum(dim=1, keepdim=True))
        cam = torch.nn.functional.interpolate(cam, size=c.shape[2:], mode="trilinear", align_corners=False)
        cam = cam / cam.max().clamp_min(1e-12)
        probs.append(p.detach()[0].tolist())
        cams.append(float(cam.sum()))
    return raw, probs, cams


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("inputs")
    ap.add_argument("--models", default="models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    det, _ = load_model(os.path.join(a.models, "3dc-yolox-small.json"))
    stg, _ = load_model(os.path.join(a.models, "3d-muldensenet-small.json"))
    t = load_file(a.inputs)
    volume, crops = t["volume"].float(), t["crops"].float()
    run(det, stg, volume, crops)  # warm-up
    times = []
    for _ in range(a.runs):
        t0 = time.perf_counter()
        raw, probs, cams = run(det, stg, volume, crops)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    print(json.dumps({
        "torch": torch.__version__,
        "threads": a.threads,
        "median_ms": times[len(times) // 2],
        "times_ms": times,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "detector_output": raw.flatten().tolist(),
        "probabilities": probs,
        "heatmap_sums": cams,
    }))


if __name__ == "__main__":
    main()
