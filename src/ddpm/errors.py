"""The error types a user can meet, each with a message that names the file, flag or field and
what was expected. The command line prints them as one line (`ddpm.cli.main`); anything
else that escapes is a bug."""


class ConfigError(ValueError):
    """A model, training or sampling setting has an invalid value; the message names it."""


class SpecError(ConfigError):
    """A sampling spec that cannot be: an unknown sampler, a negative weight, ..."""


class ScheduleError(ValueError):
    """A schedule was asked for with an unknown name or out-of-range values."""


class DataError(Exception):
    """The data could not be used; the message says which path and what was expected."""


class FIDError(DataError):
    """FID inputs do not fit: wrong statistics, too few images, a bad network file."""


class CheckpointError(Exception):
    """A checkpoint could not be read or does not fit; the message names the file."""


# What a user's input can raise: `ddpm` and the benchmark scripts print these as one line.
USER_ERRORS = (ConfigError, ScheduleError, DataError, CheckpointError)
