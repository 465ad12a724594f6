"""Sweeps and seeds on Ray Tune: a sweep file (``spec``), its driver (``driver``), one trial (``trial``)."""
