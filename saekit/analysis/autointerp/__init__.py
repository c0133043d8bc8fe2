"""Automated interpretability: a unit's excerpts → an explanation → scores of how well it predicts the unit.

    units = unit_records(store, [3, 17], model, sae)          # explanation and held-out excerpts, true activations
    explanations = explain(units, NgramExplainer())           # or LMExplainer(client) with a saekit.llm client
    score(units, explanations, SimulationScorer(NgramSimulator()))   # the paper's simulation score
    estimate_cost(units, LMExplainer(client), [...])          # before anything is sent

Scorers: simulation (the paper's), detection and fuzzing (delphi's, balanced accuracy), embedding (AUROC).
"""

from saekit.analysis.autointerp.baseline import NgramExplainer, NgramJudge, NgramSimulator
from saekit.analysis.autointerp.embedding import (
    EmbeddingScorer,
    auroc,
    sentence_transformers_scorer,
    wordllama_scorer,
)
from saekit.analysis.autointerp.explanations import (
    Explainer,
    Explanation,
    Judge,
    JudgeItem,
    Simulator,
    explain,
    explanations_table,
)
from saekit.analysis.autointerp.language_model import LMExplainer, LMJudge, LMSimulator
from saekit.analysis.autointerp.prompts import PromptLimits
from saekit.analysis.autointerp.records import (
    LEVELS,
    ActivationRecord,
    RecordConfig,
    UnitRecords,
    discretize,
    unit_records,
)
from saekit.analysis.autointerp.scoring import (
    DetectionScorer,
    FuzzingScorer,
    Scorer,
    SimulationScorer,
    balanced_accuracy,
    correlation,
    estimate_cost,
    score,
)

__all__ = [
    "ActivationRecord", "DetectionScorer", "EmbeddingScorer", "Explainer", "Explanation", "FuzzingScorer", "Judge",
    "JudgeItem", "LEVELS", "LMExplainer", "LMJudge", "LMSimulator", "NgramExplainer", "NgramJudge", "NgramSimulator",
    "PromptLimits", "RecordConfig", "Scorer", "SimulationScorer", "Simulator", "UnitRecords", "auroc",
    "balanced_accuracy", "correlation", "discretize", "estimate_cost", "explain", "explanations_table", "score",
    "sentence_transformers_scorer", "unit_records", "wordllama_scorer",
]
