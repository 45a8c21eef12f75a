"""Nothing is downloaded: the part-detector stages (a real YOLO train + predict) run in a subprocess
whose network is cut off, with a fresh ultralytics settings folder, and make no connection attempt."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SITECUSTOMIZE = textwrap.dedent('''
    """Injected via PYTHONPATH: every internet socket operation is recorded and refused."""
    import os
    import socket

    _LOG = os.environ["NETBLOCK_LOG"]


    def _record(what, args):
        with open(_LOG, "a") as fh:
            fh.write(f"ATTEMPT {what} {args!r}\\n")


    def _blocked(what):
        def fn(*args, **kwargs):
            _record(what, args[1:] if what.startswith("socket.") else args)
            raise OSError(f"network disabled by test ({what})")
        return fn


    _orig_connect = socket.socket.connect
    _orig_connect_ex = socket.socket.connect_ex


    def _connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _record("socket.connect", address)
            raise OSError("network disabled by test (connect)")
        return _orig_connect(self, address)


    def _connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _record("socket.connect_ex", address)
            raise OSError("network disabled by test (connect_ex)")
        return _orig_connect_ex(self, address)


    socket.socket.connect = _connect
    socket.socket.connect_ex = _connect_ex
    socket.getaddrinfo = _blocked("getaddrinfo")
    socket.gethostbyname = _blocked("gethostbyname")
    socket.gethostbyname_ex = _blocked("gethostbyname_ex")
    socket.create_connection = _blocked("create_connection")
    with open(_LOG, "a") as fh:
        fh.write("loaded\\n")
''')

SCRIPT = textwrap.dedent('''
    import sys
    from pathlib import Path

    from _detection_data import make_project, write_params
    from stages import detect_parts, part_train_persons, train_part_detector

    root = Path(sys.argv[1])
    make_project(root, n_videos=6, n_test=1, n_frames=4)
    p = write_params(root / "params.yaml", parts={"crop_size": 64, "imgsz": 64, "epochs": 1, "batch": 8})
    args = ["--params", str(p), "--root", str(root)]
    rc = part_train_persons.main(args) or train_part_detector.main(args) or detect_parts.main(args)
    sys.exit(rc)
''')


def test_yolo_train_and_predict_make_no_connection(tmp_path):
    block = tmp_path / "netblock"
    block.mkdir()
    (block / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (tmp_path / "run.py").write_text(SCRIPT)
    for d in ("home", "tmp"):
        (tmp_path / d).mkdir()
    log = tmp_path / "net.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "ULTRALYTICS"))}
    env.update({
        "PYTHONPATH": os.pathsep.join([str(block), str(REPO), str(REPO / "tests")]),
        "NETBLOCK_LOG": str(log),
        "HOME": str(tmp_path / "home"),  # no user settings
        "TMPDIR": str(tmp_path / "tmp"),  # a fresh ultralytics settings folder: the font must be installed offline
        "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config"),
        "MPLCONFIGDIR": str(tmp_path / "home" / "mpl"),
    })
    root = tmp_path / "proj"
    proc = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(root)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = log.read_text().splitlines() if log.exists() else []
    assert lines and lines[0] == "loaded", "the network blocker was not injected"
    assert proc.returncode == 0, proc.stderr[-3000:]
    attempts = [ln for ln in lines if ln.startswith("ATTEMPT")]
    assert not attempts, f"connection attempts: {attempts[:5]}"
    # the run really trained and predicted
    assert (root / "artifacts" / "models" / "part_detector" / "model.pt").stat().st_size > 100_000
    assert (root / "artifacts" / "parts.parquet").exists()
    cfg = tmp_path / "tmp" / f"actparse-ultralytics-{os.getuid()}" / "Ultralytics"
    assert (cfg / "Arial.ttf").exists()
    assert not (tmp_path / "runs").exists() and not (root / "runs").exists()  # no stray ultralytics output


def test_the_blocker_records_attempts(tmp_path):
    """Control: the injected blocker does notice a connection attempt."""
    block = tmp_path / "netblock"
    block.mkdir()
    (block / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "net.log"
    env = dict(os.environ, PYTHONPATH=str(block), NETBLOCK_LOG=str(log))
    code = "import socket\ntry:\n    socket.getaddrinfo('example.org', 443)\nexcept OSError:\n    pass\n"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    lines = log.read_text().splitlines()
    assert lines[0] == "loaded" and any(ln.startswith("ATTEMPT getaddrinfo") for ln in lines)
