"""Workers and their devices: a job that asks for a GPU is claimed by GPU workers alone and
holds up no CPU worker; a worker registers its device (checked), which GET /v1/workers
lists; ``kiln-server worker`` checks ``--device`` and ``--gpus``, and ``--gpus`` runs a
supervised worker per GPU, each with its ``--device cuda:N``.

Without a GPU here, a GPU is described from a stand-in cupy module, and the workers that
``--gpus`` starts train on tests/engine's fake cupy (numpy arrays playing a GPU's), given
GPUs to name by a ``cupy`` package put first on their path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import httpx
import pytest
from kiln_engine import DeviceError
from kiln_server import serving
from kiln_server.schemas import DeviceInfo
from kiln_server.serving import LocalWorkers
from kiln_server.worker import Device, describe_device, per_gpu
from kiln_server.worker import device as worker_device

from . import e2e_support
from .conftest import CLAIM_WAIT_MAX_S, mlp_job
from .e2e_support import (
    Workers,
    digits_job,
    digits_split,
    finished,
    new_client,
    submit,
    upload_digits,
    wait_for,
)
from .test_worker_api import _claim, _drain, _finish

e2e_server = e2e_support.e2e_server
make_workers = e2e_support.make_workers
REPO = Path(__file__).resolve().parents[2]
CUDA = {"kind": "cuda", "index": 0, "name": "Test GPU", "memory_bytes": 80 << 30}


def _register_as(worker: httpx.Client, device: dict) -> str:
    r = worker.post("/v1/worker/register", json={"name": "t", "device": device})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _claims(worker: httpx.Client, worker_id: str) -> list[str]:
    """Claim (and cancel) until the queue has nothing for this worker: the ids, in order."""
    got = []
    while (job := _claim(worker, worker_id)) is not None:
        got.append(job["job_id"])
        _finish(worker, job["job_id"], {"Kiln-Lease": job["lease_token"]})
    return got


def _queue(user: httpx.Client, dataset_id: str, device: str | None) -> str:
    job = mlp_job(dataset_id) if device is None else mlp_job(dataset_id, device=device)
    r = user.post("/v1/jobs", json=job)
    assert r.status_code == 201, r.text
    assert r.json()["device"] == (device or "any")
    return r.json()["id"]


def test_a_gpu_job_waits_for_a_gpu_worker_and_holds_up_no_cpu_worker(
        user, make_client, dataset_id):
    cpu_worker, gpu_worker = make_client(worker=True), make_client(worker=True)
    cpu_id, gpu_id = _register_as(cpu_worker, {"kind": "cpu"}), _register_as(gpu_worker, CUDA)
    _claims(gpu_worker, gpu_id)  # what earlier tests left queued (the server is shared)
    _claims(cpu_worker, cpu_id)
    gpu_job = _queue(user, dataset_id, "gpu")
    cpu_job, any_job = _queue(user, dataset_id, "cpu"), _queue(user, dataset_id, None)

    # The CPU worker takes the jobs queued after the GPU job, oldest first, never that one,
    # which stays queued while no GPU worker claims.
    taken = _claims(cpu_worker, cpu_id)
    assert gpu_job not in taken and [j for j in taken if j in (cpu_job, any_job)] == \
        [cpu_job, any_job], taken
    assert user.get(f"/v1/jobs/{gpu_job}").json()["status"] == "queued"

    # A GPU worker claims it, and never a job that asks for a CPU.
    later_cpu_job = _queue(user, dataset_id, "cpu")
    claimed = _drain(gpu_worker, gpu_id, until=gpu_job)
    assert claimed is not None and claimed["spec"]["device"] == "gpu"
    shown = user.get(f"/v1/jobs/{gpu_job}").json()
    assert (shown["status"], shown["worker"]["id"]) == ("running", gpu_id)
    _finish(gpu_worker, gpu_job, {"Kiln-Lease": claimed["lease_token"]})
    assert later_cpu_job not in _claims(gpu_worker, gpu_id)
    assert user.get(f"/v1/jobs/{later_cpu_job}").json()["status"] == "queued"
    assert later_cpu_job in _claims(cpu_worker, cpu_id)


def test_a_held_claim_is_not_answered_by_a_job_for_another_device(
        user, make_client, dataset_id):
    """A CPU worker's claim, held while nothing is queued for it, is woken by a GPU job's
    queueing but does not take it: it takes the CPU job queued after it."""
    cpu_worker = make_client(worker=True)
    cpu_id = _register_as(cpu_worker, {"kind": "cpu"})
    _claims(cpu_worker, cpu_id)
    gpu_job: list[str] = []
    cpu_job: list[str] = []

    def queue_while_held() -> None:
        time.sleep(CLAIM_WAIT_MAX_S / 4)
        gpu_job.append(_queue(user, dataset_id, "gpu"))
        time.sleep(CLAIM_WAIT_MAX_S / 4)
        cpu_job.append(_queue(user, dataset_id, "cpu"))

    queueing = threading.Thread(target=queue_while_held)
    queueing.start()
    taken: list[str] = []  # (with any job an earlier test's lapsed lease requeued)
    deadline = time.monotonic() + 30
    while not (cpu_job and cpu_job[0] in taken) and time.monotonic() < deadline:
        r = cpu_worker.post("/v1/worker/claim", json={"worker_id": cpu_id,
                                                      "wait_s": CLAIM_WAIT_MAX_S})
        assert r.status_code in (200, 204), r.text
        if r.status_code == 200:
            taken.append(r.json()["job_id"])
            _finish(cpu_worker, taken[-1], {"Kiln-Lease": r.json()["lease_token"]})
    queueing.join()
    assert cpu_job[0] in taken and gpu_job[0] not in taken, taken
    assert user.get(f"/v1/jobs/{gpu_job[0]}").json()["status"] == "queued"
    gpu_worker = make_client(worker=True)
    assert _drain(gpu_worker, _register_as(gpu_worker, CUDA), until=gpu_job[0]) is not None


def test_devices_are_checked_at_registration_and_listed(user, worker, dataset_id):
    refused = [({"kind": "tpu"}, ["body", "device", "kind"]),
               ({"kind": "cuda", "memory_bytes": -1}, ["body", "device", "memory_bytes"]),
               ({"kind": "cpu", "colour": "red"}, ["body", "device", "colour"]),
               ("cuda:0", ["body", "device"])]
    for device, loc in refused:
        r = worker.post("/v1/worker/register", json={"name": "t", "device": device})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, r.text
    gpu_id = _register_as(worker, CUDA)
    bare_id = _register_as(worker, {})  # a device of no kind is a CPU
    listed = {w["id"]: w for w in user.get("/v1/workers").json()["data"]}
    assert listed[gpu_id]["device"] == CUDA
    assert listed[bare_id]["device"] == {"kind": "cpu"}

    r = user.post("/v1/jobs", json=mlp_job(dataset_id, device="tpu"))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "device"], r.text


def test_the_device_fields_are_in_the_openapi_document(server):
    schemas = httpx.get(server.url + "/openapi.json").json()["components"]["schemas"]
    assert schemas["JobDevice"]["enum"] == ["any", "cpu", "gpu"]
    device = {"$ref": "#/components/schemas/JobDevice"}
    assert device.items() <= schemas["JobCreate"]["properties"]["device"].items()
    assert schemas["JobCreate"]["properties"]["device"]["default"] == "any"
    assert device.items() <= schemas["JobPublic"]["properties"]["device"].items()
    assert "device" in schemas["JobPublic"]["required"]
    assert schemas["WorkerRegister"]["properties"]["device"]["$ref"] == \
        "#/components/schemas/DeviceInfo"
    assert schemas["DeviceKind"]["enum"] == ["cpu", "cuda"]


# ------------------------------------------------------------------ the worker's device

def _stand_in_cupy(count: int) -> types.ModuleType:
    """What describe_device asks of cupy: the GPUs' count and properties."""
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceCount=lambda: count,
        getDeviceProperties=lambda i: {"name": f"NVIDIA H100 #{i}".encode(),
                                       "totalGlobalMem": (80 << 30) + i}))
    return cupy


