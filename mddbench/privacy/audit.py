"""Privacy audit of a synthetic set: does it leak the patients it was distilled from?

Two questions, answered against the very data the set was made from (its checksum must match):

- *Memorisation* (:mod:`mddbench.privacy.memorisation`): how many synthetic images are near copies of a
  real training image, in pixel space (after the dataset's normalisation), in pixel space with every
  channel of every image standardized (copies up to brightness and contrast) and in the embedding of a
  network trained on the real training split.
- *Membership inference* (:mod:`mddbench.privacy.membership`): the loss attack against the networks the
  evaluation protocol trains on the set (same seeds, so the same networks as the set's evaluation
  records), telling real training members from test non-members; the same attack against the
  ``real`` row's network (trained on the whole train split) is the reference leak of sharing a
  model trained on patients. That network also provides the embedding. A third attack needs no
  network: whoever holds the set guesses "member" for a patient whose image lies close to one of
  its images.

A likelihood-ratio attack with shadow models (Carlini et al. 2022) is not run: for a distilled set
each shadow model needs a distillation of its own shadow split, hundreds of distillations per set.
Every result carries :data:`PRIVACY_VERSION`; results of different versions are never pooled.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mddbench.api.budgets import Budget, canonical_budget, get_budget
from mddbench.api.saved import own_seed as saved_seed
from mddbench.api.synset import SyntheticSet
from mddbench.data.dataset import RealData
from mddbench.errors import ArtifactError, ConfigError, UnknownNameError
from mddbench.evaluation.metrics import summarize
from mddbench.evaluation.protocol import EvalConfig, model_streams, train_networks
from mddbench.ids import identity_digest
from mddbench.memory import micro_batch
from mddbench.nn.networks import create_network
from mddbench.privacy.membership import attack_metrics, loss_scores
from mddbench.privacy.memorisation import NEAR_COPY_QUANTILE, SPACE_LABELS, flat, near_copies, nearest, standardized
from mddbench.registry import METHODS
from mddbench.run.record import file_digest, provenance
from mddbench.seeding import generator as seeded

PRIVACY_VERSION = "privacy-v1"
ATTACK = "loss"
LIRA_NOTE = "not run: shadow models of a distilled set need one distillation per shadow split"
ATTACK_METRICS = ("auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")


@dataclass(frozen=True)
class PrivacyConfig:
    """What an audit trains and searches; recorded with (and identifying) every privacy result."""

    target: EvalConfig = EvalConfig()  # the protocol's networks trained on the set: attacked
    reference: EvalConfig = EvalConfig(n_models=1, epochs=30)  # the `real` row's: attacked, and the embedding
    max_heldout: int = 5000  # held-out images (val + test) in the yardstick, a seeded subsample beyond this
    quantile: float = NEAR_COPY_QUANTILE
    version: str = PRIVACY_VERSION

    def as_dict(self) -> dict:
        return asdict(self)


def config_for(meta: dict[str, Any], budget: Budget, eval_model: str = "convnet", n_models: int | None = None,
               epochs: int | None = None, real_epochs: int | None = None, n_reference: int = 1,
               evaluated: dict[str, Any] | None = None) -> PrivacyConfig:
    """The attacked networks: those of the set's evaluation record ``evaluated`` when there is one,
    else the budget's evaluation with the method's own overrides (as a run applies them); and the
    `real` row's recipe for the reference network."""
    if evaluated is not None:
        target = EvalConfig(**evaluated["eval_config"])
    else:
        target = EvalConfig(model=eval_model, n_models=budget.eval_models, epochs=budget.eval_epochs)
        try:
            target = target.with_(**METHODS.get(meta.get("method", ""))().eval_overrides(budget))
        except UnknownNameError:
            pass  # a set from an unloaded plugin or another tool: the protocol's defaults
    real = EvalConfig(model=eval_model, n_models=n_reference).with_(**METHODS.get("real")().eval_overrides(budget))
    return PrivacyConfig(target=target.with_(n_models=n_models, epochs=epochs),
                         reference=real.with_(epochs=real_epochs))


