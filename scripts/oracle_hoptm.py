"""Oracle: one (two-iteration) HoP-TM update of ours against the official ``distill/distill_high_order_spl.py``.

Usage: ``python scripts/oracle_hoptm.py --hoptm PATH`` with PATH a checkout of ``Bian-jh/HoP-TM`` (spec
new_methods.md section 0: 939c9e66). Nothing of theirs is copied: their script's ``main`` runs as shipped,
on identical inputs, and is observed from outside:

- inputs: a tiny random 3-class, 3x32x32 train set (their ``get_dataset`` is replaced by one returning it),
  one expert trajectory written as their ``replay_buffer_0.pt`` (a random walk from a ConvNet init), hard labels,
  ``pix_init: real``, DSA off (``dsa: False``: their augmentation draws from the global RNG), a start window of
  one epoch (``[1, 2)``) so both draw the same segment, ``Iteration: 1`` (their loop runs it = 0 and 1);
- observed: the initial images and step size (the tensors their optimisers are built on), each minibatch
  permutation (``torch.randperm``, replayed into ours), the two (start, mid, end) stacks per iteration (expert
  and student, ``torch.stack``), the per-entry errors (``F.mse_loss``), the logged Grand_Loss / Angle_Loss /
  Utilization (``wandb.log``), and after the run the images, step size and their last gradients;
- ours: :class:`mddbench.methods.hoptm.HoPTM`'s ``match_step`` (the family's loop, full-memory unroll) on the
  same inputs with our ConvNet (its parameter layout is theirs: the script checks the shapes).

Their ``get_network`` reseeds the global RNG from the clock, so each run's minibatch order differs (it is
replayed into ours, so the comparison holds for whatever order a run draws). ``base_threshold`` is chosen so about half the entries pass at it = 0 (a first official run with one iteration
measures the errors), so the mask's admission is exercised; it = 1 admits more with the same threshold.

Stubs (``sys.modules``, this script only), for imports the compared code does not use here: ``wandb`` (logging;
its ``log`` is what we read), ``torchvision`` (image grids and their dataset classes; the installed build is
broken), ``kornia`` (augmentation/ZCA helpers), ``yacs`` (their config parser, only used under ``__main__``).
Their ``get_dataset`` is replaced (data loading), everything else (``get_network``, ``ReparamModule``, the loop,
the mask, the angle loss, the optimisers) is theirs.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import types
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from mddbench.methods.hoptm import HoPTM
from mddbench.nn.networks import create_network
from mddbench.nn.unroll import Student
from mddbench.trajectory.matching import TrajectoryMatching

C, IPC, SIZE, PER_CLASS = 3, 2, 32, 10


def stub_modules() -> list[dict]:
    """Stub what the compared code imports but does not use; returns the list wandb.log fills."""
    logged: list[dict] = []
    wandb = types.ModuleType("wandb")
    wandb.config = SimpleNamespace(_items={})

    def init(config=None, **kw):
        wandb.config._items = dict(vars(config))
    wandb.init, wandb.finish = init, lambda: None
    wandb.log = lambda row, step=None: logged.append(dict(row))
    wandb.run = SimpleNamespace(name="oracle")
    wandb.Histogram = wandb.Image = lambda *a, **k: None
    sys.modules["wandb"] = wandb
    tv = types.ModuleType("torchvision")
    for sub in ("utils", "datasets", "transforms"):
        mod = types.ModuleType(f"torchvision.{sub}")
        setattr(tv, sub, mod)
        sys.modules[f"torchvision.{sub}"] = mod
    sys.modules["torchvision"] = tv
    sys.modules["kornia"] = types.ModuleType("kornia")
    yacs, config = types.ModuleType("yacs"), types.ModuleType("yacs.config")

    class CfgNode(dict):
        __getattr__ = dict.__getitem__

        def __setattr__(self, k, v):
            self[k] = v
    config.CfgNode = CfgNode
    sys.modules["yacs"], sys.modules["yacs.config"] = yacs, config
    return logged


@contextlib.contextmanager
def patched(obj, name, fn):
    old = getattr(obj, name)
    setattr(obj, name, fn(old))
    try:
        yield
    finally:
        setattr(obj, name, old)


def tiny_data(seed: int) -> tuple[list, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(C * PER_CLASS, 3, SIZE, SIZE, generator=g)
    labels = torch.arange(C).repeat_interleave(PER_CLASS)
    images += labels.view(-1, 1, 1, 1) * 0.3
    return [(images[i], int(labels[i])) for i in range(len(images))], images


def expert(seed: int, epochs: int = 4) -> list[list[torch.Tensor]]:
    """A random walk from a ConvNet init, as their buffer holds it: per epoch, the list of parameter tensors."""
    g = torch.Generator().manual_seed(seed)
    net = create_network("convnet", 3, C, SIZE, generator=g)
    params = [p.detach().clone() for p in net.parameters()]
    traj = [[p.clone() for p in params]]
    for _ in range(epochs):
        params = [p + 0.01 * p.abs().mean() * torch.randn(p.shape, generator=g) for p in params]
        traj.append([p.clone() for p in params])
    return traj


def official_args(cfg, buffer: Path, **hp) -> SimpleNamespace:
    args = dict(cfg)
    args.update(dataset="Tiny", model="ConvNet", ipc=IPC, eval_it=100, skip_first_eva=True, num_eval=1,
                pix_init="real", dsa=False, zca=False, texture=False, load_all=False, max_files=None, max_experts=None,
                buffer_path=str(buffer), device=[0], project="oracle", high_order=True, data_path="", no_aug=False,
                distributed=False, force_save=False, **hp)
    return SimpleNamespace(**args)


def run_official(module, args) -> dict:
    """Run their main() once, observing it."""
    seen: dict = {"perms": [], "stacks": [], "mse": [], "sgd": []}

    def rec_randperm(orig):
        def f(*a, **k):
            out = orig(*a, **k)
            seen["perms"].append(out.clone())
            return out
        return f

    def rec_stack(orig):
        def f(tensors, *a, **k):
            out = orig(tensors, *a, **k)
            if isinstance(tensors, (list, tuple)) and len(tensors) == 3 and tensors[0].dim() == 1:
                seen["stacks"].append(out.detach().clone())
            return out
        return f

    def rec_mse(orig):
        def f(*a, **k):
            out = orig(*a, **k)
            seen["mse"].append(out.detach().clone())
            return out
        return f

    def rec_sgd(orig):
        class SGD(orig):
            def __init__(self, params, *a, **k):
                params = list(params)
                seen["sgd"].append((params, [p.detach().clone() for p in params]))
                super().__init__(params, *a, **k)
        return lambda *a, **k: SGD(*a, **k)

    with patched(torch, "randperm", rec_randperm), patched(torch, "stack", rec_stack), \
            patched(F, "mse_loss", rec_mse), patched(torch.optim, "SGD", rec_sgd):
        module.main(args)
    (images,), (init_images,) = seen["sgd"][0]
    (syn_lr,), (init_lr,) = seen["sgd"][1]
    seen.update(images=images.detach().clone(), images_grad=images.grad.clone(), syn_lr=syn_lr.detach().clone(),
                lr_grad=syn_lr.grad.clone(), init_images=init_images, init_lr=init_lr)
    return seen


def run_ours(seen: dict, traj: list, hp: dict, iterations: int) -> dict:
    method = HoPTM()
    full = dict(HoPTM.defaults, **hp, unroll_memory="full")
    flat = [torch.cat([p.reshape(-1) for p in snap]) for snap in traj]
    experts = type("Experts", (), {"__len__": lambda self: 1, "snapshot": lambda self, e, t: flat[t]})()
    net = create_network("convnet", 3, C, SIZE, generator=torch.Generator().manual_seed(0))
    their_shapes = [tuple(p.shape) for p in traj[0]]
    assert [tuple(p.shape) for p in net.parameters()] == their_shapes, "our ConvNet's layout differs from theirs"
    images = seen["init_images"].clone().requires_grad_(True)
    syn_lr = seen["init_lr"].clone().requires_grad_(True)
    state = {"images": images, "labels": torch.arange(C).repeat_interleave(IPC), "syn_lr": syn_lr,
             "opt_img": torch.optim.SGD([images], lr=full["lr_img"], momentum=0.5),
             "opt_lr": torch.optim.SGD([syn_lr], lr=full["lr_lr"], momentum=0.5),
             "mask": torch.zeros(flat[0].numel())}
    task = SimpleNamespace(hp=full, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
                           augment=None)
    perms = iter(seen["perms"])
    out: dict = {"results": [], "terms": [], "masks": []}
    with patched(torch, "randperm", lambda orig: lambda *a, **k: next(perms).clone()):
        for it in range(iterations):
            res, metrics = TrajectoryMatching.match_step(method, task, state, experts, Student(net), it)
            out["results"].append(res)
            out["terms"].append(metrics)
            out["masks"].append(state["mask"].clone())
    out.update(images=images.detach().clone(), images_grad=images.grad.clone(), syn_lr=syn_lr.detach().clone(),
               lr_grad=syn_lr.grad.clone(), expert_mid=flat)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hoptm", required=True, type=Path, help="a checkout of Bian-jh/HoP-TM")
    ap.add_argument("--syn-steps", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    logged = stub_modules()
    sys.path[:0] = [str(a.hoptm), str(a.hoptm / "distill")]
    import distill_high_order_spl as official  # their script, unchanged
    from utils.cfg import CFG

    dst_train, _ = tiny_data(a.seed)
    official.get_dataset = lambda *args, **kw: (3, (SIZE, SIZE), C, None, None, dst_train, [], None, None,
                                                {c: c for c in range(C)}, {c: c for c in range(C)})
    traj = expert(a.seed)
    hp = dict(syn_steps=a.syn_steps, expert_epochs=3, min_start_epoch=1, max_start_epoch=2, lr_img=10.0, lr_lr=1e-5,
              lr_teacher=0.01, batch_syn=4, growing_factor=1.5, lamb=0.5)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "Tiny" / "ConvNet"
        folder.mkdir(parents=True)
        torch.save([traj], folder / "replay_buffer_0.pt")
        probe = run_official(official, official_args(CFG, Path(tmp), Iteration=0, base_threshold=1e9, **hp))
        base = float(probe["mse"][0].median())  # about half the entries pass at it = 0
        hp["base_threshold"] = base
        logged.clear()
        theirs = run_official(official, official_args(CFG, Path(tmp), Iteration=1, **hp))
    ours = run_ours(theirs, traj, dict(hp, base_threshold=base), iterations=2)

    rows = [r for r in logged if "Grand_Loss" in r]
    diffs: dict[str, float] = {}

    def diff(name: str, x, y) -> None:
        x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
        diffs[name] = float((x - y).abs().max())
        print(f"{name:34s} max|ours - official| = {diffs[name]:.3e}   (scale {float(y.abs().max()):.3e})")

    v = torch.zeros_like(theirs["mse"][0])
    for it in range(2):
        t_stack, s_stack = theirs["stacks"][2 * it], theirs["stacks"][2 * it + 1]  # teacher, then student
        res = ours["results"][it]
        e, d = theirs["mse"][2 * it], theirs["mse"][2 * it + 1]
        diff(f"it{it} student w_N", res.end, s_stack[2])
        diff(f"it{it} student w_N/2", next(iter(res.points.values())), s_stack[1])
        diff(f"it{it} expert T1 (s + M//2)", ours["expert_mid"][1 + 3 // 2], t_stack[1])
        diff(f"it{it} e = (w_N - T2)^2", (res.end - t_stack[2]) ** 2, e)
        diff(f"it{it} d = (T0 - T2)^2", (t_stack[0] - t_stack[2]) ** 2, d)
        v[e < base] = 1.0  # their rule, on their errors
        mismatched = int((ours["masks"][it] != v).sum())
        print(f"it{it} mask v: {int(v.sum())} of {v.numel()} admitted; entries that differ from theirs: {mismatched}")
        diffs[f"it{it} mask entries differing"] = float(mismatched)
        diff(f"it{it} utilization", ours["terms"][it]["utilization"], float(rows[it]["Utilization"]))
        diff(f"it{it} angle loss", ours["terms"][it]["angle_loss"], float(rows[it]["Angle_Loss"]))
        diff(f"it{it} total loss", ours["terms"][it]["loss"], float(rows[it]["Grand_Loss"]))
    diff("images after 2 steps", ours["images"], theirs["images"])
    diff("image gradient (it 1)", ours["images_grad"], theirs["images_grad"])
    diff("syn_lr after 2 steps", ours["syn_lr"], theirs["syn_lr"])
    diff("syn_lr gradient (it 1)", ours["lr_grad"], theirs["lr_grad"])
    rel = float((ours["images_grad"] - theirs["images_grad"]).norm() / theirs["images_grad"].norm())
    print(f"relative L2 difference of the image gradient: {rel:.3e}")
    print(f"largest difference over all compared quantities: {max(diffs.values()):.3e}")
    return 0 if rel < 1e-4 and all(diffs[k] == 0 for k in diffs if "mask" in k) else 1


if __name__ == "__main__":
    sys.exit(main())
