"""The Gradio web demo: per-session UI state and the session store (``state``), what the app does
(``actions``, over the engine's ``VideoSession``), input limits (``limits``), pictures (``render``),
speed and quality figures (``speed``), the Blocks wiring (``layout``), named endpoints for remote
clients (``api``), app-wide context (``context``) and ZeroGPU leases (``gpu``).

Start it with ``python app.py`` from the repository root.
"""
