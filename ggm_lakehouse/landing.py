"""Landing zone writer and reader: the contract between connectors and bronze.

Core, not a connector: connectors write batches with :class:`BatchWriter`, ``jobs.bronze`` and
the lineage read them, and neither side needs the other to do so.

Layout (see docs/architecture.md, "Landing batches")::

    <landing>/<source>/<dataset>/logical_date=<YYYY-MM-DD>/run_id=<safe run id>/
        part-00001.json      raw response body, byte for byte
        part-00002.json
        _MANIFEST.json       written last, atomically

Guarantees of :class:`BatchWriter`:

* a batch directory is complete if and only if it holds ``_MANIFEST.json``; the
  manifest is written to a temporary file, fsynced and renamed into place after all
  parts are fsynced, so a crash leaves either no manifest or a complete one;
* a failure inside the ``with`` block leaves no manifest;
* a new attempt of the same (source, dataset, logical date, run id) first removes the
  directory of the earlier attempt (incomplete, or complete when a task is cleared and
  re-run), so parts of two attempts never mix;
* request records in the manifest never carry credentials.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

log = logging.getLogger(__name__)

MANIFEST_NAME = "_MANIFEST.json"
MANIFEST_VERSION = 1
_UNSAFE_RUN_ID_CHARS = re.compile(r"[^A-Za-z0-9._=-]")
# Query/body/header keys that could carry a credential in some API; never persisted. The header names
# are the ones connectors.http never logs either (ALWAYS_SECRET_HEADERS).
_SECRET_KEY_NAMES = frozenset({
    "apikey", "api_key", "x-api-key", "token", "access_token", "client_secret", "password",
    "authorization", "proxy-authorization", "cookie", "set-cookie",
})


class ExtractWindowLike(Protocol):
    """What a batch needs to know of the extract window (``connectors.base.ExtractWindow`` is one)."""

    @property
    def logical_date(self) -> date: ...
    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...
    @property
    def run_id(self) -> str: ...


class ResponseLike(Protocol):
    """A raw response a batch stores as a part (``connectors.http.RawResponse`` is one)."""

    @property
    def content(self) -> bytes: ...
    @property
    def status(self) -> int: ...
    def request_record(self) -> dict[str, Any]: ...


def safe_run_id(run_id: str) -> str:
    """A filesystem- and Hadoop-path-safe form of an Airflow run id.

    ``:`` and ``+`` (both in ``scheduled__2026-11-27T00:00:00+00:00``) break Hadoop
    paths that Spark reads, so every character outside ``[A-Za-z0-9._=-]`` becomes
    ``_``. The original run id is kept in the manifest.
    """
    if not run_id:
        raise ValueError("run_id must not be empty")
    safe = _UNSAFE_RUN_ID_CHARS.sub("_", run_id)
    if set(safe) <= {"."}:  # "." and ".." would escape the directory
        safe = safe.replace(".", "_")
    return safe


def batch_dir(landing_root: Path, source: str, dataset: str, logical_date: date, run_id: str) -> Path:
    """Directory of one batch (the run id is made safe here)."""
    return (
        Path(landing_root)
        / source
        / dataset
        / f"logical_date={logical_date.isoformat()}"
        / f"run_id={safe_run_id(run_id)}"
    )


def records_at(document: Any, record_path: str) -> list[Any]:
    """The records inside a decoded JSON part at dotted ``record_path``.

    ``""`` means the part is itself one record. A missing path means zero records:
    HAL collections omit ``_embedded`` when nothing matched (BAG paginering.feature,
    "de zoekvraag levert geen resultaten").
    """
    if record_path == "":
        return [document]
    node = document
    for key in record_path.split("."):
        if not isinstance(node, dict) or key not in node:
            return []
        node = node[key]
    if not isinstance(node, list):
        raise ValueError(f"record_path {record_path!r} points to a {type(node).__name__}, not a list")
    return node


def count_records(content: bytes, record_path: str) -> int:
    """Number of records in one raw part: JSON list at ``record_path`` or CSV data rows (``"csv"``)."""
    if record_path == "csv":
        text = content.decode("utf-8-sig")
        rows = [row for row in csv.reader(io.StringIO(text), delimiter=sniff_delimiter(text)) if row]
        return max(0, len(rows) - 1)
    return len(records_at(json.loads(content), record_path))


def sniff_delimiter(text: str) -> str:
    """Dutch exports use ``;`` as often as ``,``; decide on the header line."""
    header = text.split("\n", 1)[0]
    return ";" if header.count(";") > header.count(",") else ","


def _redact(value: Any) -> Any:
    """Drop credential-looking keys from params/body/headers recorded in a manifest."""
    if isinstance(value, dict):
        return {
            k: _redact(v)
            for k, v in value.items()
            if str(k).lower() not in _SECRET_KEY_NAMES
        }
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def fsync_dir(path: Path) -> None:
    """Persist a rename/creation in ``path`` (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass(frozen=True)
class BatchResult:
    """A completed landing batch."""

    source: str
    dataset: str
    logical_date: date
    run_id: str
    path: Path
    manifest: dict[str, Any]

    @property
    def record_count(self) -> int:
        return int(self.manifest["record_count"])

    @property
    def checksum(self) -> str:
        return str(self.manifest["checksum"])

    @property
    def part_paths(self) -> list[Path]:
        return [self.path / part["file"] for part in self.manifest["parts"]]


class LandingWriteError(OSError):
    """A landing file could not be written (e.g. the disk is full); the message names the file and the way out."""


class BatchWriter:
    """Writes one landing batch; use as a context manager.

    >>> with BatchWriter(root, "bag", "panden", window, endpoint="GET /panden",
    ...                  record_path="_embedded.panden") as batch:
    ...     batch.add_response(response)
    >>> batch.result.manifest["record_count"]

    The manifest is written when the block exits without an exception; on an
    exception the parts written so far stay on disk without a manifest (useful
    for diagnosis) and are removed by the next attempt.
    """

    def __init__(
        self,
        landing_root: Path,
        source: str,
        dataset: str,
        window: ExtractWindowLike,
        *,
        endpoint: str,
        record_path: str,
        content_type: str = "application/json",
        extension: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.landing_root = Path(landing_root)
        self.source = source
        self.dataset = dataset
        self.window = window
        self.endpoint = endpoint
        self.record_path = record_path
        self.content_type = content_type
        self.extension = extension or ("csv" if record_path == "csv" else "json")
        self.extra = dict(extra or {})
        self.path = batch_dir(self.landing_root, source, dataset, window.logical_date, window.run_id)
        self.parts: list[dict[str, Any]] = []
        self.started_at: str | None = None
        self.result: BatchResult | None = None
        self._open = False

    # -- lifecycle

    def __enter__(self) -> "BatchWriter":
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self._open = False
            log.warning(
                "%s/%s: batch %s left incomplete (no manifest) after %s", self.source, self.dataset, self.path, exc_type.__name__
            )

    def open(self) -> None:
        """Prepare an empty batch directory, clearing an earlier attempt of the same run id."""
        if self.path.exists():
            manifest = self.path / MANIFEST_NAME
            if manifest.exists():
                # Remove the manifest first: from here on the old batch reads as incomplete,
                # even if clearing the rest is interrupted.
                log.warning("%s/%s: replacing complete batch %s of an earlier attempt", self.source, self.dataset, self.path)
                manifest.unlink()
            else:
                log.info("%s/%s: clearing incomplete batch %s of an earlier attempt", self.source, self.dataset, self.path)
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        self.started_at = _now()
        self._open = True

    # -- parts

    def add_part(
        self,
        content: bytes,
        *,
        request: Mapping[str, Any],
        status: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write one raw part and return its manifest entry."""
        if not self._open:
            raise RuntimeError("BatchWriter is not open; use it as a context manager")
        number = len(self.parts) + 1
        name = f"part-{number:05d}.{self.extension}"
        target = self.path / name
        self._write_part(target, content)
        try:
            record_count = count_records(content, self.record_path)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{self.source}/{self.dataset}: part {name} from {request.get('method')} {request.get('url')} "
                f"is not parsable at record_path {self.record_path!r}: {exc}"
            ) from exc
        entry: dict[str, Any] = {
            "file": name,
            "request": _redact(dict(request)),
            "status": status,
            "record_count": record_count,
            "sha256": hashlib.sha256(content).hexdigest(),
            "bytes": len(content),
        }
        if extra:
            entry.update(extra)
        self.parts.append(entry)
        return entry

    def _write_part(self, target: Path, content: bytes) -> None:
        """Write and fsync one part; a failed write (a full disk) removes what it left and names the file."""
        try:
            with open(target, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            target.unlink(missing_ok=True)  # on a full disk, do not keep the partial part's blocks
            raise LandingWriteError(exc.errno, f"{self.source}/{self.dataset}: cannot write landing part {target} "
                                    f"({len(content)} bytes): {exc.strerror}. The batch stays incomplete (no "
                                    "manifest); free space or move GGM_LANDING_ROOT, then rerun the task") from exc

    def add_response(self, response: ResponseLike) -> dict[str, Any]:
        """Write the raw body of an HTTP response as the next part."""
        return self.add_part(response.content, request=response.request_record(), status=response.status)

    # -- commit

    def completed(self) -> BatchResult:
        """The committed batch; raises if the writer has not committed (yet)."""
        if self.result is None:
            raise RuntimeError(f"{self.source}/{self.dataset}: batch {self.path} was not committed")
        return self.result

    def manifest(self) -> dict[str, Any]:
        """The manifest document for the parts written so far."""
        checksum = hashlib.sha256("".join(p["sha256"] for p in self.parts).encode("ascii")).hexdigest()
        document: dict[str, Any] = {
            "manifest_version": MANIFEST_VERSION,
            "source": self.source,
            "dataset": self.dataset,
            "endpoint": self.endpoint,
            "logical_date": self.window.logical_date.isoformat(),
            "window_start": self.window.start.isoformat(),
            "window_end": self.window.end.isoformat(),
            "run_id": self.window.run_id,
            "record_path": self.record_path,
            "content_type": self.content_type,
            "parts": self.parts,
            "record_count": sum(p["record_count"] for p in self.parts),
            "checksum": checksum,
            "started_at": self.started_at,
            "completed_at": _now(),
            "status": "complete",
        }
        if self.extra:
            document["extra"] = _redact(self.extra)
        return document

    def commit(self) -> BatchResult:
        """Write ``_MANIFEST.json`` atomically; afterwards the batch is complete."""
        if not self._open:
            raise RuntimeError("BatchWriter is not open")
        document = self.manifest()
        payload = json.dumps(document, ensure_ascii=False, indent=2, sort_keys=False).encode("utf-8")
        fd, tmp_name = tempfile.mkstemp(prefix=".manifest-", suffix=".tmp", dir=self.path)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, self.path / MANIFEST_NAME)
        except OSError as exc:
            Path(tmp_name).unlink(missing_ok=True)
            raise LandingWriteError(exc.errno, f"{self.source}/{self.dataset}: cannot write the manifest of batch "
                                    f"{self.path}: {exc.strerror}. The batch stays incomplete; free space or move "
                                    "GGM_LANDING_ROOT, then rerun the task") from exc
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        fsync_dir(self.path)
        self._open = False
        self.result = BatchResult(
            source=self.source,
            dataset=self.dataset,
            logical_date=self.window.logical_date,
            run_id=self.window.run_id,
            path=self.path,
            manifest=document,
        )
        log.info(
            "%s/%s: landed %d records in %d parts at %s",
            self.source, self.dataset, document["record_count"], len(self.parts), self.path,
        )
        return self.result


# ---------------------------------------------------------------------- reading


def read_manifest(path: Path) -> dict[str, Any]:
    """Read the manifest of a batch; ``path`` is the batch directory or the manifest file.

    Raises ``FileNotFoundError`` for an incomplete batch (no manifest).
    """
    path = Path(path)
    manifest = path if path.name == MANIFEST_NAME else path / MANIFEST_NAME
    with open(manifest, "rb") as handle:
        return json.loads(handle.read())


def find_complete_batches(
    landing_root: Path, source: str, dataset: str, logical_date: date | None = None
) -> list[Path]:
    """Directories of complete batches of ``source``/``dataset``, oldest first.

    Only directories holding a ``_MANIFEST.json`` with ``status == "complete"``
    count. Ordered by logical date, then manifest ``completed_at``, so the last
    entry per logical date is the newest complete batch (the one silver reads).
    """
    root = Path(landing_root) / source / dataset
    if logical_date is not None:
        date_dirs = [root / f"logical_date={logical_date.isoformat()}"]
    else:
        date_dirs = sorted(root.glob("logical_date=*")) if root.is_dir() else []
    found: list[tuple[str, str, Path]] = []
    for date_dir in date_dirs:
        if not date_dir.is_dir():
            continue
        for run_dir in date_dir.glob("run_id=*"):
            try:
                manifest = read_manifest(run_dir)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except ValueError:
                log.warning("unreadable manifest in %s; treating the batch as incomplete", run_dir)
                continue
            if manifest.get("status") != "complete":
                continue
            found.append((manifest.get("logical_date", ""), manifest.get("completed_at", ""), run_dir))
    found.sort(key=lambda item: (item[0], item[1], str(item[2])))
    return [path for _, _, path in found]


def load_batch(path: Path) -> BatchResult:
    """A :class:`BatchResult` for an existing complete batch directory."""
    manifest = read_manifest(path)
    return BatchResult(
        source=manifest["source"],
        dataset=manifest["dataset"],
        logical_date=date.fromisoformat(manifest["logical_date"]),
        run_id=manifest["run_id"],
        path=Path(path),
        manifest=manifest,
    )


def iter_batch_records(batch: BatchResult) -> Iterator[Any]:
    """All records of a landed JSON batch, in part order (duplicates across BAG tiles included)."""
    record_path = batch.manifest["record_path"]
    if record_path == "csv":
        raise ValueError(f"{batch.path} holds CSV parts; read them with a CSV reader")
    for part in batch.manifest["parts"]:
        document = json.loads((batch.path / part["file"]).read_bytes())
        yield from records_at(document, record_path)
