"""The one exception root of wg-pod and its failure families.

Every error renders as one line a user can act on: which step, on which
object, and why.  None of them ever carries key material.
"""

from __future__ import annotations


class WgPodError(Exception):
    """Root of every error wg-pod raises on purpose."""


class ConfigError(WgPodError):
    """The WireGuard config file is unusable; names file and line."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {problem}")


class AnnotationError(WgPodError):
    """A wg-pod.* annotation (or its CLI flag twin) is malformed."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"annotation {key}: {problem}")


class StateError(WgPodError):
    """The OCI state or bundle handed to the hook is unusable."""


class SettingsError(WgPodError):
    """The settings file is unusable; names file and key."""

    def __init__(self, source: str, key: str | None, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


class SetupError(WgPodError):
    """A step changing the system failed; names the step and the object."""

    def __init__(self, step: str, obj: str, cause: str) -> None:
        self.step = step
        self.obj = obj
        self.cause = cause
        super().__init__(f"{step} {obj}: {cause}")


class PrivilegeError(WgPodError):
    """wg-pod cannot run here: not root, or inside a user namespace."""


class BackendUnavailable(WgPodError):
    """The chosen WireGuard backend cannot run on this machine."""


class Superseded(WgPodError):
    """A repair found the tunnel set up anew (or gone) by someone else, or
    a daemon's worker found that its hook no longer waits for it."""


class ReloadRefused(WgPodError):
    """A config change that a running tunnel cannot take in place (its
    addresses, its name, its MTU, its DNS, the kill switch): nothing was
    changed, and a restart of the container applies it."""


_FAMILY = {
    ConfigError: "config",
    SettingsError: "settings",
    PrivilegeError: "privileges",
    BackendUnavailable: "backend",
}


def describe(exc: WgPodError) -> str:
    """The one line users see: the failure family where the message alone
    does not say it (``config: /etc/wg/wg0.conf:3: ...``)."""
    family = _FAMILY.get(type(exc))
    return f"{family}: {exc}" if family else str(exc)
