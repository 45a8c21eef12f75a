"""Per-video work inside a stage, mapped to one Prefect task per video so it spreads over workers.

A *mapper* splits a stage into ``items()`` (JSON-able, e.g. ``[index, video, path]``), ``run_item()``
(one video: writes a partial table under ``workdir``, raises on failure) and ``merge()`` (reads the
partial tables in item order and writes the stage's outputs exactly as its ``python -m stages.<name>``
command would, turning failed videos into recorded skips where the stage does the same). The flow
then commits the stage into dvc.lock, so ``dvc repro`` and the flow agree on what is up to date.

Which stages are mapped: ``flow.map_stages`` in params.yaml. ``decode`` has a built-in mapper
(:class:`DecodeMapper`); any other stage can opt in by defining a class ``FLOW_MAPPER`` with the same
methods (constructor ``(root, params)``) in its stage module. detect_persons, keypoints, detect_parts,
part_states, stad_detect and partattn_predict do, through :class:`actparse.shards.ShardMapper`: their
items are shards of ``flow.shard_videos`` consecutive videos that share the stage's per-video code (a
shard writes one part per per-video output, e.g. stad_detect's final and phase-1 tables); the merge
also writes the whole-run outputs (partattn_predict's metrics/partattn.json, computed from the merged
predictions) and, for a switched-off seed system, the placeholder outputs. csn's mapper
(``stages.csn.Shards``) is one too, with its own merge: its shards write each video's per-variant
probabilities (a shard holds whole batch groups of csn, so its forward passes are the stage's) and the
merge searches the ensemble weights on the validation videos, makes the ensemble rows and writes the
stage's outputs.

Optional attributes of a mapper: ``resumable`` (true: the flow keeps the stage's workdir between runs,
so a rerun after a crash reuses the parts the mapper finds complete; the merge task removes it) and
``retries`` (Prefect retries of a failed item task; default 0).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Protocol

from actparse.params import FLOW_SECTIONS, ParamError, get, load_params
from actparse.paths import Paths


class Mapper(Protocol):
    def items(self) -> list[Any]: ...

    def item_name(self, item: Any) -> str: ...

    def run_item(self, item: Any, workdir: Path) -> dict: ...

    def merge(self, items: list[Any], errors: dict[str, dict], workdir: Path) -> dict: ...


class DecodeMapper:
    """``decode`` per video: each task decodes one video into ``workdir/<index>.parquet``.

    ``merge`` streams the parts into artifacts/frames.parquet (one row group per video, data-set order)
    and writes artifacts/skips/decode.parquet, as ``python -m stages.decode`` does: a video that fails
    with a VideoError/ValueError is a skip, and the stage fails only when every video failed.
    """

    SKIP_ERRORS = ("VideoError", "ValueError", "DecordError")

    def __init__(self, root: str | Path, params: dict):
        from stages.decode import Settings

        self.root = Path(root)
        self.params = params
        self.cfg = Settings(params, self.root)  # the stage's own params and per-video function
        self.droot = self.cfg.droot

    def items(self) -> list[list]:
        from actparse.dataset import load_videos

        videos = load_videos(self.droot)
        return [[i, rec["video"], rec["path"]] for i, rec in enumerate(videos.to_pylist())]

    def item_name(self, item) -> str:
        return str(item[1])

    def run_item(self, item, workdir: Path) -> dict:
        from actparse.schemas import write_table

        idx, video, rel = item
        table = self.cfg.video(video, rel)  # the same per-video function as `python -m stages.decode`
        write_table(table, Path(workdir) / f"{idx:06d}.parquet", "frames")
        return {"video": video, "frames": table.num_rows}

    def merge(self, items, errors: dict[str, dict], workdir: Path) -> dict:
        from actparse.schemas import ParquetStreamWriter, read_table
        from actparse.stage import SkipLedger

        fatal = {v: e for v, e in errors.items() if e.get("type") not in self.SKIP_ERRORS}
        if fatal:
            video, err = next(iter(fatal.items()))
            raise RuntimeError(f"decode: video {video} failed with {err['type']}: {err['message']}")
        if not items:
            raise ValueError(f"{self.droot}: the data set lists no videos")
        ledger = SkipLedger("decode", self.root)  # the stage's skip ledger and all-failed check
        for _, video, _ in items:
            ledger.tried(str(video))
            if str(video) in errors:
                ledger.skip(str(video), errors[str(video)]["message"])
        ledger.check(self.droot)
        with ParquetStreamWriter(Paths(self.root).frames, "frames") as writer:
            for idx, video, _ in items:
                if str(video) not in errors:
                    writer.write(read_table(Path(workdir) / f"{idx:06d}.parquet", "frames"))
        ledger.write()
        return {"videos": ledger.n_tried - ledger.n_failed, "frames": writer.rows, "skipped": ledger.n_failed}


BUILTIN = {"decode": DecodeMapper}


def mapped_stages(params: dict) -> tuple[str, ...]:
    names = get(params, "flow.map_stages", (list, tuple))
    if names is None:
        return ()
    if not all(isinstance(n, str) for n in names):
        raise ParamError.of(params, "parameter 'flow.map_stages' must list stage names")
    return tuple(names)


def _stage_module(root: Path, module: str):
    """Import ``module`` (e.g. ``stages.decode``) from the project at ``root``."""
    if module in sys.modules and Path(getattr(sys.modules[module], "__file__", "") or "").resolve() == \
            (root / (module.replace(".", "/") + ".py")).resolve():
        return sys.modules[module]
    path = root / (module.replace(".", "/") + ".py")
    if not path.exists():
        raise FileNotFoundError(f"{path}: stage module {module} not found")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    name = f"_actparse_flow_{digest}_{module.replace('.', '_')}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def get_mapper(root: str | Path, params_file: str | Path, stage: str, module: str | None) -> Mapper:
    """The mapper of ``stage`` for the project at ``root`` (params re-read from ``params_file``)."""
    root = Path(root)
    pfile = Path(params_file)
    # the mapper runs the stage's code in-process: check its section too (a stage run checks the whole file)
    params = load_params(pfile if pfile.is_absolute() else root / pfile, sections=(*FLOW_SECTIONS, stage))
    if stage in BUILTIN:
        return BUILTIN[stage](root, params)
    if not module:
        raise ValueError(f"stage {stage!r} is in flow.map_stages but its cmd is not `python -m <module>`")
    mod = _stage_module(root, module)
    cls = getattr(mod, "FLOW_MAPPER", None)
    if cls is None:
        raise ValueError(f"stage {stage!r} is in flow.map_stages but {module} defines no FLOW_MAPPER "
                         f"and actparse has no built-in mapper for it")
    return cls(root, params)
