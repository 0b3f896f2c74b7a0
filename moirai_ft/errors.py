"""The one exception type a user sees as a single line (no traceback)."""


class UserError(Exception):
    """A problem with the user's config or data. The message says what to change."""
