"""Sweeps: a grid of jobs and the expert builds they need, run on this machine's cores or GPUs, or on Ray."""
