"""Orchestrate: recipes, the pipeline graph, the cached node runner, node bodies, report.html."""
