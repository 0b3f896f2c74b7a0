from moirai_ft.config import schema  # noqa: F401  (registers the group schemas with Hydra)
