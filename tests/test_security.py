"""Hostile input: files that would run code, network listeners, file names that leave their folder.

Sections: weights files (ultralytics YOLO ``.pt``), pickle files (MultiSports ``.pkl``), network
listeners (the flow's dask cluster), file names (video names). Every hostile file here carries a
live payload (each test first shows that a plain load runs it); the project's loaders must refuse
it with an error naming the file, and the payload's marker file must never appear.
"""

from __future__ import annotations

import ast
import datetime
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from _params import write_params
from actparse import safe_pickle, yolo
from actparse.formats import read_pickle
from actparse.paths import Paths
from actparse.schemas import from_rows, write_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]


class _Exec:
    """Unpickling this runs ``code`` (the classic pickle payload)."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def _touch_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


# ====================================================================== weights files (YOLO .pt)
@pytest.fixture(scope="module")
def yolo_files(tmp_path_factory):
    """Real ultralytics checkpoints: a model built from yolo11n.yaml and saved, and one a 1-epoch
    training run wrote (best.pt, with its optimizer and training metadata)."""
    yolo.configure()
    from ultralytics import YOLO

    d = tmp_path_factory.mktemp("yolo")
    torch.manual_seed(0)
    YOLO("yolo11n.yaml", task="detect").save(d / "saved.pt")
    imgs = [np.full((32, 32, 3), 30, np.uint8) for _ in range(4)]
    for im in imgs:
        im[8:24, 10:20] = (220, 40, 40)
    data = yolo.export_dataset(d / "data", imgs, [[[10, 8, 20, 24]]] * 4, [[0]] * 4, ["person"])
    trained = yolo.train(data, d / "runs", epochs=1, imgsz=32, batch=4, threads=1).weights
    return {"saved": d / "saved.pt", "trained": Path(trained)}


@pytest.mark.parametrize("kind", ["saved", "trained"])
def test_real_yolo_checkpoints_pass_the_checks_and_load(yolo_files, kind):
    path = yolo_files[kind]
    # globals beyond torch's weights-only set (ultralytics registers the ones it admits as it loads,
    # after which torch no longer lists them): all torch / ultralytics layers
    names = yolo.check_checkpoint(path)
    assert all(n.startswith(("torch.nn.modules.", "ultralytics.nn.")) for n in names), names
    model = yolo.load_model(path)
    assert yolo.model_names(model) == (["person"] if kind == "trained" else [str(i) for i in range(80)])
    (boxes, scores, classes), = yolo.predict(model, [np.zeros((32, 32, 3), np.uint8)], imgsz=32, conf=0.0)
    assert boxes.shape[1] == 4 and len(scores) == len(classes)


def test_ultralytics_loads_every_checkpoint_weights_only():
    yolo.configure()
    from ultralytics.nn import tasks

    assert tasks.SAFE_LOAD is True and os.environ["ULTRALYTICS_SAFE_LOAD"] == "1"


def _hostile_checkpoints(d: Path, saved: Path, marker: Path) -> dict[str, Path]:
    from ultralytics.nn.tasks import DetectionModel

    out = {"exec": d / "exec.pt", "hidden": d / "hidden.pt", "model_yaml": d / "model_yaml.pt"}
    torch.save({"model": _Exec(_touch_code(marker))}, out["exec"])
    ck = torch.load(saved, map_location="cpu", weights_only=False)  # our own file, made above
    ck["train_args"] = {"note": _Exec(_touch_code(marker))}  # payload tucked into a real checkpoint
    torch.save(ck, out["hidden"])

    class _Build:  # calls an admitted class (DetectionModel) with a model yaml whose activation is code
        def __reduce__(self):
            cfg = {"nc": 1, "activation": f"__import__('pathlib').Path({str(marker)!r}).touch() or nn.SiLU()",
                   "backbone": [[-1, 1, "Conv", [16, 3, 2]]], "head": [[[0], 1, "Detect", ["nc"]]]}
            return (DetectionModel, (cfg,))

    torch.save({"model": _Build(), "train_args": {}}, out["model_yaml"])
    return out


@pytest.mark.parametrize("kind", ["exec", "hidden", "model_yaml"])
def test_code_in_a_yolo_checkpoint_is_refused_and_never_runs(yolo_files, tmp_path, monkeypatch, kind):
    from ultralytics.nn import tasks

    marker = tmp_path / "pwned"
    path = _hostile_checkpoints(tmp_path, yolo_files["saved"], marker)[kind]
    # the payload is live: a plain (unrestricted) load runs it
    with monkeypatch.context() as m:
        m.setattr(tasks, "SAFE_LOAD", False)
        try:
            torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001 - only the side effect matters here
            pass
    assert marker.exists(), "the test payload did not run under a plain torch.load"
    marker.unlink()
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: refused to load this checkpoint: .*"
                                         r"nothing in the file was run$"):
        yolo.load_model(path)
    assert not marker.exists()


def test_the_detector_stages_refuse_hostile_weights_with_exit_2(tmp_path, capsys):
    from stages import train_part_detector, train_person_detector
    from tests._detection_data import write_params

    marker = tmp_path / "pwned"
    evil = tmp_path / "detector.pt"
    torch.save({"model": _Exec(_touch_code(marker))}, evil)
    params = write_params(tmp_path / "params.yaml", person={"weights": str(evil)}, parts={"weights": str(evil)})
    for stage in (train_person_detector, train_part_detector):
        assert stage.main(["--params", str(params), "--root", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith(f"{stage.__name__.split('.')[-1]}: error: {evil}: refused to load this checkpoint"), err
        assert "builtins.exec" in err
        assert not marker.exists()
        assert not (Paths(tmp_path).models / stage.NAME / "model.pt").exists()


def test_fine_tuning_from_hostile_weights_is_refused_before_training(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "start.pt"
    torch.save({"model": _Exec(_touch_code(marker))}, evil)
    img = np.zeros((32, 32, 3), np.uint8)
    data = yolo.export_dataset(tmp_path / "data", [img], [np.array([[4, 4, 20, 20]])], [[0]], ["person"])
    with pytest.raises(ValueError, match=rf"^{re.escape(str(evil))}: refused to load this checkpoint"):
        yolo.train(data, tmp_path / "runs", weights=evil, epochs=1, imgsz=32, batch=1, threads=1)
    assert not marker.exists() and not (tmp_path / "runs" / "train").exists()


# ====================================================================== pickle files (MultiSports .pkl)
def _ms_gt() -> dict:
    """A MultiSports-layout ground truth (as the official GT pkl holds it)."""
    return {
        "labels": ["aerobic_push_up", "aerobic_kick_jump"],
        "train_videos": [["v_a"]], "test_videos": [["v_b"]],
        "nframes": {"v_a": 20, "v_b": 30},
        "resolution": {"v_a": (720, 1280), "v_b": (720, 1280)},
        "gttubes": {"v_a": {0: [np.array([[1, 10, 20, 50, 80], [2, 11, 21, 51, 81]], np.float32)]},
                    "v_b": {1: [np.array([[5, 1.5, 2.5, 30, 40]], np.float32)]}},
        "extra": {"score": np.float64(0.25), "n": np.int32(7), "seen": {1, 2}, "frozen": frozenset([3]),
                  "raw": b"\x00\xff", "objects": np.array([1, "x"], dtype=object)},
    }


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_official_layout_pickles_load(tmp_path, protocol):
    gt = _ms_gt()
    path = tmp_path / "gt.pkl"
    path.write_bytes(pickle.dumps(gt, protocol=protocol))
    assert _same(read_pickle(path), gt)


def test_numpy1_module_paths_load():
    """Files written with numpy 1 name ``numpy.core.multiarray`` (numpy 2: ``numpy._core``)."""
    data = pickle.dumps(_ms_gt(), protocol=2)
    assert b"numpy._core.multiarray" in data
    old = data.replace(b"numpy._core.", b"numpy.core.")
    assert _same(safe_pickle.loads(old), _ms_gt())


def _py2_pickle(values: np.ndarray) -> bytes:
    """A protocol-2 pickle as Python 2 with numpy 1 writes it: {'v': array}, the array's bytes as a
    Python 2 ``str`` (SHORT_BINSTRING), which Python 3 can only read with encoding='latin1'."""
    def s(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b

    raw = values.astype("<f4").tobytes()
    assert len(raw) < 256 and any(x > 127 for x in raw)
    return (b"\x80\x02}q\x00" + s(b"v") + b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85"
            + s(b"b") + b"\x87Rq\x03(K\x01" + b"K" + bytes([len(values)]) + b"\x85cnumpy\ndtype\nq\x04" + s(b"f4")
            + b"K\x00K\x01\x87Rq\x05(K\x03" + s(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
            + s(raw) + b"tbs.")


def test_python2_pickles_load_with_latin1():
    values = np.array([1.0, -2.0, 3.5], np.float32)
    data = _py2_pickle(values)
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(data)  # Python 3's default (ASCII) cannot read it
    out = safe_pickle.loads(data)
    assert list(out) == ["v"] and out["v"].dtype == np.float32 and np.array_equal(out["v"], values)


def _payloads(marker: Path) -> dict[str, bytes]:
    class _System:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return {
        "exec": pickle.dumps({"labels": ["a"], "gttubes": _Exec(_touch_code(marker))}, protocol=4),
        "os.system": pickle.dumps([_System()], protocol=2),
        "python2 GLOBAL": b"cbuiltins\nexec\n(" + pickle.dumps(_touch_code(marker), protocol=0)[:-1] + b"tR.",
    }


@pytest.mark.parametrize("kind", ["exec", "os.system", "python2 GLOBAL"])
def test_code_in_a_pickle_is_refused_and_never_runs(tmp_path, kind):
    marker = tmp_path / "pwned"
    data = _payloads(marker)[kind]
    pickle.loads(data)  # live payload: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "multisports_gt.pkl"
    path.write_bytes(data)
    with pytest.raises(safe_pickle.RefusedPickle,
                       match=rf"^{re.escape(str(path))}: refused to load this pickle: it imports or calls "
                             r"(builtins\.exec|posix\.system), .*nothing in the file was run$"):
        read_pickle(path)
    assert not marker.exists()


def test_damaged_pickle_is_a_clear_error(tmp_path):
    path = tmp_path / "gt.pkl"
    path.write_bytes(pickle.dumps(_ms_gt(), protocol=4)[:-30])
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: cannot read pickle: "):
        read_pickle(path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.pkl"))):
        read_pickle(tmp_path / "nope.pkl")


def _data_root_with_hostile_gt(root: Path, marker: Path) -> Path:
    droot = root / "data"
    (droot / "annotations").mkdir(parents=True)
    (droot / "annotations" / "multisports_gt.pkl").write_bytes(_payloads(marker)["exec"])
    rows = [{"video": "v1", "path": "v1.mp4", "split": "test", "action": "idle", "n_frames": 10, "fps": 25.0,
             "width": 32, "height": 32}]
    write_table(from_rows(rows, "videos"), droot / "videos.parquet", "videos")
    return droot


def test_evaluate_and_stad_stages_refuse_a_hostile_ground_truth(tmp_path, capsys):
    """The data root's multisports_gt.pkl is read by evaluate, stad_train and stad_evaluate."""
    from stages import evaluate, stad_evaluate, stad_train

    marker = tmp_path / "pwned"
    droot = _data_root_with_hostile_gt(tmp_path, marker)
    pkl = droot / "annotations" / "multisports_gt.pkl"
    paths = Paths(tmp_path)
    for attr, name in (("refined", "keypoints"), ("parts", "parts"), ("part_states", "part_states"),
                       ("video_predictions", "video_predictions"), ("tubes", "tubes")):
        getattr(paths, attr).parent.mkdir(parents=True, exist_ok=True)
        write_table(from_rows([], name), getattr(paths, attr), name)
    params = tmp_path / "params.yaml"
    write_params(params, {"data": {"root": str(droot)}, "stad": {"enabled": True, "stride": 5}})
    assert evaluate.main(["--params", str(params), "--root", str(tmp_path)]) == 2
    assert f"evaluate: error: {pkl}: refused to load this pickle" in capsys.readouterr().err
    with pytest.raises(safe_pickle.RefusedPickle, match=rf"^{re.escape(str(pkl))}: refused"):
        stad_evaluate.run(yaml.safe_load(params.read_text()), tmp_path)
    with pytest.raises(safe_pickle.RefusedPickle, match=rf"^{re.escape(str(pkl))}: refused"):
        stad_train.class_list(droot)  # the class list stad_train reads first
    assert not marker.exists()


