"""The measuring harness: every backend measured the same way, side by side, in one run.

Used by ``fastmnist bench``, the asv suite and the README's tables. Fairness rules:
every backend gets the same data, the same initial weights, the same permutation,
the same hyperparameters and the same thread count; backends are interleaved over
repeats (A B C A B C ...) so drifting machine load hits them alike; compile and
warm-up time is measured apart from throughput.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import hugepages
from .backends import available_backends, get_backend, resolve_backend_name
from .errors import ConfigError
from .model import Model, layer_sizes
from .numerics import resolve_dtype
from .optim import SGD
from .validation import check_positive_int, check_threads

#: The four configurations the performance targets are stated for.
DEFAULT_CONFIGS: tuple[tuple[tuple[int, ...], int], ...] = (
    ((10,), 128),
    ((128,), 32),
    ((128,), 128),
    ((512,), 128),
)


@dataclass(frozen=True)
class BenchConfig:
    """One network and batch size to measure."""

    hidden: tuple[int, ...]
    batch_size: int
    dtype: str = "float32"

    @property
    def label(self) -> str:
        sizes = "-".join(str(s) for s in layer_sizes(self.hidden))
        return f"{sizes} b{self.batch_size} {self.dtype}"


#: Seconds of untimed short epochs a backend runs right before each timed one:
#: on this VM a parallel kernel started after an idle pause ran its first
#: epoch up to 1.5x slower (cores parked by the hypervisor, pools asleep).
WAKE_SECONDS = 0.05

#: Seconds a backend idles between its training and its timed predictions.
#: Training may leave a pool spinning that prediction does not use: the Numba
#: backend's OpenMP threads, beside the BLAS that it sends dense inputs to.
#: Measured here, BLAS ran 1.29x slower right after a Numba epoch and 0.99x
#: after 0.3 s.
PREDICT_SETTLE_SECONDS = 0.3

#: Steal share (percent of the CPUs' time) and ticks from which the table warns
#: that a row was measured on a disturbed machine. Rows here read 0-1.7%; the
#: Numba backend's 784-10-10 rows time about 50 ms of work, so one 10 ms tick
#: alone reads 10% on two CPUs, hence the count as well.
DISTURBED_PERCENT = 5.0
DISTURBED_TICKS = 3


def _settle(previous: Any) -> None:
    """Idle until the thread pools of the backend timed last have stopped spinning.

    On two cores a pool left spinning steals a core from the next backend:
    measured here, Numba's 784-10-10 epoch ran at 0.4-0.6M samples/s right
    after NumPy's BLAS and at 0.9M alone.
    """
    if previous is not None:
        time.sleep(previous.spin_seconds)


def _idle_before_predictions() -> None:
    """Idle :data:`PREDICT_SETTLE_SECONDS` (see there)."""
    time.sleep(PREDICT_SETTLE_SECONDS)


def _wake(backend: Any, model: Model, train_x: np.ndarray, train_y: np.ndarray,
          order: np.ndarray, batch_size: int, lrs: np.ndarray) -> None:
    """Run short untimed epochs for :data:`WAKE_SECONDS` (see there)."""
    few = order[: 4 * batch_size]
    start = time.perf_counter()
    while time.perf_counter() - start < WAKE_SECONDS:
        backend.train_epoch(model.copy(), SGD(), train_x, train_y, few, batch_size,
                            lrs[: -(-len(few) // batch_size)])


def without_zeros(data: Any, seed: int = 0) -> Any:
    """``data`` with every pixel replaced by a random value in 1-255 (labels kept).

    Benchmarks on it show the backends with nothing to skip: the Numba kernels'
    zero-skipping must then cost nothing.
    """
    from .data import Dataset, Split

    rng = np.random.default_rng(seed)

    def dense(split: Any) -> Split:
        return Split(rng.integers(1, 256, split.images.shape, dtype=np.uint8), split.labels)

    return Dataset(f"{data.name} without zeros", dense(data.train), dense(data.test))


def train_flops_per_sample(sizes: Sequence[int], batch_size: int) -> float:
    """Dense floating-point operations per training sample.

    Forward ``2·n_in·n_out`` per layer, the weight gradient as much again, the input
    gradient as much again for every layer but the first (nothing needs d/dX), and
    the optimizer update (about 4 flops per parameter) spread over the batch.
    Sparsity skipping does not change the count: skipped zeros are work avoided,
    not work done faster, and the figure stays comparable across backends.
    """
    macs = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    params = sum(macs) + sum(sizes[1:])
    return 2.0 * sum(macs) * 2 + 2.0 * sum(macs[1:]) + 4.0 * params / batch_size


def predict_flops_per_sample(sizes: Sequence[int]) -> float:
    """Dense floating-point operations per inference sample (forward only)."""
    return 2.0 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def measure_peak_gflops(threads: int | None, n: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 SGEMM rate through NumPy's BLAS on ``threads`` threads."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    best = float("inf")
    with threadpool_limits(limits=threads):
        a @ b  # first call pays for thread start-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def steal_ticks(path: str = "/proc/stat") -> int | None:
    """Clock ticks the hypervisor has run something else on this VM's CPUs, all CPUs summed.

    Linux's ``steal`` column of ``/proc/stat`` (ticks of ``1 / SC_CLK_TCK``
    seconds); None where there is no such file or field (not Linux, old kernels).
    On a shared VM it is what tells a slowed measurement from a slow kernel:
    here, 784-10-10 epochs that ran at a quarter of their usual speed had the
    hypervisor take most of the CPU time they spanned.
    """
    try:
        with open(path) as f:
            fields = f.readline().split()
        return int(fields[8]) if fields[:1] == ["cpu"] and len(fields) > 8 else None
    except (OSError, ValueError):
        return None


def stolen_percent(ticks: int, seconds: float, cpus: int) -> float:
    """Share of ``cpus`` CPUs' time over ``seconds`` that ``ticks`` of steal make up.

    Ticks are coarse (10 ms where ``SC_CLK_TCK`` is 100) against a benchmark's
    timed work of tenths of a second, so this flags a disturbed row rather than
    measures it; capped at 100.
    """
    if seconds <= 0:
        return 0.0
    tick = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
    return min(100.0, 100.0 * ticks * tick / (seconds * max(cpus, 1)))


class _StealMeter:
    """Steal ticks and seconds of each backend's timed work, summed over its windows.

    A window whose counter could not be read makes the backend's total unknown
    (None) rather than an undercount.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.ticks: dict[str, int | None] = {name: 0 for name in names}
        self.seconds = {name: 0.0 for name in names}
        self._open: tuple[int | None, float] | None = None

    def start(self) -> None:
        self._open = (steal_ticks(), time.perf_counter())

    def stop(self, name: str) -> None:
        if self._open is None:
            raise RuntimeError("stop() without start()")
        (ticks0, t0), self._open = self._open, None
        self.seconds[name] += time.perf_counter() - t0
        ticks1, before = steal_ticks(), self.ticks[name]
        if ticks0 is None or ticks1 is None or before is None:
            self.ticks[name] = None
        else:
            self.ticks[name] = before + max(0, ticks1 - ticks0)  # never backwards

    def percent(self, name: str) -> float | None:
        ticks = self.ticks[name]
        if ticks is None:
            return None
        return stolen_percent(ticks, self.seconds[name], os.cpu_count() or 1)


