"""The one error type of nnsens_core."""


class NnsensError(ValueError):
    """Bad input or configuration.

    The message names the offending value and says how to fix the call, e.g.
    ``"n_samples=100 is not a power of two; use 128 or 64"``.  Pages show it as-is.
    """
