"""The privacy audit of a saved set: near copies of patient images and membership inference."""


def __getattr__(name: str):  # the names of the module this package replaced (mddbench.moved)
    from mddbench.moved import forward

    return forward(__name__, name)
