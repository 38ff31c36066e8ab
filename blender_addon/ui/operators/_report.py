"""How operators turn exceptions into reports: user errors as their message, bugs as one line
(the traceback goes to the console for developers, never into the user's face)."""

from __future__ import annotations

import traceback

from ...core.errors import CarprobeError


def report_exception(operator, exc: BaseException, what: str) -> set[str]:
    if isinstance(exc, CarprobeError):
        operator.report({"ERROR"}, str(exc))
    else:
        traceback.print_exception(exc)
        operator.report({"ERROR"}, f"{what} failed: {type(exc).__name__}: {exc} (details in the console)")
    return {"CANCELLED"}
