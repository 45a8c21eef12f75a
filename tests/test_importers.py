"""Importers of the official data sets: synth -> official layout -> import -> the same tables, traps, bad files."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _params import overlaid
from actparse.__main__ import main
from actparse.constants import ACTIONS, NUM_PARTS, TPS_SAMPLING
from actparse.dataset import load_videos, video_path
from actparse.formats import multisports_ground_truth, read_pickle, tps_ground_truth
from actparse.importers import run_import
from actparse.importers.export import export_finegym, export_kinetics_tps, export_multisports
from actparse.schemas import read_df
from actparse.synth import SynthConfig, generate

TINY = dict(seed=3, n_train=3, n_test=2, width=96, height=72, fps=25, min_seconds=1.0, max_seconds=1.3,
            max_people=3, occluder_prob=0.5, workers=1)
VIDEO_COLS = ["video", "split", "n_frames", "fps", "width", "height"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(SynthConfig.from_params(overlaid({"synth": TINY})), out, progress=False)
    return out


def _tables(root: Path):
    videos = read_df(root / "videos.parquet", "videos").sort_values("video").reset_index(drop=True)
    gp = root / "gt_persons.parquet"
    gt = read_df(gp, "gt_persons") if gp.exists() else None
    return videos, gt


def _cli(argv, capsys) -> tuple[int, str]:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


def _import_ok(dataset, src, out, capsys, *extra) -> dict:
    rc, err = _cli(["import", dataset, str(src), "--out", str(out), *extra], capsys)
    assert rc == 0, err
    return json.loads((out / "import_info.json").read_text())


def _check_videos(synth: Path, out: Path, action: bool = True):
    sv, _ = _tables(synth)
    iv, _ = _tables(out)
    pd.testing.assert_frame_equal(sv[VIDEO_COLS], iv[VIDEO_COLS])
    if action:
        assert iv["action"].tolist() == sv["action"].tolist()
    for s, i in zip(sv.itertuples(), iv.itertuples()):  # the same bytes, not re-encoded
        assert video_path(out, i.path).read_bytes() == video_path(synth, s.path).read_bytes()


def _assert_fail(argv, capsys, *must_contain) -> str:
    rc, err = _cli(argv, capsys)
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    for s in must_contain:
        assert s in err, (s, err)
    return err


# ---------------------------------------------------------------------------------------- Kinetics-TPS
@pytest.mark.parametrize("shape", ["named", "list"])
def test_kinetics_tps_round_trip(synth, tmp_path, capsys, shape):
    src = export_kinetics_tps(synth, tmp_path / "src", shape=shape)
    assert (src / "train_annotations").is_dir() and (src / "list" / "train.txt").is_file()
    # the doubled <video>/<video> folder and frames numbered from 1
    one = next((src / "train_annotations").glob("*/*/*/img_00001.json"))
    assert one.parent.name == one.parent.parent.name
    info = _import_ok("kinetics-tps", src, tmp_path / "root", capsys)
    out = tmp_path / "root"
    assert info["skipped"] == 0 and info["keypoints"] is False
    _check_videos(synth, out)
    sv, sg = _tables(synth)
    _, ig = _tables(out)
    keys = ["video", "frame", "person"]
    want = sg[sg["frame"] % TPS_SAMPLING == 0].sort_values(keys).reset_index(drop=True)
    got = ig.sort_values(keys).reset_index(drop=True)
    assert len(got) == len(want) > 0
    pd.testing.assert_frame_equal(got[keys], want[keys])
    assert np.array_equal(np.stack(got["box"]), np.stack(want["box"]))
    vis = np.stack(want["part_visible"])
    assert np.array_equal(np.stack(got["part_visible"]), vis)
    pb_w = np.stack(want["part_boxes"]).reshape(-1, NUM_PARTS, 4)
    pb_g = np.stack(got["part_boxes"]).reshape(-1, NUM_PARTS, 4)
    assert np.array_equal(pb_g[vis], pb_w[vis]) and not pb_g[~vis].any()
    st_w, st_g = np.stack(want["part_states"]), np.stack(got["part_states"])
    assert (st_g[vis] == st_w[vis]).all() and (st_g[~vis] == "none").all()
    assert got["keypoints"].isna().all()  # Kinetics-TPS has no keypoints: null, not zeros
    actions = dict(zip(sv["video"], sv["action"]))
    assert (got["action"] == got["video"].map(actions)).all()
    # the official-evaluation ground truth equals the one the pipeline derives from the synthetic set
    for split in ("train", "test"):
        part, vid = tps_ground_truth(sg, sv, split)
        assert json.loads((out / "annotations/tps" / split / "gt_part_result.json").read_text()) == part
        assert json.loads((out / "annotations/tps" / split / "gt_vid_result.json").read_text()) == vid
    assert (out / "annotations/kinetics_tps/list/test.txt").read_text() == (src / "list/test.txt").read_text()


def test_kinetics_tps_missing_video_is_a_recorded_skip(synth, tmp_path, capsys):
    src = export_kinetics_tps(synth, tmp_path / "src")
    gone = next((src / "test_videos").glob("*/*.mp4"))
    gone.unlink()
    info = _import_ok("kinetics-tps", src, tmp_path / "root", capsys)
    assert info["skipped"] == 1 and info["videos"] == 4
    skips = read_df(tmp_path / "root/skips.parquet", "skips")
    assert skips["video"].tolist() == [gone.stem] and skips["stage"].tolist() == ["import"]
    assert "not found" in skips["error"][0]
    videos, gt = _tables(tmp_path / "root")
    assert gone.stem not in set(videos["video"]) and gone.stem not in set(gt["video"])


def _frame_json(src: Path) -> Path:
    return sorted(p for p in (src / "train_annotations").glob("*/*/*/img_*.json")
                  if json.loads(p.read_text())["humans"])[0]


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["humans"][0].pop("box"), "humans[0].box"),
    (lambda d: d["humans"][0].__setitem__("parts", 5), "humans[0].parts"),
    (lambda d: d["humans"][0]["parts"].__setitem__("tail", {"box": [0, 0, 1, 1], "verb": ["x"]}), "humans[0].parts.tail"),
    (lambda d: d["humans"][0]["parts"]["head"].__setitem__("box", [1, 2, "x", 4]), "humans[0].parts.head.box"),
    (lambda d: d["humans"][0]["parts"]["head"].pop("verb"), "humans[0].parts.head.verb"),
    (lambda d: d.pop("humans"), "humans"),
])
def test_kinetics_tps_malformed_json(synth, tmp_path, capsys, edit, field):
    src = export_kinetics_tps(synth, tmp_path / "src")
    p = _frame_json(src)
    data = json.loads(p.read_text())
    data["humans"][0]["parts"].setdefault("head", {"box": [1, 1, 2, 2], "verb": ["none"]})
    edit(data)
    p.write_text(json.dumps(data))
    _assert_fail(["import", "kinetics-tps", str(src), "--out", str(tmp_path / "root")], capsys, str(p), repr(field))
    assert not (tmp_path / "root").exists()  # nothing half-written left behind


def test_kinetics_tps_bad_json_and_list_shape_field(synth, tmp_path, capsys):
    src = export_kinetics_tps(synth, tmp_path / "src", shape="list")
    p = _frame_json(src)
    data = json.loads(p.read_text())
    data["humans"][0]["parts"][0].pop("obj_bbox")
    p.write_text(json.dumps(data))
    _assert_fail(["import", "kinetics-tps", str(src), "--out", str(tmp_path / "r1")], capsys, str(p),
                 "'humans[0].parts[0].obj_bbox'")
    p.write_text(json.dumps(data)[:-7])
    _assert_fail(["import", "kinetics-tps", str(src), "--out", str(tmp_path / "r2")], capsys, str(p), "not valid JSON")


# ---------------------------------------------------------------------------------------- MultiSports
def test_multisports_round_trip(synth, tmp_path, capsys):
    src = export_multisports(synth, tmp_path / "src")
    gt_pkl = read_pickle(src / "trainval/multisports_GT.pkl")
    assert isinstance(gt_pkl["train_videos"][0], list)  # lists of lists, as the official file
    info = _import_ok("multisports", src, tmp_path / "root", capsys)
    out = tmp_path / "root"
    assert info["parts"] is False and info["skipped"] == 0
    _check_videos(synth, out)  # every tiny video has tubes: its label = its action
    _, sg = _tables(synth)
    iv, ig = _tables(out)
    want = sg[sg["action"] != "none"]
    key = lambda d: sorted(zip(d["video"], d["frame"], d["action"], (tuple(b) for b in d["box"])))  # noqa: E731
    assert key(ig) == key(want) and len(ig) > 0
    assert not ig.duplicated(["video", "frame", "person"]).any()
    for col in ("keypoints", "part_boxes", "part_visible", "part_states"):
        assert ig[col].isna().all(), col  # no keypoints, no parts: null
    # the official file is kept as is, and the tables give its tubes back
    assert (out / "annotations/multisports_gt.pkl").read_bytes() == (src / "trainval/multisports_GT.pkl").read_bytes()
    again = multisports_ground_truth(ig, iv, list(ACTIONS))["gttubes"]
    for v, tubes in gt_pkl["gttubes"].items():
        for lab, lst in tubes.items():
            a = sorted((t.tolist() for t in lst))
            b = sorted((t.tolist() for t in again[v][lab]))
            assert a == b, (v, lab)


def test_multisports_traps_list_of_lists_val_split_spaces(synth, tmp_path, capsys):
    """Keys "<sport>/<video>", test_videos = the validation split, label names with spaces."""
    sv, _ = _tables(synth)
    src = tmp_path / "src"
    names = {}
    for i, r in enumerate(sv.itertuples()):
        key = f"aerobic_gymnastics/v_clip{i}_c00{i}"
        names[key] = r
        (src / "trainval/aerobic_gymnastics").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(video_path(synth, r.path), src / "trainval" / f"{key}.mp4")
    keys = sorted(names)
    tube = np.array([[1, 1, 2, 30, 40], [2, 1, 2, 30, 41]], np.float32)
    gt = {"labels": ["aerobic kick jump", "basketball save"], "train_videos": [keys[:3]], "test_videos": [keys[3:]],
          "nframes": {k: int(names[k].n_frames) for k in keys}, "resolution": {k: (72, 96) for k in keys},
          "gttubes": {keys[0]: {0: [tube], 1: [tube + [[2, 0, 0, 0, 0]] * 2]}, keys[3]: {1: [tube]}}}
    with open(src / "trainval/multisports_GT.pkl", "wb") as fh:
        pickle.dump(gt, fh)
    _import_ok("multisports", src, tmp_path / "root", capsys)
    videos, g = _tables(tmp_path / "root")
    split = dict(zip(videos["video"], videos["split"]))
    assert [split[k] for k in keys] == ["train"] * 3 + ["test"] * 2  # test_videos (validation) -> our test
    assert set(g["action"]) == {"aerobic kick jump", "basketball save"}  # spaces kept
    assert videos.set_index("video").loc[keys[0], "path"] == f"trainval/{keys[0]}.mp4"
    assert sorted(g.loc[g["video"] == keys[0], "person"].unique()) == [0, 1]


def test_multisports_missing_video_and_malformed(synth, tmp_path, capsys):
    src = export_multisports(synth, tmp_path / "src")
    gone = sorted((src / "trainval").glob("*.mp4"))[0]
    gone.unlink()
    info = _import_ok("multisports", src, tmp_path / "root", capsys)
    assert info["skipped"] == 1
    assert read_df(tmp_path / "root/skips.parquet", "skips")["video"].tolist() == [gone.stem]
    pkl = src / "trainval/multisports_GT.pkl"
    good = read_pickle(pkl)
    bad = dict(good)
    del bad["gttubes"]
    with open(pkl, "wb") as fh:
        pickle.dump(bad, fh)
    _assert_fail(["import", "multisports", str(src), "--out", str(tmp_path / "r1")], capsys, str(pkl), "'gttubes'")
    bad = dict(good, gttubes={"synth_00001": {1: [[[1, 2, 3]]]}})
    with open(pkl, "wb") as fh:
        pickle.dump(bad, fh)
    _assert_fail(["import", "multisports", str(src), "--out", str(tmp_path / "r2")], capsys, str(pkl),
                 "gttubes['synth_00001'][1][0]")
    bad = dict(good, train_videos="synth_00001")
    with open(pkl, "wb") as fh:
        pickle.dump(bad, fh)
    _assert_fail(["import", "multisports", str(src), "--out", str(tmp_path / "r3")], capsys, str(pkl), "'train_videos'")
    pkl.write_bytes(b"not a pickle at all")
    _assert_fail(["import", "multisports", str(src), "--out", str(tmp_path / "r4")], capsys, str(pkl))


# ---------------------------------------------------------------------------------------- FineGym
def _synth_elements(synth: Path) -> pd.DataFrame:
    fg = synth / "annotations/finegym"
    info = json.loads((fg / "finegym_annotation_info.json").read_text())
    rows = []
    for split, name in (("train", "gym_train_element.txt"), ("test", "gym_val_element.txt")):
        for line in (fg / name).read_text().splitlines():
            cid, lab = line.split()
            head, seg = cid.rsplit("_A_", 1)
            video, ev = head.split("_E_", 1)
            e = info[video]["E_" + ev]
            s = e["segments"]["A_" + seg]["timestamps"]
            rows.append((cid, video, split, e["timestamps"][0][0] + s[0][0], e["timestamps"][0][0] + s[-1][1], int(lab)))
    return pd.DataFrame(rows, columns=["clip", "video", "split", "start", "end", "label"]).sort_values("clip")


def test_finegym_round_trip(synth, tmp_path, capsys):
    src = export_finegym(synth, tmp_path / "src")
    info = _import_ok("finegym", src, tmp_path / "root", capsys)
    out = tmp_path / "root"
    assert info["boxes"] is False and not (out / "gt_persons.parquet").exists()
    want = _synth_elements(synth)
    got = read_df(out / "gym_elements.parquet", "gym_elements").sort_values("clip")
    assert got["clip"].tolist() == want["clip"].tolist() and len(got) > 0
    assert got["split"].tolist() == want["split"].tolist() and got["label"].tolist() == want["label"].tolist()
    assert np.allclose(got["start"], want["start"], atol=1e-5) and np.allclose(got["end"], want["end"], atol=1e-5)
    listed = set(want["video"])
    sv, _ = _tables(synth)
    sv = sv[sv["video"].isin(listed)].reset_index(drop=True)
    iv, _ = _tables(out)
    pd.testing.assert_frame_equal(iv[VIDEO_COLS], sv[VIDEO_COLS])
    assert iv["action"].isna().all()
    # the gym stages' reader takes the copied files as they are
    from actparse.gym import load_annotations

    hier, clips = load_annotations(out / "annotations/finegym", dict(zip(iv["video"], iv["fps"])))
    by = {c.clip: c for c in clips}
    for r in got.itertuples():
        c = by[r.clip]
        assert (c.video, c.split, c.label) == (r.video, r.split, r.label)
        assert abs(c.start - r.start) < 1e-5 and abs(c.end - r.end) < 1e-5


def test_finegym_per_element_splits_and_event_relative_times(synth, tmp_path, capsys):
    src = export_finegym(synth, tmp_path / "src")
    ann = src / "annotations"
    train = (ann / "gym21_train_element_v1.0.txt").read_text().splitlines()
    assert train, "the tiny set has train elements"
    moved = train[0]  # one element of a train video (and event) goes to val: FineGym's per-element split
    (ann / "gym21_train_element_v1.0.txt").write_text("".join(x + "\n" for x in train[1:]))
    with open(ann / "gym21_val_element.txt", "a") as fh:
        fh.write(moved + "\n")
    info_p = ann / "finegym_annotation_info_v1.0.json"
    info = json.loads(info_p.read_text())
    cid = moved.split()[0]
    head, seg = cid.rsplit("_A_", 1)
    video, ev = head.split("_E_", 1)
    event = info[video]["E_" + ev]
    event["segments"]["A_" + seg] = {"stages": 2, "timestamps": [[0.04, 0.2], [0.24, 0.4]]}  # relative to the event
    info_p.write_text(json.dumps(info))
    _import_ok("finegym", src, tmp_path / "root", capsys)
    el = read_df(tmp_path / "root/gym_elements.parquet", "gym_elements").set_index("clip")
    ev0 = event["timestamps"][0][0]
    assert el.loc[cid, "split"] == "test"
    assert abs(el.loc[cid, "start"] - (ev0 + 0.04)) < 1e-5 and abs(el.loc[cid, "end"] - (ev0 + 0.4)) < 1e-5
    videos, _ = _tables(tmp_path / "root")
    assert videos.set_index("video").loc[video, "split"] == "test"  # a video with a val element is not trained on
    assert set(el.loc[el["video"] == video, "split"]) == {"train", "test"}  # one video, elements in both
    from actparse.gym import load_annotations  # the gym stages read the same split and times

    clip = {c.clip: c for c in load_annotations(tmp_path / "root/annotations/finegym",
                                                dict(zip(videos["video"], videos["fps"])))[1]}[cid]
    assert clip.split == "test" and abs(clip.start - (ev0 + 0.04)) < 1e-5 and abs(clip.end - (ev0 + 0.4)) < 1e-5

    # only the event clip downloaded (mmaction2's events/<video>_E_...mp4): times relative to the clip
    full = src / "videos" / f"{video}.mp4"
    (src / "events").mkdir()
    shutil.move(full, src / "events" / f"{video}_E_{ev}.mp4")
    _import_ok("finegym", src, tmp_path / "root2", capsys)
    el2 = read_df(tmp_path / "root2/gym_elements.parquet", "gym_elements").set_index("clip")
    assert el2.loc[cid, "video"] == f"{video}_E_{ev}"
    assert abs(el2.loc[cid, "start"] - 0.04) < 1e-5 and abs(el2.loc[cid, "end"] - 0.4) < 1e-5


def test_finegym_missing_video_and_malformed(synth, tmp_path, capsys):
    src = export_finegym(synth, tmp_path / "src")
    ann = src / "annotations"
    line = (ann / "gym21_train_element_v1.0.txt").read_text().splitlines()[0]
    video = line.split()[0].split("_E_")[0]
    (src / "videos" / f"{video}.mp4").unlink()
    info = _import_ok("finegym", src, tmp_path / "root", capsys)
    assert info["skipped"] == 1
    assert read_df(tmp_path / "root/skips.parquet", "skips")["video"].tolist() == [video]
    kept = (tmp_path / "root/annotations/finegym/gym21_train_element.txt").read_text()
    assert video + "_E_" not in kept  # the stages' lists hold imported videos only

    info_p = ann / "finegym_annotation_info_v1.0.json"
    good = info_p.read_text()
    data = json.loads(good)
    cid = line.split()[0]
    head, seg = cid.rsplit("_A_", 1)
    v, ev = head.split("_E_", 1)
    del data[v]["E_" + ev]["segments"]
    info_p.write_text(json.dumps(data))
    _assert_fail(["import", "finegym", str(src), "--out", str(tmp_path / "r1")], capsys, str(info_p),
                 f"'{v}.E_{ev}.segments'")
    data = json.loads(good)
    data[v]["E_" + ev]["timestamps"] = [["a", 1.0]]
    info_p.write_text(json.dumps(data))
    _assert_fail(["import", "finegym", str(src), "--out", str(tmp_path / "r2")], capsys, str(info_p),
                 f"'{v}.E_{ev}.timestamps[0]'")
    info_p.write_text(good[:-3])
    _assert_fail(["import", "finegym", str(src), "--out", str(tmp_path / "r3")], capsys, str(info_p), "not valid JSON")
    info_p.write_text(good)
    lp = ann / "gym21_val_element.txt"
    lp.write_text("this is not an element line\n")
    _assert_fail(["import", "finegym", str(src), "--out", str(tmp_path / "r4")], capsys, str(lp), "'line 1'")


# ---------------------------------------------------------------------------------------- videos, --out
def test_video_modes_and_out_folder(synth, tmp_path, capsys):
    src = export_multisports(synth, tmp_path / "src")
    for mode in ("copy", "hardlink", "reference"):
        out = tmp_path / mode
        run_import("multisports", src, out, videos=mode)
        videos = load_videos(out).to_pandas()
        for r in videos.itertuples():
            p = video_path(out, r.path)
            assert Path(r.path).is_absolute() == (mode == "reference")
            assert not p.is_symlink() and p.read_bytes() == (src / "trainval" / f"{r.video}.mp4").read_bytes()
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    _assert_fail(["import", "multisports", str(src), "--out", str(keep)], capsys, "not empty")
    _assert_fail(["import", "multisports", str(src), "--out", str(keep), "--force"], capsys, "not an earlier import")
    assert (keep / "notes.txt").read_text() == "mine"
    rc, err = _cli(["import", "multisports", str(src), "--out", str(tmp_path / "copy"), "--force"], capsys)
    assert rc == 0, err


def test_kinetics_tps_unlabelled_test_videos(synth, tmp_path, capsys):
    """The challenge's test split: test_videos/<video>.mp4 without class folders nor annotations."""
    src = export_kinetics_tps(synth, tmp_path / "src")
    shutil.rmtree(src / "test_annotations")
    shutil.rmtree(src / "list")
    for p in list((src / "test_videos").glob("*/*.mp4")):
        shutil.move(p, src / "test_videos" / p.name)
    info = _import_ok("kinetics-tps", src, tmp_path / "root", capsys)
    videos, gt = _tables(tmp_path / "root")
    test = videos[videos["split"] == "test"]
    assert info["test"] == len(test) == 2 and test["action"].isna().all()
    assert not set(test["video"]) & set(gt["video"])
    assert not (tmp_path / "root/annotations/tps/test").exists()
    assert (tmp_path / "root/annotations/tps/train/gt_part_result.json").exists()


def test_gt_persons_schema_takes_missing_keypoints_and_parts():
    """Null keypoints / part columns mean "not annotated"; a null box is still an error."""
    from actparse.schemas import SchemaError, from_columns

    row = {"video": ["v"], "frame": [0], "person": [0], "box": [[0, 0, 1, 1]], "keypoints": [None],
           "part_boxes": [None], "part_visible": [None], "part_states": [None], "action": ["a b"]}
    t = from_columns(row, "gt_persons")
    assert t.column("keypoints").null_count == 1 and t.column("part_boxes").null_count == 1
    with pytest.raises(SchemaError, match="box"):
        from_columns(dict(row, box=[None]), "gt_persons")


def test_kinetics_tps_duplicate_video_name(synth, tmp_path, capsys):
    src = export_kinetics_tps(synth, tmp_path / "src")
    p = next((src / "train_videos").glob("*/*.mp4"))
    (src / "train_videos/other_class").mkdir()
    shutil.copyfile(p, src / "train_videos/other_class" / p.name)
    _assert_fail(["import", "kinetics-tps", str(src), "--out", str(tmp_path / "root")], capsys, p.name, "also")
