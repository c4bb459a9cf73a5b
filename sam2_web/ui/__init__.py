"""The Gradio web demo: per-session state (``state``), what the app does (``logic``), pictures
(``render``), the Blocks wiring (``layout``) and named endpoints for remote clients (``api``).

Start it with ``python app.py`` from the repository root.
"""
