"""Experiment trackers: TensorBoard's event files and an offline W&B run hold what the pandas history holds."""

from __future__ import annotations

import json
import time

import pytest

import saekit
from saekit.errors import InputError
from saekit.synthetic import SparseDictionary
from saekit.training import TrainConfig


def _run(tmp_path, **more):
    batches = list(SparseDictionary(d_in=16, n_features=40, p_active=0.08, seed=0).batches(64, 30, seed=1))
    sae = saekit.SAE.create("topk", 16, 32, k=4, seed=1)
    cfg = TrainConfig(total_tokens=1920, lr=1e-3, log_every_steps=5, log_dir=str(tmp_path / "logs"), **more)
    return saekit.train(sae, batches, cfg, progress=False)


def test_tensorboard_holds_every_history_row(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _run(tmp_path, log_to="tensorboard", run_name="tb")
    events = EventAccumulator(str(tmp_path / "logs" / "tb"))
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("train/mse")}
    expected = dict(zip(run.history["step"].astype(int), run.history["mse"]))
    assert logged.keys() == expected.keys() and len(logged) == 6
    for step, value in expected.items():
        assert logged[step] == pytest.approx(value, rel=1e-6)  # TensorBoard stores float32
    assert "train/l0" in events.Tags()["scalars"] and "summary/text_summary" in events.Tags()["tensors"]


def wandb_records(path):
    """The records of a W&B transaction log (.wandb): a 7-byte header, then LevelDB-style 32 KiB blocks of chunks
    (crc32, length, kind: 1 whole, 2 first, 3 middle, 4 last), each record a protobuf `Record`."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, records, partial = path.read_bytes(), 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        partial = chunk if kind in (1, 2) else partial + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(partial)
            records.append(record)
    return records


def test_wandb_offline_run_holds_every_row_and_the_summary(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run = _run(tmp_path, log_to=("wandb",), run_name="offline-run")
    [log] = (tmp_path / "logs" / "wandb").glob("offline-run-*offline-run/run-offline-run.wandb")
    deadline = time.monotonic() + 60  # W&B's service process writes the log on its own after run.finish()
    records = wandb_records(log)
    while not any(r.WhichOneof("record_type") == "exit" for r in records):
        assert time.monotonic() < deadline, "the W&B log never got its exit record"
        time.sleep(0.2)
        records = wandb_records(log)

    def items(entries):
        return {"/".join(e.nested_key) or e.key: json.loads(e.value_json) for e in entries}

    rows = [items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    assert [row["_step"] for row in rows] == run.history["step"].astype(int).tolist()
    assert [row["train/mse"] for row in rows] == pytest.approx(run.history["mse"].tolist())
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(items(r.summary.update))
    assert summary["fvu"] == pytest.approx(run.summary["fvu"]) and summary["tokens"] == run.summary["tokens"]


def test_trackers_are_checked():
    with pytest.raises(InputError, match="log_to"):
        TrainConfig(log_to=("tensorboard", "mlflow"))
    assert TrainConfig(log_to="wandb").log_to == ("wandb",)
