"""trtexec.txt: the command lines that build the planned mix with TensorRT, at the deployment batch.

- TensorRT 10.x/11.x, strongly typed: the mixed ONNX carries every precision (Q/DQ for INT8, Casts for FP16).
- TensorRT 8.6-10.x, weakly typed: the INT8 units keep their Q/DQ (explicit quantization), the FP16 Casts are
  left out (model.weak.onnx) and every FP16/FP32 unit's layers are pinned with --layerPrecisions and
  --layerOutputTypes under --precisionConstraints=obey; TensorRT's ONNX parser names layers after the nodes.
  Layers outside every unit are left to the builder. TensorRT 11 removed weak typing: that line is for 10.x.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..network.model import TensorSpec
from ..network.units import Unit
from ..precision import Plan, Precision

STRONG = """# TensorRT 10.x or 11.x: precision lives in the ONNX (Q/DQ and Cast); strongly typed networks honour it
# exactly (--stronglyTyped is needed on 10.x, a no-op on 11.x). {tf32_note}
trtexec --onnx={onnx} --stronglyTyped{no_tf32} --saveEngine=model.engine{shapes} \\
        --timingCacheFile=timing.cache --profilingVerbosity=detailed \\
        --exportLayerInfo=layers.json --exportProfile=profile.json
"""
WEAK = """
# TensorRT 8.6-10.x, weakly typed (JetPack 6, many servers): INT8 from the Q/DQ in {weak_onnx}, FP16/FP32
# units pinned layer by layer; the builder chooses for every layer outside a unit.
trtexec --onnx={weak_onnx} {flags}{no_tf32} --precisionConstraints=obey --saveEngine=model.weak.engine{shapes} \\
{pin_lines}        --timingCacheFile=timing.cache --profilingVerbosity=detailed --exportLayerInfo=layers.weak.json
"""
UNPINNABLE = ",:"  # trtexec splits its layer lists on these; such node names cannot be pinned


def shape_flags(inputs: Sequence[TensorSpec], sample: Mapping[str, np.ndarray], batch: int) -> str:
    """--minShapes/--optShapes/--maxShapes for inputs with dynamic dims: one sample's shape (from the
    evaluation data), batch 1 to ``batch`` on a dynamic axis 0; empty when every input is static."""
    dynamic = [s for s in inputs if any(not isinstance(d, int) for d in s.shape)]
    if not dynamic:
        return ""

    def dims(spec: TensorSpec, b: int) -> str:
        shape = list(np.shape(sample[spec.name]))
        if spec.batch_axis == 0 and shape:
            shape[0] = b
        return f"{spec.name}:" + "x".join(str(d) for d in shape)

    flags = [f"--{kind}Shapes=" + ",".join(dims(s, b) for s in dynamic)
             for kind, b in (("min", 1), ("opt", batch), ("max", batch))]
    return " \\\n        " + " ".join(flags)


def layer_pins(units: Iterable[tuple[Sequence[str], Precision]]) -> dict[str, Precision]:
    """Layer (= ONNX node) name -> precision for every node of the FP16 and FP32 units, given as (nodes,
    precision); the INT8/FP8 units are left to their Q/DQ, an INT4 unit's layers run FP16 on its dequantized
    weights. Weak typing pins these (trtexec and ``build``)."""
    return {n: p.activations for nodes, p in units if not p.quantized for n in nodes}  # TF32: FP32 layers


def weak_pins(units: Sequence[Unit], plan: Plan) -> tuple[str, list[str]]:
    """``node:fp16,...`` for trtexec, and the nodes whose names it cannot take."""
    pins = layer_pins((u.nodes, plan.get(u.name, Precision.FP32)) for u in units)
    ok = [f"{n}:{p.value}" for n, p in pins.items() if not any(c in n for c in UNPINNABLE)]
    return ",".join(ok), [f"{n}:{p.value}" for n, p in pins.items() if any(c in n for c in UNPINNABLE)]


def trtexec_text(onnx_name: str, weak_onnx_name: str, inputs: Sequence[TensorSpec],
                 sample: Mapping[str, np.ndarray], batch: int, units: Sequence[Unit], plan: Plan,
                 tf32: bool | None = False) -> str:
    """The whole of trtexec.txt; ``tf32``: the engine's TF32 flag (``DecisionSpace.tf32``: None when no GEMM
    stays in FP32)."""
    shapes = shape_flags(inputs, sample, batch)
    pins, skipped = weak_pins(units, plan)
    if tf32:
        no_tf32, note = "", "TF32 stays on (TensorRT's default): the plan's FP32 GEMMs were verified in TF32."
    elif tf32 is None:
        no_tf32, note = "", "No GEMM stays in FP32, so TF32 changes nothing."
    else:
        no_tf32, note = " --noTF32", "--noTF32 keeps the FP32 GEMMs in true FP32, as they were verified."
    text = STRONG.format(onnx=onnx_name, shapes=shapes, no_tf32=no_tf32, tf32_note=note)
    pin_lines = f"        --layerPrecisions={pins} \\\n        --layerOutputTypes={pins} \\\n" if pins else ""
    used = {p for _, p in plan.precisions}
    flags = " ".join(["--fp16", "--int8", *(f"--{p.value}" for p in (Precision.BF16, Precision.FP8, Precision.INT4)
                                             if p in used)])
    text += WEAK.format(weak_onnx=weak_onnx_name, shapes=shapes, pin_lines=pin_lines, flags=flags, no_tf32=no_tf32)
    if skipped:
        text += (f"# not pinned (a ',' or ':' in the name): {', '.join(s.rsplit(':', 1)[0] for s in skipped[:5])}"
                 f"{' ...' if len(skipped) > 5 else ''}\n")
    return text
