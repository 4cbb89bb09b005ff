"""Networks and what trains them: architectures, DSA augmentation, the one training loop, packed networks
and the differentiable student unroll. Knows tensors, not methods or records."""
