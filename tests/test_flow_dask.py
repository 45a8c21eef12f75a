"""GPU routing by dask resources: GPU-tagged work only on workers declaring GPU, CPU work anywhere."""

from __future__ import annotations

import pytest

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

from flows import cluster as C  # noqa: E402


def _where(tag: int) -> str:
    import time

    time.sleep(0.02)  # long enough that the scheduler spreads the work
    return str(distributed.get_worker().name)


def test_gpu_tagged_tasks_only_on_gpu_workers():
    with C.local_cluster(n_cpu_workers=2, fake_gpus=2, processes=False) as cluster:
        assert sorted(C.gpu_workers(cluster.scheduler_address)) == ["gpu0", "gpu1"]
        with distributed.Client(cluster.scheduler_address) as client:
            with dask.annotate(resources={C.GPU: 1}):
                gpu_futs = [client.submit(_where, i, key=f"gpu-{i}", pure=False) for i in range(40)]
            cpu_futs = [client.submit(_where, i, key=f"cpu-{i}", pure=False) for i in range(40)]
            gpu_ran = client.gather(gpu_futs)
            cpu_ran = client.gather(cpu_futs)
    assert set(gpu_ran) <= {"gpu0", "gpu1"}
    assert len(set(gpu_ran)) == 2  # both GPU workers were used
    # CPU tasks may land anywhere, and with the GPU workers free they did land on CPU workers too.
    assert set(cpu_ran) <= {"gpu0", "gpu1", "cpu0", "cpu1"}
    assert set(cpu_ran) & {"cpu0", "cpu1"}


def test_cpu_only_cluster_has_no_gpu_workers():
    with C.local_cluster(n_cpu_workers=1, processes=False) as cluster:
        assert C.gpu_workers(cluster.scheduler_address) == []


def test_worker_specs_pin_one_device_per_gpu_worker():
    specs = C.worker_specs(n_cpu_workers=1, gpu_ids=["0", "3"], processes=True)
    assert sorted(specs) == ["cpu0", "gpu0", "gpu1"]
    assert specs["gpu1"]["options"]["resources"] == {"GPU": 1}
    assert specs["gpu1"]["options"]["env"] == {"CUDA_VISIBLE_DEVICES": "3"}
    assert "resources" not in specs["cpu0"]["options"]
    with pytest.raises(ValueError, match="at least one worker"):
        C.worker_specs(n_cpu_workers=0)


def test_scheduler_address_precedence(monkeypatch):
    params = {"flow": {"scheduler": "tcp://from-params:8786"}}
    monkeypatch.delenv(C.SCHEDULER_ENV, raising=False)
    assert C.scheduler_address({}) is None
    assert C.scheduler_address(params) == "tcp://from-params:8786"
    monkeypatch.setenv(C.SCHEDULER_ENV, "tcp://from-env:8786")
    assert C.scheduler_address(params) == "tcp://from-env:8786"
    assert C.scheduler_address(params, "tcp://cli:8786") == "tcp://cli:8786"


def test_no_local_gpu_workers_when_device_is_cpu(monkeypatch):
    assert C.local_gpu_ids({"device": "cpu"}) == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert C.local_gpu_ids({"device": "auto"}) == []
