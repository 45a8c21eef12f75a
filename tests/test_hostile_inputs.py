"""Hostile and odd inputs: every one gets one clear error line naming the file and the problem (exit
code 2 from the CLI and the stages), never a traceback, and never a lost or half-written artifact;
edge inputs the official evaluation code accepts are scored as it scores them.

Sections: Kinetics-TPS files, MultiSports files, MOC pkl, FineGym predictions, metrics JSON,
Parquet artifacts, disk full, official-code edge inputs.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from actparse import atomic, schemas
from actparse.__main__ import main
from actparse.cli import stage_main
from actparse.formats import write_pickle
from actparse.metrics import multisports as M
from actparse.metrics import tps as T
from actparse.metrics import tps_scan as S
import oracles as R

sys.path.insert(0, str(Path(__file__).parent))
from _fakes import make_ground_truth, make_predictions  # noqa: E402
from _params import overlaid, write_params  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def one_line(err: str, *needles: str) -> str:
    """``err`` is exactly one line, no traceback, holding every needle."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def cli(capsys, *argv) -> str:
    """Run ``actparse argv`` in-process; it must exit 2 with one error line; return that line."""
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    return one_line(out.err, "actparse: error:")


# ======================================================================= Kinetics-TPS files
BOX = [10.0, 10.0, 50.0, 90.0]


def human(box=BOX, parts=None):
    parts = parts if parts is not None else {"head": ([20, 10, 30, 20], ["turn"]), "hip": ([15, 40, 45, 60], ["bend"])}
    return {"box": list(box), "parts": {n: {"box": list(b), "verb": v} for n, (b, v) in parts.items()}}


def tps_case():
    gp = {"a": {"img_00001.json": {"humans": [human()]}, "img_00006.json": {"humans": [human()]}},
          "b": {"img_00001.json": {"humans": [human()]}}}
    gv = {"a": "run", "b": "jump"}
    return gv, gp


def write_json(path: Path, obj=None, text=None) -> Path:
    path.write_text(text if text is not None else json.dumps(obj))
    return path


@pytest.fixture()
def tps_files(tmp_path):
    gv, gp = tps_case()
    gt = tmp_path / "gt"
    gt.mkdir()
    write_json(gt / "gt_part_result.json", gp)
    write_json(gt / "gt_vid_result.json", gv)
    parts = write_json(tmp_path / "pred_part_result.json", gp)
    vids = write_json(tmp_path / "pred_vid_result.json", gv)
    return gt, parts, vids


