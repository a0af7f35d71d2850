"""``python -m convergent``: the same as the ``convergent`` command."""

from convergent.cli.main import entry

if __name__ == "__main__":
    entry()
