"""Training learners on fedgames environments."""
