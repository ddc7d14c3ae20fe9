"""Differential privacy: accounting (and, as they land, clipping, noise and audits)."""
