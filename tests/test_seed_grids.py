"""actparse ablate --system 003|004|000: the seed systems' grids, their tables and seed intervals."""

import math

import pytest
from scipy import stats

from actparse import ablation as A
from actparse import seed_grids as G


def test_lookup_follows_dotted_paths_and_keys_with_dots():
    m = {"frame_map@0.5": 12.5, "phase1": {"frame_map@0.5": 10.0}, "model": {"top1": 70.0, "per_group": {"arm": 5}},
         "enabled": True}
    assert G.lookup(m, "frame_map@0.5") == 12.5
    assert G.lookup(m, "phase1.frame_map@0.5") == 10.0
    assert G.lookup(m, "model.per_group.arm") == 5
    assert G.lookup(m, "model.top5") is None and G.lookup(m, "enabled") is None  # absent; not a number
    assert G.lookup(m, "zero") == 0.0


def test_seed_interval_is_the_t_interval():
    diffs = [1.0, 2.0, 4.0]
    lo, hi = G.seed_interval(diffs)
    mean, sd = 7 / 3, math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)  # 4.303 * sd / sqrt(3)
    assert (lo, hi) == pytest.approx((mean - half, mean + half))
    assert G.seed_interval([3.0]) is None


def _run(row, seed, metrics):
    return {"row": row, "seed": seed, "metrics": metrics}


def test_partattn_table_and_directions_over_seeds():
    grid = G.GRIDS["000"]
    res = {}
    for seed, (crops, action, roi, att, prior) in enumerate([(70, 80, 80.5, 82, 81), (71, 81, 80, 82.5, 81),
                                                             (69, 80, 81, 83, 81)]):
        res[f"partattn-crops-seed{seed}"] = _run("partattn-crops", seed, {"model": {"top1": crops}})
        res[f"partattn-action-seed{seed}"] = _run("partattn-action", seed, {"model": {"top1": action}})
        res[f"partattn-roi-seed{seed}"] = _run("partattn-roi", seed, {"model": {"top1": roi}})
        res[f"partattn-attention-seed{seed}"] = _run("partattn-attention", seed,
                                                     {"model": {"top1": att}, "prior": {"top1": prior}})
    lines = G.table(grid, res).splitlines()
    assert "| part crops | 70.0 ±1.0 | 72.4 |" in lines
    assert "| prior: most frequent train state per (action, part) | 81.0 ±0.0 |  |" in lines
    d = G.directions(grid, res)
    assert d[0].startswith("- action info helps (000): Δ 10.3 [") and d[0].endswith("(t over seeds, 3 seeds): holds")
    assert d[1].endswith("(t over seeds, 3 seeds): ties")  # RoI pooling: +0.5, -1.0, +1.0
    assert d[2].endswith(": holds") and d[3].endswith(": holds")


def test_one_seed_has_no_interval_and_missing_rows_are_left_out():
    grid = G.GRIDS["004"]
    res = {"gym-joint": {"metrics": {"single": {"element": {"top1": 4.5, "mean_class": 2.2}},
                                     "joint": {"element": {"top1": 6.8, "mean_class": 3.9}}}}}
    d = G.directions(grid, res)
    assert d == ["- joint beats single pathways in element top-1 (004 Table 2): Δ 2.3 (one run, no interval)",
                 "- joint beats single pathways in element mean-class (004 Table 2): Δ 1.7 (one run, no interval)"]
    assert G.directions(G.GRIDS["003"], res) == []
    assert "| joint (1:2:4 loss) | - | - | - | - | 6.8 | 3.9 |  |" in G.table(grid, res)


