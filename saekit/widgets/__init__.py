"""ipywidgets + plotly views of the analyses: feature explorer, feature map, universality, crosscoder diffing,
feature splitting, steering, specificity and automata, plus static figures of the paper's results. Views compute
nothing of their own (they call `saekit.analysis`); every token string they show is HTML-escaped (`widgets.html`).

Needs the notebook extras: pip install 'saekit[notebooks]'.
"""

from saekit.widgets.automata import AutomatonView, chain_figure, runs_html
from saekit.widgets.card import Basis, FeatureCard, histogram_figure
from saekit.widgets.crosscoders import matching_figure, relative_norm_figure
from saekit.widgets.explorer import FeatureExplorer
from saekit.widgets.feature_map import FeatureMap, map_figure
from saekit.widgets.paper import density_counts, density_figure, example_features, measures_figure, sweep_figure
from saekit.widgets.specificity import proxy_distribution_figure, proxy_histogram_figure, tracking_figure
from saekit.widgets.splitting import SplittingView, coarse_to_fine_html, family_figure, splitting_figure
from saekit.widgets.steering import SteeringView, continuations_html, shift_figure
from saekit.widgets.universality import PAPER, UniversalityView, universality_figure

__all__ = [
    "AutomatonView", "Basis", "FeatureCard", "FeatureExplorer", "FeatureMap", "PAPER", "SplittingView",
    "SteeringView", "UniversalityView", "chain_figure", "coarse_to_fine_html", "continuations_html", "density_counts",
    "density_figure", "example_features", "family_figure", "histogram_figure", "map_figure", "matching_figure",
    "measures_figure", "proxy_distribution_figure", "proxy_histogram_figure", "relative_norm_figure", "runs_html",
    "shift_figure", "splitting_figure", "sweep_figure", "tracking_figure", "universality_figure",
]
