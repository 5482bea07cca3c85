"""The code location's definitions, found by ``dg.load_from_defs_folder``: one set of saliency
assets per table of every manifest ($SALIENCY_ASSETS_MANIFESTS or manifests/)."""

import dagster as dg

from saliency_assets.defs.corpora import load_corpus_tables
from saliency_assets.defs.factory import corpus_table_defs


@dg.definitions
def corpus_tables() -> dg.Definitions:
    return dg.Definitions.merge(*(corpus_table_defs(table) for table in load_corpus_tables()))
