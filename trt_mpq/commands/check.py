"""``check``: the planned precision of every unit against what a built TensorRT engine really runs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..artifacts import CheckRow, RunFolder, planned_units, read_json
from ..backends.trt_layers import read_realized, realized
from ..errors import ConfigError
from ..precision import Precision
from .opened import open_analysis


def planned_precisions(run_dir: str | Path) -> dict[str, Precision]:
    """Unit -> precision, in graph order, from the plan.json of ``run_dir``."""
    folder = RunFolder(run_dir)
    if not folder.plan.is_file():
        raise ConfigError(f"'{folder.root}' holds no plan.json; run 'trt-mpq plan' first.")
    try:
        return {u.name: u.precision for u in planned_units(read_json(folder.plan, "the plan"))}
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"the plan in '{folder.root}' is damaged ({exc}); run plan again.") from None


def _rows(planned: Mapping[str, Precision], got: Mapping) -> list[CheckRow]:
    return [CheckRow(unit, p, v.value if isinstance(v, Precision) else v)
            for unit, p in planned.items() for v in [got.get(unit)]]


def compare(run_dir: str | Path, layer_info: Mapping) -> list[CheckRow]:
    """Planned vs realised per unit, from layer information JSON already loaded (the engine inspector's)."""
    planned = planned_precisions(run_dir)
    return _rows(planned, realized(layer_info, open_analysis(run_dir).units))


def check(run_dir: str | Path, layer_info: str | Path) -> list[CheckRow]:
    """Planned vs realised precision per unit, from the layer info of an engine built from model.mixed.onnx
    (``trtexec --exportLayerInfo`` with ``--profilingVerbosity=detailed``, as trtexec.txt does)."""
    planned = planned_precisions(run_dir)
    return _rows(planned, read_realized(layer_info, open_analysis(run_dir).units))
