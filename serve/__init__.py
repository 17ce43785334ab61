"""Serving: an embedded transformers engine behind an OpenAI-compatible HTTP API, and a Gradio chat UI.

``serve.engine`` runs the model, ``serve.api`` speaks HTTP, ``serve.chat_ui`` is a client of that HTTP
API only, so it works the same against any OpenAI-compatible server (vLLM included).
"""