# ------------------------------------------------------------------------------------- inputs
def load_for_audit(artifact: str | Path, data_root: str | None = None) -> tuple[SyntheticSet, RealData, Path]:
    """The set and the real data it was made from; refuses anything else, with what to do."""
    from mddbench.api.saved import load_with_data

    synset, data, path = load_with_data(artifact, data_root, "audit", require_checksum=True)
    method = synset.meta.get("method")
    if method in METHODS and not METHODS.get(method).shareable:
        raise ArtifactError(f"{path} claims to be a `{method}` set: the real train split is never a shareable set "
                            "(its leak is the reference row of every audit)")
    return synset, data, path


@torch.no_grad()
def audited_images(synset: SyntheticSet, seed: int, device: torch.device) -> torch.Tensor:
    """The images the protocol trains on: stored images, or a renderer's images (one seeded draw each)."""
    renderer = synset.make_renderer()
    if renderer is None:
        return synset.images.float()
    return renderer.to(device).render(synset.images.to(device), seeded(seed, "privacy-render")).cpu().float()


# ------------------------------------------------------------------------------------ networks
def train_protocol_networks(synset: SyntheticSet, data: RealData, config: EvalConfig, seed: int,
                            device: torch.device) -> list[torch.nn.Module]:
    """The networks :func:`mddbench.evaluation.protocol.evaluate` trains for this seed (its "loop" engine)."""
    spec, nets = data.spec, []
    for i in range(config.n_models):
        init, order = model_streams(seed, i, config.model)
        net = create_network(config.model, spec.channels, spec.n_classes, spec.size, spec.dims, generator=init,
                             device=device)
        nets += train_networks([net], synset, config, [order], device)
    return nets


def reference_networks(data: RealData, config: EvalConfig, seed: int, device: torch.device,
                       cache: dict | None = None) -> list[torch.nn.Module]:
    """The `real` row's networks (the full train split); kept in memory only, never written:
    a network trained on patients is itself what an audit warns about."""
    key = (data.spec.name, data.checksum, json.dumps(config.as_dict(), sort_keys=True), seed, str(device))
    if cache is not None and key in cache:
        return cache[key]
    full = SyntheticSet(data.x["train"], data.y["train"])
    nets = train_protocol_networks(full, data, config, seed, device)
    if cache is not None:
        cache[key] = nets
    return nets


@torch.no_grad()
def embed(net: torch.nn.Module, x: torch.Tensor, device: torch.device, batch: int | None = None) -> np.ndarray:
    if not hasattr(net, "embed"):
        raise ConfigError(f"{type(net).__name__} has no embedding (embed); audit with --eval-model convnet")
    net.eval()
    batch = batch or micro_batch(net, x[:2].to(device), "embed", net.embed)
    return np.concatenate([flat(net.embed(x[i:i + batch].to(device)).float()) for i in range(0, len(x), batch)])


def attack(nets: list[torch.nn.Module], data: RealData, device: torch.device) -> dict[str, Any]:
    """The loss attack on each network: train split members against test non-members."""
    per_model: dict[str, list] = {k: [] for k in (*ATTACK_METRICS, "test_acc")}
    for net in nets:
        members, _ = loss_scores(net, data.x["train"], data.y["train"], device)
        nonmembers, correct = loss_scores(net, data.x["test"], data.y["test"], device)
        found = attack_metrics(members, nonmembers)
        found["test_acc"] = float(correct.mean()) if np.isfinite(nonmembers).all() else math.nan
        for k, v in found.items():
            per_model[k].append(None if math.isnan(v) else v)  # a diverged network has no score
    return {k: summarize(v) for k, v in per_model.items()}


def set_distance_attack(images: torch.Tensor, data: RealData) -> dict[str, float]:
    """The attack of whoever holds the set itself: a patient whose image lies close to a synthetic
    image (pixel space) is guessed a member. Score: minus the distance to the nearest synthetic image."""
    syn = flat(images)
    members, nonmembers = (nearest(flat(data.x[s].cpu()), syn)[0] for s in ("train", "test"))
    return attack_metrics(-members, -nonmembers)


