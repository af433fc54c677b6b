"""The two kinds of failure a user sees: bad input (exit 2) and a check that ran and failed (exit 1).

Anything else that escapes is an internal error (exit 3).
"""


class EffcError(Exception):
    """Bad input or usage. The message is one line meant for a person."""


class CheckFailed(Exception):
    """A check ran and failed: outputs outside tolerance, an accuracy budget not met."""


class VerificationError(CheckFailed):
    """A pass that promised to keep outputs changed them beyond tolerance."""
