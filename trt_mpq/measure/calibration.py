"""Calibration on its own: activation ranges of a model's quantized tensors from a dataset, every method's
candidate thresholds included (the analysis gets the same ranges from its FP32 pass)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from ..backends import Backend
from ..data.datasets import Dataset
from ..data.views import spread_batches
from ..network.model import LoadedModel
from ..network.units import Unit
from ..precision import Precision
from ..progress import Progress
from ..quant.bias import CHANNEL_AXIS
from ..quant.collector import RangeCollector
from ..quant.ranges import Ranges


def channel_axes(units: Sequence[Unit]) -> dict[str, int]:
    """The input of each weight unit bias correction covers, with the axis its weight contracts."""
    return {u.activations[0]: CHANNEL_AXIS[u.main_op] for u in units
            if u.weight is not None and u.activations and u.main_op in CHANNEL_AXIS}


def int8_weights(model: onnx.ModelProto, units: Sequence[Unit]) -> dict[str, tuple[np.ndarray, int | None]]:
    """The weights an INT8 lowering quantizes, with their per-channel axis (None: per tensor)."""
    inits = {t.name: t for t in model.graph.initializer}
    return {u.weight: (numpy_helper.to_array(inits[u.weight]), u.weight_axis) for u in units
            if u.weight in inits and Precision.INT8 in u.allowed}


def probe_model(model: LoadedModel, names: Sequence[str], proto: onnx.ModelProto | None = None
                ) -> tuple[onnx.ModelProto, list[str]]:
    """The model (or ``proto``, its graph with placeholders for weights) with ``names`` made outputs too
    (typed: TensorRT's parser wants them), and which of them a run can return (graph inputs are fed)."""
    graph_inputs = {i.name for i in model.proto.graph.input}
    outputs = {o.name for o in model.proto.graph.output}
    fetch = [n for n in dict.fromkeys(names) if n not in graph_inputs]
    probe = onnx.ModelProto()
    probe.CopyFrom(proto if proto is not None else model.proto)
    elem = {k: v for k, v in model.tensors.types.items() if v}
    for name in fetch:
        if name not in outputs:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, elem[name], None) if name in elem
                                      else onnx.ValueInfoProto(name=name))
    return probe, fetch


def calibrate(model: LoadedModel, units: Sequence[Unit], dataset: Dataset, backend: Backend,
              calibrator: str = "auto", batch: int = 8, weight_scales: str = "max", bias_correction: bool = False,
              progress: Progress | None = None) -> Ranges:
    """Ranges of the INT8 inputs of ``units``: one pass for the maxima (and channel means), one for the
    histograms (the model runs twice rather than keeping activations)."""
    progress = progress or Progress()
    quantized = list(dict.fromkeys(a for u in units for a in u.activations))
    collector = RangeCollector(calibrator, quantized, quantized, channel_axes(units), weight_scales, bias_correction)
    probe, fetch = probe_model(model, quantized)
    passes = 2 if collector.needs_histograms else 1
    dataset = spread_batches(dataset, batch)  # the analysis's batches, so the same sums in the same order
    spans = dataset.spans(batch)
    progress.start("calibration", passes * len(spans))
    with backend.compile(probe) as session:
        for k in range(passes):
            if k == 1:
                collector.start_histograms()
            for lo, hi in spans:
                feeds = dataset.take(lo, hi)
                values = {**feeds, **session.run(feeds, fetch)}
                if k == 0:
                    collector.update_max(values)
                else:
                    collector.update_histograms(values)
                progress.advance()
    return collector.result().with_weight_amax(int8_weights(model.proto, units))
