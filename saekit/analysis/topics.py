"""Features of a topic, found from the text around their top examples: a regular expression marks the stored
windows' tokens that sit inside a match (a base64 run, an HTML tag, ...), and a feature is on the topic when most
of its top examples fire on marked tokens.

Matching runs over each stored window's whole text, so a match that spans many tokens (a long base64 line, a
tag with attributes) marks every token it overlaps; a match cut by a window's edge is seen only in part.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
import pandas as pd

from saekit.analysis.features import FeatureStore
from saekit.errors import InputError


class Topic(NamedTuple):
    """A kind of text, as a regular expression over a window's text."""

    name: str
    pattern: str  # a token is on the topic where a match of this pattern overlaps its characters
    description: str  # what the pattern matches, in words (reported when nothing is found)


_B64 = "A-Za-z0-9+/"
TOPICS = {
    "base64": Topic(
        "base64",
        rf"(?=[{_B64}]*[0-9])(?=[{_B64}]*[a-z])(?=[{_B64}]*[A-Z])[{_B64}]{{20,}}={{0,2}}",
        "runs of 20+ base64 characters (A-Z, a-z, 0-9, +, /) holding a digit and both cases"),
    "markup": Topic(
        "markup",
        r"<!--.*?-->|</?[A-Za-z][\w:.-]*(?:\s[^<>]*)?/?>|&(?:[A-Za-z]+|#[0-9]+);",
        "HTML/XML tags from < to >, comments and character entities"),
}


def topic_of(topic: str | Topic) -> Topic:
    """A topic by name (see TOPICS) or as given."""
    if isinstance(topic, Topic):
        re.compile(topic.pattern)
        return topic
    if topic not in TOPICS:
        raise InputError(f"unknown topic {topic!r}: choose one of {sorted(TOPICS)} or pass a Topic(name, pattern, "
                         "description) with your own regular expression")
    return TOPICS[topic]


def topic_mask(store: FeatureStore, topic: str | Topic) -> np.ndarray:
    """[n_windows, context_len] bool: the stored tokens that a match of the topic's pattern overlaps."""
    pattern = re.compile(topic_of(topic).pattern, re.DOTALL)
    mask = np.zeros(store.token_ids.shape, dtype=bool)
    for w, (row, length) in enumerate(zip(store.token_ids, store.lengths)):
        if length == 0:
            continue
        texts = [store.vocab[t] for t in row[:length]]
        ends = np.cumsum([len(t) for t in texts])  # [length] each token's end offset in the window's text
        starts = ends - np.array([len(t) for t in texts], dtype=ends.dtype)
        for match in pattern.finditer("".join(texts)):
            if match.end() > match.start():
                mask[w, :length] |= (starts < match.end()) & (ends > match.start())
    return mask


def topic_features(store: FeatureStore, topic: str | Topic, *, min_share: float = 0.5) -> pd.DataFrame:
    """The features whose top examples sit on the topic's tokens for at least `min_share` of them: feature, share,
    n_examples, density, top_token; most on-topic first."""
    if not 0 < min_share <= 1:
        raise InputError(f"min_share must be in (0, 1], got {min_share}: the share of a feature's top examples "
                         "that must be on the topic")
    on = topic_mask(store, topic).reshape(-1)[store.top["token_index"].to_numpy().astype(np.int64)]
    shares = store.top.assign(on=on).groupby("feature")["on"].agg(["mean", "size"])
    shares = shares[shares["mean"] >= min_share]
    features = shares.index.to_numpy()
    table = pd.DataFrame({
        "feature": features, "share": shares["mean"].to_numpy(), "n_examples": shares["size"].to_numpy(),
        "density": store.features["density"].to_numpy()[features],
    })
    top = store.feature_table().set_index("feature")["top_token"]
    table["top_token"] = top.reindex(features).to_numpy()
    return table.sort_values(["share", "density", "feature"], ascending=[False, False, True], ignore_index=True)
