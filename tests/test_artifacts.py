"""Synthetic-set files: round trips, refusing anything that could run code, `show` and `eval`."""
from __future__ import annotations

import json
import pickle

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from mddbench.api.synset import FORMAT, SyntheticSet
from mddbench.cli import main
from mddbench.errors import ArtifactError
from mddbench.results.store import ResultStore, artifact_path


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def assert_same(a: SyntheticSet, b: SyntheticSet) -> None:
    assert torch.equal(a.images, b.images) and a.images.dtype == b.images.dtype
    assert torch.equal(a.labels, b.labels) and a.labels.dtype == b.labels.dtype
    assert (a.lr, a.stages, a.stage_lrs, a.renderer, a.meta) == (b.lr, b.stages, b.stage_lrs, b.renderer, b.meta)
    assert a.extra.keys() == b.extra.keys() and all(torch.equal(a.extra[k], b.extra[k]) for k in a.extra)


# -------------------------------------------------------------------------------- round trip
def test_round_trip_hard_soft_lr_stages_meta(tmp_path):
    meta = {"method": "dm", "dataset": "demo", "ipc": 2, "hparams": {"lr_img": 1.0, "dsa_strategy": "color_crop"},
            "normalisation": {"mean": [0.5], "std": [0.25]}, "seconds": 1.25, "note": None}
    sets = {
        "hard": SyntheticSet(randn(6, 1, 8, 8), torch.arange(3).repeat_interleave(2), meta=meta),
        "soft": SyntheticSet(randn(6, 3, 8, 8), randn(6, 3, seed=1), lr=0.0123, meta=meta),
        "stages": SyntheticSet(randn(6, 1, 4, 4, 4), torch.arange(3).repeat(2), lr=0.01, stages=[3, 3],
                               stage_lrs=[0.02, 0.005], extra={"codes": randn(2, 5, seed=2)}, meta=meta),
    }
    for name, synset in sets.items():
        path = synset.save(tmp_path / "sub" / f"{name}.safetensors")
        loaded = SyntheticSet.load(path)
        assert_same(loaded, synset)
        assert not list(tmp_path.glob("sub/*.tmp"))
    assert SyntheticSet.load(tmp_path / "sub" / "hard.safetensors").label_type == "hard"
    soft = SyntheticSet.load(tmp_path / "sub" / "soft.safetensors")
    assert soft.label_type == "soft" and torch.equal(soft.hard_labels(), sets["soft"].labels.argmax(1))
    assert soft.phases(0.01) == [(6, 0.0123)]  # the learned step size is what evaluation uses
    staged = SyntheticSet.load(tmp_path / "sub" / "stages.safetensors")
    assert staged.phases(0.01) == [(3, 0.02), (6, 0.005)]
    with safe_open(str(tmp_path / "sub" / "hard.safetensors"), "pt") as f:  # plain safetensors, readable anywhere
        assert json.loads(f.metadata()["mddbench"])["format"] == FORMAT
        assert set(f.keys()) == {"images", "labels"}


