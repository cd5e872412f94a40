"""A DCGM-exporter-compatible Prometheus endpoint on each node's agent
(--metrics-port): the counters NVIDIA's dcgm-exporter serves by default
(counters.py), each GPU's reading at every collection (readings.py,
traffic.py, collector.py, an event sink), the scrape's text (exposition.py)
and its HTTP server on the launcher's loop (http.py, server.py)."""

from fakerun.dcgm.collector import DcgmCollector
from fakerun.dcgm.server import MetricsServer, PortTaken

__all__ = ["DcgmCollector", "MetricsServer", "PortTaken"]
