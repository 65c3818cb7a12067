"""``trt-mpq``: argparse -> typed options -> one library call per command. The one place that knows flag
names and exit codes (0 done, 1 internal error, 2 the user's input, 3 the engine differs from the plan)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path

from . import __version__
from .artifacts import Budget, CheckRow
from .backends import backend_names
from .backends.arguments import add_backend_flags, backend_options
from .commands.analyze import AnalyzeOptions, analyze, inspect_model
from .commands.build import BuildOptions, build
from .commands.check import check
from .commands.generate import METHODS as GENERATE_METHODS
from .commands.generate import GenerateOptions, generate
from .commands.plan import PlanOptions, plan
from .commands.run import run
from .errors import TrtMpqError
from .measure.task_metric import TASK_METRICS
from .network.model import parse_shapes
from .precision import Precision, precision_files
from .quant.ranges import CALIBRATORS, WEIGHT_SCALES
from .search.cost import GPUS

EPILOG = """examples:
  trt-mpq inspect model.onnx
  trt-mpq analyze model.onnx --out runs/a                       # generated calibration data
  trt-mpq analyze mobilenetv2.onnx --out runs/m --calib photos/ --preprocess pre.json
  trt-mpq analyze mobilenetv2.onnx --out runs/n --preprocess pre.json    # no data: generated images
  trt-mpq analyze det.onnx --out runs/d --shape x:1x3x640x640 --precisions int8

Re-running an interrupted 'analyze' with the same arguments resumes where it stopped.
Docs: README.md (method, output schema, what is verified)."""
RUN_EPILOG = """examples:
  trt-mpq run mobilenetv2.onnx --out runs/m --calib photos/calib --eval photos/eval --preprocess pre.json \\
      --metric agreement --max-drop 0.02 --target t4
