"""A place in a widget layout that shows a plotly figure and can be given a new one.

plotly's FigureWidget (anywidget-based since plotly 6) sends later edits to the browser as messages,
which a view not yet on the page never receives: a widget filled before it is displayed would show its
first, empty figure. So a new figure gets a new FigureWidget, swapped into the slot.
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets
import plotly.graph_objects as go


class FigureSlot(widgets.Box):
    """Holds one FigureWidget; `show(fig)` replaces it. `on_new` callbacks get each new FigureWidget
    (e.g. to attach click handlers to its traces)."""

    def __init__(self, figure: go.Figure | None = None, on_new: Callable[[go.FigureWidget], None] | None = None
                 ) -> None:
        super().__init__()
        self._on_new = on_new
        self.figure: go.FigureWidget
        self.show(figure if figure is not None else go.Figure())

    def show(self, figure: go.Figure) -> go.FigureWidget:
        """Display `figure` in the slot; returns its FigureWidget."""
        self.figure = go.FigureWidget(figure)
        if self._on_new is not None:
            self._on_new(self.figure)
        self.children = (self.figure,)
        return self.figure
