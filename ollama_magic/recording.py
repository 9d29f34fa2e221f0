"""Recordings in one SQLite file: every answer a server gave, to replay offline and to search.

One row per answer, written in one transaction when the answer is complete, so a crash or an
interrupt never leaves half an answer. The file is in WAL mode: two kernels (or a kernel and
a script reading the history) share it, each waiting briefly for the other's write. The
standard library's ``sqlite3`` is all it needs; ``export`` writes a self-contained copy.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ollama_magic.errors import OllamaError

__all__ = ["Entry", "RecordingError", "Recordings", "is_open"]

#: Written into every recordings file; a SQLite file without it is someone else's.
FORMAT = "ollama-magic recordings"
VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS about (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS recordings (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    prompt TEXT NOT NULL,
    chunks TEXT NOT NULL,
    tokens INTEGER,
    seconds REAL,
    recorded_at TEXT NOT NULL,
    cell TEXT,
    notebook TEXT
);
CREATE INDEX IF NOT EXISTS recordings_by_key ON recordings (key, id);
"""

_COLUMNS = (
    "uid, key, kind, path, model, request, prompt, chunks, tokens, seconds, recorded_at, "
    "cell, notebook"
)


class RecordingError(OllamaError):
    """The recordings file cannot be used: not a recording, corrupt, or not writable."""


@dataclass(frozen=True)
class Entry:
    """One recorded answer."""

    key: str
    """What identifies the request (a hash of its canonical form and its take)."""
    kind: str
    """``answer`` (depends only on the request) or ``state`` (the server's models, a load)."""
    path: str
    model: str
    request: dict[str, Any]
    """The canonical request: no host, no ``stream``, images as digests."""
    prompt: str
    """The prompt (or the last message, or the input), for the history and its search."""
    chunks: list[tuple[float, dict[str, Any]]]
    """Each object the server sent, with the seconds since the request went out."""
    tokens: int | None
    seconds: float
    recorded_at: str
    """When, in ISO 8601 (UTC)."""
    cell: str | None = None
    notebook: str | None = None
    uid: str = ""


