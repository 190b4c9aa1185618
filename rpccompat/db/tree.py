"""A migration tree: one Alembic history with an ``expand`` and a ``contract`` branch.

rpccompat's own tables are one tree; each service project plugs in another
(its revision scripts and head files in one directory, its data migrations,
its release history).  Every tree runs in the same Alembic environment and
keeps both branches in one version table of its own, so the framework and a
project upgrade independently in one database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import io
import re
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError as AlembicError
from alembic.util import rev_id

from rpccompat import guard
from rpccompat.db.data import DataMigrations
from rpccompat.exceptions import MigrationError
from rpccompat.history import History, Release

EXPAND, CONTRACT = "expand", "contract"
BRANCHES = (EXPAND, CONTRACT)
HEAD_FILES = {EXPAND: "EXPAND_HEAD", CONTRACT: "CONTRACT_HEAD"}
ENVIRONMENT = Path(__file__).parent / "alembic"
ENTRY_POINT_GROUP = "rpccompat.migration_trees"
RUNNING = re.compile(r"^-- Running upgrade .*-> (\S+)$")
RELEASE_ATTRIBUTES = {EXPAND: "serves_release", CONTRACT: "requires_release"}


@dataclasses.dataclass(frozen=True)
class MigrationTree:
    """What a service project declares to get expand / migrate / contract.

    ``versions`` holds the revision scripts and the ``EXPAND_HEAD`` and
    ``CONTRACT_HEAD`` files; each expand revision names, in
    ``serves_release``, the release of ``history`` whose structures it adds
    (a node of that release needs it applied), and each contract revision
    names, in ``requires_release``, the oldest release of ``history`` that
    every service must run before it may be applied.  The schema guard
    (rpccompat.guard) records both after every migration.
    """

    name: str
    versions: Path
    history: History | None = None
    data_migrations: DataMigrations = dataclasses.field(default_factory=DataMigrations)
    version_table: str = "alembic_version"
    #: Releases whose revisions and data migrations this tree leaves out
    #: (see as_of).
    newer: frozenset[str] = frozenset()

    def as_of(self, release: str) -> MigrationTree:
        """This tree as ``release`` ships it: the same revision scripts
        without those, and the data migrations, of newer releases.

        A project's own package holds only its release's revisions and never
        needs this; a package that ships several releases (the sample
        service ships three) installs one release's schema at a time with it.
        The head files name the whole folder's heads, so only the whole tree
        checks them and scaffolds revisions.
        """
        if self.history is None:
            raise ValueError(f"tree {self.name!r} has no history to cut at {release!r}")
        position = self.history.index(release)
        later = {r.name for r in self.history.releases[position + 1 :]}
        data_migrations = DataMigrations()
        for migration in self.data_migrations:
            if migration.release not in later:
                data_migrations.add(migration.release, migration.fn, migration.name)
        return dataclasses.replace(
            self,
            history=History(
                self.history.project, self.history.releases[: position + 1]
            ),
            data_migrations=data_migrations,
            newer=self.newer | later,
        )

    def config(self, **attributes: Any) -> Config:
        config = Config()
        config.set_main_option("script_location", str(ENVIRONMENT))
        config.set_main_option("version_locations", str(self.versions))
        config.set_main_option("path_separator", "os")
        config.attributes.update(version_table=self.version_table, **attributes)
        return config

    @functools.cached_property
    def script(self) -> ScriptDirectory:
        """The revision scripts, read once: status and the gate ask often."""
        return ScriptDirectory.from_config(self.config())

    def revisions(self, branch: str) -> list[Script]:
        """The revisions of one branch, oldest first."""
        return [
            r
            for r in reversed(list(self.script.walk_revisions()))
            if branch in r.branch_labels
            and getattr(r.module, RELEASE_ATTRIBUTES[branch], None) not in self.newer
        ]

    def head(self, branch: str) -> str:
        revisions = self.revisions(branch)
        below = {d for r in revisions for d in _as_tuple(r.down_revision)}
        heads = [r.revision for r in revisions if r.revision not in below]
        if len(heads) != 1:
            raise MigrationError(
                f"tree {self.name!r}: the {branch} branch has heads {heads}, "
                "not one; merge them (alembic merge) and update "
                f"{HEAD_FILES[branch]}"
            )
        return heads[0]

    def check_head_files(self) -> None:
        """Raise unless ``EXPAND_HEAD``/``CONTRACT_HEAD`` name the real heads.

        Two changes that each add a revision then conflict in git, on these
        files, instead of forking the history in production.
        """
        self._refuse_as_of("check the head files")
        for branch, filename in HEAD_FILES.items():
            path = self.versions / filename
            recorded = path.read_text().strip() if path.exists() else None
            actual = self.head(branch)
            if recorded != actual:
                raise MigrationError(
                    f"tree {self.name!r}: {path} says {recorded} but the {branch} "
                    f"head is {actual}; write {actual} into it"
                )

    def problems(self) -> list[str]:
        """What is wrong with the tree itself (empty: nothing), no database needed:
        head files that do not name the heads, and revisions without a
        ``serves_release`` (expand) or ``requires_release`` (contract) the
        history declares (a tree as_of a release checks only the latter)."""
        problems = []
        try:
            if not self.newer:
                self.check_head_files()
        except MigrationError as e:
            problems.append(str(e))
        if self.history is None:
            return problems
        releases = [r.name for r in self.history.releases]
        for branch, attribute in RELEASE_ATTRIBUTES.items():
            for revision in self.revisions(branch):
                named = getattr(revision.module, attribute, None)
                if named is None:
                    problems.append(
                        f"{branch} revision {revision.revision} declares no {attribute}"
                    )
                elif named not in releases:
                    problems.append(
                        f"{branch} revision {revision.revision} names {named!r} "
                        f"in {attribute}, which the history does not declare"
                    )
        return problems

    def new_revision(
        self, branch: str, message: str, release: str | None = None
    ) -> Path:
        """Scaffold the next revision of ``branch`` and record it as the
        branch's head (as ``neutron-db-manage revision --expand`` does).

        It follows the branch's head; a contract revision depends on the
        expand head, whose structures it replaces.  It names ``release`` (by
        default the history's newest) as the release an expand revision
        serves or a contract revision requires.  Returns its path.
        """
        self._refuse_as_of("scaffold revisions")
        self.check_head_files()
        if release is None and self.history is not None:
            release = self.history.current.name
        if release is not None and self.history is not None:
            self.history.release(release)  # a clear error if it has none
        with contextlib.redirect_stdout(io.StringIO()):  # Alembic's "Generating"
            script = self.script.generate_revision(
                rev_id(),
                message,
                head=self.head(branch),
                depends_on=self.head(EXPAND) if branch == CONTRACT else None,
                version_path=str(self.versions),
                release_attribute=RELEASE_ATTRIBUTES[branch],
                release=release,
            )
        if script is None:  # only a revision-directives hook stops it
            raise MigrationError(f"tree {self.name!r}: Alembic wrote no revision")
        (self.versions / HEAD_FILES[branch]).write_text(script.revision + "\n")
        self.__dict__.pop("script", None)  # read again: it has one more
        return Path(script.path)

    def _own_revisions(self) -> set[str]:
        return {r.revision for branch in BRANCHES for r in self.revisions(branch)}

    def _refuse_as_of(self, what: str) -> None:
        if self.newer:
            raise MigrationError(
                f"tree {self.name!r} leaves out the revisions of "
                f"{', '.join(sorted(self.newer))}: {what} with the whole tree"
            )

    def requires_release(self, revision: Script) -> str | None:
        return getattr(revision.module, "requires_release", None)

    def serves_release(self, revision: Script) -> str | None:
        return getattr(revision.module, "serves_release", None)

    def lint_exceptions(self, revision: Script) -> dict[str, object]:
        return dict(getattr(revision.module, "lint_exceptions", {}))

    # -- the database side ---------------------------------------------------

    def applied(self, conn: sa.Connection) -> set[str]:
        """Every revision applied, dependencies included.

        Alembic keeps only heads in the version table, and a contract
        revision that ``depends_on`` an expand revision replaces its row, so
        the applied set is everything below the recorded heads.
        """
        context = MigrationContext.configure(
            conn, opts={"version_table": self.version_table}
        )
        applied: set[str] = set()
        todo = list(context.get_current_heads())
        while todo:
            revision = self._known(todo.pop())
            if revision is None or revision.revision in applied:
                continue
            applied.add(revision.revision)
            todo += _as_tuple(revision.down_revision)
            todo += [
                self.script.get_revision(d).revision
                for d in _as_tuple(revision.dependencies)
            ]
        return applied

    def _known(self, revision: str) -> Script | None:
        try:
            return self.script.get_revision(revision)
        except AlembicError as e:
            raise MigrationError(
                f"tree {self.name!r}: the database is at revision {revision}, "
                "which these revision scripts do not have: newer code migrated "
                "it; run that release's manage command, or install it here"
            ) from e

    def current(self, conn: sa.Connection) -> dict[str, str | None]:
        """The newest applied revision of each branch (None: none applied)."""
        applied = self.applied(conn)
        return {
            branch: next(
                (
                    r.revision
                    for r in reversed(self.revisions(branch))
                    if r.revision in applied
                ),
                None,
            )
            for branch in BRANCHES
        }

    def pending(self, conn: sa.Connection, branch: str) -> list[Script]:
        """The revisions of ``branch`` not applied yet, oldest first."""
        applied = self.applied(conn)
        return [r for r in self.revisions(branch) if r.revision not in applied]

    def upgrade(self, conn: sa.Connection, target: str, **attributes: Any) -> None:
        """Apply revisions up to ``target`` (e.g. ``expand@head``) on ``conn``.

        ``conn`` must not be in a transaction: each revision commits on its
        own, and PostgreSQL's concurrent index builds run between them.
        """
        try:
            command.upgrade(self.config(connection=conn, **attributes), target)
        except BaseException:
            # The revisions applied before the failure serve, or removed,
            # releases too; the failure is what to report, not this.
            with contextlib.suppress(Exception):
                conn.rollback()
                self.record_served(conn)
            raise
        if conn.in_transaction():
            conn.commit()
        self.record_served(conn)

    def record_served(self, conn: sa.Connection) -> None:
        """Tell the schema guard which releases the schema serves now.

        A tree as_of an older release that finds newer releases' revisions
        applied tells it nothing: newer code migrated the schema past what
        this tree knows, and its record stands.
        """
        if self.history is None:
            return
        applied = self.applied(conn)
        if self.newer and applied - self._own_revisions():
            return
        guard.record_served(
            conn,
            self.history.project,
            guard.Mark.of(self.ceiling(applied)),
            guard.Mark.of(self.floor(applied)),
        )

    def ceiling(self, applied: set[str]) -> Release | None:
        """The newest release whose expand revisions (and every older
        release's) are all in ``applied``; None: not even the oldest's."""
        releases = self._positions()
        missing = [
            releases[named]
            for revision in self.revisions(EXPAND)
            if revision.revision not in applied
            and (named := self.serves_release(revision)) in releases
        ]
        first_missing = min(missing, default=len(releases))
        return self._release_at(first_missing - 1)

    def floor(self, applied: set[str]) -> Release | None:
        """The newest release a contract revision in ``applied`` requires:
        older ones lost structures they need (None: none contracted)."""
        releases = self._positions()
        required = [
            releases[named]
            for revision in self.revisions(CONTRACT)
            if revision.revision in applied
            and (named := self.requires_release(revision)) in releases
        ]
        return self._release_at(max(required, default=-1))

    def _positions(self) -> dict[str | None, int]:
        assert self.history is not None
        return {r.name: i for i, r in enumerate(self.history.releases)}

    def _release_at(self, position: int) -> Release | None:
        assert self.history is not None
        return self.history.releases[position] if position >= 0 else None

    def render(self, dialect: str) -> dict[str, str]:
        """The SQL each revision of this tree runs on ``dialect``, rendered
        without a database (newer releases' revisions are rendered, after
        this tree's, and left out)."""
        buffer = io.StringIO()
        config = self.config(dialect_name=dialect, output_buffer=buffer)
        command.upgrade(config, "heads", sql=True)
        rendered: dict[str, str] = {}
        revision = None
        for line in buffer.getvalue().splitlines():
            marker = RUNNING.match(line)
            if marker:
                revision = marker.group(1)
            elif revision is not None:
                rendered[revision] = rendered.get(revision, "") + line + "\n"
        ours = self._own_revisions()
        return {r: sql for r, sql in rendered.items() if r in ours}


def _as_tuple(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def load(spec: str) -> MigrationTree:
    """A tree by entry point name (group ``rpccompat.migration_trees``) or
    ``module:attribute``; how ``rpccompat-manage`` finds a project's tree."""
    module_name, _, attribute = spec.partition(":")
    if attribute:
        try:
            return getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as e:
            raise MigrationError(f"cannot load migration tree {spec!r}: {e}") from e
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name == spec:
            return entry_point.load()
    known = ", ".join(sorted(available())) or "none installed"
    raise MigrationError(
        f"no migration tree named {spec!r} (known: {known}); give an installed "
        "name or module:attribute"
    )


def available() -> Iterator[str]:
    return (ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))


@functools.cache
def installed_version_tables() -> dict[str, str]:
    """``{version table: tree name}`` of every installed tree that loads: how
    a database's version table is named back to the tree that wrote it."""
    tables = {}
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            tree = entry_point.load()
        except (ImportError, AttributeError):
            continue  # a broken plugin is load()'s to report, when named
        tables[tree.version_table] = entry_point.name
    return tables


FRAMEWORK = MigrationTree(
    "rpccompat",
    Path(__file__).parent / "versions",
    version_table="rpccompat_alembic_version",
)
