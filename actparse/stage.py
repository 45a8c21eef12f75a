"""The stage kit: what every ``python -m stages.<name>`` shares.

* :func:`stage_main` parses ``--params`` / ``--root`` / ``-v``, loads the params, runs the stage and
  turns the errors a user can fix into one line on stderr and exit status 2.
* :class:`SkipLedger` records the videos a stage could not process (``artifacts/skips/<stage>.parquet``,
  schema "skips", a DVC output of the stage) and stops the stage with :class:`AllFailed` when none of
  the videos it tried could be processed.
* :func:`seed_disabled` is the guard of the optional seed systems (``<system>.enabled: false``): it
  writes the stage's placeholder outputs so the DAG stays whole, and tells the stage to return.
* :func:`model_folder` writes a training stage's model folder atomically: the stage trains into a
  temporary sibling folder that replaces the old one only when the stage succeeds.
* :func:`stage_log` / :func:`configure_logging`: stages log through ``logging`` (stderr), never ``print``.
* :func:`new_columns`: empty column lists of an artifact schema, filled row by row then handed to
  :func:`actparse.schemas.from_columns`.
* :class:`Progress` / :func:`progress`: progress of a long loop, a tqdm bar in a terminal, otherwise
  ``progress: 12/48 videos`` log lines at most every ``ACTPARSE_PROGRESS_SECONDS`` (default 10) seconds
  (the Prefect flow turns them into progress artifacts).

The flow's per-video tasks (``flows/mapped.py``) call the same per-video function as the stage and
merge through the same ledger, so a skip and an all-failed run read the same either way.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from .params import InputError, ParamError, decode_budget_bytes, get, load_params, reader_cache_size
from .paths import Paths
from .atomic import pid_alive

log = logging.getLogger("actparse")
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


# ------------------------------------------------------------------------------------------ logging
def stage_log(stage: str) -> logging.Logger:
    """The logger of a stage (``actparse.<stage>``); its records go to stderr via :func:`configure_logging`."""
    return logging.getLogger(f"actparse.{stage}")


def configure_logging(level: int = logging.INFO) -> None:
    """The stages' log format on stderr (also used by their spawned worker processes)."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)


def setup_offline_env() -> None:
    """Nothing downloads at run time: ultralytics offline, plots off, no telemetry."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")


# ------------------------------------------------------------------------------------------ progress
PROGRESS_ENV = "ACTPARSE_PROGRESS_SECONDS"


def _progress_every() -> float:
    raw = os.environ.get(PROGRESS_ENV, "10")
    try:
        value = float(raw)
    except ValueError:
        raise ParamError(f"${PROGRESS_ENV}={raw!r}: not a number of seconds") from None
    if value < 0:
        raise ParamError(f"${PROGRESS_ENV}={raw!r}: must be >= 0")
    return value


class Progress:
    """Progress of a long loop of a stage: ``Progress(total, "videos", stage)``, then ``update()`` per item
    (``update(loss=0.31, val_map=0.5)`` adds numbers to the line) and ``close()`` (or ``with``).

    In a terminal it is a tqdm bar; otherwise it logs ``progress: <done>/<total> <what>[ key=value ...]``
    on the stage's logger, on the first update, at most every ``every`` seconds (default
    ``$ACTPARSE_PROGRESS_SECONDS``, 10) after that, and at the last item.
    """

    def __init__(self, total: int | None, what: str = "videos", stage: str | None = None,
                 every: float | None = None):
        self.total, self.what, self.done = (int(total) if total is not None else None), what, 0
        self.logger = stage_log(stage) if stage else log
        self.every = _progress_every() if every is None else float(every)
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=stage or what, unit=what.rstrip("s") or what)
        self._last = -float("inf")

    def update(self, n: int = 1, **numbers: float) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if numbers:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in numbers.items()})
            return
        now = time.monotonic()
        last = self.total is not None and self.done >= self.total
        if last or now - self._last >= self.every:
            self._last = now
            extra = "".join(f" {k}={v:.4g}" for k, v in numbers.items())
            total = self.total if self.total is not None else "?"
            self.logger.info("progress: %d/%s %s%s", self.done, total, self.what, extra)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(items: Iterable, stage: str, what: str = "videos", total: int | None = None) -> Iterator:
    """Iterate ``items`` with a :class:`Progress` (``total``: default ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    with Progress(total, what, stage) as bar:
        for item in items:
            yield item
            bar.update()


def row_groups(path: str | os.PathLike) -> int | None:
    """Row groups of a Parquet artifact (decode writes one per video): a loop's total; None if unreadable."""
    try:
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).num_row_groups
    except (OSError, ValueError, ImportError):
        return None


# ------------------------------------------------------------------------------------------ skips
class AllFailed(ValueError):
    """Every video a stage tried failed: the stage stops instead of writing empty outputs."""


