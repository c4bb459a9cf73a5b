"""Kdenlive backend: speaks Kdenlive's Object Mask script protocol on top of the sam2_web engine.

Point Kdenlive at ``plugins/kdenlive/sam2_web_objectmask.py`` (see ``plugins/README.md``).
"""
