"""A no-op run of the Prefect flow against a no-op ``dvc repro``, side by side (target: flow <= 2x dvc repro).

    python -m benchmarks.noop_flow --json benchmarks/results/noop_flow.json
    python -m benchmarks.noop_flow --rounds 7 --json out.json
    python -m benchmarks.noop_flow --root . --json out.json     # this checkout (everything up to date)

Without ``--root`` the benchmark builds a small repository in a temporary folder: a git + DVC project
whose ``dvc.yaml`` has the stages and the edges of this project's DAG (DVC's reading of this
``dvc.yaml``, 24 stages today), each stage a one-line Python command that reads its own params section
and its upstream stages' output files and writes one small file; ``params.yaml`` holds the ``flow``
section of this project's, with a local cluster of ``flow.n_workers`` worker processes and no mapped
stages. It runs ``dvc repro`` once, so everything is up to date, and commits. With ``--root`` it uses
that project as it is; it must be up to date (``dvc status`` clean), and is checked again at the end.

Each round times, as fresh processes and in an order that alternates from round to round (so load from
other work hits them alike):

* ``dvc`` : ``python -m dvc repro`` (nothing to do);
* ``flow_api`` : ``python -m flows.pipeline --api-url URL`` into a Prefect server that the benchmark
  started once beforehand with ``python -m flows.server`` (the documented way to watch runs in the UI);
* ``flow_found`` : ``python -m flows.pipeline`` without ``--api-url``, with that server running on the
  run's PREFECT_HOME (the run finds it and reports into it);
* ``flow_temp`` : ``python -m flows.pipeline`` without ``--api-url`` and no server on its PREFECT_HOME: it
  starts and stops a throw-away local API server itself;
* with ``--baseline REV``, ``base_api`` and ``base_temp``: the first and the last, run by the ``flows``
  and ``actparse`` packages of git revision REV (exported with ``git archive`` into the temporary
  folder, first on PYTHONPATH): before and after a change, in the same rounds.

Each flow run must exit 0 and report every stage "up to date". One warm-up round (not counted) comes
first. The JSON report: seconds per round, their median and fastest per command, the ratios of the
flow's medians (and fastest rounds) to ``dvc repro``'s, the target, and the CPU count and load average
before and after (on a busy machine every number is slower; compare the ratios, taken in the same run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TARGET = 2.0

#: the stage command of the built repository: ``python -m stages.node <name> <upstream>...``
NODE = '''
import sys
from pathlib import Path

import yaml

name, upstream = sys.argv[1], sys.argv[2:]
params = yaml.safe_load(open("params.yaml"))
text = f"{name}={params[name]['value']}\\n" + "".join(Path(f"out/{u}.txt").read_text() for u in upstream)
Path("out").mkdir(exist_ok=True)
Path(f"out/{name}.txt").write_text(text)
'''


def _env() -> dict[str, str]:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", DO_NOT_TRACK="1")
    env.update(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.com", GIT_COMMITTER_NAME="bench",
               GIT_COMMITTER_EMAIL="bench@example.com")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run(cmd: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env or _env(), capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return out


def build_repo(root: Path) -> Path:
    """The small repository described in the module docstring, brought up to date by ``dvc repro``."""
    from actparse.dag import load_dag

    dag = load_dag(ROOT)
    project_flow = (yaml.safe_load((ROOT / "params.yaml").read_text()) or {}).get("flow") or {}
    root.mkdir(parents=True, exist_ok=True)
    _run(["git", "init", "-q", "-b", "main"], root)
    _run([sys.executable, "-m", "dvc", "init", "-q"], root)
    with open(root / ".dvc" / "config", "a") as fh:
        fh.write("[core]\n    analytics = false\n")
    (root / "stages").mkdir()
    (root / "stages" / "__init__.py").write_text("")
    (root / "stages" / "node.py").write_text(NODE)
    stages, params = {}, {}
    for name in dag.order:
        ups = sorted(dag[name].upstream)
        stages[name] = {"cmd": " ".join(["python -m stages.node", name, *ups]),
                        "deps": ["stages/node.py", *[f"out/{u}.txt" for u in ups]],
                        "params": [name], "outs": [f"out/{name}.txt"]}
        params[name] = {"value": 1}
    params["flow"] = {**project_flow, "map_stages": [], "scheduler": None, "tls": None, "workdir": "work"}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / ".gitignore").write_text("/work/\n")
    _run([sys.executable, "-m", "dvc", "repro", "-q"], root)
    _run(["git", "add", "-A"], root)
    _run(["git", "commit", "-q", "-m", "benchmark repository"], root)
    return root


def dvc_clean(root: Path) -> bool:
    out = _run([sys.executable, "-m", "dvc", "status", "--json"], root)
    return json.loads(out.stdout or "{}") == {}


def _timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    out = _run(cmd, cwd, env)
    return time.perf_counter() - t, out


def _check_flow(stdout: str, n_stages: int, what: str) -> None:
    rows = [line.split() for line in stdout.splitlines()[1:] if line.strip()]
    up = [r for r in rows if r[1:4] == ["up", "to", "date"]]
    if len(up) != n_stages or len(rows) != n_stages:
        raise RuntimeError(f"{what}: expected {n_stages} stages up to date, got:\n{stdout}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=None, help="an up-to-date project to time (default: build a small one)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up round)")
    ap.add_argument("--json", default=None, metavar="PATH", help="write the report here")
    ap.add_argument("--baseline", default=None, metavar="REV",
                    help="also time the flow of this git revision (e.g. main), in the same rounds")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")

    from actparse.dag import load_dag
    from flows.server import api_url, free_port, quiet_env, stop_server, wait_healthy

    tmp = Path(tempfile.mkdtemp(prefix="actparse-noop-flow-"))
    server = None
    try:
        root = Path(args.root).resolve() if args.root else build_repo(tmp / "repo")
        if not dvc_clean(root):
            print(f"{root}: dvc status is not clean; bring it up to date first (dvc repro)", file=sys.stderr)
            return 2
        n_stages = len(load_dag(root).order)
        served, temp = tmp / "served-home", tmp / "temp-home"  # PREFECT_HOME with and without a server
        env = quiet_env(served)
        env.update({k: v for k, v in _env().items() if k in ("PATH", "PYTHONPATH")})
        env.pop("PREFECT_API_URL", None)
        temp_env = dict(env, PREFECT_HOME=str(temp))
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "flows.server", "--port", str(port)],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = api_url("127.0.0.1", port)
        wait_healthy(url, server, timeout=240)
        flow = [sys.executable, "-m", "flows.pipeline", "--root", str(root)]
        commands = {"dvc": ([sys.executable, "-m", "dvc", "repro"], env), "flow_api": ([*flow, "--api-url", url], env),
                    "flow_found": (flow, env), "flow_temp": (flow, temp_env)}
        if args.baseline:
            base = tmp / "baseline"
            base.mkdir()
            archive = subprocess.run(["git", "archive", args.baseline, "flows", "actparse"], cwd=ROOT,
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
            base_env = dict(env, PYTHONPATH=f"{base}{os.pathsep}{env['PYTHONPATH']}")
            commands["base_api"] = ([*flow, "--api-url", url], base_env)
            commands["base_temp"] = (flow, dict(base_env, PREFECT_HOME=str(temp)))
        load_before = os.getloadavg()
        times: dict[str, list[float]] = {k: [] for k in commands}
        for rnd in range(args.rounds + 1):
            order = list(commands) if rnd % 2 == 0 else list(reversed(commands))
            for key in order:
                cmd, cmd_env = commands[key]
                seconds, out = _timed(cmd, root, cmd_env)
                if key != "dvc":
                    _check_flow(out.stdout, n_stages, key)
                if key in ("flow_found", "flow_temp") and \
                        ("reporting into the running Prefect server" in out.stderr) != (key == "flow_found"):
                    raise RuntimeError(f"{key}: the run did not use the server it should have:\n{out.stderr[-2000:]}")
                if rnd:  # round 0: warm-up (the throw-away server's database is created there)
                    times[key].append(round(seconds, 3))
            if rnd:
                print(f"round {rnd}: " + ", ".join(f"{k} {times[k][-1]:.2f}s" for k in commands), flush=True)
        load_after = os.getloadavg()
        clean = dvc_clean(root)
    finally:
        if server is not None:
            stop_server(server)
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: round(statistics.median(v), 3) for k, v in times.items()}
    fast = {k: min(v) for k, v in times.items()}
    ratios = {k: {"median": round(med[k] / med["dvc"], 2), "fastest": round(fast[k] / fast["dvc"], 2)}
              for k in times if k != "dvc"}
    report = {
        "what": "no-op dvc repro vs no-op python -m flows.pipeline (flow_api: --api-url to a running flows.server; "
                "flow_found: no --api-url, that server running on its PREFECT_HOME; flow_temp: its throw-away API"
                + (f"; base_*: the same with the flow of {args.baseline}" if args.baseline else "")
                + "), fresh processes, alternating order, seconds (wall clock)",
        "baseline": args.baseline,
        "repository": str(args.root) if args.root else f"built: the {n_stages} stages and edges of this project's "
                                                       "dvc.yaml, one-line commands",
        "stages": n_stages, "rounds": args.rounds, "seconds": times, "median_s": med, "fastest_s": fast,
        "ratio_to_dvc_repro": ratios, "target_ratio": TARGET, "dvc_status_clean_after": clean,
        "machine": {"cpus": os.cpu_count(), "load_avg_before": [round(x, 2) for x in load_before],
                    "load_avg_after": [round(x, 2) for x in load_after], "platform": platform.platform(),
                    "python": platform.python_version()},
    }
    text = json.dumps(report, indent=2) + "\n"
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)
    print(json.dumps({"median_s": med, "ratio_to_dvc_repro": ratios}, indent=1))
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
