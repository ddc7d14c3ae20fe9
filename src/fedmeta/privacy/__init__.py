"""Differential privacy: accounting, user-level DP stages (clipping, adaptive clipping,
noise), sample-level DP-SGD, and the canary audit."""