def _cpu_model(path: str = "/proc/cpuinfo") -> str:
    """The first CPU's model name with its family and model numbers.

    A VM may name its CPU no more precisely than "AMD EPYC"; the numbers tell
    the generations apart (family 25 is Zen 3, family 26 Zen 5).
    """
    fields: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    break  # the first CPU's block ends here
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def machine_record(threads: int | None) -> dict[str, Any]:
    """CPU, core count, threads used, library versions and BLAS kind."""
    from importlib.metadata import PackageNotFoundError, version

    from threadpoolctl import threadpool_info

    versions = {}
    for pkg in ("fastmnist", "numpy", "numba", "llvmlite", "torch", "jax", "jaxlib"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    blas = [
        {k: info.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        pass
    return {
        "cpu": _cpu_model(),
        "avx512": "avx512f" in flags,
        "huge_pages": hugepages.mode(),
        "cores": os.cpu_count(),
        "threads": threads,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
        "blas": blas,
    }


def _median_min_max(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": float(statistics.median(values)),
        "min": float(min(values)),
        "max": float(max(values)),
    }


@dataclass
class BenchResult:
    """Every measurement of one run, with the machine it ran on."""

    machine: dict[str, Any]
    peak_gflops: float | None
    settings: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_backends(names: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """Split requested backend names into installed ones and skipped ones (with why)."""
    installed, skipped = [], {}
    for name in names:
        name = resolve_backend_name(name)
        if name in available_backends():
            if name not in installed:
                installed.append(name)
        else:
            skipped[name] = "not installed"
    return installed, skipped


def run_benchmark(
    data: Any,
    *,
    backends: Sequence[str] = ("numpy", "numba"),
    configs: Sequence[BenchConfig] | None = None,
    threads: int | None = None,
    repeats: int = 3,
    step_repeats: int = 20,
    predict_repeats: int = 3,
    train_samples: int | None = None,
    lr: float = 0.05,
    momentum: float = 0.9,
    seed: int = 0,
    baseline: str | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Measure training and inference throughput of several backends side by side.

    For each configuration: every backend is warmed up (compile time recorded)
    and runs one untimed epoch and prediction (a burn-in); then for ``repeats``
    rounds each backend in turn trains one epoch from the same initial weights
    over the same permutation, runs ``step_repeats`` single train steps, and
    predicts the test set ``predict_repeats`` times (a prediction takes a tenth
    of an epoch or less, so one per round left its median at the mercy of the
    machine's noise). Before its timed work a backend waits until the
    previous one's thread pools have stopped spinning (:func:`_settle`) and
    wakes its own (:func:`_wake`); before its timed predictions it idles
    again (:data:`PREDICT_SETTLE_SECONDS`) and predicts the test set once;
    none of that is timed. Each row also gives ``stolen_percent`` and
    ``stolen_ticks``: the hypervisor's steal time over that backend's timed
    work (epochs, steps, predictions), as a share of all CPUs' time and in
    clock ticks (:func:`steal_ticks`; None where the system does not report it).

    Parameters
    ----------
    data : Dataset
        ``.train`` is trained on, ``.test`` predicted.
    backends : sequence of str
        Backend names; ones not installed are reported in ``skipped``.
    configs : sequence of BenchConfig, optional
        Defaults to :data:`DEFAULT_CONFIGS` in float32.
    threads : int, optional
        The thread count every backend gets (None: each backend's default).
    repeats : int
        Interleaved rounds; medians, minima and maxima are reported.
    train_samples : int, optional
        Train on the first ``n`` samples of the permutation instead of a full epoch.
    baseline : str, optional
        Backend the ``ratio`` column divides by (default: the first measured).

    Returns
    -------
    BenchResult
    """
    repeats = check_positive_int(repeats, "repeats")
    predict_repeats = check_positive_int(predict_repeats, "predict_repeats")
    threads = check_threads(threads)
    if configs is None:
        configs = [BenchConfig(h, b) for h, b in DEFAULT_CONFIGS]
    names, skipped = resolve_backends(backends)
    if not names:
        raise ConfigError("none of the requested backends is installed")
    if baseline is not None:
        baseline = resolve_backend_name(baseline)
        if baseline not in names:
            raise ConfigError(f"baseline backend {baseline!r} is not among those measured")
    say = on_progress or (lambda _msg: None)

    say("measuring the SGEMM peak")
    result = BenchResult(
        machine=machine_record(threads),
        peak_gflops=measure_peak_gflops(threads),
        settings={"threads": threads, "repeats": repeats, "lr": lr, "momentum": momentum,
                  "seed": seed, "train_samples": train_samples, "baseline": baseline or names[0]},
        skipped=skipped,
    )
    train_x, train_y = data.train.images, data.train.labels
    test_x = data.test.images
    n = len(train_x) if train_samples is None else min(train_samples, len(train_x))
    previous = None
    for cfg in configs:
        resolve_dtype(cfg.dtype)
        rng = np.random.default_rng(seed)
        model0 = Model.initialize(cfg.hidden, dtype=cfg.dtype, rng=rng)
        order = rng.permutation(len(train_x))[:n]
        steps = -(-n // cfg.batch_size)
        lrs = np.full(steps, lr)
        one_step = order[: cfg.batch_size]
        sizes = model0.sizes
        epoch_times: dict[str, list[float]] = {b: [] for b in names}
        step_times: dict[str, list[float]] = {b: [] for b in names}
        predict_times: dict[str, list[float]] = {b: [] for b in names}
        compile_s: dict[str, float] = {}
        meter = _StealMeter(names)
        for name in names:
            say(f"{cfg.label}: compiling {name}")
            backend = get_backend(name)
            with backend.limit_threads(threads):
                t0 = time.perf_counter()
                backend.warmup(model0.copy(), SGD(momentum), cfg.batch_size)
                # One tiny epoch and prediction absorb any remaining first-call cost.
                backend.train_epoch(model0.copy(), SGD(momentum), train_x, train_y,
                                    one_step, cfg.batch_size, lrs[:1])
                backend.predict_proba(model0, test_x[:8])
                compile_s[name] = time.perf_counter() - t0
                # An untimed full epoch and prediction: programs specialised to the
                # data's shape (JAX compiles one per epoch length) are built here,
                # not inside a timed repeat.
                backend.train_epoch(model0.copy(), SGD(momentum), train_x, train_y, order,
                                    cfg.batch_size, lrs)
                backend.predict_proba(model0, test_x)
            previous = backend
        for r in range(repeats):
            for name in names:
                say(f"{cfg.label}: {name} round {r + 1}/{repeats}")
                backend = get_backend(name)
                _settle(previous)
                previous = backend
                with backend.limit_threads(threads):
                    _wake(backend, model0, train_x, train_y, order, cfg.batch_size, lrs)
                    model, opt = model0.copy(), SGD(momentum)
                    meter.start()
                    t0 = time.perf_counter()
                    backend.train_epoch(model, opt, train_x, train_y, order, cfg.batch_size, lrs)
                    epoch_times[name].append(time.perf_counter() - t0)
                    k = max(1, step_repeats // repeats)
                    for _ in range(k):
                        t0 = time.perf_counter()
                        backend.train_epoch(model, opt, train_x, train_y, one_step,
                                            cfg.batch_size, lrs[:1])
                        step_times[name].append(time.perf_counter() - t0)
                    meter.stop(name)
                    # Predictions start from idle and are woken by an untimed one,
                    # as epochs are (see PREDICT_SETTLE_SECONDS).
                    _idle_before_predictions()
                    backend.predict_proba(model, test_x)
                    meter.start()
                    for _ in range(predict_repeats):
                        t0 = time.perf_counter()
                        backend.predict_proba(model, test_x)
                        predict_times[name].append(time.perf_counter() - t0)
                    meter.stop(name)
        base = baseline or names[0]
        base_rate = statistics.median(n / t for t in epoch_times[base])
        train_flops = train_flops_per_sample(sizes, cfg.batch_size)
        for name in names:
            rates = [n / t for t in epoch_times[name]]
            med = statistics.median(rates)
            gflops = med * train_flops / 1e9
            result.rows.append({
                "config": cfg.label,
                "hidden": list(cfg.hidden),
                "batch_size": cfg.batch_size,
                "dtype": cfg.dtype,
                "backend": name,
                "train_samples_per_second": _median_min_max(rates),
                "ratio": med / base_rate,
                "gflops": gflops,
                "percent_of_peak": 100.0 * gflops / result.peak_gflops,
                "step_seconds": _median_min_max(step_times[name]),
                "predict_samples_per_second": _median_min_max(
                    [len(test_x) / t for t in predict_times[name]]
                ),
                "predict_gflops": statistics.median(
                    [len(test_x) / t for t in predict_times[name]]
                ) * predict_flops_per_sample(sizes) / 1e9,
                "compile_seconds": compile_s[name],
                "stolen_percent": meter.percent(name),
                "stolen_ticks": meter.ticks[name],
                "epoch_samples": n,
            })
    return result


def format_table(result: BenchResult) -> str:
    """The human-readable table ``fastmnist bench`` prints."""
    base = result.settings["baseline"]
    header = (
        f"{'config':<22} {'backend':<7} {'train samples/s (min-max)':>30} "
        f"{'x ' + base:>9} {'GFLOP/s':>8} {'%peak':>6} {'step ms':>8} "
        f"{'predict/s':>10} {'compile s':>9} {'stolen':>6}"
    )
    lines = [header, "-" * len(header)]
    for row in result.rows:
        t = row["train_samples_per_second"]
        lines.append(
            f"{row['config']:<22} {row['backend']:<7} "
            f"{t['median']:>12,.0f} ({t['min']:>7,.0f}-{t['max']:>7,.0f}) "
            f"{row['ratio']:>8.2f}x {row['gflops']:>8.2f} {row['percent_of_peak']:>5.1f}% "
            f"{1e3 * row['step_seconds']['median']:>8.3f} "
            f"{row['predict_samples_per_second']['median']:>10,.0f} "
            f"{row['compile_seconds']:>9.2f} {_percent(row.get('stolen_percent')):>6}"
        )
    m = result.machine
    lines.append("")
    lines.append(
        f"machine: {m['cpu']}, {m['cores']} cores, threads={m['threads']}, "
        f"SGEMM peak {result.peak_gflops:.1f} GFLOP/s, "
        f"transparent huge pages {m.get('huge_pages') or 'unavailable'}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    )
    disturbed = [r["stolen_percent"] for r in result.rows if _disturbed(r)]
    if disturbed:
        lines.append(
            f"stolen: the hypervisor took up to {max(disturbed):.1f}% of the CPUs' time during "
            f"a backend's timed work; rows at {DISTURBED_PERCENT:.0f}% and "
            f"{DISTURBED_TICKS} ticks or more were measured on a disturbed machine")
    for name, why in result.skipped.items():
        lines.append(f"skipped: {name} ({why})")
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def _disturbed(row: dict[str, Any]) -> bool:
    percent, ticks = row.get("stolen_percent"), row.get("stolen_ticks")
    return (percent is not None and ticks is not None
            and percent >= DISTURBED_PERCENT and ticks >= DISTURBED_TICKS)


def plot_result(result: BenchResult, path: str) -> None:
    """Write a bar chart of training samples/s by configuration and backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_path

    configs = list(dict.fromkeys(r["config"] for r in result.rows))
    backends = list(dict.fromkeys(r["backend"] for r in result.rows))
    width = 0.8 / max(len(backends), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(configs)), 4))
    for i, name in enumerate(backends):
        values = [
            next((r["train_samples_per_second"]["median"] for r in result.rows
                  if r["config"] == c and r["backend"] == name), 0.0)
            for c in configs
        ]
        ax.bar(np.arange(len(configs)) + i * width, values, width, label=name)
    ax.set_xticks(np.arange(len(configs)) + width * (len(backends) - 1) / 2)
    ax.set_xticklabels(configs, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("training samples/s (median)")
    ax.set_title(f"fastmnist bench, {result.machine['threads'] or 'default'} threads")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def time_to_accuracy(
    data: Any,
    *,
    target: float,
    backends: Sequence[str] = ("numba",),
    recipe: dict[str, Any] | None = None,
    recipes: dict[str, dict[str, Any]] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    threads: int | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Train each backend until its test accuracy reaches ``target``; time the training.

    The test set is evaluated after every epoch; that time is reported apart and
    never counted as training. Backends take turns seed by seed (interleaved).

    Parameters
    ----------
    target : float
        Test accuracy to reach, e.g. 0.98.
    recipe : dict, optional
        TrainConfig settings every backend uses (default: the ``fast98`` preset);
        its ``epochs`` is the most a run may take.
    recipes : dict, optional
        Per-backend settings that replace ``recipe`` for that backend.
    seeds : sequence of int
        One run per seed and backend; medians are reported.
    """
    from .train import TrainConfig, Trainer, preset_settings

    if not 0.0 < target < 1.0:
        raise ConfigError(f"the target accuracy must be in (0, 1), got {target!r}")
    threads = check_threads(threads)
    names, skipped = resolve_backends(backends)
    if not names:
        raise ConfigError("none of the requested backends is installed")
    base_recipe = dict(recipe or preset_settings("fast98"))
    say = on_progress or (lambda _msg: None)
    result = BenchResult(
        machine=machine_record(threads), peak_gflops=None,
        settings={"target": target, "seeds": list(seeds), "threads": threads,
                  "recipe": base_recipe, "recipes": recipes or {}},
        skipped=skipped,
    )
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    test = (data.test.images, data.test.labels)
    previous = None
    for seed in seeds:
        for name in names:
            if name in result.skipped:
                continue
            settings = {**base_recipe, **(recipes or {}).get(name, {}), "seed": seed,
                        "backend": name, "threads": threads}
            say(f"to {target:.2%}: {name}, seed {seed}")
            trainer = Trainer(
                TrainConfig(**settings), progress=False,
                callbacks=[lambda r, m: r["test_accuracy"] >= target],
            )
            _settle(previous)
            previous = trainer.backend
            try:
                history = trainer.fit(data.train.images, data.train.labels, test)
            except ConfigError as exc:  # e.g. a peer without augmentation
                result.skipped[name] = str(exc)
                continue
            reached = history[-1]["test_accuracy"] >= target
            runs[name].append({
                "seed": seed, "reached": reached, "epochs": len(history),
                "train_seconds": history.train_seconds,
                "eval_seconds": float(sum(history["eval_seconds"])),
                "compile_seconds": trainer.compile_seconds,
                "test_accuracy": history[-1]["test_accuracy"],
                "settings": TrainConfig(**settings).to_dict(),
            })
    for name in names:
        rs = runs[name]
        if not rs:
            continue
        result.rows.append({
            "backend": name,
            "target": target,
            "reached": sum(r["reached"] for r in rs),
            "runs": len(rs),
            "train_seconds": _seconds_to_target(rs),
            "epochs": statistics.median(r["epochs"] for r in rs),
            "test_accuracy": statistics.median(r["test_accuracy"] for r in rs),
            "eval_seconds": statistics.median(r["eval_seconds"] for r in rs),
            # Only a process's first run of a backend compiles: report that one.
            "compile_seconds": max(r["compile_seconds"] for r in rs),
            "recipe": rs[0]["settings"],
            "per_seed": rs,
        })
    return result


def _seconds_to_target(runs: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Median, min and max training seconds to the target over ``runs``.

    A run that missed the target counts as never reaching it (infinitely slow),
    so a median is only a time if most runs got there; None stands for never.
    """
    times = [r["train_seconds"] if r["reached"] else math.inf for r in runs]
    stats = {"median": statistics.median(times), "min": min(times), "max": max(times)}
    return {k: (v if math.isfinite(v) else None) for k, v in stats.items()}


#: Regularisers a to-accuracy table names when a recipe uses them.
_RECIPE_EXTRAS = (("augment", "shift ±px"), ("dropout", "dropout"),
                  ("label_smoothing", "smoothing"), ("weight_decay", "wd"))


def _fmt_seconds(value: float | None, width: int) -> str:
    return f"{value:>{width}.2f}" if value is not None else f"{'never':>{width}}"


def format_time_to_accuracy(result: BenchResult) -> str:
    """The table ``fastmnist bench --to-accuracy`` prints."""
    target = result.settings["target"]
    medians = [r["train_seconds"]["median"] for r in result.rows]
    fastest = min((m for m in medians if m is not None), default=None)
    header = (f"{'backend':<8} {'reached':>8} {'train s median (min-max)':>26} {'x fastest':>10} "
              f"{'epochs':>7} {'test acc':>9} {'eval s':>7} {'compile s':>9}  recipe")
    lines = [f"time to {target:.2%} test accuracy (median over seeds "
             f"{result.settings['seeds']})", header, "-" * len(header)]
    for r in result.rows:
        t, rc = r["train_seconds"], r["recipe"]
        vs_fastest = (f"{t['median'] / fastest:>9.2f}x" if t["median"] is not None
                      and fastest else f"{'-':>10}")
        recipe = (f"{'-'.join(str(h) for h in rc['hidden'])} b{rc['batch_size']} "
                  f"{rc['optimizer']} lr {rc['lr']:g} {rc['schedule']} ≤{rc['epochs']} ep")
        extras = [f"{label} {rc[key]:g}" for key, label in _RECIPE_EXTRAS if rc.get(key)]
        recipe = ", ".join([recipe, *extras])
        lines.append(
            f"{r['backend']:<8} {r['reached']:>4}/{r['runs']:<3} "
            f"{_fmt_seconds(t['median'], 9)} ({_fmt_seconds(t['min'], 6)}-"
            f"{_fmt_seconds(t['max'], 6)})    {vs_fastest} {r['epochs']:>7g} "
            f"{r['test_accuracy']:>9.2%} "
            f"{r['eval_seconds']:>7.2f} {r['compile_seconds']:>9.2f}  {recipe}"
        )
    for name, why in result.skipped.items():
        lines.append(f"skipped: {name} ({why})")
    return "\n".join(lines)
