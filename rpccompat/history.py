"""What each release of a service project speaks.

One ordered declaration per project merges Cinder's ``OBJ_VERSIONS`` and Nova's
``SERVICE_VERSION_HISTORY``: for every release, the RPC API version of each
binary and the version of every object.  Pins, backports, the contract gate and
the operator CLI all read it, so a release's wire format is stated once.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import reprlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType

from rpccompat.exceptions import HistoryError, UnknownRelease, UnknownVersion

MAX_VERSION_PARTS = 3  # MAJOR.MINOR[.REVISION]
MAX_VERSION_PART_DIGITS = 9
MAX_VERSION_LENGTH = MAX_VERSION_PARTS * (MAX_VERSION_PART_DIGITS + 1) - 1
_ASCII_DIGITS = frozenset("0123456789")


def version_tuple(version: object) -> tuple[int, ...]:
    """``"1.10"`` -> ``(1, 10)``; a clear error for anything else.

    Safe on any input, since versions arrive from the wire: a string of one to
    three dot-separated runs of one to nine ASCII digits, checked in linear
    time after a length cap, so neither a long digit run (quadratic in
    oslo.utils' ``convert_version_to_tuple``), nor an unhashable value, nor
    Unicode digits that ``int()`` would accept can cost more than a glance.
    """
    if isinstance(version, str) and len(version) <= MAX_VERSION_LENGTH:
        return _parse_version(version)
    raise _not_a_version(version)


@functools.lru_cache(maxsize=1024)
def _parse_version(version: str) -> tuple[int, ...]:
    """Cached: every call a client sends compares a few versions, always the
    same few (keys are short: the caller capped the length)."""
    parts = version.split(".")
    if len(parts) <= MAX_VERSION_PARTS and all(
        0 < len(part) <= MAX_VERSION_PART_DIGITS and _ASCII_DIGITS.issuperset(part)
        for part in parts
    ):
        return tuple(int(part) for part in parts)
    raise _not_a_version(version)


def _not_a_version(version: object) -> UnknownVersion:
    return UnknownVersion(
        f"{reprlib.repr(version)} is not a version: expected MAJOR.MINOR, e.g. '1.2'"
    )


@dataclasses.dataclass(frozen=True)
class Release:
    """One release: its name, RPC API version per binary, object manifest.

    ``rpc`` and ``objects`` name what changed since the release before; the
    history carries the rest over, as Cinder's ``OBJ_VERSIONS.add`` does.  So
    a step of the object history between two RPC steps names only the
    objects it bumps (``Release("1.39", objects={"Volume": "1.9"})``), and
    an RPC step only its binaries.  In a :class:`History` each release holds
    its whole maps.

    ``objects_version`` identifies the manifest in the services table
    (``object_current_version``); when omitted, the history numbers the
    releases ``1.0``, ``1.1``, ... in order, as Cinder numbers its
    ``OBJ_VERSIONS``.
    """

    name: str
    rpc: Mapping[str, str] = dataclasses.field(default_factory=dict)
    objects: Mapping[str, str] = dataclasses.field(default_factory=dict)
    objects_version: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rpc", MappingProxyType(dict(self.rpc)))
        object.__setattr__(self, "objects", MappingProxyType(dict(self.objects)))


class History:
    """The releases of one service project, oldest first."""

    def __init__(self, project: str, releases: Sequence[Release]) -> None:
        if not releases:
            raise HistoryError(f"history of {project!r} declares no release")
        self.project = project
        self.releases: tuple[Release, ...] = tuple(_carried_over(releases))
        self._by_name = {r.name: r for r in self.releases}
        self._check()

    def _check(self) -> None:
        if len(self._by_name) != len(self.releases):
            raise HistoryError(f"history of {self.project!r} repeats a release name")
        for older, newer in itertools.pairwise(self.releases):
            if version_tuple(newer.objects_version) <= version_tuple(
                older.objects_version
            ):
                raise HistoryError(
                    f"{self.project}: objects_version of {newer.name!r} must be "
                    f"newer than that of {older.name!r}"
                )
            for what, before, after in (
                ("RPC version of", older.rpc, newer.rpc),
                ("version of object", older.objects, newer.objects),
            ):
                for name, version in before.items():
                    if version_tuple(after[name]) < version_tuple(version):
                        raise HistoryError(
                            f"{self.project}: {what} {name!r} goes back from "
                            f"{version} to {after[name]} in {newer.name!r}"
                        )

    @property
    def current(self) -> Release:
        """The newest release: the one this code base runs."""
        return self.releases[-1]

    @property
    def binaries(self) -> tuple[str, ...]:
        return tuple(self.current.rpc)

    def release(self, name: str) -> Release:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownRelease(
                f"{self.project} has no release {name!r}; known releases: "
                f"{', '.join(self._by_name)}"
            ) from None

    def index(self, name: str) -> int:
        """Position of a release, oldest 0: compare releases with it."""
        return self.releases.index(self.release(name))

    def rpc_version(self, binary: str, release: str | None = None) -> str:
        rel = self.release(release) if release else self.current
        try:
            return rel.rpc[binary]
        except KeyError:
            raise HistoryError(
                f"release {rel.name!r} of {self.project} has no binary {binary!r} "
                f"(it has: {', '.join(rel.rpc) or 'none'}); name it in that "
                "release's rpc map, or set the endpoint's BINARY to one of those"
            ) from None

    def release_for_rpc(self, binary: str, version: str) -> Release:
        """The newest release whose RPC API for ``binary`` is at most ``version``."""
        return self._newest_at_most(
            version,
            ((r, r.rpc[binary]) for r in self.releases if binary in r.rpc),
            f"RPC version of {binary!r}",
        )

    def release_for_objects(self, objects_version: str) -> Release:
        """The newest release whose object manifest is at most
        ``objects_version``; a version newer than every release is an error,
        as in Cinder: it names a manifest this code has never seen."""
        newest = self.current.objects_version
        if version_tuple(objects_version) > version_tuple(newest):
            raise UnknownVersion(
                f"object version {objects_version} is newer than every release "
                f"of {self.project} (newest: {self.current.name}, {newest}); "
                "it comes from a newer release than this code"
            )
        return self._newest_at_most(
            objects_version,
            ((r, r.objects_version) for r in self.releases),
            "object version",
        )

    def resolve_level(self, binary: str, level: str) -> Release:
        """An ``[upgrade_levels]`` value (a release name or a version) as a release."""
        if level in self._by_name:
            return self._by_name[level]
        if level.replace(".", "").isdigit():
            return self.release_for_rpc(binary, level)
        raise UnknownRelease(
            f"[upgrade_levels] {binary} = {level!r} is neither 'auto', a release "
            f"({', '.join(self._by_name)}) nor a version like '1.0'"
        )

    def _newest_at_most(
        self, version: str, candidates: Iterable[tuple[Release, str]], what: str
    ) -> Release:
        wanted = version_tuple(version)
        found = None
        for release, declared in candidates:
            if version_tuple(declared) <= wanted:
                found = release
        if found is None:
            raise UnknownVersion(
                f"{what} {version} is older than every release of {self.project} "
                f"(oldest: {self.releases[0].name}); add that release to the history"
            )
        return found


def _carried_over(releases: Sequence[Release]) -> Iterator[Release]:
    """Each release with the maps of those before it under its own changes,
    and its ``objects_version`` (``1.<position>`` unless declared)."""
    rpc: dict[str, str] = {}
    objects: dict[str, str] = {}
    for i, release in enumerate(releases):
        rpc, objects = {**rpc, **release.rpc}, {**objects, **release.objects}
        yield dataclasses.replace(
            release,
            rpc=rpc,
            objects=objects,
            objects_version=release.objects_version or f"1.{i}",
        )
