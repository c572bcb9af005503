"""Benchmarks: HTTP load with wrk against dropserve, its HTTP floor and LitServe; the MC sampler."""
