"""User-facing errors. The CLI prints their message on one line and exits with code 2."""


class JrlError(Exception):
    """Base class for errors caused by user input (config, env, checkpoint)."""


class ConfigError(JrlError, ValueError):
    """A config key is unknown, has the wrong type, or is out of range."""


class EnvError(JrlError, ValueError):
    """An environment id is unknown or an env cannot be built or used."""


class CheckpointError(JrlError, ValueError):
    """A checkpoint is missing, incomplete, corrupt, or belongs to something else."""


class DataError(JrlError, ValueError):
    """An offline data file (``input``) is missing, malformed or does not fit the env."""


class NumericError(JrlError, FloatingPointError):
    """A learner update produced a NaN or infinite loss, gradient or weight; the update was
    discarded and the state is the one from before it."""
