"""The errors the checkpoint reader and writer raise."""
import pickle


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or written; the one-line message names the file,
    what was wrong and what to do."""


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle would call a function (or reach an object) that no checkpoint needs."""
