"""What a run promises: config, statuses, manifests, provenance, audits and reports, and the
refusals made before any work starts."""
