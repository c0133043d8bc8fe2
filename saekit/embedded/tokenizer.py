"""Byte-level BPE trained on the corpus's train split, saved as a Hugging Face tokenizer folder.

`<|endoftext|>` is BOS, EOS (and UNK, which byte-level BPE never needs) as in GPT-2; `<|pad|>` pads.
The folder loads with `transformers.AutoTokenizer.from_pretrained(folder)`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from saekit.embedded.corpus import Corpus

EOT = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (EOT, PAD)


@dataclass(frozen=True)
class TokenizerConfig:
    """How the byte-level BPE tokenizer is trained."""

    vocab_size: int = 4096
    """Vocabulary size, special tokens and the 256 byte symbols included."""
    min_frequency: int = 2
    """A pair must occur at least this often to be merged."""
    max_train_bytes: int = 64_000_000
    """Train on at most this many bytes of the train split (documents in corpus order)."""
    model_max_length: int = 128
    """Longest input the tokenizer announces (a model folder's copy gets that model's context)."""

    def __post_init__(self) -> None:
        if self.vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
            raise ValueError(f"vocab_size={self.vocab_size}: byte-level BPE needs > 258, e.g. 4096")
        if self.vocab_size > 2**31 - 1:
            raise ValueError(f"vocab_size={self.vocab_size} is too large; use at most a few hundred thousand")
        if self.min_frequency < 1:
            raise ValueError(f"min_frequency={self.min_frequency}: use 1 or more")
        if self.max_train_bytes <= 0 or self.model_max_length <= 0:
            raise ValueError("max_train_bytes and model_max_length must be positive")


def bounded_texts(texts: Iterable[str], max_bytes: int) -> Iterator[str]:
    """Texts in order until `max_bytes` (UTF-8) have been yielded."""
    used = 0
    for text in texts:
        if used >= max_bytes:
            return
        used += len(text.encode("utf-8"))
        yield text


def train_bpe(texts: Iterable[str], config: TokenizerConfig, *, progress: bool = True) -> Tokenizer:
    """A byte-level BPE `tokenizers.Tokenizer` trained on `texts`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    tokenizer.train_from_iterator(bounded_texts(texts, config.max_train_bytes), trainer)
    return tokenizer


def wrap_tokenizer(tokenizer: Tokenizer, config: TokenizerConfig) -> PreTrainedTokenizerFast:
    """The `transformers` tokenizer around a trained `tokenizers.Tokenizer`, with the special tokens set."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        pad_token=PAD,
        model_max_length=config.model_max_length,
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(
    tokenizer: PreTrainedTokenizerFast, folder: str | Path, model_max_length: int | None = None
) -> Path:
    """Save as a Hugging Face tokenizer folder that transformers 4.x and 5.x both load with AutoTokenizer
    (optionally announcing another `model_max_length`, e.g. the context of the model it is saved with)."""
    folder = Path(folder)
    tokenizer.save_pretrained(folder)
    config_path = folder / "tokenizer_config.json"
    settings = json.loads(config_path.read_text(encoding="utf-8"))
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    if model_max_length is not None:
        settings["model_max_length"] = model_max_length
    config_path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return folder


def train_tokenizer(
    corpus: Corpus, folder: str | Path, config: TokenizerConfig = TokenizerConfig(), *, progress: bool = True
) -> PreTrainedTokenizerFast:
    """Train BPE on the corpus's train split, save it to `folder`, and return it as loaded from there."""
    n_docs = int((corpus.manifest["split"] == "train").sum())
    texts = (d.text for d in tqdm(corpus.documents("train"), total=n_docs, desc="BPE", disable=not progress))
    tokenizer = wrap_tokenizer(train_bpe(texts, config, progress=False), config)
    return load_tokenizer(save_tokenizer(tokenizer, folder))


def load_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    """A tokenizer folder, loaded the way any Hugging Face model's tokenizer is."""
    return AutoTokenizer.from_pretrained(str(folder))
