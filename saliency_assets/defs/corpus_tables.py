"""The code location's definitions, found by ``dg.load_from_defs_folder``: one set of saliency
assets per table of every manifest ($SALIENCY_ASSETS_MANIFESTS or manifests/)."""

import dagster as dg

from saliency_assets.defs.corpora import load_corpus_tables
from saliency_assets.defs.factory import corpus_table_defs
from saliency_assets.defs.resources import shared_resources


@dg.definitions
def corpus_tables() -> dg.Definitions:
    tables = [corpus_table_defs(table) for table in load_corpus_tables()]
    # Every run here is one model step (a clip batch, or the enriched table plus its coverage
    # check), and the engine already spreads a step over every core: a step subprocess per run
    # (the multiprocess default) only adds seconds of start-up to each run.
    shared = dg.Definitions(executor=dg.in_process_executor, resources=shared_resources())
    return dg.Definitions.merge(*tables, shared)
