"""Model activations: loading models through nnsight, text → tokens, reading a model where a dictionary reads it,
shuffled activation batches."""

from saekit.activations.buffer import ActivationBuffer
from saekit.activations.nnsight_api import (
    ModelNotFoundError,
    UnknownHookError,
    activations_and_logits,
    check_hook,
    get_activations,
    get_tokenizer,
    has_lm_head,
    load_model,
    module_paths,
    spliced_logits,
)
from saekit.activations.reading import Reading, ReadSettings, open_reading, read_settings, reading_activations
from saekit.activations.source import ActivationConfig, ActivationSource, check_dtype
from saekit.activations.windows import (
    DocumentSource,
    HFDataset,
    TextFolder,
    TextList,
    TokenWindows,
    token_source,
    windows_from_tokens,
)

__all__ = [
    "ActivationBuffer", "ActivationConfig", "ActivationSource", "DocumentSource", "HFDataset",
    "ModelNotFoundError", "ReadSettings", "Reading", "TextFolder", "TextList", "TokenWindows", "UnknownHookError",
    "activations_and_logits", "check_dtype", "check_hook", "get_activations", "get_tokenizer",
    "has_lm_head", "load_model", "module_paths", "open_reading", "read_settings", "reading_activations",
    "spliced_logits", "token_source", "windows_from_tokens",
]
