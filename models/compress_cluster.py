"""`cortexloop compress SESSION --cluster ray[:ADDRESS]`: the per-neuron work of compress as Ray tasks.

The driver (models/compress.py, compress_from_arrays) trains the teacher and computes its rates once, as a
local run does. The runner made here then

1. puts the distillation pixels, the teacher's rates on them and on the held-out test set (and a virtual
   cortex's true rates) in Ray's object store, once;
2. launches one task per batch of `neurons_per_task` neurons: `compress_neurons` (distil, prune, retrain,
   evaluate), with one GPU a task where the rig's device is cuda (or "auto" on a cluster that has GPUs);
3. launches one CPU task per finished batch for its pages (MEI and figures, models/compress.py write_pages);
4. hands each neuron's row, model record and page back to the driver, which writes them into the same
   `compact/` directory as a local run (a neuron's row last: a neuron with a row is done, and a run into the
   same directory again does only the others).

Tasks whose worker dies are run again by Ray (`max_retries`); a task that fails for good leaves the other
neurons' results written, and the report names its neurons and the error. Ray is imported only here, and only
when a runner is made. How to start Ray on a Slurm allocation or on lab machines: docs/compress.md.
"""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from models.compress import NeuronJob, compress_neurons, neuron_record, population_of, write_pages
from models.distill import student_form
from models.online import prepare_torch_for, resolve_device

INSTALL = "pip install 'cortexloop[cluster]'"


def parse_cluster(text: str) -> str | None:
    """'ray' -> None (the cluster RAY_ADDRESS names, else a new one on this machine); 'ray:ADDRESS' -> ADDRESS
    (host:port of a running head, or 'auto'). ValueError for anything else."""
    kind, sep, address = text.partition(":")
    if kind != "ray":
        raise ValueError(f"--cluster {text!r}: the only cluster kind is ray (ray or ray:ADDRESS)")
    if sep and not address:
        raise ValueError(f"--cluster {text!r}: no address after 'ray:'")
    return address or None


def import_ray():
    """The ray module, or SystemExit saying how to install it."""
    try:
        import ray
    except ImportError:
        raise SystemExit(
            f"--cluster ray needs Ray, which is not installed in this Python environment: {INSTALL} "
            "(on the driver and on every worker machine)"
        ) from None
    return ray


def ray_runner(
    cluster: str = "ray",
    neurons_per_task: int = 1,
    max_retries: int = 3,
    on_task_start: Callable[[list[int]], None] | None = None,
    init: dict | None = None,
):
    """A runner for compress_from_arrays(runner=...) that runs the neurons as Ray tasks.

    cluster: "ray" or "ray:ADDRESS" (parse_cluster). Joins a Ray instance already started in this process
    as it is (and leaves it running); otherwise ray.init(address, **init) and ray.shutdown() at the end.
    neurons_per_task >= 1: students trained together in one task. max_retries >= 0: runs again of a task
    whose worker process died. on_task_start(neurons): called in the worker at the start of each compress
    task, before any work (to inject faults in tests). ValueError for a bad setting; SystemExit where Ray is
    not installed.
    """
    address = parse_cluster(cluster)
    if neurons_per_task < 1:
        raise ValueError(f"--neurons-per-task {neurons_per_task}: at least 1")
    if max_retries < 0:
        raise ValueError(f"--max-retries {max_retries}: at least 0")
    import_ray()

    def run(job: NeuronJob, arrays: dict, neurons: list[int], deliver, fail, log, progress) -> dict:
        return run_on_ray(
            job,
            arrays,
            neurons,
            deliver,
            fail,
            log,
            progress,
            address=address,
            neurons_per_task=neurons_per_task,
            max_retries=max_retries,
            on_task_start=on_task_start,
            init=init or {},
        )

    return run


