"""The ``edgeagent`` command groups, one module each, every one exposing ``register``.

``register(subparsers) -> None`` adds the group's parser(s) and sets
``handler`` (``Callable[[argparse.Namespace], int]``) with ``set_defaults``.
"""
