"""Worker processes with an image-level progress bar (images/s, ETA) and bounded memory."""

import multiprocessing as mp
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tqdm import tqdm

_counter: Any = None  # each worker's handle on the shared count of finished images


def _init(counter: Any) -> None:
    global _counter
    _counter = counter


def tick() -> None:
    """Counts one finished image (called in workers; a no-op outside a pool)."""
    if _counter is not None:
        with _counter.get_lock():
            _counter.value += 1


def run_tasks(fn: Callable[[Any], Any], tasks: Iterable[Any], workers: int, total: int, desc: str,
              initial: int = 0) -> Iterator[Any]:
    """Runs ``fn`` over ``tasks`` in ``workers`` processes, yielding results as they finish.

    At most ``2 * workers`` tasks are in flight, so memory does not grow with the dataset. The bar
    counts images (each worker calls ``tick``), not tasks.
    """
    ctx = mp.get_context("fork")
    counter = ctx.Value("q", 0)
    bar = tqdm(total=total, initial=initial, desc=desc, unit="img", dynamic_ncols=True, smoothing=0.05)
    with ctx.Pool(workers, initializer=_init, initargs=(counter,)) as pool:
        pending: list[Any] = []
        task_iter = iter(tasks)
        exhausted = False
        while pending or not exhausted:
            while not exhausted and len(pending) < 2 * workers:
                try:
                    pending.append(pool.apply_async(fn, (next(task_iter),)))
                except StopIteration:
                    exhausted = True
            done = [r for r in pending if r.ready()]
            bar.update(counter.value - (bar.n - initial))
            if not done:
                time.sleep(0.05)
                continue
            for result in done:
                pending.remove(result)
                yield result.get()  # re-raises a worker's exception here
        bar.update(counter.value - (bar.n - initial))
    bar.close()
