"""Plots of a `make bench` report, drawn from the report's own Markdown.

    python3 bench/plot.py bench/results/<stamp>.md

writes, beside the report, <stamp>-latency.svg (mean latency by variant at
each round-trip time), <stamp>-peers.svg (latency against the number of
peers a DT writes) and <stamp>-clients.svg (TPS against clients). The Markdown is the record:
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

VARIANTS = ["dg_block", "dg_session", "dg_send", "dg_send_async", "dblink_2pc", "fdw_1pc", "one_node"]


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


def sections_of(sections, prefix):
    """[(rtt_us, tables)] of every section whose heading starts with prefix,
    in report order; rtt_us from the heading's "RTT <n> µs", None in
    reports from before the bench ran at several round-trip times."""
    found = []
    for heading, ts in sections.items():
        if heading.startswith(prefix) and ts:
            rtt = re.search(r"RTT (\d+) µs", heading)
            found.append((int(rtt.group(1)) if rtt else None, ts))
    if not found:
        raise ValueError(f"the report has no table under a heading starting with {prefix!r}")
    return found


def transfers(sections):
    """{(variant, clients, rtt_us): (tps, latency_ms)} of every 'Transfer
    between two peers' section (rtt_us 0 in older reports)."""
    out = {}
    for rtt, ts in sections_of(sections, "Transfer between"):
        for row in ts[0]:
            out[(row[0], int(row[1]), rtt or 0)] = (float(row[2]), float(row[3]))
    return out


def peers(sections):
    """{label: [(peers, latency_ms)]} of every 'Peers written per DT'
    section: a line per variant (and per round-trip time past 0). Older
    reports have no variant column: dg_block, then without fsync."""
    out = {}
    for rtt, ts in sections_of(sections, "Peers written"):
        suffix = f", RTT {rtt} µs" if rtt else ""
        for i, t in enumerate(ts):
            for r in t:
                if r[0].isdigit():
                    label = ["dg_block", "dg_block, peers without fsync"][min(i, 1)]
                    n, lat = int(r[0]), float(r[2])
                else:
                    label, n, lat = r[0], int(r[1]), float(r[3])
                out.setdefault(label + suffix, []).append((n, lat))
    return out


def draw(report):
    report = Path(report)
    sections = tables(report.read_text())
    runs = transfers(sections)
    clients = sorted({c for _, c, _ in runs})
    rtts = sorted({r for _, _, r in runs})
    variants = [v for v in VARIANTS if any(k[0] == v for k in runs)]
    base = report.with_suffix("")
    written = []

    # Latency at 1 client (the fewest measured), a bar per round-trip time.
    one = clients[0]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(rtts)
    for i, r in enumerate(rtts):
        xs = [j + i * width for j in range(len(variants))]
        ax.bar(xs, [runs.get((v, one, r), (0, 0))[1] for v in variants], width, label=f"RTT {r} µs")
    ax.set_xticks([j + width * (len(rtts) - 1) / 2 for j in range(len(variants))], variants, fontsize=8)
    ax.set_ylabel("mean latency (ms)")
    ax.set_title(f"Transfer between two peers: latency by variant, {one} client(s)")
    ax.legend()
    written.append(save(fig, base, "latency"))

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, runs_n in peers(sections).items():
        ax.plot([n for n, _ in runs_n], [lat for _, lat in runs_n], marker="o", label=label)
        ax.set_xticks([n for n, _ in runs_n])
    ax.set_xlabel("peers written per DT (1 client)")
    ax.set_ylabel("mean latency (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title("Latency against the number of peers")
    ax.legend(fontsize=7)
    written.append(save(fig, base, "peers"))

    # Throughput at the first round-trip time (0: the CPU decides).
    r = rtts[0]
    fig, ax = plt.subplots(figsize=(7, 4))
    for v in variants:
        pts = [(c, runs[(v, c, r)][0]) for c in clients if (v, c, r) in runs]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=v)
    ax.set_xticks(clients)
    ax.set_xlabel("clients")
    ax.set_ylabel("TPS")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Throughput against clients, RTT {r} µs (2 cores: the CPU's limit at 8)")
    ax.legend(fontsize=7)
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
