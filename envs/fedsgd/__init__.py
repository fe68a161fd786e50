"""The FedSGD game ([H] §6, App. B.3; SPEC §2). Its data layer and batched engine import with numpy and torch
alone (no PettingZoo), so they run on a bare GPU machine."""
