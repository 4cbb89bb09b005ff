"""Synthetic sets: what a method returns, what evaluation trains on, what users share.

A :class:`SyntheticSet` holds images (normalised, in the dataset's layout), hard labels or soft
label logits, the learned student learning rate when the method has one, and, for methods whose
set is not a plain list of images, either sequential stages (SeqMatch) or a *renderer* named from
a registry (HaBa's hallucinators) with its tensors. Files are safetensors plus JSON metadata:
loading one cannot execute code, and a renderer is only ever looked up by name in the registry.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mddbench import __version__
from mddbench.atomic import replacing
from mddbench.errors import ArtifactError
from mddbench.nn.losses import cross_entropy  # noqa: F401  (the loss of a set's labels, hard or soft)
from mddbench.nn.training import Renderer
from mddbench.registry import Registry

if TYPE_CHECKING:
    from mddbench.data.dataset import DatasetSpec

FORMAT = "mddbench.api.synset/1"


RENDERERS: Registry = Registry("renderer")  # name -> factory(extra tensors, meta) -> Renderer


def register_renderer(name: str):
    """Decorator: register a renderer factory under ``name`` (a set names its renderer; loading one looks it up)."""
    def deco(factory: Callable[[dict[str, torch.Tensor], dict], Renderer]):
        return RENDERERS.register(name, factory)

    return deco


@dataclass
class SyntheticSet:
    images: torch.Tensor
    labels: torch.Tensor  # (N,) int64 hard labels, or (N, K) float logits for soft labels
    lr: float | None = None  # learned student step size, used by evaluation when present
    stages: list[int] | None = None  # SeqMatch: sizes of consecutive subsets, trained cumulatively
    stage_lrs: list[float] | None = None
    renderer: str | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    source: str | None = field(default=None, compare=False, repr=False)  # the file it was loaded from

    def __post_init__(self):
        self.images = self.images.detach()
        self.labels = self.labels.detach()
        if not self.labels.is_floating_point() and not self.labels.is_complex() and self.labels.dtype != torch.bool:
            self.labels = self.labels.long()  # class indices of any integer type (int8 from a file) index as int64
        if len(self.images) != len(self.labels):
            raise ArtifactError(f"{len(self.images)} images but {len(self.labels)} labels")
        if self.stages is not None and sum(self.stages) != len(self.images):
            raise ArtifactError(f"stages {self.stages} do not add up to {len(self.images)} images")

    def check(self, spec: "DatasetSpec | None" = None) -> None:
        """Raise ArtifactError naming everything that makes this set unusable (with ``spec``'s data, when given)."""
        problems = self.problems(spec)
        if problems:
            what = self.source or "the synthetic set"
            raise ArtifactError(f"{what} cannot be {'evaluated on ' + spec.name if spec else 'used'}: "
                                + "; ".join(problems))

    def problems(self, spec: "DatasetSpec | None" = None) -> list[str]:
        x, y, out = self.images, self.labels, []
        if x.ndim not in (4, 5):
            out.append(f"images have shape {tuple(x.shape)}, expected (N, C, H, W) or (N, C, D, H, W)")
        if len(x) == 0:
            out.append("it has no images")
        if not x.is_floating_point():
            out.append(f"images are {x.dtype}, expected floating point (normalised)")
        elif not bool(torch.isfinite(x).all()):
            out.append(f"{int((~torch.isfinite(x)).sum())} image values are NaN or infinite")
        if y.is_floating_point():
            if y.ndim != 2:
                out.append(f"soft labels have shape {tuple(y.shape)}, expected (N, classes)")
            elif not bool(torch.isfinite(y).all()):
                out.append("soft labels contain NaN or infinite values")
        elif y.dtype == torch.bool or y.is_complex() or y.ndim != 1:
            out.append(f"labels are {y.dtype} of shape {tuple(y.shape)}, expected (N,) class indices or (N, classes) "
                       "soft-label logits")
        elif len(y) and int(y.min()) < 0:
            out.append(f"a label is {int(y.min())}, labels are class indices >= 0")
        if self.lr is not None and not _positive(self.lr):
            hint = " (a learned step size that fell to zero or below: distill again with a smaller --hp lr_lr)" \
                if isinstance(self.lr, (int, float)) and self.lr <= 0 else ""
            out.append(f"its step size (lr) is {self.lr!r}, expected a finite number > 0{hint}")
        if self.stages is not None:
            if not isinstance(self.stages, list) or not all(_count(s) for s in self.stages):
                out.append(f"stages {self.stages!r} are not a list of positive image counts")
            if self.stage_lrs is not None and (not isinstance(self.stage_lrs, list)
                                               or len(self.stage_lrs) != len(self.stages)):
                out.append(f"stage_lrs {self.stage_lrs!r} should hold one step size per stage ({len(self.stages)})")
        if self.stage_lrs is not None:
            if self.stages is None:
                out.append("stage_lrs are given without stages")
            elif isinstance(self.stage_lrs, list) and not all(_positive(v) for v in self.stage_lrs):
                out.append(f"stage_lrs {self.stage_lrs!r} must be finite numbers > 0")
        if self.renderer is not None and not isinstance(self.renderer, str):
            out.append(f"renderer {self.renderer!r} is not a name")
        out += [f"tensor extra.{k} contains NaN or infinite values" for k, v in self.extra.items()
                if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if spec is None:
            return out
        if self.renderer is None and x.ndim in (4, 5) and tuple(x.shape[1:]) != spec.shape:
            out.append(f"images are {'x'.join(map(str, x.shape[1:]))}, {spec.name} is "
                       f"{'x'.join(map(str, spec.shape))}")
        k = spec.n_classes
        if y.is_floating_point() and y.ndim == 2 and y.shape[1] != k:
            out.append(f"soft labels have {y.shape[1]} classes, {spec.name} has {k}")
        elif not y.is_floating_point() and y.ndim == 1 and len(y) and int(y.max()) >= k:
            out.append(f"a label is {int(y.max())}, {spec.name} has classes 0..{k - 1}")
        return out

    @property
    def label_type(self) -> str:
        return "soft" if self.labels.is_floating_point() else "hard"

    def __len__(self) -> int:
        return len(self.images)

    def hard_labels(self) -> torch.Tensor:
        return self.labels.argmax(1) if self.label_type == "soft" else self.labels

    def phases(self, default_lr: float) -> list[tuple[int, float]]:
        """(number of leading images to train on, learning rate) for each training phase."""
        if self.stages is None:
            return [(len(self), self.lr if self.lr is not None else default_lr)]
        lrs = self.stage_lrs or [self.lr if self.lr is not None else default_lr] * len(self.stages)
        ends = torch.tensor(self.stages).cumsum(0).tolist()
        return list(zip(ends, lrs))

    def make_renderer(self) -> Renderer | None:
        if self.renderer is None:
            return None
        if self.renderer not in RENDERERS:
            import mddbench.registry as registry  # renderers register when their method module loads

            registry.METHODS.load()
        if self.renderer not in RENDERERS:
            raise ArtifactError(f"unknown renderer {self.renderer!r}; known: {sorted(RENDERERS)}")
        try:
            return RENDERERS[self.renderer](self.extra, self.meta)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # tensors missing or of the wrong shape
            raise ArtifactError(f"{self.source or 'the synthetic set'}: its renderer {self.renderer!r} cannot be "
                                f"built from the set's tensors ({type(exc).__name__}: {exc}); the file is "
                                "incomplete or was edited") from exc

    # ------------------------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"images": self.images.cpu().contiguous(), "labels": self.labels.cpu().contiguous()}
        tensors.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in self.extra.items()})
        header = {"format": FORMAT, "version": __version__, "lr": self.lr, "stages": self.stages,
                  "stage_lrs": self.stage_lrs, "renderer": self.renderer, "label_type": self.label_type,
                  "meta": self.meta}
        with replacing(path) as tmp:
            save_file(tensors, str(tmp), metadata={"mddbench": json.dumps(header, default=str)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SyntheticSet":
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path} does not exist")
        try:
            tensors = load_file(str(path))
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                header = json.loads((f.metadata() or {})["mddbench"])
        except (SafetensorError, KeyError, ValueError, OSError) as exc:
            raise ArtifactError(
                f"{path} is not an mddbench synthetic set ({type(exc).__name__}: {exc}). mddbench only reads "
                "safetensors files with its own metadata and never unpickles, so .pt/.pkl files are refused.") from exc
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            found = header.get("format") if isinstance(header, dict) else header
            raise ArtifactError(f"{path}: unsupported format {found!r}, expected {FORMAT}")
        if "images" not in tensors or "labels" not in tensors:
            raise ArtifactError(f"{path} lacks images or labels")
        # float16/float64 files train in float32, as every set a method makes does (exact for float16)
        tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
        extra = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
        try:
            synset = cls(tensors["images"], tensors["labels"], header.get("lr"), header.get("stages"),
                         header.get("stage_lrs"), header.get("renderer"), extra, dict(header.get("meta") or {}),
                         source=str(path))
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{path} has malformed mddbench metadata ({type(exc).__name__}: {exc})") from exc
        synset.check()
        return synset


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0
