"""The inference engine: model registry, scheduler, compute. Imports only `models`; knows no HTTP."""
