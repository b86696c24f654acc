"""Mistakes a person can fix: the one error type every role's command raises for them.

The `grace` command prints a `UsageError` as a single line (what is wrong, and how to fix it)
and exits 2; any other exception is a bug and keeps its traceback. It lives here, beside the
wire contract, because every role imports grace_proto and none may import another role.

`missing_extra` names the pip command for an import that failed because a role's extra is not
installed (a client-only install running `grace serve`, say).
"""

from __future__ import annotations

DISTRIBUTION = "grace-coresets"

# Top-level module -> the extra of pyproject.toml that installs it. A module missing from here
# is not ours to name, and its ImportError stays a traceback.
_EXTRA_OF_MODULE = {
    "httpx": "client",
    "fastapi": "service",
    "uvicorn": "service",
    "pydantic_settings": "service",
    "hnswlib": "service",
    "redis": "service",
    "prometheus_client": "service",
    "torch": "worker",
    "ray": "worker",
    "tqdm": "worker",
    "tokenizers": "data",
    "pyarrow": "data",
    "matplotlib": "lab",
}
# Packages no extra of ours installs, because only some users need them.
_PIP_OF_MODULE = {
    "transformers": "transformers",
}


class UsageError(Exception):
    """The command cannot do what was asked, for a reason the user can fix.

    str(error) is one line for people: what is wrong, and how to fix it.
    """


class MissingExtraError(UsageError):
    """A module that an extra installs is not importable; the message is the pip command."""

    def __init__(self, module: str, pip_command: str, what: str = "this command") -> None:
        super().__init__(f"{what} needs {module!r}, which is not installed: {pip_command}")
        self.module = module
        self.pip_command = pip_command


def pip_command_for(module: str) -> str | None:
    """The pip command that installs top-level `module`, or None if no extra of ours has it."""
    top = module.partition(".")[0]
    if top in _EXTRA_OF_MODULE:
        return f"pip install '{DISTRIBUTION}[{_EXTRA_OF_MODULE[top]}]'"
    if top in _PIP_OF_MODULE:
        return f"pip install {_PIP_OF_MODULE[top]}"
    return None


def missing_extra(
    exc: ImportError, what: str = "this command", extra: str | None = None
) -> MissingExtraError | None:
    """The `MissingExtraError` an ImportError stands for, or None if it is not one we name.

    extra: the extra of the command that failed (`grace demo` needs `lab`, whichever of its
    modules is missing); without it, the extra that installs the missing module.
    """
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    command = pip_command_for(exc.name)
    if command is None:
        return None
    if extra is not None:
        command = f"pip install '{DISTRIBUTION}[{extra}]'"
    return MissingExtraError(exc.name.partition(".")[0], command, what)