def test_cli_runs_a_grid_dry_and_writes_its_table_between_its_markers(tmp_path, capsys):
    assert A.main(["--system", "003", "--dry-run", "--seeds", "0", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 6 and "--name stad-pcca-96-seed1" in out[-1] and "-S stad.short_side=96" in out[-1]
    with pytest.raises(SystemExit):
        A.main(["--system", "003", "--rows", "partattn-crops", "--dry-run"])  # not a row of this grid
    store = tmp_path / "metrics" / "ablation_004.json"
    store.parent.mkdir()
    store.write_text('{"gym-joint": {"metrics": {"joint": {"event": {"top1": 40.0}}}}}')
    doc = tmp_path / "seeds.md"
    doc.write_text("a\n<!-- ablation-004:start -->\nold\n<!-- ablation-004:end -->\nb\n")
    assert A.main(["--system", "004", "--table-only", "--root", str(tmp_path), "--readme", str(doc)]) == 0
    text = doc.read_text()
    assert "old" not in text and "| joint (1:2:4 loss) | 40.0 |" in text and text.endswith("end -->\nb\n")


def _write_counts(root, name, rows):
    """A run's kept records: metrics/ablation_records/<name>/video_counts.parquet."""
    import pandas as pd

    from actparse.schemas import from_columns, write_table

    folder = root / "metrics" / "ablation_records" / name
    folder.mkdir(parents=True)
    df = pd.DataFrame(rows, columns=["video", "key", "cls", "hits", "n"])
    write_table(from_columns(df.to_dict("list"), "video_counts"), folder / "video_counts.parquet", "video_counts")
    return (folder.relative_to(root)).as_posix()


def test_records_give_bootstrap_intervals_over_videos_and_seeds(tmp_path):
    """With per-video counts kept for each run, every cell gets a bootstrap interval and each direction
    the paired interval over test videos and seeds: a clear gain holds, an equal row ties."""
    grid = G.GRIDS["000"]
    videos = [f"v{i:03d}" for i in range(60)]
    res = {}
    for seed in range(3):
        for row, right in (("partattn-crops", 30), ("partattn-action", 48), ("partattn-roi", 48),
                           ("partattn-attention", 50)):
            name = f"{row}-seed{seed}"
            # per video 4 parts scored; the row gets `right` videos fully right (+ the seed shifts one video)
            r = right + (seed - 1)
            rows = [(v, "model", "arm", 4 if i < r else 0, 4) for i, v in enumerate(videos)]
            rows += [(v, "prior", "arm", 2, 4) for v in videos]
            rec = _write_counts(tmp_path, name, rows)
            res[name] = {"row": row, "seed": seed, "records": rec,
                         "metrics": {"model": {"top1": 100 * r / 60}, "prior": {"top1": 50.0}}}
    text = G.render(grid, res, tmp_path)
    crops = next(l for l in text.splitlines() if l.startswith("| part crops |"))
    assert crops.startswith("| part crops | 50.0 ±1.7 [") and crops.endswith("] | 72.4 |")
    lo, hi = (float(x) for x in crops.split("[")[1].split("]")[0].split(", "))
    assert lo < 50.0 < hi and hi - lo > 15  # 60 videos, all-or-nothing: a wide interval
    d = {x.split(":")[0]: x for x in G.directions(grid, res, tmp_path)}
    assert d["- action info helps (000)"].endswith("(bootstrap over videos and seeds, 3 seeds): holds")
    assert d["- RoI pooling helps (000)"].startswith("- RoI pooling helps (000): Δ 0.0 [0.0, 0.0]")
    assert d["- RoI pooling helps (000)"].endswith(": ties")
    assert d["- the full model beats the prior"].endswith(": holds")
    summ = G.summary(grid, res, tmp_path)
    crops = summ["lines"]["partattn-crops.model"]
    assert crops["label"] == "part crops" and crops["top1"]["mean"] == pytest.approx(50.0)
    assert crops["top1"]["lo"] == pytest.approx(lo, abs=0.05)
    assert summ["directions"]["action info helps"]["verdict"] == "holds"
    assert summ["directions"]["action info helps"]["interval"] == "bootstrap over videos and seeds"
    # a run without records falls back to the t-interval over seeds
    res["partattn-crops-seed0"]["records"] = None
    assert G.directions(grid, res, tmp_path)[0].endswith("(t over seeds, 3 seeds): holds")


def test_grids_run_their_own_seed_and_stages_and_keep_their_counts(tmp_path, capsys):
    """A grid's experiments vary the system's own seed (not the default pipeline's), reproduce only the
    grid's stages, use the 200-video test split unless told otherwise, and keep the counts file."""
    assert A.main(["--system", "000", "--rows", "partattn-crops", "--seeds", "1", "--dry-run"]) == 0
    cmd = capsys.readouterr().out.split("$ ")[1].split()
    assert "partattn.seed=1" in cmd and "seed=1" not in cmd and "synth.n_test=200" in cmd
    assert cmd[-1] == "partattn_predict"
    assert A.main(["--system", "004", "--seeds", "0", "--dry-run", "--test-videos", "0"]) == 0
    out = capsys.readouterr().out
    assert "synth.n_test" not in out and out.split()[-1] == "gym_evaluate"
    assert A.main(["--system", "004", "--dry-run", "--set", "synth.n_test=300"]) == 0
    assert "-S synth.n_test=300 gym_evaluate" in capsys.readouterr().out
    src = tmp_path / "video_counts.parquet"
    src.write_bytes(b"PAR1 data")
    assert A._keep_records(src, tmp_path / "kept" / "run-seed0")
    assert (tmp_path / "kept" / "run-seed0" / "video_counts.parquet").read_bytes() == b"PAR1 data"
    assert not A._keep_records(tmp_path / "absent.parquet", tmp_path / "kept" / "x")


def test_system_seed_falls_back_to_the_top_level_seed():
    from actparse.params import ParamError, system_seed

    assert system_seed({"seed": 3, "gym": {"seed": None}}, "gym") == 3
    assert system_seed({"seed": 3, "gym": {"seed": 7}}, "gym") == 7
    with pytest.raises(ParamError, match="gym.seed"):
        system_seed({"seed": 3, "gym": {"seed": "7"}}, "gym")


def test_stad_frame_records_give_frame_map_intervals(tmp_path):
    """Seed 003: each run's frame-AP records give back its frame-mAP, an interval, and a paired delta;
    a row against itself ties with a zero-width interval; the tail-class gain is bootstrapped too."""
    import sys

    import numpy as np

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_metrics_multisports import random_case

    from actparse.metrics import multisports as M
    from stages.stad_evaluate import write_frame_records

    grid = G.GRIDS["003"]
    res = {}
    for seed in range(2):
        for row, case in (("stad-linear", 10 + seed), ("stad-pcca", 20 + seed)):
            gt, dets, _ = random_case(case, n_videos=8)
            gt["test_videos"] = [[f"s/v{i}" for i in range(8)]]
            final, phase1 = {}, {}
            fmap = M.frame_ap(gt, dets, 0.5, records=final).map
            keep = dets[::2]
            p1 = M.frame_ap(gt, keep, 0.5, records=phase1).map
            name = f"{row}-seed{seed}"
            folder = tmp_path / "metrics" / "ablation_records" / name
            write_frame_records(folder, {"frame_map@0.5": final, "phase1.frame_map@0.5": phase1})
            labels = list(gt["labels"])
            res[name] = {"row": row, "seed": seed, "records": f"metrics/ablation_records/{name}",
                         "metrics": {"frame_map@0.5": fmap, "phase1": {"frame_map@0.5": p1},
                                     "decoupled_gain": {"tail_classes": 1.0},
                                     "per_class_frame_ap": {c: {} for c in labels}}}
    iv = G.Intervals(grid, res, tmp_path)
    point, reps = iv.replicates("stad-linear", "frame_map@0.5")
    assert point == pytest.approx(np.mean([res[f"stad-linear-seed{s}"]["metrics"]["frame_map@0.5"] for s in (0, 1)]))
    lo, hi = iv.interval("stad-linear", "frame_map@0.5")
    assert lo < point < hi
    assert iv.delta(("stad-pcca", "frame_map@0.5"), ("stad-pcca", "frame_map@0.5")) == (0.0, 0.0, 0.0)
    d = iv.delta(("stad-linear", "frame_map@0.5"), ("stad-pcca", "frame_map@0.5"))
    assert d[1] <= d[0] <= d[2]
    tail = iv.delta(("stad-pcca", "zero"), ("stad-pcca", "decoupled_gain.tail_classes"))
    assert tail is not None and tail[1] <= tail[2]
    lines = G.directions(grid, res, tmp_path)
    assert lines[0].startswith("- PCCA beats the Linear head in frame-mAP (003: +10.45): Δ ")
    assert "(bootstrap over videos and seeds, 2 seeds)" in lines[0] and "(bootstrap over videos" in lines[1]
    assert "| PCCA, phase 1 |" in G.table(grid, res, tmp_path)
