"""The command line: parse arguments, wire the layers together, render progress and errors.

Thin by design: every command imports what it needs only when it runs, so
``convergent --version`` and argument errors answer without loading the engine.
"""

__all__: list[str] = []
