"""Tests of bench/plot.py: run by scripts/test.sh's `plots` stage
(python3 -m unittest discover -s bench -p 'test_*.py')."""

import tempfile
import unittest
from pathlib import Path

import plot

REPORT = """# dg bench, 20260101T000000Z

2 cores; header text that is not a table.

## Transfer between two peers

| variant | clients | TPS | mean latency (ms) | TPS vs dblink_2pc | latency vs fdw_1pc | TPS vs one_node |
|---|---|---|---|---|---|---|
| dg_block | 1 | 400.5 | 2.500 | 1.33 | 1.25 | 0.40 |
| dblink_2pc | 1 | 300.0 | 3.333 | 1.00 | 1.67 | 0.30 |
| dg_block | 8 | 700.0 | 11.429 | 0.70 | 1.90 | 0.14 |
| dblink_2pc | 8 | 1000.0 | 8.000 | 1.00 | 1.33 | 0.20 |

## Peers written per DT (dg_block, 1 client)

| peers | TPS | mean latency (ms) | latency vs 2 peers |
|---|---|---|---|
| 2 | 360.0 | 2.778 | 1.00 |
| 4 | 220.0 | 4.545 | 1.64 |
| 8 | 150.0 | 6.667 | 2.40 |

Diagnostic, the same with fsync off on the peers:

| peers | TPS | mean latency (ms) | latency vs 2 peers |
|---|---|---|---|
| 2 | 570.0 | 1.754 | 1.00 |
| 4 | 320.0 | 3.125 | 1.78 |
| 8 | 175.0 | 5.714 | 3.26 |

## Targets

| target | measured | |
|---|---|---|
| dg_block TPS >= 1.3x dblink_2pc, 1 client(s) | 1.33x | ok |
"""


class ParseTest(unittest.TestCase):
    def test_reads_every_table_of_a_section(self):
        sections = plot.tables(REPORT)
        self.assertEqual(plot.transfers(sections)[("dg_block", 8)], (700.0, 11.429))
        self.assertEqual(len(plot.transfers(sections)), 4)
        measured, nofsync = plot.peers(sections)
        self.assertEqual(measured, [(2, 2.778), (4, 4.545), (8, 6.667)])
        self.assertEqual(nofsync[2], (8, 5.714))

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
            self.assertIn("TPS", paths[2].read_text())
            # The same report draws the same bytes (a diff shows real changes).
            first = [p.read_bytes() for p in paths]
            self.assertEqual(first, [p.read_bytes() for p in plot.draw(report)])


if __name__ == "__main__":
    unittest.main()
