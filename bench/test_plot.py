"""Tests of bench/plot.py: run by scripts/test.sh's `plots` stage
(python3 -m unittest discover -s bench -p 'test_*.py')."""

import tempfile
import unittest
from pathlib import Path

import plot

REPORT = """# dg bench, 20260101T000000Z

2 cores; header text that is not a table.

## Transfer between two peers, RTT 0 µs

Direct loopback links.

| variant | clients | TPS | mean latency (ms) | TPS min–max | latency min–max | round trips/DT |
|---|---|---|---|---|---|---|
| dg_block | 1 | 400.5 | 2.500 | 390–410 | 2.4–2.6 | – (4) |
| dg_send | 1 | 600.0 | 1.667 | 590–610 | 1.6–1.7 | – (2) |
| dblink_2pc | 1 | 300.0 | 3.333 | 290–310 | 3.2–3.4 | – (8) |
| dg_block | 8 | 700.0 | 11.429 | 690–710 | 11–12 | – (4) |
| dblink_2pc | 8 | 1000.0 | 8.000 | 990–1010 | 7.9–8.1 | – (8) |

## Transfer between two peers, RTT 1000 µs

| variant | clients | TPS | mean latency (ms) | TPS min–max | latency min–max | round trips/DT |
|---|---|---|---|---|---|---|
| dg_block | 1 | 150.0 | 6.667 | 140–160 | 6.5–6.8 | 4.2 (4) |
| dg_send | 1 | 250.0 | 4.000 | 240–260 | 3.9–4.1 | 2.3 (2) |

## Peers written per DT, RTT 0 µs

| variant | peers | TPS | mean latency (ms) | latency min–max | latency vs 2 peers | round trips (protocol) |
|---|---|---|---|---|---|---|
| dg_block | 2 | 360.0 | 2.778 | 2.7–2.8 | 1.00 | 4 |
| dg_block | 4 | 220.0 | 4.545 | 4.5–4.6 | 1.64 | 6 |
| dg_block | 8 | 150.0 | 6.667 | 6.6–6.7 | 2.40 | 10 |
| dg_send | 2 | 500.0 | 2.000 | 1.9–2.1 | 1.00 | 2 |
| dg_send | 8 | 400.0 | 2.500 | 2.4–2.6 | 1.25 | 2 |

Diagnostic, the same with fsync off on the peers:

| variant | peers | TPS | mean latency (ms) | latency min–max | latency vs 2 peers | round trips (protocol) |
|---|---|---|---|---|---|---|
| dg_block, peers without fsync | 2 | 570.0 | 1.754 | 1.7–1.8 | 1.00 | 4 |
| dg_block, peers without fsync | 8 | 175.0 | 5.714 | 5.7–5.8 | 3.26 | 10 |

## Peers written per DT, RTT 1000 µs

| variant | peers | TPS | mean latency (ms) | latency min–max | latency vs 2 peers | round trips (protocol) |
|---|---|---|---|---|---|---|
| dg_send | 2 | 250.0 | 4.000 | 3.9–4.1 | 1.00 | 2 |
| dg_send | 8 | 220.0 | 4.545 | 4.5–4.6 | 1.14 | 2 |

## Targets

| target | measured | |
|---|---|---|
| dg_send latency <= 0.75x dg_block, 0 µs, 1 client | 0.67x | PASS |
"""

# A report from before the bench ran at several round-trip times: no RTT
# in the headings, no variant column in the peer tables.
OLD_REPORT = """# dg bench, 20251124T185700Z

## Transfer between two peers

| variant | clients | TPS | mean latency (ms) | TPS vs dblink_2pc | latency vs fdw_1pc | TPS vs one_node |
|---|---|---|---|---|---|---|
| dg_block | 1 | 400.5 | 2.500 | 1.33 | 1.25 | 0.40 |
| dg_block | 8 | 700.0 | 11.429 | 0.70 | 1.90 | 0.14 |

## Peers written per DT (dg_block, 1 client)

| peers | TPS | mean latency (ms) | latency vs 2 peers |
|---|---|---|---|
| 2 | 360.0 | 2.778 | 1.00 |
| 8 | 150.0 | 6.667 | 2.40 |

Diagnostic, the same with fsync off on the peers:

| peers | TPS | mean latency (ms) | latency vs 2 peers |
|---|---|---|---|
| 2 | 570.0 | 1.754 | 1.00 |
| 8 | 175.0 | 5.714 | 3.26 |
"""


class ParseTest(unittest.TestCase):
    def test_reads_every_table_of_every_rtt(self):
        sections = plot.tables(REPORT)
        runs = plot.transfers(sections)
        self.assertEqual(runs[("dg_block", 8, 0)], (700.0, 11.429))
        self.assertEqual(runs[("dg_send", 1, 1000)], (250.0, 4.0))
        self.assertEqual(len(runs), 7)
        lines = plot.peers(sections)
        self.assertEqual(lines["dg_block"], [(2, 2.778), (4, 4.545), (8, 6.667)])
        self.assertEqual(lines["dg_send"], [(2, 2.0), (8, 2.5)])
        self.assertEqual(lines["dg_block, peers without fsync"][1], (8, 5.714))
        self.assertEqual(lines["dg_send, RTT 1000 µs"], [(2, 4.0), (8, 4.545)])

    def test_an_old_report_still_reads(self):
        sections = plot.tables(OLD_REPORT)
        self.assertEqual(plot.transfers(sections)[("dg_block", 8, 0)], (700.0, 11.429))
        lines = plot.peers(sections)
        self.assertEqual(lines["dg_block"], [(2, 2.778), (8, 6.667)])
        self.assertEqual(lines["dg_block, peers without fsync"], [(2, 1.754), (8, 5.714)])

    def test_a_report_without_the_section_is_refused(self):
        with self.assertRaisesRegex(ValueError, "Peers written"):
            plot.peers(plot.tables(REPORT.split("## Peers")[0]))


class DrawTest(unittest.TestCase):
    def test_three_svgs_beside_the_report_with_the_data_in_them(self):
        with tempfile.TemporaryDirectory() as d:
            report = Path(d) / "20260101T000000Z.md"
            report.write_text(REPORT)
            paths = plot.draw(report)
            self.assertEqual(
                [p.name for p in paths],
                [f"20260101T000000Z-{n}.svg" for n in ("latency", "peers", "clients")],
            )
            for p in paths:
                svg = p.read_text()
                self.assertTrue(svg.startswith("<?xml"), p)
            # Axis labels and legend entries are text in the SVG.
            self.assertIn("dblink_2pc", paths[0].read_text())
            self.assertIn("without fsync", paths[1].read_text())
            self.assertIn("RTT 1000", paths[0].read_text())
            self.assertIn("TPS", paths[2].read_text())
            # The same report draws the same bytes (a diff shows real changes).
            first = [p.read_bytes() for p in paths]
            self.assertEqual(first, [p.read_bytes() for p in plot.draw(report)])


if __name__ == "__main__":
    unittest.main()
