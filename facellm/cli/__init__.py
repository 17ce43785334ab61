"""``facellm``: the composition root. Each stage's module adds its subcommands; stages never import each other."""

from __future__ import annotations

import argparse
import logging
import sys

from facellm.cli import caption, chat, data, demo, eval, models, serve, train
from facellm.errors import FacellmError

EPILOG = "Run `facellm demo` for the whole loop offline: data -> tiny model -> eval -> train -> eval -> serve -> chat."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facellm", description="Face understanding with vision-language models.",
                                     epilog=EPILOG)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in (models, data, train, eval, serve, caption, chat, demo):  # the order of `facellm --help`
        stage.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["eval", "compare"]:  # `facellm eval compare A B` reads better than a command of its own
        argv = ["eval-compare", *argv[2:]]
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    import facellm  # noqa: F401  (torchvision patch before transformers loads)

    try:
        args.func(args)
    except (FacellmError, OSError) as e:  # OSError: a path the user gave (permissions, disk full, ...)
        if args.verbose:
            raise
        print(f"facellm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
