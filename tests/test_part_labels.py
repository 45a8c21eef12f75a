"""Part-label conversion (seed 001 sec 1.3), the most-frequent-state baseline and part_states mapping."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from _params import overlaid
from actparse.constants import PARTS
from actparse.part_labels import (assign_part_states, baseline_states, class_lists, gt_parts, group_states,
                                  make_label, most_frequent, split_label, video_labels)
from actparse.paths import Paths
from actparse.schemas import from_rows, read_df, write_table

NP = len(PARTS)


def gt_row(video, frame, person, states: dict[str, str] | None = None, hidden=(), action="waving"):
    st = ["none"] * NP
    for part, s in (states or {}).items():
        st[PARTS.index(part)] = s
    vis = [p not in hidden for p in PARTS]
    boxes = np.concatenate([[10 + j, 20 + frame, 14 + j, 26 + frame] for j in range(NP)]).astype(np.float32)
    return {"video": video, "frame": frame, "person": person, "box": [0, 0, 50, 80],
            "keypoints": [0.0] * 51, "part_boxes": boxes.tolist(), "part_visible": vis,
            "part_states": st, "action": action}


def test_make_and_split_label_with_underscores():
    lab = make_label("raising_arms", "leg", "step_on")
    assert lab == "raising_arms_leg_step_on"
    assert split_label(lab, "leg") == ("raising_arms", "step_on")
    assert split_label("turning_head_head_nod", "head") == ("turning_head", "nod")
    with pytest.raises(ValueError, match="not of the form"):
        split_label("waving_arm_raise", "leg")


def test_most_frequent_ties_are_alphabetical():
    assert most_frequent({"wave": 3, "none": 3, "clap": 1}) == "none"
    assert most_frequent({"wave": 4, "none": 3}) == "wave"
    assert most_frequent({}) == "none"


def test_group_states_counts_sampled_visible_frames_only():
    rows = []
    # Sampled frames 0, 5, 10: left hand waves on 0 and 5, both hands "none" on 10.
    # Frames 1-4 (not sampled) say "clap" everywhere and must not count.
    for f in range(12):
        if f % 5 == 0:
            st = {"left_hand": "wave"} if f < 10 else {}
        else:
            st = {p: "clap" for p in ("left_hand", "right_hand")}
        rows.append(gt_row("v", f, 0, st))
    df = pd.DataFrame(rows)
    states = group_states(df)
    # hand group over sampled frames: wave x2, none x4 -> none
    assert states["hand"] == "none"
    # hide the right hand everywhere: wave x2 vs none x1 -> wave
    rows2 = [gt_row("v", r["frame"], 0, dict(zip(PARTS, r["part_states"])), hidden=("right_hand",)) for r in rows]
    assert group_states(pd.DataFrame(rows2))["hand"] == "wave"
    # two more persons whose arms "raise" on every sampled frame decide the arm group (12 vs 6)
    rows3 = rows + [gt_row("v", f, p, {"left_arm": "raise", "right_arm": "raise"}) for f in (0, 5, 10) for p in (1, 2)]
    assert group_states(pd.DataFrame(rows3))["arm"] == "raise"


def test_group_states_falls_back_to_invisible_entries():
    rows = [gt_row("v", f, 0, {"head": "nod"}, hidden=("head",)) for f in (0, 5)]
    assert group_states(pd.DataFrame(rows))["head"] == "nod"


def test_video_labels_has_action_and_six_groups():
    rows = [gt_row("v", f, 0, {"left_leg": "kick", "right_leg": "kick", "left_foot": "kick"}) for f in (0, 5, 10)]
    labels = video_labels("kicking", pd.DataFrame(rows))
    assert labels["action"] == ("kicking", None)
    assert labels["leg"] == ("kicking_leg_kick", "kick")
    # feet: kick x3 vs none x3 -> tie -> alphabetical "kick"
    assert labels["foot"] == ("kicking_foot_kick", "kick")
    assert labels["head"] == ("kicking_head_none", "none")
    assert set(labels) == {"action", "head", "hand", "arm", "hip", "leg", "foot"}


def test_baseline_states_per_action_and_part():
    rows = [gt_row("a", f, 0, {"left_hand": "wave"}) for f in (0, 5, 10)]
    rows += [gt_row("b", f, 0, {"left_hand": "none", "hip": "bend"}) for f in (0, 5)]
    rows += [gt_row("c", f, 0, {"left_hand": "clap"}) for f in (0, 5, 10)]  # not in the given videos
    base = baseline_states(pd.DataFrame(rows), {"a": "waving", "b": "waving"})
    assert set(base) == {"waving"}
    assert base["waving"]["left_hand"] == "wave"  # 3 wave vs 2 none
    assert base["waving"]["hip"] == "none"  # 3 none vs 2 bend
    assert set(base["waving"]) == set(PARTS)


def _write_data_root(root, videos, gt_rows):
    droot = root / "artifacts" / "synth"
    droot.mkdir(parents=True)
    write_table(from_rows(videos, "videos"), droot / "videos.parquet", "videos")
    write_table(from_rows(gt_rows, "gt_persons"), droot / "gt_persons.parquet", "gt_persons")
    return droot


def _video(name, split, action):
    return {"video": name, "path": f"videos/{name}.mp4", "split": split, "action": action,
            "n_frames": 11, "fps": 25.0, "width": 160, "height": 120}


def test_part_labels_stage_end_to_end(tmp_path):
    from stages import part_labels

    videos = [_video("tr1", "train", "waving"), _video("tr2", "train", "kicking"),
              _video("te1", "test", "waving"), _video("te2", "test", "waving"), _video("nogt", "train", "waving")]
    gt = []
    gt += [gt_row("tr1", f, 0, {"left_hand": "wave", "right_hand": "wave"}) for f in (0, 5, 10)]
    gt += [gt_row("tr2", f, 0, {"left_leg": "kick", "right_leg": "kick"}, action="kicking") for f in (0, 5, 10)]
    gt += [gt_row("te1", f, 0, {"left_hand": "wave", "right_hand": "wave"}) for f in (0, 5, 10)]
    gt += [gt_row("te2", f, 0, {"left_hand": "punch", "right_hand": "punch"}) for f in (0, 5, 10)]
    _write_data_root(tmp_path, videos, gt)
    part_labels.run(overlaid({"data": {"root": "artifacts/synth"}}), tmp_path)

    paths = Paths(tmp_path)
    labels = read_df(paths.part_labels / "labels.parquet", "part_labels")
    assert len(labels) == 4 * 7
    lab = labels.set_index(["video", "task"])
    assert lab.loc[("tr1", "hand"), "label"] == "waving_hand_wave"
    assert lab.loc[("tr2", "leg"), "label"] == "kicking_leg_kick"
    assert lab.loc[("te2", "hand"), "label"] == "waving_hand_punch"  # unseen in train, kept
    assert lab.loc[("te2", "hand"), "split"] == "test"
    assert pd.isna(lab.loc[("tr1", "action"), "state"]) and lab.loc[("tr1", "hand"), "state"] == "wave"
    classes = json.loads((paths.part_labels / "classes.json").read_text())
    assert list(classes) == ["action", "head", "hand", "arm", "hip", "leg", "foot"]
    assert classes["action"] == ["kicking", "waving"]
    assert classes["hand"] == ["kicking_hand_none", "waving_hand_wave"]  # train only, sorted
    assert classes == class_lists(labels, "train")
    base = json.loads((paths.part_labels / "baseline.json").read_text())
    assert base["waving"]["left_hand"] == "wave" and base["kicking"]["right_leg"] == "kick"
    skips = read_df(paths.skips / "part_labels.parquet", "skips")
    assert skips["video"].tolist() == ["nogt"] and "ground-truth" in skips["error"][0]


def _preds(rows):
    out = []
    for video, task, label, score in rows:
        out.append({"video": video, "task": task, "model": "ensemble", "label": label, "score": score,
                    "probs": [score, 1 - score]})
        out.append({"video": video, "task": task, "model": "ip", "label": "WRONG_" + task + "_x", "score": 0.9,
                    "probs": [0.9, 0.1]})
    return pd.DataFrame(out)


def _parts(rows):
    return pd.DataFrame([{"video": v, "frame": f, "person": p, "part": part,
                          "box": np.array([1, 2, 3, 4], np.float32), "score": s} for v, f, p, part, s in rows])


def test_assign_part_states_video_label_mode():
    preds = _preds([("v", "hand", "waving_hand_wave", 0.8), ("v", "leg", "waving_leg_step_on", 0.5),
                    ("v", "action", "waving", 0.9)])
    parts = _parts([("v", 0, 0, "left_hand", 0.5), ("v", 5, 1, "right_leg", 1.0), ("w", 0, 0, "head", 0.9)])
    out, dropped = assign_part_states(parts, preds, "video_label")
    assert dropped == ["w"]
    assert out["state"].tolist() == ["wave", "step_on"]
    np.testing.assert_allclose(out["score"], [0.4, 0.5])
    assert out["person"].tolist() == [0, 1] and out["frame"].tolist() == [0, 5]


def test_assign_part_states_baseline_mode():
    preds = _preds([("v", "action", "kicking", 0.6), ("v", "leg", "waving_leg_none", 0.9)])
    parts = _parts([("v", 0, 0, "left_leg", 0.5), ("v", 0, 0, "head", 1.0)])
    base = {"kicking": {p: ("kick" if p.endswith("leg") else "none") for p in PARTS}}
    out, dropped = assign_part_states(parts, preds, "baseline", base)
    assert dropped == []
    assert out["state"].tolist() == ["kick", "none"]
    np.testing.assert_allclose(out["score"], [0.3, 0.6])
    with pytest.raises(ValueError, match="unknown part-state mode"):
        assign_part_states(parts, preds, "frame_label")


def test_part_states_stage_with_detected_and_gt_parts(tmp_path):
    from stages import part_states

    videos = [_video("v1", "test", "waving")]
    gt = [gt_row("v1", f, 3, {"left_hand": "wave"}, hidden=("hip",)) for f in range(0, 11)]
    _write_data_root(tmp_path, videos, gt)
    paths = Paths(tmp_path)
    preds = _preds([("v1", g, f"waving_{g}_{'wave' if g == 'hand' else 'none'}", 0.7)
                    for g in ("head", "hand", "arm", "hip", "leg", "foot")] + [("v1", "action", "waving", 0.9)])
    preds["probs"] = [list(p) for p in preds["probs"]]
    write_table(from_rows(preds.to_dict("records"), "video_predictions"), paths.video_predictions, "video_predictions")
    write_table(from_rows(_parts([("v1", 0, 0, "right_hand", 0.5)]).assign(
        box=lambda d: d["box"].map(list)).to_dict("records"), "parts"), paths.parts, "parts")

    part_states.run(overlaid({"part_labels": {"mode": "video_label", "parts_source": "detected"}}), tmp_path)
    out = read_df(paths.part_states, "part_states")
    assert out["state"].tolist() == ["wave"] and out["score"][0] == pytest.approx(0.35)

    part_states.run(overlaid({"data": {"root": "artifacts/synth"},
                              "part_labels": {"mode": "video_label", "parts_source": "gt"}}), tmp_path)
    out = read_df(paths.part_states, "part_states")
    # GT frames 0, 5, 10; 9 visible parts each (hip hidden)
    assert len(out) == 3 * 9 and sorted(set(out["frame"])) == [0, 5, 10]
    assert set(out.loc[out["part"].str.endswith("hand"), "state"]) == {"wave"}
    assert set(out.loc[~out["part"].str.endswith("hand"), "state"]) == {"none"}
    assert (out["person"] == 3).all()
    np.testing.assert_allclose(out.loc[out["part"] == "left_hand", "box"].iloc[0], [13, 20, 17, 26])
    assert len(gt_parts(pd.DataFrame(gt))) == 27
