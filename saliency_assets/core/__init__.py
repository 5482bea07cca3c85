"""The Dagster-free core: tables, row contract, decoding, model, reducers, provenance."""
