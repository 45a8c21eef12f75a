"""Per-video inference stages, run whole or in shards of consecutive videos.

A per-video stage (detect_persons, keypoints, detect_parts, csn) describes its work as a small class in its
module, a :class:`VideoWork`:

* ``Work(params, root)`` reads the params and paths (cheap: no model yet);
* ``setup()`` loads the model (through :func:`cached`, so a dask worker that runs many shards loads it
  once per process and thread);
* ``videos()`` lists the videos it processes, in the order of its output;
* ``tables(videos)`` yields ``(video, input table)`` for those videos (``None``: all), in that order;
* ``one(video, table)`` returns the video's output table (or ``(table, note)``: a note is recorded in
  the skips table while the video still counts as processed); it raises :class:`VideoSkipped` for a
  video the stage records as a skip;
* ``finish(ledger, tried)`` (optional) records skips that only the whole run can see, after the loop.

:func:`run_videos` is the stage's own loop (``python -m stages.<name>``): one row group per video,
the skip ledger, the all-failed check. :class:`ShardMapper` is the same work cut into the Prefect flow's
per-item tasks (``FLOW_MAPPER`` of the stage module, see flows/mapped.py): each shard of
``flow.shard_videos`` consecutive videos writes one part Parquet (one row group per video) plus a JSON
sidecar (its skips and notes, and a fingerprint of what it was computed from); the merge copies the parts'
row groups in video order into the stage's output and replays the skips into the same ledger, so the
merged artifacts are the ones the stage writes. A part whose sidecar fingerprint matches (input files'
size and mtime, model files', the params the stage reads, the stage code, the shard's videos) is reused
on a rerun after a crash instead of recomputed; any other part is recomputed.

A stage whose output needs more than the concatenation of its videos' rows subclasses :class:`ShardMapper`
with its own ``merge``, built on :meth:`ShardMapper.replay` (csn: its ``tables`` yields each video's
probabilities from forward passes batched across videos, and its merge searches the ensemble weights).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import pyarrow as pa

from .params import get
from .schemas import ParquetStreamWriter, iter_row_groups
from .stage import SkipLedger, progress, stage_log


class VideoSkipped(ValueError):
    """One video cannot be processed (e.g. a corrupt JPEG): the stage records it as a skip and goes on."""


class VideoWork:
    """Base of a stage's per-video work (see the module docstring). Subclasses set:

    ``STAGE`` (stage name), ``SCHEMA`` (output artifact schema), ``SECTIONS`` (params sections or dotted
    keys the results depend on), and define ``output`` / ``where`` (paths), ``inputs()`` (files and
    folders the results depend on: fingerprinted), ``setup``, ``videos``, ``tables``, ``one``."""

    STAGE: str = ""
    SCHEMA: str = ""
    SECTIONS: tuple[str, ...] = ()

    def __init__(self, params: dict, root: str | os.PathLike):
        self.params = params
        self.root = Path(root)

    output: Path
    where: Path  # named by the all-failed error

    def inputs(self) -> list[Path]:
        raise NotImplementedError

    def check(self) -> None:
        """Cheap checks before any shard runs (e.g. the model file exists); raise a clear error."""

    def setup(self) -> None:
        raise NotImplementedError

    def videos(self) -> list[str]:
        raise NotImplementedError

    def tables(self, videos: Sequence[str] | None = None) -> Iterator[tuple[str, Any]]:
        raise NotImplementedError

    def total(self) -> int | None:
        return None

    def one(self, video: str, table) -> pa.Table | tuple[pa.Table, str | None]:
        raise NotImplementedError

    def finish(self, ledger: SkipLedger, tried: set[str]) -> None:
        """Skips recorded after the loop (default none)."""


def _split(result) -> tuple[pa.Table, str | None]:
    if isinstance(result, tuple):
        return result[0], result[1]
    return result, None


def run_videos(work: VideoWork) -> tuple[int, SkipLedger]:
    """The stage's own loop over every video: returns (rows written, ledger). The ledger has been
    checked (:class:`actparse.stage.AllFailed` when every video failed) and written."""
    work.setup()
    ledger = SkipLedger(work.STAGE, work.root)
    tried: set[str] = set()
    with ParquetStreamWriter(work.output, work.SCHEMA) as writer:
        for video, table in progress(work.tables(), work.STAGE, total=work.total()):
            ledger.tried(video)
            tried.add(video)
            try:
                out, note = _split(work.one(video, table))
            except VideoSkipped as exc:
                ledger.skip(video, exc)
                continue
            if note:
                ledger.note(video, note)
            writer.write(out)
        work.finish(ledger, tried)
        ledger.check(work.where)
    ledger.write()
    return writer.rows, ledger


# ------------------------------------------------------------------------------------------ frames
def video_row_groups(path: str | os.PathLike) -> list[list[str]]:
    """The videos of each row group of a frames-like artifact (only its ``video`` column is read)."""
    import pyarrow.parquet as pq

    from .schemas import SchemaError, one_line

    try:
        pf = pq.ParquetFile(path)
        return [list(dict.fromkeys(pf.read_row_group(i, columns=["video"]).column("video").to_pylist()))
                for i in range(pf.num_row_groups)]
    except (pa.ArrowException, OSError) as exc:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: artifact not found (has its stage run?)") from None
        raise SchemaError(f"{path}: cannot read its video column: {one_line(exc)}") from None


def frames_videos(path: str | os.PathLike) -> list[str]:
    """The videos of frames.parquet in file order (as :func:`actparse.detector_data.frames_by_video` yields them)."""
    return list(dict.fromkeys(v for group in video_row_groups(path) for v in group))


def frames_tables(path: str | os.PathLike, videos: Sequence[str] | None = None) -> Iterator[tuple[str, pa.Table]]:
    """``frames_by_video`` of ``path`` for ``videos`` (None: all), reading only the row groups that hold them."""
    from .detector_data import frames_by_video

    if videos is None:
        yield from frames_by_video(path)
        return
    wanted = set(videos)
    groups = [i for i, names in enumerate(video_row_groups(path)) if wanted & set(names)]
    yield from frames_by_video(path, wanted, row_groups=groups)


# ------------------------------------------------------------------------------------------ model cache
_CACHE: dict[tuple, Any] = {}
_CACHE_LOCK = threading.Lock()
CACHE_SIZE = 4  # models kept per process (all threads together)


def file_state(path: str | os.PathLike) -> list:
    """Size and mtime of a file, or of every file under a folder (relative names); ``None`` when missing."""
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return [st.st_size, st.st_mtime_ns]
    if p.is_dir():
        return [[f.relative_to(p).as_posix(), *file_state(f)] for f in sorted(p.rglob("*")) if f.is_file()]
    return None


def cached(key: Sequence, files: Iterable[str | os.PathLike], load: Callable[[], Any]) -> Any:
    """``load()``, memoised per process and thread under ``key`` and the size and mtime of ``files``
    (a rewritten model file is loaded again). A worker running many shards loads its model once; each
    thread keeps its own copy, since the models are not safe to share between threads."""
    full = (threading.get_ident(), tuple(key), json.dumps([[str(f), file_state(f)] for f in files]))
    with _CACHE_LOCK:
        if full in _CACHE:
            return _CACHE[full]
    value = load()
    with _CACHE_LOCK:
        _CACHE[full] = value
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
    return value


def cache_clear() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


# ------------------------------------------------------------------------------------------ shards
def _digest(path: str | os.PathLike) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def _param(params: dict, key: str):
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


class ShardMapper:
    """The flow's mapper (flows/mapped.py protocol) of a :class:`VideoWork`: items are shards of
    ``flow.shard_videos`` consecutive videos. Subclass with ``WORK = <the work class>`` (see
    :func:`mapper_of`)."""

    WORK: type[VideoWork]
    resumable = True  # the flow keeps the stage's workdir between runs: complete parts are reused
    retries = 2  # Prefect retries of a shard task that raised (skips are not errors: they are in the part)

    def __init__(self, root: str | os.PathLike, params: dict):
        self.root = Path(root)
        self.params = params
        self.work = self.WORK(params, self.root)
        self.size = get(params, "flow.shard_videos", int, min_value=1)

    # -- items
    def items(self) -> list[list]:
        self.work.check()
        videos = self.work.videos()
        return [[i, videos[s:s + self.size]] for i, s in enumerate(range(0, len(videos), self.size))]

    def item_name(self, item) -> str:
        _, videos = item
        return str(videos[0]) if len(videos) == 1 else f"{videos[0]}..{videos[-1]}"

    def fingerprint(self, videos: Sequence[str]) -> str:
        work = self.work
        what = {"stage": work.STAGE, "videos": list(videos),
                "inputs": [[str(p), file_state(p)] for p in work.inputs()],
                "params": {k: _param(self.params, k) for k in (*work.SECTIONS, "device")},
                "code": [_digest(inspect.getfile(type(work))), _digest(__file__)]}
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()

    @staticmethod
    def part_paths(workdir: Path, index: int) -> tuple[Path, Path]:
        return workdir / f"{index:05d}.parquet", workdir / f"{index:05d}.json"

    def complete(self, item, workdir: str | os.PathLike) -> dict | None:
        """The sidecar of a shard whose part is complete and computed from the same inputs, else None."""
        index, videos = item
        part, side = self.part_paths(Path(workdir), index)
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("fingerprint") != self.fingerprint(videos) or not part.is_file():
            return None
        return meta

    def run_item(self, item, workdir: str | os.PathLike) -> dict:
        """One shard: its videos' output tables into the part file, skips and notes into the sidecar
        (written last, atomically: its presence marks the part complete). A complete, matching part is
        reused as it is."""
        from .atomic import write_json

        index, videos = item
        workdir = Path(workdir)
        meta = self.complete(item, workdir)
        if meta is not None:
            stage_log(self.work.STAGE).info("shard %d (%s): complete part reused", index, self.item_name(item))
            return {"shard": index, "videos": len(videos), "rows": meta["rows"], "resumed": True}
        part, side = self.part_paths(workdir, index)
        side.unlink(missing_ok=True)
        fingerprint = self.fingerprint(videos)  # before the work: inputs changing meanwhile make it stale
        self.work.setup()
        events: list[list] = []  # [video, "skip" | "note", message] in the order the stage records them
        tried: list[str] = []
        with ParquetStreamWriter(part, self.work.SCHEMA) as writer:
            for video, table in self.work.tables(videos):
                tried.append(video)
                try:
                    out, note = _split(self.work.one(video, table))
                except VideoSkipped as exc:
                    events.append([video, "skip", str(exc) or type(exc).__name__])
                    continue
                if note:
                    events.append([video, "note", note])
                writer.write(out)
        write_json({"fingerprint": fingerprint, "videos": list(videos), "tried": tried, "events": events,
                    "rows": writer.rows}, side)
        return {"shard": index, "videos": len(videos), "rows": writer.rows, "resumed": False}

    def replay(self, items, errors: dict[str, dict],
               workdir: str | os.PathLike) -> tuple[SkipLedger, set[str], list[Path]]:
        """(the stage's skip ledger, videos tried, complete parts in item order) from the sidecars: each
        shard's skips and notes replayed in order; a shard that failed (after its retries), or whose
        part is missing or stale, has all its videos recorded as skips with its error."""
        workdir = Path(workdir)
        work = self.work
        ledger = SkipLedger(work.STAGE, work.root)
        tried: set[str] = set()
        parts: list[Path] = []
        for item in items:
            index, videos = item
            err = errors.get(self.item_name(item))
            meta = None if err else self.complete(item, workdir)
            if meta is None:
                if err is None:
                    err = {"type": "RuntimeError", "message": "its part is missing or stale"}
                for video in videos:
                    tried.add(video)
                    ledger.skip(video, f"shard {self.item_name(item)} failed: {err['type']}: {err['message']}")
                continue
            for video in meta["tried"]:
                ledger.tried(video)
                tried.add(video)
            for video, kind, message in meta["events"]:
                (ledger.skip if kind == "skip" else ledger.note)(video, message)
            parts.append(self.part_paths(workdir, index)[0])
        return ledger, tried, parts

    def merge(self, items, errors: dict[str, dict], workdir: str | os.PathLike) -> dict:
        """The stage's outputs from the parts, in video order; a shard that failed (after its retries)
        has all its videos recorded as skips with its error. The all-failed check applies."""
        work = self.work
        ledger, tried, parts = self.replay(items, errors, workdir)
        with ParquetStreamWriter(work.output, work.SCHEMA) as writer:
            for part in parts:
                for group in iter_row_groups(part, work.SCHEMA):
                    writer.write(group)
            work.finish(ledger, tried)
            ledger.check(work.where)
        ledger.write()
        return {"videos": ledger.n_tried - ledger.n_failed, "rows": writer.rows, "skipped": ledger.n_failed,
                "shards": len(items)}


def mapper_of(work: type[VideoWork]) -> type[ShardMapper]:
    """The ``FLOW_MAPPER`` of a stage whose per-video work is ``work``."""
    return type(f"{work.__name__}Shards", (ShardMapper,), {"WORK": work, "__module__": work.__module__})
