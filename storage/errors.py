"""Errors raised by the feedback store.

Every error a caller can provoke with bad input is a ``ValueError`` subclass, raised before anything is
written, so a UI can show ``str(err)`` and carry on. ``StorageError`` groups them for a single ``except``.
"""


class StorageError(Exception):
    """Base class of every error raised on purpose by ``storage``."""


class InvalidInput(StorageError, ValueError):
    """An argument failed validation; nothing was written."""


class InvalidScore(InvalidInput):
    """A score that is not a finite real number inside the configured range."""


class InvalidPrompt(InvalidInput):
    """An empty, oversized or non-text prompt."""


class InvalidSample(InvalidInput):
    """A generated sample whose token ids, log-probs or settings are malformed."""


class InvalidStep(InvalidInput):
    """A training-step record whose stats, config or durations cannot be stored as plain data."""


class UnknownSample(InvalidInput):
    """No sample has this id."""


class UnknownRater(InvalidInput):
    """No rater has this id (or name)."""


class UnknownPrompt(InvalidInput):
    """No prompt has this id."""


class UnknownBatch(InvalidInput):
    """No training batch has this id."""


class RatingLocked(InvalidInput):
    """The rating's sample is already in a training batch, so the rating may have been trained on and cannot
    be changed or undone any more."""


class AlreadyRated(InvalidInput):
    """A different score for a sample this rater has already rated, with ``record_rating(..., replace=False)``:
    e.g. the same rater in a second browser tab. Its message carries no ids or values, so a UI may show it."""


class BatchStateError(InvalidInput):
    """The batch is not in the state the operation needs (e.g. finishing a batch that is not claimed)."""


class StaleClaim(BatchStateError):
    """The caller's claim on a batch expired and the batch was released or claimed again by someone else."""


class SchemaVersionError(StorageError, RuntimeError):
    """The database's schema cannot be used by this code: newer than the code, not made by it, or older while
    upgrading was not allowed."""
