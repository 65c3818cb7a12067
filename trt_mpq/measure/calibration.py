"""Calibration on its own: activation ranges of a model's quantized tensors from a dataset, every method's
candidate thresholds included (the analysis gets the same ranges from its FP32 pass)."""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from ..backends import Backend
from ..data.datasets import Dataset
from ..network.model import LoadedModel
from ..network.units import Unit
from ..progress import Progress
from ..quant.ranges import RangeCollector, Ranges


def calibrate(model: LoadedModel, units: Sequence[Unit], dataset: Dataset, backend: Backend,
              calibrator: str = "auto", batch: int = 8, weight_scales: str = "max", bias_correction: bool = False,
              progress: Progress | None = None) -> Ranges:
    """Ranges of the INT8 inputs of ``units``: one pass for the maxima (and channel means), one for the
    histograms (the model runs twice rather than keeping activations)."""
    from .sensitivity import channel_axes

    progress = progress or Progress()
    quantized = list(dict.fromkeys(a for u in units for a in u.activations))
    collector = RangeCollector(calibrator, quantized, quantized, channel_axes(units), weight_scales, bias_correction)
    graph_inputs = {i.name for i in model.proto.graph.input}
    outputs = {o.name for o in model.proto.graph.output}
    probe = onnx.ModelProto()
    probe.CopyFrom(model.proto)
    for name in quantized:
        if name not in graph_inputs and name not in outputs:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    fetch = [n for n in quantized if n not in graph_inputs]
    passes = 2 if collector.needs_histograms else 1
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
    return collector.result()
