"""The code location: one set of saliency assets per manifest table, assembled here."""

import dagster as dg

from saliency_assets.defs.corpora import load_corpus_tables
from saliency_assets.defs.factory import corpus_table_defs


def build_definitions() -> dg.Definitions:
    """Definitions for every table of every manifest ($SALIENCY_ASSETS_MANIFESTS or manifests/)."""
    return dg.Definitions.merge(*(corpus_table_defs(table) for table in load_corpus_tables()))


defs = build_definitions()
