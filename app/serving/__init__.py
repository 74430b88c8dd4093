"""Serving functions: parsed request bodies in, response bodies or server-sent events out.

They know the engine and the protocol, not HTTP: a route (app/routes/) hands them the body, the
settings, the model registry and the request's access-log notes, and answers with what they return.
"""
