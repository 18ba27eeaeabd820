"""The one error type that users can cause and fix themselves."""


class MetakitError(Exception):
    """A user-facing error: its message is one line that says what to do.

    The CLI prints it without a traceback and exits non-zero; library users can
    catch it to tell their own mistakes apart from bugs.
    """
