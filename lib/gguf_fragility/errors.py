"""Errors a user can fix: each carries one line per problem, printed as they are."""

from __future__ import annotations

import errno


class ProblemsError(ValueError):
    """Several problems found at once (a profile, a registry); ``str()`` is one line each."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


_WRITE_ADVICE = {
    errno.ENOSPC: "free space on that disk (or set GGUF_FRAGILITY_OUTPUTS to a folder on a "
                  "bigger one)",
    errno.EDQUOT: "free space within your disk quota (or set GGUF_FRAGILITY_OUTPUTS to a "
                  "folder elsewhere)",
    **dict.fromkeys((errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR),
                    "make that folder writable (or set GGUF_FRAGILITY_OUTPUTS to a writable "
                    "folder)"),
}


def write_failure(err: int | None, filename: object, strerror: str) -> str | None:
    """The one line a user reads when a file could not be written (a full disk, a read-only
    folder): which file, why and what to do; None for an ``errno`` that is not about writing."""
    advice = _WRITE_ADVICE.get(err) if err is not None else None
    if advice is None:
        return None
    return (f"cannot write {filename or 'a file'}: {strerror}; {advice}, then run the same "
            "command again (finished work is kept)")
