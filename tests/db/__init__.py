"""Shared by the database tests: rows alpha wrote, a sync that converts,
concurrent jobs."""

import threading
from collections.abc import Callable, Mapping

import sqlalchemy as sa

from rpccompat.db import ColumnSync
from rpccompat_demo import alpha


def insert_alpha_volumes(engine: sa.Engine, names: Mapping[str, str | None]) -> None:
    """Volumes as alpha writes them, ``{id: display_name}``: no ``name``."""
    with engine.begin() as conn:
        conn.execute(
            alpha.volumes.insert(),
            [
                {"id": k, "display_name": v, "size": 1, "status": "available"}
                for k, v in names.items()
            ],
        )


SIZES = ColumnSync(
    "disks",
    "id",
    ("size_gb",),
    ("size_mb",),
    to_new=lambda c: {"size_mb": c.size_gb * 1024},
    to_old=lambda c: {"size_gb": c.size_mb / 1024},
)


def concurrently(*jobs: Callable[[], None]) -> list[BaseException]:
    """Run the jobs at once in threads; what each raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def run(job: Callable[[], None]) -> None:
        start.wait()
        try:
            job()
        except BaseException as error:  # the test reports it
            errors.append(error)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors
