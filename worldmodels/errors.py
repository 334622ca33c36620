"""Errors a user can act on: each message names the problem and what to do about it."""


class WorldModelsError(Exception):
    """Base class: the pipeline prints the message on one line and exits non-zero."""


class ConfigError(WorldModelsError):
    """Unknown preset, unknown field, a value of the wrong type, or a mismatched run dir."""


class DataError(WorldModelsError):
    """Missing, corrupt or malformed data files (episodes, series)."""


class CheckpointError(WorldModelsError):
    """A checkpoint that is missing, corrupt, or of another architecture."""
