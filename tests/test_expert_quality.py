"""Expert quality: every snapshot of a buffer scored on val, as the network that held those parameters scores."""
from __future__ import annotations

import torch
from methodkit import load

from mddbench.evaluation.protocol import score
from mddbench.nn.networks import create_network, flat_parameters
from mddbench.trajectory.expert_quality import report_rows, snapshot_scores
from mddbench.trajectory.experts import MTT_RECIPE, Trajectories


def test_snapshot_scores_match_the_networks_that_held_them():
    data = load("tiny28")
    s, cpu = data.spec, torch.device("cpu")
    nets = [create_network("convnet", s.channels, s.n_classes, s.size, s.dims,
                           generator=torch.Generator().manual_seed(i)) for i in range(1)]
    trajs, first, last = [], [], []
    for i, net in enumerate(nets):
        snaps = [flat_parameters(net)]
        first.append(score(net, data, cpu)["val_acc"])
        g = torch.Generator().manual_seed(10 + i)
        with torch.no_grad():
            for p in net.parameters():  # a different network at "epoch 1"
                p.add_(torch.randn(p.shape, generator=g) * p.abs().mean())
        snaps.append(flat_parameters(net))
        last.append(score(net, data, cpu)["val_acc"])
        trajs.append(torch.stack(snaps))
    rows = snapshot_scores(Trajectories(trajs, {}), data, MTT_RECIPE, cpu)
    assert [r.epoch for r in rows] == [0, 1]
    assert rows[0].acc == tuple(first) and rows[1].acc == tuple(last)
    assert all(0 < r.majority_share <= 1 for r in rows)
    table = report_rows(rows)
    assert table[1][1] == f"{100 * last[0]:.1f}" and len(table[0]) == 6
