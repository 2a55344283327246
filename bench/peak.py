"""A benchmark child's own peak memory."""


def own_peak_mib() -> int:
    """This process's own peak RSS (VmHWM of its address space). ``ru_maxrss`` from ``wait4``
    is not: Linux carries the parent's RSS at fork into the child's across ``exec``."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    return 0
