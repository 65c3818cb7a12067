#!/usr/bin/env python3
"""This checkout against another (an older commit) on the same commands, side by side in one run.

Each case runs as a user would (`trt-mpq ...` in a fresh process, its own output folder), once with each code
tree, alternating, and prints wall time, peak RSS and the ratio. These 2-core machines are shared and noisy:
only the ratios of one run mean much. ``--rounds N`` runs each case N times with each tree, the order swapped
every round (A B, B A, ...: a machine slowing down over the run favours neither), and prints every round's
ratio and the ratio of the total times. Make the other tree with `git worktree add /tmp/base <commit>`.

Cases (real models and data of ../shared/models):
  mnv2-int8     analyze MobileNetV2 on the 72 calibration photos, --precisions int8 (defaults otherwise)
  minilm        analyze MiniLM-L6 on the 256 calibration sentences (defaults)
  ppocr         analyze PP-OCRv4 det at 640x640 on 16 samples of noise (defaults otherwise)
  mnv2-run      run MobileNetV2: photos/calib, photos/eval, --metric agreement --max-drop 0.02
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "models"
PRE = ROOT / "examples" / "preprocess" / "mobilenetv2_imagenet.json"
PROBE = ("import resource, sys; from trt_mpq.cli import main; code = main(sys.argv[1:]); "
         "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")

CASES = {
    "mnv2-int8": ["analyze", f"{SHARED}/mobilenetv2_imagenet.onnx", "--calib", f"{SHARED}/photos/calib",
                  "--preprocess", str(PRE), "--precisions", "int8"],
    "minilm": ["analyze", f"{SHARED}/minilm/minilm_l6.onnx", "--calib", f"{SHARED}/minilm/minilm_calib.npz"],
    "ppocr": ["analyze", f"{SHARED}/ppocrv4_det.onnx", "--shape", "x:1x3x640x640", "--calib", "{noise}"],
    "mnv2-run": ["run", f"{SHARED}/mobilenetv2_imagenet.onnx", "--calib", f"{SHARED}/photos/calib",
                 "--eval", f"{SHARED}/photos/eval", "--preprocess", str(PRE), "--metric", "agreement",
                 "--max-drop", "0.02"],
}


def noise_file(folder: Path) -> Path:
    """PP-OCRv4's 16 noise samples, written once by this tree, so both trees analyse the same file (this tree
    would otherwise synthesize data for a model that keeps BatchNorm statistics, where older ones drew noise)."""
    path, made = folder / "ppocr_noise.npz", folder / "made.npz"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "trt_mpq.cli", "generate", f"{SHARED}/ppocrv4_det.onnx", "--out",
                        str(made), "--method", "noise", "--samples", "16", "--shape", "x:1x3x640x640"],
                       check=True, capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        with np.load(made) as arrays:  # the inputs alone: older trees refuse the record of how it was made
            np.savez(path, x=arrays["x"])
    return path


def run_once(tree: Path, args: list[str], out: Path) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, the last line printed) of one command with trt_mpq imported from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-c", PROBE, *args, "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {' '.join(args[:2])} failed: {done.stderr.strip()[-2000:]}")
    kb = int(next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("MAXRSS_KB")))
    lines = [ln for ln in done.stdout.splitlines() if ln.strip() and not ln.startswith("MAXRSS_KB")]
    return seconds, kb / 1024, (lines[-1] if lines else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout (its root folder)")
    parser.add_argument("cases", nargs="*", help=f"any of {', '.join(CASES)} (default: all)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each case with each tree, order swapped "
                        "every round (default 1)")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"needs the real models in {SHARED}", file=sys.stderr)
        return 2
    if not (args.baseline / "trt_mpq" / "__init__.py").exists():
        print(f"{args.baseline} is not a trt-mpq checkout", file=sys.stderr)
        return 2
    base = subprocess.run(["git", "-C", str(args.baseline), "log", "-1", "--format=%h %s"], capture_output=True,
                          text=True).stdout.strip()[:70]
    print(f"baseline: {args.baseline} ({base})\nthis:     {ROOT}")
    print(f"\n{'case':10s} {'baseline s':>11s} {'this s':>8s} {'faster':>7s} {'base MB':>8s} {'this MB':>8s}")
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case {', '.join(unknown)}; choose from {', '.join(CASES)}")
    with tempfile.TemporaryDirectory(prefix="trt-mpq-versions-inputs-") as inputs:
        for name in args.cases or list(CASES):
            compare(name, [str(noise_file(Path(inputs))) if a == "{noise}" else a for a in CASES[name]],
                    args.baseline, args.rounds)
    return 0


def compare(name: str, case: list[str], baseline: Path, rounds: int) -> None:
    """``case`` run by both trees ``rounds`` times (the order swapped every round), one line per round."""
    olds, news = [], []
    for k in range(max(1, rounds)):
        with tempfile.TemporaryDirectory(prefix="trt-mpq-versions-") as tmp:
            if k % 2:  # every other round this tree first
                new = run_once(ROOT, case, Path(tmp) / "this")
                old = run_once(baseline, case, Path(tmp) / "base")
            else:
                old = run_once(baseline, case, Path(tmp) / "base")
                new = run_once(ROOT, case, Path(tmp) / "this")
        olds.append(old), news.append(new)
        label = name if rounds <= 1 else f"{name} #{k + 1}"
        print(f"{label:10s} {old[0]:11.1f} {new[0]:8.1f} {old[0] / new[0]:6.2f}x {old[1]:8.0f} {new[1]:8.0f}",
              flush=True)
        for who, r in (("baseline", old), ("this", new)):
            if r[2]:
                print(f"    {who}: {r[2][:150]}")
    if len(olds) > 1:
        base_s, this_s = sum(o[0] for o in olds), sum(n[0] for n in news)
        print(f"{name + ' all':10s} {base_s:11.1f} {this_s:8.1f} {base_s / this_s:6.2f}x "
              f"{max(o[1] for o in olds):8.0f} {max(n[1] for n in news):8.0f}  (totals; peaks)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
