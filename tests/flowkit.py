"""Test helper (not a test module): tiny git+dvc projects for the flow.

:func:`make_fake_project`: three stages a -> b -> c. ``b`` is mapped per item by the flow (its module
defines FLOW_MAPPER) and marked as a GPU stage; items listed in ``b.bad`` fail. ``c`` exits 3 when
``c.offset`` is negative, and writes the metrics file metrics/c.json.

:func:`make_diamond_project`: top -> (left, right) -> join, and top -> solo. ``left`` and ``right``
each wait until the other has started (so they pass only when run at once; not with
``DIAMOND_ALONE`` set); ``right`` fails with exit
2 and a stage-style error line when ``right.fail`` is true; ``top`` is killed by SIGKILL once when the
environment variable ``DIAMOND_DIE_ONCE`` names a marker file that does not exist yet.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

STAGE_A = '''
import yaml
from pathlib import Path
p = yaml.safe_load(open("params.yaml"))
Path("out").mkdir(exist_ok=True)
Path("out/items.txt").write_text("".join(f"v{i}\\n" for i in range(p["a"]["n"])))
print("a: wrote", p["a"]["n"], "items")
'''

STAGE_B = '''
"""b: value of item v<i> = i * b.k; items in b.bad fail. The flow maps it per item (FLOW_MAPPER)."""
import json
import tempfile
from pathlib import Path

import yaml


class Mapper:
    def __init__(self, root, params):
        self.root = Path(root)
        self.k = params["b"]["k"]
        self.bad = set(params["b"].get("bad") or [])

    def items(self):
        return (self.root / "out/items.txt").read_text().split()

    def item_name(self, item):
        return item

    def run_item(self, item, workdir):
        if item in self.bad:
            raise ValueError(f"item {item} is corrupt")
        (Path(workdir) / f"{item}.json").write_text(json.dumps({"value": int(item[1:]) * self.k}))
        return {"item": item}

    def merge(self, items, errors, workdir):
        values = {it: json.loads((Path(workdir) / f"{it}.json").read_text())["value"]
                  for it in items if it not in errors}
        skipped = {it: errors[it]["message"] for it in items if it in errors}
        (self.root / "out/b.json").write_text(json.dumps({"values": values, "skipped": skipped}, sort_keys=True))
        return {"skipped": len(skipped)}


FLOW_MAPPER = Mapper

if __name__ == "__main__":
    m = Mapper(".", yaml.safe_load(open("params.yaml")))
    items, errors = m.items(), {}
    with tempfile.TemporaryDirectory() as wd:
        for it in items:
            try:
                m.run_item(it, wd)
            except ValueError as exc:
                errors[it] = {"type": "ValueError", "message": str(exc)}
        m.merge(items, errors, wd)
'''

STAGE_C = '''
import json
import sys
from pathlib import Path

import yaml
p = yaml.safe_load(open("params.yaml"))
if p["c"]["offset"] < 0:
    print("c: offset must be >= 0", file=sys.stderr)
    sys.exit(3)
b = json.loads(Path("out/b.json").read_text())
total = sum(b["values"].values()) + p["c"]["offset"]
Path("out/c.txt").write_text(str(total))
Path("metrics").mkdir(exist_ok=True)
Path("metrics/c.json").write_text(json.dumps({"total": total, "score": {"mean": total / 7}}))
'''

DVC_YAML = '''
stages:
  a:
    cmd: python -m stages.a
    deps: [stages/a.py]
    params: [a]
    outs: [out/items.txt]
  b:
    cmd: python -m stages.b
    deps: [stages/b.py, out/items.txt]
    params: [b]
    outs: [out/b.json]
  c:
    cmd: python -m stages.c
    deps: [stages/c.py, "${data.dir}/b.json"]
    params: [c.offset]
    outs: [out/c.txt]
    metrics:
      - metrics/c.json:
          cache: false
'''

PARAMS = {
    "data": {"dir": "out"},
    "a": {"n": 6},
    "b": {"k": 2, "bad": ["v3"]},
    "c": {"offset": 1},
    "flow": {"gpu_stages": ["b"], "map_stages": ["b"], "shard_videos": 8, "scheduler": None, "tls": None,
             "n_workers": 1, "processes": False,
             "workdir": "work", "ui_host": "127.0.0.1", "ui_port": 4200},
}

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


DIAMOND_STAGE = '''
"""Stages of the diamond project: python -m stages.diamond <name>."""
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import yaml

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
log = logging.getLogger("actparse." + sys.argv[1])
name = sys.argv[1]
p = yaml.safe_load(open("params.yaml"))
out = Path("out")
out.mkdir(exist_ok=True)


def rendezvous(me, other, timeout=180):
    if os.environ.get("DIAMOND_ALONE"):  # run by `dvc repro`, one stage after the other
        return
    (out / f"{me}.started").write_text("1")
    t0 = time.time()
    while not (out / f"{other}.started").exists():
        if time.time() - t0 > timeout:
            log.error("%s: %s never started while %s ran", me, other, me)
            sys.exit(4)
        time.sleep(0.05)


if name == "top":
    marker = os.environ.get("DIAMOND_DIE_ONCE")
    if marker and not Path(marker).exists():
        Path(marker).write_text("died once")
        os.kill(os.getpid(), signal.SIGKILL)
    for f in out.glob("*.started"):
        f.unlink()
    (out / "top.txt").write_text(str(p["top"]["n"]))
elif name in ("left", "right"):
    rendezvous(name, "right" if name == "left" else "left")
    n = int((out / "top.txt").read_text())
    log.warning("%s: a warning for the log", name)
    for i in range(1, 5):
        log.info("progress: %d/4 videos", i)
    if name == "right" and p["right"]["fail"]:
        print(f"right: error: out/top.txt: right.fail is set", file=sys.stderr)
        sys.exit(2)
    (out / f"{name}.txt").write_text(str(n * (2 if name == "left" else 3)))
elif name == "join":
    total = int((out / "left.txt").read_text()) + int((out / "right.txt").read_text())
    (out / "join.txt").write_text(str(total))
elif name == "solo":
    (out / "solo.txt").write_text(str(int((out / "top.txt").read_text()) + 100))
'''

DIAMOND_YAML = '''
stages:
  top:
    cmd: python -m stages.diamond top
    deps: [stages/diamond.py]
    params: [top]
    outs: [out/top.txt]
  left:
    cmd: python -m stages.diamond left
    deps: [stages/diamond.py, out/top.txt]
    outs: [out/left.txt]
  right:
    cmd: python -m stages.diamond right
    deps: [stages/diamond.py, out/top.txt]
    params: [right]
    outs: [out/right.txt]
  join:
    cmd: python -m stages.diamond join
    deps: [stages/diamond.py, out/left.txt, out/right.txt]
    outs: [out/join.txt]
  solo:
    cmd: python -m stages.diamond solo
    deps: [stages/diamond.py, out/top.txt]
    outs: [out/solo.txt]
'''

DIAMOND_PARAMS = {
    "top": {"n": 5},
    "right": {"fail": False},
    "flow": {"gpu_stages": [], "map_stages": [], "shard_videos": 8, "scheduler": None, "tls": None,
             "n_workers": 2, "processes": False,
             "workdir": "work", "ui_host": "127.0.0.1", "ui_port": 4200},
}


def make_diamond_project(root: Path, init: bool = True) -> Path:
    """top -> (left, right) -> join, top -> solo (see the module docstring); committed to git."""
    if init:
        init_repo(root)
    (root / "stages").mkdir(parents=True, exist_ok=True)
    (root / "stages/__init__.py").write_text("")
    (root / "stages/diamond.py").write_text(textwrap.dedent(DIAMOND_STAGE))
    (root / "dvc.yaml").write_text(DIAMOND_YAML)
    (root / ".gitignore").write_text("/work/\n")
    (root / "params.yaml").write_text(yaml.safe_dump(DIAMOND_PARAMS, sort_keys=False))
    if init:
        run(["git", "add", "-A"], root)
        run(["git", "commit", "-q", "-m", "diamond"], root)
    return root


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, **GIT_ENV, DVC_NO_ANALYTICS="1")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return subprocess.run(cmd, cwd=cwd, env=env, check=check, capture_output=True, text=True)


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, check)


def init_repo(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    run(["git", "init", "-q", "-b", "main"], root)
    dvc(root, "init", "-q")
    with open(root / ".dvc" / "config", "a") as fh:
        fh.write("[core]\n    analytics = false\n")
    return root


def make_fake_project(root: Path, init: bool = True, **param_updates) -> Path:
    """The a -> b -> c project under ``root`` (a git+dvc repo unless ``init`` is False)."""
    if init:
        init_repo(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "stages").mkdir(exist_ok=True)
    (root / "stages/__init__.py").write_text("")
    for name, src in (("a", STAGE_A), ("b", STAGE_B), ("c", STAGE_C)):
        (root / f"stages/{name}.py").write_text(textwrap.dedent(src))
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / ".gitignore").write_text("/work/\n")
    write_params(root, **param_updates)
    return root


def write_params(root: Path, **updates) -> None:
    """params.yaml = PARAMS with ``section__key=value`` updates."""
    params = yaml.safe_load(yaml.safe_dump(PARAMS))
    path = root / "params.yaml"
    if path.exists():
        params = yaml.safe_load(path.read_text())
    for dotted, value in updates.items():
        section, key = dotted.split("__")
        params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def dvc_status(root: Path) -> dict:
    """``dvc status`` of every stage (DVC's own answer): {} when everything is up to date."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        status = repo.status()
    return {key.rsplit(":", 1)[-1]: value for key, value in status.items()}  # keys are cwd-relative


_SERVER: dict = {}


def shared_prefect_server() -> tuple[str, str]:
    """One `python -m flows.server` (the documented command) per test process, on a free port with a
    throw-away PREFECT_HOME; stopped at exit. Returns (ui_url, api_url)."""
    if "api" in _SERVER:
        return _SERVER["ui"], _SERVER["api"]
    import atexit
    import shutil
    import tempfile

    from flows.server import api_url, free_port, quiet_env, stop_server, wait_healthy

    home = Path(tempfile.mkdtemp(prefix="actparse-prefect-"))
    port = free_port()
    log = open(home / "server.log", "wb")
    env = quiet_env(home)
    env["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"] = "2"  # deployment schedules turn into runs sooner
    proc = subprocess.Popen([sys.executable, "-m", "flows.server", "--port", str(port), "--home", str(home)],
                            cwd=Path(__file__).resolve().parents[1], env=env,
                            stdout=log, stderr=subprocess.STDOUT)

    def _stop():
        try:
            from flows.pipeline import drain_prefect

            drain_prefect()  # flush queued logs/events while the server is still up
        finally:
            stop_server(proc)  # SIGTERM: flows.server stops its Prefect child too
            log.close()
            shutil.rmtree(home, ignore_errors=True)

    try:
        wait_healthy(api_url("127.0.0.1", port), proc, timeout=240)
    except BaseException:
        _stop()
        raise
    atexit.register(_stop)
    _SERVER.update(ui=f"http://127.0.0.1:{port}", api=api_url("127.0.0.1", port), home=home)
    return _SERVER["ui"], _SERVER["api"]


def run_shards(mapper, work: Path, only=None, reverse: bool = True) -> tuple[list, dict]:
    """What the flow does with a stage's mapper: ``run_item`` for each of its items, the last first by
    default (completion order must not matter), only those whose index is in ``only`` when given; returns
    the items and the errors as the flow records them ({item name: {type, message}})."""
    items = mapper.items()
    errors = {}
    for item in (reversed(items) if reverse else items):
        if only is not None and item[0] not in only:
            continue
        try:
            mapper.run_item(item, work)
        except Exception as exc:  # noqa: BLE001 - the flow records any failure of a task
            errors[mapper.item_name(item)] = {"type": type(exc).__name__, "message": str(exc)}
    return items, errors
