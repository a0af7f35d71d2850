"""The options that give a policy its inputs: ``--set``, ``--vars-file``,
``--set-secret``, ``--class`` (for ``run``, ``check``, ``graph``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from convergent.policy.vars import Inputs

__all__ = ["add_input_options", "inputs_from", "read_inputs"]


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """Declare the input options on a command's parser."""
    parser.add_argument(
        "--set",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="set a variable (VALUE read as YAML: 8080 is a number, [a, b] a list); "
        "over --vars-file and the policy's vars:",
    )
    parser.add_argument(
        "--vars-file",
        metavar="FILE",
        action="append",
        default=[],
        help="variables from a YAML mapping; over the policy's vars:, under --set",
    )
    parser.add_argument(
        "--set-secret",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="set a secret variable: rendered into files, hidden from every report and diff",
    )
    parser.add_argument(
        "--class",
        metavar="NAME",
        dest="classes",
        action="append",
        default=[],
        help="add a class to this host (for classes: and if:)",
    )


def inputs_from(args: argparse.Namespace) -> Inputs | None:
    """The inputs the options give (None: none given); raises VarsError for a bad one."""
    sets = getattr(args, "set", None) or []
    files = getattr(args, "vars_file", None) or []
    secrets = getattr(args, "set_secret", None) or []
    classes = getattr(args, "classes", None) or []
    hostname = getattr(args, "hostname", None)
    strict = bool(getattr(args, "strict", False))
    if not (sets or files or secrets or classes or hostname or strict):
        return None
    from convergent.policy.vars import Inputs, VarsError, parse_assignment

    given: dict[str, Any] = dict(parse_assignment(text, "--set") for text in sets)
    hidden = dict(parse_assignment(text, "--set-secret", as_yaml=False) for text in secrets)
    for name in classes:
        if not name.isidentifier():
            raise VarsError(f"--class {name!r}: a class name is a word of letters, digits and _")
    facts = None
    if hostname:
        from convergent.host.facts import Facts

        facts = Facts({"hostname": hostname.split(".", 1)[0], "fqdn": hostname})
    return Inputs(
        sets=given,
        vars_files=tuple(files),
        secret_sets=hidden,
        classes=tuple(classes),
        facts=facts,
        strict=strict,
    )


def read_inputs(args: argparse.Namespace) -> tuple[Inputs | None, str | None]:
    """``(inputs, None)``, or ``(None, error message)`` for a bad option."""
    try:
        return inputs_from(args), None
    except Exception as exc:
        from convergent.policy.vars import VarsError

        if isinstance(exc, VarsError):
            return None, f"convergent: {exc}"
        raise
