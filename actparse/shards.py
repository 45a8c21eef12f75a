"""Per-video inference stages, run whole or in shards of consecutive videos.

A per-video stage (detect_persons, keypoints, detect_parts, csn, part_states, stad_detect,
partattn_predict) describes its work as a small class in its module, a :class:`VideoWork`:

* ``Work(params, root)`` reads the params and paths (cheap: no model yet);
* ``setup()`` loads the model (through :func:`cached`, so a dask worker that runs many shards loads it
  once per process and thread);
* ``videos()`` lists the videos it processes, in the order of its output;
* ``tables(videos)`` yields ``(video, input table)`` for those videos (``None``: all), in that order;
* ``prepare(video, table)`` (optional; default: the table itself) does the video's CPU work that needs
  no model (JPEG decoding, crops): it runs on a prefetch thread, up to :data:`PREFETCH` videos ahead
  of the model (see :func:`results`), and may raise :class:`VideoSkipped`;
* ``one(video, prepared)`` returns the video's output table (or ``(table, note)``: a note is recorded in
  the skips table while the video still counts as processed); it raises :class:`VideoSkipped` for a
  video the stage records as a skip;
* ``finish(ledger, tried)`` (optional) records skips that only the whole run can see, after the loop.

Optional, for stages with more than a single per-video table: ``outputs()`` lists several ``(path,
schema)`` outputs (``one()`` then returns a list of tables, one per output, each written as that
video's row group); ``enabled()`` / ``placeholder()`` switch a seed system off (its placeholder outputs
are written instead of any video); ``after()`` makes the whole-run outputs (e.g. a metrics file) from
the written per-video outputs, after the stage's loop or the flow's merge.

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
import queue
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
    WHAT = "videos"  # what the skip ledger counts (its all-failed message)

    def __init__(self, params: dict, root: str | os.PathLike):
        self.params = params
        self.root = Path(root)

    output: Path
    where: Path  # named by the all-failed error

    def inputs(self) -> list[Path]:
        raise NotImplementedError

    def video_inputs(self, videos: Sequence[str]) -> list[Path]:
        """Files of these videos the results depend on besides :meth:`inputs` (e.g. the video files a
        stage decodes itself): fingerprinted per shard (default none)."""
        return []

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

    def prepare(self, video: str, table) -> Any:
        """CPU work of one video that needs no model; runs on the prefetch thread (see :func:`results`)."""
        return table

    def one(self, video: str, prepared) -> pa.Table | list[pa.Table] | tuple[pa.Table | list[pa.Table], str | None]:
        raise NotImplementedError

    def finish(self, ledger: SkipLedger, tried: set[str]) -> None:
        """Skips recorded after the loop (default none)."""

    def outputs(self) -> list[tuple[Path, str]]:
        """``(path, schema)`` of each per-video output, in the order of the tables :meth:`one` returns."""
        return [(self.output, self.SCHEMA)]

    def enabled(self) -> bool:
        """False: the stage is switched off (no video runs; :meth:`placeholder` writes its outputs)."""
        return True

    def placeholder(self) -> None:
        """The outputs of a switched-off stage."""

    def after(self) -> None:
        """Whole-run outputs made from the written per-video outputs (default none)."""


def _split(result) -> tuple[list[pa.Table], str | None]:
    out, note = result if isinstance(result, tuple) else (result, None)
    return (out if isinstance(out, list) else [out]), note


class _Writers:
    """One :class:`ParquetStreamWriter` per output; a video's tables are written together."""

    def __init__(self, outputs: Sequence[tuple[Path, str]]):
        self.writers: list[ParquetStreamWriter] = []
        try:
            for path, name in outputs:
                self.writers.append(ParquetStreamWriter(path, name))
        except BaseException:
            self.__exit__(RuntimeError, None, None)
            raise

    @property
    def rows(self) -> int:
        return self.writers[0].rows

    def write(self, tables: Sequence[pa.Table]) -> None:
        if len(tables) != len(self.writers):
            raise ValueError(f"{len(tables)} tables for {len(self.writers)} outputs")
        for writer, table in zip(self.writers, tables):
            writer.write(table)

    def __enter__(self) -> "_Writers":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for writer in self.writers:
            writer.__exit__(exc_type, exc, tb)


