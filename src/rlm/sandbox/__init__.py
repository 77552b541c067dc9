"""Confinement of model-written code: orchestrator hardening (always on, :mod:`.harden`)."""