class TestKineticsTPSFiles:
    def test_valid_files_score(self, tps_files, capsys):
        gt, parts, vids = tps_files
        assert main(["eval", "tps", "--gt", str(gt), "--parts", str(parts), "--videos", str(vids)]) == 0
        assert json.loads(capsys.readouterr().out)["tps_score"] == 0.9999

    def test_part_file_as_a_top_level_list(self, tps_files, capsys):
        gt, parts, vids = tps_files
        write_json(parts, [json.loads(parts.read_text())])
        one_line(cli(capsys, "eval", "tps", "--gt", gt, "--parts", parts, "--videos", vids),
                 str(parts), "top level is a list")
        write_json(gt / "gt_part_result.json", [])
        one_line(cli(capsys, "eval", "tps", "--gt", gt, "--parts", parts, "--videos", vids),
                 str(gt / "gt_part_result.json"), "top level is a list")

    def test_video_that_is_not_an_object_of_frames(self, tps_files, capsys):
        gt, parts, vids = tps_files
        write_json(parts, {"a": [], "b": {}})
        one_line(cli(capsys, "eval", "tps", "--gt", gt, "--parts", parts, "--videos", vids),
                 str(parts), "video 'a' is a list")

    def test_human_without_box(self, tps_files, capsys):
        gt, parts, vids = tps_files
        _, gp = tps_case()
        del gp["a"]["img_00006.json"]["humans"][0]["box"]
        write_json(parts, gp)
        one_line(cli(capsys, "eval", "tps", "--gt", gt, "--parts", parts, "--videos", vids),
                 str(parts), "video 'a' frame 'img_00006.json' human 0 has no 'box'")
        with pytest.raises(ValueError, match="prediction: video 'a' frame 'img_00006.json' human 0 has no 'box'"):
            T.evaluate(tps_case()[0], tps_case()[1], tps_case()[0], gp)

    @pytest.mark.parametrize("where", ["frame", "humans", "part"])
    def test_other_missing_or_wrong_fields_are_named(self, tps_files, capsys, where):
        gt, parts, vids = tps_files
        _, gp = tps_case()
        fr = gp["b"]["img_00001.json"]
        if where == "frame":
            gp["b"]["img_00001.json"] = "not a frame"
            want = "video 'b' frame 'img_00001.json' has no 'humans'"
        elif where == "humans":
            fr["humans"] = {"0": human()}
            want = "'humans' is an object, not a list"
        else:
            del fr["humans"][0]["parts"]["hip"]["verb"]
            want = "human 0 part 'hip' has no 'verb'"
        write_json(parts, gp)
        one_line(cli(capsys, "eval", "tps", "--gt", gt, "--parts", parts, "--videos", vids), str(parts), want)

    def test_hundred_thousand_deep_nesting(self, tps_files, capsys):
        gt, parts, vids = tps_files
        write_json(parts, text="[" * 100_000 + "]" * 100_000)
        one_line(cli(capsys, "eval", "tps", "--gt", gt, "--parts", parts, "--videos", vids),
                 str(parts), "nested too deeply")
        write_json(vids, text='{"a": ' * 100_000 + "1" + "}" * 100_000)
        one_line(cli(capsys, "eval", "tps", "--gt", gt, "--parts", gt / "gt_part_result.json", "--videos", vids),
                 str(vids), "nested too deeply")

    def test_video_classes_as_a_list(self, tps_files, capsys):
        gt, parts, vids = tps_files
        write_json(vids, ["a", "b"])
        one_line(cli(capsys, "eval", "tps", "--gt", gt, "--parts", parts, "--videos", vids),
                 str(vids), "predicted video classes", "top level is a list")
        write_json(vids, tps_case()[0])
        write_json(gt / "gt_vid_result.json", [["a", "run"]])
        one_line(cli(capsys, "eval", "tps", "--gt", gt, "--parts", parts, "--videos", vids),
                 str(gt / "gt_vid_result.json"), "ground-truth video classes", "top level is a list")

    def test_the_dict_api_refuses_them_too(self):
        gv, gp = tps_case()
        with pytest.raises(ValueError, match="predicted video classes: .*top level is a list"):
            T.evaluate(gv, gp, ["a"], gp)
        with pytest.raises(ValueError, match="prediction: not a part-result object"):
            T.evaluate(gv, gp, gv, [gp])
        with pytest.raises(ValueError, match="ground truth: video 'a' is a string"):
            T.evaluate(gv, {"a": "x", "b": {}}, gv, gp)


PARAMS = {"data": {"root": "artifacts/synth"}}


@pytest.fixture()
def stage_root(tmp_path):
    """A small data root with official-format annotations and GT-derived predictions; tubes linked."""
    from stages import link_tubes

    make_ground_truth(tmp_path, n_videos=4, n_frames=30)
    make_predictions(tmp_path, jitter=1.0)
    params = tmp_path / "params.yaml"
    write_params(params, PARAMS)
    link_tubes.run(overlaid(PARAMS), tmp_path)
    return tmp_path, params


def run_evaluate(capsys, root: Path, params: Path) -> tuple[int, str]:
    from stages import evaluate

    capsys.readouterr()
    rc = evaluate.main(["--params", str(params), "--root", str(root)])
    return rc, capsys.readouterr().err


class TestEvaluateStageGroundTruth:
    def test_gt_vid_result_as_a_list_and_a_multisports_gt_without_labels(self, stage_root, capsys):
        root, params = stage_root
        ann = root / "artifacts" / "synth" / "annotations"
        gv = ann / "tps" / "test" / "gt_vid_result.json"
        good = gv.read_text()
        write_json(gv, list(json.loads(good).items()))
        rc, err = run_evaluate(capsys, root, params)
        assert rc == 2
        one_line(err, "evaluate: error:", str(gv), "top level is a list")
        assert not (root / "metrics" / "metrics.json").exists()

        gv.write_text(good)
        gp = ann / "tps" / "test" / "gt_part_result.json"
        part = json.loads(gp.read_text())
        v = next(iter(part))
        part[v] = [part[v]]
        good_part = gp.read_text()
        write_json(gp, part)
        rc, err = run_evaluate(capsys, root, params)
        assert rc == 2
        one_line(err, str(gp), f"video {v!r} is a list")

        gp.write_text(good_part)
        ms = ann / "multisports_gt.pkl"
        gt = pickle.loads(ms.read_bytes())
        del gt["labels"]
        ms.write_bytes(pickle.dumps(gt))
        rc, err = run_evaluate(capsys, root, params)
        assert rc == 2
        one_line(err, str(ms), "no 'labels'")


