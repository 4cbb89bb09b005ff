"""MTT: Matching Training Trajectories (Cazenavette et al., CVPR'22), docs/methods.md 4.5.

Random segment of an SGD expert trajectory, ``syn_steps`` student steps on the synthetic set with
per-sample DSA and a learned step size, normalised parameter distance. Presets: the official
CIFAR-10 rows by ipc (ZCA off); see ``mddbench.trajectory.matching``.
"""
from mddbench.registry import register_method
from mddbench.trajectory.matching import TrajectoryMatching


@register_method("mtt")
class MTT(TrajectoryMatching):
    summary = "trajectory matching: random expert segments, learned step size"
