"""The soak's markdown summary (bench/results/soak.md) from its result dict."""

from __future__ import annotations

from bench.soak_verdict import Judgement


def report(result: dict, judgements: list[Judgement], command: str) -> str:
    m = result["machine"]
    lines = [
        f"# Soak: {result['minutes']:g} min of Rank ({result['rank_rate']:g}/s) and Predict"
        f" ({result['predict_rate']:g}/s through Envoy), a replica restart and a version swap",
        "",
        f"Verdict: **{'FAIL' if result['failures'] else 'PASS'}**"
        f" ({m['cpus']} cores, load average {m['loadavg_start'][0]:.1f} at the start,"
        f" {m['loadavg_end'][0]:.1f} at the end; samples every {result['sample_s']:g} s;"
        f" judged after the first {result['thresholds']['warmup']:.0%} of the run, medians of"
        " the first and last quarter of the samples judged).",
        "",
        "| process | pid | judged | RSS MiB | fds | tasks | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for j in judgements:
        if j.note:
            lines.append(f"| {j.process} | {j.pid} | - | - | - | - | {j.note} |")
            continue
        cells = [f"{g.start:g} -> {g.end:g} ({g.grew:+.4g})" for g in j.growth]
        lines.append(f"| {j.process} | {j.pid} | {j.from_s:.0f}-{j.to_s:.0f} s"
                     f" ({j.samples} samples) | {' | '.join(cells)}"
                     f" | {'GREW' if j.failed else 'ok'} |")
    lines += ["", "| calls | statuses | failed around events | failed elsewhere |",
              "|---|---|---|---|"]
    for kind, st in result["statuses"].items():
        lines.append(f"| {kind} | {st['codes']} | {st['failed_in_events'] or 'none'}"
                     f" | {st['failed_outside_events'] or 'none'} |")
    lines += ["", f"Degraded Ranks (ranker metric): {result['degraded_ranks']:g}, of them"
              f" outside the events: {result['degraded_outside_events']:g}. Ranker Predict"
              f" calls by version: {result['ranker_predicts_by_version']}. Model-server Predict"
              f" calls answered OK by version (all replicas, the replacement's since its"
              f" start): {result['replica_calls_by_version']}; failed at a replica (retried"
              f" by Envoy, or failed to the caller): {result['replica_calls_failed']};"
              f" answered by the retired"
              f" v{result['retired_version']} after the swap:"
              f" {result['retired_version_calls_after_swap']}.", "",
              "| t (s) | event | detail |", "|---|---|---|"]
    lines += [f"| {e['t']:.1f} | {e['event']} | {e['detail']} |" for e in result["events"]]
    if result["failures"]:
        lines += ["", "Failures:", *[f"- {f}" for f in result["failures"]]]
    lines += ["", f"`{command}` (`make soak`; not part of `make test` or `make bench`)."]
    return "\n".join(lines) + "\n"
