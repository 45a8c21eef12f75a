"""Converters between Parquet artifacts and the official formats: round trips and layouts."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from actparse.constants import ACTIONS, PARTS
from actparse.formats import (frame_detections_array, frame_detections_table, multisports_ground_truth,
                              multisports_gt_on_frames, read_pickle, tps_ground_truth, tps_part_result,
                              tps_part_result_tables, tps_vid_result, tps_vid_result_table, tubes_to_video_detections,
                              video_detections_to_tubes, write_pickle)
from actparse.schemas import from_columns, read_df, validate

sys.path.insert(0, str(Path(__file__).parent))
from _fakes import make_ground_truth, make_predictions  # noqa: E402


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmt")
    make_ground_truth(root, n_videos=4, n_frames=21)
    make_predictions(root, jitter=1.5, wrong_states=0.3, seed=3)
    return root


def _sorted(df, keys):
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def test_tps_part_result_round_trip(fake):
    persons = read_df(fake / "artifacts" / "refined_persons.parquet", "keypoints")[["video", "frame", "person", "box", "score"]]
    states = read_df(fake / "artifacts" / "part_states.parquet", "part_states")
    sub = tps_part_result(persons, states)
    # official layout: img_00001.json, img_00006.json ... humans with parts {box: one box, verb: [state]}
    v = next(iter(sub))
    assert list(sub[v])[:2] == ["img_00001.json", "img_00006.json"]
    h = sub[v]["img_00001.json"]["humans"][0]
    part = next(iter(h["parts"].values()))
    assert len(part["box"]) == 4 and isinstance(part["verb"], list) and len(part["verb"]) == 1
    json.dumps(sub)  # plain JSON types only
    p2, s2 = tps_part_result_tables(json.loads(json.dumps(sub)))
    keys = ["video", "frame", "person"]
    a, b = _sorted(persons, keys), _sorted(p2.to_pandas(), keys)
    assert a[keys].equals(b[keys])
    np.testing.assert_array_equal(np.stack(a["box"]), np.stack(b["box"]))
    np.testing.assert_array_equal(a["score"].to_numpy(np.float32), b["score"].to_numpy(np.float32))
    keys = ["video", "frame", "person", "part"]
    a, b = _sorted(states, keys), _sorted(s2.to_pandas(), keys)
    assert a[keys + ["state"]].equals(b[keys + ["state"]])
    np.testing.assert_array_equal(np.stack(a["box"]), np.stack(b["box"]))
    # string verbs when the ground truth uses strings
    sub_s = tps_part_result(persons, states, verb_as_list=False)
    assert isinstance(next(iter(sub_s[v]["img_00001.json"]["humans"][0]["parts"].values()))["verb"], str)


def test_tps_part_result_limits_and_frames():
    persons = pd.DataFrame({"video": ["v"] * 12 + ["v"], "frame": [0] * 12 + [3], "person": list(range(12)) + [0],
                            "box": [np.zeros(4, np.float32)] * 13, "score": np.linspace(1, 0.1, 13)})
    sub = tps_part_result(persons, None, frames={"v": range(0, 11)})
    assert list(sub["v"]) == ["img_00001.json", "img_00006.json", "img_00011.json"]  # frame 3 is not sampled
    assert len(sub["v"]["img_00001.json"]["humans"]) == 10 and sub["v"]["img_00006.json"]["humans"] == []


def test_tps_vid_result_round_trip():
    vp = tps_vid_result_table({"a": "run", "b": "jump"})
    assert tps_vid_result(vp) == {"a": "run", "b": "jump"}


def test_tps_ground_truth_from_gt_persons(fake):
    gt = pd.read_parquet(fake / "artifacts" / "synth" / "gt_persons.parquet")
    videos = pd.read_parquet(fake / "artifacts" / "synth" / "videos.parquet")
    part, vid = tps_ground_truth(gt, videos, "test", verb_as_list=True)
    test = sorted(videos.loc[videos["split"] == "test", "video"])
    assert sorted(part) == sorted(vid) == test
    assert list(part[test[0]]) == [f"img_{i:05d}.json" for i in (1, 6, 11, 16, 21)]
    g = gt[(gt["video"] == test[0]) & (gt["frame"] == 15)].sort_values("person")
    humans = part[test[0]]["img_00016.json"]["humans"]
    assert len(humans) == len(g)
    vis = np.asarray(g["part_visible"].iloc[0])
    assert list(humans[0]["parts"]) == [p for p, v in zip(PARTS, vis) if v]
    assert humans[0]["parts"]["head"]["verb"] == [g["part_states"].iloc[0][0]]


def test_multisports_ground_truth_tubes(fake):
    gt = pd.read_parquet(fake / "artifacts" / "synth" / "gt_persons.parquet")
    videos = pd.read_parquet(fake / "artifacts" / "synth" / "videos.parquet")
    ms = multisports_ground_truth(gt, videos, list(ACTIONS))
    assert ms["test_videos"] == [sorted(videos.loc[videos["split"] == "test", "video"])]
    for v, tubes in ms["gttubes"].items():
        for lab, lst in tubes.items():
            for t in lst:
                assert t.dtype == np.float32 and t.shape[1] == 5 and (np.diff(t[:, 0]) == 1).all()
                g = gt[(gt["video"] == v) & (gt["frame"] == int(t[0, 0]) - 1)]
                assert ACTIONS[lab] in set(g["action"])
    # one tube per person (each fake person does one action from its start frame on)
    n_tubes = sum(len(lst) for tubes in ms["gttubes"].values() for lst in tubes.values())
    assert n_tubes == gt.groupby(["video", "person"]).ngroups
    on = multisports_gt_on_frames(ms, 5)
    frames = np.concatenate([t[:, 0] for tubes in on["gttubes"].values() for lst in tubes.values() for t in lst])
    assert ((frames - 1) % 5 == 0).all()


def test_frame_detections_round_trip():
    rng = np.random.default_rng(0)
    arr = np.zeros((30, 8), np.float32)
    arr[:, 0] = rng.integers(0, 3, 30)
    arr[:, 1] = rng.integers(1, 40, 30)
    arr[:, 2] = rng.integers(0, 4, 30)
    arr[:, 3] = rng.random(30)
    arr[:, 4:8] = rng.uniform(0, 100, (30, 4))
    vlist, labels = ["a", "b", "c"], ["w", "x", "y", "z"]
    table = frame_detections_table(arr, vlist, labels)
    validate(table, "action_detections")
    back = frame_detections_array(table, vlist, labels)
    np.testing.assert_array_equal(back, arr)
    # unknown videos / labels are dropped, not mis-indexed
    assert len(frame_detections_array(table, ["a"], labels)) == int((arr[:, 0] == 0).sum())


def test_tubes_video_detections_round_trip(tmp_path):
    rows = []
    for v in ("v1", "v0"):
        for t, lab in enumerate(("x", "y", "x")):
            for f in range(3 + t, 9 + t):
                rows.append({"video": v, "tube": t, "label": lab, "tube_score": 0.5 + 0.1 * t, "frame": f,
                             "box": np.array([f, 1, f + 10, 20], np.float32), "score": 0.3})
    table = from_columns({k: [r[k] for r in rows] for k in rows[0]}, "tubes")
    vd = tubes_to_video_detections(table, ["x", "y", "z"])
    assert set(vd) == {0, 1, 2} and len(vd[0]) == 4 and len(vd[1]) == 2 and vd[2] == []
    v, score, tube = vd[1][0]
    assert tube.shape == (6, 6) and tube[0, 0] == 5  # 1-based frames
    path = tmp_path / "video_detections.pkl"
    write_pickle(vd, path)
    back = video_detections_to_tubes(read_pickle(path), ["x", "y", "z"]).to_pandas()
    assert len(back) == len(table)
    again = tubes_to_video_detections(back, ["x", "y", "z"])
    for lab in vd:
        assert [(a, float(b)) for a, b, _ in vd[lab]] == [(a, float(b)) for a, b, _ in again[lab]]
        for (_, _, t1), (_, _, t2) in zip(vd[lab], again[lab]):
            np.testing.assert_array_equal(t1, t2)


def test_read_pickle_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_pickle(tmp_path / "nope.pkl")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="bad.pkl"):
        read_pickle(bad)
    write_pickle({"a": 1}, tmp_path / "ok.pkl")
    assert pickle.loads((tmp_path / "ok.pkl").read_bytes()) == {"a": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
