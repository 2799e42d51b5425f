"""Recipes shipped with the package (package data), so they work from an installed tformer:
`demo/` holds the three parts of `tformer demo`. The project's other recipes are in configs/."""
