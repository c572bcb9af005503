"""The HTTP layer: FastAPI app, routes, request decoding, the error envelope."""
