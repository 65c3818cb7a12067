"""A finished analysis opened for the stages after it: the record, its ranges, the model and its units,
checked to belong together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..artifacts import Analysis, RunFolder, read_json
from ..errors import ConfigError
from ..network.measured import measured_model
from ..network.model import LoadedModel, load_model
from ..network.units import Unit, find_units
from ..precision import needs_opset
from ..quant.ranges import Ranges


@dataclass(frozen=True)
class OpenedAnalysis:
    folder: RunFolder
    analysis: Analysis
    ranges: Ranges
    model: LoadedModel
    units: list[Unit]


def read_analysis(run_dir: str | Path) -> tuple[Analysis, Ranges]:
    """The analysis record and its ranges, without loading the model."""
    folder = RunFolder(run_dir)
    if not folder.sensitivity.is_file():
        raise ConfigError(f"'{folder.root}' holds no sensitivity.json; run 'trt-mpq analyze MODEL --out "
                          f"{folder.root}' first.")
    try:
        analysis = Analysis.from_json(read_json(folder.sensitivity, "the analysis"))
        ranges = Ranges.from_json(read_json(folder.root / analysis.ranges_file, "the ranges"))
    except (ConfigError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"the analysis in '{folder.root}' is incomplete or damaged ({exc}); run analyze "
                          "again.") from None
    return analysis, ranges


def open_analysis(run_dir: str | Path) -> OpenedAnalysis:
    """The finished analysis in ``run_dir`` with the model it measured (the same bytes) and its units."""
    analysis, ranges = read_analysis(run_dir)
    model = load_model(analysis.model.path, dict(analysis.model.shapes), dict(analysis.model.fixed),
                       needs_opset(analysis.precisions))
    if model.sha256 != analysis.model.sha256:
        raise ConfigError(f"'{model.path}' changed since it was analysed (sha256 differs); run analyze again.")
    if analysis.model.measured:  # measured before a plugin or at --outputs: the same part again
        model = measured_model(model, analysis.model.measured)
    units = find_units(model.proto, model.tensors).units
    if [u.name for u in units] != [u.name for u in analysis.units]:
        raise ConfigError("the units of the model no longer match the analysis; run analyze again.")
    return OpenedAnalysis(RunFolder(run_dir), analysis, ranges, model, units)
