"""The fedgames games, one folder each, with their PettingZoo modules ``name_vN``."""
