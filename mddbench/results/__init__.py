"""Where records live: the SQLite store, failures, privacy results, their JSONL exports and merging."""


def __getattr__(name: str):  # the names of the module this package replaced (mddbench.moved)
    from mddbench.moved import forward

    return forward(__name__, name)
