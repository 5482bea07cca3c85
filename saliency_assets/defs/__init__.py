"""The Dagster layer: each manifest table becomes source_table, clip_saliency, enriched_table."""