def run_on_ray(
    job: NeuronJob,
    arrays: dict,
    neurons: list[int],
    deliver,
    fail,
    log,
    progress: Callable[[int, int, int], None],
    address: str | None,
    neurons_per_task: int,
    max_retries: int,
    on_task_start,
    init: dict,
) -> dict:
    """Runs `neurons` as Ray tasks and delivers each result (see the module docstring), calling
    progress(neurons done, running or queued, failed) as they change. Returns {"form",
    "stage_seconds": {"object_store_put", "cluster"}, "cluster": what ran where, in seconds}."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, **({"include_dashboard": False} | init))
    try:
        resources = ray.cluster_resources()
        gpu = _wants_gpu(job.model.device, resources)
        job = _form_for_every_task(job, gpu, min(neurons_per_task, len(neurons)), len(arrays["distill_images"]))
        t0 = time.perf_counter()
        ref = ray.put(arrays)
        put_s = time.perf_counter() - t0
        compress_task = ray.remote(_compress_task).options(
            num_cpus=max(1, job.model.cpu_threads), num_gpus=1 if gpu else 0, max_retries=max_retries
        )
        page_task = ray.remote(_page_task).options(num_cpus=1, num_gpus=0, max_retries=max_retries)
        batches = [neurons[i : i + neurons_per_task] for i in range(0, len(neurons), neurons_per_task)]
        # The reference goes inside a list so that the task fetches it itself (and times the fetch).
        pending = {compress_task.remote(job, [ref], b, on_task_start): ("compress", b, None) for b in batches}
        tasks, pages, forms = [], [], set()
        done = failed = 0
        progress(done, len(neurons), failed)
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            kind, batch, payload = pending.pop(ready)
            try:
                out = ray.get(ready)
            except Exception as err:  # the task failed for good (raised, or its worker died max_retries+1 times)
                text = error_text(err)
                for n in batch:
                    fail(n, f"{kind}: {text}")
                failed += len(batch)
                log(f"neurons {batch}: {kind} task failed: {text}")
                progress(done, len(neurons) - done - failed, failed)
                continue
            if kind == "compress":
                rows, records, info = out
                tasks.append(info | {"neurons": batch})
                forms.add(info["form"])
                pending[page_task.remote(job, [ref], rows, records)] = ("pages", batch, (rows, records))
            else:
                infos, pngs, info = out
                pages.append(info | {"neurons": batch})
                for row, record, page, png in zip(*payload, infos, pngs):
                    deliver(row | page, record, png)
                done += len(batch)
            progress(done, len(neurons) - done - failed, failed)
        wall = time.perf_counter() - t0
    finally:
        if started:
            ray.shutdown()
    worker_stages: dict[str, float] = {}
    for t in tasks:
        for k, v in t["stage_seconds"].items():
            worker_stages[k] = round(worker_stages.get(k, 0.0) + v, 2)
    worker_stages["pages"] = round(sum(p["seconds"] for p in pages), 2)
    get_s = sum(t["object_store_get_s"] for t in tasks) + sum(p["object_store_get_s"] for p in pages)
    return {
        "form": "/".join(sorted(forms)) or job.compression.distill_form,
        "stage_seconds": {"object_store_put": round(put_s, 3), "cluster": round(wall, 2)},
        "cluster": {
            "address": address or "local or RAY_ADDRESS",
            "resources": {k: resources[k] for k in ("CPU", "GPU") if k in resources},
            "gpu_per_task": gpu,
            "neurons_per_task": neurons_per_task,
            "max_retries": max_retries,
            "tasks": len(tasks),
            "seconds": round(wall, 2),
            "object_store_put_s": round(put_s, 3),
            "object_store_get_s": round(get_s, 3),
            "object_store_mb": round(sum(a.nbytes for a in arrays.values() if a is not None) / 1e6, 1),
            "worker_stage_seconds": worker_stages,
            "task_seconds": [round(t["seconds"], 2) for t in tasks],
            "cpu_seconds": round(sum(t["cpu_seconds"] for t in tasks) + sum(p["cpu_seconds"] for p in pages), 2),
            "page_seconds": [round(p["seconds"], 2) for p in pages],
            "nodes": sorted({t["node"] for t in tasks}),
        },
    }


def error_text(err: BaseException) -> str:
    """One line naming what went wrong in a task: the task's own exception where Ray carries it."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        err = cause
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first}"


