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


class DistillationDiverged(MddError):
    """The distillation loss became NaN or infinite."""
