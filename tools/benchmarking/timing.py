"""How the benchmark measures: turn-based timing in blocks, latency statistics over quiet runs,
paired ratios that follow a drifting machine, and the peak memory of one step.

Timing: the timed functions take turns in blocks of consecutive runs, each block after one untimed
run (time_in_blocks), so a change in background load hits all of them alike; runs during which
other processes used the CPU (CpuMonitor, from /proc/stat) are left out of the median when enough
quiet runs remain (latency_stats). Memory: the increase of the process's peak resident set size
(Linux VmHWM, reset through /proc/self/clear_refs, after returning freed heap to the OS; PeakMemory).
"""
import contextlib
import ctypes
import os
import statistics
import time


class CpuMonitor:
    """CPU time other processes used during a measurement, from /proc/stat (Linux; None elsewhere).

    `other_seconds()` after `start()`: (all busy CPU time) - (this process's CPU time).
    """

    def __init__(self):
        """Reads /proc/stat where it exists; its counts are in clock ticks."""
        self.available = os.path.exists("/proc/stat")
        self.tick = os.sysconf("SC_CLK_TCK") if self.available else 100

    def _busy_ticks(self):
        """CPU ticks spent busy since boot, over all CPUs."""
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:8]]
        return sum(fields) - fields[3] - fields[4]  # minus idle and iowait

    def start(self):
        """Start counting: note the busy ticks so far and this process's CPU time."""
        if self.available:
            self._busy, self._own = self._busy_ticks(), sum(os.times()[:2])

    def other_seconds(self):
        """CPU seconds other processes used since start(), or None off Linux."""
        if not self.available:
            return None
        return (self._busy_ticks() - self._busy) / self.tick - (sum(os.times()[:2]) - self._own)


def _is_quiet(seconds, other):
    """A run was quiet when other processes used at most max(20 ms, 5% of its duration) of CPU time."""
    return other is not None and other <= max(0.02, 0.05 * seconds)


def latency_stats(samples):
    """[(seconds, other-process CPU seconds or None, block index)] -> summary in ms.

    A run is "quiet" when other processes used at most max(20 ms, 5% of its duration)
    of CPU time meanwhile (/proc/stat counts in 10 ms ticks). The median is over the
    quiet runs when at least half of the runs were quiet, else over all runs, and
    then `contended` is set.
    """
    seconds = [t for t, *_ in samples]
    quiet = [t for t, other, _ in samples if _is_quiet(t, other)]
    use = quiet if len(quiet) * 2 >= len(samples) else seconds
    return {"median_ms": 1e3 * statistics.median(use), "min_ms": 1e3 * min(seconds), "runs": len(samples),
            "quiet_runs": len(quiet), "contended": use is seconds}


def time_in_blocks(fns, runs, warmup, block=5):
    """Steady-state latency: each fn runs `block` times in a row, fns take turns, until each has `runs`.

    Every block starts with one untimed call: the first run after another model
    pays for that model's caches and idle worker threads, which is not the
    model's own latency. On this 2-core VM, alternating models call by call
    measured the R18 graph at 215 ms median in onnxruntime, runs in blocks at
    178 ms within the same quarter of an hour. Taking turns by blocks still
    spreads slow spells of background load over all models. `warmup` untimed
    calls per fn come first.

    Returns per-fn lists of (seconds, CPU seconds other processes used meanwhile,
    index of the block).
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    monitor = CpuMonitor()
    samples = [[] for _ in fns]
    block_index = 0
    while any(len(out) < runs for out in samples):
        for fn, out in zip(fns, samples):
            todo = min(block, runs - len(out))
            if todo > 0:
                out += _time_block(fn, todo, monitor, block_index)
        block_index += 1
    return samples


def _time_block(fn, runs, monitor, block_index):
    """One untimed call, then `runs` timed ones: [(seconds, other-process CPU seconds, block_index)]."""
    fn()
    out = []
    for _ in range(runs):
        monitor.start()
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        out.append((elapsed, monitor.other_seconds(), block_index))
    return out


def _block_medians(samples):
    """{block index: median seconds over the block's quiet runs (all runs if none was quiet)}."""
    blocks = {}
    for seconds, other, index in samples:
        blocks.setdefault(index, []).append((seconds, _is_quiet(seconds, other)))
    return {i: statistics.median([t for t, q in runs if q] or [t for t, _ in runs]) for i, runs in blocks.items()}


def paired_ratio(reference, samples):
    """Latency ratio to the reference, robust to drifting machine speed.

    Each block of `samples` ran right after the reference's block with the same index
    and right before its next one (time_in_blocks takes turns in a fixed order, the
    reference first), so it is compared with the mean of those two reference blocks.
    Returns the median of these per-block ratios (None without blocks).
    """
    ref, own = _block_medians(reference), _block_medians(samples)
    ratios = []
    for i, value in own.items():
        neighbours = [ref[j] for j in (i, i + 1) if j in ref]
        if neighbours:
            ratios.append(value / statistics.mean(neighbours))
    return statistics.median(ratios) if ratios else None


def _status_kib(key):
    """A field of /proc/self/status in KiB (VmRSS, VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory():
    """Return freed heap pages to the OS (glibc), so they do not hide the next peak."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak RSS increase (MiB) inside the `with` block; `.mib` is None where unsupported."""

    def __enter__(self):
        """Return freed heap, reset the peak (VmHWM) to the current RSS and note that RSS."""
        self.mib = None
        _release_free_memory()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self._start = _status_kib("VmRSS")
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc):
        """`.mib` = (peak RSS since __enter__ - RSS then) in MiB; exceptions pass through."""
        peak = _status_kib("VmHWM")
        if self._start is not None and peak is not None:
            self.mib = (peak - self._start) / 1024
        return False