# --------------------------------------------------------------------------------------- audit
def audit(synset: SyntheticSet, data: RealData, config: PrivacyConfig, seed: int = 0,
          device: torch.device | str = "cpu", reference_cache: dict | None = None) -> dict[str, Any]:
    """Memorisation and membership figures of ``synset`` against ``data`` (its train split)."""
    device = torch.device(device)
    start = time.perf_counter()
    images = audited_images(synset, seed, device)
    heldout = torch.cat([data.x["val"], data.x["test"]])
    if len(heldout) > config.max_heldout:
        heldout = heldout[torch.randperm(len(heldout), generator=seeded(seed, "privacy-heldout"))[:config.max_heldout]]
    train = data.x["train"].cpu()
    reference = reference_networks(data, config.reference, seed, device, reference_cache)
    targets = train_protocol_networks(synset, data, config.target, seed, device)
    memorisation = {
        "pixel": near_copies(flat(images), flat(train), flat(heldout), config.quantile),
        "pixel_standardized": near_copies(*(standardized(x) for x in (images, train, heldout)), config.quantile),
        "embedding": near_copies(*(embed(reference[0], x, device) for x in (images, train, heldout)),
                                 config.quantile),
    }
    membership = {"attack": ATTACK, "lira": LIRA_NOTE, "members": "train split", "nonmembers": "test split",
                  "n_members": len(data.y["train"]), "n_nonmembers": len(data.y["test"]),
                  "target": attack(targets, data, device), "reference": attack(reference, data, device),
                  "set_distance": set_distance_attack(images, data)}
    return {"memorisation": memorisation, "membership": membership, "n_images": len(images),
            "audited_images": f"rendered by {synset.renderer}" if synset.renderer else "stored",
            "audit_seconds": round(time.perf_counter() - start, 3)}


def privacy_id(job_id: str, config: PrivacyConfig, seed: int) -> str:
    """Identity of a privacy result: the run, and everything that determines the audit."""
    return identity_digest([job_id, seed, config.as_dict()])


