"""Writing a test's parquet files: staged in full beside their place, then published atomically.

Readers see the previous file or the whole new one, never half of one: a file is written to a
temp file in the same directory, fsynced, and renamed into place (`StagedFile.publish`) only once
everything it goes with has been written.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from glow.results.schema import SCHEMA_VERSION


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; directories cannot be opened for fsync on every platform."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class StagedFile:
    """A parquet file written in full next to where it goes, not yet in place."""

    name: str
    tmp: Path
    path: Path

    def publish(self) -> Path:
        """Move the file into place: readers see the old file or this whole one, never half."""
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Remove the staged file, leaving the published one as it was (a sibling failed)."""
        self.tmp.unlink(missing_ok=True)


def stage_result(out_dir: Path, name: str, table: pa.Table) -> StagedFile:
    """Write `table` as `<out_dir>/<name>.parquet`'s replacement (directory created if needed),
    zstd-compressed, with `glow_schema_version` and `glow_table` = `name` in its metadata.

    The temp file lives in the same directory so publishing is a same-filesystem rename, and is
    fsynced first. Arrow releases the GIL while it encodes, so a caller can stage one file on a
    thread while it builds the next, and publish them all once everything has succeeded.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.parquet"
    metadata = dict(table.schema.metadata or {})
    metadata[b"glow_schema_version"] = SCHEMA_VERSION.encode()
    metadata[b"glow_table"] = name.encode()
    table = table.replace_schema_metadata(metadata)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return StagedFile(name=name, tmp=Path(tmp), path=path)


def write_results(
    out_dir: Path, invocations: pa.Table, generations: pa.Table, aggregated: pa.Table
) -> dict[str, Path]:
    """Write invocations/generations/aggregated `.parquet` into `out_dir` (see `stage_result`);
    each file is replaced atomically, and only once all three are written.

    Returns {"invocations": path, "generations": path, "aggregated": path}.
    """
    staged: list[StagedFile] = []
    try:
        for name, table in (
            ("invocations", invocations),
            ("generations", generations),
            ("aggregated", aggregated),
        ):
            staged.append(stage_result(out_dir, name, table))
    except BaseException:
        for file in staged:
            file.discard()
        raise
    return {file.name: file.publish() for file in staged}