def test_a_gpu_is_described_from_cupy_and_the_cpu_from_the_host(monkeypatch):
    cpu = describe_device("cpu")
    assert cpu.id == "cpu" and cpu.info == {
        "kind": "cpu", "name": os.uname().machine, "cores": os.cpu_count(),
        "memory_bytes": os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")}
    with pytest.raises(DeviceError, match="no GPU is usable here"):
        describe_device("cuda:0")  # no cupy here

    monkeypatch.setitem(sys.modules, "cupy", _stand_in_cupy(2))
    assert describe_device("cuda:1") == Device("cuda:1", {
        "kind": "cuda", "index": 1, "name": "NVIDIA H100 #1", "memory_bytes": (80 << 30) + 1})
    assert describe_device("cuda").id == "cuda:0"
    with pytest.raises(DeviceError, match=r"'cuda:2' does not exist: this machine has 2 GPU"):
        describe_device("cuda:2")
    for device in (cpu, describe_device("cuda:1")):  # each as the server takes it
        assert DeviceInfo.model_validate(device.info).model_dump(exclude_none=True) == \
            device.info


def _worker_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kiln_server", "worker", "--url",
                           "http://127.0.0.1:9", "--token", "t", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, says", [
    (["--device", "cuda:x"], "--device: device must be 'cpu', 'cuda' or 'cuda:N'; got 'cuda:x'"),
    (["--device", "cuda:0"], "--device: device 'cuda:0' was asked for, but no GPU is usable"),
    (["--gpus", ""], "--gpus must list GPU numbers, e.g. 0,1, or be all; got ''"),
    (["--gpus", "0,x"], "--gpus must list GPU numbers, e.g. 0,1, or be all; got '0,x'"),
    (["--gpus", "all"], "--gpus all: no GPU is usable here"),
    (["--gpus", "1,1"], "--gpus names a GPU twice: '1,1'"),
    (["--gpus", "0"], "--gpus: device 'cuda:0' was asked for, but no GPU is usable"),
    (["--gpus", "0", "--device", "cpu"], "argument --device: not allowed with argument --gpus"),
])
def test_the_worker_refuses_a_bad_device_naming_the_flag(args, says):
    out = _worker_cli(*args)
    assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr, \
        out.stderr


