"""The timing helper the benchmark scripts share."""
import statistics
import time


def median_seconds(run, repeats: int) -> float:
    """The median wall time of ``repeats`` calls of ``run()``, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(runs: dict, repeats: int, pause: float = 0.2) -> dict:
    """The median wall time of each of ``runs`` (name -> callable), in seconds, the calls taken
    in turns (a, b, a, b...) so that the machine's drift falls on all of them alike. ``pause``
    seconds between calls let threads that spin after a call (OpenMP's, OpenBLAS's) go idle
    before the next one starts."""
    times = {name: [] for name in runs}
    for turn in range(repeats):
        names = list(runs)
        for name in names[turn % len(names):] + names[:turn % len(names)]:
            time.sleep(pause)
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
