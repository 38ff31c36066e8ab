"""User-facing errors shared by both halves (no bpy, no torch)."""


class CarprobeError(Exception):
    """Bad user input or environment: the CLI prints the message and exits with code 2.

    Messages name what was wrong (field, file, value) and what is allowed.
    """


class SpecError(CarprobeError):
    """A dataset spec with one or more problems; `problems` holds one line per problem."""

    def __init__(self, problems: list[str], source: str = "spec"):
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{lines}")