def _wants_gpu(device: str, resources: dict) -> bool:
    """One GPU a task where the rig's device is cuda, or "auto" on a cluster that has GPUs."""
    if device.startswith("cuda"):
        if not resources.get("GPU"):
            raise RuntimeError(f"model.device = {device!r} but the Ray cluster has no GPUs")
        return True
    return device == "auto" and resources.get("GPU", 0) > 0


def _form_for_every_task(job: NeuronJob, gpu: bool, n_students: int, n_images: int) -> NeuronJob:
    """`job` with distill_form "auto" resolved once, here, for a task's students where the tasks run on this
    machine's kind of device, so that every task trains in the same form (timing it in each task under
    different loads could pick different forms, whose results differ by more than rounding); otherwise each
    task times it on its own device."""
    ccfg = job.compression
    if ccfg.distill_form != "auto":
        return job
    here = resolve_device("cuda" if gpu and torch.cuda.is_available() else "cpu")
    if (here.type == "cuda") != gpu:
        return job
    form = student_form("auto", here, job.spec, n_students, min(ccfg.distill_batch_size, n_images))
    return replace(job, compression=ccfg.model_copy(update={"distill_form": form}))


def _worker_arrays(holder: list) -> tuple[dict, float]:
    """The shared arrays from the object store (the large distillation pixels stay there, read-only; the
    small ones are copied to be writable), and the seconds the fetch took."""
    import ray

    t0 = time.perf_counter()
    arrays = dict(ray.get(holder[0]))
    for k in ("test_images", "truth"):
        if arrays.get(k) is not None:
            arrays[k] = np.array(arrays[k])
    return arrays, time.perf_counter() - t0


def _compress_task(job: NeuronJob, holder: list, neurons: list[int], on_task_start) -> tuple:
    """Ray task: (rows, model records, timings) of `neurons` (compress_neurons)."""
    if on_task_start is not None:
        on_task_start(neurons)
    t0, c0 = time.perf_counter(), time.process_time()
    arrays, get_s = _worker_arrays(holder)
    device = resolve_device(job.model.device)
    prepare_torch_for(device, job.model.cpu_threads)
    rows, models, info = compress_neurons(job, arrays, neurons, device)
    records = [neuron_record(m, row, job.window_s) for m, row in zip(models, rows)]
    info |= {
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
        "object_store_get_s": get_s,
        "node": platform.node(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    return rows, records, info


def _page_task(job: NeuronJob, holder: list, rows: list[dict], records: list[dict]) -> tuple:
    """Ray task (CPU): (what each page shows about its MEI, the PNG bytes, timings) of the batch's models."""
    from models.compact import CompactNet, CompactSpec

    t0, c0 = time.perf_counter(), time.process_time()
    arrays, get_s = _worker_arrays(holder)
    pool = np.array(arrays["distill_images"][: job.n_pool])
    cpu = torch.device("cpu")
    prepare_torch_for(cpu, job.model.cpu_threads)
    models = []
    for record in records:
        m = CompactNet(CompactSpec.from_dict(record["spec"]))
        m.load_state_dict(record["state_dict"])
        models.append(m.eval())
    population = population_of(job.rig) if job.rig.cortex.source == "virtual" else None
    with tempfile.TemporaryDirectory() as tmp:
        infos = write_pages(models, rows, pool, Path(tmp), job.mei_steps, cpu, job.model.seed, population)
        pngs = [(Path(tmp) / f"neuron_{r['neuron']:03d}.png").read_bytes() for r in rows]
    return (
        infos,
        pngs,
        {
            "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0,
            "object_store_get_s": get_s,
        },
    )
