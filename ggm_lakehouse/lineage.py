"""Lineage: where a table's data comes from and where it goes, from source endpoint to partner.

``ggm lineage TABLE`` walks one graph built from the platform's own declarations:

    source endpoint ─▶ landing ─▶ bronze ─▶ silver (GGM) ─▶ gold mart ─▶ share ─▶ recipient
    (connector +       (batches    (<source>_  (ggm_mappings/  (gold_marts/ (config/shares.yaml,
     Airflow            with a      <dataset>)  *.yaml source   *.yaml       recipients added
     connection,        manifest)               and lookups)    bronnen)     with the CLI)
     newest manifest)

and combines it with what actually ran: the OpenLineage events that Airflow (provider
``apache-airflow-providers-openlineage``) and Spark (``openlineage-spark`` listener) wrote with
the file transport. Those give each table its last run time and run ids, and add any edge
the declarations miss.

OpenLineage is off unless configured, with the same settings for Airflow and Spark
(:mod:`ggm_lakehouse.openlineage`).
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ggm_lakehouse.config import lake_root
from ggm_lakehouse.openlineage import openlineage_dir

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- the graph

LAYER_ORDER = ("source", "landing", "bronze", "silver", "gold", "share", "recipient")


@dataclass
class Node:
    """One thing data passes through: a source endpoint, a landing area, a table, a share or a recipient."""

    layer: str
    name: str
    details: dict = field(default_factory=dict)
    observed: dict = field(default_factory=dict)  # last OpenLineage run that wrote (or ran) it

    @property
    def key(self) -> str:
        return f"{self.layer}:{self.name}"

    @property
    def label(self) -> str:
        return f"{self.layer}.{self.name}" if self.layer in ("bronze", "silver", "gold") else f"{self.layer} {self.name}"

    def as_dict(self) -> dict:
        out = {"layer": self.layer, "name": self.name, "label": self.label, **self.details}
        if self.observed:
            out["observed"] = self.observed
        return out


@dataclass
class LineageGraph:
    """Nodes and directed edges (upstream key → downstream key), each edge with how it is known."""

    nodes: dict[str, Node] = field(default_factory=dict)
    edges: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def add(self, layer: str, name: str, **details) -> Node:
        node = self.nodes.setdefault(f"{layer}:{name}", Node(layer, name))
        node.details.update({k: v for k, v in details.items() if v is not None})
        return node

    def link(self, upstream: Node, downstream: Node, known_from: str) -> None:
        self.edges.setdefault((upstream.key, downstream.key), set()).add(known_from)

    def parents(self, key: str) -> list[str]:
        return sorted((u for u, d in self.edges if d == key), key=self._order)

    def children(self, key: str) -> list[str]:
        return sorted((d for u, d in self.edges if u == key), key=self._order)

    def _order(self, key: str) -> tuple[int, str]:
        node = self.nodes[key]
        return LAYER_ORDER.index(node.layer), node.name

    def tree(self, key: str, direction: str, _seen: frozenset = frozenset()) -> list[dict]:
        """Nested upstream (``direction="up"``) or downstream (``"down"``) tree of ``key``."""
        step = self.parents if direction == "up" else self.children
        result = []
        for other in step(key):
            if other in _seen:  # a cycle cannot occur in this pipeline; guard against a bad config anyway
                continue
            pair = (other, key) if direction == "up" else (key, other)
            result.append(
                {
                    **self.nodes[other].as_dict(),
                    "known_from": sorted(self.edges[pair]),
                    "children": self.tree(other, direction, _seen | {key}),
                }
            )
        return result


def _connector_datasets() -> dict[str, tuple[str, ...]]:
    from connectors import CONNECTORS

    return {name: tuple(cls.datasets) for name, cls in CONNECTORS.items()}


def _airflow_connections() -> dict[str, str]:
    from ggm_lakehouse.model.sources import SOURCES

    return {name: spec.conn_id for name, spec in SOURCES.items()}


def _newest_manifest(source: str, dataset: str) -> dict | None:
    from ggm_lakehouse.landing import find_complete_batches, read_manifest

    from ggm_lakehouse.config import landing_root

    batches = find_complete_batches(landing_root(), source, dataset)
    return read_manifest(batches[-1]) if batches else None


def _endpoint_details(source: str, dataset: str, manifest: dict | None) -> dict:
    """What the source endpoint of a dataset is: from its newest manifest, else from configuration."""
    from urllib.parse import urlsplit

    details = {"connector": source, "airflow_connection": _airflow_connections().get(source)}
    if manifest:
        details["endpoint"] = manifest.get("endpoint")
        parts = manifest.get("parts") or []
        request = parts[0].get("request", {}) if parts else {}
        if request.get("url"):
            url = urlsplit(request["url"])
            # Scheme, host and path only: a query string may carry search terms, never credentials (stripped at landing).
            details["url"] = f"{url.scheme}://{url.netloc}{url.path}"
        elif parts and parts[0].get("source_file"):
            details["source_file"] = parts[0]["source_file"]
    return details


def shared_recipients(config) -> dict[str, list[dict]]:
    """Recipients per share name (lower case): from shares.yaml plus those added with the CLI."""
    try:
        from sharing_server.recipients import list_recipients

        listed = list_recipients()
    except Exception as exc:  # noqa: BLE001 - no sharing state yet: the configured recipients are all there is
        log.info("recipient state not readable (%s); using shares.yaml only", exc)
        listed = [{"name": r.name, "shares": list(r.shares), "source": "shares.yaml"} for r in config.recipients]
    by_share: dict[str, list[dict]] = {}
    for recipient in listed:
        for share in recipient["shares"]:
            by_share.setdefault(share.lower(), []).append(recipient)
    return by_share


def mart_inputs() -> dict[str, tuple[str, ...]]:
    """GGM silver tables each gold mart reads, as its definition (``gold_marts/<mart>.yaml``) declares them.

    The gold DAGs wait for exactly these tables (``ggm_lakehouse.model.mart_definitions.mart_inputs``).
    """
    from ggm_lakehouse.model.mart_definitions import mart_inputs as declared_inputs

    return declared_inputs()


def static_graph() -> LineageGraph:
    """The lineage the configuration declares: connectors, mappings, gold marts, shares, recipients."""
    from ggm_lakehouse.model.mappings import load_all
    from ggm_lakehouse.model.shares_config import load_shares_config

    graph = LineageGraph()
    manifests: dict[str, dict | None] = {}

    def bronze_chain(table: str) -> Node:
        source, _, dataset = table.partition("_")
        if table not in manifests:  # several mappings read one bronze table: scan its landing once
            manifests[table] = _newest_manifest(source, dataset)
        manifest = manifests[table]
        endpoint = graph.add("source", f"{source}/{dataset}", **_endpoint_details(source, dataset, manifest))
        landing = graph.add(
            "landing",
            f"{source}/{dataset}",
            last_batch=(manifest or {}).get("logical_date"),
            last_run_id=(manifest or {}).get("run_id"),
        )
        bronze = graph.add("bronze", table)
        graph.link(endpoint, landing, "connector")
        graph.link(landing, bronze, "landing manifest")
        return bronze

    for source, datasets in _connector_datasets().items():
        for dataset in datasets:
            bronze_chain(f"{source}_{dataset}")

    for mapping in load_all():
        silver = graph.add(
            "silver", mapping.target, mapping=mapping.path.name, bronsysteem=mapping.bronsysteem, owner=mapping.owner or None
        )
        for table in mapping.source_tables:
            graph.link(bronze_chain(table), silver, "ggm_mappings source")
        for lookup in mapping.lookups:
            graph.link(bronze_chain(lookup.source), silver, f"ggm_mappings lookup {lookup.name}")

    for mart, inputs in mart_inputs().items():
        gold = graph.add("gold", mart)
        for table in inputs:
            graph.link(graph.add("silver", table), gold, "gold mart definition")

    config = load_shares_config()
    recipients = shared_recipients(config)
    for share in config.shares:
        for table in share.all_tables():
            layer, _, name = PurePosixPath(table.location).as_posix().strip("/").partition("/")
            if layer not in ("bronze", "silver", "gold") or not name:
                continue
            shared_table = graph.nodes.get(f"{layer}:{name.upper() if layer == 'silver' else name}") or graph.add(layer, name)
            shared = graph.add("share", table.qualified_name, history_shared=table.history_shared)
            graph.link(shared_table, shared, "config/shares.yaml")
            for recipient in recipients.get(share.name.lower(), []):
                node = graph.add("recipient", recipient["name"], configured_in=recipient.get("source"))
                graph.link(shared, node, "share entitlement")
    return graph


# --------------------------------------------------------------------------- observed lineage


def read_openlineage_events(folder: Path | None = None) -> list[dict]:
    """Every OpenLineage event the file transport wrote (Airflow and Spark), oldest first."""
    folder = Path(folder or openlineage_dir())
    if not folder.is_dir():
        return []
    events = []
    for path in sorted(folder.glob("*.json*")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    events.append(json.loads(line))
                except ValueError:
                    # A producer killed mid-write leaves a truncated last line; the rest is still valid.
                    log.warning("skipping an unreadable OpenLineage event in %s", path)
    return sorted(events, key=lambda e: e.get("eventTime", ""))


def _dataset_node_key(dataset: dict, lake: Path) -> str | None:
    """The graph key of an OpenLineage dataset that is a lake table (path or catalog name)."""
    name = str(dataset.get("name", ""))
    parts: list[str] = []
    if name.startswith("/"):
        try:
            parts = list(Path(name).resolve().relative_to(lake).parts)
        except ValueError:
            return None
    elif "." in name:
        parts = name.split(".")[-2:]  # <catalog>.<layer>.<table> by GGM_TABLE_NAMESPACE
    if len(parts) != 2 or parts[0] not in ("bronze", "silver", "gold"):
        return None
    layer, table = parts
    return f"{layer}:{table.upper() if layer == 'silver' else table}"


def _task_node_keys(job_name: str, graph: LineageGraph) -> list[str]:
    """Nodes an Airflow task without datasets works on: ``….extract.<source>`` lands that source's datasets."""
    pieces = job_name.split(".")
    if len(pieces) >= 2 and pieces[-2] == "extract":
        return [k for k, n in graph.nodes.items() if n.layer == "landing" and n.name.startswith(pieces[-1] + "/")]
    if pieces[-1] == "publish_share":
        return [k for k, n in graph.nodes.items() if n.layer == "share"]
    return []


