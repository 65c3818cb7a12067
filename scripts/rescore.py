#!/usr/bin/env python3
"""Re-score a plan's mix independently of trt-mpq: its own image preprocessing and ONNX Runtime sessions,
top-1 agreement with FP32 on the data as given and on replicas with uniform input jitter.

It imports nothing from trt_mpq. The preprocessing is the usual ImageNet one (short side 256, bilinear, centre
crop 224, RGB, mean/std) written separately and normalised in float64 in another order
((pixel - 255 mean) / (255 std)), so it differs from trt-mpq's by float rounding only, the way another
team's preprocessing code would. Each replica adds uniform noise of +-JITTER to every input value of both
models (FP32 and the mix), as another backend's rounding would move them.

    python scripts/rescore.py runs/mnv2 ../shared/models/photos/eval --replicas 10 --min 0.98
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def preprocess(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = 256 / min(w, h)
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        w, h = im.size
        left, top = (w - 224) // 2, (h - 224) // 2
        px = np.asarray(im.crop((left, top, left + 224, top + 224)), dtype=np.float64)
    return ((px - 255.0 * MEAN) / (255.0 * STD)).transpose(2, 0, 1).astype(np.float32)


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # Q/DQ as written, unfused
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def top1(sess: ort.InferenceSession, x: np.ndarray, batch: int = 8) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0].argmax(-1) for i in range(0, len(x), batch)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a trt-mpq run folder with plan.json and model.mixed.onnx")
    parser.add_argument("images", type=Path, help="the evaluation image folder")
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--jitter", type=float, default=1e-6, help="uniform input noise amplitude (default 1e-6)")
    parser.add_argument("--min", type=float, help="exit 1 when any re-scoring agrees on less than this")
    args = parser.parse_args()
    plan = json.loads((args.run_dir / "plan.json").read_text())
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in SUFFIXES)
    x = np.stack([preprocess(p) for p in files])
    fp32, mix = session(Path(plan["model"]["path"])), session(args.run_dir / "model.mixed.onnx")
    counts = {p: sum(1 for u in plan["units"] if u["precision"] == p) for p in ("int8", "fp16", "fp32")}
    print(f"{args.run_dir}: {counts['int8']} INT8, {counts['fp16']} FP16, {counts['fp32']} FP32 units; "
          f"{len(files)} images from {args.images}")
    scores = []
    for k in range(args.replicas + 1):
        noisy = x if k == 0 else (x + np.random.default_rng(k).uniform(-args.jitter, args.jitter, x.shape)
                                  ).astype(np.float32)
        agree = float(np.mean(top1(fp32, noisy) == top1(mix, noisy)))
        scores.append(agree)
        print(f"{'as given' if k == 0 else f'replica {k}':>10s}: agreement {agree:.4f} "
              f"({round((1 - agree) * len(files))} of {len(files)} changed)")
    print(f"worst {min(scores):.4f}, mean {np.mean(scores):.4f} over {len(scores)} re-scorings")
    return 1 if args.min is not None and min(scores) < args.min else 0


if __name__ == "__main__":
    sys.exit(main())
