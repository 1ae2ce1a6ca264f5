#!/usr/bin/env python3
"""Lint the provisioned Grafana dashboards of the vigie stack.

Checks, for every dashboard in stack/grafana/dashboards:
  - the JSON parses; uid and title are set; uids are unique across files;
  - panel ids are unique within the dashboard (rows' nested panels included);
  - every panel (rows excepted) names a data source by a uid that is
    provisioned in stack/grafana/provisioning/datasources, and has at least
    one query; every query names a provisioned uid and has a non-empty
    query: `expr` (Prometheus, Loki) or `query` (Tempo's TraceQL);
  - the same for annotation queries and for query variables.

With --promql-rules FILE it also writes every Prometheus expression, with the
dashboard variables replaced by sample values, as recording rules into FILE,
so that `promtool check rules FILE` parses them all.

Exit status 1 and one line per problem on failure.
"""

import argparse
import json
import re
import sys
from pathlib import Path

try:  # PyYAML, or ruamel.yaml (installed with check-jsonschema)
    import yaml

    def load_yaml(text):
        return yaml.safe_load(text)

    def dump_yaml(data):
        return yaml.safe_dump(data, sort_keys=False)
except ImportError:
    import io

    from ruamel.yaml import YAML

    def load_yaml(text):
        return YAML(typ="safe").load(text)

    def dump_yaml(data):
        out = io.StringIO()
        YAML(typ="safe").dump(data, out)
        return out.getvalue()

STACK = Path(__file__).resolve().parent
DASHBOARDS = STACK / "grafana" / "dashboards"
DATASOURCES = STACK / "grafana" / "provisioning" / "datasources"

# Sample values for Grafana's variables, used only to parse the expressions.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "30m",
    "$route": "/api/.*",
    "$color": ".*",
    "$service": ".*",
    "$level": ".*",
    "$request_id": "00000000-0000-0000-0000-000000000000",
    "$search": "",
}


def provisioned_uids():
    uids = {}
    for path in sorted(DATASOURCES.glob("*.y*ml")):
        doc = load_yaml(path.read_text()) or {}
        for ds in doc.get("datasources", []):
            uids[ds["uid"]] = ds["type"]
    return uids


def substitute(expr):
    # Longest names first: $__rate_interval before $__range, etc.
    for name in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(name, SUBSTITUTIONS[name])
    leftover = re.findall(r"\$\w+", expr)
    return expr, leftover


def walk_panels(panels):
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promql-rules", type=Path)
    args = parser.parse_args()

    problems = []
    promql = []
    uids = provisioned_uids()
    if not uids:
        problems.append(f"{DATASOURCES}: no provisioned data source")

    def check_ds(where, ds):
        uid = ds.get("uid") if isinstance(ds, dict) else None
        if uid not in uids:
            problems.append(f"{where}: data source uid {uid!r} is not provisioned ({sorted(uids)})")
            return None
        return uid

    def check_expr(where, uid, expr):
        if not isinstance(expr, str) or not expr.strip():
            problems.append(f"{where}: empty query")
            return
        if uids.get(uid) == "prometheus":
            text, leftover = substitute(expr)
            if leftover:
                problems.append(f"{where}: unknown variable(s) {leftover}")
            promql.append((where, text))

    seen_uids = {}
    files = sorted(DASHBOARDS.glob("*.json"))
    if not files:
        problems.append(f"{DASHBOARDS}: no dashboard")
    for path in files:
        name = path.name
        try:
            dash = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            problems.append(f"{name}: invalid JSON: {err}")
            continue
        for key in ("uid", "title"):
            if not dash.get(key):
                problems.append(f"{name}: no {key}")
        if dash.get("uid") in seen_uids:
            problems.append(f"{name}: uid {dash['uid']} already used by {seen_uids[dash['uid']]}")
        seen_uids[dash.get("uid")] = name

        ids = set()
        for panel in walk_panels(dash.get("panels", [])):
            where = f"{name}: panel {panel.get('id')} {panel.get('title')!r}"
            if panel.get("id") in ids:
                problems.append(f"{where}: duplicate panel id")
            ids.add(panel.get("id"))
            if panel.get("type") == "row":
                continue
            if "gridPos" not in panel:
                problems.append(f"{where}: no gridPos")
            panel_uid = check_ds(where, panel.get("datasource"))
            targets = panel.get("targets") or []
            if not targets:
                problems.append(f"{where}: no query")
            for target in targets:
                twhere = f"{where} query {target.get('refId')}"
                uid = check_ds(twhere, target.get("datasource", panel.get("datasource")))
                if panel_uid and uid and uid != panel_uid:
                    problems.append(f"{twhere}: data source {uid} differs from the panel's {panel_uid}")
                # Prometheus and Loki queries are `expr`, Tempo's TraceQL `query`.
                expr = target.get("query") if uids.get(uid) == "tempo" else target.get("expr")
                check_expr(twhere, uid, expr)

        for ann in dash.get("annotations", {}).get("list", []):
            if ann.get("builtIn"):
                continue
            where = f"{name}: annotation {ann.get('name')!r}"
            uid = check_ds(where, ann.get("datasource"))
            check_expr(where, uid, ann.get("expr") or ann.get("target", {}).get("expr"))

        for var in dash.get("templating", {}).get("list", []):
            if var.get("type") != "query":
                continue
            where = f"{name}: variable {var.get('name')!r}"
            check_ds(where, var.get("datasource"))
            query = var.get("query")
            if isinstance(query, dict):
                query = query.get("query") or query.get("label")
            if not query:
                problems.append(f"{where}: empty query")

    if args.promql_rules:
        rules = [{"record": f"dashboard_expr:check:{i}", "expr": expr}
                 for i, (_, expr) in enumerate(promql)]
        args.promql_rules.write_text(dump_yaml(
            {"groups": [{"name": "dashboard-expressions", "rules": rules}]}))
        index = args.promql_rules.with_suffix(".index")
        index.write_text("".join(f"dashboard_expr:check:{i}\t{where}\n"
                                 for i, (where, _) in enumerate(promql)))

    for problem in problems:
        print(f"dashboard lint: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"dashboard lint: {len(files)} dashboards, {len(promql)} Prometheus expressions, "
          f"data sources {sorted(uids)}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