class Recordings:
    """A recordings file, opened (and created) at ``path``; ``readonly``: opened for reading
    only (it must exist, and is never changed: a lesson in a shared folder, an import).

    Raises:
        RecordingError: The file is not a recording (another SQLite file, or not SQLite),
            is corrupt, cannot be created, or (``readonly``) does not exist.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.readonly = readonly
        self._lock = threading.Lock()  # one connection, shared by a batch's threads
        try:
            if readonly:
                if not self.path.is_file():
                    raise OSError(f"{self.path} does not exist")
                target: str | Path = f"{self.path.resolve().as_uri()}?mode=ro"
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                target = self.path
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE … COMMIT).
            self._db = sqlite3.connect(
                target,
                timeout=15.0,
                isolation_level=None,
                check_same_thread=False,
                uri=readonly,
            )
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc) from None
        try:
            self._check() if readonly else self._prepare()
            # A file damaged inside passes the checks above and fails at the first lookup:
            # found now, it is refused before replay starts rather than in every later cell.
            (verdict,) = self._db.execute("PRAGMA quick_check").fetchone()
            if verdict != "ok":
                raise sqlite3.DatabaseError("database disk image is malformed")
        except sqlite3.Error as exc:
            self._db.close()
            raise self._error(exc) from None
        _OPEN.add(self)

    def opened_as(self, path: Path, *, readonly: bool) -> bool:
        """Whether this is ``path``, opened the same way."""
        return (self.path, self.readonly) == (path, readonly)

    def _prepare(self) -> None:
        db = self._db
        self._check(empty_ok=True)
        db.execute("PRAGMA journal_mode=WAL")  # readers and one writer at a time, across kernels
        db.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; never torn
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            if not db.execute("SELECT 1 FROM about").fetchall():
                db.executemany(
                    "INSERT INTO about VALUES (?, ?)",
                    [("format", FORMAT), ("version", str(VERSION))],
                )

    def _check(self, *, empty_ok: bool = False) -> None:
        """Refuse a file that is not a recordings file (or one of a newer format)."""
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master")}
        if not tables and empty_ok:
            return
        if not tables:
            # A copy of the file without its -wal beside it, taken while a kernel wrote.
            raise sqlite3.DatabaseError(
                "it holds no recordings (a copy made without its -wal file? "
                "`%ollama replay export` makes a copy that travels)"
            )
        if "about" not in tables or "recordings" not in tables:
            raise sqlite3.DatabaseError("it is a SQLite file of another program")
        about = dict(self._db.execute("SELECT name, value FROM about").fetchall())
        if about.get("format") != FORMAT:
            raise sqlite3.DatabaseError("it is a SQLite file of another program")
        if int(about.get("version", "0")) > VERSION:
            raise sqlite3.DatabaseError(
                f"it was written by a newer ollama-magic (format {about.get('version')})"
            )

    def _error(self, exc: BaseException) -> RecordingError:
        reason = str(exc)
        hint = "Move it away (or `%ollama replay on OTHER.sqlite`), then record again."
        if self.readonly:
            hint = "Give the path of a recordings file (`%ollama replay export` makes one)."
        if self.path.is_dir():
            reason, hint = "it is a folder", "Give a file name in it, e.g. lesson.sqlite."
        elif self.readonly and not self.path.exists():
            return RecordingError(
                f"{self.path} does not exist: there is nothing to replay from.",
                hint="Record first with `%ollama replay on PATH` (with a server), or give the "
                "path of an export.",
            )
        elif "file is not a database" in reason or "malformed" in reason:
            reason = "the file is damaged or not SQLite"
        elif isinstance(exc, OSError) or "unable to open" in reason or "readonly" in reason:
            hint = "Choose a file in a folder you can write to: `%ollama replay on PATH`."
        return RecordingError(f"{self.path} cannot be used for recordings: {reason}.", hint=hint)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # BEGIN IMMEDIATE takes the write lock up front: a second kernel waits (up to the
        # timeout) instead of failing halfway. ROLLBACK on any error, a failed COMMIT or an
        # interrupt included: nothing half-written, and no write lock left held.
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _run(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._db.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    # -- writing -----------------------------------------------------------------------------

    def add(self, entry: Entry) -> None:
        """Store ``entry`` in one transaction."""
        row = (
            entry.uid or uuid.uuid4().hex,
            entry.key,
            entry.kind,
            entry.path,
            entry.model,
            json.dumps(entry.request, ensure_ascii=False, sort_keys=True),
            entry.prompt,
            json.dumps(entry.chunks, ensure_ascii=False),
            entry.tokens,
            entry.seconds,
            entry.recorded_at,
            entry.cell,
            entry.notebook,
        )
        try:
            with self._lock, self._transaction():
                self._db.execute(f"INSERT INTO recordings ({_COLUMNS}) VALUES ({_marks()})", row)
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    # -- reading -----------------------------------------------------------------------------

    def find(self, key: str) -> Entry | None:
        """The newest recording of the request ``key`` identifies."""
        rows = self._run(
            f"SELECT {_COLUMNS} FROM recordings WHERE key = ? ORDER BY id DESC LIMIT 1", (key,)
        )
        return _entry(rows[0]) if rows else None

    def like(self, path: str, prompt: str) -> Entry | None:
        """The newest recording of another request with the same prompt (a near miss)."""
        rows = self._run(
            f"SELECT {_COLUMNS} FROM recordings WHERE path = ? AND prompt = ? "
            "ORDER BY id DESC LIMIT 1",
            (path, prompt),
        )
        return _entry(rows[0]) if rows else None

    def count(self) -> int:
        """How many answers are recorded."""
        return int(self._run("SELECT count(*) FROM recordings WHERE kind = 'answer'")[0][0])

    def history(self, search: str | None = None, limit: int | None = None) -> list[Entry]:
        """The recorded answers, newest first; ``search`` in the prompt (case-insensitive)."""
        sql = f"SELECT {_COLUMNS} FROM recordings WHERE kind = 'answer'"
        parameters: tuple[Any, ...] = ()
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            sql += " AND prompt LIKE ? ESCAPE '\\'"
            parameters = (f"%{escaped}%",)
        sql += " ORDER BY id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [_entry(row) for row in self._run(sql, parameters)]

    # -- moving recordings between machines -----------------------------------------------------

    def export(self, destination: str | Path) -> int:
        """Copy every recording into a new file ``destination`` (one file, no WAL beside it);
        how many answers it holds.

        Raises:
            RecordingError: ``destination`` exists (nothing is overwritten) or is not writable.
        """
        target = Path(destination).expanduser()
        if target.exists():
            raise RecordingError(
                f"{target} exists already; nothing was exported.",
                hint="Choose a new file name, or delete that file first.",
            )
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            copy = sqlite3.connect(target, isolation_level=None)
            try:
                with self._lock:
                    self._db.backup(copy)  # a consistent snapshot, even while another writes
                copy.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
            finally:
                copy.close()
        except (OSError, sqlite3.Error) as exc:
            target.unlink(missing_ok=True)  # no half-written export in the way of a retry
            raise RecordingError(f"Could not export to {target}: {exc}.") from None
        return self.count()

    def merge(self, source: str | Path) -> tuple[int, int]:
        """Add the recordings of another file (an export); how many answers were added and
        how many were here already.

        Raises:
            RecordingError: ``source`` is missing or not a recordings file.
        """
        origin = Path(source).expanduser()
        if not origin.is_file():
            raise RecordingError(f"{origin} does not exist; nothing was imported.")
        other = Recordings(origin, readonly=True)  # an import leaves the file it reads as it is
        try:
            rows = other._run(f"SELECT {_COLUMNS} FROM recordings ORDER BY id")
        finally:
            other.close()
        before = self.count()
        try:
            with self._lock, self._transaction():
                self._db.executemany(
                    f"INSERT OR IGNORE INTO recordings ({_COLUMNS}) VALUES ({_marks()})", rows
                )
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        added = self.count() - before
        return added, sum(row[2] == "answer" for row in rows) - added

    def close(self) -> None:
        """Close the file; its -wal is folded in, so the .sqlite alone holds everything."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                if not self.readonly:
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
        _OPEN.discard(self)

    def __repr__(self) -> str:
        return f"Recordings({str(self.path)!r})"


#: Files open in this process, closed (and their -wal folded in) when the kernel exits.
_OPEN: weakref.WeakSet[Recordings] = weakref.WeakSet()


def is_open(path: Path) -> bool:
    """Whether this process has ``path`` open (so it was checked when it was opened)."""
    return any(recordings.path == path for recordings in list(_OPEN))


@atexit.register
def _close_all() -> None:
    for recordings in list(_OPEN):
        with contextlib.suppress(Exception):
            recordings.close()


def _marks() -> str:
    return ", ".join("?" * len(_COLUMNS.split(",")))


def _entry(row: tuple[Any, ...]) -> Entry:
    uid, key, kind, path, model, request, prompt, chunks, tokens, seconds, when, cell, book = row
    return Entry(
        key=key,
        kind=kind,
        path=path,
        model=model,
        request=json.loads(request),
        prompt=prompt,
        chunks=[(float(offset), obj) for offset, obj in json.loads(chunks)],
        tokens=tokens,
        seconds=seconds,
        recorded_at=when,
        cell=cell,
        notebook=book,
        uid=uid,
    )
