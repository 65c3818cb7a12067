"""The run folder and the typed records that cross stages (each with ``to_json``/``from_json``)."""

from .analysis import (
    SENSITIVITY_SCHEMA,
    AnalysedUnit,
    Analysis,
    BackendRecord,
    Calibration,
    DataInfo,
    ModelInfo,
    SkippedLayer,
    UnitResult,
)
from .engine import BUILD_SCHEMA, BuildResult, CheckRow
from .folder import RunFolder, read_json
from .plan import (
    PLAN_SCHEMA,
    Budget,
    Compared,
    Confirmation,
    Evaluation,
    LatencySummary,
    Look,
    Outcome,
    ParetoPoint,
    PlannedUnit,
    PlanReport,
    PlanResult,
    StepKind,
    VerificationStep,
    planned_units,
)

__all__ = [
    "BUILD_SCHEMA", "PLAN_SCHEMA", "SENSITIVITY_SCHEMA", "AnalysedUnit", "Analysis", "BackendRecord", "Budget",
    "BuildResult", "Calibration", "CheckRow", "Compared", "Confirmation", "DataInfo", "Evaluation",
    "LatencySummary", "Look", "ModelInfo", "Outcome", "ParetoPoint", "PlanReport", "PlanResult", "PlannedUnit",
    "RunFolder", "SkippedLayer", "StepKind", "UnitResult", "VerificationStep", "planned_units", "read_json",
]
