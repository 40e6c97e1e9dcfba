"""The error the checkpoint reader and writer raise."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or written; the one-line message names the file,
    what was wrong and what to do."""
