import os

# Keep the suite quiet and deterministic on small machines.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
