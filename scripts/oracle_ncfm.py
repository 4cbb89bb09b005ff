"""Compare mddbench's NCFM with the official code (spec new_methods.md 2.8, "Oracle comparison").

Usage: python scripts/oracle_ncfm.py --ncfm PATH   (PATH: a checkout of gszfwsb/NCFM, e.g. de92fb8a)

Imports the official files from PATH by file location (nothing of theirs is copied here):
``NCFM/NCFM.py`` (CFLossFunc, match_loss), ``condenser/compute_loss.py`` (compute_match_loss),
``condenser/decode.py`` (decode) and ``models/convnet.py`` (ConvNet). They import only torch and numpy,
so no package is stubbed. Checks, on identical inputs:
1. CFLossFunc.forward(feat_real, feat_syn, t) vs our cf_discrepancy: value and gradient w.r.t. the synthetic
   features (several sizes, alpha/beta at the defaults and at 0.8/0.3);
2. their decode('single', factor 2) vs ours on [0,1] pixels;
3. one full per-class image step, augmentation off (their aug_fn = Normalize only), the same ConvNet weights
   (ours copied into theirs) and the same real batch and frequencies t (handed to their match_loss through
   its sampling-net hook, which calls ``sampling_net(device)``): the images after the AdamW step.
Prints the max absolute differences and exits 1 when one exceeds its tolerance.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from mddbench.methods.ncfm import NCFM, Normaliser, cf_discrepancy, decode, image_optimizer, match_step
from mddbench.nn.networks import create_network


def load(root: Path, rel: str, name: str):
    spec = importlib.util.spec_from_file_location(name, root / rel)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def copy_convnet(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    """Our ConvNet's weights into theirs (conv/norm per block, then the classifier)."""
    with torch.no_grad():
        for d in range(ours.depth):
            theirs.layers["conv"][d].load_state_dict(ours.features[4 * d].state_dict())
            theirs.layers["norm"][d].load_state_dict(ours.features[4 * d + 1].state_dict())
        theirs.classifier.load_state_dict(ours.classifier.state_dict())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ncfm", required=True, type=Path, help="checkout of the official NCFM repository")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    root = args.ncfm
    off_ncfm = load(root, "NCFM/NCFM.py", "official_ncfm")
    off_loss = load(root, "condenser/compute_loss.py", "official_compute_loss")
    off_decode = load(root, "condenser/decode.py", "official_decode")
    off_convnet = load(root, "models/convnet.py", "official_convnet")
    g = torch.Generator().manual_seed(args.seed)
    worst: dict[str, float] = {}

    def note(key: str, value: float) -> None:
        worst[key] = max(worst.get(key, 0.0), value)

    # 1. the discrepancy and its gradient
    for n_real, n_syn, dim, k, (alpha, beta) in [(64, 8, 2048, 4096, (0.5, 0.5)), (200, 40, 1152, 1024, (0.5, 0.5)),
                                                  (16, 16, 128, 512, (0.8, 0.3))]:
        real = F.normalize(torch.randn(n_real, dim, generator=g), dim=1)
        syn0 = F.normalize(torch.randn(n_syn, dim, generator=g), dim=1)
        t = torch.randn(k, dim, generator=g)
        values, grads = [], []
        for fn in (lambda r, s: off_ncfm.CFLossFunc(alpha, beta)(r, s, t),
                   lambda r, s: cf_discrepancy(r, s, t, alpha, beta)):
            syn = syn0.clone().requires_grad_(True)
            v = fn(real, syn)
            v.backward()
            values.append(v.detach())
            grads.append(syn.grad)
        note("loss value", float((values[0] - values[1]).abs()))
        note("loss value (relative)", float((values[0] - values[1]).abs() / values[0].abs()))
        note("gradient wrt synthetic features", float((grads[0] - grads[1]).abs().max()))
        note("gradient (relative to its max)", float((grads[0] - grads[1]).abs().max() / grads[0].abs().max()))

    # 2. decoding
    pixels = torch.rand(6, 3, 32, 32, generator=g)
    theirs, _ = off_decode.decode("single", (32, 32), pixels, torch.zeros(6, dtype=torch.long), 2)
    note("decode", float((theirs - decode(pixels, 2)).abs().max()))
    odd = torch.rand(2, 3, 31, 31, generator=g)
    theirs, _ = off_decode.decode("single", (31, 31), odd, torch.zeros(2, dtype=torch.long), 2)
    note("decode (31 px, padded)", float((theirs - decode(odd, 2)).abs().max()))

    # 3. one per-class image step, augmentation off
    hp = dict(NCFM.defaults)
    n_classes, ipc, c = 3, 2, 1
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    norm = Normaliser(mean, std, 2, torch.device("cpu"))
    ours_net = create_network("convnet", 3, n_classes, 32, generator=g).requires_grad_(False)
    their_net = off_convnet.ConvNet(n_classes, net_norm="instance", net_depth=3, net_width=128, channel=3,
                                    im_size=(32, 32))
    copy_convnet(ours_net, their_net)
    real_pixels = torch.rand(64, 3, 32, 32, generator=g)
    stored = torch.rand(n_classes * ipc, 3, 32, 32, generator=g)
    with torch.no_grad():
        feat_dim = ours_net.embed(norm(real_pixels[:1])).shape[1]
    t = torch.randn(hp["num_freqs"], feat_dim, generator=g)
    with torch.no_grad():
        _, their_feat = their_net(norm(real_pixels[:4]), return_features=True)
    note("feature net (same weights)", float((their_feat - ours_net.embed(norm(real_pixels[:4]))).abs().max()))

    ours = stored.clone().requires_grad_(True)
    opt = image_optimizer(ours, hp)
    our_loss = match_step(ours, c, n_classes, norm(real_pixels), ours_net, t, hp, norm, opt)

    data = stored.clone().requires_grad_(True)
    targets = torch.arange(n_classes).repeat_interleave(ipc)
    their_opt = torch.optim.AdamW([data], lr=hp["lr_img"], weight_decay=hp["weight_decay_img"])  # get_optimizer
    off_args = SimpleNamespace(cf_loss_func=off_ncfm.CFLossFunc(hp["alpha"], hp["beta"]), num_freqs=hp["num_freqs"],
                               device="cpu")

    def sample_fn(cls):  # Condenser.class_sample: the class's stored images, decoded
        mask = targets == cls
        return off_decode.decode("single", (32, 32), data[mask], targets[mask], 2)

    loader = SimpleNamespace(class_sample=lambda cls: (real_pixels, None))
    tracker = SimpleNamespace(start_step=lambda: None, record=lambda *a: None)
    their_total, _ = off_loss.compute_match_loss(
        off_args, loader_real=loader, sample_fn=sample_fn, aug_fn=norm, inner_loss_fn=off_ncfm.match_loss,
        optim_img=their_opt, class_list=[c], timing_tracker=tracker, model_interval=their_net, data_grad=None,
        optim_sampling_net=None, sampling_net=lambda device: t)  # their hook for explicit frequencies
    note("full step: loss", abs(their_total - float(our_loss)))
    note("full step: updated images", float((data.detach() - ours.detach()).abs().max()))
    moved = float((stored - ours.detach()).abs().max())
    note("full step: updated images (relative to the step)",
         float((data.detach() - ours.detach()).abs().max()) / moved)

    tolerance = {"loss value (relative)": 1e-5, "gradient (relative to its max)": 1e-4, "decode": 1e-6,
                 "decode (31 px, padded)": 1e-6, "feature net (same weights)": 1e-5,
                 "full step: updated images": 1e-6}
    failed = False
    for key, value in worst.items():
        bad = key in tolerance and value > tolerance[key]
        failed |= bad
        print(f"{key:52s} max abs diff {value:.3e}{'  > tolerance ' + str(tolerance[key]) if bad else ''}")
    print(f"loss value ours {float(our_loss):.6f} official {their_total:.6f}; image step size {moved:.3e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
