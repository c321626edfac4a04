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
