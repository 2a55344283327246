"""A benchmark child's own peak memory."""


def own_peak_mib() -> int:
    """This process's own peak RSS (VmHWM of its address space). ``ru_maxrss`` from ``wait4``
    is not: Linux carries the parent's RSS at fork into the child's across ``exec``."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    return 0


class RssSampler:
    """This process's RSS sampled every ``interval`` seconds from a thread (``/proc/self/statm``),
    to attribute the peak to the steps that were running: :meth:`peak_between`."""

    def __init__(self, interval: float = 0.02):
        import os
        import threading

        self.interval, self.samples = interval, []
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import time

        while not self._stop.is_set():
            with open("/proc/self/statm") as fh:
                rss = int(fh.read().split()[1]) * self._page
            self.samples.append((time.time(), rss))
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> int:
        """The largest RSS sampled in ``[start, end]`` (epoch seconds), in MiB."""
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return round(max(inside, default=0) / (1 << 20))