def _job_label(job: dict) -> str:
    return f"{job.get('namespace')}/{job.get('name')}"


def _parent_runs(events: list[dict]) -> dict[str, tuple[str, str]]:
    """Run id → (parent job, parent run id), from every event's ``parent`` facet."""
    parents = {}
    for event in events:
        run = event.get("run", {})
        parent = run.get("facets", {}).get("parent")
        if parent and run.get("runId"):
            parents[run["runId"]] = (_job_label(parent.get("job", {})), parent.get("run", {}).get("runId"))
    return parents


def apply_observed(graph: LineageGraph, events: list[dict]) -> None:
    """Mark nodes with the last completed run that wrote them, and add edges only the events show.

    A Spark write's run hangs under its Spark application, which hangs under the Airflow task
    that submitted it (parent-job injection), under the DAG run: ``parents`` lists that chain,
    nearest first, so ``ggm lineage`` can say which task loaded a table.
    """
    lake = lake_root().resolve()
    parent_runs = _parent_runs(events)
    for event in events:
        if event.get("eventType") != "COMPLETE":
            continue
        run = event.get("run", {})
        observation = {
            "last_run_time": event.get("eventTime"),
            "run_id": run.get("runId"),
            "job": _job_label(event.get("job", {})),
        }
        chain, current = [], run.get("runId")
        while current in parent_runs and len(chain) < 10:  # the depth bound guards against a malformed cycle
            job, current = parent_runs[current]
            chain.append({"job": job, "run_id": current})
        if chain:
            observation["parents"] = chain
        inputs = [k for k in (_dataset_node_key(d, lake) for d in event.get("inputs") or []) if k]
        outputs = [k for k in (_dataset_node_key(d, lake) for d in event.get("outputs") or []) if k]
        # A task without output datasets (extract, publish_share) is matched to the nodes it works on by
        # its name; that says who last ran, not which input feeds which of them, so it adds no edges.
        from_task_name = not outputs
        if from_task_name:
            outputs = _task_node_keys(event.get("job", {}).get("name", ""), graph)
        for key in outputs:
            if key not in graph.nodes:
                layer, name = key.split(":", 1)
                graph.add(layer, name)
            graph.nodes[key].observed = observation  # events are sorted, so the last one wins
            for source in inputs:
                if source not in graph.nodes:
                    layer, name = source.split(":", 1)
                    graph.add(layer, name)
                if source != key and not from_task_name:
                    graph.edges.setdefault((source, key), set()).add("openlineage")


