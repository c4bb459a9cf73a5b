"""Work that must not stall the tracking loop: copies off the device and a serial worker thread.

On a GPU, every ``.cpu()``, ``.item()`` or ``.numpy()`` in the per-frame loop makes the host wait
until the device has finished everything queued so far; the next frame's kernels then start on an
idle GPU. The loop instead:

* starts each copy to the host as a :class:`HostCopy` (``non_blocking`` into pinned memory, with
  a CUDA event to wait on) and lets whoever needs the bytes wait for them later;
* packs boolean masks into bits on the device first (:func:`pack_masks`), so a copy is 8 times
  smaller;
* hands file writes and run-length encoding to a :class:`SerialWorker` thread.

On the CPU the same code runs: a host copy is the tensor itself and waits for nothing.
"""

from __future__ import annotations

import functools
import queue
import threading
from typing import Any, Callable, Optional

import numpy as np
import torch

# Big-endian bit weights, the order np.unpackbits reads back.
_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)


class HostCopy:
    """A tensor on its way to host memory; the copy starts when this is created.

    Args:
        tensor: any tensor. A CUDA tensor is copied ``non_blocking`` into pinned memory and an
            event is recorded on the current stream; a CPU tensor is taken as it is (no copy),
            so the caller must not change it in place afterwards.
    """

    def __init__(self, tensor: torch.Tensor):
        self._event: Optional[torch.cuda.Event] = None
        if tensor.device.type == "cuda":
            self._host = tensor.to("cpu", non_blocking=True)  # pinned when non_blocking from CUDA
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host = tensor.to("cpu", non_blocking=True)  # mps: waits; cpu: the tensor itself

    def ready(self) -> bool:
        """Whether the bytes have arrived (never waits)."""
        event = self._event
        return event is None or event.query()

    def result(self) -> torch.Tensor:
        """The CPU tensor, waiting for the copy if it is still under way."""
        event = self._event
        if event is not None:
            event.synchronize()  # safe to repeat when two threads wait
            self._event = None
        return self._host


def pack_masks(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool masks as (N, ceil(H*W / 8)) uint8 bits, row-major, on the masks' device.

    :func:`unpack_masks` is the inverse; ``np.packbits`` of the flattened masks gives the same bytes.
    """
    flat = masks.reshape(masks.shape[0], -1).to(torch.uint8)
    pad = (-flat.shape[1]) % 8
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad))
    return (flat.view(flat.shape[0], -1, 8) * _bit_weights(masks.device)).sum(dim=-1, dtype=torch.uint8)


@functools.lru_cache(maxsize=None)
def _bit_weights(device: torch.device) -> torch.Tensor:
    return torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8).to(device, non_blocking=True)


def unpack_masks(packed: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, bytes) uint8 from :func:`pack_masks` back to (N, height, width) bool."""
    bits = np.unpackbits(packed, axis=1, count=height * width)
    return bits.view(bool).reshape(packed.shape[0], height, width)


class SerialWorker:
    """One daemon thread that runs submitted calls in submission order.

    A failure is kept and raised (once) by the next :meth:`submit` or :meth:`flush`, so an error
    on the worker (a full disk, say) reaches the caller instead of vanishing. At most
    ``max_pending`` calls wait; :meth:`submit` blocks beyond that, which bounds the memory that
    queued work holds when the worker falls behind.

    Args:
        name: the thread's name (shows in debuggers and tracebacks).
        max_pending: queue bound.
    """

    def __init__(self, name: str, max_pending: int = 64):
        self.name = name
        self._queue: "queue.Queue[Optional[tuple[Callable[..., Any], tuple]]]" = queue.Queue(max_pending)
        self._error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None
        self._start_lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the worker after everything submitted before.

        Raises:
            RuntimeError: the worker is closed. Any exception an earlier call raised on the worker.
        """
        if self._closed:
            raise RuntimeError(f"the {self.name} worker is closed")
        self._raise_error()
        self._ensure_thread()
        self._queue.put((fn, args))

    def flush(self, raise_errors: bool = True) -> None:
        """Wait until every submitted call has run; then raise a stored failure if ``raise_errors``."""
        if self._thread is not None:
            self._queue.join()
        if raise_errors:
            self._raise_error()

    def close(self) -> None:
        """Finish the queued calls and stop the thread (errors are dropped: the work is being thrown away)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        self._error = None

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                fn, args = item
                try:
                    fn(*args)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    if self._error is None:
                        self._error = exc
            finally:
                self._queue.task_done()