def test_cli_eval_and_link_refuse_hostile_pickles(tmp_path, capsys):
    from actparse.__main__ import main

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(_payloads(marker)["exec"])
    good = tmp_path / "gt.pkl"
    good.write_bytes(pickle.dumps(_ms_gt(), protocol=4))
    for argv in (["eval", "multisports", "--gt", str(evil), "--dets", str(good)],
                 ["eval", "multisports", "--gt", str(good), "--dets", str(evil)],
                 ["link", "--dets", str(evil), "--out", str(tmp_path / "out.pkl")]):
        assert main(argv) == 2, argv
        assert f"{evil}: refused to load this pickle" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out.pkl").exists()


_SCANNED = ("actparse", "stages", "flows", "scripts", "benchmarks")


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name):
            yield node, f"{node.func.value.id}.{node.func.attr}"


def test_every_pickle_read_in_the_project_is_restricted():
    """No plain pickle.load(s) outside actparse/safe_pickle.py; every torch.load has weights_only=True;
    YAML only through safe_load."""
    bad = []
    for folder in _SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for node, name in _calls(ast.parse(path.read_text())):
                if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "yaml.load", "yaml.unsafe_load",
                            "pd.read_pickle", "np.load") and rel != "actparse/safe_pickle.py":
                    if name == "np.load" and not any(k.arg == "allow_pickle" for k in node.keywords):
                        continue  # numpy's default refuses pickled objects
                    bad.append(f"{rel}:{node.lineno} {name}")
                if name == "torch.load" and not any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                                                    and k.value.value is True for k in node.keywords):
                    bad.append(f"{rel}:{node.lineno} torch.load without weights_only=True")
    assert not bad, bad