def test_inconsistent_sets_are_refused():
    with pytest.raises(ArtifactError, match="4 images but 3 labels"):
        SyntheticSet(randn(4, 1, 2, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ArtifactError, match="stages"):
        SyntheticSet(randn(4, 1, 2, 2), torch.zeros(4, dtype=torch.long), stages=[1, 2])


# ------------------------------------------------------------------------- refusing payloads
class Payload:
    """Unpickling this creates the marker file: the proof that a loader ran code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickles_renamed_to_safetensors_never_run(tmp_path, capsys, writer):
    # the payload is live: unpickled, it does create its marker
    probe = tmp_path / "probe-marker"
    pickle.loads(pickle.dumps(Payload(probe))).close()
    assert probe.exists()

    marker = tmp_path / "marker"
    evil = tmp_path / "synset.safetensors"
    if writer == "pickle":
        evil.write_bytes(pickle.dumps({"images": Payload(marker)}))
    else:
        torch.save({"images": Payload(marker), "labels": torch.zeros(2)}, evil)
    with pytest.raises(ArtifactError, match="never unpickles"):
        SyntheticSet.load(evil)
    for command in (["eval", str(evil), "--no-record"], ["show", str(evil)], ["show", str(tmp_path)]):
        assert main(command) == 2
        assert "is not an mddbench synthetic set" in capsys.readouterr().err
    assert not marker.exists()


def test_foreign_or_malformed_safetensors_are_refused(tmp_path):
    tensors = {"images": randn(2, 1, 4, 4), "labels": torch.zeros(2, dtype=torch.long)}
    cases = {
        "no_metadata": (None, "is not an mddbench synthetic set"),
        "other_metadata": ({"format": "pt"}, "is not an mddbench synthetic set"),
        "other_format": ({"mddbench": json.dumps({"format": "someone.else/3"})}, "unsupported format"),
        "not_a_dict": ({"mddbench": "[1, 2]"}, "unsupported format"),
        "bad_json": ({"mddbench": "{not json"}, "is not an mddbench synthetic set"),
        "bad_stages": ({"mddbench": json.dumps({"format": FORMAT, "stages": "ab"})}, "malformed"),
    }
    for name, (metadata, message) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path), metadata=metadata)
        with pytest.raises(ArtifactError, match=message):
            SyntheticSet.load(path)
    path = tmp_path / "no_labels.safetensors"
    save_file({"images": tensors["images"]}, str(path), metadata={"mddbench": json.dumps({"format": FORMAT})})
    with pytest.raises(ArtifactError, match="lacks images or labels"):
        SyntheticSet.load(path)
    with pytest.raises(ArtifactError, match="does not exist"):
        SyntheticSet.load(tmp_path / "missing.safetensors")


# -------------------------------------------------------------------------------------- show
@pytest.mark.parametrize("shape", [(3, 28, 28), (1, 12, 12, 12)], ids=["2d", "3d"])
def test_show_writes_a_png(tmp_path, capsys, shape):
    images = randn(8, *shape)
    images[:4] -= 1.0  # class 0 darker than class 1: the picture must not be blank
    meta = {"method": "random", "dataset": "x", "ipc": 4, "n_classes": 2,
            "normalisation": {"mean": [0.5] * shape[0], "std": [0.25] * shape[0]}}
    path = SyntheticSet(images, torch.arange(2).repeat_interleave(4), meta=meta).save(tmp_path / "synset.safetensors")
    assert main(["show", str(path)]) == 0
    png = tmp_path / "synset.png"
    assert f"wrote {png}" in capsys.readouterr().out
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 200 and im.height > 100
        grey = im.convert("L")
        assert grey.getextrema()[1] - grey.getextrema()[0] > 100
    other = tmp_path / "elsewhere" / "grid.png"
    other.parent.mkdir()
    assert main(["show", str(tmp_path), "-o", str(other)]) == 0  # a run folder works too
    assert other.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -------------------------------------------------------------------------------------- eval
@pytest.fixture(scope="module")
def run_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    assert main(["run", "--method", "random", "--dataset", "demo", "--ipc", "2", "--budget", "smoke",
                 "--out", str(out), "--quiet"]) == 0
    return out


@pytest.mark.slow
def test_eval_reevaluates_a_saved_set(run_out, capsys):
    store = ResultStore(run_out / "results.sqlite")
    [original] = store.records()
    artifact = str(artifact_path(original, run_out))
    assert main(["eval", artifact, "--model", "lenet", "--out", str(run_out), "--quiet"]) == 0
    assert "lenet" in capsys.readouterr().out
    [lenet] = store.records(eval_model="lenet")
    assert (lenet["job_id"], lenet["method"], lenet["dataset"], lenet["ipc"], lenet["budget"]) == \
        (original["job_id"], "random", "demo", 2, "smoke")
    assert lenet["metrics"]["test_acc"]["n"] == 2 and lenet["artifact"] == original["artifact"]
    assert lenet["data_checksum"] == original["data_checksum"]

    # the record is reproducible from the file alone
    assert main(["eval", artifact, "--seed", "0", "--out", str(run_out), "--quiet"]) == 0
    [again] = store.records(job_id=f"{original['job_id']}:eval-smoke-s0")
    assert again["eval_model"] == "convnet" and again["metrics"] == original["metrics"]
    assert len(store) == 3
