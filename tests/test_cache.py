"""The activation cache: shards and manifest, resumable writing, shuffled reading across shards, rank shares."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from saekit.activations import ActivationConfig, ActivationSource
from saekit.activations.cache import CachedBatches, open_cache, read_manifest, verify_cache, write_cache
from saekit.errors import InputError
from saekit.saes.provenance import Provenance

WIDTH = 4


class LabelledSource:
    """Rows whose every entry is the row's index, in chunks; optionally interrupted after some chunks."""

    def __init__(self, n_rows: int, chunk: int = 37, stop_after: int | None = None, hook: str = "h.0") -> None:
        self.n_rows, self.chunk, self.stop_after, self.hook = n_rows, chunk, stop_after, hook
        self.config = SimpleNamespace(dtype="float32", torch_dtype=torch.float32)
        self.widths, self.width = (WIDTH,), WIDTH
        self.skips: list[int] = []

    def provenance(self) -> Provenance:
        return Provenance(model="labelled", hook=self.hook, context_len=8, text="numbers")

    def site_columns(self) -> list[tuple[str, str, slice]]:
        return [(self.hook, "output", slice(0, WIDTH))]

    def activations(self, skip: int = 0):
        self.skips.append(skip)
        for i, start in enumerate(range(skip, self.n_rows, self.chunk)):
            if self.stop_after is not None and i == self.stop_after:
                raise KeyboardInterrupt
            ids = torch.arange(start, min(start + self.chunk, self.n_rows), dtype=torch.float32)
            yield ids[:, None].expand(-1, WIDTH).clone()


def _write(folder, n_rows=1000, tokens=900, shard_rows=128, **kw):
    return write_cache(LabelledSource(n_rows, **kw), folder, tokens, shard_bytes=shard_rows * WIDTH * 4,
                       progress=False)


def test_shards_hold_the_first_rows_in_order_with_their_hashes(tmp_path):
    manifest = _write(tmp_path / "c")
    assert manifest.complete and manifest.rows == 900 and manifest.width == WIDTH
    assert [s.rows for s in manifest.shards] == [128] * 7 + [4]
    rows = torch.cat([load_file(tmp_path / "c" / s.file)["activations"] for s in manifest.shards])
    assert torch.equal(rows[:, 0], torch.arange(900, dtype=torch.float32))
    assert verify_cache(tmp_path / "c") == []
    (tmp_path / "c" / manifest.shards[2].file).write_bytes(b"x" * 10)
    assert verify_cache(tmp_path / "c") == [manifest.shards[2].file]
    saved = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert saved["provenance"]["hook"] == "h.0" and saved["rows"] == 900


def test_a_short_text_leaves_a_complete_smaller_cache(tmp_path):
    manifest = _write(tmp_path / "c", n_rows=300, tokens=900)
    assert manifest.complete and manifest.rows == 300


def test_a_killed_write_resumes_to_the_same_bytes_without_rereading(tmp_path):
    whole = _write(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path / "part", stop_after=9)  # 9 chunks of 37 rows: 2 shards listed, the rest lost
    partial = read_manifest(tmp_path / "part")
    assert not partial.complete and partial.rows == 256
    with pytest.raises(InputError, match="incomplete"):
        open_cache(tmp_path / "part")
    source = LabelledSource(1000)
    resumed = write_cache(source, tmp_path / "part", 900, shard_bytes=128 * WIDTH * 4, progress=False)
    assert source.skips == [256]  # rows already on disk are not read again
    assert [s.sha256 for s in resumed.shards] == [s.sha256 for s in whole.shards]
    again = LabelledSource(1000)
    write_cache(again, tmp_path / "part", 900, shard_bytes=128 * WIDTH * 4, progress=False)
    assert again.skips == []  # a finished cache is left alone


def test_other_settings_or_a_foreign_folder_are_refused(tmp_path):
    _write(tmp_path / "c")
    with pytest.raises(InputError, match="other settings.*provenance"):
        _write(tmp_path / "c", hook="h.1")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="something other than"):
        _write(tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def _ids(batches) -> list[int]:
    return torch.cat(list(batches))[:, 0].long().tolist()


def test_one_pass_gives_every_row_once_mixed_across_shards(tmp_path):
    _write(tmp_path / "c")
    batches = list(CachedBatches(tmp_path / "c", batch_size=32, buffer_bytes=300 * WIDTH * 4, seed=1))
    assert sorted(_ids(batches)) == list(range(900))
    shards_in_first = {i // 128 for i in batches[0][:, 0].long().tolist()}
    assert len(shards_in_first) >= 2
    other_seed = CachedBatches(tmp_path / "c", batch_size=32, buffer_bytes=300 * WIDTH * 4, seed=2)
    assert _ids(other_seed) != _ids(batches)


def test_more_tokens_than_the_cache_repeat_in_a_new_order(tmp_path):
    _write(tmp_path / "c")
    ids = _ids(CachedBatches(tmp_path / "c", batch_size=50, total_tokens=2000, buffer_bytes=300 * WIDTH * 4))
    assert len(ids) == 2000
    assert sorted(ids[:900]) == sorted(ids[900:1800]) == list(range(900))
    assert ids[:900] != ids[900:1800]


@pytest.mark.parametrize("first", [0, 3, 10, 37])
def test_batches_restart_at_any_batch(tmp_path, first):
    _write(tmp_path / "c")
    kw = dict(batch_size=32, total_tokens=1500, buffer_bytes=200 * WIDTH * 4, seed=4)
    whole = list(CachedBatches(tmp_path / "c", **kw))
    assert all(torch.equal(a, b) for a, b in zip(CachedBatches(tmp_path / "c", **kw).batches_from(first),
                                                 whole[first:], strict=True))


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shares_put_together_are_the_global_batches(tmp_path, world):
    _write(tmp_path / "c")
    kw = dict(batch_size=40, total_tokens=1000, buffer_bytes=300 * WIDTH * 4, seed=0)
    whole = list(CachedBatches(tmp_path / "c", **kw))
    shares = [list(CachedBatches(tmp_path / "c", rank=r, world_size=world, **kw)) for r in range(world)]
    for i, batch in enumerate(whole):
        assert torch.equal(torch.cat([s[i] for s in shares]), batch)
    assert max(s[0].shape[0] for s in shares) - min(s[0].shape[0] for s in shares) <= 1


def test_a_model_cache_holds_the_hook_activations(tiny_lm_dir, text_dir, tmp_path):
    """Checked against the hook's output read with a plain torch forward hook on the transformers model."""
    import transformers

    config = ActivationConfig(hook="transformer.h.0.mlp.act", context_len=16, model_batch_size=4, repeat=False)
    source = ActivationSource(str(tiny_lm_dir), text_dir, config, progress=False)
    manifest = write_cache(source, tmp_path / "c", 200, shard_bytes=64 * source.width * 4, progress=False)
    cached = torch.cat([load_file(tmp_path / "c" / s.file)["activations"] for s in manifest.shards])
    assert cached.shape == (200, source.width) and manifest.provenance.hook == "transformer.h.0.mlp.act"

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    seen = []
    handle = model.transformer.h[0].mlp.act.register_forward_hook(lambda m, i, o: seen.append(o))
    rows = []
    with torch.no_grad():
        for windows in source.tokens:
            model(input_ids=windows.input_ids, attention_mask=windows.attention_mask)
            rows.append(seen.pop()[source.keep_mask(windows)])
            if sum(r.shape[0] for r in rows) >= 200:
                break
    handle.remove()
    torch.testing.assert_close(cached, torch.cat(rows)[:200], rtol=1e-5, atol=1e-5)