class SkipLedger:
    """The videos one stage could not process, and why (``artifacts/skips/<stage>.parquet``).

    Use::

        ledger = SkipLedger("detect_persons", root)
        for video, ... in ...:
            ledger.tried(video)
            try:
                ...
            except ValueError as exc:
                ledger.skip(video, exc)
                continue
        ledger.check()   # AllFailed when every tried video was skipped (before the outputs are renamed)
        ledger.write()

    :meth:`note` records a problem with a video that was still processed (it does not count as failed).
    """

    def __init__(self, stage: str, root: str | os.PathLike = ".", what: str = "videos"):
        self.stage = stage
        self.what = what
        self.path = Paths(root).skips / f"{stage}.parquet"
        self.rows: list[dict] = []
        self._tried: dict[str, None] = {}
        self._failed: dict[str, None] = {}

    def tried(self, video: str) -> None:
        """Count ``video`` among the ones this stage attempted."""
        self._tried[str(video)] = None

    def skip(self, video: str, error: BaseException | str) -> None:
        """``video`` could not be processed: log a warning and record it."""
        self.tried(video)
        self._failed[str(video)] = None
        self._record(video, error)

    def note(self, video: str, error: BaseException | str) -> None:
        """``video`` was processed but part of it was not (e.g. boxes on frames that were not decoded)."""
        self._record(video, error)

    def _record(self, video: str, error: BaseException | str) -> None:
        msg = str(error) or type(error).__name__
        stage_log(self.stage).warning("skip %s: %s", video, msg)
        self.rows.append({"video": str(video), "stage": self.stage, "error": msg})

    @property
    def n_tried(self) -> int:
        return len(self._tried)

    @property
    def n_failed(self) -> int:
        return len(self._failed)

    def failed(self, video: str) -> bool:
        """Whether ``video`` was recorded as a failure."""
        return str(video) in self._failed

    def check(self, where: str | os.PathLike | None = None) -> None:
        """Raise :class:`AllFailed` when at least one video was tried and every one failed."""
        if self._tried and len(self._failed) == len(self._tried):
            raise AllFailed(all_failed_message(self.stage, len(self._tried), self.rows, self.what, where))

    def write(self) -> Path:
        from .schemas import from_rows, write_table

        return write_table(from_rows(self.rows, "skips"), self.path, "skips")

    def finish(self, where: str | os.PathLike | None = None) -> Path:
        """:meth:`check`, then :meth:`write`."""
        self.check(where)
        return self.write()


def all_failed_message(stage: str, n: int, rows: Iterable[dict], what: str = "videos",
                       where: str | os.PathLike | None = None, first: int = 3) -> str:
    """``<stage>: none of the <n> videos [under <where>] could be processed: <first errors>``."""
    rows = list(rows)
    errs = "; ".join(f"{r['video']}: {r['error']}" for r in rows[:first])
    more = f" (and {len(rows) - first} more)" if len(rows) > first else ""
    under = f" under {where}" if where else ""
    return f"{stage}: none of the {n} {what}{under} could be processed: {errs or 'no error recorded'}{more}"


# ------------------------------------------------------------------------------------------ seed systems
def seed_disabled(params: dict, system: str, stage: str, root: str | os.PathLike = ".", *,
                  tables: dict | None = None, json_files: Iterable[str | os.PathLike] = (),
                  model_dir: str | os.PathLike | None = None, skips: bool = False) -> bool:
    """The guard of an optional seed system: False when ``<system>.enabled`` is true.

    Otherwise it writes the stage's placeholder outputs and returns True (the stage then returns):
    ``tables`` {path: schema name} as empty tables, ``json_files`` as ``{"enabled": false}``,
    ``model_dir`` replaced by a folder holding only ``train_info.json`` ``{"enabled": false}``, and
    with ``skips`` an empty ``artifacts/skips/<stage>.parquet``.
    """
    if get(params, f"{system}.enabled", bool):
        return False
    from .atomic import write_json
    from .schemas import from_rows, write_table

    for path, name in (tables or {}).items():
        write_table(from_rows([], name), path, name)
    for path in json_files:
        write_json({"enabled": False}, path)
    if model_dir is not None:
        with model_folder(model_dir) as out:
            write_json({"enabled": False}, out / "train_info.json")
    if skips:
        SkipLedger(stage, root).write()
    stage_log(stage).info("%s.enabled is false: placeholder outputs written, nothing else done", system)
    return True


# ------------------------------------------------------------------------------------------ given models
def given_model(params: dict, system: str, root: str | os.PathLike = ".") -> Path | None:
    """``<system>.model``: a trained model folder to use as is instead of training (relative to ``root``)."""
    p = get(params, f"{system}.model", str)
    if not p:
        return None
    path = Path(p)
    return path if path.is_absolute() else Path(root) / path