# ======================================================================= MultiSports files
def ms_tube(frames, box=(0, 0, 10, 10)):
    f = np.asarray(list(frames), np.float32)
    out = np.zeros((len(f), 5), np.float32)
    out[:, 0] = f
    out[:, 1:5] = box
    return out


def ms_gt(gttubes, labels=("a", "b"), test=None):
    vids = sorted(gttubes) if test is None else test
    return {"labels": list(labels), "train_videos": [[]], "test_videos": [vids], "nframes": {v: 50 for v in gttubes},
            "resolution": {v: (120, 160) for v in gttubes}, "gttubes": gttubes}


def dump(path: Path, obj) -> Path:
    path.write_bytes(pickle.dumps(obj))
    return path


@pytest.fixture()
def ms_files(tmp_path):
    gt = ms_gt({"v0": {0: [ms_tube(range(1, 6))]}, "v1": {1: [ms_tube(range(3, 9), (5, 5, 20, 20))]}})
    fd = np.array([[0, f, 0, 0.9, 0, 0, 10, 10] for f in range(1, 6)], np.float32)
    vd = {0: [("v0", 0.9, np.c_[ms_tube(range(1, 6)), np.ones(5)])], 1: []}
    return tmp_path, gt, dump(tmp_path / "fd.pkl", fd), dump(tmp_path / "vd.pkl", vd)


