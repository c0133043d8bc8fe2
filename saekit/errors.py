"""The one error type saekit raises for the caller's mistakes, apart from its own bugs.

An `InputError` says which value, file or name was wrong and what to pass instead; the command line
prints it as one line. Anything else that escapes is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """Bad input: a value, file, name or state the caller passed; the message says what to do instead."""
