"""Using a trained run outside lsllama's own commands: model cards, transformers export, an HTTP server.

`server` needs the `serve` extra (fastapi, uvicorn); import it only where it is used.
"""