# A stand-in worker: writes its command line's options and its token where it is told,
# then waits to be stopped.
STAND_IN = """
import os, pathlib, sys, time
out = pathlib.Path(sys.argv[1]) / str(os.getpid())
out.write_text(" ".join(sys.argv[2:]) + " " + os.environ["KILN_WORKER_TOKEN"])
time.sleep(60)
"""


def test_gpus_start_a_worker_per_gpu_each_with_its_device(tmp_path, monkeypatch):
    """per_gpu (``--gpus``) starts one worker per GPU, each given ``--device cuda:N`` and
    the token; SIGTERM stops them all, and it returns."""
    monkeypatch.setattr(serving, "SUPERVISE_EVERY_S", 0.02)
    gpus = [Device("cuda:0", {}), Device("cuda:3", {})]
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    started: list[LocalWorkers] = []

    def supervise(*args: object, **kwargs: object) -> LocalWorkers:
        started.append(LocalWorkers(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(serving, "LocalWorkers", supervise)

    def stop_once_both_ran() -> None:
        deadline = time.monotonic() + 30
        while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)  # to per_gpu's handler

    threading.Thread(target=stop_once_both_ran, daemon=True).start()
    try:
        assert per_gpu("http://127.0.0.1:9", "the-token", gpus, command=[
            sys.executable, "-c", STAND_IN, str(tmp_path)]) == 0
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    ran = sorted(p.read_text() for p in tmp_path.iterdir())
    assert ran == ["--device cuda:0 the-token", "--device cuda:3 the-token"]
    (workers,) = started
    assert all(s.proc.poll() is not None for s in workers.slots)  # stopped, not left behind


# ------------------------------------------------------------------ end to end

#: A ``cupy`` that is tests/engine's fake, seeing two GPUs; ``cupyx`` goes with it.
FAKE_CUPY = """
import sys
from tests.engine import fake_cupy
fake_cupy.cupy.cuda.runtime.getDeviceCount = lambda: 2
fake_cupy.cupy.cuda.runtime.getDeviceProperties = lambda i: {
    "name": f"Fake GPU {i}".encode(), "totalGlobalMem": (i + 1) << 30}
sys.modules["cupy"], sys.modules["cupyx"] = fake_cupy.cupy, fake_cupy.cupyx
"""


def test_gpus_workers_train_the_gpu_job_that_a_cpu_worker_left_queued(
        e2e_server, tmp_path, make_workers):
    client, _ = new_client(e2e_server)
    cpu_workers: Workers = make_workers(e2e_server)
    (cpu,) = cpu_workers.start(1)
    cpu_listed = wait_for("the CPU worker to register", lambda: [
        w for w in client.get("/v1/workers").json()["data"] if w["device"]["kind"] == "cpu"])
    dataset = upload_digits(client, digits_split())
    job = submit(client, digits_job(dataset, device="gpu", epochs=2, stop=None))
    time.sleep(3 * CLAIM_WAIT_MAX_S)  # the CPU worker's claims are answered meanwhile
    assert client.get(f"/v1/jobs/{job}").json()["status"] == "queued"

    shim = tmp_path / "fake-gpus"
    for name, source in (("cupy", FAKE_CUPY), ("cupyx", "import cupy  # noqa: F401\n")):
        (shim / name).mkdir(parents=True)
        (shim / name / "__init__.py").write_text(source)
    log = tmp_path / "gpus.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), str(REPO)]),
           "KILN_WORKER_CACHE": str(tmp_path / "cache")}
    with open(log, "w") as f:
        gpus = subprocess.Popen([sys.executable, "-m", "kiln_server", "worker", "--url",
                                 e2e_server.url, "--token", cpu_workers.token, "--gpus", "all"],
                                env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        done = finished(client, job)
        assert done["status"] == "succeeded", log.read_text()
        def gpu_workers() -> list[tuple[int, str, int]] | None:
            listed = sorted((w["device"]["index"], w["device"]["name"],
                             w["device"]["memory_bytes"])
                            for w in client.get("/v1/workers").json()["data"]
                            if w["device"]["kind"] == "cuda")
            return listed if len(listed) == 2 else None  # one may have trained it alone

        listed = wait_for("both GPU workers to register", gpu_workers)
        assert listed == [(0, "Fake GPU 0", 1 << 30), (1, "Fake GPU 1", 2 << 30)]
        epochs = client.get(f"/v1/jobs/{job}/epochs").json()
        assert [e["epoch"] for e in epochs] == [1, 2] and epochs[-1]["metrics"][
            "val_accuracy"] > 0.8
    finally:
        gpus.terminate()
        status = gpus.wait(60)
    text = log.read_text()
    assert status == 0, text
    assert f"job {job}: claimed" in text and f"job {job}: claimed" not in cpu_workers.logs()[0]
    assert text.count("worker stopped") == 2, text  # each GPU's worker, on the SIGTERM
    assert cpu.poll() is None and cpu_listed


def test_gpus_lists_the_gpus_named_or_every_gpu_the_machine_shows(monkeypatch):
    assert worker_device.parse_gpus("0, 3") == [0, 3]
    monkeypatch.setattr(worker_device, "gpu_count", lambda: 3)
    assert worker_device.parse_gpus("all") == worker_device.parse_gpus(" ALL ") == [0, 1, 2]
