"""Errors that reach the user as one clear line (the CLI prints ``str(err)``, no traceback)."""


class UserError(Exception):
    """A mistake in the user's input or config: printed as one line, exit code 2."""


class InputError(UserError):
    """A bad input file. The message names the file, and the line and column where known."""

    def __init__(self, path, message: str, line: int | None = None, column: str | None = None):
        where = str(path)
        if line is not None:
            where += f":{line}"
        if column is not None:
            where += f" (column {column!r})"
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.column = path, line, column


class BackendError(Exception):
    """A model call failed after its retries. ``retryable`` says whether a later run may try again."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True):
        super().__init__(message)
        self.status, self.retryable = status, retryable
