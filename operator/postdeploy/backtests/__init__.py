"""Backtests: how a review or template would have judged past releases.

``replays`` runs a resolved review over past releases on a simulated clock through
the real providers and decision code; ``batches`` turns a replay's Prometheus
requests into a few range queries; ``releases`` finds past releases (given times, a
target's ReplicaSets/ControllerRevisions, a PromQL expression); ``summaries`` turns a
backtest into tables and JSON. ``kubectl postdeploy backtest`` drives them
(``postdeploy.plugin.backtesting``); ``postdeploy.plugin.backtest_pages`` draws the HTML
section. Nothing in this package writes to the cluster.
"""
