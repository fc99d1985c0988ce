"""Errors a user can fix: each carries one line per problem, printed as they are."""

from __future__ import annotations


class ProblemsError(ValueError):
    """Several problems found at once (a profile, a registry); ``str()`` is one line each."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))
