"""The participation / exit game (SPEC §3): the game's stages (``game``), its PettingZoo env (``participation``)
and its mean-field theory (``theory``)."""
