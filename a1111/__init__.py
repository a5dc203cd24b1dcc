"""AUTOMATIC1111 / Forge glue of the Embedding Sanitizer.

The entry point is ``scripts/embedding_sanitizer_script.py``. Modules here import the
webui's ``modules`` only inside functions, so the package imports outside the webui.

* ``schema``: the core ``FIELDS`` as Gradio components, Settings-page options, API
  argument order and infotext keys.
* ``encoder``: the webui text model (A1111 ``TextConditionalModel``, Forge
  ``ClassicTextProcessingEngine``) as a core ``TextEncoder``.
* ``hook``: the class-level wrap of the text model's forward, and cache shadowing.
* ``runtime``: sanitizers per encoder, ES weights, per-prompt records.
* ``svf``: SAFREE's self-validating schedule: originals kept next to the sanitized conds,
  swapped back per step in ``on_cfg_denoiser``.
* ``lifecycle``: ``process``/``process_batch``/``before_hr``/``postprocess``.
* ``policy``: the administrator lock (Settings page and ``--embedding-sanitizer-policy`` file).
* ``ui``, ``routes``, ``calibration``: accordion and Settings section, live-heatmap
  routes, the calibrate button.
"""
