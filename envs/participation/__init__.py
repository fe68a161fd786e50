"""The participation / exit game (SPEC §3): its mean-field theory (``theory``)."""
