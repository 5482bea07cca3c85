"""Feature tables in and out (local or ``s3://``): reading and atomic writing, the row contract,
clip sources and their geometry."""
