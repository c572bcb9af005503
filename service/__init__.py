"""The FastAPI service: settings, app factory and lifespan, routes, request decoding."""
