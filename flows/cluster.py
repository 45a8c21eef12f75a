"""The dask.distributed cluster the flow runs on, and GPU routing by dask resources.

GPU work is annotated ``resources={"GPU": 1}``; the dask scheduler only places it on workers that
declared a ``GPU`` resource (``dask worker tcp://HOST:8786 --resources "GPU=1"``). Workers without
the resource take only CPU work. Which cluster:

1. ``--scheduler`` on the command line, else the ``ACTPARSE_DASK_SCHEDULER`` environment variable,
   else ``flow.scheduler`` in params.yaml: the address of an existing (multi-node) cluster;
2. otherwise a local cluster on 127.0.0.1: ``flow.n_workers`` CPU workers plus one GPU worker per
   visible CUDA device (``CUDA_VISIBLE_DEVICES`` pinned per worker), none on a CPU-only machine.
   The scheduler, every worker and every nanny listen on 127.0.0.1 only.

Connections are plain TCP unless TLS is asked for (:func:`security`): ``flow.tls`` in params.yaml
(``ca_file``, ``cert``, ``key``), or dask's own TLS configuration (``DASK_DISTRIBUTED__COMM__TLS__*``
environment variables or a dask config file). With TLS, the flow's clients, and a local cluster's
scheduler and workers, use it; see docs/prefect.md.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence

GPU = "GPU"
# Stages that train or run a network: on a cluster they run only on workers that declare a GPU.
DEFAULT_GPU_STAGES = ("train_person_detector", "detect_persons", "train_pose", "keypoints",
                      "train_part_detector", "detect_parts", "train_csn", "csn")
SCHEDULER_ENV = "ACTPARSE_DASK_SCHEDULER"
LOCAL_HOST = "127.0.0.1"
TLS_KEYS = ("ca_file", "cert", "key")


def gpu_stage_names(params: dict | None, stages: Iterable[str] | None = None) -> tuple[str, ...]:
    """``flow.gpu_stages`` (a list of stage names; default :data:`DEFAULT_GPU_STAGES`); with ``stages``,
    a name that is not one of them is a :class:`~actparse.params.ParamError`."""
    from actparse.params import ParamError

    where = (params or {}).get("_path", "params")
    names = ((params or {}).get("flow") or {}).get("gpu_stages", DEFAULT_GPU_STAGES)
    if names is None:
        return ()
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ParamError(f"{where}: parameter 'flow.gpu_stages' must be a list of stage names, got {names!r}")
    if stages is not None:
        unknown = sorted(set(names) - set(stages))
        if unknown:
            raise ParamError(f"{where}: parameter 'flow.gpu_stages' names unknown stage(s) {unknown}")
    return tuple(names)


def flow_dag(root, params: dict):
    """The DAG of ``root/dvc.yaml`` as DVC reads it, its GPU stages marked from ``flow.gpu_stages``."""
    from dataclasses import replace

    from actparse.dag import load_dag

    dag = load_dag(root)
    gpu = set(gpu_stage_names(params, dag.stages))
    dag.stages = {n: replace(s, gpu=s.gpu or n in gpu) for n, s in dag.stages.items()}
    return dag


def scheduler_address(params: dict | None = None, override: str | None = None) -> str | None:
    """An existing scheduler to use (CLI override > environment > ``flow.scheduler``), or None."""
    for cand in (override, os.environ.get(SCHEDULER_ENV), ((params or {}).get("flow") or {}).get("scheduler")):
        if cand:
            return str(cand)
    return None


def security(params: dict | None = None):
    """The dask ``Security`` of the flow's connections, or None for plain TCP.

    ``flow.tls`` (a mapping of ``ca_file``, ``cert`` and ``key``, PEM files) turns TLS on and
    requires it, with the one certificate for every role (client, scheduler, worker). Without it,
    dask's own configuration decides (``DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION``,
    ``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``, ``..._TLS__CLIENT__CERT`` / ``__KEY``,
    ``..._TLS__SCHEDULER__CERT`` / ``__KEY``, ``..._TLS__WORKER__CERT`` / ``__KEY``).
    """
    from distributed.security import Security

    where = (params or {}).get("_path", "params")
    tls = ((params or {}).get("flow") or {}).get("tls")
    if tls:
        if not isinstance(tls, dict):
            raise ValueError(f"{where}: parameter 'flow.tls' must be a mapping of {', '.join(TLS_KEYS)}, got {tls!r}")
        unknown = sorted(set(tls) - set(TLS_KEYS))
        missing = [k for k in TLS_KEYS if not tls.get(k)]
        if unknown or missing:
            raise ValueError(f"{where}: parameter 'flow.tls' needs exactly {', '.join(TLS_KEYS)} "
                             f"(missing {missing}, unknown {unknown})")
        for k in TLS_KEYS:
            if not os.path.isfile(str(tls[k])):
                raise FileNotFoundError(f"{where}: flow.tls.{k}: {tls[k]}: file not found")
        ca, cert, key = (str(tls[k]) for k in TLS_KEYS)
        return Security(require_encryption=True, tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key,
                        tls_scheduler_cert=cert, tls_scheduler_key=key, tls_worker_cert=cert, tls_worker_key=key)
    sec = Security()  # dask's configuration (environment, config files)
    return sec if sec.require_encryption or sec.tls_ca_file else None


def _uses_tls(sec) -> bool:
    return bool(sec is not None and sec.require_encryption)


def local_gpu_ids(params: dict | None = None) -> list[str]:
    """CUDA devices for local GPU workers: none when ``device: cpu`` or CUDA is absent."""
    if str((params or {}).get("device", "auto")) == "cpu":
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and not visible.strip():
        return []
    try:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA install means "no GPU", not a crash
        n = 0
    if visible:
        return [v.strip() for v in visible.split(",") if v.strip()][:n]
    return [str(i) for i in range(n)]


def worker_specs(n_cpu_workers: int = 1, gpu_ids: Sequence[str] = (), fake_gpus: int = 0,
                 processes: bool = True, threads_per_worker: int = 1, security=None) -> dict:
    """SpecCluster worker specs: ``gpu<i>`` workers declaring GPU=1, ``cpu<i>`` workers declaring nothing.

    ``gpu_ids`` are real CUDA devices (each worker sees only its own); ``fake_gpus`` adds workers that
    declare the resource without a device (tests, dry runs of the routing). Workers (and their
    nannies) listen on 127.0.0.1 only, with no dashboard; ``security`` (see :func:`security`) makes
    them speak TLS.
    """
    from distributed import Nanny, Worker

    cls = Nanny if processes else Worker
    base = {"nthreads": threads_per_worker, "host": LOCAL_HOST, "dashboard": False}
    if _uses_tls(security):
        base.update(security=security, protocol="tls")
    if processes:
        base["memory_limit"] = 0  # stage subprocesses are not the worker's memory
    specs = {}
    for i, dev in enumerate(list(gpu_ids) + [None] * fake_gpus):
        opts = dict(base, resources={GPU: 1})
        if dev is not None and processes:
            opts["env"] = {"CUDA_VISIBLE_DEVICES": str(dev)}
        specs[f"gpu{i}"] = {"cls": cls, "options": opts}
    for i in range(n_cpu_workers):
        specs[f"cpu{i}"] = {"cls": cls, "options": dict(base)}
    if not specs:
        raise ValueError("a local cluster needs at least one worker (flow.n_workers >= 1 or a GPU)")
    return specs


def make_local_cluster(n_cpu_workers: int = 1, gpu_ids: Sequence[str] = (), fake_gpus: int = 0,
                       processes: bool = True, threads_per_worker: int = 1, security=None):
    """A started dask SpecCluster on 127.0.0.1 (see :func:`worker_specs`); the caller closes it (it is
    also a context manager). TLS when ``security`` requires encryption (its scheduler address is then
    ``tls://127.0.0.1:...``)."""
    from distributed import Scheduler, SpecCluster

    specs = worker_specs(n_cpu_workers, gpu_ids, fake_gpus, processes, threads_per_worker, security)
    sched = {"host": LOCAL_HOST, "dashboard": False, "dashboard_address": f"{LOCAL_HOST}:0"}
    if _uses_tls(security):
        sched.update(security=security, protocol="tls")
    logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": sched},
                          security=security if _uses_tls(security) else None,
                          silence_logs=logging.ERROR, name="actparse")
    try:
        cluster.wait_for_workers(len(specs), timeout=180)
    except BaseException:
        cluster.close()
        raise
    return cluster


