"""The autointerp view: cost shown before anything is sent, the button runs it, histograms per scorer, and every
corpus string escaped. Offline components, and fixed replies (saekit.llm.ScriptedReplies: not a language model)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ipywidgets")

from saekit.analysis import autointerp as A  # noqa: E402
from saekit.llm import ScriptedReplies  # noqa: E402
from saekit.widgets.autointerp import AutointerpView, explanations_html, score_histogram  # noqa: E402

SCRIPT = "<script>alert(1)</script>"


def unit(number: int, basis: str, hit: str) -> A.UnitRecords:
    """A unit that responds on the token `hit`, with two silent random excerpts."""
    def make(tokens, kind="top"):
        return A.ActivationRecord(tuple(tokens), np.array([float(t == hit) for t in tokens], np.float32), kind)

    return A.UnitRecords(number, basis, 1.0, (make(["a", hit, "c"]), make([hit, "d"])),
                         (make(["e", hit]), make(["c", "a"], "random"), make(["d", "e"], "random")))


UNITS = [unit(0, "feature", SCRIPT), unit(1, "feature", "b"), unit(2, "neuron", "c")]


def test_offline_view_runs_on_the_button_and_draws_each_scorer():
    scorers = [A.SimulationScorer(A.NgramSimulator()), A.DetectionScorer(A.NgramJudge())]
    view = AutointerpView(UNITS, A.NgramExplainer(), scorers, progress=False)
    assert view.button.description.startswith("Run (offline")
    assert "0 prompts" in view.estimate.value and view.scores.empty  # nothing ran yet
    view.button.click()
    assert len(view.scores) == 2 * len(UNITS) and len(view.figures.children) == 2
    assert SCRIPT not in view.table.value and "&lt;script" in view.table.value
    assert view.button.disabled


def test_language_model_view_shows_the_cost_first():
    client = ScriptedReplies(lambda prompt: "Explanation: the token b")
    view = AutointerpView(UNITS, A.LMExplainer(client), [A.SimulationScorer(A.NgramSimulator())], progress=False)
    assert view.button.description == "Send 3 prompts" and client.received == []
    assert "<p>3 prompts; cost at most $0.0000</p>" in view.estimate.value  # fixed replies cost nothing
    with pytest.raises(ValueError, match="n-gram"):  # the n-gram simulator cannot read a model's explanation
        view.run()
    assert "failed" in view.status.value and not view.button.disabled


def test_histogram_names_scorer_and_explainer_and_splits_bases():
    explanations = A.explain(UNITS, A.NgramExplainer(), progress=False)
    scores = A.score(UNITS, explanations, A.SimulationScorer(A.NgramSimulator()), progress=False)
    fig = score_histogram(scores)
    assert sorted(t.name.split(" (")[0] for t in fig.data) == ["features", "neurons"]
    assert "simulation" in fig.layout.title.text and "n-gram baseline" in fig.layout.title.text
    html = explanations_html(explanations, scores)
    assert html.count("<tr") == 1 + len(UNITS) and "&lt;script" in html and SCRIPT not in html  # header + a row each
