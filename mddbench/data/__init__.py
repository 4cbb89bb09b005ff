"""Datasets: specs, the standardized splits and their cache, downloads, class balance (layer above the core)."""


def __getattr__(name: str):  # the names of the module this package replaced (mddbench.moved)
    from mddbench.moved import forward

    return forward(__name__, name)
