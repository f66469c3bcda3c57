"""One exception root for the whole package (as rasterio's ``RasterioError``).

The CLI turns every :class:`Sar2OptError` into a one-line message and exit code 1
(:class:`UsageError` gives exit code 2). Anything else is a bug and keeps its traceback.
"""


class Sar2OptError(Exception):
    """Root of all errors sar2opt-geo reports to users."""

    exit_code = 1


class UsageError(Sar2OptError):
    """Options that contradict each other or have invalid values."""

    exit_code = 2


class InputError(Sar2OptError):
    """A problem with an input raster, vector or dataset."""


class GeoreferenceError(InputError):
    """The input has no (usable) georeferencing."""


class OutputError(Sar2OptError):
    """The output path cannot be written (exists, unwritable directory, ...)."""


class ModelError(Sar2OptError):
    """A checkpoint that cannot be read or does not fit the architecture."""


class CheckpointKeyError(ModelError):
    """State dict keys do not match the architecture; the message lists them."""

    def __init__(self, missing, unexpected, shape_mismatch=(), context=""):
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.shape_mismatch = list(shape_mismatch)
        parts = []
        if self.missing:
            parts.append(f"missing keys: {_short(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys: {_short(self.unexpected)}")
        if self.shape_mismatch:
            parts.append(f"shape mismatch: {_short(self.shape_mismatch)}")
        prefix = f"{context}: " if context else ""
        self.context = context
        super().__init__(prefix + "checkpoint does not fit the architecture; " + "; ".join(parts))

    def __reduce__(self):  # picklable across Dask worker processes despite the custom signature
        return (type(self), (self.missing, self.unexpected, self.shape_mismatch, self.context))


class DatasetError(InputError):
    """A paired-tile dataset that cannot be used for training or evaluation."""


class JobSpecError(Sar2OptError):
    """A job spec file that does not validate."""


class ClusterError(Sar2OptError):
    """The Dask scheduler cannot be reached or the cluster failed (finished work is kept for --resume)."""

    keeps_work_state = True


def _short(items, limit=8):
    items = [str(i) for i in items]
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f", ... ({len(items) - limit} more)"


class ReadError(InputError):
    """Pixels of an input could not be read (a truncated or corrupt file, a lost network share). The run's
    finished work is kept: it may be resumed once the file reads again."""

    keeps_work_state = True


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what was kept (``work_state``); the CLI adds the commands that
    resume or discard it. A ``KeyboardInterrupt`` still, so whoever stops on Ctrl-C (``submit``) stops."""

    exit_code = 130

    def __init__(self, message: str, work_state: str | None = None):
        super().__init__(message)
        self.work_state = work_state

    def __reduce__(self):
        return (type(self), (str(self), self.work_state))
