"""Time the vectorised metrics and linker against loop-per-box implementations in the official style.

    python benchmarks/bench_metrics.py              # the issue's sizes (takes a while: the loops are slow)
    python benchmarks/bench_metrics.py --scale 0.2  # 20% of the videos, same per-video sizes

Sizes at scale 1: MultiSports 500 videos x 300 frames x 10 people (2 labelled boxes per person and
frame, ~20 ground-truth tubes and ~30 detected tubes per video); Kinetics-TPS 900 videos x 60
sampled frames x 1-3 humans x 10 parts. For each task both implementations get the same loaded inputs
(file parsing is not timed), and the outputs are compared for bit-identity. Not a test.

The first Kinetics-TPS row starts from the four official JSON files on disk instead, and times
reading them too: ``json.load`` plus the loop for the official way, ``tps.evaluate_files`` (the
part-result files scanned from their bytes into arrays, actparse.metrics.tps_scan) for ours. The
scanner is compiled once per install (numba, cached on disk); the row times a warm call.

The Kinetics-TPS "bound" row times no scoring at all: only reading each part's box and state out
of the loaded dicts once, which any scorer of those dicts has to do; the loop's time over it is the
largest speed-up possible on dict inputs (the array route has no such floor).
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import chain
from operator import itemgetter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actparse.constants import PARTS  # noqa: E402
from actparse.link import LinkParams, link_moc_layout  # noqa: E402
from actparse.metrics import multisports as MS  # noqa: E402
from actparse.metrics import tps as TPS  # noqa: E402
from tests import oracles as R  # noqa: E402

N_LABELS = 66


# ------------------------------------------------------------------------------------ data
def multisports_data(n_videos: int, n_frames: int, n_people: int, seed: int = 0):
    """GT pkl dict, frame detections (N, 8), video detections, and MOC-layout frame dets per video."""
    rng = np.random.default_rng(seed)
    labels = [f"sport action {i}" for i in range(N_LABELS)]
    vids = [f"sport/v_{i:05d}" for i in range(n_videos)]
    gttubes, frame_rows, vdets = {}, [], {lab: [] for lab in range(N_LABELS)}
    moc = {}
    fr = np.arange(1, n_frames + 1)
    for iv, v in enumerate(vids):
        tubes, per_frame = {}, {}
        det_boxes, det_labels, det_scores, det_frames = [], [], [], []
        for p in range(n_people):
            xy = np.array([rng.uniform(0, 600), rng.uniform(0, 300)]) + np.cumsum(rng.normal(0, 1.5, (n_frames, 2)), 0)
            wh = np.array([rng.uniform(40, 90), rng.uniform(100, 200)])
            boxes = np.c_[xy, xy + wh].astype(np.float32)
            own = int(rng.integers(N_LABELS))
            alt = int(rng.integers(N_LABELS))
            start = 0
            for _ in range(int(rng.integers(1, 4))):
                s = start + int(rng.integers(0, 40))
                e = min(n_frames, s + int(rng.integers(20, 150)))
                if e - s < 5:
                    break
                lab = own if rng.random() < 0.7 else int(rng.integers(N_LABELS))
                tubes.setdefault(lab, []).append(np.c_[fr[s:e], boxes[s:e]].astype(np.float32))
                # detected tubes: jittered extent and boxes, sometimes a wrong label
                a = max(0, s + int(rng.integers(-10, 10)))
                b = min(n_frames, e + int(rng.integers(-10, 10)))
                if b - a > 2:
                    t = np.zeros((b - a, 6), np.float32)
                    t[:, 0] = fr[a:b]
                    t[:, 1:5] = boxes[a:b] + rng.normal(0, 4, (b - a, 4))
                    t[:, 5] = rng.random(b - a)
                    dl = lab if rng.random() < 0.8 else int(rng.integers(N_LABELS))
                    vdets[dl].append((v, np.float32(rng.random()), t))
                start = e
            noisy = boxes + rng.normal(0, 3, boxes.shape).astype(np.float32)
            for lab, base in ((own, 0.6), (alt, 0.2)):
                det_boxes.append(noisy)
                det_labels.append(np.full(n_frames, lab))
                det_scores.append((base + 0.4 * rng.random(n_frames)).astype(np.float32))
                det_frames.append(fr)
        for _ in range(n_people):  # false tubes
            s = int(rng.integers(0, n_frames - 20))
            t = np.zeros((20, 6), np.float32)
            t[:, 0] = fr[s:s + 20]
            xy = rng.uniform(0, 600, 2)
            t[:, 1:5] = [xy[0], xy[1], xy[0] + 50, xy[1] + 120]
            vdets[int(rng.integers(N_LABELS))].append((v, np.float32(rng.random() * 0.5), t))
        gttubes[v] = tubes
        B, L = np.concatenate(det_boxes), np.concatenate(det_labels)
        S, F = np.concatenate(det_scores), np.concatenate(det_frames)
        frame_rows.append(np.c_[np.full(len(B), iv), F, L, S, B].astype(np.float32))
        order = np.lexsort((L, F))
        B, L, S, F = B[order], L[order], S[order], F[order]
        for f in range(1, n_frames + 1):
            per_frame[f] = {}
        brk = np.flatnonzero(np.r_[True, (F[1:] != F[:-1]) | (L[1:] != L[:-1])])
        for a, b in zip(brk, np.r_[brk[1:], len(F)]):
            per_frame[int(F[a])][int(L[a])] = np.c_[B[a:b], S[a:b]].astype(np.float32)
        moc[v] = per_frame
    gt = {"labels": labels, "train_videos": [[]], "test_videos": [vids], "nframes": {v: n_frames for v in vids},
          "resolution": {v: (480, 854) for v in vids}, "gttubes": gttubes}
    return gt, np.concatenate(frame_rows), vdets, moc


def tps_data(n_videos: int, n_frames: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    states = ["none", "bend", "unbend", "step_on", "kick", "jump", "turn", "raise"]
    gp, pp, gv, pv = {}, {}, {}, {}
    for v in range(n_videos):
        name = f"video_{v:05d}"
        gf, pf = {}, {}
        people = [(rng.uniform(0, 500, 2), rng.uniform(60, 150), rng.uniform(150, 300)) for _ in range(int(rng.integers(1, 4)))]
        for f in range(n_frames):
            gh, ph = [], []
            for xy, w, h in people:
                x, y = xy + rng.normal(0, 2, 2) * f / 10
                box = [round(float(x), 2), round(float(y), 2), round(float(x + w), 2), round(float(y + h), 2)]
                parts = {}
                for k, part in enumerate(PARTS):
                    if rng.random() < 0.9:
                        px, py = x + w * (k % 3) / 3, y + h * (k // 3) / 4
                        pb = [round(float(px), 2), round(float(py), 2), round(float(px + w / 3), 2), round(float(py + h / 4), 2)]
                        parts[part] = {"number": k + 1, "box": pb, "verb": [states[int(rng.integers(len(states)))]], "name": part}
                gh.append({"number": len(gh) + 1, "box": box, "parts": parts})
                if rng.random() < 0.9:
                    pparts = {}
                    for part, gpart in parts.items():
                        if rng.random() < 0.95:
                            verb = gpart["verb"] if rng.random() < 0.7 else [states[int(rng.integers(len(states)))]]
                            pparts[part] = {"number": gpart["number"], "name": part, "verb": verb,
                                            "box": [round(float(c + rng.normal(0, 3)), 2) for c in gpart["box"]]}
                    ph.append({"number": len(ph) + 1, "box": [round(float(c + rng.normal(0, 6)), 2) for c in box],
                               "parts": pparts})
            if rng.random() < 0.3:
                x, y = rng.uniform(0, 500, 2)
                ph.append({"number": len(ph) + 1, "box": [float(x), float(y), float(x + 80), float(y + 200)], "parts": {}})
            fname = f"img_{5 * f + 1:05d}.json"
            gf[fname] = {"humans": gh}
            if rng.random() < 0.97:
                pf[fname] = {"humans": ph}
        gp[name], pp[name] = gf, pf
        gv[name] = f"class_{int(rng.integers(24))}"
        pv[name] = gv[name] if rng.random() < 0.8 else "class_x"
    return gv, gp, pv, pp


# ------------------------------------------------------------------------------------ runs
def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def bench_tps(n_videos: int):
    import json
    import tempfile

    import gc

    gv, gp, pv, pp = tps_data(n_videos)
    n_parts = sum(len(h["parts"]) for fr in gp.values() for x in fr.values() for h in x["humans"])
    opts = TPS.TPSOptions(check_limits=False)
    size = f"{n_videos} videos, {n_parts} GT parts"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, obj in (("gt_vid", gv), ("gt_part", gp), ("pred_vid", pv), ("pred_part", pp)):
            paths[name] = Path(tmp) / f"{name}_result.json"
            with open(paths[name], "w") as fh:
                json.dump(obj, fh)
        mb = sum(p.stat().st_size for p in paths.values()) / 1e6
        # both file-route timings start from the state a scoring run starts from: no loaded dicts
        # held by this process (millions of objects that every cyclic-GC pass would walk)
        del gv, gp, pv, pp
        gc.collect()

        def official_from_files():
            loaded = {}
            for name, path in paths.items():
                with open(path) as fh:
                    loaded[name] = json.load(fh)
            return R.tps_score(loaded["gt_vid"], loaded["gt_part"], loaded["pred_vid"], loaded["pred_part"])

        (area_f, psc_f), t_ref_f = timed(official_from_files)
        small = Path(tmp) / "warm.json"
        small.write_text(json.dumps({"v": {"f": {"humans": []}}}))
        TPS.evaluate_files({"v": "a"}, small, {"v": "a"}, small, opts)  # compiled / loaded from the cache
        res_f, t_ours_f = timed(TPS.evaluate_files, paths["gt_vid"], paths["gt_part"], paths["pred_vid"],
                                paths["pred_part"], opts)
        rows.append((f"Kinetics-TPS score, from the files ({mb:.0f} MB)", size, t_ref_f, t_ours_f,
                     res_f.route == "bytes" and res_f.area == area_f and res_f.psc.tolist() == psc_f,
                     f"{res_f.score:.6f}"))
        loaded = []
        for name in ("gt_vid", "gt_part", "pred_vid", "pred_part"):
            with open(paths[name]) as fh:
                loaded.append(json.load(fh))
        gv, gp, pv, pp = loaded
    (area_ref, psc_ref), t_ref = timed(R.tps_score, gv, gp, pv, pp)
    res, t_ours = timed(TPS.evaluate, gv, gp, pv, pp, opts)
    same = res.area == area_ref and res.psc.tolist() == psc_ref
    rows.append(("Kinetics-TPS score, from loaded JSON", size, t_ref, t_ours, same, f"{res.score:.6f}"))
    # the array core alone: the two files flattened beforehand (actparse.metrics.tps.prepare)
    inp, t_prep = timed(TPS.prepare, gp, pp, list(gv))

    def core():
        psc = TPS.psc_from_inputs(inp, opts)
        correct = np.array([gv[v] == pv[v] for v in gv])
        return TPS.curve_area(TPS.accuracy_curve(psc, correct)[1]), psc

    (area, psc), t_core = timed(core)
    rows.append((f"  same, on flattened arrays (flatten {t_prep:.2f}s)", size, t_ref, t_core,
                 area == area_ref and psc.tolist() == psc_ref, ""))

    # not a metric: the least any scorer of the loaded dicts does (read each part's box and state
    # once, both files); its "speed-up" is the most any implementation can reach on dict inputs
    def touch():
        for src in (gp, pp):
            parts = [p for fr in src.values() for x in fr.values() for h in x["humans"] for p in h["parts"].values()]
            np.fromiter(chain.from_iterable(map(itemgetter("box"), parts)), np.float64)
            list(map(itemgetter("verb"), parts))

    t_touch = timed(touch)[1]
    rows.append(("  (bound: only read every part once)", size, t_ref, t_touch, True, "not a metric"))
    return rows


def bench_multisports(gt, fdets, vdets):
    rows = []
    with np.errstate(all="ignore"):
        (ref_f, _), t_ref = timed(R.ms_frame_ap, gt, fdets, 0.5)
        res, t_ours = timed(MS.frame_ap, gt, fdets, 0.5)
    rows.append(("MultiSports frame-mAP@0.5", f"{len(fdets)} boxes", t_ref, t_ours, res.map == ref_f, f"{res.map:.2f}"))
    ths = [0.2, 0.5] + [0.1 + 0.1 * i for i in range(9)]
    with np.errstate(all="ignore"):
        t0 = time.perf_counter()
        ref = {t: R.ms_video_ap(gt, vdets, t)[0] for t in ths}
        t_ref = time.perf_counter() - t0
        res, t_ours = timed(MS.video_ap, gt, vdets, ths)
    same = all(res[t].map == ref[t] for t in ths)
    n_tubes = sum(len(v) for v in vdets.values())
    rows.append(("MultiSports video-mAP @0.2, @0.5, 0.1:0.9", f"{n_tubes} tubes, 11 thresholds", t_ref, t_ours, same,
                 f"{res[0.2].map:.2f} / {res[0.5].map:.2f}"))
    one = timed(MS.video_ap, gt, vdets, [0.5])[1]
    t0 = time.perf_counter()
    with np.errstate(all="ignore"):
        R.ms_video_ap(gt, vdets, 0.5)
    rows.append(("MultiSports video-mAP @0.5 alone", f"{n_tubes} tubes", time.perf_counter() - t0, one, True, ""))
    return rows


def bench_link(moc: dict, p: LinkParams):
    t0 = time.perf_counter()
    ref = {}
    n_boxes = 0
    for v, per in moc.items():
        frames = sorted(per)
        labs = sorted({lab for f in frames for lab in per[f]})
        remap = {lab: i for i, lab in enumerate(labs)}  # only labels present (the official code loops over all)
        vd = {f: {remap[lab]: a.copy() for lab, a in per[f].items()} for f in frames}
        n_boxes += sum(len(a) for f in frames for a in per[f].values())
        with np.errstate(all="ignore"):
            res = R.moc_build_tubes(vd, frames, len(labs), p.nms_iou, p.top_k, p.link_iou, p.min_score, p.min_length, p.k)
        for i, tubes in res.items():
            if p.tube_nms_iou:
                tubes = [tubes[j] for j in R.moc_nms3dt(tubes, p.tube_nms_iou)]
            ref.setdefault(labs[i], []).extend((v, s, o) for o, s in tubes)
    t_ref = time.perf_counter() - t0
    with np.errstate(all="ignore"):
        mine, t_ours = timed(link_moc_layout, moc, N_LABELS, p)
    same = True
    for lab in range(N_LABELS):
        a, b = ref.get(lab, []), mine.get(lab, [])
        if len(a) != len(b) or any(v1 != v2 or s1 != s2 or not np.array_equal(o1, o2)
                                   for (v1, s1, o1), (v2, s2, o2) in zip(a, b)):
            same = False
    n_tubes = sum(len(v) for v in mine.values())
    return [("MOC tube linking (+ nms3dt)", f"{n_boxes} boxes -> {n_tubes} tubes", t_ref, t_ours, same, "")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the videos (default 1 = the issue's sizes)")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--people", type=int, default=10)
    ap.add_argument("--only", default="tps,multisports,link")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    rows = []
    if "tps" in only:
        rows += bench_tps(max(1, round(900 * args.scale)))
    if only & {"multisports", "link"}:
        gt, fdets, vdets, moc = multisports_data(max(1, round(500 * args.scale)), args.frames, args.people)
        if "multisports" in only:
            rows += bench_multisports(gt, fdets, vdets)
        if "link" in only:
            rows += bench_link(moc, LinkParams())
    print(f"{'task':<42} {'size':<40} {'loop s':>9} {'ours s':>8} {'speed-up':>9}  identical  value")
    for name, size, tr, to, same, val in rows:
        print(f"{name:<42} {size:<40} {tr:>9.2f} {to:>8.3f} {tr / to:>8.1f}x  {str(same):<9}  {val}")
    return 0 if all(r[4] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
