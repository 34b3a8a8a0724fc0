"""Draw docs/_static/topology-cost.svg from rtckit.topology.cost (no plotting library needed).

Run from the repository root: ``python docs/_scripts/topology_cost_svg.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from rtckit.topology.cost import compare  # noqa: E402

SIZES = list(range(2, 13))
BITRATE = 1000.0
COLOURS = {"mesh": "#d1495b", "sfu": "#00798c", "mcu": "#edae49"}


def panel(x0: int, title: str, series: dict[str, list[float]], unit: str) -> list[str]:
    width, height, left, bottom = 420, 260, 50, 30
    top = max(max(values) for values in series.values()) or 1.0
    out = [
        f'<g transform="translate({x0},20)">',
        f'<text x="{left + (width - left) / 2}" y="0" text-anchor="middle" '
        f'font-size="14">{title}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" '
        'stroke="#444"/>',
        f'<line x1="{left}" y1="20" x2="{left}" y2="{height - bottom}" stroke="#444"/>',
        f'<text x="{left - 6}" y="24" text-anchor="end" font-size="11">{top:g}</text>',
        f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end" font-size="11">0</text>',
        f'<text x="12" y="{height / 2}" font-size="11" transform="rotate(-90 12 {height / 2})" '
        f'text-anchor="middle">{unit}</text>',
    ]

    def x(n: int) -> float:
        return left + (n - SIZES[0]) / (SIZES[-1] - SIZES[0]) * (width - left)

    def y(v: float) -> float:
        return height - bottom - v / top * (height - bottom - 20)

    out.extend(
        f'<text x="{x(n)}" y="{height - bottom + 16}" text-anchor="middle" '
        f'font-size="11">N={n}</text>'
        for n in (SIZES[0], 6, SIZES[-1])
    )
    for name, values in series.items():
        points = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in zip(SIZES, values, strict=True))
        out.append(
            f'<polyline fill="none" stroke="{COLOURS[name]}" stroke-width="2.5" points="{points}"/>'
        )
    out.append("</g>")
    return out


def main() -> None:
    rows = {n: compare(n, BITRATE) for n in SIZES}
    client_down = {
        t: [rows[n][i].client_down_kbps / 1000 for n in SIZES]
        for i, t in enumerate(("mesh", "sfu", "mcu"))
    }
    client_up = {
        t: [rows[n][i].client_up_kbps / 1000 for n in SIZES]
        for i, t in enumerate(("mesh", "sfu", "mcu"))
    }
    server_cpu = {
        t: [rows[n][i].server_cpu for n in SIZES] for i, t in enumerate(("mesh", "sfu", "mcu"))
    }
    parts = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="1340" height="320" '
        'font-family="sans-serif" viewBox="0 0 1340 320">',
        '<rect width="100%" height="100%" fill="white"/>',
        *panel(10, "client uplink (1 Mb/s per stream)", client_up, "Mb/s"),
        *panel(450, "client downlink", client_down, "Mb/s"),
        *panel(890, "server CPU (cores, model)", server_cpu, "cores"),
    ]
    for i, (name, colour) in enumerate(COLOURS.items()):
        parts.append(
            f'<rect x="{560 + i * 90}" y="298" width="14" height="14" fill="{colour}"/>'
            f'<text x="{580 + i * 90}" y="310" font-size="13">{name}</text>'
        )
    parts.append("</svg>")
    target = ROOT / "docs" / "_static" / "topology-cost.svg"
    target.write_text("\n".join(parts) + "\n", encoding="utf-8")
    print(f"wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
