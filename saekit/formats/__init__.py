"""Reading and writing SAEs on disk: saekit's own folders (SAELens's layout), and the formats other toolkits
write (sparsify, dictionary_learning, Gemma Scope), one module each; `registry` detects which a folder holds."""

from saekit.formats.common import SAEFormatError, atomic_write, saekit_version
from saekit.formats.registry import FORMATS, FormatName, detect_format, formats, load_sae
from saekit.formats.saelens import (
    CFG_FILE,
    FLOAT_CODES,
    MAX_WIDTH,
    SAELENS_FORMAT_VERSION,
    WEIGHTS_FILE,
    read_config,
    sae_config,
    save_sae,
)

__all__ = [
    "CFG_FILE", "FLOAT_CODES", "FORMATS", "MAX_WIDTH", "SAELENS_FORMAT_VERSION", "WEIGHTS_FILE", "FormatName",
    "SAEFormatError", "atomic_write", "detect_format", "formats", "load_sae", "read_config", "sae_config",
    "saekit_version", "save_sae",
]
