"""The throughput targets: read from the "Targets" table of docs/benchmarks.md (the one place
they and their reasons are written) and checked against a result. Reported, never asserted."""
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(REPO_ROOT, "docs", "benchmarks.md")
HEADING = "## Targets"


def read(path=DOC):
    """{target name: {"key": result key, "target": number, "unit": str}} from the table under
    HEADING (columns: name, bench.json key, target, unit, why); {} without the file."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return {}
    start = lines.index(HEADING) + 1
    table = {}
    for line in lines[start:]:
        if line.startswith("#"):
            break
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 4:
            continue
        name, key, target, unit = cells[:4]
        try:
            table[name] = {"key": key, "target": float(target), "unit": unit}
        except ValueError:  # the header and the separator row
            continue
    return table


def check(result, table):
    """{target name: {value, target, met, margin, unit}} for every target of `table`."""
    out = {}
    for name, spec in table.items():
        value, target = result[spec["key"]], spec["target"]
        out[name] = {"value": value, "target": target, "met": bool(value >= target),
                     "margin": round(value / target, 3), "unit": spec["unit"]}
    return out
