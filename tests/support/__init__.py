"""Helpers shared by the tests: generated clips and the reference-pipeline oracle."""