# ====================================================================== network listeners (dask)
def _listening(pid: int) -> set[tuple[int, str, int]]:
    import psutil

    procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    out = set()
    for p in procs:
        try:
            conns = p.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        out |= {(p.pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return out


def test_local_cluster_listens_only_on_loopback():
    from distributed import Client

    from flows import cluster as C

    before = _listening(os.getpid())
    with C.local_cluster(n_cpu_workers=2, fake_gpus=1, processes=True) as cl:
        opened = _listening(os.getpid()) - before
        with Client(cl.scheduler_address, timeout="30s") as client:
            info = client.scheduler_info(n_workers=-1) if C._accepts_n_workers(client) else client.scheduler_info()
            assert client.run(lambda: 1) == {w: 1 for w in info["workers"]}
    assert cl.scheduler_address.startswith("tcp://127.0.0.1:")
    assert len(info["workers"]) == 3
    for addr, w in info["workers"].items():
        assert addr.startswith("tcp://127.0.0.1:") and w["nanny"].startswith("tcp://127.0.0.1:")
    # every socket the scheduler, the nannies and the three worker processes listen on
    assert len({pid for pid, _, _ in opened}) >= 4 and len(opened) >= 7, opened
    assert {ip for _, ip, _ in opened} == {"127.0.0.1"}, opened


def _write_certs(d: Path, name: str) -> dict:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = dict(not_valid_before=now - datetime.timedelta(minutes=5), not_valid_after=now + datetime.timedelta(days=1))

    def build(subject, issuer, pub, signer, serial, ca):
        b = x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub).serial_number(serial)
        b = b.not_valid_before(valid["not_valid_before"]).not_valid_after(valid["not_valid_after"])
        return b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True).sign(signer,
                                                                                                   hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}-ca")])
    ca = build(ca_name, ca_name, ca_key.public_key(), ca_key, 1, True)
    cert = build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), ca_name, key.public_key(), ca_key, 2,
                 False)
    files = {"ca_file": d / f"{name}-ca.pem", "cert": d / f"{name}.pem", "key": d / f"{name}-key.pem"}
    files["ca_file"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return {k: str(v) for k, v in files.items()}


def test_tls_cluster_admits_only_clients_with_a_certificate_of_its_ca(tmp_path):
    from distributed import Client

    from flows import cluster as C

    sec = C.security({"flow": {"tls": _write_certs(tmp_path, "cluster")}})
    stranger = C.security({"flow": {"tls": _write_certs(tmp_path, "stranger")}})
    assert sec.require_encryption
    with C.local_cluster(n_cpu_workers=1, fake_gpus=1, processes=False, security=sec) as cl:
        addr = cl.scheduler_address
        assert addr.startswith("tls://127.0.0.1:")
        assert C.gpu_workers(addr, sec) == ["gpu0"]
        with Client(addr, security=sec, timeout="20s") as client:
            assert client.submit(lambda x: x + 1, 41).result() == 42
            assert all(w.startswith("tls://127.0.0.1:") for w in client.scheduler_info()["workers"])
        for address, security in ((addr, None), (addr.replace("tls://", "tcp://"), None), (addr, stranger)):
            with pytest.raises(Exception):  # noqa: B017 - TLS, reset or timeout: refused either way
                Client(address, security=security, timeout="3s").close()


def test_tls_settings_from_params_and_from_dask_environment(tmp_path, monkeypatch):
    import dask

    from flows import cluster as C

    files = _write_certs(tmp_path, "c")
    assert C.security({"flow": {"tls": None}}) is None
    with pytest.raises(ValueError, match=r"params.yaml: parameter 'flow.tls' needs exactly ca_file, cert, key "
                                         r"\(missing \['key'\], unknown \['keyfile'\]\)"):
        C.security({"_path": "params.yaml", "flow": {"tls": {"ca_file": files["ca_file"], "cert": files["cert"],
                                                             "keyfile": files["key"]}}})
    with pytest.raises(FileNotFoundError, match=r"flow\.tls\.cert: .*nope\.pem: file not found"):
        C.security({"flow": {"tls": {**files, "cert": str(tmp_path / "nope.pem")}}})
    env = {"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
           "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": files["ca_file"],
           "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": files["cert"],
           "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": files["key"]}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    dask.config.refresh()
    try:
        sec = C.security({})
        assert sec.require_encryption and sec.tls_ca_file == files["ca_file"]
        assert (sec.tls_client_cert, sec.tls_client_key) == (files["cert"], files["key"])
    finally:
        for k in env:
            monkeypatch.delenv(k)
        dask.config.refresh()
    assert C.security({}) is None


# ====================================================================== file names (video names)
BAD_NAMES = ["../escape", "a/../../b", "a//b", "a/./b", "a/", "/abs/path", "a\\b", "..", "nul\x00byte", "", "   "]


def _videos_parquet(droot: Path, names: list[str]) -> Path:
    droot.mkdir(parents=True, exist_ok=True)
    rows = [{"video": n, "path": f"v{i}.mp4", "split": "train", "action": "idle", "n_frames": 10, "fps": 25.0,
             "width": 32, "height": 32} for i, n in enumerate(names)]
    return write_table(from_rows(rows, "videos"), droot / "videos.parquet", "videos")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unsafe_video_names_are_refused_where_videos_are_loaded(tmp_path, name):
    from actparse.dataset import load_videos

    index = _videos_parquet(tmp_path / "data", ["fine_1", name])
    with pytest.raises(ValueError, match=rf"^{re.escape(str(index))}: unsafe video name {re.escape(repr(name))}: "):
        load_videos(tmp_path / "data")


def test_ordinary_video_names_still_load(tmp_path):
    from actparse.dataset import load_videos

    # MultiSports names are "<sport>/<video>"; a ".." inside a part is just a name
    names = ["v_crsi07chcV8_c004", "clip 1", "synth_0001", "a.b-c", "Ünïcode", "aerobic_gymnastics/v_x_c001",
             "x..y"]
    _videos_parquet(tmp_path / "data", names)
    assert load_videos(tmp_path / "data").column("video").to_pylist() == names


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_train_person_detector_refuses_a_traversing_video_name(tmp_path, capsys):
    """The reported case: a video named with ../ made the stage write outside its work folder."""
    from stages import train_person_detector
    from tests._detection_data import make_project, write_params

    root = tmp_path / "project"
    make_project(root, n_videos=3, n_test=1)
    index = root / "artifacts" / "synth" / "videos.parquet"
    table = pq.read_table(index)
    names = table.column("video").to_pylist()
    names[0] = "../../../escaped"
    write_table(table.set_column(0, "video", pa.array(names, pa.string())), index, "videos")
    params = write_params(root / "params.yaml")
    outside = _files_under(tmp_path)
    assert train_person_detector.main(["--params", str(params), "--root", str(root)]) == 2
    assert f"{index}: unsafe video name '../../../escaped'" in capsys.readouterr().err
    assert _files_under(tmp_path) - outside == set()


def test_yolo_dataset_writer_refuses_unsafe_stems(tmp_path):
    img = np.zeros((16, 16, 3), np.uint8)
    work = tmp_path / "a" / "work"
    for stem in ("../../x", "a/b", "..", "", "n\x00"):
        with pytest.raises(ValueError, match=r"^export_dataset: unsafe image stem "):
            yolo.export_dataset(work, [img], [np.zeros((0, 4))], [np.zeros(0, int)], ["person"], stems=[stem])
    assert _files_under(tmp_path) == set()