PREFETCH = 2  # videos prepared ahead of the model at most


def results(work: VideoWork, items: Iterable[tuple[str, Any]], prefetch: bool = True
            ) -> Iterator[tuple[str, list[pa.Table] | VideoSkipped, str | None]]:
    """``(video, output tables, note)`` per ``(video, input table)`` of ``items``, in order; a skipped
    video gives ``(video, VideoSkipped(...), None)``.

    With ``prefetch`` a second thread reads the items and runs :meth:`VideoWork.prepare` up to
    :data:`PREFETCH` videos ahead, while this thread runs the model (:meth:`VideoWork.one`): JPEG
    decoding and crops (OpenCV and NumPy release the GIL) overlap the forward pass. Every result is
    the same as without it: each step runs the same code on the same inputs; only the order in time
    changes. Any other error of ``prepare`` is raised here, for its video.
    """
    if not prefetch:
        for video, table in items:
            try:
                out, note = _split(work.one(video, work.prepare(video, table)))
            except VideoSkipped as exc:
                yield video, exc, None
                continue
            yield video, out, note
        return
    done = object()
    q: queue.Queue = queue.Queue(maxsize=PREFETCH)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for video, table in items:
                try:
                    entry = (video, work.prepare(video, table), None)
                except VideoSkipped as exc:
                    entry = (video, None, exc)
                if not put(entry):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread, raised there
            put((None, None, exc))
            return
        put((done, None, None))

    thread = threading.Thread(target=produce, name=f"{work.STAGE}-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            video, prepared, exc = q.get()
            if video is done:
                return
            if video is None:
                raise exc
            if exc is not None:
                yield video, exc, None
                continue
            try:
                out, note = _split(work.one(video, prepared))
            except VideoSkipped as skip:
                yield video, skip, None
                continue
            yield video, out, note
    finally:
        stop.set()
        thread.join()


def run_videos(work: VideoWork) -> tuple[int, SkipLedger]:
    """The stage's own loop over every video: returns (rows written, ledger). The ledger has been
    checked (:class:`actparse.stage.AllFailed` when every video failed) and written."""
    ledger = SkipLedger(work.STAGE, work.root, what=work.WHAT)
    if not work.enabled():
        work.placeholder()
        return 0, ledger
    work.setup()
    tried: set[str] = set()
    with _Writers(work.outputs()) as writer:
        for video, out, note in progress(results(work, work.tables()), work.STAGE, total=work.total()):
            ledger.tried(video)
            tried.add(video)
            if isinstance(out, VideoSkipped):
                ledger.skip(video, out)
                continue
            if note:
                ledger.note(video, note)
            writer.write(out)
        work.finish(ledger, tried)
        ledger.check(work.where)
    work.after()
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


def video_tables(path: str | os.PathLike, name: str,
                 videos: Sequence[str] | None = None) -> Iterator[tuple[str, pa.Table]]:
    """``(video, table)`` of an artifact written a video at a time (e.g. parts.parquet), in file order,
    for ``videos`` (None: all), reading only the row groups that hold them."""
    import pyarrow.compute as pc

    groups = video_row_groups(path)
    wanted = None if videos is None else set(videos)
    read = [i for i, names in enumerate(groups) if wanted is None or wanted & set(names)]
    last = {v: i for i, names in enumerate(groups) for v in names}  # a video is complete after its last group
    pending: dict[str, list[pa.Table]] = {}
    for i, group in zip(read, iter_row_groups(path, name, read)):
        column = group.column("video")
        for v in dict.fromkeys(column.to_pylist()):
            if wanted is None or v in wanted:
                pending.setdefault(v, []).append(group.filter(pc.equal(column, v)))
        for v in [v for v in pending if last[v] <= i]:
            yield v, pa.concat_tables(pending.pop(v))


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
        if not self.work.enabled():
            return []
        self.work.check()
        videos = self.work.videos()
        return [[i, videos[s:s + self.size]] for i, s in enumerate(range(0, len(videos), self.size))]

    def item_name(self, item) -> str:
        _, videos = item
        return str(videos[0]) if len(videos) == 1 else f"{videos[0]}..{videos[-1]}"

    def fingerprint(self, videos: Sequence[str]) -> str:
        work = self.work
        what = {"stage": work.STAGE, "videos": list(videos),
                "inputs": [[str(p), file_state(p)] for p in (*work.inputs(), *work.video_inputs(videos))],
                "params": {k: _param(self.params, k) for k in (*work.SECTIONS, "device")},
                "code": [_digest(inspect.getfile(type(work))), _digest(__file__)]}
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()

    @staticmethod
    def part_paths(workdir: Path, index: int) -> tuple[Path, Path]:
        return workdir / f"{index:05d}.parquet", workdir / f"{index:05d}.json"

    def output_parts(self, workdir: Path, index: int) -> list[Path]:
        """The part of each output of the shard (the first is :meth:`part_paths`' Parquet)."""
        first = self.part_paths(workdir, index)[0]
        return [first] + [workdir / f"{index:05d}.{k}.parquet" for k in range(1, len(self.work.outputs()))]

    def complete(self, item, workdir: str | os.PathLike) -> dict | None:
        """The sidecar of a shard whose part is complete and computed from the same inputs, else None."""
        index, videos = item
        part, side = self.part_paths(Path(workdir), index)
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("fingerprint") != self.fingerprint(videos) or \
                not all(p.is_file() for p in self.output_parts(Path(workdir), index)):
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
        parts = self.output_parts(workdir, index)
        with _Writers([(p, name) for p, (_, name) in zip(parts, self.work.outputs())]) as writer:
            for video, out, note in results(self.work, self.work.tables(videos)):
                tried.append(video)
                if isinstance(out, VideoSkipped):
                    events.append([video, "skip", str(out) or type(out).__name__])
                    continue
                if note:
                    events.append([video, "note", note])
                writer.write(out)
        write_json({"fingerprint": fingerprint, "videos": list(videos), "tried": tried, "events": events,
                    "rows": writer.rows}, side)
        return {"shard": index, "videos": len(videos), "rows": writer.rows, "resumed": False}

    def replay(self, items, errors: dict[str, dict],
               workdir: str | os.PathLike) -> tuple[SkipLedger, set[str], list[list[Path]]]:
        """(the stage's skip ledger, videos tried, the complete shards' parts in item order: one path per
        output) from the sidecars: each shard's skips and notes replayed in order; a shard that failed
        (after its retries), or whose part is missing or stale, has all its videos recorded as skips with
        its error."""
        workdir = Path(workdir)
        work = self.work
        ledger = SkipLedger(work.STAGE, work.root, what=work.WHAT)
        tried: set[str] = set()
        parts: list[list[Path]] = []
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
            parts.append(self.output_parts(workdir, index))
        return ledger, tried, parts

    def merge(self, items, errors: dict[str, dict], workdir: str | os.PathLike) -> dict:
        """The stage's outputs from the parts, in video order; a shard that failed (after its retries)
        has all its videos recorded as skips with its error. The all-failed check applies."""
        work = self.work
        if not work.enabled():
            work.placeholder()
            return {"videos": 0, "rows": 0, "skipped": 0, "shards": len(items)}
        ledger, tried, parts = self.replay(items, errors, workdir)
        outputs = work.outputs()
        with _Writers(outputs) as writer:
            for k, (_, name) in enumerate(outputs):
                for part in parts:
                    for group in iter_row_groups(part[k], name):
                        writer.writers[k].write(group)
            work.finish(ledger, tried)
            ledger.check(work.where)
        work.after()
        ledger.write()
        return {"videos": ledger.n_tried - ledger.n_failed, "rows": writer.rows, "skipped": ledger.n_failed,
                "shards": len(items)}


def mapper_of(work: type[VideoWork]) -> type[ShardMapper]:
    """The ``FLOW_MAPPER`` of a stage whose per-video work is ``work``."""
    return type(f"{work.__name__}Shards", (ShardMapper,), {"WORK": work, "__module__": work.__module__})