class TestMultiSportsFiles:
    def test_valid_files_score(self, ms_files, capsys):
        d, gt, fd, vd = ms_files
        assert main(["eval", "multisports", "--gt", str(dump(d / "gt.pkl", gt)), "--dets", str(fd), "--dets", str(vd)]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["frame_map@0.5"] == out["video_map@0.5"] == 50.0  # label b: ground truth, no detection

    @pytest.mark.parametrize("key", ["labels", "test_videos"])
    def test_ground_truth_without_a_key(self, ms_files, capsys, key):
        d, gt, fd, vd = ms_files
        del gt[key]
        g = dump(d / "gt.pkl", gt)
        one_line(cli(capsys, "eval", "multisports", "--gt", g, "--dets", fd), str(g), f"no {key!r}")

    def test_missing_test_video(self, ms_files, capsys):
        d, gt, fd, vd = ms_files
        gt["test_videos"] = [["v0", "v1", "v9"]]
        g = dump(d / "gt.pkl", gt)
        one_line(cli(capsys, "eval", "multisports", "--gt", g, "--dets", fd, "--dets", vd), str(g), "'v9'",
                 "not in 'gttubes'")
        with pytest.raises(KeyError):  # what the official code does with it
            R.ms_frame_ap(gt, pickle.loads(fd.read_bytes()), 0.5)

    @pytest.mark.parametrize("bad, want", [("abc", "gttubes['v0'][0] is a str, not a list of tubes"),
                                           (["abc"], "gttubes['v0'][0][0] is not an (n, 5) numeric array"),
                                           ([[[1, 2, 3]]], "gttubes['v0'][0][0] is not an (n, 5) numeric array"),
                                           ([[[1, 0, 0, 1, 1], [2, 0, 0]]], "gttubes['v0'][0][0] is not")])
    def test_tubes_that_are_not_arrays(self, ms_files, capsys, bad, want):
        d, gt, fd, vd = ms_files
        gt["gttubes"]["v0"][0] = bad
        g = dump(d / "gt.pkl", gt)
        one_line(cli(capsys, "eval", "multisports", "--gt", g, "--dets", fd), str(g), want)

    def test_gttubes_of_a_video_not_a_dict(self, ms_files, capsys):
        d, gt, fd, vd = ms_files
        gt["gttubes"]["v1"] = [ms_tube([1])]
        g = dump(d / "gt.pkl", gt)
        one_line(cli(capsys, "eval", "multisports", "--gt", g, "--dets", fd), str(g), "gttubes['v1'] is a list")

    @pytest.mark.parametrize("dets, want", [
        ({0: [("v0", 0.9, "tube")]}, "detection of 'v0': a tube must be an (n>=1, 5+) numeric array"),
        ({0: [("v0", "high", ms_tube([1]))]}, "label 0 detection 0: not (video, score, tube)"),
        ({0: [("v0", 0.9)]}, "label 0 detection 0: not (video, score, tube)"),
        ({0: "x"}, "label 0: a str, not a list"),
        ({"zero": []}, "key 'zero' is not a label index"),
    ])
    def test_video_detections_that_are_not_the_official_layout(self, ms_files, capsys, dets, want):
        d, gt, fd, vd = ms_files
        g = dump(d / "gt.pkl", gt)
        bad = dump(d / "vd_bad.pkl", {**{1: []}, **dets})
        line = cli(capsys, "eval", "multisports", "--gt", g, "--dets", bad)
        one_line(line, want)
        if "tube must be" not in want:  # found on loading: the line names the file
            assert str(bad) in line

    def test_frame_detections_of_strings(self, ms_files, capsys):
        d, gt, fd, vd = ms_files
        g = dump(d / "gt.pkl", gt)
        bad = dump(d / "fd_bad.pkl", np.array([["v0"] * 8], object))
        one_line(cli(capsys, "eval", "multisports", "--gt", g, "--dets", bad), str(bad), "must be numbers")
        bad = dump(d / "fd_bad.pkl", 7)
        one_line(cli(capsys, "eval", "multisports", "--gt", g, "--dets", bad), str(bad), "not an (N, 8) array")


# ======================================================================= MOC pkl
class TestMocPkl:
    @pytest.fixture()
    def good(self):
        rng = np.random.default_rng(0)
        per = {f: {0: np.array([[10 + f, 10, 40 + f, 60, 0.9]], np.float32),
                   1: np.zeros((0, 5), np.float32)} for f in range(1, 21)}
        per[3][1] = rng.random((2, 5)).astype(np.float32)
        return {"v0": per}

    def test_valid_pkl_links(self, tmp_path, capsys, good):
        src, out = dump(tmp_path / "moc.pkl", good), tmp_path / "vd.pkl"
        assert main(["link", "--dets", str(src), "--out", str(out)]) == 0
        assert json.loads(capsys.readouterr().out)["tubes"] >= 1

    @pytest.mark.parametrize("edit, want", [
        (lambda g: g.update(v0="x"), "video 'v0' maps to a str"),
        (lambda g: g["v0"].update({4: "x"}), "video 'v0' frame 4 maps to a str"),
        (lambda g: g["v0"][5].update({0: "abcde"}), "video 'v0' frame 5 label 0: detections must be an (N, 5) "
                                                     "numeric array"),
        (lambda g: g["v0"][5].update({0: np.array([["a"] * 5])}), "dtype <U1"),
        (lambda g: g["v0"][5].update({0: np.zeros((2, 4))}), "shape (2, 4)"),
        (lambda g: g["v0"][5].update({"person": np.zeros((1, 5))}), "label 'person' is not a label index"),
        (lambda g: g["v0"].update({"five": {}}), "frame 'five': a frame must be an integer"),
    ])
    def test_values_that_are_not_detection_arrays(self, tmp_path, capsys, good, edit, want):
        edit(good)
        src = dump(tmp_path / "moc.pkl", good)
        one_line(cli(capsys, "link", "--dets", src, "--out", tmp_path / "vd.pkl"), str(src), want)
        assert not (tmp_path / "vd.pkl").exists()

    def test_top_level_that_is_not_a_dict_of_videos(self, tmp_path):
        from actparse.link import link_moc_layout

        with pytest.raises(ValueError, match="MOC detections: not a dict"):
            link_moc_layout([1, 2])


# ======================================================================= FineGym predictions
class TestFineGymPredictions:
    GT = {"c1": {"event": "E", "element": "a"}, "c2": {"event": "E", "element": "b"}}

    @pytest.mark.parametrize("pred, want", [
        ({"c1": "a", "c2": {"event": "E"}}, "clip 'c1' maps to a string"),
        ([["c1", "a"]], "the top level is a list"),
        ({"c1": {"event": ["E"]}, "c2": {}}, "clip 'c1' level 'event': a label must be a string or an integer"),
        ({"c1": {"event": None}, "c2": {}}, "clip 'c1' level 'event'"),
    ])
    def test_predictions_that_are_not_dicts_of_labels(self, tmp_path, capsys, pred, want):
        gt = write_json(tmp_path / "gt.json", self.GT)
        p = write_json(tmp_path / "pred.json", pred)
        one_line(cli(capsys, "eval", "finegym", "--gt", gt, "--pred", p), str(p), want)

    def test_ground_truth_clip_without_a_level(self, tmp_path, capsys):
        gt = write_json(tmp_path / "gt.json", {"c1": {"event": "E", "element": "a"}, "c2": {"event": "E"}})
        p = write_json(tmp_path / "pred.json", self.GT)
        one_line(cli(capsys, "eval", "finegym", "--gt", gt, "--pred", p), str(gt), "clip 'c2'", "['element']")


# ======================================================================= metrics JSON
class TestMetricsJson:
    @pytest.mark.parametrize("obj, want", [([1, 2], "the top level is a list"), (3.5, "the top level is a number"),
                                           (None, "the top level is null"), ({}, "no metric values")])
    def test_metrics_file_that_is_not_an_object_of_values(self, tmp_path, capsys, obj, want):
        m = write_json(tmp_path / "metrics.json", obj)
        one_line(cli(capsys, "metrics", m), str(m), want)

    def test_a_good_file_beside_a_bad_one_still_fails_clearly(self, tmp_path, capsys):
        good = write_json(tmp_path / "a.json", {"x": 1.0})
        bad = write_json(tmp_path / "b.json", ["x"])
        one_line(cli(capsys, "metrics", good, bad), str(bad))


# ======================================================================= Parquet artifacts
def persons_table(n: int) -> pa.Table:
    return schemas.from_columns({"video": [f"v{i // 10}" for i in range(n)], "frame": list(range(n)),
                                 "person": [0] * n, "box": np.tile(np.float32([1, 2, 3, 4]), (n, 1)),
                                 "score": np.linspace(0, 1, n, dtype=np.float32)}, "persons")


def corrupt_row_group(path: Path, group: int) -> None:
    """Overwrite the column chunks of one row group with garbage bytes."""
    md = pq.ParquetFile(path).metadata
    raw = bytearray(path.read_bytes())
    rg = md.row_group(group)
    for c in range(rg.num_columns):
        col = rg.column(c)
        start = col.dictionary_page_offset or col.data_page_offset
        raw[start:start + col.total_compressed_size] = b"\xff" * col.total_compressed_size
    path.write_bytes(bytes(raw))


class TestParquetArtifacts:
    def test_corrupt_row_group_is_a_schema_error_naming_file_and_group(self, tmp_path):
        path = schemas.write_table(persons_table(40), tmp_path / "persons.parquet", "persons", row_group_size=10)
        assert pq.ParquetFile(path).num_row_groups == 4
        corrupt_row_group(path, 2)
        groups = schemas.iter_row_groups(path, "persons")
        assert next(groups).num_rows == 10 and next(groups).num_rows == 10  # the intact ones still read
        with pytest.raises(schemas.SchemaError, match=r"persons.parquet: cannot read row group 2 of artifact 'persons'"):
            next(groups)
        with pytest.raises(schemas.SchemaError, match="persons.parquet: cannot read artifact 'persons'"):
            schemas.read_table(path, "persons")

    def test_not_a_parquet_file(self, tmp_path):
        path = tmp_path / "frames.parquet"
        path.write_bytes(b"PAR1 but not really")
        with pytest.raises(schemas.SchemaError, match="frames.parquet: cannot read artifact 'frames'"):
            next(schemas.iter_row_groups(path, "frames"))

    def test_a_stage_reading_it_exits_2_with_one_line(self, tmp_path, capsys):
        path = schemas.write_table(persons_table(30), tmp_path / "persons.parquet", "persons", row_group_size=10)
        corrupt_row_group(path, 1)

        def run(params, root):
            for _ in schemas.iter_row_groups(path, "persons"):
                pass

        params = write_params(tmp_path / "params.yaml")
        assert stage_main("reader", None, run, ["--params", str(params)]) == 2
        one_line(capsys.readouterr().err, "reader: error:", str(path), "row group 1")


# ======================================================================= disk full
def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(d: Path) -> list:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


class TestDiskFull:
    """Each writer meets ENOSPC mid-write: one error naming the final file, the old artifact stays."""

    def partial_then_full(self, target_arg: int = 1):
        def write(*args, **kwargs):  # half a file, then the disk is full
            Path(args[target_arg]).write_bytes(b"PAR1 half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write

    def test_write_table(self, tmp_path, monkeypatch):
        path = schemas.write_table(persons_table(5), tmp_path / "persons.parquet", "persons")
        old = path.read_bytes()
        monkeypatch.setattr(schemas.pq, "write_table", self.partial_then_full())
        with pytest.raises(schemas.WriteError, match=r"persons.parquet: cannot write \(No space left on device\)") as e:
            schemas.write_table(persons_table(8), path, "persons")
        assert e.value.errno == errno.ENOSPC
        assert path.read_bytes() == old and leftovers(tmp_path) == []

    @pytest.mark.parametrize("when", ["write", "close"])
    def test_stream_writer(self, tmp_path, monkeypatch, when):
        path = schemas.write_table(persons_table(5), tmp_path / "persons.parquet", "persons")
        old = path.read_bytes()
        with pytest.raises(schemas.WriteError, match="persons.parquet: cannot write"):
            with schemas.ParquetStreamWriter(path, "persons") as w:
                monkeypatch.setattr(w._writer, when if when == "close" else "write_table", no_space)
                w.write(persons_table(3))
        assert path.read_bytes() == old and leftovers(tmp_path) == []

    def test_json_and_pickle(self, tmp_path, monkeypatch):
        import builtins

        j = atomic.write_json({"a": 1}, tmp_path / "metrics.json")
        p = write_pickle({"a": 1}, tmp_path / "video_detections.pkl")
        old_j, old_p = j.read_bytes(), p.read_bytes()
        real_open = builtins.open

        def full_open(file, mode="r", *a, **k):
            fh = real_open(file, mode, *a, **k)
            if "w" in mode:
                fh.write(b"x" if "b" in mode else "x")  # part of it made it to disk
                fh.close()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return fh

        monkeypatch.setattr(builtins, "open", full_open)
        with pytest.raises(schemas.WriteError, match="metrics.json: cannot write"):
            atomic.write_json({"a": 2}, j)
        with pytest.raises(schemas.WriteError, match="video_detections.pkl: cannot write"):
            write_pickle({"a": 2}, p)
        monkeypatch.undo()
        assert j.read_bytes() == old_j and p.read_bytes() == old_p and leftovers(tmp_path) == []

    def test_stage_exits_2_naming_the_artifact_and_keeps_the_old_one(self, stage_root, capsys, monkeypatch):
        from stages import link_tubes

        root, params = stage_root
        tubes = root / "artifacts" / "tubes.parquet"
        old = tubes.read_bytes()
        monkeypatch.setattr(schemas.pq, "write_table", self.partial_then_full())
        capsys.readouterr()
        assert link_tubes.main(["--params", str(params), "--root", str(root)]) == 2
        one_line(capsys.readouterr().err, "link_tubes: error:", str(tubes), "No space left on device")
        assert tubes.read_bytes() == old and leftovers(tubes.parent) == []

    def test_cli_on_a_really_full_filesystem(self, tmp_path):
        """``actparse link`` writing to a full tmpfs (mounted in a user namespace; skipped where that
        is not allowed): exit 2, one line, the previous output intact, no temporary file left."""
        if not shutil.which("unshare"):
            pytest.skip("no unshare")
        probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
        if probe.returncode:
            pytest.skip("user namespaces not allowed here")
        per = {f: {0: np.array([[10 + f, 10, 40 + f, 60, 0.9]], np.float32)} for f in range(1, 400)}
        src = dump(tmp_path / "moc.pkl", {f"v{i}": per for i in range(3)})
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        script = f"""
set -e
mount -t tmpfs -o size=64k tmpfs {mnt}
printf 'old detections' > {mnt}/vd.pkl
dd if=/dev/zero of={mnt}/filler bs=4k 2>/dev/null || true
set +e
{sys.executable} -m actparse link --dets {src} --out {mnt}/vd.pkl 2> {tmp_path}/err.txt
echo "rc=$?"
cat {mnt}/vd.pkl; echo
ls -a {mnt}
"""
        r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
        if "rc=" not in r.stdout:
            pytest.skip(f"could not mount a tmpfs: {r.stderr.strip()[-200:]}")
        out = r.stdout.splitlines()
        assert out[0] == "rc=2", r.stdout + (tmp_path / "err.txt").read_text()
        one_line((tmp_path / "err.txt").read_text(), f"{mnt}/vd.pkl", "No space left on device")
        assert out[1] == "old detections"
        assert sorted(out[2:]) == [".", "..", "filler", "vd.pkl"]  # no temporary file left behind


# ======================================================================= official-code edge inputs
class TestOfficialEdgeInputs:
    def tps_with_scores(self, seed=0):
        """GT and a prediction with jitter, humans and parts given [x1, y1, x2, y2, score] boxes."""
        rng = np.random.default_rng(seed)
        gv, gp = {}, {}
        for v in range(4):
            vid = f"v{v}"
            gv[vid] = "run" if v % 2 else "jump"
            gp[vid] = {f"img_{5 * i + 1:05d}.json": {"humans": [human([10.0 + 40 * k, 10, 45 + 40 * k, 90])
                                                               for k in range(int(rng.integers(1, 4)))]}
                       for i in range(3)}
        pp = copy.deepcopy(gp)
        for frames in pp.values():
            for fr in frames.values():
                for h in fr["humans"]:
                    h["box"] = [round(x + float(rng.normal(0, 4)), 2) for x in h["box"]] + [round(float(rng.random()), 3)]
                    for p in h["parts"].values():
                        p["box"] = [round(x + float(rng.normal(0, 3)), 2) for x in p["box"]] + [0.5]
                        if rng.random() < 0.3:
                            p["verb"] = ["other"]
        pv = {v: ("run" if rng.random() < 0.7 else "jump") for v in gv}
        return gv, gp, pv, pp

    def test_tps_five_number_boxes_score_as_the_official_code(self, tmp_path, capsys):
        for seed in range(3):
            gv, gp, pv, pp = self.tps_with_scores(seed)
            area, psc = R.tps_score(gv, gp, pv, pp)  # official-style loop: uses box[0:4]
            res = T.evaluate(gv, gp, pv, pp)
            assert res.area == area and res.psc.tolist() == psc
            four = copy.deepcopy(pp)
            for frames in four.values():
                for fr in frames.values():
                    for h in fr["humans"]:
                        h["box"] = h["box"][:4]
                        for p in h["parts"].values():
                            p["box"] = p["box"][:4]
            assert T.evaluate(gv, gp, pv, four).area == area
            # the file route: the scanner leaves them to json, with the same numbers
            text = json.dumps(pp)
            assert S.scan_part_result(text.encode()) is None
            g, p = write_json(tmp_path / "g.json", gp), write_json(tmp_path / "p.json", text=text)
            got = T.evaluate_files(gv, g, pv, p)
            assert got.route == "dicts" and got.area == area and got.psc.tolist() == psc
            assert T.evaluate_files(gv, g, pv, write_json(tmp_path / "p4.json", four)).route == "bytes"
        gd, vd = tmp_path / "gt", tmp_path / "pred"
        for d, (v, part) in ((gd, (gv, gp)), (vd, (pv, pp))):
            d.mkdir()
            kind = "gt" if d == gd else "pred"
            write_json(d / f"{kind}_vid_result.json", v)
            write_json(d / f"{kind}_part_result.json", part)
        assert main(["eval", "tps", "--gt", str(gd), "--pred", str(vd)]) == 0
        assert json.loads(capsys.readouterr().out)["tps_area"] == area

    def test_tps_boxes_of_mixed_lengths_in_one_frame_fail_as_officially(self):
        gv, gp, pv, pp = self.tps_with_scores(1)
        fr = next(fr for frames in pp.values() for fr in frames.values() if len(fr["humans"]) > 1)
        fr["humans"][0]["box"] = fr["humans"][0]["box"][:4]
        with pytest.raises(ValueError):  # np.float32 of a ragged list
            R.tps_score(gv, gp, pv, pp)
        with pytest.raises(ValueError, match="prediction: human: .*boxes of 4 and 5 numbers in one frame"):
            T.evaluate(gv, gp, pv, pp)
        fr["humans"][0]["box"] = [1, 2, 3]  # too short: the official bbox_iou fails on it
        with pytest.raises(ValueError, match="4 numbers"):
            T.evaluate(gv, gp, pv, pp)

    def gap_case(self):
        A = (0, 0, 10, 10)
        gt = ms_gt({"v0": {0: [ms_tube(range(1, 11), A), ms_tube(range(20, 26), A)]},
                    "v1": {0: [ms_tube([3, 4, 5, 8, 9], A)], 1: [ms_tube(range(1, 6), A)]}})

        def det(frames, dx, score):
            t = ms_tube(frames, (dx, 0, 10 + dx, 10))
            return np.c_[t, np.full(len(t), score, np.float32)]

        vd = {0: [("v0", np.float32(0.9), det([5, 6, 7, 8, 9, 10, 12, 13], 1, 0.9)),  # gap after the GT's end
                  ("v0", np.float32(0.8), det([16, 18, 19, 20, 21, 22, 23], 0, 0.8)),  # gap before the GT's start
                  ("v1", np.float32(0.7), det([3, 4, 5], 2, 0.7)),  # the GT's gap is after the overlap
                  ("v1", np.float32(0.6), det([8, 9, 10, 11], 1, 0.6))],  # ... and before this one
              1: [("v1", np.float32(0.5), det([1, 2, 3, 4, 5], 3, 0.5))]}
        return gt, vd

    @pytest.mark.parametrize("variant", ["multisports", "act"])
    def test_multisports_tubes_with_gaps_outside_the_overlap_score_as_officially(self, variant):
        gt, vd = self.gap_case()
        act = variant == "act"
        res = M.video_ap(gt, vd, [0.1, 0.2, 0.3, 0.5], variant)
        for thr in (0.1, 0.2, 0.3, 0.5):
            ref_map, ref_ap = R.ms_video_ap(gt, vd, thr, act)
            assert res[thr].map == ref_map and res[thr].ap == ref_ap
        assert res[0.5].map > 0

    def test_multisports_gap_inside_the_overlap_fails_as_officially(self, ms_files, capsys):
        gt, vd = self.gap_case()
        vd[0].append(("v1", np.float32(0.95), np.c_[ms_tube(range(3, 10)), np.ones(7, np.float32)]))  # holds 6, 7
        with pytest.raises((AssertionError, TypeError, ValueError)):
            R.ms_video_ap(gt, vd, 0.5)
        with pytest.raises(ValueError, match="ground truth of 'v1' and detection of 'v1': inside their temporal "
                                             "overlap .frames 3 to 9. the two tubes do not hold the same frames"):
            M.video_ap(gt, vd)
        d = ms_files[0]
        line = cli(capsys, "eval", "multisports", "--gt", dump(d / "g.pkl", gt), "--dets", dump(d / "v.pkl", vd))
        one_line(line, "do not hold the same frames")
        vd[0][-1] = ("v1", np.float32(0.95), np.c_[ms_tube([9, 8, 7]), np.ones(3, np.float32)])
        with pytest.raises(ValueError, match="detection of 'v1': tube frames must increase"):
            M.video_ap(gt, vd)

    def test_moc_variant_counts_a_label_without_ground_truth_as_zero(self, ms_files, capsys):
        d, gt, fd, vd = ms_files
        gt["labels"] = ["a", "b", "c"]  # label c: no ground truth in the test videos, no detection
        fdets = pickle.loads(fd.read_bytes())
        vdets = {**pickle.loads(vd.read_bytes()), 2: []}
        for thr in (0.5,):
            f_ref = R.ms_frame_ap(gt, fdets, thr, act=True, moc=True)
            f = M.frame_ap(gt, fdets, thr, "moc")
            assert f.map == f_ref[0] and f.ap == f_ref[1] and f.ap["c"] == 0
            v_ref = R.ms_video_ap(gt, vdets, thr, act=True, moc=True)
            v = M.video_ap(gt, vdets, [thr], "moc")[thr]
            assert v.map == v_ref[0] and v.ap == v_ref[1]
        # the challenge's ACT-derived code skips such a label instead
        assert M.frame_ap(gt, fdets, 0.5, "act").map == R.ms_frame_ap(gt, fdets, 0.5, act=True)[0] == 50
        assert f.map == pytest.approx(100 / 3)
        # with detections, ACT.py divides 0 by 0; here that label's AP is 0 too
        fdets2 = np.concatenate([fdets, [[0, 1, 2, 0.3, 0, 0, 10, 10]]]).astype(np.float32)
        with pytest.raises(ZeroDivisionError):
            R.ms_frame_ap(gt, fdets2, 0.5, act=True, moc=True)
        r = M.frame_ap(gt, fdets2, 0.5, "moc")
        assert r.ap["c"] == 0 and r.map == f.map and r.pr["c"].tolist() == [[1, 0], [0, 0]]
        g = dump(d / "gt3.pkl", gt)
        assert main(["eval", "multisports", "--gt", str(g), "--dets", str(fd), "--variant", "moc"]) == 0
        assert json.loads(capsys.readouterr().out)["frame_map@0.5"] == pytest.approx(f.map)