def lineage_graph(events_dir: Path | None = None) -> LineageGraph:
    """The static graph combined with the observed OpenLineage events (when there are any)."""
    graph = static_graph()
    apply_observed(graph, read_openlineage_events(events_dir))
    return graph


# --------------------------------------------------------------------------- lookup and output


class UnknownTableError(KeyError):
    """The name matches no source, table, share or recipient of the lineage graph."""


def resolve(graph: LineageGraph, table: str) -> Node:
    """The node ``table`` names, in any layer's spelling.

    ``NATUURLIJKPERSOON``, ``silver.natuurlijkpersoon``, ``gemeente.silver.natuurlijkpersoon``,
    ``inwoners_per_buurt``, ``gold.inwoners_per_buurt``, ``bronze.brp_personen``,
    ``brp_personen``, ``landing.brp/personen``, a share's qualified name or a recipient.
    """
    wanted = table.strip()
    if wanted in graph.nodes:
        return graph.nodes[wanted]
    lowered = wanted.lower()
    candidates: list[Node] = []
    pieces = lowered.split(".")
    if len(pieces) >= 2 and pieces[-2] in LAYER_ORDER:
        layer, name = pieces[-2], pieces[-1]
        candidates = [n for n in graph.nodes.values() if n.layer == layer and n.name.lower() == name]
    if not candidates:
        candidates = [n for n in graph.nodes.values() if n.name.lower() == lowered]
    if not candidates and lowered.startswith(("landing.", "source.")):
        layer, _, name = lowered.partition(".")
        candidates = [n for n in graph.nodes.values() if n.layer == layer and n.name.lower() == name]
    if not candidates:
        raise UnknownTableError(f"no table, source, share or recipient called {table!r} in the lineage")
    # A bare name such as "brp/personen" is both a source and a landing area: the data lives in landing.
    return sorted(candidates, key=lambda n: LAYER_ORDER.index(n.layer) if n.layer != "source" else 99)[0]


