"""The six row statuses of the reference tool's contract."""

OK = "ok"
SKIPPED_EXISTING = "skipped-existing"
MISSING_SOURCE = "missing-source"
MISSING_GEOMETRY = "missing-geometry"
DECODE_FAILED = "decode-failed"
MODEL_FAILED = "model-failed"

ALL_STATUSES = (OK, SKIPPED_EXISTING, MISSING_SOURCE, MISSING_GEOMETRY, DECODE_FAILED, MODEL_FAILED)
FAILURE_STATUSES = (MISSING_SOURCE, MISSING_GEOMETRY, DECODE_FAILED, MODEL_FAILED)
