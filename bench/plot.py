"""Plots of a `make bench` report, drawn from the report's own Markdown.

    python3 bench/plot.py bench/results/<stamp>.md

writes, beside the report, <stamp>-latency.svg (mean latency by variant),
<stamp>-peers.svg (latency against the number of peers a DT writes) and
<stamp>-clients.svg (TPS against clients). The Markdown is the record:
reading it back, rather than being handed numbers by bench/run.sh, lets any
old report be drawn again and keeps one source for table and picture.
"""

import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("svg")  # no display here; SVG also keeps the files diffable
# The same report draws the same file: SVG ids from a fixed salt, no date.
matplotlib.rcParams["svg.hashsalt"] = "dg"
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

VARIANTS = ["dg_block", "dg_session", "dblink_2pc", "fdw_1pc", "one_node"]


def tables(text):
    """{'## heading': [table, ...]}: the Markdown tables under each heading of
    the report, each as rows of cell strings (header and rule dropped)."""
    sections, heading, table = {}, None, None
    for line in text.splitlines() + [""]:
        if line.startswith("## "):
            heading = line[3:].strip()
            sections[heading] = []
        elif heading is not None and line.startswith("|"):
            if table is None:
                table = []
                sections[heading].append(table)
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
        else:
            table = None
    return {h: [t[2:] for t in ts] for h, ts in sections.items()}


def section(sections, prefix):
    """The tables of the first section whose heading starts with prefix."""
    for heading, found in sections.items():
        if heading.startswith(prefix) and found:
            return found
    raise ValueError(f"the report has no table under a heading starting with {prefix!r}")


def transfers(sections):
    """{(variant, clients): (tps, latency_ms)} of 'Transfer between two peers'."""
    out = {}
    for row in section(sections, "Transfer between")[0]:
        out[(row[0], int(row[1]))] = (float(row[2]), float(row[3]))
    return out


def peers(sections):
    """[[(peers, latency_ms)], ...] of 'Peers written per DT': the measured
    runs, then (where the report has it) the same without fsync on the peers."""
    return [[(int(r[0]), float(r[2])) for r in t] for t in section(sections, "Peers written")]


def draw(report):
    report = Path(report)
    sections = tables(report.read_text())
    runs = transfers(sections)
    clients = sorted({c for _, c in runs})
    variants = [v for v in VARIANTS if any((v, c) in runs for c in clients)]
    base = report.with_suffix("")
    written = []

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(clients)
    for i, c in enumerate(clients):
        xs = [j + i * width for j in range(len(variants))]
        ax.bar(xs, [runs.get((v, c), (0, 0))[1] for v in variants], width, label=f"{c} client(s)")
    ax.set_xticks([j + width * (len(clients) - 1) / 2 for j in range(len(variants))], variants)
    ax.set_ylabel("mean latency (ms)")
    ax.set_title("Transfer between two peers: latency by variant")
    ax.legend()
    written.append(save(fig, base, "latency"))

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, runs_n in zip(["dg_block, 1 client", "the same, peers without fsync"], peers(sections)):
        ax.plot([n for n, _ in runs_n], [lat for _, lat in runs_n], marker="o", label=label)
        ax.set_xticks([n for n, _ in runs_n])
    ax.set_xlabel("peers written per DT")
    ax.set_ylabel("mean latency (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title("Latency against the number of peers")
    ax.legend()
    written.append(save(fig, base, "peers"))

    fig, ax = plt.subplots(figsize=(7, 4))
    for v in variants:
        pts = [(c, runs[(v, c)][0]) for c in clients if (v, c) in runs]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=v)
    ax.set_xticks(clients)
    ax.set_xlabel("clients")
    ax.set_ylabel("TPS")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput against clients (2 cores: the CPU's limit at 8)")
    ax.legend()
    written.append(save(fig, base, "clients"))
    return written


def save(fig, base, name):
    path = base.with_name(f"{base.name}-{name}.svg")
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: plot.py REPORT.md")
    for p in draw(sys.argv[1]):
        print(p)
