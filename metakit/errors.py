"""The one error type that users can cause and fix themselves, and how to tell a failed
allocation from other failures."""

import torch


class MetakitError(Exception):
    """A user-facing error: its message is one line that says what to do.

    The CLI prints it without a traceback and exits non-zero; library users can
    catch it to tell their own mistakes apart from bugs.
    """


def out_of_memory(error: BaseException) -> bool:
    """A failed allocation: torch's OutOfMemoryError on a GPU, a plain RuntimeError from
    torch's CPU allocator, or Python's MemoryError."""
    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in str(error)
