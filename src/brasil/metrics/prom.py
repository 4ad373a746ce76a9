"""The Prometheus text format of a subtree: every node's latest sample, labelled ``node``, and
the subtree's aggregates, labelled ``agg``; written by prometheus_client (its exposition code,
not ours), so a Prometheus server scraping only the root sees every node.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from .sample import METRICS
from .summary import Summary

PREFIX = "brasil_"
MAX_LABEL = 128  # a node name longer than this is cut: a label is not a place for a novel


def _label(text: str) -> str:
    return text[:MAX_LABEL]


class SubtreeCollector(Collector):
    def __init__(self, root: str, nodes: Mapping[str, Mapping[str, float]],
                 summary: Summary) -> None:
        self.root, self.nodes, self.summary = root, nodes, summary

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, m in METRICS.items():
            g = GaugeMetricFamily(PREFIX + name, m.help + (f" ({m.unit})" if m.unit else ""),
                                  labels=["node"])
            for node in sorted(self.nodes):
                value = self.nodes[node].get(name)
                if value is not None:
                    g.add_metric([_label(node)], value)
            yield g
            st = self.summary.stats.get(name)
            agg = GaugeMetricFamily(PREFIX + "subtree_" + name,
                                    f"{m.help}, over the subtree of the node scraped",
                                    labels=["root", "agg"])
            if st is not None and st.count:
                for how, value in (("sum", st.sum), ("mean", st.mean), ("min", st.min),
                                   ("max", st.max), ("count", float(st.count))):
                    agg.add_metric([_label(self.root), how], value)
            yield agg
        nodes = GaugeMetricFamily(PREFIX + "subtree_nodes", "nodes in the subtree scraped",
                                  labels=["root"])
        nodes.add_metric([_label(self.root)], float(self.summary.nodes))
        yield nodes


def exposition(root: str, nodes: Mapping[str, Mapping[str, float]], summary: Summary) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SubtreeCollector(root, nodes, summary))
    return generate_latest(registry)
