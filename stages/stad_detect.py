"""Score every person box of the test videos with the seed 003 action detector (frame-level detections).

Reads:  artifacts/models/stad/model.pt (and phase1.pt), <data.root>/videos.parquet + test videos,
        person boxes by stad.boxes: refined -> artifacts/refined_persons.parquet, detected ->
        artifacts/persons.parquet (both: boxes with score >= stad.min_score), gt -> ground-truth boxes
        on every stad.stride-th frame (an oracle for ablations).
Writes: artifacts/stad/action_detections.parquet         (schema "action_detections"): one row per
          person box per class, score = sigmoid probability of the final model
        artifacts/stad/action_detections_phase1.parquet  the same for the phase-1 model (before
          decoupled learning; identical model when stad.decoupled is false)
        artifacts/skips/stad_detect.parquet              test videos that could not be decoded
With stad.enabled false both tables are written empty.
Params: stad.enabled, stad.boxes, stad.min_score, stad.stride, stad.short_side, stad.batch_size, device,
        stad.test_scales (null = [stad.short_side]; seed 003: [256, 360]) and stad.test_flip (also the
        mirrored video): the sigmoid scores of every scale (and flip) are averaged.
Both tables hold one row group per test video (the flow's shards write the same, flows/mapped.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from actparse.dataset import gt_persons_path
from actparse.params import get, resolve_device
from actparse.paths import Paths, data_root
from actparse.schemas import from_columns
from actparse.shards import VideoSkipped, VideoWork, cached, mapper_of, run_videos
from actparse.stage import seed_disabled, stage_log, stage_main
from actparse.video import decode_backend

log = stage_log("stad_detect")
COLUMNS = ("video", "frame", "person", "label", "box", "score")


def _rows(video: str, frames, persons, boxes, probs, classes) -> dict:
    cols = {k: [] for k in COLUMNS}
    for fr, ps, bs, pr in zip(frames, persons, boxes, probs):
        for p, b, sc in zip(ps, bs, pr):
            for k, c in enumerate(classes):
                cols["video"].append(video)
                cols["frame"].append(int(fr))
                cols["person"].append(int(p))
                cols["label"].append(c)
                cols["box"].append(np.asarray(b, np.float32))
                cols["score"].append(float(sc[k]))
    return cols


class Work(VideoWork):
    """stad_detect per test video: params, models and person boxes read once, then :meth:`one` per
    video (the stage's run and the flow's shards, actparse/shards.py)."""

    STAGE, SCHEMA, SECTIONS = "stad_detect", "action_detections", ("stad", "data.root", "decode.backend")
    WHAT = "test videos"

    def __init__(self, params: dict, root: Path):
        from actparse.dataset import BOX_SOURCES

        super().__init__(params, root)
        paths = self.paths = Paths(root)
        self.out_final = self.output = paths.stad / "action_detections.parquet"
        self.out_p1 = paths.stad / "action_detections_phase1.parquet"
        self.mdir = paths.models / "stad"
        if not self.enabled():
            return
        self.source = get(params, "stad.boxes", str, choices=BOX_SOURCES)
        self.min_score = get(params, "stad.min_score", float, min_value=0.0)
        self.stride = get(params, "stad.stride", int, min_value=1)
        self.short_side = get(params, "stad.short_side", int, min_value=16)
        self.device = resolve_device(params)
        self.droot = self.where = data_root(params, root)

    def enabled(self) -> bool:
        return get(self.params, "stad.enabled", bool)

    def placeholder(self) -> None:
        seed_disabled(self.params, "stad", "stad_detect", self.root, skips=True,
                      tables={self.out_final: "action_detections", self.out_p1: "action_detections"})

    def outputs(self) -> list[tuple[Path, str]]:
        return [(self.out_final, "action_detections"), (self.out_p1, "action_detections")]

    def inputs(self) -> list[Path]:
        boxes = {"refined": self.paths.refined, "detected": self.paths.persons}.get(self.source,
                                                                                    gt_persons_path(self.droot))
        return [self.droot / "videos.parquet", boxes, self.mdir / "model.pt", self.mdir / "phase1.pt"]

    def video_inputs(self, videos) -> list[Path]:
        from actparse.dataset import video_path

        test = self._test()
        return [video_path(self.droot, p) for p in test.loc[test["video"].isin(set(videos)), "path"]]

    def check(self) -> None:
        if not (self.mdir / "model.pt").is_file():
            raise FileNotFoundError(f"{self.mdir / 'model.pt'}: STAD model not found (has stad_train run?)")

    def setup(self) -> None:
        from actparse.stad import STADSettings, int_list, load_model

        mdir, device = self.mdir, self.device

        def load():
            final, ck = load_model(mdir / "model.pt", device)
            phase1, _ = load_model(mdir / "phase1.pt", device) if (mdir / "phase1.pt").exists() else (final, None)
            shared = {k: v for k, v in phase1.state_dict().items() if not k.startswith("head.classifier.")}
            mine = final.state_dict()
            if any(not np.array_equal(v.cpu().numpy(), mine[k].cpu().numpy()) for k, v in shared.items()):
                raise ValueError(f"{mdir}: phase1.pt and model.pt differ outside the classifier "
                                 f"(not one stad_train run?)")
            return final, phase1, ck

        self.final, self.phase1, ck = cached(("stad", str(mdir), device), [mdir / "model.pt", mdir / "phase1.pt"], load)
        self.classes = ck["classes"]
        self.s = STADSettings(**{k: (tuple(v) if isinstance(v, list) else v)
                                 for k, v in ck["extra"]["settings"].items()})
        self.test_scales = int_list(self.params, "stad.test_scales", min_value=16) or (self.short_side,)
        self.test_flip = get(self.params, "stad.test_flip", bool)
        self.backend = decode_backend(self.params)
        if ck["extra"].get("short_side") and ck["extra"]["short_side"] != self.short_side:
            log.warning("stad: model trained at short side %s, running at %s", ck["extra"]["short_side"],
                        self.short_side)

    def _test(self):
        from actparse.dataset import load_videos

        videos = load_videos(self.droot).to_pandas()
        return videos[videos["split"] == "test"].reset_index(drop=True)

    def videos(self) -> list[str]:
        return self._test()["video"].tolist()

    def total(self) -> int | None:
        return len(self._test())

    def tables(self, videos=None):
        """(video, (its row of videos.parquet, its person boxes)) for the test videos with boxes."""
        from actparse.dataset import load_person_boxes

        test = self._test()
        if videos is not None:
            test = test[test["video"].isin(set(videos))]
        boxes = load_person_boxes(self.source, self.root, self.droot, test["video"].tolist(), self.stride,
                                  self.min_score)
        by_video = {v: g for v, g in boxes.groupby("video", sort=False)}
        for row in test.itertuples(index=False):
            if row.video in by_video:
                yield row.video, (row, by_video[row.video])

    def prepare(self, video: str, table):
        """The decoded video (on the prefetch thread, while the model runs the previous one)."""
        from actparse.clips import load_video
        from actparse.dataset import video_path
        from actparse.video import VideoError

        row, g = table
        try:
            return row, g, load_video(video_path(self.droot, row.path), max(self.test_scales), self.backend)
        except (VideoError, ValueError) as exc:
            raise VideoSkipped(str(exc)) from None

    def one(self, video: str, prepared):
        from actparse.stad import predict

        row, g, v = prepared
        scale = v.shape[1] / float(row.height or v.shape[1])
        frames, persons, obox = [], [], []
        for fr, gf in g.groupby("frame", sort=True):
            frames.append(int(fr))
            persons.append(gf["person"].to_numpy())
            obox.append(np.stack(gf["box"].to_numpy()).astype(np.float64))
        final, phase1, s, device = self.final, self.phase1, self.s, self.device
        # phase 2 retrains only the classifier: both models share every other weight
        probs_final, probs_p1 = predict_views(v, frames, [b * scale for b in obox], self.test_scales, self.test_flip,
                                              lambda vs, bx: predict(final, vs, frames, bx, s, device, classifiers=[
                                                  final.head.classifier, phase1.head.classifier]))
        return [from_columns(_rows(video, frames, persons, obox, probs, self.classes), "action_detections")
                for probs in (probs_final, probs_p1)]


FLOW_MAPPER = mapper_of(Work)  # the flow's shards of consecutive videos (flow.map_stages, flow.shard_videos)


def run(params: dict, root: Path) -> None:
    work = Work(params, root)
    rows, ledger = run_videos(work)
    if work.enabled():
        log.info("%d test videos, %d detections (%s boxes) -> %s", ledger.n_tried, rows, work.source, work.paths.stad)


def predict_views(video: np.ndarray, frames: list, boxes: list, scales, flip: bool, score):
    """Scores averaged over the test views of seed 003: ``video`` (decoded at the largest of ``scales``)
    resized to each short side of ``scales``, and, with ``flip``, each also mirrored (boxes moved
    along). ``score(video, boxes)`` returns a list of per-classifier lists of (P_f, K) arrays."""
    from actparse.clips import resize_clip
    from actparse.stad import flip_boxes

    side0 = min(video.shape[1:3])
    total, n = None, 0
    for side in scales:
        vs = video if side == side0 else resize_clip(video, side)
        f = min(vs.shape[1:3]) / float(side0)
        bx = [b * f for b in boxes] if f != 1.0 else boxes
        views = [(vs, bx)] + ([(vs[:, :, ::-1], [flip_boxes(b, vs.shape[2]) for b in bx])] if flip else [])
        for vv, bb in views:
            out = score(vv, bb)
            total = out if total is None else [[a + b for a, b in zip(ta, oa)] for ta, oa in zip(total, out)]
            n += 1
    if n > 1:
        total = [[a / n for a in t] for t in total]
    return total


def main(argv=None):
    return stage_main("stad_detect", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