Re-running the same command resumes: finished per-unit measurements are not repeated."""
PLAN_EPILOG = """examples:
  trt-mpq plan runs/digits --eval digits_eval.npz --metric accuracy --max-drop 0.005
  trt-mpq plan runs/mnv2 --eval photos/eval --preprocess pre.json --metric agreement --max-drop 0.02 --target t4
  trt-mpq plan runs/mnv2 --eval photos/eval --preprocess pre.json --min-speedup 1.5 --speedup-vs fp16"""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other trt-mpq error
        self.exit(2, f"trt-mpq: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="trt-mpq",
        description="Measure how sensitive each layer of an FP32 ONNX network is to INT8/FP16, to plan a "
        "mixed-precision TensorRT engine. Runs on the CPU (ONNX Runtime) with no GPU needed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"trt-mpq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("inspect", help="list inputs, outputs and the units (fusable layer groups) of a model",
                       description="Show a model's inputs and outputs, the units trt-mpq found (each with the ONNX "
                       "nodes it covers), where every other op stands and why it is no precision decision, "
                       "and the layers it skipped, with the reason.")
    p.add_argument("model", help="FP32 ONNX model (external weight files next to it are found)")
    p.add_argument("--shape", action="append", default=[], metavar="NAME:DIMS", help=SHAPE_HELP)
    p.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE", help=FIX_HELP)
    p.add_argument("--ops", action="store_true", help="also list every op with the unit that holds it")

    p = sub.add_parser("analyze", help="measure per-unit sensitivity to INT8/FP16; writes DIR/sensitivity.json",
                       description="For every unit and precision, run the calibration data through the FP32 model "
                       "and a copy where only that unit is lowered, and report how much the outputs move "
                       "(cosine, SQNR, normalised MSE, max abs error, top-1 agreement).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="FP32 ONNX model")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; resumable cache inside)")
    _analysis_args(p, "analyze")
    p.add_argument("--top", type=_positive, metavar="K", help="show only the K most sensitive units")

    g = GenerateOptions()
    p = sub.add_parser("generate", help="write generated calibration data to a .npz (when you have no dataset)",
                       description="Generate calibration data from the model alone and write it to a .npz "
                       "(one array per input, and how it was made) to pass to --calib later.",
                       epilog="examples:\n  trt-mpq generate mobilenetv2.onnx --out calib.npz --method synthesized "
                       "--preprocess pre.json --samples 64", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="FP32 ONNX model")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="the file to write (whole or not at all)")
    p.add_argument("--method", choices=GENERATE_METHODS, help="generated (the default): the one of the others "
                   "that the model calls for, as an analysis without data takes it; noise: shaped like "
                   "the inputs, integer indices inside their tables; pink-and-leaves: pink-noise and textured "
                   "dead-leaves images in turns (needs --preprocess; the closest to photos' "
                   "thresholds); pink-noise: images with photos' 1/f^a spectrum, correlated colour, varied and local "
                   "contrast, drawn in pixel space (needs --preprocess); dead-leaves: occluding disks (needs "
                   "--preprocess); "
                   "synthesized: optimised through the "
                   "model toward its BatchNorm statistics and confident, diverse classes (needs "
                   "trt-mpq[datagen])")
    p.add_argument("--samples", type=_positive, default=g.samples, help=f"how many (default {g.samples})")
    p.add_argument("--seed", type=int, default=g.seed, help="the same seed gives the same data")
    p.add_argument("--preprocess", metavar="FILE", help="the model's image preprocessing (JSON/YAML), as for "
                   "an image folder: generated images are normalised exactly as photos would be")
    p.add_argument("--shape", action="append", default=[], metavar="NAME:DIMS", help=SHAPE_HELP)
    p.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                   help="as analyze's --fix: data for the model specialised on this input value (no array for it)")
    p.add_argument("--quiet", action="store_true", help="no progress display")

    p = sub.add_parser("plan", help="choose every unit's precision under a budget, verified on held-out data",
                       description="From a finished 'analyze' run in DIR: find the fastest mix of precisions whose "
                       "measured metric on the evaluation data meets the budget (integer program + measured "
                       "verification). Writes DIR/plan.json, DIR/model.mixed.onnx, DIR/trtexec.txt, "
                       "DIR/report.json.", epilog=PLAN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", metavar="DIR", help="the --out folder of a finished 'trt-mpq analyze'")
    p.add_argument("--preprocess", metavar="FILE", help="preprocessing for an image folder given with --eval")
    _plan_args(p)
    p.add_argument("--batch", type=_positive, default=PLAN_DEFAULTS["batch"], metavar="B",
                   help="evaluation batch size")
    _cluster_args(p)
    p.add_argument("--backend", choices=backend_names(), help="where the plan is verified (default: the backend "
                   "the analysis used)")
    p.add_argument("--quiet", action="store_true", help="no log lines, only the summary")

    p = sub.add_parser("check", help="compare the planned precisions with what a built TensorRT engine really runs",
                       description="Read the layer info of an engine built from DIR/model.mixed.onnx (trtexec "
                       "--exportLayerInfo with --profilingVerbosity=detailed, as DIR/trtexec.txt does) and list every "
                       "unit whose realised precision differs from the plan. Exit code 3 when any differs.")
    p.add_argument("dir", metavar="DIR", help="the folder of a finished 'trt-mpq plan' or 'run'")
    p.add_argument("--layer-info", required=True, metavar="FILE", help="trtexec --exportLayerInfo output")

    p = sub.add_parser("build", help="build the planned mix into a TensorRT engine and check what it realised",
                       description="Build DIR/model.mixed.onnx (written by 'plan' or 'run') into DIR/model.engine "
                       "with TensorRT (strongly typed, TF32 off, the run's timing cache), write the engine "
                       "inspector's DIR/layers.json and DIR/build.log, and list every unit whose realised precision "
                       "differs from the plan. Exit code 3 when any differs. Needs an NVIDIA GPU and TensorRT.")
    p.add_argument("dir", metavar="DIR", help="the folder of a finished 'trt-mpq plan' or 'run'")
    builders = backend_names(builds_engines=True)
    p.add_argument("--backend", default=builders[0], choices=builders,
                   help=f"engine builder (default {builders[0]})")
    add_backend_flags(p, "build")
    p.add_argument("--batch", type=_positive, metavar="N",
                   help="largest batch the engine accepts (default: the plan's --latency-batch)")
    p.add_argument("--typing", default="strong", choices=["strong", "weak"],
                   help="strong (default): model.mixed.onnx, precision from its Q/DQ and Casts (TensorRT 10.x/11.x); "
                   "weak (TensorRT 10.x only): model.weak.onnx, INT8 from its Q/DQ, the FP16/FP32 units' layers "
                   "pinned under precision constraints 'obey'")
    p.add_argument("--quiet", action="store_true", help="no log lines, only the result")

    p = sub.add_parser("run", help="analyze, plan and verify in one command (resumes finished work)",
                       description="'analyze' then 'plan' in one command: per-unit sensitivity on --calib, the "
                       "fastest mix meeting the budget verified on --eval, and the artifacts in DIR.",
                       epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="FP32 ONNX model")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; resumable cache inside)")
    _analysis_args(p, "run")
    _plan_args(p)
    p.add_argument("--typing", default="strong", choices=["strong", "weak"],
                   help="with --backend tensorrt, how the final engine is built (see 'build --help')")
    return parser


SHAPE_HELP = "fix a dynamic input shape, trtexec syntax, e.g. x:1x3x640x640 (repeatable)"
FIX_HELP = ("fix an input to the value the deployment always feeds, e.g. sr=16000 (repeatable): the model is "
            "specialised, and an If on it becomes the branch it takes, so the layers inside get units; the "
            "engine built from the plan has no such input")
PLAN_DEFAULTS = {f.name: f.default for f in fields(PlanOptions)}


def _analysis_args(p: argparse.ArgumentParser, command: str) -> None:
    d = AnalyzeOptions()
    precisions = ",".join(p.value for p in d.precisions)
    p.add_argument("--calib", metavar="PATH", help=".npz (one array per input name, samples first; or pick arrays: "
                   "FILE.npz:input=x_train), .npy, a folder of them, or a folder of images (with --preprocess). "
                   "Or generated data: 'generated' (the default: synthesized for a model that keeps BatchNorm "
                   "statistics when trt-mpq[datagen] is installed, else pink-and-leaves with --preprocess, else "
                   "noise; the log says which and why), 'noise' (shaped like the inputs, integer indices inside "
                   "their tables), 'pink-and-leaves' (pink-noise and textured dead-leaves images in turns, one kind "
                   "per image), 'pink-noise' (images with photos' 1/f^a spectrum and local contrast, drawn in "
                   "pixel space), 'dead-leaves' (occluding disks; the three need --preprocess), "
                   "'synthesized' (optimised "
                   "through the model toward its BatchNorm statistics and confident, diverse classes; needs "
                   "trt-mpq[datagen]). 'trt-mpq generate' writes any of them to a .npz for reuse")
    p.add_argument("--preprocess", metavar="FILE", help="JSON/YAML for image folders: resize, crop, scale, mean, "
                   "std, layout (nchw|nhwc), color (rgb|bgr|gray); without --calib, generated images are "
                   "preprocessed with it")
    p.add_argument("--shape", action="append", default=[], metavar="NAME:DIMS", help=SHAPE_HELP)
    p.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE", help=FIX_HELP)
    p.add_argument("--outputs", metavar="NAME,...", help="measure sensitivity at these tensors instead of the "
                   "model's outputs (a backbone's features, logits before an argmax); what does not lead to them "
                   "is left as it is. Default: the outputs, or the inputs of a final TensorRT plugin/custom op "
                   "(e.g. EfficientNMS_TRT) the backend cannot run")
    p.add_argument("--precisions", default=precisions,
                   help="lower precisions to try, any of int8, fp16, bf16, fp8 (E4M3; Ada, Hopper, Blackwell), int4 "
                   f"(weight-only, MatMul/Gemm; Ampere and later) (default {precisions}); fp8 raises the model to "
                   "ONNX opset 19 and int4 to 21")
    p.add_argument("--int4-block", type=int, default=d.int4_block, metavar="N",
                   help=f"INT4 weights per scale along K (default {d.int4_block})")
    p.add_argument("--calibrator", default=d.calibrator, choices=CALIBRATORS,
                   help="INT8 activation thresholds: max, percentile (99.99), entropy (TensorRT's KL method), mse, "
                   "or auto (per tensor, whichever of them, or where they disagree 3x or more a threshold between "
                   "them, moves the model's outputs least with its first reader lowered, tried on 2 batches before "
                   f"the analysis; default {d.calibrator})")
    p.add_argument("--weight-scales", default=d.weight_scales, choices=WEIGHT_SCALES,
                   help="INT8 weight scales per output channel: max, or mse (clipped where the channel's error "
                   f"is least; default {d.weight_scales})")
    p.add_argument("--no-bias-correction", dest="bias_correction", action="store_false",
                   help="do not correct INT8 Conv/Gemm/MatMul biases for the mean shift their quantized weights "
                   "cause (on by default)")
    p.add_argument("--backend", default=d.backend, choices=backend_names(),
                   help="where models run: tensorrt (an NVIDIA GPU), onnxruntime (CPU emulation of the same "
                   "lowered ONNX), onnxruntime-cuda (ONNX Runtime's CUDA provider: a GPU, not TensorRT's "
                   "kernels), or auto (default: tensorrt when a GPU and TensorRT are present, else "
                   "onnxruntime; says which and why)")
    p.add_argument("--samples", type=_positive, metavar="N",
                   help="use the first N samples (default: all given; 16 when generated)")
    p.add_argument("--float-samples", default=d.float_samples, metavar="N|auto|all",
                   help="samples the FP16/BF16/TF32 measurements run on: their errors are roundings, steady across "
                   "samples, so auto (default) takes a spread quarter of the batches, at least 16 samples (8 "
                   "when each sample's outputs hold 100,000 values or more: a dense prediction), at most 32; all: "
                   "every sample; INT8, FP8 and INT4 always use every sample")
    p.add_argument("--batch", type=_positive, default=d.batch, metavar="B", help=f"batch size (default {d.batch})")
    p.add_argument("--seed", type=int, default=d.seed, metavar="S", help="seed for generated data (default 0)")
    _cluster_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress or log lines, only the results")
    add_backend_flags(p, command)


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", type=_positive, metavar="N", help="in this process, N measurements (and N batches of "
                   "a mix being verified) at a time, each session on its share of the cores, or on --ort-threads "
                   "(default: as many as cores allow, at most 4; 1 with a GPU backend). Several single-threaded "
                   "sessions outrun one that spreads each operator over every core: MiniLM-L6 1.26x on 2 cores")
    p.add_argument("--workers", type=_positive, metavar="N", help="spread the work over a local Ray cluster of N "
                   "single-threaded workers (pip install 'trt-mpq[ray]'); the results are the same as in one "
                   "process. Default: one process, every core")
    p.add_argument("--ray-address", metavar="ADDRESS", help="spread it over a running Ray cluster instead (an "
                   "address, or auto: the one 'ray start' made here; RAY_ADDRESS works too). The driver ships the "
                   "model, weights and data: workers need trt-mpq installed, not the files")


def _plan_args(p: argparse.ArgumentParser) -> None:
    d = PLAN_DEFAULTS
    p.add_argument("--eval", required=True, metavar="PATH", help="held-out evaluation data, same formats as --calib; "
                   "an .npz may carry 'labels' (or pick them: FILE.npz:input=x_test,labels=y_test)")
    p.add_argument("--metric", default=d["metric"].value, choices=TASK_METRICS,
                   help=f"what the budget is measured on (default {d['metric'].value}; accuracy needs labels)")
    p.add_argument("--metric-fn", metavar="MODULE:FUNCTION", help="your own metric, fn(outputs, labels) -> float, "
                   "higher is better (runs your code: explicit opt-in)")
    p.add_argument("--max-drop", type=float, metavar="X", help="largest allowed drop of the metric (absolute)")
    p.add_argument("--relative", action="store_true", help="read --max-drop as a fraction of the FP32 score")
    p.add_argument("--max-latency-ms", type=float, metavar="T", help="latency budget (estimated on --target)")
    p.add_argument("--min-speedup", type=float, metavar="S", help="at least S times faster than --speedup-vs")
    p.add_argument("--speedup-vs", default="fp32", choices=("fp32", "fp16"), help="reference for --min-speedup")
    p.add_argument("--max-size-mb", type=float, metavar="M", help="weight size budget")
    p.add_argument("--target", default=d["target"], choices=sorted(GPUS), help=f"GPU of the latency cost model "
                   f"(default {d['target']}); latencies are estimates and labelled so")
    p.add_argument("--latency-batch", type=_positive, default=d["latency_batch"], metavar="N",
                   help="samples per inference in deployment, for the latency estimate "
                   f"(default {d['latency_batch']})")
    p.add_argument("--latency-from", action="append", default=[], metavar="PREC=FILE",
                   help="per-layer times from a real GPU run: trtexec --exportProfile of an all-PREC build "
                   "(fp32, fp16, int8; repeatable); replaces the estimate for the units it covers")
    p.add_argument("--layer-info", action="append", default=[], metavar="PREC=FILE",
                   help="trtexec --exportLayerInfo (--profilingVerbosity=detailed) of the same build, to map "
                   "fused layers back to ONNX nodes exactly")
    p.add_argument("--measure-latency", action="store_true",
                   help="measure per-unit latency by profiling each node on the backend in use (on a CPU that "
                   "is the emulation's speed, not a GPU's; labelled so)")
    p.add_argument("--replicas", type=int, default=d["replicas"], metavar="K",
                   help=f"jittered copies of the confirm samples (inputs moved at float32 rounding scale, standing in "
                   f"for another backend's arithmetic) that a mix must also pass (default {d['replicas']}; 0: none)")
    p.add_argument("--confidence", type=float, metavar="C", help="meet the budget at the one-sided confidence bound "
                   "C (e.g. 0.9) of the confirm score, not at its point value (needs enough samples; says so)")
    p.add_argument("--pareto", action="store_true", help="also sweep the budget and measure the front (metric vs "
                   "latency and size), with the plan of each point, in report.json/report.html")


def _analyze_options(args: argparse.Namespace) -> AnalyzeOptions:
    # in 'run', --preprocess serves --eval's images and, without --calib, the generated images; with --calib
    # noise (shaped like the inputs) it serves --eval alone
    preprocess = None if args.command == "run" and args.calib == "noise" else args.preprocess
    return AnalyzeOptions(calib=args.calib, preprocess=preprocess, shapes=parse_shapes(args.shape),
                          fixed=args.fix,
                          outputs=args.outputs, precisions=Precision.parse_list(args.precisions),
                          calibrator=args.calibrator,
                          weight_scales=args.weight_scales, bias_correction=args.bias_correction,
                          int4_block=args.int4_block, backend=args.backend, backend_options=backend_options(args),
                          samples=args.samples, float_samples=args.float_samples, batch=args.batch, seed=args.seed,
                          workers=args.workers, ray_address=args.ray_address, jobs=args.jobs)


def _plan_options(args: argparse.Namespace) -> PlanOptions:
    budget = Budget(max_drop=args.max_drop, relative=args.relative, max_latency_ms=args.max_latency_ms,
                    min_speedup=args.min_speedup, speedup_vs=Precision(args.speedup_vs), max_size_mb=args.max_size_mb)
    return PlanOptions(eval=args.eval, preprocess=args.preprocess, metric=args.metric, metric_fn=args.metric_fn,
                       budget=budget, target=args.target, latency_batch=args.latency_batch,
                       batch=args.batch, pareto=args.pareto,
                       latency_from=precision_files(args.latency_from, "--latency-from"),
                       layer_info=precision_files(args.layer_info, "--layer-info"),
                       measure_latency=args.measure_latency, backend=args.backend if args.command == "plan" else None,
                       replicas=args.replicas, confidence=args.confidence, workers=args.workers,
                       ray_address=args.ray_address, jobs=args.jobs if args.command == "plan" else None)


def _checked(rows: list[CheckRow] | tuple[CheckRow, ...], progress) -> int:
    """Print planned vs realised; exit 3 when any unit differs, so a build script can stop."""
    from .report.console import print_check

    progress.stop()
    print_check(rows)
    return 3 if any(r.differs for r in rows) else 0


def _run(args: argparse.Namespace) -> int:
    from .report.console import ConsoleProgress, print_analysis, print_inspection, print_plan

    if args.command == "inspect":
        print_inspection(*inspect_model(args.model, parse_shapes(args.shape), args.fix), every_op=args.ops)
        return 0
    progress = ConsoleProgress(quiet=getattr(args, "quiet", False))
    try:
        if args.command == "check":
            return _checked(check(args.dir, args.layer_info), progress)
        if args.command == "build":
            options = BuildOptions(args.backend, backend_options(args), args.batch, args.typing)
            return _checked(build(args.dir, options, progress).units, progress)
        if args.command == "plan":
            report = plan(args.dir, _plan_options(args), progress)
            progress.stop()
            print_plan(report, args.dir)
            return 0
        if args.command == "generate":
            options = GenerateOptions(args.method, args.samples, args.seed, args.preprocess, parse_shapes(args.shape),
                                      args.fix)
            record = generate(args.model, args.out, options, progress)
            progress.stop()
            print(f"wrote {record['samples']} samples ({record.get('generator', record['method'])}) to {args.out}")
            return 0
        out = str(Path(args.out) / "sensitivity.json")
        if args.command == "analyze":
            analysis = analyze(args.model, args.out, _analyze_options(args), progress)
            progress.stop()
            print_analysis(analysis, out, top=args.top)
            return 0
        plan_options = _plan_options(args)  # bad plan inputs fail before the long analysis, not after it
        result = run(args.model, args.out, _analyze_options(args), plan_options, progress, args.typing)
        progress.stop()
        print_analysis(result.analysis, out, top=10)
        print_plan(result.report, args.out)
        return 0 if result.build is None else _checked(result.build.units, progress)
    finally:
        progress.stop()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return _run(args)
    except TrtMpqError as exc:
        print(f"trt-mpq: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("trt-mpq: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"trt-mpq: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: one line for the user, the traceback on request
        if os.environ.get("TRT_MPQ_DEBUG"):
            raise
        print(f"trt-mpq: internal error: {type(exc).__name__}: {exc} (set TRT_MPQ_DEBUG=1 for a traceback, and "
              "please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
