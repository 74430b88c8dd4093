"""The HTTP routes, one module per family, each with a module-level `router`. A /v1 router uses
`KeyedRoute` (app/auth.py), so the API key is checked before the body is read."""
