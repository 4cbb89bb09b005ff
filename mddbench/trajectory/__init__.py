"""Expert trajectories (their cache, their quality) and trajectory matching, the family MTT, FTD, DATM, PTM,
SMDD, SeqMatch and HaBa share."""


def __getattr__(name: str):  # the names of the module this package replaced (mddbench.moved)
    from mddbench.moved import forward

    return forward(__name__, name)
