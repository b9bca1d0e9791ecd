"""``pagoda bench serve --plot``: latency percentiles over the benchmark's time.

matplotlib is imported here only, and only when a plot is asked for. The figure is drawn on
an Agg canvas directly, without pyplot, so no global backend is switched and nothing is
displayed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def rolling_percentile(values: list[float], window: int, p: float) -> list[float]:
    """The ``p``-th percentile (nearest rank) of each trailing window of ``values``."""
    out = []
    for i in range(len(values)):
        chunk = sorted(values[max(0, i - window + 1) : i + 1])
        out.append(chunk[min(len(chunk) - 1, round(p / 100 * (len(chunk) - 1)))])
    return out


def plot_latency_over_time(result: dict[str, Any], path: str | Path) -> None:
    """One panel each for TTFT and E2E latency: every successful request as a dot at its start
    time, with rolling p50 and p99 lines over about a tenth of the requests; failed requests
    are marked along the time axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    done = sorted((r for r in result["requests"] if r["success"]), key=lambda r: r["start"])
    failed = [r["start"] for r in result["requests"] if not r["success"]]
    window = max(5, len(done) // 10)
    fig = Figure(figsize=(10, 7))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True)
    for ax, key, title in ((axes[0], "ttft", "TTFT"), (axes[1], "e2el", "E2E latency")):
        starts = [r["start"] for r in done]
        ms = [r[key] * 1000 for r in done]
        ax.scatter(starts, ms, s=10, alpha=0.5, label=f"{title} per request")
        if done:
            ax.plot(starts, rolling_percentile(ms, window, 50), label=f"rolling p50 ({window})")
            ax.plot(starts, rolling_percentile(ms, window, 99), label=f"rolling p99 ({window})")
        if failed:
            ax.scatter(failed, [0] * len(failed), marker="x", color="red", label="failed")
        ax.set_ylabel(f"{title} (ms)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")
    axes[1].set_xlabel("request start (s since benchmark start)")
    rate = result["request_rate"]
    fig.suptitle(
        f"{result['model']} {result['endpoint']}: {result['num_prompts']} prompts, "
        f"rate {rate} req/s, max concurrency {result['max_concurrency'] or 'unlimited'}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
