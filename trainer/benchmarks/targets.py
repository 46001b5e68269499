"""The throughput targets: read from the "Targets" table of docs/benchmarks.md (the one place
they and their reasons are written) and checked against a result. Reported, never asserted."""
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(REPO_ROOT, "docs", "benchmarks.md")
HEADING = "## Targets"


def read(path=DOC):
    """{target name: {"key": result key, "target": number, "unit": str, "at_most": bool}} from
    the table under HEADING (columns: name, bench.json key, target ("x" or "<= x"), unit, why);
    {} without the file."""
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
        at_most = target.startswith("<=")
        try:
            table[name] = {"key": key, "target": float(target.lstrip("<=").strip()),
                           "unit": unit, "at_most": at_most}
        except ValueError:  # the header and the separator row
            continue
    return table


def check(result, table):
    """{target name: {value, target, at_most, met, margin, unit}} for every target of `table` whose
    key `result` has (a stage not run has none). A target written `<= x` is met at or below x
    (margin: target / value), the others at or above (margin: value / target)."""
    out = {}
    for name, spec in table.items():
        if spec["key"] not in result:
            continue
        value, target, at_most = result[spec["key"]], spec["target"], spec.get("at_most")
        out[name] = {"value": value, "target": target, "at_most": bool(at_most),
                     "met": bool(value <= target if at_most else value >= target),
                     "margin": round(target / value if at_most else value / target, 3),
                     "unit": spec["unit"]}
    return out