def use_given_model(given: Path, final: str | os.PathLike, system: str, stage: str, root: str | os.PathLike,
                    required: Sequence[str], check: Callable[[Path], object]) -> None:
    """Install the trained model folder ``given`` (``<system>.model``) as the stage's model folder ``final``
    instead of training: it must lie outside ``final``, hold ``required``, and pass ``check`` (which
    loads its checkpoints: a clear error names a file that is not one); its files are copied in
    atomically and its ``train_info.json`` gains ``{"trained": false, "source": ...}``."""
    from .paths import check_outside
    from .atomic import write_json

    final = Path(final)
    if not given.is_dir():
        raise FileNotFoundError(f"{system}.model {given}: model folder not found")
    check_outside(given, final, f"{system}.model")
    missing = [f for f in required if not (given / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{given}: no {missing[0]} in this {system} model folder (it needs {', '.join(required)})")
    check(given)
    info_path = given / "train_info.json"
    try:
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{info_path}: not a JSON object ({exc})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{info_path}: not a JSON object")
    with model_folder(final) as out:
        for f in sorted(given.iterdir()):
            if f.is_file() and f.name != "train_info.json":
                shutil.copyfile(f, out / f.name)
        write_json({**info, "enabled": True, "trained": False, "source": str(given)}, out / "train_info.json")
    SkipLedger(stage, root).write()  # nothing decoded: no skips
    stage_log(stage).info("using the trained %s model %s as is (no training)", system, given)


# ------------------------------------------------------------------------------------------ model folders
def _sibling_re(name: str, kind: str) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(name)}\.(\d+)\.[a-z0-9_]+\.{kind}$")


def clean_stale_siblings(final: str | os.PathLike) -> list[Path]:
    """Remove what killed :func:`model_folder` runs left beside ``final`` (only its own patterns).

    ``.<name>.<pid>.<x>.tmpdir`` (a half-trained folder) is removed when process ``pid`` is gone;
    ``.<name>.<pid>.<x>.old`` (the previous folder, set aside during the swap) is put back when ``final``
    is missing, removed otherwise. Returns the paths removed or restored.
    """
    final = Path(final)
    if not final.parent.is_dir():
        return []
    done = []
    for kind in ("tmpdir", "old"):
        pat = _sibling_re(final.name, kind)
        for p in sorted(final.parent.iterdir()):
            m = pat.match(p.name)
            if not m or pid_alive(int(m.group(1))):
                continue
            if kind == "old" and not final.exists():
                os.replace(p, final)
                log.warning("%s: restored the previous folder left aside by an interrupted run", final)
            else:
                shutil.rmtree(p, ignore_errors=True)
            done.append(p)
    return done


@contextmanager
def model_folder(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``final`` to write a model folder into.

    When the block finishes it takes the place of ``final`` (the old folder is set aside, the new one
    renamed in, the old one removed); when the block raises, or the process is killed, ``final`` keeps
    the previous model untouched and the temporary folder is removed (at once, or by the next run).
    """
    import secrets

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_siblings(final)
    tag = f"{os.getpid()}.{secrets.token_hex(4)}"
    tmp = final.parent / f".{final.name}.{tag}.tmpdir"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.parent / f".{final.name}.{tag}.old"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------ columns
def new_columns(name: str) -> dict[str, list]:
    """``{column: []}`` for every column of artifact schema ``name`` (see :mod:`actparse.schemas`)."""
    from .schemas import schema

    return {f.name: [] for f in schema(name)}


# ------------------------------------------------------------------------------------------ main
def _user_error(exc: BaseException) -> bool:
    """Bad params, missing or bad input, an unreadable video, a file that cannot be read or written
    (disk full, no permission): errors the user can fix."""
    if isinstance(exc, (ParamError, OSError, ValueError, InputError)):
        return True
    video = sys.modules.get("actparse.video")  # not imported here: it is no dependency of every stage
    return video is not None and isinstance(exc, video.VideoError)


def _one_line(name: str, exc: BaseException) -> str:
    msg = str(exc) or type(exc).__name__
    prefix = f"{name}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def stage_main(name: str, doc: str | None, run: Callable[[dict, Path], object],
               argv: list[str] | None = None, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """Parse ``--params`` / ``--root``, load params, call ``run(params, root)``.

    Errors the user can fix (bad params, bad or missing input, every video failing, a full disk) print one line
    ``<stage>: error: <message>`` on stderr and return 2.
    """
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--root", default=".", help="project root holding artifacts/ (default: .)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    if extra:
        extra(parser)
    args = parser.parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    setup_offline_env()
    t0 = time.time()
    try:
        reader_cache_size()  # a bad $ACTPARSE_READER_CACHE stops the stage here, not video by video
        decode_budget_bytes()  # the same for $ACTPARSE_DECODE_BUDGET_MB
        params = load_params(args.params)
        params["_args"] = vars(args)
        run(params, Path(args.root))
    except Exception as exc:  # noqa: BLE001 - only the user's errors are turned into exit 2
        if not _user_error(exc):
            raise
        print(f"{name}: error: {_one_line(name, exc)}", file=sys.stderr)
        return 2
    log.info("stage %s done in %.1fs", name, time.time() - t0)
    return 0
