"""The feature explorer: pick a feature by id, by a token or text search, or from a table sorted by
density, and read its card. Several bases (an SAE's features, the raw neurons, other sizes) can be
browsed side by side through a toggle, so features and neurons are compared the same way.

    FeatureExplorer(store, sae, model, neurons=neuron_store)      # precomputed stores
    FeatureExplorer.from_sae(sae, model, text)                    # builds the stores, then shows them
    explorer.export_html("cards.html", features=[3, 10])         # one offline HTML file of cards to share

A saved notebook keeps each explorer as last shown when its widget state is saved (JupyterLab: Settings → Save
Widget State Automatically; `jupyter nbconvert --execute` stores it), and `jupyter nbconvert --to html` then
draws it. That state is what is shown (the card's HTML, the table's labels), a few hundred kB per explorer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pandas as pd

from saekit.analysis import browsing
from saekit.analysis.features import FeatureStore, StoreConfig
from saekit.saes.dictionary import Dictionary
from saekit.widgets import html as H
from saekit.widgets.card import Basis, FeatureCard, as_basis, close_children

SORTS = {"densest first": "dense", "rarest (alive) first": "rare", "feature id": "id"}
N_RESULTS = browsing.N_RESULTS


def sorted_table(table: pd.DataFrame, sort: str) -> pd.DataFrame:
    """`FeatureStore.feature_table()` in one of the explorer's orders (see SORTS)."""
    if sort == "rare":
        return table[table["n_fires"] > 0].sort_values(["density", "feature"], ignore_index=True)
    if sort == "id":
        return table.sort_values("feature", ignore_index=True)
    return table


def table_options(table: pd.DataFrame, limit: int) -> list[tuple[str, int]]:
    """(label, feature) pairs for the table picker: id, density and most common top token."""
    options = []
    for row in table.head(limit).itertuples(index=False):
        token = H.token_label(row.top_token) if isinstance(row.top_token, str) else "(dead)"
        options.append((f"{int(row.feature):>6} · {row.density:.2e} · {token}", int(row.feature)))
    return options


