"""What each DVC stage does: one module a stage, with its body and its ``Step`` (``invaders.pipeline``), run by
the scripts in ``stages/``, the ``invaders`` command, ``invaders.experiment`` and the sweeps' trials."""
