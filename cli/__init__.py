"""The ``coinfluence`` command line (installed as the ``coinfluence_cli`` package)."""
