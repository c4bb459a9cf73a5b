"""The Ray worker pool: ``--ray local`` starts a Ray on this machine with its resources, ``--ray
ADDRESS`` joins a running cluster (``ray start``, KubeRay, a cloud launcher).

One actor per worker holds the loaded model (loaded on its first job, then reused), asks for a
GPU where the cluster has GPUs and for CPUs otherwise; units go to whichever actor is free,
preferring one that has the unit's model loaded. Ray restarts an actor whose process died
(``max_restarts=-1``); the unit it was running is started again on it up to ``retries`` times
(each unit is idempotent: it first removes what the dead attempt left), then fails alone.

Ray is an optional extra (``pip install 'sam2_web[ray]'``); without it :class:`RayPool`
raises :class:`RayUnavailableError`. Paths in the manifest must be the same on every node
(shared storage), and sam2_web must be installed on every node.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from sam2_web.errors import Sam2WebError

from sam2_web.batch.manifest import JobProblem
from sam2_web.batch.report import WorkerStats
from sam2_web.batch.work import ModelLoads, Unit, UnitResult, execute, peak_gpu_mb, peak_rss_mb, worker_name

if TYPE_CHECKING:
    from sam2_web.batch.runner import BatchRun

INSTALL_HINT = "pip install 'sam2_web[ray]'"
# Memory a CPU worker is planned with (peak RSS measured ~0.9 GiB for sam2.1_hiera_t at 256 px,
# ~1.5 GiB at 1024 px, ~2.5 GiB for sam2.1_hiera_l at 1024 px; docs/batch.md).
CPU_WORKER_MEMORY = 2 * 2 ** 30
_PROGRESS_EVERY_S = 0.2
_PROBES = 20  # a restarting worker answers "unavailable" at most this many times before it counts as gone


class RayUnavailableError(Sam2WebError, RuntimeError):
    """Ray was asked for but is not installed, the cluster cannot be reached, or no worker starts."""


def import_ray() -> Any:
    """The ``ray`` module (Ray is imported only here, when a Ray run starts).

    Raises:
        RayUnavailableError: Ray is not installed (the message says how to install it).
    """
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailableError(f"--ray needs Ray, an optional extra of sam2_web: {INSTALL_HINT} "
                                  f"(it could not be imported: {exc})") from None
    return ray


class BatchWorker:
    """One Ray actor: a process with a loaded model that runs units (``ray.remote`` wraps it).

    Args:
        label: ``w<index>`` (its name in reports).
        token: the batch's token; the scratch folder is ``sam2web-<label>-<token>``, so a restarted
            actor finds and removes what its dead predecessor left there; the progress board is
            the actor named ``sam2web-board-<token>``.
        scratch_parent: folder for the scratch folder (None: the system temp folder).
        threads: torch threads (None: torch's default).
    """

    def __init__(self, label: str, token: str, scratch_parent: Optional[str], threads: Optional[int]):
        import ray

        self.label = label
        # Looked up by name: plain arguments only, so Ray can always restart the actor.
        self.board = ray.get_actor(f"sam2web-board-{token}")
        self.scratch = Path(scratch_parent or tempfile.gettempdir()) / f"sam2web-{label}-{token}"
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(parents=True)
        tempfile.tempdir = str(self.scratch)  # the video engine's session files go here too
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.name = worker_name(label)
        self.models = ModelLoads()
        self.units = 0

    def hello(self) -> tuple[str, int]:
        """``(name, pid)``: the worker is up."""
        return self.name, os.getpid()

    def run(self, unit: Unit, attempt: int) -> UnitResult:
        """Run one unit, posting progress to the board (at most every 0.2 s, and at every stage change)."""
        last = {"at": 0.0, "stage": None}

        def report(uid: str, stage: str, done: int, total: int) -> None:
            now = time.monotonic()
            if stage != last["stage"] or done >= total or now - last["at"] >= _PROGRESS_EVERY_S:
                last["at"], last["stage"] = now, stage
                self.board.update.remote(uid, attempt, stage, done, total)

        result = execute(unit, self.models, worker=self.name, report=report)
        self.units += 1
        return result

    def stats(self) -> WorkerStats:
        """This worker's statistics (of its current process)."""
        return WorkerStats(self.name, self.units, self.models.loads, round(self.models.load_seconds, 3),
                           round(peak_rss_mb(), 1), peak_gpu_mb())

    def close(self) -> WorkerStats:
        """Remove the scratch folder; returns the statistics."""
        shutil.rmtree(self.scratch, ignore_errors=True)
        return self.stats()


class ProgressBoard:
    """A small actor the workers post progress to and the driver reads."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, str, int, int]] = {}

    def update(self, uid: str, attempt: int, stage: str, done: int, total: int) -> None:
        self.entries[uid] = (attempt, stage, done, total)

    def snapshot(self) -> dict[str, tuple[int, str, int, int]]:
        return dict(self.entries)


class RayPool:
    """Runs units on Ray actors.

    Args:
        address: ``local`` (start a Ray on this machine, or use the one this process already
            started) or a cluster address (``ray://head:10001``, ``head:6379``, ``auto``).
        workers: number of actors (default: one per GPU; without GPUs one per CPU, as many as
            the cluster's memory holds at ``CPU_WORKER_MEMORY`` each).
        cpus_per_worker: CPUs each actor asks for (default: the cluster's CPUs shared evenly;
            also its torch thread count).
        scratch: parent folder of the workers' scratch folders (default: each node's temp folder).
        start_timeout: seconds to wait for the first worker to start.
        poll: seconds between progress reads.
    """

    def __init__(self, address: str = "local", *, workers: Optional[int] = None,
                 cpus_per_worker: Optional[float] = None, scratch: Optional[str | Path] = None,
                 start_timeout: float = 300.0, poll: float = 0.25):
        self.address = address
        self.name = "ray local" if address == "local" else f"ray {address}"
        self.requested = workers
        self.cpus_per_worker = cpus_per_worker
        self.scratch = str(scratch) if scratch is not None else None
        self.start_timeout = start_timeout
        self.poll = poll
        self.token = secrets.token_hex(4)
        self.actors: list[Any] = []
        self.names: list[str] = []
        self.pids: list[int] = []
        self.resources: dict[str, float] = {}
        self._ray: Any = None
        self._owns_ray = False
        self._board: Any = None
        self._starting: dict[Any, int] = {}  # hello() calls of actors not up yet at the start
        self._stats: dict[int, WorkerStats] = {}
        # While running: idle actors, hello() calls in flight (an actor starting or restarting) and
        # how often each restarting actor was asked, the model each actor has loaded, units in flight.
        self._idle: list[int] = []
        self._probing: dict[Any, int] = {}
        self._probes: dict[int, int] = {}
        self._loaded: dict[int, tuple] = {}
        self._inflight: dict[Any, tuple[Unit, int]] = {}

    # ------------------------------------------------------------------ start / stop

    def _init(self) -> Any:
        ray = import_ray()
        if ray.is_initialized():
            return ray
        try:
            if self.address == "local":
                ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
            else:
                ray.init(address=self.address, logging_level=logging.WARNING)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError... for a bad cluster
            where = "start a local Ray" if self.address == "local" else f"join the Ray cluster at {self.address}"
            raise RayUnavailableError(f"cannot {where} ({exc}); check the address, or start the cluster "
                                      "with `ray start --head`") from None
        self._owns_ray = True
        return ray

    def placement(self) -> tuple[int, dict[str, float], int]:
        """``(workers, actor resource request, torch threads)`` for the cluster's ``resources``
        (from ``ray.cluster_resources()``)."""
        resources = self.resources
        gpus = int(resources.get("GPU", 0))
        cpus = float(resources.get("CPU", 1))
        if gpus >= 1:
            n = self.requested or gpus
            # More workers than GPUs share them: k per GPU, each asking for 1/k (rounded down so k fit).
            per_gpu = math.ceil(n / gpus)
            share = 1 if per_gpu == 1 else math.floor(10000 / per_gpu) / 10000
            per = self.cpus_per_worker or max(1, int(cpus // n))
            return n, {"num_gpus": share, "num_cpus": per}, max(1, int(per))
        # One single-threaded worker per CPU beats fewer multi-threaded ones for throughput
        # (docs/batch.md); memory caps the count.
        by_memory = int(resources["memory"] // CPU_WORKER_MEMORY) if "memory" in resources else int(cpus)
        n = self.requested or max(1, min(int(cpus), by_memory))
        per = self.cpus_per_worker or (int(cpus // n) if cpus >= n else round(cpus / n, 4))
        return n, {"num_cpus": per}, max(1, int(per))

    def start(self) -> int:
        """Start Ray (or join the cluster) and the worker actors; returns the number of workers.

        Raises:
            RayUnavailableError: Ray missing, cluster unreachable, or no worker started in time.
        """
        ray = self._ray = self._init()
        self.resources = dict(ray.cluster_resources())
        n, request, threads = self.placement()
        self._board = ray.remote(num_cpus=0)(ProgressBoard).options(name=f"sam2web-board-{self.token}").remote()
        worker_cls = ray.remote(BatchWorker)
        for k in range(n):
            actor = worker_cls.options(max_restarts=-1, max_task_retries=0, **request).remote(
                f"w{k}", self.token, self.scratch, threads)
            self.actors.append(actor)
            self.names.append(f"w{k}")
            self.pids.append(0)
            self._starting[actor.hello.remote()] = k
        # Wait (bounded) for all of them, so the first jobs spread over every worker; at least one must come.
        deadline = time.monotonic() + self.start_timeout
        while self._starting and time.monotonic() < deadline:
            ready, _ = ray.wait(list(self._starting), num_returns=len(self._starting),
                                timeout=max(0.0, deadline - time.monotonic()))
            for ref in ready:
                self._hello(ref, self._starting.pop(ref))
            if not ready:
                break
        if all(pid == 0 for pid in self.pids):
            kind = "GPU" if "num_gpus" in request else "CPU"
            self.stop()
            raise RayUnavailableError(
                f"no Ray worker started within {self.start_timeout:.0f} s; each asks for {request} and the cluster "
                f"has {self.resources}: free a {kind}, add nodes, or ask for fewer --workers"
            )
        return n

    def _hello(self, ref: Any, k: int) -> bool:
        try:
            self.names[k], self.pids[k] = self._ray.get(ref)
            return True
        except self._ray.exceptions.RayError:
            return False

    def stop(self) -> list[WorkerStats]:
        """Collect the workers' statistics, remove their scratch folders, release them, and
        shut Ray down if this pool started it."""
        ray = self._ray
        if ray is None:
            return []
        alive = [k for k, pid in enumerate(self.pids) if pid]
        refs = {self.actors[k].close.remote(): k for k in alive}
        if refs:
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=30)
            for ref in ready:
                try:
                    self._stats[refs[ref]] = ray.get(ref)
                except ray.exceptions.RayError:
                    pass
        for actor in [*self.actors, self._board]:
            if actor is not None:
                ray.kill(actor, no_restart=True)
        if self.address == "local":
            parent = Path(self.scratch or tempfile.gettempdir())
            for leftover in parent.glob(f"sam2web-w*-{self.token}"):  # the scratch of workers that were killed
                shutil.rmtree(leftover, ignore_errors=True)
        if self._owns_ray:
            ray.shutdown()
        self._ray = None
        return [self._stats[k] for k in sorted(self._stats)]

    # ------------------------------------------------------------------ running

    def run(self, batch: "BatchRun") -> None:
        """Spread the batch's units over the actors until all are done (or the batch is cancelled)."""
        self._idle = [k for k, pid in enumerate(self.pids) if pid]
        self._probing = dict(self._starting)
        stalled_since: Optional[float] = None
        try:
            while True:
                self._hand_out(batch)
                # Work waits but no worker runs or comes back (all gone, or never placed): give up in time.
                stalled = not self._inflight and batch.has_pending()
                stalled_since = (stalled_since or time.monotonic()) if stalled else None
                if not self._inflight and (not batch.has_pending() or not self._probing
                                           or time.monotonic() - stalled_since > self.start_timeout):
                    for unit in batch.queue.drain() if batch.has_pending() else []:
                        problem = JobProblem("WorkerDiedError", "no Ray worker is left to run this job")
                        batch.finished(unit, UnitResult(unit.uid, False, error=problem))
                    return
                waiting = [*self._inflight, *self._probing]
                ready, _ = self._ray.wait(waiting, num_returns=1, timeout=self.poll)
                if ready:
                    ready, _ = self._ray.wait(waiting, num_returns=len(waiting), timeout=0)
                for ref in ready:
                    if ref in self._probing:
                        self._on_hello(ref)
                    else:
                        self._on_result(ref, batch)
                self._read_progress(batch)
        except KeyboardInterrupt:
            self._stop_now(batch)

    def _hand_out(self, batch: "BatchRun") -> None:
        """Give every idle actor a unit, preferring one for the model it has loaded."""
        while self._idle and batch.has_pending():
            k = self._idle.pop(0)
            unit = batch.take(self._loaded.get(k))
            if unit is None:
                self._idle.insert(0, k)
                return
            attempt = batch.started(unit, self.names[k], self.pids[k])
            self._inflight[self.actors[k].run.remote(unit, attempt)] = (unit, k)
            if unit.model_key:
                self._loaded[k] = unit.model_key

    def _on_hello(self, ref: Any) -> None:
        """An actor answered (it is up, with a new pid after a restart) or is gone."""
        errors = self._ray.exceptions
        k = self._probing.pop(ref)
        try:
            self.names[k], self.pids[k] = self._ray.get(ref)
            self._probes.pop(k, None)
            self._idle.append(k)
        except errors.ActorUnavailableError:  # still restarting: ask again (bounded)
            self._probes[k] = self._probes.get(k, 0) + 1
            if self._probes[k] < _PROBES:
                self._probing[self.actors[k].hello.remote()] = k
        except errors.RayError:
            pass  # gone for good: it gets no more work

    def _on_result(self, ref: Any, batch: "BatchRun") -> None:
        """A unit came back, or its worker died (then Ray restarts it and the unit may run again)."""
        errors = self._ray.exceptions
        unit, k = self._inflight.pop(ref)
        try:
            result = self._ray.get(ref)
        except (errors.RayActorError, errors.OutOfMemoryError, errors.WorkerCrashedError) as exc:
            self._loaded.pop(k, None)
            self.pids[k] = 0
            batch.died(unit, _first_line(exc))
            self._probing[self.actors[k].hello.remote()] = k  # answers once Ray restarted it
            return
        except errors.RayTaskError as exc:  # a bug in the worker code: this unit fails, the worker stays
            result = UnitResult(unit.uid, False, error=JobProblem(type(exc).__name__, _first_line(exc)),
                                worker=self.names[k])
        batch.finished(unit, result)
        self._idle.append(k)

    def _stop_now(self, batch: "BatchRun") -> None:
        """Ctrl-C: kill the workers, wait (bounded) until they are gone, mark their units cancelled."""
        batch.cancel.set()
        for actor in self.actors:
            self._ray.kill(actor, no_restart=True)
        if self._inflight:  # their files are removed once nothing writes them any more
            self._ray.wait(list(self._inflight), num_returns=len(self._inflight), timeout=30)
        for unit, _k in self._inflight.values():
            batch.died(unit, "stopped by Ctrl-C")
        self.pids = [0] * len(self.pids)

    def _read_progress(self, batch: "BatchRun") -> None:
        try:
            entries = self._ray.get(self._board.snapshot.remote())
        except self._ray.exceptions.RayError:  # progress is a display: the jobs go on without it
            return
        for uid, (attempt, stage, done, total) in entries.items():
            running = batch.status.running.get(uid)
            if running is not None and running.attempt == attempt and (stage, done) != (running.stage, running.done):
                batch.progress(uid, stage, done, total)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
