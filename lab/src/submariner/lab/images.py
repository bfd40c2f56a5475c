"""Container image names → the built-in programs the lab runs instead (no container runtime here).

A lab pod cannot pull and run an image, so each image we know maps to a Python program started with the
venv's interpreter inside the pod's network namespace. Matching ignores the registry, tag and digest, so
`cr7258/whereami:v1`, `docker.io/cr7258/whereami` and `registry.local/x/whereami-ng:2` all become whereami.
The project's own component images map to their console-script entry points; one that is not installed
yet is reported on the container instead of crashing the pod.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

PROGRAMS_DIR = Path(__file__).resolve().parent / "programs"
BIN_DIR = Path(sys.executable).parent  # the venv's bin/: console scripts of installed distributions

# Why a container cannot start (pod status `waiting.reason`).
ERR_IMAGE_PULL = "ErrImagePull"
IMAGE_PULL_BACKOFF = "ImagePullBackOff"
CREATE_CONTAINER_ERROR = "CreateContainerError"


@dataclass(frozen=True)
class Program:
    """What runs for a container: `argv` (container args are appended when `takes_args`)."""

    name: str
    argv: tuple[str, ...]
    takes_args: bool = False
    reload_on_config_change: bool = False  # coredns-style: SIGUSR1 re-reads the Corefile
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Resolution:
    """An image resolved to a program, or the reason (`ErrImagePull`, `CreateContainerError`) it cannot run."""

    image: str
    program: Program | None = None
    reason: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.program is not None


def repository(image: str) -> str:
    """`registry/path/name:tag@digest` → `path/name` (Docker Hub's `library/` dropped)."""
    ref = image.strip().split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        ref = ref[:colon]
    parts = ref.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if len(parts) > 1 and parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts).lower()


def _python(script: Path) -> tuple[str, ...]:
    return (sys.executable, str(script))


def _entry_point(name: str) -> Path:
    return BIN_DIR / name


# Component images → console scripts (mapped even before they exist: a missing one is a clear status).
_ENTRY_POINTS: dict[str, str] = {
    "submariner/lighthouse-agent": "lighthouse-agent",
    "submariner/submariner-gateway": "submariner-gateway",
    "submariner/submariner-route-agent": "submariner-routeagent",
    "submariner/submariner-globalnet": "submariner-globalnet",
}
_COREDNS = ("coredns/coredns", "submariner/lighthouse-coredns")
_SLEEPERS = ("busybox", "nicolaka/netshoot", "submariner/nettest")  # nettest: subctl diagnose firewall
_UNSUPPORTED = {
    "submariner/submariner-operator": (
        "the Submariner operator does not run in the lab: `subctl join` on a lab cluster deploys the "
        "components directly"
    ),
}

KNOWN = (
    "cr7258/whereami (*/whereami*)", "cr7258/nettool (*/nettool*)", *_SLEEPERS, *_COREDNS,
    *(f"quay.io/{repo}" for repo in _ENTRY_POINTS),
)


def resolve(image: str) -> Resolution:
    """The program for `image`, or why there is none (unknown image, unsupported, not installed)."""
    repo = repository(image)
    last = repo.rsplit("/", 1)[-1]
    if last.startswith("whereami"):
        return Resolution(image, Program("whereami", _python(PROGRAMS_DIR / "whereami.py")))
    if last.startswith("nettool") or repo in _SLEEPERS:
        return Resolution(image, Program("nettool", _python(PROGRAMS_DIR / "nettool.py")))
    if repo in _COREDNS:
        return _console_script(image, "lighthouse-dns", reload=True)
    if repo in _ENTRY_POINTS:
        return _console_script(image, _ENTRY_POINTS[repo])
    if repo in _UNSUPPORTED:
        return Resolution(image, reason=CREATE_CONTAINER_ERROR,
                          message=f"image {image} is not supported in the lab: {_UNSUPPORTED[repo]}")
    return Resolution(
        image, reason=ERR_IMAGE_PULL,
        message=f"image {image} is not a lab image (known: {', '.join(KNOWN)})",
    )


def _console_script(image: str, name: str, *, reload: bool = False) -> Resolution:
    script = _entry_point(name)
    if not script.is_file():
        return Resolution(
            image, reason=CREATE_CONTAINER_ERROR,
            message=f"image {image} runs the entry point {name!r}, which is not installed in {BIN_DIR}",
        )
    return Resolution(image, Program(name, _python(script), takes_args=True, reload_on_config_change=reload))