def make_privacy_record(meta: dict[str, Any], data: RealData, result: dict[str, Any], config: PrivacyConfig,
                        budget: str, seed: int, artifact: str | None, device: torch.device | str,
                        eval_record_id: str | None = None, budget_version: int = 1,
                        artifact_sha256: str | None = None) -> dict[str, Any]:
    """A self-describing privacy result, linked by ``eval_record_id`` to the evaluation record whose
    networks it attacked (None: no such record was stored; the budget's recipe was used).
    ``budget_version``: the definition of ``budget`` the audited set ran under, so that the privacy
    tables, like the accuracy tables, never pool sets of different budget versions. ``artifact_sha256``
    names the very file audited: equal to the evaluation record's own ``artifact_sha256``, the audited
    set is the evaluated one; a rerun of the job writes another file (it records its own seconds), and
    on a CPU with other kernels another set."""
    job_id = meta.get("job_id") or "external"
    ipc = meta.get("ipc")
    return {
        "id": privacy_id(job_id, config, seed), "privacy_version": config.version, "job_id": job_id,
        "eval_record_id": eval_record_id, "eval_model": config.target.model,
        "method": meta.get("method", "external"), "dataset": data.spec.name, "ipc": "full" if ipc is None else ipc,
        "seed": seed, "budget": budget, "budget_version": budget_version, "protocol": config.target.protocol,
        "label_type": meta.get("label_type", "hard"), "overrides": meta.get("overrides") or {},
        "time_budget": meta.get("time_budget"), "data_checksum": data.checksum, "artifact": artifact,
        "artifact_sha256": artifact_sha256,
        **{k: meta[k] for k in ("claimed_method", "provenance") if k in meta},
        "device": str(device), "config": config.as_dict(), **result,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def audit_artifact(artifact: str | Path, data_root: str | None = None, budget: str | None = None,
                   eval_model: str = "convnet", n_models: int | None = None, epochs: int | None = None,
                   real_epochs: int | None = None, seed: int | None = None, device: torch.device | str = "cpu",
                   reference_cache: dict | None = None, known: Callable[[str], Any] | None = None,
                   evaluation: Callable[[str, str], dict | None] | None = None, store_path: Path | None = None
                   ) -> tuple[dict[str, Any] | None, SyntheticSet, RealData]:
    """Load, verify and audit one saved set; returns its privacy record (not yet stored), or None
    when ``known(id)`` says this very audit is already stored. ``evaluation(job_id, model)`` finds
    the evaluation record of the set's run (``mddbench run``/``sweep``), whose networks are then the
    attacked ones (unless ``n_models``/``epochs`` override them).

    As for ``eval``, a set's own metadata is believed only for a file the store at ``store_path``
    recorded (:func:`mddbench.run.record.provenance`): any other file is audited as ``external``, its
    claim kept as ``claimed_method``, and named by its own digest, so a relabelled file never stands for
    a method's row or links to another file's evaluation."""
    synset, data, path = load_for_audit(artifact, data_root)
    digest = file_digest(path)  # the file as loaded
    meta = {**synset.meta, **provenance(path, synset.meta, store_path or Path(os.devnull))}
    if meta["provenance"] != "recorded run":
        meta["job_id"] = f"external-{digest[:16]}"
        evaluation = None
    budget_name = budget or meta.get("budget") or "quick"
    custom = any(v is not None for v in (n_models, epochs, real_epochs))
    own_seed = saved_seed(synset, path) if seed is None else meta.get("seed", 0)
    evaluated = None
    if evaluation is not None and meta.get("job_id") and budget is None and seed in (None, own_seed):
        evaluated = evaluation(meta["job_id"], eval_model)  # another seed trains other networks: no link
    config = config_for(meta, get_budget(budget_name), eval_model, n_models, epochs, real_epochs,
                        evaluated=evaluated)
    seed = own_seed if seed is None else seed
    # a set no run of ours made is named by its file, as its evaluation record is (run.pipeline.evaluate_saved)
    meta = {**meta, "job_id": meta.get("job_id") or f"external-{digest[:16]}"}
    if known is not None and known(privacy_id(meta["job_id"], config, seed)):
        return None, synset, data
    result = audit(synset, data, config, seed, device, reference_cache)
    label = evaluated["budget"] if evaluated is not None and not custom else budget_name
    label = f"{label}-custom" if custom and not label.endswith("-custom") else label
    linked = evaluated["id"] if evaluated is not None and n_models is None and epochs is None else None
    # the set's own budget definition; an audit at another --budget: that budget's current one
    own = budget is None or canonical_budget(budget) == meta.get("budget")  # the runner records canonical names
    version = int(meta.get("budget_version") or 1) if own else get_budget(budget_name).version
    record = make_privacy_record(meta, data, result, config, label, seed, str(path), device, linked, version,
                                 digest)
    return record, synset, data


def summary_lines(record: dict[str, Any]) -> list[str]:
    """The figures of one privacy result, for the terminal."""
    pct = lambda v: "-" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    mem, mia = record["memorisation"], record["membership"]

    def near(space: str) -> str:
        m = mem[space]
        return (f"{SPACE_LABELS[space]} {pct(m['near_copy_share'])} (near copy: d <= {m['threshold']:.4g}; "
                f"median d synthetic "
                f"{m['distance']['median']:.4g}, held-out {m['heldout_distance']['median']:.4g}: "
                f"ratio {m['distance_ratio']:.3f})")

    def loss(stats: dict) -> str:
        return (f"AUC {pct(stats['auc']['mean'])}, TPR@1% FPR {pct(stats['tpr_at_1pct_fpr']['mean'])}, "
                f"TPR@0.1% FPR {pct(stats['tpr_at_0.1pct_fpr']['mean'])} (test acc {pct(stats['test_acc']['mean'])}, "
                f"n={stats['auc']['n']})")

    cfg = record["config"]
    sd = mia["set_distance"]
    return [f"{record['method']} on {record['dataset']}, ipc {record['ipc']}, seed {record['seed']} "
            f"(budget {record['budget']}, {record['privacy_version']}; "
            f"{record['n_images']} {record['audited_images']} images)",
            f"  near copies   {near('pixel')}",
            *([f"                {near('pixel_standardized')}"] if "pixel_standardized" in mem else []),
            f"                {near('embedding')}",
            f"  loss attack   {cfg['target']['model']} x{cfg['target']['n_models']} trained on the set: "
            + loss(mia["target"]),
            f"                `real` reference ({cfg['reference']['epochs']} epochs on the train split): "
            + loss(mia["reference"]),
            f"  set distance  AUC {pct(sd['auc'])}, TPR@1% FPR {pct(sd['tpr_at_1pct_fpr'])}, "
            f"TPR@0.1% FPR {pct(sd['tpr_at_0.1pct_fpr'])}",
            f"  members: {mia['n_members']} (train split), non-members: {mia['n_nonmembers']} (test split); "
            f"likelihood-ratio attack {mia['lira']}"]
