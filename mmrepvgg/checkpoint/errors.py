"""The error the checkpoint reader and writer raise."""


class CheckpointError(RuntimeError):
    """A checkpoint unreadable or unwritable: one line naming the file, the problem, the fix."""
