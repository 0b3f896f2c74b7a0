"""The one exception type a user sees as a single line (no traceback), and how any exception is shown
in one line."""


class UserError(Exception):
    """A problem with the user's config or data. The message says what to change."""


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first non-empty line of the exception's message ("" when it has none), at most `limit`
    characters: for one-line reports of errors whose messages run over several lines."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return text[:limit] if limit is not None else text


def preview(names: list[str] | tuple[str, ...], limit: int = 8, sep: str = ", ") -> str:
    """The first `limit` names for a one-line message, and how many there are in all when cut. `sep=","`
    for a list the user pastes into an override (data.exclude=[a,b])."""
    shown = sep.join(names[:limit])
    return shown + (f"{sep}... ({len(names)} in all)" if len(names) > limit else "")
