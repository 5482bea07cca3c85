"""The Dagster-free core, grouped by the stage of the flow it serves.

Rows flow one way: ``tables`` (read rows, the row contract) -> ``decode`` (sampled frames of a
clip) -> ``model`` (saliency per frame, reduced over time) -> ``run`` (the engine, runners, results
stores) -> ``tables`` again (rows enriched, written); ``contract`` holds the config, statuses,
manifests, provenance and reports every stage answers to.
"""