@contextmanager
def local_cluster(n_cpu_workers: int = 1, gpu_ids: Sequence[str] = (), fake_gpus: int = 0,
                  processes: bool = True, threads_per_worker: int = 1, security=None) -> Iterator[object]:
    """:func:`make_local_cluster` for the duration of the ``with`` block."""
    cluster = make_local_cluster(n_cpu_workers, gpu_ids, fake_gpus, processes, threads_per_worker, security)
    try:
        yield cluster
    finally:
        cluster.close()


def params_cluster(params_file: str = "params.yaml"):
    """The local cluster ``flows.pipeline`` would start, from the ``flow`` section of ``params_file``
    (``flow.n_workers`` CPU workers, a worker per visible CUDA device, ``flow.processes``, ``flow.tls``);
    used as ``DaskTaskRunner(cluster_class=...)`` by a deployment (``python -m flows.serve``)."""
    from actparse.params import FLOW_SECTIONS, get, load_params

    params = load_params(params_file, sections=FLOW_SECTIONS)
    return make_local_cluster(get(params, "flow.n_workers", int, min_value=0), local_gpu_ids(params),
                              processes=get(params, "flow.processes", bool),
                              security=security(params))


def gpu_workers(address: str, security=None) -> list[str]:
    """Names of the workers of the cluster at ``address`` that declare a GPU resource."""
    from distributed import Client

    with Client(address, timeout="60s", security=security) as client:
        info = client.scheduler_info(n_workers=-1) if _accepts_n_workers(client) else client.scheduler_info()
    return sorted(str(w.get("name", addr)) for addr, w in info["workers"].items()
                  if (w.get("resources") or {}).get(GPU, 0) > 0)


def _accepts_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def worker_name() -> str:
    """The dask worker running this code, or "local" outside a worker."""
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return "local"