def table_lineage(table: str, events_dir: Path | None = None) -> dict:
    """Upstream and downstream of ``table`` as nested trees (the ``--json`` output of ``ggm lineage``)."""
    graph = lineage_graph(events_dir)
    node = resolve(graph, table)
    return {
        "table": node.as_dict(),
        "upstream": graph.tree(node.key, "up"),
        "downstream": graph.tree(node.key, "down"),
        "openlineage_events": str(openlineage_dir()),
    }


def _describe(node: dict) -> str:
    facts = []
    if node["layer"] == "source":
        facts = [node.get("endpoint"), node.get("url") or node.get("source_file"),
                 f"connection {node['airflow_connection']}" if node.get("airflow_connection") else None]
    elif node["layer"] == "landing" and node.get("last_batch"):
        facts = [f"last batch {node['last_batch']}"]
    elif node["layer"] == "silver" and node.get("mapping"):
        facts = [f"mapping {node['mapping']}"]
    elif node["layer"] == "recipient" and node.get("configured_in"):
        facts = [f"from {node['configured_in']}"]
    observed = node.get("observed")
    if observed:
        facts.append(f"last run {observed['last_run_time']} (run {observed['run_id']})")
        # The outermost parent is the orchestrator's run (the Airflow DAG run), the most useful to an operator.
        tasks = [p["job"] for p in observed.get("parents", [])]
        if tasks:
            facts.append("via " + " < ".join(tasks))
    facts = [f for f in facts if f]
    return node["label"] + (f"  [{'; '.join(facts)}]" if facts else "")


def _render(children: list[dict], prefix: str, lines: list[str]) -> None:
    for index, child in enumerate(children):
        last = index == len(children) - 1
        lines.append(f"{prefix}{'└── ' if last else '├── '}{_describe(child)}")
        _render(child["children"], prefix + ("    " if last else "│   "), lines)


def render_tree(lineage: dict) -> str:
    """The readable output of ``ggm lineage``: the table, then its upstream and downstream trees."""
    lines = [_describe(lineage["table"]), "upstream (where the data comes from):"]
    _render(lineage["upstream"], "  ", lines)
    if not lineage["upstream"]:
        lines.append("  (none)")
    lines.append("downstream (where the data goes):")
    _render(lineage["downstream"], "  ", lines)
    if not lineage["downstream"]:
        lines.append("  (none)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``ggm lineage TABLE [--json]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="ggm lineage", description="Upstream and downstream of a table.")
    parser.add_argument("table")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    try:
        lineage = table_lineage(args.table)
    except UnknownTableError as exc:
        print(f"ggm lineage: {exc.args[0]}", file=sys.stderr)
        return 2
    print(json.dumps(lineage, indent=2, sort_keys=True, default=str) if args.json else render_tree(lineage))
    return 0


if __name__ == "__main__":
    sys.exit(main())
