"""User-facing errors: the CLI prints these as one clear message, without a traceback."""


class MddError(Exception):
    """Base class for errors a user can act on."""


class UnknownNameError(MddError, KeyError):
    """A method, dataset or network name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0] if self.args else ""


class DataError(MddError):
    """A dataset file is missing, corrupt or inconsistent."""


class ConfigError(MddError):
    """Impossible or inconsistent settings (ipc, hyperparameters, budgets, paths)."""


class ArtifactError(MddError):
    """A synthetic-set file that cannot be read safely."""


class MethodError(MddError):
    """A method (a plugin's, or a built-in one) failed inside ``distill`` or returned a set that cannot be
    recorded; the message names the method. No record is written."""


class DistillationDiverged(MddError):
    """The distillation loss became NaN or infinite."""


class CorruptRunState(MddError):
    """A file of a run's saved state (a checkpoint) that cannot be used; ``path`` names it.

    ``partial``: the live state was already partly overwritten from it, so the caller must start the
    piece afresh rather than carry on."""

    def __init__(self, path, what: str, partial: bool = False):
        self.path, self.what, self.partial = path, what, partial
        super().__init__(f"{path}: {what}. Delete it (rm '{path}') and rerun the same command: that piece starts "
                         "again from its beginning with the same seed, so only its time is lost")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption or time limit, ``kill``, ``timeout``), stopped the way Ctrl-C stops:
    jobs in flight checkpoint, a sweep passes it on to its workers, the next run resumes."""


def raise_terminated(signum: int, frame: object) -> None:
    """The SIGTERM handler of the CLI and of a sweep's worker processes."""
    raise Terminated()
