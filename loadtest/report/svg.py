"""Inline SVG charts: no scripts, no fonts to fetch, nothing but markup."""

from __future__ import annotations

import math
from html import escape

W, H = 640, 260
ML, MR, MT, MB = 64, 16, 28, 44
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def _nice_max(v: float) -> float:
    if v <= 0 or not math.isfinite(v):
        return 1.0
    mag = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * mag:
            return m * mag
    return 10 * mag


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 10 else f"{v:.2g}"


def _frame(title: str, ymax: float, ylabel: str, xlabel: str) -> list[str]:
    pw, ph = W - ML - MR, H - MT - MB
    out = [f'<svg width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">',
           f'<rect width="{W}" height="{H}" fill="#fff"/>',
           f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14" '
           f'font-weight="bold">{escape(title)}</text>']
    for i in range(5):
        y = MT + ph - ph * i / 4
        out.append(f'<line x1="{ML}" x2="{ML + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{ML - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
                   f'{_fmt(ymax * i / 4)}</text>')
    out.append(f'<line x1="{ML}" x2="{ML}" y1="{MT}" y2="{MT + ph}" stroke="#333"/>')
    out.append(f'<line x1="{ML}" x2="{ML + pw}" y1="{MT + ph}" y2="{MT + ph}" stroke="#333"/>')
    out.append(f'<text x="14" y="{MT + ph / 2}" font-size="11" text-anchor="middle" '
               f'transform="rotate(-90 14 {MT + ph / 2})">{escape(ylabel)}</text>')
    out.append(f'<text x="{ML + pw / 2}" y="{H - 6}" font-size="11" text-anchor="middle">'
               f'{escape(xlabel)}</text>')
    return out


def bar_chart(title: str, labels: list[str], values: list[float], *, ylabel: str,
              xlabel: str = "", colours: list[str] | None = None) -> str:
    pw, ph = W - ML - MR, H - MT - MB
    ymax = _nice_max(max(values, default=0.0))
    out = _frame(title, ymax, ylabel, xlabel)
    n = max(len(values), 1)
    bw = pw / n
    every = max(1, math.ceil(n / 12))
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        h = ph * (v / ymax)
        x = ML + i * bw
        colour = (colours[i] if colours else COLOURS[0])
        out.append(f'<rect x="{x + bw * 0.1:.1f}" y="{MT + ph - h:.1f}" width="{bw * 0.8:.1f}" '
                   f'height="{h:.1f}" fill="{colour}"><title>{escape(lab)}: {v:g}</title></rect>')
        if i % every == 0:
            out.append(f'<text x="{x + bw / 2:.1f}" y="{MT + ph + 14}" font-size="10" '
                       f'text-anchor="middle">{escape(lab)}</text>')
    out.append("</svg>")
    return "".join(out)


def line_chart(title: str, x: list[float], series: dict[str, list[float | None]], *,
               ylabel: str, xlabel: str, hline: tuple[str, float] | None = None,
               markers: bool = False) -> str:
    pw, ph = W - ML - MR, H - MT - MB
    vals = [v for s in series.values() for v in s if v is not None]
    top = max(vals + ([hline[1]] if hline else []), default=1.0)
    ymax = _nice_max(top * 1.05)
    xmin, xmax = (min(x), max(x)) if x else (0.0, 1.0)
    span = (xmax - xmin) or 1.0
    out = _frame(title, ymax, ylabel, xlabel)
    for i in range(5):
        xv = xmin + span * i / 4
        px = ML + pw * i / 4
        out.append(f'<text x="{px:.1f}" y="{MT + ph + 14}" font-size="10" '
                   f'text-anchor="middle">{_fmt(xv)}</text>')

    def pt(xv: float, yv: float) -> tuple[float, float]:
        return ML + pw * (xv - xmin) / span, MT + ph - ph * (yv / ymax)

    for k, (name, ys) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        pts = [pt(a, b) for a, b in zip(x, ys, strict=True) if b is not None]
        if pts:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                       f'stroke-width="2"/>')
            if markers or len(pts) == 1:
                out.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"/>'
                           for px, py in pts)
        out.append(f'<rect x="{ML + 10 + 110 * k}" y="{MT + 4}" width="10" height="10" '
                   f'fill="{colour}"/><text x="{ML + 24 + 110 * k}" y="{MT + 13}" '
                   f'font-size="11">{escape(name)}</text>')
    if hline:
        _, y = pt(xmin, hline[1])
        out.append(f'<line x1="{ML}" x2="{ML + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#000" '
                   f'stroke-dasharray="6 4"/><text x="{ML + pw - 4}" y="{y - 4:.1f}" '
                   f'font-size="11" text-anchor="end">{escape(hline[0])}</text>')
    out.append("</svg>")
    return "".join(out)
