"""Writing results: mattes, cut-outs, videos with alpha, RLE and previews in the formats editors ingest.

``export(fmt, ...)`` and the ``FORMATS`` table live in :mod:`sam2_web.export.formats`; every file is
written through :mod:`sam2_web.export.output` (temp name, renamed when complete).
"""