class FeatureExplorer(widgets.VBox):
    """Browse the features of one or more stores; `show(feature, basis=...)` opens one programmatically.

    `store`: a FeatureStore (with its `sae` and the `model` it was built on, both optional), or a
    mapping name → Basis/FeatureStore. `neurons`: a store of the raw neurons to compare with.
    """

    def __init__(self, store: FeatureStore | Mapping[str, Basis | FeatureStore], sae: Dictionary | None = None,
                 model: Any = None, *, neurons: FeatureStore | None = None, name: str = "features",
                 feature: int | None = None, table_rows: int = 300, n_top: int = 10, n_per_interval: int = 2,
                 context: int = 12) -> None:
        self.bases = _bases(store, sae, model, neurons, name)
        self.table_rows = table_rows
        self._tables: dict[str, pd.DataFrame] = {}
        self._busy = False
        self.basis_name = next(iter(self.bases))
        self.card = FeatureCard(n_top=n_top, n_per_interval=n_per_interval, context=context)
        self.card.on_select(lambda f: self.show(f))
        self._build_controls()
        super().__init__([self.controls, self.results_note, self.results,
                          widgets.HBox([self.table_box, self.card], layout=widgets.Layout(align_items="flex-start"))])
        self.add_class("saekit-explorer")
        self._refresh_table()
        self.show(int(self.table_frame()["feature"].iloc[0]) if feature is None else feature)

    # --- construction -----------------------------------------------------------------------------

    def _build_controls(self) -> None:
        self.basis_picker = widgets.ToggleButtons(options=list(self.bases), value=self.basis_name,
                                                  layout=widgets.Layout(display="" if len(self.bases) > 1 else "none"))
        self.feature_box = widgets.BoundedIntText(value=0, min=0, max=self.store.n_features - 1, description="feature",
                                                  layout=widgets.Layout(width="180px"))
        self.search_box = widgets.Text(placeholder="a token (e.g. ' the') or a text", description="search",
                                       continuous_update=False, layout=widgets.Layout(width="320px"))
        self.search_mode = widgets.ToggleButtons(options=["token", "text"], value="token",
                                                 style={"button_width": "60px"})
        self.search_button = widgets.Button(description="search", icon="search", layout=widgets.Layout(width="90px"))
        self.sort_picker = widgets.Dropdown(options=list(SORTS), value="densest first", description="table",
                                            layout=widgets.Layout(width="260px"))
        self.table = widgets.Select(rows=24, layout=widgets.Layout(width="300px"))
        self.table_box = widgets.VBox([self.sort_picker, self.table])
        self.results_note = widgets.HTML()
        self.results = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self.controls = widgets.VBox([self.basis_picker, widgets.HBox(
            [self.feature_box, self.search_box, self.search_mode, self.search_button])])
        for widget, name in ((self.feature_box, "feature-id"), (self.search_box, "search"), (self.table, "table"),
                             (self.results, "results"), (self.basis_picker, "basis")):
            widget.add_class(f"saekit-{name}")
        self.basis_picker.observe(self._basis_changed, names="value")
        self.feature_box.observe(lambda change: self._picked(change["new"]), names="value")
        self.table.observe(lambda change: self._picked(change["new"]), names="value")
        self.sort_picker.observe(lambda change: self._refresh_table(), names="value")
        self.search_button.on_click(lambda _: self.search(self.search_box.value))
        self.search_box.observe(lambda change: self.search(change["new"]), names="value")

    # --- state --------------------------------------------------------------------------------------

    @property
    def basis(self) -> Basis:
        return self.bases[self.basis_name]

    @property
    def store(self) -> FeatureStore:
        return self.basis.store

    @property
    def feature(self) -> int | None:
        return self.card.feature

    def feature_table(self, basis: str | None = None) -> pd.DataFrame:
        """The basis's `feature_table()` (cached): one row per feature, densest first."""
        name = basis or self.basis_name
        if name not in self._tables:
            self._tables[name] = self.bases[name].store.feature_table()
        return self._tables[name]

    def table_frame(self) -> pd.DataFrame:
        """The table as currently sorted."""
        return sorted_table(self.feature_table(), SORTS[self.sort_picker.value])

    # --- actions ------------------------------------------------------------------------------------

    def show(self, feature: int, basis: str | None = None) -> None:
        """Open `feature` of `basis` (default: the current one) in the card."""
        if basis is not None and basis not in self.bases:
            raise KeyError(f"no basis {basis!r}; this explorer has {list(self.bases)}")
        with self._quiet():
            if basis is not None:
                self.basis_picker.value = basis  # switches the table through _basis_changed
            self.feature_box.value = int(feature)
            self.table.value = int(feature) if int(feature) in self._table_features else None
        self.card.show(self.basis, int(feature), name=self.basis_name if len(self.bases) > 1 else "")

    def search(self, text: str) -> pd.DataFrame:
        """Search by token (features whose top examples sit on it, or that boost it) or by text (the
        features that fire most on it); the results become buttons that open each feature."""
        if not text:
            return pd.DataFrame()
        if self.search_mode.value == "text":
            basis = self.basis
            found = browsing.text_search(basis.store, basis.dictionary, basis.model, text)
            labels = [f"#{r.feature} {r.activation:.2f} on {H.token_label(r.token)}" for r in found.itertuples()]
        else:
            found = self.store.search_token(text).head(N_RESULTS)
            labels = [f"#{int(r.feature)} ({int(r.n_top_examples)} top examples)" for r in found.itertuples()]
        mode = self.search_mode.value
        self.results_note.value = (f"<b>{len(found)}</b> matches among the {H.escape(self.basis_name)} for {mode} "
                                   f"<code>{H.escape(repr(text))}</code>")
        close_children(self.results)
        self.results.children = tuple(self._result_button(int(f), label) for f, label in zip(found["feature"], labels))
        return found

    def export_html(self, path: str | Path, features: Sequence[int] | None = None, basis: str | None = None,
                    *, progress: bool = True) -> Path:
        """Write the cards of `features` (default: the one shown) of `basis` (default: the current one) to one
        self-contained HTML file to share (`saekit.widgets.export`); returns its path."""
        from saekit.widgets.export import export_html

        name = basis or self.basis_name
        if name not in self.bases:
            raise KeyError(f"no basis {name!r}; this explorer has {list(self.bases)}")
        chosen = [self.feature if self.feature is not None else 0] if features is None else list(features)
        return export_html(self.bases[name], path, chosen, name=name if len(self.bases) > 1 else "",
                           n_top=self.card.n_top, n_per_interval=self.card.n_per_interval, context=self.card.context,
                           progress=progress)

    def _result_button(self, feature: int, label: str) -> widgets.Button:
        button = widgets.Button(description=label, layout=widgets.Layout(width="auto"))
        button.on_click(lambda _: self.show(feature))
        return button

    def _picked(self, feature: int | None) -> None:
        if self._busy or feature is None or feature == self.card.feature:
            return
        self.show(int(feature))

    def _basis_changed(self, change: dict) -> None:
        self.basis_name = change["new"]
        self.feature_box.max = self.store.n_features - 1
        self._refresh_table()
        close_children(self.results)
        self.results_note.value = ""
        if not self._busy:
            self.card.feature = None
            self.show(min(self.feature_box.value, self.store.n_features - 1))

    def _refresh_table(self) -> None:
        options = table_options(self.table_frame(), self.table_rows)
        self._table_features = {feature for _, feature in options}
        with self._quiet():
            self.table.options = options
            current = self.card.feature
            self.table.value = current if current in self._table_features else None

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        """Set pickers without their observers opening features (nests)."""
        before, self._busy = self._busy, True
        try:
            yield
        finally:
            self._busy = before

    # --- one-line construction ------------------------------------------------------------------

    @classmethod
    def from_sae(cls, sae: Dictionary, model: Any, text: Any = None, *, neurons: bool = True, max_tokens: int = 100_000,
                 context_len: int | None = None, config: StoreConfig | None = None, progress: bool = True,
                 **kwargs: Any) -> FeatureExplorer:
        """Explore `sae`'s features (and the raw neurons) over `text`, stores built by
        `saekit.analysis.browsing.explorer_data`; `text` and `context_len` default to the SAE's provenance; `kwargs`
        go to the explorer."""
        data = browsing.explorer_data(sae, model, text, neurons=neurons, max_tokens=max_tokens,
                                      context_len=context_len, config=config, progress=progress)
        return cls(data.features, sae, data.model, neurons=data.neurons, **kwargs)


def _bases(store: Any, sae: Dictionary, model: Any, neurons: FeatureStore | None, name: str) -> dict[str, Basis]:
    if isinstance(store, Mapping):
        bases = {str(k): as_basis(v, model=model) for k, v in store.items()}
    else:
        bases = {name if store.meta.get("kind") != "neurons" else "neurons": as_basis(store, sae, model)}
    if neurons is not None:
        bases["neurons"] = as_basis(neurons, model=model)
    if not bases:
        raise ValueError("pass at least one feature store")
    return bases
