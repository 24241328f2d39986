"""The connector config: the file a partner writes (model.py), and how it is read with the file and line
in every error (loader.py)."""
